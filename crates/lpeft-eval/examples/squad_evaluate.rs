//! The official SQuAD v1.1 evaluation on the official files, printing its JSON line
//! (`{"exact_match": .., "f1": ..}`); with `--per-question`, the whole [`SquadScores`].
//!
//! ```sh
//! cargo run -p lpeft-eval --example squad_evaluate -- dev-v1.1.json predictions.json
//! ```
//!
//! [`SquadScores`]: lpeft_eval::squad::SquadScores

// A stand-in for the official script (tools/test_squad_eval.py runs both), so it prints as
// that script does rather than through lpeft's Reporter.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let per_question = args.iter().any(|a| a == "--per-question");
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [dataset, predictions] = files[..] else {
        eprintln!("usage: squad_evaluate DATASET_FILE PREDICTION_FILE [--per-question]");
        return ExitCode::from(2);
    };
    let scores =
        match lpeft_eval::squad::evaluate_squad_files(Path::new(dataset), Path::new(predictions)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
    for id in &scores.unanswered {
        eprintln!("Unanswered question {id} will receive score 0.");
    }
    let json = if per_question {
        serde_json::to_value(&scores).expect("scores as JSON")
    } else {
        serde_json::json!({"exact_match": scores.exact_match, "f1": scores.f1})
    };
    println!("{json}");
    ExitCode::SUCCESS
}

//! Build a dataset artifact into a directory, outside the store, and print its figures:
//! `cargo run --release -p lpeft-data --example prepare -- glue/sst2 ../shared/data/glue ../shared/models/all-MiniLM-L6-v2 /tmp/sst2`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [task, data_dir, model, out] = &args[..] else {
        eprintln!("usage: prepare TASK DATA_DIR MODEL_DIR OUT_DIR");
        std::process::exit(2);
    };
    let config: lpeft_data::DataConfig = serde_json::from_value(serde_json::json!({
        "task": task, "data_dir": data_dir, "model": model,
    }))
    .expect("valid config");
    let start = Instant::now();
    let resolved = lpeft_data::build::resolve(&config).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    });
    std::fs::create_dir_all(out).expect("create output directory");
    let report = lpeft_data::build::build(&resolved, std::path::Path::new(out), &|line| {
        println!("{line}")
    })
    .unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    });
    println!(
        "{}: read {:.2} s, tokenized {:.2} s, total {:.2} s",
        report.meta.task.name,
        report.read_seconds,
        report.tokenize_seconds,
        start.elapsed().as_secs_f64()
    );
}

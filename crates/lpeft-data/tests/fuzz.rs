//! Fuzzing the task readers: mutated GLUE TSV, SuperGLUE JSONL and SQuAD JSON files (seeded
//! from the shared official files and small hand-written ones in the official formats) are
//! read or refused with an error, never a panic. See tests/fuzz/mutate.rs.

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;

use lpeft_data::registry::task;

/// The first `n` lines of a shared file, as a seed.
fn head(rel: &str, n: usize) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (put ../shared beside the clone)", path.display()));
    text.lines()
        .take(n)
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Writes each case to one file and hands the reader its path.
fn fuzz_file(target: &str, seeds: &[Vec<u8>], read: impl Fn(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input");
    mutate::run(target, seeds, mutate::cases(2_000), |input| {
        std::fs::write(&file, input).unwrap();
        read(&file);
    });
}

#[test]
fn glue_tsv() {
    let cases = [
        ("glue/cola", "data/glue/CoLA/train.tsv", "train"),
        ("glue/mrpc", "data/glue/MRPC/train.tsv", "train"),
        ("glue/stsb", "data/glue/STS-B/dev.tsv", "dev"),
        ("glue/rte", "data/glue/RTE/dev.tsv", "test"),
    ];
    for (name, rel, split) in cases {
        let t = task(name).unwrap();
        fuzz_file(&format!("tsv {name}"), &[head(rel, 12)], |p| {
            let _ = lpeft_data::glue::read_tsv(t, p, split);
        });
    }
}

#[test]
fn superglue_jsonl() {
    let multirc = br#"{"idx": 0, "passage": {"text": "A cat sat. It slept.", "questions": [{"idx": 0, "question": "What sat?", "answers": [{"idx": 0, "text": "A cat", "label": 1}, {"idx": 1, "text": "A dog", "label": 0}]}]}}
"#.to_vec();
    let record = br#"{"idx": 0, "source": "s", "passage": {"text": "Ann met Bob in Rome.", "entities": [{"start": 0, "end": 2}, {"start": 15, "end": 18}]}, "qas": [{"idx": 0, "query": "@placeholder met Bob.", "answers": [{"start": 0, "end": 2, "text": "Ann"}]}]}
"#.to_vec();
    let boolq = br#"{"idx": 0, "question": "is it", "passage": "It is.", "label": true}
"#
    .to_vec();
    let cases = [
        ("superglue/cb", head("data/superglue/CB/train.jsonl", 4)),
        ("superglue/copa", head("data/superglue/COPA/train.jsonl", 4)),
        ("superglue/wic", head("data/superglue/WiC/train.jsonl", 4)),
        ("superglue/wsc", head("data/superglue/WSC/train.jsonl", 4)),
        ("superglue/multirc", multirc),
        ("superglue/record", record),
        ("superglue/boolq", boolq),
    ];
    for (name, seed) in cases {
        let t = task(name).unwrap();
        fuzz_file(&format!("jsonl {name}"), &[seed], |p| {
            let _ = lpeft_data::superglue::read_jsonl(t, p);
        });
    }
}

#[test]
fn squad_json() {
    let small = br#"{"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "Caf\u00e9 au lait is a drink. It has milk.", "qas": [{"id": "q1", "question": "What has milk?", "answers": [{"answer_start": 0, "text": "Caf\u00e9 au lait"}, {"answer_start": 27, "text": "It"}]}]}]}]}"#.to_vec();
    fuzz_file("squad", &[small], |p| {
        let _ = lpeft_data::squad::read_squad(p);
    });
}

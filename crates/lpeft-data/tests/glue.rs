//! Every GLUE task in the shared directory loads with exactly the official counts.

mod common;

use lpeft_data::build::{read_split, resolve};
use lpeft_data::example::{Inputs, Label};

fn counts(task: &str, splits: &[&str]) -> Vec<(usize, Vec<lpeft_data::example::Example>)> {
    let mut cfg = common::config(task, common::glue_dir());
    cfg.splits = Some(splits.iter().map(|s| (*s).to_owned()).collect());
    let resolved = resolve(&cfg).unwrap();
    let t = resolved.task;
    resolved
        .splits
        .iter()
        .map(|s| {
            let raw = read_split(t, s).unwrap_or_else(|e| panic!("{task} {}: {e}", s.split));
            (raw.examples.len(), raw.examples)
        })
        .collect()
}

fn check(
    task: &str,
    splits: &[&str],
    expected: &[usize],
) -> Vec<Vec<lpeft_data::example::Example>> {
    let got = counts(task, splits);
    let n: Vec<usize> = got.iter().map(|(n, _)| *n).collect();
    assert_eq!(n, expected, "{task} {splits:?}");
    got.into_iter().map(|(_, e)| e).collect()
}

fn rows(e: &lpeft_data::example::Example) -> &(String, Option<String>) {
    match &e.inputs {
        Inputs::Rows(r) => &r[0],
        Inputs::Span { .. } => panic!("not a row example"),
    }
}

#[test]
fn cola_has_no_header() {
    let s = check("glue/cola", &["train", "dev"], &[8551, 1043]);
    let first = &s[0][0];
    assert_eq!(
        rows(first).0,
        "Our friends won't buy this analysis, let alone the next one we propose."
    );
    assert_eq!(first.label, Label::Class(1));
    assert!(s[0].iter().all(|e| rows(e).1.is_none()));
}

#[test]
fn sst2() {
    let s = check("glue/sst2", &["train", "dev"], &[67349, 872]);
    assert_eq!(
        rows(&s[0][0]).0,
        "hide new secretions from the parental units "
    );
    assert_eq!(s[0][0].label, Label::Class(0));
}

#[test]
fn mrpc_header_with_bom() {
    let s = check("glue/mrpc", &["train", "dev"], &[3668, 408]);
    let (a, b) = rows(&s[0][0]);
    assert!(a.starts_with("Amrozi accused his brother"), "{a}");
    assert!(
        b.as_deref()
            .unwrap()
            .starts_with("Referring to him as only")
    );
    assert_eq!(s[0][0].label, Label::Class(1));
}

#[test]
fn stsb_float_labels() {
    let s = check("glue/stsb", &["train", "dev"], &[5749, 1500]);
    assert_eq!(s[0][0].label, Label::Float(5.0));
    assert_eq!(rows(&s[0][0]).0, "A plane is taking off.");
    assert!(
        s[1].iter()
            .all(|e| matches!(e.label, Label::Float(f) if (0.0..=5.0).contains(&f)))
    );
}

#[test]
fn rte_wnli_qnli() {
    check("glue/rte", &["train", "dev"], &[2490, 277]);
    check("glue/wnli", &["train", "dev"], &[635, 71]);
    let q = check("glue/qnli", &["dev"], &[5463]);
    assert!(q[0].iter().all(|e| matches!(e.label, Label::Class(0 | 1))));
}

#[test]
fn source_rows_are_file_order() {
    let s = check("glue/rte", &["dev"], &[277]);
    assert!(
        s[0].iter()
            .enumerate()
            .all(|(i, e)| e.source_row as usize == i)
    );
}

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

/// MNLI and QQP are not mirrored in ../shared; small files with their official headers.
#[test]
fn mnli_matched_mismatched_and_qqp_layouts() {
    let d = tempfile::tempdir().unwrap();
    let dev_header = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label";
    let dev_row = |i: usize, label: &str| {
        format!(
            "{i}\t63735\t63735n\tslate\t( ( The ) )\t( ( A ) )\t(ROOT)\t(ROOT)\tThe new rights are nice enough\tEveryone really likes the newest benefits \t{label}\t{label}\t{label}\t{label}\t{label}\t{label}"
        )
    };
    let train_header = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label";
    common::write(
        d.path(),
        "MNLI/train.tsv",
        &format!(
            "{train_header}\n0\t31193\t31193n\tgovernment\t( a )\t( b )\t(ROOT)\t(ROOT)\tConceptually cream skimming has two basic dimensions - product and geography.\tProduct and geography are what make cream skimming work. \tneutral\tneutral\n"
        ),
    );
    common::write(
        d.path(),
        "MNLI/dev_matched.tsv",
        &format!(
            "{dev_header}\n{}\n{}\n",
            dev_row(0, "neutral"),
            dev_row(1, "contradiction")
        ),
    );
    common::write(
        d.path(),
        "MNLI/dev_mismatched.tsv",
        &format!("{dev_header}\n{}\n", dev_row(0, "entailment")),
    );
    let mut cfg = common::config("glue/mnli", d.path().to_owned());
    let r = resolve(&cfg).unwrap();
    assert_eq!(
        r.splits
            .iter()
            .map(|s| s.source.name.as_str())
            .collect::<Vec<_>>(),
        vec![
            "MNLI/train.tsv",
            "MNLI/dev_matched.tsv",
            "MNLI/dev_mismatched.tsv"
        ]
    );
    let splits: Vec<_> = r
        .splits
        .iter()
        .map(|s| read_split(r.task, s).unwrap())
        .collect();
    assert_eq!(splits[0].examples[0].label, Label::Class(1));
    assert_eq!(
        rows(&splits[0].examples[0]).0,
        "Conceptually cream skimming has two basic dimensions - product and geography."
    );
    assert_eq!(
        splits[1]
            .examples
            .iter()
            .map(|e| e.label.clone())
            .collect::<Vec<_>>(),
        vec![Label::Class(1), Label::Class(2)]
    );
    assert_eq!(splits[2].examples[0].label, Label::Class(0));

    common::write(
        d.path(),
        "QQP/dev.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0\n",
    );
    cfg.task = "glue/qqp".to_owned();
    cfg.splits = Some(vec!["dev".to_owned()]);
    let r = resolve(&cfg).unwrap();
    let s = read_split(r.task, &r.splits[0]).unwrap();
    assert_eq!(
        rows(&s.examples[0]).1.as_deref(),
        Some("Why are hispanics so beautiful?")
    );
    assert_eq!(s.examples[0].label, Label::Class(0));
}

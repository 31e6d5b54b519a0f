use super::*;
use serde_json::json;

fn env(name: &str) -> Option<String> {
    match name {
        "HOME_DIR" => Some("/home/x".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Pipeline, PipelineError> {
    load_str(Path::new("p.ron"), text, &ExpandOptions::default(), &env)
}

fn err(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn minimal_pipeline() {
    let p = load(r#"Pipeline(name: "p", stages: [(name: "a", kind: "snapshot")])"#).unwrap();
    assert_eq!(p.name, "p");
    assert_eq!(p.stages[0].params, json!({}));
    assert_eq!(p.stages[0].origin.to_string(), "p.ron:1:31");
}

#[test]
fn syntax_errors_point_at_line_and_column() {
    let e = err("Pipeline(\n  name: \"p\",\n  stages: [\n    (name: \"a\" kind: \"x\"),\n  ],\n)");
    assert!(e.starts_with("p.ron:4:"), "{e}");
    let e = err("Pipeline(name: \"p\", stages: [], bogus: 1)");
    assert!(e.starts_with("p.ron:1:"), "{e}");
    assert!(e.contains("bogus"), "{e}");
    let e = err("Pipeline(\n name: \"p\",\n stages: [(name: \"a\")],\n)");
    assert!(e.starts_with("p.ron:3:"), "{e}");
    assert!(e.contains("kind"), "{e}");
}

#[test]
fn vars_profiles_and_env() {
    let text = r#"Pipeline(
        name: "p",
        vars: { "root": "${HOME_DIR}", "data": "{root}/data", "n": 3, "m": "${NOPE:-7}" },
        profiles: { "big": { "n": 30 } },
        stages: [(name: "a", kind: "k", params: { "dir": "{data}", "n": "{n}", "label": "n={n}", "m": "{m}", "lit": "{{x}}" })],
    )"#;
    let p = load(text).unwrap();
    assert_eq!(
        p.stages[0].params,
        json!({"dir": "/home/x/data", "n": 3, "label": "n=3", "m": "7", "lit": "{x}"})
    );
    let opts = ExpandOptions {
        profile: Some("big".into()),
        set: vec![],
    };
    let p = load_str(Path::new("p.ron"), text, &opts, &env).unwrap();
    assert_eq!(p.stages[0].params["n"], json!(30));
    let opts = ExpandOptions {
        profile: None,
        set: vec![("n".into(), json!(5))],
    };
    let p = load_str(Path::new("p.ron"), text, &opts, &env).unwrap();
    assert_eq!(p.stages[0].params["label"], json!("n=5"));
    let opts = ExpandOptions {
        profile: Some("nope".into()),
        set: vec![],
    };
    let e = load_str(Path::new("p.ron"), text, &opts, &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown profile `nope`") && e.contains("big"),
        "{e}"
    );
}

#[test]
fn sweeps_expand_names_inputs_and_params() {
    let text = r#"Pipeline(
        name: "p",
        vars: {},
        stages: [
            (name: "data-{task}", kind: "d", sweep: { "task": ["rte", "cola"] }, params: { "task": "{task}" }),
            (name: "ft-{task}-{method}-s{seed}", kind: "f",
             sweep: { "task": ["rte", "cola"], "seed": [1, 2],
                      "method": [{ "name": "lora", "rank": 8 }, { "name": "full" }] },
             with: ["method"],
             params: { "seed": "{seed}", "rank": 4 },
             inputs: { "data": "data-{task}" }),
        ],
    )"#;
    let p = load(text).unwrap();
    assert_eq!(p.stages.len(), 2 + 8);
    let s = p
        .stages
        .iter()
        .find(|s| s.name == "ft-rte-lora-s2")
        .unwrap();
    assert_eq!(s.params, json!({"seed": 2, "rank": 4}));
    assert_eq!(s.inputs["data"], "data-rte");
    assert_eq!(s.origin.line, 6);
}

#[test]
fn a_sweep_can_take_its_values_from_a_list_variable_that_a_profile_changes() {
    let text = r#"Pipeline(
        name: "p",
        vars: { "seeds": [1, 2, 3], "one": 1 },
        profiles: { "quick": { "seeds": [7] } },
        stages: [
            (name: "s{seed}", kind: "k", sweep: { "seed": "{seeds}" }, params: { "seed": "{seed}" }),
        ],
    )"#;
    let names = |p: Pipeline| p.stages.into_iter().map(|s| s.name).collect::<Vec<_>>();
    assert_eq!(names(load(text).unwrap()), ["s1", "s2", "s3"]);
    let quick = ExpandOptions {
        profile: Some("quick".into()),
        ..ExpandOptions::default()
    };
    let p = load_str(Path::new("p.ron"), text, &quick, &env).unwrap();
    assert_eq!(p.stages[0].params, json!({"seed": 7}));
    assert_eq!(names(p), ["s7"]);
    let e = err(&text.replace(r#""seed": "{seeds}""#, r#""seed": "{one}""#));
    assert!(e.contains("must name a list variable"), "{e}");
    let e = err(&text.replace(r#""seed": "{seeds}""#, r#""seed": "{nope}""#));
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn an_emptied_list_variable_sweeps_to_no_stages_but_an_empty_literal_is_an_error() {
    let text = r#"Pipeline(
        name: "p",
        vars: { "extras": [1], "seeds": [1, 2] },
        profiles: { "none": { "extras": [] } },
        stages: [
            (name: "s{seed}", kind: "k", sweep: { "seed": "{seeds}" }),
            (name: "x{e}", kind: "k", sweep: { "e": "{extras}" }, inputs: { "a": "s1" }),
        ],
    )"#;
    let names = |p: Pipeline| p.stages.into_iter().map(|s| s.name).collect::<Vec<_>>();
    assert_eq!(names(load(text).unwrap()), ["s1", "s2", "x1"]);
    let none = ExpandOptions {
        profile: Some("none".into()),
        ..ExpandOptions::default()
    };
    let p = load_str(Path::new("p.ron"), text, &none, &env).unwrap();
    assert_eq!(names(p), ["s1", "s2"]);
    let e = err(&text.replace(r#""e": "{extras}""#, r#""e": []"#));
    assert!(e.contains("sweep variable `e` has no values"), "{e}");
}

#[test]
fn set_of_an_unknown_variable_names_the_known_ones_and_the_closest() {
    let text = r#"Pipeline(
        name: "p",
        vars: { "head_ratio": 0.3, "ffn_ratio": 0.3, "seeds": [1] },
        profiles: { "wide": { "width": 4 } },
        stages: [(name: "a", kind: "k", params: { "h": "{head_ratio}" })],
    )"#;
    let with = |profile: Option<&str>, name: &str| ExpandOptions {
        profile: profile.map(String::from),
        set: vec![(name.into(), json!(0.5))],
    };
    let e = load_str(Path::new("p.ron"), text, &with(None, "head_ration"), &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--set `head_ration`: no such variable")
            && e.contains("did you mean `head_ratio`?")
            && e.contains("ffn_ratio"),
        "{e}"
    );
    let e = load_str(Path::new("p.ron"), text, &with(None, "nosuchvar"), &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no such variable") && !e.contains("did you mean"),
        "{e}"
    );
    // A variable its profile defines can be set under that profile only.
    assert!(load_str(Path::new("p.ron"), text, &with(Some("wide"), "width"), &env).is_ok());
    let e = load_str(Path::new("p.ron"), text, &with(None, "width"), &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such variable"), "{e}");
}

#[test]
fn values_nested_too_deep_are_an_error_not_a_stack_overflow() {
    let deep = |d: usize| {
        format!(
            "Pipeline(name: \"p\", vars: {{ \"x\": {}{} }}, stages: [])",
            "[".repeat(d),
            "]".repeat(d)
        )
    };
    assert!(load(&deep(60)).is_ok());
    let e = err(&deep(20_000));
    assert!(
        e.starts_with("p.ron:1:") && e.contains("values nest too deeply"),
        "{e}"
    );
}

#[test]
fn semantic_errors_point_at_the_stage() {
    let e = err(
        "Pipeline(name: \"p\", stages: [\n (name: \"a\", kind: \"k\"),\n (name: \"a\", kind: \"k\"),\n])",
    );
    assert!(
        e.starts_with("p.ron:3:3:") && e.contains("duplicate stage name `a`"),
        "{e}"
    );
    let e = err(
        "Pipeline(name: \"p\", stages: [\n (name: \"a\", kind: \"k\", params: { \"x\": \"{nope}\" }),\n])",
    );
    assert!(
        e.starts_with("p.ron:2:3:") && e.contains("unknown variable `nope`"),
        "{e}"
    );
    let e = err(
        "Pipeline(name: \"p\", stages: [\n (name: \"a\", kind: \"k\", params: { \"x\": \"${UNSET_VAR}\" }),\n])",
    );
    assert!(e.contains("UNSET_VAR") && e.starts_with("p.ron:2:"), "{e}");
    let e = err("Pipeline(name: \"p\", stages: [(name: \"a\", kind: \"k\", params: [1])])");
    assert!(e.contains("must be a map"), "{e}");
    let e = err("Pipeline(name: \"p\", vars: { \"a\": \"{b}\", \"b\": \"{a}\" }, stages: [])");
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn stage_positions_skip_the_pipeline_name() {
    let p = load("Pipeline(name: \"x\",\n stages: [\n\n  (name: \"x\", kind: \"k\"), (name: \"y\", kind: \"k\")])").unwrap();
    assert_eq!(p.stages[0].origin.to_string(), "p.ron:4:4");
    assert_eq!(p.stages[1].origin.to_string(), "p.ron:4:28");
    let p = load("Pipeline(name: \"x\", stages: [(name: \"x\", kind: \"k\")])").unwrap();
    assert_eq!(p.stages[0].origin.to_string(), "p.ron:1:31");
}

#[test]
fn env_expansion_rules() {
    assert_eq!(expand_env("a${HOME_DIR}b", &env).unwrap(), "a/home/xb");
    assert_eq!(expand_env("${X:-d/e}", &env).unwrap(), "d/e");
    assert_eq!(expand_env("$$HOME $x", &env).unwrap(), "$HOME $x");
    assert!(expand_env("${", &env).is_err());
    assert!(expand_env("${A B}", &env).is_err());
}

#[test]
fn globs() {
    assert!(matches_glob("data-*", "data-rte"));
    assert!(matches_glob("*-rte", "data-rte"));
    assert!(!matches_glob("data-*", "ft-rte"));
    assert!(matches_glob("a", "a"));
    let all = ["a", "b1", "b2"];
    assert_eq!(select(&["b*".into()], &all).unwrap().len(), 2);
    assert!(select(&["c".into()], &all).is_err());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    const SEED: &str = r#"Pipeline(
    name: "p",
    vars: { "dir": "${D:-x}", "n": 2, "m": { "name": "lora", "r": 8 } },
    profiles: { "f": { "n": 3 } },
    stages: [
        (name: "a-{t}", kind: "k", sweep: { "t": ["x", "y"] }, params: { "p": "{dir}/{t}", "n": "{n}" }),
        (name: "b-{t}", kind: "k", sweep: { "t": ["x", "y"] }, with: ["m"], inputs: { "src": "a-{t}" }),
    ],
)"#;

    fn check(text: &str) {
        let no_env = |_: &str| None;
        let r = load_str(Path::new("f.ron"), text, &ExpandOptions::default(), &no_env);
        if let Err(e) = r {
            let msg = e.to_string();
            assert!(msg.starts_with("f.ron"), "error without file: {msg}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, max_shrink_iters: 200, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            check(&text);
        }

        #[test]
        fn mutated_pipelines_never_panic(
            edits in proptest::collection::vec((0usize..400, 0usize..4, "[\\PC\\{\\}\\$\\(\\)\\[\\]\":,]{0,3}"), 1..5)
        ) {
            let mut text = SEED.to_string();
            for (pos, del, ins) in edits {
                let mut at = pos.min(text.len());
                while !text.is_char_boundary(at) { at -= 1; }
                let mut end = (at + del).min(text.len());
                while !text.is_char_boundary(end) { end += 1; }
                text.replace_range(at..end, &ins);
            }
            check(&text);
        }
    }
}

#[test]
fn escaped_braces_survive_variable_chains() {
    let text = r#"Pipeline(name: "p", vars: { "a": "{{x}}", "b": "{a}-{c}", "c": 1 },
        stages: [(name: "s", kind: "k", params: { "v": "{b}", "w": "{a}" })])"#;
    let p = load(text).unwrap();
    assert_eq!(p.stages[0].params, json!({"v": "{x}-1", "w": "{x}"}));
    let e = err(r#"Pipeline(name: "p", vars: { "a": "{t}" }, stages: [])"#);
    assert!(e.contains("sweep variables"), "{e}");
}

#[test]
fn the_example_in_docs_pipelines_md_expands() {
    let doc = include_str!("../../../../docs/pipelines.md");
    let start = doc.find("```ron\n").unwrap() + 7;
    let end = start + doc[start..].find("```").unwrap();
    let p = load(&doc[start..end]).unwrap();
    assert_eq!(p.stages.len(), 2 + 12);
    let ft = p
        .stages
        .iter()
        .find(|s| s.name == "ft-cola-adapter-s3")
        .unwrap();
    assert_eq!(ft.params, json!({"seed": 3, "lr": 3e-4, "size": 64}));
    assert_eq!(ft.inputs["dataset"], "data-cola");
}

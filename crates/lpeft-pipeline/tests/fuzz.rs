//! Fuzzing the pipeline reader: mutated pipeline files (the repository's own and small ones)
//! are expanded or refused with an error naming a place, never a panic or a stack overflow.
//! See tests/fuzz/mutate.rs.

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;

use std::path::Path;

use lpeft_pipeline::ExpandOptions;
use lpeft_pipeline::file::load_str;

#[test]
fn pipeline_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
    let mut seeds: Vec<Vec<u8>> = ["demo.ron", "lightpeft-sst2.ron"]
        .iter()
        .map(|f| std::fs::read(root.join(f)).unwrap())
        .collect();
    seeds.push(
        br#"Pipeline(name: "p", vars: { "xs": [1, 2], "m": { "name": "a", "k": [{ "v": null }] }, "e": "${E:-1}" },
  profiles: { "q": { "xs": [3] } },
  stages: [
    (name: "a-{x}", kind: "k", sweep: { "x": "{xs}" }, with: ["m"], params: { "p": "{m.k}", "s": "{{lit}} {x}" }),
    Stage(name: "b", kind: "k", inputs: { "i": "a-1" }, params: { "deep": [[[[{ "x": "{e}" }]]]] }),
  ])"#
        .to_vec(),
    );
    let env = |name: &str| (name == "HOME").then(|| "/home/x".to_string());
    let profiles = [None, Some("q")];
    mutate::run("pipeline ron", &seeds, mutate::cases(2_000), |input| {
        let text = String::from_utf8_lossy(input);
        for profile in profiles {
            let opts = ExpandOptions {
                profile: profile.map(String::from),
                set: vec![],
            };
            let _ = load_str(Path::new("p.ron"), &text, &opts, &env);
        }
    });
}

//! Result tables and plots on fixed runs: markdown and CSV snapshots, JSON round trip,
//! comparison, well-formed SVG, mask heatmaps from a safetensors file.

use std::collections::{BTreeMap, HashMap};

use lpeft_eval::masks::{MaskTensor, parse_masks, read_masks};
use lpeft_eval::report::{ResultSet, Stat, compare};
use lpeft_eval::svg::{check_well_formed, ffn_histograms, mask_heatmaps, score_vs_pruned, ticks};
use lpeft_eval::write_report;
use lpeft_schema::results::{Efficiency, EpochMetrics, RunResult};
use safetensors::{Dtype, tensor::TensorView};

fn run(task: &str, method: &str, seed: u64, main: f64, pruned: f64, step_s: f64) -> RunResult {
    let metrics: BTreeMap<String, f64> = [("accuracy".to_owned(), main)].into();
    RunResult {
        task: task.to_owned(),
        method: method.to_owned(),
        seed,
        epochs: vec![EpochMetrics {
            epoch: 0,
            step: 10,
            train_loss: 0.5,
            metrics: metrics.clone(),
            main_score: main,
        }],
        best_epoch: 1,
        best_main_score: main,
        best_metrics: metrics,
        efficiency: Efficiency {
            total_params: 125_000_000,
            trainable_params: 1_000_000 + seed,
            backbone_params: 100,
            backbone_params_original: 100,
            backbone_pruned_pct: pruned,
            train_seconds_per_step: step_s,
            train_examples_per_second: 32.0 / step_s,
            inference_examples_per_second: 200.0,
            peak_memory_bytes: 3 << 30,
            memory_kind: "process_rss".to_owned(),
            backend: "flex".to_owned(),
            host: "2-core x86_64".to_owned(),
        },
        wall_seconds: 100.0,
    }
}

/// rte: lora 0.625/0.75/0.875 (mean 0.75, std 0.125), light 0.6875 (one seed);
/// sst2: lora 0.875/0.9375/1.0 (mean 0.9375, std 0.0625), light missing. Interleaved: rows
/// keep first-appearance order (CSV), tables go task by task.
fn runs() -> Vec<RunResult> {
    vec![
        run("glue/rte", "lora", 1, 0.625, 0.0, 0.5),
        run("glue/rte", "lora", 2, 0.75, 0.0, 0.5),
        run("glue/rte", "lora", 3, 0.875, 0.0, 0.5),
        run("glue/sst2", "lora", 1, 0.875, 0.0, 0.5),
        run("glue/sst2", "lora", 2, 0.9375, 0.0, 0.5),
        run("glue/rte", "light", 1, 0.6875, 40.0, 0.25),
        run("glue/sst2", "lora", 3, 1.0, 0.0, 0.5),
    ]
}

#[test]
fn stats_are_mean_and_sample_std() {
    let s = Stat::of(&[0.625, 0.75, 0.875]).unwrap();
    assert_eq!(s.mean, 0.75);
    // deviations ±0.125 and 0: (2 · 0.015625) / (3 − 1) = 0.015625 → 0.125.
    assert_eq!(s.std, Some(0.125));
    assert_eq!(Stat::of(&[0.5]).unwrap().std, None);
    assert!(Stat::of(&[]).is_none());
}

#[test]
fn markdown_snapshot() {
    let set = ResultSet::new("demo", &runs(), vec!["ft-sst2-light".to_owned()]);
    let want = "\
# Results: demo

Main score ×100 on dev (best epoch), mean ± sample std over seeds (n seeds).

| task | lora | light |
|---|---|---|
| glue/rte | 75.00 ± 12.50 (3) | 68.75 (1) |
| glue/sst2 | 93.75 ± 6.25 (3) | — |
| mean over tasks | 84.38 | — |

## Metrics

| task | method | metric | ×100 |
|---|---|---|---|
| glue/rte | lora | accuracy | 75.00 ± 12.50 |
| glue/rte | light | accuracy | 68.75 |
| glue/sst2 | lora | accuracy | 93.75 ± 6.25 |

## Efficiency

| method | task | trainable params | total params | backbone pruned | train s/step | train ex/s | inference ex/s | peak memory | hardware |
|---|---|---|---|---|---|---|---|---|---|
| lora | glue/rte | 1.0M | 125.0M | 0.0 % | 0.5000 | 64.0 | 200.0 | 3.0 GiB (process_rss) | flex on 2-core x86_64 |
| lora | glue/sst2 | 1.0M | 125.0M | 0.0 % | 0.5000 | 64.0 | 200.0 | 3.0 GiB (process_rss) | flex on 2-core x86_64 |
| light | glue/rte | 1.0M | 125.0M | 40.0 % | 0.2500 | 128.0 | 200.0 | 3.0 GiB (process_rss) | flex on 2-core x86_64 |

Missing: 1 run not in the store: ft-sst2-light.
";
    assert_eq!(set.markdown(), want);
}

#[test]
fn task_average_needs_every_task() {
    let set = ResultSet::new("demo", &runs(), vec![]);
    // (0.75 + 0.9375) / 2
    assert_eq!(set.task_average("lora"), Some(0.84375));
    assert_eq!(set.task_average("light"), None);
    // Long missing lists are cut after ten names.
    let missing: Vec<String> = (0..12).map(|i| format!("ft-{i}")).collect();
    let md = ResultSet::new("demo", &runs(), missing).markdown();
    assert!(
        md.contains("Missing: 12 runs not in the store: ft-0, ft-1, ft-2, ft-3, ft-4, ft-5, ft-6, ft-7, ft-8, ft-9 and 2 more (all in results.json)."),
        "{md}"
    );
    // One task: no average row.
    let rte: Vec<RunResult> = runs()
        .into_iter()
        .filter(|r| r.task == "glue/rte")
        .collect();
    assert!(
        !ResultSet::new("demo", &rte, vec![])
            .markdown()
            .contains("mean over tasks")
    );
}

#[test]
fn csv_snapshot() {
    let set = ResultSet::new("demo", &runs(), vec![]);
    let want = "\
task,method,n_seeds,seeds,main_mean,main_std,accuracy_mean,accuracy_std,trainable_params,total_params,backbone_pruned_pct,train_seconds_per_step,train_examples_per_second,inference_examples_per_second,peak_memory_bytes,memory_kind,hardware
glue/rte,lora,3,1 2 3,0.75,0.125,0.75,0.125,1000002,125000000,0,0.5,64,200,3221225472,process_rss,flex on 2-core x86_64
glue/sst2,lora,3,1 2 3,0.9375,0.0625,0.9375,0.0625,1000002,125000000,0,0.5,64,200,3221225472,process_rss,flex on 2-core x86_64
glue/rte,light,1,1,0.6875,,0.6875,,1000001,125000000,40,0.25,128,200,3221225472,process_rss,flex on 2-core x86_64
";
    assert_eq!(set.csv(), want);
}

#[test]
fn json_round_trip_and_compare() {
    let a = ResultSet::new("demo", &runs(), vec![]);
    let back: ResultSet = serde_json::from_str(&a.to_json()).unwrap();
    assert_eq!(back, a);

    // B: rte/lora one point better and twice as fast; sst2/lora gone; rte/new added.
    let mut b_runs: Vec<RunResult> = runs()
        .into_iter()
        .filter(|r| r.task == "glue/rte")
        .map(|mut r| {
            if r.method == "lora" {
                r.best_main_score += 0.01;
                r.efficiency.train_seconds_per_step /= 2.0;
            }
            r
        })
        .collect();
    b_runs.push(run("glue/rte", "new", 1, 0.5, 10.0, 1.0));
    let b = ResultSet::new("demo2", &b_runs, vec![]);
    let c = compare(&a, &b);
    assert_eq!(c.rows.len(), 2);
    let lora = &c.rows[0];
    assert_eq!(
        (lora.task.as_str(), lora.method.as_str()),
        ("glue/rte", "lora")
    );
    assert!((lora.main_delta - 0.01).abs() < 1e-12);
    assert_eq!(lora.train_seconds_per_step_ratio, Some(0.5));
    assert_eq!(lora.peak_memory_ratio, Some(1.0));
    assert_eq!(c.rows[1].main_delta, 0.0);
    assert_eq!(c.only_a, [("glue/sst2".to_owned(), "lora".to_owned())]);
    assert_eq!(c.only_b, [("glue/rte".to_owned(), "new".to_owned())]);
    let md = c.markdown("a.json", "b.json");
    assert!(
        md.contains("| glue/rte | lora | 75.00 | 76.00 | +1.00 | ×1.00 | ×0.50 |"),
        "{md}"
    );
    assert!(md.contains("Only in A: glue/sst2 × lora."), "{md}");
    assert!(md.contains("Only in B: glue/rte × new."), "{md}");
}

#[test]
fn score_plot_is_well_formed_with_one_marker_per_method() {
    let set = ResultSet::new("demo", &runs(), vec![]);
    let svg = score_vs_pruned(&set, "glue/rte").unwrap();
    let names = check_well_formed(&svg).unwrap();
    assert_eq!(names[0], "svg");
    assert!(svg.contains(">glue/rte</text>"));
    assert!(svg.contains(">lora</text>") && svg.contains(">light</text>"));
    // lora (circle) in the plot and the legend; light is a square.
    assert_eq!(names.iter().filter(|n| *n == "circle").count(), 2);
    // sst2 has one method: no legend entry for `light`.
    let svg = score_vs_pruned(&set, "glue/sst2").unwrap();
    check_well_formed(&svg).unwrap();
    assert!(!svg.contains(">light</text>"));
    assert!(score_vs_pruned(&set, "glue/cola").is_none());
}

#[test]
fn well_formedness_checker_rejects_broken_xml() {
    for bad in [
        "<svg><g></svg>",
        "<svg>",
        "<svg a=1/>",
        "<svg>a & b</svg>",
        "<svg/><svg/>",
        "text only",
        "<svg></g>",
    ] {
        assert!(check_well_formed(bad).is_err(), "{bad}");
    }
    assert_eq!(
        check_well_formed("<?xml version=\"1.0\"?><svg x='1'><g/><text>a &amp; b</text></svg>")
            .unwrap(),
        ["svg", "g", "text"]
    );
}

#[test]
fn range_labels_resolve_small_spans() {
    use lpeft_eval::svg::fixed;
    assert_eq!(fixed(0.5, 1.0), "0.500");
    assert_eq!(fixed(0.99951, 0.0005), "0.999510");
    assert_eq!(fixed(1.0, 0.0), "1.000");
}

#[test]
fn ticks_are_round() {
    assert_eq!(ticks(0.0, 50.0), [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
    assert_eq!(ticks(61.5, 70.2), [62.0, 64.0, 66.0, 68.0, 70.0]);
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// 2 records, 2 layers, 3 heads, 4 FFN neurons.
fn masks_file(with_ffn: bool) -> Vec<u8> {
    let heads: Vec<f32> = (0..12).map(|i| i as f32 / 10.0).collect();
    let ffn: Vec<f32> = vec![
        1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, // record 0
        0.0, 0.0, 0.0, 1.0, 0.5, 0.5, 1.0, 1.0, // record 1
    ];
    let steps: Vec<u8> = [0i64, 50].iter().flat_map(|x| x.to_le_bytes()).collect();
    let (hb, fb) = (f32_bytes(&heads), f32_bytes(&ffn));
    let mut views: HashMap<String, TensorView> = HashMap::new();
    views.insert(
        "head_masks".into(),
        TensorView::new(Dtype::F32, vec![2, 2, 3], &hb).unwrap(),
    );
    if with_ffn {
        views.insert(
            "ffn_masks".into(),
            TensorView::new(Dtype::F32, vec![2, 2, 4], &fb).unwrap(),
        );
    }
    views.insert(
        "record_steps".into(),
        TensorView::new(Dtype::I64, vec![2], &steps).unwrap(),
    );
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn mask_files_and_heatmaps() {
    let m = parse_masks(&masks_file(true)).unwrap();
    assert_eq!(m.record_steps, Some(vec![0, 50]));
    assert_eq!(m.last_step(), Some(50));
    let heads = m.heads.as_ref().unwrap();
    assert_eq!((heads.records, heads.layers, heads.width), (2, 2, 3));
    // Last record: values 0.6 … 1.1.
    assert_eq!(heads.last()[1], [0.9, 1.0, 1.1]);

    // FFN last record: layer 0 = [0, 0, 0, 1], layer 1 = [.5, .5, 1, 1]; 20 bins over [0, 1].
    let (lo, hi, hist) = ffn_histograms(m.ffn.as_ref().unwrap());
    assert_eq!((lo, hi), (0.0, 1.0));
    assert_eq!(hist[0][0], 0.75);
    assert_eq!(hist[0][19], 0.25);
    assert_eq!(hist[1][10], 0.5);
    assert_eq!(hist[1][19], 0.5);
    assert_eq!(hist[1].iter().sum::<f64>(), 1.0);

    let maps = mask_heatmaps("est-rte", &m);
    assert_eq!(maps.len(), 2);
    for (part, svg) in &maps {
        let names = check_well_formed(svg).unwrap();
        let cells = names.iter().filter(|n| *n == "rect").count();
        // background + cells + 20 colour-bar steps
        let want = if part == "heads" { 2 * 3 } else { 2 * 20 };
        assert_eq!(cells, 1 + want + 20, "{part}");
        assert!(svg.contains("after step 50"));
    }
    assert!(maps[0].1.contains("layer 1 head 2: 1.1000"));
    // FFN shades are relative to the fullest bin (layer 0, bin 0: 75 %).
    assert!(maps[1].1.contains(">75 %</text>"));

    // Missing FFN tensor: only the head map.
    let m = parse_masks(&masks_file(false)).unwrap();
    assert!(m.ffn.is_none());
    assert_eq!(mask_heatmaps("est", &m).len(), 1);
    assert!(parse_masks(b"not safetensors").is_err());
    let one = MaskTensor {
        records: 1,
        layers: 1,
        width: 2,
        values: vec![0.0, 1.0],
    };
    assert_eq!(one.last(), [[0.0, 1.0]]);
}

#[test]
fn report_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("masks.safetensors");
    std::fs::write(&path, masks_file(true)).unwrap();
    let masks = read_masks(&path).unwrap();
    let set = ResultSet::new("demo", &runs(), vec![]);
    let out = dir.path().join("results/demo");
    let written = write_report(&out, &set, &[("est-rte".to_owned(), masks)]).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "results.md",
            "results.csv",
            "results.json",
            "score_vs_pruned_glue-rte.svg",
            "score_vs_pruned_glue-sst2.svg",
            "masks_est-rte_heads.svg",
            "masks_est-rte_ffn.svg",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(out.join("results.md")).unwrap(),
        set.markdown()
    );
    for p in written
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
    {
        check_well_formed(&std::fs::read_to_string(p).unwrap()).unwrap();
    }
    assert!(read_masks(&dir.path().join("absent.safetensors")).is_err());
}

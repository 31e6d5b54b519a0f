//! Hub download path, against a local HTTP server on 127.0.0.1 serving parquet files (written
//! here with the parquet crate) in the hub's URL layout.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lpeft_data::build::{build, resolve};
use lpeft_data::{DataConfig, Dataset, Labels};
use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

enum Col {
    Str(Vec<&'static str>),
    /// A list column: values with definition and repetition levels.
    StrList(Vec<&'static str>, Vec<i16>, Vec<i16>),
    I32List(Vec<i32>, Vec<i16>, Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
}

/// A snappy-compressed parquet file with one row group; `cols` are the leaf columns in
/// schema order (all REQUIRED).
fn parquet_bytes(schema: &str, cols: Vec<Col>) -> Vec<u8> {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let mut buf = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut buf, schema, props).unwrap();
    let mut rg = writer.next_row_group().unwrap();
    for col in cols {
        let mut c = rg.next_column().unwrap().expect("schema has this column");
        match col {
            Col::Str(v) => {
                let v: Vec<ByteArray> = v.into_iter().map(ByteArray::from).collect();
                c.typed::<ByteArrayType>()
                    .write_batch(&v, None, None)
                    .unwrap();
            }
            Col::I32(v) => {
                c.typed::<Int32Type>().write_batch(&v, None, None).unwrap();
            }
            Col::StrList(v, def, rep) => {
                let v: Vec<ByteArray> = v.into_iter().map(ByteArray::from).collect();
                c.typed::<ByteArrayType>()
                    .write_batch(&v, Some(&def), Some(&rep))
                    .unwrap();
            }
            Col::I32List(v, def, rep) => {
                c.typed::<Int32Type>()
                    .write_batch(&v, Some(&def), Some(&rep))
                    .unwrap();
            }
            Col::I64(v) => {
                c.typed::<Int64Type>().write_batch(&v, None, None).unwrap();
            }
            Col::F32(v) => {
                c.typed::<FloatType>().write_batch(&v, None, None).unwrap();
            }
        }
        c.close().unwrap();
    }
    rg.close().unwrap();
    writer.close().unwrap();
    buf
}

/// Serves `files` (URL path -> bytes) over HTTP/1.1; counts the requests it answers.
fn serve(files: HashMap<String, Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let response = match files.get(&path) {
                Some(body) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found".to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    (format!("http://{addr}"), hits)
}

fn hub_config(task: &str, endpoint: &str, cache: PathBuf) -> DataConfig {
    serde_json::from_value(serde_json::json!({
        "task": task,
        "hub": { "endpoint": endpoint, "cache_dir": cache, "revision": "main" },
        "model": common::model_dir(),
    }))
    .unwrap()
}

const SST2_SCHEMA: &str = "message schema { REQUIRED BYTE_ARRAY sentence (UTF8); REQUIRED INT64 label; REQUIRED INT32 idx; }";

#[test]
fn glue_from_hub_parquet_and_cache() {
    let mut files = HashMap::new();
    files.insert(
        "/datasets/nyu-mll/glue/resolve/main/sst2/train-00000-of-00001.parquet".to_owned(),
        parquet_bytes(
            SST2_SCHEMA,
            vec![
                Col::Str(vec![
                    "hide new secretions from the parental units ",
                    "contains no wit , only labored gags ",
                    "that loves its characters ",
                ]),
                Col::I64(vec![0, 0, 1]),
                Col::I32(vec![0, 1, 2]),
            ],
        ),
    );
    files.insert(
        "/datasets/nyu-mll/glue/resolve/main/sst2/validation-00000-of-00001.parquet".to_owned(),
        parquet_bytes(
            SST2_SCHEMA,
            vec![
                Col::Str(vec!["it 's a charming journey . "]),
                Col::I64(vec![1]),
                Col::I32(vec![0]),
            ],
        ),
    );
    let (endpoint, hits) = serve(files);
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub_config("glue/sst2", &endpoint, cache.path().to_owned());
    let resolved = resolve(&cfg).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert!(
        cache
            .path()
            .join("nyu-mll/glue/main/sst2/train-00000-of-00001.parquet")
            .is_file()
    );
    let out = tempfile::tempdir().unwrap();
    let report = build(&resolved, out.path(), &|_| {}).unwrap();
    assert_eq!(
        report.meta.splits[0].sources[0].name,
        "nyu-mll/glue/sst2/train-00000-of-00001.parquet"
    );
    let train = Dataset::open(out.path()).unwrap().split("train").unwrap();
    assert_eq!(train.num_rows(), 3);
    assert_eq!(train.labels, Labels::Class(vec![0, 0, 1]));
    // The same sentence tokenized from the official TSV gives the same ids.
    let tok = lpeft_tokenizer::Tokenizer::from_file(common::model_dir()).unwrap();
    let e = tok
        .encode(
            "hide new secretions from the parental units ",
            None,
            Some(128),
        )
        .unwrap();
    assert_eq!(&train.input_ids[train.row(0)], &e.ids[..]);

    // Second resolve: served from the cache, no request.
    resolve(&cfg).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[test]
fn missing_hub_file_names_the_url() {
    let (endpoint, _) = serve(HashMap::new());
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub_config("glue/rte", &endpoint, cache.path().to_owned());
    let msg = resolve(&cfg).unwrap_err().to_string();
    assert!(
        msg.contains(&format!(
            "{endpoint}/datasets/nyu-mll/glue/resolve/main/rte/train-00000-of-00001.parquet"
        )),
        "{msg}"
    );
    assert!(msg.contains("404"), "{msg}");
}

#[test]
fn superglue_from_hub_regroups_multirc_and_reads_copa() {
    let multirc_schema = "message schema { REQUIRED BYTE_ARRAY paragraph (UTF8); REQUIRED BYTE_ARRAY question (UTF8); REQUIRED BYTE_ARRAY answer (UTF8); REQUIRED group idx { REQUIRED INT32 paragraph; REQUIRED INT32 question; REQUIRED INT32 answer; } REQUIRED INT64 label; }";
    let multirc = parquet_bytes(
        multirc_schema,
        vec![
            Col::Str(vec!["P0", "P0", "P0", "P0", "P1"]),
            Col::Str(vec!["Q0?", "Q0?", "Q1?", "Q1?", "Q2?"]),
            Col::Str(vec!["a", "b", "c", "d", "e"]),
            Col::I32(vec![0, 0, 0, 0, 1]),
            Col::I32(vec![0, 0, 1, 1, 2]),
            Col::I32(vec![0, 1, 2, 3, 4]),
            Col::I64(vec![1, 0, 0, 1, 1]),
        ],
    );
    let copa_schema = "message schema { REQUIRED BYTE_ARRAY premise (UTF8); REQUIRED BYTE_ARRAY choice1 (UTF8); REQUIRED BYTE_ARRAY choice2 (UTF8); REQUIRED BYTE_ARRAY question (UTF8); REQUIRED INT32 idx; REQUIRED INT64 label; }";
    let copa = parquet_bytes(
        copa_schema,
        vec![
            Col::Str(vec!["The man turned on the faucet."]),
            Col::Str(vec!["The toilet filled with water."]),
            Col::Str(vec!["Water flowed from the spout."]),
            Col::Str(vec!["effect"]),
            Col::I32(vec![0]),
            Col::I64(vec![1]),
        ],
    );
    let mut files = HashMap::new();
    for split in ["train", "validation"] {
        files.insert(
            format!("/datasets/aps/super_glue/resolve/main/multirc/{split}-00000-of-00001.parquet"),
            multirc.clone(),
        );
        files.insert(
            format!("/datasets/aps/super_glue/resolve/main/copa/{split}-00000-of-00001.parquet"),
            copa.clone(),
        );
    }
    let (endpoint, _) = serve(files);
    let cache = tempfile::tempdir().unwrap();

    let out = tempfile::tempdir().unwrap();
    let cfg = hub_config("superglue/multirc", &endpoint, cache.path().to_owned());
    build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
    let dev = Dataset::open(out.path()).unwrap().split("dev").unwrap();
    assert_eq!(dev.group_ids, vec![0, 0, 1, 1, 2]);
    assert_eq!(dev.labels, Labels::Class(vec![1, 0, 0, 1, 1]));

    let out = tempfile::tempdir().unwrap();
    let cfg = hub_config("superglue/copa", &endpoint, cache.path().to_owned());
    build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
    let train = Dataset::open(out.path()).unwrap().split("train").unwrap();
    assert_eq!(train.group_ids, vec![0, 0]);
    assert_eq!(train.labels, Labels::Class(vec![1]));
}

#[test]
fn stsb_float_labels_from_hub() {
    let schema = "message schema { REQUIRED BYTE_ARRAY sentence1 (UTF8); REQUIRED BYTE_ARRAY sentence2 (UTF8); REQUIRED FLOAT label; REQUIRED INT32 idx; }";
    let train = parquet_bytes(
        schema,
        vec![
            Col::Str(vec!["A plane is taking off.", "A man is playing a flute."]),
            Col::Str(vec![
                "An air plane is taking off.",
                "A man is playing a flute.",
            ]),
            Col::F32(vec![5.0, 3.8]),
            Col::I32(vec![0, 1]),
        ],
    );
    let test = parquet_bytes(
        schema,
        vec![
            Col::Str(vec!["A girl is styling her hair."]),
            Col::Str(vec!["A girl is brushing her hair."]),
            Col::F32(vec![-1.0]),
            Col::I32(vec![0]),
        ],
    );
    let mut files = HashMap::new();
    files.insert(
        "/datasets/nyu-mll/glue/resolve/main/stsb/train-00000-of-00001.parquet".to_owned(),
        train,
    );
    files.insert(
        "/datasets/nyu-mll/glue/resolve/main/stsb/test-00000-of-00001.parquet".to_owned(),
        test,
    );
    let (endpoint, _) = serve(files);
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = hub_config("glue/stsb", &endpoint, cache.path().to_owned());
    cfg.splits = Some(vec!["train".to_owned(), "test".to_owned()]);
    let out = tempfile::tempdir().unwrap();
    let report = build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
    assert!(!report.meta.splits[1].labeled);
    let ds = Dataset::open(out.path()).unwrap();
    assert_eq!(
        ds.split("train").unwrap().labels,
        Labels::Float(vec![5.0, 3.8])
    );
    assert_eq!(ds.split("test").unwrap().labels, Labels::None);
}

#[test]
fn squad_from_hub_shares_contexts_and_maps_answers() {
    // The hub's layout: answers is a struct of two lists (3-level LIST encoding).
    let schema = "message schema { REQUIRED BYTE_ARRAY id (UTF8); REQUIRED BYTE_ARRAY title (UTF8); \
        REQUIRED BYTE_ARRAY context (UTF8); REQUIRED BYTE_ARRAY question (UTF8); \
        REQUIRED group answers { \
          REQUIRED group text (LIST) { REPEATED group list { REQUIRED BYTE_ARRAY element (UTF8); } } \
          REQUIRED group answer_start (LIST) { REPEATED group list { REQUIRED INT32 element; } } } }";
    let ctx1 = "Zürich is a city. Its mayor is Corine Mauch.";
    let ctx2 = "Paris is the capital of France.";
    let mauch = ctx1.chars().count() - "Corine Mauch.".chars().count();
    let file = parquet_bytes(
        schema,
        vec![
            Col::Str(vec!["q1", "q2", "q3"]),
            Col::Str(vec!["Zürich", "Zürich", "Paris"]),
            Col::Str(vec![ctx1, ctx1, ctx2]),
            Col::Str(vec![
                "Who is the mayor?",
                "What is Zürich?",
                "What is the capital of France?",
            ]),
            // Row 1 has two answers, rows 2 and 3 one each.
            Col::StrList(
                vec!["Corine Mauch", "Mauch", "a city", "Paris"],
                vec![1, 1, 1, 1],
                vec![0, 1, 0, 0],
            ),
            Col::I32List(
                vec![mauch as i32, mauch as i32 + 7, 10, 0],
                vec![1, 1, 1, 1],
                vec![0, 1, 0, 0],
            ),
        ],
    );
    let mut files = HashMap::new();
    files.insert(
        "/datasets/rajpurkar/squad/resolve/main/plain_text/validation-00000-of-00001.parquet"
            .to_owned(),
        file,
    );
    let (endpoint, _) = serve(files);
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = hub_config("squad/v1.1", &endpoint, cache.path().to_owned());
    cfg.splits = Some(vec!["dev".to_owned()]);
    let out = tempfile::tempdir().unwrap();
    build(&resolve(&cfg).unwrap(), out.path(), &|_| {}).unwrap();
    let ds = Dataset::open(out.path()).unwrap();
    let Some(lpeft_data::Texts::Span(t)) = ds.texts("dev").unwrap() else {
        panic!("span texts")
    };
    assert_eq!(t.contexts, vec![ctx1.to_owned(), ctx2.to_owned()]);
    assert_eq!(
        t.questions.iter().map(|q| q.context).collect::<Vec<_>>(),
        vec![0, 0, 1]
    );
    assert_eq!(t.questions[0].answers.len(), 2);
    let a = &t.questions[0].answers[0];
    assert_eq!(
        &ctx1[a.byte_start..a.byte_start + a.text.len()],
        "Corine Mauch"
    );
    let dev = ds.split("dev").unwrap();
    let Labels::Span(l) = &dev.labels else {
        panic!("span labels")
    };
    let spans = dev.token_spans.as_ref().unwrap();
    let base = dev.row(0).start;
    let (s, e) = (l[0] as usize, l[1] as usize);
    assert_eq!(
        &ctx1[spans[2 * (base + s)] as usize..spans[2 * (base + e) + 1] as usize],
        "Corine Mauch"
    );
}

/// `lpeft fetch-data`'s work: the hub's parquet files written in the official layout read back
/// as the examples the hub route reads (same tokens and labels), test files keep their `idx`
/// as `index`, and a second run keeps the files without a request.
#[test]
fn mirrored_glue_files_read_back_as_the_hubs_examples() {
    let rte_schema = "message schema { REQUIRED BYTE_ARRAY sentence1 (UTF8); REQUIRED BYTE_ARRAY sentence2 (UTF8); REQUIRED INT64 label; REQUIRED INT32 idx; }";
    let rte = |labels: Vec<i64>, idx: Vec<i32>| {
        parquet_bytes(
            rte_schema,
            vec![
                Col::Str(vec!["Dana Reeve died.", "A cat \"sat\" here."]),
                Col::Str(vec!["Christopher Reeve had an accident.", "A cat sat."]),
                Col::I64(labels),
                Col::I32(idx),
            ],
        )
    };
    let cola = |labels: Vec<i64>| {
        parquet_bytes(
            SST2_SCHEMA,
            vec![
                Col::Str(vec![
                    "Our friends won't buy this analysis.",
                    "They drank the pub.",
                ]),
                Col::I64(labels),
                Col::I32(vec![0, 1]),
            ],
        )
    };
    let base = "/datasets/nyu-mll/glue/resolve/main";
    let mut files = HashMap::new();
    files.insert(
        format!("{base}/rte/train-00000-of-00001.parquet"),
        rte(vec![1, 0], vec![0, 1]),
    );
    files.insert(
        format!("{base}/rte/validation-00000-of-00001.parquet"),
        rte(vec![0, 1], vec![0, 1]),
    );
    files.insert(
        format!("{base}/rte/test-00000-of-00001.parquet"),
        rte(vec![-1, -1], vec![5, 6]),
    );
    for (split, labels) in [
        ("train", vec![1, 0]),
        ("validation", vec![0, 1]),
        ("test", vec![-1, -1]),
    ] {
        files.insert(
            format!("{base}/cola/{split}-00000-of-00001.parquet"),
            cola(labels),
        );
    }
    let (endpoint, hits) = serve(files);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let hub = lpeft_data::mirror::HubSource {
        endpoint: endpoint.clone(),
        repo: None,
        revision: "main".to_owned(),
        cache: cache.path().to_owned(),
    };
    for name in ["glue/rte", "glue/cola"] {
        let task = lpeft_data::registry::task(name).unwrap();
        for split in ["train", "dev", "test"] {
            let m = lpeft_data::mirror::mirror_split(task, split, &hub, out.path(), false).unwrap();
            assert_eq!(m.rows, Some(2), "{name} {split}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(out.path().join("RTE/test.tsv")).unwrap(),
        "index\tsentence1\tsentence2\n5\tDana Reeve died.\tChristopher Reeve had an accident.\n6\tA cat \"sat\" here.\tA cat sat.\n"
    );
    for name in ["glue/rte", "glue/cola"] {
        let mut local = common::config(name, out.path().to_owned());
        local.splits = Some(vec!["train".into(), "dev".into(), "test".into()]);
        let mut remote = hub_config(name, &endpoint, cache.path().to_owned());
        remote.splits = local.splits.clone();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        build(&resolve(&local).unwrap(), a.path(), &|_| {}).unwrap();
        build(&resolve(&remote).unwrap(), b.path(), &|_| {}).unwrap();
        let (a, b) = (
            Dataset::open(a.path()).unwrap(),
            Dataset::open(b.path()).unwrap(),
        );
        for split in ["train", "dev", "test"] {
            let (x, y) = (a.split(split).unwrap(), b.split(split).unwrap());
            assert_eq!(x.input_ids, y.input_ids, "{name} {split}");
            assert_eq!(x.type_ids, y.type_ids, "{name} {split}");
            assert_eq!(x.labels, y.labels, "{name} {split}");
        }
    }
    let before = hits.load(Ordering::SeqCst);
    let task = lpeft_data::registry::task("glue/rte").unwrap();
    let again = lpeft_data::mirror::mirror_split(task, "train", &hub, out.path(), false).unwrap();
    assert_eq!(again.rows, None, "kept");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "no request for a kept file"
    );
}

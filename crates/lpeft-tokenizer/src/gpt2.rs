//! GPT-2 byte-level BPE from a model directory's `vocab.json` + `merges.txt` (the layout
//! facebook/opt-* ship, without a `tokenizer.json`), assembled as transformers' `GPT2Tokenizer`
//! assembles it:
//!
//! - the BPE model from the two files, no unknown token, no subword prefix or suffix;
//! - a ByteLevel pre-tokenizer (GPT-2's regex, `add_prefix_space` from `tokenizer_config.json`,
//!   false for OPT) and a ByteLevel decoder;
//! - the special tokens the configs name (`bos_token`, `eos_token`, `unk_token`, `pad_token`,
//!   and `added_tokens_decoder`'s) as added tokens, so their text is matched whole;
//! - transformers 5's post-processing of `add_bos_token` (`update_post_processor` of its
//!   tokenizers backend): single `bos A`, pair `bos A bos B`, the second sequence's tokens (its
//!   `bos` included) of type 1. OPT (`add_bos_token: true`, bos `</s>` = id 2) is `</s> A` and
//!   `</s> A </s> B`, with no end-of-sequence token; the slow `GPT2Tokenizer` of transformers 4
//!   (`build_inputs_with_special_tokens`: `bos + A + bos + B`) gives the same ids, while
//!   transformers 4's converted fast tokenizer (`GPT2Converter`) wrote `</s> A B` for a pair (a
//!   `tokenizer.json` made that way is read as it is, by [`crate::Tokenizer::from_bytes`]).
//!   Other layouts (`add_bos_token` false, or `add_eos_token` true) are refused by name: no
//!   model here was trained with them.
//!
//! Settings come from `tokenizer_config.json`, overridden by `special_tokens_map.json` when the
//! config has no `added_tokens_decoder` (transformers 5's precedence); defaults are
//! `GPT2Tokenizer`'s. Without a `tokenizer_class` in the config, `config.json`'s `model_type`
//! must be one that transformers maps to `GPT2Tokenizer` (`opt`, `gpt2`): a RoBERTa directory
//! has the same two files but other special tokens, and is refused rather than misread.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use crate::TokenizerError;

pub const VOCAB: &str = "vocab.json";
pub const MERGES: &str = "merges.txt";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
pub const MODEL_CONFIG: &str = "config.json";

/// The files a GPT-2 BPE directory must have.
pub const REQUIRED: [&str; 3] = [VOCAB, MERGES, TOKENIZER_CONFIG];

/// `tokenizer_class` values read this way.
const CLASSES: [&str; 2] = ["GPT2Tokenizer", "GPT2TokenizerFast"];

/// `model_type`s whose tokenizer transformers builds as `GPT2Tokenizer`.
const MODEL_TYPES: [&str; 2] = ["opt", "gpt2"];

/// The files of one directory that [`load`] reads, in the order their hashes are combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt2Files {
    pub dir: PathBuf,
    /// `vocab.json`, `merges.txt`, `tokenizer_config.json`, then `special_tokens_map.json` and
    /// `config.json` where they are read.
    pub files: Vec<PathBuf>,
}

/// Whether `dir` holds (part of) the GPT-2 BPE layout: any of its required files.
pub fn looks_like(dir: &Path) -> bool {
    REQUIRED.iter().any(|f| dir.join(f).is_file())
}

/// The files [`load`] will read from `dir`: the three required ones (a missing one is an error
/// naming the directory and every file expected), `special_tokens_map.json` when it is there
/// and the config has no `added_tokens_decoder`, and `config.json` when the config names no
/// `tokenizer_class`. Reads `tokenizer_config.json` only.
pub fn locate(dir: &Path) -> Result<Gpt2Files, TokenizerError> {
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(TokenizerError::MissingFiles {
            dir: dir.to_path_buf(),
            missing: missing.join(", "),
        });
    }
    let config_file = dir.join(TOKENIZER_CONFIG);
    let config = read_json(&config_file, &read(&config_file)?)?;
    Ok(Gpt2Files {
        dir: dir.to_path_buf(),
        files: file_list(dir, &config),
    })
}

fn file_list(dir: &Path, config: &Value) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = REQUIRED.iter().map(|f| dir.join(f)).collect();
    if config.get("added_tokens_decoder").is_none() && dir.join(SPECIAL_TOKENS_MAP).is_file() {
        files.push(dir.join(SPECIAL_TOKENS_MAP));
    }
    if config.get("tokenizer_class").is_none_or(Value::is_null) {
        files.push(dir.join(MODEL_CONFIG));
    }
    files
}

fn read(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json(path: &Path, bytes: &[u8]) -> Result<Value, TokenizerError> {
    serde_json::from_slice(bytes).map_err(|e| TokenizerError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn bad(path: &Path, message: impl Into<String>) -> TokenizerError {
    TokenizerError::Parse {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// What the configs say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    bos: Option<String>,
    eos: Option<String>,
    unk: Option<String>,
    pad: Option<String>,
    add_bos: bool,
    add_eos: bool,
    add_prefix_space: bool,
    /// `added_tokens_decoder`: (id, content, special).
    added: Vec<(u32, String, bool)>,
}

/// A special-token value: a string, `{"content": ...}` (an `AddedToken`), or null (none).
fn token_value(v: &Value, field: &str, file: &Path) -> Result<Option<String>, TokenizerError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(m) => match m.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(bad(file, format!("`{field}` has no string `content`"))),
        },
        other => Err(bad(
            file,
            format!("`{field}` is {other}, expected a string or {{\"content\": ...}}"),
        )),
    }
}

fn flag(config: &Value, field: &str, file: &Path) -> Result<bool, TokenizerError> {
    match config.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(bad(
            file,
            format!("`{field}` is {other}, expected true or false"),
        )),
    }
}

impl Settings {
    fn read(
        config: &Value,
        config_file: &Path,
        map: Option<(&Value, &Path)>,
    ) -> Result<Settings, TokenizerError> {
        if !config.is_object() {
            return Err(bad(config_file, "not a JSON object"));
        }
        // GPT2Tokenizer's defaults.
        let default = |field: &str| match field {
            "pad_token" => None,
            _ => Some("<|endoftext|>".to_owned()),
        };
        let token = |field: &str| -> Result<Option<String>, TokenizerError> {
            if let Some((map, file)) = map
                && let Some(v) = map.get(field)
            {
                return token_value(v, field, file);
            }
            match config.get(field) {
                Some(v) => token_value(v, field, config_file),
                None => Ok(default(field)),
            }
        };
        let mut added = Vec::new();
        if let Some(decoder) = config.get("added_tokens_decoder") {
            let Value::Object(entries) = decoder else {
                return Err(bad(config_file, "`added_tokens_decoder` is not an object"));
            };
            for (id, entry) in entries {
                let id: u32 = id.parse().map_err(|_| {
                    bad(
                        config_file,
                        format!("`added_tokens_decoder` key {id:?} is not a token id"),
                    )
                })?;
                let content = token_value(entry, "added_tokens_decoder", config_file)?
                    .ok_or_else(|| bad(config_file, "`added_tokens_decoder` entry is null"))?;
                let special = entry.get("special").and_then(Value::as_bool) == Some(true);
                added.push((id, content, special));
            }
            added.sort();
        }
        Ok(Settings {
            bos: token("bos_token")?,
            eos: token("eos_token")?,
            unk: token("unk_token")?,
            pad: token("pad_token")?,
            add_bos: flag(config, "add_bos_token", config_file)?,
            add_eos: flag(config, "add_eos_token", config_file)?,
            add_prefix_space: flag(config, "add_prefix_space", config_file)?,
            added,
        })
    }
}

fn check_class(
    dir: &Path,
    config: &Value,
    model_config: Option<(&Path, &[u8])>,
) -> Result<(), TokenizerError> {
    let config_file = dir.join(TOKENIZER_CONFIG);
    if let Some(class) = config.get("tokenizer_class").filter(|v| !v.is_null()) {
        let class = class.as_str().unwrap_or_default();
        return if CLASSES.contains(&class) {
            Ok(())
        } else {
            Err(TokenizerError::Unsupported {
                path: config_file,
                message: format!(
                    "tokenizer_class {class:?}: only {} are read from vocab.json + merges.txt (give a tokenizer.json for others)",
                    CLASSES.join(" and ")
                ),
            })
        };
    }
    let model_type = match model_config {
        Some((file, bytes)) => read_json(file, bytes)?
            .get("model_type")
            .and_then(Value::as_str)
            .map(str::to_owned),
        None => None,
    };
    match model_type {
        Some(t) if MODEL_TYPES.contains(&t.as_str()) => Ok(()),
        other => Err(TokenizerError::Unsupported {
            path: config_file,
            message: format!(
                "no tokenizer_class, and {}: vocab.json + merges.txt are read as GPT-2 BPE only for model_type {} or tokenizer_class {} (give a tokenizer.json for others)",
                match other {
                    Some(t) => format!("config.json's model_type is {t:?}"),
                    None => "no model_type in a config.json beside it".to_owned(),
                },
                MODEL_TYPES.join(" or "),
                CLASSES.join(" or "),
            ),
        }),
    }
}

fn parse_vocab(file: &Path, bytes: &[u8]) -> Result<Vocab, TokenizerError> {
    let Value::Object(map) = read_json(file, bytes)? else {
        return Err(bad(file, "not a JSON object of token → id"));
    };
    let mut vocab = Vocab::default();
    for (token, id) in map {
        let id = id
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| {
                bad(
                    file,
                    format!("token {token:?} has id {id}, expected an integer"),
                )
            })?;
        vocab.insert(token, id);
    }
    Ok(vocab)
}

/// `merges.txt`: an optional `#version` line, then one `left right` pair per line.
fn parse_merges(file: &Path, bytes: &[u8]) -> Result<Merges, TokenizerError> {
    let text = std::str::from_utf8(bytes).map_err(|e| bad(file, e.to_string()))?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        match line.split(' ').collect::<Vec<_>>()[..] {
            [a, b] if !a.is_empty() && !b.is_empty() => merges.push((a.to_owned(), b.to_owned())),
            _ => {
                return Err(bad(
                    file,
                    format!("line {}: expected two tokens separated by one space", i + 1),
                ));
            }
        }
    }
    Ok(merges)
}

/// A tokenizer assembled from a directory's files.
pub struct Loaded {
    pub tokenizer: HfTokenizer,
    /// The BLAKE3 of one line per file read, `<file name> <BLAKE3 of its bytes>`, in
    /// [`Gpt2Files::files`]' order.
    pub content_hash: String,
    /// The configured `pad_token`'s id.
    pub pad_id: Option<u32>,
}

/// The tokenizer of `dir` ([`Loaded`]).
pub fn load(dir: &Path) -> Result<Loaded, TokenizerError> {
    let located = locate(dir)?;
    let mut contents = Vec::new();
    for f in &located.files {
        contents.push((f.clone(), read(f)?));
    }
    let bytes = |name: &str| {
        contents
            .iter()
            .find(|(p, _)| p.file_name().is_some_and(|n| n == name))
            .map(|(p, b)| (p.as_path(), b.as_slice()))
    };
    let (config_file, config_bytes) = bytes(TOKENIZER_CONFIG).expect("a required file");
    let config = read_json(config_file, config_bytes)?;
    if file_list(dir, &config) != located.files {
        return Err(bad(config_file, "changed while it was read"));
    }
    check_class(dir, &config, bytes(MODEL_CONFIG))?;
    let map = match bytes(SPECIAL_TOKENS_MAP) {
        Some((file, b)) => Some((read_json(file, b)?, file)),
        None => None,
    };
    let settings = Settings::read(&config, config_file, map.as_ref().map(|(v, f)| (v, *f)))?;
    if !settings.add_bos || settings.add_eos {
        return Err(TokenizerError::Unsupported {
            path: config_file.to_path_buf(),
            message: format!(
                "add_bos_token {}, add_eos_token {}: only OPT's layout is supported (add_bos_token true, add_eos_token false: a bos before each sequence, nothing after)",
                settings.add_bos, settings.add_eos
            ),
        });
    }
    let (vocab_file, vocab_bytes) = bytes(VOCAB).expect("a required file");
    let vocab = parse_vocab(vocab_file, vocab_bytes)?;
    let (merges_file, merges_bytes) = bytes(MERGES).expect("a required file");
    let merges = parse_merges(merges_file, merges_bytes)?;
    let pad_id = settings.pad.as_ref().and_then(|p| vocab.get(p).copied());
    let tokenizer = assemble(vocab, merges, &settings, vocab_file, config_file)?;
    let mut listing = String::new();
    for (path, b) in &contents {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        listing.push_str(&format!("{name} {}\n", blake3::hash(b).to_hex()));
    }
    Ok(Loaded {
        tokenizer,
        content_hash: blake3::hash(listing.as_bytes()).to_hex().to_string(),
        pad_id,
    })
}

fn assemble(
    vocab: Vocab,
    merges: Merges,
    s: &Settings,
    vocab_file: &Path,
    config_file: &Path,
) -> Result<HfTokenizer, TokenizerError> {
    let id_of = |token: &str, field: &str| {
        vocab.get(token).copied().ok_or_else(|| TokenizerError::Unsupported {
            path: config_file.to_path_buf(),
            message: format!(
                "{field} {token:?} is not in {} (a token the vocabulary does not have would get an id the model has no embedding for)",
                vocab_file.display()
            ),
        })
    };
    let mut specials: Vec<(String, u32)> = Vec::new();
    for (field, token) in [
        ("bos_token", &s.bos),
        ("eos_token", &s.eos),
        ("unk_token", &s.unk),
        ("pad_token", &s.pad),
    ] {
        if let Some(t) = token {
            let id = id_of(t, field)?;
            if !specials.iter().any(|(c, _)| c == t) {
                specials.push((t.clone(), id));
            }
        }
    }
    let mut added = Vec::new();
    for (id, content, special) in &s.added {
        if id_of(content, "added_tokens_decoder entry")? != *id {
            return Err(TokenizerError::Unsupported {
                path: config_file.to_path_buf(),
                message: format!(
                    "added token {content:?} has id {id} here and {} in {}",
                    vocab[content],
                    vocab_file.display()
                ),
            });
        }
        if !specials.iter().any(|(c, _)| c == content) {
            added.push(AddedToken::from(content.clone(), *special));
        }
    }
    let bos = s.bos.as_deref().filter(|_| s.add_bos);
    let eos = s.eos.as_deref().filter(|_| s.add_eos);
    let mut template_specials: Vec<(String, u32)> = Vec::new();
    for t in [bos, eos].into_iter().flatten() {
        if !template_specials.iter().any(|(c, _)| c == t) {
            template_specials.push((t.to_owned(), id_of(t, "special token")?));
        }
    }
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .build()
        .map_err(|e| bad(vocab_file, e.to_string()))?;
    let mut tok = HfTokenizer::new(model);
    tok.with_pre_tokenizer(Some(ByteLevel::new(s.add_prefix_space, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let template = |bos: Option<&str>, eos: Option<&str>, seq: &str, type_id: u32| {
        bos.map(|b| format!("{b}:{type_id}"))
            .into_iter()
            .chain(std::iter::once(format!("{seq}:{type_id}")))
            .chain(eos.map(|e| format!("{e}:{type_id}")))
            .collect::<Vec<_>>()
    };
    let single = template(bos, eos, "$A", 0);
    let pair: Vec<String> = single
        .iter()
        .cloned()
        .chain(template(bos, eos, "$B", 1))
        .collect();
    let processor = TemplateProcessing::builder()
        .try_single(single)
        .and_then(|b| b.try_pair(pair))
        .map_err(|e| bad(config_file, e.to_string()))?
        .special_tokens(template_specials)
        .build()
        .map_err(|e| bad(config_file, e.to_string()))?;
    tok.with_post_processor(Some(processor));
    tok.add_special_tokens(
        specials
            .iter()
            .map(|(content, _)| AddedToken::from(content.clone(), true)),
    )
    .map_err(|e| bad(config_file, e.to_string()))?;
    if !added.is_empty() {
        tok.add_tokens(added)
            .map_err(|e| bad(config_file, e.to_string()))?;
    }
    Ok(tok)
}

//! Hugging Face tokenizer loading and encoding for the BERT, RoBERTa and OPT families.
//!
//! One [`Tokenizer`] wraps a `tokenizer.json`, or the GPT-2 byte-level BPE files of a model
//! directory that has none (`vocab.json` + `merges.txt` + `tokenizer_config.json`, as
//! facebook/opt-* ship them: [`gpt2`]). [`TokenizerSource::locate`] says which a path is and
//! which files loading it reads. A tokenizer encodes a single sentence or a pair with the
//! family's own special tokens, taken from the post-processor (BERT: `[CLS] A [SEP] B [SEP]`,
//! type ids 0/1; RoBERTa: `<s> A </s></s> B </s>`, type ids 0; MPNet's `tokenizer.json` is a
//! WordPiece model with RoBERTa's post-processor, so it is RoBERTa here; OPT: `</s> A` and
//! `</s> A </s> B`, type ids 0/1, nothing at the end), and truncates longest-first to a maximum
//! length that counts those special tokens.
//!
//! Invariants:
//! - Padding and truncation baked into a `tokenizer.json` are switched off at load time: the
//!   caller decides lengths ([`Tokenizer::encode`]'s `max_len`), and padding happens per batch
//!   in the data crate.
//! - Offsets are **byte** offsets into the sequence they belong to (`first` or `second`), as
//!   the Rust `tokenizers` crate reports them; special tokens have `(0, 0)` and sequence id `None`.
//!   Byte-level BPE offsets include a token's leading space (`Ġ`), as transformers reports them
//!   for OPT.
//! - [`Tokenizer::content_hash`] names the content read: a `tokenizer.json`'s BLAKE3, or for the
//!   GPT-2 files the BLAKE3 of their names and BLAKE3s ([`gpt2::load`]).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub mod gpt2;
use tokenizers::utils::truncation::{
    TruncationDirection, TruncationParams, TruncationStrategy, truncate_encodings,
};

/// Which encoder family the special tokens belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `[CLS] A [SEP] B [SEP]`, type ids 0 then 1.
    Bert,
    /// `<s> A </s></s> B </s>`, type ids all 0.
    Roberta,
    /// `</s> A </s> B` (OPT's GPT-2 BPE, `add_bos_token`): one special token before each
    /// sequence and none after; type ids 0 then 1.
    Opt,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::Opt => "opt",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read tokenizer file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse tokenizer file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "tokenizer {path}: cannot tell BERT from RoBERTa (post-processor {post_processor}, and neither [CLS]/[SEP] nor <s>/</s> in the vocabulary)"
    )]
    UnknownFamily {
        path: PathBuf,
        post_processor: String,
    },
    /// A model directory with neither a `tokenizer.json` nor GPT-2 BPE files.
    #[error(
        "model directory {dir} has no tokenizer: expected tokenizer.json, or GPT-2 BPE's vocab.json + merges.txt + tokenizer_config.json"
    )]
    NoTokenizer { dir: PathBuf },
    /// A GPT-2 BPE directory without one of its required files.
    #[error(
        "model directory {dir} has no tokenizer.json, and of GPT-2 BPE's vocab.json + merges.txt + tokenizer_config.json it lacks {missing}"
    )]
    MissingFiles { dir: PathBuf, missing: String },
    #[error("tokenizer {path}: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error(
        "tokenizer {path}: no padding token (expected a padding section, [PAD] or <pad>, or a pad_token in tokenizer_config.json)"
    )]
    NoPadToken { path: PathBuf },
    #[error("max length {max_len} leaves no room for text after {special} special tokens")]
    MaxLenTooSmall { max_len: usize, special: usize },
    #[error(
        "stride {stride} must be smaller than the room left for the second sequence ({room} tokens)"
    )]
    StrideTooLarge { stride: usize, room: usize },
    #[error("encoding failed: {0}")]
    Encode(String),
}

fn encode_err(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Encode(e.to_string())
}

/// One encoded sequence (or pair), with special tokens, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Byte offsets into the sequence each token came from; `(0, 0)` for special tokens.
    pub offsets: Vec<(usize, usize)>,
    /// `Some(0)` for tokens of `first`, `Some(1)` for tokens of `second`, `None` for special tokens.
    pub sequence_ids: Vec<Option<u8>>,
    /// Whether text was cut to fit the maximum length.
    pub truncated: bool,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// `len_first` and `len_second` are the token counts of the (truncated) sequences before
    /// post-processing: the non-special tokens of the result are those, in that order.
    fn from_encoding(
        e: &tokenizers::Encoding,
        len_first: usize,
        len_second: usize,
        truncated: bool,
    ) -> Encoded {
        let mut seen = 0;
        let sequence_ids = e
            .get_special_tokens_mask()
            .iter()
            .map(|&special| {
                if special == 1 {
                    None
                } else {
                    seen += 1;
                    if seen <= len_first {
                        Some(0)
                    } else if seen <= len_first + len_second {
                        Some(1)
                    } else {
                        None
                    }
                }
            })
            .collect();
        Encoded {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            offsets: e.get_offsets().to_vec(),
            sequence_ids,
            truncated,
        }
    }
}

/// How to split a long second sequence (a SQuAD context) into overlapping windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Total length of each window, special tokens included.
    pub max_len: usize,
    /// Number of second-sequence tokens shared by consecutive windows.
    pub stride: usize,
    /// The first sequence (the question) is cut to this many tokens.
    pub max_first_len: usize,
}

/// Where a tokenizer is read from, and which files that reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSource {
    /// A `tokenizer.json` (given, or inside the model directory).
    Json(PathBuf),
    /// GPT-2 byte-level BPE files of a model directory without a `tokenizer.json`.
    Gpt2(gpt2::Gpt2Files),
}

impl TokenizerSource {
    /// A `tokenizer.json` file, or a model directory: its `tokenizer.json` when it has one,
    /// else its GPT-2 BPE files (an error names the directory and the files expected). A path
    /// that does not exist is taken as a `tokenizer.json`, so loading it names the path.
    pub fn locate(path: impl AsRef<Path>) -> Result<TokenizerSource, TokenizerError> {
        let path = path.as_ref();
        if !path.is_dir() {
            return Ok(TokenizerSource::Json(path.to_path_buf()));
        }
        let json = path.join("tokenizer.json");
        if json.is_file() {
            Ok(TokenizerSource::Json(json))
        } else if gpt2::looks_like(path) {
            Ok(TokenizerSource::Gpt2(gpt2::locate(path)?))
        } else {
            Err(TokenizerError::NoTokenizer {
                dir: path.to_path_buf(),
            })
        }
    }

    /// Every file [`TokenizerSource::load`] reads (for keys: their content decides the tokens).
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            TokenizerSource::Json(p) => vec![p.clone()],
            TokenizerSource::Gpt2(g) => g.files.clone(),
        }
    }

    pub fn load(&self) -> Result<Tokenizer, TokenizerError> {
        match self {
            TokenizerSource::Json(path) => {
                let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
                    path: path.clone(),
                    source,
                })?;
                Tokenizer::from_bytes(&bytes, path)
            }
            TokenizerSource::Gpt2(g) => {
                let loaded = gpt2::load(&g.dir)?;
                let path = g.dir.join(gpt2::TOKENIZER_CONFIG);
                let pad_id = loaded
                    .pad_id
                    .ok_or_else(|| TokenizerError::NoPadToken { path: path.clone() })?;
                Tokenizer::from_inner(loaded.tokenizer, loaded.content_hash, Some(pad_id), &path)
            }
        }
    }
}

/// A loaded tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    family: Family,
    pad_id: u32,
    content_hash: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("family", &self.family)
            .field("pad_id", &self.pad_id)
            .field("content_hash", &self.content_hash)
            .finish()
    }
}

impl Tokenizer {
    /// Load a `tokenizer.json` file, or a model directory's tokenizer
    /// ([`TokenizerSource::locate`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        TokenizerSource::locate(path)?.load()
    }

    /// Load from the bytes of a `tokenizer.json`; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Tokenizer, TokenizerError> {
        let inner =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| TokenizerError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Self::from_inner(inner, blake3::hash(bytes).to_hex().to_string(), None, path)
    }

    /// A tokenizer made elsewhere; `content_hash` names what it was made from, `pad_id` is the
    /// configured padding token's (else the file's padding section, `[PAD]` or `<pad>`), `path`
    /// is only used in error messages.
    fn from_inner(
        mut inner: tokenizers::Tokenizer,
        content_hash: String,
        pad_id: Option<u32>,
        path: &Path,
    ) -> Result<Tokenizer, TokenizerError> {
        let baked_pad = pad_id.or_else(|| inner.get_padding().map(|p| p.pad_id));
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let family = detect_family(&inner).ok_or_else(|| TokenizerError::UnknownFamily {
            path: path.to_path_buf(),
            post_processor: post_processor_type(&inner),
        })?;
        let pad_id = baked_pad
            .or_else(|| inner.token_to_id("[PAD]"))
            .or_else(|| inner.token_to_id("<pad>"))
            .ok_or_else(|| TokenizerError::NoPadToken {
                path: path.to_path_buf(),
            })?;
        Ok(Tokenizer {
            inner,
            family,
            pad_id,
            content_hash,
        })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// BLAKE3 hex digest of the `tokenizer.json` bytes, or of the GPT-2 BPE files' names and
    /// digests ([`gpt2::load`]).
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of special tokens the post-processor adds to a single sequence or a pair.
    pub fn num_special_tokens(&self, pair: bool) -> usize {
        use tokenizers::PostProcessor;
        self.inner
            .get_post_processor()
            .map(|p| p.added_tokens(pair))
            .unwrap_or(0)
    }

    /// Encode `first` (and `second`) with special tokens. With `max_len`, the text is cut
    /// longest-first (one token at a time from the longer sequence) so that the result,
    /// special tokens included, has at most `max_len` tokens.
    pub fn encode(
        &self,
        first: &str,
        second: Option<&str>,
        max_len: Option<usize>,
    ) -> Result<Encoded, TokenizerError> {
        let a = self.inner.encode(first, false).map_err(encode_err)?;
        let b = match second {
            Some(s) => Some(self.inner.encode(s, false).map_err(encode_err)?),
            None => None,
        };
        let mut truncated = false;
        let (mut a, mut b) = match max_len {
            Some(max_len) => {
                let special = self.num_special_tokens(b.is_some());
                if max_len <= special {
                    return Err(TokenizerError::MaxLenTooSmall { max_len, special });
                }
                truncated = a.len() + b.as_ref().map_or(0, |b| b.len()) + special > max_len;
                let params = TruncationParams {
                    max_length: max_len - special,
                    strategy: TruncationStrategy::LongestFirst,
                    stride: 0,
                    direction: TruncationDirection::Right,
                };
                truncate_encodings(a, b, &params).map_err(encode_err)?
            }
            None => (a, b),
        };
        a.take_overflowing();
        if let Some(b) = b.as_mut() {
            b.take_overflowing();
        }
        let (len_a, len_b) = (a.len(), b.as_ref().map_or(0, |b| b.len()));
        let e = self.inner.post_process(a, b, true).map_err(encode_err)?;
        Ok(Encoded::from_encoding(&e, len_a, len_b, truncated))
    }

    /// [`Tokenizer::encode`] over many inputs, in parallel; the output keeps the input order.
    pub fn encode_batch(
        &self,
        inputs: &[(&str, Option<&str>)],
        max_len: Option<usize>,
    ) -> Result<Vec<Encoded>, TokenizerError> {
        inputs
            .par_iter()
            .with_min_len(64)
            .map(|(a, b)| self.encode(a, *b, max_len))
            .collect()
    }

    /// Encode a (question, context) pair as overlapping windows over the context, each window
    /// `[special] question [special] context-slice [special]` of at most `cfg.max_len` tokens.
    /// Offsets of context tokens are byte offsets into `second`.
    pub fn encode_windows(
        &self,
        first: &str,
        second: &str,
        cfg: WindowConfig,
    ) -> Result<Vec<Encoded>, TokenizerError> {
        let mut q = self.inner.encode(first, false).map_err(encode_err)?;
        let truncated = q.len() > cfg.max_first_len;
        q.truncate(cfg.max_first_len, 0, TruncationDirection::Right);
        q.take_overflowing();
        let special = self.num_special_tokens(true);
        let room = cfg
            .max_len
            .checked_sub(special + q.len())
            .filter(|r| *r > 0)
            .ok_or(TokenizerError::MaxLenTooSmall {
                max_len: cfg.max_len,
                special: special + q.len(),
            })?;
        if cfg.stride >= room {
            return Err(TokenizerError::StrideTooLarge {
                stride: cfg.stride,
                room,
            });
        }
        let mut c = self.inner.encode(second, false).map_err(encode_err)?;
        c.truncate(room, cfg.stride, TruncationDirection::Right);
        let rest = c.take_overflowing();
        let mut out = Vec::with_capacity(1 + rest.len());
        for window in std::iter::once(c).chain(rest) {
            let len_window = window.len();
            let e = self
                .inner
                .post_process(q.clone(), Some(window), true)
                .map_err(encode_err)?;
            out.push(Encoded::from_encoding(&e, q.len(), len_window, truncated));
        }
        Ok(out)
    }
}

/// Whether the post-processor's single-sequence template is one special token and then the
/// sequence (OPT's `</s> $A`).
fn special_then_sequence(inner: &tokenizers::Tokenizer) -> bool {
    let single = inner
        .get_post_processor()
        .and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| v.get("single").cloned());
    match single.as_ref().and_then(serde_json::Value::as_array) {
        Some(pieces) => {
            pieces.len() == 2
                && pieces[0].get("SpecialToken").is_some()
                && pieces[1].get("Sequence").is_some()
        }
        None => false,
    }
}

fn post_processor_type(inner: &tokenizers::Tokenizer) -> String {
    inner
        .get_post_processor()
        .and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "none".to_owned())
}

fn detect_family(inner: &tokenizers::Tokenizer) -> Option<Family> {
    match post_processor_type(inner).as_str() {
        "RobertaProcessing" => return Some(Family::Roberta),
        "BertProcessing" => return Some(Family::Bert),
        "TemplateProcessing" if special_then_sequence(inner) => return Some(Family::Opt),
        _ => {}
    }
    // TemplateProcessing, a Sequence of processors or none: look at the special tokens.
    let pp = inner
        .get_post_processor()
        .and_then(|p| serde_json::to_string(p).ok())
        .unwrap_or_default();
    if pp.contains("\"[CLS]\"") {
        Some(Family::Bert)
    } else if pp.contains("\"<s>\"") {
        Some(Family::Roberta)
    } else if inner.token_to_id("[CLS]").is_some() && inner.token_to_id("[SEP]").is_some() {
        Some(Family::Bert)
    } else if inner.token_to_id("<s>").is_some() && inner.token_to_id("</s>").is_some() {
        Some(Family::Roberta)
    } else {
        None
    }
}

//! Artifact keys: BLAKE3 over a canonical, length-prefixed encoding of everything that
//! determines an artifact's content, and nothing else (no paths, no device ids, no times).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Version of the key derivation. Changing the encoding below requires bumping it, which
/// changes every key (old artifacts stay readable but are no longer hits).
pub const KEY_FORMAT: u32 = 1;

/// The inputs of the key derivation.
#[derive(Debug, Clone, Copy)]
pub struct KeyInputs<'a> {
    pub kind: &'a str,
    pub code_version: u32,
    /// Canonical parameters; object keys are sorted here, so their order does not matter.
    pub params: &'a serde_json::Value,
    /// Input slot -> input artifact key.
    pub inputs: &'a BTreeMap<String, String>,
    /// Content hashes of the declared external files, in declaration order.
    pub external_hashes: &'a [String],
    /// Backend class (e.g. `flex`, `tch-cuda`), only for backend-sensitive stages.
    pub backend_class: Option<&'a str>,
}

impl KeyInputs<'_> {
    /// The canonical byte encoding that is hashed. Exposed for tests and debugging.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"lpeft-artifact-key");
        out.extend_from_slice(&KEY_FORMAT.to_le_bytes());
        field(&mut out, b"kind", self.kind.as_bytes());
        field(&mut out, b"code", &self.code_version.to_le_bytes());
        field(&mut out, b"params", canonical_json(self.params).as_bytes());
        field(
            &mut out,
            b"inputs",
            &(self.inputs.len() as u64).to_le_bytes(),
        );
        for (slot, key) in self.inputs {
            field(&mut out, b"slot", slot.as_bytes());
            field(&mut out, b"key", key.as_bytes());
        }
        field(
            &mut out,
            b"external",
            &(self.external_hashes.len() as u64).to_le_bytes(),
        );
        for hash in self.external_hashes {
            field(&mut out, b"hash", hash.as_bytes());
        }
        match self.backend_class {
            Some(class) => field(&mut out, b"backend", class.as_bytes()),
            None => field(&mut out, b"backend-insensitive", b""),
        }
        out
    }

    /// The artifact key: lower-case hex BLAKE3 of [`Self::encode`].
    pub fn key(&self) -> String {
        blake3::hash(&self.encode()).to_hex().to_string()
    }
}

fn field(out: &mut Vec<u8>, tag: &[u8], value: &[u8]) {
    out.extend_from_slice(&(tag.len() as u64).to_le_bytes());
    out.extend_from_slice(tag);
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    out.extend_from_slice(value);
}

/// JSON with object keys sorted at every level and no whitespace, independent of how
/// `serde_json` was compiled (`preserve_order` or not).
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}", Value::String(k.clone()));
                out.push(':');
                write_canonical(out, v);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, v);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

/// Whether `s` looks like a full key.
pub fn is_full_key(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(
        params: serde_json::Value,
        inputs: &[(&str, &str)],
        ext: &[&str],
        backend: Option<&str>,
    ) -> String {
        let inputs: BTreeMap<String, String> = inputs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let ext: Vec<String> = ext.iter().map(|s| s.to_string()).collect();
        KeyInputs {
            kind: "data",
            code_version: 1,
            params: &params,
            inputs: &inputs,
            external_hashes: &ext,
            backend_class: backend,
        }
        .key()
    }

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let v = json!({"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": "s"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"s","z":[1,{"x":3,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn key_depends_on_exactly_its_inputs() {
        let base = key(json!({"a": 1, "b": 2}), &[("x", "k1")], &["h1"], None);
        assert!(is_full_key(&base));
        assert_eq!(
            base,
            key(json!({"b": 2, "a": 1}), &[("x", "k1")], &["h1"], None)
        );
        assert_ne!(
            base,
            key(json!({"a": 1, "b": 3}), &[("x", "k1")], &["h1"], None)
        );
        assert_ne!(
            base,
            key(json!({"a": 1, "b": 2}), &[("x", "k2")], &["h1"], None)
        );
        assert_ne!(
            base,
            key(json!({"a": 1, "b": 2}), &[("y", "k1")], &["h1"], None)
        );
        assert_ne!(
            base,
            key(json!({"a": 1, "b": 2}), &[("x", "k1")], &["h2"], None)
        );
        assert_ne!(
            base,
            key(
                json!({"a": 1, "b": 2}),
                &[("x", "k1")],
                &["h1"],
                Some("flex")
            )
        );
        assert_ne!(
            key(json!({}), &[], &[], Some("flex")),
            key(json!({}), &[], &[], Some("tch-cuda"))
        );
    }

    #[test]
    fn length_prefixing_prevents_ambiguity() {
        assert_ne!(
            key(json!({}), &[("ab", "c")], &[], None),
            key(json!({}), &[("a", "bc")], &[], None)
        );
    }
}

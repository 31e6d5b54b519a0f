//! A seeded byte mutator shared by the fuzz tests (`crates/*/tests/fuzz.rs` include this file):
//! each case starts from one of a target's valid inputs and applies a few random edits (flip,
//! insert, delete, duplicate, splice in a token that matters to parsers). Deterministic per
//! case number, so a failing case is reproduced by its number alone.
//!
//! `LPEFT_FUZZ_CASES` sets the cases per target (CI's default is small; `make fuzz` runs
//! 1,000,000 each).
#![allow(dead_code)]

/// Cases per target: `LPEFT_FUZZ_CASES`, else `default`.
pub fn cases(default: u64) -> u64 {
    std::env::var("LPEFT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"\t",
    b"\n",
    b"\r\n",
    b"\0",
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b"(",
    b")",
    b",",
    b":",
    b"-1",
    b"1e308",
    b"NaN",
    b"null",
    b"true",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"\xe2\x80",
    b"{x}",
    b"${HOME}",
    b"99999999999999999999",
    b"0.0",
];

/// Case `case` of a target whose valid inputs are `seeds`.
pub fn mutate(seeds: &[Vec<u8>], case: u64) -> Vec<u8> {
    let mut rng = SplitMix(case.wrapping_mul(0xD134_2543_DE82_EF95) ^ 0x5EED);
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.next() as u8),
            2 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            3 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(64)).min(v.len());
                let piece = v[start..end].to_vec();
                v.splice(at..at, piece);
            }
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
        }
    }
    v
}

/// Runs `check` on `n` cases; a panic names the case and shows its input.
pub fn run(target: &str, seeds: &[Vec<u8>], n: u64, mut check: impl FnMut(&[u8])) {
    let start = std::time::Instant::now();
    for case in 0..n {
        let input = mutate(seeds, case);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if result.is_err() {
            panic!(
                "fuzz target {target}: case {case} panicked on input {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
    // Read by `make fuzz` (the figures of the closing note).
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "fuzz {target}: {n} cases without a panic in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
}

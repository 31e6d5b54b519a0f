//! Span decoding on hand-made logits: n-best search, the context and length constraints,
//! several windows of one question, and the official predictions built from it.

use lpeft_eval::span::{
    NOT_CONTEXT, SpanDecoding, WindowLogits, decode_spans, official_predictions, span_answers,
};
use lpeft_eval::{Outputs, evaluate};
use lpeft_schema::dataset::{MainScore, Metric, SpanAnswer, SpanQuestion, SpanTexts};
use proptest::prelude::*;

const X: u32 = NOT_CONTEXT;
const CONTEXT: &str = "Denver Broncos beat Carolina in Santa Clara.";

/// Byte ranges of the words of `CONTEXT` ("Clara." includes its full stop).
fn word_spans() -> Vec<[u32; 2]> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in CONTEXT.char_indices().chain([(CONTEXT.len(), ' ')]) {
        match (c == ' ', start) {
            (true, Some(s)) => {
                spans.push([s as u32, i as u32]);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    spans
}

/// `[CLS] q q [SEP] words[range] [SEP]`, flattened.
fn window_spans(words: std::ops::Range<usize>) -> Vec<u32> {
    let all = word_spans();
    let mut out = vec![X, X, X, X, X, X, X, X];
    for w in &all[words] {
        out.extend_from_slice(w);
    }
    out.extend_from_slice(&[X, X]);
    out
}

fn texts(questions: usize) -> SpanTexts {
    SpanTexts {
        contexts: vec![CONTEXT.to_owned()],
        questions: (0..questions)
            .map(|i| SpanQuestion {
                id: format!("q{i}"),
                context: 0,
                answers: vec![SpanAnswer {
                    text: "Denver Broncos".into(),
                    byte_start: 0,
                }],
            })
            .collect(),
    }
}

/// Logits that are 0 except `peaks` (position, value).
fn logits(len: usize, peaks: &[(usize, f32)]) -> Vec<f32> {
    let mut v = vec![0.0; len];
    for &(i, x) in peaks {
        v[i] = x;
    }
    v
}

fn decode(windows: &[WindowLogits<'_>], questions: usize, cfg: SpanDecoding) -> Vec<String> {
    decode_spans(&texts(questions), windows, &cfg)
        .unwrap()
        .into_iter()
        .map(|p| p.text)
        .collect()
}

const CFG: SpanDecoding = SpanDecoding::HF_DEFAULTS;

#[test]
fn best_start_and_end_give_the_answer_text() {
    // Tokens: 0 [CLS], 1-2 question, 3 [SEP], 4.. words 0..7, 11 [SEP].
    let spans = window_spans(0..7);
    let (s, e) = (logits(12, &[(4, 5.0)]), logits(12, &[(5, 4.0)]));
    let w = WindowLogits {
        question: 0,
        start_logits: &s,
        end_logits: &e,
        token_spans: &spans,
    };
    let p = decode_spans(&texts(1), &[w], &CFG).unwrap();
    assert_eq!(p[0].text, "Denver Broncos");
    assert_eq!(p[0].score, Some(9.0));
    assert_eq!(p[0].bytes, Some((0, 14)));
}

#[test]
fn question_tokens_reversed_and_long_spans_are_skipped() {
    let spans = window_spans(0..7);
    // Highest start on a question token (2), then end before start (start 9, end 5).
    let s = logits(12, &[(2, 9.0), (9, 8.0), (7, 1.0)]);
    let e = logits(12, &[(5, 9.0), (10, 2.0)]);
    let w = WindowLogits {
        question: 0,
        start_logits: &s,
        end_logits: &e,
        token_spans: &spans,
    };
    // Candidates: (9, 10) "Santa Clara." = 10; (7, 10) = 3; (7, 5) reversed.
    assert_eq!(decode(&[w], 1, CFG), ["Santa Clara."]);
    // At most one token: the best single token is 5 (start 0 + end 9), beating 9 (8 + 0).
    let one = SpanDecoding {
        n_best: 20,
        max_answer_length: 1,
    };
    assert_eq!(decode(&[w], 1, one), ["Broncos"]);
}

#[test]
fn only_the_top_n_starts_and_ends_are_tried() {
    let spans = window_spans(0..7);
    // The top start (6) lies after the top end (5): with n_best 1 nothing is valid.
    let s = logits(12, &[(6, 5.0), (4, 4.0)]);
    let e = logits(12, &[(5, 5.0), (7, 1.0)]);
    let w = WindowLogits {
        question: 0,
        start_logits: &s,
        end_logits: &e,
        token_spans: &spans,
    };
    let one = SpanDecoding {
        n_best: 1,
        max_answer_length: 30,
    };
    let p = decode_spans(&texts(1), &[w], &one).unwrap();
    assert_eq!((p[0].text.as_str(), p[0].score), ("", None));
    let two = SpanDecoding {
        n_best: 2,
        max_answer_length: 30,
    };
    // (4, 5) = 9 beats (6, 7) = 6.
    assert_eq!(decode(&[w], 1, two), ["Denver Broncos"]);
}

#[test]
fn the_best_window_of_a_question_wins_and_padding_is_ignored() {
    // Doc stride: window A holds words 0..5, window B words 3..7 (overlap of 2).
    let (a, b) = (window_spans(0..5), window_spans(3..7));
    let (sa, ea) = (logits(10, &[(4, 3.0)]), logits(10, &[(5, 3.0)]));
    // Window B's logits carry batch padding (16 wide); a padding peak must not count.
    let sb = logits(16, &[(5, 4.0), (14, 99.0)]);
    let eb = logits(16, &[(6, 4.0), (15, 99.0)]);
    let windows = [
        WindowLogits {
            question: 0,
            start_logits: &sa,
            end_logits: &ea,
            token_spans: &a,
        },
        WindowLogits {
            question: 0,
            start_logits: &sb,
            end_logits: &eb,
            token_spans: &b,
        },
        // Question 1: only window A's shape, low scores, still answered.
        WindowLogits {
            question: 1,
            start_logits: &ea,
            end_logits: &ea,
            token_spans: &a,
        },
    ];
    // Window B tokens 5, 6 are words 4, 5: "in Santa".
    assert_eq!(decode(&windows, 3, CFG), ["in Santa", "Broncos", ""]);
}

#[test]
fn multibyte_contexts_map_through_byte_offsets() {
    let context = "Café «Zürich» opens";
    let spans = [X, X, 0, 5, 6, 8, 8, 15, 15, 17, 18, 23, X, X];
    let texts = SpanTexts {
        contexts: vec![context.to_owned()],
        questions: vec![SpanQuestion {
            id: "u".into(),
            context: 0,
            answers: vec![],
        }],
    };
    let (s, e) = (logits(7, &[(3, 2.0)]), logits(7, &[(4, 2.0)]));
    let w = WindowLogits {
        question: 0,
        start_logits: &s,
        end_logits: &e,
        token_spans: &spans,
    };
    // Tokens 3 and 4 are "Zürich" and "»".
    assert_eq!(decode_spans(&texts, &[w], &CFG).unwrap()[0].text, "Zürich»");
}

#[test]
fn inconsistent_windows_are_refused() {
    let spans = window_spans(0..7);
    let short = logits(5, &[]);
    let ok = logits(12, &[]);
    let w = WindowLogits {
        question: 0,
        start_logits: &short,
        end_logits: &ok,
        token_spans: &spans,
    };
    let e = decode_spans(&texts(1), &[w], &CFG).unwrap_err().to_string();
    assert!(e.contains("window 0") && e.contains("5 start"), "{e}");
    let w = WindowLogits {
        question: 3,
        start_logits: &ok,
        end_logits: &ok,
        token_spans: &spans,
    };
    let e = decode_spans(&texts(1), &[w], &CFG).unwrap_err().to_string();
    assert!(e.contains("question 3"), "{e}");
    // A token range that cuts a character is not a slice of the context.
    let texts = SpanTexts {
        contexts: vec!["é".to_owned()],
        questions: vec![SpanQuestion {
            id: "u".into(),
            context: 0,
            answers: vec![],
        }],
    };
    let (spans, l) = ([0, 1], [1.0]);
    let w = WindowLogits {
        question: 0,
        start_logits: &l,
        end_logits: &l,
        token_spans: &spans,
    };
    let e = decode_spans(&texts, &[w], &CFG).unwrap_err().to_string();
    assert!(e.contains("question u") && e.contains("0..1"), "{e}");
}

#[test]
fn decoded_answers_are_scored_and_written_as_official_predictions() {
    let spans = window_spans(0..7);
    let (s0, e0) = (logits(12, &[(4, 5.0)]), logits(12, &[(5, 5.0)]));
    let (s1, e1) = (logits(12, &[(5, 5.0)]), logits(12, &[(6, 5.0)]));
    let windows = [
        WindowLogits {
            question: 0,
            start_logits: &s0,
            end_logits: &e0,
            token_spans: &spans,
        },
        WindowLogits {
            question: 1,
            start_logits: &s1,
            end_logits: &e1,
            token_spans: &spans,
        },
    ];
    let texts = texts(2);
    let predictions = decode_spans(&texts, &windows, &CFG).unwrap();
    let official = official_predictions(&texts, &predictions);
    assert_eq!(official["q0"], "Denver Broncos");
    assert_eq!(official["q1"], "Broncos beat");
    let (predicted, gold) = span_answers(&texts, &predictions);
    let main = MainScore::Mean(vec![Metric::ExactMatch, Metric::SquadF1]);
    let out = Outputs::Answers {
        predicted: &predicted,
        gold: &gold,
    };
    let e = evaluate(&[Metric::ExactMatch, Metric::SquadF1], &main, &out).unwrap();
    // q0 exact; q1 "broncos beat" vs "denver broncos": P = R = 1/2.
    assert_eq!(e.metrics["exact_match"], 0.5);
    assert!((e.metrics["squad_f1"] - 0.75).abs() < 1e-12);
}

proptest! {
    /// With n_best covering every token, the decoded span is the best valid (start, end) pair
    /// of a brute-force search, and its text is the context between those tokens.
    #[test]
    fn full_n_best_equals_brute_force(
        start in prop::collection::vec(-4i8..4, 12),
        end in prop::collection::vec(-4i8..4, 12),
        max_answer_length in 1usize..8,
    ) {
        let spans = window_spans(0..7);
        let s: Vec<f32> = start.iter().map(|&v| f32::from(v)).collect();
        let e: Vec<f32> = end.iter().map(|&v| f32::from(v)).collect();
        let cfg = SpanDecoding { n_best: 12, max_answer_length };
        let w = WindowLogits { question: 0, start_logits: &s, end_logits: &e, token_spans: &spans };
        let p = &decode_spans(&texts(1), &[w], &cfg).unwrap()[0];
        let context_tokens = 4..11;
        let best = context_tokens.clone()
            .flat_map(|i| context_tokens.clone().map(move |j| (i, j)))
            .filter(|&(i, j)| j >= i && j - i < max_answer_length)
            .map(|(i, j)| s[i] + e[j])
            .fold(f32::NEG_INFINITY, f32::max);
        prop_assert_eq!(p.score, Some(best));
        let (a, b) = p.bytes.unwrap();
        prop_assert_eq!(&CONTEXT[a..b], p.text.as_str());
        let words = word_spans();
        prop_assert!(words.iter().any(|w| w[0] as usize == a));
        prop_assert!(words.iter().any(|w| w[1] as usize == b));
    }
}

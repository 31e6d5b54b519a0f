//! File positions (line, column) of stage entries and fields in RON text, for errors.

/// Byte offset of the first `field:` in RON text (0 if absent).
pub(super) fn field_offset(text: &str, field: &str) -> usize {
    let mut from = 0;
    while let Some(rel) = text[from..].find(field) {
        let at = from + rel;
        from = at + field.len();
        if text[from..].trim_start().starts_with(':') {
            return at;
        }
    }
    0
}

/// Convert a (line, col) found in `text[offset..]` into one for `text`.
pub(super) fn shift(text: &str, offset: usize, line: usize, col: usize) -> (usize, usize) {
    let before = &text[..offset];
    let lines_before = before.matches('\n').count();
    if line == 1 {
        let col_before = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
        (lines_before + 1, col_before + col)
    } else {
        (lines_before + line, col)
    }
}

pub(crate) fn find_position(
    text: &str,
    field: &str,
    value: &str,
    nth: usize,
) -> Option<(usize, usize)> {
    let quoted = serde_json::to_string(value).ok()?;
    let mut count = 0;
    let mut from = 0;
    while let Some(rel) = text[from..].find(field) {
        let start = from + rel;
        from = start + field.len();
        let before_ok = start == 0
            || !text[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '"');
        if !before_ok {
            continue;
        }
        let rest = text[from..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        if rest.trim_start().starts_with(&quoted) {
            if count == nth {
                let line = text[..start].matches('\n').count() + 1;
                let col = text[..start]
                    .rsplit('\n')
                    .next()
                    .map_or(0, |l| l.chars().count())
                    + 1;
                return Some((line, col));
            }
            count += 1;
        }
    }
    None
}

//! Plots as hand-written SVG: score against % of backbone pruned per task, and mask heatmaps.

use std::fmt::Write as _;

use crate::masks::{MaskRecords, MaskTensor};
use crate::report::ResultSet;

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Escapes text for SVG content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Svg {
    body: String,
    width: f64,
    height: f64,
}

impl Svg {
    fn new(width: f64, height: f64) -> Svg {
        Svg {
            body: String::new(),
            width,
            height,
        }
    }
    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, style: &str) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#
        );
    }
    fn text(&mut self, x: f64, y: f64, anchor: &str, extra: &str, s: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" {extra}>{}</text>"#,
            escape(s)
        );
    }
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, title: Option<&str>) {
        match title {
            Some(t) => {
                let _ = writeln!(
                    self.body,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"><title>{}</title></rect>"#,
                    escape(t)
                );
            }
            None => {
                let _ = writeln!(
                    self.body,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"/>"#
                );
            }
        }
    }
    /// Marker `shape` (index) centred at (x, y).
    fn marker(&mut self, shape: usize, x: f64, y: f64, color: &str) {
        let r = 5.0;
        let _ = match shape % 4 {
            0 => writeln!(
                self.body,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{color}"/>"#
            ),
            1 => writeln!(
                self.body,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
                x - r,
                y - r,
                2.0 * r,
                2.0 * r
            ),
            2 => writeln!(
                self.body,
                r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{color}"/>"#,
                x,
                y - r * 1.2,
                x - r * 1.1,
                y + r * 0.8,
                x + r * 1.1,
                y + r * 0.8
            ),
            _ => writeln!(
                self.body,
                r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{color}"/>"#,
                x,
                y - r * 1.3,
                x + r * 1.3,
                y,
                x,
                y + r * 1.3,
                x - r * 1.3,
                y
            ),
        };
    }
    fn finish(self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n{}</svg>\n",
            self.body,
            w = self.width,
            h = self.height
        )
    }
}

/// Round tick positions covering `[lo, hi]` (steps of 1, 2 or 5 × 10^k, about five ticks).
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A file-name-safe form of a task name (`glue/sst2` → `glue-sst2`).
pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Main score ×100 (mean, with ± std error bars) against % of backbone pruned for `task`,
/// one marker shape and colour per method. `None` if the task has no rows.
pub fn score_vs_pruned(set: &ResultSet, task: &str) -> Option<String> {
    let methods = set.methods();
    let points: Vec<(usize, f64, f64, f64)> = methods
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let r = set.row(task, m)?;
            let sd = r.main_score.std.unwrap_or(0.0);
            Some((
                i,
                r.backbone_pruned_pct,
                100.0 * r.main_score.mean,
                100.0 * sd,
            ))
        })
        .collect();
    if points.is_empty() {
        return None;
    }
    let (w, h) = (680.0, 420.0);
    let (left, right, top, bottom) = (70.0, 180.0, 40.0, 55.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let x_max = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let x_hi = ((x_max + 5.0) / 10.0).ceil().max(1.0) * 10.0;
    let y_lo = points
        .iter()
        .map(|p| p.2 - p.3)
        .fold(f64::INFINITY, f64::min);
    let y_hi = points
        .iter()
        .map(|p| p.2 + p.3)
        .fold(f64::NEG_INFINITY, f64::max);
    let pad = ((y_hi - y_lo) * 0.1).max(1.0);
    let (y_lo, y_hi) = (y_lo - pad, y_hi + pad);
    // 16 px inside the y axis, so points at 0 % do not sit on it.
    let sx = |x: f64| left + 16.0 + (pw - 16.0) * x / x_hi;
    let sy = |y: f64| top + ph * (1.0 - (y - y_lo) / (y_hi - y_lo));

    let mut svg = Svg::new(w, h);
    svg.text(
        w / 2.0 - (right - left) / 2.0,
        24.0,
        "middle",
        r#"font-size="15""#,
        task,
    );
    let axis = r##"stroke="#333" stroke-width="1""##;
    let grid = r##"stroke="#ddd" stroke-width="1""##;
    for t in ticks(y_lo, y_hi) {
        svg.line(left, sy(t), left + pw, sy(t), grid);
        svg.text(left - 6.0, sy(t) + 4.0, "end", "", &format!("{t}"));
    }
    for t in ticks(0.0, x_hi) {
        svg.line(sx(t), top + ph, sx(t), top + ph + 5.0, axis);
        svg.text(sx(t), top + ph + 18.0, "middle", "", &format!("{t}"));
    }
    svg.line(left, top + ph, left + pw, top + ph, axis);
    svg.line(left, top, left, top + ph, axis);
    svg.text(
        left + pw / 2.0,
        h - 14.0,
        "middle",
        "",
        "% of backbone pruned",
    );
    svg.text(
        18.0,
        top + ph / 2.0,
        "middle",
        &format!(r#"transform="rotate(-90 18 {:.1})""#, top + ph / 2.0),
        "main score ×100 (mean ± std over seeds)",
    );
    // Methods at the same pruning level (e.g. all vanilla ones at 0 %) are dodged sideways by a
    // few pixels so their markers and error bars stay apart; the axis value is unchanged.
    let near = |a: f64, b: f64| (a - b).abs() < 0.5;
    for (k, &(i, x, y, sd)) in points.iter().enumerate() {
        let n = points.iter().filter(|p| near(p.1, x)).count() as f64;
        let before = points[..k].iter().filter(|p| near(p.1, x)).count() as f64;
        let dodge = (before - (n - 1.0) / 2.0) * 7.0;
        let sx = |x: f64| sx(x) + dodge;
        let color = PALETTE[i % PALETTE.len()];
        if sd > 0.0 {
            let style = format!(r#"stroke="{color}" stroke-width="1.5""#);
            svg.line(sx(x), sy(y - sd), sx(x), sy(y + sd), &style);
            svg.line(sx(x) - 4.0, sy(y - sd), sx(x) + 4.0, sy(y - sd), &style);
            svg.line(sx(x) - 4.0, sy(y + sd), sx(x) + 4.0, sy(y + sd), &style);
        }
        svg.marker(i, sx(x), sy(y), color);
    }
    for (k, &(i, ..)) in points.iter().enumerate() {
        let y = top + 10.0 + 20.0 * k as f64;
        svg.marker(i, left + pw + 24.0, y, PALETTE[i % PALETTE.len()]);
        svg.text(left + pw + 36.0, y + 4.0, "start", "", methods[i]);
    }
    Some(svg.finish())
}

/// White → dark blue.
fn shade(t: f64) -> String {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        lerp(247.0, 8.0),
        lerp(251.0, 48.0),
        lerp(255.0, 107.0)
    )
}

fn range(values: &[f32]) -> (f64, f64) {
    let finite = values
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| f64::from(v));
    let lo = finite.clone().fold(f64::INFINITY, f64::min);
    let hi = finite.fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() { (lo, hi) } else { (0.0, 0.0) }
}

fn colorbar(svg: &mut Svg, x: f64, y: f64, height: f64, lo: &str, hi: &str) {
    for k in 0..20 {
        let t = 1.0 - f64::from(k) / 19.0;
        svg.rect(
            x,
            y + height * f64::from(k) / 20.0,
            14.0,
            height / 20.0 + 0.5,
            &shade(t),
            None,
        );
    }
    svg.text(x + 20.0, y + 10.0, "start", "", hi);
    svg.text(x + 20.0, y + height, "start", "", lo);
}

/// A grid of `rows` × `cols` cells shaded by `value(r, c)` in `[0, 1]`, with row labels.
fn grid(
    title: &str,
    col_label: &str,
    index_cols: bool,
    rows: usize,
    cols: usize,
    value: &dyn Fn(usize, usize) -> (f64, String),
    bar: (&str, &str),
) -> String {
    let cell = (560.0 / cols as f64).clamp(6.0, 28.0);
    let (left, top) = (70.0, 50.0);
    let w = left + cell * cols as f64 + 110.0;
    let h = top + cell * rows as f64 + 50.0;
    let mut svg = Svg::new(w.ceil(), h.ceil());
    svg.text(left, 24.0, "start", r#"font-size="15""#, title);
    for r in 0..rows {
        let y = top + cell * r as f64;
        svg.text(
            left - 6.0,
            y + cell / 2.0 + 4.0,
            "end",
            "",
            &format!("layer {r}"),
        );
        for c in 0..cols {
            let (t, tip) = value(r, c);
            svg.rect(left + cell * c as f64, y, cell, cell, &shade(t), Some(&tip));
        }
    }
    // Column indices when there is room (heads), none for histogram bins.
    if index_cols && cell >= 14.0 {
        for c in 0..cols {
            let x = left + cell * (c as f64 + 0.5);
            let y = top + cell * rows as f64 + 14.0;
            svg.text(x, y, "middle", r#"font-size="10""#, &c.to_string());
        }
    }
    svg.text(
        left + cell * cols as f64 / 2.0,
        top + cell * rows as f64 + 32.0,
        "middle",
        "",
        col_label,
    );
    colorbar(
        &mut svg,
        left + cell * cols as f64 + 16.0,
        top,
        (cell * rows as f64).max(80.0),
        bar.0,
        bar.1,
    );
    svg.finish()
}

/// `v` with enough decimals (at least 3) to tell apart values `span` apart: early in
/// estimation all masks lie within 1e-3 of 1.
pub fn fixed(v: f64, span: f64) -> String {
    let decimals = if span > 0.0 && span.is_finite() {
        ((-span.log10()).ceil() as i64 + 2).clamp(3, 9) as usize
    } else {
        3
    };
    format!("{v:.decimals$}")
}

/// Layer × head grid of the last recorded head-mask values.
pub fn head_heatmap(title: &str, heads: &MaskTensor) -> String {
    let last = heads.last();
    let (lo, hi) = range(&heads.values[(heads.records - 1) * heads.layers * heads.width..]);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let value = |r: usize, c: usize| {
        let v = f64::from(last[r][c]);
        ((v - lo) / span, format!("layer {r} head {c}: {v:.4}"))
    };
    grid(
        title,
        "head",
        true,
        heads.layers,
        heads.width,
        &value,
        (&fixed(lo, hi - lo), &fixed(hi, hi - lo)),
    )
}

/// Number of histogram bins of the FFN heatmap.
pub const FFN_BINS: usize = 20;

/// Per layer, the histogram of the last recorded FFN-mask values over [`FFN_BINS`] equal bins
/// spanning all layers' values: per layer and bin, the fraction of the layer's neurons in it.
pub fn ffn_histograms(ffn: &MaskTensor) -> (f64, f64, Vec<Vec<f64>>) {
    let last = ffn.last();
    let (lo, hi) = range(&ffn.values[(ffn.records - 1) * ffn.layers * ffn.width..]);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let hist = last
        .iter()
        .map(|layer| {
            let mut bins = [0.0; FFN_BINS];
            for &v in *layer {
                if v.is_finite() {
                    let b = (((f64::from(v) - lo) / span) * FFN_BINS as f64) as usize;
                    bins[b.min(FFN_BINS - 1)] += 1.0;
                }
            }
            bins.iter().map(|c| c / layer.len() as f64).collect()
        })
        .collect();
    (lo, hi, hist)
}

/// Layer × bin heatmap of [`ffn_histograms`], shaded relative to the fullest bin.
pub fn ffn_heatmap(title: &str, ffn: &MaskTensor) -> String {
    let (lo, hi, hist) = ffn_histograms(ffn);
    let width = (hi - lo) / FFN_BINS as f64;
    // Shade relative to the fullest bin, so spread-out layers stay visible.
    let top = hist.iter().flatten().copied().fold(0.0, f64::max);
    let top = if top > 0.0 { top } else { 1.0 };
    let value = |r: usize, c: usize| {
        let f = hist[r][c];
        let a = lo + width * c as f64;
        (
            f / top,
            format!(
                "layer {r}, mask in [{a:.3}, {:.3}): {:.1} % of neurons",
                a + width,
                100.0 * f
            ),
        )
    };
    grid(
        title,
        &format!(
            "FFN mask value, {} … {} ({FFN_BINS} bins)",
            fixed(lo, hi - lo),
            fixed(hi, hi - lo)
        ),
        false,
        ffn.layers,
        FFN_BINS,
        &value,
        ("0 %", &format!("{:.0} %", 100.0 * top)),
    )
}

/// The heatmaps available in `masks`: `(file suffix, svg)` for heads and FFN.
pub fn mask_heatmaps(stage: &str, masks: &MaskRecords) -> Vec<(String, String)> {
    let step = masks
        .last_step()
        .map_or_else(String::new, |s| format!(" after step {s}"));
    let mut out = Vec::new();
    if let Some(h) = &masks.heads {
        let title = format!("{stage}: head masks{step}");
        out.push(("heads".to_owned(), head_heatmap(&title, h)));
    }
    if let Some(f) = &masks.ffn {
        let title = format!("{stage}: FFN mask histogram per layer{step}");
        out.push(("ffn".to_owned(), ffn_heatmap(&title, f)));
    }
    out
}

/// A minimal well-formedness check of generated XML: tags nest and close, attributes are
/// quoted, and text holds no bare `<` or `&` outside entities. Returns the element names in
/// document order.
pub fn check_well_formed(xml: &str) -> Result<Vec<String>, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = xml;
    let mut seen_root = false;
    while let Some(open) = rest.find('<') {
        check_text(&rest[..open])?;
        let after = &rest[open + 1..];
        let close = after.find('>').ok_or("unterminated tag")?;
        let tag = &after[..close];
        rest = &after[close + 1..];
        if let Some(decl) = tag.strip_prefix('?') {
            if !decl.ends_with('?') || seen_root {
                return Err(format!("bad declaration <{tag}>"));
            }
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
            if top != name.trim() {
                return Err(format!("</{name}> closes <{top}>"));
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
        {
            return Err(format!("bad element name in <{tag}>"));
        }
        if stack.is_empty() && seen_root {
            return Err(format!("second root element <{name}>"));
        }
        check_attributes(&body[name.len()..])?;
        seen_root = true;
        names.push(name.clone());
        if !self_closing {
            stack.push(name);
        }
    }
    check_text(rest)?;
    if let Some(open) = stack.pop() {
        return Err(format!("<{open}> is never closed"));
    }
    if !seen_root {
        return Err("no root element".to_owned());
    }
    Ok(names)
}

fn check_text(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or("bare `&` in text")?;
        if !matches!(&after[..semi], "amp" | "lt" | "gt" | "quot" | "apos") {
            return Err(format!("unknown entity &{};", &after[..semi]));
        }
        rest = &after[semi + 1..];
    }
    Ok(())
}

fn check_attributes(mut s: &str) -> Result<(), String> {
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Ok(());
        }
        let eq = s.find('=').ok_or(format!("attribute without value: {s}"))?;
        let name = s[..eq].trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("bad attribute name `{name}`"));
        }
        let value = &s[eq + 1..];
        let quote = value.chars().next().ok_or("missing attribute value")?;
        if quote != '"' && quote != '\'' {
            return Err(format!("unquoted value of `{name}`"));
        }
        let end = value[1..]
            .find(quote)
            .ok_or(format!("unterminated value of `{name}`"))?;
        let v = &value[1..1 + end];
        if v.contains('<') {
            return Err(format!("`<` in value of `{name}`"));
        }
        check_text(v)?;
        s = &value[end + 2..];
    }
}

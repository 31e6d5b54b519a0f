//! Progress bars: one line per bar with the rate (units per second, or seconds per unit when
//! slower than one a second), the time left and the whole message. Nothing is cut to the
//! terminal's width: a long line wraps, and indicatif clears the wrapped lines on redraw. Bars
//! are drawn only when stderr is a terminal ([`crate::output::Reporter`] decides).

use indicatif::{HumanDuration, ProgressBar, ProgressState, ProgressStyle};
use lpeft_pipeline::stage::Progress;

/// The bars' line.
pub(crate) fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:.bold} [{bar:24}] {pos}/{len} {rate} ETA {left} ({elapsed}) {msg}",
    )
    .expect("valid template")
    .progress_chars("=> ")
    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_str(&rate(s.pos(), s.per_sec()));
    })
    .with_key("left", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = match s.len() {
            Some(len) if s.pos() > 0 && s.pos() < len => {
                write!(w, "{:#}", HumanDuration(s.eta()))
            }
            Some(len) if s.pos() >= len => w.write_str("0s"),
            _ => w.write_str("?"),
        };
    })
}

/// `12.5/s`, or `3.20 s/it` below one unit a second; `-/s` before the first unit.
pub(crate) fn rate(pos: u64, per_sec: f64) -> String {
    if pos == 0 || !per_sec.is_finite() || per_sec <= 0.0 {
        "-/s".to_owned()
    } else if per_sec >= 1.0 {
        format!("{per_sec:.1}/s")
    } else {
        format!("{:.2} s/it", 1.0 / per_sec)
    }
}

pub struct Bar {
    bar: ProgressBar,
    name: String,
}

impl Bar {
    pub fn new(bar: ProgressBar, name: &str) -> Bar {
        Bar {
            bar,
            name: name.to_owned(),
        }
    }

    /// Follows a `(done, total)` counter: a new task when `done` is 0.
    pub fn follow(&self, label: &str, done: usize, total: usize) {
        if done == 0 {
            self.start(label, total as u64);
        } else {
            self.bar.set_position(done as u64);
        }
    }
}

impl Progress for Bar {
    fn start(&self, label: &str, total: u64) {
        // A new task: position, elapsed time and the rate estimate start again.
        self.bar.reset();
        self.bar.set_length(total);
        self.bar.set_prefix(format!("{} {label}", self.name));
    }
    fn advance(&self, n: u64, message: &str) {
        self.bar.inc(n);
        self.bar.set_message(message.to_string());
    }
    fn finish(&self) {
        self.bar.set_message("");
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use indicatif::{ProgressBar, ProgressDrawTarget, TermLike};

    use super::{bar_style, rate};

    /// A 60-column terminal that keeps what is written to it.
    #[derive(Debug, Default, Clone)]
    struct Screen(Arc<Mutex<String>>);

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            60
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bars_show_rate_and_time_left_and_never_cut_the_message() {
        let screen = Screen::default();
        let bar = ProgressBar::with_draw_target(
            Some(100),
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_style(bar_style());
        bar.set_prefix("ft-light-lora-r2-stsb-s1 fine-tune");
        let message = "epoch 3 loss 0.4321 0.0123 s/step, a message longer than the terminal";
        bar.set_message(message);
        std::thread::sleep(std::time::Duration::from_millis(20));
        bar.inc(40);
        bar.tick();
        let shown = screen.0.lock().unwrap().clone();
        // The last draw, from its position on.
        let last = shown.rsplit_once("40/100").map_or("", |(_, rest)| rest);
        assert!(last.contains(message), "the whole message: {shown:?}");
        assert!(last.contains("/s") && last.contains("ETA "), "{shown:?}");
        assert!(
            !last.contains("ETA ?"),
            "a time left once work is done: {shown:?}"
        );
    }

    #[test]
    fn the_rate_reads_as_units_or_seconds_per_unit() {
        assert_eq!(rate(0, 0.0), "-/s");
        assert_eq!(rate(10, 12.34), "12.3/s");
        assert_eq!(rate(2, 0.25), "4.00 s/it");
        assert_eq!(rate(2, f64::INFINITY), "-/s");
    }
}

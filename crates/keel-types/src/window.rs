//! Window assignment for the window table-valued functions, with Flink's bounds.
//!
//! Invariants (FLINK_SEMANTICS.md): windows are half-open `[start, end)` and aligned to the epoch
//! plus the offset; `HOP(slide, size)` puts each time in `size / slide` windows (rounded up when
//! the slide does not divide the size); `CUMULATE(step, max)` puts a time in every window
//! `[s, s + k·step)` of its max-size window `[s, s + max)` that contains it. A window with end `e`
//! fires when the watermark reaches `e - 1`; a row whose window has `e - 1 <= watermark` is late.

use serde::{Deserialize, Serialize};

/// The most windows one row may belong to (HOP's size / slide, CUMULATE's max size / step):
/// 10,000. A day of 1-minute slides (1,440) or of 10-second steps (8,640) is within it, a day of
/// 1-ms slides (86,400,000 copies of every row, and as many windows per key) is refused.
pub const MAX_WINDOWS_PER_ROW: usize = 10_000;

/// The longest window size, slide, step, gap or offset: 100 years in milliseconds, so that
/// window bounds never overflow a timestamp.
pub const MAX_WINDOW_MS: i64 = 100 * 366 * 86_400_000;

/// A window table-valued function's shape, all values in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowSpec {
    Tumble {
        size: i64,
        offset: i64,
    },
    Hop {
        size: i64,
        slide: i64,
        offset: i64,
    },
    Cumulate {
        step: i64,
        max: i64,
        offset: i64,
    },
    /// Rows of one key closer than `gap` form one session. Assignment gives each row its own
    /// window `[ts, ts + gap)`; the session aggregate merges overlapping ones.
    Session {
        gap: i64,
    },
}

/// Start of the window of length `size` (aligned to `offset`) that contains `ts`.
pub fn window_start(ts: i64, offset: i64, size: i64) -> i64 {
    let rem = (ts - offset).rem_euclid(size);
    ts - rem
}

impl WindowSpec {
    /// Checks the sizes are positive, compatible and within `MAX_WINDOW_MS` and
    /// `MAX_WINDOWS_PER_ROW`; the error says which value is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let (name, values) = match *self {
            WindowSpec::Tumble { size, offset } => ("TUMBLE", vec![size, offset]),
            WindowSpec::Hop { size, slide, offset } => ("HOP", vec![size, slide, offset]),
            WindowSpec::Cumulate { step, max, offset } => ("CUMULATE", vec![step, max, offset]),
            WindowSpec::Session { gap } => ("SESSION", vec![gap]),
        };
        if let Some(v) = values.iter().find(|v| v.unsigned_abs() > MAX_WINDOW_MS as u64) {
            return Err(format!("{name}: {v} ms is longer than the limit of {MAX_WINDOW_MS} ms (100 years)"));
        }
        self.validate_shape()?;
        let per_row = self.windows_per_row();
        if per_row > MAX_WINDOWS_PER_ROW {
            let (big, small) = match *self {
                WindowSpec::Hop { size, slide, .. } => (format!("size {size} ms"), format!("slide {slide} ms")),
                WindowSpec::Cumulate { step, max, .. } => (format!("max size {max} ms"), format!("step {step} ms")),
                _ => (String::new(), String::new()),
            };
            return Err(format!(
                "{name} with {small} and {big} puts every row in {per_row} windows, over the limit of \
                 {MAX_WINDOWS_PER_ROW} windows per row; use a longer {} or a shorter size",
                if name == "HOP" { "slide" } else { "step" }
            ));
        }
        Ok(())
    }

    fn validate_shape(&self) -> Result<(), String> {
        match *self {
            WindowSpec::Tumble { size, .. } if size <= 0 => Err(format!("TUMBLE size must be positive, got {size} ms")),
            WindowSpec::Hop { size, slide, .. } if size <= 0 || slide <= 0 => {
                Err(format!("HOP slide and size must be positive, got slide {slide} ms, size {size} ms"))
            }
            WindowSpec::Hop { size, slide, .. } if size % slide != 0 => {
                Err(format!("HOP size ({size} ms) must be a whole multiple of the slide ({slide} ms), as in Flink"))
            }
            WindowSpec::Session { gap } if gap <= 0 => Err(format!("SESSION gap must be positive, got {gap} ms")),
            WindowSpec::Cumulate { step, max, .. } if step <= 0 || max <= 0 || max % step != 0 => {
                Err(format!("CUMULATE max size ({max} ms) must be a positive whole multiple of the step ({step} ms)"))
            }
            _ => Ok(()),
        }
    }

    /// The largest number of windows one time can belong to.
    pub fn windows_per_row(&self) -> usize {
        match *self {
            WindowSpec::Tumble { .. } => 1,
            WindowSpec::Hop { size, slide, .. } => (size / slide) as usize,
            WindowSpec::Cumulate { step, max, .. } => (max / step) as usize,
            WindowSpec::Session { .. } => 1,
        }
    }

    /// Calls `f(start, end)` for every window containing `ts`, in increasing order of end.
    pub fn assign(&self, ts: i64, mut f: impl FnMut(i64, i64)) {
        match *self {
            WindowSpec::Tumble { size, offset } => {
                let s = window_start(ts, offset, size);
                f(s, s + size);
            }
            WindowSpec::Hop { size, slide, offset } => {
                // The latest window containing ts starts at the slide boundary at or before ts.
                let last = window_start(ts, offset, slide);
                let mut start = last - size + slide;
                while start <= last {
                    if ts < start + size {
                        f(start, start + size);
                    }
                    start += slide;
                }
            }
            WindowSpec::Session { gap } => f(ts, ts + gap),
            WindowSpec::Cumulate { step, max, offset } => {
                let s = window_start(ts, offset, max);
                let mut end = window_start(ts, offset, step) + step;
                while end <= s + max {
                    f(s, end);
                    end += step;
                }
            }
        }
    }
}

/// True when a row of the window ending at `window_end` arrives too late for watermark `wm`.
pub fn is_late(window_end: i64, wm: i64) -> bool {
    wm >= window_end - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(spec: WindowSpec, ts: i64) -> Vec<(i64, i64)> {
        let mut v = vec![];
        spec.assign(ts, |s, e| v.push((s, e)));
        v
    }

    #[test]
    fn tumble_is_half_open_and_epoch_aligned() {
        let t = WindowSpec::Tumble { size: 10_000, offset: 0 };
        assert_eq!(all(t, 0), vec![(0, 10_000)]);
        assert_eq!(all(t, 9_999), vec![(0, 10_000)]);
        assert_eq!(all(t, 10_000), vec![(10_000, 20_000)]);
        assert_eq!(all(t, -1), vec![(-10_000, 0)]);
    }

    #[test]
    fn hop_assigns_size_over_slide_windows() {
        let h = WindowSpec::Hop { size: 10_000, slide: 2_000, offset: 0 };
        let w = all(h, 12_500);
        assert_eq!(w.len(), 5);
        assert_eq!(w.first(), Some(&(4_000, 14_000)));
        assert_eq!(w.last(), Some(&(12_000, 22_000)));
        for (s, e) in w {
            assert!(s <= 12_500 && 12_500 < e);
        }
    }

    #[test]
    fn cumulate_shares_the_max_window_start() {
        let c = WindowSpec::Cumulate { step: 2_000, max: 10_000, offset: 0 };
        assert_eq!(all(c, 3_000), vec![(0, 4_000), (0, 6_000), (0, 8_000), (0, 10_000)]);
        assert_eq!(
            all(c, 10_000),
            vec![(10_000, 12_000), (10_000, 14_000), (10_000, 16_000), (10_000, 18_000), (10_000, 20_000)]
        );
    }

    #[test]
    fn lateness_uses_window_max_timestamp() {
        assert!(!is_late(10_000, 9_998));
        assert!(is_late(10_000, 9_999));
    }

    #[test]
    fn windows_per_row_and_lengths_are_bounded() {
        let day = 86_400_000;
        assert!(WindowSpec::Hop { size: day, slide: 60_000, offset: 0 }.validate().is_ok());
        assert!(WindowSpec::Cumulate { step: 10_000, max: day, offset: 0 }.validate().is_ok());
        let err = WindowSpec::Hop { size: day, slide: 1, offset: 0 }.validate().unwrap_err();
        assert!(err.contains("86400000 windows") && err.contains("10000"), "{err}");
        let err = WindowSpec::Cumulate { step: 1_000, max: day, offset: 0 }.validate().unwrap_err();
        assert!(err.starts_with("CUMULATE") && err.contains("86400 windows"), "{err}");
        let err = WindowSpec::Tumble { size: i64::MAX, offset: 0 }.validate().unwrap_err();
        assert!(err.contains("100 years"), "{err}");
        assert!(WindowSpec::Session { gap: -MAX_WINDOW_MS - 1 }.validate().is_err());
    }

    #[test]
    fn validation_names_the_bad_value() {
        assert!(WindowSpec::Hop { size: 10, slide: 3, offset: 0 }.validate().unwrap_err().contains("multiple"));
        assert!(WindowSpec::Tumble { size: 0, offset: 0 }.validate().is_err());
    }
}

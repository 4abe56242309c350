//! Progress reporting: a bar on a terminal, periodic log lines otherwise
//! (CI logs and pipes should not fill with control characters).
use std::{
    io::IsTerminal,
    sync::Mutex,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// What unit the counter counts, for its display.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// Bytes (shown as MB, MB/s).
    Bytes,
    /// Rows (shown as rows, rows/s).
    Rows,
}

/// A progress counter that draws a bar on a terminal or logs every few seconds.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    unit: Unit,
    total: Option<u64>,
    last_log: Mutex<Instant>,
}

const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// A counter for `label` up to `total` (if known). `enabled = false`
    /// silences it entirely (e.g. `--no-progress`).
    pub fn new(label: &str, total: Option<u64>, unit: Unit, enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let template = match (unit, total.is_some()) {
                (Unit::Bytes, true) => {
                    "{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
                }
                (Unit::Bytes, false) => "{msg:>10} {bytes} ({bytes_per_sec})",
                (Unit::Rows, true) => {
                    "{msg:>10} [{bar:40}] {human_pos}/{human_len} rows ({per_sec}, {eta})"
                }
                (Unit::Rows, false) => "{msg:>10} {human_pos} rows ({per_sec})",
            };
            let bar = total.map_or_else(ProgressBar::no_length, ProgressBar::new);
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            bar,
            label: label.to_string(),
            unit,
            total,
            last_log: Mutex::new(Instant::now()),
        }
    }

    /// Set the absolute position.
    pub fn set(&self, position: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(position),
            None => self.maybe_log(position),
        }
    }

    /// Advance by `delta`.
    pub fn inc(&self, delta: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(delta);
        }
    }

    fn maybe_log(&self, position: u64) {
        let Ok(mut last) = self.last_log.lock() else {
            return;
        };
        if last.elapsed() < LOG_EVERY {
            return;
        }
        *last = Instant::now();
        let shown = |n: u64| match self.unit {
            Unit::Bytes => format!("{:.1} MB", n as f64 / 1e6),
            Unit::Rows => format!("{n} rows"),
        };
        match self.total {
            Some(total) if total > 0 => tracing::info!(
                "{}: {} of {} ({:.0}%)",
                self.label,
                shown(position),
                shown(total),
                position as f64 * 100.0 / total as f64
            ),
            _ => tracing::info!("{}: {}", self.label, shown(position)),
        }
    }

    /// Remove the bar (the caller prints its own summary).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

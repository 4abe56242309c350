//! Progress reporting shared by every long command: an indicatif bar when
//! stderr is a terminal, a plain log line every few seconds when it is not (so
//! logs collected by systemd or CI stay readable), nothing when hidden (tests,
//! `--no-progress`).
use std::{
    io::IsTerminal,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Nothing (library callers, tests).
    Hidden,
}

/// What the counter counts, for its display.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// Bytes (shown as MB, MB/s).
    Bytes,
    /// Rows (shown as rows, rows/s).
    Rows,
}

/// Interval between plain log lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A progress counter. Shared by reference (`&self`) so that a callback on
/// another thread can advance it.
#[derive(Debug)]
pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    log: bool,
    unit: Unit,
    total: Option<u64>,
    position: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
}

impl Progress {
    /// A counter for `label` up to `total` (if known).
    pub fn new(label: &str, total: Option<u64>, unit: Unit, mode: ProgressMode) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (mode == ProgressMode::Auto && terminal).then(|| {
            let template = match (unit, total.is_some()) {
                (Unit::Bytes, true) => {
                    "{prefix:>9} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}"
                }
                (Unit::Bytes, false) => "{prefix:>9} {spinner} {bytes} ({bytes_per_sec}) {msg}",
                (Unit::Rows, true) => {
                    "{prefix:>9} [{bar:40}] {human_pos}/{human_len} rows ({per_sec}, eta {eta}) {msg}"
                }
                (Unit::Rows, false) => "{prefix:>9} {spinner} {human_pos} rows ({per_sec}) {msg}",
            };
            let bar = total.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
            // The templates are constants; a bad one would only lose the styling.
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            label: label.to_string(),
            bar,
            log: mode == ProgressMode::Auto && !terminal,
            unit,
            total,
            position: AtomicU64::new(0),
            started: now,
            last_log: Mutex::new(now),
        }
    }

    /// Set the absolute position.
    pub fn set(&self, position: u64) {
        self.position.store(position, Ordering::Relaxed);
        self.show(position);
    }

    /// Advance by `delta`.
    pub fn inc(&self, delta: u64) {
        let position = self.position.fetch_add(delta, Ordering::Relaxed) + delta;
        self.show(position);
    }

    /// Start over with a note (a retried upload sends every row again).
    pub fn restart(&self, note: &str) {
        self.position.store(0, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_position(0);
            bar.set_message(note.to_string());
        } else if self.log {
            tracing::info!("{}: {note}", self.label);
        }
    }

    fn show(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            return;
        }
        if !self.log {
            return;
        }
        let Ok(mut last) = self.last_log.lock() else {
            return;
        };
        if last.elapsed() < LOG_EVERY {
            return;
        }
        *last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let (amount, rate) = match self.unit {
            Unit::Bytes => (
                format!("{:.1} MB", position as f64 / 1e6),
                format!("{:.1} MB/s", position as f64 / 1e6 / secs),
            ),
            Unit::Rows => (
                format!("{position} rows"),
                format!("{:.0} rows/s", position as f64 / secs),
            ),
        };
        match self.total {
            Some(total) if total > 0 => tracing::info!(
                "{}: {amount} ({:.0}% of {}), {rate}",
                self.label,
                position as f64 * 100.0 / total as f64,
                match self.unit {
                    Unit::Bytes => format!("{:.1} MB", total as f64 / 1e6),
                    Unit::Rows => format!("{total} rows"),
                }
            ),
            _ => tracing::info!("{}: {amount}, {rate}", self.label),
        }
    }

    /// Remove the bar (the caller prints its own summary).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

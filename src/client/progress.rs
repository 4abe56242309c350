//! Progress reporting shared by `stream` and `upload`: an indicatif bar when
//! stderr is a terminal, plain log lines every few seconds when it is not (so
//! logs collected by systemd or CI stay readable), nothing when hidden (tests).
use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Nothing (library callers, tests).
    Hidden,
}

/// Interval between plain log lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A progress sink counting rows.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    bar: Option<ProgressBar>,
    log: bool,
    rows: u64,
    total: Option<u64>,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    /// Start showing progress of `what` ("stream", "upload"), with the total
    /// number of rows when it is known.
    pub fn new(mode: ProgressMode, what: &'static str, total: Option<u64>) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (mode == ProgressMode::Auto && terminal).then(|| {
            let bar = match total {
                Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
                None => ProgressBar::new_spinner(),
            };
            let template = if total.is_some() {
                "{prefix} {bar:40} {pos}/{len} rows {per_sec} eta {eta} {msg}"
            } else {
                "{prefix} {spinner} {pos} rows {per_sec} {elapsed} {msg}"
            };
            // The templates are constants; a bad one would only lose the styling.
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_prefix(what);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            what,
            bar,
            log: mode == ProgressMode::Auto && !terminal,
            rows: 0,
            total,
            started: now,
            last_log: now,
        }
    }

    /// Count `rows` more rows.
    pub fn inc(&mut self, rows: u64) {
        self.rows += rows;
        if let Some(bar) = &self.bar {
            bar.inc(rows);
        } else if self.log && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            match self.total {
                Some(total) => tracing::info!(
                    "{}: {}/{} rows, {:.0} rows/s",
                    self.what,
                    self.rows,
                    total,
                    self.rows as f64 / secs
                ),
                None => tracing::info!(
                    "{}: {} rows, {:.0} rows/s",
                    self.what,
                    self.rows,
                    self.rows as f64 / secs
                ),
            }
        }
    }

    /// Start over (a retried upload sends every row again).
    pub fn restart(&mut self, note: &str) {
        self.rows = 0;
        if let Some(bar) = &self.bar {
            bar.set_position(0);
            bar.set_message(note.to_string());
        } else if self.log {
            tracing::info!("{}: {note}", self.what);
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

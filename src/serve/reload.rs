//! Hot swap of the served file, and what happens when it is written in place.
//!
//! # Reload
//! The served path's directory is watched (inotify: `IN_MOVED_TO`,
//! `IN_CLOSE_WRITE` and `IN_CREATE` on the file's name, since an atomic
//! rename puts a new inode under the name), and SIGHUP asks for a reload.
//! A rename onto the name reloads at once ([`DEBOUNCE_RENAME`]); a write
//! to it waits for quiet ([`DEBOUNCE_WRITE`]). A reload
//! opens the file under the protection policy ([`crate::store::lease`]),
//! validates it completely ([`Dataset::validate_fully`]: every key in
//! order, every batch decoded, the RecruitRow columns of each) and checks
//! its schema's fields and vector dimension against the generation served;
//! only then is it installed ([`LiveDataset::replace`]). A refused file is
//! logged with the reason and the old generation keeps serving. Streams
//! already running finish on the generation they started on.
//!
//! A data set directory reloads the same way: on SIGHUP, and on a rename of
//! a directory onto its name (`IN_MOVED_TO` in the parent, as for a file).
//! Writes inside the directory are not watched (send SIGHUP after changing
//! shards in place). Its validation checks every block's checksum too, and
//! each shard is under its own lease: a write to any of them revokes the
//! generation.
//!
//! # In-place writes
//! A generation served under a read lease is told (SIGIO) when another
//! process opens its file for writing or truncates it; that process waits.
//! The generation is then revoked: its streams end with UNAVAILABLE naming
//! the file ([`crate::wire::rewritten`]), it stops being served (new
//! requests get UNAVAILABLE and health says NOT_SERVING until a valid file
//! is in place), and once every view of its map is dropped, or at
//! [`revocation_deadline`] (after replacing the pages with a private copy),
//! the lease is released and the writer goes on. The watch then reloads the
//! file when the writer closes it.
//!
//! # Which generation is served
//! Logged at every load; Flight answers `DoAction("generation")` (listed by
//! `ListActions`) and puts the same JSON object in `FlightInfo.app_metadata`.

use std::{
    ffi::OsString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use arrow_flight::ActionType;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, Signal, SignalKind},
    task::JoinHandle,
};
use tonic::Status;
use tonic_health::{server::HealthReporter, ServingStatus};

use super::auth::TokenStore;
use crate::{
    dataset::{Dataset, DatasetError, DatasetOptions, LiveDataset},
    store::lease::{Lease, NoLease, Policy},
};

/// Quiet time after a rename onto the served path before reloading: none.
/// A rename puts a complete file under the name, so the reload starts at
/// once; renames arriving while it validates are read after it and coalesce
/// into one more reload. (It was 20 ms, a tenth of the 1.4M-row swap's
/// latency budget: BENCHMARKS.md, hot swap.)
pub const DEBOUNCE_RENAME: Duration = Duration::ZERO;
/// Quiet time after a write to the served path (or its creation) before
/// reloading: a writer may close and reopen it.
pub const DEBOUNCE_WRITE: Duration = Duration::from_millis(200);
/// How often a revocation checks whether the map is gone.
const REVOKE_POLL: Duration = Duration::from_millis(10);
/// Name of the Flight action that answers the generation served.
pub const ACTION_GENERATION: &str = "generation";

/// The services whose health follows the served generation.
const HEALTH_SERVICES: [&str; 4] = [
    "",
    super::embedding::SERVICE_NAME,
    super::package_alias::ALIAS_SERVICE_NAME,
    "arrow.flight.protocol.FlightService",
];

/// Flight `ListActions`: the one action served.
pub fn action_types() -> Vec<ActionType> {
    vec![ActionType {
        r#type: ACTION_GENERATION.to_string(),
        description: "the generation served now, as JSON: generation, generation_source, path, rows, loaded_at, protection".to_string(),
    }]
}

/// Flight `DoAction`: the body answering action `kind`.
pub fn do_action(live: &LiveDataset, kind: &str) -> Result<Bytes, Status> {
    if kind != ACTION_GENERATION {
        let shown: String = kind.chars().take(64).collect();
        return Err(Status::unimplemented(format!(
            "unknown action `{shown}`; the only action is `{ACTION_GENERATION}`"
        )));
    }
    Ok(Bytes::from(live.current()?.generation().to_json()))
}

/// Environment variable shortening the revocation deadline (a duration
/// such as `2s`; never longer than the default). For tests and operators
/// who would rather cut stalled clients sooner.
pub const REVOKE_DEADLINE_ENV: &str = "EMBEDSTREAM_REVOKE_DEADLINE";

/// The longest a revocation waits for the views of a map to go before it
/// copies them and lets the writer go: 5 s less than the kernel's
/// `/proc/sys/fs/lease-break-time` (45 s by default), at least 1 s, or
/// [`REVOKE_DEADLINE_ENV`] if shorter.
pub fn revocation_deadline() -> Duration {
    let kernel = std::fs::read_to_string("/proc/sys/fs/lease-break-time")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(45);
    let default = Duration::from_secs(kernel.saturating_sub(5).max(1));
    std::env::var(REVOKE_DEADLINE_ENV)
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .map_or(default, |d| d.min(default))
}

/// A generation the reloader watches for lease breaks (weakly: it never
/// keeps a map alive).
struct Tracked {
    lease: Weak<Lease>,
    dataset: Weak<Dataset>,
}

/// Signals and the directory watch, set up before the first generation is
/// opened (a lease break must find SIGIO caught), then run as a task.
pub struct Reloader {
    path: PathBuf,
    options: DatasetOptions,
    sigio: Signal,
    sighup: Signal,
    watch: Option<DirWatch>,
    loads: u64,
    tracked: Vec<Tracked>,
    /// The schema of the last generation installed (kept when it is
    /// withdrawn): every replacement must have its columns.
    shape: Option<SchemaRef>,
}

impl Reloader {
    /// Catch SIGIO and SIGHUP and watch `path`'s directory. Must run inside
    /// a tokio runtime.
    pub fn install(path: &Path, options: DatasetOptions) -> Result<Self, String> {
        let sigio = signal(SignalKind::io()).map_err(|e| format!("cannot catch SIGIO: {e}"))?;
        let sighup =
            signal(SignalKind::hangup()).map_err(|e| format!("cannot catch SIGHUP: {e}"))?;
        let watch = match DirWatch::new(path) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    file = %path.display(),
                    "cannot watch the served file's directory ({e}); reload with SIGHUP"
                );
                None
            }
        };
        Ok(Reloader {
            path: path.to_path_buf(),
            options,
            sigio,
            sighup,
            watch,
            loads: 0,
            tracked: Vec::new(),
            shape: None,
        })
    }

    /// Open the first generation (every start-up refusal happens here).
    pub fn open_first(&mut self) -> Result<Arc<Dataset>, DatasetError> {
        let began = Instant::now();
        self.loads += 1;
        let dataset = Arc::new(Dataset::open_served(&self.path, &self.options, self.loads)?);
        self.track(&dataset);
        self.shape = Some(dataset.store().schema().clone());
        log_generation(&dataset, "start-up", began.elapsed());
        Ok(dataset)
    }

    /// Run the reloader for `live` until the returned task is dropped; its
    /// SIGHUP also re-reads `tokens` (the bearer-token file), when given.
    pub fn spawn(
        self,
        live: Arc<LiveDataset>,
        health: HealthReporter,
        tokens: Option<Arc<TokenStore>>,
    ) -> ReloadTask {
        ReloadTask(tokio::spawn(self.run(live, health, tokens)))
    }

    fn track(&mut self, dataset: &Arc<Dataset>) {
        for lease in dataset.store().files().filter_map(|f| f.lease()) {
            self.tracked.push(Tracked {
                lease: Arc::downgrade(lease),
                dataset: Arc::downgrade(dataset),
            });
        }
    }

    async fn run(
        mut self,
        live: Arc<LiveDataset>,
        health: HealthReporter,
        tokens: Option<Arc<TokenStore>>,
    ) {
        let (released_tx, mut released_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut pending: Option<tokio::time::Instant> = None;
        loop {
            let due = pending;
            tokio::select! {
                _ = self.sigio.recv() => {
                    self.check_leases(&live, &health, &released_tx).await;
                }
                _ = self.sighup.recv() => {
                    // The one SIGHUP handler: the token file first (quick), then the data.
                    if let Some(tokens) = &tokens {
                        super::auth::log_reload(tokens);
                    }
                    tracing::info!(file = %self.path.display(), "SIGHUP: reloading");
                    pending = None;
                    self.reload(&live, &health, "SIGHUP").await;
                    // A writer may have opened the new file while it was
                    // validated: its SIGIO found no tracked lease then.
                    self.check_leases(&live, &health, &released_tx).await;
                }
                event = next_change(&mut self.watch) => match event {
                    Ok(debounce) => {
                        let at = tokio::time::Instant::now() + debounce;
                        pending = Some(pending.map_or(at, |p| p.max(at)));
                    }
                    Err(e) => {
                        tracing::warn!(
                            file = %self.path.display(),
                            "the directory watch failed ({e}); reload with SIGHUP"
                        );
                        self.watch = None;
                    }
                },
                Some(()) = released_rx.recv() => {
                    // A writer may have given up (`truncate` opens with
                    // O_NONBLOCK) without writing: reload then too.
                    let at = tokio::time::Instant::now() + DEBOUNCE_WRITE;
                    pending = Some(pending.map_or(at, |p| p.max(at)));
                }
                _ = sleep_until(due) => {
                    pending = None;
                    self.reload(&live, &health, "the file changed").await;
                    self.check_leases(&live, &health, &released_tx).await;
                }
            }
        }
    }

    /// SIGIO: revoke every tracked generation whose lease is being broken.
    async fn check_leases(
        &mut self,
        live: &Arc<LiveDataset>,
        health: &HealthReporter,
        released: &tokio::sync::mpsc::UnboundedSender<()>,
    ) {
        self.tracked.retain(|t| t.lease.strong_count() > 0);
        for tracked in &self.tracked {
            let Some(lease) = tracked.lease.upgrade() else {
                continue;
            };
            if lease.is_revoked() || !lease.breaking() {
                continue;
            }
            lease.revoke();
            let was_current = tracked.dataset.upgrade().is_some_and(|d| {
                live.withdraw(
                    &d,
                    format!(
                        "no generation is served: {} is being written in place; it is served again once a complete, valid file is there (replace it with `embedstream convert -o FILE --force`, which renames atomically)",
                        lease.path().display()
                    ),
                )
            });
            tracing::warn!(
                file = %lease.path().display(),
                was_current,
                "another process opened the served file for writing: generation revoked, its streams end with UNAVAILABLE; the writer waits until every view of the map is dropped"
            );
            if was_current {
                set_health(health, ServingStatus::NotServing).await;
            }
            let released = released.clone();
            tokio::spawn(async move {
                release_when_unmapped(lease).await;
                let _ = released.send(());
            });
        }
    }

    /// Open, validate and install the file at the served path; refuse it
    /// with a log line naming the reason otherwise.
    async fn reload(&mut self, live: &Arc<LiveDataset>, health: &HealthReporter, why: &str) {
        let began = Instant::now();
        let current = live.current().ok();
        // Validation reads the whole file: off the async workers.
        let (path, options, load) = (self.path.clone(), self.options.clone(), self.loads + 1);
        let shape = self.shape.clone();
        let checked = tokio::task::spawn_blocking(move || candidate(&path, &options, load, shape))
            .await
            .unwrap_or_else(|e| Err(format!("the validation task failed: {e}")));
        match checked {
            Ok(dataset) => {
                self.loads += 1;
                let dataset = Arc::new(dataset);
                self.track(&dataset);
                self.shape = Some(dataset.store().schema().clone());
                let replaced = live.replace(dataset.clone());
                set_health(health, ServingStatus::Serving).await;
                log_generation(&dataset, why, began.elapsed());
                // The generation replaced goes off the async workers: if no
                // stream holds it, dropping it unmaps its file and frees its
                // cached batches (~7 ms of munmap on 1.4M rows, measured with
                // perf), which would stall a worker just as the first requests
                // for the new generation arrive.
                if let Some(replaced) = replaced {
                    drop(tokio::task::spawn_blocking(move || drop(replaced)));
                }
            }
            Err(reason) => {
                let serving = match &current {
                    Some(d) => format!(
                        "generation {} ({} rows) keeps serving",
                        d.generation().number,
                        d.num_rows()
                    ),
                    None => {
                        live.explain(format!(
                            "no generation is served: the file now at {} was refused ({reason}); put a complete, valid file there (`embedstream convert -o FILE --force` renames one atomically)",
                            self.path.display()
                        ));
                        "no generation is served until a valid file is in place".into()
                    }
                };
                tracing::warn!(
                    file = %self.path.display(),
                    trigger = why,
                    "replacement refused: {reason}; {serving}"
                );
            }
        }
    }
}

/// The file at `path` as generation `load`, fully validated, with the
/// columns of `shape` (the last generation installed).
fn candidate(
    path: &Path,
    options: &DatasetOptions,
    load: u64,
    shape: Option<SchemaRef>,
) -> Result<Dataset, String> {
    if crate::store::lease::open_for_writing_elsewhere(path) {
        return Err(format!(
            "{}: {}; it is reloaded when the writer closes it",
            path.display(),
            NoLease::Writing
        ));
    }
    let dataset = Dataset::open_served(path, options, load).map_err(|e| e.to_string())?;
    if let Policy::Copy(NoLease::Writing) = dataset.generation().policy {
        return Err(format!(
            "{}: {}; it is reloaded when the writer closes it",
            path.display(),
            NoLease::Writing
        ));
    }
    dataset.validate_fully()?;
    if let Some(shape) = shape {
        same_shape(&shape, &dataset)?;
    }
    Ok(dataset)
}

/// A replacement must keep the columns (names and types, so the vector
/// dimension too) of the generation it replaces: consumers rely on them.
/// Changing them takes a restart.
fn same_shape(old: &SchemaRef, new: &Dataset) -> Result<(), String> {
    let (old_fields, new_fields) = (old.fields(), new.store().schema().fields());
    for field in old_fields.iter() {
        match new_fields.find(field.name()) {
            None => {
                return Err(format!(
                    "{}: column `{}` of the served file is missing (changing the columns takes a restart)",
                    new.path().display(),
                    field.name()
                ))
            }
            Some((_, f)) if f.data_type() != field.data_type() => {
                return Err(format!(
                    "{}: column `{}` is {} where the served file has {} (changing the columns takes a restart)",
                    new.path().display(),
                    field.name(),
                    f.data_type(),
                    field.data_type()
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn log_generation(dataset: &Dataset, trigger: &str, took: Duration) {
    let g = dataset.generation();
    tracing::info!(
        generation = g.number,
        generation_source = g.source,
        file = %g.path.display(),
        rows = g.rows,
        loaded_at = %humantime::format_rfc3339_millis(g.loaded_at),
        protection = %g.policy,
        trigger,
        // Start-up: open and key check; a reload: open and full validation.
        load_ms = took.as_secs_f64() * 1e3,
        "serving generation {}",
        g.number
    );
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Wait until the revoked map is unmapped (its last view dropped), or copy
/// it at the deadline; then release the lease so the writer goes on.
async fn release_when_unmapped(lease: Arc<Lease>) {
    let began = Instant::now();
    let deadline = revocation_deadline();
    while !lease.unmapped() && began.elapsed() < deadline {
        tokio::time::sleep(REVOKE_POLL).await;
    }
    if !lease.unmapped() {
        match lease.detach() {
            Ok(_) => tracing::warn!(
                file = %lease.path().display(),
                waited_ms = began.elapsed().as_millis() as u64,
                "views of the revoked map were still held at the deadline: they now read a private copy"
            ),
            Err(e) => tracing::error!(
                file = %lease.path().display(),
                "cannot copy the revoked map ({e}); releasing the lease anyway"
            ),
        }
    }
    lease.release();
    tracing::info!(
        file = %lease.path().display(),
        waited_ms = began.elapsed().as_millis() as u64,
        "lease released: the writer may go on"
    );
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_change(watch: &mut Option<DirWatch>) -> std::io::Result<Duration> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// The running reloader; stops when dropped.
#[derive(Debug)]
pub struct ReloadTask(JoinHandle<()>);

impl Drop for ReloadTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An inotify watch on the served file's directory, filtered to its name.
struct DirWatch {
    fd: AsyncFd<OwnedFd>,
    name: OsString,
    buffer: Vec<u8>,
}

/// inotify event header: wd, mask, cookie, len.
const EVENT_HEADER: usize = 16;

impl DirWatch {
    #[cfg(target_os = "linux")]
    fn new(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let name = path
            .file_name()
            .ok_or_else(|| std::io::Error::other("the served path has no file name"))?
            .to_os_string();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("the directory name holds a NUL byte"))?;
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mask = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE;
        // SAFETY: `dir` is a NUL-terminated string that outlives the call.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), dir.as_ptr(), mask) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the `OwnedFd` moves into the `AsyncFd`, which alone owns it
        // until dropped, and always returns the same open descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(DirWatch {
            fd,
            name,
            buffer: vec![0; 64 * 1024],
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn new(_path: &Path) -> std::io::Result<Self> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    /// Wait for the next event on the served name; returns its debounce.
    async fn changed(&mut self) -> std::io::Result<Duration> {
        loop {
            let mut guard = self.fd.readable().await?;
            let buffer = &mut self.buffer;
            let read = guard.try_io(|fd| {
                // SAFETY: reading into a buffer we own, within its length.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        buffer.as_mut_ptr().cast::<libc::c_void>(),
                        buffer.len(),
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            let n = match read {
                Ok(result) => result?,
                Err(_would_block) => continue,
            };
            if let Some(debounce) = relevant(&self.buffer[..n], &self.name) {
                return Ok(debounce);
            }
        }
    }
}

/// No inotify here: nothing is ever relevant (the watch is never made).
#[cfg(not(target_os = "linux"))]
fn relevant(_events: &[u8], _name: &OsString) -> Option<Duration> {
    None
}

/// The debounce for the events in `events` that concern `name` (a rename
/// onto it wins), or `None` if none does.
#[cfg(target_os = "linux")]
fn relevant(events: &[u8], name: &OsString) -> Option<Duration> {
    use std::os::unix::ffi::OsStrExt;
    let word = |at: usize| -> Option<u32> {
        events
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    let mut found = None;
    let mut at = 0;
    while at + EVENT_HEADER <= events.len() {
        let (Some(mask), Some(len)) = (word(at + 4), word(at + 12)) else {
            break;
        };
        let start = at + EVENT_HEADER;
        let end = start.saturating_add(len as usize).min(events.len());
        let raw = &events[start..end];
        let event_name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
        if mask & libc::IN_Q_OVERFLOW != 0 {
            found = Some(DEBOUNCE_WRITE);
        } else if event_name == name.as_bytes() {
            let debounce = if mask & libc::IN_MOVED_TO != 0 {
                DEBOUNCE_RENAME
            } else {
                DEBOUNCE_WRITE
            };
            found = Some(found.map_or(debounce, |d: Duration| d.min(debounce)));
        }
        at = end;
    }
    found
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn event(mask: u32, name: &str) -> Vec<u8> {
        let mut padded = name.as_bytes().to_vec();
        padded.resize(name.len().div_ceil(16) * 16 + 16, 0);
        let mut e = Vec::new();
        e.extend(1i32.to_ne_bytes());
        e.extend(mask.to_ne_bytes());
        e.extend(0u32.to_ne_bytes());
        e.extend((padded.len() as u32).to_ne_bytes());
        e.extend(padded);
        e
    }

    #[test]
    fn events_are_filtered_by_name_and_a_rename_wins() {
        let name = OsString::from("live.arrow");
        let other = event(libc::IN_CLOSE_WRITE, "live.arrow.tmp123");
        assert_eq!(relevant(&other, &name), None);
        let write = event(libc::IN_CLOSE_WRITE, "live.arrow");
        assert_eq!(relevant(&write, &name), Some(DEBOUNCE_WRITE));
        let both = [other, write, event(libc::IN_MOVED_TO, "live.arrow")].concat();
        assert_eq!(relevant(&both, &name), Some(DEBOUNCE_RENAME));
        // A truncated buffer is not read past its end.
        assert_eq!(relevant(&both[..20], &name), None);
    }
}

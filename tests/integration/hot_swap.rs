//! Hot swap of the served file and in-place writes to it (issue 9, points 2
//! and 3). The swap under 16 streams runs in-process; everything that
//! writes the served file in place (which on an unprotected map would kill
//! the process with SIGBUS/SIGSEGV) and SIGHUP run against a CHILD
//! `embedstream serve`, so this test process survives whatever happens.

use crate::common;

use std::{
    io::{Seek, SeekFrom, Write},
    ops::Range,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use embedstream::{
    format,
    proto::{
        embedding_stream_service_client::EmbeddingStreamServiceClient, RowChunk,
        StreamEmbeddingRequest,
    },
    serve::{Server, ServerConfig},
};
use futures::StreamExt;
use tonic::{transport::Channel, Code, Status};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// Wide enough that a stream of [`LIVE_ROWS`] does not fit the client's flow-control windows.
const DIM: usize = 64;
/// Generous: no timing threshold, only a bound on waiting for a thing to happen.
const PATIENCE: Duration = Duration::from_secs(60);

fn uuid_text(key: [u8; 16]) -> String {
    uuid::Uuid::from_bytes(key).hyphenated().to_string()
}

/// Write rows `range` to `path` atomically (temp file + rename in the same
/// directory), as `embedstream convert -o PATH --force` does.
fn replace_atomically(path: &Path, range: Range<usize>, meta: &[(&str, &str)]) {
    let tmp = path.with_extension("arrow.tmp");
    common::write_sample_rows(&tmp, range, DIM, 100, meta);
    std::fs::rename(&tmp, path).unwrap();
}

async fn connect(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn open_stream(channel: &Channel, chunk: i32) -> Result<tonic::Streaming<RowChunk>, Status> {
    Ok(EmbeddingStreamServiceClient::new(channel.clone())
        .max_decoding_message_size(usize::MAX)
        .stream_embedding(StreamEmbeddingRequest {
            last_processed_uuid: String::new(),
            chunk_size: chunk,
        })
        .await?
        .into_inner())
}

/// Global row numbers of the rows in `chunks`, each checked against the
/// synthetic content of that row (`first` is the file's first row number).
fn row_numbers(chunks: &[RowChunk], first: usize) -> Vec<usize> {
    let mut rows = Vec::new();
    for chunk in chunks {
        for row in &chunk.rows {
            let i = first + rows.len();
            assert_eq!(row.id, uuid_text(common::key_for_row(i)), "row {i}'s id");
            assert_eq!(row.company_name, common::company(i), "row {i}'s company");
            assert_eq!(
                row.vector[1],
                common::vector_value(i, 1),
                "row {i}'s vector"
            );
            rows.push(i);
        }
    }
    rows
}

/// Every chunk of `stream` after the ones already read, and how it ended.
async fn drain(stream: &mut tonic::Streaming<RowChunk>) -> (Vec<RowChunk>, Result<(), Status>) {
    let mut chunks = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(c)) => chunks.push(c),
            Ok(None) => return (chunks, Ok(())),
            Err(status) => return (chunks, Err(status)),
        }
    }
}

async fn generation_json(channel: &Channel) -> serde_json::Value {
    let mut flight = FlightClient::new(channel.clone());
    let mut results = flight
        .do_action(Action::new("generation", ""))
        .await
        .unwrap();
    let body = results.next().await.unwrap().unwrap();
    serde_json::from_slice(&body).unwrap()
}

async fn total_records(channel: &Channel) -> i64 {
    FlightClient::new(channel.clone())
        .get_flight_info(FlightDescriptor::new_path(vec!["live".into()]))
        .await
        .unwrap()
        .total_records
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let began = Instant::now();
    while began.elapsed() < PATIENCE {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened within {PATIENCE:?}: {what}");
}

#[tokio::test]
async fn hot_swap_under_sixteen_streams() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.arrow");
    let (old, new) = (0..3000, 2000..6000);
    common::write_sample_rows(&path, old.clone(), DIM, 100, &[]);
    // A child process another test forks at this moment may hold our
    // descriptor open for writing until it execs: no lease until then.
    wait_for("no process has the file open for writing", || {
        let p = path.clone();
        async move { !embedstream::store::lease::open_for_writing_elsewhere(&p) }
    })
    .await;
    let server = Server::spawn(ServerConfig::new(&path, "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let channel = connect(&addr).await;
    let before = generation_json(&channel).await;
    assert_eq!(before["generation"], 1);
    assert_eq!(before["generation_source"], "load counter");
    assert_eq!(before["rows"], 3000);
    assert_eq!(before["protection"], "lease");
    let mut flight = FlightClient::new(channel.clone());
    let actions: Vec<_> = flight
        .list_actions()
        .await
        .unwrap()
        .map(|a| a.unwrap().r#type)
        .collect()
        .await;
    assert_eq!(actions, ["generation"]);
    match flight.do_action(Action::new("reload", "")).await.err() {
        Some(arrow_flight::error::FlightError::Tonic(status)) => {
            assert_eq!(status.code(), Code::Unimplemented);
            assert_eq!(
                status.message(),
                "unknown action `reload`; the only action is `generation`"
            );
        }
        other => panic!("unexpected {other:?}"),
    }

    // 16 streams, each on its own connection, each one chunk in.
    let mut streams = Vec::new();
    for _ in 0..16 {
        let ch = connect(&addr).await;
        let mut s = open_stream(&ch, 10).await.unwrap();
        let first = s.message().await.unwrap().unwrap();
        streams.push((ch, s, vec![first]));
    }

    replace_atomically(&path, new.clone(), &[(format::META_GENERATION, "7")]);
    wait_for("the new generation is served", || {
        let ch = channel.clone();
        async move { generation_json(&ch).await["generation"] == 7 }
    })
    .await;
    let after = generation_json(&channel).await;
    assert_eq!(after["generation_source"], "file metadata");
    assert_eq!(after["rows"], 4000);
    assert_eq!(after["path"], path.display().to_string());
    assert_eq!(total_records(&channel).await, 4000);
    // FlightInfo carries the same generation in app_metadata.
    let info = FlightClient::new(channel.clone())
        .get_flight_info(FlightDescriptor::new_path(vec!["live".into()]))
        .await
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&info.app_metadata).unwrap();
    assert_eq!(meta, after);

    // A stream started after the switch reads the new file, every row once.
    let mut fresh = open_stream(&channel, 0).await.unwrap();
    let (chunks, end) = drain(&mut fresh).await;
    end.unwrap();
    assert_eq!(
        row_numbers(&chunks, new.start),
        new.clone().collect::<Vec<_>>()
    );
    // And so does Flight.
    let batches: Vec<_> = FlightClient::new(channel.clone())
        .do_get(Ticket::new("all"))
        .await
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
        .await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4000);

    // The 16 running streams finish on the old file, every row once, none errs.
    for (_ch, mut s, mut chunks) in streams {
        let (rest, end) = drain(&mut s).await;
        end.unwrap();
        chunks.extend(rest);
        assert_eq!(
            row_numbers(&chunks, old.start),
            old.clone().collect::<Vec<_>>()
        );
    }
    server.shutdown().await.unwrap();
}

// ------------------------------------------------------------ child server

/// `embedstream serve` as a child process, its log in a file.
struct ChildServer {
    child: Child,
    log: PathBuf,
    addr: String,
}

impl ChildServer {
    fn start(dir: &Path, data: &Path) -> ChildServer {
        Self::start_with(dir, data, &[])
    }

    fn start_with(dir: &Path, data: &Path, env: &[(&str, &str)]) -> ChildServer {
        let log = dir.join(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_embedstream"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--data"])
            .arg(data)
            .env("LOG_LEVEL", "INFO")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = ChildServer {
            child,
            log,
            addr: String::new(),
        };
        let line = server.wait_log("serving StreamEmbedding", 1);
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no addr in {line}"));
        server.addr = addr.to_string();
        server
    }

    fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        // Strip ANSI colour codes.
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for d in chars.by_ref() {
                    if d == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The `nth` log line containing `needle` (waits for it; the child must stay alive).
    fn wait_log(&mut self, needle: &str, nth: usize) -> String {
        let began = Instant::now();
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().filter(|l| l.contains(needle)).nth(nth - 1) {
                return line.to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the server exited ({status}) before logging `{needle}`:\n{text}");
            }
            assert!(
                began.elapsed() < PATIENCE,
                "no `{needle}` (#{nth}) in the log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Send SIGHUP to the child server (the reload signal).
    fn sighup(&mut self) {
        assert!(self.alive(), "the server exited before SIGHUP");
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) only sends a signal; `pid` is our own child, not
        // yet reaped (checked just above), so it names no other process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    }

    async fn channel(&self) -> Channel {
        connect(&self.addr).await
    }

    async fn health(&self) -> i32 {
        HealthClient::new(self.channel().await)
            .check(HealthCheckRequest {
                service: "embedding.EmbeddingStreamService".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A served file big enough that 8 streams one chunk in are far from done.
const LIVE_ROWS: Range<usize> = 0..20_000;

#[tokio::test]
async fn a_bad_replacement_is_refused_and_the_old_file_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.arrow");
    common::write_sample_rows(&path, 0..500, DIM, 100, &[]);
    let mut server = ChildServer::start(dir.path(), &path);

    // Not Arrow at all.
    let tmp = dir.path().join("junk.tmp");
    std::fs::write(&tmp, b"this is not an arrow file").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let line = server.wait_log("replacement refused", 1);
    assert!(line.contains("not an Arrow IPC file"), "{line}");
    assert!(
        line.contains("generation 1 (500 rows) keeps serving"),
        "{line}"
    );

    // A damaged batch body (invalid UTF-8 in row 250's id): found only by
    // decoding every batch.
    common::write_damaged_sample_file(&tmp, 1000, DIM, 100, 250);
    std::fs::rename(&tmp, &path).unwrap();
    let line = server.wait_log("replacement refused", 2);
    assert!(line.contains("record batch 2 cannot be decoded"), "{line}");

    // Another vector dimension.
    common::write_sample_rows(&tmp, 0..100, DIM * 2, 100, &[]);
    std::fs::rename(&tmp, &path).unwrap();
    let line = server.wait_log("replacement refused", 3);
    assert!(
        line.contains("column `job_post_vectors` is FixedSizeList"),
        "{line}"
    );

    // The old generation still serves every row.
    let ch = server.channel().await;
    let (chunks, end) = drain(&mut open_stream(&ch, 0).await.unwrap()).await;
    end.unwrap();
    assert_eq!(row_numbers(&chunks, 0), (0..500).collect::<Vec<_>>());
    assert_eq!(generation_json(&ch).await["generation"], 1);

    // A file without a column the served one has (`id`, which RecruitRow
    // does not read).
    common::write_sample_rows(&tmp, 0..100, DIM, 100, &[]);
    let batches: Vec<_> =
        arrow_ipc::reader::FileReader::try_new(std::fs::File::open(&tmp).unwrap(), None)
            .unwrap()
            .map(|b| b.unwrap().project(&[1, 2, 3, 4, 5, 6]).unwrap())
            .collect();
    let mut w = arrow_ipc::writer::FileWriter::try_new(
        std::fs::File::create(&tmp).unwrap(),
        &batches[0].schema(),
    )
    .unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    drop(w);
    std::fs::rename(&tmp, &path).unwrap();
    let line = server.wait_log("replacement refused", 4);
    assert!(
        line.contains("column `id` of the served file is missing"),
        "{line}"
    );

    // A valid file still open for writing by its writer is not read yet;
    // it is served once the writer closes it.
    common::write_sample_rows(&tmp, 900..1000, DIM, 100, &[]);
    let still_writing = std::fs::OpenOptions::new().write(true).open(&tmp).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let line = server.wait_log("replacement refused", 5);
    assert!(
        line.contains("the file is open for writing by another process; it is reloaded when the writer closes it"),
        "{line}"
    );
    assert_eq!(generation_json(&ch).await["generation"], 1);
    drop(still_writing);
    server.wait_log("serving generation 2", 1);
    let (chunks, end) = drain(&mut open_stream(&ch, 0).await.unwrap()).await;
    end.unwrap();
    assert_eq!(row_numbers(&chunks, 900), (900..1000).collect::<Vec<_>>());
    assert!(server.alive());
}

/// What to do to the served file in place.
#[derive(Debug, Clone, Copy)]
enum InPlace {
    /// Truncate it to half its size.
    Truncate,
    /// `cp other.arrow live.arrow` (O_TRUNC, then write).
    CopyOver,
    /// Overwrite bytes of a string in place: invalid UTF-8.
    Overwrite,
    /// Overwrite string offsets of a batch every stream has decoded (cached).
    Offsets,
}

/// 8 live streams (6 StreamEmbedding, 2 Flight) on a child server, then
/// `write` to the served file in place: the process survives, the streams
/// end with UNAVAILABLE naming the file, health and new streams answer.
async fn in_place_write_under_live_streams(write: InPlace) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.arrow");
    common::write_sample_rows(&path, LIVE_ROWS, DIM, 100, &[]);
    let other = dir.path().join("other.arrow");
    common::write_sample_rows(&other, 50_000..51_000, DIM, 100, &[]);
    let mut server = ChildServer::start(dir.path(), &path);
    assert_eq!(server.health().await, ServingStatus::Serving as i32);

    let mut streams = Vec::new();
    for _ in 0..6 {
        let ch = server.channel().await;
        let mut s = open_stream(&ch, 10).await.unwrap();
        let first = s.message().await.unwrap().unwrap();
        streams.push((ch, s, vec![first]));
    }
    let mut flights = Vec::new();
    for _ in 0..2 {
        let mut client = FlightClient::new(server.channel().await);
        let mut s = client.do_get(Ticket::new("all")).await.unwrap();
        let first = s.next().await.unwrap().unwrap();
        flights.push((client, s, first.num_rows()));
    }

    // The writer blocks in open() until the server has let go of the file.
    let target = path.clone();
    let source = other.clone();
    let writer = std::thread::spawn(move || match write {
        InPlace::Truncate => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len / 2).unwrap();
        }
        InPlace::CopyOver => {
            std::fs::copy(&source, &target).unwrap();
        }
        InPlace::Overwrite => {
            let bytes = std::fs::read(&target).unwrap();
            let needle = b"v5-1234v5-";
            let at = bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .unwrap();
            f.seek(SeekFrom::Start(at as u64 + 3)).unwrap();
            f.write_all(&[0xff, 0xfe]).unwrap();
        }
        InPlace::Offsets => {
            // Batch 0's `Company Name` offsets (a served column): "Company 0"
            // .. "Company 9" are 9 bytes each, "Company 10" 10.
            let offsets: Vec<u8> = [0i32, 9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 100]
                .iter()
                .flat_map(|o| o.to_le_bytes())
                .collect();
            let bytes = std::fs::read(&target).unwrap();
            let at = bytes
                .windows(offsets.len())
                .position(|w| w == offsets.as_slice())
                .unwrap();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .unwrap();
            f.seek(SeekFrom::Start(at as u64 + 4 * 5)).unwrap();
            f.write_all(&i32::MAX.to_le_bytes()).unwrap();
        }
    });
    server.wait_log("generation revoked", 1);

    let shown = path.display().to_string();
    for (_ch, mut s, mut chunks) in streams {
        let (rest, end) = drain(&mut s).await;
        chunks.extend(rest);
        let status = end.expect_err("a stream on the rewritten file must be cut");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains(&shown), "{}", status.message());
        assert!(
            status.message().contains("being written in place"),
            "{}",
            status.message()
        );
        // What was sent before the cut is an intact prefix of the old file.
        let rows = row_numbers(&chunks, 0);
        assert!(rows.len() < LIVE_ROWS.len());
    }
    for (_client, mut s, mut rows) in flights {
        let status = loop {
            match s.next().await {
                Some(Ok(batch)) => rows += batch.num_rows(),
                Some(Err(arrow_flight::error::FlightError::Tonic(status))) => break status,
                other => panic!("a Flight stream must be cut, got {other:?}"),
            }
        };
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains(&shown), "{}", status.message());
        assert!(rows < LIVE_ROWS.len());
    }
    writer.join().unwrap();
    server.wait_log("lease released", 1);
    assert!(server.alive(), "the server died");

    let ch = server.channel().await;
    match write {
        InPlace::CopyOver => {
            // The copy is complete and valid: it becomes the next generation.
            server.wait_log("serving generation 2", 1);
            assert_eq!(server.health().await, ServingStatus::Serving as i32);
            let (chunks, end) = drain(&mut open_stream(&ch, 0).await.unwrap()).await;
            end.unwrap();
            assert_eq!(
                row_numbers(&chunks, 50_000),
                (50_000..51_000).collect::<Vec<_>>()
            );
        }
        InPlace::Truncate | InPlace::Overwrite | InPlace::Offsets => {
            // The damaged file is refused: no generation is served, and
            // health and new streams say so.
            let line = server.wait_log("replacement refused", 1);
            assert!(line.contains("no generation is served"), "{line}");
            let reason = match write {
                InPlace::Truncate => "not an Arrow IPC file",
                InPlace::Offsets => "record batch 0 cannot be decoded",
                // Row 1234's id lost its UTF-8: found by decoding every batch.
                _ => "record batch 12 cannot be decoded",
            };
            assert!(line.contains(reason), "{line}");
            assert_eq!(server.health().await, ServingStatus::NotServing as i32);
            let status = open_stream(&ch, 0).await.unwrap_err();
            assert_eq!(status.code(), Code::Unavailable);
            // Explained as of the refusal logged above.
            assert!(
                status.message().starts_with(&format!(
                    "no generation is served: the file now at {shown} was refused ("
                )),
                "{}",
                status.message()
            );
            assert!(status.message().contains(reason), "{}", status.message());
            // A file of another vector dimension is still refused: the
            // columns of the generation withdrawn are kept.
            let tmp = dir.path().join("wide.tmp");
            common::write_sample_rows(&tmp, 0..100, DIM * 2, 100, &[]);
            std::fs::rename(&tmp, &path).unwrap();
            let line = server.wait_log("column `job_post_vectors` is FixedSizeList", 1);
            assert!(line.contains("replacement refused"), "{line}");
            // A valid file put in place is served again.
            replace_atomically(&path, 7000..7500, &[]);
            server.wait_log("serving generation 2", 1);
            let (chunks, end) = drain(&mut open_stream(&ch, 0).await.unwrap()).await;
            end.unwrap();
            assert_eq!(row_numbers(&chunks, 7000), (7000..7500).collect::<Vec<_>>());
            assert_eq!(server.health().await, ServingStatus::Serving as i32);
        }
    }
    assert!(server.alive(), "the server died");
}

#[tokio::test]
async fn truncation_in_place_does_not_kill_the_server() {
    in_place_write_under_live_streams(InPlace::Truncate).await;
}

#[tokio::test]
async fn cp_over_the_served_file_does_not_kill_the_server() {
    in_place_write_under_live_streams(InPlace::CopyOver).await;
}

#[tokio::test]
async fn overwriting_bytes_in_place_does_not_kill_the_server() {
    in_place_write_under_live_streams(InPlace::Overwrite).await;
}

#[tokio::test]
async fn overwriting_cached_string_offsets_does_not_kill_the_server() {
    in_place_write_under_live_streams(InPlace::Offsets).await;
}

#[tokio::test]
async fn sighup_reloads_and_does_not_kill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.arrow");
    common::write_sample_rows(&path, 0..300, DIM, 100, &[]);
    let mut server = ChildServer::start(dir.path(), &path);
    server.sighup();
    server.wait_log("SIGHUP: reloading", 1);
    let line = server.wait_log("serving generation 2", 1);
    assert!(line.contains("trigger=\"SIGHUP\""), "{line}");
    assert!(server.alive());
    let ch = server.channel().await;
    assert_eq!(generation_json(&ch).await["generation"], 2);
    let (chunks, end) = drain(&mut open_stream(&ch, 0).await.unwrap()).await;
    end.unwrap();
    assert_eq!(row_numbers(&chunks, 0), (0..300).collect::<Vec<_>>());

    // Deleting the served path keeps the current generation serving; a
    // SIGHUP then is refused with the reason and does not kill either.
    std::fs::remove_file(&path).unwrap();
    server.sighup();
    let line = server.wait_log("replacement refused", 1);
    assert!(line.contains("no such file"), "{line}");
    let (chunks, end) = drain(&mut open_stream(&ch, 0).await.unwrap()).await;
    end.unwrap();
    assert_eq!(row_numbers(&chunks, 0), (0..300).collect::<Vec<_>>());
    assert!(server.alive());
}

/// One SIGHUP handler: it re-reads the bearer-token file and the data file.
#[tokio::test]
async fn one_sighup_reloads_tokens_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.arrow");
    common::write_sample_rows(&path, 0..300, DIM, 100, &[]);
    let tokens = dir.path().join("tokens.txt");
    std::fs::write(&tokens, "old-token\n").unwrap();
    let mut server = ChildServer::start_with(
        dir.path(),
        &path,
        &[("EMBEDSTREAM_AUTH_TOKEN_FILE", tokens.to_str().unwrap())],
    );
    let ch = server.channel().await;
    let call = |token: &'static str| {
        let ch = ch.clone();
        async move {
            let mut request = tonic::Request::new(StreamEmbeddingRequest {
                last_processed_uuid: String::new(),
                chunk_size: 0,
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let mut client =
                EmbeddingStreamServiceClient::new(ch).max_decoding_message_size(usize::MAX);
            match client.stream_embedding(request).await {
                Ok(response) => drain(&mut response.into_inner()).await.1.map(|_| ()),
                Err(status) => Err(status),
            }
        }
    };
    call("old-token").await.unwrap();
    std::fs::write(&tokens, "# rotated\nnew-token\n").unwrap();
    server.sighup();
    let line = server.wait_log("SIGHUP: bearer tokens reloaded", 1);
    assert!(line.contains("tokens=1"), "{line}");
    assert!(!line.contains("new-token"), "a token was logged: {line}");
    let line = server.wait_log("serving generation 2", 1);
    assert!(line.contains("trigger=\"SIGHUP\""), "{line}");
    call("new-token").await.unwrap();
    let refused = call("old-token").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(server.alive());
}

#[tokio::test]
async fn stalled_clients_read_a_private_copy_after_the_deadline() {
    use arrow_array::{cast::AsArray, Array};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.arrow");
    // Batches of 1.3 MB: a stalled Flight client leaves one partly sent,
    // queued in h2 as a view of the map.
    common::write_sample_rows(&path, LIVE_ROWS, DIM, 5000, &[]);
    let mut server = ChildServer::start_with(
        dir.path(),
        &path,
        &[(embedstream::serve::reload::REVOKE_DEADLINE_ENV, "2s")],
    );
    // One StreamEmbedding and one Flight client read a little, then stall:
    // the server keeps their streams (and Flight's queued batch bodies, views
    // of the map) alive.
    let ch = server.channel().await;
    let mut stream = open_stream(&ch, 10).await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    let mut flight_client = FlightClient::new(server.channel().await);
    let mut flight = flight_client.do_get(Ticket::new("all")).await.unwrap();
    let mut batches = vec![flight.next().await.unwrap().unwrap()];

    let target = path.clone();
    let writer = std::thread::spawn(move || {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len / 2).unwrap();
    });
    server.wait_log("still held at the deadline", 1);
    server.wait_log("lease released", 1);
    writer.join().unwrap();
    assert!(server.alive(), "the server died");

    // The file is now half its size; what the stalled clients get next comes
    // from the private copy: intact rows, then UNAVAILABLE.
    let (rest, end) = drain(&mut stream).await;
    let status = end.expect_err("the stalled stream must be cut");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let mut chunks = vec![first];
    chunks.extend(rest);
    assert!(row_numbers(&chunks, 0).len() < LIVE_ROWS.len());
    // Flight may have handed its last batch to h2 before the write: then it
    // ends cleanly with every row (read from the copy), else it is cut.
    let cut = loop {
        match flight.next().await {
            Some(Ok(batch)) => batches.push(batch),
            Some(Err(arrow_flight::error::FlightError::Tonic(status))) => break Some(status),
            None => break None,
            other => panic!("unexpected {other:?}"),
        }
    };
    let mut row = 0;
    for batch in &batches {
        let keys = batch.column_by_name("uuid").unwrap().as_fixed_size_binary();
        for i in 0..keys.len() {
            assert_eq!(keys.value(i), common::key_for_row(row), "Flight row {row}");
            row += 1;
        }
    }
    match cut {
        Some(status) => {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(
                row >= 5000 && row < LIVE_ROWS.len(),
                "{row} rows over Flight"
            );
        }
        None => assert_eq!(row, LIVE_ROWS.len()),
    }
    assert!(server.alive(), "the server died");
}

//! Deployment features of `embedstream serve`, in-process on port 0:
//! TLS and mutual TLS with certificates made here (rcgen), bearer tokens on
//! every data RPC (health open, reflection by flag, reload), the
//! Prometheus endpoint's values after known streams, the start-up
//! refusals of bad files, each with its message, and `upload` to a TLS
//! receiver that checks a token.

use crate::common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use embedstream::{
    client::{
        health::{check, check_with, HealthError},
        secure::{SecureClient, SecureClientArgs},
        stream::{pull, StreamError, StreamOptions},
    },
    progress::ProgressMode,
    proto::{
        embedding_stream_service_client::EmbeddingStreamServiceClient, StreamEmbeddingRequest,
    },
    serve::{secure::SecureArgs, tls::ServeTlsArgs, Server, ServerConfig},
};
use futures::TryStreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{transport::Channel, Code};

const ROWS: usize = 500;
const DIM: usize = 4;

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "embedstream test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();

        let leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf(
            "server",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        leaf("client", vec![], ExtendedKeyUsagePurpose::ClientAuth);
        // A key that belongs to no certificate here.
        std::fs::write(
            dir.path().join("other.key"),
            KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server_tls(&self, mutual: bool) -> ServeTlsArgs {
        ServeTlsArgs {
            tls_cert: Some(self.path("server.pem")),
            tls_key: Some(self.path("server.key")),
            tls_client_ca: mutual.then(|| self.path("ca.pem")),
        }
    }

    fn client(&self, with_cert: bool) -> SecureClient {
        SecureClient::from_args(&SecureClientArgs {
            tls_ca: Some(self.path("ca.pem")),
            tls_cert: with_cert.then(|| self.path("client.pem")),
            tls_key: with_cert.then(|| self.path("client.key")),
            ..SecureClientArgs::default()
        })
        .unwrap()
    }
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn serve(secure: SecureArgs) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.arrow");
    common::write_sample_file(&path, ROWS, DIM, 64);
    let mut config = ServerConfig::new(&path, local());
    config.secure = secure;
    let server = Server::spawn(config).await.unwrap();
    (dir, server)
}

fn options(server: String, secure: SecureClient, flight: bool) -> StreamOptions {
    StreamOptions {
        server,
        checkpoint: None,
        chunk_size: 100,
        out: None,
        force: false,
        flight,
        progress: ProgressMode::Hidden,
        timeouts: Default::default(),
        secure,
    }
}

fn rpc_code(err: StreamError) -> Code {
    match err {
        StreamError::Rpc { code, .. } => code,
        other => panic!("not an RPC failure: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_stream_flight_and_health() {
    let pki = Pki::new();
    let (_dir, server) = serve(SecureArgs {
        tls: pki.server_tls(false),
        ..SecureArgs::default()
    })
    .await;
    let port = server.local_addr().port();
    for addr in [
        format!("localhost:{port}"),
        format!("https://127.0.0.1:{port}"),
    ] {
        let report = pull(&options(addr.clone(), pki.client(false), false))
            .await
            .unwrap();
        assert_eq!(report.rows, ROWS, "{addr}");
        assert_eq!(report.chunks, 5, "{addr}");
    }
    // Flight DoGet (answered below tonic's codec) over TLS, whole and resumed.
    let addr = format!("localhost:{port}");
    let report = pull(&options(addr.clone(), pki.client(false), true))
        .await
        .unwrap();
    assert_eq!(report.rows, ROWS);
    let mut resumed = options(addr.clone(), pki.client(false), true);
    resumed.checkpoint = Some(embedstream::format::format_uuid(&common::key_for_row(99)));
    assert_eq!(pull(&resumed).await.unwrap().rows, ROWS - 100);

    check_with(&pki.client(false), &addr, "", Duration::from_secs(10))
        .await
        .unwrap();
    // A plaintext client gets no answer from a TLS port.
    let err = check(&addr, "", Duration::from_secs(10)).await.unwrap_err();
    // (the TLS alert reaches the client's HTTP/2 parser or the connection
    // closes first: either way no answer)
    assert!(
        matches!(
            err,
            HealthError::Unreachable { .. } | HealthError::Failed { .. }
        ),
        "plaintext against TLS: {err}"
    );
    // A client that does not trust the server's CA refuses it.
    let untrusted = Pki::new();
    let err = check_with(&untrusted.client(false), &addr, "", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("certificate"),
        "untrusted CA: {err}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let (_dir, server) = serve(SecureArgs {
        tls: pki.server_tls(true),
        ..SecureArgs::default()
    })
    .await;
    let addr = format!("localhost:{}", server.local_addr().port());

    let err = pull(&options(addr.clone(), pki.client(false), false))
        .await
        .unwrap_err();
    // The handshake fails (TLS 1.3: the client learns it at its first
    // read), so the call ends as a transport failure before any row.
    match err {
        StreamError::Rpc { rows, code, .. } => {
            assert_eq!(rows, 0);
            assert!(
                matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled),
                "no client certificate: {code:?}"
            );
        }
        other => panic!("not an RPC failure: {other}"),
    }
    let err = check_with(&pki.client(false), &addr, "", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        !matches!(err, HealthError::NotServing { .. }),
        "no client certificate must not reach the service: {err}"
    );

    // A certificate from another CA is refused too.
    let other = Pki::new();
    let stranger = SecureClient::from_args(&SecureClientArgs {
        tls_ca: Some(pki.path("ca.pem")),
        tls_cert: Some(other.path("client.pem")),
        tls_key: Some(other.path("client.key")),
        ..SecureClientArgs::default()
    })
    .unwrap();
    assert!(pull(&options(addr.clone(), stranger, false)).await.is_err());

    let report = pull(&options(addr.clone(), pki.client(true), false))
        .await
        .unwrap();
    assert_eq!(report.rows, ROWS);
    let report = pull(&options(addr.clone(), pki.client(true), true))
        .await
        .unwrap();
    assert_eq!(report.rows, ROWS);
    check_with(&pki.client(true), &addr, "", Duration::from_secs(10))
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

fn token_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tokens.txt");
    std::fs::write(&path, text).unwrap();
    path
}

async fn plain_channel(server: &Server) -> Channel {
    Channel::from_shared(format!("http://{}", server.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Every data RPC of the server, called with `token` (or none): the codes.
async fn data_rpc_codes(server: &Server, token: Option<&str>) -> BTreeMap<&'static str, Code> {
    let channel = plain_channel(server).await;
    let mut secure = SecureClient::plaintext();
    if let Some(t) = token {
        secure = secure.with_token(t).unwrap();
    }
    let mut codes = BTreeMap::new();
    let code = |r: Result<(), tonic::Status>| r.map_or_else(|s| s.code(), |()| Code::Ok);

    let mut stream =
        EmbeddingStreamServiceClient::with_interceptor(channel.clone(), secure.interceptor());
    let r = stream
        .stream_embedding(StreamEmbeddingRequest {
            last_processed_uuid: String::new(),
            chunk_size: 10,
        })
        .await
        .map(|_| ());
    codes.insert("StreamEmbedding", code(r));
    // The alias package, through a raw call on its path.
    let mut grpc = tonic::client::Grpc::new(tonic::service::interceptor::InterceptedService::new(
        channel.clone(),
        secure.interceptor(),
    ));
    grpc.ready().await.unwrap();
    let r = grpc
        .server_streaming(
            tonic::Request::new(StreamEmbeddingRequest {
                last_processed_uuid: String::new(),
                chunk_size: 10,
            }),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/com.alpha.backend.grpc.EmbeddingStreamService/StreamEmbedding",
            ),
            tonic_prost::ProstCodec::<StreamEmbeddingRequest, embedstream::proto::RowChunk>::default(),
        )
        .await
        .map(|_| ());
    codes.insert("alias StreamEmbedding", code(r));

    let mut flight = FlightClient::new(channel.clone());
    if let Some(t) = token {
        flight
            .add_header("authorization", &format!("Bearer {t}"))
            .unwrap();
    }
    let flight_code = |r: Result<(), arrow_flight::error::FlightError>| match r {
        Ok(()) => Code::Ok,
        Err(arrow_flight::error::FlightError::Tonic(s)) => s.code(),
        Err(other) => panic!("{other}"),
    };
    let descriptor = FlightDescriptor::new_path(vec!["sample".into()]);
    let r = match flight.do_get(Ticket::new("all")).await {
        Ok(s) => s.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    codes.insert("DoGet", flight_code(r));
    let r = flight.get_flight_info(descriptor.clone()).await.map(|_| ());
    codes.insert("GetFlightInfo", flight_code(r));
    let r = flight.get_schema(descriptor.clone()).await.map(|_| ());
    codes.insert("GetSchema", flight_code(r));
    let r = match flight.list_flights("").await {
        Ok(s) => s.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    codes.insert("ListFlights", flight_code(r));
    let r = match flight.list_actions().await {
        Ok(s) => s.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    codes.insert("ListActions", flight_code(r));
    codes
}

async fn reflection_code(server: &Server) -> Code {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(plain_channel(server).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    match reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
    {
        Ok(response) => match response.into_inner().try_collect::<Vec<_>>().await {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        },
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_every_data_rpc_and_health_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(
        dir.path(),
        "# rotation: old and new\nold-token\n\nnew-token\n",
    );
    let (_data, server) = serve(SecureArgs {
        auth_token_file: Some(tokens.clone()),
        ..SecureArgs::default()
    })
    .await;

    for token in [None, Some("wrong"), Some("old-token-x"), Some("old")] {
        let codes = data_rpc_codes(&server, token).await;
        assert_eq!(codes.len(), 7);
        for (rpc, code) in codes {
            assert_eq!(code, Code::Unauthenticated, "{rpc} with {token:?}");
        }
    }
    for token in ["old-token", "new-token"] {
        let codes = data_rpc_codes(&server, Some(token)).await;
        for (rpc, code) in &codes {
            assert_eq!(*code, Code::Ok, "{rpc} with {token}");
        }
    }
    // The refusal says what to send, and never echoes a token.
    let status = EmbeddingStreamServiceClient::new(plain_channel(&server).await)
        .stream_embedding(StreamEmbeddingRequest::default())
        .await
        .unwrap_err();
    assert!(
        status
            .message()
            .starts_with("this server requires `authorization: Bearer <token>` metadata"),
        "{}",
        status.message()
    );

    // Health and reflection answer without a token.
    check(
        &server.local_addr().to_string(),
        "",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(reflection_code(&server).await, Code::Ok);

    // The embedstream clients send the token.
    let addr = server.local_addr().to_string();
    let with = SecureClient::plaintext().with_token("new-token").unwrap();
    assert_eq!(
        pull(&options(addr.clone(), with.clone(), false))
            .await
            .unwrap()
            .rows,
        ROWS
    );
    assert_eq!(
        pull(&options(addr.clone(), with, true)).await.unwrap().rows,
        ROWS
    );
    let err = pull(&options(addr.clone(), SecureClient::plaintext(), true))
        .await
        .unwrap_err();
    assert_eq!(rpc_code(err), Code::Unauthenticated);

    // A reload (what the server's one SIGHUP handler calls, tested with a
    // child server in `hot_swap::one_sighup_reloads_tokens_and_data`; a
    // SIGHUP to this process would reload every in-process test server's
    // data) re-reads the file: the removed token stops working.
    std::fs::write(&tokens, "rotated\n").unwrap();
    embedstream::serve::auth::log_reload(server.token_store().unwrap());
    assert_eq!(
        data_rpc_codes(&server, Some("rotated")).await["StreamEmbedding"],
        Code::Ok
    );
    assert_eq!(
        data_rpc_codes(&server, Some("old-token")).await["StreamEmbedding"],
        Code::Unauthenticated
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_require_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), "t0k\n");
    let (_data, server) = serve(SecureArgs {
        auth_token_file: Some(tokens.clone()),
        reflection_requires_token: true,
        ..SecureArgs::default()
    })
    .await;
    assert_eq!(reflection_code(&server).await, Code::Unauthenticated);
    // The hook a server-wide SIGHUP handler calls.
    std::fs::write(&tokens, "a\nb\n").unwrap();
    assert_eq!(server.token_store().unwrap().reload().unwrap(), 2);
    assert_eq!(
        data_rpc_codes(&server, Some("b")).await["StreamEmbedding"],
        Code::Ok
    );
    check(
        &server.local_addr().to_string(),
        "",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

/// GET /metrics over plain HTTP/1.1; the body.
async fn scrape(addr: SocketAddr) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    body.to_string()
}

/// The value of sample `name` whose labels include all of `labels`
/// (exactly one such sample must exist), or None.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let have: Vec<(&str, &str)> = label_text
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k, v.trim_matches('"'))
            })
            .collect();
        if labels.iter().all(|l| have.contains(l)) {
            assert!(found.is_none(), "{name} {labels:?} matches several samples");
            found = Some(value.parse::<f64>().unwrap());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_streams() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), "m3trics\n");
    let (_data, server) = serve(SecureArgs {
        auth_token_file: Some(tokens),
        metrics_addr: Some(local()),
        ..SecureArgs::default()
    })
    .await;
    let metrics = server.metrics_addr().expect("metrics endpoint");
    let addr = server.local_addr().to_string();
    let rows = |text: &str, rpc: &str| {
        sample(text, "embedstream_rows_sent_total", &[("rpc", rpc)]).unwrap_or(0.0)
    };

    let before = scrape(metrics).await;
    assert_eq!(rows(&before, "StreamEmbedding"), 0.0);
    assert_eq!(
        sample(&before, "embedstream_file_rows", &[]),
        Some(ROWS as f64)
    );
    assert_eq!(
        sample(&before, "embedstream_file_generation", &[]),
        Some(1.0)
    );
    assert!(sample(&before, "embedstream_file_bytes", &[]).unwrap() > 0.0);
    assert_eq!(
        sample(
            &before,
            "embedstream_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(sample(&before, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(before.contains("# TYPE embedstream_rows_sent_total counter"));
    assert!(before.contains("# TYPE embedstream_resume_first_message_seconds histogram"));
    assert!(before.contains("# HELP embedstream_streams_active "));

    let secure = SecureClient::plaintext().with_token("m3trics").unwrap();
    // A whole stream, then a resume after row 199: exactly 500 + 300 rows.
    let full = pull(&options(addr.clone(), secure.clone(), false))
        .await
        .unwrap();
    let mut resume = options(addr.clone(), secure.clone(), false);
    resume.checkpoint = Some(embedstream::format::format_uuid(&common::key_for_row(199)));
    let resumed = pull(&resume).await.unwrap();
    assert_eq!((full.rows, resumed.rows), (ROWS, ROWS - 200));
    let flight = pull(&options(addr.clone(), secure.clone(), true))
        .await
        .unwrap();
    let mut flight_resume = options(addr.clone(), secure.clone(), true);
    flight_resume.checkpoint = Some(embedstream::format::format_uuid(&common::key_for_row(99)));
    let flight_resumed = pull(&flight_resume).await.unwrap();
    // Refusals: no token, and a chunk size out of range.
    let unauthenticated = pull(&options(addr.clone(), SecureClient::plaintext(), false))
        .await
        .unwrap_err();
    assert_eq!(rpc_code(unauthenticated), Code::Unauthenticated);
    let mut too_big = options(addr.clone(), secure.clone(), false);
    too_big.chunk_size = i32::MAX as u32;
    assert_eq!(
        rpc_code(pull(&too_big).await.unwrap_err()),
        Code::InvalidArgument
    );

    let after = scrape(metrics).await;
    assert_eq!(
        rows(&after, "StreamEmbedding") - rows(&before, "StreamEmbedding"),
        (full.rows + resumed.rows) as f64
    );
    assert_eq!(
        rows(&after, "DoGet") - rows(&before, "DoGet"),
        (flight.rows + flight_resumed.rows) as f64
    );
    let finished = |rpc: &str, code: &str| {
        sample(
            &after,
            "embedstream_streams_finished_total",
            &[("rpc", rpc), ("code", code)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(finished("StreamEmbedding", "OK"), 2.0);
    assert_eq!(finished("StreamEmbedding", "INVALID_ARGUMENT"), 1.0);
    assert_eq!(finished("DoGet", "OK"), 2.0);
    assert_eq!(
        sample(
            &after,
            "embedstream_streams_started_total",
            &[("rpc", "StreamEmbedding")]
        ),
        Some(3.0),
        "the unauthenticated call is not a stream"
    );
    assert_eq!(
        sample(
            &after,
            "embedstream_streams_active",
            &[("rpc", "StreamEmbedding")]
        ),
        Some(0.0)
    );
    let refused = |code: &str| {
        sample(
            &after,
            "embedstream_requests_refused_total",
            &[("code", code)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(refused("UNAUTHENTICATED"), 1.0);
    assert_eq!(refused("INVALID_ARGUMENT"), 1.0);
    for rpc in ["StreamEmbedding", "DoGet"] {
        assert_eq!(
            sample(
                &after,
                "embedstream_resume_first_message_seconds_count",
                &[("rpc", rpc)]
            ),
            Some(1.0),
            "{rpc}: one resume"
        );
        assert!(
            sample(&after, "embedstream_bytes_sent_total", &[("rpc", rpc)]).unwrap()
                > (ROWS * DIM * 4) as f64,
            "{rpc} bytes"
        );
    }
    server.shutdown().await.unwrap();
}

/// Under TLS the transport wraps the peer address in `TlsConnectInfo`: the
/// connection registry must still find it, or a busy connection would be
/// taken for an idle one (and a stalled stream's connection never closed).
#[tokio::test]
async fn tls_connections_are_tracked_idle_closed_busy_kept() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.arrow");
    common::write_sample_file(&path, 20_000, 64, 1000);
    let mut config = ServerConfig::new(&path, local());
    config.secure = SecureArgs {
        tls: pki.server_tls(false),
        ..SecureArgs::default()
    };
    config.limits.idle_connection_timeout = Duration::from_millis(300);
    let server = Server::spawn(config).await.unwrap();
    let addr = format!("localhost:{}", server.local_addr().port());
    let tls_client = || async {
        let channel = pki
            .client(false)
            .endpoint(&addr)
            .unwrap()
            .connect()
            .await
            .unwrap();
        EmbeddingStreamServiceClient::new(channel).max_decoding_message_size(usize::MAX)
    };
    let request = |chunk_size| StreamEmbeddingRequest {
        last_processed_uuid: String::new(),
        chunk_size,
    };
    // A connection with a stream open (not being read) is busy.
    let mut busy = tls_client().await;
    let mut held = busy
        .stream_embedding(request(1))
        .await
        .unwrap()
        .into_inner();
    // Another finishes its call and falls idle.
    let mut idle = tls_client().await;
    let mut s = idle
        .stream_embedding(request(0))
        .await
        .unwrap()
        .into_inner();
    let mut rows = 0;
    while let Some(chunk) = s.message().await.unwrap() {
        rows += chunk.rows.len();
    }
    assert_eq!(rows, 20_000);
    drop(s);
    crate::serve_e2e::eventually("the idle TLS connection is closed", || {
        server.open_connections() == 1
    })
    .await;
    // The busy one is still served.
    assert_eq!(held.message().await.unwrap().unwrap().rows.len(), 1);
    assert_eq!(server.open_connections(), 1);
    drop(held);
    server.shutdown().await.unwrap();
}

/// A refusal by main's concurrency limit (`--max-concurrent-streams`) is
/// answered by the service, trailers-only, behind the guard: it counts.
#[tokio::test]
async fn metrics_count_concurrency_limit_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.arrow");
    common::write_sample_file(&path, 20_000, 64, 1000);
    let mut config = ServerConfig::new(&path, local());
    config.secure = SecureArgs {
        metrics_addr: Some(local()),
        ..SecureArgs::default()
    };
    config.limits.max_concurrent_streams = 1;
    let server = Server::spawn(config).await.unwrap();
    let metrics = server.metrics_addr().unwrap();
    let refused = |text: &str| {
        sample(
            text,
            "embedstream_requests_refused_total",
            &[("code", "RESOURCE_EXHAUSTED")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(refused(&scrape(metrics).await), 0.0);
    let request = || StreamEmbeddingRequest {
        last_processed_uuid: String::new(),
        chunk_size: 1,
    };
    // One stream holds the only place (not read past its first chunk).
    let mut held = EmbeddingStreamServiceClient::new(plain_channel(&server).await)
        .stream_embedding(request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.message().await.unwrap().unwrap().rows.len(), 1);
    let status = EmbeddingStreamServiceClient::new(plain_channel(&server).await)
        .stream_embedding(request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(refused(&scrape(metrics).await), 1.0);
    drop(held);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_generation_follows_replace() {
    let (dir, server) = serve(SecureArgs {
        metrics_addr: Some(local()),
        ..SecureArgs::default()
    })
    .await;
    let other = dir.path().join("other.arrow");
    // The gauge reads the served Dataset's generation: here the file's
    // `embedstream.generation` metadata (the first file's is the load count, 1).
    common::write_sample_rows(
        &other,
        0..7,
        DIM,
        3,
        &[(embedstream::format::META_GENERATION, "5")],
    );
    let dataset = embedstream::dataset::Dataset::open(&other, &Default::default()).unwrap();
    server.dataset().replace(std::sync::Arc::new(dataset));
    let text = scrape(server.metrics_addr().unwrap()).await;
    assert_eq!(sample(&text, "embedstream_file_generation", &[]), Some(5.0));
    let mut conn = tokio::net::TcpStream::connect(server.metrics_addr().unwrap())
        .await
        .unwrap();
    conn.write_all(b"GET /other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert_eq!(sample(&text, "embedstream_file_rows", &[]), Some(7.0));
}

async fn refusal(secure: SecureArgs) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.arrow");
    common::write_sample_file(&path, 10, DIM, 5);
    let mut config = ServerConfig::new(&path, local());
    config.secure = secure;
    Server::spawn(config).await.unwrap_err().to_string()
}

#[tokio::test]
async fn startup_refusals_name_the_file() {
    let pki = Pki::new();
    let missing = pki.path("missing.pem");
    let err = refusal(SecureArgs {
        tls: ServeTlsArgs {
            tls_cert: Some(missing.clone()),
            ..pki.server_tls(false)
        },
        ..SecureArgs::default()
    })
    .await;
    assert!(
        err.starts_with(&format!(
            "--tls-cert {}: cannot read it: ",
            missing.display()
        )),
        "{err}"
    );

    let bad = pki.path("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = refusal(SecureArgs {
        tls: ServeTlsArgs {
            tls_cert: Some(bad.clone()),
            ..pki.server_tls(false)
        },
        ..SecureArgs::default()
    })
    .await;
    assert!(
        err.starts_with(&format!(
            "--tls-cert {}: not a PEM certificate file: ",
            bad.display()
        )),
        "{err}"
    );

    let err = refusal(SecureArgs {
        tls: ServeTlsArgs {
            tls_key: Some(pki.path("other.key")),
            ..pki.server_tls(false)
        },
        ..SecureArgs::default()
    })
    .await;
    assert!(
        err.starts_with(&format!(
            "--tls-key {} does not match the certificate in --tls-cert {}: ",
            pki.path("other.key").display(),
            pki.path("server.pem").display()
        )),
        "{err}"
    );

    let err = refusal(SecureArgs {
        tls: ServeTlsArgs {
            tls_key: Some(pki.path("server.pem")),
            ..pki.server_tls(false)
        },
        ..SecureArgs::default()
    })
    .await;
    assert!(
        err.starts_with(&format!(
            "--tls-key {}: not a PEM private key: ",
            pki.path("server.pem").display()
        )),
        "{err}"
    );

    let err = refusal(SecureArgs {
        tls: ServeTlsArgs {
            tls_client_ca: Some(pki.path("server.key")),
            ..pki.server_tls(true)
        },
        ..SecureArgs::default()
    })
    .await;
    assert!(
        err.starts_with(&format!(
            "--tls-client-ca {}: not a PEM certificate file: it holds no certificate",
            pki.path("server.key").display()
        )),
        "{err}"
    );

    let empty = token_file(pki.dir.path(), "# nothing yet\n\n");
    let err = refusal(SecureArgs {
        auth_token_file: Some(empty.clone()),
        ..SecureArgs::default()
    })
    .await;
    assert_eq!(
        err,
        format!(
            "--auth-token-file {}: holds no token (one per line; blank lines and # comments are ignored)",
            empty.display()
        )
    );
    let err = refusal(SecureArgs {
        auth_token_file: Some(missing.clone()),
        ..SecureArgs::default()
    })
    .await;
    assert!(
        err.starts_with(&format!(
            "--auth-token-file {}: cannot read it: ",
            missing.display()
        )),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = refusal(SecureArgs {
        metrics_addr: Some(addr),
        ..SecureArgs::default()
    })
    .await;
    assert!(
        err.starts_with(&format!("--metrics-addr {addr}: cannot listen: ")),
        "{err}"
    );
}

/// The flags reach the binary from the environment, and the CLI clients
/// speak TLS with a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_flags_and_environment() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sample.arrow");
    common::write_sample_file(&data, 10, DIM, 5);
    let missing = pki.path("missing.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .args(["serve", "--port", "0", "--data"])
        .arg(&data)
        .env("EMBEDSTREAM_TLS_CERT", &missing)
        .env("EMBEDSTREAM_TLS_KEY", pki.path("server.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: --tls-cert {}: cannot read it",
            missing.display()
        )),
        "{stderr}"
    );

    let tokens = token_file(dir.path(), "cl1\n");
    let (_data, server) = serve(SecureArgs {
        tls: pki.server_tls(true),
        auth_token_file: Some(tokens.clone()),
        ..SecureArgs::default()
    })
    .await;
    let port = server.local_addr().port();
    let run = |args: Vec<String>, envs: Vec<(&'static str, PathBuf)>| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_embedstream"))
                .args(&args)
                .envs(envs)
                .env_remove("EMBEDSTREAM_TOKEN")
                .output()
                .unwrap()
        })
    };
    let out = run(
        vec![
            "stream".into(),
            "--server".into(),
            format!("localhost:{port}"),
            "--tls-ca".into(),
            pki.path("ca.pem").display().to_string(),
            "--tls-cert".into(),
            pki.path("client.pem").display().to_string(),
            "--tls-key".into(),
            pki.path("client.key").display().to_string(),
            "--token-file".into(),
            tokens.display().to_string(),
        ],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{ROWS} rows in ")));

    // health from the environment, dialing 127.0.0.1 with the name checked as localhost.
    let out = run(
        vec![
            "health".into(),
            "--server".into(),
            format!("127.0.0.1:{port}"),
            "--tls-server-name".into(),
            "localhost".into(),
        ],
        vec![
            ("EMBEDSTREAM_TLS_CA", pki.path("ca.pem")),
            ("EMBEDSTREAM_TLS_CLIENT_CERT", pki.path("client.pem")),
            ("EMBEDSTREAM_TLS_CLIENT_KEY", pki.path("client.key")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the token the stream is refused, and says why.
    let out = run(
        vec![
            "stream".into(),
            "--server".into(),
            format!("localhost:{port}"),
        ],
        vec![
            ("EMBEDSTREAM_TLS_CA", pki.path("ca.pem")),
            ("EMBEDSTREAM_TLS_CLIENT_CERT", pki.path("client.pem")),
            ("EMBEDSTREAM_TLS_CLIENT_KEY", pki.path("client.key")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    server.shutdown().await.unwrap();
}

/// A Batch Server stand-in for `upload`: TLS, and a token checked by an
/// interceptor; counts the data chunks it receives.
#[derive(Clone, Default)]
struct TlsReceiver {
    chunks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl embedstream::proto::embedding_stream_service_server::EmbeddingStreamService for TlsReceiver {
    type StreamEmbeddingStream =
        futures::stream::Empty<Result<embedstream::proto::RowChunk, tonic::Status>>;

    async fn stream_embedding(
        &self,
        _request: tonic::Request<StreamEmbeddingRequest>,
    ) -> Result<tonic::Response<Self::StreamEmbeddingStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("receiver only"))
    }

    async fn ingest_data_stream(
        &self,
        request: tonic::Request<tonic::Streaming<embedstream::proto::IngestDataRequest>>,
    ) -> Result<tonic::Response<embedstream::proto::IngestDataResponse>, tonic::Status> {
        let mut stream = request.into_inner();
        let mut chunks = 0;
        while let Some(message) = stream.message().await? {
            if let Some(embedstream::proto::ingest_data_request::RequestType::DataChunk(_)) =
                message.request_type
            {
                chunks += 1;
            }
        }
        self.chunks
            .fetch_add(chunks, std::sync::atomic::Ordering::SeqCst);
        Ok(tonic::Response::new(
            embedstream::proto::IngestDataResponse {
                success: true,
                received_chunks: chunks as i32,
                message: "stored".into(),
            },
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_over_tls_with_a_token() {
    use embedstream::client::upload::{upload, UploadError, UploadOptions};
    use embedstream::proto::embedding_stream_service_server::EmbeddingStreamServiceServer;

    let pki = Pki::new();
    let receiver = TlsReceiver::default();
    let service = EmbeddingStreamServiceServer::with_interceptor(
        receiver.clone(),
        |request: tonic::Request<()>| match request.metadata().get("authorization") {
            Some(v) if v == "Bearer up-token" => Ok(request),
            _ => Err(tonic::Status::unauthenticated("no token")),
        },
    );
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(pki.path("server.pem")).unwrap(),
        std::fs::read(pki.path("server.key")).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind(local()).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sample.arrow");
    common::write_sample_file(&file, 50, DIM, 8);
    let options = |secure: SecureClient| UploadOptions {
        file: file.clone(),
        to: format!("localhost:{port}"),
        domain: "recruit".into(),
        chunk_size: 7,
        max_attempts: 1,
        service_package: "embedding".into(),
        key_column: None,
        mapping: Default::default(),
        initial_backoff: Duration::from_millis(10),
        progress: ProgressMode::Hidden,
        timeouts: Default::default(),
        secure,
    };
    let report = upload(&options(pki.client(false).with_token("up-token").unwrap()))
        .await
        .unwrap();
    assert_eq!(report.rows, 50);
    assert_eq!(receiver.chunks.load(std::sync::atomic::Ordering::SeqCst), 8);
    let err = upload(&options(pki.client(false))).await.unwrap_err();
    assert!(
        matches!(
            &err,
            UploadError::Rejected {
                code: Code::Unauthenticated,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("check --token-file or EMBEDSTREAM_TOKEN"),
        "{err}"
    );
}

/// A rustls client that offers `suites` in this order, trusting `pki`'s CA.
fn suite_client(pki: &Pki, suites: &[rustls::CipherSuite]) -> tokio_rustls::TlsConnector {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = suites
        .iter()
        .map(|want| {
            *provider
                .cipher_suites
                .iter()
                .find(|s| s.suite() == *want)
                .expect("a ring suite")
        })
        .collect();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(pki.path("ca.pem")).unwrap();
    for cert in
        <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(&pem)
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_picks_aes_128_gcm_whatever_the_client_prefers() {
    use rustls::CipherSuite::{
        TLS13_AES_128_GCM_SHA256 as AES_128, TLS13_AES_256_GCM_SHA384 as AES_256,
        TLS13_CHACHA20_POLY1305_SHA256 as CHACHA,
    };
    let pki = Pki::new();
    let (_dir, server) = serve(SecureArgs {
        tls: pki.server_tls(false),
        ..SecureArgs::default()
    })
    .await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    // (suites the client offers, in its order; the suite the server picks)
    for (offer, picked) in [
        (vec![AES_256, AES_128, CHACHA], AES_128),
        (vec![CHACHA, AES_128], AES_128),
        (vec![AES_256, CHACHA], AES_256),
        (vec![CHACHA], CHACHA),
    ] {
        let tcp = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        let tls = suite_client(&pki, &offer)
            .connect(name.clone(), tcp)
            .await
            .unwrap_or_else(|e| panic!("offering {offer:?}: {e}"));
        let (_, session) = tls.get_ref();
        assert_eq!(
            session.negotiated_cipher_suite().map(|s| s.suite()),
            Some(picked),
            "offering {offer:?}"
        );
        assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_closed_after_the_handshake_timeout() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.arrow");
    common::write_sample_file(&path, ROWS, DIM, 64);
    let mut config = ServerConfig::new(&path, local());
    config.secure = SecureArgs {
        tls: pki.server_tls(false),
        ..SecureArgs::default()
    };
    config.limits.handshake_timeout = Duration::from_millis(200);
    let server = Server::spawn(config).await.unwrap();
    // The first bytes of a TLS record header, then silence: the TLS
    // handshake never completes, and the server closes the connection
    // without a byte.
    let mut stalled = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end(&mut got))
        .await
        .expect("the server closes the connection");
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{closed:?}"
    );
    assert!(got.is_empty(), "{got:?}");
    // A real client is served.
    let addr = format!("localhost:{}", server.local_addr().port());
    let report = pull(&options(addr, pki.client(false), false))
        .await
        .unwrap();
    assert_eq!(report.rows, ROWS);
    server.shutdown().await.unwrap();
}

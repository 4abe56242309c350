//! `embedstream health`: the binary's exit code and one-line reason against
//! an in-process `serve`, a closed port, a health server that reports
//! NOT_SERVING, and a peer that accepts but never answers.

use crate::common;

use std::{
    net::SocketAddr,
    process::{Command, Output},
    time::Duration,
};

use embedstream::{
    client::health::{check, HealthError},
    serve::{Server, ServerConfig},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

/// Run the binary off the runtime's threads, so in-process servers keep answering.
async fn health(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_embedstream"))
            .arg("health")
            .args(&args)
            .env_remove("GRPC_PORT")
            .output()
            .expect("run the binary")
    })
    .await
    .unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).trim().to_string()
}

async fn serve() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.arrow");
    common::write_sample_file(&path, 10, 4, 5);
    let server = Server::spawn(ServerConfig::new(&path, "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    (dir, server)
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_server_exits_0() {
    let (_dir, server) = serve().await;
    let addr = server.local_addr().to_string();

    let out = health(&["--server", &addr]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{addr}: the server is SERVING"));

    for service in [
        "embedding.EmbeddingStreamService",
        "com.alpha.backend.grpc.EmbeddingStreamService",
        "arrow.flight.protocol.FlightService",
    ] {
        let out = health(&["--server", &addr, "--service", service]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{service}: {}",
            text(&out.stderr)
        );
    }

    let out = health(&["--server", &addr, "--service", "no.such.Service"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("error: {addr} does not know service `no.such.Service`")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn closed_port_exits_1_unreachable() {
    let addr = closed_port().to_string();
    let out = health(&["--server", &addr]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("error: {addr} is unreachable: ")),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_exits_1() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status("svc.A", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );

    let out = health(&["--server", &addr]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("error: {addr}: the server is NOT_SERVING")
    );
    // A service that is up on the same server passes.
    let out = health(&["--server", &addr, "--service", "svc.A"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // ... until it is marked down.
    reporter
        .set_service_status("svc.A", ServingStatus::NotServing)
        .await;
    let out = health(&["--server", &addr, "--service", "svc.A"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("error: {addr}: service `svc.A` is NOT_SERVING")
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// A peer that accepts connections and never says a word: only the deadline ends the check.
#[tokio::test]
async fn silent_peer_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let out = health(&["--server", &addr, "--timeout", "300ms"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("error: {addr} did not answer within 300ms")
    );
    // The library call reports the same, typed.
    let err = check(&addr, "", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, HealthError::Timeout { .. }), "{err}");
    hold.abort();
}

#[tokio::test]
async fn bad_address_and_flags_are_refused() {
    let out = health(&["--server", "localhost"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: `localhost` is not a server address (no port); give HOST:PORT, e.g. localhost:50051"
    );
    let out = health(&["--server", "127.0.0.1:1", "--timeout", "soon"]).await;
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(text(&out.stderr).contains("--timeout"));
}

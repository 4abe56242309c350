//! The dataset handle: one open for every service, and the generation seam
//! (`LiveDataset::replace`): requests that start after a replace see the new
//! generation, running ones finish on the one they started with.
use std::sync::Arc;

use crate::common;

use arrow_flight::{FlightClient, FlightDescriptor};
use embedstream::{
    dataset::{Dataset, DatasetOptions, LiveDataset},
    proto::{
        embedding_stream_service_client::EmbeddingStreamServiceClient, StreamEmbeddingRequest,
    },
    serve::{Server, ServerConfig},
};
use tonic::transport::Channel;

fn open(dir: &tempfile::TempDir, name: &str, rows: usize) -> Arc<Dataset> {
    let path = dir.path().join(name);
    common::write_sample_file(&path, rows, 4, 16);
    Arc::new(Dataset::open(&path, &DatasetOptions::default()).unwrap())
}

#[test]
fn replace_swaps_the_generation_and_keeps_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir, "a.arrow", 40);
    let second = open(&dir, "b.arrow", 100);
    let live = LiveDataset::new(first.clone());
    let snapshot = live.current().unwrap();
    assert!(Arc::ptr_eq(&snapshot, &first));

    let previous = live.replace(second.clone()).unwrap();
    assert!(Arc::ptr_eq(&previous, &first));
    assert!(Arc::ptr_eq(&live.current().unwrap(), &second));
    assert_eq!(live.current().unwrap().num_rows(), 100);
    // The old snapshot still reads its own file.
    drop(previous);
    drop(first);
    assert_eq!(snapshot.num_rows(), 40);
    assert_eq!(snapshot.store().key(39), &common::key_for_row(39)[..]);
    assert_eq!(snapshot.name(), "a");
}

#[tokio::test]
async fn a_running_stream_finishes_on_its_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.arrow");
    common::write_sample_file(&path, 600, 4, 16);
    let server = Server::spawn(ServerConfig::new(&path, "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{}", server.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EmbeddingStreamServiceClient::new(channel.clone());
    let request = StreamEmbeddingRequest {
        last_processed_uuid: String::new(),
        chunk_size: 10,
    };
    let mut old = client
        .stream_embedding(request.clone())
        .await
        .unwrap()
        .into_inner();
    let first = old.message().await.unwrap().unwrap();
    assert_eq!(first.rows.len(), 10);

    let replacement = open(&dir, "b.arrow", 25);
    server.dataset().replace(replacement);
    assert_eq!(server.num_rows(), 25);

    // The running stream keeps reading the 600-row generation.
    let mut rows = first.rows.len();
    while let Some(chunk) = old.message().await.unwrap() {
        rows += chunk.rows.len();
    }
    assert_eq!(rows, 600);

    // A new stream, and Flight, see the new one.
    let mut new = client.stream_embedding(request).await.unwrap().into_inner();
    let mut rows = 0;
    while let Some(chunk) = new.message().await.unwrap() {
        rows += chunk.rows.len();
    }
    assert_eq!(rows, 25);
    let mut flight = FlightClient::new(channel);
    let info = flight
        .get_flight_info(FlightDescriptor::new_path(vec!["a".into()]))
        .await
        .unwrap();
    assert_eq!(info.total_records, 25);
    server.shutdown().await.unwrap();
}

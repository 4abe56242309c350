//! `embedstream serve`: one process, one port, serving the memory-mapped
//! file as the Batch Server's `StreamEmbedding` (under both package names),
//! Arrow Flight, gRPC health and server reflection.
//!
//! Start-up opens the data set ([`Dataset::open`]: maps the file, checks its
//! key column, that its columns can feed `RecruitRow` and the chunk limits)
//! and binds the port, in that order, so every refusal happens before a
//! client can connect. The services hold a [`LiveDataset`]; each request
//! takes one snapshot of it; [`reload`] swaps in a new file (directory
//! watch, SIGHUP) and revokes one written in place. Tests start
//! servers in-process with [`Server::spawn`] on port 0.

pub mod auth;
pub mod conn;
pub mod embedding;
pub mod encode;
pub mod flight;
pub mod flight_do_get;
pub mod grpc_http;
pub mod guard;
pub mod limits;
pub mod metrics;
pub mod package_alias;
pub mod reload;
pub mod row_body;
pub mod secure;
pub mod tls;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{atomic::AtomicBool, atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic_health::ServingStatus;

use crate::{
    dataset::{ChunkSettings, DatasetError, DatasetOptions, LiveDataset},
    rows::RowMapping,
    wire,
};
use embedding::{EmbeddingService, StreamLimits, StreamStats};
use limits::{LimitArgs, SendBudget, StreamSlots};
use package_alias::{PackageAlias, ALIAS_SERVICE_NAME};
use secure::{SecureArgs, SecureError};

/// Flags of `embedstream serve` (each also read from the environment or `.env`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The file to serve: a converted Arrow IPC file, or a pandas pickle
    /// (converted once to a sibling `.arrow`, which is then served), or a
    /// data set directory (`manifest.json` and its shards, `convert … -o DIR/`).
    #[arg(long, env = "PKL_PATH", default_value = "data/sample.pkl")]
    pub data: PathBuf,
    /// TCP port (0 = any free port).
    #[arg(long, env = "GRPC_PORT", default_value_t = wire::DEFAULT_SERVE_PORT)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "GRPC_HOST", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub host: IpAddr,
    /// Rows per chunk when a request asks for chunk_size 0.
    #[arg(long, env = "CHUNK_SIZE", default_value_t = wire::DEFAULT_CHUNK_SIZE)]
    pub chunk_size: usize,
    /// Largest chunk_size accepted; default: the most rows that fit the message limit.
    #[arg(long, env = "MAX_CHUNK_SIZE")]
    pub max_chunk_size: Option<usize>,
    /// Largest RowChunk message in bytes (the Batch Server accepts 100 MiB).
    #[arg(long, default_value_t = wire::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Worker threads of the async runtime (the Python server's thread pool
    /// size); capped at the number of CPUs. Streams are not limited by it.
    #[arg(long, env = "MAX_WORKERS", default_value_t = 10)]
    pub max_workers: usize,
    /// How long open streams may run after SIGINT/SIGTERM before they are cut.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,
    /// Key column (default: from the file's metadata, else `uuid`).
    #[arg(long)]
    pub key_column: Option<String>,
    /// Flight GetFlightInfo: one endpoint per key range of at most N rows
    /// (ranges never cross a shard; N is widened, with a warning, where it
    /// would list more than 10,000 endpoints); default: one endpoint per shard.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub partition_rows: Option<u64>,
    /// Flight GetFlightInfo: the locations every endpoint lists, comma
    /// separated (e.g. grpc://10.0.0.2:50051,grpc://10.0.0.3:50051);
    /// default: this server's own address.
    #[arg(long, value_name = "URI,URI,…", value_delimiter = ',')]
    pub advertise: Vec<String>,
    /// Which columns feed RecruitRow.
    #[command(flatten)]
    pub mapping: RowMapping,
    /// Limits under load.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// TLS, tokens and metrics.
    #[command(flatten)]
    pub secure: SecureArgs,
}

/// Why the server cannot start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The file cannot be served (file, key column, mapping or chunk settings).
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The server could not be set up.
    #[error("{0}")]
    Settings(String),
    /// The port is taken.
    #[error("cannot listen on {addr}: the port is in use; stop the other server or choose another port with --port (or GRPC_PORT)")]
    PortInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// Any other failure to listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed while running.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// TLS, token or metrics settings.
    #[error(transparent)]
    Secure(#[from] SecureError),
}

/// Everything [`Server::spawn`] needs; [`ServerConfig::from_args`] builds it from flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The Arrow file (already converted).
    pub data: PathBuf,
    /// Where to listen (port 0: any free port).
    pub addr: SocketAddr,
    /// Rows per chunk for chunk_size 0.
    pub default_chunk: usize,
    /// Largest chunk_size accepted (None: computed from the message limit).
    pub max_chunk: Option<usize>,
    /// Largest RowChunk message in bytes.
    pub max_message_bytes: usize,
    /// Time open streams get after shutdown is asked.
    pub grace_period: Duration,
    /// Key column override.
    pub key_column: Option<String>,
    /// `--partition-rows`: at most this many rows per Flight endpoint.
    pub partition_rows: Option<usize>,
    /// `--advertise`: every Flight endpoint's locations (empty: our own).
    pub advertise: Vec<String>,
    /// Column mapping.
    pub mapping: RowMapping,
    /// Limits under load (streams, send budget, deadlines).
    pub limits: LimitArgs,
    /// TLS, tokens and metrics.
    pub secure: SecureArgs,
}

impl ServerConfig {
    /// Defaults for serving `data` on `addr`.
    pub fn new(data: impl Into<PathBuf>, addr: SocketAddr) -> Self {
        ServerConfig {
            data: data.into(),
            addr,
            default_chunk: wire::DEFAULT_CHUNK_SIZE,
            max_chunk: None,
            max_message_bytes: wire::MAX_MESSAGE_BYTES,
            grace_period: Duration::from_secs(5),
            key_column: None,
            partition_rows: None,
            advertise: Vec::new(),
            mapping: RowMapping::default(),
            limits: LimitArgs::default(),
            secure: SecureArgs::default(),
        }
    }

    /// From the command line (the data path must already be an Arrow file).
    pub fn from_args(args: &ServeArgs, data: PathBuf) -> Self {
        ServerConfig {
            data,
            addr: SocketAddr::new(args.host, args.port),
            default_chunk: args.chunk_size,
            max_chunk: args.max_chunk_size,
            max_message_bytes: args.max_message_bytes,
            grace_period: args.grace_period,
            key_column: args.key_column.clone(),
            partition_rows: args
                .partition_rows
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            advertise: args.advertise.clone(),
            mapping: args.mapping.clone(),
            limits: args.limits.clone(),
            secure: args.secure.clone(),
        }
    }
}

/// A running server. Drop it or call [`Server::shutdown`] to stop.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stats: Arc<StreamStats>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
    stop: Arc<AtomicBool>,
    grace: Duration,
    health: tonic_health::server::HealthReporter,
    dataset: Arc<LiveDataset>,
    budget: Arc<SendBudget>,
    slots: StreamSlots,
    connections: Arc<conn::Connections>,
    _reload: reload::ReloadTask,
    /// The metrics endpoint and token reloader, stopped on drop.
    secure: secure::Running,
}

impl ServerConfig {
    /// How to open the data file under these settings.
    pub fn dataset_options(&self) -> DatasetOptions {
        DatasetOptions {
            key_column: self.key_column.clone(),
            mapping: self.mapping.clone(),
            chunks: ChunkSettings {
                default_chunk: self.default_chunk,
                max_chunk: self.max_chunk,
                max_message_bytes: self.max_message_bytes,
            },
        }
    }
}

impl Server {
    /// Open the file, bind the port and start serving in the current tokio
    /// runtime. Every refusal (file, mapping, settings, port) is returned
    /// here, before any client can connect.
    pub async fn spawn(config: ServerConfig) -> Result<Server, ServeError> {
        let began = Instant::now();
        let secure = secure::Secure::open(&config.secure)?;
        config
            .limits
            .check(config.max_message_bytes)
            .map_err(ServeError::Settings)?;
        for uri in &config.advertise {
            flight::check_location(uri).map_err(ServeError::Settings)?;
        }
        // SIGIO (lease breaks) and SIGHUP are caught before the file is opened.
        let mut reloader = reload::Reloader::install(&config.data, config.dataset_options())
            .map_err(ServeError::Settings)?;
        let dataset = reloader.open_first()?;
        let live = Arc::new(LiveDataset::new(dataset.clone()));
        let listener = TcpListener::bind(config.addr).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                ServeError::PortInUse { addr: config.addr }
            } else {
                ServeError::Bind {
                    addr: config.addr,
                    source,
                }
            }
        })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;

        let stats = Arc::new(StreamStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(conn::Connections::default());
        connections.close_idle_after(config.limits.idle_connection_timeout);
        let stream_limits = StreamLimits {
            slots: StreamSlots::new(config.limits.max_concurrent_streams),
            budget: Arc::new(SendBudget::new(config.limits.send_budget)),
            stalls: row_body::Stalls::start(config.limits.stall_timeout, connections.clone()),
        };
        let (budget, slots) = (stream_limits.budget.clone(), stream_limits.slots.clone());
        let embedding =
            EmbeddingService::new(live.clone(), stats.clone(), stop.clone(), stream_limits);
        let locations = if config.advertise.is_empty() {
            vec![flight::default_location(addr, secure.tls.is_some())]
        } else {
            config.advertise.clone()
        };
        if let Some(requested) = config.partition_rows {
            let step = flight::partition_step(dataset.store(), requested);
            if step != requested {
                tracing::warn!(
                    requested,
                    rows_per_endpoint = step,
                    "--partition-rows {requested} would list more than {} Flight endpoints for \
                     these {} rows; each endpoint covers up to {step} rows instead (give \
                     --partition-rows {step} or more to silence this)",
                    crate::wire::MAX_FLIGHT_ENDPOINTS,
                    dataset.store().num_rows()
                );
            }
        }
        let flight =
            flight::FlightEndpointService::new(live.clone(), dataset.name(), slots.clone())
                .with_endpoints(flight::Endpoints {
                    partition_rows: config.partition_rows,
                    locations,
                });
        let (guard, running) = secure
            .start(metrics::Sources {
                stream_stats: stats.clone(),
                flight_rows: flight.rows_sent(),
                dataset: live.clone(),
            })
            .await?;

        let (health, health_service) = tonic_health::server::health_reporter();
        for service in [
            "",
            embedding::SERVICE_NAME,
            ALIAS_SERVICE_NAME,
            "arrow.flight.protocol.FlightService",
        ] {
            health
                .set_service_status(service, ServingStatus::Serving)
                .await;
        }
        let reload = reloader.spawn(live.clone(), health.clone(), running.tokens.clone());
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(crate::proto::ALIAS_FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| ServeError::Settings(format!("reflection descriptors: {e}")))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| ServeError::Settings(format!("reflection descriptors: {e}")))?;

        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let acceptor = secure
            .tls
            .as_ref()
            .map(|tls| tls.acceptor())
            .transpose()
            .map_err(ServeError::Settings)?;
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            // Inbound windows only matter for requests (tiny); what we send is
            // paced by the client's windows, and our streams produce a chunk
            // only when hyper has room for it.
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(2 << 20))
            .http2_keepalive_interval(Some(config.limits.keepalive_interval))
            .http2_keepalive_timeout(Some(config.limits.keepalive_timeout))
            .max_concurrent_streams(Some(config.limits.max_streams_per_connection))
            .layer(conn::ActivityLayer::new(connections.clone()))
            .add_service(guard.wrap(embedding.clone()))
            .add_service(guard.wrap(PackageAlias::new(embedding)))
            .add_service(guard.wrap(flight_do_get::FlightServer::new(flight)))
            .add_service(health_service);
        let router = if secure.reflection_requires_token {
            router
                .add_service(guard.wrap(reflection_v1))
                .add_service(guard.wrap(reflection_v1alpha))
        } else {
            router
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
        };
        let handshake_timeout = config.limits.handshake_timeout;
        let registry = connections.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = shutdown_rx.await;
            };
            match acceptor {
                Some(acceptor) => {
                    let incoming =
                        conn::incoming_tls(listener, registry, handshake_timeout, acceptor);
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                }
                None => {
                    let incoming = conn::incoming(listener, registry, handshake_timeout);
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                }
            }
            .map_err(ServeError::from)
        });
        let limits = dataset.limits();
        tracing::info!(
            %addr,
            file = %config.data.display(),
            rows = dataset.num_rows(),
            batches = dataset.store().num_batches(),
            vector_dim = dataset.vector_dim(),
            default_chunk = limits.default,
            max_chunk = limits.max,
            startup_ms = began.elapsed().as_secs_f64() * 1e3,
            security = secure.describe(),
            metrics = ?running.metrics.as_ref().map(|m| m.local_addr()),
            "serving StreamEmbedding ({} and {ALIAS_SERVICE_NAME}), Arrow Flight, health and reflection",
            embedding::SERVICE_NAME
        );
        Ok(Server {
            addr,
            stats,
            shutdown: Some(shutdown_tx),
            task,
            stop,
            grace: config.grace_period,
            health,
            dataset: live,
            budget,
            slots,
            connections,
            _reload: reload,
            secure: running,
        })
    }

    /// The bound address (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served, when `--metrics-addr` was given.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.secure.metrics.as_ref().map(|m| m.local_addr())
    }

    /// The accepted bearer tokens, when `--auth-token-file` was given:
    /// [`auth::TokenStore::reload`] re-reads the file (SIGHUP does).
    pub fn token_store(&self) -> Option<&Arc<auth::TokenStore>> {
        self.secure.tokens.as_ref()
    }

    /// Stream counters.
    pub fn stats(&self) -> &Arc<StreamStats> {
        &self.stats
    }

    /// The send budget: [`SendBudget::pinned`] is what unsent chunks hold now.
    pub fn send_budget(&self) -> &Arc<SendBudget> {
        &self.budget
    }

    /// Data streams (StreamEmbedding and DoGet) running now, as counted by
    /// `--max-concurrent-streams`.
    pub fn streams_in_use(&self) -> usize {
        self.slots.in_use()
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Rows in the file served now.
    pub fn num_rows(&self) -> usize {
        self.dataset.current().map_or(0, |d| d.num_rows())
    }

    /// The served data set: where a new generation is swapped in
    /// ([`LiveDataset::replace`]).
    pub fn dataset(&self) -> &Arc<LiveDataset> {
        &self.dataset
    }

    /// Stop accepting, let open streams finish within the grace period, then
    /// end the ones still open (they get UNAVAILABLE) and return.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        for service in ["", embedding::SERVICE_NAME, ALIAS_SERVICE_NAME] {
            self.health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tracing::info!(
            open_streams = self.stats.active(),
            grace_ms = self.grace.as_millis() as u64,
            "shutting down: no new connections, open streams may finish"
        );
        let result = match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::warn!(
                    open_streams = self.stats.active(),
                    "grace period over: ending open streams"
                );
                self.stop.store(true, Ordering::SeqCst);
                match tokio::time::timeout(Duration::from_secs(1), &mut self.task).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        // Clients that stopped reading never poll their
                        // stream again; drop their connections.
                        self.task.abort();
                        return Ok(());
                    }
                }
            }
        };
        match result {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(ServeError::Settings(format!("server task failed: {e}"))),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.task.is_finished() {
            self.task.abort();
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

/// Run `embedstream serve` on `data` (an Arrow file: the command layer
/// converts a pickle first) until SIGINT/SIGTERM.
pub fn run(args: ServeArgs, data: PathBuf) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.max_workers.clamp(1, cpus))
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async {
        let server = Server::spawn(ServerConfig::from_args(&args, data)).await?;
        termination().await;
        server.shutdown().await?;
        tracing::info!("stopped");
        Ok::<(), ServeError>(())
    })?;
    Ok(())
}

//! Arrow Flight over the mapped file (or data set), on the same port as
//! StreamEmbedding.
//!
//! The server holds one dataset: the served file or data set directory,
//! named by its file stem (`ListFlights` shows it). `GetFlightInfo` and
//! `GetSchema` take the path descriptor `[<stem>]` (or the command
//! `<stem>`); any other descriptor is `NOT_FOUND`. Supported: `ListFlights`,
//! `GetFlightInfo` (its `app_metadata` is the generation served, as JSON),
//! `GetSchema`, `DoGet`, `ListActions` and `DoAction("generation")` (see
//! [`super::reload`]); every other call answers `UNIMPLEMENTED`.
//!
//! # Tickets
//! A `DoGet` ticket is UTF-8 text:
//! - `all`: every row;
//! - `after:<uuid>`: every row whose key is greater than `<uuid>` (a
//!   checkpoint: the `uuid` column value of the last row you stored, in the
//!   hyphenated form, any case, e.g.
//!   `after:01890a5d-ac96-774b-bcce-b302099a8057`; see [`crate::wire::parse_checkpoint`]);
//!   the UUID does not have to be in the file;
//! - `range:<first-uuid>:<last-uuid>`: every row with
//!   `first <= key <= last` (hyphenated, inclusive both ends), what the
//!   endpoints of `GetFlightInfo` carry;
//! - anything else, the empty ticket included: `INVALID_ARGUMENT` with a message.
//!
//! # Endpoints
//! `GetFlightInfo` lists ([`endpoints`]), for a data set directory, one
//! endpoint per shard with rows, or with `--partition-rows N` one per key
//! range of at most N rows, never across a shard; each has a `range:`
//! ticket and `app_metadata` `{"shard": FILE, "rows": N}`. A single file
//! without `--partition-rows` has one endpoint, ticket `all` (with it, it is
//! one shard). Every endpoint lists the same locations ([`Endpoints`]):
//! `--advertise` (each URI checked at start-up, [`check_location`]), else
//! [`default_location`]. `total_records` and `total_bytes` are the whole
//! data set's.
//!
//! # What is sent
//! The schema message first; then, for each shard the rows asked for
//! touch, the shard's dictionary messages (as stored) when the stream enters
//! it (shards may have different dictionaries: an IPC stream may replace a
//! dictionary, and pyarrow and arrow-rs read it), then its record batches,
//! exactly as stored (no re-encoding, no copy: the bytes go from the memory
//! map to the socket). Only a batch cut by the start or end of the rows (a
//! resume point, a range's ends) is sliced and re-encoded. For a data set,
//! each block's checksum is checked against the manifest the first time it
//! is sent ([`crate::store::Store::record_batch_block`]); a mismatch ends
//! the call with DATA_LOSS naming the shard and batch. Rows come in key
//! order. Each row's key is the `uuid` column (`FixedSizeBinary(16)`,
//! extension `arrow.uuid`): resume with the last row's key. A single file
//! sends its dictionaries right after the schema, whatever the ticket.
//!
//! # Two layers
//! This module decides *what* is sent: [`FlightEndpointService`] implements
//! the Flight trait, and [`FlightEndpointService::start_do_get`] turns a
//! ticket into the [`DoGetMessages`] sequence. *How* `DoGet` is sent is
//! [`super::flight_do_get`]: it answers `DoGet` below tonic's codec and
//! chains each batch body (a `Bytes` view of the map) into the HTTP/2 body
//! as its own frame, where tonic's encoder would copy it into a buffer. The
//! trait's `do_get` serves the same sequence through tonic, for a bare
//! `FlightServiceServer`; the server never routes `DoGet` to it.
//!
//! # pyarrow client
//! ```python
//! import uuid
//! import pyarrow.flight as flight
//!
//! client = flight.connect("grpc://localhost:50051")
//! info = client.get_flight_info(flight.FlightDescriptor.for_path("embeddings"))
//! print(info.schema, info.total_records)
//!
//! # Whole file
//! table = client.do_get(flight.Ticket(b"all")).read_all()
//!
//! # Resume after the last row stored (a checkpoint)
//! last = uuid.UUID(bytes=table.column("uuid")[-1].as_py())  # or your stored id
//! reader = client.do_get(flight.Ticket(f"after:{last}".encode()))
//! for chunk in reader:                # chunk.data is a RecordBatch
//!     ...
//! ```

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use arrow_flight::{
    flight_service_server::FlightService, Action, ActionType, Criteria, Empty, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, PollInfo,
    PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
use futures::{stream, Stream};
use tonic::{Request, Response, Status, Streaming};

use super::limits::StreamSlots;
use crate::{
    dataset::{Dataset, LiveDataset},
    wire::{self, damaged},
};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The ticket of the whole file.
pub const TICKET_ALL: &str = "all";
/// Prefix of a resume ticket.
pub const TICKET_AFTER: &str = "after:";
/// Prefix of a key-range ticket (one endpoint of `GetFlightInfo`).
pub const TICKET_RANGE: &str = "range:";

/// What a `DoGet` ticket asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketRequest {
    /// Every row.
    All,
    /// The rows whose key is greater than this UUID.
    After(uuid::Uuid),
    /// The rows whose key is within `first..=last`.
    Range(uuid::Uuid, uuid::Uuid),
}

const TICKET_FORMS: &str = "use `all` (whole file) or `after:<uuid>` (resume)";
const TICKET_RANGE_FORM: &str =
    ", or `range:<first-uuid>:<last-uuid>` (an endpoint of GetFlightInfo)";

/// Parse a ticket (see the module documentation).
pub fn parse_ticket(ticket: &[u8]) -> Result<TicketRequest, Status> {
    let text = std::str::from_utf8(ticket).map_err(|_| {
        Status::invalid_argument(format!("the ticket is not UTF-8; {TICKET_FORMS}"))
    })?;
    if text.is_empty() {
        return Err(Status::invalid_argument(format!(
            "the ticket is empty; {TICKET_FORMS}"
        )));
    }
    if text == TICKET_ALL {
        return Ok(TicketRequest::All);
    }
    let shown = |s: &str| s.chars().take(64).collect::<String>();
    if let Some(id) = text.strip_prefix(TICKET_AFTER) {
        return wire::parse_checkpoint(id)
            .map(TicketRequest::After)
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "ticket `after:{}`: {e}; use `after:<uuid of the last row stored>`",
                    shown(id)
                ))
            });
    }
    if let Some(range) = text.strip_prefix(TICKET_RANGE) {
        let bad = |e: String| {
            Status::invalid_argument(format!(
                "ticket `range:{}`: {e}; use `range:<first-uuid>:<last-uuid>` (hyphenated, inclusive)",
                range.chars().take(80).collect::<String>()
            ))
        };
        let (first, last) = range
            .split_once(':')
            .ok_or_else(|| bad("no `:` between the two keys".into()))?;
        let first = wire::parse_checkpoint(first).map_err(|e| bad(e.to_string()))?;
        let last = wire::parse_checkpoint(last).map_err(|e| bad(e.to_string()))?;
        if first > last {
            return Err(bad("the first key is after the last".into()));
        }
        return Ok(TicketRequest::Range(first, last));
    }
    Err(Status::invalid_argument(format!(
        "unknown ticket `{}`; {TICKET_FORMS}{TICKET_RANGE_FORM}",
        shown(text)
    )))
}

/// How `GetFlightInfo` splits the data set into endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// `--partition-rows`: at most this many rows per endpoint (ranges never
    /// cross a shard boundary). `None`: one endpoint per shard with rows
    /// (a single file: one endpoint, ticket `all`).
    pub partition_rows: Option<usize>,
    /// Every endpoint's locations (`--advertise`, else the server's own).
    pub locations: Vec<String>,
}

/// The location schemes `--advertise` accepts (Arrow Flight's).
const LOCATION_SCHEMES: &[&str] = &[
    "grpc",
    "grpc+tcp",
    "grpc+tls",
    "grpc+unix",
    "http",
    "https",
    "arrow-flight-reuse-connection",
];

/// Check one `--advertise` URI: a Flight scheme, and a host and port for
/// the network schemes. The error names the URI.
pub fn check_location(uri: &str) -> Result<(), String> {
    let shown: String = uri.chars().take(200).collect();
    let refuse = |why: &str| {
        Err(format!(
            "--advertise `{shown}`: {why}; give URIs such as grpc://10.0.0.2:50051 or grpc+tls://host:50051, separated by commas"
        ))
    };
    let Some((scheme, rest)) = uri.split_once("://") else {
        return refuse("not a URI (no `scheme://`)");
    };
    if !LOCATION_SCHEMES.contains(&scheme) {
        return refuse(&format!(
            "the scheme `{scheme}` is not a Flight location scheme ({})",
            LOCATION_SCHEMES.join(", ")
        ));
    }
    if matches!(scheme, "grpc+unix" | "arrow-flight-reuse-connection") {
        return Ok(());
    }
    let Ok(parsed) = uri.parse::<tonic::codegen::http::Uri>() else {
        return refuse("not a valid URI");
    };
    if parsed.host().is_none_or(str::is_empty) {
        return refuse("no host");
    }
    if parsed.port_u16().is_none() {
        let _ = rest;
        return refuse("no port");
    }
    Ok(())
}

/// The default location of a server bound to `addr`: `grpc://ADDR`
/// (`grpc+tls://` under TLS), or, bound to every address (0.0.0.0, ::),
/// the Flight spec's "this same connection" URI.
pub fn default_location(addr: std::net::SocketAddr, tls: bool) -> String {
    if addr.ip().is_unspecified() {
        return "arrow-flight-reuse-connection://?".to_string();
    }
    format!("{}://{addr}", if tls { "grpc+tls" } else { "grpc" })
}

/// The Flight service: a small struct over the live data set. Each call
/// takes one snapshot of it ([`LiveDataset::current`]) and uses only that.
#[derive(Debug, Clone)]
pub struct FlightEndpointService {
    dataset: Arc<LiveDataset>,
    /// Name of the dataset in `ListFlights` (the file's stem).
    name: String,
    /// Places under `--max-concurrent-streams`, shared with StreamEmbedding.
    slots: StreamSlots,
    /// Rows of the record batches DoGet handed to the transport (metrics).
    rows_sent: Arc<AtomicU64>,
    /// How GetFlightInfo lists endpoints.
    endpoints: Arc<Endpoints>,
}

impl FlightEndpointService {
    /// A Flight service over `dataset`, listed as `name`, whose DoGet calls
    /// take a place in `slots`.
    pub fn new(dataset: Arc<LiveDataset>, name: String, slots: StreamSlots) -> Self {
        FlightEndpointService {
            dataset,
            name,
            slots,
            rows_sent: Arc::default(),
            endpoints: Arc::default(),
        }
    }

    /// List endpoints as `endpoints` says.
    pub fn with_endpoints(mut self, endpoints: Endpoints) -> Self {
        self.endpoints = Arc::new(endpoints);
        self
    }

    /// The counter of rows DoGet handed to the transport, counted per batch.
    pub fn rows_sent(&self) -> Arc<AtomicU64> {
        self.rows_sent.clone()
    }

    /// The concurrency limit DoGet calls obey.
    pub fn slots(&self) -> &StreamSlots {
        &self.slots
    }

    /// Refuse a descriptor that does not name the served data set.
    fn check_descriptor(&self, descriptor: &FlightDescriptor) -> Result<(), Status> {
        let named = descriptor.path == [self.name.as_str()]
            || (descriptor.path.is_empty() && descriptor.cmd == self.name.as_bytes());
        if named {
            return Ok(());
        }
        let shown = if descriptor.path.is_empty() {
            format!(
                "command `{}`",
                String::from_utf8_lossy(&descriptor.cmd[..descriptor.cmd.len().min(64)])
            )
        } else {
            let path: Vec<String> = descriptor
                .path
                .iter()
                .take(8)
                .map(|p| p.chars().take(64).collect())
                .collect();
            format!("path {path:?}")
        };
        Err(Status::not_found(format!(
            "no flight for the descriptor {shown}; this server serves one: path [\"{}\"] (see ListFlights)",
            self.name
        )))
    }

    fn info(&self, descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
        let dataset = self.dataset.current()?;
        let store = dataset.store();
        let mut info = FlightInfo::new()
            .try_with_schema(store.schema())
            .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?
            .with_descriptor(descriptor)
            .with_total_records(i64::try_from(store.num_rows()).unwrap_or(-1))
            .with_total_bytes(i64::try_from(store.total_bytes()).unwrap_or(-1))
            .with_ordered(true)
            .with_app_metadata(dataset.generation().to_json().into_bytes());
        for endpoint in endpoints(store, &self.endpoints) {
            info = info.with_endpoint(endpoint);
        }
        Ok(info)
    }

    /// Parse `ticket`, log the call and start its message sequence: what
    /// both `DoGet` paths (the zero-copy one in [`super::flight_do_get`] and
    /// the tonic trait method) serve.
    pub fn start_do_get(&self, peer: &str, ticket: &[u8]) -> Result<DoGetMessages, Status> {
        let parsed = parse_ticket(ticket)?;
        tracing::info!(%peer, ticket = ?parsed, "Flight DoGet");
        self.do_get_messages(parsed)
    }

    /// The FlightData messages answering `request`: the schema now; then,
    /// as the iterator is advanced, each shard's dictionaries when the
    /// stream enters it, and the record batches as stored (a batch cut by
    /// the start or end of the rows asked for is sliced and re-encoded).
    pub fn do_get_messages(&self, request: TicketRequest) -> Result<DoGetMessages, Status> {
        let dataset = self.dataset.current()?;
        let store = dataset.store();
        let options = IpcWriteOptions::default();
        let schema = FlightData::from(SchemaAsIpc::new(store.schema(), &options));
        let (start, end) = match request {
            TicketRequest::All => (0, store.num_rows()),
            TicketRequest::After(id) => (store.position_after(id.as_bytes()), store.num_rows()),
            TicketRequest::Range(first, last) => (
                store.position_at_or_after(first.as_bytes()),
                store.position_after(last.as_bytes()),
            ),
        };
        let end = end.max(start);
        let (next_batch, end_batch) = if start < end {
            (store.locate(start).0, store.locate(end - 1).0 + 1)
        } else {
            (0, 0)
        };
        let mut messages = DoGetMessages {
            pending: VecDeque::from([Ok(schema)]),
            dataset: dataset.clone(),
            start,
            end,
            next_batch,
            end_batch,
            shard: None,
            rows_sent: self.rows_sent.clone(),
        };
        // A single file sends its dictionaries after the schema, whatever
        // the rows asked for (as before data sets existed).
        if !store.is_dataset() {
            messages.enter_shard(0, 0);
        }
        Ok(messages)
    }
}

/// Rows per endpoint for `--partition-rows requested` over `store`:
/// `requested`, widened when it would list more than
/// [`wire::MAX_FLIGHT_ENDPOINTS`] endpoints (each shard's last range may be
/// short, so `rows / step + shards` bounds the count).
pub fn partition_step(store: &crate::store::Store, requested: usize) -> usize {
    let requested = requested.max(1);
    let shards = store.num_shards();
    let count: usize = (0..shards)
        .map(|s| store.shard_rows(s).len().div_ceil(requested))
        .sum();
    if count <= wire::MAX_FLIGHT_ENDPOINTS || shards >= wire::MAX_FLIGHT_ENDPOINTS {
        return requested;
    }
    requested.max(
        store
            .num_rows()
            .div_ceil(wire::MAX_FLIGHT_ENDPOINTS - shards),
    )
}

/// The endpoints of `GetFlightInfo` for `store` (see [`Endpoints`]).
pub fn endpoints(store: &crate::store::Store, config: &Endpoints) -> Vec<FlightEndpoint> {
    let with_locations = |mut endpoint: FlightEndpoint| {
        for location in &config.locations {
            endpoint = endpoint.with_location(location.clone());
        }
        endpoint
    };
    let metadata = |s: usize, rows: usize| {
        serde_json::json!({"shard": store.shard_name(s), "rows": rows})
            .to_string()
            .into_bytes()
    };
    if !store.is_dataset() && config.partition_rows.is_none() {
        let endpoint = FlightEndpoint::new()
            .with_ticket(Ticket::new(TICKET_ALL))
            .with_app_metadata(metadata(0, store.num_rows()));
        return vec![with_locations(endpoint)];
    }
    let step = config
        .partition_rows
        .map(|requested| partition_step(store, requested));
    let mut out = Vec::new();
    for s in 0..store.num_shards() {
        let rows = store.shard_rows(s);
        let step = step.unwrap_or(rows.len()).max(1);
        let mut first = rows.start;
        while first < rows.end {
            let last = (first + step).min(rows.end) - 1;
            let ticket = format!(
                "{TICKET_RANGE}{}:{}",
                crate::format::format_uuid(store.key(first)),
                crate::format::format_uuid(store.key(last))
            );
            let endpoint = FlightEndpoint::new()
                .with_ticket(Ticket::new(ticket))
                .with_app_metadata(metadata(s, last + 1 - first));
            out.push(with_locations(endpoint));
            first = last + 1;
        }
    }
    out
}

/// The FlightData sequence of one `DoGet`: the schema, then per batch of
/// the rows asked for, the shard's dictionaries when the stream enters a
/// shard, and the batch (as stored: header and body are views of the map;
/// sliced and re-encoded if the rows cut it). Ends after the first error.
#[derive(Debug)]
pub struct DoGetMessages {
    pending: VecDeque<Result<FlightData, Status>>,
    /// The generation this call reads.
    dataset: Arc<Dataset>,
    /// Global rows `start..end` are sent.
    start: usize,
    end: usize,
    /// Global batches `next_batch..end_batch` are still to send.
    next_batch: usize,
    end_batch: usize,
    /// The shard whose dictionaries were sent last.
    shard: Option<usize>,
    rows_sent: Arc<AtomicU64>,
}

impl DoGetMessages {
    /// Queue shard `s`'s dictionary messages (replacing the previous
    /// shard's in the reader: IPC dictionary replacement).
    fn enter_shard(&mut self, s: usize, b: usize) {
        self.shard = Some(s);
        let store = self.dataset.store();
        match store.dictionary_blocks(s, b) {
            Ok(blocks) => self
                .pending
                .extend(blocks.into_iter().map(|b| Ok(raw_flight_data(b)))),
            Err(e) => self.pending.push_back(Err(damaged(&e))),
        }
    }

    /// Queue batch `b`'s messages.
    fn queue_batch(&mut self, b: usize) {
        let dataset = self.dataset.clone();
        let store = dataset.store();
        let (s, _) = store.shard_of_batch(b);
        if self.shard != Some(s) {
            self.enter_shard(s, b);
        }
        let (first, next) = (store.batch_start(b), store.batch_start(b + 1));
        let (lo, hi) = (self.start.max(first), self.end.min(next));
        let item = if lo == first && hi == next {
            store
                .record_batch_block(b)
                .map(|block| vec![raw_flight_data(block)])
                .map_err(|e| damaged(&e))
        } else if lo < hi {
            encode_slice(&dataset, b, lo - first, hi - lo)
        } else {
            return;
        };
        match item {
            Ok(messages) => {
                self.rows_sent
                    .fetch_add((hi - lo) as u64, Ordering::Relaxed);
                self.pending.extend(messages.into_iter().map(Ok));
            }
            Err(status) => self.pending.push_back(Err(status)),
        }
    }

    fn stop(&mut self) {
        self.pending.clear();
        self.next_batch = self.end_batch;
    }
}

impl Iterator for DoGetMessages {
    type Item = Result<FlightData, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // A revoked generation (a file opened for writing) ends here.
            if let Err(status) = self.dataset.intact() {
                if self.next_batch < self.end_batch || !self.pending.is_empty() {
                    self.stop();
                    return Some(Err(status));
                }
            }
            if let Some(item) = self.pending.pop_front() {
                if item.is_err() {
                    // Nothing follows an error.
                    self.stop();
                }
                return Some(item);
            }
            if self.next_batch >= self.end_batch {
                return None;
            }
            let b = self.next_batch;
            self.next_batch += 1;
            self.queue_batch(b);
        }
    }
}

fn raw_flight_data(block: crate::store::IpcBlock) -> FlightData {
    FlightData {
        data_header: block.header,
        data_body: block.body,
        ..FlightData::default()
    }
}

/// Re-encode rows `from..from + len` of batch `b` (with any dictionaries
/// they need).
fn encode_slice(
    dataset: &Dataset,
    b: usize,
    from: usize,
    len: usize,
) -> Result<Vec<FlightData>, Status> {
    let batch = dataset.store().batch(b).map_err(|e| damaged(&e))?;
    let from = from.min(batch.num_rows());
    let slice = batch.slice(from, len.min(batch.num_rows() - from));
    let generator = IpcDataGenerator::default();
    let mut tracker = DictionaryTracker::new(false);
    // The tracker learns the dictionary ids (field order, as the schema
    // message sent first numbers them) from the schema.
    let _ = generator.schema_to_bytes_with_dictionary_tracker(
        &slice.schema(),
        &mut tracker,
        &IpcWriteOptions::default(),
    );
    let (dicts, data) = generator
        .encode(
            &slice,
            &mut tracker,
            &IpcWriteOptions::default(),
            &mut Default::default(),
        )
        .map_err(|e| Status::internal(format!("encoding the resumed batch: {e}")))?;
    Ok(dicts
        .into_iter()
        .chain(std::iter::once(data))
        .map(FlightData::from)
        .collect())
}

#[tonic::async_trait]
impl FlightService for FlightEndpointService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "Handshake is not used: call the other methods directly, with `authorization: Bearer <token>` metadata when the server requires a token",
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let info = self.info(FlightDescriptor::new_path(vec![self.name.clone()]));
        Ok(Response::new(Box::pin(stream::iter([info]))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        self.check_descriptor(&descriptor)?;
        self.info(descriptor).map(Response::new)
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "PollFlightInfo: use GetFlightInfo, the answer is immediate",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.check_descriptor(request.get_ref())?;
        let options = IpcWriteOptions::default();
        let dataset = self.dataset.current()?;
        SchemaResult::try_from(SchemaAsIpc::new(dataset.store().schema(), &options))
            .map(Response::new)
            .map_err(|e| Status::internal(format!("encoding the schema: {e}")))
    }

    /// Not reached when served by [`super::flight_do_get::FlightServer`],
    /// which answers `DoGet` itself without tonic's copying encoder; kept
    /// (on the same message sequence) for a bare `FlightServiceServer`.
    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let messages = self.start_do_get(&peer, &request.get_ref().ticket)?;
        Ok(Response::new(Box::pin(stream::iter(messages))))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("DoPut: the served file is read-only"))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented(
            "DoExchange is not supported; use DoGet",
        ))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let body = super::reload::do_action(&self.dataset, &request.get_ref().r#type)?;
        let result = arrow_flight::Result::new(body);
        Ok(Response::new(Box::pin(stream::iter([Ok(result)]))))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = super::reload::action_types().into_iter().map(Ok);
        Ok(Response::new(Box::pin(stream::iter(actions))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets() {
        let empty = parse_ticket(b"").unwrap_err();
        assert_eq!(empty.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            empty.message(),
            "the ticket is empty; use `all` (whole file) or `after:<uuid>` (resume)"
        );
        assert_eq!(parse_ticket(b"all").unwrap(), TicketRequest::All);
        let id = "01890a5d-ac96-774b-bcce-b302099a8057";
        assert_eq!(
            parse_ticket(format!("after:{id}").as_bytes()).unwrap(),
            TicketRequest::After(uuid::Uuid::parse_str(id).unwrap())
        );
        let err = parse_ticket(b"after:nope").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("ticket `after:nope`: "));
        let braced = parse_ticket(format!("after:{{{id}}}").as_bytes()).unwrap_err();
        assert!(
            braced.message().contains("send the hyphenated form"),
            "{}",
            braced.message()
        );
        let err = parse_ticket(b"everything").unwrap_err();
        assert_eq!(
            err.message(),
            "unknown ticket `everything`; use `all` (whole file) or `after:<uuid>` (resume), or `range:<first-uuid>:<last-uuid>` (an endpoint of GetFlightInfo)"
        );
        let (a, b) = (
            "01890a5d-ac96-774b-bcce-b302099a8057",
            "01890a5d-ac96-774b-bcce-b302099a8058",
        );
        assert_eq!(
            parse_ticket(format!("range:{a}:{b}").as_bytes()).unwrap(),
            TicketRequest::Range(
                uuid::Uuid::parse_str(a).unwrap(),
                uuid::Uuid::parse_str(b).unwrap()
            )
        );
        for (bad, want) in [
            (format!("range:{b}:{a}"), "the first key is after the last"),
            (format!("range:{a}"), "no `:` between the two keys"),
            (format!("range:{a}:nope"), "not a UUID"),
        ] {
            let err = parse_ticket(bad.as_bytes()).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(
                err.message().starts_with(&format!("ticket `{bad}`: "))
                    && err.message().contains(want),
                "{}",
                err.message()
            );
        }
        assert_eq!(
            parse_ticket(&[0xff]).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn locations() {
        for good in [
            "grpc://127.0.0.2:50051",
            "grpc+tls://host.example:443",
            "grpc://[::1]:50051",
            "arrow-flight-reuse-connection://?",
        ] {
            assert_eq!(check_location(good), Ok(()), "{good}");
        }
        let refusal = |uri: &str| check_location(uri).unwrap_err();
        assert!(refusal("nope").starts_with("--advertise `nope`: not a URI (no `scheme://`); "));
        assert!(refusal("ftp://h:1").starts_with(
            "--advertise `ftp://h:1`: the scheme `ftp` is not a Flight location scheme"
        ));
        assert!(refusal("grpc://host").starts_with("--advertise `grpc://host`: no port; "));
        assert!(refusal("grpc://:50051").starts_with("--advertise `grpc://:50051`: "));
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(
            default_location(addr("127.0.0.2:5"), false),
            "grpc://127.0.0.2:5"
        );
        assert_eq!(
            default_location(addr("[::1]:5"), true),
            "grpc+tls://[::1]:5"
        );
        assert_eq!(
            default_location(addr("0.0.0.0:5"), false),
            "arrow-flight-reuse-connection://?"
        );
    }
}

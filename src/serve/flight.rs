//! Arrow Flight over the mapped file, on the same port as StreamEmbedding.
//!
//! The server holds one dataset: the served file, named by its file stem
//! (`ListFlights` shows it). `GetFlightInfo` and `GetSchema` take the path
//! descriptor `[<stem>]` (or the command `<stem>`); any other descriptor is
//! `NOT_FOUND`. Supported: `ListFlights`, `GetFlightInfo` (its `app_metadata`
//! is the generation served, as JSON), `GetSchema`, `DoGet`, `ListActions`
//! and `DoAction("generation")` (see [`super::reload`]); every other call
//! answers `UNIMPLEMENTED`.
//!
//! # Tickets
//! A `DoGet` ticket is UTF-8 text:
//! - `all`: the whole file;
//! - `after:<uuid>`: every row whose key is greater than `<uuid>` (a
//!   checkpoint: the `uuid` column value of the last row you stored, in the
//!   hyphenated form, any case, e.g.
//!   `after:01890a5d-ac96-774b-bcce-b302099a8057`; see [`crate::wire::parse_checkpoint`]);
//!   the UUID does not have to be in the file;
//! - anything else, the empty ticket included: `INVALID_ARGUMENT` with a message.
//!
//! The ticket in `GetFlightInfo`'s endpoint is `all`.
//!
//! # What is sent
//! The schema message first, then the file's dictionary messages, then its
//! record batches, exactly as stored in the file (no re-encoding, no copy:
//! the bytes go from the memory map to the socket). On a resume, only the batch holding
//! the resume point is sliced and re-encoded, starting at the first row
//! after the checkpoint; the following batches are sent as stored. Rows come
//! in key order. Each row's key is the `uuid` column (`FixedSizeBinary(16)`,
//! extension `arrow.uuid`): resume with the last row's key.
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

/// What a `DoGet` ticket asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketRequest {
    /// Every row.
    All,
    /// The rows whose key is greater than this UUID.
    After(uuid::Uuid),
}

/// Parse a ticket (see the module documentation).
pub fn parse_ticket(ticket: &[u8]) -> Result<TicketRequest, Status> {
    let text = std::str::from_utf8(ticket).map_err(|_| {
        Status::invalid_argument("the ticket is not UTF-8; use `all` or `after:<uuid>`")
    })?;
    if text.is_empty() {
        return Err(Status::invalid_argument(
            "the ticket is empty; use `all` (whole file) or `after:<uuid>` (resume)",
        ));
    }
    if text == TICKET_ALL {
        return Ok(TicketRequest::All);
    }
    match text.strip_prefix(TICKET_AFTER) {
        Some(id) => wire::parse_checkpoint(id)
            .map(TicketRequest::After)
            .map_err(|e| {
                let shown: String = id.chars().take(64).collect();
                Status::invalid_argument(format!(
                    "ticket `after:{shown}`: {e}; use `after:<uuid of the last row stored>`"
                ))
            }),
        None => {
            let shown: String = text.chars().take(64).collect();
            Err(Status::invalid_argument(format!(
                "unknown ticket `{shown}`; use `all` (whole file) or `after:<uuid>` (resume)"
            )))
        }
    }
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
        }
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
        let info = FlightInfo::new()
            .try_with_schema(store.schema())
            .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?
            .with_descriptor(descriptor)
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(TICKET_ALL)))
            .with_total_records(i64::try_from(store.num_rows()).unwrap_or(-1))
            .with_total_bytes(i64::try_from(store.file().len()).unwrap_or(-1))
            .with_ordered(true)
            .with_app_metadata(dataset.generation().to_json().into_bytes());
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

    /// The FlightData messages answering `request`: the schema, the
    /// dictionaries and any re-encoded head slice are made now; the record
    /// batches as stored, one at a time, as the iterator is advanced.
    pub fn do_get_messages(&self, request: TicketRequest) -> Result<DoGetMessages, Status> {
        let dataset = self.dataset.current()?;
        let store = dataset.store();
        let options = IpcWriteOptions::default();
        let schema = FlightData::from(SchemaAsIpc::new(store.schema(), &options));
        let mut head: Vec<Result<FlightData, Status>> = vec![Ok(schema)];
        head.extend(
            store
                .file()
                .dictionary_blocks()
                .map(|b| b.map(raw_flight_data).map_err(|e| damaged(&e))),
        );
        let start_row = match request {
            TicketRequest::All => 0,
            TicketRequest::After(id) => store.position_after(id.as_bytes()),
        };
        let batches = store.num_batches();
        // The first batch to send as stored, and the sliced head if the
        // resume point falls inside a batch.
        let mut head_rows = 0;
        let first_raw = if start_row >= store.num_rows() {
            batches
        } else {
            let (b, i) = store.locate(start_row);
            if i == 0 {
                b
            } else {
                head.extend(encode_slice(&dataset, b, i)?.into_iter().map(Ok));
                head_rows = store.batch_start(b + 1) - start_row;
                b + 1
            }
        };
        Ok(DoGetMessages {
            head: head.into_iter(),
            head_rows,
            dataset,
            next_raw: first_raw,
            end: batches,
            rows_sent: self.rows_sent.clone(),
        })
    }
}

/// The FlightData sequence of one `DoGet`: the prepared head messages, then
/// the file's record batches `next_raw..end` as stored (header and body are
/// views of the map). Ends after the first error.
#[derive(Debug)]
pub struct DoGetMessages {
    head: std::vec::IntoIter<Result<FlightData, Status>>,
    /// Rows in `head` (a resumed batch's slice), counted once it is out.
    head_rows: usize,
    /// The generation this call reads.
    dataset: Arc<Dataset>,
    next_raw: usize,
    end: usize,
    rows_sent: Arc<AtomicU64>,
}

impl Iterator for DoGetMessages {
    type Item = Result<FlightData, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        // A revoked generation (its file opened for writing) ends here.
        if let Err(status) = self.dataset.intact() {
            if self.next_raw < self.end || self.head.len() > 0 {
                self.head = Vec::new().into_iter();
                self.next_raw = self.end;
                return Some(Err(status));
            }
        }
        let item = match self.head.next() {
            Some(item) => item,
            None if self.next_raw < self.end => {
                let i = self.next_raw;
                self.next_raw += 1;
                let store = self.dataset.store();
                let rows = store.batch_start(i + 1) - store.batch_start(i);
                match store.file().record_batch_block(i) {
                    Some(Ok(block)) => {
                        let rows = std::mem::take(&mut self.head_rows) + rows;
                        self.rows_sent.fetch_add(rows as u64, Ordering::Relaxed);
                        Ok(raw_flight_data(block))
                    }
                    Some(Err(e)) => Err(damaged(&e)),
                    None => Err(Status::internal(format!(
                        "record batch {i} vanished from the file footer"
                    ))),
                }
            }
            None => {
                let rows = std::mem::take(&mut self.head_rows);
                self.rows_sent.fetch_add(rows as u64, Ordering::Relaxed);
                return None;
            }
        };
        if item.is_err() {
            // Nothing follows an error.
            self.head = Vec::new().into_iter();
            self.next_raw = self.end;
        }
        Some(item)
    }
}

fn raw_flight_data(block: crate::store::IpcBlock) -> FlightData {
    FlightData {
        data_header: block.header,
        data_body: block.body,
        ..FlightData::default()
    }
}

/// Re-encode rows `from..` of batch `b` (with any dictionaries they need).
fn encode_slice(dataset: &Dataset, b: usize, from: usize) -> Result<Vec<FlightData>, Status> {
    let batch = dataset.store().batch(b).map_err(|e| damaged(&e))?;
    let len = batch.num_rows().saturating_sub(from);
    let slice = batch.slice(from.min(batch.num_rows()), len);
    let generator = IpcDataGenerator::default();
    let mut tracker = DictionaryTracker::new(false);
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
            "unknown ticket `everything`; use `all` (whole file) or `after:<uuid>` (resume)"
        );
        assert_eq!(
            parse_ticket(&[0xff]).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}

//! Flight `DoGet` without copying the record batches.
//!
//! tonic's generated server encodes every response message into its own
//! `BytesMut` buffer, which copies each batch body out of the memory map
//! before it reaches hyper. [`FlightServer`] wraps the generated
//! `FlightServiceServer`: requests to [`DO_GET_PATH`] are answered here, every
//! other method goes to the generated server unchanged (same service name, so
//! routing, health and reflection see one Flight service).
//!
//! The response body ([`DoGetBody`]) emits, per `FlightData` message, one
//! small frame with the 5-byte gRPC prefix and the protobuf encoding of
//! fields 1-3 plus the key and length of field 1000 (`data_body`), then the
//! body `Bytes` itself, a view of the map that hyper/h2 write to the socket
//! as is. The bytes on the wire are exactly those of prost's encoding of the
//! same message ([`encode_prefix`] is tested against it). Frames are made
//! only when hyper polls for the next one (it does once the previous one
//! got send capacity), so a slow reader does not make the server buffer the
//! file, and a cancelled call drops the body and stops.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use arrow_flight::{flight_service_server::FlightServiceServer, FlightData, Ticket};
use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::{
    encoding::{encode_varint, encoded_len_varint},
    Message,
};
use tonic::{
    body::Body,
    codegen::{
        http::{self, header, HeaderMap, HeaderValue},
        BoxFuture, Service,
    },
    server::NamedService,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
    Status,
};

use super::flight::{DoGetMessages, FlightEndpointService};
use crate::wire::GRPC_PREFIX;

/// The path of `DoGet`, answered by [`FlightServer`] itself.
pub const DO_GET_PATH: &str = "/arrow.flight.protocol.FlightService/DoGet";

/// Largest `Ticket` message accepted (tickets are `all` or `after:<uuid>`).
pub const MAX_TICKET_BYTES: usize = crate::wire::MAX_REQUEST_BYTES;

/// Key of field 1000 (`data_body`), wire type 2: the varint of 8002.
const DATA_BODY_KEY: [u8; 2] = [0xC2, 0x3E];
/// Keys of fields 2 (`data_header`) and 3 (`app_metadata`), wire type 2.
const DATA_HEADER_KEY: u8 = (2 << 3) | 2;
const APP_METADATA_KEY: u8 = (3 << 3) | 2;

/// The Flight service as registered on the server: the generated
/// `FlightServiceServer`, with `DoGet` answered by [`do_get`].
#[derive(Debug, Clone)]
pub struct FlightServer {
    inner: FlightServiceServer<FlightEndpointService>,
    service: FlightEndpointService,
}

impl FlightServer {
    /// Serve `service`.
    pub fn new(service: FlightEndpointService) -> Self {
        FlightServer {
            inner: FlightServiceServer::new(service.clone()),
            service,
        }
    }
}

impl Service<http::Request<Body>> for FlightServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() == DO_GET_PATH {
            let service = self.service.clone();
            Box::pin(async move { Ok(do_get(&service, req).await) })
        } else {
            self.inner.call(req)
        }
    }
}

impl NamedService for FlightServer {
    const NAME: &'static str = <FlightServiceServer<FlightEndpointService> as NamedService>::NAME;
}

/// Answer one `DoGet` call: read the ticket, then stream the messages.
/// Errors before the first message are a trailers-only response.
pub async fn do_get(
    service: &FlightEndpointService,
    req: http::Request<Body>,
) -> http::Response<Body> {
    let peer = req
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            req.extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
        .map_or_else(|| "unknown".to_string(), |a| a.to_string());
    let mut resume = false;
    let started = match read_ticket(req.into_body()).await {
        Ok(ticket) => {
            resume = ticket
                .ticket
                .starts_with(super::flight::TICKET_AFTER.as_bytes());
            service.start_do_get(&peer, &ticket.ticket)
        }
        Err(status) => Err(status),
    };
    let mut messages = match started {
        Ok(messages) => messages,
        Err(status) => return status.into_http(),
    };
    // The first message (the schema) decides between a trailers-only
    // error and a stream.
    let first = match messages.next() {
        Some(Ok(first)) => Some(first),
        Some(Err(status)) => return status.into_http(),
        None => None,
    };
    let mut response = http::Response::new(Body::new(DoGetBody::new(first, messages)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if resume {
        response.extensions_mut().insert(super::metrics::Resume);
    }
    response
}

/// Read the request body: one uncompressed gRPC message of at most
/// [`MAX_TICKET_BYTES`], decoded as a `Ticket`.
async fn read_ticket(mut body: Body) -> Result<Ticket, Status> {
    let mut buf = BytesMut::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
    {
        let Ok(data) = frame?.into_data() else {
            continue; // request trailers carry nothing for us
        };
        if buf.len() + data.len() > GRPC_PREFIX + MAX_TICKET_BYTES {
            return Err(too_large(buf.len() + data.len() - GRPC_PREFIX));
        }
        buf.extend_from_slice(&data);
        // Refuse a bad prefix before reading the rest.
        if buf.len() >= GRPC_PREFIX {
            message_len(&buf)?;
        }
    }
    decode_request(&buf)
}

fn too_large(len: usize) -> Status {
    Status::resource_exhausted(format!(
        "the DoGet request message is {len} bytes; a Ticket may have at most {MAX_TICKET_BYTES}"
    ))
}

/// The message length in the gRPC prefix at the start of `buf` (at least
/// [`GRPC_PREFIX`] bytes), refusing compressed or oversized messages.
fn message_len(buf: &[u8]) -> Result<usize, Status> {
    let (flag, len) = match buf {
        [flag, a, b, c, d, ..] => (*flag, u32::from_be_bytes([*a, *b, *c, *d]) as usize),
        _ => return Err(Status::invalid_argument("the DoGet request is truncated")),
    };
    match flag {
        0 => {}
        1 => {
            return Err(Status::unimplemented(
                "compressed DoGet requests are not supported; send the Ticket uncompressed",
            ))
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "the DoGet request is not a gRPC message (compressed flag {other})"
            )))
        }
    }
    if len > MAX_TICKET_BYTES {
        return Err(too_large(len));
    }
    Ok(len)
}

/// Decode a whole request body: exactly one gRPC message holding a `Ticket`.
fn decode_request(buf: &[u8]) -> Result<Ticket, Status> {
    if buf.is_empty() {
        return Err(Status::invalid_argument(
            "the DoGet request carries no Ticket message",
        ));
    }
    let len = message_len(buf)?;
    let message = &buf[GRPC_PREFIX..];
    if message.len() < len {
        return Err(Status::invalid_argument(format!(
            "the DoGet request is truncated: {} of {len} message bytes",
            message.len()
        )));
    }
    if message.len() > len {
        return Err(Status::invalid_argument(
            "the DoGet request carries more than one message; send one Ticket",
        ));
    }
    Ticket::decode(message)
        .map_err(|e| Status::invalid_argument(format!("the DoGet request is not a Ticket: {e}")))
}

/// The gRPC message prefix and protobuf bytes of `message` up to its
/// `data_body`, and the `data_body` itself (not copied). Their concatenation
/// is the gRPC framing of `prost::Message::encode_to_vec(&message)`.
pub fn encode_prefix(message: FlightData) -> Result<(Bytes, Bytes), Status> {
    let bytes_field = |key_len: usize, len: usize| {
        if len == 0 {
            0
        } else {
            key_len + encoded_len_varint(len as u64) + len
        }
    };
    let descriptor_len = message
        .flight_descriptor
        .as_ref()
        .map_or(0, |d| prost::encoding::message::encoded_len(1, d));
    let head_len = descriptor_len
        + bytes_field(1, message.data_header.len())
        + bytes_field(1, message.app_metadata.len());
    let body = message.data_body;
    let body_field = bytes_field(DATA_BODY_KEY.len(), body.len());
    let total = head_len + body_field;
    let total = u32::try_from(total).map_err(|_| {
        Status::resource_exhausted(format!(
            "a FlightData message of {total} bytes exceeds gRPC's 4 GiB message limit"
        ))
    })?;
    let mut buf = BytesMut::with_capacity(GRPC_PREFIX + head_len + body_field - body.len());
    buf.put_u8(0);
    buf.put_u32(total);
    if let Some(d) = &message.flight_descriptor {
        prost::encoding::message::encode(1, d, &mut buf);
    }
    for (key, value) in [
        (DATA_HEADER_KEY, &message.data_header),
        (APP_METADATA_KEY, &message.app_metadata),
    ] {
        if !value.is_empty() {
            buf.put_u8(key);
            encode_varint(value.len() as u64, &mut buf);
            buf.put_slice(value);
        }
    }
    if !body.is_empty() {
        buf.put_slice(&DATA_BODY_KEY);
        encode_varint(body.len() as u64, &mut buf);
    }
    Ok((buf.freeze(), body))
}

/// The trailers that end the call with `status` (`grpc-message` percent-encoded).
fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.clear();
        map.insert("grpc-status", HeaderValue::from(status.code() as i32));
    }
    map
}

/// The response body of one `DoGet`: per message, the prefix frame and then
/// the body frame (the mapped bytes); then the trailers.
#[derive(Debug)]
pub struct DoGetBody {
    first: Option<FlightData>,
    /// None once the trailers were sent.
    messages: Option<DoGetMessages>,
    /// The body of the message whose prefix was sent last.
    body: Option<Bytes>,
}

impl DoGetBody {
    /// The body sending `first` (if any), then `messages`.
    pub fn new(first: Option<FlightData>, messages: DoGetMessages) -> Self {
        DoGetBody {
            first,
            messages: Some(messages),
            body: None,
        }
    }
}

impl http_body::Body for DoGetBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(body) = this.body.take() {
            return Poll::Ready(Some(Ok(Frame::data(body))));
        }
        let Some(messages) = this.messages.as_mut() else {
            return Poll::Ready(None);
        };
        let next = match this.first.take() {
            Some(first) => Some(Ok(first)),
            None => messages.next(),
        };
        let frame = match next.map(|m| m.and_then(encode_prefix)) {
            Some(Ok((prefix, body))) => {
                if !body.is_empty() {
                    this.body = Some(body);
                }
                Frame::data(prefix)
            }
            Some(Err(status)) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "Flight DoGet failed mid-stream");
                this.messages = None;
                Frame::trailers(trailers(&status))
            }
            None => {
                this.messages = None;
                Frame::trailers(trailers(&Status::ok("")))
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.messages.is_none() && self.body.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::FlightDescriptor;

    fn grpc_frame(m: &FlightData) -> Vec<u8> {
        let encoded = m.encode_to_vec();
        let mut out = vec![0];
        out.extend((encoded.len() as u32).to_be_bytes());
        out.extend(encoded);
        out
    }

    #[test]
    fn framing_equals_prost() {
        let body = Bytes::from((0..70_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let header = Bytes::from_static(&[0xff; 300]);
        let cases = [
            FlightData::default(),
            FlightData {
                data_header: header.clone(),
                ..FlightData::default()
            },
            FlightData {
                data_header: Bytes::from_static(b"h"),
                data_body: Bytes::from_static(b"b"),
                ..FlightData::default()
            },
            FlightData {
                data_header: header.clone(),
                data_body: body.clone(),
                ..FlightData::default()
            },
            FlightData {
                data_body: body.clone(),
                ..FlightData::default()
            },
            FlightData {
                flight_descriptor: Some(FlightDescriptor::new_path(vec!["x".into(), "y".into()])),
                data_header: header.clone(),
                app_metadata: Bytes::from_static(b"meta"),
                data_body: body.clone(),
            },
            FlightData {
                flight_descriptor: Some(FlightDescriptor::default()),
                app_metadata: Bytes::from_static(b"meta"),
                ..FlightData::default()
            },
            FlightData {
                flight_descriptor: Some(FlightDescriptor::new_cmd(vec![7u8; 200])),
                ..FlightData::default()
            },
        ];
        for (i, m) in cases.into_iter().enumerate() {
            let want = grpc_frame(&m);
            let body_ptr = m.data_body.as_ptr();
            let (prefix, got_body) = encode_prefix(m.clone()).unwrap();
            let mut got = prefix.to_vec();
            got.extend_from_slice(&got_body);
            assert_eq!(got, want, "case {i}");
            assert_eq!(got_body.len(), m.data_body.len());
            if !got_body.is_empty() {
                // The body is passed on, not copied.
                assert_eq!(got_body.as_ptr(), body_ptr, "case {i}");
                assert!(prefix.len() < 400, "case {i}");
            }
        }
        assert_eq!(DATA_BODY_KEY.to_vec(), {
            let mut v = Vec::new();
            prost::encoding::encode_key(1000, prost::encoding::WireType::LengthDelimited, &mut v);
            v
        });
    }

    fn request(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend((message.len() as u32).to_be_bytes());
        out.extend(message);
        out
    }

    #[test]
    fn requests() {
        let ticket = Ticket::new("all");
        let ok = request(0, &ticket.encode_to_vec());
        assert_eq!(decode_request(&ok).unwrap(), ticket);
        assert_eq!(decode_request(&request(0, b"")).unwrap(), Ticket::default());
        let code = |buf: &[u8]| decode_request(buf).unwrap_err().code();
        assert_eq!(code(b""), tonic::Code::InvalidArgument);
        assert_eq!(code(&[0, 0, 0]), tonic::Code::InvalidArgument);
        assert_eq!(code(&request(1, b"x")), tonic::Code::Unimplemented);
        assert_eq!(code(&request(2, b"x")), tonic::Code::InvalidArgument);
        assert_eq!(
            code(&request(0, &[0xff, 0xff, 0xff])),
            tonic::Code::InvalidArgument
        );
        assert_eq!(code(&ok[..ok.len() - 1]), tonic::Code::InvalidArgument);
        let mut two = ok.clone();
        two.extend(&ok);
        assert_eq!(code(&two), tonic::Code::InvalidArgument);
        assert_eq!(
            code(&[0, 0, 1, 0, 1]),
            tonic::Code::ResourceExhausted,
            "declared 65537 bytes"
        );
        let big = Ticket::new(vec![b'a'; MAX_TICKET_BYTES]).encode_to_vec();
        assert_eq!(code(&request(0, &big)), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn error_trailers_are_percent_encoded() {
        let map = trailers(&Status::data_loss("bad block: 100%\nend"));
        assert_eq!(map["grpc-status"], "15");
        assert_eq!(map["grpc-message"], "bad%20block:%20100%25%0Aend");
        let ok = trailers(&Status::ok(""));
        assert_eq!(ok["grpc-status"], "0");
        assert!(ok.get("grpc-message").is_none());
    }
}

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
use prost::encoding::{encode_varint, encoded_len_varint};
use tonic::{
    body::Body,
    codegen::{http, BoxFuture, Service},
    server::NamedService,
    Status,
};

use super::{
    flight::{DoGetMessages, FlightEndpointService},
    grpc_http::{self, trailers},
    limits::StreamSlot,
};
use crate::wire::GRPC_PREFIX;

/// The path of `DoGet`, answered by [`FlightServer`] itself.
pub const DO_GET_PATH: &str = "/arrow.flight.protocol.FlightService/DoGet";

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
            // Requests are small (descriptors, criteria): the same limit as DoGet.
            inner: FlightServiceServer::new(service.clone())
                .max_decoding_message_size(crate::wire::MAX_REQUEST_BYTES),
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
            let method = req
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            let response = self.inner.call(req);
            Box::pin(async move {
                let mut response = response.await?;
                over_limit_is_resource_exhausted(&method, &mut response);
                Ok(response)
            })
        }
    }
}

/// tonic's generated server refuses a request over its limit with
/// OUT_OF_RANGE; answer RESOURCE_EXHAUSTED instead, as DoGet and
/// StreamEmbedding do and as gRPC specifies for a message over the limit.
fn over_limit_is_resource_exhausted<B>(method: &str, response: &mut http::Response<B>) {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v == (tonic::Code::OutOfRange as i32).to_string().as_str());
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.starts_with("Error,%20decoded%20message%20length%20too%20large"));
    if out_of_range && too_large {
        let status = Status::resource_exhausted(format!(
            "the {method} request message is over the {}-byte limit of requests",
            crate::wire::MAX_REQUEST_BYTES
        ));
        headers.remove("grpc-message");
        let _ = status.add_header(headers);
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
    let peer = grpc_http::peer(&req);
    let slot = match service.slots().try_acquire("Flight DoGet") {
        Ok(slot) => slot,
        Err(status) => return status.into_http(),
    };
    let mut resume = false;
    let started = match grpc_http::read_request::<Ticket, _>(req.into_body(), TICKET_REQUEST).await
    {
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
    let mut response =
        grpc_http::grpc_response(Body::new(DoGetBody::new(first, messages).holding(slot)));
    if resume {
        response.extensions_mut().insert(super::metrics::Resume);
    }
    response
}

/// How DoGet refusals name the call and its message.
const TICKET_REQUEST: grpc_http::RequestKind = grpc_http::RequestKind {
    rpc: "DoGet",
    message: "Ticket",
};

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

/// The response body of one `DoGet`: per message, the prefix frame and then
/// the body frame (the mapped bytes); then the trailers.
#[derive(Debug)]
pub struct DoGetBody {
    first: Option<FlightData>,
    /// None once the trailers were sent.
    messages: Option<DoGetMessages>,
    /// The body of the message whose prefix was sent last.
    body: Option<Bytes>,
    /// The call's place under `--max-concurrent-streams`, freed with the body.
    _slot: Option<StreamSlot>,
}

impl DoGetBody {
    /// The body sending `first` (if any), then `messages`.
    pub fn new(first: Option<FlightData>, messages: DoGetMessages) -> Self {
        DoGetBody {
            first,
            messages: Some(messages),
            body: None,
            _slot: None,
        }
    }

    /// Keep `slot` until the body is dropped.
    pub fn holding(mut self, slot: StreamSlot) -> Self {
        self._slot = Some(slot);
        self
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
    use prost::Message;

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
}

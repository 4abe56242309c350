//! The gRPC-over-HTTP/2 pieces shared by the two streaming RPCs answered
//! below tonic's codec (StreamEmbedding in [`super::row_body`], Flight DoGet
//! in [`super::flight_do_get`]): reading the one request message, the
//! trailers that end a call, and the peer's address.
//!
//! The request rules are the same for both RPCs (and documented in the
//! README): exactly one uncompressed message of at most
//! [`MAX_REQUEST_BYTES`]; no message at all → INVALID_ARGUMENT; a larger
//! one → RESOURCE_EXHAUSTED (what gRPC specifies for a message over the
//! receiver's limit).

use std::pin::Pin;

use bytes::{Buf, BytesMut};
use tonic::{
    codegen::{
        http::{self, HeaderMap, HeaderValue},
        StdError,
    },
    transport::server::{TcpConnectInfo, TlsConnectInfo},
    Status,
};

use crate::wire::{GRPC_PREFIX, MAX_REQUEST_BYTES};

/// Which call a request belongs to, for the messages of its refusals.
#[derive(Debug, Clone, Copy)]
pub struct RequestKind {
    /// The RPC, e.g. `StreamEmbedding`.
    pub rpc: &'static str,
    /// The request message, e.g. `StreamEmbeddingRequest`.
    pub message: &'static str,
}

/// The peer address of a request: the one place that reads it from the
/// transport's connection info. Under TLS tonic 0.14 inserts both the inner
/// `TcpConnectInfo` and its `TlsConnectInfo` wrapper; the wrapper is read too
/// so that TLS connections keep their idle count and stall close either way
/// (test `secure::tls_connections_are_tracked_idle_closed_busy_kept`).
pub fn peer_addr<B>(req: &http::Request<B>) -> Option<std::net::SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// The peer of a request, as logged (`unknown` when the transport gives none).
pub fn peer<B>(req: &http::Request<B>) -> String {
    peer_addr(req).map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

/// Read a request body: exactly one uncompressed gRPC message of at most
/// [`MAX_REQUEST_BYTES`], decoded as `M`. Stops reading as soon as the
/// declared or received length passes the limit.
pub async fn read_request<M, B>(mut body: B, kind: RequestKind) -> Result<M, Status>
where
    M: prost::Message + Default,
    B: http_body::Body + Unpin,
    B::Error: Into<StdError>,
{
    let mut buf = BytesMut::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
    {
        let frame = frame.map_err(|e| Status::from_error(e.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue; // request trailers carry nothing for us
        };
        let len = data.remaining();
        if buf.len() + len > GRPC_PREFIX + MAX_REQUEST_BYTES {
            return Err(too_large(kind, buf.len() + len - GRPC_PREFIX));
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            let n = chunk.len();
            buf.extend_from_slice(chunk);
            data.advance(n);
        }
        // Refuse a bad prefix before reading the rest.
        if buf.len() >= GRPC_PREFIX {
            message_len(&buf, kind)?;
        }
    }
    decode_request(&buf, kind)
}

fn too_large(kind: RequestKind, len: usize) -> Status {
    Status::resource_exhausted(format!(
        "the {} request message is {len} bytes; a {} may have at most {MAX_REQUEST_BYTES}",
        kind.rpc, kind.message
    ))
}

/// The message length in the gRPC prefix at the start of `buf`, refusing
/// compressed or oversized messages.
fn message_len(buf: &[u8], kind: RequestKind) -> Result<usize, Status> {
    let (flag, len) = match buf {
        [flag, a, b, c, d, ..] => (*flag, u32::from_be_bytes([*a, *b, *c, *d]) as usize),
        _ => {
            return Err(Status::invalid_argument(format!(
                "the {} request is truncated",
                kind.rpc
            )))
        }
    };
    match flag {
        0 => {}
        1 => {
            return Err(Status::unimplemented(format!(
                "compressed {} requests are not supported; send the {} uncompressed",
                kind.rpc, kind.message
            )))
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "the {} request is not a gRPC message (compressed flag {other})",
                kind.rpc
            )))
        }
    }
    if len > MAX_REQUEST_BYTES {
        return Err(too_large(kind, len));
    }
    Ok(len)
}

/// Decode a whole request body: exactly one gRPC message holding an `M`.
pub fn decode_request<M: prost::Message + Default>(
    buf: &[u8],
    kind: RequestKind,
) -> Result<M, Status> {
    if buf.is_empty() {
        return Err(Status::invalid_argument(format!(
            "the {} request carries no {} message",
            kind.rpc, kind.message
        )));
    }
    let len = message_len(buf, kind)?;
    let message = &buf[GRPC_PREFIX..];
    if message.len() < len {
        return Err(Status::invalid_argument(format!(
            "the {} request is truncated: {} of {len} message bytes",
            kind.rpc,
            message.len()
        )));
    }
    if message.len() > len {
        return Err(Status::invalid_argument(format!(
            "the {} request carries more than one message; send one {}",
            kind.rpc, kind.message
        )));
    }
    M::decode(message).map_err(|e| {
        Status::invalid_argument(format!(
            "the {} request is not a {}: {e}",
            kind.rpc, kind.message
        ))
    })
}

/// The trailers that end the call with `status` (`grpc-message` percent-encoded).
pub fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.clear();
        map.insert("grpc-status", HeaderValue::from(status.code() as i32));
    }
    map
}

/// A streaming response whose body is `body` (status and trailers follow in it).
pub fn grpc_response(body: tonic::body::Body) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::Ticket;
    use prost::Message;

    const KIND: RequestKind = RequestKind {
        rpc: "DoGet",
        message: "Ticket",
    };

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
        assert_eq!(decode_request::<Ticket>(&ok, KIND).unwrap(), ticket);
        assert_eq!(
            decode_request::<Ticket>(&request(0, b""), KIND).unwrap(),
            Ticket::default()
        );
        let err = |buf: &[u8]| decode_request::<Ticket>(buf, KIND).unwrap_err();
        let code = |buf: &[u8]| err(buf).code();
        assert_eq!(code(b""), tonic::Code::InvalidArgument);
        assert_eq!(
            err(b"").message(),
            "the DoGet request carries no Ticket message"
        );
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
        let big = Ticket::new(vec![b'a'; MAX_REQUEST_BYTES]).encode_to_vec();
        assert_eq!(code(&request(0, &big)), tonic::Code::ResourceExhausted);
        assert!(err(&request(0, &big))
            .message()
            .starts_with("the DoGet request message is "));
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

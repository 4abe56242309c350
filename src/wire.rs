//! The wire contract's numbers, defined once: message and request size
//! limits, the default chunk size, the default ports, the size bound of an
//! encoded `RecruitRow`, and the status that ends a stream at a damaged
//! batch. Used by the server ([`crate::serve`]), the clients
//! ([`crate::client`]) and the dataset handle ([`crate::dataset`]).

use prost::encoding::encoded_len_varint;
use tonic::Status;

/// The Batch Server's inbound message limit (grpc-java
/// `maxInboundMessageSize`): the largest RowChunk the server sends and the
/// largest message the stream client accepts.
pub const MAX_MESSAGE_BYTES: usize = 100 * 1024 * 1024;
/// Largest request message accepted by the server's own RPCs
/// (`StreamEmbeddingRequest`: two small fields; a Flight `Ticket`: `all` or
/// `after:<uuid>`).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Most endpoints one `GetFlightInfo` lists when `--partition-rows` splits
/// the rows (about 170 bytes each: a response of a few MB, built per call);
/// a smaller `--partition-rows` is widened to stay under it. One endpoint
/// per shard is never merged, whatever the shard count.
pub const MAX_FLIGHT_ENDPOINTS: usize = 10_000;
/// Rows per chunk when a request asks for 0; also what the Batch Server
/// asks for, and the default chunk of `stream` and `upload`.
pub const DEFAULT_CHUNK_SIZE: usize = 300;
/// Port `embedstream serve` listens on by default (`GRPC_PORT`).
pub const DEFAULT_SERVE_PORT: u16 = 50051;
/// Port of the Batch Server's IngestDataStream by default (`BATCH_SERVER_PORT`).
pub const DEFAULT_BATCH_SERVER_PORT: u16 = 50052;
/// Length of a hyphenated UUID, the text form of `RecruitRow.id`.
pub const ID_LEN: usize = 36;
/// Bytes of the gRPC message prefix (compressed flag and 4-byte length).
pub const GRPC_PREFIX: usize = 5;

/// Upper bound of one encoded `RowChunk.rows` entry (tag, length and
/// `RecruitRow`) with a vector of `vector_dim` components and every string at
/// most `max_string` bytes: used to bound `chunk_size` below a message limit.
pub fn row_size_bound(vector_dim: usize, max_string: usize) -> usize {
    let field = |len: usize| 1 + encoded_len_varint(len as u64) + len;
    // id, three strings, exp_years (tag + at most 10 varint bytes), vector.
    let body = field(ID_LEN) + 3 * field(max_string) + 11 + field(vector_dim.saturating_mul(4));
    1 + encoded_len_varint(body as u64) + body
}

/// Why a checkpoint (`last_processed_uuid`, a Flight `after:` ticket,
/// `stream --checkpoint`) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// A UUID, but not in the hyphenated form.
    #[error("a UUID in the {form} form; send the hyphenated form (8-4-4-4-12 hex digits, any case, e.g. 01890a5d-ac96-774b-bcce-b302099a8057), as the Batch Server does")]
    Form {
        /// `braced`, `urn` or `simple`.
        form: &'static str,
    },
    /// Not a UUID at all.
    #[error("not a UUID ({0})")]
    Invalid(String),
}

/// A checkpoint in the one accepted text form: the hyphenated UUID
/// (`8-4-4-4-12` hex digits, upper or lower case), which the Batch Server
/// sends. The braced (`{…}`), `urn:uuid:` and simple (32 digits) forms are
/// refused with a message naming the form to send.
pub fn parse_checkpoint(text: &str) -> Result<uuid::Uuid, CheckpointError> {
    let hyphenated = text.len() == ID_LEN
        && text
            .bytes()
            .enumerate()
            .all(|(i, b)| matches!(i, 8 | 13 | 18 | 23) == (b == b'-'));
    match uuid::Uuid::try_parse(text) {
        Ok(id) if hyphenated => Ok(id),
        Ok(_) => Err(CheckpointError::Form {
            form: if text.starts_with('{') {
                "braced"
            } else if text.len() > 4 && text[..4].eq_ignore_ascii_case("urn:") {
                "urn"
            } else {
                "simple"
            },
        }),
        Err(e) => Err(CheckpointError::Invalid(e.to_string())),
    }
}

/// The DATA_LOSS status that ends a stream (StreamEmbedding or Flight DoGet)
/// reaching a record batch that cannot be decoded; `e` names the batch.
pub fn damaged(e: &impl std::fmt::Display) -> Status {
    Status::data_loss(format!(
        "the served file is damaged: {e}; the rows before it were sent: rebuild the file with `embedstream convert`, then resume after the last id you stored"
    ))
}

/// The UNAVAILABLE status that ends a stream whose file another process
/// opened for writing (or truncated) while it was served: the stream is cut
/// before any changed byte could be read.
pub fn rewritten(path: &std::path::Path) -> Status {
    Status::unavailable(format!(
        "the served file {} is being written in place by another process; this stream was ended before any changed row could be sent: resume after the last id you stored (the server reloads the file once the writer is done; replace it with `embedstream convert -o FILE --force` to avoid this)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_is_data_loss_naming_the_cause() {
        let status = damaged(&"record batch 3 cannot be decoded (x)");
        assert_eq!(status.code(), tonic::Code::DataLoss);
        assert!(status
            .message()
            .starts_with("the served file is damaged: record batch 3 cannot be decoded (x); "));
    }

    #[test]
    fn checkpoints_only_hyphenated() {
        let id = "01890a5d-ac96-774b-bcce-b302099a8057";
        let want = uuid::Uuid::try_parse(id).unwrap();
        assert_eq!(parse_checkpoint(id), Ok(want));
        assert_eq!(parse_checkpoint(&id.to_uppercase()), Ok(want));
        for (text, form) in [
            (format!("{{{id}}}"), "braced"),
            (format!("urn:uuid:{id}"), "urn"),
            (format!("URN:UUID:{id}"), "urn"),
            (id.replace('-', ""), "simple"),
        ] {
            let err = parse_checkpoint(&text).unwrap_err();
            assert_eq!(err, CheckpointError::Form { form }, "{text}");
            assert!(err.to_string().starts_with(&format!(
                "a UUID in the {form} form; send the hyphenated form"
            )));
        }
        assert!(matches!(
            parse_checkpoint("nope"),
            Err(CheckpointError::Invalid(_))
        ));
        assert!(parse_checkpoint("01890a5d-ac96-774b-bcce-b302099a805").is_err());
        assert!(parse_checkpoint("01890a5dac96-774b-bcce-b302099a8057-").is_err());
    }

    #[test]
    fn row_bound_grows_with_the_vector() {
        assert!(row_size_bound(384, 64) > 384 * 4 + ID_LEN);
        assert!(row_size_bound(0, 0) > ID_LEN);
    }
}

//! The server's limits under load (issue 10 item 3, issue 11 point 5): how
//! many data streams may run at once, how many streams one connection may
//! open, how much encoded-but-unsent RowChunk memory all streams together may
//! pin, and the deadlines that drop stalled streams, silent connections and
//! dead peers. [`LimitArgs`] are the `serve` flags; [`StreamSlots`] and
//! [`SendBudget`] enforce the first and third at run time.

use std::{sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tonic::Status;

/// Default of `--send-budget`: 256 MiB of encoded, unsent RowChunk bytes.
pub const DEFAULT_SEND_BUDGET: usize = 256 << 20;

/// Flags of `embedstream serve` that bound what clients can make it hold.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Data streams (StreamEmbedding and Flight DoGet) that may run at once,
    /// over all connections; the next one is refused at once with
    /// RESOURCE_EXHAUSTED (never queued). 0: no limit.
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: usize,
    /// Streams one HTTP/2 connection may have open at once (its
    /// SETTINGS_MAX_CONCURRENT_STREAMS; more are refused by HTTP/2 itself).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,
    /// Encoded RowChunk bytes that may wait for the network, over all
    /// streams (accepts `256MiB`, `1GB`, or a number of bytes). Past it, a
    /// stream waits for room before encoding its next chunk.
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub send_budget: usize,
    /// A stream holding encoded chunks that its client takes none of for
    /// this long is ended and its memory released (its connection is
    /// closed: HTTP/2 offers no other way to drop data queued for a peer
    /// that does not read).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,
    /// A connection that has not sent the HTTP/2 preface (or begun TLS)
    /// within this time is closed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// A connection with no request open for this long is closed.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_connection_timeout: Duration,
    /// HTTP/2 keepalive: PING a connection silent for this long, and close
    /// it if the PING is not answered within --keepalive-timeout.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,
    /// How long a keepalive PING may go unanswered.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,
}

impl Default for LimitArgs {
    fn default() -> Self {
        LimitArgs {
            max_concurrent_streams: 256,
            max_streams_per_connection: 32,
            send_budget: DEFAULT_SEND_BUDGET,
            stall_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            idle_connection_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

impl LimitArgs {
    /// Refuse settings that cannot work together: a RowChunk (up to
    /// `max_message_bytes`) must fit the send budget, or its bytes would be
    /// held beyond what the budget accounts.
    pub fn check(&self, max_message_bytes: usize) -> Result<(), String> {
        if self.send_budget < max_message_bytes {
            return Err(format!(
                "--send-budget {} is smaller than the largest RowChunk (--max-message-bytes {max_message_bytes}); raise the budget or lower the message limit",
                self.send_budget
            ));
        }
        Ok(())
    }
}

/// `256MiB`, `1GiB`, `64KiB`, `1GB`, `500MB`, `4096` (bytes).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size: give e.g. 256MiB, 1GB or 1048576"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    let bytes = n
        .checked_mul(scale)
        .and_then(|b| usize::try_from(b).ok())
        .filter(|&b| b <= Semaphore::MAX_PERMITS)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if bytes == 0 {
        return Err("the send budget must be more than 0 bytes".into());
    }
    Ok(bytes)
}

/// The global limit on concurrent data streams (`--max-concurrent-streams`).
#[derive(Debug, Clone)]
pub struct StreamSlots {
    limit: usize,
    semaphore: Option<Arc<Semaphore>>,
}

/// One running data stream's place; freed when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    _permit: Option<OwnedSemaphorePermit>,
}

impl StreamSlots {
    /// At most `limit` streams at once (0: no limit).
    pub fn new(limit: usize) -> Self {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        StreamSlots {
            limit,
            semaphore: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
        }
    }

    /// A place for one more stream of `rpc`, or RESOURCE_EXHAUSTED at once.
    pub fn try_acquire(&self, rpc: &str) -> Result<StreamSlot, Status> {
        let Some(semaphore) = &self.semaphore else {
            return Ok(StreamSlot { _permit: None });
        };
        match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Ok(StreamSlot {
                _permit: Some(permit),
            }),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                Err(Status::resource_exhausted(format!(
                    "{rpc} refused: {} data streams are running, the server's limit (--max-concurrent-streams); retry later",
                    self.limit
                )))
            }
        }
    }

    /// Streams running now.
    pub fn in_use(&self) -> usize {
        self.semaphore
            .as_ref()
            .map_or(0, |s| self.limit - s.available_permits())
    }
}

/// The global budget of encoded, unsent RowChunk bytes (`--send-budget`).
/// Each chunk holds a permit of its size from before it is encoded until
/// HTTP/2 has written and dropped its bytes.
#[derive(Debug)]
pub struct SendBudget {
    total: usize,
    semaphore: Arc<Semaphore>,
}

impl SendBudget {
    /// A budget of `bytes` (clamped to what a semaphore can count).
    pub fn new(bytes: usize) -> Self {
        let total = bytes.clamp(1, Semaphore::MAX_PERMITS);
        SendBudget {
            total,
            semaphore: Arc::new(Semaphore::new(total)),
        }
    }

    /// The budget in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes held by chunks now (encoded or being encoded, not yet written).
    pub fn pinned(&self) -> usize {
        self.total - self.semaphore.available_permits()
    }

    /// What a chunk of `bytes` asks for: at most the whole budget (a chunk
    /// larger than the budget waits until it is the only one) and what one
    /// acquisition can count.
    pub fn request(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.clamp(1, self.total)).unwrap_or(u32::MAX)
    }

    /// `n` bytes now, if free.
    pub fn try_acquire(&self, n: u32) -> Option<OwnedSemaphorePermit> {
        self.semaphore.clone().try_acquire_many_owned(n).ok()
    }

    /// `n` bytes, once free.
    pub fn acquire(
        &self,
        n: u32,
    ) -> impl std::future::Future<Output = Option<OwnedSemaphorePermit>> + Send + 'static {
        let semaphore = self.semaphore.clone();
        async move { semaphore.acquire_many_owned(n).await.ok() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64 KiB"), Ok(64 << 10));
        assert!(parse_bytes("0").unwrap_err().contains("more than 0"));
        assert!(parse_bytes("12 parsecs")
            .unwrap_err()
            .contains("unknown unit `parsecs`"));
        assert!(parse_bytes("lots").unwrap_err().contains("is not a size"));
    }

    #[test]
    fn slots_refuse_at_once_and_free_on_drop() {
        let slots = StreamSlots::new(2);
        let a = slots.try_acquire("StreamEmbedding").unwrap();
        let _b = slots.try_acquire("StreamEmbedding").unwrap();
        let err = slots.try_acquire("Flight DoGet").unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err
            .message()
            .starts_with("Flight DoGet refused: 2 data streams are running"));
        assert_eq!(slots.in_use(), 2);
        drop(a);
        assert!(slots.try_acquire("StreamEmbedding").is_ok());
        let unlimited = StreamSlots::new(0);
        let held: Vec<_> = (0..1000)
            .map(|_| unlimited.try_acquire("x").unwrap())
            .collect();
        assert_eq!(held.len(), 1000);
    }

    #[test]
    fn budget_counts_pinned_bytes() {
        let budget = SendBudget::new(100);
        assert_eq!(
            budget.request(1_000),
            100,
            "a chunk never asks for more than the budget"
        );
        let a = budget.try_acquire(60).unwrap();
        assert_eq!(budget.pinned(), 60);
        assert!(budget.try_acquire(50).is_none());
        drop(a);
        assert_eq!(budget.pinned(), 0);
    }
}

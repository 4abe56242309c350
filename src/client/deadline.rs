//! Deadlines of the clients (`stream`, `upload`): no call waits forever.
//!
//! Every attempt gets
//! - a connect timeout (`--connect-timeout`, default 10 s): the TCP
//!   connection and the HTTP/2 set-up;
//! - an idle deadline (`--idle-timeout`, default 30 s): the attempt fails
//!   with DEADLINE_EXCEEDED when it makes no progress for that long. For
//!   `upload`, progress is a message taken by the receiver's flow control,
//!   and after the last message the response must come within the deadline;
//!   for `stream`, progress is a message (chunk or record batch) received.
//!   The deadline is per message: a single message that takes longer than it
//!   to arrive (a 100 MiB chunk on a slow link) needs a longer --idle-timeout.
//!
//! The channel also sends HTTP/2 keepalive PINGs when the connection is
//! silent (see [`KEEPALIVE_STREAM`] and [`KEEPALIVE_UPLOAD`]). With
//! `upload`'s default 3 attempts and backoff (1 s, 2 s), a receiver that
//! accepts the connection and then never answers is reported after about
//! 3 × 30 s + 3 s ≈ 1.5 minutes, with the reason.

use std::{future::Future, time::Duration};

use tonic::{
    transport::{Channel, Endpoint},
    Status,
};

/// Keepalive PING interval of `stream` (against `embedstream serve`, which
/// accepts frequent PINGs).
pub const KEEPALIVE_STREAM: Duration = Duration::from_secs(30);
/// Keepalive PING interval of `upload`: grpc-java servers (the Batch
/// Server) answer PINGs more frequent than 5 minutes with GOAWAY
/// `too_many_pings` by default, so `upload` finds a dead receiver through
/// its idle deadline rather than through PINGs.
pub const KEEPALIVE_UPLOAD: Duration = Duration::from_secs(300);
/// How long a keepalive PING may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The deadline flags shared by `stream` and `upload`.
#[derive(Debug, Clone, clap::Args)]
pub struct TimeoutArgs {
    /// Time allowed to connect (TCP and HTTP/2 set-up), per attempt.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// An attempt fails (DEADLINE_EXCEEDED) after this long without
    /// progress: no message taken by the peer (upload) or received (stream),
    /// or no response after the last message.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
}

/// The deadlines of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect timeout.
    pub connect: Duration,
    /// Idle deadline.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        }
    }
}

impl From<&TimeoutArgs> for Timeouts {
    fn from(args: &TimeoutArgs) -> Self {
        Timeouts {
            connect: args.connect_timeout,
            idle: args.idle_timeout,
        }
    }
}

impl Timeouts {
    /// `endpoint` with the connect timeout and HTTP/2 keepalive every `keepalive`.
    pub fn apply(&self, endpoint: Endpoint, keepalive: Duration) -> Endpoint {
        endpoint
            .connect_timeout(self.connect)
            .http2_keep_alive_interval(keepalive)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(false)
    }

    /// Connect within the connect timeout.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Channel, Status> {
        match tokio::time::timeout(self.connect, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(Status::from_error(Box::new(e))),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no connection within {} (--connect-timeout)",
                humantime::format_duration(self.connect)
            ))),
        }
    }

    /// The status of an attempt idle for the deadline; `waiting` says what for.
    pub fn idle_status(&self, waiting: &str) -> Status {
        Status::deadline_exceeded(format!(
            "{waiting}: nothing for {} (--idle-timeout); the peer or the network is stalled",
            humantime::format_duration(self.idle)
        ))
    }

    /// `fut`, or the idle status if it takes longer than the idle deadline.
    pub async fn idle<T>(
        &self,
        waiting: &str,
        fut: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        tokio::time::timeout(self.idle, fut)
            .await
            .unwrap_or_else(|_| Err(self.idle_status(waiting)))
    }
}

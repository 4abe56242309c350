//! embedstream: pandas pickle → Arrow IPC file (once) → memory-mapped store → gRPC.
//!
//! Data flows one way, one module per stage:
//! [`pickle`] (safe opcode machine) → [`frame`] (DataFrame → Arrow columns) →
//! [`convert`] (key column, atomic IPC/Parquet write) → [`store`] (memory-mapped
//! file with its key index) → [`serve`] (StreamEmbedding + Flight) and [`client`].
//! See ARCHITECTURE.md for the invariants each stage relies on.

pub mod cli;
pub mod client;
pub mod commands;
pub mod convert;
pub mod dataset;
pub mod format;
pub mod frame;
pub mod fs;
pub mod inspect;
pub mod logging;
pub mod pickle;
pub mod progress;
pub mod proto;
pub mod rows;
pub mod serve;
pub mod stdout;
pub mod store;
pub mod tls;
pub mod wire;

//! The integration tests: one crate (as ripgrep does), one module per area,
//! so the library and `common` are compiled once for all of them.
//!
//! Real inputs and real peers: pickles written by real pandas versions
//! (`tests/fixtures/`), servers checked with tonic and arrow-flight clients.

mod common;

mod atomic_output;
mod cli;
mod client_deadlines;
mod client_stream;
mod client_upload;
mod convert_cli;
mod convert_write;
mod damaged_arrow;
mod dataset;
mod dataset_convert;
mod frame_fixtures;
mod health;
mod hot_swap;
mod output;
mod pickle_machine;
mod refresh;
mod secure;
mod serve_e2e;
mod serve_limits;
mod shards;
mod store;

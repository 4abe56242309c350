//! The integration tests: one crate (as ripgrep does), one module per area,
//! so the library and `common` are compiled once for all of them.
//!
//! Real inputs and real peers: pickles written by real pandas versions
//! (`tests/fixtures/`), servers checked with tonic and arrow-flight clients.

mod common;

mod cli;
mod client_stream;
mod client_upload;
mod convert_cli;
mod convert_write;
mod dataset;
mod frame_fixtures;
mod health;
mod pickle_machine;
mod secure;
mod serve_e2e;
mod store;

//! Arbitrary bytes through the pickle machine and the DataFrame rebuilder:
//! any input must end in Ok or a typed error, never a panic, a hang or a
//! giant allocation.
#![no_main]

use bytes::Bytes;
use embedstream::frame::{read_pickle_bytes, FrameOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    // The machine alone (every opcode path), then the whole reader.
    let _ = embedstream::pickle::load(bytes.clone());
    // A small arena budget, so that refusals happen at every kind of growth.
    let mut limits = embedstream::pickle::Limits::for_input(bytes.len());
    limits.max_arena_bytes = 1 << 14;
    let _ = embedstream::pickle::Machine::with_limits(bytes.clone(), limits).run();
    let _ = read_pickle_bytes(bytes.clone(), &FrameOptions::default());
    let _ = read_pickle_bytes(
        bytes,
        &FrameOptions {
            keep_float64: true,
            ..Default::default()
        },
    );
});

//! A pickle machine that never executes anything.
//!
//! [`load`] interprets pickle protocols 0–5 into a graph of plain values
//! ([`Value`] handles into a [`Heap`]). Every GLOBAL / STACK_GLOBAL / INST is
//! checked against the allow-list in [`allow`] and refused, with its
//! `module.name` and byte offset, before anything is built; calls of allowed
//! names are *recorded* ([`Object`]), not made. Hostile or broken input ends
//! in a [`PickleError`]: lengths are checked against the remaining input
//! before anything is sliced, the stack, MARK nesting, memo and decoded
//! bytes are bounded, and payloads are zero-copy slices of the input.

pub mod allow;
mod error;
mod machine;
mod source;
mod value;

pub use allow::Kind;
pub use error::PickleError;
pub use machine::{opcode_name, Limits, Loaded, Machine};
pub use source::PickleSource;
pub use value::{
    bigint_to_decimal, bigint_to_i128, py_float_repr, py_str_repr, Heap, How, Object, Value,
};

/// Run the machine over `data` with default limits.
pub fn load(data: bytes::Bytes) -> Result<Loaded, PickleError> {
    Machine::new(data).run()
}

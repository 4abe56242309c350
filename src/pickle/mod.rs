//! A pickle machine that never executes anything.
//!
//! [`load`] interprets pickle protocols 0–5 into a graph of plain values
//! ([`Value`] handles into a [`Heap`]). Every GLOBAL / STACK_GLOBAL / INST is
//! checked against the allow-list in [`allow`] and refused, with its
//! `module.name` and byte offset, before anything is built; calls of allowed
//! names are *recorded* ([`Object`]), not made. Hostile or broken input ends
//! in a [`PickleError`]: lengths are checked against the remaining input
//! before anything is sliced, the stack, MARK nesting and memo are bounded,
//! everything the machine holds is reserved within a memory budget
//! proportional to the input ([`Limits::max_arena_bytes`]), and payloads are
//! zero-copy slices of the input.

pub mod allow;
mod budget;
mod error;
mod machine;
mod source;
mod value;

pub use allow::{GlobalId, Kind};
pub use error::PickleError;
pub use machine::{
    arena_budget, opcode_name, Limits, Loaded, Machine, ARENA_FLOOR, DEFAULT_ARENA_FACTOR,
};
pub use source::PickleSource;
pub use value::{
    bigint_to_decimal, bigint_to_i128, py_float_repr, py_str_repr, BigIntId, BytesId, DictId, Heap,
    How, ListId, Object, ObjectId, SetId, StrId, TupleId, Value,
};

/// Run the machine over `data` with default limits.
pub fn load(data: bytes::Bytes) -> Result<Loaded, PickleError> {
    Machine::new(data).run()
}

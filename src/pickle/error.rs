//! Typed errors of the pickle machine.

/// Why a pickle was refused or could not be read. Every variant names the
/// byte offset of the opcode at fault.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// A global that is not on the allow-list (nothing was built or run).
    #[error(
        "refused global {global} at byte offset {offset}: it is not on the allow-list of \
         known DataFrame reconstructors (nothing was executed)"
    )]
    ForbiddenGlobal {
        /// `module.name` as the pickle spells it.
        global: String,
        /// Offset of the GLOBAL / STACK_GLOBAL / INST opcode.
        offset: u64,
    },
    /// An opcode family that is refused on principle (persistent ids,
    /// extension registry, out-of-band buffers, calls of non-globals).
    #[error("refused {opcode} at byte offset {offset}: {why}")]
    Refused {
        /// Opcode name.
        opcode: &'static str,
        /// Offset of the opcode.
        offset: u64,
        /// Explanation.
        why: String,
    },
    /// The input ends before an opcode's argument (or before STOP).
    #[error("truncated pickle: {what} at byte offset {offset} needs {need} more bytes, only {have} remain")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Offset of the opcode.
        offset: u64,
        /// Bytes needed.
        need: u64,
        /// Bytes left.
        have: u64,
    },
    /// A byte that is no pickle opcode.
    #[error("unknown opcode 0x{opcode:02x} at byte offset {offset}")]
    UnknownOpcode {
        /// The byte.
        opcode: u8,
        /// Its offset.
        offset: u64,
    },
    /// Structurally wrong input (stack underflow, bad memo index, bad text...).
    #[error("malformed pickle at byte offset {offset} ({opcode}): {what}")]
    Malformed {
        /// Opcode name.
        opcode: &'static str,
        /// Offset of the opcode.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A resource limit (stack, nesting, memo, decoded bytes) was exceeded.
    #[error("pickle exceeds a limit at byte offset {offset} ({opcode}): {what}")]
    Limit {
        /// Opcode name.
        opcode: &'static str,
        /// Offset of the opcode.
        offset: u64,
        /// Which limit.
        what: String,
    },
    /// The values the pickle builds would take more memory than the arena
    /// budget allows (see [`super::Limits::max_arena_bytes`]).
    #[error(
        "pickle exceeds its memory budget at byte offset {offset} ({opcode}): the values it \
         builds would take more than {budget} bytes, the budget for a {input}-byte input \
         (a pickle made to exhaust memory, or an unusually dense one)"
    )]
    MemoryBudget {
        /// Opcode name.
        opcode: &'static str,
        /// Offset of the opcode.
        offset: u64,
        /// The budget, in bytes.
        budget: u64,
        /// Size of the input, in bytes.
        input: u64,
    },
    /// The input has no bytes at all.
    #[error("the pickle is empty (0 bytes)")]
    Empty,
    /// The input does not look like a pickle at all.
    #[error("not a pickle: {why}")]
    NotAPickle {
        /// What gave it away.
        why: String,
    },
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl PickleError {
    /// Byte offset the error refers to, if any.
    pub fn offset(&self) -> Option<u64> {
        match self {
            PickleError::ForbiddenGlobal { offset, .. }
            | PickleError::Refused { offset, .. }
            | PickleError::Truncated { offset, .. }
            | PickleError::UnknownOpcode { offset, .. }
            | PickleError::Malformed { offset, .. }
            | PickleError::Limit { offset, .. }
            | PickleError::MemoryBudget { offset, .. } => Some(*offset),
            PickleError::Io { .. } | PickleError::Empty | PickleError::NotAPickle { .. } => None,
        }
    }
}

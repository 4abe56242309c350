//! A pickle machine that never executes anything (owned by the pickle work; stub).

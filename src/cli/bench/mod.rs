//! What `attn bench` measures and writes, without the timing loops: the sweep of shapes (or a ragged
//! batch beside a dense one, `varlen`; or decode steps, `decode`), the check a kernel passes before it
//! is timed, the time budget, the results schema and the tables.

pub mod budget;
pub mod decode;
pub mod results;
pub mod slice_check;
pub mod sweep;
pub mod table;
pub mod varlen;

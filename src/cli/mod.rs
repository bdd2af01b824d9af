//! The library half of the `attn` CLI (feature `cli`): what the binary and its tests share, so that the
//! tests use the very code the binary runs instead of including its files.
//!
//! - [`runner`]: where and which kernel (`auto`, `flash`, `emulator-naive`, `cpu`, ...), one parser, one
//!   mapping to a backend and a [`KernelChoice`](crate::KernelChoice), one place that runs a problem.
//! - [`inputs`]: random q, k and v in 16-byte-aligned host buffers.
//! - [`bench`]: the benchmark's results schema, sweep, sampled-row check and tables.
//!
//! The binary (`src/bin/attn/`) keeps the arguments, the drawing and the timing loops.

pub mod bench;
pub mod inputs;
pub mod runner;

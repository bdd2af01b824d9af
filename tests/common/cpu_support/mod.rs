//! Helpers shared by the CPU reference and backend tests (`tests/cpu_*.rs`), as `common::cpu_support`.

pub mod cases;
pub mod check;
pub mod streaming;

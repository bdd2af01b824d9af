//! Helpers shared by the CPU reference and backend tests (`tests/cpu_*.rs`). A test crate includes them
//! beside `mod common;` (whose `random` they use) with
//! `#[allow(dead_code)] #[path = "common/cpu_support/mod.rs"] mod cpu_support;`.

pub mod cases;
pub mod check;
pub mod streaming;

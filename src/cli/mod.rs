//! The library half of the `attn` CLI (feature `cli`): what the binary and its tests share, so that the
//! tests use the very code the binary runs instead of including its files.
//!
//! - [`runner`]: where and which kernel (`auto`, `flash`, `emulator-naive`, `cpu`, ...), one parser, one
//!   mapping to a backend and a [`KernelChoice`](crate::KernelChoice), one place that runs a problem.
//! - [`inputs`]: random q, k and v in 16-byte-aligned host buffers, allocated through
//!   [`crate::host_memory`].
//! - [`output`]: output paths made and probed before any work.
//! - [`bench`]: the benchmark's results schema, sweep (and the bounds of its settings), sampled-row
//!   check and tables.
//!
//! Every command validates its flags, its inputs' sizes against the host memory available and its output
//! paths before it starts working; what it refuses is a [`CliError::Rejected`] (exit code 2, as clap's own
//! argument errors), what fails later a [`CliError::Failed`] (exit code 1). Neither panics nor aborts.
//!
//! The binary (`src/bin/attn/`) keeps the arguments, the drawing and the timing loops.

pub mod bench;
pub mod inputs;
pub mod output;
pub mod runner;
pub mod sparse_spec;

use std::fmt;

use crate::error::{AttentionError, Memory};
use crate::host_memory;
use bench::table::human_bytes;

/// Why an `attn` command stopped.
#[derive(Debug)]
pub enum CliError {
    /// Refused before any work: an invalid flag or input file, a problem too large for this machine, an
    /// output that cannot be written. Exit code 2.
    Rejected(String),
    /// Failed while working. Exit code 1.
    Failed(String),
}

/// What the commands return.
pub type CliResult<T> = Result<T, CliError>;

/// Exit code of a command refused before any work (clap uses the same for unparseable arguments).
pub const EXIT_REJECTED: u8 = 2;
/// Exit code of a command that failed while working (or whose check failed).
pub const EXIT_FAILED: u8 = 1;

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Rejected(_) => EXIT_REJECTED,
            CliError::Failed(_) => EXIT_FAILED,
        }
    }
}

/// A [`CliError::Rejected`] with `error`'s message: `.map_err(reject)` on validation results.
pub fn reject(error: impl fmt::Display) -> CliError {
    CliError::Rejected(error.to_string())
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Rejected(message) | CliError::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for CliError {}

impl From<AttentionError> for CliError {
    fn from(error: AttentionError) -> Self {
        CliError::Failed(error.to_string())
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::Failed(message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        CliError::Failed(message.to_string())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(error: serde_json::Error) -> Self {
        CliError::Failed(error.to_string())
    }
}

/// The standard ALiBi slope (Press et al.) of query head `head` of `heads`: `2^(-8 (head + 1) / heads)`, a
/// geometric sequence from `2^(-8 / heads)` down to `2^-8`.
pub fn alibi_slope(head: usize, heads: usize) -> f32 {
    (-8.0 * (head + 1) as f64 / heads.max(1) as f64).exp2() as f32
}

/// The standard ALiBi slopes of query heads `first..first + count` of `heads`, in a buffer from the host
/// memory guard.
///
/// # Errors
/// [`AttentionError::OutOfMemory`] or [`AttentionError::SizeOverflow`].
pub fn alibi_slopes(first: usize, count: usize, heads: usize) -> crate::Result<Vec<f32>> {
    let mut slopes = host_memory::vec_filled("ALiBi slopes", count, 0.0f32)?;
    for (i, slope) in slopes.iter_mut().enumerate() {
        *slope = alibi_slope(first + i, heads);
    }
    Ok(slopes)
}

/// Bytes of a buffer of `dims` elements of `elem_bytes` each, `None` when the product overflows.
pub fn buffer_bytes(dims: &[usize], elem_bytes: usize) -> Option<usize> {
    dims.iter()
        .try_fold(elem_bytes, |total, &d| total.checked_mul(d))
}

/// Refuses, before any work, a command whose host buffers do not fit the memory this machine has
/// available ([`host_memory::check_budget`]): `buffers` are (what, bytes, `None` when the size overflows);
/// the message lists the largest ones and ends with `hint`.
///
/// # Errors
/// [`CliError::Rejected`] with the sizes in words.
pub fn check_host_memory(
    command: &str,
    buffers: &[(&str, Option<usize>)],
    hint: &str,
) -> CliResult<()> {
    let mut total = Some(0usize);
    for (what, bytes) in buffers {
        match bytes {
            Some(bytes) => total = total.and_then(|t| t.checked_add(*bytes)),
            None => {
                return Err(CliError::Rejected(format!(
                    "{command}: the size of the {what} overflows the address space: {hint}"
                )))
            }
        }
    }
    let Some(total) = total else {
        return Err(CliError::Rejected(format!(
            "{command}: the buffers' total size overflows the address space: {hint}"
        )));
    };
    match host_memory::check_budget("host buffers", total) {
        Ok(()) => Ok(()),
        Err(AttentionError::OutOfMemory {
            memory: Memory::Host,
            free,
            ..
        }) => {
            let mut parts: Vec<(&str, usize)> = buffers
                .iter()
                .filter_map(|(what, bytes)| bytes.filter(|b| *b > 0).map(|b| (*what, b)))
                .collect();
            parts.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
            let listed: Vec<String> = parts
                .iter()
                .take(3)
                .map(|(what, bytes)| format!("{what} {}", human_bytes(*bytes as u64)))
                .collect();
            Err(CliError::Rejected(format!(
                "{command} needs {} of host memory ({}) and {} is available: {hint}",
                human_bytes(total as u64),
                listed.join(", "),
                human_bytes(free as u64)
            )))
        }
        Err(other) => Err(CliError::Rejected(format!("{command}: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibi_slopes_are_the_standard_geometric_sequence() {
        assert_eq!(
            alibi_slopes(0, 8, 8).unwrap(),
            [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625]
        );
        assert_eq!(
            alibi_slopes(0, 4, 4).unwrap(),
            [0.25, 0.0625, 0.015625, 0.00390625]
        );
        assert_eq!(alibi_slopes(2, 1, 4).unwrap(), [0.015625]);
        assert!(alibi_slopes(0, 0, 4).unwrap().is_empty());
    }
}

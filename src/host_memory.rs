//! The one guard every host allocation sized by user input goes through: checked arithmetic, a budget
//! against the memory this machine has available, and a fallible reservation. A request too large for
//! the machine becomes [`AttentionError::OutOfMemory`] (or [`AttentionError::SizeOverflow`]) with the
//! numbers, never an abort.

use crate::binding::{check_inputs, HostOutput, HostTensors};
use crate::dtype::Element;
use crate::error::{AttentionError, Memory, Result};
use crate::metadata::Metadata;
use crate::plan::Plan;
use crate::problem::Tensor;

/// Bytes of `len` values of `T`, or a [`AttentionError::SizeOverflow`] naming `what`.
///
/// # Errors
/// [`AttentionError::SizeOverflow`] when the product does not fit a `usize`.
pub fn bytes_of<T>(what: &'static str, len: usize) -> Result<usize> {
    len.checked_mul(size_of::<T>())
        .ok_or_else(|| AttentionError::SizeOverflow {
            what,
            detail: format!("{len} elements of {} bytes", size_of::<T>()),
        })
}

/// Checks that `bytes` more bytes fit in the host memory available now (Linux: `MemAvailable` of
/// /proc/meminfo; elsewhere only the allocation itself can fail, which [`vec_filled`] also reports).
///
/// # Errors
/// [`AttentionError::OutOfMemory`] with the numbers.
pub fn check_budget(what: &'static str, bytes: usize) -> Result<()> {
    match available_bytes() {
        Some(free) if bytes > free => Err(AttentionError::OutOfMemory {
            memory: Memory::Host,
            what,
            needed: bytes,
            free,
        }),
        _ => Ok(()),
    }
}

/// A vector of `len` copies of `fill`, after the budget check; the reservation itself is fallible.
///
/// # Errors
/// [`AttentionError::SizeOverflow`] or [`AttentionError::OutOfMemory`] naming `what`.
pub fn vec_filled<T: Clone>(what: &'static str, len: usize, fill: T) -> Result<Vec<T>> {
    let bytes = bytes_of::<T>(what, len)?;
    check_budget(what, bytes)?;
    let mut buffer = Vec::new();
    buffer
        .try_reserve_exact(len)
        .map_err(|_| AttentionError::OutOfMemory {
            memory: Memory::Host,
            what,
            needed: bytes,
            free: available_bytes().unwrap_or(0),
        })?;
    buffer.resize(len, fill);
    Ok(buffer)
}

/// 16 bytes of f32 NaN: the unit of the naive workspace, so that it is 16-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct WorkspaceChunk([f32; 4]);

/// A host workspace for `forward_into` on the host backends: 16-byte aligned, NaN-filled (a kernel that
/// reads a score it never wrote then shows NaN), allocated through the memory guard.
pub struct HostWorkspace {
    chunks: Vec<WorkspaceChunk>,
    bytes: usize,
}

impl HostWorkspace {
    /// At least `bytes` bytes (e.g. `plan.workspace_bytes()`).
    ///
    /// # Errors
    /// [`AttentionError::SizeOverflow`] or [`AttentionError::OutOfMemory`].
    pub fn new(bytes: usize) -> Result<Self> {
        let chunks = vec_filled(
            "naive score workspace",
            bytes.div_ceil(size_of::<WorkspaceChunk>()),
            WorkspaceChunk([f32::NAN; 4]),
        )?;
        Ok(HostWorkspace { chunks, bytes })
    }

    /// The workspace as bytes.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the chunks are plain f32 data without padding, any byte pattern is a valid u8, the
        // length is within the allocation, and the view borrows the chunks exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.chunks.as_mut_ptr().cast(), self.bytes) }
    }
}

impl std::fmt::Debug for HostWorkspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostWorkspace({} bytes)", self.bytes)
    }
}

/// The convenience `forward` of the host backends (emulator, CPU): checks q, k and v against the plan,
/// allocates the outputs the plan needs within the memory budget (out zeroed, lse and weights NaN-filled so
/// that an element a kernel skips shows, the naive workspace NaN-filled and 16-byte aligned), then runs
/// `run` on the bundle (which binds it, with a ragged batch's `metadata`) and returns the outputs.
///
/// # Errors
/// [`AttentionError::BufferTooSmall`] for short inputs, [`AttentionError::SizeOverflow`] or
/// [`AttentionError::OutOfMemory`] (host) before any allocation, and whatever `run` returns.
pub fn forward_host<T: Element>(
    plan: &Plan,
    q: &[T],
    k: &[T],
    v: &[T],
    metadata: Option<&Metadata<'_>>,
    run: impl FnOnce(&Plan, HostTensors<'_, T>) -> Result<()>,
) -> Result<HostOutput<T>> {
    let problem = plan.problem();
    let shape = &problem.shape;
    check_inputs(problem, q.len(), k.len(), v.len())?;
    let out_len = problem.required_len(Tensor::Out)?;
    let lse_len = if plan.options().return_lse {
        problem.lse_elements()?
    } else {
        0
    };
    let weights_len = if plan.options().return_weights {
        shape.score_elements()?
    } else {
        0
    };
    let chunks = plan.workspace_bytes().div_ceil(size_of::<WorkspaceChunk>());
    let total = [
        bytes_of::<T>("attention output", out_len)?,
        bytes_of::<f32>("logsumexp", lse_len)?,
        bytes_of::<f32>("attention weights", weights_len)?,
        bytes_of::<WorkspaceChunk>("naive score workspace", chunks)?,
    ]
    .into_iter()
    .try_fold(0usize, usize::checked_add)
    .ok_or_else(|| AttentionError::SizeOverflow {
        what: "host outputs and workspace",
        detail: format!("{out_len} outputs, {lse_len} lse, {weights_len} weights, {chunks} x 16 workspace bytes"),
    })?;
    check_budget("attention outputs and workspace", total)?;
    let mut out = vec_filled("attention output", out_len, T::default())?;
    let mut lse = plan
        .options()
        .return_lse
        .then(|| vec_filled("logsumexp", lse_len, f32::NAN))
        .transpose()?;
    let mut weights = plan
        .options()
        .return_weights
        .then(|| vec_filled("attention weights", weights_len, f32::NAN))
        .transpose()?;
    let mut workspace = HostWorkspace::new(plan.workspace_bytes())?;
    let mut tensors = HostTensors::new(q, k, v, &mut out);
    tensors.lse = lse.as_deref_mut();
    tensors.weights = weights.as_deref_mut();
    tensors.workspace = (plan.workspace_bytes() > 0).then_some(workspace.as_bytes_mut());
    tensors.alibi_slopes = problem.alibi_slopes.as_deref();
    tensors.sinks = problem.sinks.as_deref();
    if let Some(m) = metadata {
        tensors = tensors.with_metadata(m.cu_seqlens_q, m.cu_seqlens_k, m.seqused_k, m.block_table);
    }
    run(plan, tensors)?;
    Ok(HostOutput { out, lse, weights })
}

/// Host memory available to new allocations, when the platform says.
pub fn available_bytes() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_and_budget_are_errors() {
        assert!(matches!(
            vec_filled::<f32>("test buffer", usize::MAX / 2, 0.0),
            Err(AttentionError::SizeOverflow {
                what: "test buffer",
                ..
            })
        ));
        if let Some(free) = available_bytes() {
            let err = vec_filled::<u8>("test buffer", free.saturating_mul(2).max(1 << 50), 0)
                .unwrap_err();
            assert!(matches!(
                err,
                AttentionError::OutOfMemory {
                    memory: Memory::Host,
                    what: "test buffer",
                    ..
                }
            ));
        }
        assert_eq!(vec_filled("small", 3, 7u16).unwrap(), vec![7, 7, 7]);
    }
}

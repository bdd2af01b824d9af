//! Ragged batches on the host: each sequence gathered into a dense problem of batch 1, so that the f64
//! reference and the CPU backend compute a ragged (packed or paged) batch with their dense code, and
//! tests can hold every kernel to the dense oracle sequence by sequence.

use crate::dtype::Element;
use crate::error::Result;
use crate::host_memory::{check_budget, vec_filled};
use crate::metadata::{sequence_spans, Metadata, SequenceSpan};
use crate::problem::{checked_product, AttentionProblem, AttentionShape, KeyStorage, Tensor};

/// One non-empty sequence of a ragged batch as a dense, contiguous `[1, seq, heads, d]` problem.
#[derive(Debug, Clone)]
pub struct DenseSequence<T> {
    /// Index in the batch.
    pub index: usize,
    /// Where it lives in the ragged buffers.
    pub span: SequenceSpan,
    /// The dense problem: the ragged problem's masks, scale, soft cap, ALiBi and sinks on this
    /// sequence's lengths.
    pub problem: AttentionProblem,
    /// Its queries, keys and values, gathered.
    pub q: Vec<T>,
    /// Keys.
    pub k: Vec<T>,
    /// Values.
    pub v: Vec<T>,
}

/// Validates the metadata ([`crate::validate_metadata`]) and calls `visit` with every sequence that has
/// at least one query row, gathered into a [`DenseSequence`] (q through the problem's strides, keys
/// from the packed rows or through the block table and page strides). One sequence is gathered at a
/// time, within the host memory budget.
///
/// # Errors
/// The metadata's validation errors, [`crate::AttentionError::OutOfMemory`] for a sequence too large
/// for this machine, or `visit`'s error.
pub fn for_each_sequence<T: Element>(
    problem: &AttentionProblem,
    metadata: &Metadata<'_>,
    q: &[T],
    k: &[T],
    v: &[T],
    mut visit: impl FnMut(DenseSequence<T>) -> Result<()>,
) -> Result<()> {
    problem.validate()?;
    problem.check_len(Tensor::Q, q.len())?;
    problem.check_len(Tensor::K, k.len())?;
    problem.check_len(Tensor::V, v.len())?;
    let s = problem.shape;
    let d = s.head_dim;
    sequence_spans(problem, metadata, |index, span| {
        if span.seq_q == 0 {
            return Ok(());
        }
        let shape = AttentionShape {
            batch: 1,
            seq_q: span.seq_q,
            seq_k: span.seq_k,
            ..s
        };
        let mut dense = AttentionProblem::new(shape).with_scale(problem.scale());
        dense.causal = problem.causal;
        dense.window = problem.window;
        dense.softcap = problem.softcap;
        dense.alibi_slopes = problem.alibi_slopes.clone();
        dense.sinks = problem.sinks.clone();
        dense.block_mask = problem.block_mask.clone();
        let q_len = checked_product("gathered queries", &[span.seq_q, s.heads_q, d])?;
        let kv_len = checked_product("gathered keys", &[span.seq_k, s.heads_kv, d])?;
        check_budget("a gathered sequence", (q_len + 2 * kv_len) * size_of::<T>())?;
        let mut gq = vec_filled("gathered queries", q_len, T::default())?;
        let mut gk = vec_filled("gathered keys", kv_len, T::default())?;
        let mut gv = vec_filled("gathered values", kv_len, T::default())?;
        for i in 0..span.seq_q {
            for h in 0..s.heads_q {
                let from = problem.q_strides.offset(0, span.q_begin + i, h, 0);
                gq[(i * s.heads_q + h) * d..][..d].copy_from_slice(&q[from..from + d]);
            }
        }
        for j in 0..span.seq_k {
            // (page, row) of key j: packed keys are rows of "page" 0.
            let (page, row) = match problem.ragged_layout().map(|r| r.keys) {
                Some(KeyStorage::Paged(paging)) => {
                    let table = metadata.block_table.unwrap_or_default();
                    let entry = table[index * paging.block_table_stride + j / paging.page_size];
                    (entry as usize, j % paging.page_size)
                }
                _ => (0, span.k_begin + j),
            };
            for h in 0..s.heads_kv {
                let to = (j * s.heads_kv + h) * d;
                let from_k = problem.k_strides.offset(page, row, h, 0);
                let from_v = problem.v_strides.offset(page, row, h, 0);
                gk[to..to + d].copy_from_slice(&k[from_k..from_k + d]);
                gv[to..to + d].copy_from_slice(&v[from_v..from_v + d]);
            }
        }
        visit(DenseSequence {
            index,
            span,
            problem: dense,
            q: gq,
            k: gk,
            v: gv,
        })
    })
}

/// FlashAttention's tolerance rule ([`crate::cpu::tolerance`]) for a ragged batch: the rule of each
/// sequence as a dense problem, the largest over the batch.
///
/// # Errors
/// As [`for_each_sequence`], and the reference's.
pub fn tolerance_ragged<T: Element>(
    problem: &AttentionProblem,
    metadata: &Metadata<'_>,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Result<f64> {
    let mut allowed = 0.0f64;
    for_each_sequence(problem, metadata, q, k, v, |seq| {
        let reference = crate::cpu::reference(&seq.problem, &seq.q, &seq.k, &seq.v)?;
        let bound = crate::cpu::tolerance(&seq.problem, &seq.q, &seq.k, &seq.v, &reference)?;
        allowed = allowed.max(bound);
        Ok(())
    })?;
    Ok(allowed)
}

//! The metadata of a ragged batch on the host: the lengths each sequence really has, and the opt-in
//! check of the device buffers' contents (for debugging; the hot path never reads them on the host).

use crate::error::{AttentionError, Result};
use crate::problem::{AttentionProblem, KeyStorage};

/// A ragged batch's i32 metadata buffers, as host slices (see [`crate::Ragged`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Metadata<'a> {
    /// `[batch + 1]` row offsets of each sequence's queries.
    pub cu_seqlens_q: &'a [i32],
    /// `[batch + 1]` row offsets of each sequence's keys (packed K/V).
    pub cu_seqlens_k: Option<&'a [i32]>,
    /// `[batch]` key counts.
    pub seqused_k: Option<&'a [i32]>,
    /// `[batch, block_table_stride]` physical pages (paged K/V).
    pub block_table: Option<&'a [i32]>,
}

/// Where one sequence of a ragged batch lives, as the kernels see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceSpan {
    /// First row of q and out.
    pub q_begin: usize,
    /// Query rows.
    pub seq_q: usize,
    /// First row of packed k and v (0 for a paged cache).
    pub k_begin: usize,
    /// Keys.
    pub seq_k: usize,
}

/// Checks the metadata of a ragged batch against its problem: lengths of the buffers, monotone
/// `cu_seqlens` starting at 0 within the buffers' rows, sequence lengths within the problem's bounds,
/// key counts within the keys a sequence can address, and every page a sequence uses inside the cache.
/// Call it where the metadata is on the host (copy it back first if it lives on the device): it is for
/// debugging, not the hot path, and the kernels never need it (they clamp bad values into the buffers).
///
/// # Errors
/// [`AttentionError::InvalidMetadata`] naming the first bad entry; [`AttentionError::InvalidArgument`]
/// for a dense problem, a missing or superfluous buffer; [`AttentionError::BufferTooSmall`] for a short
/// one.
pub fn validate_metadata(problem: &AttentionProblem, metadata: &Metadata<'_>) -> Result<()> {
    sequence_spans(problem, metadata, |_, _| Ok(()))
}

/// Validates the metadata (as [`validate_metadata`]) and calls `visit(b, span)` for every sequence.
///
/// # Errors
/// As [`validate_metadata`], or `visit`'s error.
pub fn sequence_spans(
    problem: &AttentionProblem,
    metadata: &Metadata<'_>,
    mut visit: impl FnMut(usize, SequenceSpan) -> Result<()>,
) -> Result<()> {
    let Some(ragged) = problem.ragged_layout() else {
        return Err(AttentionError::InvalidArgument(
            "metadata belongs to a ragged batch and this problem is dense".into(),
        ));
    };
    let [cu_q_len, cu_k_len, used_len, table_len] = problem.metadata_elements()?;
    let present =
        |name: &'static str, buffer: Option<&[i32]>, needed: Option<usize>| -> Result<()> {
            match (buffer, needed) {
                (None, Some(n)) => Err(AttentionError::InvalidArgument(format!(
                    "the problem needs a {name} buffer of {n} entries and none was passed"
                ))),
                (Some(_), None) => Err(AttentionError::InvalidArgument(format!(
                    "a {name} buffer was passed but the problem does not use one"
                ))),
                (Some(b), Some(n)) if b.len() < n => Err(AttentionError::BufferTooSmall {
                    tensor: name,
                    needed: n,
                    len: b.len(),
                }),
                _ => Ok(()),
            }
        };
    present("cu_seqlens_q", Some(metadata.cu_seqlens_q), cu_q_len)?;
    present("cu_seqlens_k", metadata.cu_seqlens_k, cu_k_len)?;
    present("seqused_k", metadata.seqused_k, used_len)?;
    present("block_table", metadata.block_table, table_len)?;

    let shape = &problem.shape;
    let bad = |buffer: &'static str, index: usize, value: i32, rule: String| {
        AttentionError::InvalidMetadata {
            buffer,
            index,
            value: i64::from(value),
            rule,
        }
    };
    let offsets = |buffer: &'static str, cu: &[i32], total: usize, bound: usize| -> Result<()> {
        if cu[0] != 0 {
            return Err(bad(buffer, 0, cu[0], "the first offset must be 0".into()));
        }
        for b in 0..shape.batch {
            let (start, end) = (cu[b], cu[b + 1]);
            if end < start {
                return Err(bad(
                    buffer,
                    b + 1,
                    end,
                    format!("offsets must not decrease (previous {start})"),
                ));
            }
            if end as usize > total {
                return Err(bad(
                    buffer,
                    b + 1,
                    end,
                    format!("beyond the {total} rows of the buffers"),
                ));
            }
            if (end - start) as usize > bound {
                return Err(bad(
                    buffer,
                    b + 1,
                    end,
                    format!(
                        "sequence {b} has {} rows, above the plan's bound {bound}",
                        end - start
                    ),
                ));
            }
        }
        Ok(())
    };
    offsets(
        "cu_seqlens_q",
        metadata.cu_seqlens_q,
        ragged.total_q,
        shape.seq_q,
    )?;
    let key_rows = match ragged.keys {
        KeyStorage::Packed { total_k } => {
            let cu_k = metadata.cu_seqlens_k.unwrap_or_default();
            // Packed keys may be fewer than the offsets say (seqused_k), never more than the plan's bound.
            let bound = if ragged.seqused_k {
                total_k
            } else {
                shape.seq_k
            };
            offsets("cu_seqlens_k", cu_k, total_k, bound)?;
            Some(cu_k)
        }
        KeyStorage::Paged(_) => None,
    };
    for b in 0..shape.batch {
        let q_begin = metadata.cu_seqlens_q[b] as usize;
        let seq_q = (metadata.cu_seqlens_q[b + 1] - metadata.cu_seqlens_q[b]) as usize;
        let (k_begin, room) = match key_rows {
            Some(cu_k) => (cu_k[b] as usize, (cu_k[b + 1] - cu_k[b]) as usize),
            None => (0, shape.seq_k),
        };
        let seq_k = match metadata.seqused_k {
            Some(used) => {
                let n = used[b];
                if n < 0 || n as usize > room.min(shape.seq_k) {
                    return Err(bad(
                        "seqused_k",
                        b,
                        n,
                        format!(
                            "must lie in 0..={} (the sequence's key rows and the plan's bound seq_k {})",
                            room.min(shape.seq_k),
                            shape.seq_k
                        ),
                    ));
                }
                n as usize
            }
            None => room,
        };
        if let (KeyStorage::Paged(paging), Some(table)) = (ragged.keys, metadata.block_table) {
            let row = b * paging.block_table_stride;
            for n in 0..seq_k.div_ceil(paging.page_size) {
                let page = table[row + n];
                if page < 0 || page as usize >= paging.num_pages {
                    return Err(bad(
                        "block_table",
                        row + n,
                        page,
                        format!(
                            "sequence {b} uses page {page} for keys from {} and the cache has {} pages",
                            n * paging.page_size,
                            paging.num_pages
                        ),
                    ));
                }
            }
        }
        visit(
            b,
            SequenceSpan {
                q_begin,
                seq_q,
                k_begin,
                seq_k,
            },
        )?;
    }
    Ok(())
}

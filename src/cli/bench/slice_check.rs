//! The check a kernel passes before it is timed: sampled query rows of the very output it computed on
//! the benchmarked shape, against the f64 reference computed for those rows only.
//!
//! Each sampled row `(b, h, i)` becomes a one-query problem over the keys that row sees (the causal
//! prefix, or all of them, less the blocks a block-sparse mask does not list), so the reference and FlashAttention's tolerance rule
//! ([`crate::cpu::compare::tolerance`]) cost `seq_k * head_dim` per row however large the
//! benchmarked problem is. The rule is applied to the sampled rows as one tensor: the largest error over
//! them against the largest allowance over them.
//!
//! A ragged batch's rows are (sequence, query head, row of the sequence): the query is found through
//! `cu_seqlens_q`, the keys one by one through `cu_seqlens_k` or the block table ([`RaggedLayout`]), and
//! the mask is the sequence's own (causal bottom-right on its lengths).
//!
//! A decode step's K and V repeat a pattern on the device ([`super::decode`]); the check reads them
//! through [`Elements::Periodic`], element `i` being `pattern[i % pattern.len()]`.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::results::Check;
use super::varlen::RaggedLayout;
use crate::cpu::{compare, reference};
use crate::{AttentionError, AttentionProblem, AttentionShape, Element, Result, Strides};

/// Rows a benchmark checks per kernel and shape.
pub const ROWS: usize = 32;

/// `count` distinct (batch, query head, query row) triples: the first and last rows of the first and
/// last (batch, head), the middle, and seeded random rows.
pub fn sample_rows(shape: &AttentionShape, count: usize, seed: u64) -> Vec<(usize, usize, usize)> {
    let (batches, heads, seq) = (shape.batch, shape.heads_q, shape.seq_q);
    let target = count.min(batches * heads * seq).max(1);
    let mut rows = BTreeSet::from([
        (0, 0, 0),
        (0, 0, seq - 1),
        (batches - 1, heads - 1, seq - 1),
        (batches - 1, heads - 1, 0),
        (batches / 2, heads / 2, seq / 2),
    ]);
    let mut rng = StdRng::seed_from_u64(seed);
    while rows.len() < target {
        rows.insert((
            rng.random_range(0..batches),
            rng.random_range(0..heads),
            rng.random_range(0..seq),
        ));
    }
    rows.into_iter().take(target).collect()
}

/// `count` distinct (sequence, query head, row of the sequence) triples of a ragged batch of sequences
/// `lengths` long: the first and last rows of the first and last sequence, the middle of the middle
/// one, and seeded random rows (a sequence drawn uniformly, then a row of it).
pub fn sample_ragged_rows(
    lengths: &[usize],
    heads: usize,
    count: usize,
    seed: u64,
) -> Vec<(usize, usize, usize)> {
    let nonempty: Vec<usize> = (0..lengths.len()).filter(|&b| lengths[b] > 0).collect();
    let (Some(&first), Some(&last)) = (nonempty.first(), nonempty.last()) else {
        return Vec::new();
    };
    let rows_total: usize = lengths.iter().sum::<usize>() * heads;
    let target = count.min(rows_total).max(1);
    let middle = nonempty[nonempty.len() / 2];
    let mut rows = BTreeSet::from([
        (first, 0, 0),
        (first, 0, lengths[first] - 1),
        (last, heads - 1, lengths[last] - 1),
        (last, heads - 1, 0),
        (middle, heads / 2, lengths[middle] / 2),
    ]);
    let mut rng = StdRng::seed_from_u64(seed);
    while rows.len() < target {
        let b = nonempty[rng.random_range(0..nonempty.len())];
        rows.insert((
            b,
            rng.random_range(0..heads),
            rng.random_range(0..lengths[b]),
        ));
    }
    rows.into_iter().take(target).collect()
}

/// A tensor's elements as the check reads them.
#[derive(Debug, Clone, Copy)]
pub enum Elements<'a, T> {
    /// The elements themselves.
    Slice(&'a [T]),
    /// Element `i` is `pattern[i % pattern.len()]`.
    Periodic(&'a [T]),
}

impl<T: Copy> Elements<'_, T> {
    /// Element `i`.
    ///
    /// # Errors
    /// [`AttentionError::InvalidArgument`] for an index past a slice, or an empty pattern.
    fn get(&self, i: usize) -> Result<T> {
        let value = match self {
            Elements::Slice(x) => x.get(i),
            Elements::Periodic(pattern) => pattern.get(i.checked_rem(pattern.len()).unwrap_or(0)),
        };
        value.copied().ok_or_else(|| {
            AttentionError::InvalidArgument(format!(
                "element {i} is outside the checked tensor's storage"
            ))
        })
    }
}

/// One checked query row: where it and the keys it sees live, as (batch, seq) indices of the strides.
struct RowView {
    query: (usize, usize),
    keys: Vec<(usize, usize)>,
}

/// Compares `out` (laid out by `problem.out_strides`) on `rows` with the f64 reference.
///
/// # Errors
/// [`AttentionError::InvalidArgument`] for a problem with ALiBi slopes (not rebuilt per row here), and
/// the reference's or the tolerance rule's errors.
pub fn check_rows<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    rows: &[(usize, usize, usize)],
) -> Result<Check> {
    check_rows_in(
        problem,
        [Elements::Slice(q), Elements::Slice(k), Elements::Slice(v)],
        out,
        rows,
    )
}

/// [`check_rows`] with q, k and v read as [`Elements`] (a decode step's periodic K and V).
///
/// # Errors
/// As [`check_rows`], and [`AttentionError::InvalidArgument`] for an element outside a tensor.
pub fn check_rows_in<T: Element>(
    problem: &AttentionProblem,
    inputs: [Elements<'_, T>; 3],
    out: &[T],
    rows: &[(usize, usize, usize)],
) -> Result<Check> {
    check_views(problem, inputs, out, rows, |b, i| {
        let (begin, end) = problem.key_range(i);
        Ok(RowView {
            query: (b, i),
            keys: (begin..end)
                .filter(|&j| problem.block_allows(i, j))
                .map(|j| (b, j))
                .collect(),
        })
    })
}

/// Compares the output of a ragged batch (`problem` a self-attention prefill whose sequence b has
/// `lengths[b]` queries and keys, its metadata `layout`) on `rows` from [`sample_ragged_rows`] with the
/// f64 reference.
///
/// # Errors
/// [`AttentionError::InvalidArgument`] for a row outside its sequence or a problem with ALiBi slopes;
/// the reference's or the tolerance rule's errors.
pub fn check_ragged_rows<T: Element>(
    problem: &AttentionProblem,
    layout: &RaggedLayout,
    lengths: &[usize],
    [q, k, v, out]: [&[T]; 4],
    rows: &[(usize, usize, usize)],
) -> Result<Check> {
    let inputs = [Elements::Slice(q), Elements::Slice(k), Elements::Slice(v)];
    check_views(problem, inputs, out, rows, |b, i| {
        let length = lengths.get(b).copied().unwrap_or(0);
        if i >= length {
            return Err(AttentionError::InvalidArgument(format!(
                "row {i} of sequence {b} is outside its {length} rows"
            )));
        }
        // The sequence alone: its own lengths, the problem's mask.
        let shape = AttentionShape::new(1, length, 1, problem.shape.head_dim);
        let mut sequence = AttentionProblem::new(shape).with_causal(problem.causal);
        sequence.window = problem.window;
        let (begin, end) = sequence.key_range(i);
        Ok(RowView {
            query: (0, layout.query_row(b) + i),
            // A block mask applies to each sequence in its own coordinates.
            keys: (begin..end)
                .filter(|&j| problem.block_allows(i, j))
                .map(|j| layout.key_position(b, j))
                .collect(),
        })
    })
}

/// The check of both layouts: `view(b, i)` says where row i of batch entry b and its keys live.
fn check_views<T: Element>(
    problem: &AttentionProblem,
    [q, k, v]: [Elements<'_, T>; 3],
    out: &[T],
    rows: &[(usize, usize, usize)],
    view: impl Fn(usize, usize) -> Result<RowView>,
) -> Result<Check> {
    if problem.alibi_slopes.is_some() {
        return Err(AttentionError::InvalidArgument(
            "the sampled-row check does not rebuild ALiBi biases".into(),
        ));
    }
    let d = problem.shape.head_dim;
    let ratio = problem.heads_ratio();
    let mut max_abs_error = 0.0f64;
    let mut allowed = 0.0f64;
    for &(b, h, i) in rows {
        let RowView { query, keys } = view(b, i)?;
        let hk = h / ratio;
        let gather = |x: &Elements<'_, T>,
                      strides: &Strides,
                      rows: &[(usize, usize)],
                      head: usize|
         -> Result<Vec<T>> {
            let mut gathered = Vec::with_capacity(rows.len() * d);
            for &(at, s) in rows {
                for c in 0..d {
                    gathered.push(x.get(strides.offset(at, s, head, c))?);
                }
            }
            Ok(gathered)
        };
        let q_row = gather(&q, &problem.q_strides, &[query], h)?;
        let k_rows = gather(&k, &problem.k_strides, &keys, hk)?;
        let v_rows = gather(&v, &problem.v_strides, &keys, hk)?;
        let keys = keys.len();
        // One query over exactly the keys row i sees: no mask left to apply.
        let mut row_problem =
            AttentionProblem::new(AttentionShape::new(1, 1, 1, d).with_seq_k(keys))
                .with_scale(problem.scale());
        if let Some(cap) = problem.softcap {
            row_problem = row_problem.with_softcap(cap);
        }
        let expected = reference::reference(&row_problem, &q_row, &k_rows, &v_rows)?;
        allowed = allowed.max(compare::tolerance(
            &row_problem,
            &q_row,
            &k_rows,
            &v_rows,
            &expected,
        )?);
        for (c, &e) in expected.out.iter().enumerate() {
            let actual = out[problem.out_strides.offset(query.0, query.1, h, c)].to_f64();
            let error = if actual.is_finite() {
                (actual - e).abs()
            } else {
                f64::INFINITY
            };
            max_abs_error = max_abs_error.max(error);
        }
    }
    Ok(Check {
        rows: rows.len(),
        max_abs_error,
        allowed,
        passed: max_abs_error <= allowed,
    })
}

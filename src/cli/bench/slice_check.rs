//! The check a kernel passes before it is timed: sampled query rows of the very output it computed on
//! the benchmarked shape, against the f64 reference computed for those rows only.
//!
//! Each sampled row `(b, h, i)` becomes a one-query problem over the keys that row sees (the causal
//! prefix, or all of them), so the reference and FlashAttention's tolerance rule
//! ([`crate::cpu::compare::tolerance`]) cost `seq_k * head_dim` per row however large the
//! benchmarked problem is. The rule is applied to the sampled rows as one tensor: the largest error over
//! them against the largest allowance over them.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::results::Check;
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
        let (begin, end) = problem.key_range(i);
        let keys = end.saturating_sub(begin);
        let hk = h / ratio;
        let gather = |x: &[T], strides: &Strides, s: usize, head: usize| -> Vec<T> {
            (0..d).map(|c| x[strides.offset(b, s, head, c)]).collect()
        };
        let q_row = gather(q, &problem.q_strides, i, h);
        let k_rows: Vec<T> = (begin..end)
            .flat_map(|j| gather(k, &problem.k_strides, j, hk))
            .collect();
        let v_rows: Vec<T> = (begin..end)
            .flat_map(|j| gather(v, &problem.v_strides, j, hk))
            .collect();
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
            let actual = out[problem.out_strides.offset(b, i, h, c)].to_f64();
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

//! Measuring a backend against the reference: error statistics, and the bounds the tests hold every
//! backend to.
//!
//! - Output: FlashAttention's tolerance rule, [`tolerance`].
//! - Logsumexp and weights (f32 results that are never rounded to the input precision): a forward
//!   error bound for f32 accumulation, [`softmax_tolerance`].

use crate::problem::Tensor;
use std::fmt;

use crate::cpu::reference::{naive_in_precision, ReferenceOutput};
use crate::dtype::Element;
use crate::error::{AttentionError, Result};
use crate::problem::AttentionProblem;

/// Unit roundoff of f32 (half of `f32::EPSILON`).
const F32_UNIT_ROUNDOFF: f64 = f32::EPSILON as f64 / 2.0;

/// How far one tensor is from the reference.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ErrorStats {
    /// Largest absolute error; infinite when any element is [`non_finite`](Self::non_finite).
    pub max_abs: f64,
    /// Mean absolute error over all elements (0 for an empty tensor; infinite as `max_abs` is).
    pub mean_abs: f64,
    /// Logical index of the first element with the largest error: `[b, s, h, d]` for an output,
    /// `[b, h, s, 0]` for a logsumexp, `[b, h, i, j]` for weights, `[0, 0, 0, i]` from
    /// [`compare_contiguous`]. `None` when every element matches exactly.
    pub worst_index: Option<[usize; 4]>,
    /// Elements where either value is NaN (even NaN against NaN), or one is infinite and the other is
    /// not the same infinity (`-inf` against `-inf` is an exact match). Each counts as an infinite
    /// error.
    pub non_finite: usize,
}

impl fmt::Display for ErrorStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max abs error {:.3e}, mean {:.3e}",
            self.max_abs, self.mean_abs
        )?;
        match self.worst_index {
            Some(index) => write!(f, ", worst at {index:?}")?,
            None => f.write_str(", exact")?,
        }
        write!(f, ", {} non-finite", self.non_finite)
    }
}

/// Running statistics over (index, actual, expected) triples.
#[derive(Default)]
struct Accumulator {
    stats: ErrorStats,
    sum_abs: f64,
    count: usize,
}

impl Accumulator {
    fn push(&mut self, index: [usize; 4], actual: f64, expected: f64) {
        let error = if actual == expected {
            0.0
        } else if actual.is_finite() && expected.is_finite() {
            (actual - expected).abs()
        } else {
            self.stats.non_finite += 1;
            f64::INFINITY
        };
        self.sum_abs += error;
        self.count += 1;
        if error > self.stats.max_abs {
            self.stats.max_abs = error;
            self.stats.worst_index = Some(index);
        }
    }

    fn finish(mut self) -> ErrorStats {
        if self.count > 0 {
            self.stats.mean_abs = self.sum_abs / self.count as f64;
        }
        self.stats
    }
}

/// The statistics of a comparison whose lengths do not match: every expected element counts as an
/// infinite (non-finite) error, so no bound accepts it.
fn mismatch(elements: usize) -> ErrorStats {
    ErrorStats {
        max_abs: f64::INFINITY,
        mean_abs: f64::INFINITY,
        worst_index: None,
        non_finite: elements.max(1),
    }
}

/// Compares an output laid out per `problem.out_strides` with a contiguous
/// `[batch, seq_q, heads_q, head_dim]` expectation (such as [`ReferenceOutput::out`]). When `expected`
/// does not hold exactly `batch * seq_q * heads_q * head_dim` values, or `out` is shorter than the out
/// strides reach, the result is a mismatch (infinite error, every element non-finite), not a panic.
pub fn compare_output<T: Element>(
    problem: &AttentionProblem,
    out: &[T],
    expected: &[f64],
) -> ErrorStats {
    let s = problem.shape;
    let (sq, hq, d) = (s.seq_q, s.heads_q, s.head_dim);
    let elements = s
        .batch
        .checked_mul(sq)
        .and_then(|n| n.checked_mul(hq))
        .and_then(|n| n.checked_mul(d));
    let reach = problem.required_len(Tensor::Out).ok();
    if elements != Some(expected.len()) || reach.is_none_or(|needed| out.len() < needed) {
        return mismatch(expected.len());
    }
    let mut acc = Accumulator::default();
    let mut expected = expected.iter();
    for b in 0..s.batch {
        for i in 0..sq {
            for h in 0..hq {
                for x in 0..d {
                    let actual = out[problem.out_strides.offset(b, i, h, x)].to_f64();
                    acc.push([b, i, h, x], actual, *expected.next().unwrap_or(&f64::NAN));
                }
            }
        }
    }
    acc.finish()
}

/// Compares contiguous values with a row-major expectation of logical shape `dims` (used for the
/// index in [`ErrorStats::worst_index`]). Only the first `expected.len()` values of `actual` are read.
/// When `dims` does not multiply to `expected.len()`, or `actual` is shorter than `expected`, the result
/// is a mismatch (infinite error, every element non-finite), not a panic.
pub fn compare_shaped(actual: &[f32], expected: &[f64], dims: [usize; 4]) -> ErrorStats {
    let elements = dims.iter().try_fold(1usize, |n, &x| n.checked_mul(x));
    if elements != Some(expected.len()) || actual.len() < expected.len() {
        return mismatch(expected.len());
    }
    let mut acc = Accumulator::default();
    for (n, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let mut rest = n;
        let mut index = [0usize; 4];
        for axis in (0..4).rev() {
            index[axis] = rest % dims[axis];
            rest /= dims[axis];
        }
        acc.push(index, f64::from(a), e);
    }
    acc.finish()
}

/// Compares contiguous values (a logsumexp, weights) with their expectation; the worst index is
/// reported as `[0, 0, 0, i]`. `-inf` against `-inf` counts as exact. A short `actual` is a mismatch.
pub fn compare_contiguous(actual: &[f32], expected: &[f64]) -> ErrorStats {
    compare_shaped(actual, expected, [1, 1, 1, expected.len()])
}

/// Compares a `[batch, heads_q, seq_q]` logsumexp with the reference's ([`ReferenceOutput::lse`]);
/// lengths that do not match are a mismatch, as in [`compare_shaped`].
pub fn compare_lse(problem: &AttentionProblem, actual: &[f32], expected: &[f64]) -> ErrorStats {
    let s = problem.shape;
    compare_shaped(actual, expected, [s.batch, s.heads_q, s.seq_q, 1])
}

/// Compares `[batch, heads_q, seq_q, seq_k]` weights with the reference's
/// ([`ReferenceOutput::weights`]); lengths that do not match are a mismatch, as in [`compare_shaped`].
pub fn compare_weights(problem: &AttentionProblem, actual: &[f32], expected: &[f64]) -> ErrorStats {
    let s = problem.shape;
    compare_shaped(actual, expected, [s.batch, s.heads_q, s.seq_q, s.seq_k])
}

/// The largest output error FlashAttention's tolerance rule allows for these inputs:
///
/// `2 * max|naive_in_precision - reference.out| + 8 * f32::EPSILON * (1 + max|reference.out|)`.
///
/// The first term is the rule of FlashAttention's tests: a backend may be at most twice as far from the
/// exact result as the naive formula computed in the input precision (see [`naive_in_precision`]). The
/// second is an absolute floor that this crate adds (FlashAttention adds a similar `fwd_atol`): for f32
/// inputs the naive baseline itself is computed in f32 and can land within a rounding or two of the
/// exact result, sometimes exactly on it, while any backend that sums in a different order (tiles,
/// online softmax, rescaling) legitimately differs by a few f32 roundings of the output's magnitude. For
/// f16 and bf16 the floor is negligible next to the first term.
///
/// # Errors
/// As [`crate::cpu::reference()`], and [`AttentionError::InvalidArgument`] when the baseline is not
/// finite (a score overflowed the input precision, as it would in PyTorch): no tolerance follows from
/// it, so bound such inputs another way.
pub fn tolerance<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
    reference: &ReferenceOutput,
) -> Result<f64> {
    let naive = naive_in_precision(problem, q, k, v)?;
    if naive.len() != reference.out.len() {
        return Err(AttentionError::InvalidArgument(format!(
            "the reference output holds {} values, the problem has {}: compute the reference for this \
             problem",
            reference.out.len(),
            naive.len()
        )));
    }
    let mut baseline = 0.0f64;
    let mut magnitude = 0.0f64;
    for (&n, &r) in naive.iter().zip(&reference.out) {
        let error = (f64::from(n) - r).abs();
        if !error.is_finite() {
            return Err(AttentionError::InvalidArgument(format!(
                "the {} baseline of the tolerance rule is not finite (a score overflows {}): bound the \
                 error of these inputs another way, or use smaller values or a smaller scale",
                T::DTYPE,
                T::DTYPE
            )));
        }
        baseline = baseline.max(error);
        magnitude = magnitude.max(r.abs());
    }
    Ok(2.0 * baseline + 8.0 * f64::from(f32::EPSILON) * (1.0 + magnitude))
}

/// Error bounds for the logsumexp and the weights, which every backend returns in f32 without rounding
/// them to the input precision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftmaxTolerance {
    /// Largest allowed absolute error of a finite logsumexp value.
    pub lse: f64,
    /// Largest allowed absolute error of an attention weight.
    pub weights: f64,
}

/// Bounds on the logsumexp and weight errors of any backend that computes scores, exponentials and
/// sums in f32 (in any order, with or without online rescaling, through `exp` or `exp2`), and the soft
/// cap and ALiBi bias, when set, in f32 on the scaled scores (`tanh` within 2 ulp, as libm's and
/// CUDA's `tanhf` are).
///
/// With `u = 2^-24`, `d = head_dim`, `A` a bound on `|scale| * sum_x |q_x k_x|` over every query/key
/// pair (from Cauchy-Schwarz: `|scale| * max ||q_i|| * max ||k_j||` within each batch and key/value
/// head group), and `n = seq_k`:
///
/// - the scores after the soft cap and ALiBi are bounded by `A' = C + M * D`, where `C = min(A,
///   softcap)` (`|softcap * tanh(s / softcap)| <= min(|s|, softcap)`; `C = A` without a cap), `M` is
///   the largest `|m_h|` and `D` the largest `|c - j|` over the visible (query, key) pairs (0 without
///   ALiBi), so `A' = A` when neither is set;
/// - score error `ds = (d + 4) u A` (the dot-product bound `gamma_d * sum |q_x k_x|`, the rounding of
///   f32 products, the scale and a change of base), plus, with a soft cap, `6 u C` (`tanh` is
///   1-Lipschitz, so the dot product's error passes through unamplified; the division by the cap
///   perturbs the result by at most `u min(|s|, 0.45 softcap)`, `tanh` by 2 ulp (`4 u`) and the
///   multiplication by `u`, each relative to a value of at most `C`), plus, with ALiBi, `4 u A'` (the
///   rounding of `m_h * |c - j|` and of the distance itself, of the subtraction, and of the change of
///   base on the larger score);
/// - relative error of the softmax sum `dl = (4 n + 8) u` (each exponential within `2u`, each of up to
///   `n` rescalings within `3u`, and the sum's own roundings);
/// - `lse = 2 (ds + dl + 2u (A' + ln n + 1))`, `weights = 2 (2 ds + dl + 4u)`.
///
/// These are first-order worst-case bounds with a factor 2 margin, so they are loose: on random
/// inputs about 100 times the lse error and 10^4 times the weight error of the CPU backend. They
/// catch masking, indexing, rescaling and NaN bugs, not last-bit differences. For the output, use
/// [`tolerance`].
///
/// # Errors
/// As [`crate::cpu::reference()`] (validation and q/k lengths).
pub fn softmax_tolerance<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
) -> Result<SoftmaxTolerance> {
    problem.validate()?;
    let s = problem.shape;
    let out_len = problem.required_len(Tensor::Out)?;
    problem.check_lengths(q.len(), k.len(), problem.required_len(Tensor::V)?, out_len)?;
    let norm = |row: &mut dyn Iterator<Item = f64>| row.map(|x| x * x).sum::<f64>().sqrt();
    let ratio = problem.heads_ratio();
    let mut bound = 0.0f64;
    for b in 0..s.batch {
        for hk in 0..s.heads_kv {
            let mut q_max = 0.0f64;
            for h in hk * ratio..(hk + 1) * ratio {
                for i in 0..s.seq_q {
                    let offset = problem.q_strides.offset(b, i, h, 0);
                    let row = &q[offset..offset + s.head_dim];
                    q_max = q_max.max(norm(&mut row.iter().map(|x| x.to_f64())));
                }
            }
            let mut k_max = 0.0f64;
            for j in 0..s.seq_k {
                let offset = problem.k_strides.offset(b, j, hk, 0);
                let row = &k[offset..offset + s.head_dim];
                k_max = k_max.max(norm(&mut row.iter().map(|x| x.to_f64())));
            }
            bound = bound.max(q_max * k_max);
        }
    }
    let u = F32_UNIT_ROUNDOFF;
    let a = f64::from(problem.scale()).abs() * bound;
    let n = s.seq_k as f64;
    let mut score = (s.head_dim as f64 + 4.0) * u * a;
    // Bound on the adjusted scores: the soft cap first, then the ALiBi bias.
    let capped = problem.softcap.map_or(a, |cap| a.min(f64::from(cap)));
    let adjusted = capped + alibi_bias_bound(problem);
    if problem.softcap.is_some() {
        score += 6.0 * u * capped;
    }
    if problem.alibi_slopes.is_some() {
        score += 4.0 * u * adjusted;
    }
    let sum = (4.0 * n + 8.0) * u;
    Ok(SoftmaxTolerance {
        lse: 2.0 * (score + sum + 2.0 * u * (adjusted + n.max(1.0).ln() + 1.0)),
        weights: 2.0 * (2.0 * score + sum + 4.0 * u),
    })
}

/// The largest `|m_h| * |c - j|` ALiBi adds to a visible score (0 without ALiBi): the largest slope
/// magnitude times the largest distance to the diagonal over every row's key range.
fn alibi_bias_bound(problem: &AttentionProblem) -> f64 {
    let Some(slopes) = &problem.alibi_slopes else {
        return 0.0;
    };
    let s = problem.shape;
    let slope = slopes
        .iter()
        .fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
    let mut distance = 0u64;
    for i in 0..s.seq_q {
        let (begin, end) = problem.key_range(i);
        if begin < end {
            let diagonal = i as i64 + s.seq_k as i64 - s.seq_q as i64;
            distance = distance
                .max((diagonal - begin as i64).unsigned_abs())
                .max((diagonal - (end - 1) as i64).unsigned_abs());
        }
    }
    slope * distance as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::AttentionShape;

    #[test]
    fn mismatched_lengths_are_infinite_errors_not_panics() {
        let problem = AttentionProblem::new(AttentionShape::new(1, 2, 1, 2));
        let stats = compare_output(&problem, &[0.0f32; 4], &[0.0; 3]);
        assert_eq!((stats.max_abs, stats.non_finite), (f64::INFINITY, 3));
        let stats = compare_output(&problem, &[0.0f32; 3], &[0.0; 4]);
        assert_eq!(stats.max_abs, f64::INFINITY);
        assert_eq!(
            compare_shaped(&[0.0; 4], &[0.0; 4], [1, 1, 1, 5]).non_finite,
            4
        );
        assert_eq!(
            compare_contiguous(&[0.0; 2], &[0.0; 3]).max_abs,
            f64::INFINITY
        );
        assert_eq!(
            compare_output(&problem, &[0.5f32; 4], &[0.5; 4]),
            ErrorStats::default()
        );
    }
}

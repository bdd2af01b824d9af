//! Score adjustments of the CPU backend, applied to one row of scaled scores `S = scale * q K^T` at a
//! time: the soft cap and ALiBi bias ([`Adjust`]). (A block mask needs none: the tile walk visits only
//! listed keys, src/cpu/tile.rs.)

use crate::problem::AttentionProblem;

/// The larger of two scores, NaN if either is (`f32::max` would drop a NaN and hide bad inputs).
pub(super) fn max_keeping_nan(max: f32, x: f32) -> f32 {
    if x.is_nan() || x > max {
        x
    } else {
        max
    }
}

/// Soft cap and ALiBi applied in f32 to the scaled scores of one row, when the problem sets either.
pub(super) struct Adjust<'a> {
    /// The soft cap, if set.
    softcap: Option<f32>,
    /// ALiBi slopes `[heads_q]`, if set.
    slopes: Option<&'a [f32]>,
    /// `seq_k - seq_q`: the diagonal of row `i` is `i + offset`.
    diagonal_offset: i64,
}

impl<'a> Adjust<'a> {
    /// `None` when the problem leaves the scores alone (the default path pays nothing).
    pub(super) fn new(problem: &'a AttentionProblem) -> Option<Self> {
        problem.adjusts_scores().then(|| Adjust {
            softcap: problem.softcap,
            slopes: problem.alibi_slopes.as_deref(),
            diagonal_offset: problem.shape.seq_k as i64 - problem.shape.seq_q as i64,
        })
    }

    /// `scores` are the scaled scores of query row `i` of query head `head` against keys `first_key..`:
    /// each becomes `softcap * tanh(s / softcap)`, then gets `-m_head * |c - j|` added, in f32.
    pub(super) fn apply(&self, head: usize, i: usize, first_key: usize, scores: &mut [f32]) {
        if let Some(cap) = self.softcap {
            for s in scores.iter_mut() {
                *s = cap * (*s / cap).tanh();
            }
        }
        if let Some(slopes) = self.slopes {
            let slope = slopes[head];
            let diagonal = i as i64 + self.diagonal_offset;
            for (j, s) in (first_key..).zip(scores.iter_mut()) {
                *s -= slope * (diagonal - j as i64).unsigned_abs() as f32;
            }
        }
    }
}

//! An independent f64 formulation of attention from the definitions (per-key mask test, soft cap and
//! ALiBi written out, online softmax), and the f64 comparisons used against it.

use cuda_attention::cpu::ReferenceOutput;
use cuda_attention::{AttentionProblem, Element, Strides};

/// The diagonal of query row `i`, from the definition: `c = i + seq_k - seq_q` (negative when seq_q >
/// seq_k).
pub fn diagonal(problem: &AttentionProblem, i: usize) -> i64 {
    i as i64 + problem.shape.seq_k as i64 - problem.shape.seq_q as i64
}

/// Whether key `j` is hidden from query row `i`, tested key by key from the definitions: the causal
/// mask hides `j > c`, the window's left side `j < c - left`, its right side `j > c + right`.
pub fn hidden(problem: &AttentionProblem, i: usize, j: usize) -> bool {
    let (c, j) = (diagonal(problem, i), j as i64);
    let causal = problem.causal && j > c;
    let left = matches!(problem.window.left, Some(left) if j < c - left as i64);
    let right = matches!(problem.window.right, Some(right) if j > c + right as i64);
    causal || left || right
}

/// Whether query row `i` sees no key at all.
pub fn sees_nothing(problem: &AttentionProblem, i: usize) -> bool {
    (0..problem.shape.seq_k).all(|j| hidden(problem, i, j))
}

/// The scaled score `s` of (head `h`, row `i`, key `j`) after the soft cap and ALiBi, from their
/// definitions: `cap * tanh(s / cap)`, with tanh written as `1 - 2 / (e^{2x} + 1)` (not the library
/// tanh), then `- m_h * |c - j|`.
pub fn adjusted(problem: &AttentionProblem, h: usize, i: usize, j: usize, s: f64) -> f64 {
    let mut s = s;
    if let Some(cap) = problem.softcap {
        let cap = f64::from(cap);
        s = cap * (1.0 - 2.0 / ((2.0 * s / cap).exp() + 1.0));
    }
    if let Some(slopes) = &problem.alibi_slopes {
        s -= f64::from(slopes[h]) * (diagonal(problem, i) - j as i64).abs() as f64;
    }
    s
}

/// An independent formulation: explicit per-key mask test, scores in f64 with the soft cap and ALiBi
/// from their definitions, online softmax streamed over the keys for the output and the logsumexp,
/// then weights as `exp(s - lse)` in a second pass. Offsets are computed here from the raw strides.
pub fn streaming<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
) -> ReferenceOutput {
    let s = problem.shape;
    let (sq, sk, hq, d) = (s.seq_q, s.seq_k, s.heads_q, s.head_dim);
    let scale = f64::from(problem.scale.unwrap_or(1.0 / (d as f32).sqrt()));
    let at = |st: &Strides, b: usize, i: usize, h: usize, x: usize| {
        b * st.batch + i * st.seq + h * st.head + x
    };
    let masked = |i: usize, j: usize| hidden(problem, i, j);
    let mut out = vec![0.0; s.batch * sq * hq * d];
    let mut lse = vec![0.0; s.batch * hq * sq];
    let mut weights = vec![0.0; s.batch * hq * sq * sk];
    for b in 0..s.batch {
        for h in 0..hq {
            let g = h * s.heads_kv / hq;
            for i in 0..sq {
                let score = |j: usize| {
                    let dot: f64 = (0..d)
                        .map(|x| {
                            q[at(&problem.q_strides, b, i, h, x)].to_f64()
                                * k[at(&problem.k_strides, b, j, g, x)].to_f64()
                        })
                        .sum();
                    adjusted(problem, h, i, j, scale * dot)
                };
                let (mut m, mut l) = (f64::NEG_INFINITY, 0.0f64);
                let mut acc = vec![0.0f64; d];
                for j in (0..sk).filter(|&j| !masked(i, j)) {
                    let sj = score(j);
                    let m_new = m.max(sj);
                    let alpha = if m == f64::NEG_INFINITY {
                        0.0
                    } else {
                        (m - m_new).exp()
                    };
                    let p = (sj - m_new).exp();
                    for (x, a) in acc.iter_mut().enumerate() {
                        *a = *a * alpha + p * v[at(&problem.v_strides, b, j, g, x)].to_f64();
                    }
                    l = l * alpha + p;
                    m = m_new;
                }
                let row = (b * hq + h) * sq + i;
                lse[row] = if l > 0.0 {
                    m + l.ln()
                } else {
                    f64::NEG_INFINITY
                };
                if l > 0.0 {
                    for (x, a) in acc.iter().enumerate() {
                        out[((b * sq + i) * hq + h) * d + x] = a / l;
                    }
                    for j in (0..sk).filter(|&j| !masked(i, j)) {
                        weights[row * sk + j] = (score(j) - lse[row]).exp();
                    }
                }
            }
        }
    }
    ReferenceOutput { out, lse, weights }
}

/// Largest |a - b| over two f64 tensors, -inf == -inf counting as exact; infinite on any other
/// non-finite mismatch.
pub fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x == y {
                0.0
            } else if (x - y).is_finite() {
                (x - y).abs()
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max)
}

pub fn max_abs(values: &[f64]) -> f64 {
    values
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0, |m, x| m.max(x.abs()))
}

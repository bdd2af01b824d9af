//! The oracle: naive attention with f64 accumulation, and the same naive formula computed in the
//! input precision the way PyTorch does it (the baseline of the tolerance rule).

use crate::cpu::ragged::for_each_sequence;
use crate::dtype::Element;
use crate::error::{AttentionError, Result};
use crate::host_memory::{check_budget, vec_filled};
use crate::metadata::Metadata;
use crate::problem::{checked_product, AttentionProblem, Tensor};

/// Exact-as-f64 results of one attention problem, all contiguous.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceOutput {
    /// Output `[batch, seq_q, heads_q, head_dim]`.
    pub out: Vec<f64>,
    /// Natural-log logsumexp of the scaled, masked scores, `[batch, heads_q, seq_q]`; `-inf` for a row
    /// that sees no key.
    pub lse: Vec<f64>,
    /// Attention weights `[batch, heads_q, seq_q, seq_k]`; 0 where masked.
    pub weights: Vec<f64>,
}

/// Validates the problem and the lengths of q, k and v (out is not passed, so its own required length
/// stands in for it).
fn validate_inputs<T>(problem: &AttentionProblem, q: &[T], k: &[T], v: &[T]) -> Result<()> {
    problem.validate()?;
    let out_len = problem.required_len(Tensor::Out)?;
    problem.check_lengths(q.len(), k.len(), v.len(), out_len)
}

/// Naive attention in f64: scores `s = scale * q . k` (f64 products and sums of the exactly widened
/// inputs), then the soft cap `s = softcap * tanh(s / softcap)` and the ALiBi bias `s -= m_h * |c - j|`
/// when set ([`AttentionProblem::adjust_score`], in f64), keys outside the row's causal/window range
/// ([`AttentionProblem::key_range`]) dropped, `m = max s`, `lse = m + ln(sum exp(s - m))`, weights
/// `exp(s - lse)`, output `sum weights * v`; a sink joins the sum as one more logit that has no value
/// (a row that sees no key then has lse = the sink). Reads q, k, v through the problem's strides; a
/// ragged batch goes through [`reference_ragged`].
///
/// Non-finite values (README, "Non-finite values"): the keys a row does not see never enter (weight
/// 0, their K and V unread); a NaN score (NaN in the row's q or a visible key) makes the max NaN, so the
/// row's output, lse and visible weights are NaN; a `+inf` score does the same (`inf - inf`); a row
/// whose max is `-inf` (no visible key, or every visible score `-inf`) outputs 0 with lse `-inf`; a
/// non-finite V at a visible key reaches its output column even where the key's weight is 0.
///
/// # Errors
/// Whatever [`AttentionProblem::validate`] reports, [`AttentionError::BufferTooSmall`] for a short
/// q, k or v, [`AttentionError::OutOfMemory`] (host) when the outputs and weights do not fit this
/// machine.
pub fn reference<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Result<ReferenceOutput> {
    validate_inputs(problem, q, k, v)?;
    dense_only(problem)?;
    let s = problem.shape;
    let (d, sq, sk, hq) = (s.head_dim, s.seq_q, s.seq_k, s.heads_q);
    let scale = f64::from(problem.scale());
    let ratio = problem.heads_ratio();
    let (qs, ks, vs) = (problem.q_strides, problem.k_strides, problem.v_strides);

    // Every buffer sized by the problem goes through the host memory guard: a problem too large for this
    // machine is an OutOfMemory error with the numbers (the weights alone are seq_q * seq_k f64 per head).
    let out_len = checked_product("reference output", &[s.batch, sq, hq, d])?;
    let (lse_len, score_len) = (s.lse_elements()?, s.score_elements()?);
    let total = [out_len, lse_len, score_len, sk]
        .into_iter()
        .try_fold(0usize, usize::checked_add)
        .and_then(|n| n.checked_mul(size_of::<f64>()))
        .ok_or_else(|| AttentionError::SizeOverflow {
            what: "reference outputs",
            detail: format!("{out_len} outputs, {lse_len} lse, {score_len} weights in f64"),
        })?;
    check_budget("f64 reference outputs and weights", total)?;
    let mut out = vec_filled("reference output", out_len, 0.0f64)?;
    let mut lse = vec_filled("reference logsumexp", lse_len, f64::NEG_INFINITY)?;
    let mut weights = vec_filled("reference weights", score_len, 0.0f64)?;
    let mut scores = vec_filled("reference score row", sk, f64::NEG_INFINITY)?;

    for b in 0..s.batch {
        for h in 0..hq {
            let hk = h / ratio;
            for i in 0..sq {
                // S = adjust(scale * q_i K^T) over the row's keys, masked entries left at -inf.
                let (begin, end) = problem.key_range(i);
                scores.fill(f64::NEG_INFINITY);
                for j in (begin..end).filter(|&j| problem.block_allows(i, j)) {
                    let dot: f64 = (0..d)
                        .map(|x| {
                            q[qs.offset(b, i, h, x)].to_f64() * k[ks.offset(b, j, hk, x)].to_f64()
                        })
                        .sum();
                    scores[j] = problem.adjust_score(h, i, j, scale * dot);
                }
                // NaN-propagating max: bad inputs must not turn into a silent 0.
                let max =
                    scores.iter().fold(
                        f64::NEG_INFINITY,
                        |m, &x| {
                            if x.is_nan() || x > m {
                                x
                            } else {
                                m
                            }
                        },
                    );
                let row = (b * hq + h) * sq + i;
                let sink = problem.sinks.as_ref().map(|s| f64::from(s[h]));
                if max == f64::NEG_INFINITY {
                    // No visible key: output 0, lse -inf (the sink, with one), weights 0.
                    lse[row] = sink.unwrap_or(f64::NEG_INFINITY);
                    continue;
                }
                // With a sink s: one more logit in the denominator, none in the output.
                let top = match sink {
                    Some(s) if s > max => s,
                    _ => max,
                };
                // lse = top + ln(sum exp(s - top)); P = exp(s - top) / sum.
                let sum: f64 = scores.iter().map(|&x| (x - top).exp()).sum::<f64>()
                    + sink.map_or(0.0, |s| (s - top).exp());
                lse[row] = top + sum.ln();
                let max = top;
                // Masked keys keep weight 0 and their V is never read, even in a NaN row; every
                // visible key's V is, even where its weight underflows to 0 (0 * NaN is NaN).
                let p_row = &mut weights[row * sk..(row + 1) * sk];
                for (p, &x) in p_row[begin..end].iter_mut().zip(&scores[begin..end]) {
                    *p = (x - max).exp() / sum;
                }
                // O = P V over the visible keys.
                let o_row = &mut out[((b * sq + i) * hq + h) * d..][..d];
                for (j, &p) in p_row.iter().enumerate().take(end).skip(begin) {
                    if !problem.block_allows(i, j) {
                        continue;
                    }
                    for (x, o) in o_row.iter_mut().enumerate() {
                        *o += p * v[vs.offset(b, j, hk, x)].to_f64();
                    }
                }
            }
        }
    }
    Ok(ReferenceOutput { out, lse, weights })
}

/// The f64 reference of a ragged batch: every sequence gathered into a dense problem
/// ([`crate::cpu::ragged::for_each_sequence`]) and computed by [`reference()`]. Returns out as contiguous
/// `[total_q, heads_q, head_dim]` (rows no sequence owns are 0), the logsumexp `[heads_q, total_q]`
/// (`-inf` in rows no sequence owns) and no weights.
///
/// # Errors
/// As [`reference()`], and the metadata's validation errors ([`crate::validate_metadata`]).
pub fn reference_ragged<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
    metadata: &Metadata<'_>,
) -> Result<ReferenceOutput> {
    let Some(ragged) = problem.ragged_layout() else {
        return Err(AttentionError::InvalidArgument(
            "reference_ragged takes a ragged problem: use reference() for a dense one".into(),
        ));
    };
    let (hq, d, total_q) = (
        problem.shape.heads_q,
        problem.shape.head_dim,
        ragged.total_q,
    );
    let out_len = checked_product("reference output", &[total_q, hq, d])?;
    let lse_len = problem.lse_elements()?;
    check_budget(
        "f64 reference outputs",
        (out_len + lse_len) * size_of::<f64>(),
    )?;
    let mut out = vec_filled("reference output", out_len, 0.0f64)?;
    let mut lse = vec_filled("reference logsumexp", lse_len, f64::NEG_INFINITY)?;
    for_each_sequence(problem, metadata, q, k, v, |seq| {
        let dense = reference(&seq.problem, &seq.q, &seq.k, &seq.v)?;
        let (rows, begin) = (seq.span.seq_q, seq.span.q_begin);
        out[begin * hq * d..][..rows * hq * d].copy_from_slice(&dense.out);
        for h in 0..hq {
            lse[h * total_q + begin..][..rows].copy_from_slice(&dense.lse[h * rows..][..rows]);
        }
        Ok(())
    })?;
    Ok(ReferenceOutput {
        out,
        lse,
        weights: Vec::new(),
    })
}

/// Refuses a ragged problem where only dense ones are computed.
fn dense_only(problem: &AttentionProblem) -> Result<()> {
    if problem.ragged_layout().is_some() {
        return Err(AttentionError::InvalidArgument(
            "this computes dense batches: use reference_ragged (or cpu::ragged::for_each_sequence) for a \
             ragged one"
                .into(),
        ));
    }
    Ok(())
}

/// The naive formula computed the way PyTorch computes it in the input precision `T`, as in
/// FlashAttention's `attention_ref(..., upcast=False, reorder_ops=True)`: `K' = T(scale * K)`,
/// `S = T(adjust(Q K'^T))` with the products summed in f32 and the soft cap and ALiBi bias, when set,
/// applied in f32 to the scaled f32 scores before the rounding to `T` (`softcap * tanh(s / softcap)`,
/// then `s - m_h * |c - j|`), the softmax computed in f32 from the `T`-rounded `S` and rounded to `T`
/// (`P`), then `O = T(P V)` with the products summed in f32. Keys outside the row's causal/window range
/// are masked. A row that sees no key gives 0 (PyTorch gives NaN there; FlashAttention's reference
/// fills it with 0 too).
///
/// For `T = f32` every rounding to `T` is the identity and the result differs from the reference by
/// f32 rounding alone. Returns contiguous `[batch, seq_q, heads_q, head_dim]` values, each exactly
/// representable in `T`. A score that overflows `T` gives a non-finite value here, as it would in
/// PyTorch.
///
/// # Errors
/// As [`reference()`].
pub fn naive_in_precision<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Result<Vec<f32>> {
    validate_inputs(problem, q, k, v)?;
    dense_only(problem)?;
    let s = problem.shape;
    let (d, sq, sk, hq) = (s.head_dim, s.seq_q, s.seq_k, s.heads_q);
    let scale = problem.scale();
    let ratio = problem.heads_ratio();
    let (qs, ks, vs) = (problem.q_strides, problem.k_strides, problem.v_strides);
    let round = |x: f32| T::from_f32(x).to_f32();
    let (softcap, slopes) = (problem.softcap, problem.alibi_slopes.as_deref());

    let out_len = s
        .batch
        .checked_mul(sq * hq * d)
        .ok_or_else(|| AttentionError::SizeOverflow {
            what: "naive output",
            detail: format!(
                "batch {} * seq_q {sq} * heads_q {hq} * head_dim {d}",
                s.batch
            ),
        })?;
    let mut out = vec_filled("naive baseline output", out_len, 0.0f32)?;
    let mut scores = vec_filled("naive baseline score row", sk, f32::NEG_INFINITY)?;
    let mut k_scaled = vec_filled(
        "naive baseline scaled keys",
        checked_product("naive baseline scaled keys", &[sk, d])?,
        0.0f32,
    )?;
    let mut q_row = vec![0.0f32; d];

    for b in 0..s.batch {
        for hk in 0..s.heads_kv {
            // K' = T(scale * K), [seq_k, head_dim].
            for j in 0..sk {
                for x in 0..d {
                    k_scaled[j * d + x] = round(scale * k[ks.offset(b, j, hk, x)].to_f32());
                }
            }
            for h in hk * ratio..(hk + 1) * ratio {
                for i in 0..sq {
                    for (x, qv) in q_row.iter_mut().enumerate() {
                        *qv = q[qs.offset(b, i, h, x)].to_f32();
                    }
                    // S = T(adjust(q_i K'^T)), f32 sums, soft cap and ALiBi in f32; masked entries
                    // -inf.
                    let (begin, end) = problem.key_range(i);
                    let diagonal = i as i64 + sk as i64 - sq as i64;
                    let (mut visible, mut overflow) = (0usize, false);
                    scores.fill(f32::NEG_INFINITY);
                    for j in (begin..end).filter(|&j| problem.block_allows(i, j)) {
                        let k_row = &k_scaled[j * d..(j + 1) * d];
                        let mut dot: f32 = q_row.iter().zip(k_row).map(|(a, c)| a * c).sum();
                        if let Some(cap) = softcap {
                            dot = cap * (dot / cap).tanh();
                        }
                        if let Some(slopes) = slopes {
                            dot -= slopes[h] * (diagonal - j as i64).unsigned_abs() as f32;
                        }
                        let dot = round(dot);
                        visible += 1;
                        overflow |= !dot.is_finite();
                        scores[j] = dot;
                    }
                    let o_row = &mut out[((b * sq + i) * hq + h) * d..][..d];
                    if visible == 0 {
                        continue;
                    }
                    if overflow {
                        // A score overflowed T: PyTorch's softmax gives NaN here.
                        o_row.fill(f32::NAN);
                        continue;
                    }
                    // A sink is one more score column (in T), dropped after the softmax.
                    let sink = problem.sinks.as_ref().map(|s| round(s[h]));
                    let max = scores
                        .iter()
                        .copied()
                        .fold(sink.unwrap_or(f32::NEG_INFINITY), f32::max);
                    // P = T(softmax(S)) in f32.
                    let mut sum = sink.map_or(0.0, |s| (s - max).exp());
                    for score in scores.iter_mut() {
                        *score = (*score - max).exp();
                        sum += *score;
                    }
                    // O = T(P V), f32 sums.
                    for (j, &e) in scores.iter().enumerate() {
                        let p = round(e / sum);
                        if p == 0.0 {
                            continue;
                        }
                        for (x, o) in o_row.iter_mut().enumerate() {
                            *o += p * v[vs.offset(b, j, hk, x)].to_f32();
                        }
                    }
                    for o in o_row.iter_mut() {
                        *o = round(*o);
                    }
                }
            }
        }
    }
    Ok(out)
}

//! The CPU reference against an independent formulation and hand-computed cases, the CPU backend
//! against the reference (FlashAttention's tolerance rule), and the errors every entry point reports.

mod common;

use cuda_attention::cpu::{self, ErrorStats, ReferenceOutput};
use cuda_attention::Tensor;
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, Element, ForwardOptions, HostTensors, Layout,
    Strides,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The CPU backend into caller buffers, planned for the outputs passed (the lse and weights options follow
/// the buffers).
fn cpu_into<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    lse: Option<&mut [f32]>,
    weights: Option<&mut [f32]>,
) -> cuda_attention::Result<()> {
    let options = ForwardOptions::default()
        .with_lse(lse.is_some())
        .with_weights(weights.is_some());
    let backend = cpu::CpuBackend::new();
    let plan = backend.plan::<T>(problem, options)?;
    let mut tensors = HostTensors::new(q, k, v, out);
    tensors.lse = lse;
    tensors.weights = weights;
    backend.forward_into(&plan, tensors)
}

/// Memory order of the four tensors in a case.
#[derive(Debug, Clone, Copy)]
enum Order {
    Bshd,
    Bhsd,
    /// q and out `[b, s, h, d]` with padding after each head, row and batch; k and v `[b, h, s, d]`
    /// with padding too, so no stride equals the contiguous one.
    Padded,
}

/// One shape of the table.
#[derive(Debug, Clone, Copy)]
struct Case {
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    heads_q: usize,
    heads_kv: usize,
    head_dim: usize,
    causal: bool,
    order: Order,
}

#[allow(clippy::too_many_arguments)]
const fn case(
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    heads_q: usize,
    heads_kv: usize,
    head_dim: usize,
    causal: bool,
    order: Order,
) -> Case {
    Case {
        batch,
        seq_q,
        seq_k,
        heads_q,
        heads_kv,
        head_dim,
        causal,
        order,
    }
}

/// Ragged lengths, odd head dims, GQA/MQA, causal with seq_q < seq_k and seq_q > seq_k, three layouts,
/// an empty key sequence.
const CASES: &[Case] = &[
    case(1, 1, 1, 1, 1, 64, false, Order::Bshd),
    case(1, 31, 33, 4, 2, 40, false, Order::Bhsd),
    case(1, 31, 33, 4, 2, 40, true, Order::Padded),
    case(1, 113, 203, 2, 1, 59, true, Order::Padded),
    case(1, 113, 203, 1, 1, 64, false, Order::Bshd),
    case(2, 33, 17, 4, 1, 128, true, Order::Bshd),
    case(1, 33, 17, 4, 2, 59, false, Order::Bhsd),
    case(2, 2, 5, 2, 2, 1, true, Order::Bshd),
    case(1, 5, 2, 4, 1, 64, true, Order::Padded),
    case(3, 1, 147, 4, 2, 128, false, Order::Padded),
    case(1, 1, 147, 4, 1, 40, true, Order::Bhsd),
    case(2, 17, 0, 4, 2, 40, false, Order::Bshd),
    case(1, 9, 0, 2, 1, 64, true, Order::Padded),
    case(1, 64, 64, 2, 2, 128, true, Order::Bhsd),
];

impl Case {
    fn problem(&self) -> AttentionProblem {
        let shape = AttentionShape::new(self.batch, self.seq_q, self.heads_q, self.head_dim)
            .with_seq_k(self.seq_k)
            .with_heads_kv(self.heads_kv);
        let problem = AttentionProblem::new(shape).with_causal(self.causal);
        match self.order {
            Order::Bshd => problem.with_layout(Layout::Bshd),
            Order::Bhsd => problem.with_layout(Layout::Bhsd),
            Order::Padded => {
                let d = self.head_dim;
                let head = d + 2;
                let seq = self.heads_q * head + 3;
                let q = Strides {
                    batch: self.seq_q * seq + 5,
                    seq,
                    head,
                };
                let kv_head = self.seq_k * (d + 1) + 2;
                let kv = Strides {
                    batch: self.heads_kv * kv_head + 4,
                    seq: d + 1,
                    head: kv_head,
                };
                problem.with_strides(q, kv, kv, q)
            }
        }
    }

    /// Query rows that see no key.
    fn fully_masked_rows(&self) -> usize {
        if self.seq_k == 0 {
            self.seq_q
        } else if self.causal {
            self.seq_q.saturating_sub(self.seq_k)
        } else {
            0
        }
    }
}

/// Random q, k, v of the lengths the problem's strides need (padding included).
fn inputs<T: Element>(
    problem: &AttentionProblem,
    seed: u64,
    range: f32,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let q = common::random(&mut rng, problem.required_len(Tensor::Q).unwrap(), range);
    let k = common::random(&mut rng, problem.required_len(Tensor::K).unwrap(), range);
    let v = common::random(&mut rng, problem.required_len(Tensor::V).unwrap(), range);
    (q, k, v)
}

/// The diagonal of query row `i`, from the definition: `c = i + seq_k - seq_q` (negative when seq_q >
/// seq_k).
fn diagonal(problem: &AttentionProblem, i: usize) -> i64 {
    i as i64 + problem.shape.seq_k as i64 - problem.shape.seq_q as i64
}

/// Whether key `j` is hidden from query row `i`, tested key by key from the definitions: the causal
/// mask hides `j > c`, the window's left side `j < c - left`, its right side `j > c + right`.
fn hidden(problem: &AttentionProblem, i: usize, j: usize) -> bool {
    let (c, j) = (diagonal(problem, i), j as i64);
    let causal = problem.causal && j > c;
    let left = matches!(problem.window.left, Some(left) if j < c - left as i64);
    let right = matches!(problem.window.right, Some(right) if j > c + right as i64);
    causal || left || right
}

/// Whether query row `i` sees no key at all.
fn sees_nothing(problem: &AttentionProblem, i: usize) -> bool {
    (0..problem.shape.seq_k).all(|j| hidden(problem, i, j))
}

/// The scaled score `s` of (head `h`, row `i`, key `j`) after the soft cap and ALiBi, from their
/// definitions: `cap * tanh(s / cap)`, with tanh written as `1 - 2 / (e^{2x} + 1)` (not the library
/// tanh), then `- m_h * |c - j|`.
fn adjusted(problem: &AttentionProblem, h: usize, i: usize, j: usize, s: f64) -> f64 {
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
fn streaming<T: Element>(problem: &AttentionProblem, q: &[T], k: &[T], v: &[T]) -> ReferenceOutput {
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
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
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

fn max_abs(values: &[f64]) -> f64 {
    values
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0, |m, x| m.max(x.abs()))
}

#[test]
fn reference_matches_an_independent_streaming_formulation() {
    for (n, case) in CASES.iter().enumerate() {
        let problem = case.problem();
        let (q, k, v) = inputs::<f32>(&problem, 100 + n as u64, 1.0);
        let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
        let expected = streaming(&problem, &q, &k, &v);
        for (name, got, want) in [
            ("out", &reference.out, &expected.out),
            ("lse", &reference.lse, &expected.lse),
            ("weights", &reference.weights, &expected.weights),
        ] {
            let error = max_diff(got, want);
            let bound = 1e-12 * (1.0 + max_abs(want));
            assert!(
                error <= bound,
                "{case:?} {name}: error {error:e} > {bound:e}"
            );
        }
        let masked_lse = reference
            .lse
            .iter()
            .filter(|&&x| x == f64::NEG_INFINITY)
            .count();
        assert_eq!(
            masked_lse,
            case.fully_masked_rows() * case.batch * case.heads_q,
            "{case:?}"
        );
        assert!(
            reference
                .out
                .iter()
                .chain(&reference.weights)
                .all(|x| x.is_finite()),
            "{case:?}"
        );
    }
}

#[test]
fn reference_of_the_kernel_facts_mask_example() {
    // sq = 2, sk = 5, causal: row 0 sees keys 0..=3 (`11110`), row 1 all five (`11111`).
    // head_dim 1, scale 1, q = [1, 1], k_j = j, v_j = 10 j: row i weights e^j / sum e^j over its keys.
    let shape = AttentionShape::new(1, 2, 1, 1).with_seq_k(5);
    let problem = AttentionProblem::new(shape)
        .with_causal(true)
        .with_scale(1.0);
    let q = [1.0f32, 1.0];
    let k = [0.0f32, 1.0, 2.0, 3.0, 4.0];
    let v = [0.0f32, 10.0, 20.0, 30.0, 40.0];
    let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
    for (row, visible) in [(0usize, 4usize), (1, 5)] {
        let sum: f64 = (0..visible).map(|j| (j as f64).exp()).sum();
        let lse = sum.ln();
        assert!(
            (reference.lse[row] - lse).abs() < 1e-14,
            "row {row} lse {}",
            reference.lse[row]
        );
        let mean: f64 = (0..visible)
            .map(|j| (j as f64).exp() / sum * 10.0 * j as f64)
            .sum();
        assert!(
            (reference.out[row] - mean).abs() < 1e-12,
            "row {row} out {}",
            reference.out[row]
        );
        for j in 0..5 {
            let w = reference.weights[row * 5 + j];
            if j < visible {
                assert!(
                    (w - (j as f64 - lse).exp()).abs() < 1e-15,
                    "row {row} key {j}: {w}"
                );
            } else {
                assert_eq!(w, 0.0, "row {row} key {j} is masked");
            }
        }
    }
    // The backend gives the same pattern: exact zeros where masked.
    let got = cpu::attention(
        &problem,
        ForwardOptions::default().with_lse(true).with_weights(true),
        &q,
        &k,
        &v,
    )
    .unwrap();
    let weights = got.weights.unwrap();
    assert_eq!(weights[4], 0.0);
    assert!(
        weights[..4].iter().chain(&weights[5..]).all(|&w| w > 0.0),
        "{weights:?}"
    );
    assert!(cpu::compare_weights(&problem, &weights, &reference.weights).max_abs < 1e-6);
    assert!(cpu::compare_lse(&problem, &got.lse.unwrap(), &reference.lse).max_abs < 1e-5);
}

#[test]
fn identical_keys_give_the_mean_of_the_visible_values() {
    // All keys equal: every visible key gets the same weight whatever q is, so row i outputs the mean
    // of the V rows it sees, and lse = q.k * scale + ln(visible).
    for causal in [false, true] {
        let (sq, sk, d) = (4usize, 6usize, 8usize);
        let shape = AttentionShape::new(1, sq, 1, d).with_seq_k(sk);
        let problem = AttentionProblem::new(shape).with_causal(causal);
        let mut rng = StdRng::seed_from_u64(7);
        let q: Vec<f32> = common::random(&mut rng, sq * d, 1.0);
        let key: Vec<f32> = common::random(&mut rng, d, 1.0);
        let k: Vec<f32> = key.iter().copied().cycle().take(sk * d).collect();
        let v: Vec<f32> = common::random(&mut rng, sk * d, 1.0);
        let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
        let got = cpu::attention(
            &problem,
            ForwardOptions::default().with_lse(true),
            &q,
            &k,
            &v,
        )
        .unwrap();
        for i in 0..sq {
            let visible = if causal { i + sk - sq + 1 } else { sk };
            let dot: f64 = (0..d)
                .map(|x| f64::from(q[i * d + x]) * f64::from(key[x]))
                .sum();
            let lse = dot * f64::from(problem.scale()) + (visible as f64).ln();
            assert!(
                (reference.lse[i] - lse).abs() < 1e-12,
                "causal {causal} row {i}"
            );
            for x in 0..d {
                let mean =
                    (0..visible).map(|j| f64::from(v[j * d + x])).sum::<f64>() / visible as f64;
                assert!(
                    (reference.out[i * d + x] - mean).abs() < 1e-12,
                    "causal {causal} [{i}, {x}]"
                );
                assert!(
                    (f64::from(got.out[i * d + x]) - mean).abs() < 1e-6,
                    "backend [{i}, {x}]"
                );
            }
        }
    }
}

#[test]
fn large_logits_stay_finite_and_match() {
    // Scores in the thousands (scale 1e3) and in the hundreds of millions (values ~1e4): exp(s - m)
    // must not overflow anywhere.
    let shape = AttentionShape::new(1, 19, 2, 16).with_seq_k(23);
    for (scale, range) in [(1e3f32, 1.0f32), (0.25, 1e4)] {
        for causal in [false, true] {
            let problem = AttentionProblem::new(shape)
                .with_scale(scale)
                .with_causal(causal);
            let (q, k, v) = inputs::<f32>(&problem, 11, range);
            let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
            let expected = streaming(&problem, &q, &k, &v);
            assert!(reference
                .out
                .iter()
                .chain(&reference.lse)
                .chain(&reference.weights)
                .all(|x| x.is_finite()));
            assert!(
                max_diff(&reference.out, &expected.out) <= 1e-12 * (1.0 + max_abs(&expected.out))
            );
            assert!(
                max_diff(&reference.lse, &expected.lse) <= 1e-12 * (1.0 + max_abs(&expected.lse))
            );

            let got = cpu::attention(
                &problem,
                ForwardOptions::default().with_lse(true),
                &q,
                &k,
                &v,
            )
            .unwrap();
            let stats = cpu::compare_output(&problem, &got.out, &reference.out);
            let tolerance = cpu::tolerance(&problem, &q, &k, &v, &reference).unwrap();
            assert_eq!(stats.non_finite, 0);
            assert!(
                stats.max_abs <= tolerance,
                "scale {scale} range {range}: {stats} > {tolerance:e}"
            );
            let lse = cpu::compare_lse(&problem, got.lse.as_deref().unwrap(), &reference.lse);
            let bound = cpu::softmax_tolerance(&problem, &q, &k).unwrap().lse;
            assert!(
                lse.max_abs <= bound,
                "scale {scale} range {range}: lse {lse} > {bound:e}"
            );
        }
    }
}

#[test]
fn an_f16_overflow_has_no_tolerance_but_the_backend_stays_finite() {
    // Scores ~ sqrt(64) * 1000 * 1000 / 3 / 8 overflow f16 (max 65504): PyTorch's naive f16 formula
    // gives NaN, so the rule has no baseline; the backend accumulates in f32 and matches the
    // reference to f16 rounding of the output.
    let problem = AttentionProblem::new(AttentionShape::new(1, 8, 1, 64).with_seq_k(12));
    let (q, k, v) = inputs::<f16>(&problem, 5, 1000.0);
    let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
    let result = cpu::tolerance(&problem, &q, &k, &v, &reference);
    assert!(
        matches!(result, Err(AttentionError::InvalidArgument(_))),
        "{result:?}"
    );
    let got = cpu::attention(&problem, ForwardOptions::default(), &q, &k, &v).unwrap();
    let stats = cpu::compare_output(&problem, &got.out, &reference.out);
    let bound = max_abs(&reference.out) * f64::from(f16::EPSILON.to_f32());
    assert!(
        stats.non_finite == 0 && stats.max_abs <= bound,
        "{stats} > {bound:e}"
    );
}

#[test]
fn a_nan_input_shows_up_as_nan_not_as_a_masked_row() {
    // One NaN in q row 3 of head 1: that row's output and lse are NaN in the reference and the
    // backend; every other row is unaffected.
    let problem = AttentionProblem::new(AttentionShape::new(1, 6, 2, 8).with_seq_k(5));
    let (mut q, k, v) = inputs::<f32>(&problem, 17, 1.0);
    q[problem.q_strides.offset(0, 3, 1, 2)] = f32::NAN;
    let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
    let got = cpu::attention(
        &problem,
        ForwardOptions::default().with_lse(true),
        &q,
        &k,
        &v,
    )
    .unwrap();
    let lse = got.lse.unwrap();
    let row = 6 + 3;
    assert!(
        reference.lse[row].is_nan() && lse[row].is_nan(),
        "{}",
        lse[row]
    );
    for x in 0..8 {
        assert!(reference.out[(3 * 2 + 1) * 8 + x].is_nan());
        assert!(got.out[problem.out_strides.offset(0, 3, 1, x)].is_nan());
    }
    // compare counts every NaN as a failure, even against a NaN: exactly the 8 values of that row.
    let stats = cpu::compare_output(&problem, &got.out, &reference.out);
    assert_eq!(
        (stats.non_finite, stats.worst_index),
        (8, Some([0, 3, 1, 0])),
        "{stats}"
    );
}

/// Runs the backend on one case in precision `T` and checks out, lse and weights against the
/// reference; returns the output tolerance used.
fn check_backend<T: Element>(case: &Case, seed: u64) -> f64 {
    check_problem::<T>(
        &format!("{case:?}"),
        case.problem(),
        seed,
        1.0,
        case.fully_masked_rows(),
    )
}

/// Runs the backend on `problem` (inputs uniform in `[-range, range)`, rounded to `T`) and checks out,
/// lse and weights against the reference, that exactly `empty_rows` rows per (batch, head) see no key
/// (by the independent mask test) and give 0 and -inf, and that hidden keys get exactly 0 weight;
/// returns the output tolerance used.
fn check_problem<T: Element>(
    case: &str,
    problem: AttentionProblem,
    seed: u64,
    range: f32,
    empty_rows: usize,
) -> f64 {
    let (q, k, v) = inputs::<T>(&problem, seed, range);
    let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
    let tolerance = cpu::tolerance(&problem, &q, &k, &v, &reference).unwrap();
    let softmax = cpu::softmax_tolerance(&problem, &q, &k).unwrap();
    let dtype = T::DTYPE;

    // Sentinels everywhere: the padding of out must survive, every lse/weight must be written.
    let sentinel = T::from_f32(7.0);
    let mut out = vec![sentinel; problem.required_len(Tensor::Out).unwrap()];
    let mut lse = vec![f32::NAN; problem.shape.lse_elements().unwrap()];
    let mut weights = vec![f32::NAN; problem.shape.score_elements().unwrap()];
    cpu_into(
        &problem,
        &q,
        &k,
        &v,
        &mut out,
        Some(&mut lse),
        Some(&mut weights),
    )
    .unwrap();

    let report = |what: &str, stats: &ErrorStats, bound: f64| {
        assert!(
            stats.non_finite == 0 && stats.max_abs <= bound,
            "{dtype} {case} {what}: {stats} exceeds {bound:e}"
        );
    };
    report(
        "out",
        &cpu::compare_output(&problem, &out, &reference.out),
        tolerance,
    );
    report(
        "lse",
        &cpu::compare_lse(&problem, &lse, &reference.lse),
        softmax.lse,
    );
    report(
        "weights",
        &cpu::compare_weights(&problem, &weights, &reference.weights),
        softmax.weights,
    );

    // Rows that see no key: exactly 0 and -inf; every other row a finite lse. Hidden keys: weight 0.
    let s = problem.shape;
    let st = problem.out_strides;
    let empty: Vec<usize> = (0..s.seq_q)
        .filter(|&i| sees_nothing(&problem, i))
        .collect();
    assert_eq!(empty.len(), empty_rows, "{case}: rows that see no key");
    for b in 0..s.batch {
        for h in 0..s.heads_q {
            for i in 0..s.seq_q {
                let row = (b * s.heads_q + h) * s.seq_q + i;
                if empty.contains(&i) {
                    assert_eq!(lse[row], f32::NEG_INFINITY, "{case} row {i}");
                    for x in 0..s.head_dim {
                        assert_eq!(out[st.offset(b, i, h, x)].to_f32(), 0.0, "{dtype} {case}");
                    }
                } else {
                    assert!(lse[row].is_finite(), "{case} row {i}: lse {}", lse[row]);
                }
                for j in (0..s.seq_k).filter(|&j| hidden(&problem, i, j)) {
                    assert_eq!(
                        weights[row * s.seq_k + j],
                        0.0,
                        "{case} [{b}, {h}, {i}, {j}]"
                    );
                }
            }
        }
    }
    // Padding between strided output rows is untouched.
    let mut written = vec![false; out.len()];
    for b in 0..s.batch {
        for i in 0..s.seq_q {
            for h in 0..s.heads_q {
                for x in 0..s.head_dim {
                    written[st.offset(b, i, h, x)] = true;
                }
            }
        }
    }
    for (n, value) in out.iter().enumerate().filter(|&(n, _)| !written[n]) {
        assert_eq!(value.to_f32(), 7.0, "{case}: padding at {n} overwritten");
    }
    // The allocating entry point agrees bit for bit.
    let again = cpu::attention(
        &problem,
        ForwardOptions::default().with_lse(true).with_weights(true),
        &q,
        &k,
        &v,
    )
    .unwrap();
    assert!(written
        .iter()
        .zip(out.iter().zip(&again.out))
        .all(|(&w, (a, b))| !w || a.to_f32() == b.to_f32()));
    assert_eq!(
        again
            .lse
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>(),
        lse.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    tolerance
}

#[test]
fn cpu_backend_matches_the_reference_f32() {
    for (n, case) in CASES.iter().enumerate() {
        let tolerance = check_backend::<f32>(case, 200 + n as u64);
        assert!(
            tolerance < 1e-5,
            "{case:?}: f32 tolerance {tolerance:e} is too loose to mean anything"
        );
    }
}

#[test]
fn cpu_backend_matches_the_reference_f16() {
    for (n, case) in CASES.iter().enumerate() {
        let tolerance = check_backend::<f16>(case, 300 + n as u64);
        assert!(
            tolerance < 1e-2,
            "{case:?}: f16 tolerance {tolerance:e} is too loose to mean anything"
        );
    }
}

#[test]
fn cpu_backend_matches_the_reference_bf16() {
    for (n, case) in CASES.iter().enumerate() {
        let tolerance = check_backend::<bf16>(case, 400 + n as u64);
        assert!(
            tolerance < 5e-2,
            "{case:?}: bf16 tolerance {tolerance:e} is too loose to mean anything"
        );
    }
}

#[test]
fn the_tolerance_rejects_a_wrong_mask_and_a_wrong_kv_head() {
    // The rule must be able to fail: a non-causal result against the causal reference, and query
    // heads reading the other key/value head (simulated by swapping kv heads 0 and 1).
    let case = case(1, 31, 33, 4, 2, 40, true, Order::Bshd);
    let problem = case.problem();
    let (q, k, v) = inputs::<f32>(&problem, 9, 1.0);
    let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
    let tolerance = cpu::tolerance(&problem, &q, &k, &v, &reference).unwrap();
    let unmasked = cpu::attention(
        &problem.clone().with_causal(false),
        ForwardOptions::default(),
        &q,
        &k,
        &v,
    )
    .unwrap();
    let stats = cpu::compare_output(&problem, &unmasked.out, &reference.out);
    assert!(
        stats.max_abs > 100.0 * tolerance,
        "{stats} vs {tolerance:e}"
    );

    // Swap kv heads 0 and 1 of k and v: query heads then read the other group.
    let swap = |x: &[f32]| {
        let mut y = x.to_vec();
        let d = case.head_dim;
        for j in 0..case.seq_k {
            let a = problem.k_strides.offset(0, j, 0, 0);
            let b = problem.k_strides.offset(0, j, 1, 0);
            y[a..a + d].copy_from_slice(&x[b..b + d]);
            y[b..b + d].copy_from_slice(&x[a..a + d]);
        }
        y
    };
    let swapped = cpu::attention(
        &problem,
        ForwardOptions::default(),
        &q,
        &swap(&k),
        &swap(&v),
    )
    .unwrap();
    let stats = cpu::compare_output(&problem, &swapped.out, &reference.out);
    assert!(
        stats.max_abs > 100.0 * tolerance,
        "{stats} vs {tolerance:e}"
    );
}

#[test]
fn cpu_backend_is_deterministic_across_runs() {
    let case = case(1, 113, 203, 2, 1, 59, true, Order::Bshd);
    let problem = case.problem();
    let (q, k, v) = inputs::<bf16>(&problem, 13, 1.0);
    let first = cpu::attention(
        &problem,
        ForwardOptions::default().with_lse(true).with_weights(true),
        &q,
        &k,
        &v,
    )
    .unwrap();
    for _ in 0..2 {
        let again = cpu::attention(
            &problem,
            ForwardOptions::default().with_lse(true).with_weights(true),
            &q,
            &k,
            &v,
        )
        .unwrap();
        assert!(first
            .out
            .iter()
            .zip(&again.out)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(
            first
                .weights
                .as_ref()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            again
                .weights
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn compare_reports_the_worst_index_and_non_finite_values() {
    let problem = AttentionProblem::new(AttentionShape::new(1, 2, 2, 3)).with_layout(Layout::Bhsd);
    // Contiguous expectation [b, s, h, d]; the output is [b, h, s, d].
    let expected: Vec<f64> = (0..12).map(f64::from).collect();
    let mut out = vec![0.0f32; 12];
    for s in 0..2 {
        for h in 0..2 {
            for d in 0..3 {
                out[problem.out_strides.offset(0, s, h, d)] = ((s * 2 + h) * 3 + d) as f32;
            }
        }
    }
    let exact = cpu::compare_output(&problem, &out, &expected);
    assert_eq!(
        exact,
        ErrorStats {
            max_abs: 0.0,
            mean_abs: 0.0,
            worst_index: None,
            non_finite: 0
        }
    );
    out[problem.out_strides.offset(0, 1, 0, 2)] += 0.5;
    let stats = cpu::compare_output(&problem, &out, &expected);
    assert_eq!(stats.max_abs, 0.5);
    assert_eq!(stats.worst_index, Some([0, 1, 0, 2]));
    assert!((stats.mean_abs - 0.5 / 12.0).abs() < 1e-15);
    out[problem.out_strides.offset(0, 0, 1, 1)] = f32::NAN;
    let stats = cpu::compare_output(&problem, &out, &expected);
    assert_eq!(
        (stats.non_finite, stats.max_abs, stats.worst_index),
        (1, f64::INFINITY, Some([0, 0, 1, 1]))
    );
    assert!(stats.to_string().contains("1 non-finite"), "{stats}");

    let neg = f64::NEG_INFINITY;
    let lse = cpu::compare_contiguous(&[f32::NEG_INFINITY, 1.0, 2.0], &[neg, 1.0, 2.25]);
    assert_eq!(
        (lse.max_abs, lse.worst_index, lse.non_finite),
        (0.25, Some([0, 0, 0, 2]), 0)
    );
    let lse = cpu::compare_contiguous(&[0.0, 1.0], &[neg, 1.0]);
    assert_eq!((lse.non_finite, lse.worst_index), (1, Some([0, 0, 0, 0])));
    let lse = cpu::compare_lse(&problem, &[0.0, 0.0, 0.0, 3.0], &[0.0, 0.0, 0.0, 0.0]);
    assert_eq!(lse.worst_index, Some([0, 1, 1, 0]));
}

/// The shape most error cases start from: batch 2, seq 8, 4 heads over 2 kv heads, head_dim 16.
fn base_shape() -> AttentionShape {
    AttentionShape::new(2, 8, 4, 16)
        .with_heads_kv(2)
        .with_seq_k(10)
}

/// Calls every CPU entry point with buffers of the problem's own lengths (at least 1 element each).
fn every_entry_point(
    problem: &AttentionProblem,
) -> Vec<(&'static str, cuda_attention::Result<()>)> {
    let len = |t| problem.required_len(t).unwrap_or(0).clamp(1, 1 << 16);
    let q = vec![0.5f32; len(Tensor::Q)];
    let k = vec![0.5f32; len(Tensor::K)];
    let v = vec![0.5f32; len(Tensor::V)];
    let mut out = vec![0.0f32; len(Tensor::Out)];
    vec![
        (
            "attention",
            cpu::attention(
                problem,
                ForwardOptions::default().with_lse(true).with_weights(true),
                &q,
                &k,
                &v,
            )
            .map(drop),
        ),
        (
            "attention_into",
            cpu_into(problem, &q, &k, &v, &mut out, None, None),
        ),
        ("reference", cpu::reference(problem, &q, &k, &v).map(drop)),
        (
            "naive_in_precision",
            cpu::naive_in_precision(problem, &q, &k, &v).map(drop),
        ),
        (
            "softmax_tolerance",
            cpu::softmax_tolerance(problem, &q, &k).map(drop),
        ),
    ]
}

/// Whether an error is the expected variant.
type ErrorCheck = fn(&AttentionError) -> bool;

#[test]
fn invalid_problems_give_their_specific_error_everywhere() {
    let shape = base_shape();
    let overlapping = {
        let p = AttentionProblem::new(shape);
        let out = Strides {
            seq: 0,
            ..p.out_strides
        };
        p.clone()
            .with_strides(p.q_strides, p.k_strides, p.v_strides, out)
    };
    let huge = {
        let p = AttentionProblem::new(shape);
        let q = Strides {
            batch: usize::MAX / 2,
            ..p.q_strides
        };
        p.clone()
            .with_strides(q, p.k_strides, p.v_strides, p.out_strides)
    };
    let cases: Vec<(&str, AttentionProblem, ErrorCheck)> = vec![
        (
            "heads_q 3 over heads_kv 2",
            AttentionProblem::new(AttentionShape {
                heads_q: 3,
                ..shape
            }),
            |e| {
                matches!(
                    e,
                    AttentionError::HeadsNotMultiple {
                        heads_q: 3,
                        heads_kv: 2
                    }
                )
            },
        ),
        (
            "head_dim 0",
            AttentionProblem::new(AttentionShape {
                head_dim: 0,
                ..shape
            }),
            |e| matches!(e, AttentionError::EmptyDimension { name: "head_dim" }),
        ),
        (
            "head_dim 257",
            AttentionProblem::new(AttentionShape {
                head_dim: 257,
                ..shape
            }),
            |e| {
                matches!(
                    e,
                    AttentionError::HeadDimUnsupported {
                        head_dim: 257,
                        max: 256
                    }
                )
            },
        ),
        (
            "batch 0",
            AttentionProblem::new(AttentionShape { batch: 0, ..shape }),
            |e| matches!(e, AttentionError::EmptyDimension { name: "batch" }),
        ),
        ("overlapping out", overlapping, |e| {
            matches!(e, AttentionError::InvalidStrides { tensor: "out", .. })
        }),
        ("huge q strides", huge, |e| {
            matches!(e, AttentionError::SizeOverflow { what: "q", .. })
        }),
        (
            "NaN scale",
            AttentionProblem::new(shape).with_scale(f32::NAN),
            |e| matches!(e, AttentionError::InvalidScale { .. }),
        ),
    ];
    for (name, problem, expected) in cases {
        for (entry, result) in every_entry_point(&problem) {
            match result {
                Err(ref e) if expected(e) => {}
                other => panic!("{name} through {entry}: got {other:?}"),
            }
        }
    }
}

#[test]
fn short_buffers_give_buffer_too_small_naming_the_buffer() {
    let problem = AttentionProblem::new(base_shape()).with_causal(true);
    let (q, k, v) = inputs::<f16>(&problem, 3, 1.0);
    let out_len = problem.required_len(Tensor::Out).unwrap();
    let lse_len = problem.shape.lse_elements().unwrap();
    let weights_len = problem.shape.score_elements().unwrap();
    let mut out = vec![f16::ZERO; out_len];
    let mut lse = vec![0.0f32; lse_len];
    let mut weights = vec![0.0f32; weights_len];
    let cut = |x: &[f16]| x[..x.len() - 1].to_vec();
    let (q1, k1, v1) = (cut(&q), cut(&k), cut(&v));

    let expect = |result: cuda_attention::Result<()>, tensor: &str, needed: usize| match result {
        Err(AttentionError::BufferTooSmall {
            tensor: t,
            needed: n,
            len,
        }) => {
            assert_eq!((t, n, len), (tensor, needed, needed - 1));
        }
        other => panic!("short {tensor}: got {other:?}"),
    };
    expect(
        cpu_into(&problem, &q1, &k, &v, &mut out, None, None),
        "q",
        q.len(),
    );
    expect(
        cpu_into(&problem, &q, &k1, &v, &mut out, None, None),
        "k",
        k.len(),
    );
    expect(
        cpu_into(&problem, &q, &k, &v1, &mut out, None, None),
        "v",
        v.len(),
    );
    expect(
        cpu_into(&problem, &q, &k, &v, &mut out[..out_len - 1], None, None),
        "out",
        out_len,
    );
    expect(
        cpu_into(
            &problem,
            &q,
            &k,
            &v,
            &mut out,
            Some(&mut lse[..lse_len - 1]),
            None,
        ),
        "lse",
        lse_len,
    );
    expect(
        cpu_into(
            &problem,
            &q,
            &k,
            &v,
            &mut out,
            Some(&mut lse),
            Some(&mut weights[..weights_len - 1]),
        ),
        "weights",
        weights_len,
    );
    expect(
        cpu::attention(&problem, ForwardOptions::default(), &q, &k1, &v).map(drop),
        "k",
        k.len(),
    );
    expect(
        cpu::reference(&problem, &q, &k, &v1).map(drop),
        "v",
        v.len(),
    );
    expect(
        cpu::naive_in_precision(&problem, &q1, &k, &v).map(drop),
        "q",
        q.len(),
    );
    // Exactly the needed lengths work.
    cpu_into(
        &problem,
        &q,
        &k,
        &v,
        &mut out,
        Some(&mut lse),
        Some(&mut weights),
    )
    .unwrap();
}

/// ALiBi slopes of a feature case.
#[derive(Debug, Clone, Copy)]
enum Alibi {
    Off,
    /// The standard slopes `2^(-8 (h + 1) / H)`.
    Geometric,
    /// Zero, negative, tiny and large slopes, cycled over the heads.
    Arbitrary,
}

/// Arbitrary slopes, cycled over the query heads.
const ARBITRARY_SLOPES: [f32; 8] = [0.3, 0.0, 1.7, -0.05, 0.9, 0.01, 4.0, 0.125];

/// The standard ALiBi slopes for `heads` heads: `m_h = 2^(-8 (h + 1) / heads)`.
fn geometric_slopes(heads: usize) -> Vec<f32> {
    (0..heads)
        .map(|h| (-8.0 * (h + 1) as f64 / heads as f64).exp2() as f32)
        .collect()
}

/// A shape of the table with a sliding window, a soft cap and ALiBi slopes.
#[derive(Debug, Clone, Copy)]
struct Features {
    base: Case,
    left: Option<usize>,
    right: Option<usize>,
    softcap: Option<f32>,
    alibi: Alibi,
    /// Inputs are uniform in `[-range, range)`.
    range: f32,
    /// Query rows (per batch and head) that see no key, worked out by hand.
    empty_rows: usize,
}

#[allow(clippy::too_many_arguments)]
const fn features(
    base: Case,
    left: Option<usize>,
    right: Option<usize>,
    softcap: Option<f32>,
    alibi: Alibi,
    range: f32,
    empty_rows: usize,
) -> Features {
    Features {
        base,
        left,
        right,
        softcap,
        alibi,
        range,
        empty_rows,
    }
}

impl Features {
    fn problem(&self) -> AttentionProblem {
        let mut problem = self.base.problem().with_window(self.left, self.right);
        if let Some(cap) = self.softcap {
            problem = problem.with_softcap(cap);
        }
        let heads = self.base.heads_q;
        match self.alibi {
            Alibi::Off => problem,
            Alibi::Geometric => problem.with_alibi_slopes(geometric_slopes(heads)),
            Alibi::Arbitrary => problem.with_alibi_slopes(
                ARBITRARY_SLOPES
                    .iter()
                    .copied()
                    .cycle()
                    .take(heads)
                    .collect::<Vec<_>>(),
            ),
        }
    }
}

/// Windows (left only, right only, both, a no-op one, the diagonal alone) with and without causal,
/// seq_q below and above seq_k, rows that see nothing; soft caps that matter (small caps, large
/// logits); geometric and arbitrary ALiBi slopes; and combinations of all three. The diagonal is
/// `c = i + seq_k - seq_q`; `empty_rows` counts the rows whose range is empty.
const FEATURE_CASES: &[Features] = &[
    // Left only, c = i + 2: nothing empty.
    features(
        case(1, 31, 33, 4, 2, 40, false, Order::Bshd),
        Some(5),
        None,
        None,
        Alibi::Off,
        1.0,
        0,
    ),
    // Left only with causal, row blocks starting mid-panel (c = i + 90).
    features(
        case(1, 113, 203, 2, 1, 59, true, Order::Padded),
        Some(17),
        None,
        None,
        Alibi::Off,
        1.0,
        0,
    ),
    // Right only, seq_q > seq_k: c = i - 16, row i sees keys 0..i - 13, empty for i <= 13.
    features(
        case(1, 33, 17, 4, 1, 64, false, Order::Bhsd),
        None,
        Some(2),
        None,
        Alibi::Off,
        1.0,
        14,
    ),
    // Right only with causal (causal is tighter): the 16 rows with c < 0 see nothing.
    features(
        case(2, 33, 17, 4, 2, 59, true, Order::Bshd),
        None,
        Some(3),
        None,
        Alibi::Off,
        1.0,
        16,
    ),
    // Both sides, square.
    features(
        case(2, 64, 64, 2, 2, 128, false, Order::Bshd),
        Some(7),
        Some(3),
        None,
        Alibi::Off,
        1.0,
        0,
    ),
    // Left with causal, seq_q > seq_k: c = i - 50, rows below 50 see nothing.
    features(
        case(1, 200, 150, 4, 2, 64, true, Order::Padded),
        Some(10),
        None,
        None,
        Alibi::Off,
        1.0,
        50,
    ),
    // The diagonal alone, seq_q < seq_k: each row sees exactly key i + 3.
    features(
        case(1, 9, 12, 2, 1, 16, false, Order::Bshd),
        Some(0),
        Some(0),
        None,
        Alibi::Off,
        1.0,
        0,
    ),
    // The diagonal alone, seq_q > seq_k: c = i - 2, rows 0 and 1 see nothing.
    features(
        case(1, 5, 3, 2, 1, 16, false, Order::Padded),
        Some(0),
        Some(0),
        None,
        Alibi::Off,
        1.0,
        2,
    ),
    // Both sides, seq_q > seq_k: c = i - 30, row i sees max(0, i - 32)..i - 28, empty for i <= 28.
    features(
        case(1, 40, 10, 2, 2, 32, false, Order::Bhsd),
        Some(2),
        Some(1),
        None,
        Alibi::Off,
        1.0,
        29,
    ),
    // No keys at all.
    features(
        case(1, 5, 0, 2, 1, 64, false, Order::Bshd),
        Some(3),
        None,
        Some(10.0),
        Alibi::Geometric,
        1.0,
        5,
    ),
    // A window wider than the sequences changes nothing.
    features(
        case(1, 31, 33, 4, 2, 40, true, Order::Bshd),
        Some(1000),
        Some(1000),
        None,
        Alibi::Off,
        1.0,
        0,
    ),
    // Soft caps: one far above the scores, one below them, one far below large logits.
    features(
        case(1, 31, 33, 4, 2, 40, false, Order::Bhsd),
        None,
        None,
        Some(30.0),
        Alibi::Off,
        1.0,
        0,
    ),
    features(
        case(1, 64, 64, 2, 2, 128, true, Order::Bshd),
        None,
        None,
        Some(2.0),
        Alibi::Off,
        3.0,
        0,
    ),
    features(
        case(1, 19, 23, 2, 2, 16, false, Order::Padded),
        None,
        None,
        Some(50.0),
        Alibi::Off,
        30.0,
        0,
    ),
    // ALiBi: geometric slopes, causal with seq_q < seq_k; arbitrary slopes; seq_q > seq_k, non-causal
    // (rows whose diagonal lies before every key).
    features(
        case(1, 113, 203, 8, 2, 64, true, Order::Bshd),
        None,
        None,
        None,
        Alibi::Geometric,
        1.0,
        0,
    ),
    features(
        case(1, 33, 47, 4, 4, 40, false, Order::Padded),
        None,
        None,
        None,
        Alibi::Arbitrary,
        1.0,
        0,
    ),
    features(
        case(2, 47, 33, 8, 1, 59, false, Order::Bhsd),
        None,
        None,
        None,
        Alibi::Geometric,
        1.0,
        0,
    ),
    // Combinations.
    features(
        case(1, 113, 203, 4, 2, 64, true, Order::Padded),
        Some(31),
        None,
        Some(20.0),
        Alibi::Geometric,
        1.0,
        0,
    ),
    // c = i - 24: row i sees max(0, i - 32)..i - 19, empty for i <= 19.
    features(
        case(2, 64, 40, 4, 1, 128, false, Order::Bshd),
        Some(8),
        Some(4),
        Some(5.0),
        Alibi::Arbitrary,
        2.0,
        20,
    ),
    // The diagonal alone with causal, seq_q > seq_k: the 50 rows with c < 0 see nothing.
    features(
        case(1, 200, 150, 2, 2, 32, true, Order::Bhsd),
        Some(0),
        None,
        Some(1.0),
        Alibi::Arbitrary,
        1.0,
        50,
    ),
];

#[test]
fn reference_with_windows_softcap_and_alibi_matches_the_streaming_formulation() {
    for (n, features) in FEATURE_CASES.iter().enumerate() {
        let problem = features.problem();
        let (q, k, v) = inputs::<f32>(&problem, 500 + n as u64, features.range);
        let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
        let expected = streaming(&problem, &q, &k, &v);
        for (name, got, want) in [
            ("out", &reference.out, &expected.out),
            ("lse", &reference.lse, &expected.lse),
            ("weights", &reference.weights, &expected.weights),
        ] {
            let error = max_diff(got, want);
            let bound = 1e-12 * (1.0 + max_abs(want));
            assert!(
                error <= bound,
                "{features:?} {name}: error {error:e} > {bound:e}"
            );
        }
        let s = problem.shape;
        let empty = (0..s.seq_q).filter(|&i| sees_nothing(&problem, i)).count();
        assert_eq!(empty, features.empty_rows, "{features:?}");
        let masked_lse = reference
            .lse
            .iter()
            .filter(|&&x| x == f64::NEG_INFINITY)
            .count();
        assert_eq!(
            masked_lse,
            features.empty_rows * s.batch * s.heads_q,
            "{features:?}"
        );
        assert!(
            reference
                .out
                .iter()
                .chain(&reference.weights)
                .all(|x| x.is_finite()),
            "{features:?}"
        );
    }
}

#[test]
fn naive_f32_baseline_applies_the_window_softcap_and_alibi() {
    // The tolerance rule's baseline must implement the features itself, or the rule would allow any
    // error: in f32 it stays within f32 roundings of the reference.
    for (n, features) in FEATURE_CASES.iter().enumerate() {
        let problem = features.problem();
        let (q, k, v) = inputs::<f32>(&problem, 600 + n as u64, features.range);
        let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
        let naive = cpu::naive_in_precision(&problem, &q, &k, &v).unwrap();
        let error = max_diff(
            &naive.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
            &reference.out,
        );
        let bound = 1e-5 * (1.0 + max_abs(&reference.out));
        assert!(error <= bound, "{features:?}: {error:e} > {bound:e}");
    }
}

/// The backend against the reference on every feature case in precision `T`; returns the largest
/// tolerance relative to the input range.
fn check_features<T: Element>(seed: u64) -> f64 {
    let mut loosest = 0.0f64;
    for (n, features) in FEATURE_CASES.iter().enumerate() {
        let tolerance = check_problem::<T>(
            &format!("{features:?}"),
            features.problem(),
            seed + n as u64,
            features.range,
            features.empty_rows,
        );
        loosest = loosest.max(tolerance / f64::from(features.range));
    }
    loosest
}

#[test]
fn cpu_backend_with_window_softcap_and_alibi_matches_the_reference_f32() {
    let tolerance = check_features::<f32>(700);
    assert!(tolerance < 1e-5, "f32 tolerance {tolerance:e} is too loose");
}

#[test]
fn cpu_backend_with_window_softcap_and_alibi_matches_the_reference_f16() {
    let tolerance = check_features::<f16>(800);
    assert!(tolerance < 1e-2, "f16 tolerance {tolerance:e} is too loose");
}

#[test]
fn cpu_backend_with_window_softcap_and_alibi_matches_the_reference_bf16() {
    let tolerance = check_features::<bf16>(900);
    assert!(
        tolerance < 5e-2,
        "bf16 tolerance {tolerance:e} is too loose"
    );
}

#[test]
fn window_patterns_by_hand() {
    // q = 0, so every visible key gets the same weight: row i outputs the mean of the V rows it sees,
    // lse = ln(count), weights 1 / count on its keys and exactly 0 elsewhere. The visible keys are
    // worked out by hand from c = i + seq_k - seq_q.
    type Pattern = (
        usize,
        usize,
        bool,
        Option<usize>,
        Option<usize>,
        &'static [&'static [usize]],
    );
    let patterns: &[Pattern] = &[
        // c = i + 2.
        (
            4,
            6,
            false,
            Some(1),
            Some(1),
            &[&[1, 2, 3], &[2, 3, 4], &[3, 4, 5], &[4, 5]],
        ),
        (3, 5, true, Some(1), None, &[&[1, 2], &[2, 3], &[3, 4]]),
        // c = i - 2.
        (
            5,
            3,
            false,
            None,
            Some(0),
            &[&[], &[], &[0], &[0, 1], &[0, 1, 2]],
        ),
        (5, 3, false, Some(0), Some(0), &[&[], &[], &[0], &[1], &[2]]),
        // c = i + 3.
        (
            3,
            6,
            false,
            Some(2),
            None,
            &[&[1, 2, 3, 4, 5], &[2, 3, 4, 5], &[3, 4, 5]],
        ),
        (
            3,
            6,
            false,
            None,
            Some(1),
            &[&[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4, 5], &[0, 1, 2, 3, 4, 5]],
        ),
        // c = i - 4.
        (
            6,
            2,
            true,
            Some(1),
            None,
            &[&[], &[], &[], &[], &[0], &[0, 1]],
        ),
    ];
    for &(sq, sk, causal, left, right, expected) in patterns {
        let d = 2;
        let problem = AttentionProblem::new(AttentionShape::new(1, sq, 1, d).with_seq_k(sk))
            .with_causal(causal)
            .with_window(left, right);
        let label = format!("sq {sq} sk {sk} causal {causal} window {left:?} {right:?}");
        let q = vec![0.0f32; sq * d];
        let k: Vec<f32> = (0..sk * d).map(|n| n as f32 * 0.37 - 1.0).collect();
        let v: Vec<f32> = (0..sk).flat_map(|j| [j as f32, 10.0 * j as f32]).collect();
        let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
        let got = cpu::attention(
            &problem,
            ForwardOptions::default().with_lse(true).with_weights(true),
            &q,
            &k,
            &v,
        )
        .unwrap();
        let (lse, weights) = (got.lse.unwrap(), got.weights.unwrap());
        for (i, keys) in expected.iter().enumerate() {
            let count = keys.len();
            for j in 0..sk {
                let want = if keys.contains(&j) {
                    1.0 / count as f64
                } else {
                    0.0
                };
                assert!(
                    (reference.weights[i * sk + j] - want).abs() < 1e-15,
                    "{label} reference [{i}, {j}]"
                );
                if want == 0.0 {
                    assert_eq!(weights[i * sk + j], 0.0, "{label} backend [{i}, {j}]");
                } else {
                    assert!(
                        (f64::from(weights[i * sk + j]) - want).abs() < 1e-6,
                        "{label} backend [{i}, {j}]"
                    );
                }
            }
            if count == 0 {
                assert_eq!(reference.lse[i], f64::NEG_INFINITY, "{label} row {i}");
                assert_eq!(lse[i], f32::NEG_INFINITY, "{label} row {i}");
                assert_eq!(&reference.out[i * d..][..d], &[0.0, 0.0], "{label} row {i}");
                assert_eq!(&got.out[i * d..][..d], &[0.0, 0.0], "{label} row {i}");
                continue;
            }
            let ln = (count as f64).ln();
            assert!((reference.lse[i] - ln).abs() < 1e-15, "{label} row {i}");
            assert!((f64::from(lse[i]) - ln).abs() < 1e-6, "{label} row {i}");
            let mean = keys.iter().sum::<usize>() as f64 / count as f64;
            for (x, factor) in [1.0, 10.0].into_iter().enumerate() {
                let want = factor * mean;
                assert!(
                    (reference.out[i * d + x] - want).abs() < 1e-12,
                    "{label} out [{i}, {x}]"
                );
                assert!(
                    (f64::from(got.out[i * d + x]) - want).abs() < 1e-5 * (1.0 + want),
                    "{label} backend out [{i}, {x}]"
                );
            }
        }
    }
}

#[test]
fn alibi_by_hand() {
    // q = 0: the scores are the bias alone, -m_h |c - j|, so the weights of row i are
    // exp(-m_h |c - j|) / sum over its keys. Two heads with slopes 0.5 and 2, c = i + 2.
    let (sq, sk) = (3usize, 5usize);
    let slopes = [0.5f32, 2.0];
    for (causal, left) in [(false, None), (true, Some(1))] {
        let problem = AttentionProblem::new(
            AttentionShape::new(1, sq, 2, 1)
                .with_seq_k(sk)
                .with_heads_kv(1),
        )
        .with_causal(causal)
        .with_window(left, None)
        .with_alibi_slopes(slopes.to_vec());
        let q = vec![0.0f32; sq * 2];
        let k: Vec<f32> = (0..sk).map(|j| j as f32 - 2.0).collect();
        let v: Vec<f32> = (0..sk).map(|j| j as f32).collect();
        let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
        let got = cpu::attention(
            &problem,
            ForwardOptions::default().with_lse(true).with_weights(true),
            &q,
            &k,
            &v,
        )
        .unwrap();
        let (lse, weights) = (got.lse.unwrap(), got.weights.unwrap());
        for (h, &m) in slopes.iter().enumerate() {
            for i in 0..sq {
                let c = i + 2;
                // Visible: every key; with causal and left 1, keys c - 1 and c.
                let keys: Vec<usize> = if causal {
                    vec![c - 1, c]
                } else {
                    (0..sk).collect()
                };
                let bias = |j: usize| -f64::from(m) * (c as f64 - j as f64).abs();
                let sum: f64 = keys.iter().map(|&j| bias(j).exp()).sum();
                let row = h * sq + i;
                assert!(
                    (reference.lse[row] - sum.ln()).abs() < 1e-14,
                    "h {h} row {i}"
                );
                assert!(
                    (f64::from(lse[row]) - sum.ln()).abs() < 1e-6,
                    "h {h} row {i}"
                );
                let mut mean = 0.0;
                for j in 0..sk {
                    let want = if keys.contains(&j) {
                        bias(j).exp() / sum
                    } else {
                        0.0
                    };
                    mean += want * j as f64;
                    assert!((reference.weights[row * sk + j] - want).abs() < 1e-15);
                    assert!((f64::from(weights[row * sk + j]) - want).abs() < 1e-6);
                }
                // The key on the diagonal weighs the most.
                assert!(keys
                    .iter()
                    .all(|&j| reference.weights[row * sk + j] <= reference.weights[row * sk + c]));
                let out = problem.out_strides.offset(0, i, h, 0);
                assert!((reference.out[i * 2 + h] - mean).abs() < 1e-12);
                assert!((f64::from(got.out[out]) - mean).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn softcap_by_hand_with_large_logits() {
    // One query, scale 1, head_dim 1: scores q * k_j = [0, 1, 10, 1000]. Uncapped, key 3 takes all
    // the weight; capped at 10 they become 10 tanh(s / 10) = [0, 0.997, 7.62, 10], which leaves key 2
    // about 7% of it.
    let problem = AttentionProblem::new(AttentionShape::new(1, 1, 1, 1).with_seq_k(4))
        .with_scale(1.0)
        .with_softcap(10.0);
    let q = [1000.0f32];
    let k = [0.0f32, 0.001, 0.01, 1.0];
    let v = [1.0f32, 2.0, 3.0, 4.0];
    let capped: Vec<f64> = k
        .iter()
        .map(|&kj| 10.0 * (1000.0 * f64::from(kj) / 10.0).tanh())
        .collect();
    let sum: f64 = capped.iter().map(|s| s.exp()).sum();
    let weights: Vec<f64> = capped.iter().map(|s| s.exp() / sum).collect();
    let out: f64 = weights.iter().zip(&v).map(|(w, &x)| w * f64::from(x)).sum();
    assert!(weights[2] > 0.05 && weights[3] < 0.95, "{weights:?}");

    let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
    assert!((reference.lse[0] - sum.ln()).abs() < 1e-13);
    assert!((reference.out[0] - out).abs() < 1e-13);
    for (got, want) in reference.weights.iter().zip(&weights) {
        assert!((got - want).abs() < 1e-15);
    }
    let naive = cpu::naive_in_precision(&problem, &q, &k, &v).unwrap();
    assert!(
        (f64::from(naive[0]) - out).abs() < 1e-5,
        "naive {}",
        naive[0]
    );
    let got = cpu::attention(
        &problem,
        ForwardOptions::default().with_lse(true).with_weights(true),
        &q,
        &k,
        &v,
    )
    .unwrap();
    assert!((f64::from(got.out[0]) - out).abs() < 1e-5);
    assert!((f64::from(got.lse.unwrap()[0]) - sum.ln()).abs() < 1e-5);
    for (got, want) in got.weights.unwrap().iter().zip(&weights) {
        assert!((f64::from(*got) - want).abs() < 1e-6);
    }
    // Without the cap the answer is v[3].
    let uncapped = cpu::reference(&problem.clone().with_softcap(f32::MAX), &q, &k, &v).unwrap();
    assert!((uncapped.out[0] - 4.0).abs() < 1e-12);
}

#[test]
fn softcap_bounds_large_logits() {
    // Scores in the thousands (scale 1e3) and hundreds of millions (values ~1e4), capped at 30: every
    // capped score lies in [-30, 30], so lse <= 30 + ln(visible keys), while uncapped it is in the
    // thousands. Reference, streaming formulation and backend agree.
    let shape = AttentionShape::new(1, 19, 2, 16).with_seq_k(23);
    for (scale, range) in [(1e3f32, 1.0f32), (0.25, 1e4)] {
        for causal in [false, true] {
            let problem = AttentionProblem::new(shape)
                .with_scale(scale)
                .with_causal(causal)
                .with_softcap(30.0);
            let label = format!("scale {scale} range {range} causal {causal}");
            let (q, k, v) = inputs::<f32>(&problem, 21, range);
            let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
            let expected = streaming(&problem, &q, &k, &v);
            for (got, want) in [
                (&reference.out, &expected.out),
                (&reference.lse, &expected.lse),
                (&reference.weights, &expected.weights),
            ] {
                assert!(
                    max_diff(got, want) <= 1e-12 * (1.0 + max_abs(want)),
                    "{label}"
                );
            }
            assert!(
                reference.lse.iter().all(|&x| x <= 30.0 + 23f64.ln()),
                "{label}"
            );
            let uncapped = cpu::reference(&problem.clone().with_softcap(1e30), &q, &k, &v).unwrap();
            assert!(
                max_abs(&uncapped.lse) > 1000.0,
                "{label}: the cap must matter"
            );

            let got = cpu::attention(
                &problem,
                ForwardOptions::default().with_lse(true).with_weights(true),
                &q,
                &k,
                &v,
            )
            .unwrap();
            let stats = cpu::compare_output(&problem, &got.out, &reference.out);
            let tolerance = cpu::tolerance(&problem, &q, &k, &v, &reference).unwrap();
            assert!(
                stats.non_finite == 0 && stats.max_abs <= tolerance,
                "{label}: {stats} > {tolerance:e}"
            );
            let softmax = cpu::softmax_tolerance(&problem, &q, &k).unwrap();
            let lse = cpu::compare_lse(&problem, got.lse.as_deref().unwrap(), &reference.lse);
            assert!(
                lse.max_abs <= softmax.lse,
                "{label}: lse {lse} > {:e}",
                softmax.lse
            );
            let weights = cpu::compare_weights(
                &problem,
                got.weights.as_deref().unwrap(),
                &reference.weights,
            );
            assert!(
                weights.max_abs <= softmax.weights,
                "{label}: weights {weights} > {:e}",
                softmax.weights
            );
        }
    }
}

#[test]
fn the_tolerance_rejects_a_missing_window_softcap_or_alibi() {
    // The rule must be able to fail: the backend run without one feature, against the reference with
    // it.
    let base = case(1, 31, 33, 4, 2, 40, true, Order::Bshd).problem();
    let with = [
        ("window", base.clone().with_window(Some(4), None)),
        ("softcap", base.clone().with_softcap(0.5)),
        ("alibi", base.clone().with_alibi_slopes(geometric_slopes(4))),
    ];
    for (name, problem) in with {
        let (q, k, v) = inputs::<f32>(&problem, 19, 1.0);
        let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
        let tolerance = cpu::tolerance(&problem, &q, &k, &v, &reference).unwrap();
        let right = cpu::attention(&problem, ForwardOptions::default(), &q, &k, &v).unwrap();
        let stats = cpu::compare_output(&problem, &right.out, &reference.out);
        assert!(
            stats.max_abs <= tolerance,
            "{name}: {stats} > {tolerance:e}"
        );
        let wrong = cpu::attention(&base, ForwardOptions::default(), &q, &k, &v).unwrap();
        let stats = cpu::compare_output(&problem, &wrong.out, &reference.out);
        assert!(
            stats.max_abs > 100.0 * tolerance,
            "{name}: {stats} vs {tolerance:e}"
        );
    }
}

#[test]
fn invalid_softcap_alibi_and_window_give_their_specific_error_everywhere() {
    let problem = AttentionProblem::new(base_shape()).with_causal(true);
    let heads = problem.shape.heads_q;
    assert_eq!(heads, 4);
    let softcap_message: ErrorCheck = |e| {
        matches!(e, AttentionError::InvalidArgument(m)
            if m.contains("softcap") && m.contains("finite") && m.contains("above 0"))
    };
    let alibi_message: ErrorCheck = |e| {
        matches!(e, AttentionError::InvalidArgument(m)
            if m.contains("ALiBi") && m.contains("4 finite slopes") && m.contains("query head"))
    };
    let window: ErrorCheck = |e| {
        matches!(e, AttentionError::SizeOverflow { what: "window", detail }
            if detail.contains("None"))
    };
    let cases: Vec<(&str, AttentionProblem, ErrorCheck)> = vec![
        (
            "softcap 0",
            problem.clone().with_softcap(0.0),
            softcap_message,
        ),
        (
            "softcap -0",
            problem.clone().with_softcap(-0.0),
            softcap_message,
        ),
        (
            "softcap -1",
            problem.clone().with_softcap(-1.0),
            softcap_message,
        ),
        (
            "softcap NaN",
            problem.clone().with_softcap(f32::NAN),
            softcap_message,
        ),
        (
            "softcap inf",
            problem.clone().with_softcap(f32::INFINITY),
            softcap_message,
        ),
        (
            "no slopes",
            problem.clone().with_alibi_slopes(Vec::new()),
            alibi_message,
        ),
        (
            "3 slopes",
            problem.clone().with_alibi_slopes(geometric_slopes(3)),
            alibi_message,
        ),
        (
            "5 slopes",
            problem.clone().with_alibi_slopes(geometric_slopes(5)),
            alibi_message,
        ),
        (
            "NaN slope",
            problem
                .clone()
                .with_alibi_slopes(vec![0.5, f32::NAN, 0.1, 0.2]),
            alibi_message,
        ),
        (
            "infinite slope",
            problem
                .clone()
                .with_alibi_slopes(vec![0.5, 0.25, f32::NEG_INFINITY, 0.2]),
            alibi_message,
        ),
        (
            "huge window",
            problem.clone().with_window(Some(usize::MAX), None),
            window,
        ),
    ];
    for (name, problem, expected) in cases {
        for (entry, result) in every_entry_point(&problem) {
            match result {
                Err(ref e) if expected(e) => {}
                other => panic!("{name} through {entry}: got {other:?}"),
            }
        }
        let q = vec![0.5f32; problem.required_len(Tensor::Q).unwrap()];
        match cpu::tolerance(
            &problem,
            &q,
            &q,
            &q,
            &ReferenceOutput {
                out: Vec::new(),
                lse: Vec::new(),
                weights: Vec::new(),
            },
        ) {
            Err(ref e) if expected(e) => {}
            other => panic!("{name} through tolerance: got {other:?}"),
        }
    }
}

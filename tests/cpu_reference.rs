//! The CPU reference against an independent formulation and hand-computed cases, the CPU backend
//! against the reference (FlashAttention's tolerance rule), and the errors every entry point reports.

use cuda_attention::cpu::{self, ErrorStats, ReferenceOutput};
use cuda_attention::{AttentionError, AttentionProblem, AttentionShape, Element, Layout, Strides};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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

/// `len` values uniform in `[-range, range)`, rounded to `T`.
fn random<T: Element>(rng: &mut StdRng, len: usize, range: f32) -> Vec<T> {
    (0..len)
        .map(|_| T::from_f32(rng.random_range(-range..range)))
        .collect()
}

/// Random q, k, v of the lengths the problem's strides need (padding included).
fn inputs<T: Element>(
    problem: &AttentionProblem,
    seed: u64,
    range: f32,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let q = random(&mut rng, problem.required_len("q").unwrap(), range);
    let k = random(&mut rng, problem.required_len("k").unwrap(), range);
    let v = random(&mut rng, problem.required_len("v").unwrap(), range);
    (q, k, v)
}

/// An independent formulation: explicit mask test, scores in f64, online softmax streamed over the
/// keys for the output and the logsumexp, then weights as `exp(s - lse)` in a second pass. Offsets are
/// computed here from the raw strides.
fn streaming<T: Element>(problem: &AttentionProblem, q: &[T], k: &[T], v: &[T]) -> ReferenceOutput {
    let s = problem.shape;
    let (sq, sk, hq, d) = (s.seq_q, s.seq_k, s.heads_q, s.head_dim);
    let scale = f64::from(problem.scale.unwrap_or(1.0 / (d as f32).sqrt()));
    let at = |st: &Strides, b: usize, i: usize, h: usize, x: usize| {
        b * st.batch + i * st.seq + h * st.head + x
    };
    let masked = |i: usize, j: usize| problem.causal && j as i64 > i as i64 + sk as i64 - sq as i64;
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
                    scale * dot
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
    let got = cpu::attention(&problem, &q, &k, &v, true, true).unwrap();
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
        let q: Vec<f32> = random(&mut rng, sq * d, 1.0);
        let key: Vec<f32> = random(&mut rng, d, 1.0);
        let k: Vec<f32> = key.iter().copied().cycle().take(sk * d).collect();
        let v: Vec<f32> = random(&mut rng, sk * d, 1.0);
        let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
        let got = cpu::attention(&problem, &q, &k, &v, true, false).unwrap();
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

            let got = cpu::attention(&problem, &q, &k, &v, true, false).unwrap();
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
    let got = cpu::attention(&problem, &q, &k, &v, false, false).unwrap();
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
    let got = cpu::attention(&problem, &q, &k, &v, true, false).unwrap();
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
    let problem = case.problem();
    let (q, k, v) = inputs::<T>(&problem, seed, 1.0);
    let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
    let tolerance = cpu::tolerance(&problem, &q, &k, &v, &reference).unwrap();
    let softmax = cpu::softmax_tolerance(&problem, &q, &k).unwrap();
    let dtype = T::DTYPE;

    // Sentinels everywhere: the padding of out must survive, every lse/weight must be written.
    let sentinel = T::from_f32(7.0);
    let mut out = vec![sentinel; problem.required_len("out").unwrap()];
    let mut lse = vec![f32::NAN; problem.shape.lse_elements().unwrap()];
    let mut weights = vec![f32::NAN; problem.shape.score_elements().unwrap()];
    cpu::attention_into(
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
            "{dtype} {case:?} {what}: {stats} exceeds {bound:e}"
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

    // Rows that see no key: exactly 0 and -inf.
    let s = problem.shape;
    let st = problem.out_strides;
    for b in 0..s.batch {
        for h in 0..s.heads_q {
            for i in 0..case.fully_masked_rows() {
                assert_eq!(
                    lse[(b * s.heads_q + h) * s.seq_q + i],
                    f32::NEG_INFINITY,
                    "{case:?}"
                );
                for x in 0..s.head_dim {
                    assert_eq!(out[st.offset(b, i, h, x)].to_f32(), 0.0, "{dtype} {case:?}");
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
        assert_eq!(value.to_f32(), 7.0, "{case:?}: padding at {n} overwritten");
    }
    // The allocating entry point agrees bit for bit.
    let again = cpu::attention(&problem, &q, &k, &v, true, true).unwrap();
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
    let unmasked = cpu::attention(&problem.with_causal(false), &q, &k, &v, false, false).unwrap();
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
    let swapped = cpu::attention(&problem, &q, &swap(&k), &swap(&v), false, false).unwrap();
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
    let first = cpu::attention(&problem, &q, &k, &v, true, true).unwrap();
    for _ in 0..2 {
        let again = cpu::attention(&problem, &q, &k, &v, true, true).unwrap();
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
    let q = vec![0.5f32; len("q")];
    let k = vec![0.5f32; len("k")];
    let v = vec![0.5f32; len("v")];
    let mut out = vec![0.0f32; len("out")];
    vec![
        (
            "attention",
            cpu::attention(problem, &q, &k, &v, true, true).map(drop),
        ),
        (
            "attention_into",
            cpu::attention_into(problem, &q, &k, &v, &mut out, None, None),
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
        p.with_strides(p.q_strides, p.k_strides, p.v_strides, out)
    };
    let huge = {
        let p = AttentionProblem::new(shape);
        let q = Strides {
            batch: usize::MAX / 2,
            ..p.q_strides
        };
        p.with_strides(q, p.k_strides, p.v_strides, p.out_strides)
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
    let out_len = problem.required_len("out").unwrap();
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
        cpu::attention_into(&problem, &q1, &k, &v, &mut out, None, None),
        "q",
        q.len(),
    );
    expect(
        cpu::attention_into(&problem, &q, &k1, &v, &mut out, None, None),
        "k",
        k.len(),
    );
    expect(
        cpu::attention_into(&problem, &q, &k, &v1, &mut out, None, None),
        "v",
        v.len(),
    );
    expect(
        cpu::attention_into(&problem, &q, &k, &v, &mut out[..out_len - 1], None, None),
        "out",
        out_len,
    );
    expect(
        cpu::attention_into(
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
        cpu::attention_into(
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
        cpu::attention(&problem, &q, &k1, &v, false, false).map(drop),
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
    cpu::attention_into(
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

//! Masks, ALiBi and the soft cap on hand-computed cases, in the reference and the CPU backend: the causal
//! mask example of the kernel facts, window patterns worked out key by key, ALiBi weights from the
//! bias alone, and soft caps on large logits (bounded lse, the cap changing the answer).

mod common;

use common::cpu_support::cases::inputs;
use common::cpu_support::streaming::{max_abs, max_diff, streaming};
use cuda_attention::cpu;
use cuda_attention::{AttentionProblem, AttentionShape, ForwardOptions};

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

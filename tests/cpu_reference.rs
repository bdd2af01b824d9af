//! The f64 reference's own properties: it matches an independent streaming formulation over the shape
//! table, gives the mean of the visible values when all keys are equal, stays finite and exact on large
//! logits, and lets a NaN input show as NaN rather than as a masked row.

mod common;

use common::cpu_support::cases::{inputs, CASES};
use common::cpu_support::streaming::{max_abs, max_diff, streaming};
use cuda_attention::cpu;
use cuda_attention::{AttentionProblem, AttentionShape, ForwardOptions};
use rand::rngs::StdRng;
use rand::SeedableRng;

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

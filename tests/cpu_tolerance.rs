//! The comparison helpers (worst index, non-finite values, lse and strided outputs) and the tolerance
//! rule itself: it rejects a wrong mask, a wrong kv head and a missing window, soft cap or ALiBi, and has
//! no baseline when the naive f16 formula overflows.

mod common;

use common::cpu_support::cases::{case, geometric_slopes, inputs, Order};
use common::cpu_support::streaming::max_abs;
use cuda_attention::cpu::{self, ErrorStats};
use cuda_attention::{AttentionError, AttentionProblem, AttentionShape, ForwardOptions, Layout};
use half::f16;

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

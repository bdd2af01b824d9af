//! Sliding windows, soft caps and ALiBi over a table of feature cases: the reference against the
//! independent streaming formulation, the naive f32 baseline the tolerance rule uses, and the CPU
//! backend against the reference in f32, f16 and bf16 (rows that see nothing, hidden keys, padding).

mod common;

use common::cpu_support::cases::{case, geometric_slopes, inputs, Case, Order};
use common::cpu_support::check::check_problem;
use common::cpu_support::streaming::{max_abs, max_diff, sees_nothing, streaming};
use cuda_attention::cpu;
use cuda_attention::{AttentionProblem, Element};
use half::{bf16, f16};

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

//! The CPU backend against the f64 reference over the shape table (f32, f16, bf16; three memory orders,
//! GQA/MQA, causal, empty key sequences) within FlashAttention's tolerance rule, and its bit-for-bit
//! determinism across runs.

mod common;

use common::cpu_support::cases::{case, inputs, Order, CASES};
use common::cpu_support::check::check_backend;
use cuda_attention::cpu;
use cuda_attention::ForwardOptions;
use half::{bf16, f16};

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

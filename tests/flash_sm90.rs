//! The sm_90a flash kernel (`kernels/flash_sm90.cu`: TMA, mbarrier ring, warp specialisation, wgmma) run
//! through the CPU emulator with sm_90a semantics, against the f64 reference by FlashAttention's tolerance
//! rule (`cpu::compare::tolerance`), on guarded buffers (outputs poisoned before the launch, inputs fenced
//! by NaN). The kernel is opt-in: every test here sets the switch first.

mod common;

use std::sync::Once;

use common::{guarded, shape};

use cuda_attention::cpu::{compare, reference};
use cuda_attention::emulator::{Emulator, Schedule};
use cuda_attention::plan::HOPPER_ENV;
use cuda_attention::{
    AttentionError, AttentionProblem, BlockMask, DType, Element, ForwardOptions, KernelChoice,
    KernelKind, Layout, Tensor,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

static OPT_IN: Once = Once::new();

/// Sets the opt-in switch once for this test binary, before any plan reads it.
fn opt_in() {
    OPT_IN.call_once(|| std::env::set_var(HOPPER_ENV, "1"));
}

fn options() -> ForwardOptions {
    ForwardOptions::default()
        .with_lse(true)
        .with_kernel(KernelChoice::FlashSm90)
}

/// Runs the sm_90a kernel (asserting the plan chose it) and checks out and lse against the reference;
/// the runs under the other schedules `reruns` must be bit-identical to it.
fn check<T: Element>(name: &str, problem: &AttentionProblem, magnitude: f32, reruns: &[Schedule]) {
    opt_in();
    let emulator = Emulator::new().with_schedule(Schedule::Random { seed: 3 });
    let mut rng = StdRng::seed_from_u64(17);
    let q = guarded::strided_random::<T>(problem, Tensor::Q, &mut rng, magnitude);
    let k = guarded::strided_random::<T>(problem, Tensor::K, &mut rng, magnitude);
    let v = guarded::strided_random::<T>(problem, Tensor::V, &mut rng, 1.0);
    let (q, k, v) = (&q[..], &k[..], &v[..]);
    let plan = emulator.plan::<T>(problem, options()).unwrap();
    assert_eq!(
        plan.kernel(),
        KernelKind::FlashSm90,
        "{name}: {}",
        plan.reason()
    );

    let label = format!("{name} {} {:?}", T::DTYPE, problem.shape);
    let out = guarded::forward(&emulator, problem, options(), [q, k, v], &label)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let expected = reference::reference(problem, q, k, v).unwrap();
    let allowed = compare::tolerance(problem, q, k, v, &expected).unwrap();
    let out_error = compare::compare_output(problem, &out.out, &expected.out);
    assert!(
        out_error.max_abs <= allowed,
        "{label}: out {out_error}, allowed {allowed:.3e}"
    );
    let lse_allowed = compare::softmax_tolerance(problem, q, k).unwrap().lse;
    let lse_error = compare::compare_lse(problem, out.lse.as_ref().unwrap(), &expected.lse);
    assert!(
        lse_error.max_abs <= lse_allowed,
        "{label}: lse {lse_error}, allowed {lse_allowed:.3e}"
    );
    for &schedule in reruns {
        let emulator = Emulator::new().with_schedule(schedule);
        let again = guarded::forward(&emulator, problem, options(), [q, k, v], &label)
            .unwrap_or_else(|e| panic!("{label} under {schedule}: {e}"));
        let differ = out
            .out
            .iter()
            .zip(&again.out)
            .filter(|(a, b)| a.to_f64().to_bits() != b.to_f64().to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "{label}: the schedule {schedule} differs in {differ} outputs"
        );
    }
}

/// M1's configuration: bf16, head_dim 128, non-causal, dense; 3 key tiles (the 2-stage ring wraps), a
/// partial last query and key tile, two batches and heads; rerun under the reversed schedule.
#[test]
fn bf16_d128_non_causal_matches_the_reference() {
    let problem = AttentionProblem::new(shape(2, 300, 333, 2, 2, 128));
    check::<bf16>("bf16 d128", &problem, 1.0, &[Schedule::Reversed]);
}

/// Both dtypes, the d64 and d128 instantiations and head dims below them (zero-filled columns past
/// head_dim by the TMA box), causal and not, GQA.
#[test]
fn every_dtype_and_head_dim_matches_the_reference() {
    for head_dim in [40, 64, 96, 128] {
        for causal in [false, true] {
            let problem =
                AttentionProblem::new(shape(1, 150, 260, 4, 2, head_dim)).with_causal(causal);
            let name = format!("d{head_dim} causal {causal}");
            check::<f16>(&name, &problem, 1.0, &[]);
            check::<bf16>(&name, &problem, 1.0, &[]);
        }
    }
}

/// Ragged sizes (1, 31, 33, 113, 1023) with seq_q != seq_k, causal and not; causal with seq_q > seq_k
/// leaves the first rows with no key (out 0, lse -inf).
#[test]
fn ragged_sequence_lengths_match_the_reference() {
    let pairs = [
        (1, 1),
        (1, 147),
        (31, 33),
        (33, 31),
        (113, 203),
        (203, 113),
        (1023, 1024),
    ];
    for (seq_q, seq_k) in pairs {
        for causal in [false, true] {
            let problem =
                AttentionProblem::new(shape(1, seq_q, seq_k, 2, 1, 64)).with_causal(causal);
            check::<bf16>(
                &format!("{seq_q}x{seq_k} causal {causal}"),
                &problem,
                1.0,
                &[],
            );
        }
    }
    let problem = AttentionProblem::new(shape(1, 1023, 1023, 1, 1, 128)).with_causal(true);
    check::<f16>("1023 causal d128", &problem, 1.0, &[]);
}

/// The sliding window (both sides, one side), soft cap, ALiBi and sinks, and large logits.
#[test]
fn masks_and_score_changes_match_the_reference() {
    let base = || AttentionProblem::new(shape(1, 200, 300, 2, 2, 128));
    check::<bf16>(
        "window 40/8",
        &base().with_window(Some(40), Some(8)),
        1.0,
        &[],
    );
    check::<bf16>(
        "causal window 100",
        &base().with_causal(true).with_window(Some(100), None),
        1.0,
        &[],
    );
    check::<f16>("softcap 5", &base().with_softcap(5.0), 3.0, &[]);
    check::<bf16>(
        "alibi and sinks",
        &base()
            .with_alibi_slopes(vec![0.25f32, 0.0625])
            .with_sinks(vec![1.5f32, -0.5]),
        1.0,
        &[],
    );
    check::<bf16>("large logits", &base(), 8.0, &[]);
}

/// A window that leaves whole query rows with no key: out 0 and lse -inf there, never NaN.
#[test]
fn fully_masked_rows_give_zero_and_minus_infinity() {
    let problem = AttentionProblem::new(shape(1, 300, 64, 1, 1, 64)).with_causal(true);
    check::<bf16>("causal 300x64", &problem, 1.0, &[]);
}

/// Ping-pong: the two consumer warpgroups take turns issuing their wgmmas on named barriers, one turn per key
/// tile of the block. Every turn count a block can have (0 when no row of the tile sees a key, 1, 2, 3 with
/// the 2-stage ring wrapping, many), and launches whose blocks have different counts (causal with seq_q not
/// a multiple of 128, a window), each under three more schedules: a hand-over that does not pair up shows as
/// a deadlock or a count mismatch (errors of the emulator), a race as outputs that differ between schedules.
#[test]
fn ping_pong_turns_pair_up_for_every_tile_count() {
    let schedules = [
        Schedule::Reversed,
        Schedule::RoundRobin,
        Schedule::Random { seed: 11 },
    ];
    let cases = [
        ("1x1", shape(1, 1, 1, 1, 1, 64), false),
        ("130x1 causal", shape(1, 130, 1, 2, 1, 64), true),
        ("260x64 causal", shape(1, 260, 64, 1, 1, 64), true),
        ("200x200 causal", shape(1, 200, 200, 2, 2, 64), true),
        ("129x385", shape(1, 129, 385, 2, 1, 128), false),
        ("257x520 causal", shape(1, 257, 520, 1, 1, 128), true),
    ];
    for (name, shape, causal) in cases {
        let problem = AttentionProblem::new(shape).with_causal(causal);
        check::<bf16>(name, &problem, 1.0, &schedules);
    }
    let window = AttentionProblem::new(shape(1, 300, 300, 1, 1, 64)).with_window(Some(20), Some(0));
    check::<f16>("window 20/0", &window, 1.0, &schedules);
}

/// The head-major layout (other strides than the default).
#[test]
fn bhsd_layout_matches_the_reference() {
    let problem = AttentionProblem::new(shape(2, 129, 200, 2, 1, 128)).with_layout(Layout::Bhsd);
    check::<f16>("bhsd", &problem, 1.0, &[]);
}

/// Head dim 256 (`flash_sm90_fwd_d256_*`: 80-key tiles, no ping-pong) serves head dims 129..256, with the
/// columns past head_dim zero-filled by the TMA box; 65..128 stay on d128.
#[test]
fn head_dims_129_to_256_run_the_d256_kernel() {
    opt_in();
    let emulator = Emulator::new();
    for (head_dim, kernel) in [
        (128, "flash_sm90_fwd_d128_bf16"),
        (136, "flash_sm90_fwd_d256_bf16"),
        (256, "flash_sm90_fwd_d256_bf16"),
    ] {
        let problem = AttentionProblem::new(shape(1, 64, 64, 1, 1, head_dim));
        let plan = emulator.plan::<bf16>(&problem, options()).unwrap();
        assert_eq!(plan.launches()[0].name, kernel, "head_dim {head_dim}");
    }
}

/// Head dim 256 against the reference: both dtypes, head dims 256, 200 and 136, causal and not, GQA, key
/// tiles of 80 wrapping the 2-stage ring (333 keys: 5 tiles, the last partial), seq_q != seq_k.
#[test]
fn d256_matches_the_reference() {
    let problem = AttentionProblem::new(shape(2, 150, 333, 2, 1, 256));
    check::<bf16>("d256 gqa", &problem, 1.0, &[Schedule::Reversed]);
    for head_dim in [136, 200, 256] {
        for causal in [false, true] {
            let problem =
                AttentionProblem::new(shape(1, 130, 170, 2, 2, head_dim)).with_causal(causal);
            let name = format!("d{head_dim} causal {causal}");
            check::<f16>(&name, &problem, 1.0, &[]);
            check::<bf16>(&name, &problem, 1.0, &[]);
        }
    }
}

/// Head dim 256 at ragged sizes (1, 31, 33, 113, 1023) with seq_q != seq_k, causal and not (causal
/// with seq_q > seq_k leaves rows and whole query tiles with no key: out 0, lse -inf), a window, soft cap
/// with ALiBi and sinks, and large logits.
#[test]
fn d256_ragged_sizes_and_masks_match_the_reference() {
    let pairs = [(1, 1), (1, 147), (31, 33), (33, 31), (113, 203), (300, 64)];
    for (seq_q, seq_k) in pairs {
        for causal in [false, true] {
            let problem =
                AttentionProblem::new(shape(1, seq_q, seq_k, 1, 1, 256)).with_causal(causal);
            check::<bf16>(
                &format!("d256 {seq_q}x{seq_k} causal {causal}"),
                &problem,
                1.0,
                &[],
            );
        }
    }
    let long = AttentionProblem::new(shape(1, 1023, 1021, 1, 1, 256)).with_causal(true);
    check::<f16>("d256 1023x1021 causal", &long, 1.0, &[]);
    let base = || AttentionProblem::new(shape(1, 150, 250, 2, 2, 256));
    check::<bf16>(
        "d256 window 40/8",
        &base().with_window(Some(40), Some(8)),
        1.0,
        &[],
    );
    check::<f16>(
        "d256 softcap, alibi and sinks",
        &base()
            .with_softcap(5.0)
            .with_alibi_slopes(vec![0.25f32, 0.0625])
            .with_sinks(vec![1.5f32, -0.5]),
        3.0,
        &[],
    );
    check::<bf16>("d256 large logits", &base(), 8.0, &[]);
}

/// What the kernel does not take is refused with the reason, not run.
#[test]
fn unsupported_problems_are_refused_with_the_reason() {
    opt_in();
    let emulator = Emulator::new();
    let problem = AttentionProblem::new(shape(1, 64, 64, 1, 1, 64));
    let refusal = |result: cuda_attention::Result<cuda_attention::Plan>| match result {
        Err(AttentionError::KernelUnsupported { kernel, reason }) => {
            assert_eq!(kernel, "flash-sm90");
            reason
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(refusal(emulator.plan::<f32>(&problem, options())).contains("f32"));
    let mask = BlockMask::from_rows(64, 64, 64, 64, &[vec![0]]).unwrap();
    let sparse = AttentionProblem::new(shape(1, 64, 64, 1, 1, 64)).with_block_mask(mask);
    assert!(refusal(emulator.plan::<bf16>(&sparse, options())).contains("block-sparse"));
    let split = options().with_splits(cuda_attention::Splits::Fixed(2));
    assert!(refusal(emulator.plan::<bf16>(&problem, split)).contains("split-KV"));
    // Auto keeps the sm_80 kernel.
    let auto = emulator
        .plan::<bf16>(&problem, ForwardOptions::default())
        .unwrap();
    assert_eq!(auto.kernel(), KernelKind::Flash);
    assert_eq!(DType::Bf16, auto.dtype());
}

//! The guarded buffers of the emulator value tests (tests/common/guarded.rs) do what they claim: a write
//! past either end of any buffer, or into the gaps of a strided output, fails with an assertion that
//! names the buffer and counts the clobbered elements; an input read past its end gives NaN. Shown on the
//! helper itself (guards clobbered by hand) and on real kernels: the product's flash and naive kernels,
//! launched by hand with the parameters of a problem of more query rows (or keys) than the buffers hold,
//! write (or read) past the tensors exactly as a kernel that ignores seq_q (or seq_k) would.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::guarded::{self, Guarded, GuardedCall, SENTINEL};
use cuda_attention::cpu;
use cuda_attention::emulator::Emulator;
use cuda_attention::{
    AttentionProblem, AttentionShape, ForwardOptions, KernelChoice, Strides, Tensor,
};
use half::f16;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("expected an assertion failure");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn guards_are_aligned_and_report_what_was_clobbered() {
    let values: Vec<f32> = (0..37).map(|x| x as f32).collect();
    let mut buffer = Guarded::new("lse", &values, guarded::sentinel(), 0);
    assert_eq!(buffer.interior(), &values[..]);
    assert_eq!(buffer.interior().as_ptr() as usize % 16, 0);
    let (head, tail) = buffer.guard_elements();
    assert!(
        head * 4 >= guarded::MIN_GUARD_BYTES && tail >= head,
        "{head} {tail}"
    );
    assert!(buffer.check().is_empty(), "{:?}", buffer.check());
    // The interior is the kernel's: writing all of it is fine.
    buffer.interior_mut().fill(-1.0);
    assert!(buffer.check().is_empty());
    // Three elements past the end, one right before the start.
    let storage = buffer.storage_mut();
    storage[head + 37] = 0.0;
    storage[head + 38] = f32::NAN;
    storage[head + 39] = 1.0;
    storage[head - 1] = 2.0;
    let faults = buffer.check();
    assert_eq!(
        faults,
        [
            format!("lse: 1 of {head} guard elements before the start clobbered (-1..=-1 before element 0)"),
            format!(
                "lse: 3 of {tail} guard elements after the end clobbered (+0..=+2 past element 36 of 37)"
            ),
        ]
    );
    // The sentinel is a NaN in every element type, and no NaN a kernel computes.
    assert!(guarded::sentinel::<f32>().is_nan());
    assert!(guarded::sentinel::<f16>().is_nan());
    assert!(guarded::sentinel::<half::bf16>().is_nan());
    assert_ne!(f32::NAN.to_bits(), guarded::sentinel::<f32>().to_bits());
    assert_eq!(guarded::sentinel::<u8>(), SENTINEL[0]);
}

fn f16_inputs(problem: &AttentionProblem, seed: u64) -> [Vec<f16>; 3] {
    let mut rng = StdRng::seed_from_u64(seed);
    [Tensor::Q, Tensor::K, Tensor::V]
        .map(|t| guarded::strided_random::<f16>(problem, t, &mut rng, 1.0))
}

/// A call's guards clobbered by hand: every buffer's damage is an assertion failure naming it, with the
/// count, and the gaps of a strided output are watched too.
#[test]
fn a_clobbered_call_fails_an_assertion_naming_each_buffer() {
    let shape = AttentionShape::new(1, 20, 2, 40).with_seq_k(24);
    let strides = Strides {
        batch: 20 * 2 * 48,
        seq: 2 * 48,
        head: 48,
    };
    let problem = AttentionProblem::new(shape).with_strides(strides, strides, strides, strides);
    let options = ForwardOptions::default()
        .with_lse(true)
        .with_kernel(KernelChoice::Naive);
    let plan = Emulator::new().plan::<f16>(&problem, options).unwrap();
    let [q, k, v] = f16_inputs(&problem, 1);
    let mut call = GuardedCall::new(&plan, [&q, &k, &v]);
    assert!(call.faults().is_empty(), "{:?}", call.faults());
    let lse_len = call.lse.as_ref().unwrap().interior().len();
    let (lse_head, _) = call.lse.as_ref().unwrap().guard_elements();
    let lse = call.lse.as_mut().unwrap().storage_mut();
    for x in &mut lse[lse_head + lse_len..][..5] {
        *x = 0.5;
    }
    let (ws_head, _) = call.workspace.as_ref().unwrap().guard_elements();
    call.workspace.as_mut().unwrap().storage_mut()[ws_head - 3] = 0;
    let (q_head, _) = call.q.guard_elements();
    let q_len = call.q.interior().len();
    call.q.storage_mut()[q_head + q_len + 7] = f16::ZERO;
    call.out.interior_mut()[45] = f16::ONE; // head-dim padding of row 0, head 0
    let message = panic_message(|| drop(call.finish("clobbered by hand")));
    for expected in [
        "clobbered by hand: out-of-bounds accesses:",
        "lse: 5 of ",
        " guard elements after the end clobbered (+0..=+4 past element 39 of 40)",
        "workspace: 1 of ",
        "guard elements before the start clobbered (-3..=-3 before element 0)",
        "q: 1 of ",
        "(+7..=+7 past element",
        "out: 1 elements between the strided rows (not part of the tensor) were written, at offsets 45..=45",
    ] {
        assert!(message.contains(expected), "{expected:?} missing from:\n{message}");
    }
}

/// A real kernel writing past seq_q: the product's kernels launched on buffers for 90 query rows with the
/// parameters of 100 (what a kernel that ignores seq_q in its last tile does). The guards take the ten
/// rows of out and lse (and of the naive score workspace), the check names each buffer with the exact
/// count, and the process lives.
#[test]
fn kernels_writing_past_seq_q_fail_an_assertion_not_the_process() {
    let (seq_q, past, seq_k, head_dim) = (90, 10, 64, 64);
    let small = AttentionProblem::new(AttentionShape::new(1, seq_q, 1, head_dim).with_seq_k(seq_k));
    let large =
        AttentionProblem::new(AttentionShape::new(1, seq_q + past, 1, head_dim).with_seq_k(seq_k));
    let emulator = Emulator::new();
    let [q, k, v] = f16_inputs(&small, 2);
    for kernel in [KernelChoice::Flash, KernelChoice::Naive] {
        let options = ForwardOptions::default().with_lse(true).with_kernel(kernel);
        let small_plan = emulator.plan::<f16>(&small, options).unwrap();
        let large_plan = emulator.plan::<f16>(&large, options).unwrap();
        let mut call = GuardedCall::new(&small_plan, [&q, &k, &v]);
        let params = call.params(&large);
        for launch in large_plan.launches() {
            // SAFETY: the buffers are this call's; the large problem's launches read q and write out, lse
            // and the scores `past` rows (of `head_dim` or `seq_k` elements) beyond them, which lands inside
            // their guards (each at least a tile of 128 such rows), and nothing else touches them.
            unsafe { emulator.launch(launch, &params) }.unwrap();
        }
        let message = panic_message(|| drop(call.finish(&format!("{kernel:?} past seq_q"))));
        let mut expected = vec![
            format!("out: {} of ", past * head_dim),
            format!("lse: {past} of "),
            format!("guard elements after the end clobbered (+0..=+{}", past - 1),
        ];
        if kernel == KernelChoice::Naive {
            // Ten rows of f32 scores, counted in bytes.
            expected.push(format!("workspace: {} of ", past * seq_k * 4));
        }
        for expected in expected {
            assert!(
                message.contains(&expected),
                "{expected:?} missing from:\n{message}"
            );
        }
        assert!(!message.contains("\n  q: "), "{message}");
    }
}

/// A real kernel reading past seq_k: the flash kernel run on k and v of 40 keys with the parameters of 45
/// reads five rows of each past the end, in the NaN guards: every query row sees them, so every output
/// is non-finite (the reference comparison fails), while no buffer is written out of bounds.
#[test]
fn kernels_reading_past_an_input_see_nan() {
    let shape = |seq_k| AttentionShape::new(1, 33, 2, 32).with_seq_k(seq_k);
    let small = AttentionProblem::new(shape(40));
    let large = AttentionProblem::new(shape(45));
    let emulator = Emulator::new();
    let [q, k, v] = f16_inputs(&small, 3);
    let options = ForwardOptions::default().with_lse(true);
    let plan = emulator.plan::<f16>(&large, options).unwrap();
    let mut call = GuardedCall::new(
        &emulator.plan::<f16>(&small, options).unwrap(),
        [&q, &k, &v],
    );
    let params = call.params(&large);
    // SAFETY: reads reach 5 key rows (of 2 * 32 elements) past k and v, inside their guards; out and lse
    // have the large problem's sizes (seq_q is the same).
    unsafe { emulator.launch(&plan.launches()[0], &params) }.unwrap();
    let result = call.finish("reading past k and v");
    let expected = cpu::reference(&small, &q, &k, &v).unwrap();
    let stats = cpu::compare_output(&small, &result.out, &expected.out);
    assert_eq!(stats.non_finite, expected.out.len(), "{stats}");
}

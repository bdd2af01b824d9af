//! The host paths never abort on absurd sizes: each call below returns its specific typed error well
//! under a second, without allocating what the shape asks for. Inputs are checked before any output is
//! allocated (empty slices for a 2^20 x 2^20 problem give `BufferTooSmall`), outputs are checked against
//! the host memory budget before any of them is allocated (the weights of a 131072 x 131072 problem
//! give `OutOfMemory` with the bytes needed), and a length whose bytes overflow gives `SizeOverflow`.

use std::time::{Duration, Instant};

use cuda_attention::cpu::CpuBackend;
use cuda_attention::emulator::Emulator;
use cuda_attention::host_memory::{available_bytes, vec_filled};
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, ForwardOptions, Memory, Strides, Tensor,
};
use half::f16;

/// What a guard may take: far below the time an allocation of the sizes here (or an abort) would.
const QUICK: Duration = Duration::from_secs(1);

/// Runs `call`, checking it returns within [`QUICK`].
fn quickly<R>(what: &str, call: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let result = call();
    let elapsed = start.elapsed();
    assert!(elapsed < QUICK, "{what} took {elapsed:?}");
    result
}

/// Batch 1, 2^20 queries x 2^20 keys, 64 heads, head_dim 256: valid, but q alone is 2^34 elements and
/// the weights 2^46.
fn absurd_problem() -> AttentionProblem {
    AttentionProblem::new(AttentionShape::new(1, 1 << 20, 64, 256).with_seq_k(1 << 20))
}

/// Asserts `result` is `BufferTooSmall` for an empty q of the absurd problem.
fn assert_empty_q<O: std::fmt::Debug>(what: &str, result: cuda_attention::Result<O>) {
    let needed = absurd_problem().required_len(Tensor::Q).unwrap();
    assert_eq!(needed, 1 << 34);
    match result {
        Err(AttentionError::BufferTooSmall {
            tensor: "q",
            needed: n,
            len: 0,
        }) if n == needed => {}
        other => {
            panic!("{what}: expected BufferTooSmall for q (needed {needed}, len 0), got {other:?}")
        }
    }
}

#[test]
fn cpu_forward_with_empty_inputs_for_an_absurd_shape_is_buffer_too_small() {
    let problem = absurd_problem();
    for options in [
        ForwardOptions::default(),
        ForwardOptions::default().with_lse(true).with_weights(true),
    ] {
        let result = quickly("CpuBackend::forward", || {
            CpuBackend::new().forward::<f16>(&problem, options, &[], &[], &[])
        });
        assert_empty_q(&format!("CpuBackend::forward {options:?}"), result);
    }
}

#[test]
fn emulator_forward_with_empty_inputs_for_an_absurd_shape_is_buffer_too_small() {
    let problem = absurd_problem();
    for options in [
        ForwardOptions::default(),
        ForwardOptions::default().with_lse(true).with_weights(true),
    ] {
        let result = quickly("Emulator::forward", || {
            Emulator::new().forward::<f16>(&problem, options, &[], &[], &[])
        });
        assert_empty_q(&format!("Emulator::forward {options:?}"), result);
    }
}

#[test]
fn cpu_weights_of_a_131072_square_problem_are_out_of_memory_on_the_host() {
    // q, k and v broadcast one row to every (batch, position, head) with zero strides, so they are
    // head_dim elements each; out is the ordinary contiguous [b, s, h, d]. The weights alone are
    // 64 x 131072^2 f32 = 4 TiB, more than any host here has (with one head they would be 64 GiB, which
    // a large host could allocate and then compute for minutes). The CPU plan has no workspace, so the
    // budget is asked for out + lse (when asked) + weights, before any of them is allocated.
    let (seq, heads, head_dim) = (131_072usize, 64usize, 64usize);
    let shape = AttentionShape::new(1, seq, heads, head_dim);
    let broadcast = Strides {
        batch: 0,
        seq: 0,
        head: 0,
    };
    let plain = AttentionProblem::new(shape);
    let problem = plain
        .clone()
        .with_strides(broadcast, broadcast, broadcast, plain.out_strides);
    for tensor in [Tensor::Q, Tensor::K, Tensor::V] {
        assert_eq!(problem.required_len(tensor).unwrap(), head_dim);
    }
    let q = vec![f16::from_f32(0.5); head_dim];
    let out_bytes = seq * heads * head_dim * size_of::<f16>();
    let lse_bytes = heads * seq * size_of::<f32>();
    let weights_bytes = heads * seq * seq * size_of::<f32>();
    assert_eq!(weights_bytes, 1 << 42);

    for (options, needed) in [
        (
            ForwardOptions::default().with_weights(true),
            out_bytes + weights_bytes,
        ),
        (
            ForwardOptions::default().with_lse(true).with_weights(true),
            out_bytes + lse_bytes + weights_bytes,
        ),
    ] {
        let available = available_bytes().expect("MemAvailable in /proc/meminfo");
        assert!(
            needed > available,
            "this host has {available} bytes available: the test needs a problem larger than that"
        );
        let result = quickly("CpuBackend::forward", || {
            CpuBackend::new().forward::<f16>(&problem, options, &q, &q, &q)
        });
        match result {
            Err(AttentionError::OutOfMemory {
                memory: Memory::Host,
                what,
                needed: n,
                free,
            }) => {
                assert_eq!(what, "attention outputs and workspace", "{options:?}");
                assert_eq!(n, needed, "{options:?}: {what}");
                assert!(free < needed, "{options:?}: free {free}");
            }
            other => {
                panic!("{options:?}: expected host OutOfMemory of {needed} bytes, got {other:?}")
            }
        }
    }
}

#[test]
fn vec_filled_with_an_overflowing_length_is_size_overflow() {
    for len in [usize::MAX / 4 + 1, usize::MAX / 2, usize::MAX] {
        match quickly("vec_filled", || vec_filled::<f32>("test buffer", len, 0.0)) {
            Err(AttentionError::SizeOverflow {
                what: "test buffer",
                detail,
            }) => assert!(detail.contains(&len.to_string()), "{detail}"),
            other => panic!(
                "len {len}: expected SizeOverflow, got {:?}",
                other.map(|v| v.len())
            ),
        }
    }
    // One element fewer than the overflow fits in usize bytes: then the budget answers, not an abort.
    match quickly("vec_filled", || {
        vec_filled::<f32>("test buffer", usize::MAX / 4, 0.0)
    }) {
        Err(AttentionError::OutOfMemory {
            memory: Memory::Host,
            what: "test buffer",
            ..
        }) => {}
        other => panic!("expected OutOfMemory, got {:?}", other.map(|v| v.len())),
    }
}

/// The f64 reference (`attn check`'s oracle) at seq 100000 with 64 heads: 2 * 10^10 weights per head in
/// f64, far beyond any host. Inputs broadcast (stride 0) so they are tiny; the reference must refuse before
/// allocating: host `OutOfMemory` with the bytes of its outputs, lse and weights.
#[test]
fn the_f64_reference_at_seq_100000_is_out_of_memory_on_the_host() {
    let seq = 100_000;
    let heads = 64;
    let d = 64;
    let broadcast = Strides {
        batch: 0,
        seq: 0,
        head: 0,
    };
    let out = Strides::bshd(seq, heads, d);
    let problem = AttentionProblem::new(AttentionShape::new(1, seq, heads, d))
        .with_strides(broadcast, broadcast, broadcast, out);
    let x = vec![f16::from_f32(0.5); problem.required_len(Tensor::Q).unwrap()];
    assert_eq!(x.len(), d);
    let expected = (seq * heads * d + seq * heads + seq * seq * heads + seq) * 8;
    let available = available_bytes().expect("Linux /proc/meminfo");
    assert!(
        expected > available,
        "this host could hold {expected} bytes"
    );
    let result = quickly("the f64 reference", || {
        cuda_attention::cpu::reference(&problem, &x, &x, &x)
    });
    match result {
        Err(AttentionError::OutOfMemory {
            memory: Memory::Host,
            needed,
            ..
        }) => assert_eq!(needed, expected),
        other => panic!("expected host OutOfMemory, got {other:?}"),
    }
}

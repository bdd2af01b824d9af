//! merge_states_into on the emulated kernel and the CPU backend: attention over two halves of the keys,
//! merged, against the f64 reference over all of them (FlashAttention's tolerance rule on the whole
//! problem, plus the rounding of the two states to the dtype); a state with lse -inf (no keys) whose output
//! holds NaN contributes nothing; both -inf give 0 and -inf; strided outputs; buffer errors.

mod common;

use cuda_attention::cpu::{self, compare, CpuBackend};
use cuda_attention::emulator::Emulator;
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, DType, Element, ForwardOptions,
    HostMergeTensors, MergeLayout, Strides, Tensor,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Attention of `problem`'s queries over keys [begin, end): (out `[rows, heads, d]` in T, lse `[heads, rows]`).
fn state<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
    begin: usize,
    end: usize,
) -> (Vec<T>, Vec<f32>) {
    let s = problem.shape;
    let part = AttentionProblem::new(AttentionShape {
        seq_k: end - begin,
        ..s
    })
    .with_scale(problem.scale());
    let (hk, d) = (s.heads_kv, s.head_dim);
    let keys = |x: &[T]| x[begin * hk * d..end * hk * d].to_vec();
    let result = cpu::attention(
        &part,
        ForwardOptions::default().with_lse(true),
        q,
        &keys(k),
        &keys(v),
    )
    .unwrap();
    (result.out, result.lse.unwrap())
}

/// The machine epsilon of a dtype (the spacing of values in [1, 2)).
fn epsilon(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2f64.powi(-10),
        DType::Bf16 => 2f64.powi(-7),
        DType::F32 => 2f64.powi(-23),
    }
}

fn check<T: Element>(seed: u64, backend: &str) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (rows, heads, d, keys) = (7usize, 3usize, 40usize, 90usize);
    let problem = AttentionProblem::new(AttentionShape::new(1, rows, heads, d).with_seq_k(keys));
    let q = common::random::<T>(&mut rng, problem.required_len(Tensor::Q).unwrap(), 1.0);
    let k = common::random::<T>(&mut rng, problem.required_len(Tensor::K).unwrap(), 2.0);
    let v = common::random::<T>(&mut rng, problem.required_len(Tensor::V).unwrap(), 1.0);
    let (out_a, lse_a) = state(&problem, &q, &k, &v, 0, 31);
    let (out_b, lse_b) = state(&problem, &q, &k, &v, 31, keys);
    // The merged output strided: rows of heads * d + 8 elements (gaps stay as filled).
    let layout = MergeLayout {
        out_strides: (heads * d + 8, d),
        ..MergeLayout::contiguous(rows, heads, d)
    };
    let mut out = vec![T::from_f32(7.0); rows * (heads * d + 8)];
    let mut lse = vec![f32::NAN; heads * rows];
    let tensors = HostMergeTensors {
        out_a: &out_a,
        lse_a: &lse_a,
        out_b: &out_b,
        lse_b: &lse_b,
        out: &mut out,
        lse: Some(&mut lse),
    };
    match backend {
        "emulator" => Emulator::new().merge_states_into(&layout, tensors),
        _ => CpuBackend.merge_states_into(&layout, tensors),
    }
    .unwrap();
    let expected = cpu::reference(&problem, &q, &k, &v).unwrap();
    // The rule on the whole problem, plus one rounding of each state to T (the states are stored in T).
    let allowed =
        compare::tolerance(&problem, &q, &k, &v, &expected).unwrap() + 2.0 * epsilon(T::DTYPE);
    let strides = Strides {
        batch: 0,
        seq: heads * d + 8,
        head: d,
    };
    let strided = AttentionProblem::new(problem.shape).with_strides(
        problem.q_strides,
        problem.k_strides,
        problem.v_strides,
        strides,
    );
    let error = compare::compare_output(&strided, &out, &expected.out);
    assert!(
        error.max_abs <= allowed,
        "{backend}: {error} (allowed {allowed:.3e})"
    );
    let lse_error = compare::compare_lse(&problem, &lse, &expected.lse);
    assert!(lse_error.max_abs <= 1e-4, "{backend}: lse {lse_error}");
    for r in 0..rows {
        let gap = &out[r * (heads * d + 8) + heads * d..][..8];
        assert!(
            gap.iter().all(|x| x.to_f32() == 7.0),
            "{backend}: a gap was written"
        );
    }
}

#[test]
fn two_halves_merge_into_the_whole() {
    for backend in ["emulator", "cpu"] {
        check::<f16>(1, backend);
        check::<bf16>(2, backend);
        check::<f32>(3, backend);
    }
}

#[test]
fn a_state_without_keys_contributes_nothing() {
    let (rows, heads, d) = (3usize, 2usize, 8usize);
    let layout = MergeLayout::contiguous(rows, heads, d);
    let out_a: Vec<f32> = (0..rows * heads * d).map(|i| i as f32 * 0.01).collect();
    let lse_a: Vec<f32> = vec![0.3, -1.0, 2.0, f32::NEG_INFINITY, 0.0, 1.0];
    let out_b = vec![f32::NAN; rows * heads * d]; // garbage: it saw no key
    let mut lse_b = vec![f32::NEG_INFINITY; heads * rows];
    for backend in ["emulator", "cpu"] {
        let mut out = vec![f32::NAN; rows * heads * d];
        let mut lse = vec![f32::NAN; heads * rows];
        let tensors = HostMergeTensors {
            out_a: &out_a,
            lse_a: &lse_a,
            out_b: &out_b,
            lse_b: &lse_b,
            out: &mut out,
            lse: Some(&mut lse),
        };
        match backend {
            "emulator" => Emulator::new().merge_states_into(&layout, tensors),
            _ => CpuBackend.merge_states_into(&layout, tensors),
        }
        .unwrap();
        for h in 0..heads {
            for r in 0..rows {
                let at = h * rows + r;
                let row = &out[(r * heads + h) * d..][..d];
                if lse_a[at] == f32::NEG_INFINITY {
                    // Both without keys: 0 and -inf.
                    assert!(row.iter().all(|&x| x == 0.0), "{backend}");
                    assert_eq!(lse[at], f32::NEG_INFINITY, "{backend}");
                } else {
                    assert_eq!(
                        row,
                        &out_a[(r * heads + h) * d..][..d],
                        "{backend}: state a unchanged"
                    );
                    assert_eq!(lse[at], lse_a[at], "{backend}");
                }
            }
        }
    }
    lse_b[0] = f32::NAN;
    let mut out = vec![0.0f32; rows * heads * d];
    CpuBackend
        .merge_states_into(
            &layout,
            HostMergeTensors {
                out_a: &out_a,
                lse_a: &lse_a,
                out_b: &out_b,
                lse_b: &lse_b,
                out: &mut out,
                lse: None,
            },
        )
        .unwrap();
    assert!(
        out[..d].iter().all(|x| x.is_nan()),
        "a NaN lse makes the row NaN"
    );
}

#[test]
fn merge_refuses_short_buffers_and_overlapping_output_strides() {
    let layout = MergeLayout::contiguous(4, 2, 8);
    let state = vec![0.0f32; 4 * 2 * 8];
    let lse = vec![0.0f32; 8];
    let mut out = vec![0.0f32; 4 * 2 * 8];
    let short = CpuBackend.merge_states_into(
        &layout,
        HostMergeTensors {
            out_a: &state[1..],
            lse_a: &lse,
            out_b: &state,
            lse_b: &lse,
            out: &mut out,
            lse: None,
        },
    );
    assert!(
        matches!(
            short,
            Err(AttentionError::BufferTooSmall {
                tensor: "out_a",
                ..
            })
        ),
        "{short:?}"
    );
    let overlapping = MergeLayout {
        out_strides: (8, 4),
        ..layout
    };
    let refused = Emulator::new().merge_states_into(
        &overlapping,
        HostMergeTensors {
            out_a: &state,
            lse_a: &lse,
            out_b: &state,
            lse_b: &lse,
            out: &mut out,
            lse: None,
        },
    );
    let specific = matches!(&refused, Err(AttentionError::InvalidArgument(m)) if m.contains("share an element"));
    assert!(specific, "{refused:?}");
}

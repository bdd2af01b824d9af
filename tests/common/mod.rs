//! Helpers shared by the integration tests (each test crate includes this module with `mod common;`).
#![allow(dead_code)] // each test crate uses a different subset

pub mod backends;
pub mod cpu_support;
pub mod guarded;

use cuda_attention::Element;
use rand::rngs::StdRng;
use rand::Rng;

/// `len` values uniform in `[-magnitude, magnitude)`, rounded to `T`.
pub fn random<T: Element>(rng: &mut StdRng, len: usize, magnitude: f32) -> Vec<T> {
    (0..len)
        .map(|_| T::from_f32(rng.random_range(-magnitude..magnitude)))
        .collect()
}

/// Values in 16-byte-aligned storage (the tensor-core kernels load 16-byte rows with cp.async, and the
/// binding step refuses q, k and v that are not aligned for them).
pub struct Aligned<T> {
    storage: Vec<u128>,
    len: usize,
    _marker: std::marker::PhantomData<T>,
}

impl<T: Element> Aligned<T> {
    /// `len` values uniform in `[-magnitude, magnitude)`.
    pub fn random(len: usize, magnitude: f32, rng: &mut StdRng) -> Self {
        Aligned::from_slice(&random::<T>(rng, len, magnitude))
    }

    /// A copy of `values`.
    pub fn from_slice(values: &[T]) -> Self {
        let bytes = std::mem::size_of_val(values);
        let mut storage = vec![0u128; bytes.div_ceil(16).max(1)];
        // SAFETY: storage holds at least `bytes` bytes, and T is a plain number type.
        unsafe {
            std::ptr::copy_nonoverlapping(
                values.as_ptr() as *const u8,
                storage.as_mut_ptr() as *mut u8,
                bytes,
            )
        };
        Aligned {
            storage,
            len: values.len(),
            _marker: std::marker::PhantomData,
        }
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the storage holds len values of T and is 16-byte aligned.
        unsafe { std::slice::from_raw_parts(self.storage.as_ptr() as *const T, self.len) }
    }
}

/// Random q, k and v of `problem` (uniform in [-1, 1)), 16-byte aligned.
pub fn random_inputs<T: Element>(
    problem: &cuda_attention::AttentionProblem,
    seed: u64,
) -> [Aligned<T>; 3] {
    use rand::SeedableRng;
    let mut rng = StdRng::seed_from_u64(seed);
    [
        cuda_attention::Tensor::Q,
        cuda_attention::Tensor::K,
        cuda_attention::Tensor::V,
    ]
    .map(|t| Aligned::<T>::random(problem.required_len(t).unwrap(), 1.0, &mut rng))
}

/// A decode-shaped problem: `batch` sequences of `seq_q` queries against `context` keys, GQA.
pub fn decode_problem(
    batch: usize,
    seq_q: usize,
    context: usize,
    heads_q: usize,
    heads_kv: usize,
    d: usize,
) -> cuda_attention::AttentionProblem {
    cuda_attention::AttentionProblem::new(
        cuda_attention::AttentionShape::new(batch, seq_q, heads_q, d)
            .with_seq_k(context)
            .with_heads_kv(heads_kv),
    )
}

/// Asserts that a backend's `out` and `lse` match the f64 reference of `problem` within FlashAttention's
/// tolerance rule (`cpu::compare`), and that rows the reference gives lse -inf have exactly -inf.
pub fn assert_matches_reference<T: Element>(
    problem: &cuda_attention::AttentionProblem,
    [q, k, v]: [&[T]; 3],
    out: &[T],
    lse: &[f32],
    label: &str,
) {
    use cuda_attention::cpu::{compare, reference};
    let expected = reference(problem, q, k, v).unwrap();
    let allowed = compare::tolerance(problem, q, k, v, &expected).unwrap();
    let error = compare::compare_output(problem, out, &expected.out);
    assert!(
        error.max_abs <= allowed,
        "{label}: {error} (allowed {allowed:.3e})"
    );
    let lse_allowed = compare::softmax_tolerance(problem, q, k).unwrap().lse;
    let lse_error = compare::compare_lse(problem, lse, &expected.lse);
    assert!(lse_error.max_abs <= lse_allowed, "{label}: lse {lse_error}");
    for (row, (&got, &want)) in lse.iter().zip(&expected.lse).enumerate() {
        if want == f64::NEG_INFINITY {
            assert_eq!(got, f32::NEG_INFINITY, "{label}: lse row {row}");
        }
    }
}

/// A shape from its six sizes: (batch, seq_q, seq_k, heads_q, heads_kv, head_dim).
pub fn shape(
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    heads_q: usize,
    heads_kv: usize,
    head_dim: usize,
) -> cuda_attention::AttentionShape {
    cuda_attention::AttentionShape {
        batch,
        seq_q,
        seq_k,
        heads_q,
        heads_kv,
        head_dim,
    }
}

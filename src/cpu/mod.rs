//! Attention on the CPU: the f64 reference every test compares against, a multi-threaded f32 backend
//! for machines without a GPU, and the comparison helpers that apply the tolerance rule.
//!
//! - [`reference()`] computes `softmax(adjust(scale * Q K^T) + mask) V` (adjust: the optional soft cap
//!   and ALiBi bias; mask: causal and sliding window) naively with f64 accumulation, returning
//!   the output, the logsumexp and the attention weights; [`naive_in_precision`] computes the same
//!   naive formula the way PyTorch does in the input precision (the baseline of FlashAttention's
//!   tolerance rule).
//! - [`CpuBackend`] (and the shorthand [`attention`]) is the CPU backend: a tiled, fused flash loop on
//!   the `gemm` crate's micro-kernels with f32 accumulation, work split over threads by (batch, head,
//!   query tile), any strides; the same plan / tensor bundle / output contract as the GPU engine and
//!   the emulator.
//! - [`compare_output`], [`compare_contiguous`], [`tolerance`] and [`softmax_tolerance`] measure and
//!   bound the error of any backend against the reference.
//!
//! ```
//! use cuda_attention::cpu;
//! use cuda_attention::{AttentionProblem, AttentionShape, ForwardOptions, Tensor};
//!
//! let problem = AttentionProblem::new(AttentionShape::new(1, 3, 2, 4)).with_causal(true);
//! let n = problem.required_len(Tensor::Q).unwrap();
//! let q: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.25).collect();
//! let expected = cpu::reference(&problem, &q, &q, &q).unwrap();
//! let got = cpu::attention(&problem, ForwardOptions::default().with_lse(true), &q, &q, &q).unwrap();
//! let stats = cpu::compare_output(&problem, &got.out, &expected.out);
//! assert!(stats.max_abs <= cpu::tolerance(&problem, &q, &q, &q, &expected).unwrap());
//! ```
//!
//! Semantics shared by every backend: q and out are `[batch, seq_q, heads_q, head_dim]`, k and v
//! `[batch, seq_k, heads_kv, head_dim]`, each with the strides given in the
//! [`AttentionProblem`](crate::AttentionProblem); query head `h` uses key/value head
//! `h / heads_ratio`; the causal mask and the sliding window are aligned bottom-right (diagonal
//! `c = i + seq_k - seq_q`), so each row sees a contiguous range of keys
//! ([`AttentionProblem::key_range`](crate::AttentionProblem::key_range)); the soft cap, then the ALiBi
//! bias `-m_h * |c - j|`, apply to the scaled scores; a row that sees no key outputs 0 and logsumexp
//! `-inf` whatever q, k and v hold, and a NaN in a row's query or in a key it sees makes its output
//! and logsumexp NaN (the rest, infinities and values at masked keys: README, "Non-finite values").
//! The logsumexp is `[batch, heads_q, seq_q]` and the weights `[batch, heads_q, seq_q, seq_k]`, both
//! contiguous f32.

mod attention_map;
pub mod backend;
pub mod compare;
mod matmul;
pub mod ragged;
pub mod reference;
mod scores;
mod simd;
mod tile;

pub use backend::{attention, CpuBackend};
pub use compare::{
    compare_contiguous, compare_lse, compare_output, compare_shaped, compare_weights,
    softmax_tolerance, tolerance, ErrorStats, SoftmaxTolerance,
};
pub use reference::{naive_in_precision, reference, reference_ragged, ReferenceOutput};

pub use simd::simd_level;

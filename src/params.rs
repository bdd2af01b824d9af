//! Fills the C parameter struct from a validated problem and raw buffer addresses. Shared by every
//! backend that runs the C kernels (the GPU engine; host addresses for the emulator).

use std::ffi::c_void;

use crate::problem::{AttentionProblem, Strides};
use crate::sys::AttentionParams;

/// log2(e): the kernels use exp2, so the host folds it into the scale once.
pub const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// Addresses of the buffers of one call (device or host, as the backend needs). Optional outputs are 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferAddresses {
    /// q.
    pub q: u64,
    /// k.
    pub k: u64,
    /// v.
    pub v: u64,
    /// out.
    pub out: u64,
    /// f32 logsumexp, or 0.
    pub lse: u64,
    /// f32 score/probability matrix (naive kernels), or 0.
    pub scores: u64,
    /// f32 ALiBi slopes `[heads_q]`, or 0.
    pub alibi_slopes: u64,
}

/// The parameter struct for `problem` (which must have passed `validate`, so every size fits).
pub fn attention_params(problem: &AttentionProblem, addresses: BufferAddresses) -> AttentionParams {
    let s = &problem.shape;
    let stride = |st: &Strides| (st.batch as i64, st.seq as i64, st.head as i64);
    let (q_batch_stride, q_seq_stride, q_head_stride) = stride(&problem.q_strides);
    let (k_batch_stride, k_seq_stride, k_head_stride) = stride(&problem.k_strides);
    let (v_batch_stride, v_seq_stride, v_head_stride) = stride(&problem.v_strides);
    let (out_batch_stride, out_seq_stride, out_head_stride) = stride(&problem.out_strides);
    let scale = problem.scale();
    AttentionParams {
        q: addresses.q as *const c_void,
        k: addresses.k as *const c_void,
        v: addresses.v as *const c_void,
        out: addresses.out as *mut c_void,
        lse: addresses.lse as *mut f32,
        scores: addresses.scores as *mut f32,
        alibi_slopes: addresses.alibi_slopes as *const f32,
        q_batch_stride,
        q_seq_stride,
        q_head_stride,
        k_batch_stride,
        k_seq_stride,
        k_head_stride,
        v_batch_stride,
        v_seq_stride,
        v_head_stride,
        out_batch_stride,
        out_seq_stride,
        out_head_stride,
        batch: s.batch as i32,
        seq_q: s.seq_q as i32,
        seq_k: s.seq_k as i32,
        heads_q: s.heads_q as i32,
        heads_kv: s.heads_kv as i32,
        head_dim: s.head_dim as i32,
        heads_ratio: problem.heads_ratio() as i32,
        causal: i32::from(problem.causal),
        window_left: problem.window.left.map_or(-1, |b| b as i32),
        window_right: problem.window.right.map_or(-1, |b| b as i32),
        scale,
        scale_log2: scale * LOG2_E,
        softcap: problem.softcap.unwrap_or(0.0),
    }
}

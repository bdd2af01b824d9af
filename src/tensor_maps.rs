//! The TMA tensor maps of the sm_90a flash kernel (`kernels/flash_sm90.cu`), made on the host for each
//! call from the bound parameters and carried inside them (`AttentionParams::tma_q/k/v`, read by the
//! kernel from its parameter space): no allocation and no copy to the device, so a graph capture of the
//! launch holds them. The GPU engine encodes through the driver's `cuTensorMapEncodeTiled`, the emulator
//! through its own encoder with the same rules; both take the [`TensorMapSpec`] made here.
//!
//! Each map views q, k or v as head_dim, then seq, heads and batch in the order of their byte strides
//! (the encoder wants every stride to span the dimension below it), with a box of one 128-byte swizzled
//! row span (64 two-byte elements) by the kernel's tile rows (q) or key columns (k, v) from its registry
//! record on the seq dimension; `AttentionParams::tma_dim_order` tells the kernel the order.

use crate::dtype::DType;
use crate::emulator::hopper::{TensorMapDataType, TensorMapSpec, TensorMapSwizzle};
use crate::error::{AttentionError, Result};
use crate::plan::{KernelKind, Plan};
use crate::registry::{find, KernelFamily};
use crate::sys::{AttentionParams, TensorMapParam};

/// Bytes of one 128-byte-swizzled shared-memory row: the widest TMA box dimension 0 under that swizzle.
const SWIZZLE_SPAN_BYTES: u32 = 128;

/// One map to make: the tensor's address and the encode arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMapRequest {
    /// Which tensor (`"q"`, `"k"` or `"v"`), for error messages.
    pub tensor: &'static str,
    /// The tensor's base address (device address on a GPU, host address on the emulator).
    pub address: u64,
    /// The encode arguments.
    pub spec: TensorMapSpec,
}

/// The maps of one call and where seq, heads and batch sit in each (`AttentionParams::tma_dim_order`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TensorMapRequests {
    /// q, k and v, in that order (empty for a kernel without maps).
    pub requests: Vec<TensorMapRequest>,
    /// Per map: bits 0-1 the map dimension of seq, 2-3 of heads, 4-5 of batch.
    pub dim_order: [i32; 3],
}

/// The tensor maps `plan` needs, from its bound parameters: none unless it runs the sm_90a kernel.
///
/// # Errors
/// [`AttentionError::KernelUnsupported`] when the build has no sm_90a kernel for the plan's element type
/// and head dim (a plan made by another build).
pub fn tensor_map_requests(plan: &Plan, params: &AttentionParams) -> Result<TensorMapRequests> {
    if plan.kernel() != KernelKind::FlashSm90 {
        return Ok(TensorMapRequests::default());
    }
    let dtype = plan.dtype();
    let data_type = match dtype {
        DType::F16 => TensorMapDataType::Float16,
        DType::Bf16 => TensorMapDataType::Bfloat16,
        DType::F32 => {
            return Err(AttentionError::KernelUnsupported {
                kernel: "flash-sm90",
                reason: "f32 has no sm_90a kernel".into(),
            })
        }
    };
    let head_dim = params.head_dim.max(1) as u64;
    let spec = find(KernelFamily::FlashSm90, dtype, head_dim as usize).ok_or_else(|| {
        AttentionError::KernelUnsupported {
            kernel: "flash-sm90",
            reason: format!("no sm_90a kernel for {dtype} at head_dim {head_dim} in this build"),
        }
    })?;
    let element = dtype.size_bytes() as u64;
    let box_cols = SWIZZLE_SPAN_BYTES / element as u32;
    let p = params;
    let view = |tensor: &'static str,
                address: *const std::ffi::c_void,
                seq: i32,
                heads: i32,
                strides: [i64; 3],
                box_rows: u32| {
        // (extent, byte stride, box) of seq, heads and batch, in increasing stride order; a dimension of
        // extent 1 never moves an address and goes last, with a stride that spans the ones before.
        let extents = [
            seq.max(1) as u64,
            heads.max(1) as u64,
            p.batch.max(1) as u64,
        ];
        let boxes = [box_rows, 1, 1];
        let mut order = [0usize, 1, 2];
        order.sort_by_key(|&d| (extents[d] == 1, strides[d]));
        let mut dims = vec![head_dim];
        let mut byte_strides = Vec::with_capacity(3);
        let mut box_dim = vec![box_cols];
        let mut span = (head_dim * element).next_multiple_of(16);
        let mut code = 0i32;
        for (slot, &d) in order.iter().enumerate() {
            let stride = if extents[d] > 1 {
                strides[d].max(0) as u64 * element
            } else {
                span
            };
            dims.push(extents[d]);
            byte_strides.push(stride);
            box_dim.push(boxes[d]);
            span = span.max(stride.saturating_mul(extents[d]));
            code |= ((slot + 1) as i32) << (2 * d);
        }
        let request = TensorMapRequest {
            tensor,
            address: address as u64,
            spec: TensorMapSpec {
                data_type,
                global_dim: dims,
                global_strides: byte_strides,
                box_dim,
                swizzle: TensorMapSwizzle::B128,
            },
        };
        (request, code)
    };
    let (q, q_order) = view(
        "q",
        p.q,
        p.seq_q,
        p.heads_q,
        [p.q_seq_stride, p.q_head_stride, p.q_batch_stride],
        spec.tile_rows,
    );
    let (k, k_order) = view(
        "k",
        p.k,
        p.seq_k,
        p.heads_kv,
        [p.k_seq_stride, p.k_head_stride, p.k_batch_stride],
        spec.tile_cols,
    );
    let (v, v_order) = view(
        "v",
        p.v,
        p.seq_k,
        p.heads_kv,
        [p.v_seq_stride, p.v_head_stride, p.v_batch_stride],
        spec.tile_cols,
    );
    Ok(TensorMapRequests {
        requests: vec![q, k, v],
        dim_order: [q_order, k_order, v_order],
    })
}

/// Makes the maps `plan` needs with `encode` (the backend's `cuTensorMapEncodeTiled`) and stores them in
/// `params`; nothing for other kernels.
///
/// # Errors
/// Those of [`tensor_map_requests`], and `encode`'s, prefixed with the tensor.
pub fn attach_tensor_maps(
    plan: &Plan,
    params: &mut AttentionParams,
    mut encode: impl FnMut(&TensorMapRequest) -> Result<[u64; 16]>,
) -> Result<()> {
    let maps = tensor_map_requests(plan, params)?;
    if maps.requests.is_empty() {
        return Ok(());
    }
    params.tma_dim_order = maps.dim_order;
    for request in maps.requests {
        let words = encode(&request).map_err(|error| match error {
            AttentionError::InvalidArgument(message) => AttentionError::InvalidArgument(format!(
                "the tensor map of {} for the sm_90a kernel: {message}",
                request.tensor
            )),
            other => other,
        })?;
        let map = TensorMapParam { words };
        match request.tensor {
            "q" => params.tma_q = map,
            "k" => params.tma_k = map,
            _ => params.tma_v = map,
        }
    }
    Ok(())
}

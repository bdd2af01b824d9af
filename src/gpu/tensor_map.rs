//! The driver's `cuTensorMapEncodeTiled` for the sm_90a kernel's tensor maps ([`crate::tensor_maps`]):
//! host-only (no device memory, no stream work), so the launch that carries the maps stays capturable.

use cudarc::driver::sys;

use crate::emulator::hopper::{TensorMapDataType, TensorMapSwizzle};
use crate::error::{AttentionError, DriverContext, Result};
use crate::tensor_maps::TensorMapRequest;

/// Encodes `request` with the driver: no interleave, element strides 1, 128-byte L2 promotion, zero
/// fill out of bounds.
///
/// # Errors
/// [`AttentionError::InvalidArgument`] for an element type or swizzle the kernels do not use;
/// [`AttentionError::Driver`] when the driver refuses the arguments.
pub(crate) fn encode_tiled(request: &TensorMapRequest) -> Result<[u64; 16]> {
    let spec = &request.spec;
    let data_type = match spec.data_type {
        TensorMapDataType::Float16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        TensorMapDataType::Bfloat16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        other => {
            return Err(AttentionError::InvalidArgument(format!(
                "tensor map element type {other:?}: the kernels take f16 or bf16"
            )))
        }
    };
    let swizzle = match spec.swizzle {
        TensorMapSwizzle::None => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
        TensorMapSwizzle::B32 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
        TensorMapSwizzle::B64 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
        TensorMapSwizzle::B128 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
    };
    let rank = spec.rank()?;
    let element_strides = vec![1u32; rank];
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    // SAFETY: every array has `rank` entries (strides rank - 1) and outlives the call; the map is a
    // writable CUtensorMap; the address is only stored in the map (the binding step checked it).
    unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            data_type,
            rank as u32,
            request.address as *mut std::ffi::c_void,
            spec.global_dim.as_ptr(),
            spec.global_strides.as_ptr(),
            spec.box_dim.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    }
    .result()
    .context("cuTensorMapEncodeTiled (the sm_90a kernel's tensor maps)")?;
    Ok(map.opaque)
}

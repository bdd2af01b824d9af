//! The emulator's sm_90a (Hopper) pieces that the host side needs: tensor maps for TMA loads (the
//! emulator's `cuTensorMapEncodeTiled`) and the layout functions the emulated `wgmma` and TMA use
//! (`kernels/include/hopper_layout.h`), exposed so that tests can hold them to the PTX ISA.
//!
//! A kernel's TMA load reads a 128-byte `CUtensorMap`. On a GPU the driver encodes it; on the emulator
//! [`TensorMap::encode_tiled`] checks the same arguments with the driver's rules and writes the
//! emulator's readable encoding (`emulator/cuda/tensor_map.h`). Either way the kernel receives the
//! address of the 128 bytes (64-byte aligned).
//!
//! ```
//! use cuda_attention::emulator::hopper::{TensorMap, TensorMapDataType, TensorMapSpec, TensorMapSwizzle};
//!
//! let tensor = vec![0u16; 20 * 64]; // 20 rows of 64 f16
//! let spec = TensorMapSpec {
//!     data_type: TensorMapDataType::Float16,
//!     global_dim: vec![64, 20],
//!     global_strides: vec![128],
//!     box_dim: vec![64, 16],
//!     swizzle: TensorMapSwizzle::B128,
//! };
//! // SAFETY: the map is only used while `tensor` is alive.
//! let map = unsafe { TensorMap::encode_tiled(tensor.as_ptr().cast(), &spec) }.unwrap();
//! assert_eq!(std::mem::size_of_val(&map), 128);
//! ```

use crate::error::{AttentionError, Result};
use crate::sys as ffi;

/// `CUtensorMapDataType` (the driver's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum TensorMapDataType {
    /// 8-bit unsigned.
    Uint8 = 0,
    /// 16-bit unsigned.
    Uint16 = 1,
    /// 32-bit float.
    Float32 = 7,
    /// IEEE binary16.
    Float16 = 6,
    /// bfloat16.
    Bfloat16 = 9,
}

/// `CUtensorMapSwizzle` (the driver's numbering; a wgmma descriptor numbers the modes differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum TensorMapSwizzle {
    /// Dense rows, no swizzle.
    None = 0,
    /// 32-byte swizzle (repeats every 256 bytes).
    B32 = 1,
    /// 64-byte swizzle (repeats every 512 bytes).
    B64 = 2,
    /// 128-byte swizzle (repeats every 1024 bytes).
    B128 = 3,
}

/// The arguments of `cuTensorMapEncodeTiled` that the emulator models: no interleave, element strides
/// 1, zero fill out of bounds, no L2 promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMapSpec {
    /// Element type.
    pub data_type: TensorMapDataType,
    /// Elements per dimension, dimension 0 (the contiguous one) first; 1 to 5 dimensions.
    pub global_dim: Vec<u64>,
    /// Byte strides of dimensions 1.. (one fewer than `global_dim`; dimension 0 is contiguous).
    pub global_strides: Vec<u64>,
    /// Box (tile) size in elements per dimension, 1..=256 each.
    pub box_dim: Vec<u32>,
    /// Shared-memory swizzle of the landed box.
    pub swizzle: TensorMapSwizzle,
}

impl TensorMapSpec {
    /// The number of dimensions, after checking that the arrays agree on it (`n` dims, `n - 1` strides,
    /// `n` box dims, `n >= 1`): both encoders (the emulator's and the driver's) pass `rank` entries.
    ///
    /// # Errors
    /// [`AttentionError::InvalidArgument`] when they do not.
    pub fn rank(&self) -> Result<usize> {
        let rank = self.global_dim.len();
        if rank == 0 || self.box_dim.len() != rank || self.global_strides.len() + 1 != rank {
            return Err(AttentionError::InvalidArgument(format!(
                "tensor map: {} dims, {} strides and {} box dims (want n, n - 1, n with n >= 1)",
                rank,
                self.global_strides.len(),
                self.box_dim.len()
            )));
        }
        Ok(rank)
    }
}

/// A 128-byte tensor map, 64-byte aligned, as a TMA instruction reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct TensorMap(pub [u64; 16]);

impl TensorMap {
    /// Encodes a tiled tensor map over the tensor at `global_address` for the emulator, with the checks
    /// of the driver's `cuTensorMapEncodeTiled`.
    ///
    /// # Safety
    /// The map holds `global_address` as it is: a kernel that loads through the map reads the tensor
    /// described by `spec` there, so that memory must stay valid while any launch uses the map.
    ///
    /// # Errors
    /// [`AttentionError::InvalidArgument`] with the driver rule the arguments break (alignment, ranks,
    /// strides, box sizes, the inner box against the swizzle span), or a mode the emulator does not model.
    pub unsafe fn encode_tiled(
        global_address: *const u8,
        spec: &TensorMapSpec,
    ) -> Result<TensorMap> {
        let rank = spec.rank()?;
        let element_strides = vec![1u32; rank];
        let mut map = TensorMap([0; 16]);
        let mut message = vec![0u8; 512];
        // SAFETY: every array has `rank` entries (strides rank - 1), the map is 128 writable bytes
        // aligned to 64, and the message buffer's capacity is its length; the address is only stored.
        let status = unsafe {
            ffi::cuda_emu_tensor_map_encode_tiled(
                map.0.as_mut_ptr().cast(),
                spec.data_type as u32,
                rank as u32,
                global_address.cast(),
                spec.global_dim.as_ptr(),
                spec.global_strides.as_ptr(),
                spec.box_dim.as_ptr(),
                element_strides.as_ptr(),
                0,
                spec.swizzle as u32,
                0,
                0,
                message.as_mut_ptr().cast(),
                message.len() as u64,
            )
        };
        if status as u32 == ffi::CUDA_EMU_TENSOR_MAP_OK {
            return Ok(map);
        }
        let end = message
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(message.len());
        Err(AttentionError::InvalidArgument(
            String::from_utf8_lossy(&message[..end]).into_owned(),
        ))
    }
}

/// A wgmma register fragment whose layout the emulator implements (`hopper_layout.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WgmmaFragment {
    /// The m64nNk16 f32 accumulator: register `i` (< N / 2) -> (row, col) of the 64 x N D.
    D,
    /// A from registers (16-bit): element `j` (< 8; half `j % 2` of register `j / 2`) -> (row, k).
    A,
}

/// The element (row, col) that the emulator's wgmma assigns to `element` of warpgroup thread
/// `thread` (0..128), or `None` out of range.
pub fn wgmma_fragment_element(
    fragment: WgmmaFragment,
    thread: u32,
    element: u32,
) -> Option<(u32, u32)> {
    let code = match fragment {
        WgmmaFragment::D => ffi::CUDA_EMU_WGMMA_FRAGMENT_D,
        WgmmaFragment::A => ffi::CUDA_EMU_WGMMA_FRAGMENT_A,
    };
    let (mut row, mut col) = (0u32, 0u32);
    // SAFETY: both out-pointers are valid for one u32 write.
    let status =
        unsafe { ffi::cuda_emu_wgmma_fragment_element(code, thread, element, &mut row, &mut col) };
    (status == 0).then_some((row, col))
}

/// The physical shared address of logical address `address` under a swizzle of `span` bytes (128, 64
/// or 32; anything else leaves it unchanged), as TMA and wgmma apply it.
pub fn swizzle_address(address: u32, span: u32) -> u32 {
    // SAFETY: a pure function of its arguments.
    unsafe { ffi::cuda_emu_swizzle_address(address, span) }
}

/// A shared-memory matrix descriptor from byte values (start address, leading and stride byte
/// offsets) and the descriptor's swizzle mode (0 none, 1 128B, 2 64B, 3 32B).
pub fn wgmma_descriptor(
    start: u32,
    leading_byte_offset: u32,
    stride_byte_offset: u32,
    mode: u32,
) -> u64 {
    // SAFETY: a pure function of its arguments.
    unsafe { ffi::cuda_emu_wgmma_descriptor(start, leading_byte_offset, stride_byte_offset, mode) }
}

/// The physical shared address from which the emulated wgmma reads element (`mn`, `k`) of a 16-bit
/// operand described by `descriptor`; `mn_major` is the operand's transpose flag.
pub fn wgmma_operand_address(descriptor: u64, mn_major: bool, mn: u32, k: u32) -> u32 {
    // SAFETY: a pure function of its arguments.
    unsafe { ffi::cuda_emu_wgmma_operand_address(descriptor, u32::from(mn_major), mn, k) }
}

//! The emulator's C API (`emulator/emulator_api.h`), declared for Rust. Scalars and pointers only; the
//! one struct, `AttentionParams`, is the bindgen mirror in [`crate::sys`]. `tests/emulator_layouts.rs`
//! checks the constants below against the header.

use std::ffi::c_char;

use crate::sys::AttentionParams;

pub(crate) const SCHEDULE_ROUND_ROBIN: u32 = 0;
pub(crate) const SCHEDULE_REVERSED: u32 = 1;
pub(crate) const SCHEDULE_RANDOM: u32 = 2;

pub(crate) const STATUS_OK: i32 = 0;
pub(crate) const STATUS_KERNEL_ERROR: i32 = 1;
pub(crate) const STATUS_UNKNOWN_KERNEL: i32 = 2;
pub(crate) const STATUS_INVALID_LAUNCH: i32 = 3;

pub(crate) const FRAGMENT_MMA_A: u32 = 0;
pub(crate) const FRAGMENT_MMA_B: u32 = 1;
pub(crate) const FRAGMENT_MMA_C: u32 = 2;
pub(crate) const FRAGMENT_LDMATRIX: u32 = 3;
pub(crate) const FRAGMENT_LDMATRIX_TRANS: u32 = 4;

extern "C" {
    pub(crate) fn cuda_emu_launch(
        kernel: *const c_char,
        grid_x: u32,
        grid_y: u32,
        grid_z: u32,
        block_x: u32,
        block_y: u32,
        block_z: u32,
        shared_bytes: u32,
        params: *const AttentionParams,
        schedule: u32,
        seed: u64,
        host_threads: u32,
        message: *mut c_char,
        message_capacity: usize,
    ) -> i32;
    pub(crate) fn cuda_emu_kernel_count() -> u32;
    pub(crate) fn cuda_emu_kernel_name(index: u32) -> *const c_char;
    pub(crate) fn cuda_emu_fragment_element(
        fragment: u32,
        lane: u32,
        element: u32,
        row: *mut u32,
        col: *mut u32,
    ) -> i32;
    pub(crate) fn cuda_emu_float_to_half(value: f32) -> u16;
    pub(crate) fn cuda_emu_half_to_float(bits: u16) -> f32;
    pub(crate) fn cuda_emu_float_to_bfloat16(value: f32) -> u16;
    pub(crate) fn cuda_emu_bfloat16_to_float(bits: u16) -> f32;
}

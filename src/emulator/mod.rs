//! The CPU emulator: the crate's own CUDA kernels, from the same `kernels/*.cu` source, run on the CPU
//! with the CUDA execution model checked as they run.
//!
//! build.rs compiles every kernel file as C++ through an emulation header (no CUDA toolkit needed), and
//! this module launches the kernels by their exported names, on host memory, with exactly the grids the
//! GPU engine uses ([`crate::launch`]). Each CUDA thread is a fiber; blocks run in parallel on host
//! threads; shared memory is sized exactly as launched and filled with NaN before a block starts. A
//! kernel that breaks a rule the emulator checks (a barrier not every thread reaches, divergent barriers
//! or warp collectives, a misaligned `ldmatrix` row, a deadlock, ...) stops with
//! [`AttentionError::Emulation`] naming the block, the thread and the call site. See `docs/emulator.md`
//! for how it works, the checking mode (ThreadSanitizer and AddressSanitizer) and what it cannot catch.
//!
//! ```
//! use cuda_attention::emulator::{Emulator, Schedule};
//! use cuda_attention::{AttentionProblem, AttentionShape, ForwardOptions, Tensor};
//!
//! let problem = AttentionProblem::new(AttentionShape::new(1, 17, 2, 8)).with_causal(true);
//! let n = problem.required_len(Tensor::Q).unwrap();
//! let q: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5).collect();
//! let emulator = Emulator::new().with_schedule(Schedule::Random { seed: 7 });
//! let out = emulator.forward(&problem, ForwardOptions::default().with_lse(true), &q, &q, &q).unwrap();
//! assert_eq!(out.out.len(), n);
//! assert!(out.lse.unwrap().iter().all(|x| x.is_finite()));
//! ```

mod attention_map;
mod forward;
pub mod hopper;

use std::ffi::{CStr, CString};

use crate::error::{AttentionError, Result};
use crate::launch::KernelLaunch;
use crate::plan::DeviceCaps;
use crate::sys::{self as ffi, AttentionParams};

/// The order in which the emulator runs ready CUDA threads and blocks. A correct kernel gives
/// bit-identical results under every schedule; run tests under at least two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Schedule {
    /// Threads (and blocks) in increasing index order.
    #[default]
    RoundRobin,
    /// Threads (and blocks) in decreasing index order.
    Reversed,
    /// A seeded random pick among the ready threads at every switch, and blocks in a random order.
    Random {
        /// Seed of the block and thread order.
        seed: u64,
    },
}

impl Schedule {
    fn code(self) -> (u32, u64) {
        match self {
            Schedule::RoundRobin => (ffi::CUDA_EMU_SCHEDULE_ROUND_ROBIN, 0),
            Schedule::Reversed => (ffi::CUDA_EMU_SCHEDULE_REVERSED, 0),
            Schedule::Random { seed } => (ffi::CUDA_EMU_SCHEDULE_RANDOM, seed),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::RoundRobin => f.write_str("round-robin"),
            Schedule::Reversed => f.write_str("reversed"),
            Schedule::Random { seed } => write!(f, "random:{seed}"),
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "round-robin" => Ok(Schedule::RoundRobin),
            "reversed" => Ok(Schedule::Reversed),
            "random" => Ok(Schedule::Random { seed: 0 }),
            other => other
                .strip_prefix("random:")
                .and_then(|seed| seed.parse().ok())
                .map(|seed| Schedule::Random { seed })
                .ok_or_else(|| {
                    format!("unknown schedule '{other}': use round-robin, reversed, random or random:SEED")
                }),
        }
    }
}

/// An emulated CUDA device: runs the crate's kernels on the CPU. Cheap to create, `Send + Sync`, no
/// state between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Emulator {
    schedule: Schedule,
    host_threads: usize,
}

impl Emulator {
    /// Compute capability the emulator implements: sm_80 (mma.sync, ldmatrix, cp.async).
    pub const COMPUTE_CAPABILITY: (u32, u32) = (8, 0);

    /// Round-robin schedule, one host thread per core.
    pub fn new() -> Self {
        Emulator::default()
    }

    /// Sets the schedule.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Sets the number of host threads that run blocks in parallel (0: one per core).
    pub fn with_host_threads(mut self, host_threads: usize) -> Self {
        self.host_threads = host_threads;
        self
    }

    /// The schedule in use.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// A one-line description, as `attn info` shows devices.
    pub fn description(&self) -> String {
        format!(
            "CPU emulator (sm_{}{} semantics, {} schedule, {} kernels)",
            Self::COMPUTE_CAPABILITY.0,
            Self::COMPUTE_CAPABILITY.1,
            self.schedule,
            kernel_names().len()
        )
    }

    /// Largest dynamic shared memory of one emulated block: 227 KiB, the sm_90 opt-in limit (the
    /// emulator does not model smaller devices; defined once, in emulator_api.h).
    pub const MAX_SHARED_BYTES: usize = ffi::CUDA_EMU_MAX_SHARED_BYTES as usize;

    /// Multiprocessors the planner assumes for the emulated device (an A100's), for the split-KV
    /// heuristic; the emulator itself runs blocks on host threads.
    pub const MULTIPROCESSORS: usize = 108;

    /// What kernel selection knows about the emulated device.
    pub fn caps(&self) -> DeviceCaps {
        DeviceCaps {
            compute_capability: Self::COMPUTE_CAPABILITY,
            shared_memory_per_block_optin: Self::MAX_SHARED_BYTES,
            multiprocessors: Self::MULTIPROCESSORS,
        }
    }

    /// Compute capability the emulator presents to the sm_90a kernel (wgmma, TMA, mbarrier; see
    /// docs/emulator.md, "Hopper (sm_90a) instructions"), which it plans for only when asked
    /// ([`crate::KernelChoice::FlashSm90`]).
    pub const HOPPER_COMPUTE_CAPABILITY: (u32, u32) = (9, 0);

    /// Multiprocessors the planner assumes for the emulated sm_90 device (an H100 SXM's).
    pub const HOPPER_MULTIPROCESSORS: usize = 132;

    /// [`Emulator::caps`] of the emulated sm_90a device.
    pub fn hopper_caps(&self) -> DeviceCaps {
        DeviceCaps {
            compute_capability: Self::HOPPER_COMPUTE_CAPABILITY,
            shared_memory_per_block_optin: Self::MAX_SHARED_BYTES,
            multiprocessors: Self::HOPPER_MULTIPROCESSORS,
        }
    }

    /// Runs one kernel launch on the CPU: `launch.name` over `launch.grid` x `launch.block` with
    /// `launch.shared_bytes` of dynamic shared memory, each thread receiving a copy of `params`.
    /// Returns when every block has finished, or at the first kernel error.
    ///
    /// # Safety
    /// Every address in `params` must be a host address valid for whatever the kernel reads and writes
    /// through it with these sizes and strides (the emulator runs the kernel on those addresses as they
    /// are), and nothing else may access that memory during the call.
    ///
    /// # Errors
    /// [`AttentionError::Emulation`] when the kernel breaks a rule the emulator checks;
    /// [`AttentionError::InvalidArgument`] for an unknown kernel name or a grid, block or shared memory
    /// size outside CUDA's limits (or the kernel's `__launch_bounds__`).
    pub unsafe fn launch(&self, launch: &KernelLaunch, params: &AttentionParams) -> Result<()> {
        let name = CString::new(launch.name).map_err(|_| {
            AttentionError::InvalidArgument(format!("kernel name {:?} contains NUL", launch.name))
        })?;
        let (schedule, seed) = self.schedule.code();
        let host_threads = u32::try_from(self.host_threads).unwrap_or(u32::MAX);
        let mut message = vec![0u8; 4096];
        // SAFETY: `name` and `message` outlive the call and the capacity is the buffer's length; the
        // caller guarantees that the addresses inside `params` are valid for the kernel.
        let status = unsafe {
            ffi::cuda_emu_launch(
                name.as_ptr(),
                launch.grid.0,
                launch.grid.1,
                launch.grid.2,
                launch.block.0,
                launch.block.1,
                launch.block.2,
                launch.shared_bytes,
                params,
                schedule,
                seed,
                host_threads,
                message.as_mut_ptr().cast(),
                message.len() as u64,
            )
        };
        let message = || {
            let end = message
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(message.len());
            String::from_utf8_lossy(&message[..end]).into_owned()
        };
        match status as u32 {
            ffi::CUDA_EMU_OK => Ok(()),
            ffi::CUDA_EMU_KERNEL_ERROR => Err(AttentionError::Emulation {
                kernel: launch.name.to_string(),
                message: message(),
            }),
            ffi::CUDA_EMU_UNKNOWN_KERNEL | ffi::CUDA_EMU_INVALID_LAUNCH => {
                Err(AttentionError::InvalidArgument(format!(
                    "cannot emulate {}: {}",
                    launch.name,
                    message()
                )))
            }
            other => Err(AttentionError::InvalidArgument(format!(
                "the emulator returned unknown status {other} for {}: {}",
                launch.name,
                message()
            ))),
        }
    }
}

/// Names of every kernel the emulator can run (every `KERNEL_ENTRY` in `kernels/*.cu`), sorted.
pub fn kernel_names() -> Vec<String> {
    // SAFETY: the C API returns pointers to NUL-terminated names owned by the registry, which lives as
    // long as the program; indices below the count are valid.
    unsafe {
        (0..ffi::cuda_emu_kernel_count())
            .map(|i| {
                CStr::from_ptr(ffi::cuda_emu_kernel_name(i))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }
}

/// A warp-level register fragment whose layout the emulator implements (see
/// `kernels/include/fragment_layout.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// `mma.sync.m16n8k16` A operand: 8 halves per lane -> (row, col) of the 16x16 A.
    MmaA,
    /// `mma.sync.m16n8k16` B operand: 4 halves per lane -> (k, n) of the 16x8 B.
    MmaB,
    /// `mma.sync.m16n8k16` C/D accumulators: 4 floats per lane -> (row, col) of the 16x8 C.
    MmaC,
    /// `ldmatrix`: half `e % 2` of register `e / 2` -> (row, col) of matrix `e / 2`.
    Ldmatrix,
    /// `ldmatrix.trans`: as [`Fragment::Ldmatrix`], transposed.
    LdmatrixTrans,
}

impl Fragment {
    /// Elements per lane.
    pub fn elements(self) -> u32 {
        match self {
            Fragment::MmaA | Fragment::Ldmatrix | Fragment::LdmatrixTrans => 8,
            Fragment::MmaB | Fragment::MmaC => 4,
        }
    }
}

/// The matrix element (row, col) that the emulator's mma and ldmatrix assign to `element` of `lane`
/// in `fragment`, or `None` for a lane or element out of range.
pub fn fragment_element(fragment: Fragment, lane: u32, element: u32) -> Option<(u32, u32)> {
    let code = match fragment {
        Fragment::MmaA => ffi::CUDA_EMU_FRAGMENT_MMA_A,
        Fragment::MmaB => ffi::CUDA_EMU_FRAGMENT_MMA_B,
        Fragment::MmaC => ffi::CUDA_EMU_FRAGMENT_MMA_C,
        Fragment::Ldmatrix => ffi::CUDA_EMU_FRAGMENT_LDMATRIX,
        Fragment::LdmatrixTrans => ffi::CUDA_EMU_FRAGMENT_LDMATRIX_TRANS,
    };
    let (mut row, mut col) = (0u32, 0u32);
    // SAFETY: both out-pointers are valid for one u32 write.
    let status = unsafe { ffi::cuda_emu_fragment_element(code, lane, element, &mut row, &mut col) };
    (status == 0).then_some((row, col))
}

/// The emulator's conversions between f32 and the 16-bit formats (round to nearest even, as CUDA's
/// `__float2half_rn` and `__float2bfloat16_rn`), exposed so tests can hold them to other implementations.
pub mod conversions {
    use crate::sys as ffi;

    /// f32 -> IEEE binary16 bits.
    pub fn f32_to_f16_bits(value: f32) -> u16 {
        // SAFETY: a pure function of its argument.
        unsafe { ffi::cuda_emu_float_to_half(value) }
    }

    /// IEEE binary16 bits -> f32 (exact).
    pub fn f16_bits_to_f32(bits: u16) -> f32 {
        // SAFETY: a pure function of its argument.
        unsafe { ffi::cuda_emu_half_to_float(bits) }
    }

    /// f32 -> bfloat16 bits.
    pub fn f32_to_bf16_bits(value: f32) -> u16 {
        // SAFETY: a pure function of its argument.
        unsafe { ffi::cuda_emu_float_to_bfloat16(value) }
    }

    /// bfloat16 bits -> f32 (exact).
    pub fn bf16_bits_to_f32(bits: u16) -> f32 {
        // SAFETY: a pure function of its argument.
        unsafe { ffi::cuda_emu_bfloat16_to_float(bits) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_print() {
        for schedule in [
            Schedule::RoundRobin,
            Schedule::Reversed,
            Schedule::Random { seed: 42 },
        ] {
            assert_eq!(schedule.to_string().parse::<Schedule>(), Ok(schedule));
        }
        assert!("sideways".parse::<Schedule>().is_err());
    }

    #[test]
    fn every_kernel_family_is_registered() {
        let names = kernel_names();
        for name in [
            "naive_scores_f32",
            "naive_scores_f16",
            "naive_scores_bf16",
            "naive_softmax",
            "naive_pv_bf16",
        ] {
            assert!(
                names.iter().any(|n| n == name),
                "{name} missing from {names:?}"
            );
        }
    }

    /// naive_softmax in a block of 100 threads: its last warp has lanes 0-3 only, and the full-warp
    /// shuffles of its row reduction name lanes that do not exist.
    #[test]
    fn kernel_errors_become_emulation_errors() {
        let mut scores = vec![0.5f32; 16];
        let params = AttentionParams {
            scores: scores.as_mut_ptr(),
            batch: 1,
            heads_q: 1,
            heads_kv: 1,
            heads_ratio: 1,
            seq_q: 4,
            seq_k: 4,
            head_dim: 1,
            ..AttentionParams::default()
        };
        let launch = KernelLaunch {
            name: "naive_softmax",
            grid: (1, 1, 1),
            block: (100, 1, 1),
            shared_bytes: 0,
        };
        // SAFETY: the kernel reads and writes the 4 x 4 scores only (lse is NULL).
        let result = unsafe { Emulator::new().launch(&launch, &params) };
        match result {
            Err(AttentionError::Emulation { kernel, message }) => {
                assert_eq!(kernel, "naive_softmax");
                assert!(
                    message.contains("thread (96,0,0)")
                        && message.contains("__shfl_xor_sync at device_helpers.cuh:")
                        && message.contains("not threads of this block"),
                    "{message}"
                );
            }
            other => panic!("expected an emulation error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_kernels_and_bad_blocks_are_argument_errors() {
        let params = AttentionParams::default();
        let emulator = Emulator::new();
        let launch = |name: &'static str, block: (u32, u32, u32)| KernelLaunch {
            name,
            grid: (1, 1, 1),
            block,
            shared_bytes: 0,
        };
        // SAFETY: neither launch runs a kernel (both fail validation first).
        let unknown = unsafe { emulator.launch(&launch("no_such_kernel", (32, 1, 1)), &params) };
        assert!(
            matches!(unknown, Err(AttentionError::InvalidArgument(ref m)) if m.contains("no kernel named"))
        );
        let too_big = unsafe { emulator.launch(&launch("naive_softmax", (2048, 1, 1)), &params) };
        assert!(
            matches!(too_big, Err(AttentionError::InvalidArgument(_))),
            "{too_big:?}"
        );
    }
}

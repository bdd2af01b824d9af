//! Exact transformer attention, `softmax(scale * Q K^T + mask) V`, on NVIDIA GPUs with hand-written CUDA
//! kernels, plus an f64 CPU reference, a multi-threaded CPU backend and a CPU emulator that runs the very
//! same kernel source.
//!
//! Every backend has one call contract: `plan` (validate, pick the kernel, say why), `forward` (allocate the
//! outputs within the memory budget and run) and `forward_into` (run into the caller's buffers, checked by
//! one binding step). This example runs on any machine: the CPU backend, and the flash kernel on the
//! emulator, each checked against the f64 reference.
//!
//! ```
//! use cuda_attention::cpu::{self, CpuBackend};
//! use cuda_attention::emulator::Emulator;
//! use cuda_attention::host_memory::HostWorkspace;
//! use cuda_attention::{
//!     AttentionProblem, AttentionShape, ForwardOptions, HostTensors, KernelChoice, KernelKind, Tensor,
//! };
//! # fn main() -> cuda_attention::Result<()> {
//! // Two sequences of 70 queries over 90 keys, 4 query heads sharing 2 key/value heads, causal.
//! let shape = AttentionShape::new(2, 70, 4, 64).with_seq_k(90).with_heads_kv(2);
//! let problem = AttentionProblem::new(shape).with_causal(true);
//! let input = |tensor, seed: usize| -> Vec<half::bf16> {
//!     let n = problem.required_len(tensor).unwrap();
//!     (0..n).map(|i| half::bf16::from_f32((((i * 37 + seed) % 101) as f32 - 50.0) / 50.0)).collect()
//! };
//! let (q, k, v) = (input(Tensor::Q, 1), input(Tensor::K, 2), input(Tensor::V, 3));
//! let expected = cpu::reference(&problem, &q, &k, &v)?;
//! let tolerance = cpu::tolerance(&problem, &q, &k, &v, &expected)?;
//!
//! // The CPU backend, outputs allocated for us.
//! let options = ForwardOptions::default().with_lse(true);
//! let out = CpuBackend::new().forward(&problem, options, &q, &k, &v)?;
//! assert!(cpu::compare_output(&problem, &out.out, &expected.out).max_abs <= tolerance);
//!
//! // The tensor-core flash kernel on the emulator, into our own buffer.
//! let emulator = Emulator::new();
//! let plan = emulator.plan::<half::bf16>(&problem, options.with_kernel(KernelChoice::Flash))?;
//! assert_eq!(plan.kernel(), KernelKind::Flash);
//! let mut out = vec![half::bf16::ZERO; problem.required_len(Tensor::Out)?];
//! let mut lse = vec![0.0f32; shape.lse_elements()?];
//! // This small grid leaves most of the device idle, so the plan splits the keys (split-KV) and needs a
//! // workspace for the partial states: the plan says how much.
//! let mut workspace = HostWorkspace::new(plan.workspace_bytes())?;
//! let mut tensors = HostTensors::new(&q, &k, &v, &mut out).with_lse(&mut lse);
//! if plan.workspace_bytes() > 0 {
//!     tensors = tensors.with_workspace(workspace.as_bytes_mut());
//! }
//! emulator.forward_into(&plan, tensors)?;
//! assert!(cpu::compare_output(&problem, &out, &expected.out).max_abs <= tolerance);
//! # Ok(()) }
//! ```

pub mod attention_map;
pub mod binding;
#[cfg(feature = "cli")]
pub mod cli;
pub mod cpu;
pub mod dtype;
pub mod emulator;
pub mod error;
pub mod gpu;
pub mod host_memory;
pub mod launch;
pub mod merge;
pub mod metadata;
pub mod plan;
pub mod problem;
pub mod registry;
pub mod sparse;
pub mod sys;
pub mod tensor_maps;

pub use attention_map::{AttentionMap, BinReduce, HostAttentionMap, MapHeads, MapSpec};
pub use binding::{AttentionOutput, HostKvAppend, HostOutput, HostTensors, KvAppend, Tensors};
pub use dtype::{DType, Element};
pub use error::{AttentionError, Memory, Result};
pub use gpu::{
    DeviceAttentionMap, DeviceInfo, DeviceKvAppend, DeviceMergeTensors, DeviceOutput,
    DeviceTensors, Engine,
};
pub use merge::{HostMergeTensors, MergeLayout, MergeTensors};
pub use metadata::{validate_metadata, Metadata};
pub use plan::{
    DeviceCaps, ForwardOptions, GqaPacking, KernelChoice, KernelKind, Plan, Splits, Target,
};
pub use problem::{
    AttentionProblem, AttentionShape, Batching, KeyStorage, Layout, Paging, Ragged, Strides,
    Tensor, Window, MAX_HEAD_DIM,
};
pub use sparse::{BigBird, BlockMask};

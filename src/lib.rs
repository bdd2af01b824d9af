//! Exact transformer attention, `softmax(scale * Q K^T + mask) V`, on NVIDIA GPUs with hand-written CUDA
//! kernels, plus an f64 CPU reference and a multi-threaded CPU backend.

pub mod cpu;
pub mod dtype;
pub mod emulator;
pub mod error;
pub mod gpu;
pub mod launch;
pub mod params;
pub mod plan;
pub mod problem;
pub mod sys;

pub use dtype::{DType, Element};
pub use error::{AttentionError, Result};
pub use gpu::{DeviceInfo, DeviceOutput, DeviceTensors, Engine};
pub use plan::{ForwardOptions, KernelChoice, KernelKind, Plan};
pub use problem::{AttentionProblem, AttentionShape, Layout, Strides, Window, MAX_HEAD_DIM};

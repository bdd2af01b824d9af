//! Where the CLI runs kernels: the GPU engine when there is one, else the CPU backend (and why), or the
//! emulator when asked.

use crate::emulator::Schedule;
use crate::gpu::driver_present;
use crate::{AttentionError, Engine};

/// The machine's attention backend for this run.
pub enum Target {
    /// A CUDA device with this build's kernels.
    Gpu(Box<Engine>),
    /// The multi-threaded CPU backend; the string says why there is no GPU.
    Cpu(String),
    /// The crate's CUDA kernels run by the CPU emulator (`attn check --kernel emulator-*`).
    Emulator(Schedule),
}

impl Target {
    /// Opens device `ordinal` unless `force_cpu`; falls back to the CPU when there is no driver, no
    /// device or no kernels in this build. Other driver errors are real errors.
    pub fn open(ordinal: usize, force_cpu: bool) -> Result<Target, AttentionError> {
        if force_cpu {
            return Ok(Target::Cpu("--cpu given".into()));
        }
        if !driver_present() {
            return Ok(Target::Cpu(AttentionError::DriverNotFound.to_string()));
        }
        match Engine::new(ordinal) {
            Ok(engine) => Ok(Target::Gpu(Box::new(engine))),
            Err(
                e @ (AttentionError::DriverNotFound
                | AttentionError::NoDevice { .. }
                | AttentionError::KernelsNotBuilt),
            ) => Ok(Target::Cpu(e.to_string())),
            Err(e) => Err(e),
        }
    }
}

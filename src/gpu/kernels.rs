//! The loaded kernel functions and their launches, by exported name.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};

use super::driver::DeviceInfo;

use crate::error::{AttentionError, DriverContext, Result};
use crate::launch::KernelLaunch;
use crate::registry;
use crate::sys::AttentionParams;

/// Dynamic shared memory a block may use without opting in.
const DEFAULT_SHARED_LIMIT: usize = 48 * 1024;

/// Every kernel of the module the engine launches, looked up once at load.
#[derive(Debug)]
pub(crate) struct LoadedKernels {
    functions: HashMap<&'static str, CudaFunction>,
}

impl LoadedKernels {
    /// Looks up every kernel of the registry and raises the dynamic shared memory limit of those that
    /// need more than the default 48 KiB (where the device allows it; the planner refuses the others).
    pub(crate) fn load(module: &Arc<CudaModule>, device: &DeviceInfo) -> Result<Self> {
        let mut functions = HashMap::new();
        for kernel in registry::kernels() {
            let function = module
                .load_function(kernel.name)
                .context("loading a kernel from the module")?;
            // Kernels whose shared memory grows with the head dim: raise the limit for the largest.
            let shared = kernel.shared_bytes_for(*kernel.head_dims.end()) as usize;
            if shared > DEFAULT_SHARED_LIMIT {
                let allowed = shared.min(device.shared_memory_per_block_optin);
                function
                    .set_attribute(
                        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        allowed as i32,
                    )
                    .context("raising a kernel's shared memory limit")?;
            }
            functions.insert(kernel.name, function);
        }
        Ok(LoadedKernels { functions })
    }

    /// Enqueues `launches` on `stream` with `params`.
    pub(crate) fn launch(
        &self,
        stream: &CudaStream,
        launches: &[KernelLaunch],
        params: &AttentionParams,
    ) -> Result<()> {
        for launch in launches {
            let function = self.functions.get(launch.name).ok_or_else(|| {
                AttentionError::KernelUnsupported {
                    kernel: "requested",
                    reason: format!("{} is not in this build's module", launch.name),
                }
            })?;
            let cfg = LaunchConfig {
                grid_dim: launch.grid,
                block_dim: launch.block,
                shared_mem_bytes: launch.shared_bytes,
            };
            // SAFETY: params points at buffers the binding step checked against the validated problem's
            // shape and strides, and the kernel takes exactly one AttentionParams by value.
            unsafe { stream.launch_builder(function).arg(params).launch(cfg) }
                .context("launching a kernel")?;
        }
        Ok(())
    }
}

//! The loaded kernel functions and their launches, by exported name.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};

use crate::dtype::DType;
use crate::error::{DriverContext, Result};
use crate::launch::{naive_launches, KernelLaunch};
use crate::problem::AttentionShape;
use crate::sys::AttentionParams;

/// Every kernel of the module the engine launches, looked up once at load.
#[derive(Debug)]
pub(crate) struct LoadedKernels {
    functions: HashMap<String, CudaFunction>,
}

impl LoadedKernels {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        let mut functions = HashMap::new();
        for dtype in DType::ALL {
            for launch in naive_launches(&AttentionShape::new(1, 1, 1, 1), dtype) {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    functions.entry(launch.name)
                {
                    let function = module
                        .load_function(slot.key())
                        .context("loading a kernel from the module")?;
                    slot.insert(function);
                }
            }
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
            let function = &self.functions[&launch.name];
            let cfg = LaunchConfig {
                grid_dim: launch.grid,
                block_dim: launch.block,
                shared_mem_bytes: launch.shared_bytes,
            };
            // SAFETY: params points at buffers the engine checked against the validated problem's shape
            // and strides, and the kernel takes exactly one AttentionParams by value.
            unsafe { stream.launch_builder(function).arg(params).launch(cfg) }
                .context("launching a kernel")?;
        }
        Ok(())
    }

    /// Launches the naive forward pass.
    pub(crate) fn launch_naive(
        &self,
        stream: &CudaStream,
        dtype: DType,
        shape: &AttentionShape,
        params: &AttentionParams,
    ) -> Result<()> {
        self.launch(stream, &naive_launches(shape, dtype), params)
    }
}

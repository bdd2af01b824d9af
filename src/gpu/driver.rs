//! The NVIDIA driver: is it there, which devices does it see. Every cudarc call in the crate goes through
//! a check here first, because cudarc panics when libcuda cannot be loaded.

use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute as Attr, CUresult};
use cudarc::driver::{CudaContext, DriverError};

use crate::error::{AttentionError, DriverContext, Result};

/// Whether libcuda can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: is_culib_present only tries to open the shared library by its known names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Fails with [`AttentionError::DriverNotFound`] unless libcuda can be loaded.
pub fn require_driver() -> Result<()> {
    if driver_present() {
        Ok(())
    } else {
        Err(AttentionError::DriverNotFound)
    }
}

/// Number of CUDA devices the driver sees (0 when it sees none: its `cuInit` then answers
/// `CUDA_ERROR_NO_DEVICE`).
///
/// # Errors
/// [`AttentionError::DriverNotFound`] without libcuda; a driver error if it cannot initialise.
pub fn device_count() -> Result<usize> {
    require_driver()?;
    match CudaContext::device_count() {
        Ok(count) => Ok(count.max(0) as usize),
        Err(DriverError(CUresult::CUDA_ERROR_NO_DEVICE)) => Ok(0),
        Err(error) => Err(error).context("counting CUDA devices"),
    }
}

/// Fails with [`AttentionError::NoDevice`] when `ordinal` is not below `count`.
pub fn check_ordinal(ordinal: usize, count: usize) -> Result<()> {
    if ordinal < count {
        Ok(())
    } else {
        Err(AttentionError::NoDevice { ordinal, count })
    }
}

/// Facts about one device that kernel selection and launches need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// Streaming multiprocessors.
    pub sm_count: u32,
    /// Shared memory per block without opt-in (bytes).
    pub shared_memory_per_block: usize,
    /// Shared memory per block with the opt-in attribute (bytes).
    pub shared_memory_per_block_optin: usize,
    /// Device memory (bytes).
    pub total_memory: usize,
    /// Driver version as the driver reports it (e.g. 13000 for 13.0).
    pub driver_version: i32,
}

impl DeviceInfo {
    /// What kernel selection needs to know about this device.
    pub fn caps(&self) -> crate::plan::DeviceCaps {
        crate::plan::DeviceCaps {
            compute_capability: self.compute_capability,
            shared_memory_per_block_optin: self.shared_memory_per_block_optin,
            multiprocessors: self.sm_count as usize,
        }
    }

    /// Reads the facts from an open context.
    pub(crate) fn query(ctx: &Arc<CudaContext>) -> Result<DeviceInfo> {
        let attribute = |attr: Attr| ctx.attribute(attr).context("reading a device attribute");
        let (major, minor) = ctx
            .compute_capability()
            .context("reading the compute capability")?;
        Ok(DeviceInfo {
            ordinal: ctx.ordinal(),
            name: ctx.name().context("reading the device name")?,
            compute_capability: (major.max(0) as u32, minor.max(0) as u32),
            sm_count: attribute(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(0) as u32,
            shared_memory_per_block: attribute(
                Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK,
            )?
            .max(0) as usize,
            shared_memory_per_block_optin: attribute(
                Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )?
            .max(0) as usize,
            total_memory: ctx.total_mem().context("reading the device memory size")?,
            driver_version: driver_version()?,
        })
    }
}

/// The driver's CUDA version, e.g. 13000 for 13.0.
fn driver_version() -> Result<i32> {
    let mut version: std::ffi::c_int = 0;
    // SAFETY: the driver library is loaded (callers opened a context) and `version` outlives the call.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }
        .result()
        .context("reading the driver version")?;
    Ok(version)
}

/// Opens device `ordinal` (primary context) after checking the driver and the ordinal.
pub(crate) fn open_context(ordinal: usize) -> Result<Arc<CudaContext>> {
    check_ordinal(ordinal, device_count()?)?;
    CudaContext::new(ordinal).context("opening the CUDA device")
}

/// Facts about device `ordinal`, without loading any kernel.
///
/// # Errors
/// [`AttentionError::DriverNotFound`], [`AttentionError::NoDevice`] or a driver error.
pub fn device_info(ordinal: usize) -> Result<DeviceInfo> {
    DeviceInfo::query(&open_context(ordinal)?)
}

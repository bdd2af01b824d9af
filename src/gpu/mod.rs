//! The CUDA backend: driver checks, the embedded kernels, and the engine that launches them.

pub mod build_info;
pub mod driver;
mod engine;
mod kernels;
pub mod resources;
mod tensor_map;

pub use driver::{device_count, device_info, driver_present, DeviceInfo};
pub use engine::{
    DeviceAttentionMap, DeviceKvAppend, DeviceMergeTensors, DeviceOutput, DeviceTensors, Engine,
};

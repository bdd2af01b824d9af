//! The one harness that runs a problem on every backend this machine has, through the library's single
//! call contract: the CPU backend, the emulator (the kernel source on the CPU) and, when a device is
//! present, the GPU engine (inputs uploaded, outputs downloaded). Each returns the same `HostOutput`.

use cuda_attention::cpu::CpuBackend;
use cuda_attention::emulator::{Emulator, Schedule};
use cuda_attention::{
    AttentionProblem, Element, Engine, ForwardOptions, HostOutput, KernelChoice, Result,
};

/// One backend's result, named for failure messages.
pub struct BackendRun<T> {
    /// e.g. "cpu", "emulator flash", "gpu naive".
    pub name: String,
    /// The plan's reason (empty where planning failed).
    pub reason: String,
    /// The outputs, or the typed error.
    pub output: Result<HostOutput<T>>,
}

/// Runs `problem` with `options` on the CPU backend (kernel choice Auto, its only one), on the emulator
/// with `kernels` (e.g. naive and flash) under `schedule`, and on the GPU engine with the same `kernels`
/// when `Engine::new(0)` succeeds.
pub fn run_everywhere<T: Element>(
    problem: &AttentionProblem,
    options: ForwardOptions,
    kernels: &[KernelChoice],
    schedule: Schedule,
    [q, k, v]: [&[T]; 3],
) -> Vec<BackendRun<T>> {
    let mut runs = Vec::new();
    let cpu = CpuBackend::new();
    let cpu_options = options.with_kernel(KernelChoice::Auto);
    runs.push(BackendRun {
        name: "cpu".into(),
        reason: reason(cpu.plan::<T>(problem, cpu_options)),
        output: cpu.forward(problem, cpu_options, q, k, v),
    });
    let emulator = Emulator::new().with_schedule(schedule);
    for &kernel in kernels {
        let options = options.with_kernel(kernel);
        runs.push(BackendRun {
            name: format!("emulator {kernel:?}"),
            reason: reason(emulator.plan::<T>(problem, options)),
            output: emulator.forward(problem, options, q, k, v),
        });
    }
    if let Ok(engine) = Engine::new(0) {
        for &kernel in kernels {
            let options = options.with_kernel(kernel);
            runs.push(BackendRun {
                name: format!("gpu {kernel:?}"),
                reason: reason(engine.plan::<T>(problem, options)),
                output: on_gpu(&engine, problem, options, [q, k, v]),
            });
        }
    }
    runs
}

fn reason(plan: Result<cuda_attention::Plan>) -> String {
    plan.map(|p| format!("{}: {}", p.kernel(), p.reason()))
        .unwrap_or_default()
}

/// Upload, `Engine::forward`, download.
fn on_gpu<T: Element>(
    engine: &Engine,
    problem: &AttentionProblem,
    options: ForwardOptions,
    [q, k, v]: [&[T]; 3],
) -> Result<HostOutput<T>> {
    let stream = engine.default_stream();
    let upload = |x: &[T]| stream.clone_htod(x).map_err(driver);
    let (q, k, v) = (upload(q)?, upload(k)?, upload(v)?);
    let out = engine.forward(problem, options, &q, &k, &v)?;
    let download = |x: &cudarc::driver::CudaSlice<f32>| stream.clone_dtoh(x).map_err(driver);
    Ok(HostOutput {
        out: stream.clone_dtoh(&out.out).map_err(driver)?,
        lse: out.lse.as_ref().map(download).transpose()?,
        weights: out.weights.as_ref().map(download).transpose()?,
    })
}

fn driver(error: cudarc::driver::DriverError) -> cuda_attention::AttentionError {
    cuda_attention::AttentionError::InvalidArgument(format!("test transfer failed: {error}"))
}

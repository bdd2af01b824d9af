//! Where and which kernel: the one vocabulary of every `attn` command (`check --kernel`, `weights
//! --kernel`, `bench --kernels`), its one parser, the one mapping to a backend and a [`KernelChoice`],
//! and the one place that runs a problem.
//!
//! | spelling | runner | what runs |
//! |---|---|---|
//! | `auto` | [`Runner::Auto`] | the GPU, kernel picked by `Auto`, when this machine has one; else the CPU backend (and it says why) |
//! | `gpu` | `Runner::Gpu(Auto)` | the GPU, kernel picked by `Auto`; an error without a GPU |
//! | `naive`, `flash` | `Runner::Gpu(Naive)`, `Runner::Gpu(Flash)` | that GPU kernel; an error without a GPU |
//! | `emulator` | `Runner::Emulator(Auto)` | the kernel `Auto` picks on an sm_80 device, run by the CPU emulator |
//! | `emulator-naive`, `emulator-flash` | `Runner::Emulator(Naive)`, `Runner::Emulator(Flash)` | that kernel's CUDA source, run by the CPU emulator |
//! | `flash-sm90`, `emulator-flash-sm90` | `Runner::Gpu(FlashSm90)`, `Runner::Emulator(FlashSm90)` | the sm_90a kernel on an sm_90 GPU, or on the emulator with sm_90a semantics; opt-in: needs `CUDA_ATTENTION_HOPPER=1` |
//! | `cpu` | [`Runner::Cpu`] | the multi-threaded CPU backend (its own tiled flash loop, planned with `Auto`) |
//!
//! [`Runner::open`] turns a runner into a [`Backend`] (the only place the CLI opens the GPU or falls
//! back to the CPU), [`Runner::kernel`] gives the [`KernelChoice`] it plans with, and [`Backend::run`]
//! runs a problem through the library's call contract: `plan`, then `forward_into` on NaN-poisoned
//! outputs (an element a kernel never writes shows as NaN), every host buffer through
//! [`crate::host_memory`].

use std::fmt;
use std::str::FromStr;

use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::{reject, CliResult};
use crate::attention_map::{HostAttentionMap, MapSpec};
use crate::binding::Tensors;
use crate::cpu::CpuBackend;
use crate::emulator::{Emulator, Schedule};
use crate::error::DriverContext;
use crate::gpu::{driver_present, DeviceTensors};
use crate::host_memory::{bytes_of, check_budget, vec_filled, HostWorkspace};
use crate::{
    AttentionError, AttentionProblem, Element, Engine, ForwardOptions, HostOutput, HostTensors,
    KernelChoice, Plan, Result, Tensor,
};

/// Where and which kernel (see the module documentation for the spellings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runner {
    /// The GPU when this machine has one (kernel picked by `Auto`), else the CPU backend.
    Auto,
    /// The GPU with this kernel choice; an error without a GPU.
    Gpu(KernelChoice),
    /// The crate's CUDA kernels run by the CPU emulator, with this kernel choice.
    Emulator(KernelChoice),
    /// The multi-threaded CPU backend.
    Cpu,
}

/// Every spelling, each runner once: what [`Runner::from_str`] accepts and [`Runner::name`] prints.
const SPELLINGS: [(&str, Runner); 10] = [
    ("auto", Runner::Auto),
    ("gpu", Runner::Gpu(KernelChoice::Auto)),
    ("naive", Runner::Gpu(KernelChoice::Naive)),
    ("flash", Runner::Gpu(KernelChoice::Flash)),
    ("flash-sm90", Runner::Gpu(KernelChoice::FlashSm90)),
    ("emulator", Runner::Emulator(KernelChoice::Auto)),
    ("emulator-naive", Runner::Emulator(KernelChoice::Naive)),
    ("emulator-flash", Runner::Emulator(KernelChoice::Flash)),
    (
        "emulator-flash-sm90",
        Runner::Emulator(KernelChoice::FlashSm90),
    ),
    ("cpu", Runner::Cpu),
];

impl Runner {
    /// Every runner, in the order the help lists them.
    pub fn all() -> impl Iterator<Item = Runner> {
        SPELLINGS.into_iter().map(|(_, runner)| runner)
    }

    /// The spelling, e.g. `flash` or `emulator-naive`: also the `kernel` of a benchmark record.
    pub fn name(self) -> &'static str {
        SPELLINGS
            .iter()
            .find(|(_, runner)| *runner == self)
            .map_or("?", |(name, _)| name)
    }

    /// The kernel choice it plans with (the CPU backend plans only with `Auto`).
    pub fn kernel(self) -> KernelChoice {
        match self {
            Runner::Gpu(choice) | Runner::Emulator(choice) => choice,
            Runner::Auto | Runner::Cpu => KernelChoice::Auto,
        }
    }

    /// Whether it runs on the GPU (`Auto` may, or may fall back).
    pub fn on_gpu(self) -> bool {
        matches!(self, Runner::Gpu(_))
    }

    /// Whether it names one kernel on one backend, as a benchmark record must: `naive`, `flash`,
    /// `emulator-naive`, `emulator-flash` or `cpu`.
    pub fn is_one_kernel(self) -> bool {
        matches!(
            self,
            Runner::Gpu(KernelChoice::Naive | KernelChoice::Flash)
                | Runner::Emulator(KernelChoice::Naive | KernelChoice::Flash)
                | Runner::Cpu
        )
    }

    /// The backend this runner runs on: the GPU engine on device `ordinal`, the emulator with
    /// `schedule`, or the CPU backend. `auto` falls back to the CPU backend when there is no usable GPU
    /// ([`no_gpu`]) and the backend says why.
    ///
    /// # Errors
    /// For `gpu`, `naive` and `flash` without a usable GPU: [`AttentionError::InvalidArgument`] saying
    /// why and what to run instead. Other driver errors as they are.
    pub fn open(self, ordinal: usize, schedule: Schedule) -> Result<Backend> {
        match self {
            Runner::Cpu => Ok(Backend::Cpu { fallback: None }),
            Runner::Emulator(_) => Ok(Backend::Emulator(
                Emulator::new().with_schedule(schedule),
            )),
            Runner::Auto => match open_gpu(ordinal) {
                Ok(engine) => Ok(Backend::Gpu(Box::new(engine))),
                Err(error) if no_gpu(&error) => Ok(Backend::Cpu {
                    fallback: Some(error.to_string()),
                }),
                Err(error) => Err(error),
            },
            Runner::Gpu(_) => open_gpu(ordinal)
                .map(|engine| Backend::Gpu(Box::new(engine)))
                .map_err(|error| {
                    if no_gpu(&error) {
                        AttentionError::InvalidArgument(format!(
                            "'{self}' runs on a GPU and this machine has none usable ({error}). Run the \
                             kernel source on the CPU emulator with '{}', or the CPU backend with 'cpu'",
                            Runner::Emulator(self.kernel())
                        ))
                    } else {
                        error
                    }
                }),
        }
    }
}

impl Runner {
    /// [`Runner::open`] for a command: a GPU runner on a machine without a usable GPU is refused before
    /// any work ([`CliError::Rejected`]); other driver errors are failures.
    ///
    /// # Errors
    /// As said.
    pub fn open_for_command(self, ordinal: usize, schedule: Schedule) -> CliResult<Backend> {
        self.open(ordinal, schedule).map_err(|error| match error {
            AttentionError::InvalidArgument(_) => reject(error),
            other => other.into(),
        })
    }
}

impl fmt::Display for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Runner {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        SPELLINGS
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, runner)| *runner)
            .ok_or_else(|| format!("unknown kernel '{s}': use {}", spellings()))
    }
}

/// The spellings as a sentence: `auto, gpu, ..., emulator-flash or cpu`.
pub fn spellings() -> String {
    let names: Vec<&str> = SPELLINGS.iter().map(|(name, _)| *name).collect();
    let (last, rest) = names.split_last().expect("spellings");
    format!("{} or {last}", rest.join(", "))
}

/// Opens CUDA device `ordinal` with this build's kernels, checking for the driver first.
///
/// # Errors
/// [`AttentionError::DriverNotFound`], [`AttentionError::NoDevice`], [`AttentionError::KernelsNotBuilt`]
/// (see [`no_gpu`]) or another driver error.
pub fn open_gpu(ordinal: usize) -> Result<Engine> {
    if !driver_present() {
        return Err(AttentionError::DriverNotFound);
    }
    Engine::new(ordinal)
}

/// Whether `error` says that this machine cannot run the GPU kernels at all (no driver, no such device,
/// no kernels in this build), as opposed to a failing GPU.
pub fn no_gpu(error: &AttentionError) -> bool {
    matches!(
        error,
        AttentionError::DriverNotFound
            | AttentionError::NoDevice { .. }
            | AttentionError::KernelsNotBuilt
    )
}

/// A backend of the library, opened: what a [`Runner`] runs on.
pub enum Backend {
    /// A CUDA device with this build's kernels.
    Gpu(Box<Engine>),
    /// The crate's CUDA kernels on the CPU emulator.
    Emulator(Emulator),
    /// The CPU backend; `fallback` says why when `auto` found no usable GPU.
    Cpu {
        /// Why the GPU was not used, when it was wanted.
        fallback: Option<String>,
    },
}

/// One problem run by [`Backend::run`]: the plan, a label saying what ran where and why, and the
/// outputs on the host.
pub struct Ran<T> {
    /// The plan that ran.
    pub plan: Plan,
    /// E.g. `flash on NVIDIA H100 (auto: flash supports this problem: ...)`.
    pub label: String,
    /// out, and lse and weights when the options asked for them.
    pub output: HostOutput<T>,
}

impl Backend {
    /// Plans `problem` for `T` on this backend.
    ///
    /// # Errors
    /// The backend's planning errors (validation, an unsupported kernel choice).
    pub fn plan<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
    ) -> Result<Plan> {
        match self {
            Backend::Gpu(engine) => engine.plan::<T>(problem, options),
            Backend::Emulator(emulator) => emulator.plan::<T>(problem, options),
            Backend::Cpu { .. } => CpuBackend.plan::<T>(problem, options),
        }
    }

    /// What runs `plan` where, and why, in one line.
    pub fn describe(&self, plan: &Plan) -> String {
        match self {
            Backend::Gpu(engine) => format!(
                "{} on {} ({})",
                plan.kernel(),
                engine.device().name,
                plan.reason()
            ),
            Backend::Emulator(emulator) => format!(
                "emulator-{} ({}; {})",
                plan.kernel(),
                emulator.description(),
                plan.reason()
            ),
            Backend::Cpu { fallback: None } => "cpu backend".into(),
            Backend::Cpu {
                fallback: Some(why),
            } => format!("cpu backend (no GPU used: {why})"),
        }
    }

    /// Runs `plan` into host buffers on a host backend (emulator or CPU).
    ///
    /// # Errors
    /// [`AttentionError::InvalidArgument`] on the GPU backend (it takes device buffers); the backend's
    /// `forward_into` errors.
    pub fn forward_into_host<T: Element>(
        &self,
        plan: &Plan,
        tensors: HostTensors<'_, T>,
    ) -> Result<()> {
        match self {
            Backend::Emulator(emulator) => emulator.forward_into(plan, tensors),
            Backend::Cpu { .. } => CpuBackend.forward_into(plan, tensors),
            Backend::Gpu(_) => Err(AttentionError::InvalidArgument(
                "the GPU backend runs on device buffers, not host slices".into(),
            )),
        }
    }

    /// Plans `problem` with `options` and runs it on q, k and v (host slices, aligned as the plan's
    /// `input_alignment()` says: [`crate::cli::inputs::Aligned`] is), into outputs poisoned with NaN,
    /// returned on the host. Host memory for the outputs is checked against the budget before any of it
    /// is allocated, device memory against the free memory before any upload.
    ///
    /// # Errors
    /// Planning errors; [`AttentionError::OutOfMemory`] or [`AttentionError::SizeOverflow`] before any
    /// allocation; the run's errors.
    pub fn run<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
        q: &[T],
        k: &[T],
        v: &[T],
    ) -> Result<Ran<T>> {
        let plan = self.plan::<T>(problem, options)?;
        let shape = &problem.shape;
        let out_len = problem.required_len(Tensor::Out)?;
        let lse_len = if options.return_lse {
            shape.lse_elements()?
        } else {
            0
        };
        let weights_len = if options.return_weights {
            shape.score_elements()?
        } else {
            0
        };
        let host_workspace = match self {
            Backend::Gpu(_) => 0,
            _ => plan.workspace_bytes(),
        };
        check_budget(
            "outputs and workspace",
            sum_bytes(
                "outputs and workspace",
                &[
                    bytes_of::<T>("attention output", out_len)?,
                    bytes_of::<f32>("logsumexp", lse_len)?,
                    bytes_of::<f32>("attention weights", weights_len)?,
                    host_workspace,
                ],
            )?,
        )?;
        let mut out = vec_filled("attention output", out_len, T::from_f32(f32::NAN))?;
        let mut lse = options
            .return_lse
            .then(|| vec_filled("logsumexp", lse_len, f32::NAN))
            .transpose()?;
        let mut weights = options
            .return_weights
            .then(|| vec_filled("attention weights", weights_len, f32::NAN))
            .transpose()?;
        match self {
            Backend::Gpu(engine) => run_on_gpu(
                engine,
                &plan,
                [q, k, v],
                &mut out,
                lse.as_deref_mut(),
                weights.as_deref_mut(),
            )?,
            _ => {
                let mut workspace = HostWorkspace::new(host_workspace)?;
                let mut tensors = HostTensors::new(q, k, v, &mut out);
                tensors.lse = lse.as_deref_mut();
                tensors.weights = weights.as_deref_mut();
                tensors.workspace = (host_workspace > 0).then_some(workspace.as_bytes_mut());
                self.forward_into_host(&plan, tensors)?;
            }
        }
        Ok(Ran {
            label: self.describe(&plan),
            plan,
            output: HostOutput { out, lse, weights },
        })
    }
}

impl Backend {
    /// The attention map of `problem` ([`crate::attention_map`]) on this backend, from host slices:
    /// (what ran where, the map on the host). On the GPU q, k and v are uploaded first and the map and
    /// profile read back.
    ///
    /// # Errors
    /// The backend's `attention_map` errors; device memory for the inputs; driver errors.
    pub fn attention_map<T: Element>(
        &self,
        problem: &AttentionProblem,
        spec: &MapSpec,
        q: &[T],
        k: &[T],
        v: &[T],
    ) -> Result<(String, HostAttentionMap)> {
        match self {
            Backend::Gpu(engine) => {
                let layout = spec.layout(problem)?;
                let needed = bytes_of::<T>("q, k and v", q.len() + k.len() + v.len())?;
                engine.check_device_budget("q, k and v", needed)?;
                let stream = engine.default_stream();
                let q = stream.clone_htod(q).context("uploading q")?;
                let k = stream.clone_htod(k).context("uploading k")?;
                let v = stream.clone_htod(v).context("uploading v")?;
                let map = engine.attention_map(problem, spec, &q, &k, &v)?;
                let mut values = stream
                    .clone_dtoh(&map.values)
                    .context("reading the attention map back")?;
                let mut key_profile = stream
                    .clone_dtoh(&map.key_profile)
                    .context("reading the key profile back")?;
                stream
                    .synchronize()
                    .context("waiting for the map kernel and the downloads")?;
                values.truncate(layout.values);
                key_profile.truncate(layout.profile);
                let label = format!(
                    "forward with lse + attention_map kernel on {}",
                    engine.device().name
                );
                Ok((
                    label,
                    HostAttentionMap {
                        values,
                        key_profile,
                        batch: map.batch,
                        heads: map.heads,
                        bins_q: map.bins_q,
                        bins_k: map.bins_k,
                        bin_q: map.bin_q,
                        bin_k: map.bin_k,
                    },
                ))
            }
            Backend::Emulator(emulator) => Ok((
                format!("attention_map kernel on the {}", emulator.description()),
                emulator.attention_map(problem, spec, q, k, v)?,
            )),
            Backend::Cpu { fallback } => Ok((
                match fallback {
                    None => "cpu backend".to_string(),
                    Some(why) => format!("cpu backend (no GPU used: {why})"),
                },
                CpuBackend.attention_map(problem, spec, q, k, v)?,
            )),
        }
    }
}

/// The sum of byte counts, or [`AttentionError::SizeOverflow`] naming `what`.
///
/// # Errors
/// [`AttentionError::SizeOverflow`].
pub fn sum_bytes(what: &'static str, bytes: &[usize]) -> Result<usize> {
    bytes
        .iter()
        .try_fold(0usize, |total, &b| total.checked_add(b))
        .ok_or_else(|| AttentionError::SizeOverflow {
            what,
            detail: format!("{bytes:?} bytes"),
        })
}

/// Uploads q, k, v and the poisoned outputs, runs `plan` on the engine's stream, and downloads the
/// outputs into the host buffers.
fn run_on_gpu<T: Element>(
    engine: &Engine,
    plan: &Plan,
    [q, k, v]: [&[T]; 3],
    out: &mut [T],
    lse: Option<&mut [f32]>,
    weights: Option<&mut [f32]>,
) -> Result<()> {
    let problem = plan.problem();
    let slopes = problem.alibi_slopes.as_deref();
    let needed = sum_bytes(
        "device buffers",
        &[
            bytes_of::<T>("q, k and v", q.len() + k.len() + v.len())?,
            bytes_of::<T>("attention output", out.len())?,
            bytes_of::<f32>("logsumexp", lse.as_ref().map_or(0, |l| l.len()))?,
            bytes_of::<f32>("attention weights", weights.as_ref().map_or(0, |w| w.len()))?,
            bytes_of::<f32>("ALiBi slopes", slopes.map_or(0, |s| s.len()))?,
            plan.workspace_bytes(),
        ],
    )?;
    engine.check_device_budget("inputs, outputs and workspace", needed)?;
    let stream = engine.default_stream();
    let q_device = stream.clone_htod(q).context("uploading q")?;
    let k_device = stream.clone_htod(k).context("uploading k")?;
    let v_device = stream.clone_htod(v).context("uploading v")?;
    let mut out_device = stream
        .clone_htod(&*out)
        .context("uploading the poisoned output")?;
    let mut lse_device = lse
        .as_deref()
        .map(|l| stream.clone_htod(l))
        .transpose()
        .context("uploading the poisoned logsumexp")?;
    let mut weights_device = weights
        .as_deref()
        .map(|w| stream.clone_htod(w))
        .transpose()
        .context("uploading the poisoned weights")?;
    let mut workspace = (plan.workspace_bytes() > 0)
        .then(|| stream.alloc_zeros::<u8>(plan.workspace_bytes()))
        .transpose()
        .context("allocating the workspace")?;
    let slopes_device = slopes
        .map(|s| stream.clone_htod(s))
        .transpose()
        .context("uploading the ALiBi slopes")?;
    let mut tensors: DeviceTensors<'_, T> =
        Tensors::new(&q_device, &k_device, &v_device, &mut out_device);
    tensors.lse = lse_device.as_mut().map(|b| b as &mut dyn DevicePtrMut<f32>);
    tensors.weights = weights_device
        .as_mut()
        .map(|b| b as &mut dyn DevicePtrMut<f32>);
    tensors.workspace = workspace.as_mut().map(|b| b as &mut dyn DevicePtrMut<u8>);
    tensors.alibi_slopes = slopes_device.as_ref().map(|b| b as &dyn DevicePtr<f32>);
    engine.forward_into(stream, plan, tensors)?;
    stream
        .memcpy_dtoh(&out_device, out)
        .context("downloading the output")?;
    if let (Some(device), Some(host)) = (&lse_device, lse) {
        stream
            .memcpy_dtoh(device, host)
            .context("downloading the logsumexp")?;
    }
    if let (Some(device), Some(host)) = (&weights_device, weights) {
        stream
            .memcpy_dtoh(device, host)
            .context("downloading the weights")?;
    }
    stream
        .synchronize()
        .context("waiting for the kernels and the downloads")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_back_to_its_runner() {
        for runner in Runner::all() {
            assert_eq!(runner.name().parse::<Runner>(), Ok(runner));
        }
        assert_eq!("flash".parse(), Ok(Runner::Gpu(KernelChoice::Flash)));
        assert_eq!(
            "cpu".parse::<Runner>().unwrap().kernel(),
            KernelChoice::Auto
        );
        let error = "fast".parse::<Runner>().unwrap_err();
        assert!(
            error.contains("'fast'") && error.contains("emulator-flash-sm90 or cpu"),
            "{error}"
        );
        let timed: Vec<&str> = Runner::all()
            .filter(|r| r.is_one_kernel())
            .map(Runner::name)
            .collect();
        assert_eq!(
            timed,
            ["naive", "flash", "emulator-naive", "emulator-flash", "cpu"]
        );
    }
}

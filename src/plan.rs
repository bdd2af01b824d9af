//! Kernel selection: which kernel runs a problem, why, and what workspace it needs, decided before any
//! launch so callers can inspect it.

use crate::dtype::DType;
use crate::error::{AttentionError, Result};
use crate::launch::{flash_launch, kernel_for, naive_launches, KernelLaunch, MAX_GRID_YZ};
use crate::problem::{AttentionProblem, Tensor};
use crate::registry::KernelFamily;

/// What the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KernelChoice {
    /// The best kernel that supports the problem on this device.
    #[default]
    Auto,
    /// The materialising baseline (the only one that can return attention weights).
    Naive,
    /// The tiled, fused kernel.
    Flash,
}

impl std::str::FromStr for KernelChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "auto" => Ok(KernelChoice::Auto),
            "naive" => Ok(KernelChoice::Naive),
            "flash" => Ok(KernelChoice::Flash),
            other => Err(format!(
                "unknown kernel '{other}': use auto, naive or flash"
            )),
        }
    }
}

/// The kernel family a plan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// Scores materialised in device memory, then softmax, then P V.
    Naive,
    /// Tiled, fused, online softmax.
    Flash,
    /// The CPU backend's own fused loop (no kernel source).
    Cpu,
}

impl KernelKind {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Naive => "naive",
            KernelKind::Flash => "flash",
            KernelKind::Cpu => "cpu",
        }
    }
}

impl std::fmt::Display for KernelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of one forward call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ForwardOptions {
    /// Which kernel to use.
    pub kernel: KernelChoice,
    /// Also write the f32 logsumexp `[batch, heads_q, seq_q]`.
    pub return_lse: bool,
    /// Also write the f32 attention weights `[batch, heads_q, seq_q, seq_k]` (naive only).
    pub return_weights: bool,
}

impl ForwardOptions {
    /// Sets the kernel choice.
    pub fn with_kernel(mut self, kernel: KernelChoice) -> Self {
        self.kernel = kernel;
        self
    }
    /// Asks for the logsumexp.
    pub fn with_lse(mut self, return_lse: bool) -> Self {
        self.return_lse = return_lse;
        self
    }
    /// Asks for the attention weights.
    pub fn with_weights(mut self, return_weights: bool) -> Self {
        self.return_weights = return_weights;
        self
    }
}

/// What the selector knows about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCaps {
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// Dynamic shared memory a block may opt in to (bytes).
    pub shared_memory_per_block_optin: usize,
}

/// Where a plan runs: a CUDA device (real, or the emulator, which runs the same kernels) or the CPU
/// backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The crate's kernels on a device with these capabilities.
    Device(DeviceCaps),
    /// The CPU backend.
    Cpu,
}

/// A validated decision: the kernel, the reason, the workspace and the launches, computed once. Made by
/// `Engine::plan`, `Emulator::plan` or `CpuBackend::plan` (or [`Plan::new`] / [`Plan::cpu`]) and consumed
/// by a forward call of the same backend. Sealed: the fields are private, so the problem a plan checks
/// buffers against is the problem it was made for.
///
/// ```compile_fail
/// # use cuda_attention::{AttentionProblem, AttentionShape, DType, ForwardOptions, Plan};
/// let problem = AttentionProblem::new(AttentionShape::new(1, 4, 1, 8));
/// let mut plan = Plan::cpu(&problem, DType::F32, ForwardOptions::default()).unwrap();
/// plan.problem.shape.seq_q = 1 << 20; // error: the field is private
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    problem: AttentionProblem,
    dtype: DType,
    options: ForwardOptions,
    target: Target,
    kernel: KernelKind,
    reason: String,
    workspace_bytes: usize,
    launches: Vec<KernelLaunch>,
    input_alignment: usize,
}

impl Plan {
    /// Validates the problem and picks a kernel for a device with `caps`.
    ///
    /// Auto never plans a kernel that will then refuse the caller's buffers for a reason it could know:
    /// strides are checked here, and when flash needs aligned base addresses (16 bytes for f16/bf16), the
    /// reason says so and [`Plan::input_alignment`] states it; buffers that break it are refused at binding
    /// with [`AttentionError::KernelUnsupported`] (plan with [`KernelChoice::Naive`] for such buffers).
    ///
    /// # Errors
    /// The problem's validation error, or [`AttentionError::KernelUnsupported`] when the requested
    /// kernel cannot run it.
    pub fn new(
        problem: &AttentionProblem,
        dtype: DType,
        options: ForwardOptions,
        caps: DeviceCaps,
    ) -> Result<Plan> {
        problem.validate()?;
        let shape = &problem.shape;
        let ragged = problem.ragged_layout().is_some();
        let family = if ragged {
            KernelFamily::FlashVarlen
        } else {
            KernelFamily::Flash
        };
        let flash = flash_launch(shape, dtype, family);
        let flash_unavailable = match &flash {
            Ok(launch) => flash_unavailable_reason(problem, dtype, options, caps, launch, family),
            Err(error) => Some(error.to_string()),
        };
        if ragged {
            // The naive kernels take dense batches only: a ragged batch runs on flash or not at all.
            let naive_refusal =
                "the naive kernels take dense batches only: plan a ragged batch with flash \
                                 (KernelChoice::Auto or Flash), or run it on the CPU backend";
            let refusal = match (options.kernel, &flash_unavailable) {
                (KernelChoice::Naive, _) => Some(("naive", naive_refusal.to_string())),
                (_, Some(reason)) => Some(("flash", format!("{reason} (and {naive_refusal})"))),
                _ => None,
            };
            if let Some((kernel, reason)) = refusal {
                return Err(AttentionError::KernelUnsupported { kernel, reason });
            }
        }
        let (kernel, reason) = match (options.kernel, flash_unavailable) {
            (KernelChoice::Naive, _) => (KernelKind::Naive, "naive requested".to_string()),
            (KernelChoice::Flash, Some(reason)) => {
                return Err(AttentionError::KernelUnsupported {
                    kernel: "flash",
                    reason,
                });
            }
            (KernelChoice::Flash, None) => (KernelKind::Flash, "flash requested".to_string()),
            (KernelChoice::Auto, Some(reason)) => {
                (KernelKind::Naive, format!("auto: naive, because {reason}"))
            }
            (KernelChoice::Auto, None) => (
                KernelKind::Flash,
                "auto: flash supports this problem".to_string(),
            ),
        };
        let (launches, workspace_bytes, input_alignment) = match kernel {
            KernelKind::Naive => {
                // The scores live in the caller's weights buffer when weights are returned.
                let workspace = if options.return_weights {
                    0
                } else {
                    shape.score_elements()?.checked_mul(4).ok_or_else(|| {
                        AttentionError::SizeOverflow {
                            what: "naive score workspace",
                            detail: "score elements * 4 bytes".into(),
                        }
                    })?
                };
                (naive_launches(shape, dtype)?, workspace, dtype.size_bytes())
            }
            _ => {
                let launch = flash?;
                let spec = kernel_for(family, dtype, shape.head_dim)?;
                (vec![launch], 0, spec.base_alignment.max(dtype.size_bytes()))
            }
        };
        let reason = match kernel {
            KernelKind::Flash => {
                let spec = kernel_for(family, dtype, shape.head_dim)?;
                let units = if dtype == DType::F32 {
                    "CUDA cores, f32 inputs kept exact".to_string()
                } else if *spec.head_dims.end() == shape.head_dim {
                    "tensor cores".to_string()
                } else {
                    format!(
                        "tensor cores, head_dim {} zero-padded to {} on load",
                        shape.head_dim,
                        spec.head_dims.end()
                    )
                };
                let alignment = if input_alignment > dtype.size_bytes() {
                    format!("; q, k and v must start {input_alignment}-byte aligned")
                } else {
                    String::new()
                };
                format!(
                    "{reason}: {} ({units}; {} query rows x {} keys per tile{alignment})",
                    spec.name, spec.tile_rows, spec.tile_cols
                )
            }
            _ => reason,
        };
        Ok(Plan {
            problem: problem.clone(),
            dtype,
            options,
            target: Target::Device(caps),
            kernel,
            reason,
            workspace_bytes,
            launches,
            input_alignment,
        })
    }

    /// Validates the problem for the CPU backend, which runs every problem with its own fused loop and
    /// returns the weights on request.
    ///
    /// # Errors
    /// The problem's validation error, or [`AttentionError::KernelUnsupported`] for an explicit
    /// [`KernelChoice::Naive`] or [`KernelChoice::Flash`] (those name device kernels: run them on the
    /// emulator or a GPU).
    pub fn cpu(problem: &AttentionProblem, dtype: DType, options: ForwardOptions) -> Result<Plan> {
        problem.validate()?;
        if options.kernel != KernelChoice::Auto {
            return Err(AttentionError::KernelUnsupported {
                kernel: if options.kernel == KernelChoice::Naive { "naive" } else { "flash" },
                reason: "the CPU backend runs its own fused loop: use KernelChoice::Auto, or the emulator to \
                         run the naive or flash kernel source on the CPU"
                    .into(),
            });
        }
        if problem.ragged_layout().is_some() && options.return_weights {
            return Err(AttentionError::InvalidArgument(
                "attention weights of a ragged batch are not returned: run the sequence of interest as a dense \
                 problem"
                    .into(),
            ));
        }
        Ok(Plan {
            problem: problem.clone(),
            dtype,
            options,
            target: Target::Cpu,
            kernel: KernelKind::Cpu,
            reason: "the CPU backend (f32 accumulation, all cores)".into(),
            workspace_bytes: 0,
            launches: Vec::new(),
            input_alignment: dtype.size_bytes(),
        })
    }

    /// The problem this plan was made for.
    pub fn problem(&self) -> &AttentionProblem {
        &self.problem
    }

    /// Element type of q, k, v and out.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The options it honours.
    pub fn options(&self) -> ForwardOptions {
        self.options
    }

    /// Where it runs.
    pub fn target(&self) -> Target {
        self.target
    }

    /// The kernel that will run.
    pub fn kernel(&self) -> KernelKind {
        self.kernel
    }

    /// Why that kernel was chosen, in words.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Workspace in bytes a `forward_into` call must provide (0: none).
    pub fn workspace_bytes(&self) -> usize {
        self.workspace_bytes
    }

    /// The kernel launches, in order (none for the CPU backend).
    pub fn launches(&self) -> &[KernelLaunch] {
        &self.launches
    }

    /// Bytes the base addresses of q, k and v must be multiples of.
    pub fn input_alignment(&self) -> usize {
        self.input_alignment
    }
}

/// Why the flash kernel cannot run, or `None` when it can.
fn flash_unavailable_reason(
    problem: &AttentionProblem,
    dtype: DType,
    options: ForwardOptions,
    caps: DeviceCaps,
    launch: &KernelLaunch,
    family: KernelFamily,
) -> Option<String> {
    if options.return_weights {
        return Some(
            "the attention weights were requested and only the naive kernel materialises them"
                .into(),
        );
    }
    if caps.compute_capability.0 < 8 {
        return Some(format!(
            "compute capability {}.{} is below 8.0 (flash needs sm_80 tensor cores)",
            caps.compute_capability.0, caps.compute_capability.1
        ));
    }
    let spec = kernel_for(family, dtype, problem.shape.head_dim).ok()?;
    let align = spec.stride_multiple;
    for tensor in [Tensor::Q, Tensor::K, Tensor::V] {
        let strides = problem.strides_of(tensor);
        // Only the strides of dimensions with more than one entry move an address.
        let [batch, seq, heads, _] = problem.extents(tensor);
        let misaligned = |stride: usize, extent: usize| extent > 1 && stride % align != 0;
        if misaligned(strides.batch, batch)
            || misaligned(strides.seq, seq)
            || misaligned(strides.head, heads)
        {
            return Some(format!(
                "the {} strides {strides:?} are not multiples of {align} elements ({} loads {}-byte rows; with \
                 head_dim {} pad the rows or use a head dim that is a multiple of {align})",
                tensor.name(),
                spec.name,
                spec.base_alignment,
                problem.shape.head_dim
            ));
        }
    }
    let shared = launch.shared_bytes as usize;
    if shared > caps.shared_memory_per_block_optin {
        return Some(format!(
            "{} needs {shared} bytes of shared memory for head_dim {} and the device allows {}",
            spec.name, problem.shape.head_dim, caps.shared_memory_per_block_optin
        ));
    }
    let grid_limit = MAX_GRID_YZ as usize;
    if problem.shape.batch > grid_limit || problem.shape.heads_q > grid_limit {
        return Some(format!(
            "batch {} or heads_q {} exceeds the flash grid limit {grid_limit}",
            problem.shape.batch, problem.shape.heads_q
        ));
    }
    None
}

//! Kernel selection: which kernel runs a problem, why, and what workspace it needs, decided before any
//! launch so callers can inspect it.

use crate::dtype::DType;
use crate::error::{AttentionError, Result};
use crate::launch::{flash_launch, flash_padded_head_dim, MAX_GRID_YZ};
use crate::problem::AttentionProblem;
use crate::sys::FLASH_ALIGN_ELEMENTS;

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
}

impl KernelKind {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Naive => "naive",
            KernelKind::Flash => "flash",
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

/// A validated decision: the kernel, the reason, the workspace. Made by [`Plan::new`] (or
/// `Engine::plan`) and consumed by a forward call.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The problem this plan was made for.
    pub problem: AttentionProblem,
    /// Element type of q, k, v and out.
    pub dtype: DType,
    /// The options it honours.
    pub options: ForwardOptions,
    /// The kernel that will run.
    pub kernel: KernelKind,
    /// Why that kernel was chosen, in words.
    pub reason: String,
    /// Device workspace in bytes a `forward_into` call must provide (0: none).
    pub workspace_bytes: usize,
}

impl Plan {
    /// Validates the problem and picks a kernel.
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
        let flash_unavailable = flash_unavailable_reason(problem, dtype, options, caps);
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
                if dtype == DType::F32 {
                    "auto: flash supports this problem (f32 on CUDA cores, no tensor cores)"
                        .to_string()
                } else {
                    format!(
                        "auto: flash supports this problem (tensor-core instantiation for head_dim {})",
                        flash_padded_head_dim(problem.shape.head_dim)
                    )
                },
            ),
        };
        let workspace_bytes = match kernel {
            // The scores live in the caller's weights buffer when weights are returned.
            KernelKind::Naive if !options.return_weights => problem
                .shape
                .score_elements()?
                .checked_mul(4)
                .ok_or_else(|| AttentionError::SizeOverflow {
                    what: "naive score workspace",
                    detail: "score elements * 4 bytes".into(),
                })?,
            _ => 0,
        };
        Ok(Plan {
            problem: problem.clone(),
            dtype,
            options,
            kernel,
            reason,
            workspace_bytes,
        })
    }
}

/// Why the flash kernel cannot run, or `None` when it can.
fn flash_unavailable_reason(
    problem: &AttentionProblem,
    dtype: DType,
    options: ForwardOptions,
    caps: DeviceCaps,
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
    // The tensor-core kernels load 16-byte rows; the f32 kernel loads scalars.
    let align = if dtype == DType::F32 {
        1
    } else {
        FLASH_ALIGN_ELEMENTS as usize
    };
    for (tensor, strides) in [
        ("q", &problem.q_strides),
        ("k", &problem.k_strides),
        ("v", &problem.v_strides),
    ] {
        if strides.batch % align != 0 || strides.seq % align != 0 || strides.head % align != 0 {
            return Some(format!(
                "the {tensor} strides {strides:?} are not multiples of {align} elements (flash loads 16-byte \
                 rows; with head_dim {} pad the rows or use a head dim that is a multiple of {align})",
                problem.shape.head_dim
            ));
        }
    }
    let shared = flash_launch(&problem.shape, dtype).shared_bytes as usize;
    if shared > caps.shared_memory_per_block_optin {
        return Some(format!(
            "the flash tile for head_dim {} needs {shared} bytes of shared memory and the device allows {}",
            problem.shape.head_dim, caps.shared_memory_per_block_optin
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

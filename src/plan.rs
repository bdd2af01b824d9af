//! Kernel selection: which kernel runs a problem, why, and what workspace it needs, decided before any
//! launch so callers can inspect it.

use crate::dtype::DType;
use crate::error::{AttentionError, Result};
use crate::launch::{flash_launch, kernel_for, naive_launches, KernelLaunch, MAX_GRID_YZ};
use crate::problem::{checked_product, AttentionProblem, Tensor};
use crate::registry::KernelFamily;

mod sm90;

pub use sm90::HOPPER_ENV;

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
    /// The sm_90a fused kernel (wgmma, TMA, warp specialisation): opt-in until verified on hardware, so
    /// it also needs the environment switch [`HOPPER_ENV`]`=1` and an sm_90 device (the emulator runs it
    /// with sm_90a semantics). Never picked by [`KernelChoice::Auto`].
    FlashSm90,
}

impl std::str::FromStr for KernelChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "auto" => Ok(KernelChoice::Auto),
            "naive" => Ok(KernelChoice::Naive),
            "flash" => Ok(KernelChoice::Flash),
            "flash-sm90" => Ok(KernelChoice::FlashSm90),
            other => Err(format!(
                "unknown kernel '{other}': use auto, naive, flash or flash-sm90"
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
    /// The sm_90a fused kernel (wgmma, TMA): tensor maps built for each call.
    FlashSm90,
    /// The CPU backend's own fused loop (no kernel source).
    Cpu,
}

impl KernelKind {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Naive => "naive",
            KernelKind::Flash => "flash",
            KernelKind::FlashSm90 => "flash-sm90",
            KernelKind::Cpu => "cpu",
        }
    }
}

impl std::fmt::Display for KernelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How many splits of the keys the flash kernel runs (split-KV, flash-decoding; see [`Plan::splits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Splits {
    /// The heuristic: split only when the grid does not fill the device (see [`split_heuristic`]).
    #[default]
    Auto,
    /// Exactly this many (at least 1; at most [`MAX_SPLITS`]).
    Fixed(usize),
    /// The heuristic, capped at this many (a server's static maximum for graph capture).
    AtMost(usize),
}

/// Whether the flash kernel stacks the query heads that share a key/value head as rows of one query tile
/// (GQA packing, for decode: see [`Plan::gqa_packing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GqaPacking {
    /// Pack when it cuts the query tiles that stream the same K/V (see [`packs_gqa`]).
    #[default]
    Auto,
    /// Never (one query head per block, the prefill grid).
    Off,
    /// Whenever the kernel can: GQA (`heads_q > heads_kv`) on the f16/bf16 flash kernels; an error
    /// otherwise.
    On,
}

/// Whether Auto packs: with `group = heads_q / heads_kv > 1` query heads per key/value head and query
/// tiles of `tile_rows` rows, pack when the packed tiles of a key/value head, `ceil(seq_q * group /
/// tile_rows)`, are fewer than the unpacked tiles of its group, `group * ceil(seq_q / tile_rows)`: every
/// tile streams the head's whole K and V, so packing divides the K/V traffic by up to `group`. True for
/// decode (seq_q 1 to 16 with groups up to 8 at 128-row tiles), false once seq_q fills whole tiles.
pub fn packs_gqa(seq_q: usize, group: usize, tile_rows: usize) -> bool {
    let tile_rows = tile_rows.max(1);
    group > 1
        && seq_q
            .checked_mul(group)
            .is_some_and(|rows| rows.div_ceil(tile_rows) < group * seq_q.div_ceil(tile_rows))
}

/// Largest number of splits a plan runs.
pub const MAX_SPLITS: usize = 128;

/// Options of one forward call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ForwardOptions {
    /// Which kernel to use.
    pub kernel: KernelChoice,
    /// Also write the f32 logsumexp `[batch, heads_q, seq_q]`.
    pub return_lse: bool,
    /// Also write the f32 attention weights `[batch, heads_q, seq_q, seq_k]` (naive only).
    pub return_weights: bool,
    /// Split-KV for the f16/bf16 flash kernels (ignored by the others, which run one split).
    pub splits: Splits,
    /// GQA packing for the f16/bf16 flash kernels (Auto: ignored by the others).
    pub gqa_packing: GqaPacking,
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
    /// Sets the split-KV choice.
    pub fn with_splits(mut self, splits: Splits) -> Self {
        self.splits = splits;
        self
    }
    /// Sets the GQA packing choice.
    pub fn with_gqa_packing(mut self, gqa_packing: GqaPacking) -> Self {
        self.gqa_packing = gqa_packing;
        self
    }
}

/// FlashAttention-2's split heuristic (`num_splits_heuristic`), in words: with `blocks` thread blocks
/// without splitting and `slots = 2 * multiprocessors` (two 128-thread blocks per SM), no split when
/// `blocks >= 0.8 * slots`; otherwise, among split counts `s` of `1..=min(max, slots, key_tiles)` that
/// really differ (`ceil(key_tiles / s) != ceil(key_tiles / (s - 1))`), the smallest whose wave
/// efficiency `w / ceil(w)` with `w = blocks * s / slots` reaches 85% of the best.
pub fn split_heuristic(
    blocks: usize,
    multiprocessors: usize,
    key_tiles: usize,
    max: usize,
) -> usize {
    let slots = 2 * multiprocessors.max(1);
    if blocks * 5 >= slots * 4 || key_tiles <= 1 {
        return 1;
    }
    let limit = max.min(slots).min(key_tiles).clamp(1, MAX_SPLITS);
    let efficiency = |s: usize| {
        let waves = (blocks * s) as f64 / slots as f64;
        waves / waves.ceil()
    };
    let distinct = |s: usize| s == 1 || key_tiles.div_ceil(s) != key_tiles.div_ceil(s - 1);
    let best = (1..=limit)
        .filter(|&s| distinct(s))
        .map(efficiency)
        .fold(0.0f64, f64::max);
    (1..=limit)
        .find(|&s| distinct(s) && efficiency(s) >= 0.85 * best)
        .unwrap_or(1)
}

/// What the selector knows about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCaps {
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// Dynamic shared memory a block may opt in to (bytes).
    pub shared_memory_per_block_optin: usize,
    /// Streaming multiprocessors (the split-KV heuristic).
    pub multiprocessors: usize,
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
    splits: usize,
    gqa_packing: Option<usize>,
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
        if options.kernel == KernelChoice::FlashSm90 {
            return sm90::plan_flash_sm90(problem, dtype, options, caps, sm90::opted_in());
        }
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
            (KernelChoice::Flash | KernelChoice::FlashSm90, Some(reason)) => {
                return Err(AttentionError::KernelUnsupported {
                    kernel: "flash",
                    reason,
                });
            }
            (KernelChoice::Flash | KernelChoice::FlashSm90, None) => {
                (KernelKind::Flash, "flash requested".to_string())
            }
            (KernelChoice::Auto, Some(reason)) => {
                (KernelKind::Naive, format!("auto: naive, because {reason}"))
            }
            (KernelChoice::Auto, None) => (
                KernelKind::Flash,
                format!("auto: flash supports this problem{}", sm90::auto_note(caps)),
            ),
        };
        let mut splits = 1;
        let mut packing = None;
        let mut unpacked_blocks = 0;
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
                let mut launch = flash?;
                let spec = kernel_for(family, dtype, shape.head_dim)?;
                let alignment = spec.base_alignment.max(dtype.size_bytes());
                unpacked_blocks = launch_blocks(&launch, 1);
                packing =
                    plan_packing(problem, dtype, options.gqa_packing, spec.tile_rows as usize)?;
                if let Some(group) = packing {
                    launch.grid.0 = (shape.seq_q * group)
                        .div_ceil(spec.tile_rows as usize)
                        .clamp(1, crate::launch::MAX_GRID_X as usize)
                        as u32;
                    launch.grid.1 = shape.heads_kv as u32;
                }
                splits = plan_splits(
                    problem,
                    dtype,
                    options.splits,
                    caps,
                    &launch,
                    spec.tile_cols as usize,
                )?;
                if splits == 1 {
                    (vec![launch], 0, alignment)
                } else {
                    launch.grid.2 = (shape.batch * splits) as u32;
                    let combine = combine_launch(problem, dtype)?;
                    let workspace = split_workspace(problem, splits)?.total;
                    (vec![launch, combine], workspace, alignment)
                }
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
                let split = if splits > 1 {
                    format!(
                        "; split-KV: {splits} splits of the keys ({}), merged by {}",
                        match options.splits {
                            Splits::Fixed(_) => "fixed by the caller".to_string(),
                            _ => format!(
                                "{} blocks without splitting on {} SMs",
                                launch_blocks(&launches[0], splits),
                                caps.multiprocessors
                            ),
                        },
                        launches[1].name
                    )
                } else {
                    String::new()
                };
                let packed = match packing {
                    Some(group) => format!(
                        "; GQA packing: the {group} query heads of each key/value head as rows of one tile, {} \
                         blocks instead of {unpacked_blocks}{}",
                        launch_blocks(&launches[0], splits),
                        match options.gqa_packing {
                            GqaPacking::On => " (requested)",
                            _ => " (each K/V tile loaded once for the group)",
                        }
                    ),
                    None => String::new(),
                };
                let sparse = problem.block_mask.as_ref().map_or(String::new(), |mask| {
                    format!(
                        "; block-sparse: {} of {} blocks of {}x{} listed ({:.1}%), only their tiles visited",
                        mask.nnz(),
                        mask.row_blocks() * mask.col_blocks(),
                        mask.block_q(),
                        mask.block_k(),
                        100.0 * mask.density()
                    )
                });
                format!(
                    "{reason}: {} ({units}; {} query rows x {} keys per tile{alignment}{packed}{sparse}{split})",
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
            splits,
            gqa_packing: packing,
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
            splits: 1,
            gqa_packing: None,
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

    /// Splits of the keys (split-KV) the flash launch runs; 1 without splitting. Fixed at plan time (a
    /// static count: each block derives its own share of the key tiles from the real lengths on the
    /// device, and empty splits are harmless), so a split plan is graph-capturable like any other.
    pub fn splits(&self) -> usize {
        self.splits
    }

    /// The query heads per key/value head the flash launch stacks as rows of one query tile (GQA
    /// packing: a block per key/value head, each K/V tile loaded once for the whole group), or `None`.
    pub fn gqa_packing(&self) -> Option<usize> {
        self.gqa_packing
    }
}

/// Where the split-KV partial states live in the workspace: `[splits, heads_q, rows]` f32 lse at 0,
/// `[splits, rows, heads_q, head_dim]` f32 outputs at `out_offset` (16-byte aligned); `rows` is
/// `batch * seq_q`, or `total_q` for a ragged batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitWorkspace {
    /// Row slots of the partial states.
    pub rows: usize,
    /// Byte offset of the partial outputs.
    pub out_offset: usize,
    /// Bytes in all.
    pub total: usize,
}

/// The workspace layout of `splits` partial states of `problem`.
///
/// # Errors
/// [`AttentionError::SizeOverflow`] when it does not fit the address space.
pub fn split_workspace(problem: &AttentionProblem, splits: usize) -> Result<SplitWorkspace> {
    let s = &problem.shape;
    let rows = match problem.ragged_layout() {
        Some(ragged) => ragged.total_q,
        None => checked_product("split rows", &[s.batch, s.seq_q])?,
    };
    let lse_bytes = checked_product("split-KV partial lse bytes", &[splits, s.heads_q, rows, 4])?;
    let out_offset = lse_bytes.div_ceil(16) * 16;
    let out_bytes = checked_product(
        "split-KV partial output bytes",
        &[splits, rows, s.heads_q, s.head_dim, 4],
    )?;
    let total = out_offset
        .checked_add(out_bytes)
        .ok_or_else(|| AttentionError::SizeOverflow {
            what: "split-KV workspace",
            detail: format!("{out_offset} + {out_bytes} bytes"),
        })?;
    Ok(SplitWorkspace {
        rows,
        out_offset,
        total,
    })
}

/// The group size a flash plan packs (`None`: no packing): Auto by [`packs_gqa`]; On whenever the
/// problem has GQA and the kernel is an f16/bf16 one, else an error saying why.
fn plan_packing(
    problem: &AttentionProblem,
    dtype: DType,
    choice: GqaPacking,
    tile_rows: usize,
) -> Result<Option<usize>> {
    let s = &problem.shape;
    let group = problem.heads_ratio();
    // The kernels count a sequence's packed rows in i32.
    let fits = s
        .seq_q
        .checked_mul(group)
        .is_some_and(|rows| rows <= i32::MAX as usize);
    let refusal = if dtype == DType::F32 {
        Some("GQA packing runs on the f16/bf16 tensor-core kernels, not the f32 path".to_string())
    } else if problem.block_mask.is_some() {
        Some(
            "GQA packing does not combine with a block-sparse mask (a warp's rows must lie in one query block)"
                .to_string(),
        )
    } else if group == 1 {
        Some("GQA packing needs heads_q > heads_kv (one query head per key/value head has nothing to pack)".into())
    } else if !fits {
        Some(format!(
            "GQA packing counts seq_q * group = {} * {group} rows in 32 bits",
            s.seq_q
        ))
    } else {
        None
    };
    match (choice, refusal) {
        (GqaPacking::Off, _) => Ok(None),
        (GqaPacking::On, Some(reason)) => Err(AttentionError::KernelUnsupported {
            kernel: "flash",
            reason,
        }),
        (GqaPacking::On, None) => Ok(Some(group)),
        (GqaPacking::Auto, Some(_)) => Ok(None),
        (GqaPacking::Auto, None) => Ok(packs_gqa(s.seq_q, group, tile_rows).then_some(group)),
    }
}

/// Blocks of a flash launch without its splits.
fn launch_blocks(launch: &KernelLaunch, splits: usize) -> usize {
    launch.grid.0 as usize * launch.grid.1 as usize * (launch.grid.2 as usize / splits.max(1))
}

/// The split count of a flash plan: 1 for the f32 path; the caller's fixed count; or the heuristic
/// (capped), from the blocks of the launch and the key tiles of the longest sequence.
fn plan_splits(
    problem: &AttentionProblem,
    dtype: DType,
    choice: Splits,
    caps: DeviceCaps,
    launch: &KernelLaunch,
    key_tile: usize,
) -> Result<usize> {
    let s = &problem.shape;
    let key_tiles = s.seq_k.div_ceil(key_tile.max(1));
    let grid_room = (MAX_GRID_YZ as usize / s.batch.max(1)).max(1);
    let heuristic = |max: usize| {
        split_heuristic(
            launch_blocks(launch, 1),
            caps.multiprocessors,
            key_tiles,
            max.min(grid_room),
        )
    };
    let splits = match choice {
        Splits::Fixed(n) => {
            if n == 0 || n > MAX_SPLITS || n > grid_room {
                return Err(AttentionError::InvalidArgument(format!(
                    "{n} splits: use 1 to {} (at most {MAX_SPLITS}, and batch * splits within the grid's 65535)",
                    MAX_SPLITS.min(grid_room)
                )));
            }
            n
        }
        Splits::AtMost(0) => {
            return Err(AttentionError::InvalidArgument(
                "a split cap of 0: use at least 1 (1 turns split-KV off)".into(),
            ))
        }
        Splits::AtMost(max) => heuristic(max),
        Splits::Auto => heuristic(MAX_SPLITS),
    };
    if dtype == DType::F32 && splits > 1 {
        if let Splits::Fixed(_) = choice {
            return Err(AttentionError::KernelUnsupported {
                kernel: "flash",
                reason:
                    "split-KV runs on the f16/bf16 tensor-core kernels; the f32 path runs one split"
                        .into(),
            });
        }
        return Ok(1);
    }
    Ok(splits)
}

/// The combine launch of split-KV: one warp per (row slot, head).
fn combine_launch(problem: &AttentionProblem, dtype: DType) -> Result<KernelLaunch> {
    let kernel = kernel_for(KernelFamily::Combine, dtype, problem.shape.head_dim)?;
    let rows = split_workspace(problem, 1)?.rows;
    let units = (rows as u64).saturating_mul(problem.shape.heads_q as u64);
    Ok(KernelLaunch {
        name: kernel.name,
        grid: (
            units
                .div_ceil(u64::from(kernel.tile_rows))
                .clamp(1, crate::launch::MAX_GRID_X) as u32,
            1,
            1,
        ),
        block: kernel.block,
        shared_bytes: 0,
    })
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
    if problem.block_mask.is_some() && dtype == DType::F32 {
        return Some(
            "block-sparse masks run on the f16/bf16 flash kernels and the naive ones; the f32 flash path does not \
             read them"
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

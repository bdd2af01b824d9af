//! Attention maps without the `seq_q x seq_k` matrix: the attention weights pooled over bins of
//! `bin_q x bin_k` positions, and the attention each key receives (its column sum), per head.
//!
//! Every backend computes them the same way: a forward pass with the logsumexp (flash where the backend
//! has it), then a second pass that recomputes the scores tile by tile and turns each into its weight
//! `exp(score - lse_i)` (the score scaled, soft-capped and ALiBi-biased, 0 at the keys row `i` does not
//! see; with sinks the lse includes the sink, so a row's weights sum to less than 1; a row that sees no
//! key has lse `-inf` and weight 0 everywhere). Memory is the inputs, the forward's output and lse, the
//! map and the profile: `O(seq * head_dim + bins_q * bins_k)` per head, for any sequence length.
//!
//! - [`crate::Engine::attention_map`]: device buffers (the `attention_map_*` kernels,
//!   `kernels/attention_map.cu`);
//! - [`crate::emulator::Emulator::attention_map`]: the same kernels on the CPU emulator;
//! - [`crate::cpu::CpuBackend::attention_map`]: the CPU backend, on all cores.
//!
//! ```
//! use cuda_attention::attention_map::{BinReduce, MapHeads, MapSpec};
//! use cuda_attention::cpu::CpuBackend;
//! use cuda_attention::{AttentionProblem, AttentionShape, Tensor};
//! # fn main() -> cuda_attention::Result<()> {
//! let problem = AttentionProblem::new(AttentionShape::new(1, 100, 2, 16)).with_causal(true);
//! let n = problem.required_len(Tensor::Q)?;
//! let q: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5).collect();
//! // 10 x 10 bins, averaged over the two heads, each bin the mean weight of its 10 x 10 positions.
//! let spec = MapSpec::with_bins(&problem.shape, 10, 10)?
//!     .with_heads(MapHeads::Mean)
//!     .with_reduce(BinReduce::Mean);
//! let map = CpuBackend::new().attention_map(&problem, &spec, &q, &q, &q)?;
//! assert_eq!((map.heads, map.bins_q, map.bins_k), (1, 10, 10));
//! assert_eq!(map.values[9], 0.0); // above the causal diagonal
//! // Every query row's weights sum to 1: the key profile of a head sums to seq_q.
//! let total: f32 = map.key_profile[..100].iter().sum();
//! assert!((total - 100.0).abs() < 1e-3);
//! # Ok(()) }
//! ```

use crate::binding::problem_params;
use crate::dtype::DType;
use crate::error::{AttentionError, Result};
use crate::host_memory::check_budget;
use crate::launch::{kernel_for, KernelLaunch, MAX_GRID_X, MAX_GRID_YZ};
use crate::problem::{checked_product, AttentionProblem, AttentionShape};
use crate::registry::KernelFamily;
use crate::sys::AttentionParams;

/// Whether a map is drawn per query head or averaged over the heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MapHeads {
    /// One map per query head: values `[batch, heads_q, bins_q, bins_k]`.
    #[default]
    PerHead,
    /// One map, the mean over the query heads: values `[batch, 1, bins_q, bins_k]`.
    Mean,
}

/// How the weights of one bin become its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BinReduce {
    /// The sum of the bin's weights (a bin of whole rows over every key then holds its row count).
    #[default]
    Sum,
    /// The mean over the bin's positions (masked ones count as weight 0); edge bins that the sequence
    /// does not fill are averaged over the positions they hold.
    Mean,
}

/// What map to compute: bin sizes in positions (the last bin of an axis may be shorter), per head or
/// mean over heads, sum or mean within bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapSpec {
    /// Query positions per bin (at least 1).
    pub bin_q: usize,
    /// Key positions per bin (at least 1).
    pub bin_k: usize,
    /// Per head or the mean over heads.
    pub heads: MapHeads,
    /// Sum or mean within a bin.
    pub reduce: BinReduce,
}

impl MapSpec {
    /// Bins of `bin_q x bin_k` positions, one map per head, sums.
    pub fn new(bin_q: usize, bin_k: usize) -> Self {
        MapSpec {
            bin_q,
            bin_k,
            heads: MapHeads::PerHead,
            reduce: BinReduce::Sum,
        }
    }

    /// The bin sizes that cut `shape`'s sequences into at most `bins_q x bins_k` bins (fewer when a
    /// sequence is shorter than its bin count): `bin = ceil(seq / bins)`.
    ///
    /// # Errors
    /// [`AttentionError::InvalidMapSpec`] when a bin count is 0.
    pub fn with_bins(shape: &AttentionShape, bins_q: usize, bins_k: usize) -> Result<Self> {
        if bins_q == 0 || bins_k == 0 {
            return Err(AttentionError::InvalidMapSpec {
                detail: format!("{bins_q} x {bins_k} bins: ask for at least one bin per axis"),
            });
        }
        Ok(MapSpec::new(
            shape.seq_q.div_ceil(bins_q).max(1),
            shape.seq_k.div_ceil(bins_k).max(1),
        ))
    }

    /// Sets per head or mean over heads.
    pub fn with_heads(mut self, heads: MapHeads) -> Self {
        self.heads = heads;
        self
    }

    /// Sets sum or mean within bins.
    pub fn with_reduce(mut self, reduce: BinReduce) -> Self {
        self.reduce = reduce;
        self
    }

    /// Checks the spec against `problem` (validated here too) and returns the sizes of the result.
    ///
    /// # Errors
    /// The problem's validation error; [`AttentionError::InvalidMapSpec`] for a bin size of 0 or above
    /// 2^31 - 1, or a ragged batch (maps take dense batches: run each sequence as its own problem);
    /// [`AttentionError::SizeOverflow`] when the map or the profile has more elements than the kernels
    /// index.
    pub fn layout(&self, problem: &AttentionProblem) -> Result<MapLayout> {
        problem.validate()?;
        if problem.ragged_layout().is_some() {
            return Err(AttentionError::InvalidMapSpec {
                detail:
                    "the problem is a ragged batch: attention maps take dense batches (run each \
                         sequence as a problem of batch 1)"
                        .into(),
            });
        }
        for (name, bin) in [("bin_q", self.bin_q), ("bin_k", self.bin_k)] {
            if bin == 0 || bin > i32::MAX as usize {
                return Err(AttentionError::InvalidMapSpec {
                    detail: format!(
                        "{name} is {bin}: give a bin size from 1 to {} positions",
                        i32::MAX
                    ),
                });
            }
        }
        let s = &problem.shape;
        let heads = match self.heads {
            MapHeads::PerHead => s.heads_q,
            MapHeads::Mean => 1,
        };
        let (bins_q, bins_k) = (s.seq_q.div_ceil(self.bin_q), s.seq_k.div_ceil(self.bin_k));
        let values = checked_product("attention map values", &[s.batch, heads, bins_q, bins_k])?;
        let profile = checked_product("attention map key profile", &[s.batch, s.heads_q, s.seq_k])?;
        Ok(MapLayout {
            spec: *self,
            batch: s.batch,
            heads,
            heads_q: s.heads_q,
            seq_k: s.seq_k,
            bins_q,
            bins_k,
            values,
            profile,
        })
    }
}

/// The sizes of a map for one problem ([`MapSpec::layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLayout {
    /// The spec.
    pub spec: MapSpec,
    /// Batch entries.
    pub batch: usize,
    /// Maps per batch entry: heads_q, or 1 for the mean over heads.
    pub heads: usize,
    /// Query heads (the profile has one row per query head).
    pub heads_q: usize,
    /// Keys (the profile's row length).
    pub seq_k: usize,
    /// Bins along the queries: `ceil(seq_q / bin_q)`.
    pub bins_q: usize,
    /// Bins along the keys: `ceil(seq_k / bin_k)`.
    pub bins_k: usize,
    /// Elements of the values, `batch * heads * bins_q * bins_k`.
    pub values: usize,
    /// Elements of the key profile, `batch * heads_q * seq_k`.
    pub profile: usize,
}

impl MapLayout {
    /// Checks that the map and the profile (f32, plus `extra_bytes` of other host buffers) fit the host
    /// memory available.
    ///
    /// # Errors
    /// [`AttentionError::OutOfMemory`] or [`AttentionError::SizeOverflow`].
    pub(crate) fn check_host_budget(&self, extra_bytes: usize) -> Result<()> {
        let bytes = self
            .values
            .checked_add(self.profile)
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(extra_bytes))
            .ok_or_else(|| AttentionError::SizeOverflow {
                what: "attention map buffers",
                detail: format!(
                    "{} values and {} profile entries",
                    self.values, self.profile
                ),
            })?;
        check_budget("attention map buffers", bytes)
    }

    /// The empty result of this layout around `values` and `key_profile`.
    pub(crate) fn output<F>(&self, values: F, key_profile: F) -> AttentionMap<F> {
        AttentionMap {
            batch: self.batch,
            heads: self.heads,
            bins_q: self.bins_q,
            bins_k: self.bins_k,
            bin_q: self.spec.bin_q,
            bin_k: self.spec.bin_k,
            values,
            key_profile,
        }
    }
}

/// An attention map: host vectors ([`HostAttentionMap`]) or device buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMap<F> {
    /// Batch entries.
    pub batch: usize,
    /// Maps per batch entry: heads_q, or 1 for the mean over heads.
    pub heads: usize,
    /// Bins along the queries.
    pub bins_q: usize,
    /// Bins along the keys.
    pub bins_k: usize,
    /// Query positions per bin (the last bin may hold fewer).
    pub bin_q: usize,
    /// Key positions per bin (the last bin may hold fewer).
    pub bin_k: usize,
    /// The pooled weights, `[batch, heads, bins_q, bins_k]` f32, contiguous.
    pub values: F,
    /// The attention each key receives, summed over the queries: `[batch, heads_q, seq_k]` f32,
    /// contiguous (per head even when the map is the mean over heads).
    pub key_profile: F,
}

/// An attention map in host memory.
pub type HostAttentionMap = AttentionMap<Vec<f32>>;

/// The kernel parameters of the map pass over `problem` (validated), without buffer addresses (q, k, lse,
/// the ALiBi slopes, map_values and map_key_profile are the caller's to fill in).
pub fn map_params(problem: &AttentionProblem, layout: &MapLayout) -> AttentionParams {
    AttentionParams {
        map_bin_q: layout.spec.bin_q as i32,
        map_bin_k: layout.spec.bin_k as i32,
        map_bins_q: layout.bins_q as i32,
        map_bins_k: layout.bins_k as i32,
        map_mean_heads: i32::from(layout.spec.heads == MapHeads::Mean),
        map_mean_bins: i32::from(layout.spec.reduce == BinReduce::Mean),
        ..problem_params(problem)
    }
}

/// The launch of the map pass: one block per 32-row query tile of one (batch, head), the grid clamped to
/// CUDA's limits (the kernel loops over the rest).
///
/// # Errors
/// [`AttentionError::KernelUnsupported`] when no map kernel serves `dtype` at this head dim.
pub fn map_launch(shape: &AttentionShape, dtype: DType) -> Result<KernelLaunch> {
    let kernel = kernel_for(KernelFamily::AttentionMap, dtype, shape.head_dim)?;
    Ok(KernelLaunch {
        name: kernel.name,
        grid: (
            (shape.seq_q as u64)
                .div_ceil(u64::from(kernel.tile_rows))
                .clamp(1, MAX_GRID_X) as u32,
            (shape.heads_q as u64).clamp(1, MAX_GRID_YZ) as u32,
            (shape.batch as u64).clamp(1, MAX_GRID_YZ) as u32,
        ),
        block: kernel.block,
        shared_bytes: kernel.shared_bytes_for(shape.head_dim) as u32,
    })
}

//! The kernel registry: every exported kernel with its launch facts (threads, tile, shared memory,
//! alignment), as the kernel source defines them.
//!
//! Each kernel in `kernels/*.cu` is declared with `ATTENTION_KERNEL(name, max_threads, info)`, where
//! `info` is built from the kernel's traits (`kernels/include/kernel_registry.h`). The host build of the
//! same source (the emulator's library, always linked into the crate) keeps the records in a table; this
//! module reads it once. The launcher ([`crate::launch`]), the GPU engine's kernel loading, `attn info`
//! and the ptxas/SASS tests iterate it, so no tile size or shared-memory formula is retyped in Rust.

use std::ffi::CStr;
use std::ops::RangeInclusive;
use std::sync::OnceLock;

use crate::dtype::DType;
use crate::sys;

/// What a kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelFamily {
    /// Naive step 1: `S = scale * Q K^T` into the score buffer.
    NaiveScores,
    /// Naive step 2: `P = softmax(S)` in place, and the logsumexp.
    NaiveSoftmax,
    /// Naive step 3: `O = P V`.
    NaivePv,
    /// The fused forward (tensor cores for f16/bf16, CUDA cores for f32).
    Flash,
    /// The fused forward of a ragged batch (packed or paged K/V).
    FlashVarlen,
    /// New K/V rows into a paged cache through a slot mapping.
    AppendKv,
    /// Split-KV partial states merged into the output.
    Combine,
    /// Two attention states merged into one.
    MergeStates,
    /// Pooled attention weights and the key profile, from a forward pass's logsumexp
    /// ([`crate::attention_map`]).
    AttentionMap,
    /// The fused forward on sm_90a (wgmma, TMA, warp specialisation; `kernels/flash_sm90.cu`), dense
    /// batches: opt-in ([`crate::KernelChoice::FlashSm90`]).
    FlashSm90,
}

/// One registered kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSpec {
    /// Exported name, as in the fatbin.
    pub name: &'static str,
    /// What it computes.
    pub family: KernelFamily,
    /// Element type of q, k, v and out (`None`: touches none of them).
    pub dtype: Option<DType>,
    /// Head dims it serves (an instantiation zero-pads the ones below its own).
    pub head_dims: RangeInclusive<usize>,
    /// Threads per block (x, y, z).
    pub block: (u32, u32, u32),
    /// Query (or score) rows one block owns.
    pub tile_rows: u32,
    /// Key (or score/output) columns per tile.
    pub tile_cols: u32,
    /// Dynamic shared memory: `shared_bytes + shared_bytes_per_head_dim * head_dim`.
    pub shared_bytes: u32,
    /// See `shared_bytes`.
    pub shared_bytes_per_head_dim: u32,
    /// q, k and v strides must be multiples of this many elements.
    pub stride_multiple: usize,
    /// q, k and v base addresses must be multiples of this many bytes.
    pub base_alignment: usize,
}

impl KernelSpec {
    /// Dynamic shared memory of one block for `head_dim`.
    pub fn shared_bytes_for(&self, head_dim: usize) -> u64 {
        u64::from(self.shared_bytes) + u64::from(self.shared_bytes_per_head_dim) * head_dim as u64
    }

    /// Threads per block.
    pub fn threads(&self) -> u32 {
        self.block.0 * self.block.1 * self.block.2
    }

    /// Whether this kernel runs `dtype` at `head_dim`.
    pub fn serves(&self, dtype: DType, head_dim: usize) -> bool {
        self.dtype.is_none_or(|d| d == dtype) && self.head_dims.contains(&head_dim)
    }
}

/// Every registered kernel, sorted by name.
///
/// The table is read once; a registry that the kernel source filled inconsistently (a duplicate name, a
/// record whose block differs from its launch bound, an unknown family or dtype) is a build defect, which
/// [`registry_error`] reports and the tests check; such records are left out here.
pub fn kernels() -> &'static [KernelSpec] {
    static TABLE: OnceLock<Vec<KernelSpec>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // SAFETY: the C accessors return records owned by a table that lives as long as the program,
        // complete once static initialisation is over; indices below the count are valid and names are
        // NUL-terminated string literals.
        unsafe {
            (0..sys::attention_kernel_count())
                .filter_map(|i| sys::attention_kernel_info(i).as_ref())
                .filter_map(spec_of)
                .collect()
        }
    })
}

/// The registry's own consistency error, if the kernel source registered something inconsistent.
pub fn registry_error() -> Option<String> {
    // SAFETY: NULL or a NUL-terminated string owned by the registry for the program's lifetime.
    let own = unsafe {
        let message = sys::attention_kernel_registry_error();
        (!message.is_null()).then(|| CStr::from_ptr(message).to_string_lossy().into_owned())
    };
    // SAFETY: as in `kernels`.
    let count = unsafe { sys::attention_kernel_count() } as usize;
    own.or_else(|| {
        (kernels().len() != count).then(|| {
            format!(
                "{} of {count} registry records have an unknown family or dtype",
                count - kernels().len()
            )
        })
    })
}

/// The registered kernel of `family` that serves `dtype` at `head_dim`: the one with the smallest
/// largest head dim (the tightest instantiation).
pub fn find(family: KernelFamily, dtype: DType, head_dim: usize) -> Option<&'static KernelSpec> {
    kernels()
        .iter()
        .filter(|k| k.family == family && k.serves(dtype, head_dim))
        .min_by_key(|k| *k.head_dims.end())
}

/// Converts one C record.
fn spec_of(info: &sys::KernelInfo) -> Option<KernelSpec> {
    let family = match info.family as u32 {
        sys::KERNEL_FAMILY_NAIVE_SCORES => KernelFamily::NaiveScores,
        sys::KERNEL_FAMILY_NAIVE_SOFTMAX => KernelFamily::NaiveSoftmax,
        sys::KERNEL_FAMILY_NAIVE_PV => KernelFamily::NaivePv,
        sys::KERNEL_FAMILY_FLASH => KernelFamily::Flash,
        sys::KERNEL_FAMILY_FLASH_VARLEN => KernelFamily::FlashVarlen,
        sys::KERNEL_FAMILY_APPEND_KV => KernelFamily::AppendKv,
        sys::KERNEL_FAMILY_COMBINE => KernelFamily::Combine,
        sys::KERNEL_FAMILY_MERGE_STATES => KernelFamily::MergeStates,
        sys::KERNEL_FAMILY_ATTENTION_MAP => KernelFamily::AttentionMap,
        sys::KERNEL_FAMILY_FLASH_SM90 => KernelFamily::FlashSm90,
        _ => return None,
    };
    let dtype = match info.dtype as u32 {
        sys::KERNEL_DTYPE_NONE => None,
        sys::KERNEL_DTYPE_F32 => Some(DType::F32),
        sys::KERNEL_DTYPE_F16 => Some(DType::F16),
        sys::KERNEL_DTYPE_BF16 => Some(DType::Bf16),
        _ => return None,
    };
    if info.name.is_null() || info.min_head_dim < 1 || info.max_head_dim < info.min_head_dim {
        return None;
    }
    // SAFETY: a NUL-terminated string literal (the kernel's stringised name), alive for the program.
    let name: &'static CStr = unsafe { CStr::from_ptr(info.name) };
    Some(KernelSpec {
        name: name.to_str().ok()?,
        family,
        dtype,
        head_dims: info.min_head_dim as usize..=info.max_head_dim as usize,
        block: (info.block_x, info.block_y, 1),
        tile_rows: info.tile_rows,
        tile_cols: info.tile_cols,
        shared_bytes: info.shared_bytes,
        shared_bytes_per_head_dim: info.shared_bytes_per_head_dim,
        stride_multiple: info.stride_multiple.max(1) as usize,
        base_alignment: info.base_alignment.max(1) as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_consistent_and_complete() {
        assert_eq!(registry_error(), None);
        let names: Vec<&str> = kernels().iter().map(|k| k.name).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        for dtype in DType::ALL {
            for family in [
                KernelFamily::NaiveScores,
                KernelFamily::NaivePv,
                KernelFamily::Flash,
            ] {
                for head_dim in 1..=sys::MAX_HEAD_DIM as usize {
                    let kernel = find(family, dtype, head_dim)
                        .unwrap_or_else(|| panic!("no {family:?} kernel for {dtype} d{head_dim}"));
                    assert!(kernel.head_dims.contains(&head_dim));
                }
            }
        }
        assert!(find(KernelFamily::NaiveSoftmax, DType::F32, 64).is_some());
        let d100 = find(KernelFamily::Flash, DType::Bf16, 100).unwrap();
        assert_eq!(d100.name, "flash_fwd_d128_bf16");
        assert_eq!(d100.head_dims, 97..=128);
        assert_eq!(
            find(KernelFamily::Flash, DType::F32, 100).unwrap().name,
            "flash_fwd_f32"
        );
        assert_eq!(find(KernelFamily::Flash, DType::F16, 257), None);
    }
}

//! `attn bench --decode`: one decode step of a batch of sequences, `seq_q` new queries each (1, or a few
//! for speculative decoding) against a long KV context, with grouped-query attention (32 query heads, 8
//! key/value heads by default), swept over batch size, context length and head dim.
//!
//! Decode reads K and V once and does little arithmetic on them, so it is timed as bandwidth: the bytes
//! of K, V, Q and O one call moves ([`bytes`]) over the median time, and that as a fraction of a memory
//! copy measured in the same run ([`crate::cli::bench::results::CopyBandwidth`]). A flash kernel is timed
//! twice per shape: on the decode path, split-KV and GQA packing as the plan picks them
//! ([`SplitKv::Auto`]), and with one split and no packing ([`SplitKv::Off`], the prefill kernel as it is);
//! the CPU backend once.
//!
//! Storage ([`DecodeInputs`]): K and V of the largest shape reach tens of GiB (batch 64 x 128k keys x 8
//! heads x 128 x bf16 is 16 GiB each), too much to draw at random on the host, to keep several input
//! sets of, or to hold twice. So K and V are one copy each, `kv_len` elements that repeat a random
//! pattern of `pattern_len` elements (at most [`PATTERN_ELEMENTS`]): the GPU fills its buffers by copying
//! the uploaded pattern, the host kernels get the pattern tiled on the host, and the sampled-row check
//! reads element `i` as `pattern[i % pattern_len]`. Only q rotates between input sets; every timed run
//! finds K and V cold after the L2 flush (with `--no-flush`, warm when they fit in the L2).

use super::results::SplitKv;
use crate::cli::inputs::{uniform, Aligned};
use crate::{AttentionError, ForwardOptions, GqaPacking, Result, Splits};

/// Most queries per sequence of a decode step (`--seq-q`): speculative decoding drafts a few.
pub const MAX_SEQ_Q: usize = 16;

/// Query heads of the decode sweep unless `--heads` says otherwise (a Llama-3-8B-like layer).
pub const DEFAULT_HEADS_Q: usize = 32;

/// Key/value heads of the decode sweep unless `--heads-kv` says otherwise (GQA groups of 4).
pub const DEFAULT_HEADS_KV: usize = 8;

/// Longest random pattern K and V repeat (elements; 8 MiB of bf16): drawn on the host in a fraction of
/// a second, and much longer than a key tile, so that neighbouring tiles hold different keys.
pub const PATTERN_ELEMENTS: usize = 1 << 22;

/// The sizes a decode sweep covers unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeDefaults {
    pub batches: &'static [usize],
    pub contexts: &'static [usize],
    pub head_dims: &'static [usize],
}

/// On a GPU: batch 1 to 64, context 1k to 128k, head dims 64 and 128 (the largest shape holds 16 GiB of K
/// and as much of V at head dim 128). benches/torch_sdpa.py --decode has the same (a test holds them
/// together).
pub const GPU_DECODE: DecodeDefaults = DecodeDefaults {
    batches: &[1, 4, 16, 64],
    contexts: &[1024, 4096, 16384, 32768, 131072],
    head_dims: &[64, 128],
};

/// `--decode --quick` on a GPU (and in benches/torch_sdpa.py --decode --quick).
pub const GPU_DECODE_QUICK: DecodeDefaults = DecodeDefaults {
    batches: &[1, 16],
    contexts: &[1024, 8192],
    head_dims: &[128],
};

/// On the CPU backend: under a minute on 2 cores, 1 GiB of K and V at most.
pub const CPU_DECODE: DecodeDefaults = DecodeDefaults {
    batches: &[1, 4, 16],
    contexts: &[1024, 4096, 16384],
    head_dims: &[64, 128],
};

/// `--decode --quick` on the CPU backend: the GPU's quick sweep, seconds.
pub const CPU_DECODE_QUICK: DecodeDefaults = GPU_DECODE_QUICK;

/// The decode sweep's settings (`--decode`, `--batches`, `--contexts`, `--heads-kv`, `--seq-q`); head
/// dims, dtypes, masks and query heads come from the sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decode {
    pub batches: Vec<usize>,
    /// Keys each sequence attends to (seq_k).
    pub contexts: Vec<usize>,
    pub heads_kv: usize,
    /// Queries per sequence.
    pub seq_q: usize,
}

/// What makes a sweep case a decode step: its keys, its key/value heads and, for a flash kernel, its
/// split-KV choice (set per kernel by [`crate::cli::bench::sweep::Case::variants`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeCase {
    pub context: usize,
    pub heads_kv: usize,
    /// `None` until a kernel with a split choice runs the case, and for kernels without one.
    pub split: Option<SplitKv>,
}

/// The forward options of a split choice: the decode path as the plan picks it (`Splits::Auto`,
/// `GqaPacking::Auto`), the prefill kernel as it is (`Splits::Fixed(1)`, `GqaPacking::Off`), or the
/// default.
pub fn options(split: Option<SplitKv>) -> ForwardOptions {
    let options = ForwardOptions::default();
    match split {
        Some(SplitKv::Auto) => options.with_splits(Splits::Auto),
        Some(SplitKv::Off) => options
            .with_splits(Splits::Fixed(1))
            .with_gqa_packing(GqaPacking::Off),
        None => options,
    }
}

/// Bytes one decode call moves, each tensor counted once: K and V `batch * context * heads_kv *
/// head_dim` elements each, Q and O `batch * seq_q * heads_q * head_dim` each, times the element size.
pub fn bytes(
    [batch, seq_q, context, heads_q, heads_kv, head_dim]: [usize; 6],
    element_bytes: usize,
) -> u64 {
    let kv = 2 * batch as u64 * context as u64 * heads_kv as u64;
    let qo = 2 * batch as u64 * seq_q as u64 * heads_q as u64;
    (kv + qo) * head_dim as u64 * element_bytes as u64
}

/// The lengths (in elements) of the storage every decode case of one dtype is sliced from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storage {
    /// The largest q (and out).
    pub q_len: usize,
    /// The largest k (and v).
    pub kv_len: usize,
    /// The length of the pattern K and V repeat: `kv_len`, at most [`PATTERN_ELEMENTS`].
    pub pattern_len: usize,
}

impl Storage {
    /// The storage of cases whose q and k lengths are `lens` (`(q_len, kv_len)` each).
    pub fn of(lens: impl IntoIterator<Item = (usize, usize)>) -> Storage {
        let (q_len, kv_len) = lens
            .into_iter()
            .fold((0, 0), |(q, kv), (a, b)| (q.max(a), kv.max(b)));
        Storage {
            q_len,
            kv_len,
            pattern_len: kv_len.min(PATTERN_ELEMENTS),
        }
    }

    /// Bytes a GPU sweep holds on the device: `input_sets` q, one output, K and V. `None` on overflow.
    pub fn device_bytes(&self, input_sets: usize, element_bytes: usize) -> Option<usize> {
        let q = input_sets.checked_add(1)?.checked_mul(self.q_len)?;
        q.checked_add(self.kv_len.checked_mul(2)?)?
            .checked_mul(element_bytes)
    }

    /// Bytes the sweep holds on the host: `input_sets` q, the K and V patterns, an output and its NaN
    /// poison, and, for host kernels, K and V tiled whole. `None` on overflow.
    pub fn host_bytes(
        &self,
        input_sets: usize,
        element_bytes: usize,
        host_kernels: bool,
    ) -> Option<usize> {
        let q = input_sets.checked_add(2)?.checked_mul(self.q_len)?;
        let kv = if host_kernels {
            self.kv_len
        } else {
            self.pattern_len
        };
        q.checked_add(kv.checked_mul(2)?)?
            .checked_mul(element_bytes)
    }
}

/// The inputs of a decode sweep of one dtype on the host: q per input set, and the patterns K and V
/// repeat.
pub struct DecodeInputs<T> {
    pub storage: Storage,
    /// `input_sets` q of `storage.q_len` elements, uniform in [-1, 1), each drawn with its own seed.
    pub q_sets: Vec<Aligned<T>>,
    /// `storage.pattern_len` elements each, uniform in [-1, 1).
    pub k_pattern: Aligned<T>,
    pub v_pattern: Aligned<T>,
}

impl<T: crate::Element> DecodeInputs<T> {
    /// Draws the inputs (deterministic).
    ///
    /// # Errors
    /// [`AttentionError::OutOfMemory`] or [`AttentionError::SizeOverflow`] (host).
    pub fn new(storage: Storage, input_sets: usize) -> Result<Self> {
        let q_sets = (0..input_sets.max(1))
            .map(|set| uniform("q", storage.q_len, 2024 + 3 * set as u64))
            .collect::<Result<Vec<_>>>()?;
        Ok(DecodeInputs {
            storage,
            q_sets,
            k_pattern: uniform("k pattern", storage.pattern_len, 7001)?,
            v_pattern: uniform("v pattern", storage.pattern_len, 7002)?,
        })
    }
}

/// `len` elements repeating `pattern` (element `i` is `pattern[i % pattern.len()]`), on the host.
///
/// # Errors
/// [`AttentionError::OutOfMemory`] or [`AttentionError::SizeOverflow`] naming `what`, and
/// [`AttentionError::InvalidArgument`] for an empty pattern with `len > 0`.
pub fn tile<T: crate::Element>(
    what: &'static str,
    pattern: &[T],
    len: usize,
) -> Result<Aligned<T>> {
    if pattern.is_empty() && len > 0 {
        return Err(AttentionError::InvalidArgument(format!(
            "{what}: an empty pattern cannot fill {len} elements"
        )));
    }
    let mut tiled = Aligned::filled(what, len, T::default())?;
    for chunk in tiled.chunks_mut(pattern.len().max(1)) {
        chunk.copy_from_slice(&pattern[..chunk.len()]);
    }
    Ok(tiled)
}

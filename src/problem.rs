//! What to compute: shapes, strided layouts, scale and mask, validated once for every backend.

use std::sync::Arc;

use crate::error::{AttentionError, Result};
use crate::sparse::BlockMask;

/// Largest head dimension any kernel accepts (mirrors `MAX_HEAD_DIM` in the C header).
pub const MAX_HEAD_DIM: usize = crate::sys::MAX_HEAD_DIM as usize;

/// The sizes of one attention call.
///
/// q and out are `[batch, seq_q, heads_q, head_dim]`, k and v `[batch, seq_k, heads_kv, head_dim]`
/// (logical order; the memory order is given by [`Strides`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttentionShape {
    /// Independent sequences.
    pub batch: usize,
    /// Query rows per sequence.
    pub seq_q: usize,
    /// Key/value rows per sequence (0 is allowed: every output row is then 0).
    pub seq_k: usize,
    /// Query heads.
    pub heads_q: usize,
    /// Key/value heads; heads_q must be a multiple (GQA/MQA).
    pub heads_kv: usize,
    /// Elements per head, 1 to [`MAX_HEAD_DIM`].
    pub head_dim: usize,
}

impl AttentionShape {
    /// Multi-head attention with seq_q = seq_k = `seq` and heads_q = heads_kv = `heads`.
    pub fn new(batch: usize, seq: usize, heads: usize, head_dim: usize) -> Self {
        AttentionShape {
            batch,
            seq_q: seq,
            seq_k: seq,
            heads_q: heads,
            heads_kv: heads,
            head_dim,
        }
    }

    /// Same shape with a different key/value sequence length.
    pub fn with_seq_k(self, seq_k: usize) -> Self {
        AttentionShape { seq_k, ..self }
    }

    /// Same shape with a different number of key/value heads (GQA/MQA).
    pub fn with_heads_kv(self, heads_kv: usize) -> Self {
        AttentionShape { heads_kv, ..self }
    }

    /// Elements of one `[batch, heads_q, seq_q, seq_k]` score matrix.
    pub fn score_elements(&self) -> Result<usize> {
        checked_product(
            "score matrix batch * heads_q * seq_q * seq_k",
            &[self.batch, self.heads_q, self.seq_q, self.seq_k],
        )
    }

    /// Elements of the `[batch, heads_q, seq_q]` logsumexp.
    pub fn lse_elements(&self) -> Result<usize> {
        checked_product(
            "logsumexp batch * heads_q * seq_q",
            &[self.batch, self.heads_q, self.seq_q],
        )
    }

    /// Floating-point operations of one forward pass: 4 * b * h * sq * sk * d, halved when causal.
    pub fn flops(&self, causal: bool) -> f64 {
        let full = 4.0
            * self.batch as f64
            * self.heads_q as f64
            * self.seq_q as f64
            * self.seq_k as f64
            * self.head_dim as f64;
        if causal {
            full / 2.0
        } else {
            full
        }
    }
}

/// Memory order of a 4-d tensor, in elements. The head_dim stride is always 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Strides {
    /// Step between batches.
    pub batch: usize,
    /// Step between sequence positions.
    pub seq: usize,
    /// Step between heads.
    pub head: usize,
}

impl Strides {
    /// Contiguous `[batch, seq, heads, head_dim]`.
    pub fn bshd(seq: usize, heads: usize, head_dim: usize) -> Self {
        Strides {
            batch: seq * heads * head_dim,
            seq: heads * head_dim,
            head: head_dim,
        }
    }

    /// Contiguous `[batch, heads, seq, head_dim]`.
    pub fn bhsd(seq: usize, heads: usize, head_dim: usize) -> Self {
        Strides {
            batch: heads * seq * head_dim,
            seq: head_dim,
            head: seq * head_dim,
        }
    }

    /// Offset of element (b, s, h, d).
    #[inline]
    pub fn offset(&self, b: usize, s: usize, h: usize, d: usize) -> usize {
        b * self.batch + s * self.seq + h * self.head + d
    }
}

/// Contiguous memory order of all four tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[batch, seq, heads, head_dim]` (the default; PyTorch's SDPA takes `[b, h, s, d]`).
    Bshd,
    /// `[batch, heads, seq, head_dim]`.
    Bhsd,
}

impl Layout {
    fn strides(self, seq: usize, heads: usize, head_dim: usize) -> Strides {
        match self {
            Layout::Bshd => Strides::bshd(seq, heads, head_dim),
            Layout::Bhsd => Strides::bhsd(seq, heads, head_dim),
        }
    }
}

/// The four strided tensors of a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tensor {
    /// Queries `[batch, seq_q, heads_q, head_dim]`.
    Q,
    /// Keys `[batch, seq_k, heads_kv, head_dim]`.
    K,
    /// Values `[batch, seq_k, heads_kv, head_dim]`.
    V,
    /// Output `[batch, seq_q, heads_q, head_dim]`.
    Out,
}

impl Tensor {
    /// All four, in argument order.
    pub const ALL: [Tensor; 4] = [Tensor::Q, Tensor::K, Tensor::V, Tensor::Out];

    /// Lower-case name, as in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Tensor::Q => "q",
            Tensor::K => "k",
            Tensor::V => "v",
            Tensor::Out => "out",
        }
    }
}

/// One attention problem: shape, layouts, scale and mask. Build it, then every backend validates it the
/// same way with [`AttentionProblem::validate`].
///
/// ```
/// use cuda_attention::{AttentionProblem, AttentionShape, Layout};
/// let problem = AttentionProblem::new(AttentionShape::new(2, 128, 8, 64))
///     .with_layout(Layout::Bhsd)
///     .with_causal(true);
/// assert!(problem.validate().is_ok());
/// assert_eq!(problem.scale(), 0.125);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionProblem {
    /// Sizes.
    pub shape: AttentionShape,
    /// Strides of q.
    pub q_strides: Strides,
    /// Strides of k.
    pub k_strides: Strides,
    /// Strides of v.
    pub v_strides: Strides,
    /// Strides of out.
    pub out_strides: Strides,
    /// Softmax scale; `None` means 1/sqrt(head_dim).
    pub scale: Option<f32>,
    /// Causal mask aligned bottom-right: query i sees key j iff j <= i + seq_k - seq_q.
    pub causal: bool,
    /// Sliding window around the bottom-right-aligned diagonal `c = i + seq_k - seq_q`: query i sees keys
    /// `c - left <= j <= c + right`; `None` leaves that side unbounded. Combines with `causal`.
    pub window: Window,
    /// Soft cap on the scaled scores: `s = softcap * tanh(s / softcap)` (Gemma 2, Grok); `None`: off.
    pub softcap: Option<f32>,
    /// ALiBi: per query head slopes `m_h`, `[heads_q]`; the score of (i, j) gets `-m_h * |c - j|` added
    /// after the soft cap.
    pub alibi_slopes: Option<Arc<[f32]>>,
    /// Attention sinks (gpt-oss): per query head an f32 logit `s_h`, `[heads_q]`, that joins every row's
    /// softmax denominator and contributes no value: `out = sum_j e^(x_j - m) v_j / (sum_j e^(x_j - m) +
    /// e^(s_h - m))` with `m = max(s_h, max_j x_j)`, and the logsumexp includes it. In natural-log units
    /// of the scaled scores: not scaled, not soft-capped, no ALiBi. A row that sees no key is 0 with
    /// lse = `s_h`.
    pub sinks: Option<Arc<[f32]>>,
    /// Block-sparse mask ([`BlockMask`]): key j is visible to query row i only when block `j / block_k` is
    /// listed for block `i / block_q` (and the element-level masks keep it); i and j count from each
    /// sequence's first query and key. Covers at least `seq_q x seq_k` (a ragged batch's bounds); shared by
    /// every batch entry and head.
    pub block_mask: Option<Arc<BlockMask>>,
    /// Dense or ragged (varlen) batch; see [`Batching`].
    pub batching: Batching,
}

/// How the sequences of a batch are laid out.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Batching {
    /// Every sequence has `shape.seq_q` queries and `shape.seq_k` keys in `[batch, seq, heads, d]`
    /// tensors.
    #[default]
    Dense,
    /// Sequences of their own lengths, read from device metadata by the kernels (see [`Ragged`]).
    Ragged(Ragged),
}

/// A ragged (varlen) batch. The problem is the host's upper bounds, fixed at plan time: `shape.batch`
/// sequences (the metadata has that many entries; pad with empty sequences), each with at most
/// `shape.seq_q` queries and `shape.seq_k` keys. The lengths themselves live in i32 device buffers passed
/// with the call, so one plan serves every step of a server (and a captured CUDA graph):
///
/// - `cu_seqlens_q` `[batch + 1]`: sequence b owns rows `cu_seqlens_q[b]..cu_seqlens_q[b + 1]` of q and
///   out, packed `[total_q, heads_q, head_dim]` (the `seq` and `head` strides apply; the batch stride is
///   unused), and the same columns of the logsumexp `[heads_q, total_q]` (natural log, as FlashAttention's
///   varlen functions).
/// - keys: see [`KeyStorage`]; `seqused_k` `[batch]` (when [`Ragged::seqused_k`] is set) says how many keys
///   of each sequence are valid.
///
/// Masks apply per sequence: the causal diagonal is aligned bottom-right per sequence (chunked prefill:
/// seq_q < seq_k), as are the window and ALiBi. Sequences of length 0 are legal. Lengths beyond the bounds
/// are clamped by the kernels; [`crate::validate_metadata`] names the first bad entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ragged {
    /// Rows of the q and out buffers (and columns of the logsumexp): at least `cu_seqlens_q[batch]`.
    pub total_q: usize,
    /// Where the keys and values live.
    pub keys: KeyStorage,
    /// Whether a `seqused_k` buffer gives each sequence's key count (required for a paged cache).
    pub seqused_k: bool,
}

/// Where a ragged batch's keys and values live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStorage {
    /// k and v packed `[total_k, heads_kv, head_dim]`; sequence b owns rows from `cu_seqlens_k[b]` (an i32
    /// `[batch + 1]` buffer): `cu_seqlens_k[b + 1] - cu_seqlens_k[b]` keys, or `seqused_k[b]` when given.
    Packed {
        /// Rows of the k and v buffers.
        total_k: usize,
    },
    /// A paged KV cache (see [`Paging`]); the key count of each sequence comes from `seqused_k`.
    Paged(Paging),
}

/// A paged KV cache: k and v hold `num_pages` pages of `page_size` tokens. The problem's `k_strides` and
/// `v_strides` address them: `batch` is the stride between pages, `seq` between tokens of a page, `head`
/// between heads (so NHD `[pages, page_size, heads_kv, d]`, HND `[pages, heads_kv, page_size, d]`, or a
/// cache that interleaves layers or K and V in one allocation all work without copies). The i32 block
/// table `[batch, pages_per_seq]` (row stride `block_table_stride`) maps sequence b's key n to row
/// `n % page_size` of page `block_table[b][n / page_size]`. Pages may be shared between sequences. Slots
/// past a sequence's `seqused_k` may hold anything, NaN included: they are never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Paging {
    /// Pages in the cache.
    pub num_pages: usize,
    /// Tokens per page (any size >= 1; multiples of the flash key tile copy whole tiles at a time).
    pub page_size: usize,
    /// Block-table entries per sequence; `pages_per_seq * page_size` must cover `shape.seq_k`.
    pub pages_per_seq: usize,
    /// Elements between block-table rows (at least `pages_per_seq`).
    pub block_table_stride: usize,
}

impl Paging {
    /// `num_pages` pages of `page_size` tokens, with a contiguous block table covering `max_seq_k` keys.
    pub fn new(num_pages: usize, page_size: usize, max_seq_k: usize) -> Self {
        let pages_per_seq = max_seq_k.div_ceil(page_size.max(1)).max(1);
        Paging {
            num_pages,
            page_size,
            pages_per_seq,
            block_table_stride: pages_per_seq,
        }
    }

    /// Strides of the NHD layout `[pages, page_size, heads, d]`.
    pub fn nhd(&self, heads: usize, head_dim: usize) -> Strides {
        Strides::bshd(self.page_size, heads, head_dim)
    }

    /// Strides of the HND layout `[pages, heads, page_size, d]`.
    pub fn hnd(&self, heads: usize, head_dim: usize) -> Strides {
        Strides::bhsd(self.page_size, heads, head_dim)
    }
}

/// Sliding-window bounds around the diagonal (see [`AttentionProblem::window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Window {
    /// Keys at most this far before the diagonal; `None`: unbounded.
    pub left: Option<usize>,
    /// Keys at most this far after the diagonal; `None`: unbounded.
    pub right: Option<usize>,
}

impl AttentionProblem {
    /// Contiguous `[b, s, h, d]` tensors, default scale, no mask.
    pub fn new(shape: AttentionShape) -> Self {
        let s = shape;
        AttentionProblem {
            shape,
            q_strides: Strides::bshd(s.seq_q, s.heads_q, s.head_dim),
            k_strides: Strides::bshd(s.seq_k, s.heads_kv, s.head_dim),
            v_strides: Strides::bshd(s.seq_k, s.heads_kv, s.head_dim),
            out_strides: Strides::bshd(s.seq_q, s.heads_q, s.head_dim),
            scale: None,
            causal: false,
            window: Window::default(),
            softcap: None,
            alibi_slopes: None,
            sinks: None,
            block_mask: None,
            batching: Batching::Dense,
        }
    }

    /// A ragged batch with the bounds of `shape` (see [`Ragged`]): q and out packed contiguous
    /// `[total_q, heads_q, d]`; packed k and v contiguous `[total_k, heads_kv, d]`, a paged cache NHD
    /// (change either with [`AttentionProblem::with_strides`]).
    pub fn ragged(shape: AttentionShape, ragged: Ragged) -> Self {
        let s = shape;
        let mut problem = AttentionProblem::new(shape);
        problem.q_strides = Strides::bshd(ragged.total_q, s.heads_q, s.head_dim);
        problem.out_strides = problem.q_strides;
        problem.k_strides = match ragged.keys {
            KeyStorage::Packed { total_k } => Strides::bshd(total_k, s.heads_kv, s.head_dim),
            KeyStorage::Paged(paging) => paging.nhd(s.heads_kv, s.head_dim),
        };
        problem.v_strides = problem.k_strides;
        problem.batching = Batching::Ragged(ragged);
        problem
    }

    /// The ragged layout, if the batch is ragged.
    pub fn ragged_layout(&self) -> Option<&Ragged> {
        match &self.batching {
            Batching::Dense => None,
            Batching::Ragged(ragged) => Some(ragged),
        }
    }

    /// The paging, if the keys live in a paged cache.
    pub fn paging(&self) -> Option<&Paging> {
        match self.ragged_layout()?.keys {
            KeyStorage::Paged(ref paging) => Some(paging),
            KeyStorage::Packed { .. } => None,
        }
    }

    /// Elements of the f32 logsumexp: `[batch, heads_q, seq_q]`, or `[heads_q, total_q]` for a ragged
    /// batch.
    pub fn lse_elements(&self) -> Result<usize> {
        match self.ragged_layout() {
            None => self.shape.lse_elements(),
            Some(ragged) => checked_product(
                "logsumexp heads_q * total_q",
                &[self.shape.heads_q, ragged.total_q],
            ),
        }
    }

    /// Elements of each metadata buffer a ragged batch needs, in the order cu_seqlens_q, cu_seqlens_k,
    /// seqused_k, block_table (`None`: not used; all `None` for a dense batch).
    pub fn metadata_elements(&self) -> Result<[Option<usize>; 4]> {
        let Some(ragged) = self.ragged_layout() else {
            return Ok([None; 4]);
        };
        let batch = self.shape.batch;
        let offsets = batch
            .checked_add(1)
            .ok_or_else(|| AttentionError::SizeOverflow {
                what: "cu_seqlens",
                detail: "batch + 1".into(),
            })?;
        let (cu_k, table) = match ragged.keys {
            KeyStorage::Packed { .. } => (Some(offsets), None),
            KeyStorage::Paged(paging) => {
                let rows = checked_product(
                    "block table",
                    &[batch.saturating_sub(1), paging.block_table_stride],
                )?;
                let table = rows.checked_add(paging.pages_per_seq).ok_or_else(|| {
                    AttentionError::SizeOverflow {
                        what: "block table",
                        detail: "rows * stride + pages_per_seq".into(),
                    }
                })?;
                (None, Some(table))
            }
        };
        Ok([
            Some(offsets),
            cu_k,
            ragged.seqused_k.then_some(batch),
            table,
        ])
    }

    /// All four tensors contiguous in `layout`.
    pub fn with_layout(mut self, layout: Layout) -> Self {
        let s = self.shape;
        self.q_strides = layout.strides(s.seq_q, s.heads_q, s.head_dim);
        self.k_strides = layout.strides(s.seq_k, s.heads_kv, s.head_dim);
        self.v_strides = layout.strides(s.seq_k, s.heads_kv, s.head_dim);
        self.out_strides = layout.strides(s.seq_q, s.heads_q, s.head_dim);
        self
    }

    /// Explicit strides for q, k, v and out.
    pub fn with_strides(mut self, q: Strides, k: Strides, v: Strides, out: Strides) -> Self {
        self.q_strides = q;
        self.k_strides = k;
        self.v_strides = v;
        self.out_strides = out;
        self
    }

    /// Sets the softmax scale (default 1/sqrt(head_dim)).
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Turns the bottom-right-aligned causal mask on or off.
    pub fn with_causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// Sets the sliding window (`None` on a side: unbounded).
    pub fn with_window(mut self, left: Option<usize>, right: Option<usize>) -> Self {
        self.window = Window { left, right };
        self
    }

    /// Sets the soft cap on the scaled scores.
    pub fn with_softcap(mut self, softcap: f32) -> Self {
        self.softcap = Some(softcap);
        self
    }

    /// Sets ALiBi slopes, one per query head.
    pub fn with_alibi_slopes(mut self, slopes: impl Into<Arc<[f32]>>) -> Self {
        self.alibi_slopes = Some(slopes.into());
        self
    }

    /// Sets attention sinks, one f32 logit per query head (see [`AttentionProblem::sinks`]).
    pub fn with_sinks(mut self, sinks: impl Into<Arc<[f32]>>) -> Self {
        self.sinks = Some(sinks.into());
        self
    }

    /// A block-sparse mask (see [`AttentionProblem::block_mask`]).
    pub fn with_block_mask(mut self, mask: impl Into<Arc<BlockMask>>) -> Self {
        self.block_mask = Some(mask.into());
        self
    }

    /// The softmax scale in effect.
    pub fn scale(&self) -> f32 {
        self.scale
            .unwrap_or_else(|| 1.0 / (self.shape.head_dim.max(1) as f32).sqrt())
    }

    /// Whether query row `i` sees key `j` under the causal mask, the window and the block mask.
    #[inline]
    pub fn visible(&self, i: usize, j: usize) -> bool {
        let (begin, end) = self.key_range(i);
        begin <= j && j < end && self.block_allows(i, j)
    }

    /// Whether the block mask (if any) lists the block of (query `i`, key `j`).
    #[inline]
    pub fn block_allows(&self, i: usize, j: usize) -> bool {
        self.block_mask
            .as_ref()
            .is_none_or(|mask| mask.allows(i, j))
    }

    /// How many keys query row `i` sees ([`Self::visible`]): its key range, less the keys of the blocks
    /// a block mask does not list; one pass over the row's block list, not over the keys.
    pub fn visible_keys(&self, i: usize) -> usize {
        let (begin, end) = self.key_range(i);
        if begin >= end {
            return 0;
        }
        let Some(mask) = &self.block_mask else {
            return end - begin;
        };
        let block = i / mask.block_q();
        if block >= mask.row_blocks() {
            return 0;
        }
        mask.row(block)
            .iter()
            .map(|&c| {
                let first = c as usize * mask.block_k();
                let last = first + mask.block_k();
                last.min(end).saturating_sub(first.max(begin))
            })
            .sum()
    }

    /// The keys the element-level masks (causal, window) keep for query row `i`: `begin..end` (empty when
    /// `begin >= end`), a contiguous range; a block mask may drop keys inside it ([`Self::visible`]).
    pub fn key_range(&self, i: usize) -> (usize, usize) {
        // The diagonal c = i + seq_k - seq_q, in i64 because it is negative when seq_q > seq_k.
        let diagonal = i as i64 + self.shape.seq_k as i64 - self.shape.seq_q as i64;
        let mut end = self.shape.seq_k as i64;
        if self.causal {
            end = end.min(diagonal + 1);
        }
        if let Some(right) = self.window.right {
            end = end.min(diagonal.saturating_add(right as i64).saturating_add(1));
        }
        let begin = match self.window.left {
            Some(left) => diagonal.saturating_sub(left as i64).max(0),
            None => 0,
        };
        (begin as usize, end.max(0) as usize)
    }

    /// Applies the soft cap and the ALiBi bias to the scaled score of query `i`, key `j`, query head `h`.
    #[inline]
    pub fn adjust_score(&self, h: usize, i: usize, j: usize, score: f64) -> f64 {
        let mut s = score;
        if let Some(cap) = self.softcap {
            let cap = f64::from(cap);
            s = cap * (s / cap).tanh();
        }
        if let Some(slopes) = &self.alibi_slopes {
            let diagonal = i as i64 + self.shape.seq_k as i64 - self.shape.seq_q as i64;
            s -= f64::from(slopes[h]) * (diagonal - j as i64).unsigned_abs() as f64;
        }
        s
    }

    /// Whether scores need [`AttentionProblem::adjust_score`] at all.
    pub fn adjusts_scores(&self) -> bool {
        self.softcap.is_some() || self.alibi_slopes.is_some()
    }

    /// Query heads per key/value head.
    pub fn heads_ratio(&self) -> usize {
        self.shape.heads_q / self.shape.heads_kv.max(1)
    }

    /// Checks sizes, head dim, head grouping, scale, strides and that every offset fits the kernels'
    /// integer types.
    ///
    /// # Errors
    /// The specific [`AttentionError`] for the first problem found.
    pub fn validate(&self) -> Result<()> {
        let s = &self.shape;
        for (name, value) in [
            ("batch", s.batch),
            ("seq_q", s.seq_q),
            ("heads_q", s.heads_q),
            ("heads_kv", s.heads_kv),
            ("head_dim", s.head_dim),
        ] {
            if value == 0 {
                return Err(AttentionError::EmptyDimension { name });
            }
        }
        if s.head_dim > MAX_HEAD_DIM {
            return Err(AttentionError::HeadDimUnsupported {
                head_dim: s.head_dim,
                max: MAX_HEAD_DIM,
            });
        }
        if s.heads_q % s.heads_kv != 0 {
            return Err(AttentionError::HeadsNotMultiple {
                heads_q: s.heads_q,
                heads_kv: s.heads_kv,
            });
        }
        for (name, value) in [
            ("batch", s.batch),
            ("seq_q", s.seq_q),
            ("seq_k", s.seq_k),
            ("heads_q", s.heads_q),
        ] {
            if value > i32::MAX as usize {
                return Err(AttentionError::SizeOverflow {
                    what: name,
                    detail: format!("{value} > {}", i32::MAX),
                });
            }
        }
        let scale = self.scale();
        if !scale.is_finite() {
            return Err(AttentionError::InvalidScale { scale });
        }
        if let Some(cap) = self.softcap {
            if !(cap.is_finite() && cap > 0.0) {
                return Err(AttentionError::InvalidArgument(format!(
                    "softcap {cap} must be a finite number above 0 (or None for no cap)"
                )));
            }
        }
        if let Some(slopes) = &self.alibi_slopes {
            if slopes.len() != s.heads_q || slopes.iter().any(|m| !m.is_finite()) {
                return Err(AttentionError::InvalidArgument(format!(
                    "ALiBi needs {} finite slopes (one per query head), got {}",
                    s.heads_q,
                    slopes.len()
                )));
            }
        }
        if let Some(sinks) = &self.sinks {
            if sinks.len() != s.heads_q || sinks.iter().any(|m| !m.is_finite()) {
                return Err(AttentionError::InvalidArgument(format!(
                    "sinks need {} finite logits (one per query head), got {}",
                    s.heads_q,
                    sinks.len()
                )));
            }
        }
        if let Some(mask) = &self.block_mask {
            if mask.seq_q() < s.seq_q || mask.seq_k() < s.seq_k {
                return Err(AttentionError::InvalidArgument(format!(
                    "the block mask covers {} x {} (query x key positions) but the problem is {} x {}: build the \
                     mask for at least the problem's seq_q and seq_k (a ragged batch's bounds)",
                    mask.seq_q(),
                    mask.seq_k(),
                    s.seq_q,
                    s.seq_k
                )));
            }
        }
        if let Some(ragged) = self.ragged_layout() {
            self.validate_ragged(ragged)?;
        }
        for (side, bound) in [("left", self.window.left), ("right", self.window.right)] {
            if bound.is_some_and(|b| b > i32::MAX as usize) {
                return Err(AttentionError::SizeOverflow {
                    what: "window",
                    detail: format!(
                        "the {side} bound exceeds {}: use None for unbounded",
                        i32::MAX
                    ),
                });
            }
        }
        // Row indices of scores/lse are 64-bit in the kernels; the totals must still fit.
        checked_product("batch * heads_q * seq_q", &[s.batch, s.heads_q, s.seq_q])?;
        for tensor in Tensor::ALL {
            self.required_len(tensor)?;
        }
        check_no_overlap("out", &self.out_strides, &self.extents(Tensor::Out))?;
        Ok(())
    }

    fn validate_ragged(&self, ragged: &Ragged) -> Result<()> {
        let mut sizes = vec![("total_q", ragged.total_q)];
        match ragged.keys {
            KeyStorage::Packed { total_k } => sizes.push(("total_k", total_k)),
            KeyStorage::Paged(paging) => {
                if paging.page_size == 0 || paging.num_pages == 0 || paging.pages_per_seq == 0 {
                    return Err(AttentionError::InvalidArgument(format!(
                        "a paged cache needs page_size, num_pages and pages_per_seq of at least 1, got {paging:?}"
                    )));
                }
                if paging.block_table_stride < paging.pages_per_seq {
                    return Err(AttentionError::InvalidArgument(format!(
                        "block_table_stride {} is below pages_per_seq {}: block-table rows would overlap",
                        paging.block_table_stride, paging.pages_per_seq
                    )));
                }
                if !ragged.seqused_k {
                    return Err(AttentionError::InvalidArgument(
                        "a paged cache takes each sequence's key count from seqused_k: set Ragged::seqused_k".into(),
                    ));
                }
                let covered = paging.pages_per_seq.saturating_mul(paging.page_size);
                if covered < self.shape.seq_k {
                    return Err(AttentionError::InvalidArgument(format!(
                        "pages_per_seq {} x page_size {} = {covered} keys cannot hold seq_k {}: size the block                          table for the longest sequence",
                        paging.pages_per_seq, paging.page_size, self.shape.seq_k
                    )));
                }
                sizes.extend([
                    ("num_pages", paging.num_pages),
                    ("page_size", paging.page_size),
                    ("pages_per_seq", paging.pages_per_seq),
                    ("block_table_stride", paging.block_table_stride),
                ]);
            }
        }
        for (name, value) in sizes {
            if value > i32::MAX as usize {
                return Err(AttentionError::SizeOverflow {
                    what: name,
                    detail: format!("{value} > {}", i32::MAX),
                });
            }
        }
        self.metadata_elements()?;
        self.lse_elements()?;
        Ok(())
    }

    /// Checks that buffers of these lengths hold q, k, v and out.
    ///
    /// # Errors
    /// [`AttentionError::BufferTooSmall`] naming the first short buffer.
    pub fn check_lengths(&self, q: usize, k: usize, v: usize, out: usize) -> Result<()> {
        for (tensor, len) in [
            (Tensor::Q, q),
            (Tensor::K, k),
            (Tensor::V, v),
            (Tensor::Out, out),
        ] {
            self.check_len(tensor, len)?;
        }
        Ok(())
    }

    /// Checks that a buffer of `len` elements holds `tensor`.
    ///
    /// # Errors
    /// [`AttentionError::BufferTooSmall`], or the [`AttentionError::SizeOverflow`] of
    /// [`AttentionProblem::required_len`].
    pub fn check_len(&self, tensor: Tensor, len: usize) -> Result<()> {
        let needed = self.required_len(tensor)?;
        if len < needed {
            return Err(AttentionError::BufferTooSmall {
                tensor: tensor.name(),
                needed,
                len,
            });
        }
        Ok(())
    }

    /// Strides of a tensor.
    pub fn strides_of(&self, tensor: Tensor) -> &Strides {
        match tensor {
            Tensor::Q => &self.q_strides,
            Tensor::K => &self.k_strides,
            Tensor::V => &self.v_strides,
            Tensor::Out => &self.out_strides,
        }
    }

    /// Extents (batch, seq, heads, head_dim) of a tensor's buffer, in the dimensions its strides address:
    /// a ragged batch's q and out are `[1, total_q, heads_q, d]`, packed k and v `[1, total_k, heads_kv,
    /// d]`, a paged cache `[num_pages, page_size, heads_kv, d]`.
    pub fn extents(&self, tensor: Tensor) -> [usize; 4] {
        let s = &self.shape;
        let kv = matches!(tensor, Tensor::K | Tensor::V);
        match (self.ragged_layout(), kv) {
            (None, true) => [s.batch, s.seq_k, s.heads_kv, s.head_dim],
            (None, false) => [s.batch, s.seq_q, s.heads_q, s.head_dim],
            (Some(ragged), false) => [1, ragged.total_q, s.heads_q, s.head_dim],
            (Some(ragged), true) => match ragged.keys {
                KeyStorage::Packed { total_k } => [1, total_k, s.heads_kv, s.head_dim],
                KeyStorage::Paged(paging) => {
                    [paging.num_pages, paging.page_size, s.heads_kv, s.head_dim]
                }
            },
        }
    }

    /// Elements a buffer must hold: the largest offset plus one (0 for an empty tensor).
    pub fn required_len(&self, tensor: Tensor) -> Result<usize> {
        let st = self.strides_of(tensor);
        let [b, s, h, d] = self.extents(tensor);
        if b == 0 || s == 0 || h == 0 || d == 0 {
            return Ok(0);
        }
        let overflow = || AttentionError::SizeOverflow {
            what: tensor.name(),
            detail: format!(
                "strides {st:?} with extents [{b}, {s}, {h}, {d}] exceed the address space"
            ),
        };
        let mut last = d - 1;
        for (stride, extent) in [(st.batch, b), (st.seq, s), (st.head, h)] {
            let reach = stride.checked_mul(extent - 1).ok_or_else(overflow)?;
            last = last.checked_add(reach).ok_or_else(overflow)?;
        }
        if last >= i64::MAX as usize {
            return Err(overflow());
        }
        Ok(last + 1)
    }
}

/// Product of sizes, or a [`AttentionError::SizeOverflow`] naming `what`.
pub(crate) fn checked_product(what: &'static str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .filter(|&n| n <= i64::MAX as usize)
        .ok_or_else(|| AttentionError::SizeOverflow {
            what,
            detail: format!("product of {factors:?}"),
        })
}

/// An output written by many threads must not map two elements to one address. Sufficient check: with
/// the dimensions of extent > 1 sorted by stride, each stride is at least the span of the ones below it.
fn check_no_overlap(tensor: &'static str, st: &Strides, extents: &[usize; 4]) -> Result<()> {
    let mut dims: Vec<(usize, usize, &str)> = [
        (st.batch, extents[0], "batch"),
        (st.seq, extents[1], "seq"),
        (st.head, extents[2], "head"),
        (1, extents[3], "head_dim"),
    ]
    .into_iter()
    .filter(|&(_, extent, _)| extent > 1)
    .collect();
    dims.sort_by_key(|&(stride, extent, _)| (stride, extent));
    let mut span = 1usize;
    for (stride, extent, name) in dims {
        if stride < span {
            return Err(AttentionError::InvalidStrides {
                tensor,
                detail: format!(
                    "the {name} stride {stride} is smaller than the {span} elements spanned by the dimensions \
                     inside it, so two outputs would share an address: give each output element its own slot"
                ),
            });
        }
        span = stride.saturating_mul(extent);
    }
    Ok(())
}

//! What to compute: shapes, strided layouts, scale and mask, validated once for every backend.

use std::sync::Arc;

use crate::error::{AttentionError, Result};

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
        }
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

    /// The softmax scale in effect.
    pub fn scale(&self) -> f32 {
        self.scale
            .unwrap_or_else(|| 1.0 / (self.shape.head_dim.max(1) as f32).sqrt())
    }

    /// Whether query row `i` sees key `j` under the causal mask and the window.
    #[inline]
    pub fn visible(&self, i: usize, j: usize) -> bool {
        let (begin, end) = self.key_range(i);
        begin <= j && j < end
    }

    /// The keys query row `i` sees: `begin..end` (empty when `begin >= end`). Every mask here keeps a
    /// contiguous range of keys per row.
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

    /// Extents (batch, seq, heads, head_dim) of a tensor.
    pub fn extents(&self, tensor: Tensor) -> [usize; 4] {
        let s = &self.shape;
        match tensor {
            Tensor::K | Tensor::V => [s.batch, s.seq_k, s.heads_kv, s.head_dim],
            Tensor::Q | Tensor::Out => [s.batch, s.seq_q, s.heads_q, s.head_dim],
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

//! Merging attention states: two results of attention over disjoint key sets of the same queries, each
//! its normalised output and its natural-log logsumexp, merged into the result over the union. The
//! building block of shared-prefix (cascade) attention, chunked long-context prefill and, later, context
//! parallelism; the split-KV combine is the same computation (kernels/combine.cu, `merge_row`).
//!
//! With `m = max(lse_a, lse_b)`: `out = (e^(lse_a - m) out_a + e^(lse_b - m) out_b) / (e^(lse_a - m) +
//! e^(lse_b - m))`, `lse = m + ln(e^(lse_a - m) + e^(lse_b - m))`. A state with lse `-inf` (it saw no key)
//! contributes nothing, whatever its output holds; both `-inf`: out 0, lse `-inf`. **Natural log**, as
//! FlashAttention and this crate's `lse` (FlashInfer's is log2: multiply by ln 2 first).

use std::ffi::c_void;

use crate::binding::Region;
use crate::error::{AttentionError, Result};
use crate::problem::checked_product;
use crate::sys::AttentionParams;

/// Where the states live: `rows` rows of `heads` heads of `head_dim`. The outputs (both states and the
/// merged one) are addressed through (row, head) strides in elements (head_dim contiguous); the f32
/// logsumexps are `[heads, rows]`, contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MergeLayout {
    /// Rows (tokens).
    pub rows: usize,
    /// Heads.
    pub heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// (row, head) strides of out_a and out_b.
    pub state_strides: (usize, usize),
    /// (row, head) strides of the merged out.
    pub out_strides: (usize, usize),
}

impl MergeLayout {
    /// Contiguous `[rows, heads, head_dim]` states and output.
    pub fn contiguous(rows: usize, heads: usize, head_dim: usize) -> Self {
        let strides = (heads * head_dim, head_dim);
        MergeLayout {
            rows,
            heads,
            head_dim,
            state_strides: strides,
            out_strides: strides,
        }
    }

    /// Elements a buffer with (row, head) `strides` must hold.
    fn span(&self, strides: (usize, usize)) -> Result<usize> {
        if self.rows == 0 || self.heads == 0 || self.head_dim == 0 {
            return Ok(0);
        }
        let last = checked_product("merge rows", &[self.rows - 1, strides.0])?
            .checked_add(checked_product(
                "merge heads",
                &[self.heads - 1, strides.1],
            )?)
            .and_then(|n| n.checked_add(self.head_dim))
            .ok_or_else(|| AttentionError::SizeOverflow {
                what: "merged states",
                detail: format!("{self:?}"),
            })?;
        Ok(last)
    }
}

/// The buffers of one merge: the two states with their f32 lse, the merged output and, optionally, its
/// lse.
#[derive(Debug)]
pub struct MergeTensors<I, F, O, G> {
    /// Output of state a.
    pub out_a: I,
    /// Natural-log lse of state a, `[heads, rows]`.
    pub lse_a: F,
    /// Output of state b.
    pub out_b: I,
    /// Natural-log lse of state b.
    pub lse_b: F,
    /// The merged output.
    pub out: O,
    /// The merged lse, if wanted.
    pub lse: Option<G>,
}

/// The merge bundle of the host backends.
pub type HostMergeTensors<'a, T> = MergeTensors<&'a [T], &'a [f32], &'a mut [T], &'a mut [f32]>;

impl<T> HostMergeTensors<'_, T> {
    /// The regions of these slices.
    pub fn regions(&self) -> MergeTensors<Region, Region, Region, Region> {
        MergeTensors {
            out_a: Region::of_slice(self.out_a),
            lse_a: Region::of_slice(self.lse_a),
            out_b: Region::of_slice(self.out_b),
            lse_b: Region::of_slice(self.lse_b),
            out: Region::of_slice(self.out),
            lse: self.lse.as_deref().map(Region::of_slice),
        }
    }
}

/// The binding step of a merge, shared by every backend: layout sizes within the kernels' integers,
/// every buffer long enough and element-aligned, the outputs not overlapping any other buffer, no two
/// heads of the output sharing memory. Returns the merge kernel's parameters.
///
/// # Errors
/// [`AttentionError::BufferTooSmall`] naming the first short buffer; [`AttentionError::InvalidArgument`]
/// for misalignment, overlap or output strides that make heads or rows share elements;
/// [`AttentionError::SizeOverflow`].
pub fn bind_merge(
    layout: &MergeLayout,
    regions: &MergeTensors<Region, Region, Region, Region>,
) -> Result<AttentionParams> {
    for (name, value) in [("rows", layout.rows), ("heads", layout.heads)] {
        if value > i32::MAX as usize {
            return Err(AttentionError::SizeOverflow {
                what: name,
                detail: format!("{value} > {}", i32::MAX),
            });
        }
    }
    if layout.head_dim == 0 || layout.head_dim > crate::MAX_HEAD_DIM {
        return Err(AttentionError::HeadDimUnsupported {
            head_dim: layout.head_dim,
            max: crate::MAX_HEAD_DIM,
        });
    }
    let (row, head) = layout.out_strides;
    let heads_disjoint = layout.heads <= 1 || head >= layout.head_dim;
    let rows_disjoint = layout.rows <= 1 || row >= head * (layout.heads - 1) + layout.head_dim;
    if !(heads_disjoint && rows_disjoint) {
        return Err(AttentionError::InvalidArgument(format!(
            "the merged output's strides {:?} make two outputs share an element: give each row and head its own \
             head_dim elements",
            layout.out_strides
        )));
    }
    let lse_len = checked_product("merge lse", &[layout.heads, layout.rows])?;
    let states = layout.span(layout.state_strides)?;
    let out = layout.span(layout.out_strides)?;
    let mut spans = [("", Region::default(), 0usize, false); 6];
    let mut count = 0;
    for (name, region, needed, writable) in [
        ("out_a", Some(regions.out_a), states, false),
        ("out_b", Some(regions.out_b), states, false),
        ("lse_a", Some(regions.lse_a), lse_len, false),
        ("lse_b", Some(regions.lse_b), lse_len, false),
        ("out", Some(regions.out), out, true),
        ("lse", regions.lse, lse_len, true),
    ] {
        let Some(region) = region else { continue };
        if region.len < needed {
            return Err(AttentionError::BufferTooSmall {
                tensor: name,
                needed,
                len: region.len,
            });
        }
        if region.elem_bytes > 1 && region.address % region.elem_bytes as u64 != 0 {
            return Err(AttentionError::InvalidArgument(format!(
                "the {name} buffer at {:#x} is not aligned to its {}-byte elements",
                region.address, region.elem_bytes
            )));
        }
        spans[count] = (name, region, needed, writable);
        count += 1;
    }
    let spans = &spans[..count];
    for (i, &(name_a, a, needed_a, writable_a)) in spans.iter().enumerate() {
        for &(name_b, b, needed_b, writable_b) in &spans[i + 1..] {
            let end = |r: Region, n: usize| r.address.saturating_add((n * r.elem_bytes) as u64);
            let overlap = a.address < end(b, needed_b) && b.address < end(a, needed_a);
            if (writable_a || writable_b) && overlap && needed_a > 0 && needed_b > 0 {
                return Err(AttentionError::InvalidArgument(format!(
                    "the {name_a} and {name_b} buffers overlap: a merged output must not share memory with any other \
                     buffer"
                )));
            }
        }
    }
    Ok(AttentionParams {
        state_a: regions.out_a.address as *const c_void,
        state_b: regions.out_b.address as *const c_void,
        lse_a: regions.lse_a.address as *const f32,
        lse_b: regions.lse_b.address as *const f32,
        out: regions.out.address as *mut c_void,
        lse: regions.lse.map_or(0, |r| r.address) as *mut f32,
        total_q: layout.rows as i32,
        heads_q: layout.heads as i32,
        head_dim: layout.head_dim as i32,
        state_row_stride: layout.state_strides.0 as i64,
        state_head_stride: layout.state_strides.1 as i64,
        out_seq_stride: layout.out_strides.0 as i64,
        out_head_stride: layout.out_strides.1 as i64,
        lse_head_stride: layout.rows as i64,
        num_splits: 1,
        ..AttentionParams::default()
    })
}

/// The merge on the host, in f32 (the CPU backend's; the kernels compute the same).
pub(crate) fn merge_host<T: crate::Element>(
    layout: &MergeLayout,
    tensors: HostMergeTensors<'_, T>,
) {
    let d = layout.head_dim;
    let HostMergeTensors {
        out_a,
        lse_a,
        out_b,
        lse_b,
        out,
        mut lse,
    } = tensors;
    for r in 0..layout.rows {
        for h in 0..layout.heads {
            let at = h * layout.rows + r;
            let (la, lb) = (lse_a[at], lse_b[at]);
            let top = if la.is_nan() || lb.is_nan() {
                f32::NAN
            } else {
                la.max(lb)
            };
            let from = r * layout.state_strides.0 + h * layout.state_strides.1;
            let to = r * layout.out_strides.0 + h * layout.out_strides.1;
            if top == f32::NEG_INFINITY {
                out[to..to + d].fill(T::from_f32(0.0));
                if let Some(lse) = lse.as_deref_mut() {
                    lse[at] = f32::NEG_INFINITY;
                }
                continue;
            }
            let (wa, wb) = ((la - top).exp(), (lb - top).exp());
            let total = wa + wb;
            for x in 0..d {
                let mut acc = 0.0f32;
                if wa != 0.0 || wa.is_nan() {
                    acc += wa * out_a[from + x].to_f32();
                }
                if wb != 0.0 || wb.is_nan() {
                    acc += wb * out_b[from + x].to_f32();
                }
                out[to + x] = T::from_f32(acc / total);
            }
            if let Some(lse) = lse.as_deref_mut() {
                lse[at] = top + total.ln();
            }
        }
    }
}

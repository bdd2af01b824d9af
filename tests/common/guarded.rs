//! Guarded buffers for the emulator value tests: a kernel that reads or writes past a tensor fails an
//! assertion that names the buffer, instead of corrupting the heap (SIGABRT, SIGSEGV) or passing.
//!
//! - Every buffer lives in 16-byte-aligned storage between a head guard and a tail guard, each at least
//!   [`MIN_GUARD_BYTES`] and large enough to take a whole tile of rows written past the tensor's last row
//!   (the registry's largest `tile_rows`), so an overrun of a tile lands in a guard, not in the heap. The
//!   kernel gets the interior; it starts 16-byte aligned (the guards are multiples of 16 bytes).
//! - Outputs (out, lse, weights, workspace) are guarded by [`SENTINEL`] bytes, checked bit for bit after the
//!   launches: a write past either end is reported as `lse: 37 of 512 guard elements after the end
//!   clobbered (+0..=+36 past element 299)`. The elements of out that its strides do not address (row
//!   gaps, head-dim padding, batch gaps) are filled with the sentinel too and must still hold it.
//! - Inputs (q, k, v, ALiBi slopes) are guarded by NaN, so a read past either end shows up as a non-finite
//!   output; their guards and values must be unchanged after the launches.
//! - [`strided_random`] fills the elements of an input that its strides do not address with NaN, so a
//!   kernel that loads them (say, K's columns past head_dim) shows NaN too.
//!
//! [`forward`] is the guarded counterpart of `Emulator::forward`; [`GuardedCall`] holds the buffers of
//! one call for tests that launch by hand.

use std::sync::OnceLock;

use cuda_attention::binding::problem_params;
use cuda_attention::emulator::Emulator;
use cuda_attention::sys::AttentionParams;
use cuda_attention::{
    AttentionProblem, Element, ForwardOptions, HostOutput, HostTensors, Plan, Result, Tensor,
};
use rand::rngs::StdRng;

/// The smallest guard on either side of a buffer.
pub const MIN_GUARD_BYTES: usize = 256;

/// The guard pattern of outputs: the 16-bit word 0x7FE5 repeated (little-endian), a NaN as f16, bf16 and
/// f32 (a kernel that reads it sees NaN) with a payload no kernel writes (they write finite values,
/// infinities and canonical NaNs).
pub const SENTINEL: [u8; 2] = [0xE5, 0x7F];

/// A value of `T` (f32, f16, bf16, u8) made of [`SENTINEL`] bytes.
pub fn sentinel<T: Copy>() -> T {
    let bytes: [u8; 16] = std::array::from_fn(|i| SENTINEL[i % 2]);
    assert!(size_of::<T>() <= bytes.len());
    // SAFETY: the array holds at least size_of::<T>() bytes, and every T used here (plain numbers) is
    // valid for any bit pattern.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// The largest number of query (or score) rows one block of any registered kernel owns, and the largest
/// number of key columns of a tile: what a kernel that ignores the sequence bounds can write past a
/// tensor's last row.
pub fn tile_slack() -> (usize, usize) {
    static SLACK: OnceLock<(usize, usize)> = OnceLock::new();
    *SLACK.get_or_init(|| {
        let kernels = cuda_attention::registry::kernels();
        let rows = kernels.iter().map(|k| k.tile_rows).max().unwrap_or(128);
        let cols = kernels.iter().map(|k| k.tile_cols).max().unwrap_or(128);
        (rows as usize, cols as usize)
    })
}

/// Values in 16-byte-aligned storage between two guards.
pub struct Guarded<T> {
    name: &'static str,
    storage: Vec<u128>,
    /// Elements of the head guard.
    head: usize,
    /// Elements of the interior.
    len: usize,
    /// Elements of the tail guard (at least `head`; the storage's rounding goes to the tail).
    tail: usize,
    /// The guard element's bytes.
    guard: Vec<u8>,
    _marker: std::marker::PhantomData<T>,
}

/// What a check found in one guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Clobbered {
    count: usize,
    /// Distance of the nearest and the farthest clobbered element from the interior (0: adjacent).
    nearest: usize,
    farthest: usize,
}

impl<T: Copy> Guarded<T> {
    /// `values` between guards of `guard` values, each side at least `guard_elements` elements and
    /// [`MIN_GUARD_BYTES`], rounded up to 16 bytes.
    pub fn new(name: &'static str, values: &[T], guard: T, guard_elements: usize) -> Self {
        let size = size_of::<T>();
        assert!(size > 0 && 16 % size == 0, "element size {size}");
        let head_bytes = (guard_elements * size)
            .max(MIN_GUARD_BYTES)
            .next_multiple_of(16);
        let bytes = 2 * head_bytes + size_of_val(values);
        let storage = vec![0u128; bytes.div_ceil(16)];
        let total = storage.len() * 16 / size;
        let head = head_bytes / size;
        let mut buffer = Guarded {
            name,
            storage,
            head,
            len: values.len(),
            tail: total - head - values.len(),
            guard: Vec::new(),
            _marker: std::marker::PhantomData,
        };
        // SAFETY: the storage holds `total` elements of T, 16-byte aligned.
        let all = unsafe {
            std::slice::from_raw_parts_mut(buffer.storage.as_mut_ptr().cast::<T>(), total)
        };
        all.fill(guard);
        all[head..head + values.len()].copy_from_slice(values);
        buffer.guard = buffer.element_bytes(0).to_vec();
        buffer
    }

    /// `len` copies of `fill` between guards (see [`Guarded::new`]).
    pub fn filled(
        name: &'static str,
        len: usize,
        fill: T,
        guard: T,
        guard_elements: usize,
    ) -> Self {
        Guarded::new(name, &vec![fill; len], guard, guard_elements)
    }

    /// The buffer's name in messages.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The buffer the kernel gets.
    pub fn interior(&self) -> &[T] {
        // SAFETY: the interior is `len` initialised elements of T inside the storage.
        unsafe {
            std::slice::from_raw_parts(self.storage.as_ptr().cast::<T>().add(self.head), self.len)
        }
    }

    /// The buffer the kernel gets, writable.
    pub fn interior_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `interior`, borrowed exclusively.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.storage.as_mut_ptr().cast::<T>().add(self.head),
                self.len,
            )
        }
    }

    /// Elements in each guard: (before, after).
    pub fn guard_elements(&self) -> (usize, usize) {
        (self.head, self.tail)
    }

    /// The whole storage, guards included, writable: for tests of the guards themselves.
    pub fn storage_mut(&mut self) -> &mut [T] {
        let total = self.head + self.len + self.tail;
        // SAFETY: the storage holds `total` elements of T.
        unsafe { std::slice::from_raw_parts_mut(self.storage.as_mut_ptr().cast::<T>(), total) }
    }

    fn element_bytes(&self, index: usize) -> &[u8] {
        let size = size_of::<T>();
        // SAFETY: the storage is plain bytes; index is below head + len + tail.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.storage.as_ptr().cast::<u8>(), self.storage.len() * 16)
        };
        &bytes[index * size..(index + 1) * size]
    }

    fn scan(&self, indices: impl Iterator<Item = (usize, usize)>) -> Option<Clobbered> {
        let mut found: Option<Clobbered> = None;
        for (index, distance) in indices {
            if self.element_bytes(index) != self.guard.as_slice() {
                let entry = found.get_or_insert(Clobbered {
                    count: 0,
                    nearest: distance,
                    farthest: distance,
                });
                entry.count += 1;
                entry.nearest = entry.nearest.min(distance);
                entry.farthest = entry.farthest.max(distance);
            }
        }
        found
    }

    /// Empty when both guards hold their pattern; otherwise one line per damaged guard, naming the buffer
    /// and counting the clobbered elements.
    pub fn check(&self) -> Vec<String> {
        let mut faults = Vec::new();
        let before = self.scan((0..self.head).map(|i| (i, self.head - 1 - i)));
        if let Some(c) = before {
            faults.push(format!(
                "{}: {} of {} guard elements before the start clobbered (-{}..=-{} before element 0)",
                self.name,
                c.count,
                self.head,
                c.farthest + 1,
                c.nearest + 1
            ));
        }
        let end = self.head + self.len;
        let after = self.scan((end..end + self.tail).map(|i| (i, i - end)));
        if let Some(c) = after {
            faults.push(format!(
                "{}: {} of {} guard elements after the end clobbered (+{}..=+{} past element {} of {})",
                self.name,
                c.count,
                self.tail,
                c.nearest,
                c.farthest,
                self.len.wrapping_sub(1) as isize,
                self.len
            ));
        }
        faults
    }
}

/// Which elements of a buffer of `problem.required_len(tensor)` the tensor's strides address.
pub fn addressed(problem: &AttentionProblem, tensor: Tensor) -> Vec<bool> {
    let len = problem.required_len(tensor).unwrap();
    let strides = problem.strides_of(tensor);
    let [batch, seq, heads, dim] = problem.extents(tensor);
    let mut mask = vec![false; len];
    for b in 0..batch {
        for s in 0..seq {
            for h in 0..heads {
                let row = strides.offset(b, s, h, 0);
                mask[row..row + dim].fill(true);
            }
        }
    }
    mask
}

/// An input buffer for `tensor` of `problem`: values uniform in `[-magnitude, magnitude)` at the elements
/// its strides address, drawn in memory order (so a layout without gaps gets exactly
/// `common::random(rng, len, magnitude)`), and NaN at every other element (row gaps, head-dim padding,
/// batch gaps), which a kernel must never read.
pub fn strided_random<T: Element>(
    problem: &AttentionProblem,
    tensor: Tensor,
    rng: &mut StdRng,
    magnitude: f32,
) -> Vec<T> {
    let mask = addressed(problem, tensor);
    let mut values = super::random::<T>(rng, mask.iter().filter(|&&m| m).count(), magnitude);
    values.reverse();
    mask.iter()
        .map(|&m| {
            if m {
                values.pop().unwrap()
            } else {
                T::from_f32(f32::NAN)
            }
        })
        .collect()
}

/// The buffers of one call, each guarded: q, k, v (copies of the caller's, NaN guards), out (the
/// sentinel everywhere until the kernels write it), lse and weights (NaN until written) when the plan
/// returns them, the naive workspace (NaN) when it needs one, and the ALiBi slopes when the problem has
/// them (NaN guards).
pub struct GuardedCall<T> {
    problem: AttentionProblem,
    inputs: [Vec<T>; 3],
    pub q: Guarded<T>,
    pub k: Guarded<T>,
    pub v: Guarded<T>,
    pub out: Guarded<T>,
    pub lse: Option<Guarded<f32>>,
    pub weights: Option<Guarded<f32>>,
    pub workspace: Option<Guarded<u8>>,
    pub alibi_slopes: Option<Guarded<f32>>,
    out_fill: T,
}

impl<T: Element> GuardedCall<T> {
    /// The buffers `plan` needs, the inputs copied from `q`, `k` and `v`.
    pub fn new(plan: &Plan, [q, k, v]: [&[T]; 3]) -> Self {
        let problem = plan.problem().clone();
        let shape = problem.shape;
        let (rows, cols) = tile_slack();
        // A tile of rows past the last row (plus a tile of columns) fits the guard, or the buffer itself
        // when it is larger.
        let tensor_guard = |tensor: Tensor, len: usize| {
            len.max(rows * problem.strides_of(tensor).seq + shape.head_dim + cols)
        };
        let nan = T::from_f32(f32::NAN);
        let input = |name, tensor, values: &[T]| {
            Guarded::new(name, values, nan, tensor_guard(tensor, values.len()))
        };
        let out_len = problem.required_len(Tensor::Out).unwrap();
        let score_rows = |len: usize| len.max(rows * shape.seq_k + cols);
        let options = plan.options();
        let lse_len = shape.lse_elements().unwrap();
        let weights_len = shape.score_elements().unwrap();
        let nan_bytes = f32::NAN.to_le_bytes();
        let workspace_bytes = plan.workspace_bytes();
        GuardedCall {
            q: input("q", Tensor::Q, q),
            k: input("k", Tensor::K, k),
            v: input("v", Tensor::V, v),
            out: Guarded::filled(
                "out",
                out_len,
                sentinel(),
                sentinel(),
                tensor_guard(Tensor::Out, out_len),
            ),
            lse: options
                .return_lse
                .then(|| Guarded::filled("lse", lse_len, f32::NAN, sentinel(), lse_len.max(rows))),
            weights: options.return_weights.then(|| {
                Guarded::filled(
                    "weights",
                    weights_len,
                    f32::NAN,
                    sentinel(),
                    score_rows(weights_len),
                )
            }),
            workspace: (workspace_bytes > 0).then(|| {
                let interior: Vec<u8> = (0..workspace_bytes).map(|i| nan_bytes[i % 4]).collect();
                Guarded::new(
                    "workspace",
                    &interior,
                    sentinel(),
                    4 * score_rows(workspace_bytes / 4),
                )
            }),
            alibi_slopes: problem
                .alibi_slopes
                .as_deref()
                .map(|s| Guarded::new("alibi_slopes", s, f32::NAN, s.len())),
            inputs: [q.to_vec(), k.to_vec(), v.to_vec()],
            problem,
            out_fill: sentinel(),
        }
    }

    /// Fills out with `fill` instead of the sentinel (the elements its strides do not address must still
    /// hold it after the launches).
    pub fn with_out_fill(mut self, fill: T) -> Self {
        self.out.interior_mut().fill(fill);
        self.out_fill = fill;
        self
    }

    /// The bundle for `forward_into`: the interiors.
    pub fn tensors(&mut self) -> HostTensors<'_, T> {
        HostTensors {
            q: self.q.interior(),
            k: self.k.interior(),
            v: self.v.interior(),
            out: self.out.interior_mut(),
            lse: self.lse.as_mut().map(Guarded::interior_mut),
            weights: self.weights.as_mut().map(Guarded::interior_mut),
            workspace: self.workspace.as_mut().map(Guarded::interior_mut),
            alibi_slopes: self.alibi_slopes.as_ref().map(Guarded::interior),
            sinks: None,
            cu_seqlens_q: None,
            cu_seqlens_k: None,
            seqused_k: None,
            block_table: None,
            block_row_offsets: None,
            block_col_indices: None,
        }
    }

    /// `problem_params(problem)` with this call's addresses, for launching by hand
    /// (`unsafe Emulator::launch`); the scores go to the weights buffer, else the workspace.
    pub fn params(&mut self, problem: &AttentionProblem) -> AttentionParams {
        let mut_f32 = |g: &mut Option<Guarded<f32>>| {
            g.as_mut()
                .map_or(std::ptr::null_mut(), |g| g.interior_mut().as_mut_ptr())
        };
        let scores = match (&mut self.weights, &mut self.workspace) {
            (Some(w), _) => w.interior_mut().as_mut_ptr(),
            (None, Some(w)) => w.interior_mut().as_mut_ptr().cast(),
            (None, None) => std::ptr::null_mut(),
        };
        AttentionParams {
            q: self.q.interior().as_ptr().cast(),
            k: self.k.interior().as_ptr().cast(),
            v: self.v.interior().as_ptr().cast(),
            out: self.out.interior_mut().as_mut_ptr().cast(),
            lse: mut_f32(&mut self.lse),
            scores,
            alibi_slopes: self
                .alibi_slopes
                .as_ref()
                .map_or(std::ptr::null(), |s| s.interior().as_ptr()),
            ..problem_params(problem)
        }
    }

    /// Every out-of-bounds access the buffers show: a damaged guard (any buffer), an input whose values
    /// changed, an element of out outside the tensor (a stride gap) that no longer holds its fill. One
    /// line each; empty when all is well.
    pub fn faults(&self) -> Vec<String> {
        let mut faults = Vec::new();
        for buffer in [&self.q, &self.k, &self.v, &self.out] {
            faults.extend(buffer.check());
        }
        for buffer in [&self.lse, &self.weights, &self.alibi_slopes]
            .into_iter()
            .flatten()
        {
            faults.extend(buffer.check());
        }
        if let Some(workspace) = &self.workspace {
            faults.extend(workspace.check());
        }
        for (buffer, original) in [&self.q, &self.k, &self.v].iter().zip(&self.inputs) {
            let changed = bits_differ(buffer.interior(), original);
            if changed > 0 {
                faults.push(format!(
                    "{}: {changed} elements of the input were written",
                    buffer.name()
                ));
            }
        }
        let fill = bytes_of(std::slice::from_ref(&self.out_fill));
        let written: Vec<usize> = addressed(&self.problem, Tensor::Out)
            .iter()
            .zip(bytes_of(self.out.interior()).chunks(size_of::<T>()))
            .enumerate()
            .filter(|(_, (&inside, x))| !inside && *x != fill)
            .map(|(i, _)| i)
            .collect();
        if let (Some(first), Some(last)) = (written.first(), written.last()) {
            faults.push(format!(
                "out: {} elements between the strided rows (not part of the tensor) were written, at \
                 offsets {first}..={last}",
                written.len()
            ));
        }
        faults
    }

    /// Panics with every fault, prefixed by `label`, unless there is none.
    pub fn assert_intact(&self, label: &str) {
        let faults = self.faults();
        assert!(
            faults.is_empty(),
            "{label}: out-of-bounds accesses:\n  {}",
            faults.join("\n  ")
        );
    }

    /// The outputs as `Emulator::forward` returns them (out's gap elements 0), after
    /// [`GuardedCall::assert_intact`].
    pub fn finish(self, label: &str) -> HostOutput<T> {
        self.assert_intact(label);
        let mask = addressed(&self.problem, Tensor::Out);
        let out = self
            .out
            .interior()
            .iter()
            .zip(&mask)
            .map(|(&x, &inside)| if inside { x } else { T::default() })
            .collect();
        HostOutput {
            out,
            lse: self.lse.map(|l| l.interior().to_vec()),
            weights: self.weights.map(|w| w.interior().to_vec()),
        }
    }
}

/// The bytes of `values`.
fn bytes_of<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: T is a plain number type without padding; the view borrows `values`.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) }
}

/// Elements of `a` and `b` whose bits differ (a length difference counts each missing element).
fn bits_differ<T: Copy>(a: &[T], b: &[T]) -> usize {
    let size = size_of::<T>();
    bytes_of(a)
        .chunks(size)
        .zip(bytes_of(b).chunks(size))
        .filter(|(x, y)| x != y)
        .count()
        + a.len().abs_diff(b.len())
}

/// `Emulator::forward` on guarded buffers: plans `problem` with `options`, runs it into a
/// [`GuardedCall`], and panics (prefixed by `label`) when any buffer shows an out-of-bounds access;
/// otherwise returns the outputs as `Emulator::forward` would (the same errors too).
pub fn forward<T: Element>(
    emulator: &Emulator,
    problem: &AttentionProblem,
    options: ForwardOptions,
    inputs: [&[T]; 3],
    label: &str,
) -> Result<HostOutput<T>> {
    let plan = emulator.plan::<T>(problem, options)?;
    let mut call = GuardedCall::new(&plan, inputs);
    emulator.forward_into(&plan, call.tensors())?;
    Ok(call.finish(&format!("{label} ({})", plan.kernel())))
}

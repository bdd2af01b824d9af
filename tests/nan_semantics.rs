//! NaN and Inf semantics (README, Semantics, "Non-finite values"): for each case every backend — the
//! f64 reference, the CPU backend, and the naive and flash kernels through the CPU emulator, in f32, f16
//! and bf16 — must give the specific values the README states, row by row:
//!
//! - a row that sees no key: exactly +0 everywhere, lse -inf, weights 0, whatever q, k and v hold;
//! - a row whose own query or a key it sees holds a NaN (or, with q and k positive, an infinity that
//!   makes a score +inf): NaN everywhere, lse NaN, weights NaN at its keys and 0 elsewhere;
//! - a row whose visible scores are all -inf: as a row that sees no key, except in the naive kernel,
//!   which writes it as 0 * V (NaN in a column where V is non-finite at a key it multiplies);
//! - a non-finite value in V at a key the row sees: that value class (NaN, +inf, -inf) in that column;
//! - a non-finite value in V at a key the row does not see: nothing in the reference and the CPU
//!   backend; NaN in that column in the tile kernels exactly when the key lies in a key tile they
//!   multiply for the row's tile of query rows ([`multiplied_keys`]), always fewer than 128 keys away
//!   from the row's visible keys;
//! - everything else matches the f64 reference under the usual tolerance rule (computed on the inputs
//!   before the values were planted).
//!
//! Memory that is not part of a tensor (padding between strided rows, columns past head_dim, keys past
//! seq_k, rows past seq_q) is NaN in every case, and must never reach an output.
//!
//! Every backend is called through one helper each ([`run_reference`], [`run_cpu`], [`run_emulator`]).

mod common;

use std::ops::Range;

use cuda_attention::cpu::{self, compare, reference};
use cuda_attention::emulator::Emulator;
use cuda_attention::{
    AttentionProblem, AttentionShape, DType, Element, ForwardOptions, KernelChoice, KernelKind,
    Splits, Strides,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The backends every case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Reference,
    Cpu,
    Naive,
    Flash,
}

const BACKENDS: [Backend; 4] = [
    Backend::Reference,
    Backend::Cpu,
    Backend::Naive,
    Backend::Flash,
];

/// What a backend returned, as f64: out contiguous `[b, sq, hq, d]`, lse `[b, hq, sq]`, weights
/// `[b, hq, sq, sk]` (naive, CPU backend and reference only).
struct Outcome {
    out: Vec<f64>,
    lse: Vec<f64>,
    weights: Option<Vec<f64>>,
}

/// The output, read through the out strides, as a contiguous f64 tensor.
fn contiguous_out<T: Element>(problem: &AttentionProblem, out: &[T]) -> Vec<f64> {
    let s = problem.shape;
    let mut values = Vec::with_capacity(s.batch * s.seq_q * s.heads_q * s.head_dim);
    for b in 0..s.batch {
        for i in 0..s.seq_q {
            for h in 0..s.heads_q {
                for x in 0..s.head_dim {
                    values.push(out[problem.out_strides.offset(b, i, h, x)].to_f64());
                }
            }
        }
    }
    values
}

fn widen(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&x| f64::from(x)).collect()
}

/// The f64 reference (the one call site).
fn run_reference<T: Element>(problem: &AttentionProblem, inputs: &Inputs<T>) -> Outcome {
    let (q, k, v) = inputs.slices();
    let result = reference::reference(problem, q, k, v).unwrap();
    Outcome {
        out: result.out,
        lse: result.lse,
        weights: Some(result.weights),
    }
}

/// The CPU backend, with lse and weights (the one call site).
fn run_cpu<T: Element>(problem: &AttentionProblem, inputs: &Inputs<T>) -> Outcome {
    let (q, k, v) = inputs.slices();
    let result = cpu::attention(
        problem,
        ForwardOptions::default().with_lse(true).with_weights(true),
        q,
        k,
        v,
    )
    .unwrap();
    Outcome {
        out: contiguous_out(problem, &result.out),
        lse: widen(&result.lse.unwrap()),
        weights: result.weights.as_deref().map(widen),
    }
}

/// The naive or flash kernel (flash: tensor cores for f16/bf16, CUDA cores for f32) through the
/// emulator, with lse, and weights for naive (the one call site).
fn run_emulator<T: Element>(
    kernel: KernelKind,
    problem: &AttentionProblem,
    inputs: &Inputs<T>,
) -> Outcome {
    let (q, k, v) = inputs.slices();
    let (choice, weights) = match kernel {
        KernelKind::Naive => (KernelChoice::Naive, true),
        KernelKind::Flash => (KernelChoice::Flash, false),
        other => panic!("the emulator has no {other} kernel"),
    };
    // The unsplit kernels: their tiles are the README's exact rule (split-KV can only remove a leak).
    let options = ForwardOptions::default()
        .with_kernel(choice)
        .with_lse(true)
        .with_weights(weights)
        .with_splits(Splits::Fixed(1));
    let emulator = Emulator::new();
    let plan = emulator.plan::<T>(problem, options).unwrap();
    assert_eq!(plan.kernel(), kernel, "{}", plan.reason());
    let result = emulator.forward(problem, options, q, k, v).unwrap();
    Outcome {
        out: contiguous_out(problem, &result.out),
        lse: widen(&result.lse.unwrap()),
        weights: result.weights.as_deref().map(widen),
    }
}

fn run<T: Element>(backend: Backend, problem: &AttentionProblem, inputs: &Inputs<T>) -> Outcome {
    match backend {
        Backend::Reference => run_reference(problem, inputs),
        Backend::Cpu => run_cpu(problem, inputs),
        Backend::Naive => run_emulator(KernelKind::Naive, problem, inputs),
        Backend::Flash => run_emulator(KernelKind::Flash, problem, inputs),
    }
}

/// Values in 16-byte-aligned storage (flash loads 16-byte rows with cp.async).
struct Aligned<T> {
    storage: Vec<u128>,
    len: usize,
    _marker: std::marker::PhantomData<T>,
}

impl<T: Element> Aligned<T> {
    fn new(values: &[T]) -> Self {
        let bytes = std::mem::size_of_val(values);
        let mut storage = vec![0u128; bytes.div_ceil(16).max(1)];
        // SAFETY: storage holds at least `bytes` bytes and T is a plain number type.
        unsafe {
            std::ptr::copy_nonoverlapping(
                values.as_ptr() as *const u8,
                storage.as_mut_ptr() as *mut u8,
                bytes,
            )
        };
        Aligned {
            storage,
            len: values.len(),
            _marker: std::marker::PhantomData,
        }
    }

    fn as_slice(&self) -> &[T] {
        // SAFETY: the storage was filled with len values of T and is suitably aligned for T.
        unsafe { std::slice::from_raw_parts(self.storage.as_ptr() as *const T, self.len) }
    }
}

struct Inputs<T> {
    q: Aligned<T>,
    k: Aligned<T>,
    v: Aligned<T>,
}

impl<T: Element> Inputs<T> {
    fn slices(&self) -> (&[T], &[T], &[T]) {
        (self.q.as_slice(), self.k.as_slice(), self.v.as_slice())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tensor {
    Q,
    K,
    V,
}

/// Where a planted value goes: one element `(batch, seq, head, dim)` of the tensor, or all of it.
#[derive(Debug, Clone, Copy)]
enum At {
    Element(usize, usize, usize, usize),
    Everywhere,
}

#[derive(Debug, Clone, Copy)]
struct Plant {
    tensor: Tensor,
    at: At,
    value: f32,
}

fn plant(tensor: Tensor, at: At, value: f32) -> Plant {
    Plant { tensor, at, value }
}

/// What a value planted in q or k does to a row whose scores it reaches (the case says, from the value
/// and the signs of the inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// NaN or +inf score: the whole row NaN, lse NaN.
    NanRow,
    /// Every visible score -inf: 0 and lse -inf, as a row that sees no key.
    EmptyRow,
    /// The row stays finite and matches the reference: a -inf score drops its key, the soft cap bounds
    /// an infinite score.
    Finite,
}

struct Case {
    name: &'static str,
    problem: AttentionProblem,
    plants: Vec<Plant>,
    /// What q and k plants do to the rows they reach.
    effect: Effect,
    /// q and k drawn in [0, 1) instead of [-1, 1), so that the sign of an infinite score is known.
    positive: bool,
    /// Memory of q, k, v allocated past what the strides reach, filled with NaN.
    tail: usize,
}

impl Case {
    fn new(name: &'static str, problem: AttentionProblem, plants: Vec<Plant>) -> Self {
        Case {
            name,
            problem,
            plants,
            effect: Effect::NanRow,
            positive: false,
            tail: 0,
        }
    }

    fn with_effect(mut self, effect: Effect, positive: bool) -> Self {
        self.effect = effect;
        self.positive = positive;
        self
    }
}

fn shape(sq: usize, sk: usize, hq: usize, hkv: usize, d: usize) -> AttentionShape {
    AttentionShape::new(1, sq, hq, d)
        .with_seq_k(sk)
        .with_heads_kv(hkv)
}

/// Every logical element of a tensor: `(b, s, h, x)`.
fn elements(batch: usize, seq: usize, heads: usize, d: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut all = Vec::with_capacity(batch * seq * heads * d);
    for b in 0..batch {
        for s in 0..seq {
            for h in 0..heads {
                for x in 0..d {
                    all.push((b, s, h, x));
                }
            }
        }
    }
    all
}

/// Random inputs through the strides, NaN everywhere else in the buffers (and `tail` NaN values past
/// their end); returns the inputs before and after planting.
fn make_inputs<T: Element>(case: &Case, seed: u64) -> (Inputs<T>, Inputs<T>) {
    let p = &case.problem;
    let s = p.shape;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensor = |which: Tensor| {
        let (name, strides, seq, heads) = match which {
            Tensor::Q => (cuda_attention::Tensor::Q, p.q_strides, s.seq_q, s.heads_q),
            Tensor::K => (cuda_attention::Tensor::K, p.k_strides, s.seq_k, s.heads_kv),
            Tensor::V => (cuda_attention::Tensor::V, p.v_strides, s.seq_k, s.heads_kv),
        };
        let len = p.required_len(name).unwrap() + case.tail;
        let mut clean = vec![T::from_f32(f32::NAN); len.max(1)];
        let cells = elements(s.batch, seq, heads, s.head_dim);
        let random: Vec<f32> = common::random(&mut rng, cells.len(), 1.0);
        let positive = case.positive && which != Tensor::V;
        for (&(b, i, h, x), &r) in cells.iter().zip(&random) {
            clean[strides.offset(b, i, h, x)] = T::from_f32(if positive { r.abs() } else { r });
        }
        let mut planted = clean.clone();
        for plant in case.plants.iter().filter(|plant| plant.tensor == which) {
            let value = T::from_f32(plant.value);
            match plant.at {
                At::Element(b, i, h, x) => planted[strides.offset(b, i, h, x)] = value,
                At::Everywhere => {
                    for &(b, i, h, x) in &cells {
                        planted[strides.offset(b, i, h, x)] = value;
                    }
                }
            }
        }
        (Aligned::new(&clean), Aligned::new(&planted))
    };
    let (q0, q1) = tensor(Tensor::Q);
    let (k0, k1) = tensor(Tensor::K);
    let (v0, v1) = tensor(Tensor::V);
    (
        Inputs {
            q: q0,
            k: k0,
            v: v0,
        },
        Inputs {
            q: q1,
            k: k1,
            v: v1,
        },
    )
}

/// The keys whose V values the tile kernels multiply by P for query row `i` (P is 0 at those it does
/// not see): the key tiles, from the first key of the first row of `i`'s tile of query rows to the last
/// key of its last row, rounded out to whole tiles and clipped to seq_k. Naive: 32 rows x 32 keys;
/// flash f32: 8 x 32; flash f16/bf16: a warp's 32 rows (16 above head_dim 128) x 64 keys (32 above
/// head_dim 64). The reference and the CPU backend multiply no key the row does not see.
fn multiplied_keys(
    backend: Backend,
    dtype: DType,
    problem: &AttentionProblem,
    i: usize,
) -> Range<usize> {
    let s = problem.shape;
    let padded = s.head_dim.next_multiple_of(32);
    let (rows, keys) = match backend {
        Backend::Reference | Backend::Cpu => return 0..0,
        Backend::Naive => (32, 32),
        Backend::Flash if dtype == DType::F32 => (8, 32),
        Backend::Flash => (
            if padded <= 128 { 32 } else { 16 },
            if padded <= 64 { 64 } else { 32 },
        ),
    };
    let first = i / rows * rows;
    let last = (first + rows).min(s.seq_q) - 1;
    let begin = problem.key_range(first).0;
    let end = problem.key_range(last).1;
    if begin >= end {
        return 0..0;
    }
    begin / keys * keys..end.next_multiple_of(keys).min(s.seq_k)
}

/// What one output row must be.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Exactly +0, lse -inf, weights 0; except NaN in these columns (naive, a row whose scores are all
    /// -inf: written as 0 * V).
    Zero(Vec<usize>),
    /// NaN everywhere, lse NaN, weights NaN at the visible keys and 0 elsewhere.
    Nan,
    /// The reference, except these columns, which hold exactly this value class (NaN or an infinity).
    Reference(Vec<(usize, f32)>),
}

/// The expectation for row `i` of head `h` in batch `b`, from the masks and the plants.
fn expect(case: &Case, backend: Backend, dtype: DType, b: usize, i: usize, h: usize) -> Expect {
    let p = &case.problem;
    let s = p.shape;
    let (begin, end) = p.key_range(i);
    if begin >= end {
        return Expect::Zero(Vec::new());
    }
    let hk = h / p.heads_ratio();
    let sees = |j: usize| begin <= j && j < end;
    let tiles = multiplied_keys(backend, dtype, p, i);
    let mut effect = None;
    let mut columns: Vec<(usize, f32)> = Vec::new();
    let mut column = |x: usize, value: f32| {
        // NaN wins over an infinity; infinities of both signs make NaN.
        match columns.iter_mut().find(|(c, _)| *c == x) {
            Some((_, old)) if *old != value => *old = f32::NAN,
            Some(_) => {}
            None => columns.push((x, value)),
        }
    };
    for plant in &case.plants {
        match (plant.tensor, plant.at) {
            (Tensor::Q, At::Everywhere) => effect = Some(case.effect),
            (Tensor::Q, At::Element(pb, pi, ph, _)) if (pb, pi, ph) == (b, i, h) => {
                effect = Some(case.effect)
            }
            (Tensor::K, At::Everywhere) => effect = Some(case.effect),
            (Tensor::K, At::Element(pb, j, ph, _)) if (pb, ph) == (b, hk) && sees(j) => {
                effect = Some(case.effect)
            }
            (Tensor::V, At::Everywhere) => {
                // An infinity at every visible key sums to itself; 0 * Inf at a key the row does not
                // see, in a tile the kernel multiplies, makes NaN.
                let masked_in_tiles = !tiles.is_empty() && (tiles.start < begin || tiles.end > end);
                let value = if masked_in_tiles {
                    f32::NAN
                } else {
                    plant.value
                };
                (0..s.head_dim).for_each(|x| column(x, value));
            }
            (Tensor::V, At::Element(pb, j, ph, x)) if (pb, ph) == (b, hk) => {
                if sees(j) {
                    column(x, plant.value);
                } else if tiles.contains(&j) {
                    // 0 * NaN, 0 * Inf in a tile the kernel multiplies: within 128 keys, as documented.
                    let distance = if j < begin { begin - j } else { j + 1 - end };
                    assert!(distance < 128, "{}: key {j} row {i}", case.name);
                    column(x, f32::NAN);
                }
            }
            _ => {}
        }
    }
    match effect {
        Some(Effect::NanRow) => Expect::Nan,
        // The naive kernel writes 0 * V: NaN where V is non-finite at a key it multiplies.
        Some(Effect::EmptyRow) if backend == Backend::Naive => {
            Expect::Zero(columns.iter().map(|&(x, _)| x).collect())
        }
        Some(Effect::EmptyRow) => Expect::Zero(Vec::new()),
        Some(Effect::Finite) | None => Expect::Reference(columns),
    }
}

fn same_class(actual: f64, expected: f32) -> bool {
    if expected.is_nan() {
        actual.is_nan()
    } else {
        actual == f64::from(expected)
    }
}

/// Runs one case on every backend in precision `T` and checks every row.
fn check_case<T: Element>(case: &Case) {
    let p = &case.problem;
    let s = p.shape;
    let (clean, planted) = make_inputs::<T>(case, 7);
    let (q, k, v) = clean.slices();
    let clean_reference = reference::reference(p, q, k, v).unwrap();
    let allowed = compare::tolerance(p, q, k, v, &clean_reference).unwrap();
    let softmax_allowed = compare::softmax_tolerance(p, q, k).unwrap();
    let expected = run_reference(p, &planted);
    let expected_weights = expected.weights.as_ref().unwrap();

    for backend in BACKENDS {
        let label = format!("{} {} {backend:?}", case.name, T::DTYPE);
        let got = run(backend, p, &planted);
        // Rows: zero, NaN, against the reference, of which with NaN from V at keys they do not see.
        let mut counts = [0usize; 4];
        for b in 0..s.batch {
            for h in 0..s.heads_q {
                for i in 0..s.seq_q {
                    let row = format!("{label}: batch {b} head {h} row {i}");
                    let out =
                        &got.out[((b * s.seq_q + i) * s.heads_q + h) * s.head_dim..][..s.head_dim];
                    let reference_out = &expected.out
                        [((b * s.seq_q + i) * s.heads_q + h) * s.head_dim..][..s.head_dim];
                    let lse_index = (b * s.heads_q + h) * s.seq_q + i;
                    let lse = got.lse[lse_index];
                    let weights = got
                        .weights
                        .as_ref()
                        .map(|w| &w[lse_index * s.seq_k..(lse_index + 1) * s.seq_k]);
                    let reference_weights =
                        &expected_weights[lse_index * s.seq_k..(lse_index + 1) * s.seq_k];
                    let (begin, end) = p.key_range(i);
                    match expect(case, backend, T::DTYPE, b, i, h) {
                        Expect::Zero(nan_columns) => {
                            counts[0] += 1;
                            for (x, &a) in out.iter().enumerate() {
                                if nan_columns.contains(&x) {
                                    assert!(a.is_nan(), "{row} column {x}: expected NaN, got {a}");
                                } else {
                                    assert!(
                                        a.to_bits() == 0,
                                        "{row} column {x}: expected +0, got {a}"
                                    );
                                }
                            }
                            assert_eq!(lse, f64::NEG_INFINITY, "{row}: lse");
                            if let Some(weights) = weights {
                                assert!(weights.iter().all(|&w| w == 0.0), "{row}: weights");
                            }
                        }
                        Expect::Nan => {
                            counts[1] += 1;
                            assert!(
                                out.iter().all(|x| x.is_nan()),
                                "{row}: expected NaN, got {out:?}"
                            );
                            assert!(lse.is_nan(), "{row}: lse {lse}");
                            if let Some(weights) = weights {
                                for (j, &w) in weights.iter().enumerate() {
                                    let visible = begin <= j && j < end;
                                    assert!(
                                        if visible { w.is_nan() } else { w == 0.0 },
                                        "{row}: weight of key {j}: {w}"
                                    );
                                }
                            }
                        }
                        Expect::Reference(columns) => {
                            counts[2] += 1;
                            let unseen = |&(x, class): &(usize, f32)| {
                                class.is_nan() && !reference_out[x].is_nan()
                            };
                            counts[3] += usize::from(columns.iter().any(unseen));
                            for (x, (&a, &e)) in out.iter().zip(reference_out).enumerate() {
                                match columns.iter().find(|(c, _)| *c == x) {
                                    Some(&(_, class)) => assert!(
                                        same_class(a, class),
                                        "{row} column {x}: expected {class}, got {a}"
                                    ),
                                    None => assert!(
                                        e.is_finite() && (a - e).abs() <= allowed,
                                        "{row} column {x}: {a} against {e}, allowed {allowed:.3e}"
                                    ),
                                }
                            }
                            let e = expected.lse[lse_index];
                            assert!(
                                e.is_finite() && (lse - e).abs() <= softmax_allowed.lse,
                                "{row}: lse {lse} against {e}"
                            );
                            if let Some(weights) = weights {
                                for (j, (&w, &e)) in
                                    weights.iter().zip(reference_weights).enumerate()
                                {
                                    assert!(
                                        (w - e).abs() <= softmax_allowed.weights,
                                        "{row}: weight of key {j}: {w} against {e}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        eprintln!(
            "{label}: {} rows zero, {} NaN, {} against the reference ({} with NaN from V at keys \
             they do not see)",
            counts[0], counts[1], counts[2], counts[3]
        );
    }
}

fn check_all_dtypes(cases: &[Case]) {
    for case in cases {
        check_case::<f32>(case);
        check_case::<f16>(case);
        check_case::<bf16>(case);
    }
}

/// Causal with seq_q > seq_k (the top 63 rows see nothing), a window that leaves rows empty, seq_k = 0:
/// exactly 0 and lse -inf whatever q, k and v hold.
#[test]
fn rows_that_see_no_key_are_zero_whatever_the_data() {
    let causal = AttentionProblem::new(shape(100, 37, 2, 1, 64)).with_causal(true);
    // Row i's diagonal is i - 30: rows 0..=24 see nothing, later ones a window of up to 16 keys.
    let window = AttentionProblem::new(shape(90, 60, 2, 2, 64)).with_window(Some(10), Some(5));
    let narrow = AttentionProblem::new(shape(120, 50, 2, 2, 32))
        .with_causal(true)
        .with_window(Some(3), Some(0));
    let everything = |value: f32| {
        vec![
            plant(Tensor::Q, At::Everywhere, value),
            plant(Tensor::K, At::Everywhere, value),
            plant(Tensor::V, At::Everywhere, value),
        ]
    };
    let cases = [
        Case::new(
            "causal 100x37, NaN in all of q, k, v",
            causal.clone(),
            everything(f32::NAN),
        ),
        Case::new(
            "causal 100x37, +Inf in all of q, k, v",
            causal.clone(),
            everything(f32::INFINITY),
        ),
        Case::new(
            "causal 100x37, -Inf in all of q, k, v",
            causal.clone(),
            everything(f32::NEG_INFINITY),
        ),
        Case::new(
            "window 10/5 90x60, NaN in all of q and k",
            window.clone(),
            vec![
                plant(Tensor::Q, At::Everywhere, f32::NAN),
                plant(Tensor::K, At::Everywhere, f32::NAN),
            ],
        ),
        Case::new(
            "window 10/5 90x60, NaN in all of v (lse stays finite)",
            window.clone(),
            vec![plant(Tensor::V, At::Everywhere, f32::NAN)],
        ),
        Case::new(
            "window 10/5 90x60, -Inf in all of v",
            window.clone(),
            vec![plant(Tensor::V, At::Everywhere, f32::NEG_INFINITY)],
        ),
        Case::new(
            "causal window 3/0 120x50, NaN in all of v",
            narrow,
            vec![plant(Tensor::V, At::Everywhere, f32::NAN)],
        ),
        Case::new(
            "seq_k 0, NaN in all of q",
            AttentionProblem::new(shape(9, 0, 2, 1, 64)),
            vec![plant(Tensor::Q, At::Everywhere, f32::NAN)],
        ),
    ];
    check_all_dtypes(&cases);
}

/// A NaN in a row's own query or in a key it sees: that row NaN, lse NaN; nothing else changes.
#[test]
fn a_nan_in_a_rows_own_inputs_makes_that_row_nan() {
    let causal = AttentionProblem::new(shape(150, 150, 2, 1, 64)).with_causal(true);
    let gqa_window = AttentionProblem::new(shape(80, 120, 4, 2, 64)).with_window(Some(30), Some(2));
    let cases = [
        Case::new(
            "NaN in q row 70 of head 1",
            causal.clone(),
            vec![plant(Tensor::Q, At::Element(0, 70, 1, 5), f32::NAN)],
        ),
        Case::new(
            "NaN in k row 40 (rows 40.. see it)",
            causal.clone(),
            vec![plant(Tensor::K, At::Element(0, 40, 0, 7), f32::NAN)],
        ),
        Case::new(
            "NaN in q row 0 of head 3, window 30/2, GQA",
            gqa_window.clone(),
            vec![plant(Tensor::Q, At::Element(0, 0, 3, 63), f32::NAN)],
        ),
        Case::new(
            "NaN in k row 100 of kv head 1, window 30/2, GQA",
            gqa_window,
            vec![plant(Tensor::K, At::Element(0, 100, 1, 0), f32::NAN)],
        ),
    ];
    check_all_dtypes(&cases);
}

/// Infinities in q or k (q and k positive, so the sign of each score is known): a +inf score makes the
/// row NaN (inf - inf), a row whose scores are all -inf is 0 with lse -inf, a single -inf score drops
/// its key, the soft cap turns an infinite score into the cap.
#[test]
fn infinities_in_q_and_k() {
    let causal = AttentionProblem::new(shape(100, 100, 2, 1, 64)).with_causal(true);
    let cases = [
        Case::new(
            "+Inf in q row 60",
            causal.clone(),
            vec![plant(Tensor::Q, At::Element(0, 60, 0, 3), f32::INFINITY)],
        )
        .with_effect(Effect::NanRow, true),
        Case::new(
            "-Inf in q row 60: every score -inf",
            causal.clone(),
            vec![plant(
                Tensor::Q,
                At::Element(0, 60, 0, 3),
                f32::NEG_INFINITY,
            )],
        )
        .with_effect(Effect::EmptyRow, true),
        Case::new(
            "-Inf in q row 60, NaN in v row 61 and +Inf in v row 30",
            causal.clone(),
            vec![
                plant(Tensor::Q, At::Element(0, 60, 0, 3), f32::NEG_INFINITY),
                plant(Tensor::V, At::Element(0, 61, 0, 5), f32::NAN),
                plant(Tensor::V, At::Element(0, 30, 0, 6), f32::INFINITY),
            ],
        )
        .with_effect(Effect::EmptyRow, true),
        Case::new(
            "+Inf in k row 30",
            causal.clone(),
            vec![plant(Tensor::K, At::Element(0, 30, 0, 3), f32::INFINITY)],
        )
        .with_effect(Effect::NanRow, true),
        Case::new(
            "-Inf in k row 30: key 30 dropped",
            causal.clone(),
            vec![plant(
                Tensor::K,
                At::Element(0, 30, 0, 3),
                f32::NEG_INFINITY,
            )],
        )
        .with_effect(Effect::Finite, true),
        Case::new(
            "+Inf in q row 60, soft cap 5: scores capped",
            causal.with_softcap(5.0),
            vec![plant(Tensor::Q, At::Element(0, 60, 0, 3), f32::INFINITY)],
        )
        .with_effect(Effect::Finite, true),
    ];
    check_all_dtypes(&cases);
}

/// A non-finite value in V: its class in its column for the rows that see the key; for the rows that
/// do not, nothing in the reference and the CPU backend, NaN in the tile kernels exactly within the key
/// tiles they multiply (never 128 keys or more away); the lse never changes.
#[test]
fn non_finite_values_in_v() {
    let causal = AttentionProblem::new(shape(150, 150, 2, 1, 64)).with_causal(true);
    // Key 10 is seen by rows 10..=30; rows past ~130 are more than 96 keys away from it.
    let window = AttentionProblem::new(shape(300, 300, 1, 1, 64))
        .with_causal(true)
        .with_window(Some(20), Some(0));
    let cases = [
        Case::new(
            "NaN, +Inf, -Inf in v rows 40, 41, 42, causal",
            causal,
            vec![
                plant(Tensor::V, At::Element(0, 40, 0, 9), f32::NAN),
                plant(Tensor::V, At::Element(0, 41, 0, 20), f32::INFINITY),
                plant(Tensor::V, At::Element(0, 42, 0, 33), f32::NEG_INFINITY),
            ],
        ),
        Case::new(
            "NaN in v row 10, causal window 20/0, 300 rows",
            window.clone(),
            vec![plant(Tensor::V, At::Element(0, 10, 0, 3), f32::NAN)],
        ),
        Case::new(
            "+Inf in v row 250, causal window 20/0, 300 rows",
            window,
            vec![plant(Tensor::V, At::Element(0, 250, 0, 60), f32::INFINITY)],
        ),
    ];
    check_all_dtypes(&cases);
}

/// NaN in every byte the strides skip (rows past seq_q and keys past seq_k in each batch, columns past
/// head_dim, 64 values past the end of each buffer): never read, every row matches the reference.
#[test]
fn memory_outside_the_tensors_never_reaches_the_output() {
    let (batch, sq, sk, hq, hkv, d, padded) = (2, 70, 77, 2, 1, 40, 48);
    let strides = |seq: usize, heads: usize| Strides {
        batch: (seq + 16) * heads * padded,
        seq: heads * padded,
        head: padded,
    };
    let problem = AttentionProblem::new(
        AttentionShape::new(batch, sq, hq, d)
            .with_seq_k(sk)
            .with_heads_kv(hkv),
    )
    .with_strides(
        strides(sq, hq),
        strides(sk, hkv),
        strides(sk, hkv),
        strides(sq, hq),
    )
    .with_causal(true);
    let mut case = Case::new("NaN padding, ragged causal d40", problem, Vec::new());
    case.tail = 64;
    let seq_k_zero = AttentionProblem::new(shape(5, 0, 2, 2, 32));
    let mut empty = Case::new("NaN buffers, seq_k 0", seq_k_zero, Vec::new());
    empty.tail = 64;
    check_all_dtypes(&[case, empty]);
}

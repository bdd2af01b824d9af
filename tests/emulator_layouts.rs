//! Self-checks of the emulator's warp-level operations.
//!
//! - Its mma.sync m16n8k16 and ldmatrix lane-to-element tables against both independent statements in
//!   shared/reference/kernel-facts.md: the PTX ISA formulas and CuTe's SM80 16x8x16 layouts.
//! - kernels/layout_probe.cu run on the emulator: ldmatrix (x1/x2/x4, .trans) against the statement,
//!   mma (f16, bf16, operands from the tables and from ldmatrix) against a plain matrix product, cp.async
//!   zero-fill; and, once a GPU has run the probe, against its dump (tests/golden/layout_probe.txt).
//! - The probe on a real GPU, when one is present, against the emulator value for value (the dump is
//!   written to $GPU_OUT/layout_probe.txt for the GPU suite to commit as the golden file).
//! - The emulator's f32 -> f16/bf16 rounding against the `half` crate.

#[path = "emulator_support/golden.rs"]
mod golden;

use std::ffi::c_void;

use cuda_attention::emulator::{conversions, fragment_element, Emulator, Fragment, Schedule};
use cuda_attention::launch::KernelLaunch;
use cuda_attention::sys::AttentionParams;
use half::{bf16, f16};

// ---- The tables against the PTX formulas (kernel-facts.md, first statement) -------------------------

/// mma A: row = groupID for i in {0,1,4,5}, groupID + 8 otherwise; col = tig*2 + (i & 1) for i < 4,
/// + 8 for i >= 4.
fn ptx_a(lane: u32, i: u32) -> (u32, u32) {
    let (group, tig) = (lane >> 2, lane % 4);
    let row = if [0, 1, 4, 5].contains(&i) {
        group
    } else {
        group + 8
    };
    let col = tig * 2 + (i & 1) + if i >= 4 { 8 } else { 0 };
    (row, col)
}

/// mma B ("col", elements b0..b3): k = tig*2 + (i & 1) for i < 2, + 8 for i >= 2; n = groupID.
fn ptx_b(lane: u32, i: u32) -> (u32, u32) {
    let (group, tig) = (lane >> 2, lane % 4);
    (tig * 2 + (i & 1) + if i >= 2 { 8 } else { 0 }, group)
}

/// mma C/D: row = groupID for i < 2, groupID + 8 for i >= 2; col = tig*2 + (i & 1).
fn ptx_c(lane: u32, i: u32) -> (u32, u32) {
    let (group, tig) = (lane >> 2, lane % 4);
    (if i < 2 { group } else { group + 8 }, tig * 2 + (i & 1))
}

/// ldmatrix: register j of lane l holds M_j[l>>2][2(l&3)] (low half) and M_j[l>>2][2(l&3)+1] (high);
/// .trans: M_j[2(l&3)][l>>2] and M_j[2(l&3)+1][l>>2]. Element e = 2j + half.
fn ptx_ldmatrix(lane: u32, e: u32, trans: bool) -> (u32, u32) {
    let half = e & 1;
    if trans {
        (2 * (lane & 3) + half, lane >> 2)
    } else {
        (lane >> 2, 2 * (lane & 3) + half)
    }
}

// ---- The tables against CuTe's layouts (kernel-facts.md, second statement) --------------------------

/// A CuTe layout `((4,8),(s...)):((32|16,1),(d...))` evaluated at (lane, element): the thread mode is
/// (4,8) with lane = tig + 4 * group, the value mode is split mixed-radix with its first mode fastest.
fn cute_index(
    lane: u32,
    element: u32,
    thread_strides: (u32, u32),
    value_shape: &[u32],
    value_strides: &[u32],
) -> u32 {
    let (tig, group) = (lane % 4, lane / 4);
    let mut index = tig * thread_strides.0 + group * thread_strides.1;
    let mut rest = element;
    for (&extent, &stride) in value_shape.iter().zip(value_strides) {
        index += (rest % extent) * stride;
        rest /= extent;
    }
    index
}

/// A `((4,8),(2,2,2)):((32,1),(16,8,128))`, index = row + 16 * col of the 16x16 A.
fn cute_a(lane: u32, i: u32) -> (u32, u32) {
    let index = cute_index(lane, i, (32, 1), &[2, 2, 2], &[16, 8, 128]);
    (index % 16, index / 16)
}

/// B `((4,8),(2,2)):((16,1),(8,64))`, index = n + 8 * k of B seen as 8 (n) x 16 (k); returns (k, n).
fn cute_b(lane: u32, i: u32) -> (u32, u32) {
    let index = cute_index(lane, i, (16, 1), &[2, 2], &[8, 64]);
    (index / 8, index % 8)
}

/// C `((4,8),(2,2)):((32,1),(16,8))`, index = row + 16 * col of the 16x8 C.
fn cute_c(lane: u32, i: u32) -> (u32, u32) {
    let index = cute_index(lane, i, (32, 1), &[2, 2], &[16, 8]);
    (index % 16, index / 16)
}

fn table(fragment: Fragment, lane: u32, element: u32) -> (u32, u32) {
    fragment_element(fragment, lane, element)
        .unwrap_or_else(|| panic!("{fragment:?} lane {lane} element {element}"))
}

#[test]
fn mma_tables_match_the_ptx_formulas() {
    for lane in 0..32 {
        for i in 0..8 {
            assert_eq!(
                table(Fragment::MmaA, lane, i),
                ptx_a(lane, i),
                "A lane {lane} element {i}"
            );
        }
        for i in 0..4 {
            assert_eq!(
                table(Fragment::MmaB, lane, i),
                ptx_b(lane, i),
                "B lane {lane} element {i}"
            );
            assert_eq!(
                table(Fragment::MmaC, lane, i),
                ptx_c(lane, i),
                "C lane {lane} element {i}"
            );
        }
    }
}

#[test]
fn mma_tables_match_the_cute_layouts() {
    for lane in 0..32 {
        for i in 0..8 {
            assert_eq!(
                table(Fragment::MmaA, lane, i),
                cute_a(lane, i),
                "A lane {lane} element {i}"
            );
        }
        for i in 0..4 {
            assert_eq!(
                table(Fragment::MmaB, lane, i),
                cute_b(lane, i),
                "B lane {lane} element {i}"
            );
            assert_eq!(
                table(Fragment::MmaC, lane, i),
                cute_c(lane, i),
                "C lane {lane} element {i}"
            );
        }
    }
}

/// Each table covers its matrix exactly once (a permutation), so no element is lost or duplicated.
#[test]
fn mma_tables_are_permutations() {
    for (fragment, rows, cols) in [
        (Fragment::MmaA, 16, 16),
        (Fragment::MmaB, 16, 8),
        (Fragment::MmaC, 16, 8),
    ] {
        let mut seen = vec![0u32; rows * cols];
        for lane in 0..32 {
            for i in 0..fragment.elements() {
                let (r, c) = table(fragment, lane, i);
                seen[r as usize * cols + c as usize] += 1;
            }
        }
        assert!(
            seen.iter().all(|&n| n == 1),
            "{fragment:?} does not cover its matrix once: {seen:?}"
        );
    }
    assert_eq!(fragment_element(Fragment::MmaA, 32, 0), None);
    assert_eq!(fragment_element(Fragment::MmaC, 0, 4), None);
}

#[test]
fn ldmatrix_tables_match_the_statement() {
    for lane in 0..32 {
        for e in 0..8 {
            assert_eq!(
                table(Fragment::Ldmatrix, lane, e),
                ptx_ldmatrix(lane, e, false),
                "lane {lane} e {e}"
            );
            assert_eq!(
                table(Fragment::LdmatrixTrans, lane, e),
                ptx_ldmatrix(lane, e, true),
                "lane {lane} e {e}"
            );
        }
    }
}

// ---- kernels/layout_probe.cu ---------------------------------------------------------------------

/// The probe's layout (kernels/layout_probe.cu; the probe writes its value count and shared size into
/// its header, which the tests check, so a change there cannot go unnoticed).
const PROBE_VALUES: usize = 4 + 6 * 32 * 8 + 2 * 32 * 4 + 2 * 32 * 4 + 24;
const PROBE_SHARED_BYTES: u32 = 512 + 512 + 256 + 48;
const PROBE_SOURCE_FLOATS: usize = 8;
const LDMATRIX_BASE: usize = 4;
const MMA_BASE: usize = LDMATRIX_BASE + 6 * 32 * 8;
const MMA_LDSM_BASE: usize = MMA_BASE + 2 * 32 * 4;
const CP_ASYNC_BASE: usize = MMA_LDSM_BASE + 2 * 32 * 4;

/// The probe's matrices (same formulas as layout_probe.cu).
fn probe_a(row: u32, col: u32) -> f64 {
    ((row * 16 + col) * 7 % 13) as f64 - 6.0
}
fn probe_b(k: u32, n: u32) -> f64 {
    ((k * 8 + n) * 5 % 11) as f64 - 5.0
}
fn probe_c(row: u32, col: u32) -> f64 {
    row as f64 - col as f64
}

fn probe_launch() -> KernelLaunch {
    KernelLaunch {
        name: "layout_probe",
        grid: (1, 1, 1),
        block: (32, 1, 1),
        shared_bytes: PROBE_SHARED_BYTES,
    }
}

/// Runs the probe on the emulator; its output buffer is 16-byte aligned (it doubles as a cp.async source).
fn probe_on_emulator(schedule: Schedule) -> Vec<f32> {
    let mut storage = vec![0u128; (PROBE_VALUES + PROBE_SOURCE_FLOATS).div_ceil(4)];
    let params = AttentionParams {
        out: storage.as_mut_ptr().cast::<c_void>(),
        ..AttentionParams::default()
    };
    // SAFETY: the probe writes PROBE_VALUES + PROBE_SOURCE_FLOATS floats to p.out and touches no other
    // pointer; `storage` holds that many, 16-byte aligned, and lives until the copy below.
    unsafe {
        Emulator::new()
            .with_schedule(schedule)
            .launch(&probe_launch(), &params)
    }
    .expect("the probe failed");
    // SAFETY: the storage holds at least PROBE_VALUES initialised f32 values (zeros or the probe's).
    unsafe { std::slice::from_raw_parts(storage.as_ptr().cast::<f32>(), PROBE_VALUES) }.to_vec()
}

/// Section, lane and slot of a probe value, for messages and the golden file.
fn describe(index: usize) -> (String, usize, usize) {
    const VARIANTS: [&str; 6] = ["x1", "x2", "x4", "x1.trans", "x2.trans", "x4.trans"];
    if index < LDMATRIX_BASE {
        ("header".into(), 0, index)
    } else if index < MMA_BASE {
        let i = index - LDMATRIX_BASE;
        (
            format!("ldmatrix.{}", VARIANTS[i / 256]),
            i % 256 / 8,
            i % 8,
        )
    } else if index < MMA_LDSM_BASE {
        let i = index - MMA_BASE;
        (
            format!("mma.{}", ["f16", "bf16"][i / 128]),
            i % 128 / 4,
            i % 4,
        )
    } else if index < CP_ASYNC_BASE {
        let i = index - MMA_LDSM_BASE;
        (
            format!("mma_ldsm.{}", ["f16", "bf16"][i / 128]),
            i % 128 / 4,
            i % 4,
        )
    } else {
        let i = index - CP_ASYNC_BASE;
        ("cp_async".into(), i / 8, i % 8)
    }
}

/// What the probe must produce on any correct implementation, from the statements alone.
fn probe_expected() -> Vec<f32> {
    let mut expected = vec![0.0f32; PROBE_VALUES];
    expected[0] = 1.0;
    expected[1] = PROBE_VALUES as f32;
    expected[2] = PROBE_SHARED_BYTES as f32;
    // ldmatrix: M_m[r][c] = 64 m + 8 r + c + 1; matrices beyond the variant's count stay 0.
    for (variant, (matrices, trans)) in [
        (1, false),
        (2, false),
        (4, false),
        (1, true),
        (2, true),
        (4, true),
    ]
    .into_iter()
    .enumerate()
    {
        for lane in 0..32u32 {
            for e in 0..8u32 {
                let matrix = e / 2;
                if matrix >= matrices {
                    continue;
                }
                let (r, c) = ptx_ldmatrix(lane, e, trans);
                expected[LDMATRIX_BASE + (variant * 32 + lane as usize) * 8 + e as usize] =
                    (64 * matrix + 8 * r + c + 1) as f32;
            }
        }
    }
    // mma: D = A B + C placed by the C/D formula, for both dtypes and both ways of loading operands.
    for base in [MMA_BASE, MMA_BASE + 128, MMA_LDSM_BASE, MMA_LDSM_BASE + 128] {
        for lane in 0..32u32 {
            for i in 0..4u32 {
                let (row, col) = ptx_c(lane, i);
                let d: f64 = (0..16)
                    .map(|k| probe_a(row, k) * probe_b(k, col))
                    .sum::<f64>()
                    + probe_c(row, col);
                expected[base + lane as usize * 4 + i as usize] = d as f32;
            }
        }
    }
    // cp.async: 16 bytes, then 8 bytes and zero-fill, then zero-fill only.
    for i in 0..8 {
        expected[CP_ASYNC_BASE + i] = (1000 + i) as f32;
        expected[CP_ASYNC_BASE + 8 + i] = if i < 4 { (1008 + i) as f32 } else { 0.0 };
    }
    expected
}

fn assert_same(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let mismatches: Vec<String> = actual
        .iter()
        .zip(expected)
        .enumerate()
        .filter(|(_, (a, e))| a.to_bits() != e.to_bits())
        .take(10)
        .map(|(i, (a, e))| {
            let (section, lane, slot) = describe(i);
            format!("{section} lane {lane} slot {slot}: {a} instead of {e}")
        })
        .collect();
    assert!(mismatches.is_empty(), "{what}:\n{}", mismatches.join("\n"));
}

/// The emulated ldmatrix, mma (both dtypes, operands from the tables and through ldmatrix) and cp.async,
/// against the statements and a plain 16x8x16 matrix product, under two schedules.
#[test]
fn probe_on_the_emulator_matches_the_plain_product() {
    let expected = probe_expected();
    for schedule in [Schedule::RoundRobin, Schedule::Random { seed: 17 }] {
        assert_same(
            &probe_on_emulator(schedule),
            &expected,
            &format!("layout probe on the emulator ({schedule})"),
        );
    }
}

/// The probe's golden-dump description (emulator_support/golden.rs).
const PROBE: golden::Probe<'static> = golden::Probe {
    file: "layout_probe.txt",
    kernel: "kernels/layout_probe.cu",
    test: "tests/emulator_layouts.rs",
    index: "LANE",
    describe,
};

/// Once a GPU has run the probe (scripts' GPU suite commits its dump), the emulator must reproduce the
/// hardware's dump exactly.
#[test]
fn probe_on_the_emulator_matches_the_gpu_golden_dump() {
    let Some(golden) = PROBE.golden() else {
        return;
    };
    assert_same(
        &probe_on_emulator(Schedule::RoundRobin),
        &golden,
        "emulator against the GPU's golden dump",
    );
}

/// On a machine with a CUDA device and a build with GPU kernels: the probe on the GPU must match the
/// emulator value for value; its dump goes to $GPU_OUT/layout_probe.txt when GPU_OUT is set.
#[test]
fn probe_on_a_gpu_matches_the_emulator() {
    match run_probe_on_gpu() {
        Ok(Some((gpu, device))) => {
            PROBE.write_gpu_dump(&gpu, &device);
            assert_same(
                &gpu,
                &probe_expected(),
                &format!("layout probe on {device} against the statements"),
            );
            assert_same(
                &probe_on_emulator(Schedule::RoundRobin),
                &gpu,
                &format!("emulator against {device}"),
            );
        }
        Ok(None) => println!("skipped: no CUDA device"),
        Err(e) => panic!("the layout probe failed on the GPU: {e}"),
    }
}

/// Runs the probe from the embedded fatbin on device 0; None without a driver, a device or kernels.
fn run_probe_on_gpu() -> Result<Option<(Vec<f32>, String)>, String> {
    use cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};

    let Some((ctx, function, device)) = golden::gpu_function("layout_probe", None)? else {
        return Ok(None);
    };
    let stream = ctx.default_stream();
    let out = stream
        .alloc_zeros::<f32>(PROBE_VALUES + PROBE_SOURCE_FLOATS)
        .map_err(|e| e.to_string())?;
    {
        let (address, _guard) = out.device_ptr(&stream);
        let params = AttentionParams {
            out: address as *mut c_void,
            ..AttentionParams::default()
        };
        let config = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: PROBE_SHARED_BYTES,
        };
        // SAFETY: the probe takes one AttentionParams by value and writes only the
        // PROBE_VALUES + PROBE_SOURCE_FLOATS floats of `out` (16-byte aligned device memory).
        unsafe { stream.launch_builder(&function).arg(&params).launch(config) }
            .map_err(|e| e.to_string())?;
    }
    let host = stream.clone_dtoh(&out).map_err(|e| e.to_string())?;
    Ok(Some((host[..PROBE_VALUES].to_vec(), device)))
}

// ---- Conversions ---------------------------------------------------------------------------------

/// Finite values, ties, subnormals, overflow and specials, plus a sweep of bit patterns.
fn conversion_inputs() -> Vec<f32> {
    let mut values = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        65519.99,
        65520.0,
        -65520.0,
        1e-8,
        2.9802322e-8,
        5.9604645e-8,
        6.1e-5,
        f32::MIN_POSITIVE,
        1.0e-45,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3.0e38,
        1.0009766,
        1.0004883,
        1.0014648,
        0.33333334,
    ];
    let mut bits: u32 = 0x1234_5678;
    for _ in 0..200_000 {
        bits = bits.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        values.push(f32::from_bits(bits));
    }
    for exponent in 100u32..145 {
        for mantissa in [
            0u32, 1, 0xfff, 0x1000, 0x1001, 0x2000, 0x3000, 0x7fff, 0x8000, 0x8001, 0x18000,
            0x7fffff,
        ] {
            values.push(f32::from_bits(exponent << 23 | mantissa));
        }
    }
    values
}

#[test]
fn half_conversions_round_like_cuda() {
    for x in conversion_inputs() {
        let (ours, theirs) = (conversions::f32_to_f16_bits(x), f16::from_f32(x));
        if x.is_nan() {
            assert!(f16::from_bits(ours).is_nan(), "f16 of NaN {x:?}");
            assert_eq!(ours, 0x7fff, "CUDA's canonical f16 NaN");
        } else {
            assert_eq!(
                ours,
                theirs.to_bits(),
                "f16 of {x:e} ({:#010x})",
                x.to_bits()
            );
        }
        let back = conversions::f16_bits_to_f32(ours);
        assert!(
            back.to_bits() == f16::from_bits(ours).to_f32().to_bits() || back.is_nan(),
            "f16 -> f32 of {ours:#06x}"
        );
    }
}

#[test]
fn bfloat16_conversions_round_like_cuda() {
    for x in conversion_inputs() {
        let (ours, theirs) = (conversions::f32_to_bf16_bits(x), bf16::from_f32(x));
        if x.is_nan() {
            assert_eq!(ours, 0x7fff, "CUDA's canonical bf16 NaN for {x:?}");
        } else {
            assert_eq!(
                ours,
                theirs.to_bits(),
                "bf16 of {x:e} ({:#010x})",
                x.to_bits()
            );
        }
        assert_eq!(
            conversions::bf16_bits_to_f32(ours).to_bits(),
            bf16::from_bits(ours).to_f32().to_bits()
        );
    }
}

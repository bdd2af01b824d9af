//! kernels/hopper_probe.cu on the emulator, against plain products computed here from the PTX
//! statements (hopper-facts.md), under three schedules; its planted bugs, each giving a specific
//! `Emulation` error or a specific wrong result; and, on a machine with an sm_90 GPU, the probe on the
//! GPU against the emulator (its dump goes to $GPU_OUT/hopper_probe.txt, for the GPU suite to commit as
//! tests/golden/hopper_probe.txt, which every CI run then checks the emulator against). The GPU half's
//! host code (the driver's cuTensorMapEncodeTiled, the map in device memory, the launch) also runs on the
//! emulated CUDA driver, an sm_90 device by default (scripts/test.sh).

#[path = "emulator_support/golden.rs"]
mod golden;

use std::ffi::c_void;

use cuda_attention::emulator::hopper::{
    swizzle_address, TensorMap, TensorMapDataType, TensorMapSpec, TensorMapSwizzle,
};
use cuda_attention::emulator::{Emulator, Schedule};
use cuda_attention::launch::KernelLaunch;
use cuda_attention::sys::AttentionParams;
use cuda_attention::AttentionError;
use half::f16;

// ---- The probe's layout (kernels/hopper_probe.cu; its header repeats the sizes) ----------------------

/// (N, bf16, A in registers, trans A, swizzle A, trans B, swizzle B, wgmmas chained, C added): the
/// probe writes its own table into the dump, which must equal this one.
const CASES: [[u32; 9]; 6] = [
    [8, 1, 0, 0, 1, 0, 1, 1, 0],
    [64, 0, 0, 0, 2, 1, 1, 1, 0],
    [256, 1, 0, 0, 3, 0, 0, 1, 0],
    [32, 0, 0, 1, 2, 1, 0, 1, 0],
    [16, 1, 1, 0, 0, 0, 1, 2, 1],
    [128, 0, 1, 0, 0, 1, 3, 1, 0],
];
const HEADER: usize = 4;
const CASE_TABLE: usize = HEADER;
const WGMMA_BASE: usize = CASE_TABLE + 6 * 9;
const ACCUMULATORS: usize = (8 + 64 + 256 + 32 + 16 + 128) / 2;
const PHASES_BASE: usize = WGMMA_BASE + 128 * ACCUMULATORS;
const TMA_BASE: usize = PHASES_BASE + 6;
const TMA_ROWS: usize = 20;
const BOX_ROWS: usize = 16;
const BOX_COLS: usize = 64;
const TMA_MMA_BASE: usize = TMA_BASE + 2 * BOX_ROWS * BOX_COLS;
const TMA3D_BASE: usize = TMA_MMA_BASE + 128 * 8;
const NAMED_BASE: usize = TMA3D_BASE + 32 * 8 * 2;
const VALUES: usize = NAMED_BASE + 64;
const SHARED_BYTES: u32 = 1024 + 2 * 8192 + 2 * (BOX_ROWS * BOX_COLS * 2) as u32 + 16;

const PLANTED_NONE: i32 = 0;
const PLANTED_MISSING_WAIT: i32 = 1;
const PLANTED_WRONG_SWIZZLE: i32 = 2;
const PLANTED_WRONG_PHASE: i32 = 3;
const PLANTED_NEVER_PHASE: i32 = 4;
const PLANTED_OUTSIDE: i32 = 5;
const PLANTED_NO_FENCE: i32 = 6;
const PLANTED_EARLY_READ: i32 = 7;
const PLANTED_NO_INIT: i32 = 8;
const PLANTED_SPLIT_DESCRIPTOR: i32 = 9;
const PLANTED_UNALIGNED_BOX: i32 = 10;
const PLANTED_HALF_GROUP: i32 = 11;
const PLANTED_NAMED_COUNT: i32 = 12;
const PLANTED_NAMED_SKIP: i32 = 13;

fn probe_a(row: u32, k: u32) -> f64 {
    ((row * 16 + k) * 7 % 13) as f64 - 6.0
}
fn probe_b(k: u32, n: u32) -> f64 {
    ((k * 8 + n) * 5 % 11) as f64 - 5.0
}
fn probe_c(row: u32, col: u32) -> f64 {
    row as f64 - col as f64
}

/// The TMA tensor: element (row, col) = row * 64 + col + 1.
fn tensor_value(row: i64, col: usize) -> f64 {
    if (0..TMA_ROWS as i64).contains(&row) {
        (row as usize * 64 + col + 1) as f64
    } else {
        0.0
    }
}

/// Box b's row r as the tensor row: box 0 starts at row -4, box 1 at TMA_ROWS - 8.
fn box_row(b: usize, r: usize) -> i64 {
    r as i64 + if b == 0 { -4 } else { TMA_ROWS as i64 - 8 }
}

/// PTX: register i of warpgroup thread t holds D[16 w + g + 8 ((i >> 1) & 1)][8 (i >> 2) + 2 q + (i & 1)].
fn fragment(t: u32, i: u32) -> (u32, u32) {
    let (w, g, q) = (t / 32, t % 32 / 4, t % 4);
    (
        16 * w + g + 8 * ((i >> 1) & 1),
        8 * (i >> 2) + 2 * q + (i & 1),
    )
}

/// What the probe must produce, from the statements alone; `box_element(n, k)` is the B operand of the
/// TMA product (the landed box 0 as the correct 128-byte-swizzled descriptor reads it).
fn expected_with(box_element: impl Fn(u32, u32) -> f64) -> Vec<f32> {
    let mut e = vec![0.0f32; VALUES];
    e[..4].copy_from_slice(&[1.0, VALUES as f32, SHARED_BYTES as f32, 6.0]);
    let mut base = WGMMA_BASE;
    for (c, case) in CASES.iter().enumerate() {
        for (f, field) in case.iter().enumerate() {
            e[CASE_TABLE + c * 9 + f] = *field as f32;
        }
        let (n, chained, add_c) = (case[0], case[7], case[8]);
        for t in 0..128 {
            for i in 0..n / 2 {
                let (row, col) = fragment(t, i);
                let product: f64 = (0..16).map(|k| probe_a(row, k) * probe_b(k, col)).sum();
                let c = if add_c == 1 { probe_c(row, col) } else { 0.0 };
                e[base + (t * n / 2 + i) as usize] = (f64::from(chained) * product + c) as f32;
            }
        }
        base += 128 * n as usize / 2;
    }
    // Parity 0 / parity 1 on a fresh barrier, after one arrival, after two.
    e[PHASES_BASE..PHASES_BASE + 6].copy_from_slice(&[0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
    for b in 0..2 {
        for r in 0..BOX_ROWS {
            for col in 0..BOX_COLS {
                e[TMA_BASE + (b * BOX_ROWS + r) * BOX_COLS + col] =
                    tensor_value(box_row(b, r), col) as f32;
            }
        }
    }
    for t in 0..128 {
        for i in 0..8 {
            let (m, n) = fragment(t, i);
            let d: f64 = (0..64).map(|k| probe_a(m, k) * box_element(n, k)).sum();
            e[TMA_MMA_BASE + (t * 8 + i) as usize] = d as f32;
        }
    }
    // The 3-d box at (column 0, row 2, half 0): element (c, r, h) = tensor (row 2 + r, column 32 h + c).
    for (i, value) in e[TMA3D_BASE..NAMED_BASE].iter_mut().enumerate() {
        let (c, r, h) = (i % 32, i / 32 % 8, i / 256);
        *value = tensor_value(2 + r as i64, 32 * h + c) as f32;
    }
    // Handed from warps 0-1 to warps 2-3 through named barrier 1.
    for (i, value) in e[NAMED_BASE..].iter_mut().enumerate() {
        *value = (1000 + i + 1) as f32;
    }
    e
}

fn expected() -> Vec<f32> {
    expected_with(|n, k| tensor_value(box_row(0, n as usize), k as usize))
}

/// Section, thread and slot of a dump value, for messages and the golden file.
fn describe(index: usize) -> (String, usize, usize) {
    if index < CASE_TABLE {
        return ("header".into(), 0, index);
    }
    if index < WGMMA_BASE {
        let i = index - CASE_TABLE;
        return ("cases".into(), i / 9, i % 9);
    }
    let mut base = WGMMA_BASE;
    for (c, case) in CASES.iter().enumerate() {
        let half = case[0] as usize / 2;
        if index < base + 128 * half {
            let i = index - base;
            return (format!("wgmma{c}.n{}", case[0]), i / half, i % half);
        }
        base += 128 * half;
    }
    if index < TMA_BASE {
        return ("phases".into(), 0, index - PHASES_BASE);
    }
    if index < TMA_MMA_BASE {
        let i = index - TMA_BASE;
        return ("tma".into(), i / BOX_COLS, i % BOX_COLS);
    }
    if index < TMA3D_BASE {
        let i = index - TMA_MMA_BASE;
        return ("tma_mma".into(), i / 8, i % 8);
    }
    if index < NAMED_BASE {
        let i = index - TMA3D_BASE;
        return ("tma3d".into(), i / 32, i % 32);
    }
    ("named".into(), index - NAMED_BASE + 64, 0)
}

fn mismatches(actual: &[f32], expected: &[f32]) -> Vec<usize> {
    assert_eq!(actual.len(), expected.len(), "dump lengths differ");
    (0..actual.len())
        .filter(|&i| actual[i].to_bits() != expected[i].to_bits())
        .collect()
}

fn assert_same(actual: &[f32], expected: &[f32], what: &str) {
    let bad = mismatches(actual, expected);
    let lines: Vec<String> = bad
        .iter()
        .take(10)
        .map(|&i| {
            let (section, thread, slot) = describe(i);
            format!(
                "{section} thread/row {thread} slot {slot}: {} instead of {}",
                actual[i], expected[i]
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} mismatches\n{}",
        bad.len(),
        lines.join("\n")
    );
}

// ---- Running it on the emulator ---------------------------------------------------------------------

/// The TMA tensor in f16, 16-byte aligned: TMA_ROWS rows of 64 (row stride 128 bytes).
fn tensor_storage() -> Vec<u128> {
    let mut storage = vec![0u128; TMA_ROWS * BOX_COLS * 2 / 16];
    // SAFETY: the storage holds TMA_ROWS * 64 u16 values.
    let halves = unsafe {
        std::slice::from_raw_parts_mut(storage.as_mut_ptr().cast::<u16>(), TMA_ROWS * BOX_COLS)
    };
    for (i, h) in halves.iter_mut().enumerate() {
        *h = f16::from_f64(tensor_value((i / 64) as i64, i % 64)).to_bits();
    }
    storage
}

fn tensor_spec() -> TensorMapSpec {
    TensorMapSpec {
        data_type: TensorMapDataType::Float16,
        global_dim: vec![BOX_COLS as u64, TMA_ROWS as u64],
        global_strides: vec![(BOX_COLS * 2) as u64],
        box_dim: vec![BOX_COLS as u32, BOX_ROWS as u32],
        swizzle: TensorMapSwizzle::B128,
    }
}

/// The same tensor as (32 columns, rows, 2 halves of a row): the half stride (64 bytes) is below the row
/// extent, as a head-dim-128 kernel's 64-byte slices are.
fn tensor_spec_3d() -> TensorMapSpec {
    TensorMapSpec {
        data_type: TensorMapDataType::Float16,
        global_dim: vec![32, TMA_ROWS as u64, 2],
        global_strides: vec![(BOX_COLS * 2) as u64, 64],
        box_dim: vec![32, 8, 2],
        swizzle: TensorMapSwizzle::B64,
    }
}

fn launch() -> KernelLaunch {
    KernelLaunch {
        name: "hopper_probe",
        grid: (1, 1, 1),
        block: (128, 1, 1),
        shared_bytes: SHARED_BYTES,
    }
}

fn run_on_emulator(schedule: Schedule, planted: i32) -> Result<Vec<f32>, AttentionError> {
    run_with_block(schedule, planted, 128)
}

fn run_with_block(
    schedule: Schedule,
    planted: i32,
    threads: u32,
) -> Result<Vec<f32>, AttentionError> {
    let tensor = tensor_storage();
    // SAFETY: `tensor` outlives the launch that reads it through the map.
    let map = unsafe { TensorMap::encode_tiled(tensor.as_ptr().cast(), &tensor_spec()) }?;
    // SAFETY: as above.
    let map_3d = unsafe { TensorMap::encode_tiled(tensor.as_ptr().cast(), &tensor_spec_3d()) }?;
    let mut out = vec![0.0f32; VALUES];
    let params = AttentionParams {
        q: std::ptr::from_ref(&map).cast::<c_void>(),
        k: tensor.as_ptr().cast::<c_void>(),
        v: std::ptr::from_ref(&map_3d).cast::<c_void>(),
        out: out.as_mut_ptr().cast::<c_void>(),
        seq_q: planted,
        ..AttentionParams::default()
    };
    // SAFETY: the probe reads the maps (p.q, p.v) and the tensor through them, and writes VALUES floats
    // to p.out; all of them live until the launch returns.
    unsafe {
        Emulator::new().with_schedule(schedule).launch(
            &KernelLaunch {
                block: (threads, 1, 1),
                ..launch()
            },
            &params,
        )
    }?;
    Ok(out)
}

#[test]
fn probe_on_the_emulator_matches_the_plain_products_under_every_schedule() {
    let expected = expected();
    for schedule in [
        Schedule::RoundRobin,
        Schedule::Reversed,
        Schedule::Random { seed: 11 },
    ] {
        let dump = run_on_emulator(schedule, PLANTED_NONE).expect("the probe failed");
        assert_same(
            &dump,
            &expected,
            &format!("emulator ({schedule}) against the statements"),
        );
    }
}

fn emulation_error(planted: i32) -> String {
    match run_on_emulator(Schedule::RoundRobin, planted) {
        Err(AttentionError::Emulation { kernel, message }) => {
            assert_eq!(kernel, "hopper_probe");
            println!("planted bug {planted}: {message}");
            message
        }
        other => panic!("planted bug {planted}: expected an Emulation error, got {other:?}"),
    }
}

/// A consumer that never waits on the TMA's mbarrier: its wgmma reads the box before the load landed.
#[test]
fn planted_missing_wait_is_reported_at_the_wgmma() {
    let message = emulation_error(PLANTED_MISSING_WAIT);
    assert!(
        message.contains("wgmma.mma_async.f16 (A in registers) at hopper_probe.cu:")
            && message.contains("has not finished writing: wait on its mbarrier"),
        "{message}"
    );
}

/// Waiting for parity 1 on a fresh barrier returns at once ("the preceding phase"): the wgmma then reads
/// the box while the barrier still expects the load's bytes.
#[test]
fn planted_wrong_phase_bit_is_reported_at_the_wgmma() {
    let message = emulation_error(PLANTED_WRONG_PHASE);
    assert!(
        message.contains("has not finished writing")
            && message.contains(
                "phase 0 has 0 of 1 arrivals pending and 4096 transaction bytes outstanding"
            ),
        "{message}"
    );
}

/// A second wait for a phase no thread ever completes: every thread blocks, a deadlock naming the wait.
#[test]
fn planted_wait_for_a_phase_that_never_completes_is_a_deadlock() {
    let message = emulation_error(PLANTED_NEVER_PHASE);
    assert!(
        message.contains("deadlock, no thread can continue: threads {0-127} wait at mbarrier.try_wait.parity at hopper_probe.cu:")
            && message.contains("for the phase of parity 1 of the mbarrier")
            && message.contains("which never completes"),
        "{message}"
    );
}

#[test]
fn planted_descriptor_outside_shared_memory_is_reported() {
    let message = emulation_error(PLANTED_OUTSIDE);
    assert!(
        message.contains("the B descriptor")
            && message.contains(&format!(
                "outside the block's {SHARED_BYTES} bytes of shared memory"
            )),
        "{message}"
    );
}

/// wgmmas issued without a wgmma.fence since the thread's last wait.
#[test]
fn planted_missing_fence_is_reported() {
    let message = emulation_error(PLANTED_NO_FENCE);
    assert!(
        message.contains("wgmma.mma_async.f16 (A in registers) at hopper_probe.cu:")
            && message.contains("without a wgmma.fence since this thread's last wgmma.wait_group"),
        "{message}"
    );
}

/// Misuses with one check each: an arrival before mbarrier.init, descriptors that differ between the
/// threads of a warpgroup, a swizzled TMA box off the swizzle's 1024-byte repeat.
#[test]
fn planted_barrier_descriptor_and_alignment_misuse_is_reported() {
    for (planted, expected) in [
        (PLANTED_NO_INIT, "mbarrier.arrive at hopper_probe.cu:"),
        (
            PLANTED_SPLIT_DESCRIPTOR,
            "passes other descriptors or scale-d than the first thread of its warpgroup",
        ),
        (
            PLANTED_UNALIGNED_BOX,
            "is not 1024-byte aligned (a swizzled box starts at the swizzle's repeat)",
        ),
    ] {
        let message = emulation_error(planted);
        assert!(
            message.contains(expected),
            "planted bug {planted}: {message}"
        );
    }
    assert!(emulation_error(PLANTED_NO_INIT).contains("was never initialised (mbarrier.init)"));
}

/// A warpgroup operation needs all 128 threads: half of them leaving before a wgmma, or a block that is
/// not a whole warpgroup.
#[test]
fn planted_partial_warpgroups_are_reported() {
    let message = emulation_error(PLANTED_HALF_GROUP);
    assert!(
        message.contains(
            "exited while 64 threads of its warpgroup wait for it at wgmma.mma_async.f16"
        ),
        "{message}"
    );
    match run_with_block(Schedule::RoundRobin, PLANTED_NONE, 96) {
        Err(AttentionError::Emulation { message, .. }) => assert!(
            message.contains("wgmma.mma_async.bf16 at hopper_probe.cu:")
                && message.contains("needs a full warpgroup of 128 threads"),
            "{message}"
        ),
        other => panic!("a 96-thread block: {other:?}"),
    }
}

/// Named barriers: consumers that count another number of threads than the producers, and producers
/// that never arrive (the consumers then wait forever).
#[test]
fn planted_named_barrier_misuse_is_reported() {
    let message = emulation_error(PLANTED_NAMED_COUNT);
    assert!(
        message.contains("bar.sync 1 at hopper_probe.cu:")
            && message
                .contains("arrives with the count 96 while 64 threads arrived with the count 128"),
        "{message}"
    );
    let message = emulation_error(PLANTED_NAMED_SKIP);
    assert!(
        message.contains("deadlock, no thread can continue")
            && message.contains("threads {64-127} wait at bar.sync 1 at hopper_probe.cu:")
            && message.contains("64 of 128 threads have arrived"),
        "{message}"
    );
}

/// Accumulators read between the wgmma and the wait that covers it are NaN on the emulator (undefined
/// on the GPU); everything else is unchanged.
#[test]
fn planted_early_accumulator_read_gives_nan() {
    let dump = run_on_emulator(Schedule::RoundRobin, PLANTED_EARLY_READ).expect("the probe failed");
    let right = expected();
    let bad = mismatches(&dump, &right);
    assert!(
        bad.iter().all(|&i| (TMA_MMA_BASE..TMA3D_BASE).contains(&i)),
        "sections other than tma_mma changed"
    );
    assert!(
        dump[TMA_MMA_BASE..TMA3D_BASE].iter().all(|x| x.is_nan()),
        "accumulators read before wgmma.wait_group were not NaN"
    );
}

/// Reading the 128-byte-swizzled box through a 64-byte-swizzle descriptor gives the product with B's
/// elements permuted exactly as the two swizzles say (and leaves every other section right).
#[test]
fn planted_wrong_swizzle_gives_the_product_of_the_permuted_tile() {
    let dump =
        run_on_emulator(Schedule::RoundRobin, PLANTED_WRONG_SWIZZLE).expect("the probe failed");
    let right = expected();
    let bad = mismatches(&dump, &right);
    assert!(!bad.is_empty(), "a wrong swizzle went unnoticed");
    assert!(
        bad.iter().all(|&i| (TMA_MMA_BASE..TMA3D_BASE).contains(&i)),
        "sections other than tma_mma changed"
    );
    // The descriptor's logical address of (n, k): K-major, 64-byte rows, 8-row groups 1024 bytes apart;
    // the byte there holds the box element whose 128-byte-swizzled address it is (the swizzle is its own
    // inverse). Offsets are from the box, which starts at a 1024-byte boundary.
    let wrong = expected_with(|n, k| {
        let logical = (n % 8) * 64 + (n / 8) * 1024 + 2 * (k % 16) + 32 * (k / 16);
        let physical = swizzle_address(logical, 64);
        let landed = swizzle_address(physical, 128);
        tensor_value(
            box_row(0, (landed / 128) as usize),
            (landed % 128 / 2) as usize,
        )
    });
    assert_same(&dump, &wrong, "probe with the planted 64-byte swizzle");
}

// ---- The GPU's dump ---------------------------------------------------------------------------------

/// The probe's golden-dump description (emulator_support/golden.rs).
const PROBE: golden::Probe<'static> = golden::Probe {
    file: "hopper_probe.txt",
    kernel: "kernels/hopper_probe.cu",
    test: "tests/emulator_hopper_probe.rs",
    index: "THREAD",
    describe,
};

#[test]
fn probe_on_the_emulator_matches_the_gpu_golden_dump() {
    let Some(golden) = PROBE.golden() else {
        return;
    };
    assert_same(
        &run_on_emulator(Schedule::RoundRobin, PLANTED_NONE).expect("the probe failed"),
        &golden,
        "emulator against the GPU's golden dump",
    );
}

/// On an sm_90 GPU with a build that has the kernels: the probe there against the statements and the
/// emulator; the dump goes to $GPU_OUT/hopper_probe.txt when GPU_OUT is set.
#[test]
fn probe_on_a_gpu_matches_the_emulator() {
    match run_on_gpu() {
        Ok(Some((gpu, device))) => {
            PROBE.write_gpu_dump(&gpu, &device);
            assert_same(
                &gpu,
                &expected(),
                &format!("hopper probe on {device} against the statements"),
            );
            assert_same(
                &run_on_emulator(Schedule::RoundRobin, PLANTED_NONE).expect("the probe failed"),
                &gpu,
                &format!("emulator against {device}"),
            );
        }
        Ok(None) => println!("skipped: no sm_90 CUDA device"),
        Err(e) => panic!("the hopper probe failed on the GPU: {e}"),
    }
}

/// Runs the probe from the embedded fatbin on device 0 with a driver-encoded tensor map; None without a
/// driver, a device of compute capability 9.x or kernels.
fn run_on_gpu() -> Result<Option<(Vec<f32>, String)>, String> {
    use cudarc::driver::sys;
    use cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};

    let Some((ctx, function, device)) = golden::gpu_function("hopper_probe", Some(9))? else {
        return Ok(None);
    };
    let stream = ctx.default_stream();
    let tensor = tensor_storage();
    // SAFETY: the storage holds TMA_ROWS * 64 u16 values.
    let halves =
        unsafe { std::slice::from_raw_parts(tensor.as_ptr().cast::<u16>(), TMA_ROWS * BOX_COLS) };
    let tensor_dev = stream.clone_htod(halves).map_err(|e| e.to_string())?;
    let out = stream
        .alloc_zeros::<f32>(VALUES)
        .map_err(|e| e.to_string())?;
    let encode = |spec: &TensorMapSpec, swizzle: sys::CUtensorMapSwizzle| {
        let (address, _guard) = tensor_dev.device_ptr(&stream);
        let element_strides = vec![1u32; spec.global_dim.len()];
        let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
        // SAFETY: every array has the rank's entries (strides one fewer); the driver writes the map.
        let status = unsafe {
            sys::cuTensorMapEncodeTiled(
                map.as_mut_ptr(),
                sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                spec.global_dim.len() as u32,
                address as *mut c_void,
                spec.global_dim.as_ptr(),
                spec.global_strides.as_ptr(),
                spec.box_dim.as_ptr(),
                element_strides.as_ptr(),
                sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                swizzle,
                sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        if status != sys::CUresult::CUDA_SUCCESS {
            return Err(format!("cuTensorMapEncodeTiled: {status:?}"));
        }
        // SAFETY: initialised by the successful call above.
        Ok(unsafe { map.assume_init() })
    };
    let map_2d = encode(
        &tensor_spec(),
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
    )?;
    let map_3d = encode(
        &tensor_spec_3d(),
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
    )?;
    let map_dev = stream
        .clone_htod(&map_2d.opaque)
        .map_err(|e| e.to_string())?;
    let map_3d_dev = stream
        .clone_htod(&map_3d.opaque)
        .map_err(|e| e.to_string())?;
    {
        let (map_3d_address, _m3) = map_3d_dev.device_ptr(&stream);
        let (map_address, _m) = map_dev.device_ptr(&stream);
        let (tensor_address, _t) = tensor_dev.device_ptr(&stream);
        let (out_address, _o) = out.device_ptr(&stream);
        let params = AttentionParams {
            q: map_address as *const c_void,
            k: tensor_address as *const c_void,
            v: map_3d_address as *const c_void,
            out: out_address as *mut c_void,
            ..AttentionParams::default()
        };
        let config = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: SHARED_BYTES,
        };
        // SAFETY: the probe reads the two maps (256-byte-aligned device memory) and the tensor through
        // them, and writes VALUES floats of `out`.
        unsafe { stream.launch_builder(&function).arg(&params).launch(config) }
            .map_err(|e| e.to_string())?;
    }
    let host = stream.clone_dtoh(&out).map_err(|e| e.to_string())?;
    Ok(Some((host, device)))
}

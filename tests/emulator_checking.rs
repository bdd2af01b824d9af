//! The checking mode: planted-bug kernels (tests/planted/) that the emulator, ThreadSanitizer or
//! AddressSanitizer must report, their fixed twins that must run clean under all three, and the product's
//! kernels (naive, flash, flash f32) run clean under both sanitizers, each kernel geometry on at least one
//! shape that keeps every warp busy on two key tiles. Every test here fails if the tool that should speak
//! stays silent. The checker programs are built on first use (see emulator_support/checker.rs); they need g++
//! with libtsan and libasan (scripts/install-emulator-deps.sh).

#[path = "emulator_support/checker.rs"]
mod checker;

use checker::{checker, Job, Run, Sanitizer};
use cuda_attention::binding::{plan_params, problem_params};
use cuda_attention::emulator::Schedule;
use cuda_attention::launch::{flash_launch, naive_launches, KernelLaunch};
use cuda_attention::registry::{self, KernelFamily, KernelSpec};
use cuda_attention::sys::AttentionParams;
use cuda_attention::Tensor;
use cuda_attention::{AttentionProblem, AttentionShape, DType};

/// How a planted kernel is launched: one block, f32 buffers q (input) and out.
struct Planted {
    kernel: &'static str,
    threads: u32,
    shared_bytes: u32,
    inputs: usize,
    outputs: usize,
    /// p.seq_q: the number of valid elements, where the kernel uses it.
    valid: i32,
    /// Outputs the fixed twin leaves unwritten (NaN) on purpose.
    unwritten: usize,
}

const PLANTED: &[Planted] = &[
    Planted {
        kernel: "planted_missing_barrier",
        threads: 64,
        shared_bytes: 256,
        inputs: 128,
        outputs: 64,
        valid: 64,
        unwritten: 0,
    },
    Planted {
        kernel: "planted_missing_second_barrier",
        threads: 64,
        shared_bytes: 256,
        inputs: 128,
        outputs: 64,
        valid: 64,
        unwritten: 0,
    },
    Planted {
        kernel: "planted_divergent_barrier",
        threads: 64,
        shared_bytes: 256,
        inputs: 64,
        outputs: 64,
        valid: 64,
        unwritten: 0,
    },
    Planted {
        kernel: "planted_early_return",
        threads: 64,
        shared_bytes: 256,
        inputs: 64,
        outputs: 64,
        valid: 40,
        unwritten: 24,
    },
    Planted {
        kernel: "planted_unaligned_ldmatrix",
        threads: 32,
        shared_bytes: 16 * 16 * 2 + 16,
        inputs: 0,
        outputs: 128,
        valid: 0,
        unwritten: 0,
    },
    Planted {
        kernel: "planted_global_out_of_bounds",
        threads: 64,
        shared_bytes: 0,
        inputs: 64,
        outputs: 64,
        valid: 64,
        unwritten: 0,
    },
    Planted {
        kernel: "planted_shared_out_of_bounds",
        threads: 64,
        shared_bytes: 256,
        inputs: 64,
        outputs: 64,
        valid: 64,
        unwritten: 0,
    },
    Planted {
        kernel: "planted_divergent_shuffle",
        threads: 32,
        shared_bytes: 0,
        inputs: 32,
        outputs: 32,
        valid: 32,
        unwritten: 0,
    },
    Planted {
        kernel: "planted_partial_mask",
        threads: 32,
        shared_bytes: 0,
        inputs: 32,
        outputs: 32,
        valid: 16,
        unwritten: 16,
    },
    Planted {
        kernel: "planted_cp_async_before_wait",
        threads: 32,
        shared_bytes: 512,
        inputs: 256,
        outputs: 256,
        valid: 0,
        unwritten: 0,
    },
    Planted {
        kernel: "planted_cp_async_overwrite_k",
        threads: 128,
        shared_bytes: 4096,
        inputs: 2048,
        outputs: 128,
        valid: 0,
        unwritten: 0,
    },
    Planted {
        kernel: "planted_cp_async_overwrite_v",
        threads: 128,
        shared_bytes: 4096,
        inputs: 2048,
        outputs: 128,
        valid: 0,
        unwritten: 0,
    },
];

fn planted(kernel: &str) -> &'static Planted {
    PLANTED
        .iter()
        .find(|p| p.kernel == kernel)
        .unwrap_or_else(|| panic!("{kernel} is not in the table"))
}

/// Runs planted kernel `kernel` (or its twin, `kernel_fixed`) on the checker built with `sanitizer`.
fn run_planted(kernel: &str, fixed: bool, sanitizer: Sanitizer, schedule: Schedule) -> Run {
    let case = planted(kernel);
    let params = AttentionParams {
        seq_q: case.valid,
        ..AttentionParams::default()
    };
    let name = if fixed {
        format!("{kernel}_fixed")
    } else {
        kernel.to_string()
    };
    let job = Job::new(&params, DType::F32)
        .input("q", case.inputs, DType::F32)
        .output("out", case.outputs, 4)
        .schedule(schedule)
        .launch(&KernelLaunch {
            // Planted kernels are picked by name at run time; a test process may leak a few names.
            name: Box::leak(name.into_boxed_str()),
            grid: (1, 1, 1),
            block: (case.threads, 1, 1),
            shared_bytes: case.shared_bytes,
        });
    checker(sanitizer).run(&job)
}

/// The planted bug must make the emulator stop the kernel with a message that names `site` and says
/// `what`, under two schedules.
fn assert_emulator_reports(kernel: &str, what: &str, site: &str) {
    for schedule in [
        Schedule::RoundRobin,
        Schedule::Reversed,
        Schedule::Random { seed: 5 },
    ] {
        let run = run_planted(kernel, false, Sanitizer::None, schedule);
        let message = run.emulator_error().unwrap_or_else(|| {
            panic!(
                "the emulator stayed silent on {kernel} under {schedule}:\n{}",
                run.describe()
            )
        });
        assert!(
            message.contains(what) && message.contains(site),
            "{kernel} under {schedule}: expected '{what}' at {site}, got: {message}"
        );
    }
}

/// The planted bug must be reported by ThreadSanitizer as a race in `file`; returns the run.
fn assert_race_reported(kernel: &str, file: &str) -> Run {
    let run = run_planted(kernel, false, Sanitizer::Thread, Schedule::RoundRobin);
    assert!(
        run.race() && run.stderr.contains(file),
        "ThreadSanitizer stayed silent on {kernel}:\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("thread (") && run.stderr.contains(kernel),
        "the report should name the CUDA threads"
    );
    run
}

/// The planted overwrite must be reported by ThreadSanitizer as a race in `file` whose write is the
/// cp.async's, made by `hook` (emulator/cuda/async_copy.h) for the issuing thread.
fn assert_async_write_race_reported(kernel: &str, file: &str, hook: &str) {
    let run = assert_race_reported(kernel, file);
    assert!(
        run.stderr.contains(hook) && run.stderr.contains("cp_async_"),
        "the race on {kernel} should involve the cp.async write ({hook}):\n{}",
        run.describe()
    );
}

/// The planted bug must be reported by AddressSanitizer as a heap-buffer-overflow in `file`.
fn assert_overflow_reported(kernel: &str, file: &str) {
    let run = run_planted(kernel, false, Sanitizer::Address, Schedule::RoundRobin);
    assert!(
        run.address_error()
            && run.stderr.contains("heap-buffer-overflow")
            && run.stderr.contains(file),
        "AddressSanitizer stayed silent on {kernel}:\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains(&format!("of kernel {kernel}")),
        "the report should name the CUDA thread"
    );
}

#[test]
fn missing_barrier_is_reported_as_a_race() {
    assert_race_reported("planted_missing_barrier", "missing_barrier.cu:");
}

#[test]
fn missing_second_barrier_is_reported_as_a_race() {
    assert_race_reported("planted_missing_second_barrier", "missing_barrier.cu");
}

/// A K tile overwritten by the next cp.async while other warps still read it: the issue and the landing
/// both race with the reads (whichever ThreadSanitizer meets first is reported).
#[test]
fn cp_async_overwrite_of_a_k_tile_is_reported_as_a_race() {
    assert_async_write_race_reported(
        "planted_cp_async_overwrite_k",
        "cp_async_overwrite.cu:",
        "cuda_emu::async_copy_",
    );
}

/// A V tile overwritten by the next cp.async while other warps still read it, the copy landing only after
/// a later barrier: only the write at the issue races, so the issue must be a write ThreadSanitizer sees.
#[test]
fn cp_async_overwrite_of_a_v_tile_is_reported_as_a_race() {
    assert_async_write_race_reported(
        "planted_cp_async_overwrite_v",
        "cp_async_overwrite.cu:",
        "cuda_emu::async_copy_issue",
    );
}

#[test]
fn divergent_barrier_is_reported() {
    assert_emulator_reports(
        "planted_divergent_barrier",
        "divergent barriers",
        "divergent_barrier.cu:",
    );
}

#[test]
fn barrier_after_an_early_return_is_reported() {
    assert_emulator_reports(
        "planted_early_return",
        "every thread of the block must reach every barrier",
        "divergent_barrier.cu:",
    );
}

#[test]
fn unaligned_ldmatrix_is_reported() {
    assert_emulator_reports(
        "planted_unaligned_ldmatrix",
        "is not 16-byte aligned",
        "unaligned_ldmatrix.cu:",
    );
}

#[test]
fn global_out_of_bounds_read_is_reported() {
    assert_overflow_reported("planted_global_out_of_bounds", "out_of_bounds.cu:17");
}

#[test]
fn shared_out_of_bounds_write_is_reported() {
    assert_overflow_reported("planted_shared_out_of_bounds", "out_of_bounds.cu:29");
}

#[test]
fn divergent_shuffle_is_reported() {
    assert_emulator_reports(
        "planted_divergent_shuffle",
        "divergent warp collective",
        "warp_collectives.cu:",
    );
}

#[test]
fn shuffle_with_exited_lanes_is_reported() {
    // Depending on the schedule, the lanes that return exit before or after the others reach the shuffle.
    assert_emulator_reports(
        "planted_partial_mask",
        "exited",
        "__shfl_xor_sync at device_helpers.cuh:",
    );
}

#[test]
fn cp_async_read_before_wait_shows_nan() {
    let run = run_planted(
        "planted_cp_async_before_wait",
        false,
        Sanitizer::None,
        Schedule::RoundRobin,
    );
    let nan = run
        .clean_nan_outputs()
        .unwrap_or_else(|| panic!("{}", run.describe()));
    assert_eq!(
        nan, 256,
        "every value read before its cp.async wait must be NaN"
    );
}

/// Every twin runs clean under the emulator, ThreadSanitizer and AddressSanitizer, with no NaN left in
/// the outputs it writes.
#[test]
fn fixed_twins_run_clean_everywhere() {
    for case in PLANTED {
        for sanitizer in Sanitizer::ALL {
            let run = run_planted(case.kernel, true, sanitizer, Schedule::Random { seed: 11 });
            let nan = run.clean_nan_outputs().unwrap_or_else(|| {
                panic!(
                    "{}_fixed under {sanitizer:?} reported something:\n{}",
                    case.kernel,
                    run.describe()
                )
            });
            assert_eq!(
                nan, case.unwritten,
                "{}_fixed under {sanitizer:?} left NaN outputs",
                case.kernel
            );
        }
    }
}

/// A problem the checking mode runs a kernel family on: dtype, shape, causal.
type Case = (DType, AttentionShape, bool);

/// The launches of a family's forward pass for a case.
type Launches = fn(&Case) -> Vec<KernelLaunch>;

/// The naive forward pass (scores, softmax, P V). The f32 case keeps every warp of every kernel busy on
/// two key tiles (see `every_kernel_geometry_is_checked_with_every_warp_busy`); the others add GQA,
/// causal masks, a ragged last row tile and a wide head dim.
fn naive_cases() -> Vec<Case> {
    vec![
        (
            DType::F16,
            AttentionShape::new(1, 33, 4, 40)
                .with_seq_k(17)
                .with_heads_kv(2),
            true,
        ),
        (
            DType::F32,
            AttentionShape::new(2, 17, 2, 64)
                .with_seq_k(33)
                .with_heads_kv(1),
            false,
        ),
        (
            DType::Bf16,
            AttentionShape::new(1, 5, 2, 128).with_seq_k(40),
            true,
        ),
    ]
}

/// The tensor-core flash kernel: causal with GQA, ragged rows and a warp without rows; then the smallest
/// shapes that keep all four warps busy on two key tiles, at a narrow head dim (40, zero-padded to the
/// d64 kernel: 32 rows per warp, 64-key tiles) and at a wide one (136, padded to d160: 16 rows per warp,
/// 32-key tiles).
fn flash_cases() -> Vec<Case> {
    vec![
        (
            DType::F16,
            AttentionShape::new(1, 70, 2, 64)
                .with_seq_k(33)
                .with_heads_kv(1),
            true,
        ),
        (
            DType::Bf16,
            AttentionShape::new(1, 97, 1, 40).with_seq_k(65),
            false,
        ),
        (
            DType::F16,
            AttentionShape::new(1, 49, 1, 136).with_seq_k(33),
            false,
        ),
    ]
}

/// The f32 flash kernel: eight warps of one row each, causal with GQA, every row seeing both key tiles.
fn flash_f32_cases() -> Vec<Case> {
    vec![(
        DType::F32,
        AttentionShape::new(1, 8, 2, 40)
            .with_seq_k(40)
            .with_heads_kv(1),
        true,
    )]
}

fn naive_case_launches(&(dtype, shape, _): &Case) -> Vec<KernelLaunch> {
    naive_launches(&shape, dtype).unwrap()
}

fn flash_case_launches(&(dtype, shape, _): &Case) -> Vec<KernelLaunch> {
    vec![flash_launch(&shape, dtype, cuda_attention::registry::KernelFamily::Flash).unwrap()]
}

/// Runs every case on both sanitizer builds: no race between CUDA threads or blocks (two host threads,
/// random block order), no access outside q, k, v, out, lse, scores or shared memory, no NaN left in out.
fn assert_cases_run_clean(family: &str, cases: &[Case], launches: Launches) {
    for sanitizer in [Sanitizer::Thread, Sanitizer::Address] {
        for (index, case) in cases.iter().enumerate() {
            let &(dtype, shape, causal) = case;
            let problem = AttentionProblem::new(shape).with_causal(causal);
            let job = job_for(
                &problem,
                dtype,
                &launches(case),
                Schedule::Random { seed: index as u64 },
            );
            let run = checker(sanitizer).run(&job);
            let nan = run.clean_nan_outputs().unwrap_or_else(|| {
                panic!(
                    "{family} {dtype} {shape:?} causal {causal} under {sanitizer:?}:\n{}",
                    run.describe()
                )
            });
            assert_eq!(nan, 0, "{family} {dtype} {shape:?}: outputs left unwritten");
        }
    }
}

/// The naive forward pass on the sanitizer builds.
#[test]
fn naive_kernels_run_clean_under_both_sanitizers() {
    assert_cases_run_clean("naive", &naive_cases(), naive_case_launches);
}

/// The flash kernel on the sanitizer builds: no race between its warps (cp.async pipeline, ldmatrix
/// after barriers), no access outside its buffers or its shared memory (ragged tiles, padded head dims).
#[test]
fn flash_kernel_runs_clean_under_both_sanitizers() {
    assert_cases_run_clean("flash", &flash_cases(), flash_case_launches);
}

/// The f32 flash kernel on the sanitizer builds (K and V tiles reused through shared memory by all warps).
#[test]
fn flash_f32_kernel_runs_clean_under_both_sanitizers() {
    assert_cases_run_clean("flash f32", &flash_f32_cases(), flash_case_launches);
}

/// A ragged case for the checking mode: dtype, head dim, page size (0: packed K/V), and the (seq_q, seq_k)
/// of each sequence (the first keeps every warp busy on two key tiles; the others are short, empty of keys,
/// or empty of rows).
type RaggedCase = (DType, usize, usize, [(usize, usize); 3]);

/// The ragged kernels: a paged cache whose pages do not hold whole tiles (the row gather), one whose pages
/// do (the tile copy), packed K/V, at head dims 64 (32 rows per warp), 136 (16 rows per warp, padded to
/// 160) and the f32 path.
fn ragged_cases() -> Vec<RaggedCase> {
    vec![
        (DType::F16, 64, 3, [(97, 130), (5, 0), (0, 7)]),
        (DType::Bf16, 136, 32, [(49, 70), (3, 40), (0, 0)]),
        (DType::F16, 40, 0, [(97, 65), (2, 9), (0, 3)]),
        (DType::F32, 40, 5, [(8, 40), (3, 11), (0, 2)]),
    ]
}

/// The problem, the exact-size job and the launch of one ragged case: two query heads on one key/value
/// head, causal, sinks; the block table maps each sequence's pages to distinct shuffled pages.
fn ragged_job(case: &RaggedCase, schedule: Schedule) -> (Job, KernelLaunch, AttentionShape) {
    use cuda_attention::{KeyStorage, Paging, Ragged};
    let &(dtype, d, page_size, lens) = case;
    let (max_q, max_k) = (
        lens.iter().map(|l| l.0).max().unwrap(),
        lens.iter().map(|l| l.1).max().unwrap(),
    );
    let shape = AttentionShape {
        batch: lens.len(),
        seq_q: max_q,
        seq_k: max_k,
        heads_q: 2,
        heads_kv: 1,
        head_dim: d,
    };
    let total_q: usize = lens.iter().map(|l| l.0).sum();
    let mut cu_q = vec![0i64];
    let mut cu_k = vec![0i64];
    for &(sq, sk) in &lens {
        cu_q.push(cu_q.last().unwrap() + sq as i64);
        cu_k.push(cu_k.last().unwrap() + sk as i64);
    }
    let keys = if page_size == 0 {
        KeyStorage::Packed {
            total_k: *cu_k.last().unwrap() as usize,
        }
    } else {
        let mut paging = Paging::new(0, page_size, max_k);
        paging.num_pages = lens.len() * paging.pages_per_seq;
        KeyStorage::Paged(paging)
    };
    let problem = AttentionProblem::ragged(
        shape,
        Ragged {
            total_q,
            keys,
            seqused_k: page_size > 0,
        },
    )
    .with_causal(true)
    .with_sinks(vec![0.5, -1.0]);
    let launch = flash_launch(&shape, dtype, KernelFamily::FlashVarlen).unwrap();
    let params = problem_params(&problem);
    let mut job = Job::new(&params, dtype)
        .input("q", problem.required_len(Tensor::Q).unwrap(), dtype)
        .input("k", problem.required_len(Tensor::K).unwrap(), dtype)
        .input("v", problem.required_len(Tensor::V).unwrap(), dtype)
        .output(
            "out",
            problem.required_len(Tensor::Out).unwrap(),
            dtype.size_bytes(),
        )
        .output("lse", problem.lse_elements().unwrap(), 4)
        .input("sinks", 2, DType::F32)
        .values("cu_seqlens_q", 4, &cu_q);
    job = match problem.paging() {
        None => job.values("cu_seqlens_k", 4, &cu_k),
        Some(paging) => {
            // Sequence b uses pages b, b + batch, b + 2 batch, ... (distinct, interleaved).
            let table: Vec<i64> = (0..lens.len() * paging.block_table_stride)
                .map(|i| {
                    let (b, n) = (i / paging.block_table_stride, i % paging.block_table_stride);
                    (n * lens.len() + b) as i64
                })
                .collect();
            let used: Vec<i64> = lens.iter().map(|l| l.1 as i64).collect();
            job.values("seqused_k", 4, &used)
                .values("block_table", 4, &table)
        }
    };
    let job = job.schedule(schedule).threads(2).launch(&launch);
    let first = AttentionShape {
        seq_q: lens[0].0,
        seq_k: lens[0].1,
        ..shape
    };
    (job, launch, first)
}

/// The ragged flash kernels on the sanitizer builds: no race, no access outside any buffer (exact-size q,
/// k, v, out, lse, metadata and block table: a page or table entry read out of range shows), every
/// output row written.
#[test]
fn ragged_kernels_run_clean_under_both_sanitizers() {
    for sanitizer in [Sanitizer::Thread, Sanitizer::Address] {
        for (index, case) in ragged_cases().iter().enumerate() {
            let (job, _, _) = ragged_job(case, Schedule::Random { seed: index as u64 });
            let run = checker(sanitizer).run(&job);
            let nan = run.clean_nan_outputs().unwrap_or_else(|| {
                panic!("ragged {case:?} under {sanitizer:?}:\n{}", run.describe())
            });
            assert_eq!(nan, 0, "ragged {case:?}: outputs left unwritten");
        }
    }
}

/// The K/V append on the sanitizer builds: slots in range, a padding slot (-1) and one past the cache;
/// no access outside the new rows, the slots or the caches.
#[test]
fn append_kernel_runs_clean_under_both_sanitizers() {
    for sanitizer in [Sanitizer::Thread, Sanitizer::Address] {
        let (job, _) = append_job();
        let run = checker(sanitizer).run(&job);
        assert!(
            run.clean_nan_outputs().is_some(),
            "append under {sanitizer:?}:\n{}",
            run.describe()
        );
    }
}

/// Five new rows of two heads of 40 (400 elements: every warp of a 256-thread block busy) into a
/// 4-page cache of page size 3 (HND).
fn append_job() -> (Job, KernelLaunch) {
    use cuda_attention::launch::append_launch;
    use cuda_attention::{KeyStorage, Paging, Ragged};
    let (rows, heads, d) = (5usize, 2usize, 40usize);
    let paging = Paging::new(4, 3, 6);
    let shape = AttentionShape {
        batch: 2,
        seq_q: 1,
        seq_k: 6,
        heads_q: heads,
        heads_kv: heads,
        head_dim: d,
    };
    let problem = AttentionProblem::ragged(
        shape,
        Ragged {
            total_q: 2,
            keys: KeyStorage::Paged(paging),
            seqused_k: true,
        },
    );
    let strides = paging.hnd(heads, d);
    let problem =
        problem
            .clone()
            .with_strides(problem.q_strides, strides, strides, problem.out_strides);
    let launch = append_launch(heads, d, rows, DType::F16).unwrap();
    let mut params = problem_params(&problem);
    params.new_rows = rows as i32;
    params.new_seq_stride = (heads * d) as i64;
    params.new_head_stride = d as i64;
    let cache = problem.required_len(Tensor::K).unwrap();
    let job = Job::new(&params, DType::F16)
        .input("k_new", rows * heads * d, DType::F16)
        .input("v_new", rows * heads * d, DType::F16)
        .values("slot_mapping", 8, &[11, -1, 0, 12, 5])
        .input("k_cache", cache, DType::F16)
        .input("v_cache", cache, DType::F16)
        .schedule(Schedule::Random { seed: 9 })
        .threads(2)
        .launch(&launch);
    (job, launch)
}

/// Split-KV on the sanitizer builds: the flash kernel writing partial states (three splits of a 200-key
/// decode, the last ones sharing tiles unevenly) and the combine reading them, on exact-size buffers.
fn split_job(schedule: Schedule) -> (Job, Vec<KernelLaunch>, AttentionShape) {
    use cuda_attention::plan::{split_workspace, Plan};
    use cuda_attention::{ForwardOptions, Splits};
    let shape = AttentionShape::new(2, 3, 4, 64)
        .with_seq_k(200)
        .with_heads_kv(2);
    let problem = AttentionProblem::new(shape)
        .with_causal(true)
        .with_sinks(vec![0.5, -1.0, 1.0, 0.0]);
    let caps = cuda_attention::emulator::Emulator::new().caps();
    let options = ForwardOptions::default()
        .with_lse(true)
        .with_splits(Splits::Fixed(3));
    let plan = Plan::new(&problem, DType::F16, options, caps).unwrap();
    let layout = split_workspace(&problem, plan.splits()).unwrap();
    let params = plan_params(&plan);
    assert_eq!(
        plan.gqa_packing(),
        Some(2),
        "the sanitizer runs the packed kernel"
    );
    let mut job = Job::new(&params, DType::F16)
        .input("q", problem.required_len(Tensor::Q).unwrap(), DType::F16)
        .input("k", problem.required_len(Tensor::K).unwrap(), DType::F16)
        .input("v", problem.required_len(Tensor::V).unwrap(), DType::F16)
        .input("sinks", 4, DType::F32)
        .output("out", problem.required_len(Tensor::Out).unwrap(), 2)
        .output("lse", problem.lse_elements().unwrap(), 4)
        .output(
            "partial_lse",
            plan.splits() * shape.heads_q * layout.rows,
            4,
        )
        .output(
            "partial_out",
            plan.splits() * layout.rows * shape.heads_q * 64,
            4,
        )
        .schedule(schedule)
        .threads(2);
    for launch in plan.launches() {
        job = job.launch(launch);
    }
    (job, plan.launches().to_vec(), shape)
}

/// Block-sparse flash on the sanitizer builds: two heads, 320 x 320 keys in 64 x 64 blocks with a query
/// block that lists nothing and 128-row query tiles whose two query blocks list different key blocks (the
/// walk merges them; warps skip the other block's tiles), causal; exact-size lists.
fn sparse_job(schedule: Schedule) -> Job {
    use cuda_attention::plan::Plan;
    use cuda_attention::{BlockMask, ForwardOptions, Splits};
    let shape = AttentionShape::new(1, 320, 2, 64);
    let rows = vec![vec![0], vec![0, 1, 4], vec![], vec![1, 3], vec![0, 2, 4]];
    let mask = BlockMask::from_rows(64, 64, 320, 320, &rows).unwrap();
    let problem = AttentionProblem::new(shape)
        .with_causal(true)
        .with_block_mask(mask.clone());
    let caps = cuda_attention::emulator::Emulator::new().caps();
    let options = ForwardOptions::default()
        .with_lse(true)
        .with_splits(Splits::Fixed(1));
    let plan = Plan::new(&problem, DType::F16, options, caps).unwrap();
    assert_eq!(plan.kernel(), cuda_attention::KernelKind::Flash);
    let params = plan_params(&plan);
    let wide = |list: &[i32]| list.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
    let mut job = Job::new(&params, DType::F16)
        .input("q", problem.required_len(Tensor::Q).unwrap(), DType::F16)
        .input("k", problem.required_len(Tensor::K).unwrap(), DType::F16)
        .input("v", problem.required_len(Tensor::V).unwrap(), DType::F16)
        .output("out", problem.required_len(Tensor::Out).unwrap(), 2)
        .output("lse", problem.lse_elements().unwrap(), 4)
        .values("block_row_offsets", 4, &wide(mask.row_offsets()))
        .values("block_col_indices", 4, &wide(mask.col_indices()))
        .schedule(schedule)
        .threads(2);
    for launch in plan.launches() {
        job = job.launch(launch);
    }
    job
}

/// merge_states on the sanitizer builds: 5 rows of 4 heads (20 warps' work) of two f16 states.
fn merge_job(schedule: Schedule) -> (Job, KernelLaunch) {
    use cuda_attention::launch::merge_launch;
    let (rows, heads, d) = (5usize, 4usize, 40usize);
    let launch = merge_launch(rows, heads, d, DType::F16).unwrap();
    let params = AttentionParams {
        total_q: rows as i32,
        heads_q: heads as i32,
        head_dim: d as i32,
        state_row_stride: (heads * d) as i64,
        state_head_stride: d as i64,
        out_seq_stride: (heads * d) as i64,
        out_head_stride: d as i64,
        lse_head_stride: rows as i64,
        num_splits: 1,
        ..AttentionParams::default()
    };
    let job = Job::new(&params, DType::F16)
        .input("state_a", rows * heads * d, DType::F16)
        .input("state_b", rows * heads * d, DType::F16)
        .input("lse_a", heads * rows, DType::F32)
        .input("lse_b", heads * rows, DType::F32)
        .output("out", rows * heads * d, 2)
        .output("lse", heads * rows, 4)
        .schedule(schedule)
        .threads(2)
        .launch(&launch);
    (job, launch)
}

/// The attention-map kernel on the sanitizer builds: 40 query rows (every warp of the first block busy)
/// of 2 heads sharing one key/value head over 70 keys (three key tiles), causal, bins of 7 x 9 averaged
/// over the heads (atomics from every block into the same bins); lse random, map and profile zeroed.
fn map_job(schedule: Schedule) -> (Job, KernelLaunch, AttentionShape) {
    use cuda_attention::attention_map::{map_launch, map_params, BinReduce, MapHeads, MapSpec};
    let shape = AttentionShape::new(1, 40, 2, 40)
        .with_seq_k(200)
        .with_heads_kv(1);
    // Key blocks 0 and 2 of 4 listed: the walk visits block 0's tiles, jumps over block 1, stops after 2.
    let mask = cuda_attention::BlockMask::from_rows(64, 64, 40, 200, &[vec![0, 2]]).unwrap();
    let problem = AttentionProblem::new(shape)
        .with_causal(true)
        .with_block_mask(mask.clone());
    let wide = |list: &[i32]| list.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
    let layout = MapSpec::new(7, 9)
        .with_heads(MapHeads::Mean)
        .with_reduce(BinReduce::Mean)
        .layout(&problem)
        .unwrap();
    let launch = map_launch(&shape, DType::Bf16).unwrap();
    let job = Job::new(&map_params(&problem, &layout), DType::Bf16)
        .input("q", problem.required_len(Tensor::Q).unwrap(), DType::Bf16)
        .input("k", problem.required_len(Tensor::K).unwrap(), DType::Bf16)
        .input("lse", shape.lse_elements().unwrap(), DType::F32)
        .values("map_values", 4, &vec![0; layout.values])
        .values("map_key_profile", 4, &vec![0; layout.profile])
        .values("block_row_offsets", 4, &wide(mask.row_offsets()))
        .values("block_col_indices", 4, &wide(mask.col_indices()))
        .schedule(schedule)
        .threads(2)
        .launch(&launch);
    (job, launch, shape)
}

#[test]
fn attention_map_kernel_runs_clean_under_both_sanitizers() {
    for sanitizer in [Sanitizer::Thread, Sanitizer::Address] {
        let run = checker(sanitizer).run(&map_job(Schedule::Random { seed: 4 }).0);
        run.clean_nan_outputs()
            .unwrap_or_else(|| panic!("attention map under {sanitizer:?}:\n{}", run.describe()));
    }
}

/// The split flash kernel, the combine, the merge of two states and block-sparse flash on the sanitizer
/// builds: no race, no access outside a buffer, every output written.
#[test]
fn split_combine_and_merge_run_clean_under_both_sanitizers() {
    for sanitizer in [Sanitizer::Thread, Sanitizer::Address] {
        for (name, job) in [
            ("split", split_job(Schedule::Random { seed: 1 }).0),
            ("merge", merge_job(Schedule::Random { seed: 2 }).0),
            ("sparse", sparse_job(Schedule::Random { seed: 3 })),
        ] {
            let run = checker(sanitizer).run(&job);
            let nan = run
                .clean_nan_outputs()
                .unwrap_or_else(|| panic!("{name} under {sanitizer:?}:\n{}", run.describe()));
            assert_eq!(nan, 0, "{name}: outputs left unwritten");
        }
    }
}

/// Whether `shape` gives every warp of a block of `kernel` a valid query row (in the block of the first
/// rows) and at least two key tiles (counted without masks): a race between warps needs two warps on the
/// same tile, a tile overwritten too early needs a second tile. How warps own rows is each kernel's own
/// (not in the registry): naive.cu's scores and P V blocks give warp ty rows ty, ty + 8, ...; the flash
/// kernels and the naive softmax give warp w the w-th run of tile_rows / warps consecutive rows.
fn every_warp_busy(kernel: &KernelSpec, shape: &AttentionShape) -> bool {
    let warps = (kernel.threads() / 32) as usize;
    let tile_rows = kernel.tile_rows as usize;
    if matches!(
        kernel.family,
        KernelFamily::Combine | KernelFamily::MergeStates
    ) {
        // One warp per (row, head): every warp busy when a block's worth of units exists, each merging
        // at least two states (seq_k stands for the number of states).
        return shape.batch * shape.seq_q * shape.heads_q >= kernel.tile_rows as usize
            && shape.seq_k >= 2;
    }
    if kernel.family == KernelFamily::AppendKv {
        // One element per thread: every warp busy when a block's worth of elements exists.
        let elements = shape.seq_q * shape.heads_kv * shape.head_dim;
        return elements >= kernel.tile_rows as usize;
    }
    let (rows, key_tile) = match kernel.family {
        KernelFamily::NaiveSoftmax => (shape.batch * shape.heads_q * shape.seq_q, 32),
        _ => (shape.seq_q, kernel.tile_cols as usize),
    };
    let first_block_rows = rows.min(tile_rows);
    let warps_with_rows = match kernel.family {
        KernelFamily::NaiveScores | KernelFamily::NaivePv => first_block_rows.min(warps),
        _ => first_block_rows.div_ceil(tile_rows / warps),
    };
    warps_with_rows == warps && shape.seq_k.div_ceil(key_tile) >= 2
}

/// Every kernel geometry of the registry (family, rows per block, threads: the naive scores, softmax and
/// P V kernels, the tensor-core flash kernel with 32 and with 16 rows per warp, the f32 flash kernel) runs
/// in the checking mode on at least one case that keeps every warp busy. A kernel added with a new
/// geometry fails here until a case covers it.
#[test]
fn every_kernel_geometry_is_checked_with_every_warp_busy() {
    type Geometry = (KernelFamily, u32, u32);
    let geometry = |k: &KernelSpec| -> Geometry { (k.family, k.tile_rows, k.threads()) };
    let spec = |name: &str| -> &'static KernelSpec {
        registry::kernels()
            .iter()
            .find(|k| k.name == name)
            .unwrap_or_else(|| panic!("{name} is not in the registry"))
    };
    let mut busy: Vec<Geometry> = Vec::new();
    let families: [(Vec<Case>, Launches); 3] = [
        (naive_cases(), naive_case_launches),
        (flash_cases(), flash_case_launches),
        (flash_f32_cases(), flash_case_launches),
    ];
    for (cases, launches) in &families {
        for case in cases {
            for launch in launches(case) {
                let kernel = spec(launch.name);
                if every_warp_busy(kernel, &case.1) {
                    busy.push(geometry(kernel));
                }
            }
        }
    }
    for case in ragged_cases() {
        let (_, launch, first) = ragged_job(&case, Schedule::RoundRobin);
        let kernel = spec(launch.name);
        if every_warp_busy(kernel, &first) {
            busy.push(geometry(kernel));
        }
    }
    let (_, launches, shape) = split_job(Schedule::RoundRobin);
    for launch in launches {
        let kernel = spec(launch.name);
        // The combine merges 3 states of 6 rows x 4 heads; the flash launch is checked as a dense one.
        let seen = match kernel.family {
            KernelFamily::Combine => AttentionShape { seq_k: 3, ..shape },
            _ => shape,
        };
        if every_warp_busy(kernel, &seen) {
            busy.push(geometry(kernel));
        }
    }
    let (_, merge) = merge_job(Schedule::RoundRobin);
    if every_warp_busy(
        spec(merge.name),
        &AttentionShape::new(1, 5, 4, 40).with_seq_k(2),
    ) {
        busy.push(geometry(spec(merge.name)));
    }
    let (_, map, map_shape) = map_job(Schedule::RoundRobin);
    if every_warp_busy(spec(map.name), &map_shape) {
        busy.push(geometry(spec(map.name)));
    }
    let (_, append) = append_job();
    let append_shape = AttentionShape::new(1, 5, 2, 40); // 5 rows x 2 heads x 40
    if every_warp_busy(spec(append.name), &append_shape) {
        busy.push(geometry(spec(append.name)));
    }
    // The sm_90a kernels are not run here: the sanitizers do not model mbarrier ordering yet
    // (docs/emulator.md, "Hopper (sm_90a) instructions"); tests/flash_sm90.rs runs them unsanitized.
    let mut missing: Vec<String> = registry::kernels()
        .iter()
        .filter(|k| k.family != KernelFamily::FlashSm90)
        .filter(|k| !busy.contains(&geometry(k)))
        .map(|k| format!("{} {:?}", k.name, geometry(k)))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "no checking-mode case keeps every warp of these kernels busy on two key tiles: {missing:?}"
    );
}

/// A job running `launches` on exact-size buffers for `problem`.
fn job_for(
    problem: &AttentionProblem,
    dtype: DType,
    launches: &[KernelLaunch],
    schedule: Schedule,
) -> Job {
    let shape = problem.shape;
    let params = problem_params(problem);
    let mut job = Job::new(&params, dtype)
        .input("q", problem.required_len(Tensor::Q).unwrap(), dtype)
        .input("k", problem.required_len(Tensor::K).unwrap(), dtype)
        .input("v", problem.required_len(Tensor::V).unwrap(), dtype)
        .output(
            "out",
            problem.required_len(Tensor::Out).unwrap(),
            dtype.size_bytes(),
        )
        .output("lse", shape.lse_elements().unwrap(), 4)
        .output("scores", shape.score_elements().unwrap(), 4)
        .schedule(schedule)
        .threads(2);
    for launch in launches {
        job = job.launch(launch);
    }
    job
}

/// The checker is built from the same header as the Rust mirror.
#[test]
fn checkers_share_the_parameter_layout() {
    for sanitizer in Sanitizer::ALL {
        let checker = checker(sanitizer);
        let info = checker.info();
        assert!(
            info.contains(&format!(
                "sizeof(AttentionParams) {}",
                size_of::<AttentionParams>()
            )),
            "{:?} checker: {info}",
            checker.sanitizer()
        );
    }
}

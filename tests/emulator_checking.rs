//! The checking mode: planted-bug kernels (tests/planted/) that the emulator, ThreadSanitizer or
//! AddressSanitizer must report, their fixed twins that must run clean under all three, and the naive
//! kernels run clean under both sanitizers. Every test here fails if the tool that should speak stays
//! silent. The checker programs are built on first use (see emulator_support/checker.rs); they need g++
//! with libtsan and libasan (scripts/install-emulator-deps.sh).

#[path = "emulator_support/checker.rs"]
mod checker;

use checker::{checker, Job, Run, Sanitizer};
use cuda_attention::binding::problem_params;
use cuda_attention::emulator::Schedule;
use cuda_attention::launch::{flash_launch, naive_launches, KernelLaunch};
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

/// The naive forward pass on the sanitizer builds: no race between CUDA threads or blocks (two host
/// threads, random block order), no access outside q, k, v, out, lse, scores or shared memory.
#[test]
fn naive_kernels_run_clean_under_both_sanitizers() {
    let cases = [
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
    ];
    for sanitizer in [Sanitizer::Thread, Sanitizer::Address] {
        for (index, &(dtype, shape, causal)) in cases.iter().enumerate() {
            let problem = AttentionProblem::new(shape).with_causal(causal);
            let job = naive_job(&problem, dtype, Schedule::Random { seed: index as u64 });
            let run = checker(sanitizer).run(&job);
            let nan = run.clean_nan_outputs().unwrap_or_else(|| {
                panic!(
                    "naive {dtype} {shape:?} causal {causal} under {sanitizer:?}:\n{}",
                    run.describe()
                )
            });
            assert_eq!(nan, 0, "naive {dtype} {shape:?}: outputs left unwritten");
        }
    }
}

/// The flash kernel on the sanitizer builds: no race between its warps (cp.async pipeline, ldmatrix
/// after barriers), no access outside its buffers or its shared memory (ragged tiles, padded head dims).
#[test]
fn flash_kernel_runs_clean_under_both_sanitizers() {
    let cases = [
        (
            DType::F16,
            AttentionShape::new(1, 70, 2, 64)
                .with_seq_k(33)
                .with_heads_kv(1),
            true,
        ),
        (
            DType::Bf16,
            AttentionShape::new(1, 17, 2, 40).with_seq_k(80),
            false,
        ),
    ];
    for sanitizer in [Sanitizer::Thread, Sanitizer::Address] {
        for (index, &(dtype, shape, causal)) in cases.iter().enumerate() {
            let problem = AttentionProblem::new(shape).with_causal(causal);
            let job = job_for(
                &problem,
                dtype,
                &[flash_launch(&shape, dtype).unwrap()],
                Schedule::Random { seed: index as u64 },
            );
            let run = checker(sanitizer).run(&job);
            let nan = run.clean_nan_outputs().unwrap_or_else(|| {
                panic!(
                    "flash {dtype} {shape:?} causal {causal} under {sanitizer:?}:\n{}",
                    run.describe()
                )
            });
            assert_eq!(nan, 0, "flash {dtype} {shape:?}: outputs left unwritten");
        }
    }
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

fn naive_job(problem: &AttentionProblem, dtype: DType, schedule: Schedule) -> Job {
    job_for(
        problem,
        dtype,
        &naive_launches(&problem.shape, dtype).unwrap(),
        schedule,
    )
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

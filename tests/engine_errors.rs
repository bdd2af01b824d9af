//! Errors the engine and the planner give instead of panicking, on any machine.

use cuda_attention::gpu::build_info::KERNELS_BUILT;
use cuda_attention::gpu::driver::{check_ordinal, device_count, driver_present};
use cuda_attention::plan::DeviceCaps;
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, DType, Engine, ForwardOptions, KernelChoice,
    KernelKind, Plan, Strides,
};

const AMPERE: DeviceCaps = DeviceCaps {
    compute_capability: (8, 0),
    shared_memory_per_block_optin: 163 * 1024,
    multiprocessors: 108,
};

fn problem() -> AttentionProblem {
    AttentionProblem::new(AttentionShape::new(2, 64, 4, 64))
}

#[test]
fn engine_new_says_why_it_cannot_run() {
    match (KERNELS_BUILT, driver_present()) {
        (false, _) => assert!(matches!(
            Engine::new(0),
            Err(AttentionError::KernelsNotBuilt)
        )),
        (true, false) => assert!(matches!(
            Engine::new(0),
            Err(AttentionError::DriverNotFound)
        )),
        (true, true) => {
            let count = device_count().expect("the driver is present");
            let result = Engine::new(count);
            assert!(
                matches!(result, Err(AttentionError::NoDevice { ordinal, count: c }) if ordinal == count && c == count),
                "{result:?}"
            );
        }
    }
}

#[test]
fn kernels_not_built_message_says_what_to_do() {
    let message = AttentionError::KernelsNotBuilt.to_string();
    assert!(
        message.contains("scripts/install-cuda-toolchain.sh"),
        "{message}"
    );
}

#[test]
fn a_missing_device_is_an_error_naming_the_ordinal() {
    assert!(check_ordinal(0, 1).is_ok());
    assert!(matches!(
        check_ordinal(1, 1),
        Err(AttentionError::NoDevice {
            ordinal: 1,
            count: 1
        })
    ));
    assert!(matches!(
        check_ordinal(0, 0),
        Err(AttentionError::NoDevice {
            ordinal: 0,
            count: 0
        })
    ));
}

#[test]
fn auto_picks_flash_for_half_precision_on_sm80() {
    for dtype in [DType::F16, DType::Bf16, DType::F32] {
        let plan = Plan::new(&problem(), dtype, ForwardOptions::default(), AMPERE).unwrap();
        assert_eq!(plan.kernel(), KernelKind::Flash, "{}", plan.reason());
        assert_eq!(plan.workspace_bytes(), 0, "flash needs no score workspace");
    }
    // f32 runs on CUDA cores with any head dim and any strides.
    let odd = AttentionProblem::new(AttentionShape::new(1, 100, 3, 59));
    let plan = Plan::new(&odd, DType::F32, ForwardOptions::default(), AMPERE).unwrap();
    assert_eq!(plan.kernel(), KernelKind::Flash);
    assert!(plan.reason().contains("CUDA cores"), "{}", plan.reason());
    // head_dim 40 runs the 64 instantiation, zero-padded on load.
    let padded = AttentionProblem::new(AttentionShape::new(1, 100, 2, 40));
    let plan = Plan::new(&padded, DType::F16, ForwardOptions::default(), AMPERE).unwrap();
    assert_eq!(plan.kernel(), KernelKind::Flash);
    assert!(
        plan.reason().contains("flash_fwd_d64_f16") && plan.reason().contains("zero-padded to 64"),
        "{}",
        plan.reason()
    );
    assert!(
        plan.reason().contains("16-byte aligned"),
        "{}",
        plan.reason()
    );
    assert_eq!(plan.input_alignment(), 16);
}

#[test]
fn auto_falls_back_to_naive_and_says_why() {
    type Case = (
        AttentionProblem,
        DType,
        ForwardOptions,
        DeviceCaps,
        &'static str,
    );
    let small_shared = DeviceCaps {
        shared_memory_per_block_optin: 48 * 1024,
        ..AMPERE
    };
    let turing = DeviceCaps {
        compute_capability: (7, 5),
        ..AMPERE
    };
    let defaults = ForwardOptions::default();
    let cases: Vec<Case> = vec![
        (
            problem(),
            DType::F16,
            defaults.with_weights(true),
            AMPERE,
            "weights",
        ),
        (problem(), DType::F16, defaults, turing, "7.5"),
        (
            AttentionProblem::new(AttentionShape::new(1, 64, 3, 59)),
            DType::Bf16,
            defaults,
            AMPERE,
            "multiples of 8",
        ),
        (
            AttentionProblem::new(AttentionShape::new(1, 64, 2, 256)),
            DType::Bf16,
            defaults,
            small_shared,
            "shared memory",
        ),
    ];
    for (problem, dtype, options, caps, why) in cases {
        let plan = Plan::new(&problem, dtype, options, caps).unwrap();
        assert_eq!(plan.kernel(), KernelKind::Naive, "{dtype} {problem:?}");
        assert!(
            plan.reason().contains(why),
            "expected '{why}' in: {}",
            plan.reason()
        );
        // Asking for flash explicitly is a typed error naming the same reason.
        let options = options.with_kernel(KernelChoice::Flash);
        match Plan::new(&problem, dtype, options, caps) {
            Err(AttentionError::KernelUnsupported {
                kernel: "flash",
                reason,
            }) => {
                assert!(reason.contains(why), "expected '{why}' in: {reason}")
            }
            other => panic!("flash on {dtype} {problem:?}: {other:?}"),
        }
    }
    let weights = defaults.with_weights(true);
    let plan = Plan::new(&problem(), DType::F16, weights, AMPERE).unwrap();
    assert_eq!(
        plan.workspace_bytes(),
        0,
        "the weights buffer holds the scores"
    );
    let naive = defaults.with_kernel(KernelChoice::Naive);
    let plan = Plan::new(&problem(), DType::F32, naive, AMPERE).unwrap();
    assert_eq!(
        plan.workspace_bytes(),
        2 * 4 * 64 * 64 * 4,
        "naive scores: b * h * sq * sk f32"
    );
}

#[test]
fn planning_validates_the_problem() {
    type IsExpected = fn(&AttentionError) -> bool;
    let cases: Vec<(AttentionProblem, IsExpected)> = vec![
        (
            AttentionProblem::new(AttentionShape::new(0, 8, 2, 64)),
            |e| matches!(e, AttentionError::EmptyDimension { name: "batch" }),
        ),
        (
            AttentionProblem::new(AttentionShape::new(1, 0, 2, 64)),
            |e| matches!(e, AttentionError::EmptyDimension { name: "seq_q" }),
        ),
        (
            AttentionProblem::new(AttentionShape::new(1, 8, 2, 0)),
            |e| matches!(e, AttentionError::EmptyDimension { name: "head_dim" }),
        ),
        (
            AttentionProblem::new(AttentionShape::new(1, 8, 2, 257)),
            |e| {
                matches!(
                    e,
                    AttentionError::HeadDimUnsupported {
                        head_dim: 257,
                        max: 256
                    }
                )
            },
        ),
        (
            AttentionProblem::new(AttentionShape::new(1, 8, 6, 64).with_heads_kv(4)),
            |e| {
                matches!(
                    e,
                    AttentionError::HeadsNotMultiple {
                        heads_q: 6,
                        heads_kv: 4
                    }
                )
            },
        ),
        (
            AttentionProblem::new(AttentionShape::new(1, 8, 2, 64)).with_scale(f32::NAN),
            |e| matches!(e, AttentionError::InvalidScale { .. }),
        ),
        (
            AttentionProblem::new(AttentionShape::new(1, 1 << 31, 2, 64)),
            |e| matches!(e, AttentionError::SizeOverflow { what: "seq_q", .. }),
        ),
        (
            AttentionProblem::new(AttentionShape::new(2, 8, 2, 64)).with_strides(
                Strides {
                    batch: usize::MAX / 2,
                    seq: 128,
                    head: 64,
                },
                Strides::bshd(8, 2, 64),
                Strides::bshd(8, 2, 64),
                Strides::bshd(8, 2, 64),
            ),
            |e| matches!(e, AttentionError::SizeOverflow { what: "q", .. }),
        ),
        (
            AttentionProblem::new(AttentionShape::new(1, 8, 2, 64)).with_strides(
                Strides::bshd(8, 2, 64),
                Strides::bshd(8, 2, 64),
                Strides::bshd(8, 2, 64),
                Strides {
                    batch: 1024,
                    seq: 64,
                    head: 32,
                },
            ),
            |e| matches!(e, AttentionError::InvalidStrides { tensor: "out", .. }),
        ),
    ];
    for (problem, expected) in cases {
        let error = Plan::new(&problem, DType::F32, ForwardOptions::default(), AMPERE)
            .expect_err(&format!("{problem:?} must be rejected"));
        assert!(expected(&error), "{problem:?} gave {error:?}");
    }
}

#[test]
fn the_score_workspace_size_overflow_is_reported() {
    // Every tensor fits (2^50 elements), but batch * heads * seq_q * seq_k = 2^70 scores do not.
    let problem = AttentionProblem::new(AttentionShape::new(1 << 20, 1 << 20, 1 << 10, 1));
    let options = ForwardOptions::default().with_kernel(KernelChoice::Naive);
    let result = Plan::new(&problem, DType::F32, options, AMPERE);
    assert!(
        matches!(result, Err(AttentionError::SizeOverflow { .. })),
        "{result:?}"
    );
}

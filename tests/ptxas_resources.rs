//! Every kernel compiles for every target architecture with no spills and no stack frame.

use cuda_attention::gpu::build_info::{PTXAS_REPORT, SASS_ARCHS};
use cuda_attention::gpu::resources::kernel_resources;
use cuda_attention::registry::{kernels, KernelFamily};
use cuda_attention::DType;

#[test]
fn every_kernel_has_no_spills_and_no_stack_on_every_architecture() {
    let resources = kernel_resources();
    assert!(
        !resources.is_empty(),
        "no ptxas report: this build has no kernels, build with nvcc (scripts/test.sh installs it)"
    );
    let archs: Vec<String> = SASS_ARCHS.split(',').map(|a| format!("sm_{a}")).collect();
    assert!(
        archs.iter().any(|a| a == "sm_80") && archs.iter().any(|a| a == "sm_90a"),
        "targets: {archs:?}"
    );
    // Every kernel of the registry (the table the kernel source fills), and nothing compiled that the
    // registry lacks: ptxas reports each exported entry once per architecture.
    let names: Vec<&str> = kernels().iter().map(|k| k.name).collect();
    let count = |family: KernelFamily, dtype: Option<DType>| {
        kernels()
            .iter()
            .filter(|k| k.family == family && k.dtype == dtype)
            .count()
    };
    assert_eq!(count(KernelFamily::NaiveSoftmax, None), 1);
    for dtype in DType::ALL {
        assert_eq!(count(KernelFamily::NaiveScores, Some(dtype)), 1, "{dtype}");
        assert_eq!(count(KernelFamily::NaivePv, Some(dtype)), 1, "{dtype}");
    }
    assert_eq!(
        count(KernelFamily::Flash, Some(DType::F16)),
        8,
        "head dims 32..256"
    );
    assert_eq!(
        count(KernelFamily::Flash, Some(DType::Bf16)),
        8,
        "head dims 32..256"
    );
    assert_eq!(count(KernelFamily::Flash, Some(DType::F32)), 1);
    for dtype in DType::ALL {
        let expected = if dtype == DType::F32 { 1 } else { 8 };
        assert_eq!(
            count(KernelFamily::FlashVarlen, Some(dtype)),
            expected,
            "{dtype}"
        );
    }
    for entry in &resources {
        assert!(
            names.contains(&entry.kernel.as_str())
                || entry.kernel == "layout_probe"
                || entry.kernel == "hopper_probe",
            "{} is compiled but not in the kernel registry (declare it with ATTENTION_KERNEL)",
            entry.kernel
        );
    }
    for name in names {
        for arch in &archs {
            let entry = resources
                .iter()
                .find(|r| r.kernel == name && &r.arch == arch)
                .unwrap_or_else(|| panic!("{name} was not compiled for {arch}"));
            assert!(
                entry.spill_store_bytes == 0
                    && entry.spill_load_bytes == 0
                    && entry.stack_bytes == 0,
                "{name} on {arch}: stack {}, spill stores {}, spill loads {} ({} registers)",
                entry.stack_bytes,
                entry.spill_store_bytes,
                entry.spill_load_bytes,
                entry.registers
            );
        }
    }
}

/// The sm_90a flash kernels (kernels/flash_sm90.cu): three head dims and two dtypes, each compiled for
/// sm_90a with no spills and no stack within the 168 registers per thread that __launch_bounds__(384, 1)
/// leaves at entry (ptxas reports that figure; the consumer path after setmaxnreg uses up to 240), and
/// no wgmma serialised by ptxas (C7520: a wgmma on a path it cannot prove warpgroup-uniform).
#[test]
fn the_sm90_flash_kernels_have_no_spills_and_no_stack_on_sm_90a() {
    let resources = kernel_resources();
    let sm90: Vec<_> = kernels()
        .iter()
        .filter(|k| k.family == KernelFamily::FlashSm90)
        .collect();
    assert_eq!(sm90.len(), 6, "d64, d128 and d256, f16 and bf16");
    let serialised: Vec<&str> = PTXAS_REPORT
        .lines()
        .filter(|line| line.contains("C7520") && line.contains("flash_sm90_"))
        .collect();
    assert!(serialised.is_empty(), "{serialised:#?}");
    for kernel in sm90 {
        let entry = resources
            .iter()
            .find(|r| r.kernel == kernel.name && r.arch == "sm_90a")
            .unwrap_or_else(|| {
                panic!(
                    "{} was not compiled for sm_90a (build with nvcc: scripts/test.sh)",
                    kernel.name
                )
            });
        assert!(
            entry.spill_store_bytes == 0
                && entry.spill_load_bytes == 0
                && entry.stack_bytes == 0
                && entry.registers <= 168,
            "{} on sm_90a: stack {}, spill stores {}, spill loads {} ({} registers)",
            kernel.name,
            entry.stack_bytes,
            entry.spill_store_bytes,
            entry.spill_load_bytes,
            entry.registers
        );
    }
}

/// The sm_90a probe (kernels/hopper_probe.cu, wgmma up to N = 256 and TMA) fits its registers too.
#[test]
fn the_hopper_probe_has_no_spills_and_no_stack_on_sm_90a() {
    let resources = kernel_resources();
    let entry = resources
        .iter()
        .find(|r| r.kernel == "hopper_probe" && r.arch == "sm_90a")
        .expect("hopper_probe was not compiled for sm_90a (build with nvcc: scripts/test.sh)");
    assert!(
        entry.spill_store_bytes == 0 && entry.spill_load_bytes == 0 && entry.stack_bytes == 0,
        "hopper_probe on sm_90a: stack {}, spill stores {}, spill loads {} ({} registers)",
        entry.stack_bytes,
        entry.spill_store_bytes,
        entry.spill_load_bytes,
        entry.registers
    );
}

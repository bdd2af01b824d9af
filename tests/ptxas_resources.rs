//! Every kernel compiles for every target architecture with no spills and no stack frame.

use cuda_attention::gpu::build_info::SASS_ARCHS;
use cuda_attention::gpu::resources::kernel_resources;
use cuda_attention::launch::{
    flash_head_dims, flash_kernel_name, naive_launches, FLASH_F32_KERNEL,
};
use cuda_attention::{AttentionShape, DType};

fn naive_kernel_names() -> Vec<String> {
    let mut names: Vec<String> = DType::ALL
        .into_iter()
        .flat_map(|dtype| naive_launches(&AttentionShape::new(1, 1, 1, 1), dtype))
        .map(|launch| launch.name)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn flash_kernel_names() -> Vec<String> {
    let mut names: Vec<String> = [DType::F16, DType::Bf16]
        .into_iter()
        .flat_map(|dtype| flash_head_dims().map(move |d| flash_kernel_name(d, dtype)))
        .collect();
    names.sort();
    names.dedup();
    names
}

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
    let names = [
        naive_kernel_names(),
        flash_kernel_names(),
        vec![FLASH_F32_KERNEL.to_string()],
    ]
    .concat();
    assert_eq!(
        names.len(),
        7 + 16 + 1,
        "naive: 2 per dtype + softmax; flash: 8 head dims x 2 dtypes, and f32"
    );
    for name in names {
        for arch in &archs {
            let entry = resources
                .iter()
                .find(|r| r.kernel == name && &r.arch == arch)
                .unwrap_or_else(|| panic!("{name} was not compiled for {arch}"));
            assert_eq!(
                (
                    entry.stack_bytes,
                    entry.spill_store_bytes,
                    entry.spill_load_bytes
                ),
                (0, 0, 0),
                "{name} on {arch}: stack, spill stores, spill loads ({} registers)",
                entry.registers
            );
        }
    }
}

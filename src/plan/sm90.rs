//! Planning the sm_90a flash kernel (`kernels/flash_sm90.cu`): opt-in, so only an explicit
//! [`KernelChoice::FlashSm90`](super::KernelChoice::FlashSm90) with the environment switch [`HOPPER_ENV`] set to `1` plans it, and only
//! for what it computes; anything else is refused with the reason. [`KernelChoice::Auto`](super::KernelChoice::Auto) keeps the
//! sm_80 flash kernel and says why ([`auto_note`]).

use super::{
    flash_unavailable_reason, DeviceCaps, ForwardOptions, GqaPacking, KernelKind, Plan, Splits,
    Target,
};
use crate::dtype::DType;
use crate::error::{AttentionError, Result};
use crate::launch::{flash_launch, kernel_for};
use crate::problem::AttentionProblem;
use crate::registry::KernelFamily;

/// The environment variable that must be `1` for [`KernelChoice::FlashSm90`](super::KernelChoice::FlashSm90) to plan: the sm_90a kernel
/// is opt-in until a GPU run has verified it.
pub const HOPPER_ENV: &str = "CUDA_ATTENTION_HOPPER";

/// Why Auto does not pick the sm_90a kernel on an sm_90 device (empty elsewhere), appended to its reason.
pub(super) fn auto_note(caps: DeviceCaps) -> &'static str {
    if caps.compute_capability.0 == 9 {
        "; the sm_90a kernel is opt-in until verified on hardware (KernelChoice::FlashSm90 with \
         CUDA_ATTENTION_HOPPER=1)"
    } else {
        ""
    }
}

fn refuse(reason: String) -> AttentionError {
    AttentionError::KernelUnsupported {
        kernel: "flash-sm90",
        reason,
    }
}

/// Whether the environment switch [`HOPPER_ENV`] is `1`.
pub(super) fn opted_in() -> bool {
    std::env::var(HOPPER_ENV).as_deref() == Ok("1")
}

/// The plan of [`KernelChoice::FlashSm90`](super::KernelChoice::FlashSm90) for a validated problem;
/// `opted_in`: whether the environment switch is set.
pub(super) fn plan_flash_sm90(
    problem: &AttentionProblem,
    dtype: DType,
    options: ForwardOptions,
    caps: DeviceCaps,
    opted_in: bool,
) -> Result<Plan> {
    if !opted_in {
        return Err(refuse(format!(
            "the sm_90a kernel is opt-in until verified on hardware: set {HOPPER_ENV}=1 to run it, or use \
             KernelChoice::Flash"
        )));
    }
    if caps.compute_capability != (9, 0) {
        return Err(refuse(format!(
            "it needs an sm_90 device (wgmma, TMA) and this one is {}.{}{}",
            caps.compute_capability.0,
            caps.compute_capability.1,
            if caps.compute_capability == (8, 0) {
                " (the emulator runs it when planned through Emulator::plan)"
            } else {
                ""
            }
        )));
    }
    let unsupported = if dtype == DType::F32 {
        Some("f32 inputs (wgmma takes f16/bf16 here): use KernelChoice::Flash".to_string())
    } else if problem.ragged_layout().is_some() {
        Some("ragged and paged batches (dense batches only): use KernelChoice::Flash".to_string())
    } else if problem.block_mask.is_some() {
        Some("block-sparse masks: use KernelChoice::Flash".to_string())
    } else if !matches!(
        options.splits,
        Splits::Auto | Splits::Fixed(1) | Splits::AtMost(_)
    ) {
        Some("split-KV: use KernelChoice::Flash with splits".to_string())
    } else if options.gqa_packing == GqaPacking::On {
        Some("GQA packing (each query head runs its own tiles): leave it Auto".to_string())
    } else {
        None
    };
    if let Some(what) = unsupported {
        return Err(refuse(format!("the sm_90a kernel does not take {what}")));
    }
    let shape = &problem.shape;
    let launch = flash_launch(shape, dtype, KernelFamily::FlashSm90)?;
    if let Some(reason) = flash_unavailable_reason(
        problem,
        dtype,
        options,
        caps,
        &launch,
        KernelFamily::FlashSm90,
    ) {
        return Err(refuse(reason));
    }
    let spec = kernel_for(KernelFamily::FlashSm90, dtype, shape.head_dim)?;
    let input_alignment = spec.base_alignment.max(dtype.size_bytes());
    let reason = format!(
        "flash-sm90 requested ({HOPPER_ENV}=1): {} (wgmma and TMA, {} query rows x {} keys per tile, head_dim \
         {} in a {}-column tile; q, k and v must start {input_alignment}-byte aligned)",
        spec.name,
        spec.tile_rows,
        spec.tile_cols,
        shape.head_dim,
        spec.head_dims.end()
    );
    Ok(Plan {
        problem: problem.clone(),
        dtype,
        options,
        target: Target::Device(caps),
        kernel: KernelKind::FlashSm90,
        reason,
        workspace_bytes: 0,
        launches: vec![launch],
        input_alignment,
        splits: 1,
        gqa_packing: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_says_why_it_keeps_the_sm80_kernel_on_hopper() {
        let hopper = DeviceCaps {
            compute_capability: (9, 0),
            shared_memory_per_block_optin: 232_448,
            multiprocessors: 132,
        };
        assert!(auto_note(hopper).contains("opt-in until verified on hardware"));
        let ampere = DeviceCaps {
            compute_capability: (8, 0),
            ..hopper
        };
        assert_eq!(auto_note(ampere), "");
    }

    #[test]
    fn without_the_switch_or_on_another_device_it_is_refused_with_the_reason() {
        let problem = AttentionProblem::new(crate::AttentionShape::new(1, 64, 2, 128));
        let options = ForwardOptions::default();
        let hopper = DeviceCaps {
            compute_capability: (9, 0),
            shared_memory_per_block_optin: 232_448,
            multiprocessors: 132,
        };
        let refused = |caps, opted_in| match plan_flash_sm90(
            &problem,
            DType::Bf16,
            options,
            caps,
            opted_in,
        ) {
            Err(AttentionError::KernelUnsupported { kernel, reason }) => {
                assert_eq!(kernel, "flash-sm90");
                reason
            }
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(refused(hopper, false).contains("set CUDA_ATTENTION_HOPPER=1"));
        let ampere = DeviceCaps {
            compute_capability: (8, 0),
            ..hopper
        };
        assert!(refused(ampere, true).contains("needs an sm_90 device"));
        let plan = plan_flash_sm90(&problem, DType::Bf16, options, hopper, true).unwrap();
        assert_eq!(plan.kernel(), KernelKind::FlashSm90);
        assert_eq!(plan.launches()[0].name, "flash_sm90_fwd_d128_bf16");
        assert_eq!(plan.launches()[0].block, (384, 1, 1));
    }
}

//! Self-checks of the emulator's sm_90a layouts (kernels/include/hopper_layout.h) against independent
//! statements in shared/reference/hopper-facts.md, and of its tensor-map encoder against the driver's
//! rules:
//!
//! - the shared-memory swizzle against the PTX ISA's swizzle tables (16-byte chunk c of row r lands at
//!   chunk c ^ f(r)), for the 32, 64 and 128-byte modes;
//! - the m64nNk16 accumulator and the A-from-registers layouts against the PTX formulas and against
//!   CuTe's `CLayout_64xN` and `ALayout_64x16` (shape:stride), and that each is a permutation;
//! - the descriptor's bit fields against the PTX ISA's table;
//! - the operand addresses a descriptor gives against CuTe's GMMA atoms stacked by `tile_to_shape`, with
//!   CuTe's leading and stride byte offsets, for every major-ness and swizzle mode;
//! - `cuTensorMapEncodeTiled`'s argument rules (each refusal names the rule).
//!
//! The Hopper probe (kernels/hopper_probe.cu) has its own file, tests/emulator_hopper_probe.rs.

use cuda_attention::emulator::hopper::{
    swizzle_address, wgmma_descriptor, wgmma_fragment_element, wgmma_operand_address, TensorMap,
    TensorMapDataType, TensorMapSpec, TensorMapSwizzle, WgmmaFragment,
};
use cuda_attention::AttentionError;

// ---- Swizzle ----------------------------------------------------------------------------------------

/// PTX ISA 5.5.7's tables: with rows of `span` bytes, 16-byte chunk c of row r lands at chunk
/// c ^ (r % 8) (128B), c ^ ((r / 2) % 4) (64B), c ^ ((r / 4) % 2) (32B); the pattern repeats every
/// 8 x 128, 8 x 64 or 8 x 32 bytes.
fn ptx_table_swizzle(address: u32, span: u32) -> u32 {
    let (row, chunk, byte) = (address / span, address % span / 16, address % 16);
    let chunk = match span {
        128 => chunk ^ (row % 8),
        64 => chunk ^ (row / 2 % 4),
        32 => chunk ^ (row / 4 % 2),
        _ => unreachable!(),
    };
    row * span + chunk * 16 + byte
}

#[test]
fn swizzle_matches_the_ptx_tables() {
    for span in [32u32, 64, 128] {
        for address in 0..8192u32 {
            assert_eq!(
                swizzle_address(address, span),
                ptx_table_swizzle(address, span),
                "{span}-byte swizzle of {address:#x}"
            );
        }
    }
    // CuTe's Swizzle<3,4,3> applied to 0x080, printed by running CuTe (hopper-facts.md).
    assert_eq!(swizzle_address(0x080, 128), 0x090);
    // No swizzle: unchanged.
    assert_eq!(swizzle_address(0x1234, 0), 0x1234);
}

// ---- Register fragments -----------------------------------------------------------------------------

/// PTX formula for register i of thread t (w = t / 32, g = t % 32 / 4, q = t % 4): row = 16 w + g +
/// 8 ((i >> 1) & 1), col = 8 (i >> 2) + 2 q + (i & 1). The A fragment uses the same formula for its 8
/// halves.
fn ptx_fragment(t: u32, i: u32) -> (u32, u32) {
    let (w, g, q) = (t / 32, t % 32 / 4, t % 4);
    (
        16 * w + g + 8 * ((i >> 1) & 1),
        8 * (i >> 2) + 2 * q + (i & 1),
    )
}

/// A CuTe layout ((4,8,4),(2,2,n)):((128,1,16),(64,8,512)) evaluated at (thread, value): the index
/// m + 64 k of a column-major 64-row matrix. This is `CLayout_64xN` (n = N/8) and, with n = 2,
/// `ALayout_64x16` (cute/atom/mma_traits_sm90_gmma.hpp).
fn cute_fragment(t: u32, i: u32) -> (u32, u32) {
    let thread = (t % 4) * 128 + (t / 4 % 8) + (t / 32) * 16;
    let value = (i % 2) * 64 + (i / 2 % 2) * 8 + (i / 4) * 512;
    let index = thread + value;
    (index % 64, index / 64)
}

#[test]
fn accumulator_layout_matches_ptx_and_cute_and_is_a_permutation() {
    let mut seen = vec![false; 64 * 256];
    for t in 0..128 {
        for i in 0..128 {
            let emulator = wgmma_fragment_element(WgmmaFragment::D, t, i).unwrap();
            assert_eq!(emulator, ptx_fragment(t, i), "thread {t} register {i}: PTX");
            assert_eq!(
                emulator,
                cute_fragment(t, i),
                "thread {t} register {i}: CuTe"
            );
            let (row, col) = emulator;
            assert!(
                !seen[(row * 256 + col) as usize],
                "({row},{col}) held twice"
            );
            seen[(row * 256 + col) as usize] = true;
        }
    }
    assert!(
        seen.iter().all(|&s| s),
        "some element of 64 x 256 is held by no thread"
    );
    // CuTe's layout printed by running it (hopper-facts.md): thread 0, thread 1, thread 32.
    let d = |t, i| wgmma_fragment_element(WgmmaFragment::D, t, i).unwrap();
    let t0: Vec<_> = (0..8).map(|i| d(0, i)).collect();
    assert_eq!(
        t0,
        [
            (0, 0),
            (0, 1),
            (8, 0),
            (8, 1),
            (0, 8),
            (0, 9),
            (8, 8),
            (8, 9)
        ]
    );
    assert_eq!((d(1, 0), d(1, 1), d(1, 2)), ((0, 2), (0, 3), (8, 2)));
    assert_eq!(d(32, 0), (16, 0));
    assert_eq!(wgmma_fragment_element(WgmmaFragment::D, 128, 0), None);
    assert_eq!(wgmma_fragment_element(WgmmaFragment::D, 0, 128), None);
}

#[test]
fn a_register_layout_matches_ptx_and_cute_and_is_a_permutation() {
    let mut seen = vec![false; 64 * 16];
    for t in 0..128 {
        for j in 0..8 {
            let emulator = wgmma_fragment_element(WgmmaFragment::A, t, j).unwrap();
            assert_eq!(emulator, ptx_fragment(t, j), "thread {t} element {j}: PTX");
            assert_eq!(
                emulator,
                cute_fragment(t, j),
                "thread {t} element {j}: CuTe"
            );
            let (row, k) = emulator;
            assert!(row < 64 && k < 16 && !seen[(row * 16 + k) as usize]);
            seen[(row * 16 + k) as usize] = true;
        }
    }
    assert!(seen.iter().all(|&s| s));
    assert_eq!(wgmma_fragment_element(WgmmaFragment::A, 0, 8), None);
}

/// Reusing S as P (hopper-facts.md, derived by running CuTe): accumulator registers 8k..8k+7 of a 64 x N
/// tile hold exactly the A fragment of columns 16k..16k+15, in the same order.
#[test]
fn accumulators_of_a_k_block_are_its_a_fragment() {
    for t in 0..128 {
        for k in 0..4u32 {
            for j in 0..8 {
                let (row, col) = wgmma_fragment_element(WgmmaFragment::D, t, 8 * k + j).unwrap();
                let (a_row, a_col) = wgmma_fragment_element(WgmmaFragment::A, t, j).unwrap();
                assert_eq!(
                    (row, col),
                    (a_row, a_col + 16 * k),
                    "thread {t} k-block {k} element {j}"
                );
            }
        }
    }
}

// ---- Descriptors ------------------------------------------------------------------------------------

/// PTX ISA 9.7.15.5.1.2.2: start address (addr & 0x3FFFF) >> 4 in bits 0-13, LBO >> 4 in 16-29,
/// SBO >> 4 in 32-45, base offset in 49-51 (0 here), swizzle mode in 62-63; every other bit 0.
#[test]
fn descriptor_fields_match_the_ptx_table() {
    for (start, lbo, sbo, mode) in [
        (0u32, 16u32, 1024u32, 1u32),
        (0x3_fff0, 0x3_fff0, 0x3_fff0, 3),
        (0x4_0010, 512, 1024, 2), // bit 18 of the address is dropped
        (2048 + 32, 128, 256, 0),
    ] {
        let d = wgmma_descriptor(start, lbo, sbo, mode);
        assert_eq!(d & 0x3fff, u64::from((start & 0x3_ffff) >> 4), "{d:#x}");
        assert_eq!(d >> 16 & 0x3fff, u64::from((lbo & 0x3_ffff) >> 4), "{d:#x}");
        assert_eq!(d >> 32 & 0x3fff, u64::from((sbo & 0x3_ffff) >> 4), "{d:#x}");
        assert_eq!(d >> 62, u64::from(mode), "{d:#x}");
        let unused = (0b11 << 14) | (0b11 << 30) | (0x7f << 46) | (0x3ff << 52);
        assert_eq!(d & unused, 0, "{d:#x}: unused bits set");
    }
    // The PTX ISA's worked example, MN-major 64B bf16: LBO >> 4 = 32, SBO >> 4 = 64.
    let d = wgmma_descriptor(0, 512, 1024, 2);
    assert_eq!((d >> 16 & 0x3fff, d >> 32 & 0x3fff), (32, 64));
}

/// CuTe's GMMA atoms for 16-bit types, in elements (cute/atom/mma_traits_sm90_gmma.hpp): K-major
/// (8, S/2):(S/2, 1) and MN-major (S/2, 8):(1, S/2), both under Swizzle<B,4,3> on byte addresses; the
/// interleaved (no swizzle) atom is one 8 x 8 core matrix, (8,8):(8,1) K-major or (8,8):(1,8) MN-major.
/// `tile_to_shape` stacks atoms along MN first, then along K. Returns the byte offset of element
/// (mn, k) of an `extent` x 16 operand before the swizzle, and CuTe's (LBO, SBO) for that tile.
fn cute_tile(mn_major: bool, span: u32, extent: u32, mn: u32, k: u32) -> (u32, (u32, u32)) {
    let atom_mn = if span == 0 {
        8
    } else if mn_major {
        span / 2
    } else {
        8
    };
    let atom_k = if span == 0 || mn_major { 8 } else { span / 2 };
    let atom_bytes = atom_mn * atom_k * 2;
    let atoms_mn = extent / atom_mn;
    let atom = mn / atom_mn + (k / atom_k) * atoms_mn;
    let inside = if mn_major {
        mn % atom_mn + (k % atom_k) * atom_mn
    } else {
        (mn % atom_mn) * atom_k + k % atom_k
    };
    let offset = atom * atom_bytes + inside * 2;
    // The descriptor offsets CuTe computes for these tiles (hopper-facts.md section 2, [run]).
    let offsets = match (mn_major, span) {
        (false, 0) => (atoms_mn * atom_bytes, atom_bytes), // LBO: the next 8 k; SBO: the next 8 rows
        (false, _) => (16, atom_bytes),                    // LBO unused (1); SBO: the next 8 rows
        (true, 0) => (atoms_mn * atom_bytes, atom_bytes),  // LBO: the next 8 k; SBO: the next 8 mn
        (true, _) => (atom_bytes, atoms_mn * atom_bytes), // LBO: the next MN atom; SBO: the next 8 k
    };
    (offset, offsets)
}

#[test]
fn operand_addresses_match_cute_atoms() {
    let start = 4096u32; // a multiple of every swizzle's repeat
    for mn_major in [false, true] {
        for (span, mode) in [(0u32, 0u32), (128, 1), (64, 2), (32, 3)] {
            for extent in [64u32, 128, 256] {
                let (_, (lbo, sbo)) = cute_tile(mn_major, span, extent, 0, 0);
                let desc = wgmma_descriptor(start, lbo, sbo, mode);
                for mn in 0..extent {
                    for k in 0..16 {
                        let (offset, _) = cute_tile(mn_major, span, extent, mn, k);
                        let expected = if span == 0 {
                            start + offset
                        } else {
                            ptx_table_swizzle(start + offset, span)
                        };
                        assert_eq!(
                            wgmma_operand_address(desc, mn_major, mn, k),
                            expected,
                            "mn_major {mn_major} span {span} extent {extent}: element ({mn}, {k})"
                        );
                    }
                }
            }
        }
    }
    // CuTe's offsets for bf16 tiles, as printed (hopper-facts.md): K SW128 SBO 1024 B, MN SW128 with
    // N = 128 LBO 1024 B and SBO 2048 B, MN SW64 with N = 64 LBO 512 B and SBO 1024 B.
    assert_eq!(cute_tile(false, 128, 64, 0, 0).1, (16, 1024));
    assert_eq!(cute_tile(true, 128, 128, 0, 0).1, (1024, 2048));
    assert_eq!(cute_tile(true, 64, 64, 0, 0).1, (512, 1024));
    // Advancing along K inside a K-major SW128 tile: +32 bytes of start address per 16 k (CuTe's
    // DescriptorIterator), and element (mn, 16 + k) of the wide tile is element (mn, k) of the advanced one.
    let advanced = wgmma_descriptor(start + 32, 16, 1024, 1);
    for mn in 0..64 {
        for k in 0..16 {
            let wide = start + (mn / 8) * 1024 + (mn % 8) * 128 + 2 * (16 + k);
            assert_eq!(
                wgmma_operand_address(advanced, false, mn, k),
                ptx_table_swizzle(wide, 128)
            );
        }
    }
}

// ---- Tensor maps ------------------------------------------------------------------------------------

fn spec_2d(swizzle: TensorMapSwizzle) -> TensorMapSpec {
    TensorMapSpec {
        data_type: TensorMapDataType::Bfloat16,
        global_dim: vec![64, 20],
        global_strides: vec![128],
        box_dim: vec![64, 16],
        swizzle,
    }
}

#[test]
fn tensor_maps_follow_the_driver_rules() {
    let tensor = vec![0u128; 20 * 64 * 2 / 16 + 1];
    let base = tensor.as_ptr().cast::<u8>();
    // SAFETY (every call below): the maps are never used by a launch.
    let good = unsafe { TensorMap::encode_tiled(base, &spec_2d(TensorMapSwizzle::B128)) };
    assert!(good.is_ok(), "{good:?}");
    // [batch, seq, heads, head_dim] seen as (head_dim, seq, heads): the head stride is below the seq
    // extent, as FlashAttention-3 maps Q; the driver takes it, and so does the emulator.
    let attention = TensorMapSpec {
        data_type: TensorMapDataType::Bfloat16,
        global_dim: vec![64, 5, 2],
        global_strides: vec![256, 128],
        box_dim: vec![64, 4, 1],
        swizzle: TensorMapSwizzle::B128,
    };
    // SAFETY: see above.
    let strided = unsafe { TensorMap::encode_tiled(base, &attention) };
    assert!(strided.is_ok(), "{strided:?}");
    let cases: Vec<(&str, *const u8, TensorMapSpec)> = vec![
        (
            "16-byte aligned",
            base.wrapping_add(8),
            spec_2d(TensorMapSwizzle::B128),
        ),
        (
            "multiple of 16",
            base,
            TensorMapSpec {
                global_strides: vec![120],
                ..spec_2d(TensorMapSwizzle::None)
            },
        ),
        (
            "below 2^40",
            base,
            TensorMapSpec {
                global_strides: vec![1 << 40],
                ..spec_2d(TensorMapSwizzle::None)
            },
        ),
        (
            "outside 1..256",
            base,
            TensorMapSpec {
                box_dim: vec![64, 257],
                ..spec_2d(TensorMapSwizzle::None)
            },
        ),
        (
            "128 bytes, more than the 64-byte swizzle span",
            base,
            spec_2d(TensorMapSwizzle::B64),
        ),
        (
            "not a multiple of 16",
            base,
            TensorMapSpec {
                box_dim: vec![4, 16],
                ..spec_2d(TensorMapSwizzle::None)
            },
        ),
        (
            "outside 1..2^32",
            base,
            TensorMapSpec {
                global_dim: vec![64, 0],
                ..spec_2d(TensorMapSwizzle::None)
            },
        ),
        (
            "want n, n - 1, n",
            base,
            TensorMapSpec {
                global_strides: vec![],
                ..spec_2d(TensorMapSwizzle::None)
            },
        ),
    ];
    for (rule, address, spec) in cases {
        // SAFETY: see above.
        match unsafe { TensorMap::encode_tiled(address, &spec) } {
            Err(AttentionError::InvalidArgument(message)) => {
                assert!(message.contains(rule), "{spec:?}: {message}")
            }
            other => panic!("{spec:?} ({rule}): {other:?}"),
        }
    }
}

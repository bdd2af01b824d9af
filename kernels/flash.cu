/*
 * flash.cu - fused attention forward (FlashAttention-2 style) on mma.sync tensor cores, sm_80 and newer.
 *
 * One block owns kBlockM query rows of one (sequence, head) and runs the flash main loop
 * (include/flash_mainloop.cuh) over the key tiles any of its rows can see, with the sequence's K/V addressing
 * (include/sequence.cuh: dense batches; ragged ones with packed or paged K/V, lengths read on the device) and
 * the normalising epilogue. The steps (include/flash_steps.cuh) and the tiles (include/flash_traits.cuh) are
 * shared with every flash-family kernel:
 *
 *   Q tile -> shared (cp.async, once); for each key tile t:
 *     V_t -> shared (cp.async, in flight while S is computed)
 *     S = Q K_t^T                         mma.sync m16n8k16, A = Q (ldmatrix.x4), B = K (ldmatrix.x4)
 *     -inf where masked (only tiles that straddle a boundary for some row of the warp)
 *     m_new = max(m, rowmax S); P = exp2(S c - m_new c); l = l exp2((m - m_new) c) + rowsum P
 *     O *= exp2((m - m_new) c), skipped when no max of the warp's m-tile moved (the factor would be 1)
 *     K_{t+1} -> shared (cp.async, in flight while P V is computed)
 *     O += P V_t                          P stays in registers as the A operand; B = V (ldmatrix.x4.trans)
 *   O /= l, written once in the output dtype; lse = (m c + log2 l) * ln 2 (l == 0: O = 0, lse = -inf).
 * c is scale * log2(e) from the host, folded into each exp2 as one FFMA; with a soft cap or ALiBi (runtime
 * flags, selected once per block) scores are adjusted in natural units first and c is 1.
 *
 * Masking: rows past seq_q are computed on zero-filled Q and never written; keys past seq_k are zero-filled
 * by cp.async and their scores set to -inf; causal (bottom-right: key j visible to query i iff j <= i +
 * seq_k - seq_q) and the sliding window (key_range in device_helpers.cuh). Key tiles wholly outside every
 * row's range are not visited at all; a warp skips the products and the softmax of a tile none of its own
 * rows sees (it still loads and synchronises).
 *
 * Layouts: attention_params.h (strides in elements). Requirements checked on the host: f16 or bf16,
 * head_dim <= the instantiation's HEAD_DIM (smaller dims are zero-padded on load, without copies),
 * every stride a multiple of 8 elements and every base address 16-byte aligned (cp.async moves 16 bytes),
 * batch and heads_q at most 65535 (grid y and z).
 *
 * Non-finite values (README, "Non-finite values"), all settled in the epilogue, none in the key loop: see
 * include/flash_steps.cuh. P V multiplies whole tiles: a NaN or an infinity in V at a key a row does not
 * see gives NaN in that column of the row (0 * NaN) when the key lies in a key tile its warp multiplies,
 * i.e. a tile that holds a key some row of the warp sees (warp: 32 rows, 16 above head_dim 128; tile: 64
 * keys, 32 above head_dim 64); rows of a warp that sees nothing, and keys past seq_k (zero-filled), are never
 * affected. FlashAttention's kernels multiply whole tiles too.
 *
 * Ragged batches (flash_varlen_*): the grid is fixed by the plan's bounds (x: max seq_q / kBlockM, z: the
 * batch); a block past its sequence's seq_q returns at once. Paged K/V whose page size is a multiple of
 * kBlockN is copied tile by tile like dense K/V (one page holds the tile); other page sizes gather each row
 * through the block table. Rows past a sequence's key count are zero-filled, never read: garbage (NaN) in
 * unused cache slots never reaches the output.
 *
 * Split-KV (p.num_splits > 1, flash-decoding): the grid's z holds sequence * num_splits + split; a block
 * runs its split's share of the key tiles (split_tiles) and writes a partial state (WritePartial); the
 * combine kernel (combine.cu) merges the splits. One copy of the main loop serves both epilogues.
 *
 * GQA packing (p.packed_heads, decode: a few queries per sequence): grid y runs the key/value heads and a
 * block's query rows are the (position, query head) pairs of its head's group, position-major (query_row
 * in device_helpers.cuh), so each K/V tile loaded feeds every query head of the group; Q is gathered row by
 * row once, masks and ALiBi use each row's position and head, the epilogues write each row to its own head.
 *
 * Exports: flash_fwd_d<HEAD_DIM>_<dtype> (dense) and flash_varlen_d<HEAD_DIM>_<dtype> (ragged) for HEAD_DIM
 * in 32, 64, 96, 128, 160, 192, 224, 256 and dtype f16, bf16.
 */
#include "include/flash_mainloop.cuh"

template <int HEAD_DIM, typename T, bool kVarlen> __device__ void flash_forward(const AttentionParams &p) {
    using Traits = FlashTraits<HEAD_DIM>;
    /* Heavy (late) query tiles first: with a causal mask they have the most keys. */
    const int m0 = (gridDim.x - 1 - blockIdx.x) * Traits::kBlockM;
    /* A query head, or under GQA packing a key/value head whose group's query heads are the tile's rows. */
    const int head = blockIdx.y;
    const int kv_head = packed_heads(p) > 1 ? head : head / p.heads_ratio;
    /* z = sequence * num_splits + split (num_splits is 1 without split-KV). */
    const int splits = max(p.num_splits, 1);
    const int sequence = (int)blockIdx.z / splits;
    const int split = (int)blockIdx.z % splits;
    if constexpr (kVarlen) {
        int q_begin;
        const AttentionParams s = sequence_params<T>(p, sequence, q_begin);
        if (m0 >= query_rows(s)) {
            return;
        }
        flash_main_loop<Traits, T>(s, q_begin, head, m0, varlen_kv_rows<T, Traits::kBlockN>(p, s, kv_head),
                                   split_tiles(block_tiles<Traits>(s, m0), split, splits), WriteOutput());
    } else {
        if (m0 >= query_rows(p)) {
            return;
        }
        flash_main_loop<Traits, T>(p, sequence, head, m0, dense_kv_rows<T>(p, sequence, kv_head),
                                   split_tiles(block_tiles<Traits>(p, m0), split, splits), WriteOutput());
    }
}

#define FLASH_EXPORT(head_dim, dtype_name, T)                                                           \
    ATTENTION_KERNEL(flash_fwd_d##head_dim##_##dtype_name, FlashTraits<head_dim>::kThreads,                \
                     FlashTraits<head_dim>::info<T>(KERNEL_FAMILY_FLASH)) {                               \
        flash_forward<head_dim, T, false>(p);                                                            \
    }                                                                                                    \
    ATTENTION_KERNEL(flash_varlen_d##head_dim##_##dtype_name, FlashTraits<head_dim>::kThreads,             \
                     FlashTraits<head_dim>::info<T>(KERNEL_FAMILY_FLASH_VARLEN)) {                        \
        flash_forward<head_dim, T, true>(p);                                                             \
    }

#define FLASH_EXPORTS(head_dim)                                                                          \
    FLASH_EXPORT(head_dim, f16, __half)                                                                 \
    FLASH_EXPORT(head_dim, bf16, __nv_bfloat16)

FLASH_EXPORTS(32)
FLASH_EXPORTS(64)
FLASH_EXPORTS(96)
FLASH_EXPORTS(128)
FLASH_EXPORTS(160)
FLASH_EXPORTS(192)
FLASH_EXPORTS(224)
FLASH_EXPORTS(256)

/*
 * attention_params.h - the one definition of what every attention kernel receives.
 *
 * Plain C (fixed-width integers, no C++): the Rust mirror in src/sys/bindings.rs is generated from this
 * file by bindgen and a test fails when the two drift (UPDATE_BINDINGS=1 cargo test --test bindings
 * regenerates it). The host fills and validates one AttentionParams and passes it by value to every
 * kernel; the kernels never recompute what the host already knows (scale * log2(e), head ratio).
 *
 * Layouts (strides in elements; the head_dim stride is always 1):
 *   q, out   [batch, seq_q, heads_q,  head_dim]
 *   k, v     [batch, seq_k, heads_kv, head_dim]
 *   lse      [batch, heads_q, seq_q]            f32, natural log, through lse_batch_stride and
 *                                               lse_head_stride (row stride 1); NULL when not wanted
 *   scores   [batch, heads_q, seq_q, seq_k]     f32, contiguous (naive kernels only): S, then P in place
 *   alibi_slopes, sinks [heads_q]               f32, or NULL
 *
 * Ragged (varlen) batches, when cu_seqlens_q is not NULL: sequence b owns rows [cu_seqlens_q[b],
 * cu_seqlens_q[b + 1]) of q and out, packed as [total_q, heads_q, head_dim] (the batch strides are unused)
 * and columns of the same rows of lse [heads_q, total_q] (lse_batch_stride is unused); seq_q is then the
 * plan's bound on any one sequence's length, total_q the rows of the buffers. Its keys are either packed
 * (block_table NULL): rows [cu_seqlens_k[b], ...) of k and v [total_k, heads_kv, head_dim], or paged:
 * key n is row n % page_size of page block_table[b * block_table_stride + n / page_size], at
 * page * k_batch_stride + row * k_seq_stride + head * k_head_stride (likewise v: in a paged cache the batch
 * stride is the page stride). Its key count is
 * seqused_k[b] when seqused_k is not NULL, else cu_seqlens_k[b + 1] - cu_seqlens_k[b]; seq_k is the bound.
 * The kernels read the metadata on the device and clamp every length and offset into the bounds and the
 * buffers (page indices into [0, num_pages)), so bad metadata gives wrong numbers, never an access out of
 * the buffers; the host's opt-in validation names the first bad entry.
 *
 * Appending to a paged cache (append_kv_* kernels): row i of k_new and v_new [new_rows, heads_kv,
 * head_dim] (strides new_seq_stride, new_head_stride) goes to slot slot_mapping[i] = page * page_size + row
 * of k_cache and v_cache, addressed like a paged k and v above (k/v batch, seq and head strides); a negative
 * slot (a padding token) or one past num_pages * page_size is skipped.
 *
 * Split-KV (flash-decoding, num_splits > 1): the key tiles a block would visit are cut into num_splits
 * contiguous ranges and the grid's z dimension holds batch * num_splits blocks (z = b * num_splits + s).
 * Split s writes its normalised partial output and its natural-log lse (without the sink) for every row
 * slot it owns: partial_out [num_splits, partial_rows, heads_q, head_dim] and partial_lse [num_splits,
 * heads_q, partial_rows], f32, where a row's slot is batch * partial_batch_rows + row (dense: partial_rows =
 * batch * seq_q, partial_batch_rows = seq_q; ragged: the packed row, partial_rows = total_q,
 * partial_batch_rows = 1). A split with no tiles writes lse -inf and 0. The combine kernel then merges
 * the splits of each (slot, head) into out and lse (with the sink). num_splits is 1 otherwise.
 *
 * GQA packing (packed_heads = heads_ratio > 1, flash kernels; decode: few queries, heads_ratio query heads
 * per key/value head): a block runs key/value head blockIdx.y, and the rows of its query tiles are the
 * (query position, query head) pairs of that head's group, position-major: packed row r is position
 * r / heads_ratio of query head blockIdx.y * heads_ratio + r % heads_ratio, so every K/V tile a block loads
 * feeds the whole group; a sequence has seq_q * heads_ratio packed rows. packed_heads 0 or 1: no packing
 * (row r is position r of query head blockIdx.y; the same formulas with 1). Masks, ALiBi, sinks, out, lse and the split-KV
 * slots use each row's own position and head.
 *
 * Merging two attention states (merge_states_* kernels): state_a, state_b [rows, heads_q, head_dim] in the
 * dtype (strides state_row_stride, state_head_stride) with f32 natural-log lse_a, lse_b [heads_q, rows]
 * (head stride rows) into out (out_seq_stride, out_head_stride) and lse [heads_q, rows]; rows = total_q.
 *
 * Block-sparse masks (block_row_offsets not NULL): query row i of a sequence may see key j only when
 * j / block_k is among block_col_indices[block_row_offsets[r] .. block_row_offsets[r + 1]) for
 * r = i / block_q (block_rows query blocks; lists increasing; block_nnz entries in all), on top of the
 * element-level masks; i and j count from the sequence's first query and key. block_q and block_k are
 * multiples of 64. The kernels clamp offsets into [0, block_nnz] and skip rows past block_rows.
 *
 * Attention maps (attention_map_* kernels): the weights exp(S - lse) of every (row, key), with lse from a
 * forward pass, summed (or averaged) over bins of map_bin_q x map_bin_k positions into map_values and over
 * the rows into map_key_profile, without the seq_q x seq_k matrix (dense batches only).
 *
 * Tensor maps (sm_90a kernels only, flash_sm90.cu; zero for every other kernel): tma_q, tma_k, tma_v are
 * 4-d maps over q, k and v: dimension 0 is head_dim, dimensions 1-3 are seq, heads and batch in the order
 * of increasing byte stride (the encoder wants each stride to span the dimension below), 128-byte swizzle,
 * zero fill out of bounds; box 64 by the kernel's tile rows on the seq dimension, 1 on the others
 * (src/tensor_maps.rs builds them). tma_dim_order[t] (t: 0 q, 1 k, 2 v) says where each lands: bits 0-1
 * the map dimension of seq, bits 2-3 that of heads, bits 4-5 that of batch.
 *
 * Sinks (sinks not NULL): the f32 logit sinks[h], in natural units of the scaled scores (not scaled, not
 * soft-capped, no ALiBi), joins every row's softmax denominator and contributes no value.
 *
 * Masks and score changes, with the diagonal c = i + seq_k - seq_q of query row i (bottom-right aligned):
 * causal keeps keys j <= c; the window keeps c - window_left <= j <= c + window_right (-1: unbounded);
 * a positive softcap maps the scaled score s to softcap * tanh(s / softcap); ALiBi then adds
 * -alibi_slopes[h] * |c - j|.
 */
#ifndef CUDA_ATTENTION_PARAMS_H
#define CUDA_ATTENTION_PARAMS_H

#include <stdint.h>

/* Largest head dimension any kernel accepts. */
#define MAX_HEAD_DIM 256

/* A TMA tensor map (the driver's 128-byte CUtensorMap, 64-byte aligned), carried inside the parameters so
 * that a kernel reads it from the kernel parameter space (__grid_constant__): made on the host for each
 * call (cuTensorMapEncodeTiled on a GPU, the emulator's encoder on the CPU), nothing copied to the device. */
typedef struct __attribute__((aligned(64))) TensorMapParam {
    uint64_t words[16];
} TensorMapParam;

typedef struct AttentionParams {
    /* TMA tensor maps (see above): first, so that their 64-byte alignment costs no padding. */
    TensorMapParam tma_q;
    TensorMapParam tma_k;
    TensorMapParam tma_v;

    const void *q;
    const void *k;
    const void *v;
    void *out;
    float *lse;
    float *scores;
    const float *alibi_slopes;
    const float *sinks;

    /* Ragged batches and the paged cache (see above); all NULL for a dense batch. */
    const int32_t *cu_seqlens_q;
    const int32_t *cu_seqlens_k;
    const int32_t *seqused_k;
    const int32_t *block_table;
    /* Block-sparse mask (see above), or NULL. */
    const int32_t *block_row_offsets;
    const int32_t *block_col_indices;

    /* Appending to a paged cache (see above). */
    void *k_cache;
    void *v_cache;
    const void *k_new;
    const void *v_new;
    const int64_t *slot_mapping;

    /* Split-KV partial states (see above), and the two states of a merge. */
    float *partial_out;
    float *partial_lse;
    const void *state_a;
    const void *state_b;
    const float *lse_a;
    const float *lse_b;

    /* Attention maps (attention_map.cu): the pooled weights map_values [batch, heads_q or 1, map_bins_q,
     * map_bins_k] and the key profile map_key_profile [batch, heads_q, seq_k], f32, contiguous, both
     * accumulated with atomicAdd (zeroed by the host first); NULL for every other kernel. */
    float *map_values;
    float *map_key_profile;

    int64_t q_batch_stride;
    int64_t q_seq_stride;
    int64_t q_head_stride;
    int64_t k_batch_stride;
    int64_t k_seq_stride;
    int64_t k_head_stride;
    int64_t v_batch_stride;
    int64_t v_seq_stride;
    int64_t v_head_stride;
    int64_t out_batch_stride;
    int64_t out_seq_stride;
    int64_t out_head_stride;
    int64_t lse_batch_stride;
    int64_t lse_head_stride;
    int64_t block_table_stride;
    int64_t new_seq_stride;
    int64_t new_head_stride;
    int64_t state_row_stride;
    int64_t state_head_stride;
    int64_t partial_rows;
    int64_t partial_batch_rows;

    int32_t batch;
    int32_t seq_q;
    int32_t seq_k;
    int32_t heads_q;
    int32_t heads_kv;
    int32_t head_dim;
    /* Ragged batches: rows of q/out (total_q) and of packed k/v (total_k); paged: tokens per page, pages,
     * and block-table entries per sequence. */
    int32_t total_q;
    int32_t total_k;
    int32_t page_size;
    int32_t num_pages;
    int32_t pages_per_seq;
    int32_t new_rows;
    int32_t num_splits;
    /* Block-sparse mask geometry: query and key block sizes, query blocks, listed blocks. */
    int32_t block_q;
    int32_t block_k;
    int32_t block_rows;
    int32_t block_nnz;
    /* heads_q / heads_kv: query head h reads key/value head h / heads_ratio. */
    int32_t heads_ratio;
    /* Query heads per position in a flash query tile: heads_ratio under GQA packing (see above); 0 or 1: none. */
    int32_t packed_heads;
    /* Non-zero: query i sees key j iff j <= i + seq_k - seq_q (bottom-right aligned). */
    int32_t causal;
    /* Sliding window bounds around the diagonal; -1: unbounded on that side. */
    int32_t window_left;
    int32_t window_right;

    /* Attention maps (see map_values): query and key positions per bin, bins per axis
     * (ceil(seq / bin)); map_mean_heads non-zero: one map, the mean over the query heads (else one per
     * head); map_mean_bins non-zero: each bin holds the mean of its positions' weights (else the sum). */
    int32_t map_bin_q;
    int32_t map_bin_k;
    int32_t map_bins_q;
    int32_t map_bins_k;
    int32_t map_mean_heads;
    int32_t map_mean_bins;
    /* The map dimensions of seq, heads and batch in tma_q, tma_k, tma_v (see above). */
    int32_t tma_dim_order[3];
    /* Softmax scale applied to Q K^T, and the same times log2(e) for exp2-based kernels. */
    float scale;
    float scale_log2;
    /* 0: off; otherwise the scaled scores become softcap * tanh(score / softcap). */
    float softcap;
} AttentionParams;

#endif /* CUDA_ATTENTION_PARAMS_H */

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
 *   lse      [batch, heads_q, seq_q]            f32, contiguous, natural log; NULL when not wanted
 *   scores   [batch, heads_q, seq_q, seq_k]     f32, contiguous (naive kernels only): S, then P in place
 *   alibi_slopes [heads_q]                      f32, or NULL
 *
 * Masks and score changes, with the diagonal c = i + seq_k - seq_q of query row i (bottom-right aligned):
 * causal keeps keys j <= c; the window keeps c - window_left <= j <= c + window_right (-1: unbounded);
 * a positive softcap maps the scaled score s to softcap * tanh(s / softcap); ALiBi then adds
 * -alibi_slopes[h] * |c - j|.
 */
#ifndef CUDA_ATTENTION_PARAMS_H
#define CUDA_ATTENTION_PARAMS_H

#include <stdint.h>

/* Naive kernels: each block computes a NAIVE_TILE x NAIVE_TILE output tile with NAIVE_TILE x
 * NAIVE_ROWS_PER_PASS threads (each thread owns NAIVE_TILE / NAIVE_ROWS_PER_PASS rows of one column). */
#define NAIVE_TILE 32
#define NAIVE_ROWS_PER_PASS 8
#define NAIVE_THREADS (NAIVE_TILE * NAIVE_ROWS_PER_PASS)
/* Two NAIVE_TILE x (NAIVE_TILE + 1) f32 tiles in dynamic shared memory (padded against bank conflicts). */
#define NAIVE_SHARED_BYTES (2 * NAIVE_TILE * (NAIVE_TILE + 1) * 4)
/* Softmax: one warp per row, NAIVE_SOFTMAX_WARPS rows per block. */
#define NAIVE_SOFTMAX_WARPS 4
#define NAIVE_SOFTMAX_THREADS (NAIVE_SOFTMAX_WARPS * 32)

/* Flash kernels: FLASH_WARPS warps per block. Head dims up to FLASH_NARROW_MAX_HEAD_DIM give each warp
 * FLASH_WARP_ROWS_NARROW query rows, wider ones FLASH_WARP_ROWS_WIDE (the O accumulators of 32 rows x 160+
 * columns do not fit in a thread's 255 registers); a block owns block_m = FLASH_WARPS * warp_rows query
 * rows. Key tiles have FLASH_BLOCK_N_SMALL rows for head dims up to FLASH_SMALL_MAX_HEAD_DIM and
 * FLASH_BLOCK_N beyond (S accumulators of 32 rows x 64 keys on top of 32 x 96+ O accumulators spill).
 * Shared memory holds one Q, one K and one V tile of 2-byte elements, rows padded by FLASH_ROW_PADDING
 * elements: (block_m + 2 * block_n) * (head_dim + FLASH_ROW_PADDING) * 2 bytes. Head dims are instantiated
 * in steps of FLASH_HEAD_DIM_STEP up to MAX_HEAD_DIM; smaller ones are zero-padded. */
#define FLASH_WARPS 4
#define FLASH_THREADS (FLASH_WARPS * 32)
#define FLASH_NARROW_MAX_HEAD_DIM 128
#define FLASH_WARP_ROWS_NARROW 32
#define FLASH_WARP_ROWS_WIDE 16
#define FLASH_SMALL_MAX_HEAD_DIM 64
#define FLASH_BLOCK_N_SMALL 64
#define FLASH_BLOCK_N 32
#define FLASH_ROW_PADDING 8
#define FLASH_HEAD_DIM_STEP 32
/* Strides (in elements) and base addresses must be multiples of this: cp.async moves 16 bytes. */
#define FLASH_ALIGN_ELEMENTS 8

/* Flash f32 (SIMT): FLASH_F32_WARPS query rows per block, one per warp; key tiles of FLASH_F32_KEY_TILE.
 * Shared memory: (FLASH_F32_WARPS * head_dim + FLASH_F32_KEY_TILE * (2 * head_dim + 1)) * 4 bytes. */
#define FLASH_F32_WARPS 8
#define FLASH_F32_THREADS (FLASH_F32_WARPS * 32)
#define FLASH_F32_KEY_TILE 32

/* Largest head dimension any kernel accepts. */
#define MAX_HEAD_DIM 256

typedef struct AttentionParams {
    const void *q;
    const void *k;
    const void *v;
    void *out;
    float *lse;
    float *scores;
    const float *alibi_slopes;

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

    int32_t batch;
    int32_t seq_q;
    int32_t seq_k;
    int32_t heads_q;
    int32_t heads_kv;
    int32_t head_dim;
    /* heads_q / heads_kv: query head h reads key/value head h / heads_ratio. */
    int32_t heads_ratio;
    /* Non-zero: query i sees key j iff j <= i + seq_k - seq_q (bottom-right aligned). */
    int32_t causal;
    /* Sliding window bounds around the diagonal; -1: unbounded on that side. */
    int32_t window_left;
    int32_t window_right;
    /* Softmax scale applied to Q K^T, and the same times log2(e) for exp2-based kernels. */
    float scale;
    float scale_log2;
    /* 0: off; otherwise the scaled scores become softcap * tanh(score / softcap). */
    float softcap;
} AttentionParams;

#endif /* CUDA_ATTENTION_PARAMS_H */

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

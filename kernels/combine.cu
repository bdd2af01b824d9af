/*
 * combine.cu - merging attention states: the combine step of split-KV (flash_combine_<dtype>) and the
 * public merge of two states (merge_states_<dtype>), one merge for both (merge_row).
 *
 * A state of a row is its normalised output o (over the keys it saw) and its natural-log logsumexp L (-inf:
 * it saw no key). States over disjoint key sets merge exactly: with m = max(L_s) (and the sink s_h, in
 * natural units, when the problem has sinks), w_s = e^(L_s - m), the merged output is
 * sum_s w_s o_s / (sum_s w_s + e^(s_h - m)) and the merged lse m + ln(sum_s w_s + e^(s_h - m)). A state with
 * w_s = 0 (L_s = -inf, or far below the max) is skipped, never multiplied: its output may be anything.
 * Every state -inf (and no sink): output 0, lse -inf; with a sink: output 0, lse = the sink. A NaN lse
 * makes the row NaN.
 *
 * One warp per (row, head), NAIVE-style grid-stride over rows; lane l owns columns l, l + 32, ...; the
 * weights are recomputed per column (the number of states is small: splits or 2). Layouts:
 * attention_params.h (split-KV partial states; merge states). Any head_dim up to MAX_HEAD_DIM, any strides,
 * element-aligned buffers.
 *
 * Exports: flash_combine_<dtype> and merge_states_<dtype> for f32, f16, bf16 (the output dtype; partial
 * states are f32, merged states are in the dtype).
 */
#include "include/device_helpers.cuh"

#define COMBINE_WARPS 8
#define COMBINE_THREADS (COMBINE_WARPS * WARP_SIZE)

/* Merges `states` states of one row (lse(s), o(s, x)) with the sink into write(x, value); returns the
 * merged lse. */
template <typename Lse, typename Output, typename Write>
__device__ __forceinline__ float merge_row(int states, const Lse &lse, const Output &o, float sink, int head_dim,
                                           int lane, const Write &write) {
    float top = sink;
    for (int s = 0; s < states; ++s) {
        top = max_keeping_nan(top, lse(s));
    }
    if (top == -INFINITY) {
        for (int x = lane; x < head_dim; x += WARP_SIZE) {
            write(x, 0.0f);
        }
        return -INFINITY;
    }
    float total = sink == -INFINITY ? 0.0f : expf(sink - top);
    for (int s = 0; s < states; ++s) {
        total += expf(lse(s) - top);
    }
    const float inverse = 1.0f / total;
    for (int x = lane; x < head_dim; x += WARP_SIZE) {
        float acc = 0.0f;
        for (int s = 0; s < states; ++s) {
            const float weight = expf(lse(s) - top);
            if (weight != 0.0f || weight != weight) {
                acc += weight * o(s, x);
            }
        }
        write(x, acc * inverse);
    }
    return top + logf(total);
}

/* Split-KV: the num_splits partial states of every (slot, head) into out and lse. */
template <typename T> __device__ void flash_combine(const AttentionParams &p) {
    const int lane = threadIdx.x % WARP_SIZE;
    const bool ragged = p.cu_seqlens_q != NULL;
    /* A ragged batch's rows past its last sequence belong to no sequence: never written. */
    const int64_t rows = ragged ? min((int64_t)max(p.cu_seqlens_q[p.batch], 0), p.partial_rows) : p.partial_rows;
    const int64_t units = rows * p.heads_q;
    for (int64_t unit = (int64_t)blockIdx.x * COMBINE_WARPS + threadIdx.x / WARP_SIZE; unit < units;
         unit += (int64_t)gridDim.x * COMBINE_WARPS) {
        const int64_t slot = unit / p.heads_q;
        const int head = (int)(unit % p.heads_q);
        const int64_t batch = ragged ? 0 : slot / p.partial_batch_rows;
        const int64_t row = ragged ? slot : slot % p.partial_batch_rows;
        T *out = static_cast<T *>(p.out) + batch * p.out_batch_stride + row * p.out_seq_stride + head * p.out_head_stride;
        const auto lse = [&](int s) { return p.partial_lse[(s * p.heads_q + head) * p.partial_rows + slot]; };
        const auto o = [&](int s, int x) {
            return p.partial_out[((s * p.partial_rows + slot) * p.heads_q + head) * p.head_dim + x];
        };
        const auto write = [&](int x, float value) { out[x] = from_float<T>(value); };
        const float sink = p.sinks != NULL ? p.sinks[head] : -INFINITY;
        const float merged = merge_row(p.num_splits, lse, o, sink, p.head_dim, lane, write);
        if (p.lse != NULL && lane == 0) {
            p.lse[batch * p.lse_batch_stride + head * p.lse_head_stride + row] = merged;
        }
    }
}

/* Two states of total_q rows into out and lse (merge_states_into). */
template <typename T> __device__ void merge_states(const AttentionParams &p) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int64_t units = (int64_t)p.total_q * p.heads_q;
    for (int64_t unit = (int64_t)blockIdx.x * COMBINE_WARPS + threadIdx.x / WARP_SIZE; unit < units;
         unit += (int64_t)gridDim.x * COMBINE_WARPS) {
        const int64_t row = unit / p.heads_q;
        const int head = (int)(unit % p.heads_q);
        const int64_t lse_at = head * p.lse_head_stride + row;
        const int64_t state_at = row * p.state_row_stride + head * p.state_head_stride;
        const auto lse = [&](int s) { return (s == 0 ? p.lse_a : p.lse_b)[lse_at]; };
        const auto o = [&](int s, int x) {
            return to_float(static_cast<const T *>(s == 0 ? p.state_a : p.state_b)[state_at + x]);
        };
        T *out = static_cast<T *>(p.out) + row * p.out_seq_stride + head * p.out_head_stride;
        const auto write = [&](int x, float value) { out[x] = from_float<T>(value); };
        const float merged = merge_row(2, lse, o, -INFINITY, p.head_dim, lane, write);
        if (p.lse != NULL && lane == 0) {
            p.lse[lse_at] = merged;
        }
    }
}

#define COMBINE_INFO(family, T)                                                                            \
    make_kernel_info(family, kernel_dtype<T>(), 1, MAX_HEAD_DIM, COMBINE_THREADS, 1, COMBINE_WARPS, 1, 0, 0, 1, \
                     sizeof(T))

#define COMBINE_EXPORTS(dtype_name, T)                                                                     \
    ATTENTION_KERNEL(flash_combine_##dtype_name, COMBINE_THREADS, COMBINE_INFO(KERNEL_FAMILY_COMBINE, T)) {  \
        flash_combine<T>(p);                                                                               \
    }                                                                                                      \
    ATTENTION_KERNEL(merge_states_##dtype_name, COMBINE_THREADS, COMBINE_INFO(KERNEL_FAMILY_MERGE_STATES, T)) { \
        merge_states<T>(p);                                                                                \
    }

COMBINE_EXPORTS(f32, float)
COMBINE_EXPORTS(f16, __half)
COMBINE_EXPORTS(bf16, __nv_bfloat16)

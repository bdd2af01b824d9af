/*
 * append_kv.cu - writes new key/value rows into a paged KV cache (the serving step after each forward).
 *
 * Algorithm: element-wise copy. Row i of k_new and v_new [new_rows, heads_kv, head_dim] goes to slot
 * s = slot_mapping[i] of the cache: row s % page_size of page s / page_size, at page * k_batch_stride +
 * row * k_seq_stride + head * k_head_stride of k_cache (likewise v_cache). A negative slot (a padding
 * token, as vLLM's -1) and a slot past num_pages * page_size are skipped, so bad slots never write outside
 * the cache. Each thread copies one element of k and one of v per step of a grid-stride loop over
 * new_rows * heads_kv * head_dim (consecutive threads on consecutive elements of a row: coalesced reads;
 * writes are coalesced within a head's row).
 *
 * Graph-capturable: the grid depends only on new_rows (the host's count of new tokens, padding included);
 * the slots are read on the device. Layouts: attention_params.h. Any head_dim 1..MAX_HEAD_DIM, any strides,
 * element-aligned buffers.
 *
 * Exports: append_kv_<dtype> for f32, f16, bf16.
 */
#include "include/device_helpers.cuh"

/* Threads per block, and elements of one grid pass per block. */
#define APPEND_KV_THREADS 256

template <typename T> __device__ void append_kv(const AttentionParams &p) {
    const int64_t per_row = (int64_t)p.heads_kv * p.head_dim;
    const int64_t total = p.new_rows * per_row;
    const int64_t slots = (int64_t)p.num_pages * p.page_size;
    for (int64_t e = (int64_t)blockIdx.x * APPEND_KV_THREADS + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * APPEND_KV_THREADS) {
        const int64_t i = e / per_row;
        const int head = (int)(e % per_row / p.head_dim);
        const int x = (int)(e % p.head_dim);
        const int64_t slot = p.slot_mapping[i];
        if (slot < 0 || slot >= slots) {
            continue;
        }
        const int64_t page = slot / p.page_size;
        const int64_t row = slot % p.page_size;
        const int64_t from = i * p.new_seq_stride + head * p.new_head_stride + x;
        static_cast<T *>(p.k_cache)[page * p.k_batch_stride + row * p.k_seq_stride + head * p.k_head_stride + x] =
            static_cast<const T *>(p.k_new)[from];
        static_cast<T *>(p.v_cache)[page * p.v_batch_stride + row * p.v_seq_stride + head * p.v_head_stride + x] =
            static_cast<const T *>(p.v_new)[from];
    }
}

#define APPEND_KV_EXPORT(dtype_name, T)                                                                    \
    ATTENTION_KERNEL(append_kv_##dtype_name, APPEND_KV_THREADS,                                            \
                     make_kernel_info(KERNEL_FAMILY_APPEND_KV, kernel_dtype<T>(), 1, MAX_HEAD_DIM,          \
                                      APPEND_KV_THREADS, 1, APPEND_KV_THREADS, 1, 0, 0, 1, sizeof(T))) {    \
        append_kv<T>(p);                                                                                   \
    }

APPEND_KV_EXPORT(f32, float)
APPEND_KV_EXPORT(f16, __half)
APPEND_KV_EXPORT(bf16, __nv_bfloat16)

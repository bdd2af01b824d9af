/*
 * device_helpers.cuh - the small device-side vocabulary every kernel file includes.
 *
 * Element conversions (f32, f16, bf16 to and from f32), warp reductions, and the one dynamic shared
 * memory buffer. Kernels use dynamic shared memory only (sized by the launcher from the constants in
 * attention_params.h), never static __shared__ arrays, so that its size is always explicit.
 *
 * Kernels are declared with KERNEL_ENTRY(name, max_threads), which takes one AttentionParams `p` by
 * value. Compiled by nvcc it is an extern "C" __global__ function; compiled as plain C++ (the CPU
 * emulator, see emulator/cuda/) the emulation header gives it a host definition instead. The product's
 * kernels use ATTENTION_KERNEL(name, max_threads, info), which adds the kernel's KernelInfo (built from
 * its traits) to the registry the host build keeps (kernel_registry.h); nvcc drops the record.
 */
#ifndef CUDA_ATTENTION_DEVICE_HELPERS_CUH
#define CUDA_ATTENTION_DEVICE_HELPERS_CUH

#include <math.h>

#include "attention_params.h"
#include "kernel_registry.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
/* The parameter struct stays in the kernel parameter space (__grid_constant__): device code reads it through
 * references without copying it to local memory. */
#define KERNEL_ENTRY(name, max_threads) \
    extern "C" __global__ void __launch_bounds__(max_threads, 1) name(const __grid_constant__ AttentionParams p)
#define ATTENTION_KERNEL(name, max_threads, ...) KERNEL_ENTRY(name, max_threads)
#else
#include "cuda_emulation.h" /* emulator/cuda/ */
#endif

/* The registry record of a kernel (kernel_registry.h; the name is filled in by ATTENTION_KERNEL). */
__host__ __device__ constexpr KernelInfo make_kernel_info(int32_t family, int32_t dtype, int32_t min_head_dim,
                                                          int32_t max_head_dim, uint32_t block_x, uint32_t block_y,
                                                          uint32_t tile_rows, uint32_t tile_cols, uint32_t shared_bytes,
                                                          uint32_t shared_bytes_per_head_dim, uint32_t stride_multiple,
                                                          uint32_t base_alignment) {
    return KernelInfo{nullptr,   family,      dtype,        min_head_dim,    max_head_dim,
                      block_x,   block_y,     tile_rows,    tile_cols,       shared_bytes,
                      shared_bytes_per_head_dim, stride_multiple, base_alignment};
}

/* Fully unroll the next loop (its trip count is a compile-time constant): register arrays indexed by its
 * counter then stay in registers instead of local memory. The emulator's C++ build ignores it. */
/* NO_UNROLL keeps the next loop rolled (fewer live registers). */
#if defined(__CUDACC__)
#define UNROLL _Pragma("unroll")
#define NO_UNROLL _Pragma("unroll 1")
#else
#define UNROLL
#define NO_UNROLL
#endif

#define WARP_SIZE 32
#define LN_2 0.69314718055994530942f
#define LOG2_E 1.44269504088896340736f
#define FULL_WARP_MASK 0xffffffffu

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

/* KERNEL_DTYPE_* of an element type (kernel_registry.h). */
template <typename T> __host__ __device__ constexpr int32_t kernel_dtype();
template <> __host__ __device__ constexpr int32_t kernel_dtype<float>() { return KERNEL_DTYPE_F32; }
template <> __host__ __device__ constexpr int32_t kernel_dtype<__half>() { return KERNEL_DTYPE_F16; }
template <> __host__ __device__ constexpr int32_t kernel_dtype<__nv_bfloat16>() { return KERNEL_DTYPE_BF16; }

/* Butterfly reductions: every lane ends with the result over the whole warp. */
__device__ __forceinline__ float warp_max(float x) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
        x = fmaxf(x, __shfl_xor_sync(FULL_WARP_MASK, x, offset));
    }
    return x;
}

/* max(a, b) that propagates NaN (fmaxf returns the other operand and would hide a NaN score). */
__device__ __forceinline__ float max_keeping_nan(float a, float b) { return (a > b || a != a) ? a : b; }

__device__ __forceinline__ float warp_max_keeping_nan(float x) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
        x = max_keeping_nan(x, __shfl_xor_sync(FULL_WARP_MASK, x, offset));
    }
    return x;
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
        x += __shfl_xor_sync(FULL_WARP_MASK, x, offset);
    }
    return x;
}

/* The block's dynamic shared memory, 16-byte aligned, viewed as T. */
#if defined(__CUDACC__)
template <typename T> __device__ __forceinline__ T *dynamic_shared() {
    extern __shared__ __align__(16) unsigned char dynamic_shared_bytes[];
    return reinterpret_cast<T *>(dynamic_shared_bytes);
}
#else
/* The emulator gives each block its own buffer, sized exactly as launched and filled with NaN bytes. */
template <typename T> __device__ __forceinline__ T *dynamic_shared() {
    return reinterpret_cast<T *>(::cuda_emu::this_thread().shared_memory);
}
#endif

/* The keys query `row` sees under the causal mask and the window: [begin, end), possibly empty. Rows grow
 * monotonically: both bounds are non-decreasing in `row`. */
struct KeyRange {
    int begin;
    int end;
};

__device__ __forceinline__ KeyRange key_range(const AttentionParams &p, int row) {
    const int64_t diagonal = (int64_t)row + p.seq_k - p.seq_q;
    int64_t end = p.seq_k;
    if (p.causal) {
        end = min(end, diagonal + 1);
    }
    if (p.window_right >= 0) {
        end = min(end, diagonal + p.window_right + 1);
    }
    const int64_t begin = p.window_left >= 0 ? max((int64_t)0, diagonal - p.window_left) : 0;
    KeyRange range;
    range.begin = (int)begin;
    range.end = (int)max(begin, end);
    return range;
}

/* Row `row` of a flash block's query tiles for block head `head` (blockIdx.y): its query position and query
 * head, with g = packed_heads(p) query heads per position (attention_params.h, GQA packing): position
 * row / g of query head head * g + row % g. Without packing g = 1: the row is the position and the block's
 * head the query head. One branch-free formula for both (a branch would let the compiler version the key
 * loop on it); positions never decrease with the row. */
struct QueryRow {
    int position;
    int head;
};

__device__ __forceinline__ int packed_heads(const AttentionParams &p) { return max(p.packed_heads, 1); }

__device__ __forceinline__ int query_position(const AttentionParams &p, int row) { return row / packed_heads(p); }

__device__ __forceinline__ QueryRow query_row(const AttentionParams &p, int head, int row) {
    const int g = packed_heads(p);
    QueryRow q;
    q.position = row / g;
    q.head = head * g + (row - q.position * g);
    return q;
}

/* The query-tile rows of one (sequence, block head): seq_q * packed_heads. */
__device__ __forceinline__ int query_rows(const AttentionParams &p) { return p.seq_q * packed_heads(p); }

/* The listed key blocks of query block r of a block-sparse mask: [begin, end) of block_col_indices, clamped
 * into the list; empty for a row past block_rows. */
struct BlockList {
    int begin;
    int end;
};

__device__ __forceinline__ BlockList block_list(const AttentionParams &p, int r) {
    BlockList list;
    list.begin = 0;
    list.end = 0;
    if (r >= 0 && r < p.block_rows) {
        list.begin = min(max(p.block_row_offsets[r], 0), p.block_nnz);
        list.end = min(max(p.block_row_offsets[r + 1], list.begin), p.block_nnz);
    }
    return list;
}

/* Whether the block mask (if any) lists the block of (query row, key col): a binary search of the row's
 * list (the naive kernels' per-element test; the flash kernels walk whole tiles instead). */
__device__ __forceinline__ bool block_allows(const AttentionParams &p, int row, int col) {
    if (p.block_row_offsets == NULL) {
        return true;
    }
    BlockList list = block_list(p, row / p.block_q);
    const int target = col / p.block_k;
    while (list.begin < list.end) {
        const int mid = (list.begin + list.end) / 2;
        const int c = p.block_col_indices[mid];
        if (c == target) {
            return true;
        }
        if (c < target) {
            list.begin = mid + 1;
        } else {
            list.end = mid;
        }
    }
    return false;
}

/* The first key at or after col0 (below end) whose key block `list` holds, moving the list's cursor
 * (list.begin) forward; end when no listed block is left; col0 itself without a mask. A kernel whose query
 * tile lies in one query block and whose key tiles (aligned, at most block_k keys) each in one key block
 * walks the listed tiles with it instead of testing each element: a returned key that is not col0 starts
 * a listed block. The cursor only moves forward, so a bad list cannot hang the walk. */
__device__ __forceinline__ int next_listed_key(const AttentionParams &p, BlockList &list, int col0, int end) {
    if (p.block_row_offsets == NULL) {
        return col0;
    }
    const int block = col0 / p.block_k;
    while (list.begin < list.end && p.block_col_indices[list.begin] < block) {
        ++list.begin;
    }
    if (list.begin == list.end) {
        return end;
    }
    const long long first = (long long)p.block_col_indices[list.begin] * p.block_k;
    return first <= col0 ? col0 : (int)(first < end ? first : end);
}

/* Soft cap, then ALiBi, on the scaled score s of (query head, row, key col). */
__device__ __forceinline__ float adjust_score(const AttentionParams &p, int head, int row, int col, float s) {
    if (p.softcap > 0.0f) {
        s = p.softcap * tanhf(s / p.softcap);
    }
    if (p.alibi_slopes != NULL) {
        const int64_t distance = (int64_t)row + p.seq_k - p.seq_q - col;
        s -= p.alibi_slopes[head] * (float)(distance < 0 ? -distance : distance);
    }
    return s;
}

__device__ __forceinline__ bool adjusts_scores(const AttentionParams &p) {
    return p.softcap > 0.0f || p.alibi_slopes != NULL;
}

/* The sink of query head `head` in log2 units, or -inf when the problem has none. */
__device__ __forceinline__ float sink_log2(const AttentionParams &p, int head) {
    return p.sinks != NULL ? p.sinks[head] * LOG2_E : -INFINITY;
}

/* The end of one row's online softmax. The row's max is m * scale in log2 units (-inf when it saw no key),
 * l = sum 2^(x - m * scale) over its keys, `sink` its head's sink in log2 units (-inf: none). `seen` is
 * false when the row saw no key (l == 0): its output is exactly 0 by a select, whatever the accumulators
 * hold. `factor` scales the accumulators into the output: 1 / l, or with a sink
 * 2^(m' - top) / (l 2^(m' - top) + 2^(sink - top)) with m' = m * scale, top = max(m', sink). `lse` is the
 * natural-log logsumexp of the row and the sink: -inf for a row that saw nothing without a sink, the sink
 * alone with one. A NaN l gives NaN in both. */
struct RowEnd {
    bool seen;
    float factor;
    float lse;
};

__device__ __forceinline__ RowEnd finish_row(float m, float scale, float l, float sink) {
    RowEnd end;
    end.seen = l != 0.0f;
    if (sink == -INFINITY) {
        end.factor = end.seen ? 1.0f / l : 0.0f;
        end.lse = end.seen ? fmaf(m, scale, log2f(l)) * LN_2 : -INFINITY;
    } else {
        const float row_max = m * scale;
        const float top = fmaxf(row_max, sink);
        const float kept = exp2f(row_max - top); /* 0 when the row saw nothing */
        const float total = fmaf(l, kept, exp2f(sink - top));
        end.factor = end.seen ? kept / total : 0.0f;
        end.lse = (top + log2f(total)) * LN_2;
    }
    return end;
}

#endif /* CUDA_ATTENTION_DEVICE_HELPERS_CUH */

/*
 * sequence.cuh - where one sequence's rows live: the per-sequence view of a dense or ragged batch, and the
 * K/V row addressing (dense, packed or paged), the one place keys and values are addressed. Every
 * flash-family kernel runs one sequence at a time through these; none computes a batch or page offset
 * itself.
 *
 * sequence_params<T>(p, b, q_begin) returns the parameters of sequence b of a ragged batch as a dense
 * problem run with batch index q_begin (its first row): the batch strides of q, out and lse are their row
 * strides, packed k and v point at the sequence's first key row, seq_q and seq_k are its own lengths, and
 * block_table points at its row of the table. It reads cu_seqlens_q,
 * cu_seqlens_k and seqused_k on the device and clamps every value into the plan's bounds and the buffers:
 *   q rows   [clamp(cu_q[b], 0, total_q), clamp(cu_q[b + 1], that, total_q)), at most seq_q of them
 *   keys     seqused_k[b] or cu_k[b + 1] - cu_k[b], in [0, seq_k]; packed: also within [cu_k[b], total_k);
 *            paged: also within the pages_per_seq pages of the sequence's table row
 * so a bad entry never sends a kernel outside a buffer; page indices are clamped into [0, num_pages) by
 * the row addressing. Dense batches keep the kernel's own parameters (no copy: the compiler keeps reading
 * them from the constant bank) and address (batch, head) through the batch strides.
 */
#ifndef CUDA_ATTENTION_SEQUENCE_CUH
#define CUDA_ATTENTION_SEQUENCE_CUH

#include "device_helpers.cuh"

__device__ __forceinline__ int clamp_int(int x, int lo, int hi) { return min(max(x, lo), hi); }

template <typename T>
__device__ __forceinline__ AttentionParams sequence_params(const AttentionParams &p, int b, int &q_begin) {
    AttentionParams s = p;
    q_begin = clamp_int(p.cu_seqlens_q[b], 0, p.total_q);
    const int q_end = clamp_int(p.cu_seqlens_q[b + 1], q_begin, p.total_q);
    s.seq_q = min(q_end - q_begin, p.seq_q);
    int key_limit = p.seq_k;
    int keys;
    if (p.block_table == NULL) {
        const int k_begin = clamp_int(p.cu_seqlens_k[b], 0, p.total_k);
        keys = p.seqused_k != NULL ? p.seqused_k[b] : clamp_int(p.cu_seqlens_k[b + 1], k_begin, p.total_k) - k_begin;
        key_limit = min(key_limit, p.total_k - k_begin);
        s.k = static_cast<const T *>(p.k) + (int64_t)k_begin * p.k_seq_stride;
        s.v = static_cast<const T *>(p.v) + (int64_t)k_begin * p.v_seq_stride;
    } else {
        keys = p.seqused_k != NULL ? p.seqused_k[b] : p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b];
        key_limit = (int)min((int64_t)key_limit, (int64_t)p.pages_per_seq * p.page_size);
        s.block_table = p.block_table + b * p.block_table_stride;
    }
    s.seq_k = clamp_int(keys, 0, key_limit);
    /* The sequence's rows as "batch" q_begin: the kernels address q, out and lse of (batch, head) through
     * the batch strides, which become the row strides here. Only q_begin stays live (one register, like a
     * dense kernel's batch index); the pointers are recomputed where they are used. */
    s.q_batch_stride = p.q_seq_stride;
    s.out_batch_stride = p.out_seq_stride;
    s.lse_batch_stride = 1;
    return s;
}

/* Rows of a dense [seq, d] matrix with row stride `stride` (elements): rows(n) is row n, and the rows of
 * any tile are `stride` elements apart. */
template <typename T> struct DenseRows {
    const T *base;
    int64_t stride;
    __device__ __forceinline__ const T *operator()(int n) const { return base + n * stride; }
    /* Whether the rows [n0, n0 + tile) are `stride` apart from rows(n0) (always, here). */
    __device__ __forceinline__ constexpr bool strided_tiles() const { return true; }
};

/* The query rows of key/value head `kv_head`'s group under GQA packing (query_row): packed row n is
 * position n / heads_ratio of query head kv_head * heads_ratio + n % heads_ratio. Rows of a tile are not
 * evenly spaced, so the tile is gathered row by row (once per block). */
template <typename T> struct PackedQueryRows {
    const AttentionParams &p;
    const T *base; /* position 0 of the group's first query head */
    __device__ __forceinline__ PackedQueryRows(const AttentionParams &params, const T *batch_base, int kv_head)
        : p(params), base(batch_base + (int64_t)kv_head * packed_heads(params) * params.q_head_stride) {}
    __device__ __forceinline__ const T *operator()(int n) const {
        const QueryRow q = query_row(p, 0, n);
        return base + q.position * p.q_seq_stride + q.head * p.q_head_stride;
    }
    __device__ __forceinline__ constexpr bool strided_tiles() const { return false; }
};

/* The keys (or values, kValues) of one head of a ragged batch's sequence: packed (pages NULL: row n at
 * base + n * stride) or paged (row n % page_size of page pages[n / page_size], pages clamped into
 * [0, num_pages)). Strides and the page geometry are read from the kernel's own parameters `p` (the
 * constant bank: no registers); only the base and the sequence's table row are per block.
 * strided_tiles(): every key tile of TILE rows lies in one page (or the rows are packed), so a tile's rows
 * are `stride` apart and the tile is copied like a dense one; otherwise each row is addressed alone. */
template <typename T, bool kValues, int TILE> struct VarlenRows {
    const AttentionParams &p;
    const T *base;
    const int32_t *pages;
    int64_t stride;
    __device__ __forceinline__ VarlenRows(const AttentionParams &params, const T *base_, const int32_t *pages_)
        : p(params), base(base_), pages(pages_), stride(kValues ? params.v_seq_stride : params.k_seq_stride) {}
    __device__ __forceinline__ const T *operator()(int n) const {
        if (pages == NULL) {
            return base + n * stride;
        }
        const int page = clamp_int(pages[n / p.page_size], 0, p.num_pages - 1);
        return base + page * (kValues ? p.v_batch_stride : p.k_batch_stride) + (n % p.page_size) * stride;
    }
    __device__ __forceinline__ bool strided_tiles() const { return pages == NULL || p.page_size % TILE == 0; }
};

/* The K and V rows of one key/value head of a sequence. */
template <typename KRows, typename VRows = KRows> struct KvRows {
    KRows k;
    VRows v;
};

/* K/V addressing of (batch, key/value head) of a dense batch, and of key/value head `kv_head` of the
 * sequence `s` of a ragged one (sequence_params; its rows note whether key tiles of TILE rows lie in one
 * page each). */
template <typename T>
__device__ __forceinline__ KvRows<DenseRows<T>> dense_kv_rows(const AttentionParams &p, int batch, int kv_head) {
    KvRows<DenseRows<T>> rows;
    rows.k.base = static_cast<const T *>(p.k) + batch * p.k_batch_stride + kv_head * p.k_head_stride;
    rows.k.stride = p.k_seq_stride;
    rows.v.base = static_cast<const T *>(p.v) + batch * p.v_batch_stride + kv_head * p.v_head_stride;
    rows.v.stride = p.v_seq_stride;
    return rows;
}

/* `p` is the kernel's own parameters, `s` the sequence's (sequence_params(p, b)). */
template <typename T, int TILE>
__device__ __forceinline__ KvRows<VarlenRows<T, false, TILE>, VarlenRows<T, true, TILE>>
varlen_kv_rows(const AttentionParams &p, const AttentionParams &s, int kv_head) {
    const int32_t *pages = p.block_table != NULL ? s.block_table : NULL;
    return {VarlenRows<T, false, TILE>(p, static_cast<const T *>(s.k) + kv_head * p.k_head_stride, pages),
            VarlenRows<T, true, TILE>(p, static_cast<const T *>(s.v) + kv_head * p.v_head_stride, pages)};
}

#endif /* CUDA_ATTENTION_SEQUENCE_CUH */

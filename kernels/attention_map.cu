/*
 * attention_map.cu - attention maps without the seq_q x seq_k matrix: the weights pooled over bins, and the
 * attention each key receives.
 *
 * Algorithm (one launch, after a forward pass that wrote lse):
 *   for each 32-row query tile of one (batch, query head), for each 32-key tile the tile's rows see (with a
 *   block-sparse mask only the tiles of the blocks its query block lists, walked with next_listed_key: a
 *   32-row tile lies in one query block and a 32-key tile in one key block, block sizes being multiples
 *   of 64, so an unlisted tile is skipped whole, never loaded):
 *     S = scale * Q_tile K_tile^T   (f32 products, head_dim in chunks of MAP_TILE)
 *     S = adjust(S)                 (soft cap, ALiBi: adjust_score, as every kernel)
 *     W = exp(S - lse_row)          at the keys the row sees (key_range), 0 elsewhere and for a row
 *                                   with lse -inf (it sees no key); lse includes the sink, so a row's
 *                                   weights sum to 1 - exp(sink - lse) then
 *     profile[key] += sum over the tile's rows of W                       (atomicAdd per column)
 *     map[bin_row, bin_col] += factor * sum of W over the bin's part of the tile (atomicAdd per bin)
 *   factor = 1 / (positions of the bin) when averaging within bins, times 1 / heads_q when averaging over
 *   heads. Nothing of seq_q x seq_k size is stored: memory is the inputs, lse, the map and the profile.
 *   It is not a second forward: no online softmax, no P V; the lse fixes each row's normaliser.
 *
 * Layouts: q, k and the masks as in attention_params.h (any strides, GQA: query head h reads key/value head
 * h / heads_ratio); lse [batch, heads_q, seq_q] through lse_batch_stride and lse_head_stride;
 * map_values [batch, heads_q or 1, map_bins_q, map_bins_k] and map_key_profile [batch, heads_q, seq_k],
 * contiguous f32, zeroed by the host before the launch (the kernel only adds).
 *
 * Ownership: a block of MAP_TILE x MAP_ROWS_PER_PASS threads owns one 32-row query tile of one (batch,
 * head) and walks its key tiles; thread (tx, ty) computes column tx of rows ty, ty + 8, ... of each score
 * tile (staged through padded shared tiles of Q and K, as naive.cu), then writes W to a shared tile. The
 * profile: threads ty = 0 sum their column. The bins: the tile touches at most 32 x 32 bins; thread t sums
 * the tile's part of bins t, t + 256, ... and adds it to global memory (one atomic per touched bin, so
 * wide bins cost few atomics; a bin covering the whole tile is summed by one thread). Grid-stride loops
 * in x (query tiles), y (heads) and z (batch).
 *
 * Limits: dense batches (no cu_seqlens), head_dim 1..MAX_HEAD_DIM, sequences below 2^31. Atomic f32
 * additions in any order: results are not bit-identical between runs (differences of f32 rounding).
 */
#include "include/device_helpers.cuh"

/* Tiles, the one place they are chosen: MAP_TILE query rows x MAP_TILE keys per score tile, a block of
 * MAP_TILE x MAP_ROWS_PER_PASS threads; three padded MAP_TILE x (MAP_TILE + 1) f32 tiles of shared memory
 * (Q, K, W). */
#define MAP_TILE 32
#define MAP_ROWS_PER_PASS 8
#define MAP_THREADS (MAP_TILE * MAP_ROWS_PER_PASS)
#define MAP_TILE_STRIDE (MAP_TILE + 1)
#define MAP_ROWS_PER_THREAD (MAP_TILE / MAP_ROWS_PER_PASS)
#define MAP_SHARED_BYTES (3 * MAP_TILE * MAP_TILE_STRIDE * 4)

template <typename T> __device__ void attention_map(const AttentionParams &p) {
    float *q_tile = dynamic_shared<float>();                 // [TILE rows][TILE d] of Q
    float *k_tile = q_tile + MAP_TILE * MAP_TILE_STRIDE;     // [TILE keys][TILE d] of K
    float *w_tile = k_tile + MAP_TILE * MAP_TILE_STRIDE;     // [TILE rows][TILE keys] of W
    const T *q = static_cast<const T *>(p.q);
    const T *k = static_cast<const T *>(p.k);
    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int tid = ty * MAP_TILE + tx;
    const int map_heads = p.map_mean_heads ? 1 : p.heads_q;
    const float head_factor = p.map_mean_heads ? 1.0f / (float)p.heads_q : 1.0f;

    for (int b = blockIdx.z; b < p.batch; b += gridDim.z) {
        for (int h = blockIdx.y; h < p.heads_q; h += gridDim.y) {
            const T *q_bh = q + b * p.q_batch_stride + h * p.q_head_stride;                   // [sq, d]
            const T *k_bh = k + b * p.k_batch_stride + (h / p.heads_ratio) * p.k_head_stride; // [sk, d]
            const float *lse_bh = p.lse + b * p.lse_batch_stride + h * p.lse_head_stride;     // [sq]
            float *profile_bh = p.map_key_profile + ((int64_t)b * p.heads_q + h) * p.seq_k;   // [sk]
            float *map_bh = p.map_values + ((int64_t)b * map_heads + (p.map_mean_heads ? 0 : h)) *
                                               p.map_bins_q * (int64_t)p.map_bins_k; // [bins_q, bins_k]

            for (int row0 = blockIdx.x * MAP_TILE; row0 < p.seq_q; row0 += gridDim.x * MAP_TILE) {
                const int row_end = min(row0 + MAP_TILE, p.seq_q);
                // The keys any row of the tile sees (ranges grow with the row).
                const int key_begin = key_range(p, row0).begin;
                const int key_end = key_range(p, row_end - 1).end;
                float lse_row[MAP_ROWS_PER_THREAD];
                for (int i = 0; i < MAP_ROWS_PER_THREAD; ++i) {
                    const int row = row0 + ty + i * MAP_ROWS_PER_PASS;
                    lse_row[i] = row < p.seq_q ? lse_bh[row] : -INFINITY;
                }
                BlockList listed = {0, 0};
                if (p.block_row_offsets != NULL) {
                    listed = block_list(p, row0 / p.block_q);
                }
                // Uniform over the block (row0 and col0 are), so every thread takes the same tiles.
                for (int col0 = next_listed_key(p, listed, key_begin / MAP_TILE * MAP_TILE, key_end); col0 < key_end;
                     col0 = next_listed_key(p, listed, col0 + MAP_TILE, key_end)) {
                    const int col_end = min(col0 + MAP_TILE, p.seq_k);
                    // S_tile = Q_tile K_tile^T, head_dim in chunks of TILE.
                    float acc[MAP_ROWS_PER_THREAD] = {};
                    for (int d0 = 0; d0 < p.head_dim; d0 += MAP_TILE) {
                        const int d = d0 + tx;
                        for (int r = ty; r < MAP_TILE; r += MAP_ROWS_PER_PASS) {
                            const int qi = row0 + r;
                            const int kj = col0 + r;
                            q_tile[r * MAP_TILE_STRIDE + tx] =
                                (qi < p.seq_q && d < p.head_dim) ? to_float(q_bh[qi * p.q_seq_stride + d]) : 0.0f;
                            k_tile[r * MAP_TILE_STRIDE + tx] =
                                (kj < p.seq_k && d < p.head_dim) ? to_float(k_bh[kj * p.k_seq_stride + d]) : 0.0f;
                        }
                        __syncthreads();
                        for (int kk = 0; kk < MAP_TILE; ++kk) {
                            const float key = k_tile[tx * MAP_TILE_STRIDE + kk];
                            for (int i = 0; i < MAP_ROWS_PER_THREAD; ++i) {
                                acc[i] += q_tile[(ty + i * MAP_ROWS_PER_PASS) * MAP_TILE_STRIDE + kk] * key;
                            }
                        }
                        __syncthreads();
                    }
                    // W = exp(adjust(scale * S) - lse) where the row sees the key; 0 elsewhere, and in a
                    // row that sees nothing (lse -inf, never -inf - -inf).
                    const int col = col0 + tx;
                    for (int i = 0; i < MAP_ROWS_PER_THREAD; ++i) {
                        const int r = ty + i * MAP_ROWS_PER_PASS;
                        const int row = row0 + r;
                        float w = 0.0f;
                        if (row < p.seq_q && col < p.seq_k && lse_row[i] != -INFINITY) {
                            const KeyRange visible = key_range(p, row);
                            if (col >= visible.begin && col < visible.end) {
                                w = expf(adjust_score(p, h, row, col, acc[i] * p.scale) - lse_row[i]);
                            }
                        }
                        w_tile[r * MAP_TILE_STRIDE + tx] = w;
                    }
                    __syncthreads();
                    // Key profile: column sums of W.
                    if (ty == 0 && col < p.seq_k) {
                        float sum = 0.0f;
                        for (int r = 0; r < row_end - row0; ++r) {
                            sum += w_tile[r * MAP_TILE_STRIDE + tx];
                        }
                        if (sum != 0.0f) {
                            atomicAdd(profile_bh + col, sum);
                        }
                    }
                    // Bins: the tile's part of every bin it touches, one thread per bin.
                    const int bin_row0 = row0 / p.map_bin_q;
                    const int bin_col0 = col0 / p.map_bin_k;
                    const int bin_rows = (row_end - 1) / p.map_bin_q - bin_row0 + 1;
                    const int bin_cols = (col_end - 1) / p.map_bin_k - bin_col0 + 1;
                    for (int cell = tid; cell < bin_rows * bin_cols; cell += MAP_THREADS) {
                        const int bin_row = bin_row0 + cell / bin_cols;
                        const int bin_col = bin_col0 + cell % bin_cols;
                        const int bin_row_begin = bin_row * p.map_bin_q;
                        const int bin_row_end = min(bin_row_begin + p.map_bin_q, p.seq_q);
                        const int bin_col_begin = bin_col * p.map_bin_k;
                        const int bin_col_end = min(bin_col_begin + p.map_bin_k, p.seq_k);
                        float sum = 0.0f;
                        for (int row = max(row0, bin_row_begin); row < min(row_end, bin_row_end); ++row) {
                            for (int key = max(col0, bin_col_begin); key < min(col_end, bin_col_end); ++key) {
                                sum += w_tile[(row - row0) * MAP_TILE_STRIDE + (key - col0)];
                            }
                        }
                        if (sum != 0.0f) {
                            const float positions =
                                (float)(bin_row_end - bin_row_begin) * (float)(bin_col_end - bin_col_begin);
                            const float factor = p.map_mean_bins ? head_factor / positions : head_factor;
                            atomicAdd(map_bh + (int64_t)bin_row * p.map_bins_k + bin_col, sum * factor);
                        }
                    }
                    __syncthreads();
                }
            }
        }
    }
}

#define ATTENTION_MAP_INFO(T)                                                                                  \
    make_kernel_info(KERNEL_FAMILY_ATTENTION_MAP, kernel_dtype<T>(), 1, MAX_HEAD_DIM, MAP_TILE, MAP_ROWS_PER_PASS, \
                     MAP_TILE, MAP_TILE, MAP_SHARED_BYTES, 0, 1, sizeof(T))

ATTENTION_KERNEL(attention_map_f32, MAP_THREADS, ATTENTION_MAP_INFO(float)) { attention_map<float>(p); }
ATTENTION_KERNEL(attention_map_f16, MAP_THREADS, ATTENTION_MAP_INFO(__half)) { attention_map<__half>(p); }
ATTENTION_KERNEL(attention_map_bf16, MAP_THREADS, ATTENTION_MAP_INFO(__nv_bfloat16)) {
    attention_map<__nv_bfloat16>(p);
}

/*
 * unaligned_ldmatrix.cu - planted bug: ldmatrix rows that do not start on a 16-byte boundary (an 8-byte
 * offset, as a tile padded by 4 halves instead of 8 would give). The emulator must stop it with an error
 * naming the ldmatrix call site; the _fixed twin (aligned rows) must run clean.
 *
 * Launch: 1 block of 32 threads, 16 * 16 * 2 + 16 bytes of shared memory; p.out holds 128 floats.
 */
#include "include/device_helpers.cuh"
#include "include/ptx.cuh"

template <int OFFSET_BYTES> __device__ void load_fragment(const AttentionParams &p) {
    unsigned char *shared = dynamic_shared<unsigned char>();
    __half *tile = reinterpret_cast<__half *>(shared + OFFSET_BYTES); // [16][16]
    float *out = static_cast<float *>(p.out);
    const int lane = threadIdx.x;
    for (int e = lane; e < 16 * 16; e += WARP_SIZE) {
        tile[e] = __float2half_rn((float)e);
    }
    __syncwarp();
    uint32_t r[4];
    ldmatrix_x4(r[0], r[1], r[2], r[3], tile + (lane % 16) * 16 + (lane / 16) * 8);
    for (int j = 0; j < 4; ++j) {
        out[lane * 4 + j] = (float)(r[j] & 0xffffu);
    }
}

KERNEL_ENTRY(planted_unaligned_ldmatrix, 32) { load_fragment<8>(p); }
KERNEL_ENTRY(planted_unaligned_ldmatrix_fixed, 32) { load_fragment<16>(p); }

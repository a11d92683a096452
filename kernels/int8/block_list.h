/* block_list.h: the walk over a pruned first layer, shared by the float (sparse_f32.c) and the
 * int8 (int8_net.c) pruned kernels.
 *
 * The first layer is stored in block-CSC: per input pixel i, the kept blocks of 8 consecutive
 * output rows, values at colptr[i] .. colptr[i+1) (8 per block). For one mini-batch the block
 * list holds, per sample s (entries ptr[s] .. ptr[s+1)), one entry per kept block at each NONZERO
 * pixel: k = offset of the block's values, v = the pixel's byte (raw pixel or q7 input). The
 * forward product and the weight gradient are then one flat loop each over these entries
 * (z[s][rows] += x * W[rows, i]; G[rows, i] += x * delta[s][rows]), so zero pixels and pruned
 * blocks cost nothing, and a pixel's 0..16 blocks cost no branch misprediction: each pixel
 * writes 16 entries unconditionally and the count advances by its real number of blocks.
 * Capacity: m * (kept blocks) + 32 entries (a block appears at most once per sample). */
#ifndef ECUFL_BLOCK_LIST_H
#define ECUFL_BLOCK_LIST_H

#include <stdint.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

typedef struct {
    int32_t *ptr;  /* m + 1 */
    int32_t *k;    /* entries: offset of the block's 8 values */
    int32_t *r;    /* entries: the block's first output row (row[k / 8], looked up once here) */
    uint8_t *v;    /* entries: the input byte at the block's pixel */
} block_list;

/* Bit b set when byte b of p[0..n) (n <= 32) is nonzero. */
static inline uint32_t bl_nonzero_bits(const uint8_t *p, int n) {
#if defined(__AVX2__)
    if (n == 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)p);
        return ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x, _mm256_setzero_si256()));
    }
#endif
    uint32_t bits = 0;
    for (int b = 0; b < n; b++) bits |= (uint32_t)(p[b] != 0) << b;
    return bits;
}

/* Entries of the kept blocks of pixel i with input byte v, appended at cnt; returns the new count.
 * row: the block-CSC's first output row per block (at least 16 readable entries past the end).
 * narrow (at most 8 blocks per pixel, <= 64 outputs): 8 entries written instead of 16. */
static inline int32_t bl_emit(const int32_t *restrict colptr, const uint16_t *restrict row, int i, uint8_t v,
                              int32_t *restrict k_out, int32_t *restrict r_out, uint8_t *restrict v_out,
                              int32_t cnt, int narrow) {
    typedef int32_t v8i_bl __attribute__((vector_size(32)));
    typedef uint16_t v8u16_bl __attribute__((vector_size(16)));
    const v8i_bl lane = {0, 8, 16, 24, 32, 40, 48, 56};
    const int k0 = colptr[i], nk = colptr[i + 1] - k0;
    if (narrow) {
        v8i_bl k = lane + k0;
        memcpy(k_out + cnt, &k, sizeof k);
        v8u16_bl r16;
        memcpy(&r16, row + k0 / 8, sizeof r16);
        v8i_bl r = __builtin_convertvector(r16, v8i_bl);
        memcpy(r_out + cnt, &r, sizeof r);
        memset(v_out + cnt, v, 8);
        return cnt + (nk >> 3);
    }
    for (int b = 0; b == 0 || b < nk; b += 128) {  /* once when the layer has <= 128 outputs */
        v8i_bl k = lane + (k0 + b);
        memcpy(k_out + cnt + b / 8, &k, sizeof k);
        k += 64;
        memcpy(k_out + cnt + b / 8 + 8, &k, sizeof k);
        for (int h = 0; h < 16; h += 8) {
            v8u16_bl r16;
            memcpy(&r16, row + (k0 + b) / 8 + h, sizeof r16);
            v8i_bl r = __builtin_convertvector(r16, v8i_bl);
            memcpy(r_out + cnt + b / 8 + h, &r, sizeof r);
        }
        memset(v_out + cnt + b / 8, v, 16);
    }
    return cnt + (nk >> 3);
}

/* The block list of m input rows: row s at rows + (idx ? idx[s] : s) * stride, n_in bytes; the
 * layer has n_out outputs. */
static inline void bl_build(const int32_t *restrict colptr, const uint16_t *restrict row, const uint8_t *rows,
                            long stride, const int32_t *idx, int m, int n_in, int n_out, block_list *bl) {
    const int narrow = n_out <= 64;
    int32_t cnt = 0;
    int32_t *restrict ptr = bl->ptr, *restrict k_out = bl->k, *restrict r_out = bl->r;
    uint8_t *restrict v_out = bl->v;
    for (int s = 0; s < m; s++) {
        const uint8_t *px = rows + (idx ? idx[s] : s) * stride;
        ptr[s] = cnt;
        for (int c = 0; c < n_in; c += 32) {
            uint32_t bits = bl_nonzero_bits(px + c, n_in - c < 32 ? n_in - c : 32);
            while (bits) {
                const int i = c + __builtin_ctz(bits);
                bits &= bits - 1;
                cnt = bl_emit(colptr, row, i, px[i], k_out, r_out, v_out, cnt, narrow);
            }
        }
    }
    ptr[m] = cnt;
}

#endif

/* The int8 inner loops with SIMD: AVX2 on x86-64, NEON on ARMv7 (Cortex-A9). Same signatures and
 * same bits as int8_ops_plain.c (see int8_ops.h); the tests compare both.
 *
 * x86 (AVX2):  forward  u8 x s8 -> pairs in int16 (vpmaddubsw; 2*127*127 < 2^15, no saturation),
 *                       pairs -> int32 (vpmaddwd with ones);
 *              update   two samples per vpmaddwd: activations of samples 2p and 2p+1 interleaved
 *                       as int16 pairs, times the broadcast pair (dq[2p][j], dq[2p+1][j]).
 * ARMv7 (NEON): forward vmull.s8 + vmlal.s8 (two products in int16, < 2^15) then vpadal.s16;
 *              update   vmlal.s16 by scalar (one sample's error) over widened activations. */
#include <math.h>
#include <string.h>

#include "int8_ops.h"

#if defined(__AVX2__)
#include <immintrin.h>

const char *i8_ops_path(void) { return "avx2"; }

static inline int32_t hsum8(__m256i v) {
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4e));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xb1));
    return _mm_cvtsi128_si32(x);
}

/* 8x8 transpose of int32 lanes: r[t] lane u -> c[u] lane t. */
static inline void transpose8(__m256i r[8]) {
    __m256i t[8], u[8];
    for (int q = 0; q < 8; q += 2) {
        t[q] = _mm256_unpacklo_epi32(r[q], r[q + 1]);
        t[q + 1] = _mm256_unpackhi_epi32(r[q], r[q + 1]);
    }
    for (int q = 0; q < 8; q += 4) {
        u[q] = _mm256_unpacklo_epi64(t[q], t[q + 2]);
        u[q + 1] = _mm256_unpackhi_epi64(t[q], t[q + 2]);
        u[q + 2] = _mm256_unpacklo_epi64(t[q + 1], t[q + 3]);
        u[q + 3] = _mm256_unpackhi_epi64(t[q + 1], t[q + 3]);
    }
    for (int q = 0; q < 4; q++) {
        r[q] = _mm256_permute2x128_si256(u[q], u[q + 4], 0x20);
        r[q + 4] = _mm256_permute2x128_si256(u[q], u[q + 4], 0x31);
    }
}

void i8_pack_weights(const int8_t *wq, int n_out, int ld, int8_t *wq4) {
    const int ldo = I8_LD8(n_out);
    for (int j0 = 0; j0 < ldo; j0 += 8)
        for (int i = 0; i < ld; i += 32) {  /* 8 rows x 8 groups of 4 inputs, transposed */
            __m256i r[8];
            for (int t = 0; t < 8; t++)
                r[t] = j0 + t < n_out ? _mm256_load_si256((const __m256i *)(wq + (long)(j0 + t) * ld + i))
                                      : _mm256_setzero_si256();
            transpose8(r);
            for (int u = 0; u < 8; u++)
                _mm256_storeu_si256((__m256i *)(wq4 + ((long)(i / 4 + u) * ldo + j0) * 4), r[u]);
        }
}

/* NV vectors (8 outputs each) of one sample: sum over its nonzero groups of 4 inputs of
 * vpmaddubsw(4 inputs broadcast, 8 outputs x 4 weights) (pairs: 2 * 127 * 127 < 2^15), then
 * vpmaddwd with ones to int32. The accumulators stay in registers. */
static inline __attribute__((always_inline)) void forward_block(const uint32_t *a4, const int32_t *groups, int ng,
                                                                const int8_t *w, int ldo, int NV, int32_t *out) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[8];
    for (int v = 0; v < NV; v++) acc[v] = _mm256_setzero_si256();
    for (int q = 0; q < ng; q++) {
        const int g = groups[q];
        const __m256i x = _mm256_set1_epi32((int32_t)a4[g]);
        const int8_t *wg = w + (long)g * ldo * 4;
        for (int v = 0; v < NV; v++)
            acc[v] = _mm256_add_epi32(acc[v], _mm256_madd_epi16(
                _mm256_maddubs_epi16(x, _mm256_loadu_si256((const __m256i *)(wg + 32 * v))), ones));
    }
    for (int v = 0; v < NV; v++) _mm256_storeu_si256((__m256i *)(out + 8 * v), acc[v]);
}

void i8_fc_forward(const uint8_t *a, int m, const int8_t *wq, const int8_t *wq4, int n_out, int ld, int32_t *acc) {
    (void)wq;
    const int ldo = I8_LD8(n_out), n_groups = ld / 4;
    int32_t groups[16384];  /* ld <= 65536 */
    int32_t out[1024 + 64];
    for (int s = 0; s < m; s++) {
        const uint8_t *as = a + (long)s * ld;
        const uint32_t *a4 = (const uint32_t *)(const void *)as;
        int ng = 0;
        for (int g0 = 0; g0 < n_groups; g0 += 8) {  /* groups of 4 inputs that are not all zero */
            __m256i v = _mm256_load_si256((const __m256i *)(as + 4 * g0));
            unsigned bits = ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(
                _mm256_cmpeq_epi32(v, _mm256_setzero_si256()))) & 0xffu;
            while (bits) {
                groups[ng++] = g0 + __builtin_ctz(bits);
                bits &= bits - 1;
            }
        }
        int32_t *dst = acc + (long)s * n_out;
        for (int j0 = 0; j0 < ldo; j0 += 1024) {  /* out[] holds 1024 outputs at a time */
            const int nj = ldo - j0 < 1024 ? ldo - j0 : 1024;
            int c = 0;
            for (; c + 64 <= nj; c += 64) forward_block(a4, groups, ng, wq4 + (long)(j0 + c) * 4, ldo, 8, out + c);
            if (c + 32 <= nj) { forward_block(a4, groups, ng, wq4 + (long)(j0 + c) * 4, ldo, 4, out + c); c += 32; }
            if (c + 16 <= nj) { forward_block(a4, groups, ng, wq4 + (long)(j0 + c) * 4, ldo, 2, out + c); c += 16; }
            if (c < nj) forward_block(a4, groups, ng, wq4 + (long)(j0 + c) * 4, ldo, 1, out + c);
            const int nc = n_out - j0 < nj ? n_out - j0 : nj;
            memcpy(dst + j0, out, sizeof(int32_t) * (size_t)nc);
        }
    }
}

/* packed[(p * ld + i) * 2 + t] = a[(2p + t) * ld + i]  (t = 0, 1; a missing odd sample is 0). */
void i8_pack_acts(const uint8_t *a, int m, int ld, int16_t *packed) {
    for (int p = 0; p < (m + 1) / 2; p++) {
        const uint8_t *a0 = a + (long)(2 * p) * ld;
        const uint8_t *a1 = 2 * p + 1 < m ? a0 + ld : NULL;
        int16_t *dst = packed + (long)p * ld * 2;
        for (int i = 0; i < ld; i += 16) {
            __m128i x0 = _mm_load_si128((const __m128i *)(a0 + i));
            __m128i x1 = a1 ? _mm_load_si128((const __m128i *)(a1 + i)) : _mm_setzero_si128();
            /* bytes interleaved x0[k], x1[k], zero-extended to int16 pairs */
            __m128i lo = _mm_unpacklo_epi8(x0, x1), hi = _mm_unpackhi_epi8(x0, x1);
            _mm256_store_si256((__m256i *)(dst + 2 * i), _mm256_cvtepu8_epi16(lo));
            _mm256_store_si256((__m256i *)(dst + 2 * i + 16), _mm256_cvtepu8_epi16(hi));
        }
    }
}

float i8_fc_update(const uint8_t *a, const int16_t *packed, int m, const int16_t *dq, int n_out,
                   int ld, float c, float *w, float *colmax, int32_t *scratch) {
    (void)a;
    enum { MAXP = 256, REG = 8 };  /* batch <= 512 (reference.MAX_BATCH); pairs kept in registers */
    int32_t *dp = scratch;  /* dp[j * np + p] = (dq[2p][j], dq[2p+1][j]) as int16 pairs */
    const int np = (m + 1) / 2;
    for (int j = 0; j < n_out; j++)
        for (int p = 0; p < np; p++) {
            uint16_t d0 = (uint16_t)dq[(2 * p) * n_out + j];
            uint16_t d1 = 2 * p + 1 < m ? (uint16_t)dq[(2 * p + 1) * n_out + j] : 0;
            dp[j * np + p] = (int32_t)((uint32_t)d0 | ((uint32_t)d1 << 16));
        }
    const __m256 cv = _mm256_set1_ps(c);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    int pairs[MAXP];
    const int16_t *rows[MAXP];  /* the activation pairs of the current block (past the registers) */
    /* Column block by column block (8 inputs): the sample pairs with a nonzero input there, then every
     * output row's 8 weights: G = sum over those pairs of vpmaddwd(activation pair, error pair). */
    for (int i = 0; i < ld; i += 8) {
        int nzp = 0;
        for (int p = 0; p < np; p++) {
            __m256i x = _mm256_load_si256((const __m256i *)(packed + ((long)p * ld + i) * 2));
            pairs[nzp] = p;
            nzp += !_mm256_testz_si256(x, x);
        }
        if (!nzp) continue;  /* no input in the batch: G = 0, w - 0 * c == w, colmax stays */
        for (int q = REG; q < nzp; q++) rows[q] = packed + ((long)pairs[q] * ld + i) * 2;
        __m256i x[REG];
        for (int q = 0; q < REG; q++)
            x[q] = q < nzp ? _mm256_load_si256((const __m256i *)(packed + ((long)pairs[q] * ld + i) * 2))
                           : _mm256_setzero_si256();
        __m256 vmax = _mm256_setzero_ps();
        for (int j = 0; j < n_out; j++) {
            const int32_t *dj = dp + j * np;
            __m256i g = _mm256_setzero_si256();
            int q = 0;
            for (; q < nzp && q < REG; q++) g = _mm256_add_epi32(g, _mm256_madd_epi16(x[q], _mm256_set1_epi32(dj[pairs[q]])));
            for (; q < nzp; q++)
                g = _mm256_add_epi32(g, _mm256_madd_epi16(_mm256_load_si256((const __m256i *)rows[q]),
                                                          _mm256_set1_epi32(dj[pairs[q]])));
            float *wr = w + (long)j * ld + i;
            __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(g), cv);
            __m256 wv = _mm256_sub_ps(_mm256_load_ps(wr), t);
            _mm256_store_ps(wr, wv);
            vmax = _mm256_max_ps(vmax, _mm256_and_ps(wv, absmask));
        }
        _mm256_storeu_ps(colmax + i, vmax);
    }
    __m256 vmax = _mm256_setzero_ps();
    for (int i = 0; i < ld; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(colmax + i));
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    float mx = 0.0f;
    for (int k = 0; k < 8; k++) mx = lanes[k] > mx ? lanes[k] : mx;
    return mx;
}

void i8_quantise(const float *w, int n, float qmul, int8_t *wq) {
    const __m256 qv = _mm256_set1_ps(qmul);
    const __m256i lo = _mm256_set1_epi8(-127);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int i = 0; i < n; i += 32) {
        /* cvtps rounds half to even (default MXCSR), as rintf; packs saturate at +-127.5 anyway */
        __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_load_ps(w + i), qv));
        __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_load_ps(w + i + 8), qv));
        __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_load_ps(w + i + 16), qv));
        __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_load_ps(w + i + 24), qv));
        __m256i p01 = _mm256_packs_epi32(q0, q1), p23 = _mm256_packs_epi32(q2, q3);
        __m256i b = _mm256_packs_epi16(p01, p23);  /* lane-interleaved order: fix with a permute */
        b = _mm256_permutevar8x32_epi32(b, perm);
        b = _mm256_max_epi8(b, lo);  /* -128 -> -127; +127 is the int8 saturation already */
        _mm256_store_si256((__m256i *)(wq + i), b);
    }
}

#elif defined(__ARM_NEON)
#include <arm_neon.h>

const char *i8_ops_path(void) { return "neon"; }

static inline int any_nonzero_u8(uint8x16_t v) {
    uint64x2_t w = vreinterpretq_u64_u8(v);
    return (vgetq_lane_u64(w, 0) | vgetq_lane_u64(w, 1)) != 0;
}

void i8_pack_weights(const int8_t *wq, int n_out, int ld, int8_t *wq4) {
    (void)wq; (void)n_out; (void)ld; (void)wq4;  /* the NEON path reads wq (vmull.s8 on rows) */
}

void i8_fc_forward(const uint8_t *a, int m, const int8_t *wq, const int8_t *wq4, int n_out, int ld, int32_t *acc) {
    (void)wq4;
    int chunks[4096];  /* 16-byte chunks holding a nonzero input (MNIST: mostly background) */
    for (int s = 0; s < m; s++) {
        const int8_t *ar = (const int8_t *)(a + (long)s * ld);  /* 0..127 is the same as s8 */
        int nc = 0;
        for (int i = 0; i < ld; i += 16)
            if (any_nonzero_u8(vld1q_u8((const uint8_t *)ar + i))) chunks[nc++] = i;
        for (int j = 0; j < n_out; j++) {
            const int8_t *wr = wq + (long)j * ld;
            int32x4_t sum = vdupq_n_s32(0);
            for (int c = 0; c < nc; c++) {
                const int i = chunks[c];
                int8x16_t av = vld1q_s8(ar + i), wv = vld1q_s8(wr + i);
                int16x8_t p = vmull_s8(vget_low_s8(av), vget_low_s8(wv));
                p = vmlal_s8(p, vget_high_s8(av), vget_high_s8(wv));  /* |2 products| < 2^15 */
                sum = vpadalq_s16(sum, p);
            }
            int32x2_t h = vadd_s32(vget_low_s32(sum), vget_high_s32(sum));
            acc[s * n_out + j] = vget_lane_s32(vpadd_s32(h, h), 0);
        }
    }
}

/* packed[s * ld + i] = a[s * ld + i] widened to int16. */
void i8_pack_acts(const uint8_t *a, int m, int ld, int16_t *packed) {
    for (long k = 0; k < (long)m * ld; k += 16) {
        uint8x16_t x = vld1q_u8(a + k);
        vst1q_s16(packed + k, vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(x))));
        vst1q_s16(packed + k + 8, vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(x))));
    }
}

float i8_fc_update(const uint8_t *a, const int16_t *packed, int m, const int16_t *dq, int n_out,
                   int ld, float c, float *w, float *colmax, int32_t *scratch) {
    (void)scratch;
    int blocks[8192];  /* 8-column blocks with a nonzero input in the batch */
    int nb = 0;
    for (int i = 0; i < ld; i += 8) {
        uint8x8_t any = vdup_n_u8(0);
        for (int s = 0; s < m; s++) any = vorr_u8(any, vld1_u8(a + (long)s * ld + i));
        if (vget_lane_u64(vreinterpret_u64_u8(any), 0)) {
            blocks[nb++] = i;
            vst1q_f32(colmax + i, vdupq_n_f32(0.0f));
            vst1q_f32(colmax + i + 4, vdupq_n_f32(0.0f));
        }
    }
    const float32x4_t cv = vdupq_n_f32(c);
    for (int j = 0; j < n_out; j++) {
        float *row = w + (long)j * ld;
        for (int b = 0; b < nb; b++) {
            const int i = blocks[b];
            int32x4_t g0 = vdupq_n_s32(0), g1 = vdupq_n_s32(0);
            for (int s = 0; s < m; s++) {
                int16x8_t x = vld1q_s16(packed + (long)s * ld + i);
                int16_t d = dq[s * n_out + j];
                g0 = vmlal_n_s16(g0, vget_low_s16(x), d);
                g1 = vmlal_n_s16(g1, vget_high_s16(x), d);
            }
            /* NEON float is flush-to-zero: identical to IEEE here unless |w| < 2^-126 */
            float32x4_t w0 = vsubq_f32(vld1q_f32(row + i), vmulq_f32(vcvtq_f32_s32(g0), cv));
            float32x4_t w1 = vsubq_f32(vld1q_f32(row + i + 4), vmulq_f32(vcvtq_f32_s32(g1), cv));
            vst1q_f32(row + i, w0);
            vst1q_f32(row + i + 4, w1);
            vst1q_f32(colmax + i, vmaxq_f32(vld1q_f32(colmax + i), vabsq_f32(w0)));
            vst1q_f32(colmax + i + 4, vmaxq_f32(vld1q_f32(colmax + i + 4), vabsq_f32(w1)));
        }
    }
    float32x4_t vmax = vdupq_n_f32(0.0f);
    for (int i = 0; i < ld; i += 4) vmax = vmaxq_f32(vmax, vld1q_f32(colmax + i));
    float32x2_t h = vpmax_f32(vget_low_f32(vmax), vget_high_f32(vmax));
    return vget_lane_f32(vpmax_f32(h, h), 0);
}

void i8_quantise(const float *w, int n, float qmul, int8_t *wq) {
    /* ARMv7 NEON has no round-to-nearest conversion: add and subtract 1.5 * 2^23, which rounds
     * half to even (|x| <= 127.01 here), then the conversion is exact. */
    const float32x4_t qv = vdupq_n_f32(qmul), magic = vdupq_n_f32(12582912.0f);
    const int8x16_t lo = vdupq_n_s8(-127);
    for (int i = 0; i < n; i += 16) {
        int32x4_t q[4];
        for (int k = 0; k < 4; k++) {
            float32x4_t y = vmulq_f32(vld1q_f32(w + i + 4 * k), qv);
            q[k] = vcvtq_s32_f32(vsubq_f32(vaddq_f32(y, magic), magic));
        }
        int16x8_t h0 = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
        int16x8_t h1 = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
        int8x16_t b = vmaxq_s8(vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1)), lo);
        vst1q_s8(wq + i, b);
    }
}

#else
#error "int8_ops_simd.c needs AVX2 (x86-64) or NEON (ARMv7); build int8_ops_plain.c instead"
#endif

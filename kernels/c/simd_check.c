/* simd_check.c: simd.h's non-trivial helpers against their scalar meaning, for the instruction set
 * this file is compiled for (tests/test_simd_c.py builds it for AVX2+FMA, SSE2 and, under
 * qemu-arm, NEON). Prints one line of `name value` pairs:
 *   path             VF_NAME
 *   exp_ulp          largest distance in ulp of vf_exp(x) from libm's expf(x), x in [-87, 88]
 *   sigmoid_ulp      largest distance in ulp of vf_sigmoid(z) from 1 / (1 + expf(-z)), over the
 *                    z in [-100, 100] where that is a normal float
 *   sigmoid_abs      largest absolute difference over all z in [-100, 100]
 *   sigmoid_bad      lanes outside [0, 1] or NaN, padding lanes of 0 not giving sigmoid(0)
 *   mask_bad         bits of vb_nonzero_mask that disagree with p[k] != 0 (random and edge bytes)
 * The x are every 997th float of the range (2.2 million, every binade equally), each in every
 * lane. Exit status 0: the bounds are the test's to judge. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "simd.h"

static int64_t ordered(float f) { /* floats as integers in the same order: ulp distance = difference */
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i < 0 ? -(int64_t)(i & 0x7fffffff) : i;
}

static int64_t ulp_distance(float a, float b) {
    int64_t d = ordered(a) - ordered(b);
    return d < 0 ? -d : d;
}

int main(void) {
    int64_t exp_ulp = 0, sig_ulp = 0;
    double sig_abs = 0.0;
    long sig_bad = 0, mask_bad = 0;
    float in[VF_WIDTH], e[VF_WIDTH], s[VF_WIDTH];
    for (int64_t k = ordered(-100.0f); k <= ordered(100.0f); k += 997) {
        float x;
        int32_t bits = k < 0 ? (int32_t)((uint32_t)(-k) | 0x80000000u) : (int32_t)k;
        memcpy(&x, &bits, sizeof x);
        for (int j = 0; j < VF_WIDTH; j++) in[j] = x;
        vf_store(e, vf_exp(vf_load(in)));
        vf_store(s, vf_sigmoid(vf_load(in)));
        float want_s = 1.0f / (1.0f + expf(-x));
        for (int j = 0; j < VF_WIDTH; j++) {
            if (x >= -87.0f && x <= 88.0f) {
                int64_t u = ulp_distance(e[j], expf(x));
                if (u > exp_ulp) exp_ulp = u;
            }
            if (!(s[j] >= 0.0f && s[j] <= 1.0f)) sig_bad++;
            if (want_s >= 1.17549435e-38f) {
                int64_t u = ulp_distance(s[j], want_s);
                if (u > sig_ulp) sig_ulp = u;
            }
            double d = fabs((double)s[j] - (double)want_s);
            if (d > sig_abs) sig_abs = d;
        }
    }
    vf_store(s, vf_sigmoid(vf_zero())); /* the padding of a layer: z = 0 */
    for (int j = 0; j < VF_WIDTH; j++) sig_bad += s[j] != 0.5f;

    uint8_t p[VB_WIDTH];
    uint32_t state = 12345u;
    for (int t = 0; t < 100000; t++) {
        for (int k = 0; k < VB_WIDTH; k++) {
            state = state * 1664525u + 1013904223u;
            uint8_t r = (uint8_t)(state >> 24);
            p[k] = t % 3 == 0 ? (r < 200 ? 0 : r) : t % 3 == 1 ? r : (uint8_t)(r & 1 ? 255 : r & 2);
        }
        uint32_t m = vb_nonzero_mask(p);
        for (int k = 0; k < VB_WIDTH; k++) mask_bad += ((m >> k) & 1u) != (p[k] != 0);
        mask_bad += ((uint64_t)m >> VB_WIDTH) != 0; /* no bits beyond the block */
    }
    printf("path %s exp_ulp %lld sigmoid_ulp %lld sigmoid_abs %.3g sigmoid_bad %ld mask_bad %ld\n", VF_NAME,
           (long long)exp_ulp, (long long)sig_ulp, sig_abs, sig_bad, mask_bad);
    return 0;
}

/* The int8 inner loops in portable C: the readable truth for int8_ops_simd.c (see int8_ops.h). */
#include <math.h>

#include "int8_ops.h"

const char *i8_ops_path(void) { return "plain"; }

void i8_pack_weights(const int8_t *wq, int n_out, int ld, int8_t *wq4) {
    (void)wq; (void)n_out; (void)ld; (void)wq4;  /* the plain path reads wq */
}

void i8_fc_forward(const uint8_t *a, int m, const int8_t *wq, const int8_t *wq4, int n_out, int ld, int32_t *acc) {
    (void)wq4;
    for (int s = 0; s < m; s++)
        for (int j = 0; j < n_out; j++) {
            int32_t sum = 0;
            for (int i = 0; i < ld; i++) sum += (int32_t)a[s * ld + i] * wq[j * ld + i];
            acc[s * n_out + j] = sum;
        }
}

void i8_pack_acts(const uint8_t *a, int m, int ld, int16_t *scratch) {
    (void)a; (void)m; (void)ld; (void)scratch;  /* the plain path reads a directly */
}

float i8_fc_update(const uint8_t *a, const int16_t *packed, int m, const int16_t *dq, int n_out,
                   int ld, float c, float *w, float *colmax, int32_t *scratch) {
    (void)packed; (void)scratch;
    float maxabs = 0.0f;
    for (int i = 0; i < ld; i++) colmax[i] = 0.0f;
    for (int j = 0; j < n_out; j++) {
        float *row = w + (long)j * ld;
        for (int i = 0; i < ld; i++) {
            int32_t g = 0;
            for (int s = 0; s < m; s++) g += (int32_t)dq[s * n_out + j] * a[s * ld + i];
            float t = (float)g * c;  /* rounded to float32 before the subtraction: no FMA */
            row[i] = row[i] - t;
            float v = fabsf(row[i]);
            if (v > maxabs) maxabs = v;
            if (v > colmax[i]) colmax[i] = v;
        }
    }
    return maxabs;
}

void i8_quantise(const float *w, int n, float qmul, int8_t *wq) {
    for (int i = 0; i < n; i++) {
        float q = rintf(w[i] * qmul);  /* round half to even, as numpy's rint */
        if (q > 127.0f) q = 127.0f;
        if (q < -127.0f) q = -127.0f;
        wq[i] = (int8_t)q;
    }
}

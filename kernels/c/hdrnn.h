/* hdrnn.h: the C kernel's network struct and the two-function contract of its compute paths.
 *
 * hdrnn_net.c implements the C ABI (ecufl_kernel.h) once: memory, parameters, the mini-batch
 * loop, evaluation. The arithmetic of one mini-batch lives in a *path*, chosen at build time
 * (CMSIS-NN manner, same signature, one file each):
 *   hdrnn_plain.c  the readable truth: one sample at a time, weights (n_out, n_in) as in the book
 *   hdrnn_opt.c    mini-batch-blocked, SIMD (AVX2+FMA / NEON / SSE2), sparse first layer,
 *                  weights transposed (n_in, n_out) with rows padded to the vector width
 */
#ifndef ECUFL_HDRNN_H
#define ECUFL_HDRNN_H

#include <stddef.h>
#include <stdint.h>

#include "ecufl_kernel.h"

#define HDRNN_MAX_LAYERS (ECUFL_MAX_SIZES - 1)

/* One machine word of bits (64 on x86-64, 32 on ARMv7: the cheapest width to shift and count). */
typedef unsigned long hdrnn_bits;
#define HDRNN_WORD_BITS ((int)(8 * sizeof(hdrnn_bits)))

struct ecufl_net {
    int n_sizes, n_layers, max_batch;
    int sizes[ECUFL_MAX_SIZES];
    int ld[ECUFL_MAX_SIZES];  /* row stride (floats) of activations/deltas of layer l, >= sizes[l] */
    float *w[HDRNN_MAX_LAYERS]; /* layer l's weights in the path's layout (hdrnn_weight_index) */
    float *b[HDRNN_MAX_LAYERS]; /* biases, ld[l+1] floats (padding stays 0) */
    float *gw[HDRNN_MAX_LAYERS]; /* gradient sums, same layout as w (plain path; optimised path: gw[0]
                                  * for by-sample first-layer steps, all zero between mini-batches) */
    float *gb[HDRNN_MAX_LAYERS];
    float *act[ECUFL_MAX_SIZES];     /* act[l]: (max_batch, ld[l]); act[0] = the inputs p/255 */
    float *delta[HDRNN_MAX_LAYERS];  /* delta[l]: (max_batch, ld[l+1]), error at layer l's output */
    /* the first layer's sparse input (optimised path): per sample the nonzero pixels (index, value) ... */
    int32_t *nz_index;
    float *nz_value;
    int *nz_start;   /* max_batch + 1 */
    const uint8_t **sample_pixels; /* max_batch: each sample's image row (uint8 data) ... */
    const float **sample_inputs;   /* ... or its input row (float data) */
    /* ... and by pixel (by-pixel first-layer steps): bit s of pixel i's words is set when pixel i
     * of sample s is nonzero */
    hdrnn_bits *pixel_samples; /* sizes[0] x ceil(max_batch / HDRNN_WORD_BITS) */
    hdrnn_bits *pixels_any;    /* ceil(sizes[0] / HDRNN_WORD_BITS): bit i = pixel i nonzero in some sample */
    int32_t *by_pixel_sample; /* max_batch: one pixel's samples and values, gathered from its bits */
    float *by_pixel_value;
    float *scratch;  /* max(ld) floats */
    void *memory;    /* the one allocation everything above points into */
    size_t memory_bytes;
    char error[256];
    char info[512];  /* ecufl_net_describe's JSON, written at create */
};

/* The samples of a train/evaluate call: uint8 pixels (p / 255) or float inputs as they are, class
 * labels (one-hot) or real-valued targets (ecufl_net_train_f32); exactly one of each pair is set. */
typedef struct {
    const uint8_t *images; /* (n, sizes[0]) pixels, or NULL */
    const float *inputs;   /* (n, sizes[0]) inputs in [0, 1], or NULL */
    const uint8_t *labels; /* (n) class indices, or NULL */
    const float *targets;  /* (n, sizes[-1]) targets, or NULL */
} hdrnn_data;

/* Provided by the path ------------------------------------------------------------------------ */
extern const char hdrnn_path_name[];      /* "plain", "avx2", "neon", "sse2", "scalar" */
extern const int hdrnn_path_transposed;   /* 1: w[l] is (n_in, ld[l+1]); 0: (n_out, n_in) */
extern const int hdrnn_path_vector_width; /* ld[l] of hidden/output layers is a multiple of it */
/* Activations of every layer for m samples, sample s being data row (rows ? rows[s] : first+s). */
void hdrnn_forward(ecufl_net *net, const hdrnn_data *data, const int32_t *rows, int first, int m);
/* After hdrnn_forward on the same samples: backpropagate and apply w -= step * sum(grad). */
void hdrnn_backward_update(ecufl_net *net, const hdrnn_data *data, const int32_t *rows, int m, float step);

#endif

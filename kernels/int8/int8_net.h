/* HDRNN trained with CMSIS-NN-style int8 arithmetic (the scheme of kernels/int8/reference.py),
 * with optional block-CSC-sparse (pruned) hidden layers: the int8 kernel's core. The library's
 * public face is the C ABI of common/ecufl_kernel.h (int8_abi.c); int8_check.c drives the core
 * directly. Memory: i8_create and i8_set_mask allocate; a training step never does. Errors: -1
 * (NULL from i8_create) with the message in the net (i8_error) or in err. No global state. */
#ifndef ECUFL_INT8_NET_H
#define ECUFL_INT8_NET_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct i8_net i8_net;

/* sizes[0..n_sizes-1], zero parameters, buffers for mini-batches of up to max_batch (1..512)
 * samples. NULL on error (message in err[errlen]). */
i8_net *i8_create(int n_sizes, const int *sizes, int max_batch, char *err, int errlen);
void i8_destroy(i8_net *net);
const char *i8_error(const i8_net *net);  /* the last failure's message */
const char *i8_path(void);  /* "plain", "avx2" or "neon" (a constant of the build) */

int i8_set_params(i8_net *net, const float *const *params);  /* re-applies the pruning masks */
int i8_get_params(const i8_net *net, float *const *params);  /* float32 masters, dense */

/* Mini-batch SGD over order[0..n-1] (indices into images (n_images x 784) / labels). */
int i8_train(i8_net *net, const uint8_t *images, const uint8_t *labels, int n_images,
             const int32_t *order, int n, double lr, int batch_size);
/* Test accuracy and mean quadratic cost (of the q7 outputs / 127). */
int i8_evaluate(i8_net *net, const uint8_t *images, const uint8_t *labels, int n,
                double *loss, int *correct);

/* The same on float32 data (any data, ecufl_kernel.h's *_f32 calls): inputs (n x sizes[0]) in
 * [0, 1] enter as q7 round_half_up(127 x) clamped to 0..127; targets (n x sizes[-1]) in [0, 1]
 * as q7 targets round_half_up(127 y) in the output error, or NULL: labels (one-hot). Evaluation
 * compares the outputs / 127 with the real targets (correct: all within 0.5). */
int i8_train_f32(i8_net *net, const float *inputs, const float *targets, const uint8_t *labels, int n_samples,
                 const int32_t *order, int n, double lr, int batch_size);
int i8_evaluate_f32(i8_net *net, const float *inputs, const float *targets, const uint8_t *labels, int n,
                    double *loss, int *correct);

/* Prune weight layer l to the entries where mask (n_out x n_in, 1 = keep) is set: the layer
 * switches to CSC storage (by input column, in blocks of `block` = 1 or 8 consecutive output
 * rows, which the mask must respect) and keeps that mask for the rest of training. */
int i8_set_mask(i8_net *net, int layer, const uint8_t *mask, int block);

/* Inspection for the bit-exactness tests: the int8 weights (dense n_out x n_in, 0 where pruned)
 * and maxabs of layer l; the q7 activations of every layer and the last z for n samples. */
int i8_get_quantised(i8_net *net, int layer, int8_t *wq, float *maxabs);
int i8_forward_trace(i8_net *net, const uint8_t *images, int n, uint8_t *const *acts, int32_t *z);

long i8_weight_bytes(const i8_net *net);  /* int8 model: values + CSR indices + biases + scales */
long i8_master_bytes(const i8_net *net);  /* float32 masters held for training */
long i8_nonzero(const i8_net *net, int layer);  /* weights stored for layer l */

#ifdef __cplusplus
}
#endif
#endif

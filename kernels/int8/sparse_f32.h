/* HDRNN in float32 with pruned (CSC) hidden layers: the C kernel's --prune path.
 *
 * The float arithmetic of the numpy reference (sigmoid, quadratic cost, w -= lr/m * grad); layers
 * start dense and switch to CSC storage when a mask is set, after which the pruned weights are
 * neither stored nor touched, and zero inputs (most MNIST pixels) are skipped as well, in the
 * forward product, the weight gradient and the back-propagation. Buffers are allocated at creation
 * or when the mini-batch first grows; a training step never allocates. */
#ifndef ECUFL_SPARSE_F32_H
#define ECUFL_SPARSE_F32_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sf_net sf_net;

sf_net *sf_create(int n_sizes, const int *sizes, const float *const *params);
void sf_destroy(sf_net *net);
const char *sf_last_error(void);
int sf_set_params(sf_net *net, const float *const *params);  /* keeps the masks */
int sf_get_params(const sf_net *net, float *const *params);
int sf_train(sf_net *net, const uint8_t *images, const uint8_t *labels, int n_images,
             const int32_t *order, int n, double lr, int batch_size);
int sf_evaluate(sf_net *net, const uint8_t *images, const uint8_t *labels, int n, double *loss, int *correct);
int sf_set_mask(sf_net *net, int layer, const uint8_t *mask, int block);  /* 1 = keep; block: 1 or 8 rows */
long sf_weight_bytes(const sf_net *net);  /* float32 values + CSC indices + biases */

#ifdef __cplusplus
}
#endif
#endif

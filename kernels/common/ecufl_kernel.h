/* ecufl_kernel.h: the one C ABI every native HDRNN kernel library exports.
 *
 * Each kernel is a shared library (libecufl_c_plain.so, libecufl_c.so, libecufl_eigen.so, ...)
 * exporting exactly these symbols, so one cffi cdef (kernels/native.py, NativeKernel) binds them
 * all, and the standalone trainers (ecufl-train-c, ecufl-train-eigen) link any of them statically.
 *
 * Conventions
 *   - Layer sizes: sizes[0..n_sizes-1], e.g. {784, 30, 10}; n_sizes >= 2, at most ECUFL_MAX_SIZES.
 *   - Parameters cross the ABI as float32 arrays in transport order [w1, b1, w2, b2, ...]
 *     (2*(n_sizes-1) pointers), w_l row-major (n_out, n_in), b_l (n_out): the book's shapes.
 *     A kernel may keep another layout inside (transposed, quantised); it converts here.
 *   - Data as MNIST gives it: images uint8 (n_images, sizes[0]) row-major, labels uint8; pixel p
 *     enters as p / 255.0f. `order` holds int32 indices into images.
 *   - train(): mini-batch SGD over order[0..n-1] in consecutive slices of batch_size, the last
 *     one shorter; for a slice of m samples w -= (lr/m) * sum of gradients (network.py).
 *     batch_size must be <= the max_batch given at create: all memory is allocated at create,
 *     training never allocates.
 *   - Errors: functions returning int give 0 on success and -1 on bad arguments, with a one-line
 *     message from ecufl_net_error(net). create() writes its message into err[errlen].
 *   - Thread safety: a net is used by one thread at a time; different nets are independent.
 */
#ifndef ECUFL_KERNEL_H
#define ECUFL_KERNEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ECUFL_MAX_SIZES 16 /* input + hidden layers + output */

typedef struct ecufl_net ecufl_net;

/* A network with random-free zero parameters; NULL (and a message in err) on bad sizes. */
ecufl_net *ecufl_net_create(int n_sizes, const int *sizes, int max_batch, char *err, int errlen);
void ecufl_net_destroy(ecufl_net *net);
const char *ecufl_net_error(const ecufl_net *net);

/* Parameters in transport order [w1, b1, w2, b2, ...] (see above). */
int ecufl_net_set_params(ecufl_net *net, const float *const *arrays);
int ecufl_net_get_params(const ecufl_net *net, float *const *arrays);
/* Initial parameters from the project PRNG (ecufl_rand.h), same as ecufl.kernels.prng.init_params. */
int ecufl_net_init_params(ecufl_net *net, uint32_t seed, int scaled);

int ecufl_net_train(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n_images,
                    const int32_t *order, int n, double lr, int batch_size);
/* loss = mean 0.5*||a - y||^2 over the n samples, correct = how many argmax(a) == label. */
int ecufl_net_evaluate(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n,
                       double *loss, int *correct);

/* Bytes the kernel holds for weights and biases. */
long ecufl_net_weight_bytes(const ecufl_net *net);
/* A static JSON object describing the build: {"kernel": ..., "path": "plain"|"avx2"|"neon"|...,
 * "compiler": ..., "flags": ...}. */
const char *ecufl_net_describe(void);

#ifdef __cplusplus
}
#endif

#endif /* ECUFL_KERNEL_H */

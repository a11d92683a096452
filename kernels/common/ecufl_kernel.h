/* ecufl_kernel.h: the one C ABI every native HDRNN kernel library exports.
 *
 * Libraries (kernel name -> library, source):
 *   c-plain     libecufl_c_plain      c/hdrnn_net.c + c/hdrnn_plain.c        float32, plain path
 *   c           libecufl_c            c/hdrnn_net.c + c/hdrnn_opt.c          float32, SIMD path
 *   eigen       libecufl_eigen        eigen/hdrnn_eigen.cpp                  float32, Eigen
 *   c-sparse    libecufl_sparse_f32   int8/sparse_f32.c                      float32, block-CSC pruned
 *   int8-plain  libecufl_int8_plain   int8/int8_abi.c + int8_net.c + int8_ops_plain.c
 *   int8        libecufl_int8         int8/int8_abi.c + int8_net.c + int8_ops_simd.c (AVX2 / NEON)
 * Every library exports the core symbols below under the same names, so one cffi cdef
 * (kernels/native.py, NativeNet) binds them all and the standalone trainers (common/trainer.c:
 * ecufl-train-c, -c-plain, -eigen, -int8) link any of them statically. A kernel with extra calls
 * exports the optional symbols of its feature; a caller looks them up by name (cffi: AttributeError
 * when absent) instead of binding a second API. Where a kernel has two paths (CMSIS-NN manner), they
 * are two libraries built from one core and two inner-loop files behind one signature.
 *
 * Conventions
 *   - Layer sizes: sizes[0..n_sizes-1], e.g. {784, 30, 10}; n_sizes >= 2, at most ECUFL_MAX_SIZES.
 *   - Parameters cross the ABI as float32 arrays in transport order [w1, b1, w2, b2, ...]
 *     (2*(n_sizes-1) pointers), w_l row-major (n_out, n_in), b_l (n_out): the book's shapes.
 *     A kernel may keep another layout inside (transposed, quantised, block-CSC); it converts here.
 *   - Data as MNIST gives it: images uint8 (n_images, sizes[0]) row-major, labels uint8 (< sizes[-1]);
 *     pixel p enters as p / 255.0f (int8: as q7, see int8/reference.py). `order` holds int32
 *     indices into images. Any other data (float inputs, real-valued targets): the *_f32 calls.
 *   - train(): mini-batch SGD over order[0..n-1] in consecutive slices of batch_size, the last
 *     one shorter; for a slice of m samples w -= (lr/m) * sum of gradients (network.py).
 *   - Memory (TFLite Micro's Prepare/Invoke split): create() is Prepare and allocates everything a
 *     mini-batch of up to max_batch samples needs; train() and evaluate() never allocate, and a
 *     batch_size above max_batch is an error (the caller creates a bigger net). set_mask() changes
 *     a layer's storage and is a Prepare step too: it allocates, then training again does not.
 *   - Errors: functions returning int give 0 on success and -1 on bad arguments, with a one-line
 *     message from ecufl_net_error(net), kept in the net. create() writes its message into
 *     err[errlen]. No library keeps mutable global state: nets are independent, and a net is used
 *     by one thread at a time.
 */
#ifndef ECUFL_KERNEL_H
#define ECUFL_KERNEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ECUFL_MAX_SIZES 16 /* input + hidden layers + output */

typedef struct ecufl_net ecufl_net;

/* ---- core: every library ------------------------------------------------------------------- */

/* A network with zero parameters and all its memory; NULL (and a message in err) on bad sizes. */
ecufl_net *ecufl_net_create(int n_sizes, const int *sizes, int max_batch, char *err, int errlen);
void ecufl_net_destroy(ecufl_net *net);
const char *ecufl_net_error(const ecufl_net *net);

/* Parameters in transport order [w1, b1, w2, b2, ...] (see above). A pruned layer keeps its mask:
 * set_params takes the new values at the kept positions only; get_params gives 0 elsewhere. */
int ecufl_net_set_params(ecufl_net *net, const float *const *arrays);
int ecufl_net_get_params(const ecufl_net *net, float *const *arrays);
/* Initial parameters from the project PRNG (ecufl_rand.h), same as ecufl.kernels.prng.init_params. */
int ecufl_net_init_params(ecufl_net *net, uint32_t seed, int scaled);

int ecufl_net_train(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n_images,
                    const int32_t *order, int n, double lr, int batch_size);
/* loss = mean 0.5*||a - y||^2 over the n samples, correct = how many argmax(a) == label. */
int ecufl_net_evaluate(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n,
                       double *loss, int *correct);

/* Bytes the kernel holds for the model's weights and biases (sparse / quantised: its real footprint). */
long ecufl_net_weight_bytes(const ecufl_net *net);
/* A JSON object describing the build: {"kernel": ..., "path": "plain"|"avx2"|"neon"|..., ...}.
 * Owned by the net (written at create), valid until destroy. */
const char *ecufl_net_describe(const ecufl_net *net);

/* ---- optional: any data (issue 17; every library in the list above) ------------------------ */

/* train / evaluate on float32 data: any network on any data (kernels/base.py's contract).
 *   inputs   (n_samples, sizes[0]) row-major, values in [0, 1] taken as they are (no / 255);
 *            int8: each becomes the q7 input round_half_up(127 x), clamped to 0..127.
 *   targets  (n_samples, sizes[-1]) row-major real-valued targets in [0, 1], or NULL: then
 *   labels   (n_samples) class indices < sizes[-1] give one-hot targets (as ecufl_net_train).
 *            Exactly one of targets / labels is used (targets when not NULL).
 * Same SGD as ecufl_net_train: delta_L = (a - y) a (1 - a) with the real y. uint8 pixels p given
 * here as p / 255.0f train the same network as ecufl_net_train (float32 kernels: bit for bit).
 * evaluate: loss = mean 0.5*||a - y||^2; correct counts argmax(a) == label with labels, or with
 * targets every output within 0.5 of its target (max |a - y| < 0.5). Non-finite inputs or
 * targets are an error naming the sample. Same memory rules: nothing is allocated. */
int ecufl_net_train_f32(ecufl_net *net, const float *inputs, const float *targets, const uint8_t *labels,
                        int n_samples, const int32_t *order, int n, double lr, int batch_size);
int ecufl_net_evaluate_f32(ecufl_net *net, const float *inputs, const float *targets, const uint8_t *labels,
                           int n, double *loss, int *correct);

/* ---- optional: pruning (c-sparse, int8, int8-plain) ---------------------------------------- */

/* Keep only the weights of layer `layer` where mask (n_out x n_in, nonzero = keep) is set, for
 * the rest of training: the layer switches to block-CSC storage in blocks of `block` (1 or 8)
 * consecutive output rows of one input, which the mask must respect. */
int ecufl_net_set_mask(ecufl_net *net, int layer, const uint8_t *mask, int block);

/* ---- optional: quantised training (int8, int8-plain) --------------------------------------- */

/* Bytes of the float32 master weights and biases the training keeps beside the int8 model. */
long ecufl_net_master_bytes(const ecufl_net *net);
/* Inspection for the bit-exactness tests: layer `layer`'s int8 weights (n_out x n_in, 0 where
 * pruned) and the max |w| their scale comes from; the q7 activations of every layer (acts[l]:
 * n x sizes[l]) and the last layer's z (n x sizes[-1]) for images[0..n-1], any n. */
int ecufl_net_get_quantised(ecufl_net *net, int layer, int8_t *wq, float *maxabs);
int ecufl_net_forward_trace(ecufl_net *net, const uint8_t *images, int n, uint8_t *const *acts, int32_t *z);

#ifdef __cplusplus
}
#endif

#endif /* ECUFL_KERNEL_H */

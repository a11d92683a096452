/* ecufl_idx.h: a strict reader of MNIST's IDX files (raw; .gz too when built with zlib).
 * Checks magic, dimensions and size: a truncated file or trailing bytes are errors naming the file. */
#ifndef ECUFL_IDX_H
#define ECUFL_IDX_H

#include <stddef.h>
#include <stdint.h>

/* The largest data a file may announce (MNIST's training images are 47 MB). */
#define ECUFL_IDX_MAX_BYTES (1ull << 30)

typedef struct ecufl_idx {
    uint8_t *data; /* count * rows * cols items (rows = cols = 1 for labels, cols = 1 for 2
                    * dimensions); uint8 bytes, or (type 0x0D) host-order floats; free() it */
    int count, rows, cols;
    int type;      /* ECUFL_IDX_U8 or ECUFL_IDX_F32 (ecufl_idx_read: always U8) */
    int dims;      /* 1, 2 or 3 */
} ecufl_idx;

#define ECUFL_IDX_U8 0x08  /* IDX type byte: unsigned bytes */
#define ECUFL_IDX_F32 0x0D /* IDX type byte: float32, big-endian in the file */

/* dims = 1 (labels) or 3 (images), unsigned bytes. 0 on success; -1 with one line in err. */
int ecufl_idx_read(const char *path, int dims, ecufl_idx *out, char *err, size_t errlen);
/* Any data (issue 17): an IDX file of 1 to 3 dimensions, unsigned bytes (0x08) or float32 (0x0D,
 * converted to host order; every value must be finite). Same checks as ecufl_idx_read. */
int ecufl_idx_read_any(const char *path, ecufl_idx *out, char *err, size_t errlen);
static inline const float *ecufl_idx_floats(const ecufl_idx *x) { return (const float *)(const void *)x->data; }

/* The data of a split for the trainers: MNIST's files (ecufl_mnist_read; split "test" reads t10k)
 * or, when <dir>/<split>-inputs.idx exists (or .gz), any data: <split>-inputs.idx (N x n_in, 2 or
 * 3 dimensions, uint8 pixels or float32 inputs in [0, 1]) and <split>-targets.idx, either class
 * labels (N, uint8) or real-valued targets (N x n_out float32). Sizes are checked against the
 * network by the caller. targets->dims == 1: labels. */
int ecufl_data_read(const char *dir, const char *split, ecufl_idx *inputs, ecufl_idx *targets, char *err, size_t errlen);

/* MNIST split "train" or "t10k" from dir: <split>-images-idx3-ubyte and <split>-labels-idx1-ubyte,
 * raw or with .gz (zlib builds). Images must be 28x28 and labels match them in count and be < 10. */
int ecufl_mnist_read(const char *dir, const char *split, ecufl_idx *images, ecufl_idx *labels, char *err, size_t errlen);

#endif

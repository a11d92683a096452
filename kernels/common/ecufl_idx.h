/* ecufl_idx.h: a strict reader of MNIST's IDX files (raw; .gz too when built with zlib).
 * Checks magic, dimensions and size: a truncated file or trailing bytes are errors naming the file. */
#ifndef ECUFL_IDX_H
#define ECUFL_IDX_H

#include <stddef.h>
#include <stdint.h>

/* The largest data a file may announce (MNIST's training images are 47 MB). */
#define ECUFL_IDX_MAX_BYTES (1ull << 30)

typedef struct ecufl_idx {
    uint8_t *data; /* count * rows * cols bytes (rows = cols = 1 for labels); free() it */
    int count, rows, cols;
} ecufl_idx;

/* dims = 1 (labels) or 3 (images). 0 on success; -1 with one line in err. */
int ecufl_idx_read(const char *path, int dims, ecufl_idx *out, char *err, size_t errlen);

/* MNIST split "train" or "t10k" from dir: <split>-images-idx3-ubyte and <split>-labels-idx1-ubyte,
 * raw or with .gz (zlib builds). Images must be 28x28 and labels match them in count and be < 10. */
int ecufl_mnist_read(const char *dir, const char *split, ecufl_idx *images, ecufl_idx *labels, char *err, size_t errlen);

#endif

/* ecufl_npz.h: the ecufl weight file (kernels/README.md, "The weight file") from C, no zlib:
 * an uncompressed .npz (zip, method "stored") of .npy arrays w1, b1, w2, b2, ... plus `meta`.
 * Reads what numpy.savez writes (float32 or float64, zip64 local headers included) and writes
 * files `ecufl compare` / `ecufl eval` / `ecufl train --init` read. */
#ifndef ECUFL_NPZ_H
#define ECUFL_NPZ_H

#include <stddef.h>

#define ECUFL_NPZ_MAX_ARRAYS 16 /* weight layers */

/* Read w_l (n_out, n_in) and b_l (n_out) for the given layer sizes into float32 arrays in
 * transport order [w1, b1, ...]; float64 files are rounded to float32. -1 + one line in err. */
int ecufl_npz_read_params(const char *path, int n_sizes, const int *sizes, float *const *arrays, char *err, size_t errlen);

/* Write the parameters (float32) and meta_json (a JSON object, stored as numpy's 0-d unicode
 * array `meta`) atomically: path.tmp, then rename. -1 + one line in err. */
int ecufl_npz_write_params(const char *path, int n_sizes, const int *sizes, const float *const *arrays,
                           const char *meta_json, char *err, size_t errlen);

#endif

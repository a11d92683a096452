/* read_file: the C readers from the command line, for the hostile-file tests (tests/test_hostile_readers.py).
 *   read_file idx1|idx3 PATH   ecufl_idx_read with 1 or 3 dimensions: "ok COUNT ROWS COLS" and every byte touched
 *   read_file npz PATH         ecufl_npz_read_params for layers 4-3-2: "ok"
 * Errors: "error: MESSAGE" on stdout, exit 1. Built natively, -m32 and for armv7 (qemu-arm), with ASan
 * where the toolchain has it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ecufl_idx.h"
#include "ecufl_npz.h"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: read_file idx1|idx3|npz PATH\n"); return 2; }
    char err[512];
    memset(err, 'U', sizeof err - 1); /* an error that sets no message prints these */
    err[sizeof err - 1] = 0;
    if (!strcmp(argv[1], "npz")) {
        static const int sizes[] = {4, 3, 2};
        float w1[12], b1[3], w2[6], b2[2];
        float *arrays[] = {w1, b1, w2, b2};
        if (ecufl_npz_read_params(argv[2], 3, sizes, arrays, err, sizeof err)) { printf("error: %s\n", err); return 1; }
        printf("ok\n");
        return 0;
    }
    ecufl_idx out;
    if (ecufl_idx_read(argv[2], !strcmp(argv[1], "idx3") ? 3 : 1, &out, err, sizeof err)) {
        printf("error: %s\n", err);
        return 1;
    }
    /* touch every byte the header announces (64-bit count: a wrapped allocation shows here) */
    uint64_t n = (uint64_t)out.count * (uint64_t)out.rows * (uint64_t)out.cols;
    unsigned sum = 0;
    for (uint64_t i = 0; i < n; i++) sum += out.data[i];
    printf("ok %d %d %d %u\n", out.count, out.rows, out.cols, sum);
    free(out.data);
    return 0;
}

/* libFuzzer harness: kernels/common/ecufl_npz.c (ecufl_npz_read_params) on arbitrary file contents,
 * for layers 4-3-2 (arrays w1 3x4, b1 3, w2 2x3, b2 2). Built 64-bit and 32-bit (-m32). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ecufl_npz.h"

static char path[64];
static void remove_file(void) { if (path[0]) unlink(path); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0] && !atexit(remove_file)) /* tmpfs when there is one: a file per input */
        snprintf(path, sizeof path, "%s/ecufl-fuzz-npz-%d.npz", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    static const int sizes[] = {4, 3, 2};
    float w1[12], b1[3], w2[6], b2[2];
    float *arrays[] = {w1, b1, w2, b2};
    char err[512];
    memset(err, 0x55, sizeof err); /* an error must set the message: uninitialised bytes show */
    if (ecufl_npz_read_params(path, 3, sizes, arrays, err, sizeof err) != 0) {
        if (!memchr(err, 0, sizeof err) || !err[0] || strchr(err, '\n')) abort();
    }
    return 0;
}

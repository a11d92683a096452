/* libFuzzer harness: kernels/common/ecufl_idx.c on arbitrary file contents.
 * The first byte picks the reader: bit 1 set, ecufl_idx_read_any (any data: 1-3 dimensions, uint8
 * or float32); else ecufl_idx_read with bit 0 picking the dimensions (1: labels, 3: images); the
 * rest is the file. The reader takes
 * a path, so each input is written to a private file first. Built 64-bit (with zlib: gzip inputs are
 * decoded too) and 32-bit (-m32: size_t products wrap there, as on the armv7 boards). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ecufl_idx.h"

static char path[64];
static void remove_file(void) { if (path[0]) unlink(path); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (!path[0] && !atexit(remove_file)) /* tmpfs when there is one: a file per input */
        snprintf(path, sizeof path, "%s/ecufl-fuzz-idx-%d", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
    int dims = data[0] & 1 ? 3 : 1, any = data[0] & 2;
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size > 1 && fwrite(data + 1, 1, size - 1, f) != size - 1) abort();
    fclose(f);
    ecufl_idx out;
    char err[512];
    int rc = any ? ecufl_idx_read_any(path, &out, err, sizeof err) : ecufl_idx_read(path, dims, &out, err, sizeof err);
    if (rc == 0) {
        /* a success must describe exactly the bytes it holds (float32: 4 per item, all finite) */
        uint64_t n = (uint64_t)out.count * (uint64_t)out.rows * (uint64_t)out.cols; /* 64-bit: see a wrap */
        if (out.type == ECUFL_IDX_F32) {
            const float *f = ecufl_idx_floats(&out);
            for (uint64_t i = 0; i < n; i++)
                if (f[i] - f[i] != 0.0f) abort();
            n *= 4;
        }
        if (!any && (out.type != ECUFL_IDX_U8 || out.dims != dims)) abort();
        volatile uint8_t sum = 0;
        for (uint64_t i = 0; i < n; i++) sum ^= out.data[i];
        (void)sum;
        free(out.data);
    } else if (!memchr(err, 0, sizeof err) || !err[0] || strchr(err, '\n')) {
        abort(); /* an error is one non-empty line */
    }
    return 0;
}

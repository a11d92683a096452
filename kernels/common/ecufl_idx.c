/* ecufl_idx.c: IDX reader for the trainers. The data is read straight into one exact-size buffer
 * (no second copy: the trainer's peak memory is the data set plus a few MB). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, getrusage, stat under -std=c11 */
#include "ecufl_idx.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef ECUFL_HAVE_ZLIB
#include <zlib.h>
typedef gzFile source;
static source src_open(const char *path) { return gzopen(path, "rb"); }
static long src_read(source s, void *buf, size_t n) {
    size_t done = 0;
    while (done < n) { /* gzread takes an unsigned count: read in pieces */
        unsigned chunk = n - done > (1u << 30) ? 1u << 30 : (unsigned)(n - done);
        int got = gzread(s, (char *)buf + done, chunk);
        if (got < 0) return -1;
        if (got == 0) break;
        done += (size_t)got;
    }
    return (long)done;
}
static void src_close(source s) { gzclose(s); }
#else
typedef FILE *source;
static source src_open(const char *path) { return fopen(path, "rb"); }
static long src_read(source s, void *buf, size_t n) {
    size_t got = fread(buf, 1, n, s);
    return ferror(s) ? -1 : (long)got;
}
static void src_close(source s) { fclose(s); }
#endif

/* Whether the file starts with gzip's magic (the reader decodes it transparently when built with zlib). */
static int is_gzip(const char *path) {
    uint8_t m[2] = {0, 0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t got = fread(m, 1, 2, f);
    fclose(f);
    return got == 2 && m[0] == 0x1f && m[1] == 0x8b;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* any: 1..3 dimensions and either type (ecufl_idx_read_any); else exactly dims, unsigned bytes. */
static int read_idx(const char *path, int dims, int any, ecufl_idx *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!any && dims != 1 && dims != 3) {
        snprintf(err, errlen, "%s: IDX files of %d dimensions are not read here (1 or 3)", path, dims);
        return -1;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    source s = src_open(path);
    if (!s) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno ? errno : EIO));
        return -1;
    }
    uint8_t head[16];
    int type = ECUFL_IDX_U8;
    if (any) { /* the magic names type and dimensions: 0x0000 TT DD */
        long got4 = src_read(s, head, 4);
        if (got4 != 4) {
            snprintf(err, errlen, "%s: truncated IDX header (%ld of 4 bytes)", path, got4 < 0 ? 0 : got4);
            src_close(s);
            return -1;
        }
#ifndef ECUFL_HAVE_ZLIB
        if (head[0] == 0x1f && head[1] == 0x8b) {
            snprintf(err, errlen, "%s: gzip-compressed; this build reads raw IDX only (gunzip it)", path);
            src_close(s);
            return -1;
        }
#endif
        type = head[2];
        dims = head[3];
        if (head[0] || head[1] || (type != ECUFL_IDX_U8 && type != ECUFL_IDX_F32) || dims < 1 || dims > 3) {
            snprintf(err, errlen, "%s: bad magic 0x%08x: expected 0x000008DD (unsigned bytes) or 0x00000dDD (float32), "
                     "DD = 1 to 3 dimensions", path, be32(head));
            src_close(s);
            return -1;
        }
    }
    size_t head_len = 4 + 4 * (size_t)dims, done = any ? 4 : 0;
    long got = src_read(s, head + done, head_len - done);
    got = got < 0 ? got : got + (long)done;
    if (got != (long)head_len) {
        snprintf(err, errlen, "%s: truncated IDX header (%ld of %zu bytes)", path, got < 0 ? 0 : got, head_len);
        src_close(s);
        return -1;
    }
#ifndef ECUFL_HAVE_ZLIB
    if (head[0] == 0x1f && head[1] == 0x8b) {
        snprintf(err, errlen, "%s: gzip-compressed; this build reads raw IDX only (gunzip it)", path);
        src_close(s);
        return -1;
    }
#endif
    uint32_t magic = be32(head), want = (uint32_t)type << 8 | (uint32_t)dims;
    if (magic != want) {
        snprintf(err, errlen, "%s: bad magic 0x%08x, expected 0x%08x (unsigned bytes, %d dimension%s)", path,
                 magic, want, dims, dims > 1 ? "s" : "");
        src_close(s);
        return -1;
    }
    uint32_t count = be32(head + 4), rows = dims >= 2 ? be32(head + 8) : 1, cols = dims == 3 ? be32(head + 12) : 1;
    if (count > (1u << 24) || rows > 4096 || cols > 4096) {
        snprintf(err, errlen, "%s: implausible dimensions %u x %u x %u", path, count, rows, cols);
        src_close(s);
        return -1;
    }
    /* 64-bit product: on 32-bit ARM a size_t product wraps (5,478,275 x 28 x 28 = 2^32 + 304) */
    uint64_t item = type == ECUFL_IDX_F32 ? 4 : 1;
    uint64_t bytes64 = (uint64_t)count * rows * cols * item;
    if (bytes64 > ECUFL_IDX_MAX_BYTES) {
        snprintf(err, errlen, "%s: implausible dimensions %u x %u x %u (%llu bytes, at most %llu)", path, count, rows,
                 cols, (unsigned long long)bytes64, (unsigned long long)ECUFL_IDX_MAX_BYTES);
        src_close(s);
        return -1;
    }
    /* a raw file must hold exactly the header and the data; a gzip stream cannot expand beyond 1032:1 */
    uint64_t on_disk = (uint64_t)st.st_size;
    int raw = !is_gzip(path);
    if ((raw && on_disk != head_len + bytes64) || (!raw && bytes64 > on_disk * 1032u + 1024u)) {
        snprintf(err, errlen, "%s: truncated or trailing bytes: the header announces %u x %u x %u%s = %llu data bytes, "
                 "the file has %llu bytes%s", path, count, rows, cols, item == 4 ? " x 4" : "", (unsigned long long)bytes64,
                 (unsigned long long)on_disk, raw ? "" : " (gzip)");
        src_close(s);
        return -1;
    }
    size_t bytes = (size_t)bytes64;
    uint8_t *data = malloc(bytes ? bytes : 1);
    if (!data) {
        snprintf(err, errlen, "%s: out of memory for %zu bytes", path, bytes);
        src_close(s);
        return -1;
    }
    got = src_read(s, data, bytes);
    if (got != (long)bytes) {
        snprintf(err, errlen, "%s: truncated: %ld of %zu data bytes", path, got < 0 ? 0 : got, bytes);
        free(data);
        src_close(s);
        return -1;
    }
    uint8_t extra;
    if (src_read(s, &extra, 1) != 0) {
        snprintf(err, errlen, "%s: trailing bytes after %u items", path, count);
        free(data);
        src_close(s);
        return -1;
    }
    src_close(s);
    if (type == ECUFL_IDX_F32) { /* big-endian float32 -> host floats, each finite */
        size_t n = bytes / 4;
        for (size_t k = 0; k < n; k++) {
            uint32_t bits = be32(data + 4 * k);
            float v;
            memcpy(&v, &bits, 4);
            memcpy(data + 4 * k, &v, 4);
            if (v - v != 0.0f) { /* NaN or infinity */
                snprintf(err, errlen, "%s: value %zu of the float32 data is not finite", path, k);
                free(data);
                return -1;
            }
        }
    }
    out->data = data;
    out->count = (int)count;
    out->rows = (int)rows;
    out->cols = (int)cols;
    out->type = type;
    out->dims = dims;
    return 0;
}

int ecufl_idx_read(const char *path, int dims, ecufl_idx *out, char *err, size_t errlen) {
    return read_idx(path, dims, 0, out, err, errlen);
}

int ecufl_idx_read_any(const char *path, ecufl_idx *out, char *err, size_t errlen) {
    return read_idx(path, 0, 1, out, err, errlen);
}

/* <dir>/<split>-<kind>.idx, raw or .gz (zlib builds); 1 when it does not exist (neither). */
static int any_path(const char *dir, const char *split, const char *kind, char *path, size_t cap) {
    struct stat st;
    snprintf(path, cap, "%s/%s-%s.idx", dir, split, kind);
    if (stat(path, &st) == 0) return 0;
#ifdef ECUFL_HAVE_ZLIB
    snprintf(path + strlen(path), cap - strlen(path), ".gz");
    if (stat(path, &st) == 0) return 0;
    path[strlen(path) - 3] = 0;
#endif
    return 1;
}

int ecufl_data_read(const char *dir, const char *split, ecufl_idx *inputs, ecufl_idx *targets, char *err, size_t errlen) {
    char path[4096], tpath[4096];
    memset(targets, 0, sizeof *targets);
    if (any_path(dir, split, "inputs", path, sizeof path))
        return ecufl_mnist_read(dir, strcmp(split, "test") ? split : "t10k", inputs, targets, err, errlen);
    if (ecufl_idx_read_any(path, inputs, err, errlen)) return -1;
    const char *problem = NULL;
    if (inputs->dims == 1) problem = "inputs need 2 or 3 dimensions (samples x values)";
    else if (any_path(dir, split, "targets", tpath, sizeof tpath)) {
        snprintf(err, errlen, "%s: no such file (the targets or labels of %s)", tpath, path);
        free(inputs->data);
        return -1;
    }
    if (!problem && ecufl_idx_read_any(tpath, targets, err, errlen)) {
        free(inputs->data);
        return -1;
    }
    if (problem) {
    } else if (targets->count != inputs->count) {
        snprintf(path, sizeof path, "%s", tpath);
        problem = "target count differs from input count";
    } else if (targets->dims == 1 && targets->type != ECUFL_IDX_U8) {
        snprintf(path, sizeof path, "%s", tpath);
        problem = "labels (1 dimension) must be unsigned bytes";
    } else if (targets->dims > 1 && targets->type != ECUFL_IDX_F32) {
        snprintf(path, sizeof path, "%s", tpath);
        problem = "real-valued targets must be float32 (IDX type 0x0D)";
    }
    if (problem) {
        snprintf(err, errlen, "%s: %s", path, problem);
        free(inputs->data);
        free(targets->data);
        memset(targets, 0, sizeof *targets);
        return -1;
    }
    return 0;
}

static int read_one(const char *dir, const char *split, const char *kind, int dims, ecufl_idx *out, char *err, size_t errlen) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s-%s-idx%d-ubyte", dir, split, kind, dims);
    if (stat(path, &st) != 0) {
#ifdef ECUFL_HAVE_ZLIB
        char gz[4100];
        snprintf(gz, sizeof gz, "%s.gz", path);
        if (stat(gz, &st) == 0) return ecufl_idx_read(gz, dims, out, err, errlen);
        snprintf(err, errlen, "%s: no such file (nor .gz)", path);
#else
        snprintf(err, errlen, "%s: no such file (this build reads raw IDX; gunzip the .gz)", path);
#endif
        return -1;
    }
    return ecufl_idx_read(path, dims, out, err, errlen);
}

int ecufl_mnist_read(const char *dir, const char *split, ecufl_idx *images, ecufl_idx *labels, char *err, size_t errlen) {
    memset(labels, 0, sizeof *labels);
    if (read_one(dir, split, "images", 3, images, err, errlen)) return -1;
    if (images->rows != 28 || images->cols != 28) {
        snprintf(err, errlen, "%s/%s-images: images are %dx%d, expected 28x28", dir, split, images->rows, images->cols);
        free(images->data);
        return -1;
    }
    if (read_one(dir, split, "labels", 1, labels, err, errlen)) {
        free(images->data);
        return -1;
    }
    const char *problem = NULL;
    if (labels->count != images->count) problem = "label count differs from image count";
    for (int k = 0; !problem && k < labels->count; k++)
        if (labels->data[k] > 9) problem = "a label is not a digit 0-9";
    if (problem) {
        snprintf(err, errlen, "%s/%s-labels: %s", dir, split, problem);
        free(images->data);
        free(labels->data);
        return -1;
    }
    return 0;
}

/* agent_data.c: the board's MNIST training set, read once at start and kept as uint8 (47 MB for
 * 60,000 images: the kernel turns a pixel p into p/255 itself, so no float copy is ever made); or
 * any data (issue 17), when the directory holds train-inputs.idx: kept as float32 (load_any). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <sys/stat.h>

#include "agent.h"
#include "ecufl_idx.h"

static int be32(const uint8_t *p) { return (int)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]); }

/* gzopen reads plain files too, so `name` may be stored compressed (name.gz) or not. */
static gzFile open_idx(const char *dir, const char *name, char *path, size_t pathlen) {
    snprintf(path, pathlen, "%s/%s", dir, name);
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(path, pathlen, "%s/%s.gz", dir, name);
        f = gzopen(path, "rb");
    }
    return f;
}

static int read_exact(gzFile f, void *buf, size_t n) {
    uint8_t *p = buf;
    while (n) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int r = gzread(f, p, (unsigned)chunk);
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Any data (issue 17): train-inputs.idx and train-targets.idx in dir (ecufl_data_read), inputs
 * held as float32 (uint8 pixels as p / 255.0f, the value the kernels give them), targets as
 * float32 or class labels. 1 when dir holds no train-inputs.idx[.gz] (then MNIST). */
static int load_any(const char *dir, agent_dataset *ds, char *err, size_t errlen) {
    char path[1024];
    struct stat st;
    snprintf(path, sizeof path, "%s/train-inputs.idx", dir);
    if (stat(path, &st) != 0) {
        snprintf(path, sizeof path, "%s/train-inputs.idx.gz", dir);
        if (stat(path, &st) != 0) return 1;
    }
    ecufl_idx x, y;
    if (ecufl_data_read(dir, "train", &x, &y, err, errlen)) return -1;
    size_t values = (size_t)x.count * x.rows * x.cols;
    if (x.type == ECUFL_IDX_U8) { /* pixels: p / 255.0f, once */
        float *f = malloc(sizeof(float) * (values ? values : 1));
        if (!f) { snprintf(err, errlen, "%s: out of memory", path); free(x.data); free(y.data); return -1; }
        for (size_t k = 0; k < values; k++) f[k] = (float)x.data[k] / 255.0f;
        free(x.data);
        x.data = (uint8_t *)f;
    }
    ds->inputs = (float *)(void *)x.data;
    ds->n = x.count;
    ds->n_in = x.rows * x.cols;
    if (y.dims > 1) {
        ds->targets = (float *)(void *)y.data;
        ds->n_out = y.rows * y.cols;
    } else {
        ds->labels = y.data;
    }
    return 0;
}

int agent_dataset_load(const char *dir, agent_dataset *ds, char *err, size_t errlen) {
    char path[1024];
    uint8_t hdr[16];
    memset(ds, 0, sizeof *ds);
    int any = load_any(dir, ds, err, errlen);
    if (any <= 0) return any;
    gzFile fi = open_idx(dir, "train-images-idx3-ubyte", path, sizeof path);
    if (!fi) { snprintf(err, errlen, "no train-images-idx3-ubyte[.gz] in %s", dir); return -1; }
    if (read_exact(fi, hdr, 16) || be32(hdr) != 0x803 || be32(hdr + 8) != 28 || be32(hdr + 12) != 28) {
        snprintf(err, errlen, "%s: not an IDX file of 28x28 images", path); gzclose(fi); return -1;
    }
    int n = be32(hdr + 4);
    if (n <= 0 || n > 1000000) { snprintf(err, errlen, "%s: implausible image count %d", path, n); gzclose(fi); return -1; }
    ds->images = malloc((size_t)n * 784);
    if (!ds->images || read_exact(fi, ds->images, (size_t)n * 784)) {
        snprintf(err, errlen, "%s: truncated or out of memory", path); gzclose(fi); free(ds->images); return -1;
    }
    gzclose(fi);
    gzFile fl = open_idx(dir, "train-labels-idx1-ubyte", path, sizeof path);
    if (!fl) { snprintf(err, errlen, "no train-labels-idx1-ubyte[.gz] in %s", dir); free(ds->images); return -1; }
    ds->labels = malloc((size_t)n);
    if (read_exact(fl, hdr, 8) || be32(hdr) != 0x801 || be32(hdr + 4) != n || !ds->labels ||
        read_exact(fl, ds->labels, (size_t)n)) {
        snprintf(err, errlen, "%s: bad label file (count must be %d)", path, n);
        gzclose(fl); free(ds->images); free(ds->labels); return -1;
    }
    gzclose(fl);
    for (int i = 0; i < n; i++)
        if (ds->labels[i] > 9) { snprintf(err, errlen, "%s: label %d at %d", path, ds->labels[i], i); return -1; }
    ds->n = n;
    return 0;
}

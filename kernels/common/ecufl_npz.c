/* ecufl_npz.c: zip "stored" archives of .npy arrays, read and written without zlib.
 * Formats: numpy's NEP 1 (.npy 1.0/2.0/3.0 headers) and PKWARE's APPNOTE (local headers, central
 * directory, end record, zip64 extra fields as numpy.savez writes them). Little-endian hosts. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, getrusage, stat under -std=c11 */
#include "ecufl_npz.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ecufl_npz.c writes float32 arrays as they are in memory: little-endian hosts only"
#endif

/* ---- little-endian fields --------------------------------------------------------------------- */
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void wr32(uint8_t *p, uint32_t v) { wr16(p, v & 0xffff); wr16(p + 2, v >> 16); }

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    static uint32_t table[256];
    static int ready = 0;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    crc = ~crc;
    while (n--) crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- reading -------------------------------------------------------------------------------- */
typedef struct { const uint8_t *data; size_t size; } blob;

/* Every offset and length below comes from the file: each is checked against the bytes that are left
 * (never as `offset + length > size`, which wraps), in 64-bit arithmetic (size_t is 32-bit on ARM). */
static int find_member(const char *path, blob zip, const char *name, blob *out, char *err, size_t errlen) {
    const uint64_t size = zip.size;
    /* end of central directory record: last occurrence of PK\5\6, at most a 64 KiB comment before the end */
    if (size < 22) goto not_zip;
    size_t eocd = zip.size - 22;
    while (1) {
        if (rd32(zip.data + eocd) == 0x06054b50u) break;
        if (eocd == 0 || zip.size - eocd >= 22 + 65535) goto not_zip;
        eocd--;
    }
    uint64_t entries = rd16(zip.data + eocd + 10), cd = rd32(zip.data + eocd + 16);
    if (cd == 0xffffffffu || entries == 0xffff) { /* zip64 end record via its locator */
        if (eocd < 20 || rd32(zip.data + eocd - 20) != 0x07064b50u) goto not_zip;
        uint64_t z64 = rd64(zip.data + eocd - 20 + 8);
        if (z64 > size || size - z64 < 56 || rd32(zip.data + z64) != 0x06064b50u) goto not_zip;
        entries = rd64(zip.data + z64 + 32);
        cd = rd64(zip.data + z64 + 48);
    }
    if (cd > size) goto not_zip;
    uint64_t p = cd;
    const size_t want_len = strlen(name);
    for (uint64_t e = 0; e < entries; e++) {
        if (size - p < 46 || rd32(zip.data + p) != 0x02014b50u) goto not_zip;
        uint16_t method = rd16(zip.data + p + 10), name_len = rd16(zip.data + p + 28);
        uint16_t extra_len = rd16(zip.data + p + 30), comment_len = rd16(zip.data + p + 32);
        uint64_t csize = rd32(zip.data + p + 20), usize = rd32(zip.data + p + 24), offset = rd32(zip.data + p + 42);
        uint64_t entry_len = 46 + (uint64_t)name_len + extra_len + comment_len;
        if (size - p < entry_len) goto not_zip; /* name, extra field and comment inside the file */
        const uint8_t *ename = zip.data + p + 46;
        if (name_len == want_len && !memcmp(ename, name, name_len)) {
            const uint8_t *x = ename + name_len;
            size_t left = extra_len; /* the extra field ends where the header says, not where a sub-field says */
            while (left >= 4) { /* zip64 extra: the 0xffffffff fields, in order */
                uint16_t id = rd16(x), len = rd16(x + 2);
                if (len > left - 4) goto not_zip;
                const uint8_t *f = x + 4;
                size_t fleft = len;
                if (id == 1) {
                    if (usize == 0xffffffffu && fleft >= 8) { usize = rd64(f); f += 8; fleft -= 8; }
                    if (csize == 0xffffffffu && fleft >= 8) { csize = rd64(f); f += 8; fleft -= 8; }
                    if (offset == 0xffffffffu && fleft >= 8) { offset = rd64(f); f += 8; fleft -= 8; }
                }
                x += 4 + (size_t)len;
                left -= 4 + (size_t)len;
            }
            if (method != 0) {
                snprintf(err, errlen, "%s: %s is compressed (method %u); write weight files with numpy.savez, not savez_compressed",
                         path, name, method);
                return -1;
            }
            if (csize != usize || offset > size || size - offset < 30 || rd32(zip.data + offset) != 0x04034b50u)
                goto not_zip;
            uint64_t start = offset + 30 + (uint64_t)rd16(zip.data + offset + 26) + rd16(zip.data + offset + 28);
            if (start > size || usize > size - start) goto not_zip;
            out->data = zip.data + start;
            out->size = (size_t)usize;
            return 0;
        }
        p += entry_len;
    }
    out->data = NULL;
    return 1; /* not there */
not_zip:
    snprintf(err, errlen, "%s: not an ecufl weight file (not a readable .npz archive)", path);
    return -1;
}

/* Parse a .npy holding a float array of the given shape (ndim 1 or 2) into dst (float32). */
static int read_npy(const char *path, const char *name, blob npy, int ndim, const int *shape, float *dst, char *err, size_t errlen) {
    if (npy.size < 10 || memcmp(npy.data, "\x93NUMPY", 6)) {
        snprintf(err, errlen, "%s: %s is not a .npy array", path, name);
        return -1;
    }
    size_t hlen, hstart;
    if (npy.data[6] == 1) { hlen = rd16(npy.data + 8); hstart = 10; }
    else if ((npy.data[6] == 2 || npy.data[6] == 3) && npy.size >= 12) { hlen = rd32(npy.data + 8); hstart = 12; }
    else {
        snprintf(err, errlen, "%s: %s has a broken .npy header (version %u.%u)", path, name, npy.data[6], npy.data[7]);
        return -1;
    }
    if (hlen > 4096 || hlen > npy.size - hstart) { /* hlen first: hstart + hlen wraps a 32-bit size_t */
        snprintf(err, errlen, "%s: %s has a broken .npy header", path, name);
        return -1;
    }
    char header[4097];
    memcpy(header, npy.data + hstart, hlen);
    header[hlen] = 0;
    int is64;
    if (strstr(header, "'descr': '<f4'")) is64 = 0;
    else if (strstr(header, "'descr': '<f8'")) is64 = 1;
    else {
        snprintf(err, errlen, "%s: %s is not little-endian float32/float64", path, name);
        return -1;
    }
    if (!strstr(header, "'fortran_order': False")) {
        snprintf(err, errlen, "%s: %s is stored in Fortran order", path, name);
        return -1;
    }
    const char *sh = strstr(header, "'shape': (");
    long dims[4];
    int nd = 0;
    if (sh) {
        sh += 10;
        while (*sh && *sh != ')' && nd < 4) {
            char *end;
            dims[nd++] = strtol(sh, &end, 10);
            if (end == sh) break;
            sh = end;
            while (*sh == ',' || *sh == ' ') sh++;
        }
    }
    int ok = sh && nd == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = dims[d] == shape[d];
    if (!ok) {
        if (ndim == 2)
            snprintf(err, errlen, "%s: %s has the wrong shape (expected (%d, %d) for these --layers)", path, name, shape[0], shape[1]);
        else
            snprintf(err, errlen, "%s: %s has the wrong shape (expected (%d,) for these --layers)", path, name, shape[0]);
        return -1;
    }
    uint64_t count = ndim == 2 ? (uint64_t)shape[0] * (uint64_t)shape[1] : (uint64_t)shape[0];
    uint64_t item = is64 ? 8 : 4;
    if ((uint64_t)(npy.size - hstart - hlen) != count * item) {
        snprintf(err, errlen, "%s: %s holds %llu data bytes, expected %llu", path, name,
                 (unsigned long long)(npy.size - hstart - hlen), (unsigned long long)(count * item));
        return -1;
    }
    const uint8_t *p = npy.data + hstart + hlen;
    for (size_t k = 0; k < (size_t)count; k++) {
        float v;
        if (is64) {
            uint64_t bits = rd64(p + 8 * k);
            double d;
            memcpy(&d, &bits, 8);
            v = (float)d;
        } else {
            uint32_t bits = rd32(p + 4 * k);
            memcpy(&v, &bits, 4);
        }
        if (v != v || v - v != 0.0f) {
            snprintf(err, errlen, "%s: %s holds NaN or Inf", path, name);
            return -1;
        }
        dst[k] = v;
    }
    return 0;
}

int ecufl_npz_read_params(const char *path, int n_sizes, const int *sizes, float *const *arrays, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < 0 || size > (1L << 30)) {
        fclose(f);
        snprintf(err, errlen, "%s: not a regular file of plausible size", path);
        return -1;
    }
    uint8_t *data = malloc((size_t)size + 1);
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) {
        free(data);
        fclose(f);
        snprintf(err, errlen, "%s: cannot read", path);
        return -1;
    }
    fclose(f);
    blob zip = {data, (size_t)size};
    int rc = 0;
    for (int l = 0; l < n_sizes - 1 && !rc; l++) {
        for (int kind = 0; kind < 2 && !rc; kind++) {
            char name[32];
            snprintf(name, sizeof name, "%c%d.npy", kind ? 'b' : 'w', l + 1);
            blob npy;
            int found = find_member(path, zip, name, &npy, err, errlen);
            if (found < 0) { rc = -1; break; }
            if (found > 0) {
                snprintf(err, errlen, "%s: array %c%d is missing (these --layers have %d weight layers)", path,
                         kind ? 'b' : 'w', l + 1, n_sizes - 1);
                rc = -1;
                break;
            }
            int shape[2] = {sizes[l + 1], sizes[l]};
            rc = read_npy(path, name, npy, kind ? 1 : 2, shape, arrays[2 * l + kind], err, errlen);
        }
    }
    if (!rc) {
        char name[32];
        blob npy;
        snprintf(name, sizeof name, "w%d.npy", n_sizes);
        int found = find_member(path, zip, name, &npy, err, errlen);
        if (found == 0) {
            snprintf(err, errlen, "%s: holds more layers than --layers (%d weight layers)", path, n_sizes - 1);
            rc = -1;
        } else if (found < 0) {
            rc = -1;
        }
    }
    free(data);
    return rc;
}

/* ---- writing -------------------------------------------------------------------------------- */
typedef struct {
    FILE *f;
    uint32_t offset;
    int count;
    struct { char name[32]; uint32_t crc, size, offset; } entries[2 * ECUFL_NPZ_MAX_ARRAYS + 1];
} zip_writer;

static int npy_header(char *out, size_t cap, const char *descr, int ndim, const int *shape) {
    char dict[256], shp[64] = "";
    if (ndim == 0) snprintf(shp, sizeof shp, "()");
    else if (ndim == 1) snprintf(shp, sizeof shp, "(%d,)", shape[0]);
    else snprintf(shp, sizeof shp, "(%d, %d)", shape[0], shape[1]);
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shp);
    size_t total = 10 + (size_t)n + 1;       /* magic+version+len, dict, '\n' */
    size_t padded = (total + 63) / 64 * 64;  /* data aligned to 64 bytes, as numpy does */
    if (padded > cap) return -1;
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    wr16((uint8_t *)out + 8, (uint32_t)(padded - 10));
    memcpy(out + 10, dict, (size_t)n);
    memset(out + 10 + n, ' ', padded - 10 - (size_t)n - 1);
    out[padded - 1] = '\n';
    return (int)padded;
}

static int add_member(zip_writer *z, const char *name, const char *head, int head_len, const uint8_t *body, size_t body_len) {
    uint32_t crc = crc32_update(crc32_update(0, (const uint8_t *)head, (size_t)head_len), body, body_len);
    uint32_t size = (uint32_t)(head_len + body_len);
    uint8_t lh[30] = {0};
    size_t name_len = strlen(name);
    wr32(lh, 0x04034b50u);
    wr16(lh + 4, 20);            /* version needed */
    wr16(lh + 12, 0x21);         /* 1980-01-01 00:00 */
    wr32(lh + 14, crc);
    wr32(lh + 18, size);
    wr32(lh + 22, size);
    wr16(lh + 26, (uint32_t)name_len);
    if (fwrite(lh, 1, 30, z->f) != 30 || fwrite(name, 1, name_len, z->f) != name_len ||
        fwrite(head, 1, (size_t)head_len, z->f) != (size_t)head_len || fwrite(body, 1, body_len, z->f) != body_len)
        return -1;
    snprintf(z->entries[z->count].name, sizeof z->entries[z->count].name, "%s", name);
    z->entries[z->count].crc = crc;
    z->entries[z->count].size = size;
    z->entries[z->count].offset = z->offset;
    z->count++;
    z->offset += 30 + (uint32_t)name_len + size;
    return 0;
}

static int finish_zip(zip_writer *z) {
    uint32_t cd_start = z->offset, cd_size = 0;
    for (int e = 0; e < z->count; e++) {
        uint8_t ch[46] = {0};
        size_t name_len = strlen(z->entries[e].name);
        wr32(ch, 0x02014b50u);
        wr16(ch + 4, 20);
        wr16(ch + 6, 20);
        wr16(ch + 14, 0x21);
        wr32(ch + 16, z->entries[e].crc);
        wr32(ch + 20, z->entries[e].size);
        wr32(ch + 24, z->entries[e].size);
        wr16(ch + 28, (uint32_t)name_len);
        wr32(ch + 38, 0644u << 16); /* external attributes: a regular file, rw-r--r-- */
        wr32(ch + 42, z->entries[e].offset);
        if (fwrite(ch, 1, 46, z->f) != 46 || fwrite(z->entries[e].name, 1, name_len, z->f) != name_len) return -1;
        cd_size += 46 + (uint32_t)name_len;
    }
    uint8_t end[22] = {0};
    wr32(end, 0x06054b50u);
    wr16(end + 8, (uint32_t)z->count);
    wr16(end + 10, (uint32_t)z->count);
    wr32(end + 12, cd_size);
    wr32(end + 16, cd_start);
    return fwrite(end, 1, 22, z->f) == 22 ? 0 : -1;
}

int ecufl_npz_write_params(const char *path, int n_sizes, const int *sizes, const float *const *arrays,
                           const char *meta_json, char *err, size_t errlen) {
    if (n_sizes - 1 > ECUFL_NPZ_MAX_ARRAYS) {
        snprintf(err, errlen, "%s: too many layers", path);
        return -1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    zip_writer z = {0};
    z.f = fopen(tmp, "wb");
    if (!z.f) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    int rc = 0;
    char head[512];
    for (int l = 0; l < n_sizes - 1 && !rc; l++) {
        for (int kind = 0; kind < 2 && !rc; kind++) {
            int shape[2] = {sizes[l + 1], sizes[l]};
            size_t count = kind ? (size_t)shape[0] : (size_t)shape[0] * shape[1];
            char name[32];
            snprintf(name, sizeof name, "%c%d.npy", kind ? 'b' : 'w', l + 1);
            int hl = npy_header(head, sizeof head, "<f4", kind ? 1 : 2, shape);
            /* float32 little-endian: on the little-endian hosts we build for, the bytes as they are */
            rc = hl < 0 || add_member(&z, name, head, hl, (const uint8_t *)arrays[2 * l + kind], count * 4);
        }
    }
    if (!rc && meta_json) { /* numpy's 0-d unicode array: UTF-32LE code units ('<U{n}') */
        size_t n = strlen(meta_json);
        uint8_t *utf32 = calloc(n ? n : 1, 4);
        char descr[32];
        snprintf(descr, sizeof descr, "<U%zu", n);
        for (size_t k = 0; k < n; k++) wr32(utf32 + 4 * k, (uint8_t)meta_json[k]); /* ASCII JSON */
        int hl = npy_header(head, sizeof head, descr, 0, NULL);
        rc = !utf32 || hl < 0 || add_member(&z, "meta.npy", head, hl, utf32, n * 4);
        free(utf32);
    }
    if (!rc) rc = finish_zip(&z);
    if (fclose(z.f) != 0) rc = -1;
    if (rc || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot write (%s)", path, strerror(errno ? errno : EIO));
        remove(tmp);
        return -1;
    }
    return 0;
}

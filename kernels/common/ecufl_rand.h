/* ecufl_rand.h: the project's PRNG in C, bit for bit the generators network.py uses.
 *
 * Specification: kernels/README.md ("The PRNG"); golden vectors: kernels/golden/prng.json.
 *   - init stream  = numpy's legacy RandomState(S): MT19937 init_genrand(S), 53-bit doubles,
 *                    legacy polar Gaussians with one cached value -> initial weights
 *   - order stream = CPython's random.Random(S): MT19937 init_by_array([S]), shuffle() with
 *                    _randbelow by rejection on getrandbits -> the order of every epoch
 *
 * Header-only, C11 (also compiles as C++), libm only, no allocation. Every function is
 * static inline, so each kernel, trainer and test program carries its own copy.
 *
 * Floating point: the Gaussians must be computed exactly as written (IEEE double, no fused
 * multiply-add). The only sum of products, x1*x1 + x2*x2, goes through volatile temporaries, so
 * it is exact to the spec even under -ffp-contract=fast -mfma (tests/test_prng_c.py compiles it
 * that way too); every other expression gives the same double fused or not.
 */
#ifndef ECUFL_RAND_H
#define ECUFL_RAND_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define ECUFL_MT_N 624
#define ECUFL_MT_M 397

typedef struct ecufl_mt {
    uint32_t mt[ECUFL_MT_N];
    int mti;           /* next word of mt[] to temper; N means "regenerate" */
    int has_gauss;     /* numpy's legacy Gaussian cache */
    double gauss;
} ecufl_mt;

/* numpy legacy seeding (RandomState(S) / np.random.seed(S)). */
static inline void ecufl_mt_init_genrand(ecufl_mt *r, uint32_t s) {
    r->mt[0] = s;
    for (int i = 1; i < ECUFL_MT_N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = ECUFL_MT_N;
    r->has_gauss = 0;
    r->gauss = 0.0;
}

/* CPython's random.seed(int): key = the 32-bit words of |S|, least significant first (>= 1 word). */
static inline void ecufl_mt_init_by_array(ecufl_mt *r, const uint32_t *key, int key_length) {
    ecufl_mt_init_genrand(r, 19650218u);
    int i = 1, j = 0;
    int k = ECUFL_MT_N > key_length ? ECUFL_MT_N : key_length;
    for (; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
        i++;
        j++;
        if (i >= ECUFL_MT_N) { r->mt[0] = r->mt[ECUFL_MT_N - 1]; i = 1; }
        if (j >= key_length) j = 0;
    }
    for (k = ECUFL_MT_N - 1; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= ECUFL_MT_N) { r->mt[0] = r->mt[ECUFL_MT_N - 1]; i = 1; }
    }
    r->mt[0] = 0x80000000u; /* MSB is 1, assuring a non-zero initial array */
}

/* random.Random(S) for 0 <= S < 2^32: the key is the single word S (S = 0 gives [0]). */
static inline void ecufl_mt_seed_python(ecufl_mt *r, uint32_t seed) {
    uint32_t key[1] = {seed};
    ecufl_mt_init_by_array(r, key, 1);
}

static inline uint32_t ecufl_mt_u32(ecufl_mt *r) {
    static const uint32_t mag01[2] = {0u, 0x9908b0dfu};
    uint32_t y;
    if (r->mti >= ECUFL_MT_N) {
        int kk;
        for (kk = 0; kk < ECUFL_MT_N - ECUFL_MT_M; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + ECUFL_MT_M] ^ (y >> 1) ^ mag01[y & 1u];
        }
        for (; kk < ECUFL_MT_N - 1; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + (ECUFL_MT_M - ECUFL_MT_N)] ^ (y >> 1) ^ mag01[y & 1u];
        }
        y = (r->mt[ECUFL_MT_N - 1] & 0x80000000u) | (r->mt[0] & 0x7fffffffu);
        r->mt[ECUFL_MT_N - 1] = r->mt[ECUFL_MT_M - 1] ^ (y >> 1) ^ mag01[y & 1u];
        r->mti = 0;
    }
    y = r->mt[r->mti++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

/* genrand_res53: uniform double in [0, 1) with 53 random bits (numpy and CPython alike). */
static inline double ecufl_mt_double(ecufl_mt *r) {
    uint32_t a = ecufl_mt_u32(r) >> 5, b = ecufl_mt_u32(r) >> 6;
    return ((double)a * 67108864.0 + (double)b) / 9007199254740992.0; /* a*2^26 is exact */
}

/* numpy's legacy_gauss: the polar (Marsaglia) method; the second value of a pair is cached. */
static inline double ecufl_mt_gauss(ecufl_mt *r) {
    if (r->has_gauss) {
        r->has_gauss = 0;
        return r->gauss;
    }
    double x1, x2, r2;
    do {
        x1 = 2.0 * ecufl_mt_double(r) - 1.0;
        x2 = 2.0 * ecufl_mt_double(r) - 1.0;
        /* both squares rounded on their own (volatile): no fused multiply-add, whatever the flags */
        volatile double sq1 = x1 * x1, sq2 = x2 * x2;
        r2 = sq1 + sq2;
    } while (r2 >= 1.0 || r2 == 0.0);
    double f = sqrt(-2.0 * log(r2) / r2);
    r->gauss = f * x1;
    r->has_gauss = 1;
    return f * x2;
}

/* CPython's getrandbits(k) for 1 <= k <= 32. */
static inline uint32_t ecufl_mt_getrandbits(ecufl_mt *r, int k) {
    return ecufl_mt_u32(r) >> (32 - k);
}

/* CPython's _randbelow_with_getrandbits(n), n >= 1: k = n.bit_length(), rejection sampling. */
static inline uint32_t ecufl_mt_randbelow(ecufl_mt *r, uint32_t n) {
    int k = 0;
    for (uint32_t v = n; v; v >>= 1) k++;
    uint32_t x = ecufl_mt_getrandbits(r, k);
    while (x >= n) x = ecufl_mt_getrandbits(r, k);
    return x;
}

/* CPython's random.shuffle(x), in place: Fisher-Yates from the end. Calling it once per epoch on
 * the same array gives network.py's sequence of epoch orders. */
static inline void ecufl_mt_shuffle_i32(ecufl_mt *r, int32_t *x, int n) {
    for (int i = n - 1; i > 0; i--) {
        uint32_t j = ecufl_mt_randbelow(r, (uint32_t)i + 1u);
        int32_t t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

/* The epoch order generator: network.py's list, shuffled in place at the start of each epoch. */
typedef struct ecufl_order {
    ecufl_mt rng;
    int shuffle;
} ecufl_order;

static inline void ecufl_order_init(ecufl_order *o, uint32_t seed, int shuffle, int32_t *order, int n) {
    ecufl_mt_seed_python(&o->rng, seed);
    o->shuffle = shuffle;
    for (int i = 0; i < n; i++) order[i] = i;
}

static inline void ecufl_order_next(ecufl_order *o, int32_t *order, int n) {
    if (o->shuffle) ecufl_mt_shuffle_i32(&o->rng, order, n);
}

/* Initial parameters of the network with layer sizes[0..n_sizes-1], drawn as network.py does:
 * np.random.seed(seed); biases = [randn(y, 1) for y in sizes[1:]];
 * weights = [randn(y, x) for x, y in zip(sizes[:-1], sizes[1:])] (row-major (n_out, n_in)).
 * scaled != 0 divides every weight by sqrt(n_in) in double (network2.py's initialiser).
 * Output in transport order [w1, b1, w2, b2, ...]: out_f64 and/or out_f32 (either may be NULL)
 * hold 2*(n_sizes-1) pointers; float32 values are the doubles rounded once. */
static inline void ecufl_init_params(int n_sizes, const int *sizes, uint32_t seed, int scaled,
                                     double *const *out_f64, float *const *out_f32) {
    ecufl_mt r;
    ecufl_mt_init_genrand(&r, seed);
    int n_layers = n_sizes - 1;
    for (int l = 0; l < n_layers; l++) {
        for (int j = 0; j < sizes[l + 1]; j++) {
            double v = ecufl_mt_gauss(&r);
            if (out_f64) out_f64[2 * l + 1][j] = v;
            if (out_f32) out_f32[2 * l + 1][j] = (float)v;
        }
    }
    for (int l = 0; l < n_layers; l++) {
        double root = sqrt((double)sizes[l]);
        size_t count = (size_t)sizes[l + 1] * (size_t)sizes[l];
        for (size_t k = 0; k < count; k++) {
            double v = ecufl_mt_gauss(&r);
            if (scaled) v = v / root;
            if (out_f64) out_f64[2 * l][k] = v;
            if (out_f32) out_f32[2 * l][k] = (float)v;
        }
    }
}

#endif /* ECUFL_RAND_H */

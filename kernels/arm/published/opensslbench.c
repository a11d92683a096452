/*
 * ecufl-a9-opensslbench PRIMITIVE PATH BYTES: run one of OpenSSL's ARMv4/NEON assembly routines
 * (Debian's armhf libcrypto.a, linked statically) once over BYTES bytes, inside pb_run().
 *
 * The counting plugin counts pb_run() only; the difference of two runs (two lengths) is the
 * routine's steady state per byte, which is what OpenSSL's comments quote ("cycles per byte out
 * of large buffer"). PATH selects the code path the way OpenSSL's own dispatch does: through
 * OPENSSL_armcap_P (0 = integer only, ARMV7_NEON = 1), set in main() before the routine runs.
 * The routines are called directly by their libcrypto names (none of OpenSSL's code is copied).
 *
 *   chacha20  ialu|neon   ChaCha20_ctr32 (OpenSSL uses NEON above 192 bytes when armcap has it)
 *   poly1305  ialu|neon   poly1305_init picks blocks/emit by armcap; the blocks function runs
 *   keccak    ialu|neon   SHA3_absorb / SHA3_absorb_neon, rate 136 bytes (SHA3-256)
 *   ghash     neon        gcm_init_neon + gcm_ghash_neon
 *   ghash     ialu        gcm_ghash_4bit (table content does not change the instruction stream)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern unsigned int OPENSSL_armcap_P;
void ChaCha20_ctr32(unsigned char *out, const unsigned char *inp, size_t len, const unsigned int key[8],
                    const unsigned int counter[4]);
int poly1305_init(void *ctx, const unsigned char key[16], void *func[2]);
size_t SHA3_absorb(uint64_t A[5][5], const unsigned char *inp, size_t len, size_t r);
size_t SHA3_absorb_neon(uint64_t A[5][5], const unsigned char *inp, size_t len, size_t r);
void gcm_init_neon(uint64_t Htable[32], const uint64_t H[2]);
void gcm_ghash_neon(uint64_t Xi[2], const uint64_t Htable[32], const unsigned char *inp, size_t len);
void gcm_ghash_4bit(uint64_t Xi[2], const uint64_t Htable[32], const unsigned char *inp, size_t len);

typedef void (*blocks_fn)(void *ctx, const unsigned char *inp, size_t len, unsigned int padbit);

static unsigned char *in, *out;
static unsigned char ctx[1024] __attribute__((aligned(64)));
static uint64_t table[32] __attribute__((aligned(64)));
static uint64_t state[25] __attribute__((aligned(64)));
static void *funcs[2];
static int primitive;

/* the counted region: one call of the routine over len bytes */
__attribute__((noinline)) void pb_run(size_t len)
{
    static const unsigned int key[8] = {1, 2, 3, 4, 5, 6, 7, 8}, counter[4] = {0, 0, 0, 0};
    switch (primitive) {
    case 0:
        ChaCha20_ctr32(out, in, len, key, counter);
        break;
    case 1:
        ((blocks_fn)funcs[0])(ctx, in, len, 1);
        break;
    case 2:
        SHA3_absorb((uint64_t(*)[5])state, in, len, 136);
        break;
    case 3:
        SHA3_absorb_neon((uint64_t(*)[5])state, in, len, 136);
        break;
    case 4:
        gcm_ghash_neon(state, table, in, len);
        break;
    case 5:
        gcm_ghash_4bit(state, table, in, len);
        break;
    }
}

int main(int argc, char **argv)
{
    char *end;
    size_t len = argc == 4 ? strtoul(argv[3], &end, 10) : 0;
    if (argc != 4 || *end || len == 0) {
        fprintf(stderr, "usage: ecufl-a9-opensslbench chacha20|poly1305|keccak|ghash ialu|neon BYTES\n");
        return 2;
    }
    int neon = strcmp(argv[2], "neon") == 0;
    if (!neon && strcmp(argv[2], "ialu") != 0) {
        fprintf(stderr, "ecufl-a9-opensslbench: path must be ialu or neon, not %s\n", argv[2]);
        return 2;
    }
    OPENSSL_armcap_P = neon ? 1 : 0;   /* the path asked for (ARMV7_NEON = 1), after any probe */
    in = aligned_alloc(64, len + 64);
    out = aligned_alloc(64, len + 64);
    if (!in || !out) {
        return 3;
    }
    for (size_t i = 0; i < len + 64; i++) {
        in[i] = (unsigned char)(i * 131 + 7);
    }
    for (int i = 0; i < 32; i++) {
        table[i] = 0x9e3779b97f4a7c15ULL * (i + 1);
    }
    if (strcmp(argv[1], "chacha20") == 0) {
        primitive = 0;
    } else if (strcmp(argv[1], "poly1305") == 0) {
        static const unsigned char key[16] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3};
        primitive = 1;
        if (!poly1305_init(ctx, key, funcs)) {
            return 4;
        }
    } else if (strcmp(argv[1], "keccak") == 0) {
        primitive = neon ? 3 : 2;
    } else if (strcmp(argv[1], "ghash") == 0) {
        primitive = neon ? 4 : 5;
        if (neon) {
            uint64_t h[2] = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};
            gcm_init_neon(table, h);
        }
    } else {
        fprintf(stderr, "ecufl-a9-opensslbench: unknown primitive %s\n", argv[1]);
        return 2;
    }
    pb_run(len);
    printf("%s %s %zu %02x\n", argv[1], argv[2], len, out[0] ^ ctx[0] ^ (unsigned char)state[0]);
    return 0;
}

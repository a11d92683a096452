/* agent_tls.c: TLS server side with client certificates (OpenSSL), and length-prefixed frames. */
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

const char *agent_tls_error(void) {
    static char buf[256];
    unsigned long e = ERR_get_error();
    if (!e) return "no OpenSSL error queued";
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

SSL_CTX *agent_tls_context(const agent_config *cfg, char *err, size_t errlen) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) { snprintf(err, errlen, "SSL_CTX_new: %s", agent_tls_error()); return NULL; }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert) != 1) {
        snprintf(err, errlen, "cert %s: %s", cfg->cert, agent_tls_error()); goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "key %s: %s", cfg->key, agent_tls_error()); goto fail;
    }
    if (SSL_CTX_load_verify_locations(ctx, cfg->ca, NULL) != 1) {
        snprintf(err, errlen, "ca %s: %s", cfg->ca, agent_tls_error()); goto fail;
    }
    /* Mutual TLS: a client without a certificate signed by the fleet CA is refused in the handshake. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_verify_depth(ctx, 2);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static int read_all(SSL *ssl, uint8_t *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        int r = SSL_read(ssl, buf + got, (int)(n - got > 1 << 30 ? 1 << 30 : n - got));
        /* before the first byte of a frame, a close (with or without close_notify) is the end */
        if (r <= 0) return got == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

int agent_read_frame(SSL *ssl, uint8_t **out, size_t *len_out, size_t max_len) {
    uint8_t hdr[4];
    int r = read_all(ssl, hdr, 4);
    if (r <= 0) return r;
    size_t len = ((size_t)hdr[0] << 24) | ((size_t)hdr[1] << 16) | ((size_t)hdr[2] << 8) | hdr[3];
    if (len > max_len) return -1;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return -1;
    if (len && read_all(ssl, buf, len) != 1) { free(buf); return -1; }
    *out = buf;
    *len_out = len;
    return 1;
}

int agent_write_frame(SSL *ssl, const uint8_t *buf, size_t len) {
    uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    if (SSL_write(ssl, hdr, 4) != 4) return -1;
    size_t put = 0;
    while (put < len) {
        int w = SSL_write(ssl, buf + put, (int)(len - put > 1 << 30 ? 1 << 30 : len - put));
        if (w <= 0) return -1;
        put += (size_t)w;
    }
    return 0;
}

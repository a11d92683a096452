/* ecufl-agent: a small static native agent that trains HDRNN for a remote ClientApp.
 *
 * One file per idea:
 *   agent_main.c   configuration, the accept loop, one line of log per event
 *   agent_tls.c    OpenSSL server context with mandatory client certificates; framed messages
 *   agent_data.c   the board's MNIST training set (IDX files, gzip or plain) held as uint8, or any
 *                  data (train-inputs.idx / train-targets.idx, float32 or uint8) as float32
 *   agent_train.c  TrainRequest -> C kernel (kernels/common/ecufl_kernel.h) -> TrainReply
 * Messages are protobuf (proto/agent.proto, protobuf-c); training data never leaves the board.
 */
#ifndef ECUFL_AGENT_H
#define ECUFL_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

typedef struct {
    char listen_host[128];
    int listen_port;
    char ca[512], cert[512], key[512];
    char data[512];
    char node[64];
    int handshake_timeout; /* seconds from accept to a finished TLS handshake (key handshake_timeout, default 15) */
    int max_connections;   /* connections served at once (key max_connections, default 4); more wait in the backlog */
} agent_config;

typedef struct {
    uint8_t *images; /* n * 784 (MNIST), or NULL (any data) */
    uint8_t *labels; /* n class labels, or NULL (real-valued targets) */
    int n;
    /* any data (issue 17): <data>/train-inputs.idx and train-targets.idx (kernels/common/ecufl_idx.h,
     * ecufl_data_read), trained through ecufl_net_train_f32 */
    float *inputs;   /* n * n_in (uint8 files as p / 255), or NULL (MNIST) */
    float *targets;  /* n * n_out real-valued targets, or NULL (labels) */
    int n_in, n_out; /* n_out: targets' width, 0 with labels */
} agent_dataset;

int agent_config_load(const char *path, agent_config *cfg, char *err, size_t errlen);

SSL_CTX *agent_tls_context(const agent_config *cfg, char *err, size_t errlen);
/* Read one framed message (4-byte big-endian length + bytes) into a malloc'd buffer *out of *len
 * bytes; returns 1 for a message, 0 when the peer closed cleanly, -1 on error or a message above
 * max_len. */
int agent_read_frame(SSL *ssl, uint8_t **out, size_t *len, size_t max_len);
int agent_write_frame(SSL *ssl, const uint8_t *buf, size_t len);
const char *agent_tls_error(void);

int agent_dataset_load(const char *dir, agent_dataset *ds, char *err, size_t errlen);

/* Serve one serialised TrainRequest; returns a malloc'd serialised TrainReply in *reply. */
int agent_handle(const agent_dataset *ds, const agent_config *cfg, const uint8_t *req, size_t req_len,
                 uint8_t **reply, size_t *reply_len);

void agent_log(const char *fmt, ...);

#endif

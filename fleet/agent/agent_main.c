/* agent_main.c: ecufl-agent --config FILE
 *
 * Reads its configuration (key = value lines, written by `ecufl deploy push`), loads the board's
 * training set, then serves TLS connections one at a time: a client must present a certificate
 * signed by the fleet CA (else the handshake fails and the agent logs one line); each framed
 * TrainRequest gets one framed TrainReply. Single-threaded on purpose: an ECU trains one round at
 * a time, and memory stays flat.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "agent.h"

#define MAX_REQUEST (64u << 20) /* a 784-128-10 request is ~0.5 MB: 64 MB is far beyond any valid one */

void agent_log(const char *fmt, ...) {
    char ts[32];
    time_t t = time(NULL);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    fprintf(stderr, "%s ecufl-agent: ", ts);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

static void trim(char *s) {
    char *e = s + strlen(s);
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
}

int agent_config_load(const char *path, agent_config *cfg, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
    memset(cfg, 0, sizeof *cfg);
    char line[1024], listen[256] = "";
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        trim(line);
        char *p = line;
        while (*p == ' ') p++;
        if (!*p || *p == '#') continue;
        char *eq = strchr(p, '=');
        if (!eq) { snprintf(err, errlen, "%s:%d: expected key = value", path, lineno); fclose(f); return -1; }
        *eq = 0;
        char *key = p, *val = eq + 1;
        trim(key);
        while (*val == ' ') val++;
        struct { const char *name; char *dst; size_t len; } keys[] = {
            {"listen", listen, sizeof listen}, {"ca", cfg->ca, sizeof cfg->ca}, {"cert", cfg->cert, sizeof cfg->cert},
            {"key", cfg->key, sizeof cfg->key}, {"data", cfg->data, sizeof cfg->data}, {"node", cfg->node, sizeof cfg->node}};
        size_t k;
        for (k = 0; k < sizeof keys / sizeof keys[0]; k++)
            if (!strcmp(key, keys[k].name)) {
                snprintf(keys[k].dst, keys[k].len, "%s", val);
                break;
            }
        if (k == sizeof keys / sizeof keys[0]) {
            snprintf(err, errlen, "%s:%d: unknown key %s", path, lineno, key); fclose(f); return -1;
        }
    }
    fclose(f);
    char *colon = strrchr(listen, ':');
    if (!colon) { snprintf(err, errlen, "%s: listen must be host:port", path); return -1; }
    *colon = 0;
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "%s", listen);
    cfg->listen_port = atoi(colon + 1);
    if (cfg->listen_port < 1 || cfg->listen_port > 65535) { snprintf(err, errlen, "%s: bad port", path); return -1; }
    const char *need[] = {cfg->ca, cfg->cert, cfg->key, cfg->data};
    const char *names[] = {"ca", "cert", "key", "data"};
    for (int i = 0; i < 4; i++)
        if (!need[i][0]) { snprintf(err, errlen, "%s: missing key %s", path, names[i]); return -1; }
    return 0;
}

static int listen_on(const agent_config *cfg, char *err, size_t errlen) {
    struct addrinfo hints = {0}, *res;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->listen_port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV; /* no name service in a static binary */
    int e = getaddrinfo(cfg->listen_host, port, &hints, &res);
    if (e) { snprintf(err, errlen, "listen %s: %s", cfg->listen_host, gai_strerror(e)); return -1; }
    int fd = socket(res->ai_family, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 8)) {
        snprintf(err, errlen, "listen %s:%d: %s", cfg->listen_host, cfg->listen_port, strerror(errno));
        freeaddrinfo(res);
        if (fd >= 0) close(fd);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void serve(SSL_CTX *ctx, int fd, const char *peer, const agent_dataset *ds, const agent_config *cfg) {
    struct timeval tv = {600, 0}; /* a silent client is dropped after 10 minutes */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) {
        agent_log("refused %s: TLS handshake failed (%s)", peer, agent_tls_error());
        SSL_free(ssl);
        return;
    }
    X509 *cert = SSL_get_peer_certificate(ssl);
    char cn[256] = "?";
    if (cert) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
        X509_free(cert);
    }
    agent_log("client %s (%s) connected", peer, cn);
    for (;;) {
        uint8_t *req = NULL, *rep = NULL;
        size_t req_len = 0, rep_len = 0;
        int got = agent_read_frame(ssl, &req, &req_len, MAX_REQUEST);
        if (got <= 0) {
            if (got < 0) agent_log("client %s: bad frame or lost connection", peer);
            else agent_log("client %s disconnected", peer);
            break;
        }
        int rc = agent_handle(ds, cfg, req, req_len, &rep, &rep_len);
        free(req);
        if (rc || agent_write_frame(ssl, rep, rep_len)) {
            free(rep);
            agent_log("client %s: could not send the reply", peer);
            break;
        }
        free(rep);
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
}

int main(int argc, char **argv) {
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
        else if (!strcmp(argv[i], "--version")) { puts("ecufl-agent 0.1.0"); return 0; }
        else { fprintf(stderr, "ecufl-agent: error: unknown argument %s (usage: ecufl-agent --config FILE)\n", argv[i]); return 2; }
    }
    if (!config) { fprintf(stderr, "ecufl-agent: error: --config FILE is required\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    char err[512];
    agent_config cfg;
    agent_dataset ds;
    if (agent_config_load(config, &cfg, err, sizeof err)) { fprintf(stderr, "ecufl-agent: error: %s\n", err); return 2; }
    if (agent_dataset_load(cfg.data, &ds, err, sizeof err)) { fprintf(stderr, "ecufl-agent: error: %s\n", err); return 1; }
    SSL_CTX *ctx = agent_tls_context(&cfg, err, sizeof err);
    if (!ctx) { fprintf(stderr, "ecufl-agent: error: %s\n", err); return 1; }
    int lfd = listen_on(&cfg, err, sizeof err);
    if (lfd < 0) { fprintf(stderr, "ecufl-agent: error: %s\n", err); return 1; }
    agent_log("node %s: %d training samples from %s; serving TLS (client certificates required) on %s:%d",
              cfg.node[0] ? cfg.node : "?", ds.n, cfg.data, cfg.listen_host, cfg.listen_port);
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        int fd = accept(lfd, (struct sockaddr *)&sa, &sl);
        if (fd < 0) {
            if (errno == EINTR) continue;
            agent_log("accept: %s", strerror(errno));
            continue;
        }
        char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";
        getnameinfo((struct sockaddr *)&sa, sl, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV);
        char peer[NI_MAXHOST + NI_MAXSERV + 2];
        snprintf(peer, sizeof peer, "%s:%s", host, serv);
        serve(ctx, fd, peer, &ds, &cfg);
        close(fd);
    }
}

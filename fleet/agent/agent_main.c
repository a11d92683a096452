/* agent_main.c: ecufl-agent --config FILE
 *
 * Reads its configuration (key = value lines, written by `ecufl deploy push`), loads the board's
 * training set, then serves TLS connections: a client must present a certificate signed by the
 * fleet CA (else the handshake fails and the agent logs one line); each framed TrainRequest gets
 * one framed TrainReply.
 *
 * Each connection is served by a forked child (the training set is shared copy-on-write), at most
 * max_connections at once; further connections wait in the listen backlog. A child that has not
 * finished the TLS handshake handshake_timeout seconds after accept is ended (SIGALRM), so neither
 * an idle TCP connection nor a slow-loris handshake holds the agent. Training itself is serialised
 * by a lock (an ECU trains one round at a time, memory stays flat), and a request that crashed a
 * child would only end that connection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
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
        if (!strcmp(key, "handshake_timeout") || !strcmp(key, "max_connections")) {
            char *end;
            long v = strtol(val, &end, 10);
            int hs = !strcmp(key, "handshake_timeout");
            if (end == val || *end || v < 1 || v > (hs ? 600 : 64)) {
                snprintf(err, errlen, "%s:%d: %s must be a whole number in 1..%d", path, lineno, key, hs ? 600 : 64);
                fclose(f);
                return -1;
            }
            *(hs ? &cfg->handshake_timeout : &cfg->max_connections) = (int)v;
            continue;
        }
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
    if (!cfg->handshake_timeout) cfg->handshake_timeout = 15;
    if (!cfg->max_connections) cfg->max_connections = 4;
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
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 64)) {
        snprintf(err, errlen, "listen %s:%d: %s", cfg->listen_host, cfg->listen_port, strerror(errno));
        freeaddrinfo(res);
        if (fd >= 0) close(fd);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* The handshake deadline: SIGALRM in the child serving the connection logs one line and ends it. */
static char deadline_line[512];
static size_t deadline_len;
static void handshake_expired(int sig) {
    (void)sig;
    if (write(2, deadline_line, deadline_len) < 0) _exit(1);
    _exit(1);
}

/* Training is serialised across the children by a POSIX record lock on an unlinked file: held per
 * process, released by the kernel if the holder dies. Without the file (no writable TMPDIR) the
 * children train concurrently. */
static int train_lock_fd = -1;
static void train_lock(int on) {
    if (train_lock_fd < 0) return;
    struct flock fl = {0};
    fl.l_type = on ? F_WRLCK : F_UNLCK;
    fl.l_whence = SEEK_SET;
    while (fcntl(train_lock_fd, on ? F_SETLKW : F_SETLK, &fl) < 0 && errno == EINTR) {}
}

static void serve(SSL_CTX *ctx, int fd, const char *peer, const agent_dataset *ds, const agent_config *cfg) {
    char ts[32];
    time_t t = time(NULL);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    int n = snprintf(deadline_line, sizeof deadline_line, "%s ecufl-agent: refused %s: no TLS handshake within %d s\n",
                     ts, peer, cfg->handshake_timeout);
    deadline_len = n < 0 ? 0 : (size_t)n >= sizeof deadline_line ? sizeof deadline_line - 1 : (size_t)n;
    signal(SIGALRM, handshake_expired);
    alarm((unsigned)cfg->handshake_timeout);
    struct timeval tv = {cfg->handshake_timeout, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) {
        alarm(0);
        agent_log("refused %s: TLS handshake failed (%s)", peer, agent_tls_error());
        SSL_free(ssl);
        return;
    }
    alarm(0);
    tv.tv_sec = 600; /* an authenticated but silent client is dropped after 10 minutes */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
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
        train_lock(1);
        int rc = agent_handle(ds, cfg, req, req_len, &rep, &rep_len);
        train_lock(0);
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
    FILE *lockf = tmpfile();
    if (lockf) train_lock_fd = fileno(lockf);
    agent_log("node %s: %d training samples from %s; serving TLS (client certificates required) on %s:%d",
              cfg.node[0] ? cfg.node : "?", ds.n, cfg.data, cfg.listen_host, cfg.listen_port);
    int active = 0;
    for (;;) {
        while (active > 0 && waitpid(-1, NULL, active >= cfg.max_connections ? 0 : WNOHANG) > 0) active--;
        if (active >= cfg.max_connections) continue; /* waitpid was interrupted: try again */
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
        pid_t child = fork();
        if (child == 0) {
            close(lfd);
            serve(ctx, fd, peer, &ds, &cfg);
            close(fd);
            _exit(0);
        }
        if (child < 0) {
            agent_log("refused %s: cannot fork (%s)", peer, strerror(errno));
        } else {
            active++;
        }
        close(fd);
    }
}

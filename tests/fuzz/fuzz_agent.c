/* libFuzzer harness: the board agent's message path (fleet/agent/agent_train.c agent_handle) on
 * arbitrary TrainRequest bytes, against a board of 64 synthetic samples. Every input must give a
 * TrainReply that parses (an error reply or trained weights). Under ASan agent_train.c skips its
 * /proc/self/maps walk (ASan's shadow mappings make it take minutes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "agent.pb-c.h"

#define BOARD 64

void agent_log(const char *fmt, ...) { (void)fmt; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t images[BOARD * 784], labels[BOARD];
    static int ready;
    if (!ready) {
        uint32_t x = 12345;
        for (size_t i = 0; i < sizeof images; i++) { x = x * 1103515245u + 12345u; images[i] = (uint8_t)(x >> 24); }
        for (int i = 0; i < BOARD; i++) labels[i] = (uint8_t)(i % 10);
        ready = 1;
    }
    agent_dataset ds = {images, labels, BOARD};
    agent_config cfg;
    memset(&cfg, 0, sizeof cfg);
    strcpy(cfg.node, "fuzz");
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    if (agent_handle(&ds, &cfg, data, size, &reply, &reply_len) == 0) {
        Ecufl__TrainReply *rep = ecufl__train_reply__unpack(NULL, reply_len, reply);
        if (!rep) abort();
        if (!rep->error[0] && rep->n_params == 0) abort(); /* neither weights nor an error */
        ecufl__train_reply__free_unpacked(rep, NULL);
    }
    free(reply);
    return 0;
}

/*
 * insncount: a qemu TCG plugin that counts executed 32-bit ARM guest instructions per class
 * (integer ALU, multiply, load/store, branch, VFP, NEON by operation and width) inside a
 * counting region only, so start-up code and the environment block never count.
 *
 * Arguments (qemu-arm -plugin libinsncount.so,arg=value,...):
 *   on=0xADDR    an instruction address that opens the region (typically a function's entry);
 *                repeatable
 *   off=0xADDR   an instruction address that closes it (typically the return site after each
 *                `bl` to that function; the off instruction itself is not counted); repeatable
 *   out=PATH     where to write the JSON result at exit (default: stderr via qemu's log)
 *   l1d=SIZE:WAYS:LINE, l1i=SIZE:WAYS:LINE, l2=SIZE:WAYS:LINE
 *                switch the cache model on (any one of them does; the others keep the A9
 *                defaults 32768:4:32 for L1 and 1048576:16:32 for the PL310 L2): every guest data
 *                access (memory callbacks) and every executed block's instruction bytes feed
 *                set-associative LRU caches, write-back and write-allocate, the L2 shared by both
 *                L1s; only accesses while the region is open count. The result gains "cache".
 * The region is open or closed, it does not nest: an on address reached again while open (a
 * loop whose head is the function's entry) changes nothing, and so does an off address reached
 * while closed (a return site that is also a branch target). A recursive function would close
 * at its innermost return: count a non-recursive caller instead.
 * Everything executed while the region is open counts, callees included (libm's expf too).
 *
 * How it stays exact and cheap: every translated block gets one inline "add n" per key
 * (class and mnemonic) for the instructions it holds, executed at block entry; the few gate
 * instructions get a real callback that snapshots the counters, minus the part of the block
 * that lies before the gate (which the block-entry add had already counted). Conditional
 * instructions whose condition fails still count: on the A9 they still take an issue slot.
 * The guest is assumed single-threaded (the trainers are).
 *
 * Classes are decided once per translated instruction from qemu's (capstone) disassembly.
 */
#include <glib.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* ---- counters: one slot per key ("class:int.alu", "insn:vmla.f32") ------------------------ */
#define MAX_KEYS 4096
static uint64_t counts[MAX_KEYS];   /* executed so far in the whole run */
static uint64_t opened[MAX_KEYS];   /* counts[] at the moment the region opened */
static uint64_t region[MAX_KEYS];   /* sum over closed regions */
static char *key_names[MAX_KEYS];
static int n_keys;
static GHashTable *key_index;       /* name -> slot + 1 */
static bool keys_overflowed;

static GHashTable *on_addrs, *off_addrs; /* guest vaddr -> 1 */
static bool open_now;
static uint64_t regions_closed;
static char *out_path;

static int key_slot(const char *name)
{
    gpointer v = g_hash_table_lookup(key_index, name);
    if (v) {
        return GPOINTER_TO_INT(v) - 1;
    }
    if (n_keys == MAX_KEYS) {
        keys_overflowed = true;
        return key_slot("insn:(too many mnemonics)");
    }
    key_names[n_keys] = g_strdup(name);
    g_hash_table_insert(key_index, key_names[n_keys], GINT_TO_POINTER(n_keys + 1));
    return n_keys++;
}

/* ---- classification from the disassembly text --------------------------------------------- */
static const char *const CONDS[] = {"eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs",
                                    "vc", "hi", "ls", "ge", "lt", "gt", "le", "al", NULL};

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++) {
        if (strcmp(s, *list) == 0) {
            return true;
        }
    }
    return false;
}

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* "bne" -> "b", "popeq" -> "pop" when the stripped form is in list */
static bool base_in(const char *base, const char *const *list)
{
    if (in_list(base, list)) {
        return true;
    }
    size_t n = strlen(base);
    if (n > 2 && in_list(base + n - 2, CONDS)) {
        char tmp[32];
        if (n - 2 >= sizeof tmp) {
            return false;
        }
        memcpy(tmp, base, n - 2);
        tmp[n - 2] = 0;
        return in_list(tmp, list);
    }
    return false;
}

/* operand register kinds: q0-q15, d0-d31, s0-s31, core registers */
typedef struct {
    bool q_src, q_any, src_any, d, s, core;
    int list_regs; /* registers inside {...}: D registers for vld/vst */
} Operands;

static Operands scan_operands(const char *ops)
{
    Operands o = {0};
    int index = 0;         /* operand position (0 = destination) */
    bool in_braces = false;
    const char *p = ops;
    while (*p) {
        if (*p == ',') {
            if (!in_braces) {
                index++;
            }
            p++;
            continue;
        }
        if (*p == '{') {
            in_braces = true;
        } else if (*p == '}') {
            in_braces = false;
        }
        bool word_start = p == ops || strchr(" ,{[!-", p[-1]) != NULL;
        if (word_start && (p[0] == 'q' || p[0] == 'd' || p[0] == 's' || p[0] == 'r') &&
            p[1] >= '0' && p[1] <= '9') {
            char kind = p[0];
            if (index > 0) {
                o.src_any = true;
            }
            if (kind == 'q') {
                o.q_any = true;
                if (index > 0) {
                    o.q_src = true;
                }
            } else if (kind == 'd') {
                o.d = true;
            } else if (kind == 's') {
                o.s = true;
            } else {
                o.core = true;
            }
            if (in_braces && kind == 'd') {
                /* {d16-d19} counts 4, {d0, d1} counts 2 */
                int first = atoi(p + 1);
                const char *q = p + 1;
                while (*q >= '0' && *q <= '9') {
                    q++;
                }
                while (*q == '[' || *q == ']') {
                    q++;
                }
                if (q[0] == '-' && q[1] == 'd') {
                    o.list_regs += atoi(q + 2) - first + 1;
                    p = q + 2;
                    continue;
                }
                o.list_regs++;
            }
        } else if (word_start && (starts(p, "ip") || starts(p, "lr") || starts(p, "sp") ||
                                  starts(p, "fp") || starts(p, "sl") || starts(p, "sb") ||
                                  starts(p, "pc") || starts(p, "apsr"))) {
            o.core = true;
        }
        p++;
    }
    return o;
}

static const char *const BRANCHES[] = {"b", "bl", "blx", "bx", "cbz", "cbnz", "tbb", "tbh", NULL};
static const char *const SYSTEM[] = {"svc", "mrc", "mcr", "mrrc", "mcrr", "mrs", "msr", "dmb",
                                     "dsb", "isb", "clrex", "bkpt", "udf", "wfe", "wfi", "sev",
                                     "yield", "cps", "setend", NULL};
static const char *const NEON_PERM[] = {"vmov", "vmvn", "vdup", "vext", "vzip", "vuzp", "vtrn",
                                        "vrev16", "vrev32", "vrev64", "vswp", "vtbl", "vtbx",
                                        "vmovl", "vmovn", "vqmovn", "vqmovun", NULL};
static const char *const NEON_IMUL[] = {"vmul", "vmla", "vmls", "vmull", "vmlal", "vmlsl",
                                        "vqdmulh", "vqrdmulh", "vqdmull", "vqdmlal", "vqdmlsl",
                                        NULL};
static const char *const F_ADD[] = {"vadd", "vsub", "vabd", "vabs", "vneg", "vmax", "vmin",
                                    "vpadd", "vpmax", "vpmin", "vceq", "vcge", "vcgt", "vcle",
                                    "vclt", "vacge", "vacgt", "vacle", "vaclt", "vcmp", "vcmpe",
                                    NULL};
static const char *const F_RECIP[] = {"vrecpe", "vrecps", "vrsqrte", "vrsqrts", NULL};

/*
 * Returns the class name; writes the base mnemonic (no .w/.n, no data type) to base.
 * The names are the keys of kernels/arm/costmodel.py's table.
 */
static const char *classify(const char *disas, char *base, size_t base_len, char *mnem,
                            size_t mnem_len)
{
    while (*disas == ' ' || *disas == '\t') {
        disas++;
    }
    size_t n = strcspn(disas, " \t");
    snprintf(mnem, mnem_len, "%.*s", (int)n, disas);
    const char *ops = disas + n;
    /* base: up to the first '.', e.g. "vmla.f32" -> "vmla", "ldr.w" -> "ldr" */
    size_t b = strcspn(mnem, ".");
    snprintf(base, base_len, "%.*s", (int)b, mnem);
    const char *dtype = mnem[b] == '.' ? mnem + b + 1 : "";
    if (strcmp(dtype, "w") == 0 || strcmp(dtype, "n") == 0) {
        dtype = "";
    }

    static char buf[64];
    if (base[0] != 'v') {
        if (base_in(base, BRANCHES)) {
            return "int.branch";
        }
        if (starts(base, "it") && strlen(base) <= 5 && strspn(base + 1, "te") == strlen(base) - 1) {
            return "int.it";
        }
        if (starts(base, "ldm") || starts(base, "pop")) {
            return "int.ldm";
        }
        if (starts(base, "stm") || starts(base, "push")) {
            return "int.stm";
        }
        if (starts(base, "ldr") || starts(base, "ldrex") || starts(base, "pld") || starts(base, "pli")) {
            return "int.load";
        }
        if (starts(base, "str")) {
            return "int.store";
        }
        if (starts(base, "sdiv") || starts(base, "udiv")) {
            return "int.div";
        }
        if (starts(base, "mul") || starts(base, "mla") || starts(base, "mls") ||
            starts(base, "umul") || starts(base, "smul") || starts(base, "umla") ||
            starts(base, "smla") || starts(base, "smml") || starts(base, "smmu") ||
            starts(base, "smua") || starts(base, "smus") || starts(base, "smls") ||
            starts(base, "umaal")) {
            return "int.mul";
        }
        if (base_in(base, SYSTEM)) {
            return "int.sys";
        }
        return "int.alu";
    }

    Operands o = scan_operands(ops);
    /* loads and stores of the extension registers */
    if (starts(base, "vldr") || starts(base, "vldm") || starts(base, "vpop")) {
        return "vfp.load";
    }
    if (starts(base, "vstr") || starts(base, "vstm") || starts(base, "vpush")) {
        return "vfp.store";
    }
    if (starts(base, "vld") || starts(base, "vst")) {
        int regs = o.list_regs < 1 ? 1 : o.list_regs > 4 ? 4 : o.list_regs;
        snprintf(buf, sizeof buf, "neon.%s.%d", base[1] == 'l' ? "load" : "store", regs);
        return buf;
    }
    if (starts(base, "vmrs") || starts(base, "vmsr")) {
        return "vfp.move";
    }
    bool f64 = strstr(dtype, "f64") != NULL;
    bool is_vmov = base_in(base, (const char *const[]){"vmov", NULL});
    if (is_vmov && (o.core || o.s || (f64 && !o.q_any))) {
        return "vfp.move"; /* core <-> extension register transfers, VFP register moves */
    }
    if (o.s || (f64 && !o.q_any)) {
        /* scalar VFP on the VFPv3 pipeline */
        const char *op = "vfp.other";
        if (starts(base, "vcvt")) {
            return "vfp.cvt";
        } else if (base_in(base, F_ADD)) {
            op = "vfp.add";
        } else if (base_in(base, (const char *const[]){"vmul", "vnmul", NULL})) {
            op = "vfp.mul";
        } else if (base_in(base, (const char *const[]){"vmla", "vmls", "vnmla", "vnmls", NULL})) {
            op = "vfp.mla";
        } else if (base_in(base, (const char *const[]){"vfma", "vfms", "vfnma", "vfnms", NULL})) {
            op = "vfp.fma";
        } else if (base_in(base, (const char *const[]){"vdiv", NULL})) {
            op = "vfp.div";
        } else if (base_in(base, (const char *const[]){"vsqrt", NULL})) {
            op = "vfp.sqrt";
        }
        snprintf(buf, sizeof buf, "%s%s", op, f64 ? ".f64" : "");
        return buf;
    }
    /* Advanced SIMD: width of the source operands (vmull.s16 q0, d0, d1 reads D registers) */
    const char *w = o.q_src || (o.q_any && !o.src_any) ? "q" : "d";
    const char *op;
    bool fp = dtype[0] == 'f';
    if (starts(base, "vcvt")) {
        op = "neon.cvt";
    } else if (fp && base_in(base, F_ADD)) {
        op = "neon.fadd";
    } else if (fp && base_in(base, (const char *const[]){"vmul", NULL})) {
        op = "neon.fmul";
    } else if (fp && base_in(base, (const char *const[]){"vmla", "vmls", NULL})) {
        op = "neon.fmla";
    } else if (base_in(base, (const char *const[]){"vfma", "vfms", NULL})) {
        op = "neon.fma";
    } else if (base_in(base, F_RECIP)) {
        op = "neon.frecip";
    } else if (base_in(base, NEON_PERM)) {
        op = "neon.perm";
    } else if (base_in(base, NEON_IMUL)) {
        /* 32-bit lanes take the multiplier twice as long (GCC-A9: ddd_32 and the 64<-32 long
         * forms are dp_2, a quadword 32-bit multiply-accumulate dp_4) */
        bool lane32 = strstr(dtype, "32") != NULL;
        bool accumulate = base_in(base, (const char *const[]){"vmla", "vmls", NULL});
        if (lane32 && !strcmp(w, "d")) {
            op = "neon.imul32";
        } else if (lane32 && accumulate) {
            op = "neon.imla32";
        } else {
            op = "neon.imul";
        }
    } else if (fp) {
        op = "neon.fother";
    } else {
        op = "neon.int";
    }
    snprintf(buf, sizeof buf, "%s.%s", op, w);
    return buf;
}

/* ---- cache model (optional): set-associative, LRU, write-back, write-allocate -------------- */
typedef struct {
    unsigned sets, ways, line_shift;
    uint64_t *tag;    /* sets x ways, most recently used first; line number + 1, 0 = empty */
    uint8_t *dirty;
    uint64_t accesses, misses, writebacks;
} Cache;

static bool cache_on;
static Cache l1d, l1i, l2;
static uint64_t dram_reads, dram_writes; /* lines: L2 misses, dirty L2 evictions */
/* DRAM reads that continue one of the last 4 miss streams (line +-1): what a prefetcher or the
 * DRAM's open row serves at streaming bandwidth; the others pay the full latency */
static uint64_t dram_seq_reads, streams[4];
static unsigned stream_next;

static void dram_read(uint64_t line)
{
    dram_reads++;
    for (unsigned i = 0; i < 4; i++) {
        if (streams[i] && (line + 1 == streams[i] || line == streams[i] + 1)) {
            dram_seq_reads++;
            streams[i] = line;
            return;
        }
    }
    streams[stream_next++ % 4] = line;
}

static bool cache_parse(Cache *c, const char *spec)
{
    unsigned long size, ways, line;
    if (sscanf(spec, "%lu:%lu:%lu", &size, &ways, &line) != 3 || !size || !ways || !line ||
        (line & (line - 1)) || size % (ways * line) || ways > 64) {
        return false;
    }
    c->sets = size / (ways * line);
    c->ways = ways;
    c->line_shift = __builtin_ctzl(line);
    return true;
}

static void cache_alloc(Cache *c)
{
    c->tag = g_new0(uint64_t, (gsize)c->sets * c->ways);
    c->dirty = g_new0(uint8_t, (gsize)c->sets * c->ways);
}

/* Look up one line; on a miss it is filled (victim: least recently used). Returns whether it
 * hit; *evicted_dirty gets the line number + 1 of a dirty victim, else 0. */
static bool cache_touch(Cache *c, uint64_t line, bool write, uint64_t *evicted_dirty)
{
    uint64_t *t = c->tag + (line % c->sets) * c->ways;
    uint8_t *d = c->dirty + (line % c->sets) * c->ways;
    c->accesses++;
    *evicted_dirty = 0;
    unsigned i;
    for (i = 0; i < c->ways && t[i] != line + 1; i++) {
    }
    bool hit = i < c->ways;
    uint8_t was_dirty;
    if (!hit) {
        c->misses++;
        i = c->ways - 1;
        if (t[i] && d[i]) {
            *evicted_dirty = t[i];
            c->writebacks++;
        }
        was_dirty = 0;
    } else {
        was_dirty = d[i];
    }
    memmove(t + 1, t, i * sizeof *t); /* move to the front */
    memmove(d + 1, d, i);
    t[0] = line + 1;
    d[0] = was_dirty | write;
    return hit;
}

/* an L1 miss (read: a line fill) or an L1 dirty eviction (write) reaches the L2 */
static void l2_access(uint64_t addr, bool write)
{
    uint64_t victim;
    if (!cache_touch(&l2, addr >> l2.line_shift, write, &victim) && !write) {
        dram_read(addr >> l2.line_shift); /* the fill comes from DRAM (a write-back miss allocates without reading) */
    }
    if (victim) {
        dram_writes++;
    }
}

static void l1_access(Cache *c, uint64_t addr, bool write)
{
    uint64_t victim;
    if (!cache_touch(c, addr >> c->line_shift, write, &victim)) {
        l2_access(addr, false);
    }
    if (victim) {
        l2_access((victim - 1) << c->line_shift, true);
    }
}

static void mem_exec(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
    (void)vcpu;
    (void)udata;
    if (!open_now) {
        return;
    }
    unsigned size = 1u << qemu_plugin_mem_size_shift(info);
    bool store = qemu_plugin_mem_is_store(info);
    uint64_t first = vaddr >> l1d.line_shift, last = (vaddr + size - 1) >> l1d.line_shift;
    for (uint64_t line = first; line <= last; line++) {
        l1_access(&l1d, line << l1d.line_shift, store);
    }
}

typedef struct {
    uint64_t vaddr, bytes;
} Fetch;

static void fetch_exec(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    if (!open_now) {
        return;
    }
    const Fetch *f = udata;
    uint64_t first = f->vaddr >> l1i.line_shift, last = (f->vaddr + f->bytes - 1) >> l1i.line_shift;
    for (uint64_t line = first; line <= last; line++) {
        l1_access(&l1i, line << l1i.line_shift, false);
    }
}

/* ---- gates -------------------------------------------------------------------------------- */
typedef struct {
    bool on, off;
    int n;          /* entries in slot[]/cnt[] */
    int *slot;      /* keys counted by the block-entry add for this instruction and later ones */
    uint64_t *cnt;  /* ... and how many of each */
} Gate;

static void gate_exec(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    const Gate *g = udata;
    static uint64_t adjust[MAX_KEYS];
    for (int i = 0; i < g->n; i++) {
        adjust[g->slot[i]] = g->cnt[i];
    }
    if (g->off && open_now) {
        open_now = false;
        for (int k = 0; k < n_keys; k++) {
            region[k] += counts[k] - adjust[k] - opened[k];
        }
        regions_closed++;
    }
    if (g->on && !open_now) {
        open_now = true;
        for (int k = 0; k < n_keys; k++) {
            opened[k] = counts[k] - adjust[k];
        }
    }
    for (int i = 0; i < g->n; i++) {
        adjust[g->slot[i]] = 0;
    }
}

/* ---- translation -------------------------------------------------------------------------- */
static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    int *slots = g_new(int, 2 * n);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        char *text = qemu_plugin_insn_disas(insn);
        char base[32], mnem[48], key[96];
        const char *cls = classify(text ? text : "?", base, sizeof base, mnem, sizeof mnem);
        snprintf(key, sizeof key, "class:%s", cls);
        slots[2 * i] = key_slot(key);
        snprintf(key, sizeof key, "insn:%s", mnem);
        slots[2 * i + 1] = key_slot(key);
        g_free(text);
    }
    /* one inline add per distinct key for the whole block */
    GHashTable *per_key = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (size_t i = 0; i < 2 * n; i++) {
        gpointer k = GINT_TO_POINTER(slots[i] + 1);
        g_hash_table_insert(per_key, k,
                            GSIZE_TO_POINTER(GPOINTER_TO_SIZE(g_hash_table_lookup(per_key, k)) + 1));
    }
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, per_key);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                 &counts[GPOINTER_TO_INT(k) - 1],
                                                 GPOINTER_TO_SIZE(v));
    }
    g_hash_table_destroy(per_key);
    if (cache_on && n > 0) {
        struct qemu_plugin_insn *head = qemu_plugin_tb_get_insn(tb, 0);
        struct qemu_plugin_insn *tail = qemu_plugin_tb_get_insn(tb, n - 1);
        Fetch *f = g_new(Fetch, 1); /* lives as long as the translation may run */
        f->vaddr = qemu_plugin_insn_vaddr(head);
        f->bytes = qemu_plugin_insn_vaddr(tail) + qemu_plugin_insn_size(tail) - f->vaddr;
        qemu_plugin_register_vcpu_tb_exec_cb(tb, fetch_exec, QEMU_PLUGIN_CB_NO_REGS, f);
        for (size_t i = 0; i < n; i++) {
            qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, i), mem_exec,
                                             QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, NULL);
        }
    }
    /* gates: the suffix of the block from the gate on was already added at block entry */
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        gpointer addr = GSIZE_TO_POINTER((gsize)qemu_plugin_insn_vaddr(insn));
        bool on = g_hash_table_contains(on_addrs, addr);
        bool off = g_hash_table_contains(off_addrs, addr);
        if (!on && !off) {
            continue;
        }
        Gate *g = g_new0(Gate, 1); /* lives as long as the translation may run */
        g->on = on;
        g->off = off;
        g->slot = g_new0(int, 2 * (n - i));
        g->cnt = g_new0(uint64_t, 2 * (n - i));
        for (size_t j = 2 * i; j < 2 * n; j++) {
            int found = -1;
            for (int e = 0; e < g->n; e++) {
                if (g->slot[e] == slots[j]) {
                    found = e;
                }
            }
            if (found < 0) {
                found = g->n++;
                g->slot[found] = slots[j];
            }
            g->cnt[found]++;
        }
        qemu_plugin_register_vcpu_insn_exec_cb(insn, gate_exec, QEMU_PLUGIN_CB_NO_REGS, g);
    }
    g_free(slots);
}

/* ---- output ------------------------------------------------------------------------------- */
static void write_section(GString *s, const char *name, const uint64_t *values, const char *prefix)
{
    g_string_append_printf(s, "  \"%s\": {", name);
    bool first = true;
    size_t plen = strlen(prefix);
    for (int k = 0; k < n_keys; k++) {
        if (values[k] == 0 || strncmp(key_names[k], prefix, plen) != 0) {
            continue;
        }
        GString *esc = g_string_new(NULL);
        for (const char *c = key_names[k] + plen; *c; c++) {
            if (*c == '"' || *c == '\\') {
                g_string_append_c(esc, '\\');
            }
            g_string_append_c(esc, *c);
        }
        g_string_append_printf(s, "%s\n    \"%s\": %" PRIu64, first ? "" : ",", esc->str, values[k]);
        g_string_free(esc, TRUE);
        first = false;
    }
    g_string_append(s, first ? "}" : "\n  }");
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    (void)id;
    (void)p;
    bool open_at_exit = open_now;
    if (open_at_exit) { /* the program exited inside the region (exit() from a callee) */
        for (int k = 0; k < n_keys; k++) {
            region[k] += counts[k] - opened[k];
        }
    }
    GString *s = g_string_new("{\n");
    g_string_append_printf(s, "  \"tool\": \"ecufl-insncount\",\n  \"regions\": %" PRIu64
                              ",\n  \"open_at_exit\": %s,\n  \"keys_overflowed\": %s,\n",
                           regions_closed, open_at_exit ? "true" : "false",
                           keys_overflowed ? "true" : "false");
    write_section(s, "region_classes", region, "class:");
    g_string_append(s, ",\n");
    write_section(s, "region_mnemonics", region, "insn:");
    g_string_append(s, ",\n");
    write_section(s, "program_classes", counts, "class:");
    if (cache_on) {
        const Cache *cs[] = {&l1d, &l1i, &l2};
        const char *names[] = {"l1d", "l1i", "l2"};
        g_string_append(s, ",\n  \"cache\": {");
        for (int i = 0; i < 3; i++) {
            g_string_append_printf(s, "\n    \"%s\": {\"bytes\": %u, \"ways\": %u, \"line\": %u, "
                                      "\"accesses\": %" PRIu64 ", \"misses\": %" PRIu64
                                      ", \"writebacks\": %" PRIu64 "},",
                                   names[i], cs[i]->sets * cs[i]->ways << cs[i]->line_shift, cs[i]->ways,
                                   1u << cs[i]->line_shift, cs[i]->accesses, cs[i]->misses, cs[i]->writebacks);
        }
        g_string_append_printf(s, "\n    \"dram_line_reads\": %" PRIu64 ", \"dram_sequential_line_reads\": %" PRIu64
                                  ", \"dram_line_writes\": %" PRIu64 "\n  }",
                               dram_reads, dram_seq_reads, dram_writes);
    }
    g_string_append(s, "\n}\n");
    if (out_path) {
        FILE *f = fopen(out_path, "w");
        if (f) {
            fputs(s->str, f);
            fclose(f);
        } else {
            fprintf(stderr, "insncount: cannot write %s\n", out_path);
        }
    } else {
        qemu_plugin_outs(s->str);
    }
    g_string_free(s, TRUE);
}

static bool add_addr(GHashTable *set, const char *value)
{
    char *end;
    unsigned long long a = strtoull(value, &end, 0);
    if (*value == 0 || *end != 0) {
        return false;
    }
    g_hash_table_add(set, GSIZE_TO_POINTER((gsize)(a & ~1ULL))); /* Thumb bit off */
    return true;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    if (strcmp(info->target_name, "arm") != 0) {
        fprintf(stderr, "insncount: only 32-bit ARM guests are supported, not %s\n",
                info->target_name);
        return -1;
    }
    key_index = g_hash_table_new(g_str_hash, g_str_equal);
    on_addrs = g_hash_table_new(g_direct_hash, g_direct_equal);
    off_addrs = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool ok;
        if (starts(a, "on=")) {
            ok = add_addr(on_addrs, a + 3);
        } else if (starts(a, "off=")) {
            ok = add_addr(off_addrs, a + 4);
        } else if (starts(a, "l1d=")) {
            ok = cache_on = cache_parse(&l1d, a + 4);
        } else if (starts(a, "l1i=")) {
            ok = cache_on = cache_parse(&l1i, a + 4);
        } else if (starts(a, "l2=")) {
            ok = cache_on = cache_parse(&l2, a + 3);
        } else if (starts(a, "out=")) {
            out_path = g_strdup(a + 4);
            ok = true;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "insncount: bad argument %s (expected on=0xADDR, off=0xADDR, out=PATH, "
                            "l1d=/l1i=/l2=SIZE:WAYS:LINE)\n", a);
            return -1;
        }
    }
    if (cache_on) { /* the A9 and the i.MX6Q's PL310 where not given */
        if (!l1d.sets) {
            cache_parse(&l1d, "32768:4:32");
        }
        if (!l1i.sets) {
            cache_parse(&l1i, "32768:4:32");
        }
        if (!l2.sets) {
            cache_parse(&l2, "1048576:16:32");
        }
        cache_alloc(&l1d);
        cache_alloc(&l1i);
        cache_alloc(&l2);
    }
    if (g_hash_table_size(on_addrs) == 0) {
        fprintf(stderr, "insncount: no on=0xADDR given: nothing would be counted\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}

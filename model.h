/*
 * model.h — what the CPU (train_gla.c) and CUDA (train_gla.cu) programs share. Host-side C only.
 *
 *   checked I/O and allocation ........ fopen_check, fread_check, malloc_check, ...
 *   the config and layer pattern ...... Config, mixer names, pattern parsing
 *   the canonical parameter table ..... param_table(): every tensor's name, shape and order
 *   checkpoint files .................. model file (config + parameters), optimizer-state file
 *   tokenizer ......................... file format, load, decode (byte level for now)
 *   token shards + data loader ........ llm.c's shard format, glob of shard files
 *   command-line flags ................ one table per program: parsing, validation, -h
 *   random numbers .................... xorshift64*, uniform and normal draws
 *
 * All files are little-endian and start with a header of 256 int32.
 */
#ifndef MODEL_H
#define MODEL_H

#include <errno.h>
#include <stdarg.h>
#include <glob.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// ----------------------------------------------------------------------------
// checked I/O and allocation: every failure names the file or the size and exits non-zero

static void fail(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(EXIT_FAILURE);
}

static FILE* fopen_check(const char* path, const char* mode) {
    FILE* f = fopen(path, mode);
    if (!f) fail("cannot open '%s' (mode %s): %s", path, mode, strerror(errno));
    return f;
}

// reads exactly `count` items or fails naming the file and how many were there
static void fread_check(void* dst, size_t size, size_t count, FILE* f, const char* path) {
    size_t got = fread(dst, size, count, f);
    if (got != count)
        fail("'%s' is truncated: wanted %zu items of %zu bytes, got %zu%s", path, count, size, got,
             ferror(f) ? " (read error)" : "");
}

static void fwrite_check(const void* src, size_t size, size_t count, FILE* f, const char* path) {
    if (fwrite(src, size, count, f) != count)
        fail("cannot write '%s': %s (disk full?)", path, strerror(errno));
}

static void fclose_check(FILE* f, const char* path) {
    if (fclose(f) != 0) fail("cannot close '%s': %s", path, strerror(errno));
}

static void* malloc_check(size_t size) {
    void* p = malloc(size ? size : 1);
    if (!p) fail("out of memory allocating %.1f MiB", size / 1048576.0);
    return p;
}

static void* calloc_check(size_t count, size_t size) {
    void* p = calloc(count ? count : 1, size ? size : 1);
    if (!p) fail("out of memory allocating %.1f MiB", (double)count * size / 1048576.0);
    return p;
}

static int64_t file_size(FILE* f) {
    int64_t here = ftello(f);
    fseeko(f, 0, SEEK_END);
    int64_t size = ftello(f);
    fseeko(f, here, SEEK_SET);
    return size;
}

// Atomic file replacement: write everything to "<path>.tmp", flush it to disk, then rename over
// <path>. A crash at any moment leaves either the old file or the new one, never a partial one.
#define PATH_CAP 4096
static FILE* atomic_open(const char* path, char tmp_path[PATH_CAP]) {
    if (snprintf(tmp_path, PATH_CAP, "%s.tmp", path) >= PATH_CAP) fail("path too long: '%s'", path);
    return fopen_check(tmp_path, "wb");
}
static void atomic_commit(FILE* f, const char* tmp_path, const char* path) {
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        fail("cannot flush '%s': %s (disk full?)", tmp_path, strerror(errno));
    fclose_check(f, tmp_path);
    if (rename(tmp_path, path) != 0) fail("cannot rename '%s' to '%s': %s", tmp_path, path, strerror(errno));
}

// Reads a 256-int32 header and checks magic and version.
static void read_header(int32_t header[256], FILE* f, const char* path, int32_t magic, int32_t version,
                        const char* what) {
    if (file_size(f) < 256 * (int64_t)sizeof(int32_t))
        fail("'%s' is too short to be a %s (%lld bytes, the header alone is 1024)", path, what,
             (long long)file_size(f));
    fread_check(header, sizeof(int32_t), 256, f, path);
    if (header[0] != magic)
        fail("'%s' is not a %s: magic %d, expected %d", path, what, header[0], magic);
    if (header[1] != version)
        fail("'%s': %s version %d, this program reads version %d", path, what, header[1], version);
}

// ----------------------------------------------------------------------------
// random numbers: xorshift64* (deterministic on every platform)

static uint32_t random_u32(uint64_t* state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}
// uniform in [0, 1)
static float random_f32(uint64_t* state) { return (random_u32(state) >> 8) / 16777216.0f; }
// standard normal by Box–Muller
static float random_normal(uint64_t* state) {
    float u1 = random_f32(state), u2 = random_f32(state);
    return sqrtf(-2.0f * logf(1.0f - u1)) * cosf(6.283185307179586f * u2);
}

// ----------------------------------------------------------------------------
// the config and the layer pattern

// Mixer ids are part of the file formats (checkpoint header, reference dumps): never renumber.
enum { MIXER_ATTN = 0, MIXER_HGRN = 1, MIXER_RETNET = 2, MIXER_GLA = 3, MIXER_HGRN2 = 4,
       MIXER_DELTANET = 5, MIXER_GATED_DELTANET = 6, NUM_MIXER_IDS = 7 };
static const char* MIXER_NAMES[NUM_MIXER_IDS] = {"attn", "hgrn", "retnet", "gla", "hgrn2", "deltanet",
                                                 "gated_deltanet"};
// the mixers this program implements (the other ids are reserved for the remaining linear families)
static int mixer_supported(int id) { return id == MIXER_ATTN || id == MIXER_GLA; }

#define MAX_LAYERS 64

typedef struct {
    int vocab_size;           // V
    int d_model;              // d
    int n_layer;              // L
    int mlp_hidden;           // I, SwiGLU intermediate size
    int tie_embeddings;       // 1: the LM head is the embedding matrix
    int gla_heads;            // H of the GLA layers
    int gla_dk, gla_dv;       // total key / value dims of GLA (fla: d*0.5, d*1)
    int gla_gate_rank;        // low-rank forget-gate bottleneck (16)
    int gla_gate_normalizer;  // a = logsigmoid(gk) / normalizer (16)
    int attn_heads;           // H of the attention layers; head dim d/H
    int attn_kv_heads;        // H_kv (GQA), divides attn_heads
    float rope_theta;         // RoPE base (10000)
    float norm_eps;           // every RMSNorm (1e-6)
    int pattern[MAX_LAYERS];  // mixer id per layer
} Config;

// fla's SwiGLU sizing: int(d * 4 * 2/3) rounded up to a multiple of 256
static int default_mlp_hidden(int d) { return ((d * 8 / 3) + 255) / 256 * 256; }

static int mixer_id(const char* name) {
    for (int i = 0; i < NUM_MIXER_IDS; i++)
        if (strcmp(name, MIXER_NAMES[i]) == 0) return i;
    return -1;
}

// Parses a layer pattern into pattern[0..n_layer). Two forms:
//   explicit list   "gla,gla,gla,attn"             (its length must equal n_layer)
//   shorthand       "gla:3" = 3:1 ratio: blocks of 3 gla layers then one attn layer, repeated over
//                   n_layer (layer i is attention iff (i+1) % 4 == 0, as fla's hybrid configs do);
//                   "gla:pure" = every layer gla; "attn" alone = the Transformer baseline.
// Returns NULL on success, else a static message.
static const char* parse_pattern(const char* spec, int n_layer, int pattern[MAX_LAYERS]) {
    static char msg[256];
    char buf[1024];
    if (strlen(spec) >= sizeof(buf)) return "pattern too long";
    if (n_layer < 1 || n_layer > MAX_LAYERS) return "n_layer out of range";
    strcpy(buf, spec);
    char* colon = strchr(buf, ':');
    if (colon) {
        *colon = 0;
        int id = mixer_id(buf);
        if (id < 0 || id == MIXER_ATTN) {
            snprintf(msg, sizeof(msg), "'%s' is not a linear mixer (shorthand is MIXER:RATIO or MIXER:pure)", buf);
            return msg;
        }
        int ratio = 0;
        if (strcmp(colon + 1, "pure") != 0) {
            char* end;
            long r = strtol(colon + 1, &end, 10);
            if (*end || r < 1 || r > MAX_LAYERS) {
                snprintf(msg, sizeof(msg), "ratio '%s' must be a positive integer or 'pure'", colon + 1);
                return msg;
            }
            ratio = (int)r;
        }
        for (int i = 0; i < n_layer; i++)
            pattern[i] = (ratio > 0 && (i + 1) % (ratio + 1) == 0) ? MIXER_ATTN : id;
    } else {
        int n = 0;
        int single = strchr(buf, ',') == NULL;
        for (char* tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
            int id = mixer_id(tok);
            if (id < 0) {
                snprintf(msg, sizeof(msg), "unknown mixer '%s' (known: attn hgrn retnet gla hgrn2 deltanet gated_deltanet)", tok);
                return msg;
            }
            if (n >= MAX_LAYERS) return "too many layers in the pattern";
            pattern[n++] = id;
        }
        if (single) // one name alone means every layer
            for (; n < n_layer; n++) pattern[n] = pattern[0];
        if (n != n_layer) {
            snprintf(msg, sizeof(msg), "the pattern lists %d layers but n_layer is %d", n, n_layer);
            return msg;
        }
    }
    for (int i = 0; i < n_layer; i++)
        if (!mixer_supported(pattern[i])) {
            snprintf(msg, sizeof(msg), "mixer '%s' is not implemented yet (this build has: gla, attn)",
                     MIXER_NAMES[pattern[i]]);
            return msg;
        }
    return NULL;
}

static void format_pattern(const Config* c, char* out, size_t cap) {
    out[0] = 0;
    for (int l = 0; l < c->n_layer; l++) {
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", l ? "," : "", MIXER_NAMES[c->pattern[l]]);
    }
}

// Checks every size relation; returns NULL or a message naming the offending values.
static const char* validate_config(const Config* c) {
    static char msg[256];
#define REQUIRE(cond, ...) do { if (!(cond)) { snprintf(msg, sizeof(msg), __VA_ARGS__); return msg; } } while (0)
    REQUIRE(c->vocab_size >= 2 && c->vocab_size <= 65536, "vocab_size %d outside [2, 65536]", c->vocab_size);
    REQUIRE(c->d_model >= 1 && c->d_model <= 16384, "d_model %d outside [1, 16384]", c->d_model);
    REQUIRE(c->n_layer >= 1 && c->n_layer <= MAX_LAYERS, "n_layer %d outside [1, %d]", c->n_layer, MAX_LAYERS);
    REQUIRE(c->mlp_hidden >= 1 && c->mlp_hidden <= 65536, "mlp_hidden %d outside [1, 65536]", c->mlp_hidden);
    REQUIRE(c->tie_embeddings == 0 || c->tie_embeddings == 1, "tie_embeddings %d is not 0 or 1", c->tie_embeddings);
    REQUIRE(c->gla_heads >= 1, "gla_heads %d < 1", c->gla_heads);
    REQUIRE(c->gla_dk >= 1 && c->gla_dk % c->gla_heads == 0, "gla key dim %d is not a positive multiple of gla_heads %d", c->gla_dk, c->gla_heads);
    REQUIRE(c->gla_dv >= 1 && c->gla_dv % c->gla_heads == 0, "gla value dim %d is not a positive multiple of gla_heads %d", c->gla_dv, c->gla_heads);
    REQUIRE(c->gla_gate_rank >= 1, "gla_gate_rank %d < 1", c->gla_gate_rank);
    REQUIRE(c->gla_gate_normalizer >= 1, "gla_gate_normalizer %d < 1", c->gla_gate_normalizer);
    REQUIRE(c->attn_heads >= 1 && c->d_model % c->attn_heads == 0, "attn_heads %d does not divide d_model %d", c->attn_heads, c->d_model);
    REQUIRE((c->d_model / c->attn_heads) % 2 == 0, "attention head dim %d must be even for RoPE", c->d_model / c->attn_heads);
    REQUIRE(c->attn_kv_heads >= 1 && c->attn_heads % c->attn_kv_heads == 0, "attn_kv_heads %d does not divide attn_heads %d", c->attn_kv_heads, c->attn_heads);
    REQUIRE(c->rope_theta > 1.0f && isfinite(c->rope_theta), "rope_theta %g must be > 1", c->rope_theta);
    REQUIRE(c->norm_eps > 0.0f && c->norm_eps < 1.0f, "norm_eps %g outside (0, 1)", c->norm_eps);
    for (int l = 0; l < c->n_layer; l++)
        REQUIRE(c->pattern[l] >= 0 && c->pattern[l] < NUM_MIXER_IDS && mixer_supported(c->pattern[l]),
                "layer %d has unknown or unsupported mixer id %d", l, c->pattern[l]);
#undef REQUIRE
    return NULL;
}

// ----------------------------------------------------------------------------
// the canonical parameter table: the one place that fixes every tensor's name, shape and order
// (checkpoints, reference dumps, the flat parameter buffer and AdamW all follow it)

// Per-layer weight slots. A layer uses the norm/MLP slots plus the slots of its own mixer.
enum {
    W_ATTN_NORM, W_MLP_NORM, W_MLP_GATE, W_MLP_UP, W_MLP_DOWN,
    W_GLA_Q, W_GLA_K, W_GLA_V, W_GLA_G, W_GLA_GK1, W_GLA_GK2, W_GLA_GK_BIAS, W_GLA_G_NORM, W_GLA_O,
    W_ATT_Q, W_ATT_K, W_ATT_V, W_ATT_O,
    NUM_LAYER_SLOTS
};
// model-level tensors carry layer = -1 and one of these slots
enum { G_EMBED, G_NORM, G_LM_HEAD };

typedef struct {
    char name[96];
    int layer;      // -1 for model-level tensors
    int slot;       // W_* for layers, G_* for model-level
    int ndim;       // 1 or 2
    int shape[2];   // [out, in] for matrices (torch Linear layout), [n, 1] for vectors
    size_t numel;
    size_t offset;  // into the flat parameter buffer
    int decay;      // AdamW weight decay applies (matrices only)
} ParamSpec;

#define MAX_PARAMS (4 + MAX_LAYERS * 16)

static void param_add(ParamSpec* t, int* n, size_t* offset, int layer, int slot, const char* name,
                      int rows, int cols) {
    ParamSpec* p = &t[(*n)++];
    if (layer >= 0) snprintf(p->name, sizeof(p->name), "layers.%d.%s", layer, name);
    else snprintf(p->name, sizeof(p->name), "%s", name);
    p->layer = layer;
    p->slot = slot;
    p->ndim = cols > 0 ? 2 : 1;
    p->shape[0] = rows;
    p->shape[1] = cols > 0 ? cols : 1;
    p->numel = (size_t)rows * p->shape[1];
    p->offset = *offset;
    p->decay = p->ndim == 2;
    *offset += p->numel;
}

// Fills t[] in canonical order, returns the number of tensors; *total = number of floats.
static int param_table(const Config* c, ParamSpec* t, size_t* total) {
    int n = 0, d = c->d_model, I = c->mlp_hidden;
    size_t off = 0;
    param_add(t, &n, &off, -1, G_EMBED, "embed", c->vocab_size, d);
    for (int l = 0; l < c->n_layer; l++) {
        param_add(t, &n, &off, l, W_ATTN_NORM, "attn_norm", d, 0);
        if (c->pattern[l] == MIXER_GLA) {
            int Dk = c->gla_dk, Dv = c->gla_dv, R = c->gla_gate_rank;
            param_add(t, &n, &off, l, W_GLA_Q, "gla.q_proj", Dk, d);
            param_add(t, &n, &off, l, W_GLA_K, "gla.k_proj", Dk, d);
            param_add(t, &n, &off, l, W_GLA_V, "gla.v_proj", Dv, d);
            param_add(t, &n, &off, l, W_GLA_G, "gla.g_proj", Dv, d);
            param_add(t, &n, &off, l, W_GLA_GK1, "gla.gk_proj1", R, d);
            param_add(t, &n, &off, l, W_GLA_GK2, "gla.gk_proj2", Dk, R);
            param_add(t, &n, &off, l, W_GLA_GK_BIAS, "gla.gk_bias", Dk, 0);
            param_add(t, &n, &off, l, W_GLA_G_NORM, "gla.g_norm", Dv / c->gla_heads, 0);
            param_add(t, &n, &off, l, W_GLA_O, "gla.o_proj", d, Dv);
        } else { // MIXER_ATTN
            int hd = d / c->attn_heads, kv = c->attn_kv_heads * hd;
            param_add(t, &n, &off, l, W_ATT_Q, "attn.q_proj", c->attn_heads * hd, d);
            param_add(t, &n, &off, l, W_ATT_K, "attn.k_proj", kv, d);
            param_add(t, &n, &off, l, W_ATT_V, "attn.v_proj", kv, d);
            param_add(t, &n, &off, l, W_ATT_O, "attn.o_proj", d, c->attn_heads * hd);
        }
        param_add(t, &n, &off, l, W_MLP_NORM, "mlp_norm", d, 0);
        param_add(t, &n, &off, l, W_MLP_GATE, "mlp.gate_proj", I, d);
        param_add(t, &n, &off, l, W_MLP_UP, "mlp.up_proj", I, d);
        param_add(t, &n, &off, l, W_MLP_DOWN, "mlp.down_proj", d, I);
    }
    param_add(t, &n, &off, -1, G_NORM, "norm", d, 0);
    if (!c->tie_embeddings) param_add(t, &n, &off, -1, G_LM_HEAD, "lm_head", c->vocab_size, d);
    *total = off;
    return n;
}

// ----------------------------------------------------------------------------
// checkpoint: model file = header (magic, version, config) + float32 parameters in canonical order

#define CKPT_MAGIC 20261101
#define CKPT_VERSION 1
#define STATE_MAGIC 20261102
#define STATE_VERSION 1

// header layout: [0] magic [1] version [2..14] config ints [15] rope bits [16] eps bits
// [17,18] parameter count (lo, hi) [64..64+L) pattern
static void config_to_header(const Config* c, size_t num_params, int32_t h[256]) {
    memset(h, 0, 256 * sizeof(int32_t));
    h[0] = CKPT_MAGIC;
    h[1] = CKPT_VERSION;
    h[2] = c->vocab_size; h[3] = c->d_model; h[4] = c->n_layer; h[5] = c->mlp_hidden;
    h[6] = c->tie_embeddings; h[7] = c->gla_heads; h[8] = c->gla_dk; h[9] = c->gla_dv;
    h[10] = c->gla_gate_rank; h[11] = c->gla_gate_normalizer; h[12] = c->attn_heads;
    h[13] = c->attn_kv_heads;
    memcpy(&h[15], &c->rope_theta, 4);
    memcpy(&h[16], &c->norm_eps, 4);
    h[17] = (int32_t)(num_params & 0x7fffffff);
    h[18] = (int32_t)(num_params >> 31);
    for (int l = 0; l < c->n_layer && l < MAX_LAYERS; l++) h[64 + l] = c->pattern[l];
}

static void config_from_header(const int32_t h[256], Config* c, size_t* num_params) {
    memset(c, 0, sizeof(*c));
    c->vocab_size = h[2]; c->d_model = h[3]; c->n_layer = h[4]; c->mlp_hidden = h[5];
    c->tie_embeddings = h[6]; c->gla_heads = h[7]; c->gla_dk = h[8]; c->gla_dv = h[9];
    c->gla_gate_rank = h[10]; c->gla_gate_normalizer = h[11]; c->attn_heads = h[12];
    c->attn_kv_heads = h[13];
    memcpy(&c->rope_theta, &h[15], 4);
    memcpy(&c->norm_eps, &h[16], 4);
    *num_params = (size_t)(uint32_t)h[17] | ((size_t)(uint32_t)h[18] << 31);
    for (int l = 0; l < MAX_LAYERS; l++) c->pattern[l] = (l < c->n_layer) ? h[64 + l] : 0;
}

static void checkpoint_write(const char* path, const Config* c, const float* params, size_t num_params) {
    char tmp[PATH_CAP];
    int32_t h[256];
    config_to_header(c, num_params, h);
    FILE* f = atomic_open(path, tmp);
    fwrite_check(h, sizeof(int32_t), 256, f, tmp);
    fwrite_check(params, sizeof(float), num_params, f, tmp);
    atomic_commit(f, tmp, path);
}

// Reads the config only (so the caller can allocate), validating header, sizes and file length.
static void checkpoint_read_config(const char* path, Config* c) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[256];
    read_header(h, f, path, CKPT_MAGIC, CKPT_VERSION, "model checkpoint");
    size_t stored;
    config_from_header(h, c, &stored);
    const char* bad = validate_config(c);
    if (bad) fail("'%s': invalid config in the header: %s", path, bad);
    ParamSpec t[MAX_PARAMS];
    size_t expected;
    param_table(c, t, &expected);
    if (stored != expected)
        fail("'%s': header says %zu parameters, its config implies %zu", path, stored, expected);
    int64_t want = 1024 + (int64_t)expected * 4, have = file_size(f);
    if (have != want)
        fail("'%s': file is %lld bytes, expected %lld for %zu parameters (truncated or corrupt)", path,
             (long long)have, (long long)want, expected);
    fclose(f);
}

// Reads the parameters of a checkpoint whose config must equal *c. Rejects non-finite values.
static void checkpoint_read_params(const char* path, const Config* c, float* params, size_t num_params) {
    Config stored;
    checkpoint_read_config(path, &stored);
    if (memcmp(&stored, c, sizeof(Config)) != 0) fail("'%s': config differs from the model being loaded", path);
    FILE* f = fopen_check(path, "rb");
    fseeko(f, 1024, SEEK_SET);
    fread_check(params, sizeof(float), num_params, f, path);
    fclose(f);
    for (size_t i = 0; i < num_params; i++)
        if (!isfinite(params[i])) fail("'%s': parameter %zu is not finite (corrupt checkpoint)", path, i);
}

// ----------------------------------------------------------------------------
// tokenizer file: header [0] magic [1] version [2] kind (0 = bytes) [3] vocab size [4] EOT id (-1: none)
// then for each token: uint8 length + bytes. (GPT-2 BPE will add its merge ranks after the tokens.)

#define TOKENIZER_MAGIC 20261103
#define TOKENIZER_VERSION 1
enum { TOKENIZER_BYTES = 0 };

typedef struct {
    int kind;
    int vocab_size;
    int eot_id;
    unsigned char** token_bytes;  // token_bytes[i] has token_len[i] bytes
    int* token_len;
} Tokenizer;

static void tokenizer_write_bytes(const char* path) {
    char tmp[PATH_CAP];
    int32_t h[256] = {TOKENIZER_MAGIC, TOKENIZER_VERSION, TOKENIZER_BYTES, 256, -1};
    FILE* f = atomic_open(path, tmp);
    fwrite_check(h, sizeof(int32_t), 256, f, tmp);
    for (int i = 0; i < 256; i++) {
        unsigned char rec[2] = {1, (unsigned char)i};
        fwrite_check(rec, 1, 2, f, tmp);
    }
    atomic_commit(f, tmp, path);
}

static void tokenizer_load(Tokenizer* t, const char* path) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[256];
    read_header(h, f, path, TOKENIZER_MAGIC, TOKENIZER_VERSION, "tokenizer file");
    t->kind = h[2];
    t->vocab_size = h[3];
    t->eot_id = h[4];
    if (t->kind != TOKENIZER_BYTES) fail("'%s': unknown tokenizer kind %d (this build reads 0 = bytes)", path, t->kind);
    if (t->vocab_size < 1 || t->vocab_size > 65536) fail("'%s': vocab size %d outside [1, 65536]", path, t->vocab_size);
    if (t->eot_id < -1 || t->eot_id >= t->vocab_size) fail("'%s': EOT id %d outside the vocabulary", path, t->eot_id);
    t->token_bytes = (unsigned char**)malloc_check(t->vocab_size * sizeof(unsigned char*));
    t->token_len = (int*)malloc_check(t->vocab_size * sizeof(int));
    for (int i = 0; i < t->vocab_size; i++) {
        unsigned char len;
        fread_check(&len, 1, 1, f, path);
        t->token_len[i] = len;
        t->token_bytes[i] = (unsigned char*)malloc_check(len);
        fread_check(t->token_bytes[i], 1, len, f, path);
    }
    if (ftello(f) != file_size(f)) fail("'%s': %lld unexpected bytes after the last token", path, (long long)(file_size(f) - ftello(f)));
    fclose(f);
}

static void tokenizer_free(Tokenizer* t) {
    for (int i = 0; i < t->vocab_size; i++) free(t->token_bytes[i]);
    free(t->token_bytes);
    free(t->token_len);
}

// Writes the bytes of one token, escaping what would garble a terminal.
static void tokenizer_print(const Tokenizer* t, int id, FILE* out) {
    for (int i = 0; i < t->token_len[id]; i++) {
        unsigned char b = t->token_bytes[id][i];
        if (b == '\n' || b == '\t' || (b >= 32 && b != 127)) fputc(b, out);
        else fprintf(out, "\\x%02x", b);
    }
}

// ----------------------------------------------------------------------------
// token shards: llm.c's format. header [0] 20240520 [1] version 1 [2] token count; then uint16 tokens.

#define SHARD_MAGIC 20240520
#define SHARD_VERSION 1

static void shard_write(const char* path, const uint16_t* tokens, size_t n) {
    char tmp[PATH_CAP];
    if (n > 0x7fffffff) fail("'%s': %zu tokens do not fit one shard (max 2^31-1)", path, n);
    int32_t h[256] = {SHARD_MAGIC, SHARD_VERSION, (int32_t)n};
    FILE* f = atomic_open(path, tmp);
    fwrite_check(h, sizeof(int32_t), 256, f, tmp);
    fwrite_check(tokens, sizeof(uint16_t), n, f, tmp);
    atomic_commit(f, tmp, path);
}

// Loads a whole shard and checks every token id is below vocab_size. Returns the token count.
static size_t shard_load(const char* path, uint16_t** tokens, int vocab_size) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[256];
    read_header(h, f, path, SHARD_MAGIC, SHARD_VERSION, "token shard");
    if (h[2] < 0) fail("'%s': negative token count %d", path, h[2]);
    size_t n = (size_t)h[2];
    int64_t want = 1024 + 2 * (int64_t)n, have = file_size(f);
    if (have != want)
        fail("'%s': header says %zu tokens (%lld bytes), the file has %lld bytes", path, n, (long long)want,
             (long long)have);
    *tokens = (uint16_t*)malloc_check(n * sizeof(uint16_t));
    fread_check(*tokens, sizeof(uint16_t), n, f, path);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if ((*tokens)[i] >= vocab_size)
            fail("'%s': token %u at position %zu is outside the vocabulary (size %d): wrong tokenizer?", path,
                 (*tokens)[i], i, vocab_size);
    return n;
}

// Sequential loader over a glob of shards: batch b covers tokens [pos, pos + B*T + 1) of the
// current shard; inputs are the first B*T, targets the same shifted by one. Deterministic, and
// its whole state is (shard, pos), which the optimizer-state file saves for bit-identical resume.
typedef struct {
    glob_t files;
    int vocab_size;
    int B, T;
    int shard;          // index into files
    size_t pos;         // next token in the current shard
    uint16_t* tokens;   // the current shard
    size_t n_tokens;
    int* inputs;        // (B, T)
    int* targets;       // (B, T)
} DataLoader;

static void loader_load_shard(DataLoader* d, int shard) {
    free(d->tokens);
    d->shard = shard;
    d->n_tokens = shard_load(d->files.gl_pathv[shard], &d->tokens, d->vocab_size);
    if (d->n_tokens < (size_t)d->B * d->T + 1)
        fail("'%s' has %zu tokens, fewer than one batch needs (B*T+1 = %d): use a smaller -b or -T",
             d->files.gl_pathv[shard], d->n_tokens, d->B * d->T + 1);
}

static void loader_init(DataLoader* d, const char* pattern, int B, int T, int vocab_size) {
    memset(d, 0, sizeof(*d));
    int rc = glob(pattern, 0, NULL, &d->files);
    if (rc != 0 || d->files.gl_pathc == 0)
        fail("no shard matches '%s' (prepare the data first: make data)", pattern);
    d->vocab_size = vocab_size;
    d->B = B;
    d->T = T;
    d->inputs = (int*)malloc_check((size_t)B * T * sizeof(int));
    d->targets = (int*)malloc_check((size_t)B * T * sizeof(int));
    loader_load_shard(d, 0);
}

static void loader_seek(DataLoader* d, int shard, size_t pos) {
    if (shard < 0 || shard >= (int)d->files.gl_pathc) fail("data position: shard %d does not exist (%zu shards)", shard, d->files.gl_pathc);
    if (shard != d->shard) loader_load_shard(d, shard);
    if (pos + (size_t)d->B * d->T + 1 > d->n_tokens) fail("data position %zu is past the end of '%s'", pos, d->files.gl_pathv[shard]);
    d->pos = pos;
}

static void loader_next_batch(DataLoader* d) {
    size_t span = (size_t)d->B * d->T;
    if (d->pos + span + 1 > d->n_tokens) loader_seek(d, (d->shard + 1) % (int)d->files.gl_pathc, 0);
    const uint16_t* src = d->tokens + d->pos;
    for (size_t i = 0; i < span; i++) {
        d->inputs[i] = src[i];
        d->targets[i] = src[i + 1];
    }
    d->pos += span;
}

static void loader_free(DataLoader* d) {
    globfree(&d->files);
    free(d->tokens);
    free(d->inputs);
    free(d->targets);
}

// ----------------------------------------------------------------------------
// command-line flags: one table per program gives name, type, range and help; parse_flags
// rejects unknown flags, missing or malformed values and values out of range.

typedef enum { FLAG_INT, FLAG_FLOAT, FLAG_STRING } FlagType;
typedef struct {
    const char* name;   // long name without dashes, e.g. "batch"
    char short_name;    // e.g. 'b', or 0
    FlagType type;
    void* value;        // int*, float* or const char**
    double min, max;    // accepted range for numbers
    const char* help;
} Flag;

static void print_usage(const char* prog, const char* summary, const Flag* flags, int n) {
    printf("usage: %s [flags]\n%s\n\nflags (default in brackets):\n", prog, summary);
    for (int i = 0; i < n; i++) {
        const Flag* f = &flags[i];
        char def[256];
        if (f->type == FLAG_INT) snprintf(def, sizeof(def), "%d", *(int*)f->value);
        else if (f->type == FLAG_FLOAT) snprintf(def, sizeof(def), "%g", *(float*)f->value);
        else snprintf(def, sizeof(def), "%s", *(const char**)f->value);
        char names[64];
        if (f->short_name) snprintf(names, sizeof(names), "-%c, --%s", f->short_name, f->name);
        else snprintf(names, sizeof(names), "    --%s", f->name);
        printf("  %-26s %s [%s]\n", names, f->help, def);
    }
    printf("  %-26s print this help\n", "-h, --help");
}

static void usage_error(const char* prog, const char* fmt, const char* a, const char* b) {
    fprintf(stderr, "error: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\nusage: %s [flags]   (%s -h lists them)\n", prog, prog);
    exit(EXIT_FAILURE);
}

static void parse_flags(int argc, char** argv, Flag* flags, int n, const char* summary) {
    const char* prog = argv[0];
    for (int i = 1; i < argc; i++) {
        const char* arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_usage(prog, summary, flags, n);
            exit(EXIT_SUCCESS);
        }
        Flag* f = NULL;
        if (arg[0] == '-' && arg[1] == '-') {
            for (int k = 0; k < n; k++) if (strcmp(arg + 2, flags[k].name) == 0) f = &flags[k];
        } else if (arg[0] == '-' && arg[1] && !arg[2]) {
            for (int k = 0; k < n; k++) if (flags[k].short_name == arg[1]) f = &flags[k];
        }
        if (!f) usage_error(prog, "unknown flag '%s'%s", arg, "");
        if (i + 1 >= argc) usage_error(prog, "flag '%s' needs a value%s", arg, "");
        const char* val = argv[++i];
        char* end = NULL;
        if (f->type == FLAG_STRING) {
            *(const char**)f->value = val;
            continue;
        }
        errno = 0;
        double x = f->type == FLAG_INT ? (double)strtoll(val, &end, 10) : strtod(val, &end);
        if (end == val || *end || errno == ERANGE || !isfinite(x))
            usage_error(prog, "flag '%s' wants a %s", arg, f->type == FLAG_INT ? "whole number" : "number");
        if (x < f->min || x > f->max) {
            char range[128];
            snprintf(range, sizeof(range), " in [%g, %g], got %s", f->min, f->max, val);
            usage_error(prog, "flag '%s' wants a value%s", arg, range);
        }
        if (f->type == FLAG_INT) *(int*)f->value = (int)x;
        else *(float*)f->value = (float)x;
    }
}

#endif // MODEL_H

/*
 * model.h — what the CPU (train_gla.c) and CUDA (train_gla.cu) programs share. Host-side C only.
 *
 *   checked I/O and allocation ........ fopen_check, fread_check, malloc_check, ...
 *   the config and layer pattern ...... Config, mixer names, pattern parsing
 *   the canonical parameter table ..... param_table(): every tensor's name, shape and order
 *   checkpoint files .................. model file (config + parameters), optimizer-state file
 *   tokenizer ......................... file format, load, GPT-2 pre-tokenizer, byte-level BPE encode/decode
 *   token shards + data loader ........ llm.c's shard format, glob of shard files
 *   command-line flags ................ one table per program: parsing, validation, -h
 *   random numbers .................... xorshift64*, uniform and normal draws
 *   optimizer-state file .............. AdamW moments, step, data position, RNG (host copies)
 *   checkpoint directories ............ one run per directory: markers, run ids, lock, pruning, cleanup
 *   the training run .................. the trainers' flags, config from flags, checks before step 0,
 *                                       the run's log.jsonl and ETA, SIGINT / SIGTERM, sampling
 *   using a trained model ............. the generate / eval / logits commands' flags and inputs
 *   safetensors and fla's config.json . export / import of fla / Hugging Face models: a strict JSON
 *                                       parser, the safetensors reader and writer, the name map
 *   test checks (TESTING) ............. check / skip / rel_rms / check_close and their counts
 *   reference dumps ................... what dev/reference.py writes, read by the test programs
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
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
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

// Opens a file; a directory where a file is expected is refused here (fopen would open it, and its
// "size" would then read as petabytes).
static FILE* fopen_check(const char* path, const char* mode) {
    FILE* f = fopen(path, mode);
    if (!f) fail("cannot open '%s' (mode %s): %s", path, mode, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) fail("'%s' is a directory; a file is expected here", path);
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

// The whole file at path, malloc'd with a NUL after its last byte; *n = its size in bytes.
static unsigned char* read_whole_file(const char* path, size_t* n) {
    FILE* f = fopen_check(path, "rb");
    int64_t size = file_size(f);
    unsigned char* buf = (unsigned char*)malloc_check((size_t)size + 1);
    fread_check(buf, 1, (size_t)size, f, path);
    fclose(f);
    buf[size] = 0;
    *n = (size_t)size;
    return buf;
}

// mkdir -p: creates dir and its missing parents; fails with the reason if it cannot.
static void mkdir_p(const char* dir) {
    char path[PATH_CAP];
    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) fail("path too long: '%s'", dir);
    for (char* p = path + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(path, 0755) != 0 && errno != EEXIST) fail("cannot create directory '%s': %s", path, strerror(errno));
            *p = '/';
        }
    if (mkdir(path, 0755) != 0 && errno != EEXIST) fail("cannot create directory '%s': %s", path, strerror(errno));
}

// The readers' cores parse bytes already in memory and return NULL or a message saying what was
// expected and what was found (they never exit, so that tests and fuzzers can call them); the
// file-reading wrappers add the file name and fail(). error_message formats into one static buffer.
static char error_text[512];
static const char* error_message(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static const char* error_message(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_text, sizeof(error_text), fmt, ap);
    va_end(ap);
    return error_text;
}

#define HEADER_BYTES 1024  // 256 int32

// Checks the header of a file of `size` bytes whose first min(size, 1024) bytes are `head`: long
// enough, magic, version. Copies it to h[256] (zeros when too short). Returns NULL or a message.
static const char* header_check(int32_t h[256], const unsigned char* head, int64_t size, int32_t magic,
                                int32_t version, const char* what) {
    const char* article = strchr("aeiou", what[0]) ? "an" : "a";
    memset(h, 0, HEADER_BYTES);
    if (size < HEADER_BYTES)
        return error_message("too short to be %s %s (%lld bytes, the header alone is %d)", article, what,
                             (long long)size, HEADER_BYTES);
    memcpy(h, head, HEADER_BYTES);
    if (h[0] != magic) return error_message("not %s %s: magic %d, expected %d", article, what, h[0], magic);
    if (h[1] != version) return error_message("%s version %d, this program reads version %d", what, h[1], version);
    return NULL;
}

// Reads the first min(file size, 1024) bytes of f into head[1024]; returns the file size.
static int64_t read_head(FILE* f, const char* path, unsigned char head[HEADER_BYTES]) {
    int64_t size = file_size(f);
    fread_check(head, 1, size < HEADER_BYTES ? (size_t)size : HEADER_BYTES, f, path);
    return size;
}

// Reads a 256-int32 header and checks magic and version, or fails naming the file.
static void read_header(int32_t h[256], FILE* f, const char* path, int32_t magic, int32_t version,
                        const char* what) {
    unsigned char head[HEADER_BYTES];
    int64_t size = read_head(f, path, head);
    const char* bad = header_check(h, head, size, magic, version, what);
    if (bad) fail("'%s': %s", path, bad);
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
// the mixers this program implements: all seven
static int mixer_supported(int id) { return id >= 0 && id < NUM_MIXER_IDS; }

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
    // the other linear families (LAYERS.md §3-§6); sizes of mixers absent from the pattern are unused
    int hgrn_dim;             // HGRN width D (fla: d * expand_ratio 1)
    int hgrn2_heads;          // HGRN2 heads H: key/forget head dim E = d/H, value head dim d/H
    int retnet_heads;         // RetNet heads H: K = d/H, V = 2d/H
    int deltanet_heads;       // DeltaNet heads H: K = V = d/H
    int gdn_heads;            // Gated DeltaNet heads H
    int gdn_head_dim;         // Gated DeltaNet key head dim K
    int gdn_expand_v;         // Gated DeltaNet value head dim V = K * expand_v
    int conv_size;            // ShortConvolution kernel W_c of DeltaNet / GDN (4)
    int use_lower_bound;      // 1: HGRN / HGRN2 forget gates get the model-level lower bounds
} Config;

// HGRN2's output norm (over all of d) uses eps 1e-5, not norm_eps: fla computes it with its fused
// rms_norm_linear, whose default that is (LAYERS.md §3, §11.8)
#define HGRN2_NORM_EPS 1e-5f

// HGRN and HGRN2 read the model-level lower bounds (layers > 0)
static int mixer_uses_lower_bound(int id) { return id == MIXER_HGRN || id == MIXER_HGRN2; }

// whether the model has the `lower_bounds` (L,d) parameter
static int has_lower_bounds(const Config* c) {
    if (!c->use_lower_bound) return 0;
    for (int l = 0; l < c->n_layer; l++)
        if (mixer_uses_lower_bound(c->pattern[l])) return 1;
    return 0;
}

static int uses_mixer(const Config* c, int id) {
    for (int l = 0; l < c->n_layer; l++)
        if (c->pattern[l] == id) return 1;
    return 0;
}

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
        if (ratio > 0 && n_layer < ratio + 1) {
            snprintf(msg, sizeof(msg), "'%s:%d' means blocks of %d %s layers then 1 attention layer, but %d layer%s "
                     "leave%s no room for the attention layer: use at least %d layers, or '%s:pure'", buf, ratio, ratio,
                     buf, n_layer, n_layer == 1 ? "" : "s", n_layer == 1 ? "s" : "", ratio + 1, buf);
            return msg;
        }
        for (int i = 0; i < n_layer; i++)
            pattern[i] = (ratio > 0 && (i + 1) % (ratio + 1) == 0) ? MIXER_ATTN : id;
    } else {
        int n = 0;
        int single = strchr(buf, ',') == NULL;
        for (char *tok = buf, *next; tok; tok = next) { // every item, empty ones included (strtok skips them)
            next = strchr(tok, ',');
            if (next) *next++ = 0;
            if (!*tok) {
                snprintf(msg, sizeof(msg), "layer %d of the list is empty (a doubled, leading or trailing comma)", n);
                return msg;
            }
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
    REQUIRE(c->use_lower_bound == 0 || c->use_lower_bound == 1, "use_lower_bound %d is not 0 or 1", c->use_lower_bound);
    // the sizes of the other linear families, checked where the pattern uses them
    int d = c->d_model;
    if (uses_mixer(c, MIXER_HGRN)) {
        REQUIRE(c->hgrn_dim >= 1 && c->hgrn_dim <= 65536, "hgrn_dim %d outside [1, 65536]", c->hgrn_dim);
        REQUIRE(!has_lower_bounds(c) || c->hgrn_dim == d,
                "hgrn_dim %d must equal d_model %d when the lower bounds (L, d) are on", c->hgrn_dim, d);
    }
    if (uses_mixer(c, MIXER_HGRN2))
        REQUIRE(c->hgrn2_heads >= 1 && d % c->hgrn2_heads == 0, "hgrn2_heads %d does not divide d_model %d", c->hgrn2_heads, d);
    if (uses_mixer(c, MIXER_RETNET)) {
        REQUIRE(c->retnet_heads >= 1 && d % c->retnet_heads == 0, "retnet_heads %d does not divide d_model %d", c->retnet_heads, d);
        REQUIRE((d / c->retnet_heads) % 2 == 0, "RetNet key head dim %d must be even for RoPE", d / c->retnet_heads);
    }
    if (uses_mixer(c, MIXER_DELTANET))
        REQUIRE(c->deltanet_heads >= 1 && d % c->deltanet_heads == 0, "deltanet_heads %d does not divide d_model %d", c->deltanet_heads, d);
    if (uses_mixer(c, MIXER_GATED_DELTANET)) {
        REQUIRE(c->gdn_heads >= 1 && c->gdn_heads <= 1024, "gdn_heads %d outside [1, 1024]", c->gdn_heads);
        REQUIRE(c->gdn_head_dim >= 1 && c->gdn_head_dim <= 4096, "gdn_head_dim %d outside [1, 4096]", c->gdn_head_dim);
        REQUIRE(c->gdn_expand_v >= 1 && c->gdn_expand_v <= 16, "gdn_expand_v %d outside [1, 16]", c->gdn_expand_v);
    }
    if (uses_mixer(c, MIXER_DELTANET) || uses_mixer(c, MIXER_GATED_DELTANET))
        REQUIRE(c->conv_size >= 1 && c->conv_size <= 16, "conv_size %d outside [1, 16]", c->conv_size);
#undef REQUIRE
    return NULL;
}

// sizes of the matrix-state mixers: H heads, each with a state S ∈ R^{K×V}
//     gla: gla_heads, K = gla_dk/H, V = gla_dv/H     hgrn2: hgrn2_heads, K = V = d/H
//     retnet: retnet_heads, K = d/H, V = 2d/H         deltanet: deltanet_heads, K = V = d/H
//     gated_deltanet: gdn_heads, K = gdn_head_dim, V = K · gdn_expand_v
// (hgrn's state is a vector of hgrn_dim; attention keeps a KV cache)
static void mixer_dims(const Config* c, int mixer, int* H, int* K, int* V) {
    int d = c->d_model;
    switch (mixer) {
    case MIXER_GLA: *H = c->gla_heads; *K = c->gla_dk / *H; *V = c->gla_dv / *H; break;
    case MIXER_HGRN2: *H = c->hgrn2_heads; *K = *V = d / *H; break;
    case MIXER_RETNET: *H = c->retnet_heads; *K = d / *H; *V = 2 * d / *H; break;
    case MIXER_DELTANET: *H = c->deltanet_heads; *K = *V = d / *H; break;
    case MIXER_GATED_DELTANET: *H = c->gdn_heads; *K = c->gdn_head_dim; *V = *K * c->gdn_expand_v; break;
    default: fail("mixer_dims: mixer id %d has no matrix state", mixer);
    }
}

static int attn_head_dim(const Config* c) { return c->d_model / c->attn_heads; }

// floats of a linear layer's recurrent state (0 for attention, whose cache grows with the text)
static size_t mixer_state_floats(const Config* c, int mixer) {
    if (mixer == MIXER_ATTN) return 0;
    if (mixer == MIXER_HGRN) return c->hgrn_dim;
    int H, K, V;
    mixer_dims(c, mixer, &H, &K, &V);
    return (size_t)H * K * V;
}

// The model's lines of a trainer's start-up: sizes, mixers, parameters, what generation keeps.
static void print_model_summary(const Config* c, size_t num_params) {
    char pat[1024];
    format_pattern(c, pat, sizeof(pat));
    printf("model: d=%d L=%d pattern=%s vocab=%d mlp=%d tie=%d gla(H=%d Dk=%d Dv=%d) attn(H=%d Hkv=%d)\n",
           c->d_model, c->n_layer, pat, c->vocab_size, c->mlp_hidden, c->tie_embeddings, c->gla_heads, c->gla_dk,
           c->gla_dv, c->attn_heads, c->attn_kv_heads);
    int others = 0;
    for (int mix = 0; mix < NUM_MIXER_IDS; mix++) { // the other linear families in the pattern
        if (mix == MIXER_ATTN || mix == MIXER_GLA || !uses_mixer(c, mix)) continue;
        int H, K, V;
        if (mix == MIXER_HGRN) {
            printf("%shgrn(D=%d)", others++ ? " " : "       ", c->hgrn_dim);
        } else {
            mixer_dims(c, mix, &H, &K, &V);
            printf("%s%s(H=%d K=%d V=%d)", others++ ? " " : "       ", MIXER_NAMES[mix], H, K, V);
        }
    }
    if (others) printf("%s\n", has_lower_bounds(c) ? " lower bounds on" : "");
    printf("parameters: %zu (%.2f M)\n", num_params, num_params * 1e-6);
    size_t state_floats = 0, kv_floats = 0; // what generation keeps per sequence
    for (int l = 0; l < c->n_layer; l++) {
        state_floats += mixer_state_floats(c, c->pattern[l]);
        if (c->pattern[l] == MIXER_ATTN) kv_floats += 2 * (size_t)c->attn_kv_heads * attn_head_dim(c);
    }
    printf("state: %zu floats of recurrent state + a KV cache of %zu floats per token\n", state_floats, kv_floats);
}

// ----------------------------------------------------------------------------
// the canonical parameter table: the one place that fixes every tensor's name, shape and order
// (checkpoints, reference dumps, the flat parameter buffer and AdamW all follow it)

// Per-layer weight slots. A layer uses the norm/MLP slots plus the slots of its own mixer.
enum {
    W_ATTN_NORM, W_MLP_NORM, W_MLP_GATE, W_MLP_UP, W_MLP_DOWN,
    W_GLA_Q, W_GLA_K, W_GLA_V, W_GLA_G, W_GLA_GK1, W_GLA_GK2, W_GLA_GK_BIAS, W_GLA_G_NORM, W_GLA_O,
    W_ATT_Q, W_ATT_K, W_ATT_V, W_ATT_O,
    W_HGRN_I, W_HGRN_F, W_HGRN_G, W_HGRN_G_NORM, W_HGRN_O,
    W_HGRN2_Q, W_HGRN2_F, W_HGRN2_I, W_HGRN2_G_NORM, W_HGRN2_O,
    W_RET_Q, W_RET_K, W_RET_V, W_RET_G, W_RET_G_NORM, W_RET_O,
    // the delta-rule family: DeltaNet uses these slots but A, A_LOG, DT_BIAS and G (its gate is off)
    W_DELTA_Q, W_DELTA_K, W_DELTA_V, W_DELTA_A, W_DELTA_B, W_DELTA_A_LOG, W_DELTA_DT_BIAS,
    W_DELTA_Q_CONV, W_DELTA_K_CONV, W_DELTA_V_CONV, W_DELTA_G, W_DELTA_O_NORM, W_DELTA_O,
    NUM_LAYER_SLOTS
};
// model-level tensors carry layer = -1 and one of these slots
enum { G_EMBED, G_NORM, G_LM_HEAD, G_LOWER_BOUNDS };

typedef struct {
    char name[96];
    int layer;      // -1 for model-level tensors
    int slot;       // W_* for layers, G_* for model-level
    int ndim;       // 1 or 2
    int shape[2];   // [out, in] for matrices (torch Linear layout), [n, 1] for vectors
    size_t numel;
    size_t offset;  // into the flat parameter buffer
    int decay;      // AdamW weight decay applies (decays_weight)
} ParamSpec;

#define MAX_PARAMS (4 + MAX_LAYERS * 18)

// AdamW weight decay applies to the Linear weights (names ending in `_proj`, and GLA's
// `gk_proj1`/`gk_proj2`), `embed` and `lm_head`; not to norms, biases, short convs, A_log, dt_bias
// or lower_bounds (dev/reference.py's decays_weight). `name` is the table name without "layers.l.".
static int decays_weight(const char* name) {
    const char* last = strrchr(name, '.') ? strrchr(name, '.') + 1 : name;
    size_t n = strlen(last);
    return strcmp(name, "embed") == 0 || strcmp(name, "lm_head") == 0 ||
           (n >= 5 && strcmp(last + n - 5, "_proj") == 0) || strcmp(last, "gk_proj1") == 0 ||
           strcmp(last, "gk_proj2") == 0;
}

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
    p->decay = decays_weight(name);
    *offset += p->numel;
}

// a tensor of layer l's mixer, named "<mixer>.<suffix>" (e.g. "gated_deltanet.q_proj")
static void mixer_param_add(ParamSpec* t, int* n, size_t* offset, int layer, int slot, int mixer,
                            const char* suffix, int rows, int cols) {
    char name[96];
    snprintf(name, sizeof(name), "%s.%s", MIXER_NAMES[mixer], suffix);
    param_add(t, n, offset, layer, slot, name, rows, cols);
}

// Fills t[] in canonical order (dev/reference.py's parameter_specs), returns the number of tensors;
// *total = number of floats. Linear weights are [out, in]; short-conv weights [channels, W_c] with
// column W_c - 1 multiplying the current token.
static int param_table(const Config* c, ParamSpec* t, size_t* total) {
    int n = 0, d = c->d_model, I = c->mlp_hidden, Wc = c->conv_size;
    size_t off = 0;
    param_add(t, &n, &off, -1, G_EMBED, "embed", c->vocab_size, d);
    if (has_lower_bounds(c)) param_add(t, &n, &off, -1, G_LOWER_BOUNDS, "lower_bounds", c->n_layer, d);
    for (int l = 0; l < c->n_layer; l++) {
        int mix = c->pattern[l];
        param_add(t, &n, &off, l, W_ATTN_NORM, "attn_norm", d, 0);
        if (mix == MIXER_GLA) {
            int Dk = c->gla_dk, Dv = c->gla_dv, R = c->gla_gate_rank;
            mixer_param_add(t, &n, &off, l, W_GLA_Q, mix, "q_proj", Dk, d);
            mixer_param_add(t, &n, &off, l, W_GLA_K, mix, "k_proj", Dk, d);
            mixer_param_add(t, &n, &off, l, W_GLA_V, mix, "v_proj", Dv, d);
            mixer_param_add(t, &n, &off, l, W_GLA_G, mix, "g_proj", Dv, d);
            mixer_param_add(t, &n, &off, l, W_GLA_GK1, mix, "gk_proj1", R, d);
            mixer_param_add(t, &n, &off, l, W_GLA_GK2, mix, "gk_proj2", Dk, R);
            mixer_param_add(t, &n, &off, l, W_GLA_GK_BIAS, mix, "gk_bias", Dk, 0);
            mixer_param_add(t, &n, &off, l, W_GLA_G_NORM, mix, "g_norm", Dv / c->gla_heads, 0);
            mixer_param_add(t, &n, &off, l, W_GLA_O, mix, "o_proj", d, Dv);
        } else if (mix == MIXER_HGRN) {
            int D = c->hgrn_dim;
            mixer_param_add(t, &n, &off, l, W_HGRN_I, mix, "i_proj", D, d);
            mixer_param_add(t, &n, &off, l, W_HGRN_F, mix, "f_proj", D, d);
            mixer_param_add(t, &n, &off, l, W_HGRN_G, mix, "g_proj", D, d);
            mixer_param_add(t, &n, &off, l, W_HGRN_G_NORM, mix, "g_norm", D, 0);
            mixer_param_add(t, &n, &off, l, W_HGRN_O, mix, "o_proj", d, D);
        } else if (mix == MIXER_HGRN2) {  // forget dim F = H E = d
            mixer_param_add(t, &n, &off, l, W_HGRN2_Q, mix, "q_proj", d, d);
            mixer_param_add(t, &n, &off, l, W_HGRN2_F, mix, "f_proj", d, d);
            mixer_param_add(t, &n, &off, l, W_HGRN2_I, mix, "i_proj", d, d);
            mixer_param_add(t, &n, &off, l, W_HGRN2_G_NORM, mix, "g_norm", d, 0);
            mixer_param_add(t, &n, &off, l, W_HGRN2_O, mix, "o_proj", d, d);
        } else if (mix == MIXER_RETNET) {  // D_k = d, D_v = 2d
            mixer_param_add(t, &n, &off, l, W_RET_Q, mix, "q_proj", d, d);
            mixer_param_add(t, &n, &off, l, W_RET_K, mix, "k_proj", d, d);
            mixer_param_add(t, &n, &off, l, W_RET_V, mix, "v_proj", 2 * d, d);
            mixer_param_add(t, &n, &off, l, W_RET_G, mix, "g_proj", 2 * d, d);
            mixer_param_add(t, &n, &off, l, W_RET_G_NORM, mix, "g_norm", 2 * d / c->retnet_heads, 0);
            mixer_param_add(t, &n, &off, l, W_RET_O, mix, "o_proj", d, 2 * d);
        } else if (mix == MIXER_DELTANET || mix == MIXER_GATED_DELTANET) {
            int gated = mix == MIXER_GATED_DELTANET;
            int H = gated ? c->gdn_heads : c->deltanet_heads;
            int Dk = gated ? H * c->gdn_head_dim : d, Dv = gated ? Dk * c->gdn_expand_v : d;
            mixer_param_add(t, &n, &off, l, W_DELTA_Q, mix, "q_proj", Dk, d);
            mixer_param_add(t, &n, &off, l, W_DELTA_K, mix, "k_proj", Dk, d);
            mixer_param_add(t, &n, &off, l, W_DELTA_V, mix, "v_proj", Dv, d);
            if (gated) mixer_param_add(t, &n, &off, l, W_DELTA_A, mix, "a_proj", H, d);
            mixer_param_add(t, &n, &off, l, W_DELTA_B, mix, "b_proj", H, d);
            if (gated) {
                mixer_param_add(t, &n, &off, l, W_DELTA_A_LOG, mix, "A_log", H, 0);
                mixer_param_add(t, &n, &off, l, W_DELTA_DT_BIAS, mix, "dt_bias", H, 0);
            }
            mixer_param_add(t, &n, &off, l, W_DELTA_Q_CONV, mix, "q_conv", Dk, Wc);
            mixer_param_add(t, &n, &off, l, W_DELTA_K_CONV, mix, "k_conv", Dk, Wc);
            mixer_param_add(t, &n, &off, l, W_DELTA_V_CONV, mix, "v_conv", Dv, Wc);
            if (gated) mixer_param_add(t, &n, &off, l, W_DELTA_G, mix, "g_proj", Dv, d);
            mixer_param_add(t, &n, &off, l, W_DELTA_O_NORM, mix, "o_norm", Dv / H, 0);
            mixer_param_add(t, &n, &off, l, W_DELTA_O, mix, "o_proj", d, Dv);
        } else { // MIXER_ATTN
            int hd = d / c->attn_heads, kv = c->attn_kv_heads * hd;
            mixer_param_add(t, &n, &off, l, W_ATT_Q, mix, "q_proj", c->attn_heads * hd, d);
            mixer_param_add(t, &n, &off, l, W_ATT_K, mix, "k_proj", kv, d);
            mixer_param_add(t, &n, &off, l, W_ATT_V, mix, "v_proj", kv, d);
            mixer_param_add(t, &n, &off, l, W_ATT_O, mix, "o_proj", d, c->attn_heads * hd);
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

// Floating-point operations of one training step per token (forward + backward = 3x forward), the
// figure behind both trainers' GFLOP/s (CPU) and MFU (GPU): 6 per weight of every matmul (the LM head
// included, the embedding lookup not), the attention GEMMs as computed on a GPU (all T keys: 2 GEMMs
// of 2 T d per token forward), and the chunkwise linear mixers' core with chunk length `chunk` (per
// head: the intra-chunk scores and their use, 2 C (K + V), and the state's read and update, 4 K V).
// Short convs, norms and gates are left out: an estimate, as llm.c's.
static double flops_per_token(const Config* c, int T, int chunk) {
    ParamSpec* specs = (ParamSpec*)malloc_check(MAX_PARAMS * sizeof(ParamSpec));
    size_t num_params = 0;
    param_table(c, specs, &num_params);
    free(specs);
    double matmul_weights = (double)num_params;
    if (!c->tie_embeddings) matmul_weights -= (double)c->vocab_size * c->d_model; // the lookup table
    double flops = 6.0 * matmul_weights;
    for (int l = 0; l < c->n_layer; l++) {
        int mix = c->pattern[l];
        if (mix == MIXER_ATTN) {
            flops += 3.0 * 4.0 * T * c->d_model;
        } else if (mix != MIXER_HGRN) {
            int H, K, V;
            mixer_dims(c, mix, &H, &K, &V);
            flops += 3.0 * H * (2.0 * chunk * (K + V) + 4.0 * K * V);
        }
    }
    return flops;
}

// fla's init of the parameters (host memory, (total,) laid out by the table specs[0..n)): matrices
// N(0, 0.02), norm weights 1, the GLA gate bias and the lower bounds 0, GDN's A_log = log U(0, 16]
// and dt_bias = softplus⁻¹(dt), dt = exp(U(log 1e-3, log 0.1)) ≥ 1e-4. One RNG stream from seed,
// so both programs start from the same bits.
static void init_params(const ParamSpec* specs, int n, float* params, uint64_t seed) {
    uint64_t rng = seed ? seed : 1;
    for (int i = 0; i < n; i++) {
        const ParamSpec* p = &specs[i];
        float* w = params + p->offset;
        int slot = p->layer >= 0 ? p->slot : -1;
        int is_norm = (p->layer < 0 && p->slot == G_NORM) || slot == W_ATTN_NORM || slot == W_MLP_NORM ||
                      slot == W_GLA_G_NORM || slot == W_HGRN_G_NORM || slot == W_HGRN2_G_NORM ||
                      slot == W_RET_G_NORM || slot == W_DELTA_O_NORM;
        int is_zero = (p->layer < 0 && p->slot == G_LOWER_BOUNDS) || slot == W_GLA_GK_BIAS;
        for (size_t j = 0; j < p->numel; j++) {
            if (slot == W_DELTA_A_LOG) {
                w[j] = logf(16.0f * (1.0f - random_f32(&rng)));
            } else if (slot == W_DELTA_DT_BIAS) {
                float dt = expf(logf(1e-3f) + random_f32(&rng) * (logf(0.1f) - logf(1e-3f)));
                dt = fmaxf(dt, 1e-4f);
                w[j] = dt + logf(-expm1f(-dt));
            } else {
                w[j] = is_norm ? 1.0f : is_zero ? 0.0f : 0.02f * random_normal(&rng);
            }
        }
    }
}

// ----------------------------------------------------------------------------
// checkpoint: model file = header (magic, version, config) + float32 parameters in canonical order

#define CKPT_MAGIC 20261101
#define CKPT_VERSION 1
#define STATE_MAGIC 20261102
#define STATE_VERSION 1

// header layout: [0] magic [1] version [2..13] config ints [15] rope bits [16] eps bits
// [17,18] parameter count (lo, hi) [19..27] sizes of the other linear families (hgrn_dim,
// hgrn2_heads, retnet_heads, deltanet_heads, gdn_heads, gdn_head_dim, gdn_expand_v, conv_size,
// use_lower_bound; 0 in files written before they existed, which hold gla/attn models only)
// [64..64+L) pattern
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
    h[19] = c->hgrn_dim; h[20] = c->hgrn2_heads; h[21] = c->retnet_heads; h[22] = c->deltanet_heads;
    h[23] = c->gdn_heads; h[24] = c->gdn_head_dim; h[25] = c->gdn_expand_v; h[26] = c->conv_size;
    h[27] = c->use_lower_bound;
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
    c->hgrn_dim = h[19]; c->hgrn2_heads = h[20]; c->retnet_heads = h[21]; c->deltanet_heads = h[22];
    c->gdn_heads = h[23]; c->gdn_head_dim = h[24]; c->gdn_expand_v = h[25]; c->conv_size = h[26];
    c->use_lower_bound = h[27];
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

// Parses the header of a model checkpoint of `size` bytes whose first min(size, 1024) bytes are
// `head` into *c, checking magic, version, the config, the parameter count against the config and
// the file length against the count. Returns NULL or a message.
static const char* checkpoint_parse_header(const unsigned char* head, int64_t size, Config* c) {
    int32_t h[256];
    const char* bad = header_check(h, head, size, CKPT_MAGIC, CKPT_VERSION, "model checkpoint");
    if (bad) return bad;
    size_t stored;
    config_from_header(h, c, &stored);
    bad = validate_config(c);
    if (bad) return error_message("invalid config in the header: %s", bad);
    ParamSpec t[MAX_PARAMS];
    size_t expected;
    param_table(c, t, &expected);
    if (stored != expected) return error_message("header says %zu parameters, its config implies %zu", stored, expected);
    int64_t want = HEADER_BYTES + (int64_t)expected * 4;
    if (size != want)
        return error_message("file is %lld bytes, expected %lld for %zu parameters (truncated or corrupt)",
                             (long long)size, (long long)want, expected);
    return NULL;
}

// NULL when params[0..n) are all finite, else a message naming the first that is not.
static const char* params_check(const float* params, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(params[i])) return error_message("parameter %zu is not finite (corrupt checkpoint)", i);
    return NULL;
}

// Reads the config only (so the caller can allocate), validating header, sizes and file length.
static void checkpoint_read_config(const char* path, Config* c) {
    FILE* f = fopen_check(path, "rb");
    unsigned char head[HEADER_BYTES];
    int64_t size = read_head(f, path, head);
    fclose(f);
    const char* bad = checkpoint_parse_header(head, size, c);
    if (bad) fail("'%s': %s", path, bad);
}

// Reads the parameters of a checkpoint whose config must equal *c. Rejects non-finite values.
static void checkpoint_read_params(const char* path, const Config* c, float* params, size_t num_params) {
    Config stored;
    checkpoint_read_config(path, &stored);
    if (memcmp(&stored, c, sizeof(Config)) != 0) fail("'%s': config differs from the model being loaded", path);
    FILE* f = fopen_check(path, "rb");
    fseeko(f, HEADER_BYTES, SEEK_SET);
    fread_check(params, sizeof(float), num_params, f, path);
    fclose(f);
    const char* bad = params_check(params, num_params);
    if (bad) fail("'%s': %s", path, bad);
}

// ----------------------------------------------------------------------------
// tokenizer file: header [0] magic [1] version [2] kind (0 = bytes, 1 = BPE) [3] vocab size V
// [4] EOT id (-1: none) [5] number of merges M; then for each of the V tokens a uint8 length
// (1..255) and its bytes; then, for BPE, the M merges in rank order as int32 triples
// (left id, right id, merged id). Version 1 files of byte tokenizers (M = 0) read unchanged.
//
//   bytes (kind 0)  token b is the byte b for b < 256; tokens from 256 on are special (EOT)
//   BPE   (kind 1)  GPT-2's byte-level BPE: the text is cut into pieces by GPT-2's pre-tokenizer
//                   regex, each byte of a piece becomes its single-byte token, then the merges are
//                   applied lowest rank first. data/tokenizer_gpt2.c writes GPT-2's tokenizer,
//                   data/train_bpe.c learns one from a text.
// Decoding concatenates the tokens' bytes, whatever they are (a token may end inside a UTF-8
// character). Encoding never produces the EOT token: "<|endoftext|>" in a text is plain text.

#define IGNORE_INDEX (-100)  // a target the loss skips (fla's and PyTorch's convention)

#define TOKENIZER_MAGIC 20261103
#define TOKENIZER_VERSION 1
#define TOKENIZER_MAX_VOCAB (1 << 24)
#define TOKEN_MAX_BYTES 255  // lengths are stored as uint8
// bytes: 256 tokens, one per byte. BPE: GPT-2-style byte-level BPE. Symbols: a fixed vocabulary of
// named tokens for synthetic tasks (MQAR): token i is a name and one space ("k17 "); text is
// encoded by splitting it at whitespace and looking each word up.
enum { TOKENIZER_BYTES = 0, TOKENIZER_BPE = 1, TOKENIZER_SYMBOLS = 2 };

typedef struct {
    int kind;                     // TOKENIZER_BYTES, TOKENIZER_BPE or TOKENIZER_SYMBOLS
    int vocab_size;               // V
    int eot_id;                   // end-of-text token, -1: none
    unsigned char** token_bytes;  // token_bytes[i] has token_len[i] bytes
    int* token_len;
    int n_merges;                 // M
    int32_t* merges;              // (M, 3): left id, right id, merged id; the row is the rank
    // built by tokenizer_index for encoding:
    int byte_token[256];          // the single-byte token of each byte value
    size_t pair_cap;              // slots of the pair table, a power of two >= 2M
    uint64_t* pair_key;           // open addressing: (left << 32 | right) -> rank of its merge
    int32_t* pair_rank;           // -1: empty slot
} Tokenizer;

// Allocates an empty tokenizer: V tokens without bytes yet (tokenizer_set_token fills them), M
// zeroed merges. Builders fill it, then tokenizer_index or tokenizer_write.
static void tokenizer_alloc(Tokenizer* t, int kind, int vocab_size, int eot_id, int n_merges) {
    memset(t, 0, sizeof(*t));
    t->kind = kind;
    t->vocab_size = vocab_size;
    t->eot_id = eot_id;
    t->n_merges = n_merges;
    t->token_bytes = (unsigned char**)calloc_check(vocab_size, sizeof(unsigned char*));
    t->token_len = (int*)calloc_check(vocab_size, sizeof(int));
    t->merges = (int32_t*)calloc_check((size_t)n_merges * 3, sizeof(int32_t));
}

// Sets token `id` to a copy of bytes[0..len).
static void tokenizer_set_token(Tokenizer* t, int id, const unsigned char* bytes, int len) {
    free(t->token_bytes[id]);
    t->token_bytes[id] = (unsigned char*)malloc_check(len > 0 ? (size_t)len : 1);
    if (len > 0) memcpy(t->token_bytes[id], bytes, len);
    t->token_len[id] = len;
}

static void tokenizer_free(Tokenizer* t) {
    for (int i = 0; t->token_bytes && i < t->vocab_size; i++) free(t->token_bytes[i]);
    free(t->token_bytes);
    free(t->token_len);
    free(t->merges);
    free(t->pair_key);
    free(t->pair_rank);
    memset(t, 0, sizeof(*t));
}

// a 64-bit mix (murmur3's finalizer) for the pair table's slots
static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

// FNV-1a over bytes, for the hash tables of the tokenizer builders
static uint64_t hash_bytes(const unsigned char* s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

// The symbols rules of tokenizer_check (below): names of printable non-space bytes, then one space, all distinct.
static const char* symbols_check(const Tokenizer* t) {
    int V = t->vocab_size;
    if (t->n_merges != 0) return error_message("a symbols tokenizer has no merges, this one has %d", t->n_merges);
    for (int i = 0; i < V; i++) {
        const unsigned char* b = t->token_bytes[i];
        int n = t->token_len[i];
        if (n < 2 || b[n - 1] != ' ') return error_message("symbol %d is not a name followed by one space", i);
        for (int j = 0; j < n - 1; j++)
            if (b[j] <= ' ' || b[j] == 127) return error_message("symbol %d has a space or control byte in its name", i);
    }
    // distinct names: an open-addressing table of ids keyed by the name's hash
    size_t cap = 16;
    while (cap < 2 * (size_t)V) cap *= 2;
    int* slot = (int*)malloc_check(cap * sizeof(int));
    for (size_t k = 0; k < cap; k++) slot[k] = -1;
    const char* bad = NULL;
    for (int i = 0; i < V && !bad; i++) {
        size_t k = hash_bytes(t->token_bytes[i], t->token_len[i]) & (cap - 1);
        for (; slot[k] >= 0 && !bad; k = (k + 1) & (cap - 1))
            if (t->token_len[slot[k]] == t->token_len[i] && memcmp(t->token_bytes[slot[k]], t->token_bytes[i], t->token_len[i]) == 0)
                bad = error_message("symbols %d and %d have the same name", slot[k], i);
        slot[k] = i;
    }
    free(slot);
    return bad;
}

// Checks everything the file format promises and encoding relies on; returns NULL or a message
// naming the first problem (it does not exit: writers, loaders and tests share it).
//   - kind known, 1 <= V <= 2^24, EOT in [-1, V), 0 <= M <= V, every token 1..255 bytes;
//   - bytes: token b < 256 is the byte b, no merges;
//   - symbols: no merges; every token is a name of printable non-space bytes and one space, and
//     no two tokens are the same (so that encoding by name is unambiguous);
//   - BPE: each of the 256 byte values is exactly one token; merge k = (l, r, m) has ids in
//     [0, V), m's bytes are l's then r's, m is made by no other merge, and l and r are bytes or
//     made by merges before k. The last rule (true of GPT-2's merges and of any trained list) is
//     what makes bpe_piece's heap order equal GPT-2's merge loop.
static const char* tokenizer_check(const Tokenizer* t) {
    int V = t->vocab_size, M = t->n_merges;
    if (t->kind != TOKENIZER_BYTES && t->kind != TOKENIZER_BPE && t->kind != TOKENIZER_SYMBOLS)
        return error_message("unknown tokenizer kind %d (0 = bytes, 1 = BPE, 2 = symbols)", t->kind);
    if (V < 1 || V > TOKENIZER_MAX_VOCAB) return error_message("vocab size %d outside [1, %d]", V, TOKENIZER_MAX_VOCAB);
    if (t->eot_id < -1 || t->eot_id >= V) return error_message("EOT id %d outside [-1, %d)", t->eot_id, V);
    if (M < 0 || M > V) return error_message("%d merges for %d tokens", M, V);
    for (int i = 0; i < V; i++)
        if (t->token_len[i] < 1 || t->token_len[i] > TOKEN_MAX_BYTES)
            return error_message("token %d is %d bytes long; a token has 1 to %d bytes (the length is stored as uint8)",
                                   i, t->token_len[i], TOKEN_MAX_BYTES);
    if (t->kind == TOKENIZER_BYTES) {
        if (V < 256) return error_message("a byte tokenizer needs 256 tokens, this one has %d", V);
        if (M != 0) return error_message("a byte tokenizer has no merges, this one has %d", M);
        for (int b = 0; b < 256; b++)
            if (t->token_len[b] != 1 || t->token_bytes[b][0] != b)
                return error_message("byte tokenizer: token %d is not the byte 0x%02x", b, b);
        return NULL;
    }
    if (t->kind == TOKENIZER_SYMBOLS) return symbols_check(t);
    int byte_token[256];
    for (int b = 0; b < 256; b++) byte_token[b] = -1;
    for (int i = 0; i < V; i++) {
        if (t->token_len[i] != 1) continue;
        int b = t->token_bytes[i][0];
        if (byte_token[b] >= 0) return error_message("tokens %d and %d are both the byte 0x%02x", byte_token[b], i, b);
        byte_token[b] = i;
    }
    for (int b = 0; b < 256; b++)
        if (byte_token[b] < 0) return error_message("no token is the byte 0x%02x (byte-level BPE needs all 256)", b);
    // made_at[i]: -1 for byte tokens, the rank of the merge that makes token i, INT32_MAX: not (yet) made
    int* made_at = (int*)malloc_check((size_t)V * sizeof(int));
    for (int i = 0; i < V; i++) made_at[i] = t->token_len[i] == 1 ? -1 : INT32_MAX;
    const char* bad = NULL;
    for (int k = 0; k < M && !bad; k++) {
        int l = t->merges[3 * k], r = t->merges[3 * k + 1], m = t->merges[3 * k + 2];
        if (l < 0 || l >= V || r < 0 || r >= V || m < 0 || m >= V)
            bad = error_message("merge %d (%d, %d -> %d) has a token id outside [0, %d)", k, l, r, m, V);
        else if (made_at[m] != INT32_MAX)
            bad = error_message("merge %d makes token %d, which is a byte or made by merge %d already", k, m, made_at[m]);
        else if (made_at[l] >= k || made_at[r] >= k)
            bad = error_message("merge %d (%d, %d -> %d) uses a token that no earlier merge makes "
                                  "(merges must be in the order they were learned)", k, l, r, m);
        else if (t->token_len[m] != t->token_len[l] + t->token_len[r] ||
                 memcmp(t->token_bytes[m], t->token_bytes[l], t->token_len[l]) != 0 ||
                 memcmp(t->token_bytes[m] + t->token_len[l], t->token_bytes[r], t->token_len[r]) != 0)
            bad = error_message("merge %d: token %d is not the bytes of token %d followed by those of token %d", k, m, l, r);
        else
            made_at[m] = k;
    }
    free(made_at);
    return bad;
}

static uint64_t tokenizer_pair_key(int left, int right) { return (uint64_t)(uint32_t)left << 32 | (uint32_t)right; }

// Builds what encoding needs from a valid tokenizer: byte_token[] and the (left, right) -> rank table.
static void tokenizer_index(Tokenizer* t) {
    for (int b = 0; b < 256; b++) t->byte_token[b] = -1;
    for (int i = t->vocab_size - 1; i >= 0; i--) // the lowest id wins (byte tokenizers: token b)
        if (t->token_len[i] == 1) t->byte_token[t->token_bytes[i][0]] = i;
    free(t->pair_key);
    free(t->pair_rank);
    t->pair_cap = 16;
    while (t->pair_cap < 2 * (size_t)t->n_merges) t->pair_cap *= 2;
    t->pair_key = (uint64_t*)malloc_check(t->pair_cap * sizeof(uint64_t));
    t->pair_rank = (int32_t*)malloc_check(t->pair_cap * sizeof(int32_t));
    for (size_t s = 0; s < t->pair_cap; s++) t->pair_rank[s] = -1;
    for (int k = 0; k < t->n_merges; k++) {
        uint64_t key = tokenizer_pair_key(t->merges[3 * k], t->merges[3 * k + 1]);
        size_t s = hash_u64(key) & (t->pair_cap - 1);
        while (t->pair_rank[s] >= 0 && t->pair_key[s] != key) s = (s + 1) & (t->pair_cap - 1);
        if (t->pair_rank[s] < 0) { // a pair listed twice keeps its first (lowest) rank
            t->pair_key[s] = key;
            t->pair_rank[s] = k;
        }
    }
}

// The rank of the merge of (left, right), or -1 when there is none.
static int tokenizer_pair_rank(const Tokenizer* t, int left, int right) {
    uint64_t key = tokenizer_pair_key(left, right);
    for (size_t s = hash_u64(key) & (t->pair_cap - 1);; s = (s + 1) & (t->pair_cap - 1)) {
        if (t->pair_rank[s] < 0) return -1;
        if (t->pair_key[s] == key) return t->pair_rank[s];
    }
}

// Writes a tokenizer file (atomically), refusing a tokenizer that tokenizer_check rejects.
static void tokenizer_write(const Tokenizer* t, const char* path) {
    const char* bad = tokenizer_check(t);
    if (bad) fail("refusing to write tokenizer '%s': %s", path, bad);
    char tmp[PATH_CAP];
    int32_t h[256] = {TOKENIZER_MAGIC, TOKENIZER_VERSION, t->kind, t->vocab_size, t->eot_id, t->n_merges};
    FILE* f = atomic_open(path, tmp);
    fwrite_check(h, sizeof(int32_t), 256, f, tmp);
    for (int i = 0; i < t->vocab_size; i++) {
        unsigned char len = (unsigned char)t->token_len[i];
        fwrite_check(&len, 1, 1, f, tmp);
        fwrite_check(t->token_bytes[i], 1, len, f, tmp);
    }
    fwrite_check(t->merges, sizeof(int32_t), (size_t)t->n_merges * 3, f, tmp);
    atomic_commit(f, tmp, path);
}

// The byte-level tokenizer in memory: 256 tokens, token b = byte b, no EOT, no merges.
static void tokenizer_init_bytes(Tokenizer* t) {
    tokenizer_alloc(t, TOKENIZER_BYTES, 256, -1, 0);
    for (int b = 0; b < 256; b++) {
        unsigned char byte = (unsigned char)b;
        tokenizer_set_token(t, b, &byte, 1);
    }
    tokenizer_index(t);
}

static void tokenizer_write_bytes(const char* path) {
    Tokenizer t;
    tokenizer_init_bytes(&t);
    tokenizer_write(&t, path);
    tokenizer_free(&t);
}

// Parses a whole tokenizer file data[0..size) into *t and checks it with tokenizer_check. Returns
// NULL, or a message after freeing what it allocated. Does not index t (tokenizer_index does).
static const char* tokenizer_parse(Tokenizer* t, const unsigned char* data, size_t size) {
    int32_t h[256];
    memset(t, 0, sizeof(*t));
    const char* bad = header_check(h, data, (int64_t)size, TOKENIZER_MAGIC, TOKENIZER_VERSION, "tokenizer file");
    if (bad) return bad;
    int kind = h[2], V = h[3], eot = h[4], M = h[5];
    // the sizes first, so that a corrupt header cannot make us allocate or read absurd amounts
    if (kind != TOKENIZER_BYTES && kind != TOKENIZER_BPE && kind != TOKENIZER_SYMBOLS)
        return error_message("unknown tokenizer kind %d (this build reads 0 = bytes, 1 = BPE, 2 = symbols)", kind);
    if (V < 1 || V > TOKENIZER_MAX_VOCAB)
        return error_message("vocab size %d outside [1, %d] (corrupt header)", V, TOKENIZER_MAX_VOCAB);
    if (M < 0 || M > V) return error_message("%d merges for %d tokens (corrupt header)", M, V);
    int64_t merge_bytes = 12 * (int64_t)M, least = HEADER_BYTES + 2 * (int64_t)V + merge_bytes;
    if ((int64_t)size < least)
        return error_message("truncated: %d tokens and %d merges need at least %lld bytes, the file has %zu", V, M,
                             (long long)least, size);
    tokenizer_alloc(t, kind, V, eot, M);
    int64_t pos = HEADER_BYTES;
    for (int i = 0; i < V && !bad; i++) {
        int len = data[pos];
        // what must still follow this token's bytes: the other tokens (>= 2 bytes each), the merges
        int64_t room = (int64_t)size - (pos + 1) - 2 * (int64_t)(V - 1 - i) - merge_bytes;
        if (len == 0) bad = error_message("token %d has length 0 (corrupt file)", i);
        else if (len > room)
            bad = error_message("token %d says it has %d bytes, but the file has room for %lld (truncated, or a "
                                "corrupt length)", i, len, (long long)room);
        else tokenizer_set_token(t, i, data + pos + 1, len);
        pos += 1 + len;
    }
    if (!bad && (int64_t)size - pos != merge_bytes)
        bad = error_message("%lld bytes follow the %d tokens, the %d merges take %lld (truncated or corrupt)",
                            (long long)((int64_t)size - pos), V, M, (long long)merge_bytes);
    if (!bad) {
        memcpy(t->merges, data + pos, (size_t)merge_bytes);
        const char* why = tokenizer_check(t);
        if (why) {
            char copy[sizeof(error_text)];
            snprintf(copy, sizeof(copy), "%s", why);
            bad = error_message("corrupt tokenizer: %s (rebuild it)", copy);
        }
    }
    if (bad) tokenizer_free(t);
    return bad;
}

// Loads and checks a tokenizer file, then indexes it for encoding. Any problem exits with a
// message naming the file, what was expected and what was found.
static void tokenizer_load(Tokenizer* t, const char* path) {
    size_t size;
    unsigned char* data = read_whole_file(path, &size);
    const char* bad = tokenizer_parse(t, data, size);
    free(data);
    if (bad) fail("'%s': %s", path, bad);
    tokenizer_index(t);
}

// A 32-bit fingerprint of what the tokenizer encodes to (kind, EOT, every token's bytes, the merges),
// never 0; shards record the one they were written with.
static uint32_t tokenizer_fingerprint(const Tokenizer* t) {
    uint64_t h = hash_u64(((uint64_t)(uint32_t)t->kind << 32) ^ (uint32_t)t->vocab_size) ^ hash_u64((uint64_t)(int64_t)t->eot_id);
    for (int i = 0; i < t->vocab_size; i++) h = hash_u64(h ^ hash_bytes(t->token_bytes[i], (size_t)t->token_len[i]));
    h ^= hash_bytes((const unsigned char*)t->merges, (size_t)t->n_merges * 3 * sizeof(int32_t));
    uint32_t fp = (uint32_t)(h ^ (h >> 32));
    return fp ? fp : 1;
}

// Writes the bytes of one token, escaping what would garble a terminal.
static void tokenizer_print(const Tokenizer* t, int id, FILE* out) {
    for (int i = 0; i < t->token_len[id]; i++) {
        unsigned char b = t->token_bytes[id][i];
        if (b == '\n' || b == '\t' || (b >= 32 && b != 127)) fputc(b, out);
        else fprintf(out, "\\x%02x", b);
    }
}

// Decodes ids[0..n) into *text (malloc'd, NUL-terminated for convenience): the tokens' bytes one
// after the other. Returns the byte count. Fails on an id outside the vocabulary.
static size_t tokenizer_decode(const Tokenizer* t, const int* ids, size_t n, unsigned char** text) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab_size)
            fail("cannot decode token id %d (position %zu): outside the vocabulary [0, %d)", ids[i], i, t->vocab_size);
        total += t->token_len[ids[i]];
    }
    unsigned char* out = (unsigned char*)malloc_check(total + 1);
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(out + pos, t->token_bytes[ids[i]], t->token_len[ids[i]]);
        pos += t->token_len[ids[i]];
    }
    out[total] = 0;
    *text = out;
    return total;
}

// How many bytes of text ids[0..n) stand for: the sum of their lengths, the EOT token counting 0
// (it marks a document boundary, not text), as do ignored targets (IGNORE_INDEX). Loss in bits per
// byte = sum of -log2 p / this.
static double tokens_byte_count(const Tokenizer* t, const int* ids, size_t n) {
    double bytes = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == IGNORE_INDEX) continue;
        if (ids[i] < 0 || ids[i] >= t->vocab_size)
            fail("token id %d (position %zu) outside the vocabulary [0, %d)", ids[i], i, t->vocab_size);
        if (ids[i] != t->eot_id) bytes += t->token_len[ids[i]];
    }
    return bytes;
}

// ---- GPT-2's pre-tokenizer
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// written out by hand over UTF-8 text. A byte that does not start a valid UTF-8 character counts
// as one character of class "other" (the regex itself only ever sees valid text).

enum { CH_OTHER = 0, CH_LETTER = 1, CH_NUMBER = 2, CH_SPACE = 3 };

// {first, last, class} ranges of code points: 1 = \p{L}, 2 = \p{N}, 3 = \s as node's regex engine
// defines them (the reference encoder, npm gpt-3-encoder, runs under node); others are CH_OTHER.
// Generated from node's own regex engine by dev/unicode_classes.js: do not edit by hand.
static const uint32_t UNICODE_CLASSES[][3] = {
// BEGIN generated by dev/unicode_classes.js
// 840 ranges from node 20.20.2, Unicode 17.0 (dev/unicode_classes.js --update)
{0x9,0xd,3}, {0x20,0x20,3}, {0x30,0x39,2}, {0x41,0x5a,1}, {0x61,0x7a,1}, {0xa0,0xa0,3}, {0xaa,0xaa,1},
{0xb2,0xb3,2}, {0xb5,0xb5,1}, {0xb9,0xb9,2}, {0xba,0xba,1}, {0xbc,0xbe,2}, {0xc0,0xd6,1}, {0xd8,0xf6,1},
{0xf8,0x2c1,1}, {0x2c6,0x2d1,1}, {0x2e0,0x2e4,1}, {0x2ec,0x2ec,1}, {0x2ee,0x2ee,1}, {0x370,0x374,1},
{0x376,0x377,1}, {0x37a,0x37d,1}, {0x37f,0x37f,1}, {0x386,0x386,1}, {0x388,0x38a,1}, {0x38c,0x38c,1},
{0x38e,0x3a1,1}, {0x3a3,0x3f5,1}, {0x3f7,0x481,1}, {0x48a,0x52f,1}, {0x531,0x556,1}, {0x559,0x559,1},
{0x560,0x588,1}, {0x5d0,0x5ea,1}, {0x5ef,0x5f2,1}, {0x620,0x64a,1}, {0x660,0x669,2}, {0x66e,0x66f,1},
{0x671,0x6d3,1}, {0x6d5,0x6d5,1}, {0x6e5,0x6e6,1}, {0x6ee,0x6ef,1}, {0x6f0,0x6f9,2}, {0x6fa,0x6fc,1},
{0x6ff,0x6ff,1}, {0x710,0x710,1}, {0x712,0x72f,1}, {0x74d,0x7a5,1}, {0x7b1,0x7b1,1}, {0x7c0,0x7c9,2},
{0x7ca,0x7ea,1}, {0x7f4,0x7f5,1}, {0x7fa,0x7fa,1}, {0x800,0x815,1}, {0x81a,0x81a,1}, {0x824,0x824,1},
{0x828,0x828,1}, {0x840,0x858,1}, {0x860,0x86a,1}, {0x870,0x887,1}, {0x889,0x88f,1}, {0x8a0,0x8c9,1},
{0x904,0x939,1}, {0x93d,0x93d,1}, {0x950,0x950,1}, {0x958,0x961,1}, {0x966,0x96f,2}, {0x971,0x980,1},
{0x985,0x98c,1}, {0x98f,0x990,1}, {0x993,0x9a8,1}, {0x9aa,0x9b0,1}, {0x9b2,0x9b2,1}, {0x9b6,0x9b9,1},
{0x9bd,0x9bd,1}, {0x9ce,0x9ce,1}, {0x9dc,0x9dd,1}, {0x9df,0x9e1,1}, {0x9e6,0x9ef,2}, {0x9f0,0x9f1,1},
{0x9f4,0x9f9,2}, {0x9fc,0x9fc,1}, {0xa05,0xa0a,1}, {0xa0f,0xa10,1}, {0xa13,0xa28,1}, {0xa2a,0xa30,1},
{0xa32,0xa33,1}, {0xa35,0xa36,1}, {0xa38,0xa39,1}, {0xa59,0xa5c,1}, {0xa5e,0xa5e,1}, {0xa66,0xa6f,2},
{0xa72,0xa74,1}, {0xa85,0xa8d,1}, {0xa8f,0xa91,1}, {0xa93,0xaa8,1}, {0xaaa,0xab0,1}, {0xab2,0xab3,1},
{0xab5,0xab9,1}, {0xabd,0xabd,1}, {0xad0,0xad0,1}, {0xae0,0xae1,1}, {0xae6,0xaef,2}, {0xaf9,0xaf9,1},
{0xb05,0xb0c,1}, {0xb0f,0xb10,1}, {0xb13,0xb28,1}, {0xb2a,0xb30,1}, {0xb32,0xb33,1}, {0xb35,0xb39,1},
{0xb3d,0xb3d,1}, {0xb5c,0xb5d,1}, {0xb5f,0xb61,1}, {0xb66,0xb6f,2}, {0xb71,0xb71,1}, {0xb72,0xb77,2},
{0xb83,0xb83,1}, {0xb85,0xb8a,1}, {0xb8e,0xb90,1}, {0xb92,0xb95,1}, {0xb99,0xb9a,1}, {0xb9c,0xb9c,1},
{0xb9e,0xb9f,1}, {0xba3,0xba4,1}, {0xba8,0xbaa,1}, {0xbae,0xbb9,1}, {0xbd0,0xbd0,1}, {0xbe6,0xbf2,2},
{0xc05,0xc0c,1}, {0xc0e,0xc10,1}, {0xc12,0xc28,1}, {0xc2a,0xc39,1}, {0xc3d,0xc3d,1}, {0xc58,0xc5a,1},
{0xc5c,0xc5d,1}, {0xc60,0xc61,1}, {0xc66,0xc6f,2}, {0xc78,0xc7e,2}, {0xc80,0xc80,1}, {0xc85,0xc8c,1},
{0xc8e,0xc90,1}, {0xc92,0xca8,1}, {0xcaa,0xcb3,1}, {0xcb5,0xcb9,1}, {0xcbd,0xcbd,1}, {0xcdc,0xcde,1},
{0xce0,0xce1,1}, {0xce6,0xcef,2}, {0xcf1,0xcf2,1}, {0xd04,0xd0c,1}, {0xd0e,0xd10,1}, {0xd12,0xd3a,1},
{0xd3d,0xd3d,1}, {0xd4e,0xd4e,1}, {0xd54,0xd56,1}, {0xd58,0xd5e,2}, {0xd5f,0xd61,1}, {0xd66,0xd78,2},
{0xd7a,0xd7f,1}, {0xd85,0xd96,1}, {0xd9a,0xdb1,1}, {0xdb3,0xdbb,1}, {0xdbd,0xdbd,1}, {0xdc0,0xdc6,1},
{0xde6,0xdef,2}, {0xe01,0xe30,1}, {0xe32,0xe33,1}, {0xe40,0xe46,1}, {0xe50,0xe59,2}, {0xe81,0xe82,1},
{0xe84,0xe84,1}, {0xe86,0xe8a,1}, {0xe8c,0xea3,1}, {0xea5,0xea5,1}, {0xea7,0xeb0,1}, {0xeb2,0xeb3,1},
{0xebd,0xebd,1}, {0xec0,0xec4,1}, {0xec6,0xec6,1}, {0xed0,0xed9,2}, {0xedc,0xedf,1}, {0xf00,0xf00,1},
{0xf20,0xf33,2}, {0xf40,0xf47,1}, {0xf49,0xf6c,1}, {0xf88,0xf8c,1}, {0x1000,0x102a,1}, {0x103f,0x103f,1},
{0x1040,0x1049,2}, {0x1050,0x1055,1}, {0x105a,0x105d,1}, {0x1061,0x1061,1}, {0x1065,0x1066,1},
{0x106e,0x1070,1}, {0x1075,0x1081,1}, {0x108e,0x108e,1}, {0x1090,0x1099,2}, {0x10a0,0x10c5,1},
{0x10c7,0x10c7,1}, {0x10cd,0x10cd,1}, {0x10d0,0x10fa,1}, {0x10fc,0x1248,1}, {0x124a,0x124d,1},
{0x1250,0x1256,1}, {0x1258,0x1258,1}, {0x125a,0x125d,1}, {0x1260,0x1288,1}, {0x128a,0x128d,1},
{0x1290,0x12b0,1}, {0x12b2,0x12b5,1}, {0x12b8,0x12be,1}, {0x12c0,0x12c0,1}, {0x12c2,0x12c5,1},
{0x12c8,0x12d6,1}, {0x12d8,0x1310,1}, {0x1312,0x1315,1}, {0x1318,0x135a,1}, {0x1369,0x137c,2},
{0x1380,0x138f,1}, {0x13a0,0x13f5,1}, {0x13f8,0x13fd,1}, {0x1401,0x166c,1}, {0x166f,0x167f,1},
{0x1680,0x1680,3}, {0x1681,0x169a,1}, {0x16a0,0x16ea,1}, {0x16ee,0x16f0,2}, {0x16f1,0x16f8,1},
{0x1700,0x1711,1}, {0x171f,0x1731,1}, {0x1740,0x1751,1}, {0x1760,0x176c,1}, {0x176e,0x1770,1},
{0x1780,0x17b3,1}, {0x17d7,0x17d7,1}, {0x17dc,0x17dc,1}, {0x17e0,0x17e9,2}, {0x17f0,0x17f9,2},
{0x1810,0x1819,2}, {0x1820,0x1878,1}, {0x1880,0x1884,1}, {0x1887,0x18a8,1}, {0x18aa,0x18aa,1},
{0x18b0,0x18f5,1}, {0x1900,0x191e,1}, {0x1946,0x194f,2}, {0x1950,0x196d,1}, {0x1970,0x1974,1},
{0x1980,0x19ab,1}, {0x19b0,0x19c9,1}, {0x19d0,0x19da,2}, {0x1a00,0x1a16,1}, {0x1a20,0x1a54,1},
{0x1a80,0x1a89,2}, {0x1a90,0x1a99,2}, {0x1aa7,0x1aa7,1}, {0x1b05,0x1b33,1}, {0x1b45,0x1b4c,1},
{0x1b50,0x1b59,2}, {0x1b83,0x1ba0,1}, {0x1bae,0x1baf,1}, {0x1bb0,0x1bb9,2}, {0x1bba,0x1be5,1},
{0x1c00,0x1c23,1}, {0x1c40,0x1c49,2}, {0x1c4d,0x1c4f,1}, {0x1c50,0x1c59,2}, {0x1c5a,0x1c7d,1},
{0x1c80,0x1c8a,1}, {0x1c90,0x1cba,1}, {0x1cbd,0x1cbf,1}, {0x1ce9,0x1cec,1}, {0x1cee,0x1cf3,1},
{0x1cf5,0x1cf6,1}, {0x1cfa,0x1cfa,1}, {0x1d00,0x1dbf,1}, {0x1e00,0x1f15,1}, {0x1f18,0x1f1d,1},
{0x1f20,0x1f45,1}, {0x1f48,0x1f4d,1}, {0x1f50,0x1f57,1}, {0x1f59,0x1f59,1}, {0x1f5b,0x1f5b,1},
{0x1f5d,0x1f5d,1}, {0x1f5f,0x1f7d,1}, {0x1f80,0x1fb4,1}, {0x1fb6,0x1fbc,1}, {0x1fbe,0x1fbe,1},
{0x1fc2,0x1fc4,1}, {0x1fc6,0x1fcc,1}, {0x1fd0,0x1fd3,1}, {0x1fd6,0x1fdb,1}, {0x1fe0,0x1fec,1},
{0x1ff2,0x1ff4,1}, {0x1ff6,0x1ffc,1}, {0x2000,0x200a,3}, {0x2028,0x2029,3}, {0x202f,0x202f,3},
{0x205f,0x205f,3}, {0x2070,0x2070,2}, {0x2071,0x2071,1}, {0x2074,0x2079,2}, {0x207f,0x207f,1},
{0x2080,0x2089,2}, {0x2090,0x209c,1}, {0x2102,0x2102,1}, {0x2107,0x2107,1}, {0x210a,0x2113,1},
{0x2115,0x2115,1}, {0x2119,0x211d,1}, {0x2124,0x2124,1}, {0x2126,0x2126,1}, {0x2128,0x2128,1},
{0x212a,0x212d,1}, {0x212f,0x2139,1}, {0x213c,0x213f,1}, {0x2145,0x2149,1}, {0x214e,0x214e,1},
{0x2150,0x2182,2}, {0x2183,0x2184,1}, {0x2185,0x2189,2}, {0x2460,0x249b,2}, {0x24ea,0x24ff,2},
{0x2776,0x2793,2}, {0x2c00,0x2ce4,1}, {0x2ceb,0x2cee,1}, {0x2cf2,0x2cf3,1}, {0x2cfd,0x2cfd,2},
{0x2d00,0x2d25,1}, {0x2d27,0x2d27,1}, {0x2d2d,0x2d2d,1}, {0x2d30,0x2d67,1}, {0x2d6f,0x2d6f,1},
{0x2d80,0x2d96,1}, {0x2da0,0x2da6,1}, {0x2da8,0x2dae,1}, {0x2db0,0x2db6,1}, {0x2db8,0x2dbe,1},
{0x2dc0,0x2dc6,1}, {0x2dc8,0x2dce,1}, {0x2dd0,0x2dd6,1}, {0x2dd8,0x2dde,1}, {0x2e2f,0x2e2f,1},
{0x3000,0x3000,3}, {0x3005,0x3006,1}, {0x3007,0x3007,2}, {0x3021,0x3029,2}, {0x3031,0x3035,1},
{0x3038,0x303a,2}, {0x303b,0x303c,1}, {0x3041,0x3096,1}, {0x309d,0x309f,1}, {0x30a1,0x30fa,1},
{0x30fc,0x30ff,1}, {0x3105,0x312f,1}, {0x3131,0x318e,1}, {0x3192,0x3195,2}, {0x31a0,0x31bf,1},
{0x31f0,0x31ff,1}, {0x3220,0x3229,2}, {0x3248,0x324f,2}, {0x3251,0x325f,2}, {0x3280,0x3289,2},
{0x32b1,0x32bf,2}, {0x3400,0x4dbf,1}, {0x4e00,0xa48c,1}, {0xa4d0,0xa4fd,1}, {0xa500,0xa60c,1},
{0xa610,0xa61f,1}, {0xa620,0xa629,2}, {0xa62a,0xa62b,1}, {0xa640,0xa66e,1}, {0xa67f,0xa69d,1},
{0xa6a0,0xa6e5,1}, {0xa6e6,0xa6ef,2}, {0xa717,0xa71f,1}, {0xa722,0xa788,1}, {0xa78b,0xa7dc,1},
{0xa7f1,0xa801,1}, {0xa803,0xa805,1}, {0xa807,0xa80a,1}, {0xa80c,0xa822,1}, {0xa830,0xa835,2},
{0xa840,0xa873,1}, {0xa882,0xa8b3,1}, {0xa8d0,0xa8d9,2}, {0xa8f2,0xa8f7,1}, {0xa8fb,0xa8fb,1},
{0xa8fd,0xa8fe,1}, {0xa900,0xa909,2}, {0xa90a,0xa925,1}, {0xa930,0xa946,1}, {0xa960,0xa97c,1},
{0xa984,0xa9b2,1}, {0xa9cf,0xa9cf,1}, {0xa9d0,0xa9d9,2}, {0xa9e0,0xa9e4,1}, {0xa9e6,0xa9ef,1},
{0xa9f0,0xa9f9,2}, {0xa9fa,0xa9fe,1}, {0xaa00,0xaa28,1}, {0xaa40,0xaa42,1}, {0xaa44,0xaa4b,1},
{0xaa50,0xaa59,2}, {0xaa60,0xaa76,1}, {0xaa7a,0xaa7a,1}, {0xaa7e,0xaaaf,1}, {0xaab1,0xaab1,1},
{0xaab5,0xaab6,1}, {0xaab9,0xaabd,1}, {0xaac0,0xaac0,1}, {0xaac2,0xaac2,1}, {0xaadb,0xaadd,1},
{0xaae0,0xaaea,1}, {0xaaf2,0xaaf4,1}, {0xab01,0xab06,1}, {0xab09,0xab0e,1}, {0xab11,0xab16,1},
{0xab20,0xab26,1}, {0xab28,0xab2e,1}, {0xab30,0xab5a,1}, {0xab5c,0xab69,1}, {0xab70,0xabe2,1},
{0xabf0,0xabf9,2}, {0xac00,0xd7a3,1}, {0xd7b0,0xd7c6,1}, {0xd7cb,0xd7fb,1}, {0xf900,0xfa6d,1},
{0xfa70,0xfad9,1}, {0xfb00,0xfb06,1}, {0xfb13,0xfb17,1}, {0xfb1d,0xfb1d,1}, {0xfb1f,0xfb28,1},
{0xfb2a,0xfb36,1}, {0xfb38,0xfb3c,1}, {0xfb3e,0xfb3e,1}, {0xfb40,0xfb41,1}, {0xfb43,0xfb44,1},
{0xfb46,0xfbb1,1}, {0xfbd3,0xfd3d,1}, {0xfd50,0xfd8f,1}, {0xfd92,0xfdc7,1}, {0xfdf0,0xfdfb,1},
{0xfe70,0xfe74,1}, {0xfe76,0xfefc,1}, {0xfeff,0xfeff,3}, {0xff10,0xff19,2}, {0xff21,0xff3a,1},
{0xff41,0xff5a,1}, {0xff66,0xffbe,1}, {0xffc2,0xffc7,1}, {0xffca,0xffcf,1}, {0xffd2,0xffd7,1},
{0xffda,0xffdc,1}, {0x10000,0x1000b,1}, {0x1000d,0x10026,1}, {0x10028,0x1003a,1}, {0x1003c,0x1003d,1},
{0x1003f,0x1004d,1}, {0x10050,0x1005d,1}, {0x10080,0x100fa,1}, {0x10107,0x10133,2}, {0x10140,0x10178,2},
{0x1018a,0x1018b,2}, {0x10280,0x1029c,1}, {0x102a0,0x102d0,1}, {0x102e1,0x102fb,2}, {0x10300,0x1031f,1},
{0x10320,0x10323,2}, {0x1032d,0x10340,1}, {0x10341,0x10341,2}, {0x10342,0x10349,1}, {0x1034a,0x1034a,2},
{0x10350,0x10375,1}, {0x10380,0x1039d,1}, {0x103a0,0x103c3,1}, {0x103c8,0x103cf,1}, {0x103d1,0x103d5,2},
{0x10400,0x1049d,1}, {0x104a0,0x104a9,2}, {0x104b0,0x104d3,1}, {0x104d8,0x104fb,1}, {0x10500,0x10527,1},
{0x10530,0x10563,1}, {0x10570,0x1057a,1}, {0x1057c,0x1058a,1}, {0x1058c,0x10592,1}, {0x10594,0x10595,1},
{0x10597,0x105a1,1}, {0x105a3,0x105b1,1}, {0x105b3,0x105b9,1}, {0x105bb,0x105bc,1}, {0x105c0,0x105f3,1},
{0x10600,0x10736,1}, {0x10740,0x10755,1}, {0x10760,0x10767,1}, {0x10780,0x10785,1}, {0x10787,0x107b0,1},
{0x107b2,0x107ba,1}, {0x10800,0x10805,1}, {0x10808,0x10808,1}, {0x1080a,0x10835,1}, {0x10837,0x10838,1},
{0x1083c,0x1083c,1}, {0x1083f,0x10855,1}, {0x10858,0x1085f,2}, {0x10860,0x10876,1}, {0x10879,0x1087f,2},
{0x10880,0x1089e,1}, {0x108a7,0x108af,2}, {0x108e0,0x108f2,1}, {0x108f4,0x108f5,1}, {0x108fb,0x108ff,2},
{0x10900,0x10915,1}, {0x10916,0x1091b,2}, {0x10920,0x10939,1}, {0x10940,0x10959,1}, {0x10980,0x109b7,1},
{0x109bc,0x109bd,2}, {0x109be,0x109bf,1}, {0x109c0,0x109cf,2}, {0x109d2,0x109ff,2}, {0x10a00,0x10a00,1},
{0x10a10,0x10a13,1}, {0x10a15,0x10a17,1}, {0x10a19,0x10a35,1}, {0x10a40,0x10a48,2}, {0x10a60,0x10a7c,1},
{0x10a7d,0x10a7e,2}, {0x10a80,0x10a9c,1}, {0x10a9d,0x10a9f,2}, {0x10ac0,0x10ac7,1}, {0x10ac9,0x10ae4,1},
{0x10aeb,0x10aef,2}, {0x10b00,0x10b35,1}, {0x10b40,0x10b55,1}, {0x10b58,0x10b5f,2}, {0x10b60,0x10b72,1},
{0x10b78,0x10b7f,2}, {0x10b80,0x10b91,1}, {0x10ba9,0x10baf,2}, {0x10c00,0x10c48,1}, {0x10c80,0x10cb2,1},
{0x10cc0,0x10cf2,1}, {0x10cfa,0x10cff,2}, {0x10d00,0x10d23,1}, {0x10d30,0x10d39,2}, {0x10d40,0x10d49,2},
{0x10d4a,0x10d65,1}, {0x10d6f,0x10d85,1}, {0x10e60,0x10e7e,2}, {0x10e80,0x10ea9,1}, {0x10eb0,0x10eb1,1},
{0x10ec2,0x10ec7,1}, {0x10f00,0x10f1c,1}, {0x10f1d,0x10f26,2}, {0x10f27,0x10f27,1}, {0x10f30,0x10f45,1},
{0x10f51,0x10f54,2}, {0x10f70,0x10f81,1}, {0x10fb0,0x10fc4,1}, {0x10fc5,0x10fcb,2}, {0x10fe0,0x10ff6,1},
{0x11003,0x11037,1}, {0x11052,0x1106f,2}, {0x11071,0x11072,1}, {0x11075,0x11075,1}, {0x11083,0x110af,1},
{0x110d0,0x110e8,1}, {0x110f0,0x110f9,2}, {0x11103,0x11126,1}, {0x11136,0x1113f,2}, {0x11144,0x11144,1},
{0x11147,0x11147,1}, {0x11150,0x11172,1}, {0x11176,0x11176,1}, {0x11183,0x111b2,1}, {0x111c1,0x111c4,1},
{0x111d0,0x111d9,2}, {0x111da,0x111da,1}, {0x111dc,0x111dc,1}, {0x111e1,0x111f4,2}, {0x11200,0x11211,1},
{0x11213,0x1122b,1}, {0x1123f,0x11240,1}, {0x11280,0x11286,1}, {0x11288,0x11288,1}, {0x1128a,0x1128d,1},
{0x1128f,0x1129d,1}, {0x1129f,0x112a8,1}, {0x112b0,0x112de,1}, {0x112f0,0x112f9,2}, {0x11305,0x1130c,1},
{0x1130f,0x11310,1}, {0x11313,0x11328,1}, {0x1132a,0x11330,1}, {0x11332,0x11333,1}, {0x11335,0x11339,1},
{0x1133d,0x1133d,1}, {0x11350,0x11350,1}, {0x1135d,0x11361,1}, {0x11380,0x11389,1}, {0x1138b,0x1138b,1},
{0x1138e,0x1138e,1}, {0x11390,0x113b5,1}, {0x113b7,0x113b7,1}, {0x113d1,0x113d1,1}, {0x113d3,0x113d3,1},
{0x11400,0x11434,1}, {0x11447,0x1144a,1}, {0x11450,0x11459,2}, {0x1145f,0x11461,1}, {0x11480,0x114af,1},
{0x114c4,0x114c5,1}, {0x114c7,0x114c7,1}, {0x114d0,0x114d9,2}, {0x11580,0x115ae,1}, {0x115d8,0x115db,1},
{0x11600,0x1162f,1}, {0x11644,0x11644,1}, {0x11650,0x11659,2}, {0x11680,0x116aa,1}, {0x116b8,0x116b8,1},
{0x116c0,0x116c9,2}, {0x116d0,0x116e3,2}, {0x11700,0x1171a,1}, {0x11730,0x1173b,2}, {0x11740,0x11746,1},
{0x11800,0x1182b,1}, {0x118a0,0x118df,1}, {0x118e0,0x118f2,2}, {0x118ff,0x11906,1}, {0x11909,0x11909,1},
{0x1190c,0x11913,1}, {0x11915,0x11916,1}, {0x11918,0x1192f,1}, {0x1193f,0x1193f,1}, {0x11941,0x11941,1},
{0x11950,0x11959,2}, {0x119a0,0x119a7,1}, {0x119aa,0x119d0,1}, {0x119e1,0x119e1,1}, {0x119e3,0x119e3,1},
{0x11a00,0x11a00,1}, {0x11a0b,0x11a32,1}, {0x11a3a,0x11a3a,1}, {0x11a50,0x11a50,1}, {0x11a5c,0x11a89,1},
{0x11a9d,0x11a9d,1}, {0x11ab0,0x11af8,1}, {0x11bc0,0x11be0,1}, {0x11bf0,0x11bf9,2}, {0x11c00,0x11c08,1},
{0x11c0a,0x11c2e,1}, {0x11c40,0x11c40,1}, {0x11c50,0x11c6c,2}, {0x11c72,0x11c8f,1}, {0x11d00,0x11d06,1},
{0x11d08,0x11d09,1}, {0x11d0b,0x11d30,1}, {0x11d46,0x11d46,1}, {0x11d50,0x11d59,2}, {0x11d60,0x11d65,1},
{0x11d67,0x11d68,1}, {0x11d6a,0x11d89,1}, {0x11d98,0x11d98,1}, {0x11da0,0x11da9,2}, {0x11db0,0x11ddb,1},
{0x11de0,0x11de9,2}, {0x11ee0,0x11ef2,1}, {0x11f02,0x11f02,1}, {0x11f04,0x11f10,1}, {0x11f12,0x11f33,1},
{0x11f50,0x11f59,2}, {0x11fb0,0x11fb0,1}, {0x11fc0,0x11fd4,2}, {0x12000,0x12399,1}, {0x12400,0x1246e,2},
{0x12480,0x12543,1}, {0x12f90,0x12ff0,1}, {0x13000,0x1342f,1}, {0x13441,0x13446,1}, {0x13460,0x143fa,1},
{0x14400,0x14646,1}, {0x16100,0x1611d,1}, {0x16130,0x16139,2}, {0x16800,0x16a38,1}, {0x16a40,0x16a5e,1},
{0x16a60,0x16a69,2}, {0x16a70,0x16abe,1}, {0x16ac0,0x16ac9,2}, {0x16ad0,0x16aed,1}, {0x16b00,0x16b2f,1},
{0x16b40,0x16b43,1}, {0x16b50,0x16b59,2}, {0x16b5b,0x16b61,2}, {0x16b63,0x16b77,1}, {0x16b7d,0x16b8f,1},
{0x16d40,0x16d6c,1}, {0x16d70,0x16d79,2}, {0x16e40,0x16e7f,1}, {0x16e80,0x16e96,2}, {0x16ea0,0x16eb8,1},
{0x16ebb,0x16ed3,1}, {0x16f00,0x16f4a,1}, {0x16f50,0x16f50,1}, {0x16f93,0x16f9f,1}, {0x16fe0,0x16fe1,1},
{0x16fe3,0x16fe3,1}, {0x16ff2,0x16ff3,1}, {0x16ff4,0x16ff6,2}, {0x17000,0x18cd5,1}, {0x18cff,0x18d1e,1},
{0x18d80,0x18df2,1}, {0x1aff0,0x1aff3,1}, {0x1aff5,0x1affb,1}, {0x1affd,0x1affe,1}, {0x1b000,0x1b122,1},
{0x1b132,0x1b132,1}, {0x1b150,0x1b152,1}, {0x1b155,0x1b155,1}, {0x1b164,0x1b167,1}, {0x1b170,0x1b2fb,1},
{0x1bc00,0x1bc6a,1}, {0x1bc70,0x1bc7c,1}, {0x1bc80,0x1bc88,1}, {0x1bc90,0x1bc99,1}, {0x1ccf0,0x1ccf9,2},
{0x1d2c0,0x1d2d3,2}, {0x1d2e0,0x1d2f3,2}, {0x1d360,0x1d378,2}, {0x1d400,0x1d454,1}, {0x1d456,0x1d49c,1},
{0x1d49e,0x1d49f,1}, {0x1d4a2,0x1d4a2,1}, {0x1d4a5,0x1d4a6,1}, {0x1d4a9,0x1d4ac,1}, {0x1d4ae,0x1d4b9,1},
{0x1d4bb,0x1d4bb,1}, {0x1d4bd,0x1d4c3,1}, {0x1d4c5,0x1d505,1}, {0x1d507,0x1d50a,1}, {0x1d50d,0x1d514,1},
{0x1d516,0x1d51c,1}, {0x1d51e,0x1d539,1}, {0x1d53b,0x1d53e,1}, {0x1d540,0x1d544,1}, {0x1d546,0x1d546,1},
{0x1d54a,0x1d550,1}, {0x1d552,0x1d6a5,1}, {0x1d6a8,0x1d6c0,1}, {0x1d6c2,0x1d6da,1}, {0x1d6dc,0x1d6fa,1},
{0x1d6fc,0x1d714,1}, {0x1d716,0x1d734,1}, {0x1d736,0x1d74e,1}, {0x1d750,0x1d76e,1}, {0x1d770,0x1d788,1},
{0x1d78a,0x1d7a8,1}, {0x1d7aa,0x1d7c2,1}, {0x1d7c4,0x1d7cb,1}, {0x1d7ce,0x1d7ff,2}, {0x1df00,0x1df1e,1},
{0x1df25,0x1df2a,1}, {0x1e030,0x1e06d,1}, {0x1e100,0x1e12c,1}, {0x1e137,0x1e13d,1}, {0x1e140,0x1e149,2},
{0x1e14e,0x1e14e,1}, {0x1e290,0x1e2ad,1}, {0x1e2c0,0x1e2eb,1}, {0x1e2f0,0x1e2f9,2}, {0x1e4d0,0x1e4eb,1},
{0x1e4f0,0x1e4f9,2}, {0x1e5d0,0x1e5ed,1}, {0x1e5f0,0x1e5f0,1}, {0x1e5f1,0x1e5fa,2}, {0x1e6c0,0x1e6de,1},
{0x1e6e0,0x1e6e2,1}, {0x1e6e4,0x1e6e5,1}, {0x1e6e7,0x1e6ed,1}, {0x1e6f0,0x1e6f4,1}, {0x1e6fe,0x1e6ff,1},
{0x1e7e0,0x1e7e6,1}, {0x1e7e8,0x1e7eb,1}, {0x1e7ed,0x1e7ee,1}, {0x1e7f0,0x1e7fe,1}, {0x1e800,0x1e8c4,1},
{0x1e8c7,0x1e8cf,2}, {0x1e900,0x1e943,1}, {0x1e94b,0x1e94b,1}, {0x1e950,0x1e959,2}, {0x1ec71,0x1ecab,2},
{0x1ecad,0x1ecaf,2}, {0x1ecb1,0x1ecb4,2}, {0x1ed01,0x1ed2d,2}, {0x1ed2f,0x1ed3d,2}, {0x1ee00,0x1ee03,1},
{0x1ee05,0x1ee1f,1}, {0x1ee21,0x1ee22,1}, {0x1ee24,0x1ee24,1}, {0x1ee27,0x1ee27,1}, {0x1ee29,0x1ee32,1},
{0x1ee34,0x1ee37,1}, {0x1ee39,0x1ee39,1}, {0x1ee3b,0x1ee3b,1}, {0x1ee42,0x1ee42,1}, {0x1ee47,0x1ee47,1},
{0x1ee49,0x1ee49,1}, {0x1ee4b,0x1ee4b,1}, {0x1ee4d,0x1ee4f,1}, {0x1ee51,0x1ee52,1}, {0x1ee54,0x1ee54,1},
{0x1ee57,0x1ee57,1}, {0x1ee59,0x1ee59,1}, {0x1ee5b,0x1ee5b,1}, {0x1ee5d,0x1ee5d,1}, {0x1ee5f,0x1ee5f,1},
{0x1ee61,0x1ee62,1}, {0x1ee64,0x1ee64,1}, {0x1ee67,0x1ee6a,1}, {0x1ee6c,0x1ee72,1}, {0x1ee74,0x1ee77,1},
{0x1ee79,0x1ee7c,1}, {0x1ee7e,0x1ee7e,1}, {0x1ee80,0x1ee89,1}, {0x1ee8b,0x1ee9b,1}, {0x1eea1,0x1eea3,1},
{0x1eea5,0x1eea9,1}, {0x1eeab,0x1eebb,1}, {0x1f100,0x1f10c,2}, {0x1fbf0,0x1fbf9,2}, {0x20000,0x2a6df,1},
{0x2a700,0x2b81d,1}, {0x2b820,0x2cead,1}, {0x2ceb0,0x2ebe0,1}, {0x2ebf0,0x2ee5d,1}, {0x2f800,0x2fa1d,1},
{0x30000,0x3134a,1}, {0x31350,0x33479,1},
// END generated
};

// The class of code point cp: binary search of UNICODE_CLASSES.
static int unicode_class(uint32_t cp) {
    size_t lo = 0, hi = sizeof(UNICODE_CLASSES) / sizeof(UNICODE_CLASSES[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < UNICODE_CLASSES[mid][0]) hi = mid;
        else if (cp > UNICODE_CLASSES[mid][1]) lo = mid + 1;
        else return (int)UNICODE_CLASSES[mid][2];
    }
    return CH_OTHER;
}

// The class of the character at s[i] (s has n bytes); *len = its length in bytes. Decodes strict
// UTF-8 (no overlong forms, no surrogates, at most U+10FFFF); anything else is one "other" byte.
static int utf8_class(const unsigned char* s, size_t n, size_t i, int* len) {
    unsigned c = s[i];
    *len = 1;
    if (c < 0x80) return unicode_class(c);
    int need;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) { need = 1; cp = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { need = 2; cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 3; cp = c & 0x07; min = 0x10000; }
    else return CH_OTHER;
    if (i + need >= n) return CH_OTHER;  // truncated at the end of the text
    for (int k = 1; k <= need; k++) {
        if ((s[i + k] & 0xC0) != 0x80) return CH_OTHER;
        cp = cp << 6 | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return CH_OTHER;
    *len = need + 1;
    return unicode_class(cp);
}

// The end of the pre-token piece that starts at s[i]: the regex's first matching alternative,
// each as greedy as the regex makes it.
static size_t pretoken_end(const unsigned char* s, size_t n, size_t i) {
    static const char* const contractions[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    if (s[i] == '\'')
        for (int k = 0; k < 7; k++) {
            size_t len = strlen(contractions[k]);
            if (i + 1 + len <= n && memcmp(s + i + 1, contractions[k], len) == 0) return i + 1 + len;
        }
    int len, cls = utf8_class(s, n, i, &len);
    size_t run = i; // where a run of one class starts
    if (s[i] == ' ' && i + 1 < n) { // the optional space of ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
        int len2, cls2 = utf8_class(s, n, i + 1, &len2);
        if (cls2 != CH_SPACE) { run = i + 1; cls = cls2; len = len2; }
    }
    if (cls != CH_SPACE) { // a run of letters, of numbers or of others
        size_t e = run + len;
        while (e < n && utf8_class(s, n, e, &len) == cls) e += len;
        return e;
    }
    // white space: \s+(?!\S) takes the whole run at the end of the text, else all of it but its
    // last character (which then leads the next piece, as the space of " word"); \s+ takes a
    // single white-space character followed by a non-space.
    size_t e = i, last = i;
    while (e < n && utf8_class(s, n, e, &len) == CH_SPACE) { last = e; e += len; }
    return (e == n || last == i) ? e : last;
}

// ---- byte-level BPE of one piece

typedef struct { int rank, pos; } BpeCandidate;  // a mergeable pair: its rank, its left symbol

// Scratch space of bpe_piece, grown to the longest piece seen.
typedef struct {
    size_t cap;
    int *tok, *prev, *next;  // the symbols of the piece as a linked list; tok -1: merged away
    BpeCandidate* heap;      // min-heap on (rank, pos), at most 3 * cap entries
    size_t heap_n;
} BpeWork;

static void bpe_work_free(BpeWork* w) {
    free(w->tok);
    free(w->prev);
    free(w->next);
    free(w->heap);
    memset(w, 0, sizeof(*w));
}

static int bpe_before(BpeCandidate a, BpeCandidate b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

// Pushes the pair (symbol i, its right neighbour) if a merge exists for it.
static void bpe_push(const Tokenizer* t, BpeWork* w, int i) {
    int rank = tokenizer_pair_rank(t, w->tok[i], w->tok[w->next[i]]);
    if (rank < 0) return;
    size_t k = w->heap_n++;
    BpeCandidate c = {rank, i};
    while (k > 0 && bpe_before(c, w->heap[(k - 1) / 2])) { // sift up
        w->heap[k] = w->heap[(k - 1) / 2];
        k = (k - 1) / 2;
    }
    w->heap[k] = c;
}

static BpeCandidate bpe_pop(BpeWork* w) {
    BpeCandidate top = w->heap[0], last = w->heap[--w->heap_n];
    size_t k = 0;
    for (;;) { // sift the last entry down from the root
        size_t child = 2 * k + 1;
        if (child >= w->heap_n) break;
        if (child + 1 < w->heap_n && bpe_before(w->heap[child + 1], w->heap[child])) child++;
        if (!bpe_before(w->heap[child], last)) break;
        w->heap[k] = w->heap[child];
        k = child;
    }
    if (w->heap_n > 0) w->heap[k] = last;
    return top;
}

// Encodes one piece s[0..n) (n >= 1): each byte becomes its single-byte token, then the adjacent
// pair of lowest rank (the leftmost of equals) is replaced by its merged token until no pair has a
// merge. Writes the tokens to out (at most n) and returns their count. This is GPT-2's loop
// ("merge every occurrence of the best pair, repeat") in O(n log n): merges only use tokens made by
// earlier merges (tokenizer_check), so a merge never creates a pair of lower rank than its own and
// taking candidates in (rank, position) order merges exactly what GPT-2 merges.
static size_t bpe_piece(const Tokenizer* t, const unsigned char* s, size_t n, int* out, BpeWork* w) {
    if (n == 1 || t->n_merges == 0) {
        for (size_t i = 0; i < n; i++) out[i] = t->byte_token[s[i]];
        return n;
    }
    if (n > w->cap) {
        bpe_work_free(w);
        w->cap = n;
        w->tok = (int*)malloc_check(n * sizeof(int));
        w->prev = (int*)malloc_check(n * sizeof(int));
        w->next = (int*)malloc_check(n * sizeof(int));
        w->heap = (BpeCandidate*)malloc_check(3 * n * sizeof(BpeCandidate));
    }
    int last = (int)n - 1;
    for (int i = 0; i <= last; i++) {
        w->tok[i] = t->byte_token[s[i]];
        w->prev[i] = i - 1;
        w->next[i] = i < last ? i + 1 : -1;
    }
    w->heap_n = 0;
    for (int i = 0; i < last; i++) bpe_push(t, w, i);
    while (w->heap_n > 0) {
        BpeCandidate c = bpe_pop(w);
        int i = c.pos, j = w->next[i];
        const int32_t* merge = t->merges + 3 * (size_t)c.rank;
        // stale: i was merged away, or i or its neighbour has changed since the push
        if (w->tok[i] < 0 || j < 0 || w->tok[i] != merge[0] || w->tok[j] != merge[1]) continue;
        w->tok[i] = merge[2];
        w->tok[j] = -1;
        w->next[i] = w->next[j];
        if (w->next[i] >= 0) w->prev[w->next[i]] = i;
        if (w->prev[i] >= 0) bpe_push(t, w, w->prev[i]);
        if (w->next[i] >= 0) bpe_push(t, w, i);
    }
    size_t m = 0;
    for (int i = 0; i >= 0; i = w->next[i]) out[m++] = w->tok[i];
    return m;
}

// The id of the symbol named name[0..n) (its bytes without the trailing space); fails if none is.
static int symbol_id(const Tokenizer* t, const unsigned char* name, size_t n) {
    for (int i = 0; i < t->vocab_size; i++)
        if ((size_t)t->token_len[i] == n + 1 && memcmp(t->token_bytes[i], name, n) == 0) return i;
    fail("'%.*s' is not a symbol of this tokenizer (symbols tokenizers, as MQAR's, encode whitespace-separated names "
         "such as 'k5 v12')", (int)n, name);
}

// Encodes text[0..n) (any bytes) into *ids (malloc'd); returns the token count (<= n).
// Symbols tokenizers split the text at whitespace and look each word up by name.
static size_t tokenizer_encode_bytes(const Tokenizer* t, const unsigned char* text, size_t n, int** ids) {
    int* out = (int*)malloc_check(n * sizeof(int));
    size_t m = 0;
    if (t->kind == TOKENIZER_BYTES) {
        for (; m < n; m++) out[m] = t->byte_token[text[m]];
    } else if (t->kind == TOKENIZER_SYMBOLS) {
        for (size_t i = 0; i < n;) {
            while (i < n && text[i] <= ' ') i++;
            size_t e = i;
            while (e < n && text[e] > ' ') e++;
            if (e == i) break;
            out[m++] = symbol_id(t, text + i, e - i);
            i = e;
        }
    } else {
        BpeWork w = {0};
        for (size_t i = 0, e; i < n; i = e) {
            e = pretoken_end(text, n, i);
            m += bpe_piece(t, text + i, e - i, out + m, &w);
        }
        bpe_work_free(&w);
    }
    *ids = out;
    return m;
}

// Encodes a NUL-terminated string into *ids (malloc'd); returns the token count.
static int tokenizer_encode(const Tokenizer* t, const char* text, int** ids) {
    size_t n = strlen(text);
    if (n > INT32_MAX) fail("tokenizer_encode: text of %zu bytes is too long for an int count", n);
    return (int)tokenizer_encode_bytes(t, (const unsigned char*)text, n, ids);
}

// ----------------------------------------------------------------------------
// token shards: llm.c's format. header [0] 20240520 [1] version 1 [2] token count; then uint16 tokens.
// Header int [3], unused by llm.c (its readers ignore it), holds the fingerprint of the tokenizer
// that wrote the shard (tokenizer_fingerprint, never 0); 0 (llm.c's own shards) means unknown.

#define SHARD_MAGIC 20240520
#define SHARD_VERSION 1

static void shard_write(const char* path, const uint16_t* tokens, size_t n, uint32_t tokenizer_fp) {
    char tmp[PATH_CAP];
    if (n > 0x7fffffff) fail("'%s': %zu tokens do not fit one shard (max 2^31-1)", path, n);
    int32_t h[256] = {SHARD_MAGIC, SHARD_VERSION, (int32_t)n, (int32_t)tokenizer_fp};
    FILE* f = atomic_open(path, tmp);
    fwrite_check(h, sizeof(int32_t), 256, f, tmp);
    fwrite_check(tokens, sizeof(uint16_t), n, f, tmp);
    atomic_commit(f, tmp, path);
}

// Checks a whole shard file data[0..size): header, the tokenizer it was written with (when both
// the shard and the caller know a fingerprint: tokenizer_fp 0 skips the check), token count against
// the length, and every token id below vocab_size. *n = the token count (the tokens are the uint16s
// at data + 1024). Returns NULL or a message.
static const char* shard_parse(const unsigned char* data, size_t size, int vocab_size, uint32_t tokenizer_fp, size_t* n) {
    int32_t h[256];
    const char* bad = header_check(h, data, (int64_t)size, SHARD_MAGIC, SHARD_VERSION, "token shard");
    if (bad) return bad;
    if (h[2] < 0) return error_message("negative token count %d", h[2]);
    if (tokenizer_fp && h[3] && (uint32_t)h[3] != tokenizer_fp)
        return error_message("was written with another tokenizer (fingerprint %08x) than the one given (%08x): "
                             "give the tokenizer the shards were prepared with (-z), or prepare them again with this one",
                             (uint32_t)h[3], tokenizer_fp);
    *n = (size_t)h[2];
    int64_t want = HEADER_BYTES + 2 * (int64_t)*n;
    if ((int64_t)size != want)
        return error_message("header says %zu tokens (%lld bytes), the file has %zu bytes (truncated or corrupt)",
                             *n, (long long)want, size);
    for (size_t i = 0; i < *n; i++) {
        uint16_t token;
        memcpy(&token, data + HEADER_BYTES + 2 * i, 2);
        if (token >= vocab_size)
            return error_message("token %u at position %zu is outside the vocabulary (size %d): wrong tokenizer?",
                                 token, i, vocab_size);
    }
    return NULL;
}

// Loads a whole shard into *tokens (malloc'd, (n,)) and checks it was written with the tokenizer of
// fingerprint tokenizer_fp (0: any) and that every token id is below vocab_size. Returns the count n.
static size_t shard_load(const char* path, uint16_t** tokens, int vocab_size, uint32_t tokenizer_fp) {
    size_t size, n = 0;
    unsigned char* data = read_whole_file(path, &size);
    const char* bad = shard_parse(data, size, vocab_size, tokenizer_fp, &n);
    if (bad) fail("'%s': %s", path, bad);
    memmove(data, data + HEADER_BYTES, 2 * n); // the tokens to the front of the buffer
    *tokens = (uint16_t*)data;
    return n;
}

// ----------------------------------------------------------------------------
// target shards: the targets of a synthetic task (MQAR) that scores only some positions. They sit
// beside their token shard X.bin as X.targets: header [0] 20261104 [1] version 1 [2] count (= the
// token shard's) [3] example length E; then uint16 targets aligned with the tokens (target i is
// what the model should predict after reading token i), TARGET_IGNORED where nothing is scored.
// Examples are E tokens each, so training on them needs T = E (each row one example).

#define TARGETS_MAGIC 20261104
#define TARGETS_VERSION 1
#define TARGET_IGNORED 0xFFFF

// X.bin -> X.targets (any other name: name + ".targets")
static void targets_path(char out[PATH_CAP], const char* shard) {
    size_t n = strlen(shard);
    if (n >= 4 && strcmp(shard + n - 4, ".bin") == 0) n -= 4;
    if (snprintf(out, PATH_CAP, "%.*s.targets", (int)n, shard) >= PATH_CAP) fail("path too long: '%s'", shard);
}

// targets (n,), each < vocab or TARGET_IGNORED; E = example length
static void targets_write(const char* path, const uint16_t* targets, size_t n, int E) {
    char tmp[PATH_CAP];
    if (n > 0x7fffffff) fail("'%s': %zu targets do not fit one file (max 2^31-1)", path, n);
    int32_t h[256] = {TARGETS_MAGIC, TARGETS_VERSION, (int32_t)n, E};
    FILE* f = atomic_open(path, tmp);
    fwrite_check(h, sizeof(int32_t), 256, f, tmp);
    fwrite_check(targets, sizeof(uint16_t), n, f, tmp);
    atomic_commit(f, tmp, path);
}

// Checks a target file of `size` bytes in data against its token shard of n_tokens tokens:
// header, count = n_tokens, example length E dividing it, file length, every target < vocab_size
// or TARGET_IGNORED. Sets *E. Returns NULL or a message.
static const char* targets_parse(const unsigned char* data, size_t size, size_t n_tokens, int vocab_size, int* E) {
    int32_t h[256];
    const char* bad = header_check(h, data, (int64_t)size, TARGETS_MAGIC, TARGETS_VERSION, "target shard");
    if (bad) return bad;
    if (h[2] < 0 || (size_t)h[2] != n_tokens)
        return error_message("holds %d targets, its token shard %zu tokens (they must be made together)", h[2], n_tokens);
    *E = h[3];
    if (*E < 1 || n_tokens % *E != 0)
        return error_message("example length %d does not divide the %zu tokens (corrupt header)", *E, n_tokens);
    int64_t want = HEADER_BYTES + 2 * (int64_t)n_tokens;
    if ((int64_t)size != want)
        return error_message("header says %zu targets (%lld bytes), the file has %zu bytes (truncated or corrupt)",
                             n_tokens, (long long)want, size);
    if (vocab_size > TARGET_IGNORED)
        return error_message("a vocabulary of %d tokens collides with the 'not scored' mark %d", vocab_size, TARGET_IGNORED);
    for (size_t i = 0; i < n_tokens; i++) {
        uint16_t target;
        memcpy(&target, data + HEADER_BYTES + 2 * i, 2);
        if (target >= vocab_size && target != TARGET_IGNORED)
            return error_message("target %u at position %zu is outside the vocabulary (size %d)", target, i, vocab_size);
    }
    return NULL;
}

// Loads the targets of a shard of n_tokens tokens into *targets (malloc'd, (n_tokens,)); returns
// the example length.
static int targets_load(const char* path, uint16_t** targets, size_t n_tokens, int vocab_size) {
    size_t size;
    int E = 0;
    unsigned char* data = read_whole_file(path, &size);
    const char* bad = targets_parse(data, size, n_tokens, vocab_size, &E);
    if (bad) fail("'%s': %s", path, bad);
    memmove(data, data + HEADER_BYTES, 2 * n_tokens); // the targets to the front of the buffer
    *targets = (uint16_t*)data;
    return E;
}

// Sequential loader over a glob of shards. Batch b covers tokens [pos, pos + B*T + 1) of the
// current shard; inputs are the first B*T, targets the same shifted by one. Where the shards have
// target files (all of them or none), the targets come from those instead, aligned with the inputs
// (no shift; not scored = IGNORE_INDEX), and each of the B rows is one example of T tokens.
// Deterministic, and its whole state is (shard, pos), which the optimizer-state file saves for
// bit-identical resume.
typedef struct {
    glob_t files;
    int vocab_size;
    uint32_t tokenizer_fp; // the shards must have been written with this tokenizer (0: any)
    int B, T;
    int shard;          // index into files
    size_t pos;         // next token in the current shard
    uint16_t* tokens;   // the current shard
    size_t n_tokens;
    int has_targets;    // 1: the shards have target files
    uint16_t* target_ids; // (n_tokens,) the current shard's targets, if has_targets
    int* inputs;        // (B, T)
    int* targets;       // (B, T)
} DataLoader;

// tokens a batch reads from the shard: B*T, and one more for the shifted targets
static size_t loader_span(const DataLoader* d) { return (size_t)d->B * d->T + !d->has_targets; }

// Whether the shard at `shard` has a target file; its path into tpath.
static int shard_has_targets(const char* shard, char tpath[PATH_CAP]) {
    struct stat st;
    targets_path(tpath, shard);
    return stat(tpath, &st) == 0;
}

static void loader_load_shard(DataLoader* d, int shard) {
    const char* path = d->files.gl_pathv[shard];
    free(d->tokens);
    free(d->target_ids);
    d->tokens = NULL;
    d->target_ids = NULL;
    d->shard = shard;
    d->n_tokens = shard_load(path, &d->tokens, d->vocab_size, d->tokenizer_fp);
    char tpath[PATH_CAP];
    int has = shard_has_targets(path, tpath);
    if (has != d->has_targets)
        fail("'%s' %s a target file '%s', but '%s' %s: the shards of one glob must agree", path,
             has ? "has" : "has no", tpath, d->files.gl_pathv[0], has ? "has none" : "has one");
    if (has) {
        int E = targets_load(tpath, &d->target_ids, d->n_tokens, d->vocab_size);
        if (E != d->T) fail("'%s' holds examples of %d tokens: use -T %d (got %d)", tpath, E, E, d->T);
    }
    if (d->n_tokens < loader_span(d))
        fail("'%s' has %zu tokens, fewer than one batch needs (%s = %zu): use a smaller -b or -T", path, d->n_tokens,
             d->has_targets ? "B*T" : "B*T+1", loader_span(d));
}

static void loader_init(DataLoader* d, const char* pattern, int B, int T, int vocab_size, uint32_t tokenizer_fp) {
    memset(d, 0, sizeof(*d));
    int rc = glob(pattern, 0, NULL, &d->files);
    if (rc != 0 || d->files.gl_pathc == 0)
        fail("no shard matches '%s' (prepare the data first: make data)", pattern);
    d->vocab_size = vocab_size;
    d->tokenizer_fp = tokenizer_fp;
    d->B = B;
    d->T = T;
    d->inputs = (int*)malloc_check((size_t)B * T * sizeof(int));
    d->targets = (int*)malloc_check((size_t)B * T * sizeof(int));
    char tpath[PATH_CAP];
    d->has_targets = shard_has_targets(d->files.gl_pathv[0], tpath); // the first shard sets the mode
    d->shard = -1;
    loader_load_shard(d, 0);
}

static void loader_seek(DataLoader* d, int shard, size_t pos) {
    if (shard < 0 || shard >= (int)d->files.gl_pathc) fail("data position: shard %d does not exist (%zu shards)", shard, d->files.gl_pathc);
    if (shard != d->shard) loader_load_shard(d, shard);
    if (pos + loader_span(d) > d->n_tokens) fail("data position %zu is past the end of '%s'", pos, d->files.gl_pathv[shard]);
    d->pos = pos;
}

static void loader_next_batch(DataLoader* d) {
    size_t span = (size_t)d->B * d->T;
    if (d->pos + loader_span(d) > d->n_tokens) loader_seek(d, (d->shard + 1) % (int)d->files.gl_pathc, 0);
    const uint16_t* src = d->tokens + d->pos;
    for (size_t i = 0; i < span; i++) d->inputs[i] = src[i];
    if (d->has_targets) {
        const uint16_t* tgt = d->target_ids + d->pos;
        for (size_t i = 0; i < span; i++) d->targets[i] = tgt[i] == TARGET_IGNORED ? IGNORE_INDEX : tgt[i];
    } else {
        for (size_t i = 0; i < span; i++) d->targets[i] = src[i + 1];
    }
    d->pos += span;
}

// Full batches in all the loader's shards: what one pass over the whole data reads.
static long loader_total_batches(const DataLoader* d) {
    long total = 0;
    for (size_t i = 0; i < d->files.gl_pathc; i++) {
        struct stat st;
        if (stat(d->files.gl_pathv[i], &st) != 0) fail("cannot read '%s': %s", d->files.gl_pathv[i], strerror(errno));
        size_t n = st.st_size > HEADER_BYTES ? (size_t)(st.st_size - HEADER_BYTES) / 2 : 0;
        if (n >= loader_span(d)) total += (long)((n - !d->has_targets) / ((size_t)d->B * d->T));
    }
    return total;
}

static void loader_free(DataLoader* d) {
    globfree(&d->files);
    free(d->tokens);
    free(d->target_ids);
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
    int group;          // a program's own grouping (the trainers: RUN_FLAG_MODEL)
    int set;            // set by parse_flags: the flag was given
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

// Prints the error and the usage line, exits non-zero: every rejected flag value ends here.
static void usage_error(const char* prog, const char* fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void usage_error(const char* prog, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
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
        if (!f) usage_error(prog, "unknown flag '%s'", arg);
        if (i + 1 >= argc) usage_error(prog, "flag '%s' needs a value", arg);
        const char* val = argv[++i];
        char* end = NULL;
        f->set = 1;
        if (f->type == FLAG_STRING) {
            *(const char**)f->value = val;
            continue;
        }
        errno = 0;
        double x = f->type == FLAG_INT ? (double)strtoll(val, &end, 10) : strtod(val, &end);
        if (end == val || *end || errno == ERANGE || !isfinite(x))
            usage_error(prog, "flag '%s' wants a %s", arg, f->type == FLAG_INT ? "whole number" : "number");
        if (x < f->min || x > f->max) usage_error(prog, "flag '%s' wants a value in [%g, %g], got %s", arg, f->min, f->max, val);
        if (f->type == FLAG_INT) *(int*)f->value = (int)x;
        else *(float*)f->value = (float)x;
    }
}

// ----------------------------------------------------------------------------
// optimizer-state file: header [0] magic [1] version [2] step [3] shard [4,5] data position (lo, hi)
// [6,7] sampler RNG (lo, hi) [8,9] parameter count (lo, hi) [10] B [11] T [12,13] fingerprint of
// the model's config (lo, hi; 0 in files written before it existed); then AdamW m and v. Both
// programs write it from host copies of the moments, so a run moves between CPU and GPU.

typedef struct {
    int step;
    int shard;
    size_t pos;
    uint64_t rng;
    int B, T;
} TrainState;

// FNV-1a of the model's checkpoint header: two configs with the same parameter count (the same
// mixers in another order, say) still differ here. Never 0.
static uint64_t config_fingerprint(const Config* c, size_t num_params) {
    int32_t h[256];
    config_to_header(c, num_params, h);
    uint64_t fp = hash_bytes((const unsigned char*)h, sizeof(h));
    return fp ? fp : 1;
}

// adam_m, adam_v (n) each, host memory
static void state_write(const char* path, const Config* c, const float* adam_m, const float* adam_v, size_t n,
                        const TrainState* s) {
    char tmp[PATH_CAP];
    int32_t h[256] = {STATE_MAGIC, STATE_VERSION, s->step, s->shard};
    uint64_t fp = config_fingerprint(c, n);
    h[4] = (int32_t)(s->pos & 0xffffffff); h[5] = (int32_t)(s->pos >> 32);
    h[6] = (int32_t)(s->rng & 0xffffffff); h[7] = (int32_t)(s->rng >> 32);
    h[8] = (int32_t)(n & 0xffffffff); h[9] = (int32_t)((uint64_t)n >> 32);
    h[10] = s->B; h[11] = s->T;
    h[12] = (int32_t)(fp & 0xffffffff); h[13] = (int32_t)(fp >> 32);
    FILE* f = atomic_open(path, tmp);
    fwrite_check(h, sizeof(int32_t), 256, f, tmp);
    fwrite_check(adam_m, sizeof(float), n, f, tmp);
    fwrite_check(adam_v, sizeof(float), n, f, tmp);
    atomic_commit(f, tmp, path);
}

// Reads an optimizer-state file into the host arrays adam_m, adam_v (n) and *s, checking it
// against the model (config c, n parameters): parameter count, config fingerprint, file length,
// finite moments.
static void state_read(const char* path, const Config* c, float* adam_m, float* adam_v, size_t n, TrainState* s) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[256];
    read_header(h, f, path, STATE_MAGIC, STATE_VERSION, "optimizer-state file");
    s->step = h[2];
    s->shard = h[3];
    s->pos = (size_t)(uint32_t)h[4] | ((size_t)(uint32_t)h[5] << 32);
    s->rng = (uint64_t)(uint32_t)h[6] | ((uint64_t)(uint32_t)h[7] << 32);
    size_t stored = (size_t)(uint32_t)h[8] | ((size_t)(uint32_t)h[9] << 32);
    s->B = h[10];
    s->T = h[11];
    uint64_t fp = (uint64_t)(uint32_t)h[12] | ((uint64_t)(uint32_t)h[13] << 32), want_fp = config_fingerprint(c, n);
    if (stored != n) fail("'%s' holds optimizer state for %zu parameters, the model has %zu", path, stored, n);
    if (fp != 0 && fp != want_fp)
        fail("'%s' was written for another model config (fingerprint %016llx, this model's is %016llx): it does "
             "not belong to this checkpoint", path, (unsigned long long)fp, (unsigned long long)want_fp);
    if (s->step < 0) fail("'%s': negative step %d", path, s->step);
    int64_t want = HEADER_BYTES + 8 * (int64_t)n, have = file_size(f);
    if (have != want) fail("'%s' is %lld bytes, expected %lld (truncated or corrupt)", path, (long long)have, (long long)want);
    fread_check(adam_m, sizeof(float), n, f, path);
    fread_check(adam_v, sizeof(float), n, f, path);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(adam_m[i]) || !isfinite(adam_v[i]) || adam_v[i] < 0.0f)
            fail("'%s': optimizer moment %zu is invalid (corrupt file)", path, i);
}

// The batch shape (s->B, s->T) a run was trained with, from its optimizer-state file's header
static void state_read_batch(const char* path, TrainState* s) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[256];
    read_header(h, f, path, STATE_MAGIC, STATE_VERSION, "optimizer-state file");
    fclose(f);
    s->B = h[10];
    s->T = h[11];
    if (s->B < 1 || s->T < 2) fail("'%s': batch shape -b %d -T %d is invalid (corrupt file)", path, s->B, s->T);
}

// ----------------------------------------------------------------------------
// checkpoint directories: one run per directory.
// The checkpoint of step s (the state before training step s) is model_<s>.bin, state_<s>.bin,
// then the marker DONE_<s>, written last, that says both files are complete and names the run that
// wrote them ("run <16 hex digits>"; empty in markers written before runs had ids). Resume looks
// for markers only. While a trainer holds a directory it keeps a lock on <dir>/LOCK (flock: the
// kernel drops it when the process dies, so it never goes stale).

static void ckpt_path(char* out, size_t cap, const char* dir, const char* kind, int step) {
    snprintf(out, cap, "%s/%s_%08d%s", dir, kind, step, strcmp(kind, "DONE") ? ".bin" : "");
}

// The step of a checkpoint file's path ".../<kind>_<digits>[.bin]", or -1 for anything else (the
// marker's own DONE_<step>.tmp, left behind by a run killed while writing it, is not a marker).
static int ckpt_file_step(const char* path, const char* kind) {
    const char* base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t k = strlen(kind);
    if (strncmp(base, kind, k) != 0 || base[k] != '_') return -1;
    const char* digits = base + k + 1;
    size_t nd = strspn(digits, "0123456789");
    if (nd == 0 || nd > 9 || strcmp(digits + nd, strcmp(kind, "DONE") ? ".bin" : "") != 0) return -1;
    return atoi(digits);
}

// The steps of the files <dir>/<kind>_* ("DONE": the complete checkpoints), ascending, malloc'd
// into *steps; returns their count.
static int ckpt_list(const char* dir, const char* kind, int** steps) {
    glob_t g;
    char pattern[PATH_CAP];
    snprintf(pattern, sizeof(pattern), "%s/%s_*", dir, kind);
    int n = 0;
    *steps = NULL;
    if (glob(pattern, 0, NULL, &g) == 0) { // sorted, and %08d sorts by number
        *steps = (int*)malloc_check(g.gl_pathc * sizeof(int));
        for (size_t i = 0; i < g.gl_pathc; i++)
            if (ckpt_file_step(g.gl_pathv[i], kind) >= 0) (*steps)[n++] = ckpt_file_step(g.gl_pathv[i], kind);
        globfree(&g);
    }
    return n;
}

// highest step with a DONE marker in dir, or −1
static int latest_checkpoint(const char* dir) {
    int* steps;
    int n = ckpt_list(dir, "DONE", &steps);
    int best = n > 0 ? steps[n - 1] : -1;
    free(steps);
    return best;
}

// The run id a marker names (0: none, a marker from before run ids)
static uint64_t marker_run_id(const char* dir, int step) {
    char path[PATH_CAP], text[64] = {0};
    ckpt_path(path, sizeof(path), dir, "DONE", step);
    FILE* f = fopen(path, "rb");
    if (!f) return 0;
    size_t got = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[got] = 0;
    unsigned long long id = 0;
    return sscanf(text, "run %llx", &id) == 1 ? (uint64_t)id : 0;
}

static void marker_write(const char* dir, int step, uint64_t run_id) {
    char path[PATH_CAP], tmp[PATH_CAP];
    ckpt_path(path, sizeof(path), dir, "DONE", step);
    FILE* f = atomic_open(path, tmp);
    if (fprintf(f, "run %016llx\n", (unsigned long long)run_id) < 0) fail("cannot write '%s': %s", tmp, strerror(errno));
    atomic_commit(f, tmp, path);
}

// Removes the checkpoints of run `run_id` older than its `keep` most recent (keep 0: none); another
// run's checkpoints are never touched. Marker first, so none is left half-deleted with its marker.
static void ckpt_prune(const char* dir, int keep, uint64_t run_id) {
    if (keep <= 0) return;
    int* steps;
    int n = ckpt_list(dir, "DONE", &steps), own = 0;
    for (int i = 0; i < n; i++) if (marker_run_id(dir, steps[i]) == run_id) steps[own++] = steps[i];
    const char* kinds[] = {"DONE", "model", "state"};
    char path[PATH_CAP];
    for (int i = 0; i + keep < own; i++)
        for (int k = 0; k < 3; k++) {
            ckpt_path(path, sizeof(path), dir, kinds[k], steps[i]);
            remove(path);
        }
    free(steps);
}

// Removes what an interrupted save leaves behind: *.tmp regular files, and model_/state_ files of a step
// without a DONE marker. Only called while holding the directory's lock. Returns the count.
static int ckpt_clean_stale(const char* dir) {
    int removed = 0;
    glob_t g;
    char pattern[PATH_CAP];
    snprintf(pattern, sizeof(pattern), "%s/*.tmp", dir);
    struct stat st;
    if (glob(pattern, 0, NULL, &g) == 0) { // regular files only: that is what a killed save leaves
        for (size_t i = 0; i < g.gl_pathc; i++)
            if (lstat(g.gl_pathv[i], &st) == 0 && S_ISREG(st.st_mode)) removed += remove(g.gl_pathv[i]) == 0;
        globfree(&g);
    }
    const char* kinds[] = {"model", "state"};
    for (int k = 0; k < 2; k++) {
        int* steps;
        int n = ckpt_list(dir, kinds[k], &steps);
        char path[PATH_CAP], marker[PATH_CAP];
        for (int i = 0; i < n; i++) {
            ckpt_path(marker, sizeof(marker), dir, "DONE", steps[i]);
            if (stat(marker, &st) == 0) continue;
            ckpt_path(path, sizeof(path), dir, kinds[k], steps[i]);
            removed += remove(path) == 0;
        }
        free(steps);
    }
    return removed;
}

// Takes <dir>/LOCK for the life of the process, or fails naming the directory: two trainers never
// write into one directory at once.
static void ckpt_dir_lock(const char* dir) {
    char path[PATH_CAP];
    if (snprintf(path, sizeof(path), "%s/LOCK", dir) >= (int)sizeof(path)) fail("path too long: '%s'", dir);
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) fail("cannot write into the output directory '%s': %s", dir, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0)
        fail("another trainer is running with --out '%s' (it holds '%s'): wait for it, or choose another --out",
             dir, path);
    // the descriptor stays open (and the lock held) until exit
}

// Proves before step 0 that checkpoints can be written into dir: a probe file written, flushed to
// disk and renamed there, as a checkpoint will be, then removed.
static void ckpt_dir_probe(const char* dir) {
    char path[PATH_CAP], tmp[PATH_CAP];
    if (snprintf(path, sizeof(path), "%s/PROBE", dir) >= (int)sizeof(path)) fail("path too long: '%s'", dir);
    FILE* f = atomic_open(path, tmp);
    fwrite_check("probe\n", 1, 6, f, tmp);
    atomic_commit(f, tmp, path);
    if (remove(path) != 0) fail("cannot remove '%s': %s", path, strerror(errno));
}

// Free bytes on the file system that holds dir (-1: unknown)
static double disk_free_bytes(const char* dir) {
    struct statvfs fs;
    if (statvfs(dir, &fs) != 0) return -1.0;
    return (double)fs.f_bavail * fs.f_frsize;
}

// ----------------------------------------------------------------------------
// the training run: both trainers' flags, the config they build, the checks before step 0, and the
// stop requests (SIGINT, SIGTERM). main() in train_gla.c and train_gla.cu is this plus the loop.

typedef struct {
    // model
    int d_model, n_layer, gla_heads, attn_heads, attn_kv_heads, mlp_hidden, tie;
    const char* pattern;
    float expand_k, expand_v;
    int hgrn2_heads, retnet_heads, deltanet_heads, gdn_heads, gdn_head_dim, gdn_expand_v, conv_size, lower_bound;
    // data, training, checkpoints
    const char *train_glob, *val_glob, *tok_path, *out_dir, *prompt;
    int B, T, steps, warmup, val_every, val_batches, sample_every, gen_tokens, ckpt_every, keep, resume, overwrite,
        seed, chunk, stop_at;
    float lr, min_lr_frac, wd, clip, max_time, temperature, ckpt_minutes;
    Flag flags[64];
    int n_flags;
} RunFlags;

#define RUN_FLAG_MODEL 1  // Flag.group of the flags that define the model (stored in the checkpoint)

// Parses the trainers' flags into r (defaults first), with their cross-checks.
// The default model: d 128, 4 layers, GLA 3:1; the other linear families at fla's defaults scaled
// to d = 128: HGRN width d (expand ratio 1); HGRN2 head dim 128 (1 head); RetNet 4 heads (K = 32,
// V = 64); DeltaNet 2 heads (K = V = 64); GDN H·K = 0.75 d (3 heads of 32), V = 2K; short convs
// of 4; HGRN lower bounds on. (`import` fills the sizes of families absent from a model with these.)
static void model_flag_defaults(RunFlags* r) {
    r->d_model = 128; r->n_layer = 4; r->gla_heads = 2; r->attn_heads = 4; r->tie = 1; r->pattern = "gla:3";
    r->expand_k = 0.5f; r->expand_v = 1.0f; r->hgrn2_heads = 1; r->retnet_heads = 4; r->deltanet_heads = 2;
    r->gdn_heads = 3; r->gdn_head_dim = 32; r->gdn_expand_v = 2; r->conv_size = 4; r->lower_bound = 1;
}

static void run_flags_parse(RunFlags* r, int argc, char** argv, const char* summary) {
    memset(r, 0, sizeof(*r));
    model_flag_defaults(r);
    r->train_glob = "data/tinyshakespeare/tiny_shakespeare_train.bin";
    r->val_glob = "data/tinyshakespeare/tiny_shakespeare_val.bin";
    r->tok_path = "data/tokenizer_bytes.bin"; r->out_dir = "out"; r->prompt = "\n";
    r->B = 32; r->T = 128; r->steps = 900; r->warmup = -1; r->val_every = 100; r->val_batches = 20;
    r->sample_every = 300; r->gen_tokens = 256; r->ckpt_every = 500; r->keep = 2; r->seed = 1337; r->chunk = 16;
    r->lr = 3e-3f; r->min_lr_frac = 0.1f; r->wd = 0.1f; r->clip = 1.0f; r->temperature = 0.8f; r->ckpt_minutes = 10.0f;
    const int M = RUN_FLAG_MODEL;
    Flag table[] = {
        {"train", 'i', FLAG_STRING, &r->train_glob, 0, 0, "training shards (glob)"},
        {"val", 'j', FLAG_STRING, &r->val_glob, 0, 0, "validation shards (glob)"},
        {"tokenizer", 'z', FLAG_STRING, &r->tok_path, 0, 0, "tokenizer file"},
        {"out", 'o', FLAG_STRING, &r->out_dir, 0, 0, "directory for checkpoints (one run per directory)"},
        {"resume", 'r', FLAG_INT, &r->resume, 0, 1, "1: continue the run in --out from its latest checkpoint"},
        {"overwrite", 0, FLAG_INT, &r->overwrite, 0, 1, "1: delete another run's checkpoints in --out and start over"},
        {"d-model", 'd', FLAG_INT, &r->d_model, 8, 16384, "model width d", M},
        {"layers", 'L', FLAG_INT, &r->n_layer, 1, MAX_LAYERS, "number of layers", M},
        {"pattern", 'p', FLAG_STRING, &r->pattern, 0, 0, "mixers: list 'gla,gla,gla,attn', 'gla:3' (3:1), 'gla:pure', 'attn'", M},
        {"gla-heads", 0, FLAG_INT, &r->gla_heads, 1, 1024, "GLA heads", M},
        {"expand-k", 0, FLAG_FLOAT, &r->expand_k, 0.0625, 4, "GLA key dim = d * expand-k", M},
        {"expand-v", 0, FLAG_FLOAT, &r->expand_v, 0.0625, 4, "GLA value dim = d * expand-v", M},
        {"hgrn2-heads", 0, FLAG_INT, &r->hgrn2_heads, 1, 1024, "HGRN2 heads (key and value head dim d/heads)", M},
        {"retnet-heads", 0, FLAG_INT, &r->retnet_heads, 1, 1024, "RetNet heads (K = d/heads, V = 2d/heads)", M},
        {"deltanet-heads", 0, FLAG_INT, &r->deltanet_heads, 1, 1024, "DeltaNet heads (K = V = d/heads)", M},
        {"gdn-heads", 0, FLAG_INT, &r->gdn_heads, 1, 1024, "Gated DeltaNet heads", M},
        {"gdn-head-dim", 0, FLAG_INT, &r->gdn_head_dim, 1, 4096, "Gated DeltaNet key head dim K", M},
        {"gdn-expand-v", 0, FLAG_INT, &r->gdn_expand_v, 1, 16, "Gated DeltaNet value head dim = K * this", M},
        {"conv-size", 0, FLAG_INT, &r->conv_size, 1, 16, "short-convolution kernel of DeltaNet / GDN", M},
        {"lower-bound", 0, FLAG_INT, &r->lower_bound, 0, 1, "1: HGRN / HGRN2 forget gates get learned lower bounds", M},
        {"attn-heads", 0, FLAG_INT, &r->attn_heads, 1, 1024, "attention heads (head dim d/heads)", M},
        {"kv-heads", 0, FLAG_INT, &r->attn_kv_heads, 0, 1024, "attention key/value heads for GQA (0: = attn-heads)", M},
        {"mlp-hidden", 0, FLAG_INT, &r->mlp_hidden, 0, 65536, "SwiGLU width (0: fla's rule, 8d/3 rounded up to 256)", M},
        {"tie", 0, FLAG_INT, &r->tie, 0, 1, "1: LM head tied to the embedding", M},
        {"chunk", 0, FLAG_INT, &r->chunk, 1, 1024, "chunk length of the linear mixers in training"},
        {"batch", 'b', FLAG_INT, &r->B, 1, 4096, "batch size B (on resume: the run's)"},
        {"seq-len", 'T', FLAG_INT, &r->T, 2, 65536, "sequence length T (on resume: the run's)"},
        {"steps", 'n', FLAG_INT, &r->steps, 0, 100000000, "training steps (the cosine schedule's length)"},
        {"stop-at", 0, FLAG_INT, &r->stop_at, 0, 100000000, "stop at this step, keeping the schedule of --steps (0: at --steps)"},
        {"max-time", 'x', FLAG_FLOAT, &r->max_time, 0, 1e9, "bound on the whole run's wall-clock seconds, end work included (0: none)"},
        {"lr", 'l', FLAG_FLOAT, &r->lr, 0, 10, "peak learning rate"},
        {"warmup", 'u', FLAG_INT, &r->warmup, -1, 100000000, "linear warmup steps (-1: min(50, steps/10))"},
        {"min-lr-frac", 'q', FLAG_FLOAT, &r->min_lr_frac, 0, 1, "final learning rate as a fraction of the peak"},
        {"weight-decay", 'c', FLAG_FLOAT, &r->wd, 0, 10, "AdamW decoupled weight decay (Linear weights, embedding, LM head)"},
        {"grad-clip", 'g', FLAG_FLOAT, &r->clip, 0, 1e9, "clip the global gradient norm to this (0: off)"},
        {"val-every", 'v', FLAG_INT, &r->val_every, 0, 100000000, "validation loss every N steps (0: only at the end)"},
        {"val-batches", 'm', FLAG_INT, &r->val_batches, 1, 100000, "validation batches"},
        {"sample-every", 's', FLAG_INT, &r->sample_every, 0, 100000000, "print a sample every N steps (0: only at the end)"},
        {"gen-tokens", 'G', FLAG_INT, &r->gen_tokens, 0, 1000000, "tokens per sample"},
        {"prompt", 0, FLAG_STRING, &r->prompt, 0, 0, "text the samples start from"},
        {"temperature", 0, FLAG_FLOAT, &r->temperature, 0, 100, "sampling temperature (0: greedy)"},
        {"ckpt-every", 'k', FLAG_INT, &r->ckpt_every, 0, 100000000, "checkpoint every N steps (0: only at the end)"},
        {"ckpt-minutes", 0, FLAG_FLOAT, &r->ckpt_minutes, 0, 1e9, "also checkpoint after this many minutes since the last save (0: off)"},
        {"keep", 0, FLAG_INT, &r->keep, 0, 1000000, "checkpoints of this run to keep (0: all)"},
        {"seed", 0, FLAG_INT, &r->seed, 0, 2147483647, "random seed (init and sampling)"},
    };
    r->n_flags = (int)(sizeof(table) / sizeof(table[0]));
    memcpy(r->flags, table, sizeof(table));
    parse_flags(argc, argv, r->flags, r->n_flags, summary);
    if (r->warmup < 0) r->warmup = r->steps / 10 < 50 ? r->steps / 10 : 50;
    if (r->warmup > r->steps && r->steps > 0) usage_error(argv[0], "--warmup %d exceeds --steps %d", r->warmup, r->steps);
    if (r->overwrite && r->resume) usage_error(argv[0], "--overwrite 1 starts over, --resume 1 continues: give one of them");
}

static const Flag* run_flag(const RunFlags* r, const char* name) {
    for (int i = 0; i < r->n_flags; i++) if (strcmp(r->flags[i].name, name) == 0) return &r->flags[i];
    fail("run_flag: no flag '%s'", name);
}

// The sizes of the config from the model flags (everything but the pattern), unchecked.
static void config_sizes_from_flags(const RunFlags* r, int vocab_size, Config* c) {
    memset(c, 0, sizeof(*c));
    c->vocab_size = vocab_size;
    c->d_model = r->d_model;
    c->n_layer = r->n_layer;
    c->mlp_hidden = r->mlp_hidden ? r->mlp_hidden : default_mlp_hidden(r->d_model);
    c->tie_embeddings = r->tie;
    c->gla_heads = r->gla_heads;
    c->gla_dk = (int)(r->d_model * r->expand_k);
    c->gla_dv = (int)(r->d_model * r->expand_v);
    c->gla_gate_rank = 16;
    c->gla_gate_normalizer = 16;
    c->attn_heads = r->attn_heads;
    c->attn_kv_heads = r->attn_kv_heads ? r->attn_kv_heads : r->attn_heads;
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-6f;
    c->hgrn_dim = r->d_model;
    c->hgrn2_heads = r->hgrn2_heads;
    c->retnet_heads = r->retnet_heads;
    c->deltanet_heads = r->deltanet_heads;
    c->gdn_heads = r->gdn_heads;
    c->gdn_head_dim = r->gdn_head_dim;
    c->gdn_expand_v = r->gdn_expand_v;
    c->conv_size = r->conv_size;
    c->use_lower_bound = r->lower_bound;
}

// The model's config from the flags (a new run); bad combinations are usage errors.
static void config_from_flags(const RunFlags* r, int vocab_size, Config* c, const char* prog) {
    config_sizes_from_flags(r, vocab_size, c);
    const char* bad = parse_pattern(r->pattern, r->n_layer, c->pattern);
    if (bad) usage_error(prog, "--pattern '%s': %s", r->pattern, bad);
    bad = validate_config(c);
    if (bad) usage_error(prog, "bad model flags: %s", bad);
}

// On resume the model is the checkpoint's: a model flag given on the command line must agree with
// it. Every disagreement is named with both values, then the run is refused.
static void resume_check_flags(const RunFlags* r, const Config* ck, const char* ckpt, const char* prog) {
    Config want;
    RunFlags given = *r; // what the flags build, with the layer count of the flags if given, else the checkpoint's
    if (!run_flag(r, "layers")->set) given.n_layer = ck->n_layer;
    if (!run_flag(r, "pattern")->set) given.pattern = "attn"; // not compared; any valid pattern
    config_from_flags(&given, ck->vocab_size, &want, prog);
    char pat_want[1024], pat_ck[1024];
    format_pattern(&want, pat_want, sizeof(pat_want));
    format_pattern(ck, pat_ck, sizeof(pat_ck));
    struct { const char* flag; long ck, want; } ints[] = {
        {"d-model", ck->d_model, want.d_model}, {"layers", ck->n_layer, want.n_layer},
        {"gla-heads", ck->gla_heads, want.gla_heads}, {"expand-k", ck->gla_dk, want.gla_dk},
        {"expand-v", ck->gla_dv, want.gla_dv}, {"hgrn2-heads", ck->hgrn2_heads, want.hgrn2_heads},
        {"retnet-heads", ck->retnet_heads, want.retnet_heads}, {"deltanet-heads", ck->deltanet_heads, want.deltanet_heads},
        {"gdn-heads", ck->gdn_heads, want.gdn_heads}, {"gdn-head-dim", ck->gdn_head_dim, want.gdn_head_dim},
        {"gdn-expand-v", ck->gdn_expand_v, want.gdn_expand_v}, {"conv-size", ck->conv_size, want.conv_size},
        {"lower-bound", ck->use_lower_bound, want.use_lower_bound}, {"attn-heads", ck->attn_heads, want.attn_heads},
        {"kv-heads", ck->attn_kv_heads, want.attn_kv_heads}, {"mlp-hidden", ck->mlp_hidden, want.mlp_hidden},
        {"tie", ck->tie_embeddings, want.tie_embeddings},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        if (!run_flag(r, ints[i].flag)->set || ints[i].ck == ints[i].want) continue;
        const char* unit = !strcmp(ints[i].flag, "expand-k") ? " (GLA key dim)" : !strcmp(ints[i].flag, "expand-v") ? " (GLA value dim)" : "";
        fprintf(stderr, "error: --%s: the checkpoint has %ld%s, the flags give %ld\n", ints[i].flag, ints[i].ck, unit, ints[i].want);
        bad++;
    }
    if (run_flag(r, "pattern")->set && strcmp(pat_ck, pat_want) != 0) {
        fprintf(stderr, "error: --pattern: the checkpoint has %s, the flags give %s\n", pat_ck, pat_want);
        bad++;
    }
    if (bad)
        fail("--resume 1: %d model flag%s disagree%s with the checkpoint '%s' (the model of a resumed run is the "
             "checkpoint's): drop %s, or start a new run with another --out", bad, bad > 1 ? "s" : "",
             bad > 1 ? "" : "s", ckpt, bad > 1 ? "those flags" : "that flag");
}

// Takes the checkpoint directory for this run, before anything is trained: creates it, locks it,
// proves a checkpoint can be written there, cleans what interrupted saves left, and refuses to start
// a new run over another run's checkpoints unless --overwrite 1 (they are deleted only by
// run_dir_start_over, after every other check). Returns the step to resume from, or -1 (a new run).
static int run_dir_open(const RunFlags* r, const char* prog) {
    const char* dir = r->out_dir;
    struct stat st;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
        usage_error(prog, "--out '%s' is a file; it must be a directory (it is created if missing)", dir);
    mkdir_p(dir);
    ckpt_dir_lock(dir);
    int stale = ckpt_clean_stale(dir);
    if (stale) printf("removed %d unfinished checkpoint file%s in '%s' left by an interrupted save\n", stale,
                      stale > 1 ? "s" : "", dir);
    ckpt_dir_probe(dir);
    int latest = latest_checkpoint(dir);
    if (r->resume) {
        if (latest < 0) fail("--resume 1: no complete checkpoint (DONE_* marker) in '%s'", dir);
        return latest;
    }
    if (latest >= 0 && !r->overwrite)
        fail("'%s' holds another run's checkpoints (latest: step %d): continue that run with --resume 1, choose "
             "another --out, or give --overwrite 1 to delete them and start over", dir, latest);
    return -1;
}

// --overwrite 1: deletes the previous run's checkpoints and log (called once every check has passed).
static void run_dir_start_over(const char* dir) {
    int* steps;
    int n = ckpt_list(dir, "DONE", &steps);
    const char* kinds[] = {"DONE", "model", "state"};
    char path[PATH_CAP];
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            ckpt_path(path, sizeof(path), dir, kinds[k], steps[i]);
            remove(path);
        }
    snprintf(path, sizeof(path), "%s/log.jsonl", dir);
    remove(path);
    if (n) printf("--overwrite 1: deleted the %d checkpoint%s and the log of the previous run in '%s'\n", n,
                  n > 1 ? "s" : "", dir);
    free(steps);
}

// A new run's id, written in its markers: from the clock and the process id, never 0.
static uint64_t new_run_id(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t id = hash_u64(((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 48));
    return id ? id : 1;
}

// Warns before step 0 when the checkpoints this run will keep may not fit the free disk space.
static void check_disk_space(const RunFlags* r, size_t num_params) {
    double per_ckpt = 2.0 * HEADER_BYTES + 12.0 * num_params; // model + optimizer state
    long saves = r->ckpt_every ? (long)(r->steps / r->ckpt_every) + 1 : 1;
    long held = r->keep ? (r->keep + 1 < saves ? r->keep + 1 : saves) : saves; // a new one is written before pruning
    double need = per_ckpt * held, have = disk_free_bytes(r->out_dir);
    if (have >= 0 && need > have)
        fprintf(stderr, "warning: the %ld checkpoint%s this run keeps in '%s' need about %.1f MiB, the disk has %.1f "
                "MiB free: saves may fail (lower --keep or free space)\n", held, held > 1 ? "s" : "", r->out_dir,
                need / 1048576.0, have / 1048576.0);
}

typedef struct {
    float lr, min_lr_frac, weight_decay, beta1, beta2, eps, grad_clip;
    int warmup_steps, total_steps;
} TrainHyper;

// linear warmup over `warmup` steps, then cosine decay from lr to lr*min_lr_frac at total_steps
static float learning_rate(const TrainHyper* h, int step) {
    if (step < h->warmup_steps) return h->lr * (step + 1) / h->warmup_steps;
    float min_lr = h->lr * h->min_lr_frac;
    if (step >= h->total_steps) return min_lr;
    double progress = (double)(step - h->warmup_steps) / (h->total_steps - h->warmup_steps);
    return (float)(min_lr + 0.5 * (h->lr - min_lr) * (1.0 + cos(3.14159265358979323846 * progress)));
}

// Evaluation: the mean loss over scored targets (nats per token), that loss in bits per byte of the
// text the targets encode (comparable across tokenizers), and the recall accuracy (MQAR).
typedef struct { float loss; double bits_per_byte, accuracy; long scored; } EvalResult;

static int argmax(const float* x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

// Restores the min-heap h[0..n) below position i.
static void min_heap_sift_down(float* h, int n, int i) {
    for (int c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (h[i] <= h[c]) break;
        float t = h[i];
        h[i] = h[c];
        h[c] = t;
    }
}

// The k-th largest of x[0..n) (1 <= k <= n): a min-heap of the k largest seen so far, O(n log k).
static float kth_largest(const float* x, int n, int k) {
    float* heap = (float*)malloc_check((size_t)k * sizeof(float));
    memcpy(heap, x, (size_t)k * sizeof(float));
    for (int i = k / 2 - 1; i >= 0; i--) min_heap_sift_down(heap, k, i);
    for (int i = k; i < n; i++)
        if (x[i] > heap[0]) {
            heap[0] = x[i];
            min_heap_sift_down(heap, k, 0);
        }
    float kth = heap[0];
    free(heap);
    return kth;
}

// Samples from softmax(logits / temperature) (V) restricted to the top_k largest logits (0: all;
// ties at the k-th value all stay); temperature 0 = argmax.
static int sample_token(const float* logits, int V, float temperature, int top_k, uint64_t* rng) {
    int best = argmax(logits, V);
    if (temperature <= 0.0f) return best;
    float floor_logit = top_k > 0 && top_k < V ? kth_largest(logits, V, top_k) : -INFINITY;
    double sum = 0.0;
    for (int i = 0; i < V; i++)
        if (logits[i] >= floor_logit) sum += exp((logits[i] - logits[best]) / temperature);
    double r = random_f32(rng) * sum, acc = 0.0;
    for (int i = 0; i < V; i++) {
        if (logits[i] < floor_logit) continue;
        acc += exp((logits[i] - logits[best]) / temperature);
        if (acc > r) return i;
    }
    return best;
}

// ----------------------------------------------------------------------------
// the run's log: one JSON object per line in <out>/log.jsonl, appended as the run goes, for plots
// (dev/plot.py) and scripts. Training steps {"step", "loss", "lr", "grad_norm", "tokens_per_s",
// "elapsed_s"}; evaluations {"step", "val_loss", "bits_per_byte" or "recall"}. A resumed run goes on
// appending: the steps a killed run trained past its last checkpoint are trained and logged again,
// and a step's last line is the one that counts. Opened before step 0; a write that fails later
// (disk full) is reported once and logging stops, the training does not.

typedef struct {
    FILE* f;
    char path[PATH_CAP];
} RunLog;

// A new run starts the log afresh (a log without checkpoints is a run killed before its first one);
// a resumed run appends to it.
static void run_log_open(RunLog* log, const char* dir, int resume) {
    if (snprintf(log->path, PATH_CAP, "%s/log.jsonl", dir) >= PATH_CAP) fail("path too long: '%s'", dir);
    log->f = fopen_check(log->path, resume ? "a" : "w");
}

static void run_log_line(RunLog* log, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_log_line(RunLog* log, const char* fmt, ...) {
    if (!log->f) return;
    va_list ap;
    va_start(ap, fmt);
    int ok = vfprintf(log->f, fmt, ap) >= 0 && fflush(log->f) == 0;
    va_end(ap);
    if (!ok) {
        fprintf(stderr, "warning: cannot write '%s' (%s): the log stops here, training goes on\n", log->path, strerror(errno));
        fclose(log->f);
        log->f = NULL;
    }
}

static void run_log_step(RunLog* log, int step, float loss, float lr, float norm, double tokens_per_s, double elapsed) {
    run_log_line(log, "{\"step\": %d, \"loss\": %.6g, \"lr\": %.6g, \"grad_norm\": %.6g, \"tokens_per_s\": %.1f, "
                 "\"elapsed_s\": %.3f}\n", step, loss, lr, norm, tokens_per_s, elapsed);
}

static void run_log_eval(RunLog* log, int step, const EvalResult* e, int recall) {
    if (recall) run_log_line(log, "{\"step\": %d, \"val_loss\": %.6g, \"recall\": %.6g}\n", step, e->loss, e->accuracy);
    else run_log_line(log, "{\"step\": %d, \"val_loss\": %.6g, \"bits_per_byte\": %.6g}\n", step, e->loss, e->bits_per_byte);
}

static void run_log_close(RunLog* log) {
    if (log->f) fclose(log->f);
    log->f = NULL;
}

// "1h02m", "4m10s", "12s": what is left of a run
static const char* format_duration(double seconds, char out[32]) {
    long s = seconds > 0 && seconds < 1e9 ? (long)(seconds + 0.5) : 0;
    if (s >= 3600) snprintf(out, 32, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else if (s >= 60) snprintf(out, 32, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, 32, "%lds", s);
    return out;
}

// SIGINT / SIGTERM: the first asks the training loop to finish its step, save a checkpoint and exit;
// a second aborts at once (the last complete checkpoint stays good: saves are atomic).
static volatile sig_atomic_t stop_signal = 0;

static void on_stop_signal(int sig) {
    if (stop_signal) _exit(128 + sig);
    stop_signal = sig;
    static const char msg[] = "\nstop requested: finishing this step and saving a checkpoint (again to abort at once)\n";
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)ignored;
}

static void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ----------------------------------------------------------------------------
// using a trained model: the trainers' commands besides training (`train_gla COMMAND ...`)
//   generate  -c CKPT [--prompt TEXT | --prompt -]   the prompt's continuation, streamed, and tokens/s
//   eval      -c CKPT -j SHARDS                       loss, bits per byte, perplexity, recall, over whole shards
//   logits    -c CKPT --ids "1 2 3" -o FILE           one sequence's logits (T, V) as raw float32
// CKPT is a checkpoint directory (its latest complete checkpoint) or a model file.

typedef struct {
    const char *command, *ckpt, *tok_path, *prompt, *data_glob, *ids, *out;
    int gen_tokens, top_k, seed, B, T, batches, chunk;
    float temperature;
    Flag flags[24];
    int n_flags;
} ToolFlags;

static void tool_flags_parse(ToolFlags* t, int argc, char** argv) {
    memset(t, 0, sizeof(*t));
    t->command = argv[0];
    t->ckpt = ""; t->tok_path = "data/tokenizer_bytes.bin"; t->prompt = "\n"; t->out = "";
    t->data_glob = "data/tinyshakespeare/tiny_shakespeare_val.bin"; t->ids = "";
    t->gen_tokens = 256; t->seed = 1337; t->B = 8; t->T = 128; t->chunk = 16; t->temperature = 0.8f;
    Flag table[] = {
        {"ckpt", 'c', FLAG_STRING, &t->ckpt, 0, 0, "checkpoint directory (its latest checkpoint) or model file"},
        {"tokenizer", 'z', FLAG_STRING, &t->tok_path, 0, 0, "tokenizer file"},
        {"prompt", 0, FLAG_STRING, &t->prompt, 0, 0, "generate: the text to continue ('-': read standard input)"},
        {"gen-tokens", 'G', FLAG_INT, &t->gen_tokens, 0, 100000000, "generate: tokens to sample"},
        {"temperature", 0, FLAG_FLOAT, &t->temperature, 0, 100, "generate: sampling temperature (0: greedy)"},
        {"top-k", 0, FLAG_INT, &t->top_k, 0, 100000000, "generate: sample among the k most likely tokens (0: all)"},
        {"seed", 0, FLAG_INT, &t->seed, 0, 2147483647, "generate: the training run's --seed reproduces its samples"},
        {"data", 'j', FLAG_STRING, &t->data_glob, 0, 0, "eval: shards (glob; target files beside them are used)"},
        {"batch", 'b', FLAG_INT, &t->B, 1, 4096, "eval: batch size"},
        {"seq-len", 'T', FLAG_INT, &t->T, 2, 65536, "eval: sequence length (MQAR: the example length)"},
        {"batches", 'm', FLAG_INT, &t->batches, 0, 100000000, "eval: the first N batches only (0: all)"},
        {"chunk", 0, FLAG_INT, &t->chunk, 1, 1024, "eval, logits: chunk length of the linear mixers"},
        {"ids", 0, FLAG_STRING, &t->ids, 0, 0, "logits: the token ids, separated by spaces"},
        {"out", 'o', FLAG_STRING, &t->out, 0, 0, "logits: the output file"},
    };
    t->n_flags = (int)(sizeof(table) / sizeof(table[0]));
    memcpy(t->flags, table, sizeof(table));
    char summary[256];
    snprintf(summary, sizeof(summary), "%s: uses a trained model (commands: generate, eval, logits; without one: train).",
             argv[0]);
    parse_flags(argc, argv, t->flags, t->n_flags, summary);
    if (!*t->ckpt) usage_error(argv[0], "-c CKPT is needed: a checkpoint directory or a model file");
    if (!strcmp(t->command, "logits") && (!*t->ids || !*t->out)) usage_error(argv[0], "logits needs --ids and -o");
}

// The model file of CKPT: a directory's latest complete checkpoint, or the file itself; *step is
// its step (0 when the name has none).
static void resolve_checkpoint(const char* ckpt, char path[PATH_CAP], int* step) {
    struct stat st;
    if (stat(ckpt, &st) != 0) fail("cannot open '%s': %s", ckpt, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        *step = latest_checkpoint(ckpt);
        if (*step < 0) fail("'%s' holds no complete checkpoint (no DONE_* marker)", ckpt);
        ckpt_path(path, PATH_CAP, ckpt, "model", *step);
    } else {
        if (snprintf(path, PATH_CAP, "%s", ckpt) >= PATH_CAP) fail("path too long: '%s'", ckpt);
        *step = ckpt_file_step(path, "model");
        if (*step < 0) *step = 0;
    }
}

// The prompt: the text itself, or standard input for "-" (malloc'd either way).
static char* read_prompt(const char* prompt) {
    if (strcmp(prompt, "-") != 0) {
        char* copy = (char*)malloc_check(strlen(prompt) + 1);
        strcpy(copy, prompt);
        return copy;
    }
    size_t cap = 4096, len = 0;
    char* text = (char*)malloc_check(cap);
    for (size_t got; (got = fread(text + len, 1, cap - 1 - len, stdin)) > 0;) {
        len += got;
        if (len + 1 == cap) {
            text = (char*)realloc(text, cap *= 2);
            if (!text) fail("out of memory reading the prompt from standard input");
        }
    }
    text[len] = 0;
    return text;
}

// "1 2 3" -> ids (malloc'd); returns the count. Every id must be below V.
static int parse_ids(const char* text, int V, int** ids) {
    int n = 0, cap = 64;
    *ids = (int*)malloc_check(cap * sizeof(int));
    for (const char* p = text; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t') p++;
        if (!*p) break;
        char* end;
        errno = 0;
        long id = strtol(p, &end, 10);
        if (end == p || errno || id < 0 || id >= V) fail("--ids: '%.20s' is not a token id below %d", p, V);
        if (n == cap) *ids = (int*)realloc(*ids, (cap *= 2) * sizeof(int));
        if (!*ids) fail("out of memory reading --ids");
        (*ids)[n++] = (int)id;
        p = end;
    }
    if (n == 0) fail("--ids holds no token id");
    return n;
}

// ----------------------------------------------------------------------------
// safetensors and fla's config.json: models exchanged with flash-linear-attention (fla) and
// Hugging Face transformers (dev/fla_names.md maps every name, shape and config field)
//   export  -c CKPT -o DIR    DIR/model.safetensors (float32, fla's names and shapes) + DIR/config.json
//   import  -i DIR -o FILE    a C model file from DIR/config.json and DIR/model.safetensors (or the
//                             shards of DIR/model.safetensors.index.json); F32, BF16 or F16 tensors
// The readers' cores (json_parse, safetensors_parse, fla_config_parse) never exit, so that the tests
// and dev/fuzz/fuzz_safetensors.c can call them.

// ---- JSON: a strict parser (RFC 8259) into a tree of nodes

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct {
    JsonType type;
    int boolean;
    double number;
    const char* text;  // a string's decoded UTF-8 (NUL-terminated: \u0000 is refused)
    const char* key;   // a member of an object: its key; else NULL
    int first, next;   // first child of an array or object, next sibling; -1 when none
    int count;         // children of an array or object
} JsonNode;

typedef struct {
    JsonNode* nodes;  // nodes[0] is the root
    int n, cap;
    char* strings;    // the decoded strings, each NUL-terminated (never longer than their source)
    size_t used;
} Json;

#define JSON_MAX_DEPTH 64  // deeper nesting is refused (the parser recurses)

typedef struct {
    const unsigned char* s;
    size_t n, i;
    Json* j;
} JsonParser;

// "at line L, column C (byte B): <why>" for the parser's position
static const char* json_error(const JsonParser* p, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static const char* json_error(const JsonParser* p, const char* fmt, ...) {
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    int line = 1, column = 1;
    for (size_t k = 0; k < p->i && k < p->n; k++) {
        if (p->s[k] == '\n') { line++; column = 1; } else column++;
    }
    return error_message("at line %d, column %d (byte %zu): %s", line, column, p->i, why);
}

// what the parser sees: "'x'", "byte 0x07" or "the end of the text"
static const char* json_found(const JsonParser* p, char out[32]) {
    if (p->i >= p->n) return "the end of the text";
    unsigned char c = p->s[p->i];
    if (c >= 0x20 && c < 0x7f) snprintf(out, 32, "'%c'", c);
    else snprintf(out, 32, "byte 0x%02x", c);
    return out;
}

static void json_skip_space(JsonParser* p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r')) p->i++;
}

static int json_new_node(Json* j, JsonType type) {
    if (j->n == j->cap) {
        j->cap = j->cap ? 2 * j->cap : 64;
        j->nodes = (JsonNode*)realloc(j->nodes, (size_t)j->cap * sizeof(JsonNode));
        if (!j->nodes) fail("out of memory parsing JSON");
    }
    JsonNode* v = &j->nodes[j->n];
    memset(v, 0, sizeof(*v));
    v->type = type;
    v->first = v->next = -1;
    return j->n++;
}

// The length of the UTF-8 sequence at s[0..n), 0 when it is not well formed (overlong forms,
// surrogates and code points above U+10FFFF are not).
static int utf8_length(const unsigned char* s, size_t n) {
    unsigned c = s[0];
    int len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (len == 0 || (size_t)len > n) return 0;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[k] & 0x3f);
    }
    static const uint32_t smallest[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < smallest[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

static int json_hex4(const unsigned char* s, uint32_t* out) {
    *out = 0;
    for (int k = 0; k < 4; k++) {
        unsigned c = s[k];
        int digit = c >= '0' && c <= '9' ? (int)(c - '0') : c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10)
                  : c >= 'A' && c <= 'F' ? (int)(c - 'A' + 10) : -1;
        if (digit < 0) return 0;
        *out = *out << 4 | (uint32_t)digit;
    }
    return 1;
}

// A string at p->i (its opening quote), decoded into j->strings; *text = the decoded string.
static const char* json_parse_string(JsonParser* p, const char** text) {
    char* out = p->j->strings + p->j->used;
    size_t len = 0;
    p->i++;
    for (;;) {
        if (p->i >= p->n) return json_error(p, "the string is not closed (no '\"' before the end of the text)");
        unsigned char c = p->s[p->i];
        if (c == '"') { p->i++; break; }
        if (c < 0x20) return json_error(p, "control character 0x%02x inside a string (write it as an escape)", c);
        if (c == '\\') {
            if (p->i + 1 >= p->n) return json_error(p, "the string is not closed (it ends in a backslash)");
            unsigned char e = p->s[p->i + 1];
            const char* simple = strchr("\"\\/bfnrt", e);
            if (e && simple) {
                out[len++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
                p->i += 2;
                continue;
            }
            if (e != 'u') return json_error(p, "unknown escape '\\%c' in a string", e >= 0x20 && e < 0x7f ? e : '?');
            uint32_t cp, low;
            if (p->i + 6 > p->n || !json_hex4(p->s + p->i + 2, &cp)) return json_error(p, "'\\u' needs 4 hex digits");
            p->i += 6;
            if (cp >= 0xdc00 && cp <= 0xdfff) return json_error(p, "a low surrogate \\u%04x without its high one", cp);
            if (cp >= 0xd800 && cp <= 0xdbff) { // a UTF-16 surrogate pair: \uD8xx\uDCxx
                if (p->i + 6 > p->n || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u' || !json_hex4(p->s + p->i + 2, &low) ||
                    low < 0xdc00 || low > 0xdfff)
                    return json_error(p, "a high surrogate \\u%04x not followed by a low one", cp);
                p->i += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            }
            if (cp == 0) return json_error(p, "\\u0000 (a NUL character) inside a string is not accepted");
            if (cp < 0x80) out[len++] = (char)cp;
            else if (cp < 0x800) { out[len++] = (char)(0xc0 | cp >> 6); out[len++] = (char)(0x80 | (cp & 0x3f)); }
            else if (cp < 0x10000) {
                out[len++] = (char)(0xe0 | cp >> 12);
                out[len++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                out[len++] = (char)(0x80 | (cp & 0x3f));
            } else {
                out[len++] = (char)(0xf0 | cp >> 18);
                out[len++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                out[len++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                out[len++] = (char)(0x80 | (cp & 0x3f));
            }
            continue;
        }
        int k = utf8_length(p->s + p->i, p->n - p->i);
        if (!k) return json_error(p, "invalid UTF-8 inside a string");
        memcpy(out + len, p->s + p->i, (size_t)k);
        len += (size_t)k;
        p->i += (size_t)k;
    }
    out[len] = 0;
    p->j->used += len + 1;
    *text = out;
    return NULL;
}

// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? at p->i
static const char* json_parse_number(JsonParser* p, double* x) {
    size_t start = p->i;
    const unsigned char* s = p->s;
#define DIGITS() while (p->i < p->n && s[p->i] >= '0' && s[p->i] <= '9') p->i++
    if (s[p->i] == '-') p->i++;
    if (p->i < p->n && s[p->i] == '0') p->i++;
    else if (p->i < p->n && s[p->i] >= '1' && s[p->i] <= '9') { DIGITS(); }
    else return json_error(p, "a number needs a digit after its sign");
    if (p->i < p->n && s[p->i] == '.') {
        p->i++;
        if (p->i >= p->n || s[p->i] < '0' || s[p->i] > '9') return json_error(p, "a number needs digits after its '.'");
        DIGITS();
    }
    if (p->i < p->n && (s[p->i] == 'e' || s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (s[p->i] == '+' || s[p->i] == '-')) p->i++;
        if (p->i >= p->n || s[p->i] < '0' || s[p->i] > '9') return json_error(p, "a number needs digits in its exponent");
        DIGITS();
    }
#undef DIGITS
    char buf[64];
    if (p->i - start >= sizeof(buf)) { p->i = start; return json_error(p, "a number of more than 63 characters"); }
    memcpy(buf, s + start, p->i - start);
    buf[p->i - start] = 0;
    *x = strtod(buf, NULL);
    if (!isfinite(*x)) { p->i = start; return json_error(p, "the number %s is out of range", buf); }
    return NULL;
}

static int json_key_order(const void* a, const void* b) { return strcmp(*(const char* const*)a, *(const char* const*)b); }

static const char* json_parse_value(JsonParser* p, int depth, int* out);

// an array or object at p->i (its '[' or '{'): the children, linked in order; an object's keys unique
static const char* json_parse_container(JsonParser* p, int depth, int node) {
    int is_object = p->s[p->i] == '{', last = -1;
    char close = is_object ? '}' : ']', seen[32];
    p->i++;
    json_skip_space(p);
    if (p->i < p->n && p->s[p->i] == close) { p->i++; return NULL; }
    for (;;) {
        const char* key = NULL;
        if (is_object) {
            json_skip_space(p);
            if (p->i >= p->n || p->s[p->i] != '"') return json_error(p, "expected a member's key (a string), found %s", json_found(p, seen));
            const char* bad = json_parse_string(p, &key);
            if (bad) return bad;
            json_skip_space(p);
            if (p->i >= p->n || p->s[p->i] != ':') return json_error(p, "expected ':' after the key \"%.60s\", found %s", key, json_found(p, seen));
            p->i++;
        }
        int child;
        const char* bad = json_parse_value(p, depth + 1, &child);
        if (bad) return bad;
        p->j->nodes[child].key = key;
        if (last < 0) p->j->nodes[node].first = child;
        else p->j->nodes[last].next = child;
        last = child;
        p->j->nodes[node].count++;
        json_skip_space(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
        if (p->i < p->n && p->s[p->i] == close) { p->i++; break; }
        return json_error(p, "expected ',' or '%c' in the %s, found %s", close, is_object ? "object" : "array", json_found(p, seen));
    }
    if (!is_object) return NULL;
    int count = p->j->nodes[node].count; // duplicate keys: sort a copy of them, compare neighbours
    const char** keys = (const char**)malloc_check((size_t)count * sizeof(char*));
    int k = 0;
    for (int c = p->j->nodes[node].first; c >= 0; c = p->j->nodes[c].next) keys[k++] = p->j->nodes[c].key;
    qsort(keys, (size_t)count, sizeof(char*), json_key_order);
    const char* dup = NULL;
    for (k = 1; k < count && !dup; k++) if (strcmp(keys[k - 1], keys[k]) == 0) dup = keys[k];
    free(keys);
    if (dup) return json_error(p, "the object that ends here has the key \"%.60s\" twice", dup);
    return NULL;
}

static const char* json_parse_value(JsonParser* p, int depth, int* out) {
    char seen[32];
    if (depth > JSON_MAX_DEPTH) return json_error(p, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    json_skip_space(p);
    if (p->i >= p->n) return json_error(p, "expected a value, found the end of the text");
    unsigned char c = p->s[p->i];
    static const char* literals[3] = {"null", "false", "true"};
    for (int k = 0; k < 3; k++) {
        size_t len = strlen(literals[k]);
        if (c == literals[k][0]) {
            if (p->n - p->i < len || memcmp(p->s + p->i, literals[k], len) != 0)
                return json_error(p, "expected '%s'", literals[k]);
            *out = json_new_node(p->j, k == 0 ? JSON_NULL : JSON_BOOL);
            p->j->nodes[*out].boolean = k == 2;
            p->i += len;
            return NULL;
        }
    }
    if (c == '"') {
        const char* text;
        const char* bad = json_parse_string(p, &text);
        if (bad) return bad;
        *out = json_new_node(p->j, JSON_STRING);
        p->j->nodes[*out].text = text;
        return NULL;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        double x = 0;
        const char* bad = json_parse_number(p, &x);
        if (bad) return bad;
        *out = json_new_node(p->j, JSON_NUMBER);
        p->j->nodes[*out].number = x;
        return NULL;
    }
    if (c == '[' || c == '{') {
        *out = json_new_node(p->j, c == '[' ? JSON_ARRAY : JSON_OBJECT);
        return json_parse_container(p, depth, *out);
    }
    return json_error(p, "expected a value, found %s", json_found(p, seen));
}

static void json_free(Json* j) {
    free(j->nodes);
    free(j->strings);
    memset(j, 0, sizeof(*j));
}

// Parses text[0..n) (one value, whitespace around it) into j (json_free it, also after an error).
// Returns NULL or a message with the line, column and byte of the problem.
static const char* json_parse(Json* j, const unsigned char* text, size_t n) {
    memset(j, 0, sizeof(*j));
    j->strings = (char*)malloc_check(n + 1);
    JsonParser p = {text, n, 0, j};
    int root;
    const char* bad = json_parse_value(&p, 0, &root);
    if (bad) return bad;
    json_skip_space(&p);
    char seen[32];
    if (p.i < n) return json_error(&p, "expected the end of the text after the value, found %s", json_found(&p, seen));
    return NULL;
}

// the member `key` of object node obj, or -1
static int json_member(const Json* j, int obj, const char* key) {
    for (int c = j->nodes[obj].first; c >= 0; c = j->nodes[c].next)
        if (strcmp(j->nodes[c].key, key) == 0) return c;
    return -1;
}

// whether a node is a whole number in [lo, hi]
static int json_is_int(const Json* j, int v, double lo, double hi) {
    double x = j->nodes[v].number;
    return j->nodes[v].type == JSON_NUMBER && x == floor(x) && x >= lo && x <= hi;
}

// ---- safetensors: 8 bytes little-endian header length N, N bytes of JSON header (padded with spaces),
// then the tensors' bytes. Header: {"__metadata__": {string: string}, NAME: {"dtype": "F32", "shape":
// [..], "data_offsets": [begin, end]}, ...}, offsets relative to the data, which the tensors must
// cover exactly, without gaps or overlaps.

#define SAFETENSORS_MAX_DIMS 8
#define SAFETENSORS_MAX_HEADER (100u << 20)  // the safetensors library's own bound
enum { SAFE_F32, SAFE_BF16, SAFE_F16, NUM_SAFE_DTYPES };
static const char* SAFE_DTYPE_NAMES[NUM_SAFE_DTYPES] = {"F32", "BF16", "F16"};
static const int SAFE_DTYPE_BYTES[NUM_SAFE_DTYPES] = {4, 2, 2};

typedef struct {
    const char* name;             // in the parsed header
    int dtype;                    // SAFE_*
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    size_t numel;
    const unsigned char* bytes;   // numel elements of dtype, inside the file's data
} SafeTensor;

typedef struct {
    Json header;
    SafeTensor* tensors;  // in header order
    int n;
} SafeTensors;

static void safetensors_free(SafeTensors* st) {
    json_free(&st->header);
    free(st->tensors);
    memset(st, 0, sizeof(*st));
}

// "(2, 3)"
static void format_shape(char* out, size_t cap, const int64_t* shape, int ndim) {
    size_t len = (size_t)snprintf(out, cap, "(");
    for (int k = 0; k < ndim && len < cap; k++) len += (size_t)snprintf(out + len, cap - len, "%s%lld", k ? ", " : "", (long long)shape[k]);
    if (len < cap) snprintf(out + len, cap - len, "%s)", ndim == 1 ? "," : "");
}

typedef struct { size_t begin, end; int index; } SafeSpan;
static int safe_span_order(const void* a, const void* b) {
    const SafeSpan *x = (const SafeSpan*)a, *y = (const SafeSpan*)b;
    return x->begin != y->begin ? (x->begin < y->begin ? -1 : 1) : x->end != y->end ? (x->end < y->end ? -1 : 1) : 0;
}

// One tensor's header entry (node v, named name) -> t; begin/end its data offsets.
static const char* safetensor_entry(const Json* j, int v, const char* name, SafeTensor* t, size_t* begin, size_t* end) {
    if (j->nodes[v].type != JSON_OBJECT) return error_message("tensor '%.80s': its header entry is not an object", name);
    for (int c = j->nodes[v].first; c >= 0; c = j->nodes[c].next) {
        const char* key = j->nodes[c].key;
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return error_message("tensor '%.80s': unknown field \"%.40s\" (a tensor has dtype, shape, data_offsets)", name, key);
    }
    int dt = json_member(j, v, "dtype"), sh = json_member(j, v, "shape"), off = json_member(j, v, "data_offsets");
    if (dt < 0 || sh < 0 || off < 0)
        return error_message("tensor '%.80s': no \"%s\"", name, dt < 0 ? "dtype" : sh < 0 ? "shape" : "data_offsets");
    if (j->nodes[dt].type != JSON_STRING) return error_message("tensor '%.80s': dtype is not a string", name);
    t->name = name;
    t->dtype = -1;
    for (int k = 0; k < NUM_SAFE_DTYPES; k++) if (strcmp(j->nodes[dt].text, SAFE_DTYPE_NAMES[k]) == 0) t->dtype = k;
    if (t->dtype < 0)
        return error_message("tensor '%.80s': dtype '%.20s' is not one this program reads (F32, BF16, F16)", name, j->nodes[dt].text);
    if (j->nodes[sh].type != JSON_ARRAY || j->nodes[sh].count > SAFETENSORS_MAX_DIMS)
        return error_message("tensor '%.80s': shape is not an array of at most %d sizes", name, SAFETENSORS_MAX_DIMS);
    t->ndim = 0;
    double numel = 1;
    for (int c = j->nodes[sh].first; c >= 0; c = j->nodes[c].next) {
        if (!json_is_int(j, c, 0, 4294967296.0)) return error_message("tensor '%.80s': a size in its shape is not a whole number in [0, 2^32]", name);
        t->shape[t->ndim++] = (int64_t)j->nodes[c].number;
        numel *= j->nodes[c].number;
    }
    int b = j->nodes[off].first;
    if (j->nodes[off].type != JSON_ARRAY || j->nodes[off].count != 2 || !json_is_int(j, b, 0, 9007199254740992.0) ||
        !json_is_int(j, j->nodes[b].next, 0, 9007199254740992.0))
        return error_message("tensor '%.80s': data_offsets is not [begin, end] (two whole numbers)", name);
    *begin = (size_t)j->nodes[b].number;
    *end = (size_t)j->nodes[j->nodes[b].next].number;
    if (*end < *begin) return error_message("tensor '%.80s': data_offsets [%zu, %zu] end before they begin", name, *begin, *end);
    double want = numel * SAFE_DTYPE_BYTES[t->dtype];
    char shape[128];
    format_shape(shape, sizeof(shape), t->shape, t->ndim);
    if (want != (double)(*end - *begin))
        return error_message("tensor '%.80s': shape %s of %s needs %.0f bytes, its data_offsets [%zu, %zu] hold %zu",
                             name, shape, SAFE_DTYPE_NAMES[t->dtype], want, *begin, *end, *end - *begin);
    t->numel = (size_t)numel;
    return NULL;
}

// Parses a whole safetensors file data[0..size) into st (safetensors_free it, also after an error):
// header length, header JSON, every tensor's dtype (F32, BF16, F16), shape and offsets, and the
// offsets covering the data exactly. Returns NULL or a message.
static const char* safetensors_parse(SafeTensors* st, const unsigned char* data, size_t size) {
    memset(st, 0, sizeof(*st));
    if (size < 8) return error_message("too short to be a safetensors file (%zu bytes; the header length alone is 8)", size);
    uint64_t header_len = 0;
    for (int k = 7; k >= 0; k--) header_len = header_len << 8 | data[k];
    if (header_len > size - 8)
        return error_message("the header length %llu goes beyond the end of the file (%zu bytes after the length)",
                             (unsigned long long)header_len, size - 8);
    if (header_len > SAFETENSORS_MAX_HEADER) return error_message("the header length %llu is above 100 MiB", (unsigned long long)header_len);
    const char* bad = json_parse(&st->header, data + 8, (size_t)header_len);
    if (bad) {
        char why[400]; // bad is in error_text, which error_message overwrites
        snprintf(why, sizeof(why), "%s", bad);
        return error_message("the header is not valid JSON: %s", why);
    }
    const Json* j = &st->header;
    if (j->nodes[0].type != JSON_OBJECT) return error_message("the header is not a JSON object");
    const unsigned char* base = data + 8 + header_len;
    size_t data_size = size - 8 - (size_t)header_len;
    st->tensors = (SafeTensor*)calloc_check((size_t)j->nodes[0].count, sizeof(SafeTensor));
    SafeSpan* spans = (SafeSpan*)calloc_check((size_t)j->nodes[0].count, sizeof(SafeSpan));
    for (int v = j->nodes[0].first; v >= 0 && !bad; v = j->nodes[v].next) {
        const char* name = j->nodes[v].key;
        if (strcmp(name, "__metadata__") == 0) { // free-form, string to string
            if (j->nodes[v].type != JSON_OBJECT) bad = error_message("__metadata__ is not an object");
            for (int c = j->nodes[v].first; c >= 0 && !bad; c = j->nodes[c].next)
                if (j->nodes[c].type != JSON_STRING) bad = error_message("__metadata__ \"%.60s\" is not a string", j->nodes[c].key);
            continue;
        }
        SafeTensor* t = &st->tensors[st->n];
        size_t begin = 0, end = 0;
        bad = safetensor_entry(j, v, name, t, &begin, &end);
        if (!bad && end > data_size)
            bad = error_message("tensor '%.80s': data_offsets [%zu, %zu] go beyond the data (%zu bytes)", name, begin, end, data_size);
        if (bad) break;
        t->bytes = base + begin;
        spans[st->n] = (SafeSpan){begin, end, st->n};
        st->n++;
    }
    if (!bad) { // sorted by offset, each tensor starts where the previous one ends
        qsort(spans, (size_t)st->n, sizeof(SafeSpan), safe_span_order);
        size_t at = 0;
        for (int k = 0; k < st->n && !bad; k++) {
            const char* name = st->tensors[spans[k].index].name;
            if (spans[k].begin < at)
                bad = error_message("tensor '%.80s' (bytes [%zu, %zu]) overlaps tensor '%.80s' (which ends at %zu)", name,
                                    spans[k].begin, spans[k].end, st->tensors[spans[k - 1].index].name, at);
            else if (spans[k].begin > at)
                bad = error_message("the data has %zu bytes no tensor holds, before tensor '%.80s' (bytes [%zu, %zu])",
                                    spans[k].begin - at, name, spans[k].begin, spans[k].end);
            at = spans[k].end;
        }
        if (!bad && at != data_size)
            bad = error_message("the tensors end at byte %zu of the data, which has %zu bytes (%zu bytes no tensor holds)",
                                at, data_size, data_size - at);
    }
    free(spans);
    return bad;
}

// a bfloat16 or float16 bit pattern as the float it is (both convert exactly)
static float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static float f16_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 31, mantissa = h & 1023, bits;
    if (exponent == 0) { // zero or subnormal: mantissa · 2^-24, exact in float32
        float f = ldexpf((float)mantissa, -24);
        return sign ? -f : f;
    }
    if (exponent == 31) bits = sign | 0x7f800000u | mantissa << 13; // inf, nan
    else bits = sign | (exponent + 112) << 23 | mantissa << 13;     // rebias 15 -> 127
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// t's numel elements as float32 into out
static void safetensor_to_f32(const SafeTensor* t, float* out) {
    if (t->dtype == SAFE_F32) { memcpy(out, t->bytes, t->numel * 4); return; }
    for (size_t k = 0; k < t->numel; k++) {
        uint16_t h = (uint16_t)(t->bytes[2 * k] | t->bytes[2 * k + 1] << 8);
        out[k] = t->dtype == SAFE_BF16 ? bf16_to_float(h) : f16_to_float(h);
    }
}

// ---- fla's names and shapes of our tensors (dev/fla_names.md §1)

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[3];
} FlaTensor;

// fla's key and shape of the tensor p: every mixer under model.layers.N.attn., ".weight" added but
// for the bare Parameters, GLA's gate projections a Sequential (gk_proj.0/1), GLA's and RetNet's
// gated norm `g_norm_swish_gate` (plain `g_norm` with fuse_norm false), short convs nn.Conv1d's
// (C, 1, W).
static void fla_tensor(const ParamSpec* p, int fuse_norm, FlaTensor* t) {
    const char* last = strrchr(p->name, '.') ? strrchr(p->name, '.') + 1 : p->name;
    t->ndim = p->ndim;
    t->shape[0] = p->shape[0];
    t->shape[1] = p->shape[1];
    if (p->layer < 0) {
        static const char* model_level[4] = {"model.embeddings.weight", "model.norm.weight", "lm_head.weight", "model.lower_bounds"};
        snprintf(t->name, sizeof(t->name), "%s", model_level[p->slot]);
        return;
    }
    const char* suffix = NULL;
    char buf[64];
    switch (p->slot) {
    case W_ATTN_NORM: case W_MLP_NORM:
        snprintf(t->name, sizeof(t->name), "model.layers.%d.%s.weight", p->layer, last);
        return;
    case W_MLP_GATE: case W_MLP_UP: case W_MLP_DOWN:
        snprintf(t->name, sizeof(t->name), "model.layers.%d.mlp.%s.weight", p->layer, last);
        return;
    case W_GLA_GK1: suffix = "gk_proj.0.weight"; break;
    case W_GLA_GK2: suffix = "gk_proj.1.weight"; break;
    case W_GLA_GK_BIAS: suffix = "gk_proj.1.bias"; break;
    case W_GLA_G_NORM: case W_RET_G_NORM: suffix = fuse_norm ? "g_norm_swish_gate.weight" : "g_norm.weight"; break;
    case W_DELTA_A_LOG: case W_DELTA_DT_BIAS: suffix = last; break;
    case W_DELTA_Q_CONV: case W_DELTA_K_CONV: case W_DELTA_V_CONV:
        snprintf(buf, sizeof(buf), "%c_conv1d.weight", last[0]);
        suffix = buf;
        t->ndim = 3;
        t->shape[1] = 1;
        t->shape[2] = p->shape[1];
        break;
    default: snprintf(buf, sizeof(buf), "%s.weight", last); suffix = buf;
    }
    snprintf(t->name, sizeof(t->name), "model.layers.%d.attn.%s", p->layer, suffix);
}

// fla's model_type per mixer id (the pure model of each family; attn alone is fla's Transformer)
static const char* FLA_MODEL_TYPES[NUM_MIXER_IDS] = {"transformer", "hgrn", "retnet", "gla", "hgrn2", "delta_net", "gated_deltanet"};

// ---- export: the checks, config.json, model.safetensors

// The one linear family of the pattern (MIXER_ATTN for a Transformer), or -1 with a message naming
// the layers of each family when it mixes several (fla's models have one linear mixer and `attn`).
static int fla_family(const Config* c, char* msg, size_t cap) {
    int family = MIXER_ATTN, families = 0;
    for (int mix = 1; mix < NUM_MIXER_IDS; mix++) {
        if (!uses_mixer(c, mix)) continue;
        family = mix;
        families++;
    }
    if (families <= 1) return family;
    size_t len = (size_t)snprintf(msg, cap, "fla has no model that mixes linear families (a model is one linear family "
                                  "plus attn layers), and this pattern has");
    for (int first_layer = 0, listed = 0; first_layer < c->n_layer && len < cap; first_layer++) { // in order of appearance
        int mix = c->pattern[first_layer], count = 0, earlier = 0;
        for (int l = 0; l < c->n_layer; l++) {
            count += c->pattern[l] == mix;
            earlier |= l < first_layer && c->pattern[l] == mix;
        }
        if (mix == MIXER_ATTN || earlier) continue;
        len += (size_t)snprintf(msg + len, cap - len, "%s %s at layer%s", listed++ ? ";" : "", MIXER_NAMES[mix], count > 1 ? "s" : "");
        for (int l = 0, first = 1; l < c->n_layer && len < cap; l++)
            if (c->pattern[l] == mix) { len += (size_t)snprintf(msg + len, cap - len, "%s %d", first ? "" : ",", l); first = 0; }
    }
    return -1;
}

// The shortest decimal that reads back as x (a float when is_float), written as Python's repr does
// (fixed notation with ".0" for whole numbers, exponent form outside [1e-4, 1e16)), so config.json
// reads as fla's own: 1e-06, 0.5, 10000.0.
static void json_number_text(double x, int is_float, char out[40]) {
    int p = 1;
    for (; p < 17; p++) {
        snprintf(out, 40, "%.*e", p - 1, x);
        double back = strtod(out, NULL);
        if (is_float ? (float)back == (float)x : back == x) break;
    }
    int exponent = atoi(strchr(out, 'e') + 1);
    if (x != 0 && (exponent < -4 || exponent >= 16)) return; // "1e-06" as it is
    snprintf(out, 40, "%.*f", p - 1 - exponent > 0 ? p - 1 - exponent : 0, x);
    if (!strchr(out, '.')) strcat(out, ".0");
}

// a ratio size/d for fla, which computes int(d * ratio): refused (NULL) when that would not give size back
static const char* fla_ratio(int size, int d, char out[40]) {
    double ratio = (double)size / d;
    json_number_text(ratio, 0, out);
    return (int)(d * strtod(out, NULL)) == size ? out : NULL;
}

// config.json writer: one "key": value a line, in the order given
typedef struct { FILE* f; int members; } JsonOut;
static void json_put(JsonOut* o, const char* key, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
static void json_put(JsonOut* o, const char* key, const char* fmt, ...) {
    fprintf(o->f, "%s  \"%s\": ", o->members++ ? ",\n" : "{\n", key);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(o->f, fmt, ap);
    va_end(ap);
}

// Why fla's config cannot express the model c (NULL when it can): the family's model_type in
// *family. Writes config.json (fla's fields, dev/fla_names.md §2) to f when f is not NULL.
static const char* fla_config_write(const Config* c, FILE* f, int* family) {
    static char msg[512];
    *family = fla_family(c, msg, sizeof(msg));
    if (*family < 0) return msg;
    int d = c->d_model, fam = *family, H, K, V;
    char a[40], b[40], theta[40], eps[40];
    if (fam == MIXER_GLA && (c->gla_gate_rank != 16 || c->gla_gate_normalizer != 16))
        return error_message("fla's GLA has gate rank 16 and normalizer 16 fixed; this model has %d and %d",
                             c->gla_gate_rank, c->gla_gate_normalizer);
    if (fam == MIXER_GLA && (!fla_ratio(c->gla_dk, d, a) || !fla_ratio(c->gla_dv, d, b)))
        return error_message("GLA key/value dims %d/%d are not d * expand_k / expand_v for a ratio fla reads back exactly", c->gla_dk, c->gla_dv);
    if (fam == MIXER_HGRN && !fla_ratio(c->hgrn_dim, d, a))
        return error_message("HGRN width %d is not d * expand_ratio for a ratio fla reads back exactly", c->hgrn_dim);
    if (fam == MIXER_RETNET && c->rope_theta != 10000.0f)
        return error_message("fla's RetNet has RoPE base 10000 fixed; this model has rope_theta %g", c->rope_theta);
    if (!f) return NULL;
    JsonOut o = {f, 0};
    json_number_text(c->rope_theta, 1, theta);
    json_number_text(c->norm_eps, 1, eps);
    json_put(&o, "model_type", "\"%s\"", FLA_MODEL_TYPES[fam]);
    json_put(&o, "vocab_size", "%d", c->vocab_size);
    json_put(&o, "hidden_size", "%d", d);
    json_put(&o, "num_hidden_layers", "%d", c->n_layer);
    json_put(&o, "intermediate_size", "%d", c->mlp_hidden);
    json_put(&o, "hidden_act", "\"swish\"");
    json_put(&o, "norm_eps", "%s", eps);
    json_put(&o, "tie_word_embeddings", "%s", c->tie_embeddings ? "true" : "false");
    json_put(&o, "fuse_norm", "true");
    json_put(&o, "fuse_swiglu", "true");
    json_put(&o, "fuse_cross_entropy", "true");
    if (fam == MIXER_ATTN) {
        json_put(&o, "num_heads", "%d", c->attn_heads);
        json_put(&o, "num_kv_heads", "%d", c->attn_kv_heads);
        json_put(&o, "qkv_bias", "false");
        json_put(&o, "qk_norm", "false");
        json_put(&o, "window_size", "null");
        json_put(&o, "rope_theta", "%s", theta);
    } else if (uses_mixer(c, MIXER_ATTN)) {
        json_put(&o, "attn", "{\"layers\": [");
        for (int l = 0, first = 1; l < c->n_layer; l++)
            if (c->pattern[l] == MIXER_ATTN) { fprintf(f, "%s%d", first ? "" : ", ", l); first = 0; }
        fprintf(f, "], \"num_heads\": %d, \"num_kv_heads\": %d, \"qkv_bias\": false, \"window_size\": null, \"rope_theta\": %s}",
                c->attn_heads, c->attn_kv_heads, theta);
    }
    if (fam == MIXER_GLA) {
        json_put(&o, "num_heads", "%d", c->gla_heads);
        json_put(&o, "expand_k", "%s", a);
        json_put(&o, "expand_v", "%s", b);
        json_put(&o, "use_short_conv", "false");
        json_put(&o, "use_output_gate", "true");
        json_put(&o, "feature_map", "null");
        json_put(&o, "clamp_min", "null");
    } else if (fam == MIXER_HGRN || fam == MIXER_HGRN2) {
        if (fam == MIXER_HGRN) {
            if (c->hgrn_dim % d == 0) snprintf(a, sizeof(a), "%d", c->hgrn_dim / d);
            json_put(&o, "expand_ratio", "%s", a);
        } else { // fla takes num_heads = d / expand_ratio (its num_heads field is then unused)
            json_put(&o, "num_heads", "%d", c->hgrn2_heads);
            json_put(&o, "expand_ratio", "%d", d / c->hgrn2_heads);
        }
        json_put(&o, "use_short_conv", "false");
        json_put(&o, "use_lower_bound", "%s", c->use_lower_bound ? "true" : "false");
    } else if (fam == MIXER_RETNET) {
        json_put(&o, "num_heads", "%d", c->retnet_heads);
        json_put(&o, "expand_k", "1.0");
        json_put(&o, "expand_v", "2.0");
        json_put(&o, "use_output_gate", "true");
        json_put(&o, "feature_map", "null");
    } else if (fam == MIXER_DELTANET) {
        mixer_dims(c, fam, &H, &K, &V);
        json_put(&o, "num_heads", "%d", H);
        json_put(&o, "expand_k", "1.0");
        json_put(&o, "expand_v", "1.0");
        json_put(&o, "use_gate", "false");
        json_put(&o, "use_beta", "true");
        json_put(&o, "use_short_conv", "true");
        json_put(&o, "conv_size", "%d", c->conv_size);
        json_put(&o, "allow_neg_eigval", "false");
        json_put(&o, "qk_norm", "\"l2\"");
        json_put(&o, "qk_activation", "\"silu\"");
    } else if (fam == MIXER_GATED_DELTANET) {
        json_put(&o, "num_heads", "%d", c->gdn_heads);
        json_put(&o, "head_dim", "%d", c->gdn_head_dim);
        json_put(&o, "expand_v", "%d", c->gdn_expand_v);
        json_put(&o, "num_v_heads", "null");
        json_put(&o, "use_gate", "true");
        json_put(&o, "use_short_conv", "true");
        json_put(&o, "conv_size", "%d", c->conv_size);
        json_put(&o, "allow_neg_eigval", "false");
        json_put(&o, "output_gate_activation", "\"swish\"");
    }
    fprintf(f, "\n}\n");
    return NULL;
}

// model.safetensors of float32 tensors t[0..n), whose data lie one after the other in data (the
// canonical order of the flat parameter buffer); the header padded with spaces to a multiple of 8.
static void safetensors_write(const char* path, const FlaTensor* t, int n, const float* data) {
    size_t cap = 256 + (size_t)n * 256, len = 0, offset = 0;
    char* header = (char*)malloc_check(cap);
    len += (size_t)snprintf(header, cap, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int k = 0; k < n; k++) {
        size_t bytes = 4;
        len += (size_t)snprintf(header + len, cap - len, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", t[k].name);
        for (int i = 0; i < t[k].ndim; i++) {
            len += (size_t)snprintf(header + len, cap - len, "%s%lld", i ? "," : "", (long long)t[k].shape[i]);
            bytes *= (size_t)t[k].shape[i];
        }
        len += (size_t)snprintf(header + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", offset, offset + bytes);
        offset += bytes;
    }
    len += (size_t)snprintf(header + len, cap - len, "}");
    while ((8 + len) % 8) header[len++] = ' ';
    unsigned char size_bytes[8];
    for (int k = 0; k < 8; k++) size_bytes[k] = (unsigned char)((uint64_t)len >> (8 * k));
    char tmp[PATH_CAP];
    FILE* f = atomic_open(path, tmp);
    fwrite_check(size_bytes, 1, 8, f, tmp);
    fwrite_check(header, 1, len, f, tmp);
    fwrite_check(data, 1, offset, f, tmp);
    atomic_commit(f, tmp, path);
    free(header);
}

static void fla_export(const char* ckpt, const char* dir) {
    char path[PATH_CAP], out[PATH_CAP], tmp[PATH_CAP];
    int step, family;
    resolve_checkpoint(ckpt, path, &step);
    Config c;
    checkpoint_read_config(path, &c);
    const char* bad = fla_config_write(&c, NULL, &family);
    if (bad) fail("'%s' cannot be exported to fla: %s", path, bad);
    ParamSpec specs[MAX_PARAMS];
    size_t n;
    int n_specs = param_table(&c, specs, &n);
    float* params = (float*)malloc_check(n * sizeof(float));
    checkpoint_read_params(path, &c, params, n);
    FlaTensor* tensors = (FlaTensor*)malloc_check((size_t)n_specs * sizeof(FlaTensor));
    for (int k = 0; k < n_specs; k++) fla_tensor(&specs[k], 1, &tensors[k]);
    mkdir_p(dir);
    if (snprintf(out, sizeof(out), "%s/model.safetensors", dir) >= (int)sizeof(out)) fail("path too long: '%s'", dir);
    safetensors_write(out, tensors, n_specs, params);
    snprintf(out, sizeof(out), "%s/config.json", dir);
    FILE* f = atomic_open(out, tmp);
    fla_config_write(&c, f, &family);
    if (ferror(f)) fail("cannot write '%s': %s (disk full?)", tmp, strerror(errno));
    atomic_commit(f, tmp, out);
    printf("exported '%s' (step %d) -> '%s': config.json (model_type %s), model.safetensors (%d float32 tensors, "
           "%zu parameters)\n", path, step, dir, FLA_MODEL_TYPES[family], n_specs, n);
    free(tensors);
    free(params);
}

// ---- import: config.json -> Config (dev/fla_names.md §3: what is refused)

#define FLA_TRY(call) do { const char* why_ = (call); if (why_) return why_; } while (0)
#define FLA_REFUSE(cond, ...) do { if (cond) return error_message(__VA_ARGS__); } while (0)

// A config field: its node, or -1 when absent or null (fla's default then applies).
static int fla_field(const Json* j, const char* key) {
    int v = json_member(j, 0, key);
    return v >= 0 && j->nodes[v].type != JSON_NULL ? v : -1;
}
// Whole-number, number, boolean and string fields with fla's default; NULL or a message.
static const char* fla_int(const Json* j, const char* key, int def, int lo, int hi, int* out) {
    int v = fla_field(j, key);
    *out = def;
    if (v < 0) return NULL;
    if (!json_is_int(j, v, lo, hi)) return error_message("%s must be a whole number in [%d, %d]", key, lo, hi);
    *out = (int)j->nodes[v].number;
    return NULL;
}
static const char* fla_number(const Json* j, const char* key, double def, double* out) {
    int v = fla_field(j, key);
    *out = def;
    if (v < 0) return NULL;
    if (j->nodes[v].type != JSON_NUMBER) return error_message("%s must be a number", key);
    *out = j->nodes[v].number;
    return NULL;
}
static const char* fla_bool(const Json* j, const char* key, int def, int* out) {
    int v = fla_field(j, key);
    *out = def;
    if (v < 0) return NULL;
    if (j->nodes[v].type != JSON_BOOL) return error_message("%s must be true or false", key);
    *out = j->nodes[v].boolean;
    return NULL;
}
static const char* fla_string(const Json* j, const char* key, const char* def, const char** out) {
    int v = fla_field(j, key);
    *out = def;
    if (v < 0) return NULL;
    if (j->nodes[v].type != JSON_STRING) return error_message("%s must be a string", key);
    *out = j->nodes[v].text;
    return NULL;
}

// a boolean field (fla's default def) whose only implemented value is `want`, else `refusal`
static const char* fla_bool_is(const Json* j, const char* key, int def, int want, const char* refusal) {
    int flag;
    FLA_TRY(fla_bool(j, key, def, &flag));
    return flag == want ? NULL : refusal;
}

// size = d * ratio as fla computes it, which must be a whole number
static const char* fla_scaled(int d, double ratio, const char* what, int* size) {
    double x = d * ratio;
    if (x != floor(x) || x < 1 || x > 65536) return error_message("hidden_size %d * %s %g = %g is not a whole number in [1, 65536]", d, what, ratio, x);
    *size = (int)x;
    return NULL;
}

// The hybrid's attention layers (config field `attn`: null, one spec or a list of specs, all with
// the same heads and RoPE base: the C config has one attention setting) into c->pattern.
static const char* fla_attn_specs(const Json* j, Config* c) {
    int attn = fla_field(j, "attn"), n_specs = 0;
    if (attn < 0) return NULL;
    int is_list = j->nodes[attn].type == JSON_ARRAY;
    if (!is_list && j->nodes[attn].type != JSON_OBJECT) return "attn must be null, an object or a list of objects";
    for (int s = is_list ? j->nodes[attn].first : attn; s >= 0; s = is_list ? j->nodes[s].next : -1) {
        if (j->nodes[s].type != JSON_OBJECT) return "attn must be null, an object or a list of objects";
        int layers = json_member(j, s, "layers"), heads = json_member(j, s, "num_heads"), kv = json_member(j, s, "num_kv_heads");
        int bias = json_member(j, s, "qkv_bias"), window = json_member(j, s, "window_size"), theta = json_member(j, s, "rope_theta");
        int qk_norm = json_member(j, s, "qk_norm");
        if (layers < 0 || j->nodes[layers].type != JSON_ARRAY) return "attn.layers must be a list of layer indices";
        if (heads < 0 || !json_is_int(j, heads, 1, 65536)) return "attn.num_heads must be a positive whole number";
        if (kv >= 0 && j->nodes[kv].type != JSON_NULL && !json_is_int(j, kv, 1, 65536)) return "attn.num_kv_heads must be a positive whole number";
        if (bias >= 0 && (j->nodes[bias].type != JSON_BOOL || j->nodes[bias].boolean)) return "attn.qkv_bias (biases on q, k, v) is not implemented";
        if (window >= 0 && j->nodes[window].type != JSON_NULL) return "attn.window_size (sliding-window attention) is not implemented";
        if (qk_norm >= 0 && j->nodes[qk_norm].type != JSON_NULL && !(j->nodes[qk_norm].type == JSON_BOOL && !j->nodes[qk_norm].boolean))
            return "attn.qk_norm is not implemented";
        if (theta >= 0 && (j->nodes[theta].type != JSON_NUMBER || !(j->nodes[theta].number > 1) || j->nodes[theta].number > 3e38))
            return "attn.rope_theta must be a number above 1";
        int h = (int)j->nodes[heads].number, hkv = kv >= 0 && j->nodes[kv].type != JSON_NULL ? (int)j->nodes[kv].number : h;
        float base = theta >= 0 ? (float)j->nodes[theta].number : 10000.0f;
        if (n_specs++ && (h != c->attn_heads || hkv != c->attn_kv_heads || base != c->rope_theta))
            return "attn specs with different num_heads / num_kv_heads / rope_theta are not implemented (one attention setting)";
        c->attn_heads = h;
        c->attn_kv_heads = hkv;
        c->rope_theta = base;
        for (int l = j->nodes[layers].first; l >= 0; l = j->nodes[l].next) {
            if (!json_is_int(j, l, 0, c->n_layer - 1))
                return error_message("attn.layers holds an entry that is not a layer index in [0, %d)", c->n_layer);
            int layer = (int)j->nodes[l].number;
            if (c->pattern[layer] == MIXER_ATTN) return error_message("attn.layers names layer %d twice", layer);
            c->pattern[layer] = MIXER_ATTN;
        }
    }
    return NULL;
}

// The C config of an fla config.json (its parsed tree j) or a message naming the first field the C
// program does not implement; *fuse_norm = the field that names GLA's and RetNet's gated norm.
// Sizes of families absent from the model are the trainers' defaults (model_flag_defaults), so
// that export then import gives back the trainer's file byte for byte.
static const char* fla_config_parse(const Json* j, Config* c, int* fuse_norm) {
    if (j->nodes[0].type != JSON_OBJECT) return "config.json is not a JSON object";
    const char* model_type;
    FLA_TRY(fla_string(j, "model_type", "", &model_type));
    int family = -1;
    for (int mix = 0; mix < NUM_MIXER_IDS; mix++) if (strcmp(model_type, FLA_MODEL_TYPES[mix]) == 0) family = mix;
    FLA_REFUSE(family < 0, "model_type '%.40s' is not one this program implements (gla, hgrn, hgrn2, retnet, delta_net, "
               "gated_deltanet, transformer)", model_type);
    int d, L, V, I, tie, affine;
    double hidden_ratio, eps;
    FLA_TRY(fla_int(j, "hidden_size", 2048, 2, 16384, &d));
    FLA_TRY(fla_int(j, "num_hidden_layers", family == MIXER_GATED_DELTANET ? 21 : 24, 1, MAX_LAYERS, &L));
    FLA_TRY(fla_int(j, "vocab_size", 32000, 2, 65536, &V));
    FLA_REFUSE(fla_field(j, "attnres_block_size") >= 0, "attnres_block_size (AttnRes residuals) is not implemented");
    const char* act;
    FLA_TRY(fla_string(j, "hidden_act", "swish", &act));
    FLA_REFUSE(strcmp(act, "swish") && strcmp(act, "silu"), "hidden_act '%.40s' is not implemented (only swish)", act);
    FLA_TRY(fla_bool(j, "elementwise_affine", 1, &affine));
    FLA_REFUSE(!affine || (json_member(j, 0, "elementwise_affine") >= 0 && fla_field(j, "elementwise_affine") < 0),
               "elementwise_affine must be true (norms with weights)");
    FLA_TRY(fla_number(j, "hidden_ratio", family == MIXER_RETNET ? 2 : 4, &hidden_ratio));
    FLA_TRY(fla_int(j, "intermediate_size", 0, 1, 65536, &I));
    if (!I) { // fla's GatedMLP rule: int(d * hidden_ratio * 2/3) rounded up to a multiple of 256
        double rule = d * hidden_ratio * 2 / 3;
        FLA_REFUSE(!(rule >= 0 && rule <= 65536), "hidden_ratio %g gives an MLP outside [1, 65536]", hidden_ratio);
        I = ((int)rule + 255) / 256 * 256;
    }
    FLA_TRY(fla_bool(j, "tie_word_embeddings", 0, &tie));
    FLA_TRY(fla_number(j, "norm_eps", 1e-6, &eps));
    FLA_REFUSE(!(eps > 0 && eps < 1), "norm_eps %g outside (0, 1)", eps);
    FLA_TRY(fla_bool(j, "fuse_norm", 1, fuse_norm));

    RunFlags defaults;
    memset(&defaults, 0, sizeof(defaults));
    model_flag_defaults(&defaults);
    defaults.d_model = d;
    config_sizes_from_flags(&defaults, V, c);
    c->n_layer = L;
    c->mlp_hidden = I;
    c->tie_embeddings = tie;
    c->norm_eps = (float)eps;
    for (int l = 0; l < L; l++) c->pattern[l] = family;

    int H, kv;
    double x, y;
    const char* text;
    if (family == MIXER_ATTN) { // fla's Transformer: the attention settings at the top level
        FLA_TRY(fla_int(j, "num_heads", 32, 1, 65536, &H));
        FLA_TRY(fla_int(j, "num_kv_heads", H, 1, 65536, &kv));
        FLA_TRY(fla_bool_is(j, "qkv_bias", 0, 0, "qkv_bias (biases on q, k, v) is not implemented"));
        FLA_TRY(fla_bool_is(j, "qk_norm", 0, 0, "qk_norm is not implemented"));
        FLA_REFUSE(fla_field(j, "window_size") >= 0, "window_size (sliding-window attention) is not implemented");
        FLA_REFUSE(json_member(j, 0, "rope_theta") >= 0 && fla_field(j, "rope_theta") < 0, "rope_theta null (no RoPE) is not implemented");
        FLA_TRY(fla_number(j, "rope_theta", 10000, &x));
        FLA_REFUSE(!(x > 1) || x > 3e38, "rope_theta %g must be above 1", x);
        c->attn_heads = H;
        c->attn_kv_heads = kv;
        c->rope_theta = (float)x;
    } else {
        FLA_TRY(fla_attn_specs(j, c));
    }
    if (family == MIXER_GLA) {
        FLA_TRY(fla_int(j, "num_heads", 4, 1, 65536, &H));
        FLA_TRY(fla_number(j, "expand_k", 0.5, &x));
        FLA_TRY(fla_number(j, "expand_v", 1.0, &y));
        FLA_TRY(fla_scaled(d, x, "expand_k", &c->gla_dk));
        FLA_TRY(fla_scaled(d, y, "expand_v", &c->gla_dv));
        FLA_TRY(fla_int(j, "num_kv_heads", H, 1, 65536, &kv));
        FLA_REFUSE(kv != H, "GLA num_kv_heads %d != num_heads %d (grouped keys/values) is not implemented", kv, H);
        FLA_TRY(fla_string(j, "feature_map", NULL, &text));
        FLA_REFUSE(text, "GLA feature_map '%.40s' is not implemented (only null)", text);
        FLA_TRY(fla_bool_is(j, "use_short_conv", 0, 0, "GLA use_short_conv (short convolutions) is not implemented"));
        FLA_TRY(fla_bool_is(j, "use_output_gate", 1, 1, "GLA without the output gate (use_output_gate false) is not implemented"));
        FLA_REFUSE(fla_field(j, "clamp_min") >= 0, "GLA clamp_min is not implemented");
        c->gla_heads = H;
    } else if (family == MIXER_HGRN) {
        FLA_REFUSE(json_member(j, 0, "expand_ratio") >= 0 && fla_field(j, "expand_ratio") < 0, "HGRN expand_ratio must be a number");
        FLA_TRY(fla_number(j, "expand_ratio", 1, &x));
        FLA_TRY(fla_scaled(d, x, "expand_ratio", &c->hgrn_dim));
        FLA_TRY(fla_bool_is(j, "use_short_conv", 0, 0, "HGRN use_short_conv (short convolutions) is not implemented"));
        FLA_TRY(fla_bool(j, "use_lower_bound", 1, &c->use_lower_bound));
        FLA_REFUSE(c->use_lower_bound && c->hgrn_dim != d, "HGRN expand_ratio must be 1 with use_lower_bound (the bounds are (L, d))");
    } else if (family == MIXER_HGRN2) { // fla: num_heads = d / expand_ratio when expand_ratio is set, else expand_ratio = d / num_heads
        int E, ratio = json_member(j, 0, "expand_ratio");
        FLA_TRY(fla_int(j, "num_heads", 0, 1, 65536, &H));
        if (ratio >= 0 && j->nodes[ratio].type == JSON_NULL) {
            FLA_REFUSE(!H || d % H, "HGRN2 with expand_ratio null needs num_heads dividing hidden_size %d", d);
            E = d / H;
        } else {
            FLA_TRY(fla_int(j, "expand_ratio", 128, 1, 65536, &E));
        }
        FLA_REFUSE(d % E, "HGRN2 expand_ratio %d must divide hidden_size %d", E, d);
        FLA_TRY(fla_bool_is(j, "use_short_conv", 0, 0, "HGRN2 use_short_conv (short convolutions) is not implemented"));
        FLA_TRY(fla_bool(j, "use_lower_bound", 1, &c->use_lower_bound));
        c->hgrn2_heads = d / E;
    } else if (family == MIXER_RETNET) {
        FLA_TRY(fla_int(j, "num_heads", 8, 1, 65536, &H));
        FLA_TRY(fla_number(j, "expand_k", 1.0, &x));
        FLA_TRY(fla_number(j, "expand_v", 2.0, &y));
        FLA_REFUSE(x != 1.0 || y != 2.0, "RetNet expand_k %g / expand_v %g: only 1 and 2 are implemented", x, y);
        FLA_TRY(fla_int(j, "num_kv_heads", H, 1, 65536, &kv));
        FLA_REFUSE(kv != H, "RetNet num_kv_heads %d != num_heads %d is not implemented", kv, H);
        FLA_TRY(fla_string(j, "feature_map", NULL, &text));
        FLA_REFUSE(text, "RetNet feature_map '%.40s' is not implemented (only null)", text);
        FLA_TRY(fla_bool_is(j, "use_output_gate", 1, 1, "RetNet without the output gate (use_output_gate false) is not implemented"));
        FLA_REFUSE(c->rope_theta != 10000.0f, "attn.rope_theta %g beside RetNet layers (fla's RetNet has 10000; "
                   "the C model has one RoPE base for both)", c->rope_theta);
        c->retnet_heads = H;
    } else if (family == MIXER_DELTANET) {
        FLA_TRY(fla_int(j, "num_heads", 16, 1, 65536, &H));
        FLA_TRY(fla_number(j, "expand_k", 1.0, &x));
        FLA_TRY(fla_number(j, "expand_v", 1.0, &y));
        FLA_REFUSE(x != 1.0 || y != 1.0, "DeltaNet expand_k %g / expand_v %g: only 1 is implemented", x, y);
        FLA_TRY(fla_bool_is(j, "use_gate", 0, 0, "DeltaNet use_gate (an output gate) is not implemented"));
        FLA_TRY(fla_bool_is(j, "use_beta", 1, 1, "DeltaNet without beta (use_beta false) is not implemented"));
        FLA_TRY(fla_bool_is(j, "use_short_conv", 1, 1, "DeltaNet without short convolutions (use_short_conv false) is not implemented"));
        FLA_TRY(fla_bool_is(j, "allow_neg_eigval", 0, 0, "allow_neg_eigval is not implemented"));
        FLA_TRY(fla_string(j, "qk_norm", "l2", &text));
        FLA_REFUSE(strcmp(text, "l2"), "DeltaNet qk_norm '%.40s' is not implemented (only l2)", text);
        FLA_TRY(fla_string(j, "qk_activation", "silu", &text));
        FLA_REFUSE(strcmp(text, "silu"), "DeltaNet qk_activation '%.40s' is not implemented (only silu)", text);
        FLA_TRY(fla_int(j, "conv_size", 4, 1, 16, &c->conv_size));
        FLA_REFUSE(d % H, "DeltaNet num_heads %d must divide hidden_size %d", H, d);
        c->deltanet_heads = H;
    } else if (family == MIXER_GATED_DELTANET) {
        FLA_TRY(fla_int(j, "num_heads", 6, 1, 1024, &H));
        FLA_TRY(fla_int(j, "head_dim", 256, 1, 4096, &c->gdn_head_dim));
        FLA_TRY(fla_int(j, "num_v_heads", H, 1, 65536, &kv));
        FLA_REFUSE(kv != H, "Gated DeltaNet num_v_heads %d != num_heads %d (grouped value heads) is not implemented", kv, H);
        FLA_TRY(fla_number(j, "expand_v", 2.0, &x));
        FLA_REFUSE(x != floor(x) || x < 1 || x > 16, "Gated DeltaNet expand_v %g: only whole numbers in [1, 16] are implemented", x);
        FLA_TRY(fla_bool_is(j, "use_gate", 1, 1, "Gated DeltaNet without the output gate (use_gate false) is not implemented"));
        FLA_TRY(fla_bool_is(j, "use_short_conv", 1, 1, "Gated DeltaNet without short convolutions (use_short_conv false) is not implemented"));
        FLA_TRY(fla_bool_is(j, "allow_neg_eigval", 0, 0, "allow_neg_eigval is not implemented"));
        FLA_TRY(fla_string(j, "output_gate_activation", "swish", &text));
        FLA_REFUSE(strcmp(text, "swish") && strcmp(text, "silu"), "Gated DeltaNet output_gate_activation '%.40s' is not "
                   "implemented (only swish)", text);
        FLA_TRY(fla_int(j, "conv_size", 4, 1, 16, &c->conv_size));
        c->gdn_heads = H;
        c->gdn_expand_v = (int)x;
    }
    // the sizes of the absent families are not checked where unused, but GLA's and attention's always are
    if (!uses_mixer(c, MIXER_GLA) && (c->gla_dk % c->gla_heads || c->gla_dv % c->gla_heads)) c->gla_heads = 1;
    if (!uses_mixer(c, MIXER_ATTN) && (d % c->attn_heads || (d / c->attn_heads) % 2)) c->attn_heads = c->attn_kv_heads = 1;
    const char* bad = validate_config(c);
    FLA_REFUSE(bad, "the model is not one the C program can build: %s", bad);
    return NULL;
}

// ---- import: the tensors of one file or of the shards of an index

typedef struct {
    const SafeTensor* t;
    const char* file;  // the file it is in (for messages)
    int used;
} FlaEntry;

typedef struct {
    int n_files;
    char (*paths)[PATH_CAP];
    unsigned char** data;
    SafeTensors* parsed;
    FlaEntry* entries;  // every tensor of every file
    int n;
} FlaFiles;

// Reads and parses one safetensors file into files->... (fails naming it).
static void fla_files_add(FlaFiles* files, const char* path) {
    int k = files->n_files++;
    files->paths = (char(*)[PATH_CAP])realloc(files->paths, (size_t)files->n_files * PATH_CAP);
    files->data = (unsigned char**)realloc(files->data, (size_t)files->n_files * sizeof(unsigned char*));
    files->parsed = (SafeTensors*)realloc(files->parsed, (size_t)files->n_files * sizeof(SafeTensors));
    if (!files->paths || !files->data || !files->parsed) fail("out of memory reading '%s'", path);
    snprintf(files->paths[k], PATH_CAP, "%s", path);
    size_t size;
    files->data[k] = read_whole_file(path, &size);
    const char* bad = safetensors_parse(&files->parsed[k], files->data[k], size);
    if (bad) fail("'%s': %s", path, bad);
}

static void fla_files_free(FlaFiles* files) {
    for (int k = 0; k < files->n_files; k++) {
        safetensors_free(&files->parsed[k]);
        free(files->data[k]);
    }
    free(files->paths);
    free(files->data);
    free(files->parsed);
    free(files->entries);
    memset(files, 0, sizeof(*files));
}

// The tensors of DIR: model.safetensors, else the shards named by model.safetensors.index.json's
// weight_map (each tensor in the shard the map names, every tensor of a shard in the map).
static void fla_files_read(FlaFiles* files, const char* dir) {
    char path[PATH_CAP];
    memset(files, 0, sizeof(*files));
    if (snprintf(path, sizeof(path), "%s/model.safetensors", dir) >= (int)sizeof(path)) fail("path too long: '%s'", dir);
    struct stat st;
    if (stat(path, &st) == 0) {
        fla_files_add(files, path);
        files->entries = (FlaEntry*)calloc_check((size_t)files->parsed[0].n, sizeof(FlaEntry));
        for (int k = 0; k < files->parsed[0].n; k++) files->entries[k] = (FlaEntry){&files->parsed[0].tensors[k], files->paths[0], 0};
        files->n = files->parsed[0].n;
        return;
    }
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    if (stat(path, &st) != 0) fail("'%s' holds neither model.safetensors nor model.safetensors.index.json", dir);
    size_t size;
    unsigned char* text = read_whole_file(path, &size);
    Json index;
    const char* bad = json_parse(&index, text, size);
    if (bad) fail("'%s': not valid JSON: %s", path, bad);
    int map = index.nodes[0].type == JSON_OBJECT ? json_member(&index, 0, "weight_map") : -1;
    if (map < 0 || index.nodes[map].type != JSON_OBJECT) fail("'%s': no \"weight_map\" object", path);
    files->entries = (FlaEntry*)calloc_check((size_t)index.nodes[map].count, sizeof(FlaEntry));
    for (int v = index.nodes[map].first; v >= 0; v = index.nodes[v].next) {
        const char *name = index.nodes[v].key, *shard = index.nodes[v].text;
        if (index.nodes[v].type != JSON_STRING || !*shard || strchr(shard, '/'))
            fail("'%s': the weight_map entry of '%.80s' is not a file name in '%s'", path, name, dir);
        char shard_path[PATH_CAP];
        if (snprintf(shard_path, sizeof(shard_path), "%s/%s", dir, shard) >= (int)sizeof(shard_path)) fail("path too long: '%s'", shard);
        int k = 0;
        while (k < files->n_files && strcmp(files->paths[k], shard_path)) k++;
        if (k == files->n_files) fla_files_add(files, shard_path);
        const SafeTensor* found = NULL;
        for (int t = 0; t < files->parsed[k].n && !found; t++)
            if (strcmp(files->parsed[k].tensors[t].name, name) == 0) found = &files->parsed[k].tensors[t];
        if (!found) fail("'%s': the weight_map puts '%.80s' in '%s', which has no such tensor", path, name, shard_path);
        files->entries[files->n++] = (FlaEntry){found, files->paths[k], 0};
    }
    for (int k = 0; k < files->n_files; k++) // a shard's tensors all in the map, mapped to that shard
        for (int t = 0; t < files->parsed[k].n; t++) {
            int listed = 0;
            for (int e = 0; e < files->n && !listed; e++) listed = files->entries[e].t == &files->parsed[k].tensors[t];
            if (!listed)
                fail("'%s': tensor '%.80s' of '%s' is not in its weight_map under that file", path,
                     files->parsed[k].tensors[t].name, files->paths[k]);
        }
    json_free(&index);
    free(text);
}

static FlaEntry* fla_files_find(FlaFiles* files, const char* name) {
    for (int e = 0; e < files->n; e++) if (strcmp(files->entries[e].t->name, name) == 0) return &files->entries[e];
    return NULL;
}

// Checks that `e` holds a tensor of t's shape and converts it to float32 into out.
static void fla_tensor_load(const FlaEntry* e, const FlaTensor* t, float* out) {
    int same = e->t->ndim == t->ndim;
    for (int k = 0; k < t->ndim && same; k++) same = e->t->shape[k] == t->shape[k];
    char got[128], want[128];
    format_shape(got, sizeof(got), e->t->shape, e->t->ndim);
    format_shape(want, sizeof(want), t->shape, t->ndim);
    if (!same) fail("'%s': tensor '%s' has shape %s, the config implies %s", e->file, t->name, got, want);
    safetensor_to_f32(e->t, out);
}

static void fla_import(const char* dir, const char* out) {
    char path[PATH_CAP];
    if (snprintf(path, sizeof(path), "%s/config.json", dir) >= (int)sizeof(path)) fail("path too long: '%s'", dir);
    size_t size;
    unsigned char* text = read_whole_file(path, &size);
    Json j;
    const char* bad = json_parse(&j, text, size);
    if (bad) fail("'%s': not valid JSON: %s", path, bad);
    Config c;
    int fuse_norm;
    bad = fla_config_parse(&j, &c, &fuse_norm);
    if (bad) fail("'%s' cannot become a C model: %s", path, bad);
    json_free(&j);
    free(text);

    FlaFiles files;
    fla_files_read(&files, dir);
    ParamSpec specs[MAX_PARAMS];
    size_t n;
    int n_specs = param_table(&c, specs, &n);
    float* params = (float*)malloc_check(n * sizeof(float));
    int dtypes[NUM_SAFE_DTYPES] = {0};
    for (int k = 0; k < n_specs; k++) {
        FlaTensor t;
        fla_tensor(&specs[k], fuse_norm, &t);
        FlaEntry* e = fla_files_find(&files, t.name);
        if (!e) fail("'%s' has no tensor '%s' (the C model's '%s'; config.json implies it)", dir, t.name, specs[k].name);
        fla_tensor_load(e, &t, params + specs[k].offset);
        e->used = 1;
        dtypes[e->t->dtype]++;
    }
    FlaEntry* head = c.tie_embeddings ? fla_files_find(&files, "lm_head.weight") : NULL;
    if (head) { // a tied model saved with its head: accepted when it is the embedding
        FlaTensor t = {"lm_head.weight", 2, {c.vocab_size, c.d_model}};
        float* copy = (float*)malloc_check(specs[0].numel * sizeof(float));
        fla_tensor_load(head, &t, copy);
        if (memcmp(copy, params, specs[0].numel * sizeof(float)) != 0)
            fail("'%s': tie_word_embeddings is true but lm_head.weight differs from model.embeddings.weight", head->file);
        head->used = 1;
        free(copy);
    }
    for (int e = 0; e < files.n; e++)
        if (!files.entries[e].used)
            fail("'%s': unexpected tensor '%s' (the model config.json describes has no such weight)", files.entries[e].file,
                 files.entries[e].t->name);
    for (int k = 0; k < n_specs; k++) {
        bad = params_check(params + specs[k].offset, specs[k].numel);
        if (bad) fail("'%s': tensor '%s': %s", dir, specs[k].name, bad);
    }
    checkpoint_write(out, &c, params, n);
    char pattern[1024];
    format_pattern(&c, pattern, sizeof(pattern));
    printf("imported '%s' (%d tensors in %d file%s: %d F32, %d BF16, %d F16) -> '%s': pattern %s, %zu parameters\n", dir,
           n_specs, files.n_files, files.n_files == 1 ? "" : "s", dtypes[SAFE_F32], dtypes[SAFE_BF16], dtypes[SAFE_F16], out,
           pattern, n);
    free(params);
    fla_files_free(&files);
}

// `train_gla export ...` and `train_gla import ...`: argv[0] is the command.
static int convert_main(int argc, char** argv) {
    const char *ckpt = "", *in = "", *out = "";
    int is_export = strcmp(argv[0], "export") == 0;
    Flag export_flags[] = {
        {"ckpt", 'c', FLAG_STRING, &ckpt, 0, 0, "checkpoint directory (its latest checkpoint) or model file"},
        {"out", 'o', FLAG_STRING, &out, 0, 0, "the folder to write config.json and model.safetensors into (created)"},
    };
    Flag import_flags[] = {
        {"in", 'i', FLAG_STRING, &in, 0, 0, "an fla / Hugging Face model folder: config.json, model.safetensors (or its shards)"},
        {"out", 'o', FLAG_STRING, &out, 0, 0, "the C model file to write"},
    };
    if (is_export) {
        parse_flags(argc, argv, export_flags, 2, "export: a checkpoint as an fla / Hugging Face model (config.json + "
                    "model.safetensors, float32), loadable with AutoModelForCausalLM.from_pretrained after `import fla`.");
        if (!*ckpt || !*out) usage_error(argv[0], "export needs -c CKPT and -o DIR");
        fla_export(ckpt, out);
    } else {
        parse_flags(argc, argv, import_flags, 2, "import: an fla / Hugging Face model (config.json + model.safetensors, "
                    "F32, BF16 or F16) as a C model file for generate, eval and logits.");
        if (!*in || !*out) usage_error(argv[0], "import needs -i DIR and -o FILE");
        fla_import(in, out);
    }
    return 0;
}

// ----------------------------------------------------------------------------
// checks and reports of the test programs (test_gla.c, test_gla.cu, dev/cuda/emu/check_model.cu,
// which #define TESTING): every check is printed ok / FAIL / skip as it happens and counted for the
// summary line `N passed, N failed[, N skipped]`

#ifdef TESTING
static int passed = 0, failed = 0, skipped = 0;

static void check(int ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s  ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout); // a GPU fault or a crash later keeps the lines before it
    if (ok) passed++; else failed++;
}

// A check that cannot run here (its input files are missing): counted and named, never a pass.
static void skip(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static void skip(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("skip  ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    skipped++;
}

// ‖ref − x‖ / ‖ref‖ (or ‖x‖ when ref is all zero); NaN when x holds a NaN
static double rel_rms(const float* ref, const float* x, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)ref[i] - x[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (den == 0.0) return sqrt(num);
    return sqrt(num / den);
}

static void check_close(const char* what, const float* ref, const float* x, size_t n, double tol) {
    double e = rel_rms(ref, x, n);
    check(e <= tol && isfinite(e), "%-44s rel RMS %.2e (tol %.0e)", what, e, tol);
}
#endif // TESTING

// ----------------------------------------------------------------------------
// reference dumps (read by the test programs): written by dev/reference.py (format: its docstring);
// config, parameters, inputs/targets, activations, logits, loss, gradients, a short AdamW run

#define DUMP_MAGIC 20261126
#define DUMP_VERSION 1

typedef struct {
    char name[97];
    int dtype, ndim, shape[4];
    size_t numel;
    void* data;
} Record;

typedef struct {
    const char* path;
    int n;
    Record* rec;
} Dump;

static void dump_load(Dump* d, const char* path) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[256];
    read_header(h, f, path, DUMP_MAGIC, DUMP_VERSION, "reference dump");
    if (h[2] < 1 || h[2] > 100000) fail("'%s': record count %d is implausible", path, h[2]);
    d->path = path;
    d->n = h[2];
    d->rec = (Record*)calloc_check(d->n, sizeof(Record));
    for (int i = 0; i < d->n; i++) {
        Record* r = &d->rec[i];
        int32_t meta[6];
        fread_check(r->name, 1, 96, f, path);
        fread_check(meta, sizeof(int32_t), 6, f, path);
        r->dtype = meta[0];
        r->ndim = meta[1];
        if ((r->dtype != 1 && r->dtype != 2) || r->ndim < 0 || r->ndim > 4)
            fail("'%s': record %d ('%.96s') has dtype %d, ndim %d", path, i, r->name, r->dtype, r->ndim);
        r->numel = 1;
        int64_t left = file_size(f) - ftello(f); // bytes after this record's name and meta
        for (int k = 0; k < r->ndim; k++) {
            r->shape[k] = meta[2 + k];
            if (r->shape[k] < 0) fail("'%s': record '%s' has a negative dimension", path, r->name);
            if (r->shape[k] > 0 && r->numel > (size_t)(left / 4) / (size_t)r->shape[k])
                fail("'%s': record '%s' (shape %d in dim %d) needs more than the %lld bytes left (truncated or corrupt)",
                     path, r->name, r->shape[k], k, (long long)left);
            r->numel *= (size_t)r->shape[k];
        }
        r->data = malloc_check(r->numel * 4);
        fread_check(r->data, 4, r->numel, f, path);
    }
    if (ftello(f) != file_size(f)) fail("'%s': trailing bytes after the last record", path);
    fclose(f);
}

static Record* dump_find(Dump* d, const char* name) {
    for (int i = 0; i < d->n; i++)
        if (strcmp(d->rec[i].name, name) == 0) return &d->rec[i];
    fail("'%s': no record '%s'", d->path, name);
}
static int dump_int(Dump* d, const char* name) { return ((int32_t*)dump_find(d, name)->data)[0]; }
static float dump_float(Dump* d, const char* name) { return ((float*)dump_find(d, name)->data)[0]; }
static float* dump_floats(Dump* d, const char* name, size_t numel) {
    Record* r = dump_find(d, name);
    if (r->dtype != 1 || r->numel != numel) fail("'%s': record '%s' has %zu elements, expected %zu", d->path, name, r->numel, numel);
    return (float*)r->data;
}

static void dump_free(Dump* d) {
    for (int i = 0; i < d->n; i++) free(d->rec[i].data);
    free(d->rec);
}

#endif // MODEL_H

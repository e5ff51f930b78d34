// Writes the fuzzers' seed corpus (committed in dev/fuzz/corpus/): small valid files of each format,
// made with the writers of model.h, and a few edge cases cut from them. Regenerate with
//   make dev/fuzz/make_corpus && dev/fuzz/make_corpus dev/fuzz/corpus
#include "../../model.h"

// path = dir/kind/name
static void corpus_path(char* path, const char* dir, const char* kind, const char* name) {
    snprintf(path, PATH_CAP, "%s/%s/%s", dir, kind, name);
}

// dir/kind/name = the first `keep` bytes of dir/kind/from
static void write_cut(const char* dir, const char* kind, const char* from, const char* name, size_t keep) {
    char src[PATH_CAP], dst[PATH_CAP];
    corpus_path(src, dir, kind, from);
    corpus_path(dst, dir, kind, name);
    size_t n;
    unsigned char* data = read_whole_file(src, &n);
    FILE* f = fopen_check(dst, "wb");
    fwrite_check(data, 1, keep < n ? keep : n, f, dst);
    fclose_check(f, dst);
    free(data);
}

// a tiny model (d = 8, vocab 16) of the given pattern; its small random parameters in *params (malloc'd)
static size_t tiny_model(Config* c, const char* pattern, int n_layer, float** params) {
    *c = (Config){.vocab_size = 16, .d_model = 8, .n_layer = n_layer, .mlp_hidden = 8, .tie_embeddings = 0,
                  .gla_heads = 2, .gla_dk = 4, .gla_dv = 8, .gla_gate_rank = 2, .gla_gate_normalizer = 16,
                  .attn_heads = 2, .attn_kv_heads = 1, .rope_theta = 10000.0f, .norm_eps = 1e-6f, .hgrn_dim = 8,
                  .hgrn2_heads = 2, .retnet_heads = 2, .deltanet_heads = 2, .gdn_heads = 2, .gdn_head_dim = 2,
                  .gdn_expand_v = 2, .conv_size = 2, .use_lower_bound = 1};
    const char* bad = parse_pattern(pattern, n_layer, c->pattern);
    if (!bad) bad = validate_config(c);
    if (bad) fail("seed config '%s': %s", pattern, bad);
    ParamSpec t[MAX_PARAMS];
    size_t n;
    param_table(c, t, &n);
    *params = (float*)malloc_check(n * sizeof(float));
    uint64_t rng = 1;
    for (size_t i = 0; i < n; i++) (*params)[i] = 0.02f * random_normal(&rng);
    return n;
}

static void write_checkpoint(const char* dir, const char* name, const char* pattern, int n_layer) {
    Config c;
    float* params;
    size_t n = tiny_model(&c, pattern, n_layer, &params);
    char path[PATH_CAP];
    corpus_path(path, dir, "checkpoint", name);
    checkpoint_write(path, &c, params, n);
    free(params);
}

// a tiny model as `train_gla export` writes it (fla's gate rank 16): name.safetensors and name.json,
// its config.json (the safetensors harness reads every seed both ways)
static void write_fla(const char* dir, const char* name, const char* pattern, int n_layer) {
    Config c;
    float* params;
    tiny_model(&c, pattern, n_layer, &params);
    c.gla_gate_rank = 16;
    free(params);
    ParamSpec specs[MAX_PARAMS];
    size_t n;
    int n_specs = param_table(&c, specs, &n);
    params = (float*)malloc_check(n * sizeof(float));
    uint64_t rng = 2;
    for (size_t i = 0; i < n; i++) params[i] = 0.02f * random_normal(&rng);
    FlaTensor tensors[MAX_PARAMS];
    for (int k = 0; k < n_specs; k++) fla_tensor(&specs[k], 1, &tensors[k]);
    char path[PATH_CAP], file[256];
    snprintf(file, sizeof(file), "%s.safetensors", name);
    corpus_path(path, dir, "safetensors", file);
    safetensors_write(path, tensors, n_specs, params);
    snprintf(file, sizeof(file), "%s.json", name);
    corpus_path(path, dir, "safetensors", file);
    FILE* f = fopen_check(path, "wb");
    int family;
    const char* bad = fla_config_write(&c, f, &family);
    if (bad) fail("seed '%s': %s", name, bad);
    fclose_check(f, path);
    free(params);
}

// a BPE of the 256 bytes, merges t+h -> "th", th+e -> "the", " "+the -> " the", and an EOT token
static void write_bpe(const char* path) {
    Tokenizer t;
    tokenizer_alloc(&t, TOKENIZER_BPE, 260, 259, 3);
    for (int b = 0; b < 256; b++) {
        unsigned char byte = (unsigned char)b;
        tokenizer_set_token(&t, b, &byte, 1);
    }
    tokenizer_set_token(&t, 256, (const unsigned char*)"th", 2);
    tokenizer_set_token(&t, 257, (const unsigned char*)"the", 3);
    tokenizer_set_token(&t, 258, (const unsigned char*)" the", 4);
    tokenizer_set_token(&t, 259, (const unsigned char*)"<|endoftext|>", 13);
    int32_t merges[9] = {'t', 'h', 256, 256, 'e', 257, ' ', 257, 258};
    memcpy(t.merges, merges, sizeof(merges));
    tokenizer_write(&t, path);
    tokenizer_free(&t);
}

int main(int argc, char** argv) {
    if (argc != 2) fail("usage: %s CORPUS_DIR", argv[0]);
    const char* dir = argv[1];
    char path[PATH_CAP];
    const char* kinds[4] = {"checkpoint", "tokenizer", "shard", "safetensors"};
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof(path), "%s/%s", dir, kinds[k]);
        mkdir_p(path);
    }
    write_checkpoint(dir, "gla_attn.bin", "gla,attn", 2);
    write_checkpoint(dir, "linear_mixers.bin", "hgrn,retnet,hgrn2,deltanet,gated_deltanet", 5);
    write_cut(dir, "checkpoint", "gla_attn.bin", "header_only.bin", HEADER_BYTES);
    write_cut(dir, "checkpoint", "gla_attn.bin", "short.bin", 100);

    corpus_path(path, dir, "tokenizer", "bytes.bin");
    tokenizer_write_bytes(path);
    corpus_path(path, dir, "tokenizer", "bpe.bin");
    write_bpe(path);
    write_cut(dir, "tokenizer", "bpe.bin", "bpe_cut_in_merges.bin", HEADER_BYTES + 2 * 256 + 9 + 13 + 4 + 20);

    uint16_t tokens[64];
    for (int i = 0; i < 64; i++) tokens[i] = (uint16_t)("to be or not to be, that is the question. "[i % 42]);
    corpus_path(path, dir, "shard", "text.bin");
    shard_write(path, tokens, 64, 0);
    corpus_path(path, dir, "shard", "empty.bin");
    shard_write(path, tokens, 0, 0);
    tokens[5] = 50256; // GPT-2's EOT: inside its vocabulary, outside the byte one
    corpus_path(path, dir, "shard", "gpt2_eot.bin");
    shard_write(path, tokens, 64, 0);
    write_cut(dir, "shard", "text.bin", "cut.bin", HEADER_BYTES + 63);
    uint16_t targets[64]; // an MQAR-like target file: 4 examples of 16, every 4th position scored
    for (int i = 0; i < 64; i++) targets[i] = i % 4 == 0 ? (uint16_t)(32 + i % 32) : TARGET_IGNORED;
    corpus_path(path, dir, "shard", "mqar.targets");
    targets_write(path, targets, 64, 16);

    write_fla(dir, "gla_attn", "gla,attn", 2);
    write_fla(dir, "gated_deltanet", "gated_deltanet", 1);
    write_fla(dir, "hgrn_attn", "hgrn,attn", 2);
    write_cut(dir, "safetensors", "gla_attn.safetensors", "cut_in_header.safetensors", 8 + 100);
    write_cut(dir, "safetensors", "gla_attn.safetensors", "cut_in_data.safetensors", 1000);
    return 0;
}

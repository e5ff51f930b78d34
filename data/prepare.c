/*
 * data/prepare.c — Tiny Shakespeare as token shards in llm.c's format, with one of three tokenizers.
 *
 *   ./data/prepare [-t bytes|gpt2|TOKENIZER] [-o PREFIX] [-f] [input.txt]
 *
 * The text comes from, in order: the argument, the TINYSHAKESPEARE environment variable, the copy
 * committed with the repository (data/tinyshakespeare.txt, public domain), an existing
 * data/tinyshakespeare/input.txt, or a download from the public char-rnn URL (curl or wget).
 * Shards that exist are never replaced unless -f is given. -o PREFIX names the outputs
 * PREFIX_val.bin and PREFIX_train.bin; without it, Tiny Shakespeare's shards get the names below
 * and any other text.txt gets data/text/text[_gpt2|_bpe<V>]_{val,train}.bin.
 * Writes, from the repository root (validation first, as llm.c splits Tiny Shakespeare):
 *
 *   -t bytes (default)  data/tokenizer_bytes.bin (256 tokens, one per byte, no EOT) and
 *                       data/tinyshakespeare/tiny_shakespeare_{val,train}.bin: the first 10% of the
 *                       bytes are validation, the other 90% training
 *   -t gpt2             data/tinyshakespeare/tiny_shakespeare_gpt2_{val,train}.bin with the tokenizer
 *                       data/tokenizer_gpt2.bin (make data/tokenizer_gpt2.bin), as llm.c's
 *                       dev/data/tinyshakespeare.py does: every "\n\n"-separated section is a
 *                       document, preceded by EOT and keeping its "\n\n"; the first 32,768 tokens are
 *                       validation. Tiny Shakespeare gives 305,260 training tokens (checked).
 *   -t TOKENIZER        a BPE tokenizer file (e.g. from data/train_bpe): the same documents, the first
 *                       10% of the tokens are validation; tiny_shakespeare_bpe<V>_{val,train}.bin
 * Shards hold uint16 ids, so a tokenizer of more than 65,536 tokens is refused.
 */
#include "../model.h"
#include <time.h>

#define URL "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
#define DIR "data/tinyshakespeare"
#define DOWNLOADED DIR "/input.txt"
#define COMMITTED "data/tinyshakespeare.txt"
#define GPT2_TOKENIZER "data/tokenizer_gpt2.bin"
#define TINY_SHAKESPEARE_BYTES 1115394
#define LLMC_GPT2_VAL 32768       // llm.c's validation split, in tokens
#define LLMC_GPT2_TRAIN 305260    // what that leaves for training

static int file_exists(const char* p) { struct stat st; return stat(p, &st) == 0; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Reads the whole text of *src; without one, the committed Tiny Shakespeare, else a downloaded one
// (downloading it first when it is not here). *src is set to the path read.
static unsigned char* read_text(const char** src_in, size_t* n) {
    const char* src = *src_in;
    if ((!src || !*src) && file_exists(COMMITTED)) src = COMMITTED;
    if (!src || !*src) {
        src = DOWNLOADED;
        if (!file_exists(src)) {
            printf("downloading %s\n", URL);
            if (system("curl -fsSL -o " DOWNLOADED ".part " URL " || wget -q -O " DOWNLOADED ".part " URL) != 0 ||
                rename(DOWNLOADED ".part", DOWNLOADED) != 0) {
                remove(DOWNLOADED ".part");
                fail("could not download Tiny Shakespeare; pass its path: ./data/prepare input.txt "
                     "(or set TINYSHAKESPEARE=/path/to/input.txt)");
            }
        }
    }
    *src_in = src;
    unsigned char* text = read_whole_file(src, n);
    if (*n < 1024) fail("'%s' has %zu bytes: too short to be Tiny Shakespeare (1,115,394 bytes)", src, *n);
    if (*n != TINY_SHAKESPEARE_BYTES)
        fprintf(stderr, "note: '%s' has %zu bytes, Tiny Shakespeare 1,115,394: named as another text\n", src, *n);
    return text;
}

// The output paths <prefix>_val.bin and <prefix>_train.bin; refuses to replace existing shards
// unless force (a prepared dataset is some user's hours of work, or the one a run resumes on).
static void output_paths(char val[PATH_CAP], char train[PATH_CAP], const char* prefix, int force) {
    if (snprintf(val, PATH_CAP, "%s_val.bin", prefix) >= PATH_CAP || snprintf(train, PATH_CAP, "%s_train.bin", prefix) >= PATH_CAP)
        fail("output prefix too long: '%s'", prefix);
    for (int i = 0; i < 2 && !force; i++)
        if (file_exists(i ? train : val))
            fail("'%s' exists: give -f to replace it, or -o PREFIX to write PREFIX_val.bin and PREFIX_train.bin", i ? train : val);
    char dir[PATH_CAP];
    snprintf(dir, sizeof(dir), "%s", prefix);
    char* slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        mkdir_p(dir);
    }
}

// The byte-level shards (the default, unchanged since the first version).
static void prepare_bytes(const char* src, const unsigned char* text, size_t n, const char* prefix, int force) {
    char val_path[PATH_CAP], train_path[PATH_CAP];
    output_paths(val_path, train_path, prefix, force);
    uint16_t* tokens = (uint16_t*)malloc_check(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) tokens[i] = text[i];
    size_t n_val = n / 10;
    Tokenizer t;
    tokenizer_init_bytes(&t);
    tokenizer_write(&t, "data/tokenizer_bytes.bin");
    uint32_t fp = tokenizer_fingerprint(&t);
    tokenizer_free(&t);
    shard_write(val_path, tokens, n_val, fp);
    shard_write(train_path, tokens + n_val, n - n_val, fp);
    printf("%s: %zu bytes -> %zu val + %zu train tokens (byte level), tokenizer data/tokenizer_bytes.bin\n"
           "  %s\n  %s\n", src, n, n_val, n - n_val, val_path, train_path);
    free(tokens);
}

// llm.c's documents: text.split("\n\n"), each section preceded by EOT (when the tokenizer has one)
// and encoded with its "\n\n" (but the last). Returns the token count; *out is malloc'd.
static size_t encode_documents(const Tokenizer* t, const unsigned char* text, size_t n, uint16_t** out) {
    uint16_t* tokens = (uint16_t*)malloc_check((2 * n + 1) * sizeof(uint16_t)); // <= one EOT and one token per byte
    size_t m = 0;
    for (size_t pos = 0;;) {
        size_t end = pos; // the section with its "\n\n" is text[pos, end)
        while (end + 1 < n && !(text[end] == '\n' && text[end + 1] == '\n')) end++;
        int last = end + 1 >= n; // no "\n\n" left: the rest of the text is the last section
        end = last ? n : end + 2;
        if (t->eot_id >= 0) tokens[m++] = (uint16_t)t->eot_id;
        int* ids;
        size_t k = tokenizer_encode_bytes(t, text + pos, end - pos, &ids);
        for (size_t i = 0; i < k; i++) tokens[m++] = (uint16_t)ids[i];
        free(ids);
        if (last) break;
        pos = end;
    }
    *out = tokens;
    return m;
}

// The default output prefix: Tiny Shakespeare's names for Tiny Shakespeare, data/<stem>/<stem> for
// another text (<stem>: its file name without the extension); `name` ("" for bytes) is appended.
static void default_prefix(char out[PATH_CAP], const char* src, size_t n, const char* name) {
    const char* sep = *name ? "_" : "";
    if (n == TINY_SHAKESPEARE_BYTES) {
        snprintf(out, PATH_CAP, DIR "/tiny_shakespeare%s%s", sep, name);
        return;
    }
    const char* base = strrchr(src, '/') ? strrchr(src, '/') + 1 : src;
    char stem[256];
    snprintf(stem, sizeof(stem), "%s", base);
    char* dot = strrchr(stem, '.');
    if (dot && dot != stem) *dot = 0;
    if (snprintf(out, PATH_CAP, "data/%s/%s%s%s", stem, stem, sep, name) >= PATH_CAP) fail("path too long: '%s'", src);
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); // a log redirected to a file keeps stdout and stderr in order
    const char *tok_arg = "bytes", *src = NULL, *prefix = NULL;
    int force = 0;
    const char* usage = "[-t bytes|gpt2|TOKENIZER] [-o PREFIX] [-f] [input.txt]";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: %s %s   (or TINYSHAKESPEARE=path; default: download)\n"
                   "  -t, --tokenizer   bytes (default), gpt2 (data/tokenizer_gpt2.bin), or a BPE tokenizer file\n"
                   "  -o, --out PREFIX  write PREFIX_val.bin and PREFIX_train.bin (default: Tiny Shakespeare's\n"
                   "                    names, or data/<name>/<name>_... for another text <name>.txt)\n"
                   "  -f, --force       replace shards that exist\n", argv[0], usage);
            return 0;
        } else if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--tokenizer") == 0) {
            if (++i >= argc) fail("%s needs a value: bytes, gpt2 or a tokenizer file", argv[i - 1]);
            tok_arg = argv[i];
        } else if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--out") == 0) {
            if (++i >= argc || !*argv[i]) fail("%s needs a value: the output prefix", argv[i - 1]);
            prefix = argv[i];
        } else if (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--force") == 0) {
            force = 1;
        } else if (argv[i][0] == '-' || src) {
            fail("unexpected argument '%s' (usage: %s %s)", argv[i], argv[0], usage);
        } else {
            src = argv[i];
        }
    }
    if (!src) src = getenv("TINYSHAKESPEARE");
    mkdir("data", 0755);
    mkdir(DIR, 0755);
    size_t n;
    unsigned char* text = read_text(&src, &n);
    char default_out[PATH_CAP];
    if (strcmp(tok_arg, "bytes") == 0) {
        default_prefix(default_out, src, n, "");
        prepare_bytes(src, text, n, prefix ? prefix : default_out, force);
        free(text);
        return 0;
    }

    int gpt2 = strcmp(tok_arg, "gpt2") == 0;
    const char* tok_path = gpt2 ? GPT2_TOKENIZER : tok_arg;
    if (gpt2 && !file_exists(tok_path))
        fail("'%s' does not exist: build it first with make data/tokenizer_gpt2.bin "
             "(GPT2_DIR=folder with encoder.json and vocab.bpe, else it downloads them)", tok_path);
    Tokenizer t;
    tokenizer_load(&t, tok_path);
    if (t.kind != TOKENIZER_BPE) fail("'%s' is a byte tokenizer: use -t bytes", tok_path);
    if (t.vocab_size > 65536)
        fail("'%s' has %d tokens: shards store uint16 ids, so at most 65,536 tokens (ids up to 65,535)", tok_path,
             t.vocab_size);
    char name[64];
    if (gpt2) snprintf(name, sizeof(name), "gpt2");
    else snprintf(name, sizeof(name), "bpe%d", t.vocab_size);
    char val_path[PATH_CAP], train_path[PATH_CAP];
    default_prefix(default_out, src, n, name);
    output_paths(val_path, train_path, prefix ? prefix : default_out, force);

    double t0 = now_s();
    uint16_t* tokens;
    size_t m = encode_documents(&t, text, n, &tokens);
    double seconds = now_s() - t0;
    size_t n_val = gpt2 ? LLMC_GPT2_VAL : m / 10;
    if (n_val >= m) fail("'%s' gives only %zu tokens, not enough for a validation split of %zu", src, m, n_val);
    if (gpt2 && n == TINY_SHAKESPEARE_BYTES && m - n_val != LLMC_GPT2_TRAIN)
        fail("GPT-2 tokens of Tiny Shakespeare: %zu training tokens, llm.c has %d: the encoder is wrong", m - n_val,
             LLMC_GPT2_TRAIN);
    uint32_t fp = tokenizer_fingerprint(&t);
    shard_write(val_path, tokens, n_val, fp);
    shard_write(train_path, tokens + n_val, m - n_val, fp);
    printf("%s: %zu bytes -> %zu tokens (%.2f bytes/token, encoded in %.3f s) with %s\n", src, n, m, (double)n / m,
           seconds, tok_path);
    printf("%zu val tokens -> %s\n%zu train tokens -> %s%s\n", n_val, val_path, m - n_val, train_path,
           gpt2 && n == TINY_SHAKESPEARE_BYTES ? " (= llm.c's 305,260)" : "");
    tokenizer_free(&t);
    free(tokens);
    free(text);
    return 0;
}

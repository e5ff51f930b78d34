/*
 * data/prepare.c — Tiny Shakespeare as byte-level token shards in llm.c's format, plus the byte
 * tokenizer file.
 *
 *   ./data/prepare [input.txt]
 *
 * The text comes from, in order: the argument, the TINYSHAKESPEARE environment variable, an existing
 * data/tinyshakespeare/input.txt, or a download from the public char-rnn URL (curl or wget).
 * Writes, from the repository root:
 *   data/tokenizer_bytes.bin                          256 tokens, one per byte, no EOT
 *   data/tinyshakespeare/tiny_shakespeare_val.bin     the first 10% of the bytes
 *   data/tinyshakespeare/tiny_shakespeare_train.bin   the other 90%
 * (validation first, as llm.c splits Tiny Shakespeare).
 */
#include "../model.h"

#define URL "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
#define DIR "data/tinyshakespeare"
#define DOWNLOADED DIR "/input.txt"

static int file_exists(const char* p) { struct stat st; return stat(p, &st) == 0; }

int main(int argc, char** argv) {
    if (argc > 2 || (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))) {
        printf("usage: %s [input.txt]   (or TINYSHAKESPEARE=path; default: download)\n", argv[0]);
        return argc == 2 ? 0 : 1;
    }
    mkdir("data", 0755);
    mkdir(DIR, 0755);
    const char* src = argc == 2 ? argv[1] : getenv("TINYSHAKESPEARE");
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
    FILE* f = fopen_check(src, "rb");
    int64_t n = file_size(f);
    if (n < 1024) fail("'%s' has %lld bytes: too short to be Tiny Shakespeare (1,115,394 bytes)", src, (long long)n);
    unsigned char* text = (unsigned char*)malloc_check(n);
    fread_check(text, 1, n, f, src);
    fclose(f);
    if (n != 1115394) fprintf(stderr, "warning: '%s' has %lld bytes; Tiny Shakespeare has 1,115,394\n", src, (long long)n);

    uint16_t* tokens = (uint16_t*)malloc_check(n * sizeof(uint16_t));
    for (int64_t i = 0; i < n; i++) tokens[i] = text[i];
    size_t n_val = (size_t)n / 10;
    tokenizer_write_bytes("data/tokenizer_bytes.bin");
    shard_write(DIR "/tiny_shakespeare_val.bin", tokens, n_val);
    shard_write(DIR "/tiny_shakespeare_train.bin", tokens + n_val, n - n_val);
    printf("%s: %lld bytes -> %zu val + %zu train tokens (byte level), tokenizer data/tokenizer_bytes.bin\n", src,
           (long long)n, n_val, (size_t)n - n_val);
    free(text);
    free(tokens);
    return 0;
}

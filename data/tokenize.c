/*
 * data/tokenize.c — a tokenizer file on the command line: text to ids and back.
 *
 *   ./data/tokenize TOKENIZER encode < text > ids     one decimal id per line
 *   ./data/tokenize TOKENIZER decode < ids > text     ids separated by white space
 *
 * TOKENIZER is any tokenizer file (data/tokenizer_bytes.bin, data/tokenizer_gpt2.bin, one from
 * data/train_bpe). The text is read as bytes, whatever they are, and decode(encode(text)) gives
 * back exactly those bytes.
 */
#include "../model.h"

// Reads all of standard input; returns its bytes (NUL-terminated, malloc'd) and sets *n.
static unsigned char* read_stdin(size_t* n) {
    size_t cap = 1 << 16, len = 0;
    unsigned char* buf = (unsigned char*)malloc_check(cap);
    for (;;) {
        if (len + 1 == cap) {
            cap *= 2;
            buf = (unsigned char*)realloc(buf, cap);
            if (!buf) fail("out of memory reading standard input (%zu bytes)", len);
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, stdin);
        len += got;
        if (got == 0) break;
    }
    if (ferror(stdin)) fail("cannot read standard input: %s", strerror(errno));
    buf[len] = 0;
    *n = len;
    return buf;
}

static void encode(const Tokenizer* t) {
    size_t n;
    unsigned char* text = read_stdin(&n);
    int* ids;
    size_t m = tokenizer_encode_bytes(t, text, n, &ids);
    for (size_t i = 0; i < m; i++) printf("%d\n", ids[i]);
    free(text);
    free(ids);
}

static void decode(const Tokenizer* t) {
    size_t n;
    char* in = (char*)read_stdin(&n);
    size_t cap = 1024, m = 0;
    int* ids = (int*)malloc_check(cap * sizeof(int));
    for (char *p = in, *end;; p = end) {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (!*p) break;
        errno = 0;
        long id = strtol(p, &end, 10);
        if (end == p || errno == ERANGE || (*end && *end != ' ' && *end != '\n' && *end != '\t' && *end != '\r'))
            fail("decode: '%.20s' (byte %zu of the input) is not a token id", p, (size_t)(p - in));
        if (id < 0 || id >= t->vocab_size)
            fail("decode: token id %ld (number %zu of the input) is outside the vocabulary [0, %d)", id, m + 1,
                 t->vocab_size);
        if (m == cap) {
            cap *= 2;
            ids = (int*)realloc(ids, cap * sizeof(int));
            if (!ids) fail("out of memory");
        }
        ids[m++] = (int)id;
    }
    unsigned char* text;
    size_t len = tokenizer_decode(t, ids, m, &text);
    fwrite_check(text, 1, len, stdout, "standard output");
    free(in);
    free(ids);
    free(text);
}

int main(int argc, char** argv) {
    if (argc != 3 || (strcmp(argv[2], "encode") != 0 && strcmp(argv[2], "decode") != 0)) {
        fprintf(stderr, "usage: %s TOKENIZER encode < text > ids   (one id per line)\n"
                        "       %s TOKENIZER decode < ids > text\n", argv[0], argv[0]);
        return 1;
    }
    Tokenizer t;
    tokenizer_load(&t, argv[1]);
    if (strcmp(argv[2], "encode") == 0) encode(&t);
    else decode(&t);
    if (fflush(stdout) != 0 || ferror(stdout)) fail("cannot write standard output: %s", strerror(errno));
    tokenizer_free(&t);
    return 0;
}

/*
 * data/tokenizer_gpt2.c — GPT-2's byte-level BPE vocabulary (encoder.json + vocab.bpe) as this
 * project's tokenizer file (format: model.h, "tokenizer file").
 *
 *   ./data/tokenizer_gpt2 [DIR [OUT]]
 *
 * DIR holds encoder.json and vocab.bpe. Default: $GPT2_DIR, else data/gpt2/, where the two files
 * are downloaded from OpenAI's public URL (curl or wget) when missing. OUT: data/tokenizer_gpt2.bin.
 *
 * GPT-2 writes every token as a string with one character per byte: the printable bytes
 * ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for themselves and the 68 others, in increasing order,
 * for U+0100, U+0101, ... (bytes_to_unicode in OpenAI's encoder.py). encoder.json maps those
 * strings (JSON-escaped, \uXXXX included) to ids; vocab.bpe lists the merges "A B", best first.
 * This program undoes the character mapping, so the tokenizer file holds the tokens' real bytes, and
 * stores merge k as (id of A, id of B, id of AB). The EOT token is "<|endoftext|>" when present.
 */
#include "../model.h"

#define URL "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"
#define DOWNLOAD_DIR "data/gpt2"

// byte_of_char[c]: the byte that GPT-2's character c stands for, -1 if c stands for none
static int byte_of_char[324];

static void init_byte_map(void) {
    for (int c = 0; c < 324; c++) byte_of_char[c] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_of_char[printable ? b : 256 + n++] = b;
    }
}

// ---- a string -> id table over token bytes (open addressing)

typedef struct {
    size_t cap;                 // power of two
    const unsigned char** key;  // token bytes (owned by the Tokenizer), NULL: empty
    int* len;
    int* id;
} TokenTable;

static size_t table_slot(const TokenTable* tt, const unsigned char* s, int len) {
    size_t i = hash_bytes(s, len) & (tt->cap - 1);
    while (tt->key[i] && !(tt->len[i] == len && memcmp(tt->key[i], s, len) == 0)) i = (i + 1) & (tt->cap - 1);
    return i;
}

// the id of the token with bytes s[0..len), or -1
static int table_find(const TokenTable* tt, const unsigned char* s, int len) {
    size_t i = table_slot(tt, s, len);
    return tt->key[i] ? tt->id[i] : -1;
}

// ---- reading the files

// Decodes one UTF-8 character at s[*i] (strictly) and advances *i; -1 if invalid.
static int32_t utf8_next(const unsigned char* s, size_t n, size_t* i) {
    int len;
    if (s[*i] < 0x80) return s[(*i)++];
    utf8_class(s, n, *i, &len); // validates; len 1 for an invalid byte
    if (len == 1) return -1;
    int32_t cp = s[*i] & (0x7F >> len);
    for (int k = 1; k < len; k++) cp = cp << 6 | (s[*i + k] & 0x3F);
    *i += len;
    return cp;
}

// Appends the byte that GPT-2's character cp stands for to out[*len]; fails naming `where`.
static void append_byte(int32_t cp, unsigned char* out, int* len, const char* where) {
    if (cp < 0 || cp >= 324 || byte_of_char[cp] < 0)
        fail("%s: character U+%04X is not one of GPT-2's byte characters (not a byte-level BPE vocabulary?)", where,
             (unsigned)cp);
    if (*len >= TOKEN_MAX_BYTES)
        fail("%s: a token longer than %d bytes; the tokenizer file stores lengths as uint8", where, TOKEN_MAX_BYTES);
    out[(*len)++] = (unsigned char)byte_of_char[cp];
}

static int hex4(const unsigned char* s, const char* where) {
    int v = 0;
    for (int k = 0; k < 4; k++) {
        int c = s[k], d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) fail("%s: bad \\u escape", where);
        v = v * 16 + d;
    }
    return v;
}

// Parses the JSON string starting at the quote s[*i] into the bytes its characters stand for.
static void json_token(const unsigned char* s, size_t n, size_t* i, unsigned char* out, int* len, const char* where) {
    *len = 0;
    (*i)++; // the opening quote
    for (;;) {
        if (*i >= n) fail("%s: unterminated string", where);
        unsigned char c = s[*i];
        if (c == '"') { (*i)++; return; }
        if (c != '\\') {
            int32_t cp = utf8_next(s, n, i);
            if (cp < 0) fail("%s: invalid UTF-8 at byte %zu", where, *i);
            append_byte(cp, out, len, where);
            continue;
        }
        if (*i + 1 >= n) fail("%s: unterminated escape", where);
        c = s[*i + 1];
        *i += 2;
        int32_t cp;
        switch (c) {
        case '"': case '\\': case '/': cp = c; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (*i + 4 > n) fail("%s: truncated \\u escape", where);
            cp = hex4(s + *i, where);
            *i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) { // a surrogate pair: \uD83D\uDE00
                if (*i + 6 > n || s[*i] != '\\' || s[*i + 1] != 'u') fail("%s: lone surrogate \\u%04X", where, (unsigned)cp);
                int lo = hex4(s + *i + 2, where);
                if (lo < 0xDC00 || lo > 0xDFFF) fail("%s: bad surrogate pair", where);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                *i += 6;
            }
            break;
        default: fail("%s: unknown escape \\%c", where, c);
        }
        append_byte(cp, out, len, where);
    }
}

static size_t skip_space(const unsigned char* s, size_t n, size_t i) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

// Reads encoder.json, {"token": id, ...}, into t's tokens (ids must be 0..V-1, each once).
static void read_encoder(const char* path, Tokenizer* t, TokenTable* tt) {
    size_t n;
    unsigned char* s = read_whole_file(path, &n);
    // first pass: count the entries (one ':' after each key) to size everything
    int count = 0;
    size_t i = skip_space(s, n, 0);
    if (i >= n || s[i] != '{') fail("'%s': not a JSON object", path);
    unsigned char bytes[TOKEN_MAX_BYTES];
    int len;
    for (size_t j = i + 1;;) {
        j = skip_space(s, n, j);
        if (j < n && s[j] == '}') break;
        if (j >= n || s[j] != '"') fail("'%s': expected a string at byte %zu", path, j);
        json_token(s, n, &j, bytes, &len, path);
        j = skip_space(s, n, j);
        if (j >= n || s[j] != ':') fail("'%s': expected ':' at byte %zu", path, j);
        while (j < n && s[j] != ',' && s[j] != '}') j++;
        count++;
        if (j < n && s[j] == ',') j++;
    }
    if (count < 256) fail("'%s': %d tokens, a byte-level vocabulary has at least 256", path, count);
    tokenizer_alloc(t, TOKENIZER_BPE, count, -1, 0);
    tt->cap = 1;
    while (tt->cap < 2 * (size_t)count) tt->cap *= 2;
    tt->key = (const unsigned char**)calloc_check(tt->cap, sizeof(unsigned char*));
    tt->len = (int*)calloc_check(tt->cap, sizeof(int));
    tt->id = (int*)calloc_check(tt->cap, sizeof(int));
    // second pass: the tokens
    for (i = i + 1;;) {
        i = skip_space(s, n, i);
        if (s[i] == '}') break;
        json_token(s, n, &i, bytes, &len, path);
        i = skip_space(s, n, i) + 1; // ':'
        i = skip_space(s, n, i);
        char* end;
        long id = strtol((const char*)s + i, &end, 10);
        if (end == (const char*)s + i || id < 0 || id >= count)
            fail("'%s': token id at byte %zu is not in [0, %d)", path, i, count);
        if (t->token_len[id] != 0) fail("'%s': token id %ld appears twice", path, id);
        if (len == 0) fail("'%s': token %ld is the empty string", path, id);
        tokenizer_set_token(t, (int)id, bytes, len);
        size_t slot = table_slot(tt, bytes, len);
        if (tt->key[slot]) fail("'%s': tokens %d and %ld have the same bytes", path, tt->id[slot], id);
        tt->key[slot] = t->token_bytes[id];
        tt->len[slot] = len;
        tt->id[slot] = (int)id;
        i = skip_space(s, n, (size_t)((const unsigned char*)end - s));
        if (s[i] == ',') i++;
    }
    free(s);
}

// Reads vocab.bpe ("#version" line, then one merge "A B" per line, best first) into t's merges.
static void read_merges(const char* path, Tokenizer* t, const TokenTable* tt) {
    size_t n;
    unsigned char* s = read_whole_file(path, &n);
    int cap = 1024, m = 0, line_no = 0;
    int32_t* merges = (int32_t*)malloc_check((size_t)cap * 3 * sizeof(int32_t));
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && s[e] != '\n') e++;
        size_t end = e > i && s[e - 1] == '\r' ? e - 1 : e;
        line_no++;
        char where[PATH_CAP + 32];
        snprintf(where, sizeof(where), "'%s' line %d", path, line_no);
        if (end > i && !(line_no == 1 && strncmp((const char*)s + i, "#version", 8) == 0)) {
            size_t sp = i;
            while (sp < end && s[sp] != ' ') sp++;
            if (sp == end || sp == i || sp + 1 == end) fail("%s: expected two tokens separated by one space", where);
            unsigned char ab[2 * TOKEN_MAX_BYTES];
            int la = 0, lb = 0;
            for (size_t k = i; k < sp;) append_byte(utf8_next(s, end, &k), ab, &la, where);
            for (size_t k = sp + 1; k < end;) append_byte(utf8_next(s, end, &k), ab + la, &lb, where);
            int left = table_find(tt, ab, la), right = table_find(tt, ab + la, lb), merged = table_find(tt, ab, la + lb);
            if (left < 0 || right < 0 || merged < 0)
                fail("%s: the merge '%.*s' needs tokens that encoder.json lacks (%s)", where, (int)(end - i), s + i,
                     left < 0 ? "left" : right < 0 ? "right" : "merged");
            if (m == cap) {
                cap *= 2;
                merges = (int32_t*)realloc(merges, (size_t)cap * 3 * sizeof(int32_t));
                if (!merges) fail("out of memory");
            }
            merges[3 * m] = left;
            merges[3 * m + 1] = right;
            merges[3 * m + 2] = merged;
            m++;
        }
        i = e + 1;
    }
    free(s);
    free(t->merges);
    t->merges = merges;
    t->n_merges = m;
}

static int file_exists(const char* p) { struct stat st; return stat(p, &st) == 0; }

static void download(const char* name) {
    char path[256], cmd[1024];
    snprintf(path, sizeof(path), DOWNLOAD_DIR "/%s", name);
    if (file_exists(path)) return;
    printf("downloading %s/%s\n", URL, name);
    snprintf(cmd, sizeof(cmd), "curl -fsSL -o %s.part %s/%s || wget -q -O %s.part %s/%s", path, URL, name, path, URL, name);
    char part[300];
    snprintf(part, sizeof(part), "%s.part", path);
    if (system(cmd) != 0 || rename(part, path) != 0) {
        remove(part);
        fail("could not download GPT-2's %s; pass the folder that holds encoder.json and vocab.bpe: "
             "./data/tokenizer_gpt2 DIR (or set GPT2_DIR)", name);
    }
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); // a log redirected to a file keeps stdout and stderr in order
    if (argc > 3 || (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))) {
        printf("usage: %s [DIR [OUT]]   DIR has encoder.json and vocab.bpe (default $GPT2_DIR, else download to "
               DOWNLOAD_DIR "/); OUT default data/tokenizer_gpt2.bin\n", argv[0]);
        return argc > 3 ? 1 : 0;
    }
    const char* dir = argc > 1 ? argv[1] : getenv("GPT2_DIR");
    const char* out = argc > 2 ? argv[2] : "data/tokenizer_gpt2.bin";
    if (!dir || !*dir) {
        dir = DOWNLOAD_DIR;
        mkdir("data", 0755);
        mkdir(DOWNLOAD_DIR, 0755);
        download("encoder.json");
        download("vocab.bpe");
    }
    char enc_path[PATH_CAP], bpe_path[PATH_CAP];
    snprintf(enc_path, sizeof(enc_path), "%s/encoder.json", dir);
    snprintf(bpe_path, sizeof(bpe_path), "%s/vocab.bpe", dir);
    init_byte_map();

    Tokenizer t;
    TokenTable tt = {0};
    read_encoder(enc_path, &t, &tt);
    for (int i = 0; i < t.vocab_size; i++)
        if (t.token_len[i] == 0) fail("'%s': no token has id %d (ids must be 0..%d)", enc_path, i, t.vocab_size - 1);
    read_merges(bpe_path, &t, &tt);
    t.eot_id = table_find(&tt, (const unsigned char*)"<|endoftext|>", 13);
    const char* bad = tokenizer_check(&t);
    if (bad) fail("'%s' + '%s' do not make a valid byte-level BPE: %s", enc_path, bpe_path, bad);
    int longest = 0;
    for (int i = 0; i < t.vocab_size; i++) longest = t.token_len[i] > longest ? t.token_len[i] : longest;
    tokenizer_write(&t, out);
    printf("%s: %d tokens (longest %d bytes), %d merges, EOT %d -> %s\n", dir, t.vocab_size, longest, t.n_merges,
           t.eot_id, out);
    tokenizer_free(&t);
    Tokenizer check;
    tokenizer_load(&check, out); // read back: the file passes the loader's checks
    tokenizer_free(&check);
    free(tt.key);
    free(tt.len);
    free(tt.id);
    return 0;
}

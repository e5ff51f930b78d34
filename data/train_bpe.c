/*
 * data/train_bpe.c — learns a byte-level BPE tokenizer from a text, GPT-2 style, and writes it in
 * this project's tokenizer format (model.h, "tokenizer file").
 *
 *   ./data/train_bpe -i input.txt -v 2048 [-o data/tokenizer_bpe2048.bin]
 *
 * Vocabulary: ids 0..255 are the bytes, 256..V-2 the merges in the order they were learned, V-1
 * the EOT token "<|endoftext|>". The text is cut by GPT-2's pre-tokenizer (pretoken_end in model.h),
 * so merges never cross a piece boundary, and encoding with the result uses exactly the same code
 * as GPT-2's tokenizer.
 *
 * Training: count the distinct pieces ("words") once; then repeat V-257 times: take the pair of
 * adjacent tokens that occurs most often in the text (ties: the smaller left id, then the smaller
 * right id), give it a new id and replace it in every word that contains it (left to right, as
 * encoding will). Pair counts are updated incrementally: each pair keeps the list of words it
 * appears in, only those words are rewritten, and a max-heap with lazy deletion finds the next best
 * pair. A pair whose token would exceed 255 bytes (the format's limit) is never merged.
 * At the end the written file is loaded back and the text encoded with it: the token count must
 * equal the trainer's, which checks the file and the encoder against the training.
 */
#include "../model.h"
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ---- words: the distinct pre-token pieces, as token sequences that merges rewrite in place

typedef struct {
    size_t offset;    // first occurrence in the text
    int n_bytes;
    int64_t count;    // occurrences in the text
    int* sym;         // its current tokens (into the arena), n_sym of them
    int n_sym;
    int stamp;        // the last merge that rewrote it
} Word;

typedef struct {
    Word* w;
    int n, cap;
    size_t table_cap;  // power of two
    int* table;        // piece bytes -> word index, -1: empty
} Words;

static void words_grow_table(Words* ws, const unsigned char* text) {
    size_t cap = ws->table_cap ? 2 * ws->table_cap : 1 << 16;
    int* table = (int*)malloc_check(cap * sizeof(int));
    for (size_t i = 0; i < cap; i++) table[i] = -1;
    for (int k = 0; k < ws->n; k++) {
        size_t s = hash_bytes(text + ws->w[k].offset, ws->w[k].n_bytes) & (cap - 1);
        while (table[s] >= 0) s = (s + 1) & (cap - 1);
        table[s] = k;
    }
    free(ws->table);
    ws->table = table;
    ws->table_cap = cap;
}

// Counts one occurrence of the piece text[offset .. offset+n).
static void words_add(Words* ws, const unsigned char* text, size_t offset, int n) {
    if (2 * (size_t)(ws->n + 1) > ws->table_cap) words_grow_table(ws, text);
    const unsigned char* p = text + offset;
    size_t s = hash_bytes(p, n) & (ws->table_cap - 1);
    for (; ws->table[s] >= 0; s = (s + 1) & (ws->table_cap - 1)) {
        Word* w = &ws->w[ws->table[s]];
        if (w->n_bytes == n && memcmp(text + w->offset, p, n) == 0) { w->count++; return; }
    }
    if (ws->n == ws->cap) {
        ws->cap = ws->cap ? 2 * ws->cap : 1024;
        ws->w = (Word*)realloc(ws->w, (size_t)ws->cap * sizeof(Word));
        if (!ws->w) fail("out of memory counting pieces");
    }
    ws->table[s] = ws->n;
    ws->w[ws->n++] = (Word){.offset = offset, .n_bytes = n, .count = 1, .stamp = -1};
}

// ---- pairs of adjacent tokens: counts, where they occur, and a max-heap over the counts

typedef struct {
    int left, right;
    int64_t count;       // occurrences in the text, over all words
    int64_t heap_count;  // count of its newest heap entry (0: it has none that matters)
    int* where;          // words that contained it when it was counted (may repeat or be stale)
    int n_where, cap_where;
    int banned;          // its merged token would exceed TOKEN_MAX_BYTES
} Pair;

typedef struct { int64_t count; int pair; } HeapEntry;

typedef struct {
    Pair* p;
    int n, cap;
    size_t table_cap;  // power of two
    int* table;        // (left, right) -> pair index, -1: empty
    HeapEntry* heap;
    size_t heap_n, heap_cap;
} Pairs;

static size_t pair_slot(const Pairs* ps, int left, int right) {
    size_t s = hash_u64((uint64_t)(uint32_t)left << 32 | (uint32_t)right) & (ps->table_cap - 1);
    while (ps->table[s] >= 0 && (ps->p[ps->table[s]].left != left || ps->p[ps->table[s]].right != right))
        s = (s + 1) & (ps->table_cap - 1);
    return s;
}

// The index of pair (left, right), created with count 0 if new.
static int pair_get(Pairs* ps, int left, int right) {
    if (2 * (size_t)(ps->n + 1) > ps->table_cap) {
        free(ps->table);
        ps->table_cap = ps->table_cap ? 2 * ps->table_cap : 1 << 16;
        ps->table = (int*)malloc_check(ps->table_cap * sizeof(int));
        for (size_t i = 0; i < ps->table_cap; i++) ps->table[i] = -1;
        for (int k = 0; k < ps->n; k++) ps->table[pair_slot(ps, ps->p[k].left, ps->p[k].right)] = k;
    }
    size_t s = pair_slot(ps, left, right);
    if (ps->table[s] >= 0) return ps->table[s];
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 1 << 16;
        ps->p = (Pair*)realloc(ps->p, (size_t)ps->cap * sizeof(Pair));
        if (!ps->p) fail("out of memory counting pairs");
    }
    ps->table[s] = ps->n;
    ps->p[ps->n] = (Pair){.left = left, .right = right};
    return ps->n++;
}

// heap order: the higher count first; ties: the smaller left id, then the smaller right id
static int heap_before(const Pairs* ps, HeapEntry a, HeapEntry b) {
    if (a.count != b.count) return a.count > b.count;
    const Pair *pa = &ps->p[a.pair], *pb = &ps->p[b.pair];
    return pa->left != pb->left ? pa->left < pb->left : pa->right < pb->right;
}

static void heap_push(Pairs* ps, int pair) {
    if (ps->heap_n == ps->heap_cap) {
        ps->heap_cap = ps->heap_cap ? 2 * ps->heap_cap : 1 << 16;
        ps->heap = (HeapEntry*)realloc(ps->heap, ps->heap_cap * sizeof(HeapEntry));
        if (!ps->heap) fail("out of memory");
    }
    HeapEntry e = {ps->p[pair].count, pair};
    ps->p[pair].heap_count = e.count;
    size_t k = ps->heap_n++;
    while (k > 0 && heap_before(ps, e, ps->heap[(k - 1) / 2])) {
        ps->heap[k] = ps->heap[(k - 1) / 2];
        k = (k - 1) / 2;
    }
    ps->heap[k] = e;
}

static HeapEntry heap_pop(Pairs* ps) {
    HeapEntry top = ps->heap[0], last = ps->heap[--ps->heap_n];
    size_t k = 0;
    for (;;) {
        size_t c = 2 * k + 1;
        if (c >= ps->heap_n) break;
        if (c + 1 < ps->heap_n && heap_before(ps, ps->heap[c + 1], ps->heap[c])) c++;
        if (!heap_before(ps, ps->heap[c], last)) break;
        ps->heap[k] = ps->heap[c];
        k = c;
    }
    if (ps->heap_n > 0) ps->heap[k] = last;
    return top;
}

// The pair of largest count (with the tie rule), or -1 when no pair occurs any more. Heap entries
// are not removed when counts change: an entry whose count is out of date is dropped, or pushed
// again with the current count if it is the pair's newest entry (its count went down).
static int best_pair(Pairs* ps) {
    while (ps->heap_n > 0) {
        HeapEntry e = heap_pop(ps);
        Pair* p = &ps->p[e.pair];
        if (p->banned || e.count != p->heap_count) continue; // an older entry
        if (e.count == p->count) return e.pair;
        p->heap_count = 0;
        if (p->count > 0) heap_push(ps, e.pair);
    }
    return -1;
}

// Adds `delta` occurrences of every adjacent pair of word w (index wi) to the counts. When adding,
// records w in the lists of the pairs that are new to it: all of them at the start (merged = -1),
// those with the token `merged` after a merge (w is in the other pairs' lists already).
static void count_word_pairs(Pairs* ps, Word* w, int wi, int64_t delta, int merged) {
    for (int i = 0; i + 1 < w->n_sym; i++) {
        int pi = pair_get(ps, w->sym[i], w->sym[i + 1]);
        Pair* p = &ps->p[pi];
        p->count += delta;
        if (delta < 0 || (merged >= 0 && p->left != merged && p->right != merged)) continue;
        if (p->n_where > 0 && p->where[p->n_where - 1] == wi) continue;
        if (p->n_where == p->cap_where) {
            p->cap_where = p->cap_where ? 2 * p->cap_where : 4;
            p->where = (int*)realloc(p->where, (size_t)p->cap_where * sizeof(int));
            if (!p->where) fail("out of memory");
        }
        p->where[p->n_where++] = wi;
    }
}

// Replaces every (left, right) in w, left to right, by `merged`; returns how many it replaced.
static int merge_word(Word* w, int left, int right, int merged) {
    int out = 0, replaced = 0;
    for (int i = 0; i < w->n_sym; i++) {
        if (i + 1 < w->n_sym && w->sym[i] == left && w->sym[i + 1] == right) {
            w->sym[out++] = merged;
            i++;
            replaced++;
        } else {
            w->sym[out++] = w->sym[i];
        }
    }
    w->n_sym = out;
    return replaced;
}

static int word_has_pair(const Word* w, int left, int right) {
    for (int i = 0; i + 1 < w->n_sym; i++)
        if (w->sym[i] == left && w->sym[i + 1] == right) return 1;
    return 0;
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); // a log redirected to a file keeps stdout and stderr in order
    const char *input = "", *output = "";
    int vocab = 2048;
    Flag flags[] = {
        {"input", 'i', FLAG_STRING, &input, 0, 0, "text file to learn from"},
        {"vocab", 'v', FLAG_INT, &vocab, 257, 65536, "vocabulary size: 256 bytes + merges + EOT"},
        {"output", 'o', FLAG_STRING, &output, 0, 0, "tokenizer file (default data/tokenizer_bpe<vocab>.bin)"},
    };
    parse_flags(argc, argv, flags, 3, "Learns a byte-level BPE tokenizer (GPT-2's pre-tokenizer) from a text file.");
    if (!*input) fail("no input text: ./data/train_bpe -i input.txt -v %d", vocab);
    char out_path[PATH_CAP];
    if (*output) snprintf(out_path, sizeof(out_path), "%s", output);
    else snprintf(out_path, sizeof(out_path), "data/tokenizer_bpe%d.bin", vocab);

    size_t n;
    unsigned char* text = read_whole_file(input, &n);
    if (n == 0) fail("'%s' is empty", input);
    double t0 = now_s();

    // 1. count the distinct pieces, then lay out each as a sequence of byte tokens
    Words ws = {0};
    size_t pieces = 0;
    for (size_t i = 0, e; i < n; i = e, pieces++) {
        e = pretoken_end(text, n, i);
        if (e - i > INT32_MAX) fail("'%s': a piece of %zu bytes is too long", input, e - i);
        words_add(&ws, text, i, (int)(e - i));
    }
    size_t arena_n = 0;
    for (int k = 0; k < ws.n; k++) arena_n += ws.w[k].n_bytes;
    int* arena = (int*)malloc_check(arena_n * sizeof(int));
    size_t at = 0;
    for (int k = 0; k < ws.n; k++) {
        Word* w = &ws.w[k];
        w->sym = arena + at;
        w->n_sym = w->n_bytes;
        for (int i = 0; i < w->n_bytes; i++) w->sym[i] = text[w->offset + i];
        at += w->n_bytes;
    }
    double t1 = now_s();

    // 2. count the pairs once
    Pairs ps = {0};
    for (int k = 0; k < ws.n; k++) count_word_pairs(&ps, &ws.w[k], k, ws.w[k].count, -1);
    for (int pi = 0; pi < ps.n; pi++) heap_push(&ps, pi);

    // 3. merge
    int want = vocab - 257, n_merges = 0;
    int32_t* merges = (int32_t*)malloc_check((size_t)(want > 0 ? want : 1) * 3 * sizeof(int32_t));
    int* tok_len = (int*)malloc_check((size_t)vocab * sizeof(int));
    for (int b = 0; b < 256; b++) tok_len[b] = 1;
    int64_t tokens = (int64_t)n; // tokens of the whole text so far
    int* touched = NULL;
    int n_touched = 0, cap_touched = 0;
    while (n_merges < want) {
        int pi = best_pair(&ps);
        if (pi < 0) break; // every piece is a single token
        Pair best = ps.p[pi];
        if (tok_len[best.left] + tok_len[best.right] > TOKEN_MAX_BYTES) {
            ps.p[pi].banned = 1;
            continue;
        }
        int merged = 256 + n_merges, k = n_merges;
        merges[3 * k] = best.left;
        merges[3 * k + 1] = best.right;
        merges[3 * k + 2] = merged;
        tok_len[merged] = tok_len[best.left] + tok_len[best.right];
        n_merges++;
        // rewrite the words that contain the pair: their pairs out of the counts, merge, back in
        n_touched = 0;
        for (int j = 0; j < best.n_where; j++) {
            int wi = best.where[j];
            Word* w = &ws.w[wi];
            if (w->stamp == k || !word_has_pair(w, best.left, best.right)) continue;
            w->stamp = k;
            count_word_pairs(&ps, w, wi, -w->count, -1);
            tokens -= (int64_t)merge_word(w, best.left, best.right, merged) * w->count;
            count_word_pairs(&ps, w, wi, w->count, merged);
            for (int i = 0; i + 1 < w->n_sym; i++) { // the pairs with the new token: their counts went up
                if (w->sym[i] != merged && w->sym[i + 1] != merged) continue;
                if (n_touched == cap_touched) {
                    cap_touched = cap_touched ? 2 * cap_touched : 1024;
                    touched = (int*)realloc(touched, (size_t)cap_touched * sizeof(int));
                    if (!touched) fail("out of memory");
                }
                touched[n_touched++] = pair_get(&ps, w->sym[i], w->sym[i + 1]);
            }
        }
        Pair* p = &ps.p[pi]; // (ps.p may have moved)
        if (p->count != 0) fail("internal error: pair (%d, %d) still counted %lld times after its merge", p->left,
                                p->right, (long long)p->count);
        free(p->where);
        p->where = NULL;
        p->n_where = p->cap_where = 0;
        // a pair whose count went up needs a heap entry with its new count (lower ones are lazy)
        for (int j = 0; j < n_touched; j++) {
            Pair* q = &ps.p[touched[j]];
            if (q->count > q->heap_count && !q->banned) heap_push(&ps, touched[j]);
        }
    }
    double t2 = now_s();

    // 4. the tokenizer: bytes, merges, EOT
    int V = 256 + n_merges + 1;
    if (n_merges < want)
        printf("note: no pair is left to merge after %d merges, so the vocabulary has %d tokens, not %d\n", n_merges, V, vocab);
    Tokenizer t;
    tokenizer_alloc(&t, TOKENIZER_BPE, V, V - 1, n_merges);
    for (int b = 0; b < 256; b++) {
        unsigned char byte = (unsigned char)b;
        tokenizer_set_token(&t, b, &byte, 1);
    }
    for (int k = 0; k < n_merges; k++) {
        int l = merges[3 * k], r = merges[3 * k + 1];
        unsigned char buf[2 * TOKEN_MAX_BYTES];
        memcpy(buf, t.token_bytes[l], t.token_len[l]);
        memcpy(buf + t.token_len[l], t.token_bytes[r], t.token_len[r]);
        tokenizer_set_token(&t, 256 + k, buf, t.token_len[l] + t.token_len[r]);
    }
    memcpy(t.merges, merges, (size_t)n_merges * 3 * sizeof(int32_t));
    tokenizer_set_token(&t, V - 1, (const unsigned char*)"<|endoftext|>", 13);
    tokenizer_write(&t, out_path);
    tokenizer_free(&t);

    // 5. check: the written tokenizer encodes the text into exactly the trainer's tokens
    Tokenizer check;
    tokenizer_load(&check, out_path);
    int* ids;
    size_t m = tokenizer_encode_bytes(&check, text, n, &ids);
    if ((int64_t)m != tokens)
        fail("'%s': encoding the training text gives %zu tokens, training ended with %lld (bug)", out_path, m,
             (long long)tokens);
    printf("%s: %zu bytes, %zu pieces (%d distinct) -> %d merges, vocab %d (EOT %d) -> %s\n", input, n, pieces, ws.n,
           n_merges, V, V - 1, out_path);
    printf("training text: %lld tokens, %.2f bytes/token (checked by encoding it with the written file)\n",
           (long long)tokens, (double)n / tokens);
    printf("training time: %.3f s (pre-tokenize %.3f s, merges %.3f s)\n", t2 - t0, t1 - t0, t2 - t1);
    free(ids);
    tokenizer_free(&check);
    for (int pi = 0; pi < ps.n; pi++) free(ps.p[pi].where);
    free(ps.p);
    free(ps.table);
    free(ps.heap);
    free(touched);
    free(ws.w);
    free(ws.table);
    free(arena);
    free(merges);
    free(tok_len);
    free(text);
    return 0;
}

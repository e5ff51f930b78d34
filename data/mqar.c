/*
 * data/mqar.c — multi-query associative recall (MQAR, as in the Zoology paper) as token shards.
 *
 *   ./data/mqar [-V 8192] [-T 256] [-K 16] [--train 20000] [--val 1000] [--fill zero|random] [-o DIR]
 *
 * One example is T tokens. The first 2K hold K key-value pairs k1 v1 k2 v2 ... (keys distinct, drawn
 * from [1, V/2); values distinct, from [V/2, V)). The rest is the query region: its (T - 2K)/2 even
 * slots s = 0, 1, ... sit at positions 2K + 2s. Each key is queried exactly once, at a slot drawn
 * without replacement with probability ∝ (s + 1)^-0.99 (pair j's key at the j-th slot drawn), so most
 * queries come soon after the context and a few far away. The target at a query is its key's value;
 * it is the only scored position: every other target is "not scored". Tokens at the other positions
 * of the query region are 0 (--fill zero) or random ids from [1, V) other than the example's keys
 * (--fill random).
 *
 * Writes to DIR (default data/mqar_T<T>_K<K>):
 *   mqar_train.bin, mqar_val.bin             the tokens, llm.c's shard format
 *   mqar_train.targets, mqar_val.targets     the targets beside them (model.h: target shards)
 *   tokenizer.bin                            a symbols tokenizer naming the tokens: 0 is "_", key i
 *                                            is "k<i>", value i is "v<i>"; so samples read as text
 * Train with: ./train_gla -T <T> -i DIR/mqar_train.bin -j DIR/mqar_val.bin -z DIR/tokenizer.bin
 */
#include "../model.h"

typedef struct {
    int V, T, K, random_fill;
    double exponent;     // slot s is drawn with weight (s + 1)^-exponent
} MqarSpec;

// Draws k distinct ids from [lo, hi) into out (k,), by a partial Fisher-Yates shuffle of pool (hi - lo,).
static void draw_distinct(int* out, int k, int lo, int hi, int* pool, uint64_t* rng) {
    int n = hi - lo;
    for (int i = 0; i < n; i++) pool[i] = lo + i;
    for (int i = 0; i < k; i++) {
        int j = i + (int)(random_u32(rng) % (uint32_t)(n - i));
        int t = pool[i]; pool[i] = pool[j]; pool[j] = t;
        out[i] = pool[i];
    }
}

// One example: tokens (T,) and targets (T,) (TARGET_IGNORED where not scored). weight (S,) is
// scratch for the slot weights, S = (T - 2K)/2; pool (V/2,) scratch for the draws.
static void mqar_example(const MqarSpec* p, uint16_t* tokens, uint16_t* targets, double* weight, int* pool,
                         uint64_t* rng) {
    int K = p->K, T = p->T, S = (T - 2 * K) / 2, half = p->V / 2;
    int keys[K], values[K];
    draw_distinct(keys, K, 1, half, pool, rng);
    draw_distinct(values, K, half, p->V, pool, rng);
    for (int t = 0; t < T; t++) {
        tokens[t] = 0;
        targets[t] = TARGET_IGNORED;
        if (!p->random_fill) continue;
        int is_key; // a random token never repeats one of this example's keys: that would be a second query
        do {
            tokens[t] = (uint16_t)(1 + random_u32(rng) % (uint32_t)(p->V - 1));
            is_key = 0;
            for (int j = 0; j < K; j++) is_key |= tokens[t] == keys[j];
        } while (is_key);
    }
    double total = 0.0;
    for (int s = 0; s < S; s++) total += weight[s] = pow(s + 1.0, -p->exponent);
    for (int j = 0; j < K; j++) {
        tokens[2 * j] = (uint16_t)keys[j];
        tokens[2 * j + 1] = (uint16_t)values[j];
        // slot by inverse CDF over the weights still in play; a drawn slot's weight becomes 0
        double u = random_f32(rng) * total, acc = 0.0;
        int s = 0, last = -1;
        for (; s < S; s++) {
            if (weight[s] == 0.0) continue;
            last = s;
            acc += weight[s];
            if (u < acc) break;
        }
        if (s == S) s = last; // u rounded to the very top
        total -= weight[s];
        weight[s] = 0.0;
        tokens[2 * K + 2 * s] = (uint16_t)keys[j];
        targets[2 * K + 2 * s] = (uint16_t)values[j];
    }
}

// n examples into DIR/mqar_<split>.bin and .targets
static void write_split(const MqarSpec* p, const char* dir, const char* split, int n, uint64_t seed, uint32_t tokenizer_fp) {
    size_t total = (size_t)n * p->T;
    uint16_t* tokens = (uint16_t*)malloc_check(total * sizeof(uint16_t));
    uint16_t* targets = (uint16_t*)malloc_check(total * sizeof(uint16_t));
    double* weight = (double*)malloc_check((size_t)p->T * sizeof(double));
    int* pool = (int*)malloc_check((size_t)p->V * sizeof(int));
    uint64_t rng = seed;
    for (int i = 0; i < n; i++)
        mqar_example(p, tokens + (size_t)i * p->T, targets + (size_t)i * p->T, weight, pool, &rng);
    char path[PATH_CAP], tpath[PATH_CAP];
    snprintf(path, sizeof(path), "%s/mqar_%s.bin", dir, split);
    shard_write(path, tokens, total, tokenizer_fp);
    targets_path(tpath, path);
    targets_write(tpath, targets, total, p->T);
    printf("wrote %s (+ .targets): %d examples, %zu tokens, %zu scored\n", path, n, total, (size_t)n * p->K);
    free(tokens);
    free(targets);
    free(weight);
    free(pool);
}

// "_" for 0, "k<i>" for keys [1, V/2), "v<i>" for values [V/2, V); returns its fingerprint
static uint32_t write_tokenizer(const char* dir, int V) {
    Tokenizer t;
    tokenizer_alloc(&t, TOKENIZER_SYMBOLS, V, -1, 0);
    for (int i = 0; i < V; i++) {
        char name[32];
        int len = i == 0 ? snprintf(name, sizeof(name), "_ ") : snprintf(name, sizeof(name), "%c%d ", i < V / 2 ? 'k' : 'v', i);
        tokenizer_set_token(&t, i, (const unsigned char*)name, len);
    }
    char path[PATH_CAP];
    snprintf(path, sizeof(path), "%s/tokenizer.bin", dir);
    tokenizer_write(&t, path);
    uint32_t fp = tokenizer_fingerprint(&t);
    tokenizer_free(&t);
    return fp;
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); // a log redirected to a file keeps stdout and stderr in order
    int V = 8192, T = 256, K = 16, n_train = 20000, n_val = 1000, seed = 1;
    float exponent = 0.99f;
    const char *fill = "zero", *out = "";
    Flag flags[] = {
        {"vocab", 'V', FLAG_INT, &V, 4, 65535, "vocabulary: keys [1, V/2), values [V/2, V)"},
        {"seq-len", 'T', FLAG_INT, &T, 4, 65536, "tokens per example (train with the same -T)"},
        {"pairs", 'K', FLAG_INT, &K, 1, 32768, "key-value pairs per example (needs T >= 4K)"},
        {"train", 'n', FLAG_INT, &n_train, 1, 100000000, "training examples"},
        {"val", 'm', FLAG_INT, &n_val, 1, 100000000, "validation examples (another random stream)"},
        {"fill", 'f', FLAG_STRING, &fill, 0, 0, "the unqueried positions: zero | random"},
        {"gap-exponent", 0, FLAG_FLOAT, &exponent, 0, 10, "query slot s drawn with weight (s+1)^-this"},
        {"seed", 's', FLAG_INT, &seed, 0, 2147483647, "random seed"},
        {"out", 'o', FLAG_STRING, &out, 0, 0, "output directory (empty: data/mqar_T<T>_K<K>)"},
    };
    parse_flags(argc, argv, flags, sizeof(flags) / sizeof(flags[0]),
                "Writes MQAR (multi-query associative recall) train/val shards, their targets and a tokenizer.");
    if (strcmp(fill, "zero") != 0 && strcmp(fill, "random") != 0)
        usage_error(argv[0], "--fill wants 'zero' or 'random', got '%s'", fill);
    if (T < 4 * K)
        fail("-T %d is too short for -K %d pairs: the context takes 2K = %d tokens and the K queries need "
             "K even slots after it, so T >= 4K = %d", T, K, 2 * K, 4 * K);
    if (K > V / 2 - 1) fail("-K %d pairs need %d distinct keys, but [1, V/2) holds %d: raise -V", K, K, V / 2 - 1);
    if (K > V - V / 2) fail("-K %d pairs need %d distinct values, but [V/2, V) holds %d: raise -V", K, K, V - V / 2);
    if ((size_t)n_train * T > 0x7fffffff || (size_t)n_val * T > 0x7fffffff)
        fail("%d or %d examples of %d tokens do not fit one shard (2^31-1 tokens)", n_train, n_val, T);
    char dir[PATH_CAP];
    if (*out) snprintf(dir, sizeof(dir), "%s", out);
    else snprintf(dir, sizeof(dir), "data/mqar_T%d_K%d", T, K);
    mkdir_p(dir);
    MqarSpec p = {V, T, K, strcmp(fill, "random") == 0, exponent};
    uint64_t base = (uint64_t)seed * 0x9E3779B97F4A7C15ull;
    uint32_t fp = write_tokenizer(dir, V);
    write_split(&p, dir, "train", n_train, base ^ 0x1111, fp);
    write_split(&p, dir, "val", n_val, base ^ 0x2222, fp);
    printf("train with: ./train_gla -T %d -i %s/mqar_train.bin -j %s/mqar_val.bin -z %s/tokenizer.bin\n", T, dir, dir, dir);
    return 0;
}

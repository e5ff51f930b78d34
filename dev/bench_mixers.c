/*
 * dev/bench_mixers.c — forward + backward time per token of each mixer layer of train_gla.c, at the
 * trainer's default sizes (d = 128), batch 1, for several sequence lengths: linear mixers should
 * cost the same per token at every T, softmax attention grows with T.
 *
 *   make dev/bench_mixers && OMP_NUM_THREADS=2 ./dev/bench_mixers [--chunk C] [--rounds R] [--d D] [T ...]
 *   (defaults: chunk 16 as train_gla, 3 rounds, d = 128, T = 512 2048 8192; --d sizes the mixers as
 *   train_gla -d D does)
 *
 * Times only the mixer: `<mixer>_layer_forward` (projections, core in its chunkwise form, output
 * norm and projection) and `<mixer>_layer_backward`, on one layer with fla's init, from random
 * normalised inputs. Each (mixer, T) is timed in R rounds over the whole table, each round repeating it
 * for at least 0.5 s (and twice); the table keeps the fastest run: other processes on a shared or
 * virtual machine only ever slow a run down, and spreading the rounds out in time keeps a busy
 * moment from hitting one entry in every round. Prints the CPU, the parameters and the recurrent
 * state of each mixer, then a markdown table of µs per token.
 * Attention's probabilities are a (B,H,T,T) float buffer: 4 heads at T = 8192 take 1 GiB.
 */
#define TESTING
#include "../train_gla.c"

static int bench_d = 128; // --d: the width, with train_gla -d's defaults for the mixers' sizes

static Config bench_config(int mixer) {
    Config c = {.vocab_size = 256, .d_model = 128, .n_layer = 1, .tie_embeddings = 1, .gla_heads = 2, .gla_dk = 64,
                .gla_dv = 128, .gla_gate_rank = 16, .gla_gate_normalizer = 16, .attn_heads = 4, .attn_kv_heads = 4,
                .rope_theta = 10000.0f, .norm_eps = 1e-6f, .hgrn_dim = 128, .hgrn2_heads = 1, .retnet_heads = 4,
                .deltanet_heads = 2, .gdn_heads = 3, .gdn_head_dim = 32, .gdn_expand_v = 2, .conv_size = 4,
                .use_lower_bound = 1};
    int d = bench_d; // as train_gla -d d: GLA Dk d/2 and Dv d, HGRN width d, the rest as at d = 128
    c.d_model = d; c.gla_dk = d / 2; c.gla_dv = d; c.hgrn_dim = d;
    c.mlp_hidden = default_mlp_hidden(c.d_model);
    c.pattern[0] = mixer;
    const char* bad = validate_config(&c);
    if (bad) fail("bench config: %s", bad);
    return c;
}

// fwd, bwd = the fastest seconds so far of forward and of backward of layer 0, lowered by this round
static void time_mixer(Model* m, const float* dout, int T, double* fwd, double* bwd) {
    int mix = m->config.pattern[0];
    MIXER_FORWARD[mix](m, 0, 1, T);   // warm-up (first touch of the buffers)
    MIXER_BACKWARD[mix](m, 0, dout, m->dln, 1, T);
    double start = now_seconds();
    for (int n = 0; n < 2 || now_seconds() - start < 0.5; n++) {
        double t0 = now_seconds();
        MIXER_FORWARD[mix](m, 0, 1, T);
        double t1 = now_seconds();
        MIXER_BACKWARD[mix](m, 0, dout, m->dln, 1, T);
        *bwd = fmin(*bwd, now_seconds() - t1);
        *fwd = fmin(*fwd, t1 - t0);
    }
}

int main(int argc, char** argv) {
    int Ts[16] = {512, 2048, 8192}, nT = 0, chunk = 16, rounds = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--chunk") == 0 && i + 1 < argc) chunk = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--d") == 0 && i + 1 < argc) bench_d = atoi(argv[++i]);
        else if (nT < 16 && atoi(argv[i]) >= 2) Ts[nT++] = atoi(argv[i]);
        else fail("usage: %s [--chunk C] [--rounds R] [--d D] [T ...] (T >= 2, at most 16 of them)", argv[0]);
    }
    if (nT == 0) nT = 3;
    if (chunk < 1 || rounds < 1) fail("--chunk and --rounds must be >= 1");
    const int order[] = {MIXER_ATTN, MIXER_HGRN, MIXER_RETNET, MIXER_GLA, MIXER_HGRN2, MIXER_DELTANET, MIXER_GATED_DELTANET};
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    char cpu[256] = "unknown CPU", line[512];
    FILE* f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "model name", 10) == 0 && strchr(line, ':')) {
            snprintf(cpu, sizeof(cpu), "%s", strchr(line, ':') + 2);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    if (f) fclose(f);
    printf("%s; threads: %d, chunk %d, d = %d, B = 1\n\n", cpu, threads, chunk, bench_d);
    printf("| mixer | parameters (mixer only) | recurrent state per layer (floats) |\n|---|---|---|\n");
    for (int k = 0; k < 7; k++) {
        Config c = bench_config(order[k]);
        Model m;
        model_build(&m, &c);
        size_t params = 0;
        for (int i = 0; i < m.num_specs; i++) {
            const ParamSpec* p = &m.specs[i];
            int block = p->layer >= 0 && (p->slot == W_ATTN_NORM || p->slot == W_MLP_NORM || p->slot == W_MLP_GATE ||
                                          p->slot == W_MLP_UP || p->slot == W_MLP_DOWN);
            if (p->layer >= 0 && !block) params += p->numel;
        }
        if (order[k] == MIXER_ATTN) printf("| attn | %zu | KV cache 2·T·d = %d·T |\n", params, 2 * c.d_model);
        else {
            size_t extra = (order[k] == MIXER_DELTANET || order[k] == MIXER_GATED_DELTANET)
                               ? (size_t)(c.conv_size - 1) * mixer_width(&c, order[k]) : 0;
            int H = 1, K = c.hgrn_dim, V = 1;
            if (order[k] != MIXER_HGRN) mixer_dims(&c, order[k], &H, &K, &V);
            printf("| %s | %zu | %zu (H=%d, %d×%d)%s |\n", MIXER_NAMES[order[k]], params, mixer_state_floats(&c, order[k]),
                   H, K, V, extra ? " + conv caches" : "");
        }
        model_free(&m);
    }
    double fwd[7][16], bwd[7][16];
    for (int k = 0; k < 7; k++)
        for (int t = 0; t < nT; t++) fwd[k][t] = bwd[k][t] = INFINITY;
    for (int r = 0; r < rounds; r++) {
        fprintf(stderr, "round %d/%d\n", r + 1, rounds);
        for (int k = 0; k < 7; k++)
            for (int t = 0; t < nT; t++) {
            int T = Ts[t];
                Config c = bench_config(order[k]);
                Model m;
                model_build(&m, &c);
                m.chunk_size = chunk;
                model_init_weights(&m, 1);
                model_alloc_acts(&m, 1, T);
                uint64_t rng = 7;
                for (size_t i = 0; i < (size_t)T * c.d_model; i++) m.acts[0].ln1[i] = random_normal(&rng);
                float* dout = (float*)malloc_check((size_t)T * c.d_model * sizeof(float));
                for (size_t i = 0; i < (size_t)T * c.d_model; i++) dout[i] = random_normal(&rng) / T;
                time_mixer(&m, dout, T, &fwd[k][t], &bwd[k][t]);
                free(dout);
                model_free(&m);
            }
    }
    printf("\nforward + backward of one mixer layer, µs per token (forward / backward in brackets)\n\n| mixer |");
    for (int t = 0; t < nT; t++) printf(" T = %d |", Ts[t]);
    printf("\n|---|");
    for (int t = 0; t < nT; t++) printf("---|");
    printf("\n");
    for (int k = 0; k < 7; k++) {
        printf("| %s |", MIXER_NAMES[order[k]]);
        for (int t = 0; t < nT; t++)
            printf(" %.1f (%.1f / %.1f) |", (fwd[k][t] + bwd[k][t]) / Ts[t] * 1e6, fwd[k][t] / Ts[t] * 1e6,
                   bwd[k][t] / Ts[t] * 1e6);
        printf("\n");
    }
    return 0;
}

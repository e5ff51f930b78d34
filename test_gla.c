/*
 * test_gla.c — checks train_gla.c against the PyTorch float64 reference dumps (dev/dumps/NAME.bin,
 * written by dev/reference.py) and runs the self-checks:
 *   1. reference dumps: activations of every layer, logits, loss, every gradient, 10 AdamW steps
 *   2. finite differences of every _backward on small shapes, and of whole two-layer models
 *   3. recurrent == chunkwise for every linear core (GLA kernels with GLA's, RetNet's and HGRN2's
 *      gates; the delta rule with no, mild and strongly negative gates; HGRN's chunked scan),
 *      forward and backward, several chunk sizes, partial last chunks
 *   4. incremental decoding == full forward logits, for every mixer and a model mixing all seven
 *   5. checkpoint + optimizer-state round trip, and rejection of corrupt files; init and AdamW
 *      decay set of the parameter table
 *   6. resume bit-identity (runs ./train_gla)
 *   7. tokenizers
 *   8. bad input: corrupt, truncated or mismatched checkpoints, optimizer states, shards, tokenizers,
 *      reference dumps, and bad flags: each exits non-zero with the expected message
 *   9. kill -9 at varied moments, inside saves too: the latest checkpoint loads and resuming from it
 *      ends bit-identical to an uninterrupted run
 *  10. MQAR: generator, target-shard loader, masked loss, recall accuracy, symbols tokenizer
 *  11. never lose a run   12. using a trained model (generate, eval, logits)
 *  13. fla / Hugging Face files: export -> import byte for byte for every family, the safetensors
 *      header fla reads, BF16 and sharded imports, every refused config option and corrupt file
 * Ends with "N passed, N failed" and exits non-zero on any failure.
 *
 * Metric: relative RMS error ‖ref − x‖ / ‖ref‖ per tensor (fla's metric, LAYERS.md §11.3), printed.
 * Tolerances, for fp32 C against a float64 reference on these small shapes:
 *   forward activations, logits, loss  1e-5   fp32 rounding (6e-8) grown through ~10 layers of sums
 *   gradients                          1e-4   one more pass of sums, through softmax and gates
 *   AdamW losses, final parameters     1e-4   ten steps whose updates mhat/sqrt(vhat) amplify the
 *                                              rounding of the smallest gradient entries
 *   finite differences                 1e-2   Richardson-extrapolated central differences in fp32
 *                                              (step 1e-2 per layer, 3e-3 along the gradient of
 *                                              whole models): O(h⁴) + O(ε/h) on curved deep losses
 *   da under very strong decay         1e-5   relative to the size of the terms whose difference
 *                                              gives da (see gla_gate_grad): cancellation, not a bug
 *   recurrent vs chunkwise (both fp32) 1e-5   the same sums in another order
 */
#define TESTING
#include "train_gla.c"
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

// the folder holding the train_gla and data/ programs the tests run: $TEST_BIN_DIR, else "."
// (make test-sanitize points it at the sanitized build)
static const char* bin = ".";

// ----------------------------------------------------------------------------
// 1. reference dumps

static void test_dump(const char* path) {
    Dump d;
    dump_load(&d, path);
    const char* base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    Config c = {0};
    c.vocab_size = dump_int(&d, "config.vocab_size");
    c.d_model = dump_int(&d, "config.d_model");
    c.n_layer = dump_int(&d, "config.n_layer");
    c.mlp_hidden = dump_int(&d, "config.mlp_hidden");
    c.tie_embeddings = dump_int(&d, "config.tie_embeddings");
    c.gla_heads = dump_int(&d, "config.gla_heads");
    c.gla_dk = dump_int(&d, "config.gla_dk");
    c.gla_dv = dump_int(&d, "config.gla_dv");
    c.gla_gate_rank = dump_int(&d, "config.gla_gate_rank");
    c.gla_gate_normalizer = dump_int(&d, "config.gla_gate_normalizer");
    c.attn_heads = dump_int(&d, "config.attn_heads");
    c.attn_kv_heads = dump_int(&d, "config.attn_kv_heads");
    c.rope_theta = dump_float(&d, "config.rope_theta");
    c.norm_eps = dump_float(&d, "config.norm_eps");
    c.hgrn_dim = dump_int(&d, "config.hgrn_dim");
    c.hgrn2_heads = dump_int(&d, "config.hgrn2_heads");
    c.retnet_heads = dump_int(&d, "config.retnet_heads");
    c.deltanet_heads = dump_int(&d, "config.deltanet_heads");
    c.gdn_heads = dump_int(&d, "config.gdn_heads");
    c.gdn_head_dim = dump_int(&d, "config.gdn_head_dim");
    c.gdn_expand_v = dump_int(&d, "config.gdn_expand_v");
    c.conv_size = dump_int(&d, "config.conv_size");
    c.use_lower_bound = dump_int(&d, "config.use_lower_bound");
    Record* pat = dump_find(&d, "config.pattern");
    if ((int)pat->numel != c.n_layer) fail("'%s': pattern has %zu entries for %d layers", path, pat->numel, c.n_layer);
    for (int l = 0; l < c.n_layer; l++) c.pattern[l] = ((int32_t*)pat->data)[l];
    const char* bad = validate_config(&c);
    if (bad) fail("'%s': %s", path, bad);
    int B = dump_int(&d, "config.batch"), T = dump_int(&d, "config.seq_len"), N = B * T;
    const int* inputs = (const int*)dump_find(&d, "inputs")->data;
    const int* targets = (const int*)dump_find(&d, "targets")->data;
    size_t nd = (size_t)N * c.d_model;
    char name[256];

    // chunk 16 so that T crosses chunk boundaries (and ends in a partial chunk) in every dump
    Model m;
    model_build(&m, &c);
    m.chunk_size = 16;
    for (int i = 0; i < m.num_specs; i++) {
        snprintf(name, sizeof(name), "params.%s", m.specs[i].name);
        memcpy(m.params + m.specs[i].offset, dump_floats(&d, name, m.specs[i].numel), m.specs[i].numel * 4);
    }
    printf("-- %s: B=%d T=%d, %zu parameters\n", base, B, T, m.num_params);

    model_forward(&m, inputs, NULL, B, T);
    check_close("acts.embed", dump_floats(&d, "acts.embed", nd), m.embed_out, nd, 1e-5);
    for (int l = 0; l < c.n_layer; l++) {
        const char* parts[] = {"mixer", "mlp", "out"};
        const float* mine[] = {m.acts[l].mixer, m.acts[l].mlp, m.acts[l].res2};
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof(name), "acts.layers.%d.%s", l, parts[k]);
            char label[300];
            snprintf(label, sizeof(label), "%s (%s)", name, MIXER_NAMES[c.pattern[l]]);
            check_close(label, dump_floats(&d, name, nd), mine[k], nd, 1e-5);
        }
    }
    check_close("acts.norm", dump_floats(&d, "acts.norm", nd), m.final_norm, nd, 1e-5);
    check_close("logits", dump_floats(&d, "logits", (size_t)N * c.vocab_size), m.logits, (size_t)N * c.vocab_size, 1e-5);

    model_forward(&m, inputs, targets, B, T);
    float ref_loss = dump_float(&d, "loss");
    check_close("loss", &ref_loss, &m.loss, 1, 1e-5);
    model_backward(&m, inputs, targets);
    double worst = 0.0;
    const char* worst_name = "";
    for (int i = 0; i < m.num_specs; i++) {
        snprintf(name, sizeof(name), "grads.%s", m.specs[i].name);
        const float* ref = dump_floats(&d, name, m.specs[i].numel);
        double e = rel_rms(ref, m.grads + m.specs[i].offset, m.specs[i].numel);
        check(e <= 1e-4, "%-44s rel RMS %.2e (tol 1e-4)", name, e);
        if (e > worst) { worst = e; worst_name = m.specs[i].name; }
    }
    printf("   worst gradient: %s %.2e\n", worst_name, worst);

    // 10 AdamW steps on the same batch with the dump's hyperparameters
    TrainHyper h = {dump_float(&d, "train.lr"), dump_float(&d, "train.min_lr_frac"), dump_float(&d, "train.weight_decay"),
                    dump_float(&d, "train.beta1"), dump_float(&d, "train.beta2"), dump_float(&d, "train.eps"),
                    dump_float(&d, "train.grad_clip"), dump_int(&d, "train.warmup_steps"), dump_int(&d, "train.total_steps")};
    int steps = h.total_steps;
    float* losses = (float*)malloc_check(steps * sizeof(float));
    float* norms = (float*)malloc_check(steps * sizeof(float));
    for (int s = 0; s < steps; s++) {
        model_forward(&m, inputs, targets, B, T);
        model_backward(&m, inputs, targets);
        losses[s] = m.loss;
        norms[s] = grad_norm(&m);
        float scale = (h.grad_clip > 0 && norms[s] > h.grad_clip) ? h.grad_clip / norms[s] : 1.0f;
        adamw_update(&m, &h, learning_rate(&h, s), s + 1, scale);
    }
    check_close("train.losses (10 AdamW steps)", dump_floats(&d, "train.losses", steps), losses, steps, 1e-4);
    check_close("train.grad_norms", dump_floats(&d, "train.grad_norms", steps), norms, steps, 1e-4);
    worst = 0.0;
    for (int i = 0; i < m.num_specs; i++) {
        snprintf(name, sizeof(name), "train.final.%s", m.specs[i].name);
        double e = rel_rms(dump_floats(&d, name, m.specs[i].numel), m.params + m.specs[i].offset, m.specs[i].numel);
        if (e > worst) { worst = e; worst_name = m.specs[i].name; }
    }
    check(worst <= 1e-4, "%-44s worst rel RMS %.2e in %s (tol 1e-4)", "train.final.* (parameters after 10 steps)", worst, worst_name);
    free(losses);
    free(norms);
    model_free(&m);
    dump_free(&d);
}

// ----------------------------------------------------------------------------
// 2. finite differences: for a layer y = f(x), the scalar L = Σ w ⊙ y with fixed random w; its
// gradient by the layer's _backward (upstream dout = w) against central differences of L.

static uint64_t test_rng = 42;
static void fill_normal(float* x, size_t n, float std) { for (size_t i = 0; i < n; i++) x[i] = std * random_normal(&test_rng); }
static float* randn(size_t n, float std) { float* x = (float*)malloc_check(n * sizeof(float)); fill_normal(x, n, std); return x; }
static double dotd(const float* a, const float* b, size_t n) { double s = 0; for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i]; return s; }

// a closure over one layer: forward computes L from the current inputs
typedef double (*LossFn)(void* ctx);

// Compares analytic grad (n) of input x (n) with finite differences of loss(ctx), on up to 64
// entries. Central differences D(h) err by c h² + O(ε/h); Richardson's (4 D(h/2) − D(h)) / 3 cancels
// the h² term, so fp32 forward passes still give ~1e-4 accuracy on deep compositions.
static double central_difference(LossFn loss, void* ctx, float* xi, float h) {
    float keep = *xi;
    *xi = keep + h; double lp = loss(ctx);
    *xi = keep - h; double lm = loss(ctx);
    *xi = keep;
    return (lp - lm) / (2.0 * h);
}
static void fd_check(const char* what, LossFn loss, void* ctx, float* x, const float* grad, size_t n) {
    const float h = 1e-2f;
    size_t count = n < 64 ? n : 64, stride = n / count;
    float* num = (float*)malloc_check(count * sizeof(float));
    float* ana = (float*)malloc_check(count * sizeof(float));
    for (size_t j = 0; j < count; j++) {
        size_t i = j * stride;
        double d1 = central_difference(loss, ctx, &x[i], h), d2 = central_difference(loss, ctx, &x[i], h / 2);
        num[j] = (float)((4.0 * d2 - d1) / 3.0);
        ana[j] = grad[i];
    }
    double e = rel_rms(num, ana, count);
    check(e <= 1e-2, "finite differences %-29s rel RMS %.2e (tol 1e-2)", what, e);
    free(num);
    free(ana);
}

// --- GLA (recurrent and chunkwise share one context)
typedef struct { int B, T, H, K, V, C, chunked; float *q, *k, *v, *a, *w, *o, *states; } GlaCtx;
static double gla_loss(void* p) {
    GlaCtx* g = (GlaCtx*)p;
    float scale = 1.0f / sqrtf((float)g->K);
    if (g->chunked) gla_chunk_forward(g->o, g->states, g->q, g->k, g->v, g->a, g->B, g->T, g->H, g->K, g->V, g->C, scale);
    else gla_recurrent_forward(g->o, g->q, g->k, g->v, g->a, g->B, g->T, g->H, g->K, g->V, scale);
    return dotd(g->o, g->w, (size_t)g->B * g->T * g->H * g->V);
}

static void test_fd_gla(int chunked) {
    GlaCtx g = {2, 11, 2, 4, 3, 4, chunked};
    size_t nk = (size_t)g.B * g.T * g.H * g.K, nv = (size_t)g.B * g.T * g.H * g.V;
    g.q = randn(nk, 1); g.k = randn(nk, 1); g.v = randn(nv, 1); g.w = randn(nv, 1);
    g.a = randn(nk, 1);
    for (size_t i = 0; i < nk; i++) g.a[i] = logsigmoidf(g.a[i] + 1.0f);  // realistic log-gates ≤ 0
    g.o = randn(nv, 0);
    g.states = randn((size_t)g.B * g.H * ((g.T + g.C - 1) / g.C) * g.K * g.V, 0);
    float *dq = randn(nk, 0), *dk = randn(nk, 0), *dv = randn(nv, 0), *da = randn(nk, 0);
    gla_loss(&g);
    float scale = 1.0f / sqrtf((float)g.K);
    if (chunked) gla_chunk_backward(dq, dk, dv, da, g.w, g.states, g.q, g.k, g.v, g.a, g.B, g.T, g.H, g.K, g.V, g.C, scale);
    else gla_recurrent_backward(dq, dk, dv, da, g.w, g.q, g.k, g.v, g.a, g.B, g.T, g.H, g.K, g.V, scale);
    const char* tag = chunked ? "gla_chunk dq" : "gla_recurrent dq";
    fd_check(tag, gla_loss, &g, g.q, dq, nk);
    fd_check(chunked ? "gla_chunk dk" : "gla_recurrent dk", gla_loss, &g, g.k, dk, nk);
    fd_check(chunked ? "gla_chunk dv" : "gla_recurrent dv", gla_loss, &g, g.v, dv, nv);
    fd_check(chunked ? "gla_chunk da" : "gla_recurrent da", gla_loss, &g, g.a, da, nk);
    free(g.q); free(g.k); free(g.v); free(g.a); free(g.w); free(g.o); free(g.states);
    free(dq); free(dk); free(dv); free(da);
}

// --- short convolution (+ silu)
typedef struct { int B, T, C, W; float *x, *w, *wout, *out; } ConvCtx;
static double conv_loss(void* p) {
    ConvCtx* c = (ConvCtx*)p;
    shortconv_forward(c->out, c->x, c->w, c->B, c->T, c->C, c->W);
    return dotd(c->out, c->wout, (size_t)c->B * c->T * c->C);
}
static void test_fd_shortconv(void) {
    ConvCtx c = {2, 7, 5, 4};
    size_t n = (size_t)c.B * c.T * c.C;
    c.x = randn(n, 1); c.w = randn((size_t)c.C * c.W, 0.7f); c.wout = randn(n, 1); c.out = randn(n, 0);
    float *dx = randn(n, 0), *dw = (float*)calloc_check((size_t)c.C * c.W, 4), *dz = (float*)malloc_check(n * 4);
    memcpy(dz, c.wout, n * 4);  // shortconv_backward overwrites its upstream gradient
    shortconv_backward(dx, dw, dz, c.x, c.w, c.B, c.T, c.C, c.W);
    fd_check("shortconv dx", conv_loss, &c, c.x, dx, n);
    fd_check("shortconv dweight", conv_loss, &c, c.w, dw, (size_t)c.C * c.W);
    free(c.x); free(c.w); free(c.wout); free(c.out); free(dx); free(dw); free(dz);
}

// --- L2 norm
typedef struct { size_t R; int D; float *x, *wout, *out, *rinv; } L2Ctx;
static double l2_loss(void* p) {
    L2Ctx* c = (L2Ctx*)p;
    l2norm_forward(c->out, c->rinv, c->x, c->R, c->D);
    return dotd(c->out, c->wout, c->R * c->D);
}
static void test_fd_l2norm(void) {
    L2Ctx c = {6, 5};
    size_t n = c.R * c.D;
    c.x = randn(n, 1); c.wout = randn(n, 1); c.out = randn(n, 0); c.rinv = randn(c.R, 0);
    c.x[3] = c.x[4] = c.x[5] = c.x[6] = c.x[7] = 1e-3f;  // a row near 0, where the eps matters
    float* dx = randn(n, 0);
    l2_loss(&c);
    l2norm_backward(dx, c.wout, c.out, c.rinv, c.R, c.D);
    fd_check("l2norm dx", l2_loss, &c, c.x, dx, n);
    free(c.x); free(c.wout); free(c.out); free(c.rinv); free(dx);
}

// --- forget gate with and without a lower bound, and the lower bounds' softmax + cumsum
typedef struct { int N, D, L, bounded; float *f, *P, *lb, *s, *a, *wout; } GateCtx;
static double gate_loss(void* p) {
    GateCtx* g = (GateCtx*)p;
    lower_bounds_forward(g->lb, g->s, g->P, g->L, g->D);
    forget_gate_forward(g->a, g->f, g->bounded ? g->lb + (size_t)(g->L - 1) * g->D : NULL, g->N, g->D);
    return dotd(g->a, g->wout, (size_t)g->N * g->D);
}
static void test_fd_forget_gate(int bounded) {
    GateCtx g = {5, 4, 3, bounded};
    size_t n = (size_t)g.N * g.D, nl = (size_t)g.L * g.D;
    g.f = randn(n, 2); g.P = randn(nl, 1); g.lb = randn(nl, 0); g.s = randn(nl, 0); g.a = randn(n, 0);
    g.wout = randn(n, 1);
    g.f[0] = 9.0f;  // a gate close to 1 (a → 0)
    gate_loss(&g);
    float *df = randn(n, 0), *dlb = (float*)calloc_check(nl, 4), *dP = (float*)calloc_check(nl, 4);
    forget_gate_backward(df, bounded ? dlb + (size_t)(g.L - 1) * g.D : NULL, g.wout, g.f, bounded ? g.lb + (size_t)(g.L - 1) * g.D : NULL, g.N, g.D);
    fd_check(bounded ? "forget_gate (bounded) df" : "forget_gate (logsigmoid) df", gate_loss, &g, g.f, df, n);
    if (bounded) {
        lower_bounds_backward(dP, dlb, g.s, g.L, g.D);
        fd_check("lower bounds dP (softmax, cumsum)", gate_loss, &g, g.P, dP, nl);
    }
    free(g.f); free(g.P); free(g.lb); free(g.s); free(g.a); free(g.wout); free(df); free(dlb); free(dP);
}

// --- HGRN core (recurrent and chunked scan)
typedef struct { int B, T, D, C, chunked; float *x, *a, *h, *w; } HgrnCtx;
static double hgrn_loss(void* p) {
    HgrnCtx* g = (HgrnCtx*)p;
    if (g->chunked) hgrn_chunk_forward(g->h, g->x, g->a, g->B, g->T, g->D, g->C);
    else hgrn_recurrent_forward(g->h, g->x, g->a, g->B, g->T, g->D);
    return dotd(g->h, g->w, (size_t)g->B * g->T * g->D);
}
static void test_fd_hgrn(int chunked) {
    HgrnCtx g = {2, 11, 3, 4, chunked};
    size_t n = (size_t)g.B * g.T * g.D;
    g.x = randn(n, 1); g.a = randn(n, 1); g.h = randn(n, 0); g.w = randn(n, 1);
    for (size_t i = 0; i < n; i++) g.a[i] = logsigmoidf(g.a[i] + 1.0f);
    float *dx = randn(n, 0), *da = randn(n, 0);
    hgrn_loss(&g);
    if (chunked) hgrn_chunk_backward(dx, da, g.w, g.h, g.a, g.B, g.T, g.D, g.C);
    else hgrn_recurrent_backward(dx, da, g.w, g.h, g.a, g.B, g.T, g.D);
    fd_check(chunked ? "hgrn_chunk dx" : "hgrn_recurrent dx", hgrn_loss, &g, g.x, dx, n);
    fd_check(chunked ? "hgrn_chunk da" : "hgrn_recurrent da", hgrn_loss, &g, g.a, da, n);
    free(g.x); free(g.a); free(g.h); free(g.w); free(dx); free(da);
}

// --- delta rule (recurrent and chunkwise; gated or not). q, k are fed unnormalised here: the
// backward does not assume unit keys.
typedef struct { int B, T, H, K, V, C, chunked; float *q, *k, *v, *beta, *g, *w, *o, *states; } DeltaCtx;
static double delta_loss(void* p) {
    DeltaCtx* g = (DeltaCtx*)p;
    float scale = 1.0f / sqrtf((float)g->K);
    if (g->chunked)
        delta_chunk_forward(g->o, g->states, g->q, g->k, g->v, g->beta, g->g, g->B, g->T, g->H, g->K, g->V, g->C, scale);
    else
        delta_recurrent_forward(g->o, g->q, g->k, g->v, g->beta, g->g, g->B, g->T, g->H, g->K, g->V, scale);
    return dotd(g->o, g->w, (size_t)g->B * g->T * g->H * g->V);
}
static void test_fd_delta(int chunked, int gated) {
    DeltaCtx g = {2, 11, 2, 4, 3, 4, chunked};
    size_t nk = (size_t)g.B * g.T * g.H * g.K, nv = (size_t)g.B * g.T * g.H * g.V, nh = (size_t)g.B * g.T * g.H;
    g.q = randn(nk, 0.5f); g.k = randn(nk, 0.5f); g.v = randn(nv, 1); g.w = randn(nv, 1);
    g.beta = randn(nh, 1); g.g = gated ? randn(nh, 1) : NULL;
    for (size_t i = 0; i < nh; i++) {
        g.beta[i] = sigmoidf(g.beta[i]);
        if (gated) g.g[i] = logsigmoidf(g.g[i] + 1.0f);
    }
    g.o = randn(nv, 0);
    g.states = randn((size_t)g.B * g.H * ((g.T + g.C - 1) / g.C) * g.K * g.V, 0);
    float *dq = randn(nk, 0), *dk = randn(nk, 0), *dv = randn(nv, 0), *db = randn(nh, 0), *dg = randn(nh, 0);
    delta_loss(&g);
    float scale = 1.0f / sqrtf((float)g.K);
    if (chunked)
        delta_chunk_backward(dq, dk, dv, db, gated ? dg : NULL, g.w, g.states, g.q, g.k, g.v, g.beta, g.g, g.B, g.T, g.H,
                             g.K, g.V, g.C, scale);
    else
        delta_recurrent_backward(dq, dk, dv, db, gated ? dg : NULL, g.w, g.q, g.k, g.v, g.beta, g.g, g.B, g.T, g.H, g.K,
                                 g.V, scale);
    char what[64];
    const char* form = chunked ? "chunk" : "recurrent";
    const char* kind = gated ? "gated_delta" : "delta";
    snprintf(what, sizeof(what), "%s_%s dq", kind, form); fd_check(what, delta_loss, &g, g.q, dq, nk);
    snprintf(what, sizeof(what), "%s_%s dk", kind, form); fd_check(what, delta_loss, &g, g.k, dk, nk);
    snprintf(what, sizeof(what), "%s_%s dv", kind, form); fd_check(what, delta_loss, &g, g.v, dv, nv);
    snprintf(what, sizeof(what), "%s_%s dbeta", kind, form); fd_check(what, delta_loss, &g, g.beta, db, nh);
    if (gated) { snprintf(what, sizeof(what), "%s_%s dg", kind, form); fd_check(what, delta_loss, &g, g.g, dg, nh); }
    free(g.q); free(g.k); free(g.v); free(g.w); free(g.beta); free(g.g); free(g.o); free(g.states);
    free(dq); free(dk); free(dv); free(db); free(dg);
}

// --- RMSNorm
typedef struct { int N, C; float *x, *w, *wout, *out, *rstd; } NormCtx;
static double rmsnorm_loss(void* p) {
    NormCtx* n = (NormCtx*)p;
    rmsnorm_forward(n->out, n->rstd, n->x, n->w, n->N, n->C, 1e-6f);
    return dotd(n->out, n->wout, (size_t)n->N * n->C);
}
static void test_fd_rmsnorm(void) {
    NormCtx n = {5, 7};
    size_t sz = (size_t)n.N * n.C;
    n.x = randn(sz, 1); n.w = randn(n.C, 1); n.wout = randn(sz, 1); n.out = randn(sz, 0); n.rstd = randn(n.N, 0);
    float *dx = (float*)calloc_check(sz, 4), *dw = (float*)calloc_check(n.C, 4);
    rmsnorm_loss(&n);
    rmsnorm_backward(dx, dw, n.wout, n.x, n.w, n.rstd, n.N, n.C);
    fd_check("rmsnorm dx", rmsnorm_loss, &n, n.x, dx, sz);
    fd_check("rmsnorm dweight", rmsnorm_loss, &n, n.w, dw, n.C);
    free(n.x); free(n.w); free(n.wout); free(n.out); free(n.rstd); free(dx); free(dw);
}

// --- gated RMSNorm
typedef struct { int N, H, V; float *x, *g, *w, *wout, *out, *rstd; } GNormCtx;
static double gnorm_loss(void* p) {
    GNormCtx* n = (GNormCtx*)p;
    gated_rmsnorm_forward(n->out, n->rstd, n->x, n->g, n->w, n->N, n->H, n->V, 1e-6f);
    return dotd(n->out, n->wout, (size_t)n->N * n->H * n->V);
}
static void test_fd_gated_rmsnorm(void) {
    GNormCtx n = {4, 3, 5};
    size_t sz = (size_t)n.N * n.H * n.V;
    n.x = randn(sz, 1); n.g = randn(sz, 1); n.w = randn(n.V, 1); n.wout = randn(sz, 1); n.out = randn(sz, 0);
    n.rstd = randn((size_t)n.N * n.H, 0);
    float *dx = (float*)calloc_check(sz, 4), *dg = (float*)calloc_check(sz, 4), *dw = (float*)calloc_check(n.V, 4);
    gnorm_loss(&n);
    gated_rmsnorm_backward(dx, dg, dw, n.wout, n.x, n.g, n.w, n.rstd, n.N, n.H, n.V);
    fd_check("gated_rmsnorm dx", gnorm_loss, &n, n.x, dx, sz);
    fd_check("gated_rmsnorm dg", gnorm_loss, &n, n.g, dg, sz);
    fd_check("gated_rmsnorm dweight", gnorm_loss, &n, n.w, dw, n.V);
    free(n.x); free(n.g); free(n.w); free(n.wout); free(n.out); free(n.rstd); free(dx); free(dg); free(dw);
}

// --- SwiGLU
typedef struct { size_t n; float *gate, *up, *w, *out; } SwigluCtx;
static double swiglu_loss(void* p) {
    SwigluCtx* s = (SwigluCtx*)p;
    swiglu_forward(s->out, s->gate, s->up, s->n);
    return dotd(s->out, s->w, s->n);
}
static void test_fd_swiglu(void) {
    SwigluCtx s = {30};
    s.gate = randn(s.n, 2); s.up = randn(s.n, 1); s.w = randn(s.n, 1); s.out = randn(s.n, 0);
    float *dg = randn(s.n, 0), *du = randn(s.n, 0);
    swiglu_backward(dg, du, s.w, s.gate, s.up, s.n);
    fd_check("swiglu dgate", swiglu_loss, &s, s.gate, dg, s.n);
    fd_check("swiglu dup", swiglu_loss, &s, s.up, du, s.n);
    free(s.gate); free(s.up); free(s.w); free(s.out); free(dg); free(du);
}

// --- RoPE
typedef struct { int B, T, NH, D; float *x, *y, *w; } RopeCtx;
static double rope_loss(void* p) {
    RopeCtx* r = (RopeCtx*)p;
    size_t n = (size_t)r->B * r->T * r->NH * r->D;
    memcpy(r->y, r->x, n * 4);
    rope_forward(r->y, r->B, r->T, r->NH, r->D, 3, 10000.0f);
    return dotd(r->y, r->w, n);
}
static void test_fd_rope(void) {
    RopeCtx r = {2, 6, 2, 8};
    size_t n = (size_t)r.B * r.T * r.NH * r.D;
    r.x = randn(n, 1); r.y = randn(n, 0); r.w = randn(n, 1);
    float* dx = (float*)malloc_check(n * 4);
    memcpy(dx, r.w, n * 4);
    rope_backward(dx, r.B, r.T, r.NH, r.D, 3, 10000.0f);
    fd_check("rope dx", rope_loss, &r, r.x, dx, n);
    free(r.x); free(r.y); free(r.w); free(dx);
}

// --- attention (GQA: 4 query heads over 2 kv heads)
typedef struct { int B, T, H, Hkv, D; float *q, *k, *v, *w, *out, *att; } AttCtx;
static double att_loss(void* p) {
    AttCtx* a = (AttCtx*)p;
    attention_forward(a->out, a->att, a->q, a->k, a->v, a->B, a->T, a->H, a->Hkv, a->D);
    return dotd(a->out, a->w, (size_t)a->B * a->T * a->H * a->D);
}
static void test_fd_attention(void) {
    AttCtx a = {2, 7, 4, 2, 4};
    size_t nq = (size_t)a.B * a.T * a.H * a.D, nk = (size_t)a.B * a.T * a.Hkv * a.D;
    a.q = randn(nq, 1); a.k = randn(nk, 1); a.v = randn(nk, 1); a.w = randn(nq, 1); a.out = randn(nq, 0);
    a.att = randn((size_t)a.B * a.H * a.T * a.T, 0);
    float *dq = (float*)calloc_check(nq, 4), *dk = (float*)calloc_check(nk, 4), *dv = (float*)calloc_check(nk, 4);
    att_loss(&a);
    attention_backward(dq, dk, dv, a.w, a.att, a.q, a.k, a.v, a.B, a.T, a.H, a.Hkv, a.D);
    fd_check("attention dq", att_loss, &a, a.q, dq, nq);
    fd_check("attention dk", att_loss, &a, a.k, dk, nk);
    fd_check("attention dv", att_loss, &a, a.v, dv, nk);
    free(a.q); free(a.k); free(a.v); free(a.w); free(a.out); free(a.att); free(dq); free(dk); free(dv);
}

// --- matmul
typedef struct { int N, C, OC; float *x, *W, *b, *w, *out; } MatCtx;
static double mat_loss(void* p) {
    MatCtx* m = (MatCtx*)p;
    matmul_forward(m->out, m->x, m->W, m->b, m->N, m->C, m->OC);
    return dotd(m->out, m->w, (size_t)m->N * m->OC);
}
static void test_fd_matmul(void) {
    MatCtx m = {9, 13, 7};
    m.x = randn((size_t)m.N * m.C, 1); m.W = randn((size_t)m.OC * m.C, 1); m.b = randn(m.OC, 1);
    m.w = randn((size_t)m.N * m.OC, 1); m.out = randn((size_t)m.N * m.OC, 0);
    float *dx = (float*)calloc_check((size_t)m.N * m.C, 4), *dW = (float*)calloc_check((size_t)m.OC * m.C, 4),
          *db = (float*)calloc_check(m.OC, 4);
    matmul_backward(dx, dW, db, m.w, m.x, m.W, m.N, m.C, m.OC);
    fd_check("matmul dinp", mat_loss, &m, m.x, dx, (size_t)m.N * m.C);
    fd_check("matmul dweight", mat_loss, &m, m.W, dW, (size_t)m.OC * m.C);
    fd_check("matmul dbias", mat_loss, &m, m.b, db, m.OC);
    free(m.x); free(m.W); free(m.b); free(m.w); free(m.out); free(dx); free(dW); free(db);
}

// --- cross-entropy (with ignored rows)
typedef struct { int N, V; float *logits, *probs; int* targets; } CeCtx;
static double ce_loss(void* p) {
    CeCtx* c = (CeCtx*)p;
    memcpy(c->probs, c->logits, (size_t)c->N * c->V * 4);
    int nv;
    return crossentropy_forward(c->probs, c->targets, c->N, c->V, &nv);
}
static void test_fd_crossentropy(void) {
    CeCtx c = {6, 5};
    int targets[6] = {1, 4, IGNORE_INDEX, 0, 3, IGNORE_INDEX};
    c.targets = targets;
    c.logits = randn((size_t)c.N * c.V, 2); c.probs = randn((size_t)c.N * c.V, 0);
    int nv;
    memcpy(c.probs, c.logits, (size_t)c.N * c.V * 4);
    crossentropy_forward(c.probs, c.targets, c.N, c.V, &nv);
    crossentropy_backward(c.probs, c.targets, c.N, c.V, nv);
    float* grad = (float*)malloc_check((size_t)c.N * c.V * 4);
    memcpy(grad, c.probs, (size_t)c.N * c.V * 4);
    fd_check("crossentropy dlogits", ce_loss, &c, c.logits, grad, (size_t)c.N * c.V);
    free(c.logits); free(c.probs); free(grad);
}

// --- embedding
typedef struct { int N, C; int* idx; float *wte, *out, *w; } EmbCtx;
static double emb_loss(void* p) {
    EmbCtx* e = (EmbCtx*)p;
    encoder_forward(e->out, e->idx, e->wte, e->N, e->C);
    return dotd(e->out, e->w, (size_t)e->N * e->C);
}
static void test_fd_encoder(void) {
    int idx[6] = {2, 0, 2, 3, 1, 2};
    EmbCtx e = {6, 4, idx};
    e.wte = randn(4 * 4, 1); e.out = randn(6 * 4, 0); e.w = randn(6 * 4, 1);
    float* dw = (float*)calloc_check(16, 4);
    encoder_backward(dw, e.w, e.idx, e.N, e.C);
    fd_check("embedding dwte", emb_loss, &e, e.wte, dw, 16);
    free(e.wte); free(e.out); free(e.w); free(dw);
}

// --- the whole model, through every layer's backward at once (gate chain, norms, projections)
typedef struct { Model* m; int *in, *tg, B, T; } ModelCtx;
static double model_loss(void* p) {
    ModelCtx* c = (ModelCtx*)p;
    model_forward(c->m, c->in, c->tg, c->B, c->T);
    return c->m->loss;
}

static Config small_config(const char* pattern, int n_layer, int tie) {
    Config c = {.vocab_size = 32, .d_model = 16, .n_layer = n_layer, .mlp_hidden = 24, .tie_embeddings = tie, .gla_heads = 2,
                .gla_dk = 8, .gla_dv = 16, .gla_gate_rank = 4, .gla_gate_normalizer = 16, .attn_heads = 4,
                .attn_kv_heads = 2, .rope_theta = 10000.0f, .norm_eps = 1e-6f, .hgrn_dim = 16, .hgrn2_heads = 2,
                .retnet_heads = 2, .deltanet_heads = 2, .gdn_heads = 2, .gdn_head_dim = 4, .gdn_expand_v = 2,
                .conv_size = 4, .use_lower_bound = 1};
    const char* bad = parse_pattern(pattern, c.n_layer, c.pattern);
    if (bad) fail("%s", bad);
    return c;
}

// Matrices N(0, std), vectors 1 + 0.2 N(0,1); GDN's A_log = log U(0.5, 2) and dt_bias N(0, 0.5) as in
// dev/reference.py, so that its decays e^g are moderate (≈ 0.2 .. 0.8) and every path carries signal.
static void randomize_model(Model* m, float std) {
    for (int i = 0; i < m->num_specs; i++) {
        const ParamSpec* p = &m->specs[i];
        int slot = p->layer >= 0 ? p->slot : -1;
        for (size_t j = 0; j < p->numel; j++) {
            float* w = &m->params[p->offset + j];
            if (slot == W_DELTA_A_LOG) *w = logf(0.5f + 1.5f * random_f32(&test_rng));
            else if (slot == W_DELTA_DT_BIAS) *w = 0.5f * random_normal(&test_rng);
            else *w = p->ndim == 2 ? std * random_normal(&test_rng) : 1.0f + 0.2f * random_normal(&test_rng);
        }
    }
}

// The composed backward (model_backward through gla_layer_backward, attn_layer_backward,
// mlp_backward) on two-layer models. The fp32 loss rounds at ~1e-7 · loss, which is comparable to
// h times single entries of the gradients, so entry-wise differences are noise here. Instead, per
// tensor, compare the directional derivative along the analytic gradient direction u = g/‖g‖: its
// exact value is ‖g‖ (a sum over all entries, far above the noise), and any error in g that is not
// orthogonal to g shows up in it. Deeper stacks push the smallest gradients (the /16 gate) into
// the rounding noise; the reference dumps cover the four-layer compositions against float64.
// The step h = 3e-3 balances the two errors of the estimate: the loss's fp32 rounding, divided by h,
// and the O(h⁴) left by Richardson. At h = 1e-3 the smallest tensor (attn,gla's second gk_bias)
// sat at the rounding floor: its error moved from under 1e-2 to 2.8e-2 when the GLA and attention
// kernels changed their summation order (outputs within 1e-7 relative of before); at h = 1e-2 the
// truncation error reached 0.17 (deltanet's o_proj). At 3e-3 every tensor measured below 5.7e-3.
static void test_fd_model(const char* pattern, int n_layer, float std) {
    Config c = small_config(pattern, n_layer, 0);
    c.gla_gate_normalizer = 1;  // 16x larger gate gradients, well above the loss rounding
    Model m;
    model_build(&m, &c);
    m.chunk_size = 4;
    randomize_model(&m, std);
    int B = 2, T = 9, in[18], tg[18];
    for (int i = 0; i < B * T; i++) { in[i] = random_u32(&test_rng) % c.vocab_size; tg[i] = i % 5 == 2 ? IGNORE_INDEX : (int)(random_u32(&test_rng) % c.vocab_size); }
    ModelCtx ctx = {&m, in, tg, B, T};
    model_loss(&ctx);
    model_backward(&m, in, tg);
    float* grads = (float*)malloc_check(m.num_params * 4);
    float* keep = (float*)malloc_check(m.num_params * 4);
    memcpy(grads, m.grads, m.num_params * 4);
    memcpy(keep, m.params, m.num_params * 4);
    double worst = 0.0;
    const char* worst_name = "";
    for (int i = 0; i < m.num_specs; i++) {
        const ParamSpec* p = &m.specs[i];
        const float* g = grads + p->offset;
        float* w = m.params + p->offset;
        double gnorm = sqrt(dotd(g, g, p->numel));
        double d[2], h = 3e-3;
        for (int k = 0; k < 2; k++) {  // central differences at h and h/2, then Richardson
            double hh = k ? h / 2 : h;
            for (size_t j = 0; j < p->numel; j++) w[j] = keep[p->offset + j] + (float)(hh * g[j] / gnorm);
            double lp = model_loss(&ctx);
            for (size_t j = 0; j < p->numel; j++) w[j] = keep[p->offset + j] - (float)(hh * g[j] / gnorm);
            double lm = model_loss(&ctx);
            memcpy(w, keep + p->offset, p->numel * 4);
            d[k] = (lp - lm) / (2 * hh);
        }
        double e = fabs((4 * d[1] - d[0]) / 3 - gnorm) / gnorm;
        if (e > worst) { worst = e; worst_name = p->name; }
        char what[128];
        snprintf(what, sizeof(what), "%s %s", pattern, p->name);
        check(e <= 1e-2, "finite differences %-29s along g: rel err %.2e (tol 1e-2)", what, e);
    }
    printf("   worst: %s %.2e\n", worst_name, worst);
    free(grads);
    free(keep);
    model_free(&m);
}

// ----------------------------------------------------------------------------
// 3. recurrent == chunkwise

// the gates of the GLA-kernel mixers: GLA's (mild, or log-decays near −8 per step), RetNet's fixed
// log γ_h per head, HGRN2's (k = 1 − e^a tied to the gate)
enum { GATES_MILD, GATES_STRONG, GATES_RETNET, GATES_HGRN2 };

// K, V: head sizes; the matmul's full and ragged tiles (6 rows × 16 or 64 columns) and the delta
// rule's column strips (64, 32, 16) are reached with K, V ≥ 16 and with the ragged rest of e.g. 9 × 117
static void test_recurrent_vs_chunk(int C, int gates, const char* label, int K, int V) {
    int B = 2, T = 37, H = 2, strong = gates == GATES_STRONG;
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V;
    float *q = randn(nk, 1), *k = randn(nk, 1), *v = randn(nv, 1), *a = randn(nk, 1), *dout = randn(nv, 1);
    for (size_t i = 0; i < nk; i++) {
        int h = (int)(i / K % H);
        a[i] = gates == GATES_RETNET ? log1pf(-ldexpf(1.0f, -5 - h)) : logsigmoidf(a[i] + (strong ? -8.0f : 1.0f));
        if (gates == GATES_HGRN2) k[i] = -expm1f(a[i]);
    }
    float *o1 = randn(nv, 0), *o2 = randn(nv, 0), *states = randn((size_t)B * H * ((T + C - 1) / C) * K * V, 0);
    float scale = 1.0f / sqrtf((float)K);
    gla_recurrent_forward(o1, q, k, v, a, B, T, H, K, V, scale);
    gla_chunk_forward(o2, states, q, k, v, a, B, T, H, K, V, C, scale);
    char what[128];
    snprintf(what, sizeof(what), "chunk %d == recurrent: o %s K %d V %d", C, label, K, V);
    int finite = 1;
    for (size_t i = 0; i < nv; i++) finite &= isfinite(o2[i]);
    check_close(what, o1, o2, nv, 1e-5);
    float *g1[4], *g2[4];
    size_t sizes[4] = {nk, nk, nv, nk};
    for (int i = 0; i < 4; i++) { g1[i] = randn(sizes[i], 0); g2[i] = randn(sizes[i], 0); }
    gla_recurrent_backward(g1[0], g1[1], g1[2], g1[3], dout, q, k, v, a, B, T, H, K, V, scale);
    gla_chunk_backward(g2[0], g2[1], g2[2], g2[3], dout, states, q, k, v, a, B, T, H, K, V, C, scale);
    const char* names[4] = {"dq", "dk", "dv", "da"};
    for (int i = 0; i < 4; i++) {
        for (size_t j = 0; j < sizes[i]; j++) finite &= isfinite(g2[i][j]);
        snprintf(what, sizeof(what), "chunk %d == recurrent: %s %s K %d V %d", C, names[i], label, K, V);
        if (i < 3 || !strong) check_close(what, g1[i], g2[i], sizes[i], 1e-5);
    }
    if (strong) {
        // the chunkwise da is the difference of suffix sums of q ⊙ dq and k ⊙ dk (gla_gate_grad);
        // measure its error against the size of those terms, M_t = Σ_{s≥t} |q_s dq_s| + |k_s dk_s|
        double err = 0.0, mag = 0.0;
        for (int b = 0; b < B; b++)
            for (int c = 0; c < H * K; c++) {
                double m = 0.0;
                for (int t = T - 1; t >= 0; t--) {
                    size_t r = ((size_t)b * T + t) * H * K + c;
                    m += fabs((double)q[r] * g2[0][r]) + fabs((double)k[r] * g2[1][r]);
                    err += ((double)g1[3][r] - g2[3][r]) * ((double)g1[3][r] - g2[3][r]);
                    mag += m * m;
                }
            }
        double e = sqrt(err / mag);
        check(e <= 1e-5, "chunk %d == recurrent: da %s K %d V %d, error / cancelling terms %.2e (tol 1e-5; plain rel RMS %.2e)",
              C, label, K, V, e, rel_rms(g1[3], g2[3], nk));
    }
    for (int i = 0; i < 4; i++) { free(g1[i]); free(g2[i]); }
    check(finite, "chunk %d %s K %d V %d: every output and gradient finite", C, label, K, V);
    free(q); free(k); free(v); free(a); free(dout); free(o1); free(o2); free(states);
}

// The delta rule: delta_recurrent_forward/backward (every state kept) against the WY chunkwise
// forward and the per-chunk recomputing backward. gates: 0 none (DeltaNet), 1 mild GDN log-decays
// (≈ −0.2), 2 strongly negative ones (g down to −30 per step, as −e^{A_log} softplus(·) with A up to
// 16 can give: chunk-local sums far below −88, e^G underflows to 0).
static void test_delta_recurrent_vs_chunk(int C, int gates, const char* label, int K, int V) {
    int B = 2, T = 37, H = 2;
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, nh = (size_t)B * T * H;
    float *q = randn(nk, 1), *k = randn(nk, 1), *v = randn(nv, 1), *beta = randn(nh, 1), *dout = randn(nv, 1);
    float* g = gates ? randn(nh, 1) : NULL, *rinv = randn(nh, 0);
    l2norm_forward(q, rinv, q, nh, K);
    l2norm_forward(k, rinv, k, nh, K);
    for (size_t i = 0; i < nh; i++) {
        beta[i] = sigmoidf(beta[i]);
        if (gates == 1) g[i] = -0.2f * sigmoidf(g[i]);
        if (gates == 2) g[i] = -30.0f * random_f32(&test_rng);
    }
    float *o1 = randn(nv, 0), *o2 = randn(nv, 0), *states = randn((size_t)B * H * ((T + C - 1) / C) * K * V, 0);
    float scale = 1.0f / sqrtf((float)K);
    delta_recurrent_forward(o1, q, k, v, beta, g, B, T, H, K, V, scale);
    delta_chunk_forward(o2, states, q, k, v, beta, g, B, T, H, K, V, C, scale);
    char what[128];
    snprintf(what, sizeof(what), "delta chunk %d == recurrent: o %s K %d V %d", C, label, K, V);
    check_close(what, o1, o2, nv, 1e-5);
    int finite = 1;
    for (size_t i = 0; i < nv; i++) finite &= isfinite(o2[i]);
    float *g1[5], *g2[5];
    size_t sizes[5] = {nk, nk, nv, nh, nh};
    for (int i = 0; i < 5; i++) { g1[i] = randn(sizes[i], 0); g2[i] = randn(sizes[i], 0); }
    delta_recurrent_backward(g1[0], g1[1], g1[2], g1[3], g ? g1[4] : NULL, dout, q, k, v, beta, g, B, T, H, K, V, scale);
    delta_chunk_backward(g2[0], g2[1], g2[2], g2[3], g ? g2[4] : NULL, dout, states, q, k, v, beta, g, B, T, H, K, V, C, scale);
    const char* names[5] = {"dq", "dk", "dv", "dbeta", "dg"};
    for (int i = 0; i < (g ? 5 : 4); i++) {
        for (size_t j = 0; j < sizes[i]; j++) finite &= isfinite(g2[i][j]);
        snprintf(what, sizeof(what), "delta chunk %d == recurrent: %s %s K %d V %d", C, names[i], label, K, V);
        check_close(what, g1[i], g2[i], sizes[i], 1e-5);
    }
    check(finite, "delta chunk %d %s K %d V %d: every output and gradient finite", C, label, K, V);
    for (int i = 0; i < 5; i++) { free(g1[i]); free(g2[i]); }
    free(q); free(k); free(v); free(beta); free(dout); free(g); free(rinv); free(o1); free(o2); free(states);
}

// HGRN: the step-by-step recurrence against the chunked scan, mild gates or log-gates near −8
static void test_hgrn_recurrent_vs_chunk(int C, int strong, const char* label) {
    int B = 2, T = 37, D = 5;
    size_t n = (size_t)B * T * D;
    float *x = randn(n, 1), *a = randn(n, 1), *dout = randn(n, 1);
    for (size_t i = 0; i < n; i++) a[i] = logsigmoidf(a[i] + (strong ? -8.0f : 1.0f));
    float *h1 = randn(n, 0), *h2 = randn(n, 0), *dx1 = randn(n, 0), *dx2 = randn(n, 0), *da1 = randn(n, 0),
          *da2 = randn(n, 0);
    hgrn_recurrent_forward(h1, x, a, B, T, D);
    hgrn_chunk_forward(h2, x, a, B, T, D, C);
    hgrn_recurrent_backward(dx1, da1, dout, h1, a, B, T, D);
    hgrn_chunk_backward(dx2, da2, dout, h2, a, B, T, D, C);
    char what[128];
    snprintf(what, sizeof(what), "hgrn chunk %d == recurrent: h %s", C, label);
    check_close(what, h1, h2, n, 1e-5);
    snprintf(what, sizeof(what), "hgrn chunk %d == recurrent: dx %s", C, label);
    check_close(what, dx1, dx2, n, 1e-5);
    snprintf(what, sizeof(what), "hgrn chunk %d == recurrent: da %s", C, label);
    check_close(what, da1, da2, n, 1e-5);
    free(x); free(a); free(dout); free(h1); free(h2); free(dx1); free(dx2); free(da1); free(da2);
}

// ----------------------------------------------------------------------------
// 4. incremental decoding == full forward

static void test_decode(const char* pattern, int n_layer) {
    Config c = small_config(pattern, n_layer, 1);
    Model m;
    model_build(&m, &c);
    m.chunk_size = 4;
    randomize_model(&m, 0.3f);
    int T = 13, in[13];
    for (int i = 0; i < T; i++) in[i] = random_u32(&test_rng) % c.vocab_size;
    model_forward(&m, in, NULL, 1, T);
    DecodeState s;
    decode_init(&s, &c, T);
    float* step_logits = (float*)malloc_check((size_t)T * c.vocab_size * 4);
    for (int t = 0; t < T; t++) {
        decode_step(&m, &s, in[t], t);
        memcpy(step_logits + (size_t)t * c.vocab_size, s.logits, c.vocab_size * 4);
    }
    char what[128];
    snprintf(what, sizeof(what), "decode == forward logits (%s)", pattern);
    check_close(what, m.logits, step_logits, (size_t)T * c.vocab_size, 1e-5);
    decode_free(&s, &c);
    free(step_logits);
    model_free(&m);
}

// ----------------------------------------------------------------------------
// 5. checkpoints (and the init and weight-decay flags of the parameter table)

// fla's init (LAYERS.md §9.5) and the AdamW decay set, on a model holding all seven mixers
static void test_init(void) {
    Config c = small_config("gla,hgrn,retnet,attn,hgrn2,deltanet,gated_deltanet", 7, 0);
    Model m;
    model_build(&m, &c);
    model_init_weights(&m, 7);
    int ok_norm = 1, ok_zero = 1, ok_alog = 1, ok_dt = 1, ok_decay = 1, n_alog = 0;
    double ss = 0.0;
    size_t n_normal = 0;
    for (int i = 0; i < m.num_specs; i++) {
        const ParamSpec* p = &m.specs[i];
        const float* w = m.params + p->offset;
        const char* last = strrchr(p->name, '.') ? strrchr(p->name, '.') + 1 : p->name;
        int want_decay = strcmp(p->name, "embed") == 0 || strcmp(p->name, "lm_head") == 0 ||
                         strstr(last, "_proj") != NULL;
        ok_decay &= p->decay == want_decay;
        for (size_t j = 0; j < p->numel; j++) {
            if (strstr(last, "norm")) ok_norm &= w[j] == 1.0f;
            else if (!strcmp(last, "lower_bounds") || !strcmp(last, "gk_bias")) ok_zero &= w[j] == 0.0f;
            else if (!strcmp(last, "A_log")) { ok_alog &= isfinite(w[j]) && expf(w[j]) > 0 && expf(w[j]) <= 16.0f; n_alog++; }
            else if (!strcmp(last, "dt_bias")) {
                float dt = softplusf(w[j]);
                ok_dt &= dt >= 0.999e-3f && dt <= 0.1001f;
            } else { ss += (double)w[j] * w[j]; n_normal++; }
        }
    }
    double std = sqrt(ss / n_normal);
    check(ok_norm && ok_zero, "init: norm weights 1; lower_bounds and gk_bias 0");
    check(ok_alog && n_alog == c.gdn_heads, "init: GDN A = exp(A_log) in (0, 16]");
    check(ok_dt, "init: GDN softplus(dt_bias) = dt in [1e-3, 0.1]");
    check(fabs(std - 0.02) < 0.001, "init: Linear, conv, embedding weights N(0, 0.02): std %.4f over %zu", std, n_normal);
    check(ok_decay, "AdamW decay exactly on *_proj, gk_proj1/2, embed, lm_head (not norms, convs, A_log, dt_bias, bounds)");
    model_free(&m);
}


static void test_checkpoint_roundtrip(const char* dir, const char* pattern, int n_layer) {
    printf("-- %s\n", pattern);
    Config c = small_config(pattern, n_layer, 0);
    Model m, r;
    model_build(&m, &c);
    randomize_model(&m, 0.1f);
    fill_normal(m.adam_m, m.num_params, 0.01f);
    for (size_t i = 0; i < m.num_params; i++) m.adam_v[i] = fabsf(random_normal(&test_rng));
    TrainState s = {.step = 7, .shard = 0, .pos = 12345, .rng = 0xDEADBEEFCAFEull, .B = 4, .T = 8}, s2;
    save_checkpoint(dir, &m, &s, 0, 0x1234);
    char path[PATH_CAP];
    check(latest_checkpoint(dir) == 7, "checkpoint: DONE marker found for step 7");
    ckpt_path(path, sizeof(path), dir, "model", 7);
    Config c2;
    checkpoint_read_config(path, &c2);
    check(memcmp(&c, &c2, sizeof(Config)) == 0, "checkpoint: config round trip");
    model_build(&r, &c2);
    checkpoint_read_params(path, &c2, r.params, r.num_params);
    check(memcmp(m.params, r.params, m.num_params * 4) == 0, "checkpoint: parameters bit-identical");
    ckpt_path(path, sizeof(path), dir, "state", 7);
    state_read(path, &r.config, r.adam_m, r.adam_v, r.num_params, &s2);
    check(memcmp(m.adam_m, r.adam_m, m.num_params * 4) == 0 && memcmp(m.adam_v, r.adam_v, m.num_params * 4) == 0,
          "checkpoint: AdamW moments bit-identical");
    check(s2.step == 7 && s2.pos == 12345 && s2.rng == s.rng && s2.B == 4 && s2.T == 8, "checkpoint: step, data position, RNG");
    model_free(&m);
    model_free(&r);
}

// ----------------------------------------------------------------------------
// 6. resume bit-identity: train 8 steps straight; train 4, stop, resume to 8; compare the logs

static void write_tiny_data(const char* dir) {
    char path[PATH_CAP];
    size_t n = 20000;
    uint16_t* tok = (uint16_t*)malloc_check(n * 2);
    for (size_t i = 0; i < n; i++) tok[i] = (uint16_t)("the quick brown fox jumps over the lazy dog. "[i % 45]);
    Tokenizer t;
    tokenizer_init_bytes(&t);
    snprintf(path, sizeof(path), "%s/train.bin", dir);
    shard_write(path, tok, n, tokenizer_fingerprint(&t));
    snprintf(path, sizeof(path), "%s/val.bin", dir);
    shard_write(path, tok, 5000, tokenizer_fingerprint(&t));
    snprintf(path, sizeof(path), "%s/tok.bin", dir);
    tokenizer_write(&t, path);
    tokenizer_free(&t);
    free(tok);
}

// the "step N/M | loss ..." lines of a log file, without their timings
static int read_losses(const char* path, char lines[][128], int max) {
    FILE* f = fopen(path, "r");
    if (!f) return 0;
    char buf[512];
    int n = 0;
    while (n < max && fgets(buf, sizeof(buf), f)) {
        char* bar = strstr(buf, " | lr");
        if (strncmp(buf, "step", 4) == 0 && strstr(buf, "| loss") && bar) {
            *bar = 0;
            snprintf(lines[n++], 128, "%.120s", buf);
        }
    }
    fclose(f);
    return n;
}

static void test_resume(const char* dir) {
    write_tiny_data(dir);
    char cmd[4096], flags[2048], log[PATH_CAP];
    snprintf(flags, sizeof(flags),
             "%s/train_gla -i %s/train.bin -j %s/val.bin -z %s/tok.bin -d 32 -L 2 -p gla,attn --mlp-hidden 32 "
             "-b 2 -T 32 -n 8 -u 2 -v 0 -s 0 -G 4 -m 1 --chunk 8",
             bin, dir, dir, dir);
    snprintf(cmd, sizeof(cmd), "%s -o %s/full > %s/full.log 2>&1", flags, dir, dir);
    int rc1 = system(cmd);
    snprintf(cmd, sizeof(cmd), "%s -o %s/part -k 4 --stop-at 4 > %s/part1.log 2>&1", flags, dir, dir);
    int rc2 = system(cmd);
    snprintf(cmd, sizeof(cmd), "%s -o %s/part -k 4 -r 1 > %s/part2.log 2>&1", flags, dir, dir);
    int rc3 = system(cmd);
    check(rc1 == 0 && rc2 == 0 && rc3 == 0, "resume: the three training runs exit 0 (logs in %s)", dir);
    char full[16][128], part1[16][128], part2[16][128];
    snprintf(log, sizeof(log), "%s/full.log", dir);
    int nf = read_losses(log, full, 16);
    snprintf(log, sizeof(log), "%s/part1.log", dir);
    int n1 = read_losses(log, part1, 16);
    snprintf(log, sizeof(log), "%s/part2.log", dir);
    int n2 = read_losses(log, part2, 16);
    int same = nf == 8 && n1 == 4 && n2 == 4;
    for (int i = 0; same && i < 4; i++) same = strcmp(full[i], part1[i]) == 0 && strcmp(full[4 + i], part2[i]) == 0;
    check(same, "resume: losses of steps 5..8 after resuming at 4 equal the uninterrupted run (%d+%d of %d lines)", n1, n2, nf);
    // bit identity: the step-8 checkpoints (parameters, AdamW moments, data position) are equal byte for byte
    const char* kinds[2] = {"model", "state"};
    for (int i = 0; i < 2; i++) {
        char a[PATH_CAP], b[PATH_CAP], sub[PATH_CAP];
        snprintf(sub, sizeof(sub), "%s/full", dir);
        ckpt_path(a, sizeof(a), sub, kinds[i], 8);
        snprintf(sub, sizeof(sub), "%s/part", dir);
        ckpt_path(b, sizeof(b), sub, kinds[i], 8);
        snprintf(cmd, sizeof(cmd), "cmp -s %s %s", a, b);
        check(system(cmd) == 0, "resume: %s file of step 8 is bit-identical to the uninterrupted run's", kinds[i]);
    }
}

// ----------------------------------------------------------------------------

// ----------------------------------------------------------------------------
// 7. tokenizers: GPT-2's BPE against an independent encoder (dev/tokenizer_cases/*.ids, written by
// dev/gpt2_expected.js with npm's gpt-3-encoder), round trips of tricky text, a trained BPE, the
// tokenizer file's round trip and the rejection of corrupt files (run through ./data/tokenize).

// GPT-2's encoder.json + vocab.bpe live outside the repository ($GPT2_DIR, else the shared data
// beside it): where they are missing, the checks that need them are reported skipped. Tiny
// Shakespeare is committed ($TINYSHAKESPEARE overrides it).
static const char* gpt2_dir(void) { return getenv("GPT2_DIR") ? getenv("GPT2_DIR") : "../shared/data/gpt2"; }
static const char* shakespeare_path(void) {
    return getenv("TINYSHAKESPEARE") ? getenv("TINYSHAKESPEARE") : "data/tinyshakespeare.txt";
}
#define TOK_CASES "dev/tokenizer_cases"

// the whole file (NUL-terminated, malloc'd) and its size, or NULL when it cannot be read
static unsigned char* tok_slurp(const char* path, size_t* n) {
    if (access(path, R_OK) != 0) return NULL;
    return read_whole_file(path, n);
}

static void tok_spit(const char* path, const void* data, size_t n) {
    FILE* f = fopen_check(path, "wb");
    fwrite_check(data, 1, n, f, path);
    fclose_check(f, path);
}

// the decimal ids of a file (one per line, as data/tokenize writes them); -1 if it cannot be read
static long tok_read_ids(const char* path, int** ids) {
    size_t n;
    char* s = (char*)tok_slurp(path, &n);
    if (!s) return -1;
    long m = 0;
    *ids = (int*)malloc_check((n / 2 + 1) * sizeof(int)); // each id takes >= 2 characters
    for (char *p = s, *end;; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        (*ids)[m++] = (int)v;
    }
    free(s);
    return m;
}

// runs a shell command with its output in `log`; returns its exit status (-1: it did not exit)
static int tok_run(const char* log, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static int tok_run(const char* log, const char* fmt, ...) {
    char cmd[3 * PATH_CAP];
    va_list ap;
    va_start(ap, fmt);
    int len = snprintf(cmd, sizeof(cmd), "( ");
    len += vsnprintf(cmd + len, sizeof(cmd) - len, fmt, ap);
    va_end(ap);
    snprintf(cmd + len, sizeof(cmd) - len, " ) > '%s' 2>&1", log);
    int rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int tok_file_has(const char* path, const char* needle) {
    size_t n;
    char* s = (char*)tok_slurp(path, &n);
    int found = s && strstr(s, needle) != NULL;
    free(s);
    return found;
}

// the first position where a[0..na) and b[0..nb) differ, or -1 when equal
static long tok_first_diff(const int* a, long na, const int* b, long nb) {
    for (long i = 0; i < na && i < nb; i++)
        if (a[i] != b[i]) return i;
    return na == nb ? -1 : (na < nb ? na : nb);
}

// encode -> decode gives the text back, every id is in the vocabulary and the ids' bytes add up
static int tok_round_trip(const Tokenizer* t, const unsigned char* text, size_t n) {
    int* ids;
    size_t m = tokenizer_encode_bytes(t, text, n, &ids);
    int ok = m <= n;
    for (size_t i = 0; ok && i < m; i++) ok = ids[i] >= 0 && ids[i] < t->vocab_size && ids[i] != t->eot_id;
    unsigned char* back = NULL;
    if (ok) {
        size_t nb = tokenizer_decode(t, ids, m, &back);
        ok = nb == n && memcmp(back, text, n) == 0 && tokens_byte_count(t, ids, m) == (double)n;
    }
    free(ids);
    free(back);
    return ok;
}

#define TOK_TEXT(s) {(const unsigned char*)(s), sizeof(s) - 1}
static const struct { const unsigned char* s; size_t n; } TOK_TRICKY[] = {
    TOK_TEXT(""), TOK_TEXT(" "), TOK_TEXT("a"), TOK_TEXT("I'll've"),
    TOK_TEXT("I'll've you're 'tis DON'T it'S ''s rock 'n' roll"),
    TOK_TEXT("héllo wörld — naïve café, Ελληνικά, Русский"),
    TOK_TEXT("日本語のテキスト 한국어 ไทย العربية"),
    TOK_TEXT("👋🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ e\xcc\x81"),
    TOK_TEXT("12345 3.14159 1,000,000 ١٢٣ ½ Ⅻ"),
    TOK_TEXT("   \n\n\t\t  x  \r\n\r\n  \x0b\x0c  "),
    TOK_TEXT("nul\0byte\0"),
    TOK_TEXT("\xff\xfe lone \xc3( bad \xe2\x82 cut \xed\xa0\x80 surrogate \xf4\x90\x80\x80 big \xc0\xaf overlong \xe2\x82"),
    TOK_TEXT("<|endoftext|> is plain text"),
};
#define TOK_N_TRICKY (sizeof(TOK_TRICKY) / sizeof(TOK_TRICKY[0]))

// round trips of the tricky texts plus long runs (a 5000-letter word, 3000 spaces, 2000 emoji)
static void tok_check_round_trips(const Tokenizer* t, const char* name) {
    int ok = 1;
    for (size_t i = 0; i < TOK_N_TRICKY; i++) ok &= tok_round_trip(t, TOK_TRICKY[i].s, TOK_TRICKY[i].n);
    size_t n = 5000 + 3000 + 2000 * 4;
    unsigned char* big = (unsigned char*)malloc_check(n);
    memset(big, 'a', 5000);
    memset(big + 5000, ' ', 3000);
    for (int i = 0; i < 2000; i++) memcpy(big + 8000 + 4 * i, "\xf0\x9f\x99\x82", 4);
    ok &= tok_round_trip(t, big, n);
    free(big);
    check(ok, "tokenizer %-10s round trip of %zu tricky texts and long runs", name, TOK_N_TRICKY + 1);
}

// two tokenizers are the same: sizes, EOT, every token's bytes, every merge
static int tok_same(const Tokenizer* a, const Tokenizer* b) {
    if (a->kind != b->kind || a->vocab_size != b->vocab_size || a->eot_id != b->eot_id || a->n_merges != b->n_merges)
        return 0;
    for (int i = 0; i < a->vocab_size; i++)
        if (a->token_len[i] != b->token_len[i] || memcmp(a->token_bytes[i], b->token_bytes[i], a->token_len[i]) != 0)
            return 0;
    return memcmp(a->merges, b->merges, (size_t)a->n_merges * 3 * sizeof(int32_t)) == 0;
}

// Writes to `bad` a damaged copy of `good`: cut or zero-padded to `keep` bytes when keep >= 0, then
// `len` bytes overwritten at `offset`. Returns 0 when `good` cannot be read.
static int damage_copy(const char* good, const char* bad, long keep, long offset, const void* bytes, size_t len) {
    size_t n;
    unsigned char* data = tok_slurp(good, &n);
    if (!data) return 0;
    if (keep >= 0) {
        data = (unsigned char*)realloc(data, (size_t)keep + 1);
        if ((size_t)keep > n) memset(data + n, 0, (size_t)keep - n);
        n = (size_t)keep;
    }
    if (len > 0 && offset >= 0 && offset + len <= n) memcpy(data + offset, bytes, len);
    tok_spit(bad, data, n);
    free(data);
    return 1;
}

// Runs the shell command `cmd` with its output in `log` and checks that it exits non-zero and that
// its output says `message` (and `also`, unless NULL), and holds no sanitizer report (under make
// test-sanitize a leak or an error would otherwise hide behind the expected non-zero exit); prints
// the log when it does not.
static void check_fails(const char* what, const char* cmd, const char* log, const char* message, const char* also) {
    int rc = tok_run(log, "%s", cmd);
    int said = tok_file_has(log, message) && (!also || tok_file_has(log, also)) && !tok_file_has(log, "Sanitizer");
    check(rc > 0 && said, "%s: exit %d, error says \"%s\"%s%s%s", what, rc, message, also ? " and \"" : "",
          also ? also : "", also ? "\"" : "");
    if (!said || rc <= 0) {
        size_t ln;
        char* s = (char*)tok_slurp(log, &ln);
        printf("      log: %s", s ? s : "(none)\n");
        free(s);
    }
}

// Damages a copy of `good` (damage_copy), runs ./data/tokenize on it and checks that it exits
// non-zero with `message` in its error.
static void tok_check_rejects(const char* dir, const char* good, const char* what, long keep, long offset,
                              const void* bytes, size_t len, const char* message) {
    char bad[PATH_CAP], log[PATH_CAP], cmd[3 * PATH_CAP], label[256];
    snprintf(bad, sizeof(bad), "%s/corrupt.bin", dir);
    snprintf(log, sizeof(log), "%s/corrupt.log", dir);
    snprintf(label, sizeof(label), "corrupt tokenizer (%s)", what);
    if (!damage_copy(good, bad, keep, offset, bytes, len)) { check(0, "%s: cannot read '%s'", label, good); return; }
    snprintf(cmd, sizeof(cmd), "%s/data/tokenize '%s' encode < /dev/null", bin, bad);
    check_fails(label, cmd, log, message, NULL);
}

// The GPT-2 tokenizer file built from gpt2_dir(): ids equal to the reference, decoding,
// file round trip, the command-line tool and llm.c's Tiny Shakespeare split.
static void tok_test_gpt2(const char* dir) {
    char path[PATH_CAP], copy[PATH_CAP], log[PATH_CAP];
    snprintf(path, sizeof(path), "%s/gpt2.bin", dir);
    snprintf(log, sizeof(log), "%s/gpt2.log", dir);
    struct stat st;
    char encoder[PATH_CAP];
    snprintf(encoder, sizeof(encoder), "%s/encoder.json", gpt2_dir());
    if (stat(encoder, &st) != 0) {
        skip("GPT-2 tokenizer (ids against the reference, file round trip, data/tokenize, llm.c's split): no '%s' "
             "(set GPT2_DIR to a folder with encoder.json and vocab.bpe)", encoder);
        return;
    }
    int rc = tok_run(log, "%s/data/tokenizer_gpt2 '%s' '%s'", bin, gpt2_dir(), path);
    check(rc == 0, "GPT-2 tokenizer: ./data/tokenizer_gpt2 builds it from %s (exit %d)", gpt2_dir(), rc);
    if (rc != 0) return;
    Tokenizer t;
    tokenizer_load(&t, path);
    check(t.kind == TOKENIZER_BPE && t.vocab_size == 50257 && t.eot_id == 50256 && t.n_merges == 50000 &&
          t.token_len[50256] == 13 && memcmp(t.token_bytes[50256], "<|endoftext|>", 13) == 0,
          "GPT-2 tokenizer: 50257 tokens, 50000 merges, EOT 50256 = <|endoftext|>");
    int* ids;
    int m = tokenizer_encode(&t, "Hello world", &ids);
    check(m == 2 && ids[0] == 15496 && ids[1] == 995, "GPT-2: \"Hello world\" -> 15496 995");
    free(ids);
    check(tokenizer_encode(&t, "", &ids) == 0, "GPT-2: the empty string has no tokens");
    free(ids);

    // the fixed corpus against the reference encoder, id for id
    const char* cases[] = {"tinyshakespeare_head", "tricky"};
    for (int c = 0; c < 2; c++) {
        char txt_path[PATH_CAP], ids_path[PATH_CAP];
        snprintf(txt_path, sizeof(txt_path), TOK_CASES "/%s.txt", cases[c]);
        snprintf(ids_path, sizeof(ids_path), TOK_CASES "/%s.ids", cases[c]);
        size_t n;
        unsigned char* text = tok_slurp(txt_path, &n);
        int* want;
        long n_want = tok_read_ids(ids_path, &want);
        if (!text || n_want < 0) { check(0, "GPT-2: cannot read %s / %s", txt_path, ids_path); continue; }
        long got = (long)tokenizer_encode_bytes(&t, text, n, &ids);
        long at = tok_first_diff(ids, got, want, n_want);
        check(at < 0, "GPT-2 == reference encoder on %-24s %ld bytes, %ld tokens%s", txt_path, (long)n, got,
              at < 0 ? "" : " (DIFFER)");
        if (at >= 0)
            printf("      first difference at token %ld: %d, reference %d\n", at, at < got ? ids[at] : -1,
                   at < n_want ? want[at] : -1);
        unsigned char* back;
        size_t nb = tokenizer_decode(&t, ids, got, &back);
        check(nb == n && memcmp(back, text, n) == 0 && tokens_byte_count(&t, ids, got) == (double)n,
              "GPT-2: decode(encode(%s)) is the text, tokens_byte_count = %zu", cases[c], n);
        free(back);
        free(ids);
        free(want);
        free(text);
    }
    tok_check_round_trips(&t, "GPT-2");
    int eot_and_text[] = {50256, 15496, 50256};
    check(tokens_byte_count(&t, eot_and_text, 3) == 5.0, "GPT-2: tokens_byte_count counts EOT as 0 bytes");

    // the file round trip: write what was loaded, compare the bytes and the tokenizers
    snprintf(copy, sizeof(copy), "%s/gpt2_copy.bin", dir);
    tokenizer_write(&t, copy);
    size_t n1, n2;
    unsigned char *f1 = tok_slurp(path, &n1), *f2 = tok_slurp(copy, &n2);
    Tokenizer t2;
    tokenizer_load(&t2, copy);
    check(f1 && f2 && n1 == n2 && memcmp(f1, f2, n1) == 0 && tok_same(&t, &t2),
          "GPT-2: tokenizer file round trip (write, read back: identical, %zu bytes)", n1);
    free(f1);
    free(f2);
    tokenizer_free(&t2);

    // the command-line tool: encode the tricky text, compare with the reference, decode back
    char ids_out[PATH_CAP], txt_out[PATH_CAP];
    snprintf(ids_out, sizeof(ids_out), "%s/tricky.ids", dir);
    snprintf(txt_out, sizeof(txt_out), "%s/tricky.txt", dir);
    int rc1 = tok_run(log, "%s/data/tokenize '%s' encode < " TOK_CASES "/tricky.txt > '%s'", bin, path, ids_out);
    int rc2 = tok_run(log, "%s/data/tokenize '%s' decode < '%s' > '%s'", bin, path, ids_out, txt_out);
    int *a, *b;
    long na = tok_read_ids(ids_out, &a), nb = tok_read_ids(TOK_CASES "/tricky.ids", &b);
    size_t nt, nt2;
    unsigned char *t_in = tok_slurp(TOK_CASES "/tricky.txt", &nt), *t_out = tok_slurp(txt_out, &nt2);
    check(rc1 == 0 && rc2 == 0 && na > 0 && tok_first_diff(a, na, b, nb) < 0 && t_in && t_out && nt == nt2 &&
              memcmp(t_in, t_out, nt) == 0,
          "data/tokenize: encode == reference ids, decode gives the text back byte for byte");
    if (na > 0) free(a);
    if (nb > 0) free(b);
    free(t_in);
    free(t_out);

    // llm.c's split of Tiny Shakespeare: data/prepare -t gpt2 in a scratch copy of the layout
    char shakespeare[PATH_CAP];
    if (!realpath(shakespeare_path(), shakespeare)) {
        skip("GPT-2 Tiny Shakespeare (llm.c's split): no '%s' (set TINYSHAKESPEARE to its path)", shakespeare_path());
    } else {
        char cwd[PATH_CAP];
        if (!getcwd(cwd, sizeof(cwd))) fail("getcwd: %s", strerror(errno));
        rc = tok_run(log, "cd '%s' && mkdir -p data && cp gpt2.bin data/tokenizer_gpt2.bin && '%s/data/prepare' -t gpt2 '%s'",
                     dir, cwd, shakespeare);
        uint16_t *val = NULL, *train = NULL;
        size_t n_val = 0, n_train = 0;
        if (rc == 0) {
            snprintf(path, sizeof(path), "%s/data/tinyshakespeare/tiny_shakespeare_gpt2_val.bin", dir);
            n_val = shard_load(path, &val, t.vocab_size, tokenizer_fingerprint(&t));
            snprintf(path, sizeof(path), "%s/data/tinyshakespeare/tiny_shakespeare_gpt2_train.bin", dir);
            n_train = shard_load(path, &train, t.vocab_size, tokenizer_fingerprint(&t));
        }
        check(rc == 0 && n_val == 32768 && n_train == 305260 && val[0] == 50256,
              "data/prepare -t gpt2: %zu val + %zu train tokens (llm.c: 32768 + 305260), EOT first (exit %d)", n_val,
              n_train, rc);
        if (rc == 0) { // without the EOTs, the shards decode to the text
            int* all = (int*)malloc_check((n_val + n_train) * sizeof(int));
            size_t k = 0;
            for (size_t i = 0; i < n_val + n_train; i++) {
                int id = i < n_val ? val[i] : train[i - n_val];
                if (id != t.eot_id) all[k++] = id;
            }
            size_t n;
            unsigned char *text = tok_slurp(shakespeare, &n), *back;
            size_t nb2 = tokenizer_decode(&t, all, k, &back);
            check(text && nb2 == n && memcmp(back, text, n) == 0, "data/prepare -t gpt2: the shards decode to Tiny Shakespeare");
            free(all);
            free(text);
            free(back);
        }
        free(val);
        free(train);
    }
    tokenizer_free(&t);
}

static void test_tokenizers(void) {
    printf("== 7. tokenizers\n");
    int failed_before = failed;
    char dir[] = "/tmp/test_tok_XXXXXX";
    if (!mkdtemp(dir)) fail("cannot create a temporary directory");
    char path[PATH_CAP], path2[PATH_CAP], log[PATH_CAP];
    snprintf(log, sizeof(log), "%s/run.log", dir);

    // the byte tokenizer: its file is exactly what the first version wrote
    snprintf(path, sizeof(path), "%s/bytes.bin", dir);
    tokenizer_write_bytes(path);
    unsigned char want[1024 + 512] = {0};
    int32_t h[5] = {TOKENIZER_MAGIC, TOKENIZER_VERSION, TOKENIZER_BYTES, 256, -1};
    memcpy(want, h, sizeof(h));
    for (int b = 0; b < 256; b++) { want[1024 + 2 * b] = 1; want[1024 + 2 * b + 1] = (unsigned char)b; }
    size_t n;
    unsigned char* got = tok_slurp(path, &n);
    check(got && n == sizeof(want) && memcmp(got, want, n) == 0, "byte tokenizer file unchanged (1536 bytes)");
    free(got);
    Tokenizer bytes;
    tokenizer_load(&bytes, path);
    tok_check_round_trips(&bytes, "bytes");
    tokenizer_free(&bytes);

    tok_test_gpt2(dir);

    // a BPE trained on the first 20 KB of Tiny Shakespeare (train_bpe checks itself that the file
    // re-encodes its training text into the trainer's own token count)
    snprintf(path, sizeof(path), "%s/bpe300.bin", dir);
    snprintf(path2, sizeof(path2), "%s/bpe300_again.bin", dir);
    int rc1 = tok_run(log, "%s/data/train_bpe -i " TOK_CASES "/tinyshakespeare_head.txt -v 300 -o '%s'", bin, path);
    int rc2 = tok_run(log, "%s/data/train_bpe -i " TOK_CASES "/tinyshakespeare_head.txt -v 300 -o '%s'", bin, path2);
    size_t n1 = 0, n2 = 0;
    unsigned char *f1 = tok_slurp(path, &n1), *f2 = tok_slurp(path2, &n2);
    check(rc1 == 0 && rc2 == 0 && f1 && f2 && n1 == n2 && memcmp(f1, f2, n1) == 0,
          "data/train_bpe: trains a 300-token BPE, deterministically (exit %d, %d)", rc1, rc2);
    free(f1);
    free(f2);
    if (rc1 == 0) {
        Tokenizer bpe;
        tokenizer_load(&bpe, path);
        check(bpe.kind == TOKENIZER_BPE && bpe.vocab_size == 300 && bpe.n_merges == 43 && bpe.eot_id == 299 &&
              bpe.token_len[299] == 13 && memcmp(bpe.token_bytes[299], "<|endoftext|>", 13) == 0,
              "trained BPE: 256 bytes + 43 merges + EOT 299");
        tok_check_round_trips(&bpe, "BPE-300");
        unsigned char* text = tok_slurp(TOK_CASES "/tinyshakespeare_head.txt", &n);
        int* ids;
        size_t m = text ? tokenizer_encode_bytes(&bpe, text, n, &ids) : 0;
        check(text && m < n * 3 / 4, "trained BPE compresses its training text: %zu bytes -> %zu tokens", n, m);
        if (text) free(ids);
        free(text);
        // through the command-line tool, with bytes that are not UTF-8
        snprintf(path2, sizeof(path2), "%s/binary.txt", dir);
        tok_spit(path2, TOK_TRICKY[TOK_N_TRICKY - 2].s, TOK_TRICKY[TOK_N_TRICKY - 2].n);
        int rc = tok_run(log, "%s/data/tokenize '%s' encode < '%s' | %s/data/tokenize '%s' decode | cmp - '%s'", bin,
                         path, path2, bin, path, path2);
        check(rc == 0, "data/tokenize: round trip of invalid UTF-8 through the trained BPE (exit %d)", rc);
        tokenizer_free(&bpe);
    }

    // what a writer refuses: tokenizer_check, the validation that tokenizer_load and _write share
    Tokenizer t;
    tokenizer_init_bytes(&t);
    check(tokenizer_check(&t) == NULL, "tokenizer_check accepts the byte tokenizer");
    unsigned char long_token[300];
    memset(long_token, 'x', sizeof(long_token));
    tokenizer_set_token(&t, 7, long_token, 300);
    const char* msg = tokenizer_check(&t);
    check(msg && strstr(msg, "token 7 is 300 bytes long"), "tokenizer_check refuses a 300-byte token: %s", msg ? msg : "(accepted)");
    tokenizer_free(&t);

    // corrupt files: each must stop ./data/tokenize with a non-zero exit and a clear message
    snprintf(path, sizeof(path), "%s/bytes.bin", dir);
    snprintf(path2, sizeof(path2), "%s/bpe300.bin", dir);
    int32_t v;
    size_t size = 0;
    unsigned char* bpe_file = tok_slurp(path2, &size);
    long merges_at = (long)size - 43 * 12; // the first merge of the trained BPE
    free(bpe_file);
    tok_check_rejects(dir, path, "truncated header", 500, 0, NULL, 0, "too short to be a tokenizer file");
    tok_check_rejects(dir, path, "truncated tokens", 1024 + 300, 0, NULL, 0, "truncated: 256 tokens and 0 merges need at least 1536 bytes");
    tok_check_rejects(dir, path2, "truncated merges", (long)size - 6, 0, NULL, 0, "truncated");
    v = 12345;
    tok_check_rejects(dir, path, "wrong magic", -1, 0, &v, 4, "not a tokenizer file: magic 12345, expected 20261103");
    v = 2;
    tok_check_rejects(dir, path, "wrong version", -1, 4, &v, 4, "tokenizer file version 2, this program reads version 1");
    v = 7;
    tok_check_rejects(dir, path, "unknown kind", -1, 8, &v, 4, "unknown tokenizer kind 7");
    v = 400;
    tok_check_rejects(dir, path2, "merge id out of range", -1, merges_at, &v, 4, "has a token id outside [0, 300)");
    v = 298; // the last merge's token, used by the first merge
    tok_check_rejects(dir, path2, "merge order", -1, merges_at, &v, 4, "uses a token that no earlier merge makes");
    v = 0; // the byte 0x00 as the right token of the first merge
    tok_check_rejects(dir, path2, "merge bytes", -1, merges_at + 4, &v, 4, "is not the bytes of token");
    unsigned char len = 200; // the last byte token claims 200 bytes
    tok_check_rejects(dir, path, "token length overflow", -1, 1024 + 2 * 255, &len, 1,
                      "token 255 says it has 200 bytes, but the file has room for 1");
    len = 0;
    tok_check_rejects(dir, path, "token length 0", -1, 1024 + 2 * 9, &len, 1, "token 9 has length 0");
    tok_check_rejects(dir, path, "trailing bytes", 1024 + 512 + 3, 0, NULL, 0, "3 bytes follow the 256 tokens");
    if (failed == failed_before) tok_run("/dev/null", "rm -rf '%s'", dir); // kept for a look when a check failed
    else printf("      tokenizer test files kept in %s\n", dir);
}

// ----------------------------------------------------------------------------
// 8. bad input: every reader and the flag parser, through the programs a user runs. Each case must
// exit non-zero with a message naming what was expected and what was found.

// the command of the tiny run of sections 8 and 9 (inputs from write_tiny_data in dir), `steps` steps
static void tiny_run_flags(char* out, size_t cap, const char* dir, int steps) {
    snprintf(out, cap,
             "%s/train_gla -i %s/train.bin -j %s/val.bin -z %s/tok.bin -d 32 -L 2 -p gla,attn --mlp-hidden 32 -b 2 "
             "-T 32 -n %d -u 1 -v 0 -s 0 -G 4 -m 1 --chunk 8",
             bin, dir, dir, dir, steps);
}

static long file_bytes(const char* path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

// Copies the step-2 checkpoint folder dir/good to dir/ck with its `kind` file ("model" or "state")
// damaged (damage_copy of the one in `source`, a checkpoint folder), then checks that resuming from
// dir/ck fails saying `message`.
static void check_bad_checkpoint(const char* dir, const char* what, const char* kind, const char* source, long keep,
                                 long offset, const void* bytes, size_t len, const char* message) {
    char cmd[3 * PATH_CAP], flags[2048], good[PATH_CAP], bad[PATH_CAP], ck[PATH_CAP], log[PATH_CAP], label[256];
    snprintf(ck, sizeof(ck), "%s/ck", dir);
    snprintf(log, sizeof(log), "%s/ck.log", dir);
    tok_run("/dev/null", "rm -rf '%s' && cp -r '%s/good' '%s'", ck, dir, ck);
    ckpt_path(good, sizeof(good), source, kind, 2);
    ckpt_path(bad, sizeof(bad), ck, kind, 2);
    snprintf(label, sizeof(label), "bad %s file (%s)", kind, what);
    if (!damage_copy(good, bad, keep, offset, bytes, len)) { check(0, "%s: cannot read '%s'", label, good); return; }
    tiny_run_flags(flags, sizeof(flags), dir, 4);
    snprintf(cmd, sizeof(cmd), "%s -o '%s' -r 1", flags, ck);
    check_fails(label, cmd, log, message, NULL);
}

// A damaged copy of the training shard dir/train.bin as the training data must fail saying `message`.
static void check_bad_shard(const char* dir, const char* what, long keep, long offset, const void* bytes, size_t len,
                            const char* message) {
    char cmd[3 * PATH_CAP], flags[2048], good[PATH_CAP], bad[PATH_CAP], log[PATH_CAP], label[256];
    snprintf(good, sizeof(good), "%s/train.bin", dir);
    snprintf(bad, sizeof(bad), "%s/bad_shard.bin", dir);
    snprintf(log, sizeof(log), "%s/shard.log", dir);
    snprintf(label, sizeof(label), "bad shard (%s)", what);
    if (!damage_copy(good, bad, keep, offset, bytes, len)) { check(0, "%s: cannot read '%s'", label, good); return; }
    tiny_run_flags(flags, sizeof(flags), dir, 2);
    snprintf(cmd, sizeof(cmd), "%s -o '%s/shard_out' -i '%s'", flags, dir, bad);
    check_fails(label, cmd, log, message, NULL);
}

// Flags appended to the tiny run (later flags win) must be rejected with `message` and the usage line.
static void check_bad_flags(const char* dir, const char* extra, const char* message) {
    char cmd[3 * PATH_CAP], flags[2048], log[PATH_CAP], label[256];
    snprintf(log, sizeof(log), "%s/flags.log", dir);
    snprintf(label, sizeof(label), "bad flags '%s'", extra);
    tiny_run_flags(flags, sizeof(flags), dir, 2);
    snprintf(cmd, sizeof(cmd), "%s -o '%s/flags_out' %s", flags, dir, extra);
    check_fails(label, cmd, log, message, "usage: ");
}

static void test_bad_input(const char* dir) {
    char cmd[3 * PATH_CAP], flags[2048], path[PATH_CAP], log[PATH_CAP], msg[512], other[PATH_CAP];
    write_tiny_data(dir);
    snprintf(log, sizeof(log), "%s/good.log", dir);
    tiny_run_flags(flags, sizeof(flags), dir, 2);
    // good/: the checkpoint every corruption starts from; gla_gla/ and attn_gla/: another model with
    // another parameter count, and one with the same count (the same layers in the other order)
    int rc1 = tok_run(log, "%s -o '%s/good'", flags, dir);
    int rc2 = tok_run(log, "%s -o '%s/gla_gla' -p gla,gla", flags, dir);
    int rc3 = tok_run(log, "%s -o '%s/attn_gla' -p attn,gla", flags, dir);
    check(rc1 == 0 && rc2 == 0 && rc3 == 0, "bad input: three good 2-step runs exit 0 (%d, %d, %d)", rc1, rc2, rc3);
    snprintf(other, sizeof(other), "%s/good", dir);
    ckpt_path(path, sizeof(path), other, "model", 2);
    long model_size = file_bytes(path), n_params = (model_size - 1024) / 4;
    ckpt_path(path, sizeof(path), other, "state", 2);
    long state_size = file_bytes(path);
    check(model_size > 1024 && state_size == 1024 + 8 * n_params, "bad input: step-2 checkpoint of %ld parameters", n_params);

    // the model file; its header: [0] magic [1] version [3] d_model [12] attn heads [17] parameter count [64] layer 0's mixer
    int32_t v;
    snprintf(msg, sizeof(msg), "file is %ld bytes, expected %ld", model_size - 4, model_size);
    check_bad_checkpoint(dir, "truncated", "model", other, model_size - 4, 0, NULL, 0, msg);
    check_bad_checkpoint(dir, "shorter than a header", "model", other, 100, 0, NULL, 0,
                         "too short to be a model checkpoint (100 bytes");
    v = 12345;
    check_bad_checkpoint(dir, "wrong magic", "model", other, -1, 0, &v, 4, "not a model checkpoint: magic 12345");
    v = 2;
    check_bad_checkpoint(dir, "wrong version", "model", other, -1, 4, &v, 4,
                         "model checkpoint version 2, this program reads version 1");
    v = (int32_t)n_params + 1;
    snprintf(msg, sizeof(msg), "header says %ld parameters, its config implies %ld", n_params + 1, n_params);
    check_bad_checkpoint(dir, "parameter count", "model", other, -1, 17 * 4, &v, 4, msg);
    v = 48;
    check_bad_checkpoint(dir, "d_model 48 in the header", "model", other, -1, 3 * 4, &v, 4, "its config implies");
    v = 3;
    check_bad_checkpoint(dir, "3 attention heads of d = 32", "model", other, -1, 12 * 4, &v, 4,
                         "invalid config in the header: attn_heads 3 does not divide d_model 32");
    v = 9;
    check_bad_checkpoint(dir, "mixer id 9", "model", other, -1, 64 * 4, &v, 4, "layer 0 has unknown or unsupported mixer id 9");
    uint32_t nan_bits = 0x7fc00000u;
    check_bad_checkpoint(dir, "NaN bytes in parameter 5", "model", other, -1, 1024 + 5 * 4, &nan_bits, 4,
                         "parameter 5 is not finite");

    // the optimizer-state file
    snprintf(msg, sizeof(msg), "is %ld bytes, expected %ld", state_size - 8, state_size);
    check_bad_checkpoint(dir, "truncated", "state", other, state_size - 8, 0, NULL, 0, msg);
    v = 12345;
    check_bad_checkpoint(dir, "wrong magic", "state", other, -1, 0, &v, 4, "not an optimizer-state file: magic 12345");
    check_bad_checkpoint(dir, "NaN moment", "state", other, -1, 1024 + 3 * 4, &nan_bits, 4, "optimizer moment 3 is invalid");
    snprintf(other, sizeof(other), "%s/gla_gla", dir);
    snprintf(msg, sizeof(msg), "parameters, the model has %ld", n_params);
    check_bad_checkpoint(dir, "from a model of another size", "state", other, -1, 0, NULL, 0, msg);
    snprintf(other, sizeof(other), "%s/attn_gla", dir);
    check_bad_checkpoint(dir, "from attn,gla: same size, other config", "state", other, -1, 0, NULL, 0,
                         "was written for another model config");
    snprintf(other, sizeof(other), "%s/good", dir);
    snprintf(cmd, sizeof(cmd), "%s -o '%s/good' -r 1 -b 3", flags, dir);
    check_fails("resume with another batch size", cmd, log, "was trained with -b 2 -T 32; resume with the same (got -b 3 -T 32)", NULL);
    snprintf(cmd, sizeof(cmd), "%s -o '%s/empty' -r 1", flags, dir);
    check_fails("resume without a checkpoint", cmd, log, "no complete checkpoint (DONE_* marker)", NULL);

    // token shards: 20000 tokens of the byte tokenizer
    check_bad_shard(dir, "truncated", 1024 + 40000 - 2, 0, NULL, 0,
                    "header says 20000 tokens (41024 bytes), the file has 41022 bytes");
    check_bad_shard(dir, "shorter than a header", 10, 0, NULL, 0, "too short to be a token shard (10 bytes");
    v = 12345;
    check_bad_shard(dir, "wrong magic", -1, 0, &v, 4, "not a token shard: magic 12345");
    v = 2;
    check_bad_shard(dir, "wrong version", -1, 4, &v, 4, "token shard version 2, this program reads version 1");
    uint16_t big = 300;
    check_bad_shard(dir, "token out of range", -1, 1024 + 2 * 10, &big, 2,
                    "token 300 at position 10 is outside the vocabulary (size 256)");
    v = 20;
    check_bad_shard(dir, "fewer tokens than a batch", 1024 + 40, 8, &v, 4, "has 20 tokens, fewer than one batch needs (B*T+1 = 65)");

    // the tokenizer and the reference dumps, through the programs that read them
    snprintf(path, sizeof(path), "%s/tok.bin", dir);
    snprintf(other, sizeof(other), "%s/bad_tok.bin", dir);
    v = 12345;
    damage_copy(path, other, -1, 0, &v, 4);
    snprintf(cmd, sizeof(cmd), "%s -o '%s/tok_out' -z '%s'", flags, dir, other);
    check_fails("bad tokenizer given to train_gla", cmd, log, "not a tokenizer file: magic 12345", NULL);
    snprintf(other, sizeof(other), "%s/dumps", dir);
    mkdir_p(other);
    snprintf(path, sizeof(path), "%s/bad.bin", other);
    damage_copy("dev/dumps/gla_pure.bin", path, -1, 0, &v, 4);
    snprintf(cmd, sizeof(cmd), "%s/test_gla '%s'", bin, other);
    check_fails("reference dump (wrong magic) given to test_gla", cmd, log, "not a reference dump: magic 12345", NULL);
    int32_t record[2] = {1, 1}; // the first record becomes float32 of 1 dimension ...
    damage_copy("dev/dumps/gla_pure.bin", path, -1, 1024 + 96, record, 8);
    v = 2000000000; // ... of 2e9 elements
    damage_copy(path, path, -1, 1024 + 96 + 8, &v, 4);
    check_fails("reference dump (record larger than the file)", cmd, log, "needs more than the", NULL);
    damage_copy("dev/dumps/gla_pure.bin", path, 5000, 0, NULL, 0);
    check_fails("reference dump (truncated)", cmd, log, "truncated", NULL);

    // flags
    check_bad_flags(dir, "--bogus 1", "unknown flag '--bogus'");
    check_bad_flags(dir, "--steps", "flag '--steps' needs a value");
    check_bad_flags(dir, "-b x", "flag '-b' wants a whole number");
    check_bad_flags(dir, "--lr 20", "flag '--lr' wants a value in [0, 10], got 20");
    check_bad_flags(dir, "-T 1", "flag '-T' wants a value in [2, 65536], got 1");
    check_bad_flags(dir, "--attn-heads 3", "attn_heads 3 does not divide d_model 32");
    check_bad_flags(dir, "--attn-heads 4 --kv-heads 3", "attn_kv_heads 3 does not divide attn_heads 4");
    check_bad_flags(dir, "-p gla,mamba", "unknown mixer 'mamba'");
    check_bad_flags(dir, "-p gla,gla,attn", "the pattern lists 3 layers but n_layer is 2");
    check_bad_flags(dir, "-p attn:3", "'attn' is not a linear mixer");
    check_bad_flags(dir, "-u 5", "--warmup 5 exceeds --steps 2");
    // a model far too large for any machine is refused before it is allocated, with the estimate
    snprintf(cmd, sizeof(cmd), "%s -o '%s/big' -d 1024 -p attn -b 4096 -T 65536", flags, dir);
    check_fails("a run too large for memory", cmd, log, "MiB but the machine has", NULL);
}

// ----------------------------------------------------------------------------
// 9. kill -9 at any moment, during saves included: the latest checkpoint with a DONE marker loads,
// and resuming from it ends with checkpoint files byte-identical to an uninterrupted run's.

// Starts the shell command `cmd` with its output in `log`; returns the pid of the command itself
// (the shell execs it), so that a signal reaches the program and not the shell.
static pid_t spawn_logged(const char* cmd, const char* log) {
    char full[3 * PATH_CAP];
    snprintf(full, sizeof(full), "exec %s > '%s' 2>&1", cmd, log);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", full, (char*)NULL);
        _exit(127);
    }
    return pid;
}

// Waits (up to 20 s) until `path` exists or process pid has ended; returns whether it exists.
static int wait_for_file(const char* path, pid_t pid) {
    for (int i = 0; i < 20000; i++) {
        if (access(path, F_OK) == 0) return 1;
        if (waitpid(pid, NULL, WNOHANG) == pid) return access(path, F_OK) == 0;
        usleep(1000);
    }
    return 0;
}

// NULL when the checkpoint of `step` in dir has its marker and its model file parses with finite
// parameters (the readers' cores, so nothing exits), else what is wrong.
static const char* checkpoint_loads(const char* dir, int step) {
    char path[PATH_CAP];
    ckpt_path(path, sizeof(path), dir, "DONE", step);
    if (access(path, F_OK) != 0) return "no DONE marker";
    ckpt_path(path, sizeof(path), dir, "model", step);
    size_t size;
    unsigned char* data = access(path, R_OK) == 0 ? read_whole_file(path, &size) : NULL;
    if (!data) return "no model file";
    Config c;
    const char* bad = checkpoint_parse_header(data, (int64_t)size, &c);
    if (!bad) bad = params_check((const float*)(data + HEADER_BYTES), (size - HEADER_BYTES) / 4);
    free(data);
    return bad;
}

// After a kill in dir: the latest complete checkpoint loads, and finishing the run from it (or from
// scratch when there is none) gives the final checkpoint files of the uninterrupted run in `full`.
// Returns whether both hold; `what` names the kill in the messages.
static int resume_matches(const char* dir, const char* full, const char* flags, int final_step, const char* what) {
    int latest = latest_checkpoint(dir);
    const char* bad = latest >= 0 ? checkpoint_loads(dir, latest) : NULL;
    if (bad) {
        check(0, "%s: the latest checkpoint (step %d) does not load: %s", what, latest, bad);
        return 0;
    }
    char cmd[3 * PATH_CAP], log[PATH_CAP];
    snprintf(log, sizeof(log), "%s/resume.log", dir);
    snprintf(cmd, sizeof(cmd), "%s -o '%s'%s", flags, dir, latest >= 0 ? " -r 1" : "");
    int rc = tok_run(log, "%s", cmd);
    char said[64];
    snprintf(said, sizeof(said), "resumed from step %d", latest);
    int same = rc == 0 && (latest < 0 || tok_file_has(log, said));
    const char* kinds[2] = {"model", "state"};
    for (int i = 0; i < 2 && same; i++) {
        char a[PATH_CAP], b[PATH_CAP];
        ckpt_path(a, sizeof(a), full, kinds[i], final_step);
        ckpt_path(b, sizeof(b), dir, kinds[i], final_step);
        same = tok_run("/dev/null", "cmp -s '%s' '%s'", a, b) == 0;
    }
    if (!same) check(0, "%s: resuming from step %d (exit %d) does not give the uninterrupted run's step-%d files (%s)",
                     what, latest, rc, final_step, dir);
    return same;
}

// Kills the run deterministically inside the save of step 6: the .tmp file the save writes first
// (`kind` = model, state or DONE) is a named pipe, so the program blocks in it. For model and state
// it is killed after we have read 4 KiB of the file (in the middle of writing it), for DONE while it
// opens the marker (both other files are complete). The pipe is then replaced by the 4 KiB the
// program wrote, as a regular file: what a kill leaves on disk. `before` names the file whose
// arrival shows the program has gone past the previous file (DONE of step 5, model or state of 6).
static void kill_in_save(const char* dir, const char* full, const char* flags, const char* kind, const char* before) {
    char out[PATH_CAP], fifo[PATH_CAP], wait_path[PATH_CAP], log[PATH_CAP], cmd[3 * PATH_CAP], what[128];
    snprintf(out, sizeof(out), "%s/kill_%s", dir, kind);
    mkdir_p(out);
    ckpt_path(fifo, sizeof(fifo), out, kind, 6);
    strcat(fifo, ".tmp");
    ckpt_path(wait_path, sizeof(wait_path), out, before, strcmp(before, "DONE") ? 6 : 5);
    snprintf(what, sizeof(what), "kill -9 while writing %s_00000006%s", kind, strcmp(kind, "DONE") ? ".bin" : "");
    if (mkfifo(fifo, 0644) != 0) { check(0, "%s: cannot create the pipe '%s'", what, fifo); return; }
    snprintf(log, sizeof(log), "%s/run.log", out);
    snprintf(cmd, sizeof(cmd), "%s -o '%s'", flags, out);
    pid_t pid = spawn_logged(cmd, log);
    int reached = wait_for_file(wait_path, pid);
    unsigned char partial[4096];
    size_t got = 0;
    if (reached && strcmp(kind, "DONE") != 0) { // read 4 KiB of what the save writes
        int fd = open(fifo, O_RDONLY | O_NONBLOCK);
        for (int i = 0; fd >= 0 && got < sizeof(partial) && i < 20000; i++) {
            ssize_t r = read(fd, partial + got, sizeof(partial) - got);
            if (r > 0) got += (size_t)r;
            else usleep(1000);
        }
        reached = got == sizeof(partial);
        kill(pid, SIGKILL); // before closing the pipe, which would end the program with SIGPIPE
        if (fd >= 0) close(fd);
    } else if (reached) {
        usleep(20000); // it cannot get past opening the marker's pipe
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    int killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    unlink(fifo);
    tok_spit(fifo, partial, got); // for DONE an empty DONE_00000006.tmp, which is not a marker
    int latest = latest_checkpoint(out);
    check(reached && killed && latest == 5, "%s: killed in the save (%zu bytes written), latest complete checkpoint: step %d",
          what, got, latest);
    if (reached && killed && resume_matches(out, full, flags, 12, what))
        check(1, "%s: resumed from step 5, the step-12 files equal the uninterrupted run's", what);
}

static void test_kill_during_save(const char* dir) {
    char flags[2048], log[PATH_CAP], full[PATH_CAP], cmd[3 * PATH_CAP];
    // one thread: spinning OpenMP workers on a busy machine would stretch the run, and the kill times
    // below, by orders of magnitude (the results are the same for any thread count)
    setenv("OMP_NUM_THREADS", "1", 1);
    write_tiny_data(dir);
    tiny_run_flags(flags, sizeof(flags), dir, 12);
    strcat(flags, " -k 1 --keep 2"); // a checkpoint every step, the last two kept
    snprintf(full, sizeof(full), "%s/full", dir);
    snprintf(log, sizeof(log), "%s/full.log", dir);
    snprintf(cmd, sizeof(cmd), "%s -o '%s'", flags, full);
    double t0 = now_seconds();
    int rc = tok_run(log, "%s", cmd);
    double duration = now_seconds() - t0;
    check(rc == 0 && latest_checkpoint(full) == 12, "kill: the uninterrupted 12-step run saves every step (%.0f ms)",
          duration * 1e3);
    kill_in_save(dir, full, flags, "model", "DONE");
    kill_in_save(dir, full, flags, "state", "model");
    kill_in_save(dir, full, flags, "DONE", "state");
    // and at moments spread over the whole run: before the first save, inside saves, between them
    int kills = 10, in_save = 0, finished = 0, ok = 1;
    for (int i = 0; i < kills; i++) {
        char out[PATH_CAP], what[64];
        snprintf(out, sizeof(out), "%s/kill_at_%d", dir, i);
        snprintf(what, sizeof(what), "kill -9 at %.0f%% of the run", 100.0 * (i + 0.5) / kills);
        mkdir_p(out);
        snprintf(log, sizeof(log), "%s/run.log", out);
        snprintf(cmd, sizeof(cmd), "%s -o '%s'", flags, out);
        pid_t pid = spawn_logged(cmd, log);
        usleep((useconds_t)(duration * 1e6 * (i + 0.5) / kills));
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        finished += WIFEXITED(status);
        // a save was cut short when a .tmp file is left, or the newest model file has no marker
        glob_t g;
        char pattern[PATH_CAP];
        snprintf(pattern, sizeof(pattern), "%s/*.tmp", out);
        int tmp_left = glob(pattern, 0, NULL, &g) == 0;
        if (tmp_left) globfree(&g);
        char next[PATH_CAP];
        ckpt_path(next, sizeof(next), out, "model", latest_checkpoint(out) + 1);
        in_save += tmp_left || access(next, F_OK) == 0;
        ok &= resume_matches(out, full, flags, 12, what);
    }
    check(ok, "kill: %d kills spread over the run (%d inside a save, %d after the end): each resumes to the "
              "uninterrupted run's step-12 files", kills, in_save, finished);
}

// ----------------------------------------------------------------------------
// 10. MQAR: the generator's examples (run through ./data/mqar), the loader of target shards, the
// masked loss of a whole model, recall accuracy, and the symbols tokenizer

// Checks every example of DIR/mqar_train.bin (+ .targets) written with -V V -T T -K K: the context
// holds K pairs of distinct keys in [1, V/2) and values in [V/2, V); each key is queried exactly
// once, at an even slot of the query region; the scored targets are exactly the queries' positions
// and hold their keys' values; with zero fill everything else in the query region is 0. Counts in
// first_slot[s] how often pair 0's query sits at slot s.
static void mqar_check_examples(const char* dir, int V, int T, int K, int zero_fill, long* first_slot, int* n_examples) {
    char path[PATH_CAP], tpath[PATH_CAP];
    snprintf(path, sizeof(path), "%s/mqar_train.bin", dir);
    targets_path(tpath, path);
    uint16_t *tok, *tgt;
    size_t n = shard_load(path, &tok, V, 0);
    int E = targets_load(tpath, &tgt, n, V);
    int n_ex = (int)(n / T), S = (T - 2 * K) / 2;
    int ok_shape = E == T && n % T == 0, ok_ctx = 1, ok_once = 1, ok_targets = 1, ok_fill = 1;
    for (int e = 0; e < n_ex; e++) {
        const uint16_t *x = tok + (size_t)e * T, *y = tgt + (size_t)e * T;
        for (int j = 0; j < K; j++) {
            ok_ctx &= x[2 * j] >= 1 && x[2 * j] < V / 2 && x[2 * j + 1] >= V / 2 && x[2 * j + 1] < V;
            for (int i = 0; i < j; i++) ok_ctx &= x[2 * i] != x[2 * j] && x[2 * i + 1] != x[2 * j + 1];
            ok_targets &= y[2 * j] == TARGET_IGNORED && y[2 * j + 1] == TARGET_IGNORED;
            int seen = 0;
            for (int s = 0; s < S; s++) {
                int pos = 2 * K + 2 * s;
                if (x[pos] != x[2 * j]) continue;
                seen++;
                ok_targets &= y[pos] == x[2 * j + 1];
                if (j == 0) first_slot[s]++;
            }
            ok_once &= seen == 1;
        }
        int scored = 0;
        for (int t = 2 * K; t < T; t++) {
            if (y[t] == TARGET_IGNORED) {
                if (zero_fill) ok_fill &= x[t] == 0;
                continue;
            }
            scored++;
            ok_targets &= (t - 2 * K) % 2 == 0 && x[t] >= 1 && x[t] < V / 2;
        }
        ok_targets &= scored == K;
    }
    check(ok_shape, "mqar -V %d -T %d -K %d: %d examples of T tokens, the target file says E = T", V, T, K, n_ex);
    check(ok_ctx, "mqar: the context holds K pairs, keys distinct in [1, V/2), values distinct in [V/2, V)");
    check(ok_once, "mqar: every key is queried exactly once, at an even slot after the context");
    check(ok_targets, "mqar: exactly the K query positions are scored, each with its key's value");
    if (zero_fill) check(ok_fill, "mqar --fill zero: every unscored position of the query region is 0");
    *n_examples = n_ex;
    free(tok);
    free(tgt);
}

static void test_mqar(const char* dir) {
    printf("== 10. MQAR\n");
    char logf[PATH_CAP], sub[PATH_CAP];
    snprintf(logf, sizeof(logf), "%s/mqar.log", dir);
    // the generator; T = 48, K = 6 leaves S = 18 query slots
    enum { V = 64, T = 48, K = 6, S = (T - 2 * K) / 2 };
    snprintf(sub, sizeof(sub), "%s/mqar_zero", dir);
    int rc = tok_run(logf, "%s/data/mqar -V %d -T %d -K %d --train 4000 --val 20 -o '%s'", bin, V, T, K, sub);
    check(rc == 0, "data/mqar writes shards, targets and a tokenizer (exit %d)", rc);
    long first[S] = {0};
    int n_ex = 0;
    if (rc == 0) mqar_check_examples(sub, V, T, K, 1, first, &n_ex);
    // gaps: pair 0's query is the first slot drawn, so its slot s follows p(s) ∝ (s+1)^-0.99 exactly.
    // Pearson's chi-square over the 18 slots against that law; 17 degrees of freedom, critical value
    // 40.79 at p = 0.001 (a uniform law, for contrast, gives about 1000 here).
    double norm = 0.0, chi2 = 0.0, chi2_uniform = 0.0;
    for (int s = 0; s < S; s++) norm += pow(s + 1.0, -0.99);
    for (int s = 0; s < S && n_ex; s++) {
        double want = n_ex * pow(s + 1.0, -0.99) / norm, flat = (double)n_ex / S;
        chi2 += (first[s] - want) * (first[s] - want) / want;
        chi2_uniform += (first[s] - flat) * (first[s] - flat) / flat;
    }
    check(n_ex == 4000 && chi2 < 40.79 && chi2_uniform > 200.0,
          "mqar: query slots follow p(s) ∝ (s+1)^-0.99: chi2 %.1f (< 40.79, 17 dof, p = 0.001); against uniform %.0f",
          chi2, chi2_uniform);
    snprintf(sub, sizeof(sub), "%s/mqar_random", dir);
    rc = tok_run(logf, "%s/data/mqar -V %d -T %d -K %d --train 500 --val 20 --fill random -o '%s'", bin, V, T, K, sub);
    long first_r[S] = {0};
    if (rc == 0) mqar_check_examples(sub, V, T, K, 0, first_r, &n_ex);
    check(rc == 0, "data/mqar --fill random (exit %d)", rc);
    rc = tok_run(logf, "%s/data/mqar -V 64 -T 20 -K 6 -o '%s/bad'", bin, dir);
    check(rc != 0 && tok_file_has(logf, "T >= 4K = 24"), "data/mqar refuses -T 20 -K 6 (the queries need T >= 4K)");

    // the loader: each row is one example, targets aligned (no shift), not scored -> IGNORE_INDEX
    snprintf(sub, sizeof(sub), "%s/mqar_zero/mqar_train.bin", dir);
    uint16_t *tok, *tgt;
    char tpath[PATH_CAP];
    targets_path(tpath, sub);
    size_t n = shard_load(sub, &tok, V, 0);
    targets_load(tpath, &tgt, n, V);
    DataLoader d;
    loader_init(&d, sub, 3, T, V, 0);
    int ok = d.has_targets;
    for (int b = 0; b < 2 && ok; b++) {
        loader_next_batch(&d);
        for (int i = 0; i < 3 * T; i++) {
            size_t at = (size_t)b * 3 * T + i;
            ok &= d.inputs[i] == tok[at] && d.targets[i] == (tgt[at] == TARGET_IGNORED ? IGNORE_INDEX : tgt[at]);
        }
    }
    check(ok, "loader: target shards give one example per row, inputs = tokens, targets aligned, -100 unscored");

    // the masked loss of a whole model: mean of -log softmax(logits)[target] over scored positions only
    Config c = small_config("gla,attn", 2, 0);
    c.vocab_size = V;
    Model m;
    model_build(&m, &c);
    randomize_model(&m, 0.1f);
    model_forward(&m, d.inputs, NULL, 3, T);
    double total = 0.0;
    int scored = 0;
    for (int i = 0; i < 3 * T; i++) {
        if (d.targets[i] < 0) continue;
        const float* row = m.logits + (size_t)i * V;
        double mx = row[0], z = 0.0;
        for (int v = 1; v < V; v++) mx = fmax(mx, row[v]);
        for (int v = 0; v < V; v++) z += exp(row[v] - mx);
        total += log(z) + mx - row[d.targets[i]];
        scored++;
    }
    model_forward(&m, d.inputs, d.targets, 3, T);
    double want = total / scored;
    check(scored == 3 * K && m.n_valid == scored && fabs(m.loss - want) <= 1e-5 * want,
          "masked loss: %d scored of %d, loss %.6f, by hand in float64 %.6f", m.n_valid, 3 * T, m.loss, want);
    model_free(&m);
    loader_free(&d);
    free(tok);
    free(tgt);

    // recall accuracy: rows whose argmax is known by construction
    float probs[4 * 3] = {0.1f, 0.7f, 0.2f,   // argmax 1, target 1: hit
                          0.5f, 0.3f, 0.2f,   // argmax 0, target 2: miss
                          0.2f, 0.2f, 0.6f,   // not scored (would be a hit)
                          0.3f, 0.3f, 0.4f};  // argmax 2, target 2: hit
    int targets[4] = {1, 2, IGNORE_INDEX, 2};
    long count = 0, hits = argmax_hits(probs, targets, 4, 3, &count);
    check(hits == 2 && count == 3, "recall accuracy: 2 hits of 3 scored rows (got %ld of %ld)", hits, count);

    // train_gla on MQAR: a -T that is not the example length is refused; the recall is reported
    snprintf(sub, sizeof(sub), "%s/mqar_zero", dir);
#define MQAR_RUN "%s/train_gla -i '%s/mqar_train.bin' -j '%s/mqar_val.bin' -z '%s/tokenizer.bin' -d 32 -L 2 " \
                 "-p gla:1 --mlp-hidden 32 -b 4 -T %d -n 3 -u 0 -v 0 -s 0 -G 0 -m 2 -o '%s/mqar_out'"
    rc = tok_run(logf, MQAR_RUN, bin, sub, sub, sub, T / 2, dir);
    check(rc != 0 && tok_file_has(logf, "holds examples of 48 tokens: use -T 48"), "train_gla: -T 24 on 48-token MQAR examples is refused");
    rc = tok_run(logf, MQAR_RUN, bin, sub, sub, sub, T, dir);
    check(rc == 0 && tok_file_has(logf, "recall ") && tok_file_has(logf, "(48 scored)"),
          "train_gla: trains on MQAR and reports recall over the 2 val batches' 2*4*6 = 48 scored targets");
    // damaged target files: train_gla names the file and what is wrong
    char bad_dir[PATH_CAP], good[PATH_CAP], broken[PATH_CAP], cmd[4 * PATH_CAP];
    snprintf(bad_dir, sizeof(bad_dir), "%s/mqar_bad", dir);
    tok_run(logf, "rm -rf '%s' && cp -r '%s' '%s'", bad_dir, sub, bad_dir);
    snprintf(good, sizeof(good), "%s/mqar_val.targets", sub);
    snprintf(broken, sizeof(broken), "%s/mqar_val.targets", bad_dir);
    snprintf(cmd, sizeof(cmd), MQAR_RUN " --overwrite 1", bin, bad_dir, bad_dir, bad_dir, T, dir);
    damage_copy(good, broken, 1024 + 2 * 20 * T - 2, -1, NULL, 0);
    check_fails("truncated target file", cmd, logf, "the file has 2942 bytes (truncated or corrupt)", "mqar_val.targets");
    uint16_t outside = 100;
    damage_copy(good, broken, -1, 1024, &outside, 2);
    check_fails("target outside the vocabulary", cmd, logf, "target 100 at position 0 is outside the vocabulary (size 64)", NULL);
    int32_t magic = 12345;
    damage_copy(good, broken, -1, 0, &magic, 4);
    check_fails("target file with a wrong magic", cmd, logf, "not a target shard: magic 12345, expected 20261104", NULL);

    // the symbols tokenizer the generator writes: names in, ids out, and back
    snprintf(sub, sizeof(sub), "%s/mqar_zero/tokenizer.bin", dir);
    Tokenizer t;
    tokenizer_load(&t, sub);
    int* ids;
    int m_ids = tokenizer_encode(&t, " k5  v40\n_ k31", &ids);
    check(t.kind == TOKENIZER_SYMBOLS && m_ids == 4 && ids[0] == 5 && ids[1] == 40 && ids[2] == 0 && ids[3] == 31,
          "symbols tokenizer: ' k5  v40\\n_ k31' -> 5 40 0 31");
    unsigned char* text;
    tokenizer_decode(&t, ids, m_ids, &text);
    check(strcmp((char*)text, "k5 v40 _ k31 ") == 0, "symbols tokenizer: decode -> 'k5 v40 _ k31 '");
    free(text);
    free(ids);
    tokenizer_set_token(&t, 7, (const unsigned char*)"k5 ", 3);
    const char* bad = tokenizer_check(&t);
    check(bad && strstr(bad, "symbols 5 and 7 have the same name"), "symbols tokenizer: a repeated name is rejected (%s)", bad ? bad : "accepted");
    tokenizer_set_token(&t, 7, (const unsigned char*)"k 7 ", 4);
    bad = tokenizer_check(&t);
    check(bad && strstr(bad, "space or control byte"), "symbols tokenizer: a name with a space is rejected");
    tokenizer_free(&t);
}

// ----------------------------------------------------------------------------
// 11. never lose a run: everything that could fail at the end fails before step 0, Ctrl-C saves,
// one run per checkpoint directory, leftovers of interrupted saves cleaned, files checked for what
// they are. Each case through the program a user runs: exit status, message, and no earlier good
// file lost or changed.

// Waits (up to 30 s) until the log of process pid contains `text`; returns whether it does.
static int wait_for_text(const char* log, const char* text, pid_t pid) {
    for (int i = 0; i < 30000; i++) {
        if (tok_file_has(log, text)) return 1;
        if (waitpid(pid, NULL, WNOHANG) == pid) return tok_file_has(log, text);
        usleep(1000);
    }
    return 0;
}

static int wait_exit_status(pid_t pid) {
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Whether no line of the log is a training step: the run stopped before step 1.
static int log_trained_nothing(const char* log) { return !tok_file_has(log, "| loss "); }

// Copies dir to copy, to compare later that nothing in it changed.
static void snapshot(const char* dir, const char* copy) { tok_run("/dev/null", "rm -rf '%s' && cp -a '%s' '%s'", copy, dir, copy); }
static int same_tree(const char* a, const char* b) { return tok_run("/dev/null", "diff -r '%s' '%s'", a, b) == 0; }

// The step-N model and state files of dir equal those of `full`.
static int same_checkpoint(const char* full, const char* dir, int step) {
    const char* kinds[2] = {"model", "state"};
    for (int i = 0; i < 2; i++) {
        char a[PATH_CAP], b[PATH_CAP];
        ckpt_path(a, sizeof(a), full, kinds[i], step);
        ckpt_path(b, sizeof(b), dir, kinds[i], step);
        if (tok_run("/dev/null", "cmp -s '%s' '%s'", a, b) != 0) return 0;
    }
    return 1;
}

// SIGINT or SIGTERM once the run has trained 3 steps: it finishes its step, saves, says how to go
// on and exits 128 + signal; resumed, it ends with the uninterrupted run's files.
static void check_stop_signal(const char* dir, const char* flags, const char* full, int sig, int final_step) {
    const char* name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    char out[PATH_CAP], log[PATH_CAP], cmd[3 * PATH_CAP];
    snprintf(out, sizeof(out), "%s/signal_%s", dir, name);
    snprintf(log, sizeof(log), "%s/signal_%s.log", dir, name);
    snprintf(cmd, sizeof(cmd), "%s -o '%s'", flags, out);
    pid_t pid = spawn_logged(cmd, log);
    int reached = wait_for_text(log, "step     3/", pid);
    kill(pid, sig);
    int rc = wait_exit_status(pid);
    int latest = latest_checkpoint(out);
    size_t n;
    char* text = (char*)tok_slurp(log, &n);
    char* said = text ? strstr(text, "checkpoint saved in") : NULL;
    char* last_step = text ? strstr(text, "| loss ") : NULL; // stdout lines come before the stderr message
    for (char* p = last_step; p; p = strstr(p + 1, "| loss ")) last_step = p;
    check(reached && rc == 128 + sig && latest >= 3 && latest < final_step && said && strstr(text, "-r 1 --out") &&
              last_step < said, "%s mid-run: exit %d, checkpoint of step %d saved and named with the command to resume "
              "(the log keeps stdout and stderr in order)", name, rc, latest);
    free(text);
    char resume_log[PATH_CAP];
    snprintf(resume_log, sizeof(resume_log), "%s/signal_%s_resume.log", dir, name);
    rc = tok_run(resume_log, "%s -o '%s' -r 1", flags, out);
    check(rc == 0 && same_checkpoint(full, out, final_step),
          "%s: -r 1 finishes the run with step-%d files bit-identical to the uninterrupted run's", name, final_step);
}

static void test_never_lose_a_run(const char* dir) {
    printf("== 11. never lose a run\n");
    char flags[2048], cmd[4 * PATH_CAP], log[PATH_CAP], out[PATH_CAP], copy[PATH_CAP], path[PATH_CAP];
    write_tiny_data(dir);
    snprintf(log, sizeof(log), "%s/run.log", dir);
    tiny_run_flags(flags, sizeof(flags), dir, 24);

    // the reference: 24 steps uninterrupted
    char full[PATH_CAP];
    snprintf(full, sizeof(full), "%s/full", dir);
    int rc = tok_run(log, "%s -o '%s'", flags, full);
    check(rc == 0 && latest_checkpoint(full) == 24, "the uninterrupted 24-step run (exit %d)", rc);

    // Ctrl-C and SIGTERM
    check_stop_signal(dir, flags, full, SIGINT, 24);
    check_stop_signal(dir, flags, full, SIGTERM, 24);
    snprintf(out, sizeof(out), "%s/twice", dir);
    snprintf(cmd, sizeof(cmd), "%s -n 100000 -T 256 -d 64 -o '%s'", flags, out);
    pid_t pid = spawn_logged(cmd, log);
    int reached = wait_for_text(log, "step     2/", pid);
    kill(pid, SIGINT);
    kill(pid, SIGINT);
    rc = wait_exit_status(pid);
    int latest = latest_checkpoint(out);
    check(reached && rc == 130 && (latest < 0 || checkpoint_loads(out, latest) == NULL),
          "a second Ctrl-C aborts at once (exit %d); any checkpoint left is complete (latest %d)", rc, latest);

    // one run per directory: a second run into it is refused, and the first run's files are unchanged
    snprintf(copy, sizeof(copy), "%s/full_copy", dir);
    snapshot(full, copy);
    snprintf(cmd, sizeof(cmd), "%s -o '%s' --seed 7", flags, full);
    check_fails("a new run into a directory holding another run's checkpoints", cmd, log,
                "holds another run's checkpoints (latest: step 24)", "--overwrite 1");
    check(same_tree(full, copy), "the refused run changed nothing in the first run's directory");
    // resuming with model flags that disagree with the checkpoint: each named with both values
    snprintf(cmd, sizeof(cmd), "%s -o '%s' -r 1 -d 48 -p gla,gla --kv-heads 4", flags, full);
    rc = tok_run(log, "%s", cmd);
    check(rc != 0 && tok_file_has(log, "--d-model: the checkpoint has 32, the flags give 48") &&
              tok_file_has(log, "--pattern: the checkpoint has gla,attn, the flags give gla,gla") &&
              tok_file_has(log, "2 model flags disagree") && !tok_file_has(log, "--kv-heads:"),
          "resume with other model flags is refused naming each flag that disagrees, with both values (exit %d)", rc);
    snprintf(cmd, sizeof(cmd), "%s -o '%s' -r 1 -b 3", flags, full);
    check_fails("resume with another batch size", cmd, log, "was trained with -b 2 -T 32; resume with the same", NULL);
    check(same_tree(full, copy), "the refused resumes changed nothing");
    // two trainers at once into one directory: the second is refused while the first holds the lock
    snprintf(out, sizeof(out), "%s/locked", dir);
    snprintf(cmd, sizeof(cmd), "%s -n 100000 -o '%s'", flags, out);
    pid = spawn_logged(cmd, log);
    reached = wait_for_text(log, "step     2/", pid);
    char log2[PATH_CAP];
    snprintf(log2, sizeof(log2), "%s/run2.log", dir);
    rc = tok_run(log2, "%s -o '%s' -r 1", flags, out);
    kill(pid, SIGKILL);
    wait_exit_status(pid);
    check(reached && rc != 0 && tok_file_has(log2, "another trainer is running with --out"),
          "a second trainer into a directory in use is refused (exit %d)", rc);
    // --overwrite 1 starts over: the old run's checkpoints go, the new run's come
    snprintf(out, sizeof(out), "%s/over", dir);
    tok_run("/dev/null", "cp -r '%s' '%s'", full, out);
    rc = tok_run(log, "%s -n 3 -o '%s' --overwrite 1", flags, out);
    check(rc == 0 && latest_checkpoint(out) == 3 && tok_file_has(log, "deleted the 1 checkpoint and the log of the previous run"),
          "--overwrite 1 deletes the previous run's checkpoints and trains a new run (exit %d)", rc);

    // pruning removes only this run's own older checkpoints
    snprintf(out, sizeof(out), "%s/prune", dir);
    mkdir_p(out);
    int steps[5] = {1, 2, 3, 4, 5};
    uint64_t owner[5] = {0xA, 0xB, 0xA, 0xA, 0xB};
    for (int i = 0; i < 5; i++) marker_write(out, steps[i], owner[i]);
    ckpt_prune(out, 1, 0xA);
    check(latest_checkpoint(out) == 5 && marker_run_id(out, 2) == 0xB && marker_run_id(out, 4) == 0xA &&
              marker_run_id(out, 1) == 0 && marker_run_id(out, 3) == 0,
          "--keep 1 prunes run A's steps 1 and 3, keeps its step 4 and run B's steps 2 and 5");

    // what interrupted saves leave is cleaned at start, with a line saying so; good checkpoints stay
    snprintf(out, sizeof(out), "%s/stale", dir);
    tok_run("/dev/null", "cp -r '%s' '%s'", full, out);
    const char* leftovers[3] = {"model_00000030.bin", "state_00000030.bin.tmp", "DONE_00000030.tmp"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", out, leftovers[i]);
        tok_spit(path, "partial", 7);
    }
    rc = tok_run(log, "%s -n 24 -o '%s' -r 1", flags, out);
    int gone = 1;
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", out, leftovers[i]);
        gone = gone && access(path, F_OK) != 0;
    }
    check(rc == 0 && gone && tok_file_has(log, "removed 3 unfinished checkpoint files") && same_checkpoint(full, out, 24),
          "leftovers of an interrupted save (a .tmp, an orphan model file, a marker's .tmp) are removed at start, "
          "said, and the good checkpoint is untouched (exit %d)", rc);

    // --out: an existing file, a read-only and a full file system
    snprintf(path, sizeof(path), "%s/a_file", dir);
    tok_spit(path, "keep me", 7);
    snprintf(cmd, sizeof(cmd), "%s -o '%s'", flags, path);
    check_fails("--out naming a file", cmd, log, "is a file; it must be a directory", NULL);
    size_t n;
    char* kept = (char*)tok_slurp(path, &n);
    check(kept && n == 7 && memcmp(kept, "keep me", 7) == 0, "--out naming a file: the file is unchanged");
    free(kept);
    char mnt[PATH_CAP];
    snprintf(mnt, sizeof(mnt), "%s/mnt", dir);
    mkdir_p(mnt);
    if (tok_run("/dev/null", "mount -t tmpfs -o size=64k,ro tmpfs '%s'", mnt) == 0) {
        snprintf(cmd, sizeof(cmd), "%s -o '%s/out'", flags, mnt);
        rc = tok_run(log, "%s", cmd);
        check(rc != 0 && tok_file_has(log, "Read-only file system") && log_trained_nothing(log),
              "--out on a read-only file system fails before step 1 (exit %d)", rc);
        tok_run("/dev/null", "umount '%s'", mnt);
    } else {
        skip("--out on a read-only file system: cannot mount a tmpfs here (needs root)");
    }
    // a file system with room for one checkpoint of this model (about 184 KiB) but not two
    if (tok_run("/dev/null", "mount -t tmpfs -o size=320k tmpfs '%s'", mnt) == 0) {
        snprintf(out, sizeof(out), "%s/out", mnt);
        rc = tok_run(log, "%s -n 4 -k 2 --keep 1 -o '%s'", flags, out);
        check(rc != 0 && tok_file_has(log, "warning: the 2 checkpoints this run keeps") && tok_file_has(log, "disk full?") &&
                  latest_checkpoint(out) == 2 && checkpoint_loads(out, 2) == NULL,
              "a full disk: warned before step 0, the failed save of step 4 keeps step 2's checkpoint complete (exit %d)", rc);
        ckpt_path(path, sizeof(path), out, "model", 2);
        char want[PATH_CAP];
        snprintf(want, sizeof(want), "%s/step2", dir);
        rc = tok_run(log, "%s -n 4 -k 2 --keep 1 -o '%s' --stop-at 2", flags, want);
        check(rc == 0 && same_checkpoint(want, out, 2), "a full disk: step 2's files are those of a run that had room");
        rc = tok_run(log, "%s -n 4 -k 2 --keep 1 -o '%s' -r 1", flags, out);
        check(tok_file_has(log, "removed") && tok_file_has(log, "resumed from step 2"),
              "a full disk: the next start removes the partial files and resumes from step 2");
        tok_run("/dev/null", "umount '%s'", mnt);
    } else {
        skip("--out on a full file system: cannot mount a tmpfs here (needs root)");
    }

    // the prompt is encoded before step 0: an MQAR (symbols) tokenizer cannot encode "hello k5"
    snprintf(out, sizeof(out), "%s/mqar", dir);
    rc = tok_run(log, "%s/data/mqar -V 64 -T 24 -K 4 -n 40 -m 8 -o '%s'", bin, out);
    snprintf(cmd, sizeof(cmd), "%s/train_gla -i '%s/mqar_train.bin' -j '%s/mqar_val.bin' -z '%s/tokenizer.bin' -d 32 -L 2 "
             "-p gla:1 --mlp-hidden 32 -b 4 -T 24 -n 3 -o '%s/run' --prompt 'hello k5'", bin, out, out, out, out);
    check_fails("a --prompt the tokenizer cannot encode", cmd, log, "'hello' is not a symbol of this tokenizer", NULL);
    check(log_trained_nothing(log), "a --prompt the tokenizer cannot encode: refused before step 1");

    // a shard written with another tokenizer than the one given; llm.c's shards (no fingerprint) pass
    char bpe[PATH_CAP];
    snprintf(bpe, sizeof(bpe), "%s/bpe300.bin", dir);
    tok_run("/dev/null", "%s/data/train_bpe -i " TOK_CASES "/tinyshakespeare_head.txt -v 300 -o '%s'", bin, bpe);
    snprintf(cmd, sizeof(cmd), "%s -o '%s/bpe_out' -z '%s'", flags, dir, bpe);
    check_fails("byte-level shards with a BPE tokenizer", cmd, log, "was written with another tokenizer", "train.bin");
    snprintf(path, sizeof(path), "%s/train.bin", dir);
    char llmc[PATH_CAP];
    snprintf(llmc, sizeof(llmc), "%s/llmc_train.bin", dir);
    int zero = 0;
    damage_copy(path, llmc, -1, 12, &zero, 4); // header int [3] = 0: a shard as llm.c writes it
    rc = tok_run(log, "%s -o '%s/llmc_out' -n 2 -i '%s'", flags, dir, llmc);
    check(rc == 0, "a shard without a tokenizer fingerprint (llm.c's) is accepted (exit %d)", rc);

    // a directory where a file is expected, for every program
    struct { const char* what; const char* fmt; } dirs[] = {
        {"train_gla -i DIR", "%s -o '%s/d1' -i '%s'"},
        {"train_gla -j DIR", "%s -o '%s/d2' -j '%s'"},
        {"train_gla -z DIR", "%s -o '%s/d3' -z '%s'"},
    };
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof(cmd), dirs[i].fmt, flags, dir, dir);
        check_fails(dirs[i].what, cmd, log, "is a directory; a file is expected here", NULL);
    }
    snprintf(cmd, sizeof(cmd), "cd '%s' && '%s/data/prepare' '%s'", dir, realpath(bin, path) ? path : bin, dir);
    check_fails("data/prepare DIR", cmd, log, "is a directory; a file is expected here", NULL);
    snprintf(cmd, sizeof(cmd), "%s/data/tokenize '%s' encode < /dev/null", bin, dir);
    check_fails("data/tokenize DIR", cmd, log, "is a directory; a file is expected here", NULL);
    snprintf(cmd, sizeof(cmd), "%s/data/train_bpe -i '%s' -v 300 -o '%s/x.bin'", bin, dir, dir);
    check_fails("data/train_bpe -i DIR", cmd, log, "is a directory; a file is expected here", NULL);

    // patterns that do not say what was meant
    const char* patterns[][2] = {
        {"-p gla:3 -L 3", "no room for the attention layer: use at least 4 layers, or 'gla:pure'"},
        {"-p gla,,attn -L 3", "layer 1 of the list is empty"},
        {"-p gla,attn, -L 2", "layer 2 of the list is empty"},
        {"-p ,gla,attn -L 2", "layer 0 of the list is empty"},
    };
    for (int i = 0; i < 4; i++) check_bad_flags(dir, patterns[i][0], patterns[i][1]);

    // defaults that work for a short run: warmup is a fraction of the steps when not given
    rc = tok_run(log, "%s/train_gla -i %s/train.bin -j %s/val.bin -z %s/tok.bin -d 32 -L 2 -p gla,attn "
                 "--mlp-hidden 32 -b 2 -T 32 -n 5 -v 0 -s 0 -G 4 -m 1 -o '%s/short'", bin, dir, dir, dir, dir);
    check(rc == 0 && tok_file_has(log, "warmup 0"), "-n 5 without --warmup trains (warmup 0 = min(50, 5/10)) (exit %d)", rc);

    // --max-time bounds the whole run, end work included, and says where the schedule was cut
    double t0 = now_seconds();
    rc = tok_run(log, "%s -n 1000000 -G 200 -m 20 -o '%s/timed' --max-time 3", flags, dir);
    double wall = now_seconds() - t0;
    check(rc == 0 && wall < 3.5 && tok_file_has(log, "stopped early at step") && tok_file_has(log, "of the 1000000-step schedule"),
          "--max-time 3: the whole run took %.2f s (bound 3 s + 0.5 s for process start and exit) and says it stopped early", wall);

    // data/prepare names its outputs and does not overwrite shards without -f
    char text[PATH_CAP];
    snprintf(text, sizeof(text), "%s/mytext.txt", dir);
    tok_run("/dev/null", "cp " TOK_CASES "/tinyshakespeare_head.txt '%s'", text);
    char prep[PATH_CAP];
    if (!realpath(bin, prep)) snprintf(prep, sizeof(prep), "%s", bin);
    rc = tok_run(log, "cd '%s' && '%s/data/prepare' mytext.txt", dir, prep);
    snprintf(path, sizeof(path), "%s/data/mytext/mytext_train.bin", dir);
    check(rc == 0 && access(path, F_OK) == 0, "data/prepare mytext.txt writes data/mytext/mytext_{val,train}.bin (exit %d)", rc);
    snprintf(copy, sizeof(copy), "%s/data_copy", dir);
    snprintf(out, sizeof(out), "%s/data", dir);
    snapshot(out, copy);
    snprintf(cmd, sizeof(cmd), "cd '%s' && '%s/data/prepare' mytext.txt", dir, prep);
    check_fails("data/prepare over existing shards", cmd, log, "exists: give -f to replace it", NULL);
    check(same_tree(out, copy), "data/prepare refused: the existing shards are unchanged");
    rc = tok_run(log, "cd '%s' && '%s/data/prepare' -o mine/part mytext.txt && '%s/data/prepare' -f mytext.txt", dir, prep, prep);
    snprintf(path, sizeof(path), "%s/mine/part_val.bin", dir);
    check(rc == 0 && access(path, F_OK) == 0, "data/prepare -o mine/part names its outputs; -f replaces (exit %d)", rc);
}

// ----------------------------------------------------------------------------
// 12. using a trained model: generate, eval and logits from a checkpoint, the run's log, the plot

// The last sample a log printed: the bytes from its last "---\n" opening line to the closing one.
static char* last_sample(const char* log, size_t* n) {
    size_t size;
    char* text = (char*)tok_slurp(log, &size);
    if (!text) return NULL;
    char *end = NULL, *start = NULL;
    for (char* p = text; (p = strstr(p, "---\n")); p += 4) { start = end; end = p; }
    if (!start) { free(text); return NULL; }
    *n = (size_t)(end + 4 - start);
    char* sample = (char*)malloc_check(*n);
    memcpy(sample, start, *n);
    free(text);
    return sample;
}

static double number_after(const char* log, const char* label) {
    size_t n;
    char* text = (char*)tok_slurp(log, &n);
    char* p = text ? strstr(text, label) : NULL;
    double x = p ? atof(p + strlen(label)) : NAN;
    free(text);
    return x;
}

static void test_use_trained(const char* dir) {
    printf("== 12. using a trained model\n");
    char flags[2048], out[PATH_CAP], log[PATH_CAP], gen[PATH_CAP], path[PATH_CAP];
    write_tiny_data(dir);
    snprintf(out, sizeof(out), "%s/run", dir);
    snprintf(log, sizeof(log), "%s/train.log", dir);
    snprintf(gen, sizeof(gen), "%s/gen.log", dir);
    tiny_run_flags(flags, sizeof(flags), dir, 10);
    int rc = tok_run(log, "%s -o '%s' -v 5 -m 3 -G 40 --seed 77", flags, out);
    check(rc == 0, "a 10-step run to use (exit %d)", rc);
    // generate reproduces the run's final sample: same checkpoint, same --seed
    rc = tok_run(gen, "%s/train_gla generate -c '%s' -z '%s/tok.bin' -G 40 --seed 77 2>/dev/null", bin, out, dir);
    size_t n1 = 0, n2 = 0;
    char *a = last_sample(log, &n1), *b = last_sample(gen, &n2);
    check(rc == 0 && a && b && n1 == n2 && memcmp(a, b, n1) == 0,
          "generate -c DIR --seed 77 prints the training run's final sample byte for byte (%zu bytes)", n1);
    free(a);
    free(b);
    // from a model file, the prompt on standard input, greedy == top-k 1
    ckpt_path(path, sizeof(path), out, "model", 10);
    rc = tok_run(gen, "echo 'the quick' | %s/train_gla generate -c '%s' -z '%s/tok.bin' --prompt - -G 20 --temperature 0",
                 bin, path, dir);
    a = last_sample(gen, &n1);
    int rc2 = tok_run(gen, "%s/train_gla generate -c '%s' -z '%s/tok.bin' --prompt 'the quick\n' -G 20 --top-k 1 "
                      "--temperature 1.5 --seed 5", bin, path, dir);
    b = last_sample(gen, &n2);
    check(rc == 0 && rc2 == 0 && a && b && n1 == n2 && memcmp(a, b, n1) == 0 && tok_file_has(gen, "tokens/s"),
          "generate: a prompt from stdin, greedy == --top-k 1 at any temperature, a tokens/s line (exit %d, %d)", rc, rc2);
    free(a);
    free(b);
    // eval over the trainer's validation batches equals the loss it printed
    rc = tok_run(gen, "%s/train_gla eval -c '%s' -z '%s/tok.bin' -j '%s/val.bin' -b 2 -T 32 -m 3 --chunk 8", bin, out,
                 dir, dir);
    double printed = number_after(log, "step    10 | val loss "), evaluated = number_after(gen, "loss ");
    check(rc == 0 && printed == evaluated && fabs(number_after(gen, "perplexity ") - exp(evaluated)) < 1e-3 * exp(evaluated),
          "eval -m 3: loss %.4f == the trainer's val loss at step 10 (%.4f); perplexity = e^loss", evaluated, printed);
    rc = tok_run(gen, "%s/train_gla eval -c '%s' -z '%s/tok.bin' -j '%s/val.bin' -b 2 -T 32", bin, out, dir, dir);
    check(rc == 0 && tok_file_has(gen, "78 batches of 2x32 (4992 tokens), all of the data") && tok_file_has(gen, "bits/byte"),
          "eval over a whole shard: all (5000 - 1) / 64 = 78 batches, bits per byte (exit %d)", rc);
    // logits of one sequence equal the model's forward pass
    char lpath[PATH_CAP];
    snprintf(lpath, sizeof(lpath), "%s/logits.f32", dir);
    rc = tok_run(gen, "%s/train_gla logits -c '%s' -z '%s/tok.bin' --ids '116 104 101 32 113' -o '%s' --chunk 8", bin,
                 out, dir, lpath);
    Config c;
    checkpoint_read_config(path, &c);
    Model m;
    model_build(&m, &c);
    m.chunk_size = 8;
    load_model_params(&m, path);
    int ids[5] = {116, 104, 101, 32, 113};
    model_forward(&m, ids, NULL, 1, 5);
    size_t nl = 0;
    float* got = (float*)tok_slurp(lpath, &nl);
    check(rc == 0 && got && nl == 5 * 256 * sizeof(float) && memcmp(got, m.logits, nl) == 0,
          "logits --ids '116 104 101 32 113' writes the forward pass's (5, 256) logits bit for bit (exit %d)", rc);
    free(got);
    model_free(&m);
    // bad uses: no checkpoint, an id outside the vocabulary, a tokenizer of another vocabulary
    char cmd[3 * PATH_CAP];
    snprintf(cmd, sizeof(cmd), "%s/train_gla generate -c '%s/nothing' -z '%s/tok.bin'", bin, dir, dir);
    check_fails("generate from a missing checkpoint", cmd, gen, "cannot open", "nothing");
    snprintf(cmd, sizeof(cmd), "%s/train_gla logits -c '%s' -z '%s/tok.bin' --ids '1 999' -o '%s'", bin, out, dir, lpath);
    check_fails("logits of an id outside the vocabulary", cmd, gen, "'999' is not a token id below 256", NULL);
    snprintf(cmd, sizeof(cmd), "%s/train_gla eval -c '%s' -z '%s/bpe.bin' -j '%s/val.bin'", bin, out, dir, dir);
    tok_run("/dev/null", "%s/data/train_bpe -i " TOK_CASES "/tinyshakespeare_head.txt -v 300 -o '%s/bpe.bin'", bin, dir);
    check_fails("eval with a tokenizer of another vocabulary", cmd, gen, "differs from the tokenizer's", NULL);

    // eval on MQAR shards (target files beside them): recall over the scored positions
    char mq[PATH_CAP];
    snprintf(mq, sizeof(mq), "%s/mqar", dir);
    rc = tok_run(gen, "%s/data/mqar -V 64 -T 24 -K 4 -n 64 -m 16 -o '%s' && %s/train_gla -i '%s/mqar_train.bin' "
                 "-j '%s/mqar_val.bin' -z '%s/tokenizer.bin' -d 32 -L 2 -p gla:1 --mlp-hidden 32 -b 4 -T 24 -n 3 -v 0 "
                 "-s 0 -G 0 -m 4 --prompt k5 -o '%s/run'", bin, mq, bin, mq, mq, mq, mq);
    rc2 = tok_run(gen, "%s/train_gla eval -c '%s/run' -z '%s/tokenizer.bin' -j '%s/mqar_val.bin' -b 4 -T 24", bin, mq, mq, mq);
    check(rc == 0 && rc2 == 0 && tok_file_has(gen, "| recall ") && tok_file_has(gen, "(64 scored)"),
          "eval on MQAR shards: recall over all 16 validation examples' 4 queries = 64 scored (exit %d, %d)", rc, rc2);

    // top-k: the k-th largest against a sort
    float x[50], sorted[50];
    for (int i = 0; i < 50; i++) x[i] = sorted[i] = (float)((i * 37) % 50) - 0.5f * (i % 3 == 0);
    for (int i = 0; i < 50; i++) for (int j = i + 1; j < 50; j++)
        if (sorted[j] > sorted[i]) { float t = sorted[i]; sorted[i] = sorted[j]; sorted[j] = t; }
    int same = 1;
    for (int k = 1; k <= 50; k++) same = same && kth_largest(x, 50, k) == sorted[k - 1];
    uint64_t rng = 9;
    int inside = 1;
    for (int i = 0; i < 2000; i++) inside = inside && x[sample_token(x, 50, 3.0f, 4, &rng)] >= sorted[3];
    check(same && inside, "top-k: the k-th largest of 50 for every k equals a sort's; 2000 draws with k = 4 stay in the top 4");

    // the run's log: every step and evaluation, one JSON object a line; a resumed run appends
    snprintf(path, sizeof(path), "%s/log.jsonl", out);
    size_t n;
    char* text = (char*)tok_slurp(path, &n);
    int steps = 0, evals = 0;
    for (char* p = text; p && (p = strstr(p, "{\"step\": ")); p++) {
        if (strstr(p, "\"loss\": ") && strstr(p, "\"loss\": ") < strchr(p, '\n')) steps++;
        else if (strstr(p, "\"val_loss\": ") && strstr(p, "\"val_loss\": ") < strchr(p, '\n')) evals++;
    }
    free(text);
    check(steps == 10 && evals == 3, "log.jsonl: 10 training steps and 3 evaluations (steps 0, 5, 10) (got %d, %d)", steps, evals);
    rc = tok_run(gen, "%s -o '%s' -v 5 -m 3 -G 0 --seed 77 -n 15 -r 1", flags, out);
    text = (char*)tok_slurp(path, &n);
    int lines = 0;
    for (char* p = text; p && (p = strchr(p, '\n')); p++) lines++;
    check(rc == 0 && lines == 13 + 5 + 2 && strstr(text, "{\"step\": 15, \"loss\""),
          "log.jsonl: resuming to step 15 appends its 5 steps and 2 evaluations (%d lines)", lines);
    free(text);
    // the plot (Python's standard library; skipped without python3)
    if (tok_run("/dev/null", "command -v python3") == 0) {
        char svg[PATH_CAP];
        snprintf(svg, sizeof(svg), "%s/curves.svg", dir);
        rc = tok_run(gen, "python3 dev/plot.py '%s' '%s/log.jsonl' -o '%s'", out, out, svg);
        check(rc == 0 && tok_file_has(svg, "<polyline") && tok_file_has(svg, "</svg>"),
              "dev/plot.py draws two logs into one SVG (exit %d)", rc);
    } else {
        skip("dev/plot.py: no python3 here");
    }
}

// ----------------------------------------------------------------------------
// 13. fla / Hugging Face files: export then import gives the model file back byte for byte for every
// family (pure, 3:1, tied and untied); the safetensors header is what fla reads; BF16 and sharded
// models import; every fla option the C code does not implement, every malformed config.json and
// every corrupt safetensors file is refused with its message; so is a pattern fla cannot express.

// A 2-step run of `pattern` (4 layers, d 32) in dir/ck_<name>; returns its exit status.
static int fla_train(const char* dir, const char* name, const char* pattern, int tie) {
    return tok_run("/dev/null", "%s/train_gla -i '%s/train.bin' -j '%s/val.bin' -z '%s/tok.bin' -d 32 -L 4 -p '%s' "
                   "--mlp-hidden 32 --tie %d -b 2 -T 16 -n 2 -u 1 -v 0 -s 0 -G 0 -m 1 --chunk 8 -o '%s/ck_%s'",
                   bin, dir, dir, dir, pattern, tie, dir, name);
}

// export of dir/ck_<name> to dir/hf_<name>, import back to dir/<name>.bin, compared with the step-2
// model file byte for byte
static void fla_check_roundtrip(const char* dir, const char* pattern, int tie) {
    char name[64], ck[PATH_CAP], model[PATH_CAP], back[PATH_CAP];
    snprintf(name, sizeof(name), "%s_%d", pattern, tie);
    for (char* p = name; *p; p++) if (*p == ':' || *p == ',') *p = '_';
    int rc = fla_train(dir, name, pattern, tie);
    snprintf(ck, sizeof(ck), "%s/ck_%s", dir, name);
    ckpt_path(model, sizeof(model), ck, "model", 2);
    snprintf(back, sizeof(back), "%s/%s.bin", dir, name);
    int rc_export = tok_run("/dev/null", "%s/train_gla export -c '%s' -o '%s/hf_%s'", bin, ck, dir, name);
    int rc_import = tok_run("/dev/null", "%s/train_gla import -i '%s/hf_%s' -o '%s'", bin, dir, name, back);
    size_t na = 0, nb = 0;
    unsigned char *a = tok_slurp(model, &na), *b = tok_slurp(back, &nb);
    check(rc == 0 && rc_export == 0 && rc_import == 0 && a && b && na == nb && memcmp(a, b, na) == 0,
          "fla: %-19s tie %d: export then import gives the model file back byte for byte (%zu bytes; exit %d, %d, %d)",
          pattern, tie, na, rc, rc_export, rc_import);
    free(a);
    free(b);
}

// the parsed tensor named `name`, or NULL
static const SafeTensor* fla_find(const SafeTensors* st, const char* name) {
    for (int k = 0; k < st->n; k++) if (strcmp(st->tensors[k].name, name) == 0) return &st->tensors[k];
    return NULL;
}

static int fla_shape_is(const SafeTensor* t, int ndim, int64_t a, int64_t b, int64_t c) {
    int64_t want[3] = {a, b, c};
    if (!t || t->ndim != ndim || t->dtype != SAFE_F32) return 0;
    for (int k = 0; k < ndim; k++) if (t->shape[k] != want[k]) return 0;
    return 1;
}

// The header of dir/hf_<name>/model.safetensors: what fla reads (names, shapes, metadata, padding,
// the canonical order of the data) for the gla 3:1 untied and the deltanet tied exports.
static void fla_check_header(const char* dir) {
    char path[PATH_CAP];
    size_t n;
    snprintf(path, sizeof(path), "%s/hf_gla_3_0/model.safetensors", dir);
    unsigned char* data = tok_slurp(path, &n);
    SafeTensors st;
    const char* bad = data ? safetensors_parse(&st, data, n) : "cannot read it";
    uint64_t header_len = 0;
    if (data) memcpy(&header_len, data, 8);
    int meta = !bad ? json_member(&st.header, 0, "__metadata__") : -1;
    int format = meta >= 0 ? json_member(&st.header, meta, "format") : -1;
    size_t end = 8 + (size_t)header_len; // the JSON's closing brace, then spaces up to the data
    while (!bad && end > 8 && data[end - 1] == ' ') end--;
    int ok = !bad && format >= 0 && strcmp(st.header.nodes[format].text, "pt") == 0 && (8 + header_len) % 8 == 0 &&
             data[end - 1] == '}';
    check(ok, "fla header: __metadata__ {\"format\": \"pt\"}, data at a multiple of 8 (header %llu bytes, padded with spaces) (%s)",
          (unsigned long long)header_len, bad ? bad : "parsed");
    if (!bad) {
        // d 32, GLA 2 heads: Dk 16, Dv 32, gate rank 16; V 256; attention at layer 3
        check(fla_shape_is(fla_find(&st, "model.embeddings.weight"), 2, 256, 32, 0) &&
              fla_shape_is(fla_find(&st, "lm_head.weight"), 2, 256, 32, 0) &&
              fla_shape_is(fla_find(&st, "model.layers.0.attn.gk_proj.0.weight"), 2, 16, 32, 0) &&
              fla_shape_is(fla_find(&st, "model.layers.0.attn.gk_proj.1.weight"), 2, 16, 16, 0) &&
              fla_shape_is(fla_find(&st, "model.layers.0.attn.gk_proj.1.bias"), 1, 16, 0, 0) &&
              fla_shape_is(fla_find(&st, "model.layers.2.attn.g_norm_swish_gate.weight"), 1, 16, 0, 0) &&
              fla_shape_is(fla_find(&st, "model.layers.3.attn.k_proj.weight"), 2, 32, 32, 0) &&
              fla_shape_is(fla_find(&st, "model.layers.3.mlp.down_proj.weight"), 2, 32, 32, 0) &&
              fla_shape_is(fla_find(&st, "model.norm.weight"), 1, 32, 0, 0) && !fla_find(&st, "layers.0.gla.q_proj"),
              "fla header (gla 3:1): embeddings, lm_head, gk_proj.0/1 + bias, g_norm_swish_gate, attention and MLP under fla's names and shapes");
        // the data in the canonical order, every tensor right after the previous one
        Config c;
        char model[PATH_CAP], ck[PATH_CAP];
        snprintf(ck, sizeof(ck), "%s/ck_gla_3_0", dir);
        ckpt_path(model, sizeof(model), ck, "model", 2);
        checkpoint_read_config(model, &c);
        ParamSpec specs[MAX_PARAMS];
        size_t total;
        int n_specs = param_table(&c, specs, &total), in_order = n_specs == st.n;
        for (int k = 0; k < n_specs && in_order; k++) {
            FlaTensor t;
            fla_tensor(&specs[k], 1, &t);
            in_order = strcmp(st.tensors[k].name, t.name) == 0 && st.tensors[k].bytes == st.tensors[0].bytes + 4 * specs[k].offset;
        }
        check(in_order, "fla header: %d tensors in the canonical order of the parameter table, data laid out as the model file's", st.n);
    }
    safetensors_free(&st);
    free(data);
    snprintf(path, sizeof(path), "%s/hf_deltanet_pure_1/model.safetensors", dir);
    data = tok_slurp(path, &n);
    bad = data ? safetensors_parse(&st, data, n) : "cannot read it";
    check(!bad && fla_shape_is(fla_find(&st, "model.layers.1.attn.q_conv1d.weight"), 3, 32, 1, 4) &&
          fla_shape_is(fla_find(&st, "model.layers.1.attn.o_norm.weight"), 1, 16, 0, 0) && !fla_find(&st, "lm_head.weight"),
          "fla header (deltanet, tied): short convs as nn.Conv1d's (32, 1, 4), no lm_head.weight (%s)", bad ? bad : "parsed");
    safetensors_free(&st);
    free(data);
    // config.json: parses back, the fields fla needs
    snprintf(path, sizeof(path), "%s/hf_gla_3_0/config.json", dir);
    data = tok_slurp(path, &n);
    Json j;
    bad = data ? json_parse(&j, data, n) : "cannot read it";
    int attn = !bad ? json_member(&j, 0, "attn") : -1, layers = attn >= 0 ? json_member(&j, attn, "layers") : -1;
    int mt = !bad ? json_member(&j, 0, "model_type") : -1, tie = !bad ? json_member(&j, 0, "tie_word_embeddings") : -1;
    int inter = !bad ? json_member(&j, 0, "intermediate_size") : -1;
    check(!bad && mt >= 0 && !strcmp(j.nodes[mt].text, "gla") && tie >= 0 && j.nodes[tie].type == JSON_BOOL &&
          !j.nodes[tie].boolean && inter >= 0 && j.nodes[inter].number == 32 && layers >= 0 &&
          j.nodes[layers].count == 1 && j.nodes[j.nodes[layers].first].number == 3 && tok_file_has(path, "\"norm_eps\": 1e-06,"),
          "fla config.json: model_type gla, tie_word_embeddings false, intermediate_size 32, attn.layers [3], norm_eps 1e-06");
    json_free(&j);
    free(data);
}

// The round-to-nearest-even bfloat16 of x (finite x)
static uint16_t float_to_bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    return (uint16_t)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

// Writes the tensors [from, to) of st as a safetensors file at path, converted to `dtype` (F32 or
// BF16), in their order; metadata as fla's.
static void fla_write_copy(const char* path, const SafeTensors* st, int from, int to, int dtype) {
    size_t cap = 4096 + 256 * (size_t)st->n, len = 0, offset = 0, total = 0;
    char* header = (char*)malloc_check(cap);
    len += (size_t)snprintf(header, cap, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int k = from; k < to; k++) {
        const SafeTensor* t = &st->tensors[k];
        size_t bytes = t->numel * SAFE_DTYPE_BYTES[dtype];
        len += (size_t)snprintf(header + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, SAFE_DTYPE_NAMES[dtype]);
        for (int i = 0; i < t->ndim; i++) len += (size_t)snprintf(header + len, cap - len, "%s%lld", i ? "," : "", (long long)t->shape[i]);
        len += (size_t)snprintf(header + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", offset, offset + bytes);
        offset += bytes;
    }
    len += (size_t)snprintf(header + len, cap - len, "}");
    total = 8 + len + offset;
    unsigned char* out = (unsigned char*)malloc_check(total);
    uint64_t n = len;
    memcpy(out, &n, 8);
    memcpy(out + 8, header, len);
    unsigned char* at = out + 8 + len;
    for (int k = from; k < to; k++) {
        const SafeTensor* t = &st->tensors[k];
        for (size_t i = 0; i < t->numel; i++) {
            float x;
            memcpy(&x, t->bytes + 4 * i, 4);
            if (dtype == SAFE_F32) { memcpy(at, &x, 4); at += 4; }
            else { uint16_t h = float_to_bf16(x); memcpy(at, &h, 2); at += 2; }
        }
    }
    tok_spit(path, out, total);
    free(out);
    free(header);
}

// BF16 and sharded copies of the gla 3:1 untied export import: the BF16 model within bf16 rounding
// (2^-8 relative per parameter), the two-shard one byte for byte; the half-float conversion exact.
static void fla_check_bf16_and_shards(const char* dir) {
    char path[PATH_CAP], out[PATH_CAP], ref[PATH_CAP], ck[PATH_CAP];
    size_t n;
    snprintf(path, sizeof(path), "%s/hf_gla_3_0/model.safetensors", dir);
    unsigned char* data = tok_slurp(path, &n);
    SafeTensors st;
    if (!data || safetensors_parse(&st, data, n)) { check(0, "fla: cannot read '%s'", path); free(data); return; }
    snprintf(ck, sizeof(ck), "%s/ck_gla_3_0", dir);
    ckpt_path(ref, sizeof(ref), ck, "model", 2);
    // BF16
    tok_run("/dev/null", "rm -rf '%s/bf16' && mkdir -p '%s/bf16' && cp '%s/hf_gla_3_0/config.json' '%s/bf16/'", dir, dir, dir, dir);
    snprintf(path, sizeof(path), "%s/bf16/model.safetensors", dir);
    fla_write_copy(path, &st, 0, st.n, SAFE_BF16);
    snprintf(out, sizeof(out), "%s/bf16.bin", dir);
    int rc = tok_run("/dev/null", "%s/train_gla import -i '%s/bf16' -o '%s'", bin, dir, out);
    size_t na = 0, nb = 0;
    unsigned char *a = tok_slurp(ref, &na), *b = tok_slurp(out, &nb);
    double worst = 0;
    int ok = rc == 0 && a && b && na == nb && memcmp(a, b, HEADER_BYTES) == 0;
    for (size_t k = HEADER_BYTES; ok && k < na; k += 4) {
        float x, y;
        memcpy(&x, a + k, 4);
        memcpy(&y, b + k, 4);
        double rel = x != 0 ? fabs((double)y - x) / fabs(x) : fabs(y);
        if (rel > worst) worst = rel;
    }
    check(ok && worst <= 1.0 / 256, "fla: a BF16 copy imports within bf16 rounding: worst relative error %.2e <= 2^-8, "
          "the same header (exit %d)", worst, rc);
    free(a);
    free(b);
    // two shards and their index
    tok_run("/dev/null", "rm -rf '%s/sharded' && mkdir -p '%s/sharded' && cp '%s/hf_gla_3_0/config.json' '%s/sharded/'", dir, dir, dir, dir);
    int half = st.n / 2;
    snprintf(path, sizeof(path), "%s/sharded/model-00001-of-00002.safetensors", dir);
    fla_write_copy(path, &st, 0, half, SAFE_F32);
    snprintf(path, sizeof(path), "%s/sharded/model-00002-of-00002.safetensors", dir);
    fla_write_copy(path, &st, half, st.n, SAFE_F32);
    snprintf(path, sizeof(path), "%s/sharded/model.safetensors.index.json", dir);
    FILE* f = fopen_check(path, "wb");
    fprintf(f, "{\"metadata\": {\"total_size\": %zu}, \"weight_map\": {", n);
    for (int k = 0; k < st.n; k++)
        fprintf(f, "%s\n  \"%s\": \"model-0000%d-of-00002.safetensors\"", k ? "," : "", st.tensors[k].name, k < half ? 1 : 2);
    fprintf(f, "}}\n");
    fclose_check(f, path);
    snprintf(out, sizeof(out), "%s/sharded.bin", dir);
    rc = tok_run("/dev/null", "%s/train_gla import -i '%s/sharded' -o '%s'", bin, dir, out);
    a = tok_slurp(ref, &na);
    b = tok_slurp(out, &nb);
    check(rc == 0 && a && b && na == nb && memcmp(a, b, na) == 0,
          "fla: a model in two shards with model.safetensors.index.json imports byte for byte (exit %d)", rc);
    free(a);
    free(b);
    safetensors_free(&st);
    free(data);
    // float16: normals, subnormals, signed zero, infinities; bfloat16 is the top half of float32
    const uint16_t halves[8] = {0x3c00, 0xc000, 0x0001, 0x03ff, 0x7bff, 0x8000, 0x7c00, 0x3555};
    const float want[8] = {1.0f, -2.0f, 5.9604644775390625e-8f, 6.0975551605224609e-5f, 65504.0f, -0.0f, INFINITY, 0.33325195f};
    int same = 1;
    for (int k = 0; k < 8; k++) { // bit for bit: -0 is not +0
        float got = f16_to_float(halves[k]);
        same = same && memcmp(&got, &want[k], 4) == 0;
    }
    check(same && isnan(f16_to_float(0x7e00)) && bf16_to_float(0x3f80) == 1.0f && bf16_to_float(0xc0a0) == -5.0f,
          "fla: F16 and BF16 convert to float32 exactly (normals, subnormals, -0, inf, nan)");
}

// A copy of dir/hf_<from> as dir/bad with config.json's first `old` replaced by `new` must be refused
// by import with `message`.
static void fla_check_config_refused(const char* dir, const char* from, const char* old, const char* new_text, const char* message) {
    char path[PATH_CAP], cmd[3 * PATH_CAP], log[PATH_CAP], label[256];
    tok_run("/dev/null", "rm -rf '%s/bad' && cp -r '%s/hf_%s' '%s/bad'", dir, dir, from, dir);
    snprintf(path, sizeof(path), "%s/bad/config.json", dir);
    size_t n;
    char* text = (char*)tok_slurp(path, &n);
    char* at = text ? strstr(text, old) : NULL;
    snprintf(label, sizeof(label), "import refuses %s config.json with %s", from, new_text);
    if (!at) { check(0, "%s: '%s' not in its config.json", label, old); free(text); return; }
    FILE* f = fopen_check(path, "wb");
    fprintf(f, "%.*s%s%s", (int)(at - text), text, new_text, at + strlen(old));
    fclose_check(f, path);
    free(text);
    snprintf(log, sizeof(log), "%s/bad.log", dir);
    snprintf(cmd, sizeof(cmd), "%s/train_gla import -i '%s/bad' -o '%s/bad.bin'", bin, dir, dir);
    check_fails(label, cmd, log, message, NULL);
}

// A copy of dir/hf_gla_3_0 as dir/bad with model.safetensors damaged: its first `old` replaced by
// `new` (the same length) when old is not NULL, then damage_copy's cut/overwrite; import must refuse
// it with `message`.
static void fla_check_file_refused(const char* dir, const char* what, const char* old, const char* new_text, long keep,
                                   long offset, const void* bytes, size_t len, const char* message) {
    char path[PATH_CAP], cmd[3 * PATH_CAP], log[PATH_CAP], label[256];
    tok_run("/dev/null", "rm -rf '%s/bad' && cp -r '%s/hf_gla_3_0' '%s/bad'", dir, dir, dir);
    snprintf(path, sizeof(path), "%s/bad/model.safetensors", dir);
    snprintf(label, sizeof(label), "import refuses a corrupt model.safetensors (%s)", what);
    if (old) {
        size_t n;
        unsigned char* data = tok_slurp(path, &n);
        char* at = data && n > 8 ? strstr((char*)data + 8, old) : NULL; // in the header: text up to the first NUL
        if (!at || strlen(old) != strlen(new_text)) { check(0, "%s: cannot place '%s'", label, old); free(data); return; }
        memcpy(at, new_text, strlen(new_text));
        tok_spit(path, data, n);
        free(data);
    }
    if (!damage_copy(path, path, keep, offset, bytes, len)) { check(0, "%s: cannot read '%s'", label, path); return; }
    snprintf(log, sizeof(log), "%s/bad.log", dir);
    snprintf(cmd, sizeof(cmd), "%s/train_gla import -i '%s/bad' -o '%s/bad.bin'", bin, dir, dir);
    check_fails(label, cmd, log, message, NULL);
}

// The strict JSON parser on its own: what it accepts and, for what it refuses, where it says so.
static void fla_check_json(void) {
    static const struct { const char* text; const char* error; } cases[] = {
        {"{\"a\": [1, -2.5e3, 0.125, true, false, null], \"b\": {\"c\": \"\\u00e9\\ud83d\\ude00\\n\\\"\"}}", NULL},
        {"  [ ]  ", NULL},
        {"{\"a\": 1,}", "line 1, column 9 (byte 8): expected a member's key"},
        {"{\"a\": 1 \"b\": 2}", "expected ',' or '}' in the object, found '\"'"},
        {"[01]", "expected ',' or ']' in the array, found '1'"},
        {"{\"a\":\n  NaN}", "line 2, column 3 (byte 8): expected a value, found 'N'"},
        {"[\"tab\there\"]", "control character 0x09 inside a string"},
        {"[\"\\x\"]", "unknown escape '\\x'"},
        {"[\"\\ud800\"]", "a high surrogate \\ud800 not followed by a low one"},
        {"{\"a\": 1, \"a\": 2}", "has the key \"a\" twice"},
        {"[1] [2]", "expected the end of the text after the value, found '['"},
        {"[\"open", "the string is not closed"},
        {"[1e999]", "the number 1e999 is out of range"},
        {"[\"\xc3\x28\"]", "invalid UTF-8 inside a string"},
        {"", "expected a value, found the end of the text"},
        {"[tru]", "expected 'true'"},
    };
    int ok = 1;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        Json j;
        const char* bad = json_parse(&j, (const unsigned char*)cases[k].text, strlen(cases[k].text));
        int right = cases[k].error ? bad && strstr(bad, cases[k].error) : !bad;
        if (!right) printf("      json case %zu: %s\n", k, bad ? bad : "accepted");
        ok &= right;
        json_free(&j);
    }
    Json j; // the first case decoded: é, 😀, newline, quote
    json_parse(&j, (const unsigned char*)cases[0].text, strlen(cases[0].text));
    int b = json_member(&j, 0, "b"), c = b >= 0 ? json_member(&j, b, "c") : -1;
    ok &= c >= 0 && strcmp(j.nodes[c].text, "\xc3\xa9\xf0\x9f\x98\x80\n\"") == 0;
    json_free(&j);
    char deep[200]; // nesting beyond JSON_MAX_DEPTH
    memset(deep, '[', sizeof(deep));
    const char* bad = json_parse(&j, (const unsigned char*)deep, sizeof(deep));
    ok &= bad && strstr(bad, "nesting deeper than 64 levels") != NULL;
    json_free(&j);
    check(ok, "json_parse: accepts escapes, surrogate pairs, numbers; refuses %zu malformed texts naming line, column and why",
          sizeof(cases) / sizeof(cases[0]) - 1);
}

static void test_fla(const char* dir) {
    printf("== 13. fla / Hugging Face files\n");
    write_tiny_data(dir);
    fla_check_json();
    const char* families[6] = {"gla", "hgrn", "hgrn2", "retnet", "deltanet", "gated_deltanet"};
    char pattern[64];
    for (int tie = 0; tie < 2; tie++) {
        for (int k = 0; k < 6; k++) {
            snprintf(pattern, sizeof(pattern), "%s:pure", families[k]);
            fla_check_roundtrip(dir, pattern, tie);
            snprintf(pattern, sizeof(pattern), "%s:3", families[k]);
            fla_check_roundtrip(dir, pattern, tie);
        }
        fla_check_roundtrip(dir, "attn", tie);
    }
    fla_check_header(dir);
    fla_check_bf16_and_shards(dir);

    // config.json: every option the C program does not implement, per family
    static const char* refused[][4] = {
        {"gla_3_0", "\"model_type\": \"gla\"", "\"model_type\": \"mamba\"", "model_type 'mamba' is not one this program implements"},
        {"gla_3_0", "\"hidden_act\": \"swish\"", "\"hidden_act\": \"gelu\"", "hidden_act 'gelu' is not implemented"},
        {"gla_3_0", "\"fuse_swiglu\": true", "\"fuse_swiglu\": true, \"attnres_block_size\": 2", "attnres_block_size (AttnRes residuals) is not implemented"},
        {"gla_3_0", "\"fuse_swiglu\": true", "\"fuse_swiglu\": true, \"elementwise_affine\": false", "elementwise_affine must be true"},
        {"gla_3_0", "\"vocab_size\": 256", "\"vocab_size\": 70000", "vocab_size must be a whole number in [2, 65536]"},
        {"gla_3_0", "\"feature_map\": null", "\"feature_map\": \"elu\"", "GLA feature_map 'elu' is not implemented"},
        {"gla_3_0", "\"use_short_conv\": false", "\"use_short_conv\": true", "GLA use_short_conv (short convolutions) is not implemented"},
        {"gla_3_0", "\"use_output_gate\": true", "\"use_output_gate\": false", "GLA without the output gate"},
        {"gla_3_0", "\"num_heads\": 2", "\"num_heads\": 2, \"num_kv_heads\": 1", "GLA num_kv_heads 1 != num_heads 2"},
        {"gla_3_0", "\"clamp_min\": null", "\"clamp_min\": -1.0", "GLA clamp_min is not implemented"},
        {"gla_3_0", "\"expand_k\": 0.5", "\"expand_k\": 0.3", "hidden_size 32 * expand_k 0.3 = 9.6 is not a whole number"},
        {"gla_3_0", "\"qkv_bias\": false", "\"qkv_bias\": true", "attn.qkv_bias (biases on q, k, v) is not implemented"},
        {"gla_3_0", "\"window_size\": null", "\"window_size\": 64", "attn.window_size (sliding-window attention) is not implemented"},
        {"gla_3_0", "\"qkv_bias\": false", "\"qkv_bias\": false, \"qk_norm\": true", "attn.qk_norm is not implemented"},
        {"gla_3_0", "\"layers\": [3]", "\"layers\": [3, 3]", "attn.layers names layer 3 twice"},
        {"gla_3_0", "\"layers\": [3]", "\"layers\": [4]", "attn.layers holds an entry that is not a layer index in [0, 4)"},
        {"hgrn_pure_0", "\"use_short_conv\": false", "\"use_short_conv\": true", "HGRN use_short_conv (short convolutions) is not implemented"},
        {"hgrn_pure_0", "\"expand_ratio\": 1", "\"expand_ratio\": 2", "HGRN expand_ratio must be 1 with use_lower_bound"},
        {"hgrn2_pure_0", "\"expand_ratio\": 32", "\"expand_ratio\": 5", "HGRN2 expand_ratio 5 must divide hidden_size 32"},
        {"hgrn2_pure_0", "\"use_short_conv\": false", "\"use_short_conv\": true", "HGRN2 use_short_conv (short convolutions) is not implemented"},
        {"retnet_3_0", "\"expand_v\": 2.0", "\"expand_v\": 1.0", "RetNet expand_k 1 / expand_v 1: only 1 and 2 are implemented"},
        {"retnet_3_0", "\"feature_map\": null", "\"feature_map\": \"relu\"", "RetNet feature_map 'relu' is not implemented"},
        {"retnet_3_0", "\"use_output_gate\": true", "\"use_output_gate\": false", "RetNet without the output gate"},
        {"retnet_3_0", "\"rope_theta\": 10000.0", "\"rope_theta\": 500000.0", "attn.rope_theta 500000 beside RetNet layers"},
        {"deltanet_pure_0", "\"use_gate\": false", "\"use_gate\": true", "DeltaNet use_gate (an output gate) is not implemented"},
        {"deltanet_pure_0", "\"use_beta\": true", "\"use_beta\": false", "DeltaNet without beta"},
        {"deltanet_pure_0", "\"use_short_conv\": true", "\"use_short_conv\": false", "DeltaNet without short convolutions"},
        {"deltanet_pure_0", "\"allow_neg_eigval\": false", "\"allow_neg_eigval\": true", "allow_neg_eigval is not implemented"},
        {"deltanet_pure_0", "\"qk_norm\": \"l2\"", "\"qk_norm\": \"sum\"", "DeltaNet qk_norm 'sum' is not implemented (only l2)"},
        {"deltanet_pure_0", "\"qk_activation\": \"silu\"", "\"qk_activation\": \"relu\"", "DeltaNet qk_activation 'relu' is not implemented"},
        {"deltanet_pure_0", "\"expand_k\": 1.0", "\"expand_k\": 0.5", "DeltaNet expand_k 0.5 / expand_v 1: only 1 is implemented"},
        {"gated_deltanet_3_0", "\"num_v_heads\": null", "\"num_v_heads\": 6", "Gated DeltaNet num_v_heads 6 != num_heads 3"},
        {"gated_deltanet_3_0", "\"use_gate\": true", "\"use_gate\": false", "Gated DeltaNet without the output gate"},
        {"gated_deltanet_3_0", "\"use_short_conv\": true", "\"use_short_conv\": false", "Gated DeltaNet without short convolutions"},
        {"gated_deltanet_3_0", "\"allow_neg_eigval\": false", "\"allow_neg_eigval\": true", "allow_neg_eigval is not implemented"},
        {"gated_deltanet_3_0", "\"output_gate_activation\": \"swish\"", "\"output_gate_activation\": \"sigmoid\"", "output_gate_activation 'sigmoid' is not implemented"},
        {"gated_deltanet_3_0", "\"expand_v\": 2", "\"expand_v\": 1.5", "Gated DeltaNet expand_v 1.5"},
        {"attn_0", "\"qk_norm\": false", "\"qk_norm\": true", "qk_norm is not implemented"},
        {"attn_0", "\"qkv_bias\": false", "\"qkv_bias\": true", "qkv_bias (biases on q, k, v) is not implemented"},
        {"attn_0", "\"window_size\": null", "\"window_size\": 128", "window_size (sliding-window attention) is not implemented"},
        {"attn_0", "\"num_heads\": 4", "\"num_heads\": 3", "the model is not one the C program can build: attn_heads 3 does not divide d_model 32"},
        // malformed JSON, named by line and column
        {"gla_3_0", "\"num_heads\": 2,", "\"num_heads\": 2,,", "not valid JSON: at line 14, column 18 (byte 414): expected a member's key"},
        {"gla_3_0", "\"fuse_norm\": true", "\"fuse_norm\": true, \"fuse_norm\": false", "has the key \"fuse_norm\" twice"},
        {"gla_3_0", "\"hidden_act\": \"swish\"", "\"hidden_act\": 'swish'", "expected a value, found '''"},
        {"gla_3_0", "\"num_heads\": 2", "\"num_heads\": \"2\"", "num_heads must be a whole number"},
        // tensors the config does not match: missing, unexpected, mis-shaped, a tied head that differs
        {"gla_pure_0", "\"num_hidden_layers\": 4", "\"num_hidden_layers\": 5", "has no tensor 'model.layers.4.attn_norm.weight'"},
        {"gla_pure_0", "\"num_hidden_layers\": 4", "\"num_hidden_layers\": 3", "unexpected tensor 'model.layers.3.attn_norm.weight'"},
        {"gla_pure_0", "\"num_heads\": 2", "\"num_heads\": 4", "tensor 'model.layers.0.attn.g_norm_swish_gate.weight' has shape (16,), the config implies (8,)"},
        {"gla_pure_0", "\"fuse_norm\": true", "\"fuse_norm\": false", "has no tensor 'model.layers.0.attn.g_norm.weight'"},
        {"gla_pure_0", "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true", "lm_head.weight differs from model.embeddings.weight"},
        {"gla_pure_1", "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false", "has no tensor 'lm_head.weight'"},
    };
    for (size_t k = 0; k < sizeof(refused) / sizeof(refused[0]); k++)
        fla_check_config_refused(dir, refused[k][0], refused[k][1], refused[k][2], refused[k][3]);

    // corrupt safetensors files
    char path[PATH_CAP];
    snprintf(path, sizeof(path), "%s/hf_gla_3_0/model.safetensors", dir);
    long size = file_bytes(path);
    uint64_t huge = 1ull << 40, short_header = 16;
    fla_check_file_refused(dir, "4 bytes", NULL, NULL, 4, -1, NULL, 0, "too short to be a safetensors file (4 bytes");
    fla_check_file_refused(dir, "header length beyond the file", NULL, NULL, -1, 0, &huge, 8,
                           "the header length 1099511627776 goes beyond the end of the file");
    fla_check_file_refused(dir, "header not JSON", NULL, NULL, -1, 8, "x", 1, "the header is not valid JSON: at line 1, column 1 (byte 0)");
    fla_check_file_refused(dir, "header cut inside", NULL, NULL, -1, 0, &short_header, 8, "the header is not valid JSON");
    fla_check_file_refused(dir, "4 bytes of data missing", NULL, NULL, size - 4, -1, NULL, 0,
                           "tensor 'lm_head.weight': data_offsets");
    fla_check_file_refused(dir, "8 bytes too many", NULL, NULL, size + 8, -1, NULL, 0,
                           "(8 bytes no tensor holds)");
    static const char* damaged[][4] = { // what, the header text replaced (the same length), by what, the message
        {"dtype F64", "\"F32\"", "\"F64\"", "tensor 'model.embeddings.weight': dtype 'F64' is not one this program reads (F32, BF16, F16)"},
        {"dtype I32", "\"F32\"", "\"I32\"", "dtype 'I32' is not one"},
        {"shape x dtype != bytes", "[256,32]", "[256,31]", "shape (256, 31) of F32 needs 31744 bytes, its data_offsets [0, 32768] hold 32768"},
        {"overlapping tensors", "[32768,32896]", "[32764,32892]",
         "tensor 'model.layers.0.attn_norm.weight' (bytes [32764, 32892]) overlaps tensor 'model.embeddings.weight'"},
        {"a gap", "[32768,32896]", "[32772,32900]", "the data has 4 bytes no tensor holds, before tensor 'model.layers.0.attn_norm.weight'"},
        {"offsets reversed", "[32768,32896]", "[32896,32768]", "end before they begin"},
        {"a duplicate name", "layers.0.attn.k_proj", "layers.0.attn.q_proj", "has the key \"model.layers.0.attn.q_proj.weight\" twice"},
        {"metadata not a string", "\"pt\"", "1234", "__metadata__ \"format\" is not a string"},
        {"an unknown tensor field", "\"shape\"", "\"shapf\"", "unknown field \"shapf\""},
    };
    for (size_t k = 0; k < sizeof(damaged) / sizeof(damaged[0]); k++)
        fla_check_file_refused(dir, damaged[k][0], damaged[k][1], damaged[k][2], -1, -1, NULL, 0, damaged[k][3]);

    // export refuses what fla cannot express: two linear families; GLA gate rank != 16
    char cmd[3 * PATH_CAP], log[PATH_CAP];
    snprintf(log, sizeof(log), "%s/export.log", dir);
    int rc = fla_train(dir, "mixed", "gla,hgrn,gla,attn", 1);
    snprintf(cmd, sizeof(cmd), "%s/train_gla export -c '%s/ck_mixed' -o '%s/hf_mixed'", bin, dir, dir);
    check_fails("export refuses a pattern with two linear families", cmd, log, "fla has no model that mixes linear families",
                rc == 0 ? "gla at layers 0, 2; hgrn at layer 1" : "(the run failed)");
    snprintf(path, sizeof(path), "%s/hf_mixed", dir);
    check(file_bytes(path) < 0, "export writes nothing when it refuses");
    Config c = small_config("gla:pure", 2, 1);
    ParamSpec specs[MAX_PARAMS];
    size_t n;
    param_table(&c, specs, &n);
    float* params = (float*)calloc_check(n, sizeof(float));
    snprintf(path, sizeof(path), "%s/rank4.bin", dir);
    checkpoint_write(path, &c, params, n);
    free(params);
    snprintf(cmd, sizeof(cmd), "%s/train_gla export -c '%s' -o '%s/hf_rank4'", bin, path, dir);
    check_fails("export refuses GLA gate rank 4", cmd, log, "fla's GLA has gate rank 16 and normalizer 16 fixed; this model has 4 and 16", NULL);
    snprintf(cmd, sizeof(cmd), "%s/train_gla export -c '%s/ck_gla_3_0'", bin, dir);
    check_fails("export without -o", cmd, log, "export needs -c CKPT and -o DIR", "usage: ");
    snprintf(cmd, sizeof(cmd), "%s/train_gla import -i '%s/nothing' -o '%s/x.bin'", bin, dir, dir);
    check_fails("import of a missing folder", cmd, log, "cannot open", "nothing/config.json");
}

int main(int argc, char** argv) {
    if (getenv("TEST_BIN_DIR")) bin = getenv("TEST_BIN_DIR");
    const char* dump_dir = argc > 1 ? argv[1] : "dev/dumps";
    char pattern[PATH_CAP];
    snprintf(pattern, sizeof(pattern), "%s/*.bin", dump_dir);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0 || g.gl_pathc == 0) fail("no reference dumps in '%s' (run dev/reference.py)", dump_dir);
    printf("== 1. reference dumps (%zu)\n", g.gl_pathc);
    for (size_t i = 0; i < g.gl_pathc; i++) test_dump(g.gl_pathv[i]);
    globfree(&g);

    printf("== 2. finite differences\n");
    test_fd_matmul();
    test_fd_encoder();
    test_fd_rmsnorm();
    test_fd_gated_rmsnorm();
    test_fd_swiglu();
    test_fd_rope();
    test_fd_attention();
    test_fd_crossentropy();
    test_fd_gla(0);
    test_fd_gla(1);
    test_fd_shortconv();
    test_fd_l2norm();
    test_fd_forget_gate(0);
    test_fd_forget_gate(1);
    test_fd_hgrn(0);
    test_fd_hgrn(1);
    for (int gated = 0; gated < 2; gated++) {
        test_fd_delta(0, gated);
        test_fd_delta(1, gated);
    }
    test_fd_model("gla,attn", 2, 0.3f);
    test_fd_model("attn,gla", 2, 0.3f);
    test_fd_model("hgrn,hgrn", 2, 0.3f);  // layer 1 reads the lower bounds
    test_fd_model("hgrn2,hgrn2", 2, 0.3f);
    test_fd_model("retnet,attn", 2, 0.3f);
    test_fd_model("deltanet,deltanet", 2, 0.3f);
    test_fd_model("gated_deltanet,gated_deltanet", 2, 0.3f);

    printf("== 3. recurrent == chunkwise (T = 37): GLA kernels (gla, retnet, hgrn2), delta rule, hgrn\n");
    int chunks[] = {1, 5, 16, 64};
    for (int i = 0; i < 4; i++) test_recurrent_vs_chunk(chunks[i], GATES_MILD, "(mild decay)", 8, 6);
    // strong decay: log-gates near −8 per step, cumulative sums far below −88 (exp(−G) would overflow)
    test_recurrent_vs_chunk(16, GATES_STRONG, "(strong decay)", 8, 6);
    for (int i = 0; i < 4; i++) test_recurrent_vs_chunk(chunks[i], GATES_RETNET, "(retnet gamma)", 8, 6);
    for (int i = 0; i < 4; i++) test_recurrent_vs_chunk(chunks[i], GATES_HGRN2, "(hgrn2 k = 1-e^a)", 8, 6);
    const char* delta_labels[3] = {"(deltanet)", "(gdn, mild gates)", "(gdn, strong gates)"};
    for (int gates = 0; gates < 3; gates++)
        for (int i = 0; i < 4; i++) test_delta_recurrent_vs_chunk(chunks[i], gates, delta_labels[gates], 8, 6);
    // the tiles and column strips: the default model's heads and a ragged shape
    int shapes[3][2] = {{32, 64}, {64, 64}, {9, 117}};
    for (int sh = 0; sh < 3; sh++) {
        int K = shapes[sh][0], V = shapes[sh][1];
        test_recurrent_vs_chunk(16, GATES_MILD, "(mild decay)", K, V);
        test_recurrent_vs_chunk(16, GATES_STRONG, "(strong decay)", K, V);
        test_recurrent_vs_chunk(5, GATES_HGRN2, "(hgrn2 k = 1-e^a)", K, V);
        for (int gates = 0; gates < 3; gates++) test_delta_recurrent_vs_chunk(16, gates, delta_labels[gates], K, V);
        test_delta_recurrent_vs_chunk(5, 1, delta_labels[1], K, V);
    }
    for (int i = 0; i < 4; i++) test_hgrn_recurrent_vs_chunk(chunks[i], 0, "(mild decay)");
    test_hgrn_recurrent_vs_chunk(16, 1, "(strong decay)");

    printf("== 4. incremental decoding == full forward\n");
    test_decode("gla:3", 4);
    test_decode("gla:pure", 4);
    test_decode("attn", 4);
    const char* linear[] = {"hgrn", "retnet", "hgrn2", "deltanet", "gated_deltanet"};
    char pat[64];
    for (int i = 0; i < 5; i++) {
        snprintf(pat, sizeof(pat), "%s:pure", linear[i]);
        test_decode(pat, 4);
        snprintf(pat, sizeof(pat), "%s:3", linear[i]);
        test_decode(pat, 4);
    }
    test_decode("gla,hgrn,retnet,attn,hgrn2,deltanet,gated_deltanet", 7);

    printf("== 5. checkpoints\n");
    char dir[] = "/tmp/test_gla_XXXXXX";
    if (!mkdtemp(dir)) fail("cannot create a temporary directory");
    test_checkpoint_roundtrip(dir, "gla,attn,gla,gla", 4);
    test_checkpoint_roundtrip(dir, "gla,hgrn,retnet,attn,hgrn2,deltanet,gated_deltanet", 7);
    Config old = small_config("gla,attn", 2, 0);
    old.hgrn_dim = old.hgrn2_heads = old.retnet_heads = old.deltanet_heads = old.gdn_heads = old.gdn_head_dim = 0;
    old.gdn_expand_v = old.conv_size = old.use_lower_bound = 0;
    check(validate_config(&old) == NULL, "checkpoint: a gla/attn header with the other families' sizes 0 "
                                         "(written before they existed) is still valid");
    test_init();

    printf("== 6. resume\n");
    test_resume(dir);

    test_tokenizers();

    printf("== 8. bad input\n");
    char bad_dir[] = "/tmp/test_bad_XXXXXX";
    if (!mkdtemp(bad_dir)) fail("cannot create a temporary directory");
    int failed_before = failed;
    test_bad_input(bad_dir);
    if (failed == failed_before) tok_run("/dev/null", "rm -rf '%s'", bad_dir); // kept for a look otherwise

    printf("== 9. kill -9 during saves\n");
    char kill_dir[] = "/tmp/test_kill_XXXXXX";
    if (!mkdtemp(kill_dir)) fail("cannot create a temporary directory");
    failed_before = failed;
    test_kill_during_save(kill_dir);
    if (failed == failed_before) tok_run("/dev/null", "rm -rf '%s'", kill_dir);

    test_mqar(dir);

    char run_dir[] = "/tmp/test_run_XXXXXX";
    if (!mkdtemp(run_dir)) fail("cannot create a temporary directory");
    failed_before = failed;
    test_never_lose_a_run(run_dir);
    if (failed == failed_before) tok_run("/dev/null", "rm -rf '%s'", run_dir);

    char use_dir[] = "/tmp/test_use_XXXXXX";
    if (!mkdtemp(use_dir)) fail("cannot create a temporary directory");
    failed_before = failed;
    test_use_trained(use_dir);
    if (failed == failed_before) tok_run("/dev/null", "rm -rf '%s'", use_dir);

    char fla_dir[] = "/tmp/test_fla_XXXXXX";
    if (!mkdtemp(fla_dir)) fail("cannot create a temporary directory");
    failed_before = failed;
    test_fla(fla_dir);
    if (failed == failed_before) tok_run("/dev/null", "rm -rf '%s'", fla_dir);

    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

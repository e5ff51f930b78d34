// ----------------------------------------------------------------------------
// GLA, the recurrent form (LAYERS.md §2.2): the clearest statement of the layer, used for generation
// and as the ground truth for the chunkwise form. Per head, with S ∈ R^{K×V}:
//     S_t = diag(exp(a_t)) S_{t−1} + k_t v_tᵀ,      o_t = S_tᵀ (scale · q_t)
// Column j of S_t needs only column j of S_{t−1}, and o_tj sums over that column alone, so one GPU
// thread owns one value column and walks its K rows in the CPU's order (the same sums, same order).

// Steps column j of one head's state, whose rows lie `stride` floats apart, and returns
// o_j = Σ_i S_ij scale q_i.  q, k, a (K) of this head and step; vj = v_j
__device__ inline float gla_column_step(float* Sj, size_t stride, const float* q, const float* k, const float* a,
                                        float vj, int K, float scale) {
    float out = 0.0f;
    for (int i = 0; i < K; i++) {
        float s = expf(a[i]) * Sj[i * stride] + k[i] * vj;
        Sj[i * stride] = s;
        out += s * (scale * q[i]);
    }
    return out;
}

// one thread per (h, j)
__global__ void gla_recurrent_step_kernel(float* o, float* S, const float* q, const float* k, const float* v,
                                          const float* a, int H, int K, int V, float scale) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;   // = h V + j, the index into o and v (H,V)
    if (idx >= H * V) return;
    int h = idx / V, j = idx % V;
    o[idx] = gla_column_step(S + (size_t)h * K * V + j, V, q + h * K, k + h * K, a + h * K, v[idx], K, scale);
}

// One time step for all heads. S (H,K,V) updated in place; o (H,V); q, k, a (H,K); v (H,V)
void gla_recurrent_step(float* o, float* S, const float* q, const float* k, const float* v, const float* a,
                        int H, int K, int V, float scale) {
    gla_recurrent_step_kernel<<<ceil_div((size_t)H * V, 256), 256>>>(o, S, q, k, v, a, H, K, V, scale);
    cuda_check(cudaGetLastError());
}

// one thread per (b, h, j); its state column lives in Scols (B,H,K,V) at (b,h,:,j)
__global__ void gla_recurrent_forward_kernel(float* o, float* Scols, const float* q, const float* k, const float* v,
                                             const float* a, int B, int T, int H, int K, int V, float scale) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b H + h) V + j
    if (idx >= (size_t)B * H * V) return;
    int j = idx % V;
    size_t bh = idx / V;
    int h = bh % H, b = bh / H;
    float* Sj = Scols + bh * K * V + j;
    for (int i = 0; i < K; i++) Sj[(size_t)i * V] = 0.0f;
    for (int t = 0; t < T; t++) {
        size_t rk = (((size_t)b * T + t) * H + h) * K, rv = (((size_t)b * T + t) * H + h) * V;
        o[rv + j] = gla_column_step(Sj, V, q + rk, k + rk, a + rk, v[rv + j], K, scale);
    }
}

// o (B,T,H,V) from q, k, a (B,T,H,K), v (B,T,H,V), zero initial state
void gla_recurrent_forward(float* o, const float* q, const float* k, const float* v, const float* a,
                           int B, int T, int H, int K, int V, float scale) {
    float* Scols = device_scratch(SCRATCH_GLA0, (size_t)B * H * K * V);
    gla_recurrent_forward_kernel<<<ceil_div((size_t)B * H * V, 128), 128>>>(o, Scols, q, k, v, a, B, T, H, K, V,
                                                                             scale);
    cuda_check(cudaGetLastError());
}

// The backward splits by what each output sums over. D = dL/dS_t evolves column by column without S:
//     D += scale q_t do_tᵀ;  dv_t = Dᵀ k_t;  D = diag(e^{a_t}) D
// so dv is a column sweep like the forward. dq, dk, da sum along a row i of S and D:
//     dq_ti = scale Σ_j S_t,ij do_tj;  dk_ti = Σ_j D_ij v_tj;  da_ti = e^{a_ti} Σ_j S_{t−1},ij D_ij
// and need S_t in reverse time order. Instead of keeping all T states (the CPU's way, too large here),
// a forward sweep keeps one state every L ≈ √T steps, and the reverse sweep replays each segment of L
// steps from its checkpoint: O((T/L + L) K V) memory per head for one extra forward sweep.

// Row i of one head's state through steps t0 .. t0+n−1: seg[l] = S_{t0+l} for l = 0..n, seg[0] = start.
// A row's V columns are K floats apart and consecutive states KV floats apart (layout (.., V, K), so
// that the threads i of one head touch neighbouring floats). kh, ah at (b, 0, h, i) with time stride sk;
// vh at (b, 0, h, 0) with time stride sv.
__device__ void gla_row_replay(float* seg, const float* start, const float* kh, const float* vh, const float* ah,
                               size_t sk, size_t sv, int t0, int n, int K, int V) {
    size_t KV = (size_t)K * V;
    for (int j = 0; j < V; j++) seg[(size_t)j * K] = start[(size_t)j * K];
    for (int l = 0; l < n; l++) {
        size_t t = t0 + l;
        float decay = expf(ah[t * sk]), kt = kh[t * sk];
        const float* prev = seg + l * KV;
        float* next = seg + (l + 1) * KV;
        for (int j = 0; j < V; j++) next[(size_t)j * K] = decay * prev[(size_t)j * K] + kt * vh[t * sv + j];
    }
}

// one thread per (b, h, i). Its slice of rows (B,H,NS+L+2,V,K): NS checkpoints (ck[s] = S_{sL}), the
// L+1 states of the segment being replayed, and row i of D.
__global__ void gla_recurrent_backward_rows_kernel(float* dq, float* dk, float* da, float* rows, const float* dout,
                                                   const float* q, const float* k, const float* v, const float* a,
                                                   int B, int T, int H, int K, int V, float scale, int L) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b H + h) K + i
    if (idx >= (size_t)B * H * K) return;
    int i = idx % K;
    size_t bh = idx / K;
    int h = bh % H, b = bh / H;
    int NS = (T + L - 1) / L;
    size_t KV = (size_t)K * V, sk = (size_t)H * K, sv = (size_t)H * V;
    float* ck = rows + bh * (NS + L + 2) * KV + i;   // ck[s KV + j K] = S_{sL}[i][j]
    float* seg = ck + NS * KV;                       // seg[l KV + j K] = S_{t0+l}[i][j]
    float* D = seg + (size_t)(L + 1) * KV;           // D[j K] = D[i][j]
    size_t hk = (size_t)b * T * sk + (size_t)h * K + i, hv = (size_t)b * T * sv + (size_t)h * V;
    const float *kh = k + hk, *ah = a + hk, *vh = v + hv;
    // forward sweep: the checkpoints
    for (int j = 0; j < V; j++) ck[(size_t)j * K] = 0.0f;
    for (int s = 0; s + 1 < NS; s++) {
        gla_row_replay(seg, ck + s * KV, kh, vh, ah, sk, sv, s * L, L, K, V);
        for (int j = 0; j < V; j++) ck[(s + 1) * KV + (size_t)j * K] = seg[L * KV + (size_t)j * K];
    }
    // reverse sweep, segment by segment
    for (int j = 0; j < V; j++) D[(size_t)j * K] = 0.0f;
    for (int s = NS - 1; s >= 0; s--) {
        int t0 = s * L, n = T - t0 < L ? T - t0 : L;
        gla_row_replay(seg, ck + s * KV, kh, vh, ah, sk, sv, t0, n, K, V);
        for (int l = n - 1; l >= 0; l--) {
            size_t t = t0 + l, rk = hk + t * sk, rv = hv + t * sv;
            const float *St = seg + (l + 1) * KV, *Sprev = seg + l * KV;
            float qi = scale * q[rk], decay = expf(a[rk]), sdo = 0.0f, dkv = 0.0f, dsum = 0.0f;
            for (int j = 0; j < V; j++) {
                float doj = dout[rv + j], d = D[(size_t)j * K] + qi * doj;
                sdo += St[(size_t)j * K] * doj;
                dkv += d * v[rv + j];
                dsum += Sprev[(size_t)j * K] * d;
                D[(size_t)j * K] = decay * d;
            }
            dq[rk] = scale * sdo;
            dk[rk] = dkv;
            da[rk] = decay * dsum;
        }
    }
}

// one thread per (b, h, j); column j of D lives in Dcols (B,H,K,V) at (b,h,:,j)
__global__ void gla_recurrent_backward_dv_kernel(float* dv, float* Dcols, const float* dout, const float* q,
                                                 const float* k, const float* a, int B, int T, int H, int K, int V,
                                                 float scale) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b H + h) V + j
    if (idx >= (size_t)B * H * V) return;
    int j = idx % V;
    size_t bh = idx / V;
    int h = bh % H, b = bh / H;
    float* Dj = Dcols + bh * K * V + j;
    for (int i = 0; i < K; i++) Dj[(size_t)i * V] = 0.0f;
    for (int t = T - 1; t >= 0; t--) {
        size_t rk = (((size_t)b * T + t) * H + h) * K, rv = (((size_t)b * T + t) * H + h) * V;
        float doj = dout[rv + j], dvj = 0.0f;
        for (int i = 0; i < K; i++) {
            float d = Dj[(size_t)i * V] + scale * q[rk + i] * doj;
            dvj += d * k[rk + i];
            Dj[(size_t)i * V] = expf(a[rk + i]) * d;
        }
        dv[rv + j] = dvj;
    }
}

// Exact backward of gla_recurrent_forward (LAYERS.md §2.5), the readable ground truth for the
// chunkwise backward. dq, dk, da (B,T,H,K), dv (B,T,H,V) overwritten; dout (B,T,H,V); q, k, a (B,T,H,K);
// v (B,T,H,V)
void gla_recurrent_backward(float* dq, float* dk, float* dv, float* da, const float* dout, const float* q,
                            const float* k, const float* v, const float* a, int B, int T, int H, int K, int V,
                            float scale) {
    int L = (int)ceil(sqrt((double)T)), NS = ceil_div(T, L);
    float* rows = device_scratch(SCRATCH_GLA0, (size_t)B * H * (NS + L + 2) * K * V);
    float* Dcols = device_scratch(SCRATCH_GLA1, (size_t)B * H * K * V);
    gla_recurrent_backward_rows_kernel<<<ceil_div((size_t)B * H * K, 128), 128>>>(dq, dk, da, rows, dout, q, k, v,
                                                                                  a, B, T, H, K, V, scale, L);
    cuda_check(cudaGetLastError());
    gla_recurrent_backward_dv_kernel<<<ceil_div((size_t)B * H * V, 128), 128>>>(dv, Dcols, dout, q, k, a, B, T, H,
                                                                                K, V, scale);
    cuda_check(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// GLA, the chunkwise-parallel form (LAYERS.md §2.4), used for training. Time is cut into chunks of
// C steps. Inside a chunk, G = chunk-local inclusive cumsum of a (≤ 0 and decreasing), G_L its last
// row, S = the state entering the chunk:
//     o_i    = scale [ (q_i ⊙ e^{G_i})ᵀ S + Σ_{j≤i} P_ij v_j ],   P_ij = Σ_c q_ic k_jc e^{G_ic − G_jc}
//     S_next = diag(e^{G_L}) S + Σ_j (k_j ⊙ e^{G_L − G_j}) v_jᵀ
// Every exponent is a difference G_later − G_earlier ≤ 0, so nothing overflows whatever the decay.
//
// On the GPU every chunk does its own work in parallel (its P, its own contribution to the next
// state, its outputs), and only the K×V state recurrence runs chunk after chunk, elementwise. The
// per-chunk products are tiled: a block of 256 threads computes a 64×64 output tile, each thread a
// 4×4 register block, reducing over slices of 16 staged in shared memory. Every output is summed by
// one thread in a fixed order, so results are deterministic.

// Gate gradient from dq and dk alone (LAYERS.md §2.5.3; what fla's kernels use), valid for a zero
// initial state and an unused final state:
//     da_t = Σ_{s≥t} (q_s ⊙ dq_s − k_s ⊙ dk_s)       (a reverse cumulative sum over time)
// Why: a_t enters exactly the terms q_i k_j e^{A_i − A_j} (j ≤ i) with j < t ≤ i. The suffix sum of
// q ⊙ dq collects all terms with i ≥ t, that of k ⊙ dk all with j ≥ t; their difference is the
// terms with i ≥ t > j. (The subtraction loses relative precision where the decay is very strong
// and da is tiny next to the terms; fla accepts the same.)
// On the GPU the suffix sum runs in two passes over segments of GLA_GATE_SEG rows, so that B·HK columns
// times T/GLA_GATE_SEG segments run in parallel: segment sums first, then each segment sweeps its rows
// from the sum of all later segments.
#define GLA_GATE_SEG 64

// one thread per (b, segment, column): seg_sum (B,NS,HK) = Σ over the segment's rows of q dq − k dk
__global__ void gla_gate_segment_sum_kernel(float* seg_sum, const float* q, const float* k, const float* dq,
                                            const float* dk, int B, int T, int HK) {
    int NS = (T + GLA_GATE_SEG - 1) / GLA_GATE_SEG;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NS + s) HK + c
    if (idx >= (size_t)B * NS * HK) return;
    int c = idx % HK;
    size_t bs = idx / HK;
    int s = bs % NS, b = bs / NS;
    int t0 = s * GLA_GATE_SEG, t1 = T < t0 + GLA_GATE_SEG ? T : t0 + GLA_GATE_SEG;
    float acc = 0.0f;
    for (int t = t1 - 1; t >= t0; t--) {
        size_t r = ((size_t)b * T + t) * HK + c;
        acc += q[r] * dq[r] - k[r] * dk[r];
    }
    seg_sum[idx] = acc;
}

// one thread per (b, segment, column): da over the segment's rows, last to first
__global__ void gla_gate_sweep_kernel(float* da, const float* seg_sum, const float* q, const float* k,
                                      const float* dq, const float* dk, int B, int T, int HK) {
    int NS = (T + GLA_GATE_SEG - 1) / GLA_GATE_SEG;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NS + s) HK + c
    if (idx >= (size_t)B * NS * HK) return;
    int c = idx % HK;
    size_t bs = idx / HK;
    int s = bs % NS, b = bs / NS;
    int t0 = s * GLA_GATE_SEG, t1 = T < t0 + GLA_GATE_SEG ? T : t0 + GLA_GATE_SEG;
    float acc = 0.0f;
    for (int later = NS - 1; later > s; later--) acc += seg_sum[((size_t)b * NS + later) * HK + c];
    for (int t = t1 - 1; t >= t0; t--) {
        size_t r = ((size_t)b * T + t) * HK + c;
        acc += q[r] * dq[r] - k[r] * dk[r];
        da[r] = acc;
    }
}

// da (B,T,H*K) overwritten; q, k, dq, dk (B,T,H*K). Scratch: the segment sums (B,NS,HK) in slot GLA0,
// which gla_chunk_backward calls this with after its last use of G there.
void gla_gate_grad(float* da, const float* q, const float* k, const float* dq, const float* dk, int B, int T, int HK) {
    size_t n = (size_t)B * ceil_div(T, GLA_GATE_SEG) * HK;
    float* seg_sum = device_scratch(SCRATCH_GLA0, n);
    gla_gate_segment_sum_kernel<<<ceil_div(n, 256), 256>>>(seg_sum, q, k, dq, dk, B, T, HK);
    cuda_check(cudaGetLastError());
    gla_gate_sweep_kernel<<<ceil_div(n, 256), 256>>>(da, seg_sum, q, k, dq, dk, B, T, HK);
    cuda_check(cudaGetLastError());
}

// G (B,T,HK) = a's inclusive cumsum within each chunk; one thread per (b, chunk, column)
__global__ void gla_chunk_cumsum_kernel(float* G, const float* a, int B, int T, int HK, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NC + ch) HK + c
    if (idx >= (size_t)B * NC * HK) return;
    int c = idx % HK;
    size_t bc = idx / HK;
    int ch = bc % NC, b = bc / NC;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    size_t r0 = ((size_t)b * T + t0) * HK + c;
    float g = 0.0f;
    for (int r = 0; r < n; r++) {
        g += a[r0 + (size_t)r * HK];
        G[r0 + (size_t)r * HK] = g;
    }
}

#define GLA_TILE 64      // output tile edge of the chunk products
#define GLA_SLICE 16     // reduction slice staged in shared memory per step
#define GLA_THREADS 256  // 16 × 16 threads; thread (ty, tx) owns outputs (ty + 16u, tx + 16w), u, w < 4
typedef float GlaSlice[GLA_SLICE][GLA_TILE + 1];   // [x][m]; the +1 spreads a column over the banks

// Fills a staged slice: dst[x][m] = value(m, x) for m < GLA_TILE, x < GLA_SLICE (value checks bounds).
// Consecutive threads take consecutive x when the source is contiguous along x (x_fastest), else
// consecutive m, so that global reads coalesce either way.
template <typename F>
__device__ inline void gla_stage_slice(GlaSlice dst, bool x_fastest, F value) {
    for (int e = threadIdx.x; e < GLA_SLICE * GLA_TILE; e += GLA_THREADS) {
        int x = x_fastest ? e % GLA_SLICE : e / GLA_TILE;
        int m = x_fastest ? e / GLA_SLICE : e % GLA_TILE;
        dst[x][m] = value(m, x);
    }
}

// acc[u][w] += Σ_x As[x][ty + 16u] Bs[x][tx + 16w]: one slice of a tile's plain matrix product
__device__ inline void gla_tile_product(float acc[4][4], const GlaSlice As, const GlaSlice Bs, int ty, int tx) {
    for (int x = 0; x < GLA_SLICE; x++) {
        float ar[4], br[4];
        for (int u = 0; u < 4; u++) { ar[u] = As[x][ty + 16 * u]; br[u] = Bs[x][tx + 16 * u]; }
        for (int u = 0; u < 4; u++)
            for (int w = 0; w < 4; w++) acc[u][w] += ar[u] * br[w];
    }
}

// The (b, h, chunk) of a block whose blockIdx.x = (b H + h) NC + ch, with the chunk's first row t0, its
// length n, and the offsets of its first row in (B,T,H,K) and (B,T,H,V) tensors.
struct GlaChunk {
    int b, h, ch, t0, n;
    size_t bhc, base_k, base_v;
};
__device__ inline GlaChunk gla_chunk_index(int T, int H, int K, int V, int C) {
    int NC = (T + C - 1) / C;
    GlaChunk c;
    c.bhc = blockIdx.x;
    c.ch = c.bhc % NC;
    c.h = (c.bhc / NC) % H;
    c.b = c.bhc / NC / H;
    c.t0 = c.ch * C;
    c.n = T - c.t0 < C ? T - c.t0 : C;
    c.base_k = (((size_t)c.b * T + c.t0) * H + c.h) * K;
    c.base_v = (((size_t)c.b * T + c.t0) * H + c.h) * V;
    return c;
}

// G_L of chunk ch at column i of head h: G at the chunk's last row, min(T, (ch+1) C) − 1
__device__ inline float gla_chunk_last_G(const float* G, int b, int h, int i, int ch, int T, int H, int K, int C) {
    int t_last = (ch + 1) * C < T ? (ch + 1) * C - 1 : T - 1;
    return G[(((size_t)b * T + t_last) * H + h) * K + i];
}

// P (B,H,NC,C,C), row-major per chunk: P_ij = scale Σ_c q_ic k_jc e^{G_ic − G_jc} for j ≤ i < n, 0
// elsewhere. Grid (B·H·NC, i tiles, j tiles).
__global__ void gla_chunk_scores_kernel(float* P, const float* q, const float* k, const float* G,
                                        int T, int H, int K, int C, float scale) {
    GlaChunk ci = gla_chunk_index(T, H, K, 1, C);
    int i0 = blockIdx.y * GLA_TILE, j0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    size_t sk = (size_t)H * K;
    float* Pc = P + ci.bhc * C * C;
    const float *qc = q + ci.base_k, *kc = k + ci.base_k, *Gc = G + ci.base_k;
    float acc[4][4] = {};
    if (j0 <= i0) {   // tiles wholly above the diagonal stay 0 (a block-uniform test)
        __shared__ GlaSlice Qs, Ks, Gq, Gk;
        for (int c0 = 0; c0 < K; c0 += GLA_SLICE) {
            auto row = [&](const float* src, int r, int c) { return r < n && c < K ? src[r * sk + c] : 0.0f; };
            gla_stage_slice(Qs, true, [&](int m, int x) { return row(qc, i0 + m, c0 + x); });
            gla_stage_slice(Gq, true, [&](int m, int x) { return row(Gc, i0 + m, c0 + x); });
            gla_stage_slice(Ks, true, [&](int m, int x) { return row(kc, j0 + m, c0 + x); });
            gla_stage_slice(Gk, true, [&](int m, int x) { return row(Gc, j0 + m, c0 + x); });
            __syncthreads();
            // only the pairs j ≤ i < n, whose exponents are ≤ 0 (a zero-filled row's G is not a cumsum)
            for (int x = 0; x < GLA_SLICE; x++)
                for (int u = 0; u < 4; u++) {
                    int i = i0 + ty + 16 * u;
                    float qi = Qs[x][ty + 16 * u], gi = Gq[x][ty + 16 * u];
                    for (int w = 0; w < 4; w++)
                        if (j0 + tx + 16 * w <= i && i < n)
                            acc[u][w] += qi * Ks[x][tx + 16 * w] * expf(gi - Gk[x][tx + 16 * w]);
                }
            __syncthreads();
        }
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int i = i0 + ty + 16 * u, j = j0 + tx + 16 * w;
            if (i < C && j < C) Pc[(size_t)i * C + j] = j <= i && i < n ? scale * acc[u][w] : 0.0f;
        }
}

// Per chunk, the (K,V) sum Σ_r (x_r ⊙ w_r) y_rᵀ over its rows, written to the state slot of the chunk
// it feeds:
//   forward  (x = k, y = v):  w_r = e^{G_L − G_r},  into slot ch+1   (the chunk's own part of S_next)
//   backward (x = q, y = do): w_r = scale e^{G_r},  into slot ch−1   (its own part of dS of chunk ch−1)
// The chunk whose slot falls outside [0, NC) feeds nothing and returns.
// out (B,H,NC,K,V); x, G (B,T,H,K); y (B,T,H,V). Grid (B·H·NC, K tiles, V tiles).
__global__ void gla_chunk_state_sum_kernel(float* out, const float* x, const float* y, const float* G,
                                           int T, int H, int K, int V, int C, float scale, int backward) {
    GlaChunk ci = gla_chunk_index(T, H, K, V, C);
    int NC = (T + C - 1) / C, slot = backward ? ci.ch - 1 : ci.ch + 1;
    if (slot < 0 || slot >= NC) return;
    int i0 = blockIdx.y * GLA_TILE, j0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    size_t sk = (size_t)H * K, sv = (size_t)H * V;
    const float *xc = x + ci.base_k, *Gc = G + ci.base_k, *yc = y + ci.base_v, *GL = Gc + (n - 1) * sk;
    __shared__ GlaSlice Xs, Ys;
    float acc[4][4] = {};
    for (int r0 = 0; r0 < n; r0 += GLA_SLICE) {
        gla_stage_slice(Xs, false, [&](int m, int xr) {
            int i = i0 + m, r = r0 + xr;
            if (i >= K || r >= n) return 0.0f;
            float g = Gc[r * sk + i];
            return backward ? scale * xc[r * sk + i] * expf(g) : xc[r * sk + i] * expf(GL[i] - g);
        });
        gla_stage_slice(Ys, false, [&](int m, int xr) {
            int j = j0 + m, r = r0 + xr;
            return j < V && r < n ? yc[r * sv + j] : 0.0f;
        });
        __syncthreads();
        gla_tile_product(acc, Xs, Ys, ty, tx);
        __syncthreads();
    }
    float* dst = out + (ci.bhc - ci.ch + slot) * K * V;   // (b, h, slot)
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int i = i0 + ty + 16 * u, j = j0 + tx + 16 * w;
            if (i < K && j < V) dst[(size_t)i * V + j] = acc[u][w];
        }
}

// The state recurrence across chunks, in place: slot c+1 holds chunk c's own sum on entry and
//     S_{c+1} = diag(e^{G_L(c)}) S_c + (that sum),   S_0 = 0
// on exit. states (B,H,NC,K,V); G (B,T,H,K). One thread per (b, h, i, j).
__global__ void gla_chunk_state_scan_kernel(float* states, const float* G, int B, int T, int H, int K, int V, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = ((b H + h) K + i) V + j
    if (idx >= (size_t)B * H * K * V) return;
    size_t KV = (size_t)K * V, bh = idx / KV;
    int i = (idx / V) % K, h = bh % H, b = bh / H;
    float* s = states + bh * NC * KV + idx % KV;   // s[c KV] = S_c[i][j]
    float S = 0.0f;
    s[0] = 0.0f;
    for (int c = 0; c + 1 < NC; c++) {
        S = expf(gla_chunk_last_G(G, b, h, i, c, T, H, K, C)) * S + s[(c + 1) * KV];
        s[(c + 1) * KV] = S;
    }
}

// o (B,T,H,V) = scale (q ⊙ e^G)ᵀ S + P v per chunk. Grid (B·H·NC, row tiles, V tiles).
__global__ void gla_chunk_output_kernel(float* o, const float* states, const float* P, const float* q,
                                        const float* v, const float* G, int T, int H, int K, int V, int C,
                                        float scale) {
    GlaChunk ci = gla_chunk_index(T, H, K, V, C);
    int r0 = blockIdx.y * GLA_TILE, j0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    if (r0 >= n) return;   // rows past a partial last chunk
    size_t sk = (size_t)H * K, sv = (size_t)H * V;
    const float *qc = q + ci.base_k, *Gc = G + ci.base_k, *vc = v + ci.base_v;
    const float *S = states + ci.bhc * K * V, *Pc = P + ci.bhc * C * C;
    __shared__ GlaSlice As, Bs;
    float acc[4][4] = {};
    // o_r = (scale q_r ⊙ e^{G_r})ᵀ S
    for (int c0 = 0; c0 < K; c0 += GLA_SLICE) {
        gla_stage_slice(As, true, [&](int m, int x) {
            int r = r0 + m, c = c0 + x;
            return r < n && c < K ? scale * qc[r * sk + c] * expf(Gc[r * sk + c]) : 0.0f;
        });
        gla_stage_slice(Bs, false, [&](int m, int x) {
            int j = j0 + m, c = c0 + x;
            return j < V && c < K ? S[(size_t)c * V + j] : 0.0f;
        });
        __syncthreads();
        gla_tile_product(acc, As, Bs, ty, tx);
        __syncthreads();
    }
    // o_r += Σ_{p≤r} P_rp v_p  (P is 0 above the diagonal: p stops at the tile's last row)
    int p_end = n < r0 + GLA_TILE ? n : r0 + GLA_TILE;
    for (int p0 = 0; p0 < p_end; p0 += GLA_SLICE) {
        gla_stage_slice(As, true, [&](int m, int x) {
            int r = r0 + m, p = p0 + x;
            return r < n && p < n ? Pc[(size_t)r * C + p] : 0.0f;
        });
        gla_stage_slice(Bs, false, [&](int m, int x) {
            int j = j0 + m, p = p0 + x;
            return j < V && p < n ? vc[p * sv + j] : 0.0f;
        });
        __syncthreads();
        gla_tile_product(acc, As, Bs, ty, tx);
        __syncthreads();
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, j = j0 + tx + 16 * w;
            if (r < n && j < V) o[ci.base_v + r * sv + j] = acc[u][w];
        }
}

// o (B,T,H,V); states (B,H,NC,K,V) = the state entering each of the NC = ceil(T/C) chunks (kept for
// the backward); q, k, a (B,T,H,K); v (B,T,H,V). Scratch: G (B,T,H,K), P (B,H,NC,C,C).
void gla_chunk_forward(float* o, float* states, const float* q, const float* k, const float* v, const float* a,
                       int B, int T, int H, int K, int V, int C, float scale) {
    int NC = ceil_div(T, C);
    size_t nG = (size_t)B * T * H * K, nbhc = (size_t)B * H * NC;
    float* G = device_scratch(SCRATCH_GLA0, nG);
    float* P = device_scratch(SCRATCH_GLA1, nbhc * C * C);
    gla_chunk_cumsum_kernel<<<ceil_div((size_t)B * NC * H * K, 256), 256>>>(G, a, B, T, H * K, C);
    cuda_check(cudaGetLastError());
    dim3 chunk_tiles((unsigned)nbhc, ceil_div(C, GLA_TILE), ceil_div(C, GLA_TILE));
    dim3 state_tiles((unsigned)nbhc, ceil_div(K, GLA_TILE), ceil_div(V, GLA_TILE));
    dim3 out_tiles((unsigned)nbhc, ceil_div(C, GLA_TILE), ceil_div(V, GLA_TILE));
    gla_chunk_scores_kernel<<<chunk_tiles, GLA_THREADS>>>(P, q, k, G, T, H, K, C, scale);
    cuda_check(cudaGetLastError());
    gla_chunk_state_sum_kernel<<<state_tiles, GLA_THREADS>>>(states, k, v, G, T, H, K, V, C, scale, 0);
    cuda_check(cudaGetLastError());
    gla_chunk_state_scan_kernel<<<ceil_div((size_t)B * H * K * V, 256), 256>>>(states, G, B, T, H, K, V, C);
    cuda_check(cudaGetLastError());
    gla_chunk_output_kernel<<<out_tiles, GLA_THREADS>>>(o, states, P, q, v, G, T, H, K, V, C, scale);
    cuda_check(cudaGetLastError());
}

// dP (B,H,NC,C,C): dP_ij = scale do_i·v_j for j ≤ i < n, 0 elsewhere. Grid (B·H·NC, i tiles, j tiles).
__global__ void gla_chunk_dscores_kernel(float* dP, const float* dout, const float* v, int T, int H, int V, int C,
                                         float scale) {
    GlaChunk ci = gla_chunk_index(T, H, 1, V, C);
    int i0 = blockIdx.y * GLA_TILE, j0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    size_t sv = (size_t)H * V;
    const float *doc = dout + ci.base_v, *vc = v + ci.base_v;
    float* dPc = dP + ci.bhc * C * C;
    float acc[4][4] = {};
    if (j0 <= i0) {   // tiles wholly above the diagonal stay 0 (a block-uniform test)
        __shared__ GlaSlice As, Bs;
        for (int x0 = 0; x0 < V; x0 += GLA_SLICE) {
            gla_stage_slice(As, true, [&](int m, int x) {
                int i = i0 + m, c = x0 + x;
                return i < n && c < V ? doc[i * sv + c] : 0.0f;
            });
            gla_stage_slice(Bs, true, [&](int m, int x) {
                int j = j0 + m, c = x0 + x;
                return j < n && c < V ? vc[j * sv + c] : 0.0f;
            });
            __syncthreads();
            gla_tile_product(acc, As, Bs, ty, tx);
            __syncthreads();
        }
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int i = i0 + ty + 16 * u, j = j0 + tx + 16 * w;
            if (i < C && j < C) dPc[(size_t)i * C + j] = j <= i && i < n ? scale * acc[u][w] : 0.0f;
        }
}

// The gradient recurrence across chunks, backwards and in place: slot c−1 holds chunk c's own sum on
// entry, and with dS_c = dL/d(state leaving chunk c)
//     dS_{c−1} = diag(e^{G_L(c)}) dS_c + (that sum),   dS_{NC−1} = 0
// on exit. dS (B,H,NC,K,V); G (B,T,H,K). One thread per (b, h, i, j).
__global__ void gla_chunk_dstate_scan_kernel(float* dS, const float* G, int B, int T, int H, int K, int V, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = ((b H + h) K + i) V + j
    if (idx >= (size_t)B * H * K * V) return;
    size_t KV = (size_t)K * V, bh = idx / KV;
    int i = (idx / V) % K, h = bh % H, b = bh / H;
    float* s = dS + bh * NC * KV + idx % KV;   // s[c KV] = dS_c[i][j]
    float D = 0.0f;
    s[(NC - 1) * KV] = 0.0f;
    for (int c = NC - 1; c >= 1; c--) {
        D = expf(gla_chunk_last_G(G, b, h, i, c, T, H, K, C)) * D + s[(c - 1) * KV];
        s[(c - 1) * KV] = D;
    }
}

// dq_r = scale e^{G_r} ⊙ (S do_r) + Σ_{p≤r} dP_rp (k_p ⊙ e^{G_r − G_p}).
// dq (B,T,H,K). Grid (B·H·NC, row tiles, K tiles). (The launch bound caps registers at 128, so that
// two blocks share an SM.)
__global__ void __launch_bounds__(GLA_THREADS, 2) gla_chunk_dq_kernel(float* dq, const float* states, const float* dP, const float* dout,
                                    const float* k, const float* G, int T, int H, int K, int V, int C, float scale) {
    GlaChunk ci = gla_chunk_index(T, H, K, V, C);
    int r0 = blockIdx.y * GLA_TILE, c0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    if (r0 >= n) return;   // rows past a partial last chunk
    size_t sk = (size_t)H * K, sv = (size_t)H * V;
    const float *kc = k + ci.base_k, *Gc = G + ci.base_k, *doc = dout + ci.base_v;
    const float *S = states + ci.bhc * K * V, *dPc = dP + ci.bhc * C * C;
    __shared__ GlaSlice As, Bs, Gs;
    float acc[4][4] = {}, Gr[4][4];
    // S do_r
    for (int x0 = 0; x0 < V; x0 += GLA_SLICE) {
        gla_stage_slice(As, true, [&](int m, int x) {
            int r = r0 + m, j = x0 + x;
            return r < n && j < V ? doc[r * sv + j] : 0.0f;
        });
        gla_stage_slice(Bs, true, [&](int m, int x) {
            int c = c0 + m, j = x0 + x;
            return c < K && j < V ? S[(size_t)c * V + j] : 0.0f;
        });
        __syncthreads();
        gla_tile_product(acc, As, Bs, ty, tx);
        __syncthreads();
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, c = c0 + tx + 16 * w;
            Gr[u][w] = r < n && c < K ? Gc[r * sk + c] : 0.0f;
            acc[u][w] *= scale * expf(Gr[u][w]);
        }
    // the intra-chunk pairs p ≤ r < n (exponents ≤ 0)
    int p_end = n < r0 + GLA_TILE ? n : r0 + GLA_TILE;
    for (int p0 = 0; p0 < p_end; p0 += GLA_SLICE) {
        gla_stage_slice(As, true, [&](int m, int x) {
            int r = r0 + m, p = p0 + x;
            return r < n && p < n ? dPc[(size_t)r * C + p] : 0.0f;
        });
        gla_stage_slice(Bs, false, [&](int m, int x) {
            int c = c0 + m, p = p0 + x;
            return c < K && p < n ? kc[p * sk + c] : 0.0f;
        });
        gla_stage_slice(Gs, false, [&](int m, int x) {
            int c = c0 + m, p = p0 + x;
            return c < K && p < n ? Gc[p * sk + c] : 0.0f;
        });
        __syncthreads();
        for (int x = 0; x < GLA_SLICE; x++)
            for (int u = 0; u < 4; u++)
                for (int w = 0; w < 4; w++)
                    if (p0 + x <= r0 + ty + 16 * u && r0 + ty + 16 * u < n)
                        acc[u][w] += As[x][ty + 16 * u] * Bs[x][tx + 16 * w] * expf(Gr[u][w] - Gs[x][tx + 16 * w]);
        __syncthreads();
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, c = c0 + tx + 16 * w;
            if (r < n && c < K) dq[ci.base_k + r * sk + c] = acc[u][w];
        }
}

// dk_r = e^{G_L − G_r} ⊙ (dS v_r) + Σ_{p≥r} dP_pr (q_p ⊙ e^{G_p − G_r}), dS = the gradient of the state
// leaving the chunk. dk (B,T,H,K). Grid (B·H·NC, row tiles, K tiles); launch bound as dq's.
__global__ void __launch_bounds__(GLA_THREADS, 2) gla_chunk_dk_kernel(float* dk, const float* dS, const float* dP, const float* v, const float* q,
                                    const float* G, int T, int H, int K, int V, int C) {
    GlaChunk ci = gla_chunk_index(T, H, K, V, C);
    int r0 = blockIdx.y * GLA_TILE, c0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    if (r0 >= n) return;   // rows past a partial last chunk
    size_t sk = (size_t)H * K, sv = (size_t)H * V;
    const float *qc = q + ci.base_k, *Gc = G + ci.base_k, *vc = v + ci.base_v;
    const float *dSc = dS + ci.bhc * K * V, *dPc = dP + ci.bhc * C * C;
    __shared__ GlaSlice As, Bs, Gs;
    float acc[4][4] = {}, Gr[4][4];
    // dS v_r
    for (int x0 = 0; x0 < V; x0 += GLA_SLICE) {
        gla_stage_slice(As, true, [&](int m, int x) {
            int r = r0 + m, j = x0 + x;
            return r < n && j < V ? vc[r * sv + j] : 0.0f;
        });
        gla_stage_slice(Bs, true, [&](int m, int x) {
            int c = c0 + m, j = x0 + x;
            return c < K && j < V ? dSc[(size_t)c * V + j] : 0.0f;
        });
        __syncthreads();
        gla_tile_product(acc, As, Bs, ty, tx);
        __syncthreads();
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, c = c0 + tx + 16 * w;
            bool valid = r < n && c < K;
            Gr[u][w] = valid ? Gc[r * sk + c] : 0.0f;
            acc[u][w] *= valid ? expf(Gc[(n - 1) * sk + c] - Gr[u][w]) : 0.0f;
        }
    // the intra-chunk pairs r ≤ p < n (exponents ≤ 0)
    for (int p0 = r0; p0 < n; p0 += GLA_SLICE) {
        gla_stage_slice(As, false, [&](int m, int x) {
            int r = r0 + m, p = p0 + x;
            return r < n && p < n ? dPc[(size_t)p * C + r] : 0.0f;
        });
        gla_stage_slice(Bs, false, [&](int m, int x) {
            int c = c0 + m, p = p0 + x;
            return c < K && p < n ? qc[p * sk + c] : 0.0f;
        });
        gla_stage_slice(Gs, false, [&](int m, int x) {
            int c = c0 + m, p = p0 + x;
            return c < K && p < n ? Gc[p * sk + c] : 0.0f;
        });
        __syncthreads();
        for (int x = 0; x < GLA_SLICE; x++)
            for (int u = 0; u < 4; u++)
                for (int w = 0; w < 4; w++)
                    if (r0 + ty + 16 * u <= p0 + x && p0 + x < n)
                        acc[u][w] += As[x][ty + 16 * u] * Bs[x][tx + 16 * w] * expf(Gs[x][tx + 16 * w] - Gr[u][w]);
        __syncthreads();
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, c = c0 + tx + 16 * w;
            if (r < n && c < K) dk[ci.base_k + r * sk + c] = acc[u][w];
        }
}

// dv_r = dSᵀ (k_r ⊙ e^{G_L − G_r}) + Σ_{p≥r} P_pr do_p. dv (B,T,H,V). Grid (B·H·NC, row tiles, V tiles).
__global__ void gla_chunk_dv_kernel(float* dv, const float* dS, const float* P, const float* dout, const float* k,
                                    const float* G, int T, int H, int K, int V, int C) {
    GlaChunk ci = gla_chunk_index(T, H, K, V, C);
    int r0 = blockIdx.y * GLA_TILE, j0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    if (r0 >= n) return;   // rows past a partial last chunk
    size_t sk = (size_t)H * K, sv = (size_t)H * V;
    const float *kc = k + ci.base_k, *Gc = G + ci.base_k, *doc = dout + ci.base_v, *GL = Gc + (n - 1) * sk;
    const float *dSc = dS + ci.bhc * K * V, *Pc = P + ci.bhc * C * C;
    __shared__ GlaSlice As, Bs;
    float acc[4][4] = {};
    // dSᵀ (k_r ⊙ e^{G_L − G_r})
    for (int x0 = 0; x0 < K; x0 += GLA_SLICE) {
        gla_stage_slice(As, true, [&](int m, int x) {
            int r = r0 + m, c = x0 + x;
            return r < n && c < K ? kc[r * sk + c] * expf(GL[c] - Gc[r * sk + c]) : 0.0f;
        });
        gla_stage_slice(Bs, false, [&](int m, int x) {
            int j = j0 + m, c = x0 + x;
            return j < V && c < K ? dSc[(size_t)c * V + j] : 0.0f;
        });
        __syncthreads();
        gla_tile_product(acc, As, Bs, ty, tx);
        __syncthreads();
    }
    // Σ_{p≥r} P_pr do_p (P_pr is 0 for p < r)
    for (int p0 = r0; p0 < n; p0 += GLA_SLICE) {
        gla_stage_slice(As, false, [&](int m, int x) {
            int r = r0 + m, p = p0 + x;
            return r < n && p < n ? Pc[(size_t)p * C + r] : 0.0f;
        });
        gla_stage_slice(Bs, false, [&](int m, int x) {
            int j = j0 + m, p = p0 + x;
            return j < V && p < n ? doc[p * sv + j] : 0.0f;
        });
        __syncthreads();
        gla_tile_product(acc, As, Bs, ty, tx);
        __syncthreads();
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, j = j0 + tx + 16 * w;
            if (r < n && j < V) dv[ci.base_v + r * sv + j] = acc[u][w];
        }
}

// Backward of gla_chunk_forward. dq, dk, da (B,T,H,K), dv (B,T,H,V) overwritten; dout (B,T,H,V).
// With dS = dL/dS_next of a chunk and dP_ij = scale do_i·v_j (j ≤ i):
//     dq_i = scale e^{G_i} ⊙ (S do_i) + Σ_{j≤i} dP_ij (k_j ⊙ e^{G_i−G_j})
//     dk_j = e^{G_L−G_j} ⊙ (dS v_j) + Σ_{i≥j} dP_ij (q_i ⊙ e^{G_i−G_j})
//     dv_j = Σ_{i≥j} P_ij do_i + dSᵀ (k_j ⊙ e^{G_L−G_j})
//     dS  ← diag(e^{G_L}) dS + Σ_i (scale q_i ⊙ e^{G_i}) do_iᵀ     (into the chunk before)
// and the gate gradient comes from dq, dk through the reverse-cumsum identity (gla_gate_grad).
// The dS of every chunk is found first (each chunk's own sum in parallel, then the recurrence
// backwards over chunks), and then every chunk's gradients in parallel.
// Scratch: G (B,T,H,K), P and dP (B,H,NC,C,C), dS (B,H,NC,K,V).
void gla_chunk_backward(float* dq, float* dk, float* dv, float* da, const float* dout, const float* states,
                        const float* q, const float* k, const float* v, const float* a, int B, int T, int H, int K,
                        int V, int C, float scale) {
    int NC = ceil_div(T, C);
    size_t nbhc = (size_t)B * H * NC;
    float* G = device_scratch(SCRATCH_GLA0, (size_t)B * T * H * K);
    float* P = device_scratch(SCRATCH_GLA1, 2 * nbhc * C * C);
    float* dP = P + nbhc * C * C;
    float* dS = device_scratch(SCRATCH_GLA2, nbhc * K * V);
    gla_chunk_cumsum_kernel<<<ceil_div((size_t)B * NC * H * K, 256), 256>>>(G, a, B, T, H * K, C);
    cuda_check(cudaGetLastError());
    dim3 chunk_tiles((unsigned)nbhc, ceil_div(C, GLA_TILE), ceil_div(C, GLA_TILE));
    dim3 state_tiles((unsigned)nbhc, ceil_div(K, GLA_TILE), ceil_div(V, GLA_TILE));
    dim3 k_tiles((unsigned)nbhc, ceil_div(C, GLA_TILE), ceil_div(K, GLA_TILE));
    dim3 v_tiles((unsigned)nbhc, ceil_div(C, GLA_TILE), ceil_div(V, GLA_TILE));
    gla_chunk_scores_kernel<<<chunk_tiles, GLA_THREADS>>>(P, q, k, G, T, H, K, C, scale);
    cuda_check(cudaGetLastError());
    gla_chunk_dscores_kernel<<<chunk_tiles, GLA_THREADS>>>(dP, dout, v, T, H, V, C, scale);
    cuda_check(cudaGetLastError());
    gla_chunk_state_sum_kernel<<<state_tiles, GLA_THREADS>>>(dS, q, dout, G, T, H, K, V, C, scale, 1);
    cuda_check(cudaGetLastError());
    gla_chunk_dstate_scan_kernel<<<ceil_div((size_t)B * H * K * V, 256), 256>>>(dS, G, B, T, H, K, V, C);
    cuda_check(cudaGetLastError());
    gla_chunk_dq_kernel<<<k_tiles, GLA_THREADS>>>(dq, states, dP, dout, k, G, T, H, K, V, C, scale);
    cuda_check(cudaGetLastError());
    gla_chunk_dk_kernel<<<k_tiles, GLA_THREADS>>>(dk, dS, dP, v, q, G, T, H, K, V, C);
    cuda_check(cudaGetLastError());
    gla_chunk_dv_kernel<<<v_tiles, GLA_THREADS>>>(dv, dS, P, dout, k, G, T, H, K, V, C);
    cuda_check(cudaGetLastError());
    gla_gate_grad(da, q, k, dq, dk, B, T, H * K);
}

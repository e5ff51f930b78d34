// ----------------------------------------------------------------------------
// The delta rule (DeltaNet, LAYERS.md §5) and the gated delta rule (Gated DeltaNet, §6), recurrent
// form. Per head, S ∈ R^{K×V}; q, k are L2-normalised, β ∈ (0,1), g ≤ 0 (no decay for DeltaNet):
//     S'_{t−1} = e^{g_t} S_{t−1}             decay first
//     u_t = v_t − S'_{t−1}ᵀ k_t              the prediction error of the decayed state
//     S_t = S'_{t−1} + β_t k_t u_tᵀ          = e^{g_t} (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ
//     o_t = S_tᵀ (scale q_t)
//
// On the GPU every update of S is independent per value column j (kᵀS is a sum over K within the
// column), so a block owns DELTA_VT columns of one head's state and loops over time. Each column
// belongs to DELTA_KSPLIT consecutive lanes of one warp; lane ks holds rows ks, ks + DELTA_KSPLIT, …
// so a sum over K is a few shuffles, and a lane's rows of S (and of dL/dS) are touched by it alone:
// they live in "lane-private" arrays, entry m (row ks + DELTA_KSPLIT m) at [m · DELTA_THREADS], which
// needs no synchronisation. Sums over V (dq, dk, dβ, dg in the backward) are summed per block in a
// fixed order, then over the blocks' value tiles by a second kernel: no atomics, the same bits each run.
#define DELTA_KSPLIT 8                                  // lanes per value column (a power of two ≤ 32)
#define DELTA_VT 16                                     // value columns per block
#define DELTA_THREADS (DELTA_KSPLIT * DELTA_VT)         // 128
#define DELTA_WARPS (DELTA_THREADS / 32)

// Sum over the lanes of one value column (a sum over K); every lane of the column gets it.
__device__ float delta_column_sum(float x) {
    for (int o = DELTA_KSPLIT / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Sum over the value columns of one warp, lane ks of each; every lane gets it.
__device__ float delta_warp_column_sum(float x) {
    for (int o = DELTA_KSPLIT; o < 32; o *= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Sᵀx for this lane's value column: S lane-private (K rows), x (K); every lane of the column gets it.
__device__ float delta_column_dot(const float* S, const float* x, int K) {
    float s = 0.0f;
    for (int m = 0, r = threadIdx.x % DELTA_KSPLIT; r < K; m++, r += DELTA_KSPLIT) s += S[m * DELTA_THREADS] * x[r];
    return delta_column_sum(s);
}

// One head, one step, this lane's value column: S_new = α S_old + β k u with u = v − α S_oldᵀ k,
// returned to every lane of the column. S_new, S_old lane-private (K rows; may be the same); k (K);
// v, the column's entry of v. α = e^{g}.
__device__ float delta_head_update(float* S_new, const float* S_old, const float* k, float v, float beta,
                                   float alpha, int K) {
    float u = v - alpha * delta_column_dot(S_old, k, K);
    for (int m = 0, r = threadIdx.x % DELTA_KSPLIT; r < K; m++, r += DELTA_KSPLIT)
        S_new[m * DELTA_THREADS] = alpha * S_old[m * DELTA_THREADS] + beta * k[r] * u;
    return u;
}

// Floats of one lane-private K-row array for the whole block
__host__ __device__ static size_t delta_lane_floats(int K) {
    return (size_t)((K + DELTA_KSPLIT - 1) / DELTA_KSPLIT) * DELTA_THREADS;
}

// A kernel may use more than the default 48 KiB of dynamic shared memory only when allowed to
// (H100 / H200: up to 227 KiB per block).
static void delta_allow_smem(const void* kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// grid (V/DELTA_VT, H), block DELTA_THREADS, dynamic smem: the block's columns of S, lane-private
__global__ void delta_recurrent_step_kernel(float* o, float* S, const float* q, const float* k, const float* v,
                                            const float* beta, const float* g, int K, int V, float scale) {
    extern __shared__ float smem[];
    float* Sl = smem + threadIdx.x;
    int h = blockIdx.y, ks = threadIdx.x % DELTA_KSPLIT, j = blockIdx.x * DELTA_VT + threadIdx.x / DELTA_KSPLIT;
    bool active = j < V;   // the last tile may be partial; its idle columns stay zero
    float* Sh = S + (size_t)h * K * V + j;
    for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) Sl[m * DELTA_THREADS] = active ? Sh[(size_t)r * V] : 0.0f;
    delta_head_update(Sl, Sl, k + h * K, active ? v[h * V + j] : 0.0f, beta[h], g ? expf(g[h]) : 1.0f, K);
    float oj = scale * delta_column_dot(Sl, q + h * K, K);
    if (!active) return;
    for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) Sh[(size_t)r * V] = Sl[m * DELTA_THREADS];
    if (ks == 0) o[h * V + j] = oj;
}

// One time step for all heads. S (H,K,V) updated in place; o (H,V); q, k (H,K); v (H,V); beta (H);
// g (H) log-decays, or NULL for none (DeltaNet)
void delta_recurrent_step(float* o, float* S, const float* q, const float* k, const float* v, const float* beta,
                          const float* g, int H, int K, int V, float scale) {
    delta_recurrent_step_kernel<<<dim3(ceil_div(V, DELTA_VT), H), DELTA_THREADS, delta_lane_floats(K) * sizeof(float)>>>(
        o, S, q, k, v, beta, g, K, V, scale);
    cuda_check(cudaGetLastError());
}

// grid (V/DELTA_VT, H, B), block DELTA_THREADS, dynamic smem: the block's columns of S, lane-private
__global__ void delta_recurrent_forward_kernel(float* o, const float* q, const float* k, const float* v,
                                               const float* beta, const float* g, int T, int H, int K, int V,
                                               float scale) {
    extern __shared__ float smem[];
    float* S = smem + threadIdx.x;
    int h = blockIdx.y, b = blockIdx.z, ks = threadIdx.x % DELTA_KSPLIT;
    int j = blockIdx.x * DELTA_VT + threadIdx.x / DELTA_KSPLIT;
    bool active = j < V;
    for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) S[m * DELTA_THREADS] = 0.0f;
    for (int t = 0; t < T; t++) {
        size_t row = ((size_t)b * T + t) * H + h;
        delta_head_update(S, S, k + row * K, active ? v[row * V + j] : 0.0f, beta[row], g ? expf(g[row]) : 1.0f, K);
        float oj = scale * delta_column_dot(S, q + row * K, K);
        if (active && ks == 0) o[row * V + j] = oj;
    }
}

// o (B,T,H,V) from q, k (B,T,H,K), v (B,T,H,V), beta, g (B,T,H) (g may be NULL), zero initial state
void delta_recurrent_forward(float* o, const float* q, const float* k, const float* v, const float* beta,
                             const float* g, int B, int T, int H, int K, int V, float scale) {
    delta_recurrent_forward_kernel<<<dim3(ceil_div(V, DELTA_VT), H, B), DELTA_THREADS,
                                     delta_lane_floats(K) * sizeof(float)>>>(o, q, k, v, beta, g, T, H, K, V, scale);
    cuda_check(cudaGetLastError());
}

// One reverse step of the exact backward (LAYERS.md §5.5, §6.4) on this lane's value column. D
// (lane-private) holds dL/dS_t on entry and dL/dS_{t−1} on exit; S_prev = S_{t−1} (before its decay),
// S_t the state after the step (lane-private); u, dout the column's entries of u_t, do_t; alpha = e^{g_t}:
//     D += scale q doᵀ;   dq = scale S_t do
//     r = Dᵀ k;   dβ = u·r;   du = β r;   dv = du
//     dk = β D u − S' du;   D −= k duᵀ  (now dL/dS');   dg = Σ S' ⊙ D;   D = alpha D
// (S' = alpha S_prev). Returns du. dq, dk (K), dβ and dg are sums over all value columns: this
// warp's share goes to red = { dq (DELTA_WARPS,K), dk (DELTA_WARPS,K), dβ (DELTA_WARPS), dg (DELTA_WARPS) }.
__device__ float delta_backward_step(float* D, float* red, float dout, const float* q, const float* k, float u,
                                     const float* S_prev, const float* S_t, float beta, float alpha, int K,
                                     float scale) {
    int ks = threadIdx.x % DELTA_KSPLIT, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int MR = (K + DELTA_KSPLIT - 1) / DELTA_KSPLIT;   // the same count for every lane, so the shuffles below line up
    float *red_dq = red, *red_dk = red + DELTA_WARPS * K, *red_db = red + 2 * DELTA_WARPS * K;
    float* red_dg = red_db + DELTA_WARPS;
    float rk = 0.0f;
    for (int m = 0; m < MR; m++) {
        int r = ks + m * DELTA_KSPLIT;
        float sdo = 0.0f;
        if (r < K) {
            float* Dr = D + m * DELTA_THREADS;
            *Dr += scale * q[r] * dout;
            rk += *Dr * k[r];
            sdo = scale * S_t[m * DELTA_THREADS] * dout;
        }
        sdo = delta_warp_column_sum(sdo);
        if (lane < DELTA_KSPLIT && r < K) red_dq[warp * K + r] = sdo;   // the warp's first column writes
    }
    float rj = delta_column_sum(rk), du = beta * rj;
    float dbeta = delta_warp_column_sum(u * rj), gate = 0.0f;
    for (int m = 0; m < MR; m++) {
        int r = ks + m * DELTA_KSPLIT;
        float dk = 0.0f;
        if (r < K) {
            float* Dr = D + m * DELTA_THREADS;
            float sp = S_prev[m * DELTA_THREADS];
            dk = beta * *Dr * u - alpha * sp * du;
            *Dr -= k[r] * du;
            gate += sp * *Dr;
            *Dr *= alpha;
        }
        dk = delta_warp_column_sum(dk);
        if (lane < DELTA_KSPLIT && r < K) red_dk[warp * K + r] = dk;
    }
    gate = delta_warp_column_sum(delta_column_sum(gate));
    if (lane == 0) {
        red_db[warp] = dbeta;
        red_dg[warp] = alpha * gate;
    }
    return du;
}

// The reverse sweep shared by both backwards. grid (V/DELTA_VT, H, B), block DELTA_THREADS; dynamic
// smem: D lane-private, then two red buffers (delta_backward_step) used by alternate steps: while
// threads still sum step t's buffer, the warps fill the other with step t − 1, and reach step t's
// buffer again only past the next __syncthreads, so one per step suffices. Per chunk (from the last), the chunk's states S_0..S_n and u are
// recomputed from its entering state (states (B,H,NC,K,V), or zero when states is NULL) into this
// block's part of work: S_i lane-private at [i · lanefloats], u_i at [(C+1) · lanefloats + i · DELTA_THREADS].
// dv (B,T,H,V) is written whole; the sums over columns go per value tile to part_dq, part_dk
// (tiles,B,T,H,K) and part_db, part_dg (tiles,B,T,H).
__global__ void delta_backward_kernel(float* dv, float* part_dq, float* part_dk, float* part_db, float* part_dg,
                                      float* work, const float* dout, const float* states, const float* q,
                                      const float* k, const float* v, const float* beta, const float* g, int B,
                                      int T, int H, int K, int V, int C, float scale) {
    extern __shared__ float smem[];
    int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z, ks = threadIdx.x % DELTA_KSPLIT;
    int j = tile * DELTA_VT + threadIdx.x / DELTA_KSPLIT, NC = (T + C - 1) / C;
    bool active = j < V;   // idle columns of a partial tile keep S = D = 0 and add nothing
    size_t lanefloats = delta_lane_floats(K), red_floats = DELTA_WARPS * (2 * (size_t)K + 2);
    size_t block = ((size_t)b * H + h) * gridDim.x + tile, nk = (size_t)B * T * H * K, nr = (size_t)B * T * H;
    float* D = smem + threadIdx.x;
    float* red = smem + lanefloats;
    float* S = work + block * ((C + 1) * lanefloats + (size_t)C * DELTA_THREADS) + threadIdx.x;
    float* u = S + (C + 1) * lanefloats;
    part_dq += tile * nk;
    part_dk += tile * nk;
    part_db += tile * nr;
    part_dg += tile * nr;
    for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) D[m * DELTA_THREADS] = 0.0f;
    for (int ch = NC - 1; ch >= 0; ch--) {
        int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
        const float* S0 = states ? states + (((size_t)b * H + h) * NC + ch) * K * V + j : NULL;
        for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT)
            S[m * DELTA_THREADS] = (S0 && active) ? S0[(size_t)r * V] : 0.0f;
        for (int i = 0; i < n; i++) {
            size_t row = ((size_t)b * T + t0 + i) * H + h;
            u[i * DELTA_THREADS] = delta_head_update(S + (i + 1) * lanefloats, S + i * lanefloats, k + row * K,
                                                     active ? v[row * V + j] : 0.0f, beta[row],
                                                     g ? expf(g[row]) : 1.0f, K);
        }
        for (int i = n - 1; i >= 0; i--) {
            int t = t0 + i;
            size_t row = ((size_t)b * T + t) * H + h;
            float* buf = red + (t & 1) * red_floats;
            float alpha = g ? expf(g[row]) : 1.0f;
            float du = delta_backward_step(D, buf, active ? dout[row * V + j] : 0.0f, q + row * K, k + row * K,
                                           u[i * DELTA_THREADS], S + i * lanefloats, S + (i + 1) * lanefloats,
                                           beta[row], alpha, K, scale);
            if (active && ks == 0) dv[row * V + j] = du;
            __syncthreads();
            // the block's sums over its columns, warps in order
            const float *red_dq = buf, *red_dk = buf + DELTA_WARPS * K, *red_db = buf + 2 * DELTA_WARPS * K;
            const float* red_dg = red_db + DELTA_WARPS;
            for (int r = threadIdx.x; r < K; r += DELTA_THREADS) {
                float sq = 0.0f, sk = 0.0f;
                for (int w = 0; w < DELTA_WARPS; w++) {
                    sq += red_dq[w * K + r];
                    sk += red_dk[w * K + r];
                }
                part_dq[row * K + r] = sq;
                part_dk[row * K + r] = sk;
            }
            if (threadIdx.x == 0) {
                float sb = 0.0f, sg = 0.0f;
                for (int w = 0; w < DELTA_WARPS; w++) {
                    sb += red_db[w];
                    sg += red_dg[w];
                }
                part_db[row] = sb;
                if (g) part_dg[row] = sg;
            }
        }
    }
}

// out (n) = Σ_tile part (tiles, n), the value tiles in order
__global__ void delta_sum_tiles_kernel(float* out, const float* part, int tiles, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float s = 0.0f;
    for (int tile = 0; tile < tiles; tile++) s += part[tile * n + i];
    out[i] = s;
}

// Both backwards: C-step chunks, each entered with its state from states (B,H,NC,K,V), or one chunk
// of C = T steps from the zero state when states is NULL. Shapes as delta_chunk_backward.
static void delta_backward(float* dq, float* dk, float* dv, float* dbeta, float* dg, const float* dout,
                           const float* states, const float* q, const float* k, const float* v, const float* beta,
                           const float* g, int B, int T, int H, int K, int V, int C, float scale) {
    int tiles = ceil_div(V, DELTA_VT);
    size_t nk = (size_t)B * T * H * K, nr = (size_t)B * T * H, lanefloats = delta_lane_floats(K);
    size_t per_block = (C + 1) * lanefloats + (size_t)C * DELTA_THREADS;
    float* work = device_scratch(SCRATCH_DELTA0, per_block * B * H * tiles);
    float* part = device_scratch(SCRATCH_DELTA1, tiles * (2 * nk + 2 * nr));
    float *part_dq = part, *part_dk = part + tiles * nk, *part_db = part + 2 * tiles * nk;
    float* part_dg = part_db + tiles * nr;
    size_t smem = (lanefloats + 2 * DELTA_WARPS * (2 * (size_t)K + 2)) * sizeof(float);
    delta_allow_smem((const void*)delta_backward_kernel, smem);
    delta_backward_kernel<<<dim3(tiles, H, B), DELTA_THREADS, smem>>>(dv, part_dq, part_dk, part_db, part_dg, work,
                                                                     dout, states, q, k, v, beta, g, B, T, H, K, V,
                                                                     C, scale);
    cuda_check(cudaGetLastError());
    delta_sum_tiles_kernel<<<ceil_div(nk, 256), 256>>>(dq, part_dq, tiles, nk);
    cuda_check(cudaGetLastError());
    delta_sum_tiles_kernel<<<ceil_div(nk, 256), 256>>>(dk, part_dk, tiles, nk);
    cuda_check(cudaGetLastError());
    delta_sum_tiles_kernel<<<ceil_div(nr, 256), 256>>>(dbeta, part_db, tiles, nr);
    cuda_check(cudaGetLastError());
    if (g) {
        delta_sum_tiles_kernel<<<ceil_div(nr, 256), 256>>>(dg, part_dg, tiles, nr);
        cuda_check(cudaGetLastError());
    }
}

// Exact backward of delta_recurrent_forward, the readable ground truth for the chunkwise backward:
// a forward sweep keeps every state, then delta_backward_step runs from t = T−1 down to 0 (one
// chunk of T steps from the zero state).
// dq, dk (B,T,H,K), dv (B,T,H,V), dbeta (B,T,H) and dg (B,T,H, when g is given) overwritten.
void delta_recurrent_backward(float* dq, float* dk, float* dv, float* dbeta, float* dg, const float* dout,
                              const float* q, const float* k, const float* v, const float* beta, const float* g,
                              int B, int T, int H, int K, int V, float scale) {
    delta_backward(dq, dk, dv, dbeta, dg, dout, NULL, q, k, v, beta, g, B, T, H, K, V, T, scale);
}

// The delta rule, chunkwise-parallel (training; LAYERS.md §6.3, the WY / UT form). For a chunk of
// n ≤ C rows entered with state S, G = chunk-local inclusive cumsum of g (0 for DeltaNet),
// Γ_ij = e^{G_i − G_j} for j ≤ i (a difference ≤ 0, never a factored e^{G_i} e^{−G_j}):
//     M      = strictly_lower( diag(β) (K Kᵀ ⊙ Γ) )
//     V_new  = (I + M)^{−1} diag(β) (V − diag(e^G) K S)      the UT transform, by forward substitution
//     O      = scale [ diag(e^G) Q S + ((Q Kᵀ) ⊙ Γ ⊙ lower_incl) V_new ]
//     S_next = e^{G_n} S + (diag(e^{G_n − G}) K)ᵀ V_new
// Row i of V_new is β_i u_i, the recurrence's scaled prediction error. On the GPU three kernels:
// the cumulative gates, then M and P = scale (Q Kᵀ) ⊙ Γ for every chunk at once (they do not depend
// on S), then the sweep over chunks that carries S, a block per value tile as in the recurrent form.

// G (B,H,T) = chunk-local inclusive cumsum of g (B,T,H), zero when g is NULL. One thread per chunk.
__global__ void delta_chunk_gates_kernel(float* G, const float* g, int B, int T, int H, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // ((b·H + h)·NC + ch)
    if (idx >= (size_t)B * H * NC) return;
    int ch = idx % NC, h = idx / NC % H, b = idx / NC / H, t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    float acc = 0.0f;
    for (int i = 0; i < n; i++) {
        acc += g ? g[((size_t)b * T + t0 + i) * H + h] : 0.0f;
        G[((size_t)b * H + h) * T + t0 + i] = acc;
    }
}

// Per chunk, M_il = β_i (k_i·k_l) Γ_il for l < i and P_il = scale (q_i·k_l) Γ_il for l ≤ i, into
// M, P (B,H,NC,C,C); entries above those diagonals are not written (never read). grid (tiles², NC,
// B·H) over 32×32 tiles of the C×C matrix, block 256: thread (tx, ty) computes rows ty + 8a, column tx
// of its tile, the K dimension staged through shared memory 32 at a time.
__global__ void delta_chunk_tril_kernel(float* M, float* P, const float* q, const float* k, const float* beta,
                                        const float* G, int T, int H, int K, int C, float scale) {
    __shared__ float qi_s[32][33], ki_s[32][33], kl_s[32][33];   // +1: column reads hit distinct banks
    int tiles = (C + 31) / 32, ti = blockIdx.x / tiles, tl = blockIdx.x % tiles;
    int ch = blockIdx.y, bh = blockIdx.z, b = bh / H, h = bh % H, NC = gridDim.y;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    if (tl > ti || ti * 32 >= n) return;   // the whole block: above the diagonal, or past a partial chunk
    int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
    float kk[4] = {0.0f, 0.0f, 0.0f, 0.0f}, qk[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int c0 = 0; c0 < K; c0 += 32) {
        int c = c0 + tx;
        for (int a = 0; a < 4; a++) {
            int y = ty + 8 * a, ri = ti * 32 + y, rl = tl * 32 + y;
            size_t oi = (((size_t)b * T + t0 + ri) * H + h) * K + c, ol = (((size_t)b * T + t0 + rl) * H + h) * K + c;
            qi_s[y][tx] = ri < n && c < K ? q[oi] : 0.0f;
            ki_s[y][tx] = ri < n && c < K ? k[oi] : 0.0f;
            kl_s[y][tx] = rl < n && c < K ? k[ol] : 0.0f;
        }
        __syncthreads();
        for (int cc = 0; cc < 32; cc++) {
            float kl = kl_s[tx][cc];
            for (int a = 0; a < 4; a++) {
                kk[a] += ki_s[ty + 8 * a][cc] * kl;
                qk[a] += qi_s[ty + 8 * a][cc] * kl;
            }
        }
        __syncthreads();
    }
    const float* Gh = G + (size_t)bh * T + t0;
    int l = tl * 32 + tx;
    for (int a = 0; a < 4; a++) {
        int i = ti * 32 + ty + 8 * a;
        if (i >= n || l > i) continue;
        float gamma = expf(Gh[i] - Gh[l]);
        size_t idx = (((size_t)bh * NC + ch) * C + i) * C + l;
        P[idx] = scale * qk[a] * gamma;
        if (l < i) M[idx] = beta[((size_t)b * T + t0 + i) * H + h] * kk[a] * gamma;
    }
}

// The sweep over chunks. grid (V/DELTA_VT, H, B), block DELTA_THREADS, no __syncthreads (each warp
// owns its columns). Dynamic smem: S lane-private, then V_new for the block's columns, column c's
// rows at [c · vstride + i] (vstride ≡ 8 mod 32: a warp's 4 columns × 8 lanes read 32 distinct banks).
// Row i of a chunk, per column, one pass: V_new_i = β_i (v_i − e^{G_i} Sᵀk_i) − Σ_{l<i} M_il V_new_l,
// then o_i = scale e^{G_i} Sᵀq_i + Σ_{l≤i} P_il V_new_l; the lanes of the column split the sums.
__global__ void delta_chunk_forward_kernel(float* o, float* states, const float* q, const float* k, const float* v,
                                           const float* beta, const float* G, const float* M, const float* P,
                                           int T, int H, int K, int V, int C, int vstride, float scale) {
    extern __shared__ float smem[];
    int h = blockIdx.y, b = blockIdx.z, ks = threadIdx.x % DELTA_KSPLIT, col = threadIdx.x / DELTA_KSPLIT;
    int j = blockIdx.x * DELTA_VT + col, NC = (T + C - 1) / C;
    bool active = j < V;   // idle columns of a partial tile keep S = V_new = 0
    size_t bh = (size_t)b * H + h;
    float* S = smem + threadIdx.x;
    float* vn = smem + delta_lane_floats(K) + col * vstride;
    for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) S[m * DELTA_THREADS] = 0.0f;
    for (int ch = 0; ch < NC; ch++) {
        int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
        float* St = states + (bh * NC + ch) * K * V + j;   // the state entering the chunk, kept for the backward
        if (active)
            for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) St[(size_t)r * V] = S[m * DELTA_THREADS];
        const float *Mc = M + (bh * NC + ch) * C * C, *Pc = P + (bh * NC + ch) * C * C, *Gc = G + bh * T + t0;
        for (int i = 0; i < n; i++) {
            size_t row = ((size_t)b * T + t0 + i) * H + h;
            float eg = expf(Gc[i]), bt = beta[row], kS = 0.0f, qS = 0.0f, ms = 0.0f, ps = 0.0f;
            for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) {
                kS += k[row * K + r] * S[m * DELTA_THREADS];
                qS += q[row * K + r] * S[m * DELTA_THREADS];
            }
            for (int l = ks; l < i; l += DELTA_KSPLIT) {
                ms += Mc[(size_t)i * C + l] * vn[l];
                ps += Pc[(size_t)i * C + l] * vn[l];
            }
            float vnew = bt * (active ? v[row * V + j] : 0.0f) - delta_column_sum(bt * eg * kS + ms);
            float oi = delta_column_sum(scale * eg * qS + ps) + Pc[(size_t)i * C + i] * vnew;
            if (ks == 0) {
                vn[i] = vnew;
                if (active) o[row * V + j] = oi;
            }
            __syncwarp();   // vn[i] visible to the column's other lanes
        }
        // S = e^{G_n} S + Σ_l (k_l e^{G_n − G_l}) V_new_lᵀ
        float decay = expf(Gc[n - 1]);
        for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) S[m * DELTA_THREADS] *= decay;
        for (int l = 0; l < n; l++) {
            const float* kl = k + (((size_t)b * T + t0 + l) * H + h) * K;
            float w = expf(Gc[n - 1] - Gc[l]) * vn[l];
            for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) S[m * DELTA_THREADS] += kl[r] * w;
        }
        __syncwarp();   // every lane done reading vn before the next chunk overwrites it
    }
}

// o (B,T,H,V); states (B,H,NC,K,V) = the state entering each chunk (kept for the backward);
// q, k (B,T,H,K); v (B,T,H,V); beta, g (B,T,H) (g may be NULL)
void delta_chunk_forward(float* o, float* states, const float* q, const float* k, const float* v, const float* beta,
                         const float* g, int B, int T, int H, int K, int V, int C, float scale) {
    int NC = ceil_div(T, C), tiles = ceil_div(C, 32), vstride = tiles * 32 + 8;
    size_t bh = (size_t)B * H, cc = (size_t)NC * C * C;   // cc: one head's M or P
    float* G = device_scratch(SCRATCH_DELTA0, bh * T);
    float* M = device_scratch(SCRATCH_DELTA1, bh * cc);
    float* P = device_scratch(SCRATCH_DELTA2, bh * cc);
    delta_chunk_gates_kernel<<<ceil_div(bh * NC, 256), 256>>>(G, g, B, T, H, C);
    cuda_check(cudaGetLastError());
    delta_chunk_tril_kernel<<<dim3(tiles * tiles, NC, B * H), 256>>>(M, P, q, k, beta, G, T, H, K, C, scale);
    cuda_check(cudaGetLastError());
    size_t smem = (delta_lane_floats(K) + (size_t)DELTA_VT * vstride) * sizeof(float);
    delta_allow_smem((const void*)delta_chunk_forward_kernel, smem);
    delta_chunk_forward_kernel<<<dim3(ceil_div(V, DELTA_VT), H, B), DELTA_THREADS, smem>>>(
        o, states, q, k, v, beta, G, M, P, T, H, K, V, C, vstride, scale);
    cuda_check(cudaGetLastError());
}

// Backward of delta_chunk_forward: the exact recurrent backward (delta_backward_step), a chunk at a
// time from the last, carrying D = dL/dS across chunk boundaries. Each chunk's ≤ C per-step states are
// first recomputed from its stored entering state into scratch, then swept in reverse. Memory is
// (T/C + C)·K·V per head instead of T·K·V (LAYERS.md §6.4; inverting the recurrence instead would be
// unstable: it divides by e^g, and I − βkkᵀ is singular at β‖k‖² = 1). The work is O(T K V), the
// order of the forward pass.
// dq, dk (B,T,H,K), dv (B,T,H,V), dbeta (B,T,H) and dg (B,T,H, when g is given) overwritten.
void delta_chunk_backward(float* dq, float* dk, float* dv, float* dbeta, float* dg, const float* dout,
                          const float* states, const float* q, const float* k, const float* v, const float* beta,
                          const float* g, int B, int T, int H, int K, int V, int C, float scale) {
    delta_backward(dq, dk, dv, dbeta, dg, dout, states, q, k, v, beta, g, B, T, H, K, V, C, scale);
}

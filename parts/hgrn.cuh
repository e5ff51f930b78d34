// ----------------------------------------------------------------------------
// HGRN core (LAYERS.md §3b): an elementwise gated recurrence with a vector state h ∈ R^D,
//     h_t = e^{a_t} ⊙ h_{t−1} + x_t,   h_0 = 0          (a ≤ 0 the log-forget gate, x the gated input)
// Every channel is independent, so on the GPU one thread owns one channel (of one batch row, and in
// the chunked forms of one chunk) and walks time in the CPU's order.

// one thread per channel c
__global__ void hgrn_recurrent_step_kernel(float* o, float* h, const float* x, const float* a, int D) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < D) o[c] = h[c] = expf(a[c]) * h[c] + x[c];
}

// One time step for generation: h (D) updated in place, o (D) = h
void hgrn_recurrent_step(float* o, float* h, const float* x, const float* a, int D) {
    hgrn_recurrent_step_kernel<<<ceil_div(D, 256), 256>>>(o, h, x, a, D);
    cuda_check(cudaGetLastError());
}

// one thread per (b, c)
__global__ void hgrn_recurrent_forward_kernel(float* h, const float* x, const float* a, int B, int T, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = b D + c
    if (idx >= (size_t)B * D) return;
    size_t b = idx / D, c = idx % D;
    float state = 0.0f;
    for (int t = 0; t < T; t++) {
        size_t r = (b * T + t) * D + c;
        state = expf(a[r]) * state + x[r];
        h[r] = state;
    }
}

// h (B,T,D) from x, a (B,T,D)
void hgrn_recurrent_forward(float* h, const float* x, const float* a, int B, int T, int D) {
    hgrn_recurrent_forward_kernel<<<ceil_div((size_t)B * D, 256), 256>>>(h, x, a, B, T, D);
    cuda_check(cudaGetLastError());
}

// one thread per (b, c)
__global__ void hgrn_recurrent_backward_kernel(float* dx, float* da, const float* dout, const float* h,
                                               const float* a, int B, int T, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = b D + c
    if (idx >= (size_t)B * D) return;
    size_t b = idx / D, c = idx % D;
    float g = 0.0f;
    for (int t = T - 1; t >= 0; t--) {
        size_t r = (b * T + t) * D + c;
        float dh = dout[r] + g, decay = expf(a[r]);
        dx[r] = dh;
        da[r] = t > 0 ? dh * decay * h[r - D] : 0.0f;
        g = decay * dh;
    }
}

// Exact backward of hgrn_recurrent_forward. dx, da (B,T,D) overwritten; dout (B,T,D) = dL/dh from
// the outputs. Reverse sweep carrying g = e^{a_{t+1}} ⊙ dh_{t+1}, what reaches h_t through step t+1:
//     dh_t = dout_t + g;   dx_t = dh_t;   da_t = dh_t ⊙ e^{a_t} ⊙ h_{t−1};   g = e^{a_t} ⊙ dh_t
void hgrn_recurrent_backward(float* dx, float* da, const float* dout, const float* h, const float* a, int B, int T, int D) {
    hgrn_recurrent_backward_kernel<<<ceil_div((size_t)B * D, 256), 256>>>(dx, da, dout, h, a, B, T, D);
    cuda_check(cudaGetLastError());
}

// HGRN, chunked scan (training): the same recurrence, parallel over time as well as over the batch.
// Time is cut into NC chunks of C steps; G_t = chunk-local inclusive cumsum of a (≤ 0), G_L its value
// at the chunk's last row:
//   1. every chunk scans itself from a zero state, h̃_t = e^{a_t} h̃_{t−1} + x_t   (chunks in parallel)
//   2. the states entering the chunks, one vector each, are carried from chunk to chunk:
//      h_in(c+1) = e^{G_L(c)} h_in(c) + h̃_L(c)                                   (sequential, O(NC D))
//   3. every chunk adds its decayed entering state, h_t = h̃_t + e^{G_t} h_in(c)  (chunks in parallel)
// Only sums within one chunk are exponentiated, so nothing overflows. (The recurrence is O(T D)
// either way: chunking buys parallelism over time, which matters when B is small.)
// Passes 1 and 3 run a thread per (b, chunk, c), pass 2 a thread per (b, c).

// pass 1: h̃ into h, G_L (B,NC,D)
__global__ void hgrn_chunk_local_scan_kernel(float* h, float* GL, const float* x, const float* a, int B, int T, int D,
                                             int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NC + ch) D + c
    if (idx >= (size_t)B * NC * D) return;
    size_t bc = idx / D, c = idx % D;
    int ch = bc % NC, b = bc / NC;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    float G = 0.0f;
    for (int i = 0; i < n; i++) {
        size_t r = ((size_t)b * T + t0 + i) * D + c;
        h[r] = (i ? expf(a[r]) * h[r - D] : 0.0f) + x[r];
        G += a[r];
    }
    GL[idx] = G;
}

// pass 2: h_in (B,NC,D)
__global__ void hgrn_chunk_carry_kernel(float* h_in, const float* GL, const float* h, int B, int T, int D, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = b D + c
    if (idx >= (size_t)B * D) return;
    size_t b = idx / D, c = idx % D;
    float hin = 0.0f;
    h_in[b * NC * D + c] = 0.0f;
    for (int ch = 1; ch < NC; ch++) {
        size_t prev = (b * NC + ch - 1) * D + c;
        const float last = h[(b * T + (size_t)ch * C - 1) * D + c];   // h̃_L of the previous chunk
        hin = expf(GL[prev]) * hin + last;
        h_in[prev + D] = hin;
    }
}

// pass 3: h += e^{G_t} h_in for every chunk but the first
__global__ void hgrn_chunk_add_kernel(float* h, const float* h_in, const float* a, int B, int T, int D, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NC + ch) D + c
    if (idx >= (size_t)B * NC * D) return;
    size_t bc = idx / D, c = idx % D;
    int ch = bc % NC, b = bc / NC;
    if (ch == 0) return;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    float hin = h_in[idx], G = 0.0f;
    for (int i = 0; i < n; i++) {
        size_t r = ((size_t)b * T + t0 + i) * D + c;
        G += a[r];
        h[r] += expf(G) * hin;
    }
}

// h (B,T,D) from x, a (B,T,D). Scratch: G_L and h_in (B,NC,D)
void hgrn_chunk_forward(float* h, const float* x, const float* a, int B, int T, int D, int C) {
    int NC = ceil_div(T, C);
    size_t n = (size_t)B * NC * D;
    float* GL = device_scratch(SCRATCH_HGRN, 2 * n);
    float* h_in = GL + n;
    hgrn_chunk_local_scan_kernel<<<ceil_div(n, 256), 256>>>(h, GL, x, a, B, T, D, C);
    cuda_check(cudaGetLastError());
    hgrn_chunk_carry_kernel<<<ceil_div((size_t)B * D, 256), 256>>>(h_in, GL, h, B, T, D, C);
    cuda_check(cudaGetLastError());
    hgrn_chunk_add_kernel<<<ceil_div(n, 256), 256>>>(h, h_in, a, B, T, D, C);
    cuda_check(cudaGetLastError());
}

// Backward of hgrn_chunk_forward: the reverse sweep dh_t = dout_t + e^{a_{t+1}} dh_{t+1}, chunked the
// same way. With R_t = Σ_{s=t+1..L} a_s (the decay from t to the chunk's last row L, ≤ 0):
//   1. every chunk sweeps itself from zero, d̃_t = dout_t + e^{a_{t+1}} d̃_{t+1}   (chunks in parallel)
//   2. the gradient entering chunk c from the right, g(c) = e^{a_F(c+1)} dh_F(c+1) at the first row F
//      of the next chunk, is carried from the last chunk to the first: dh_F(c) = d̃_F(c) + e^{R_F(c)} g(c)
//   3. dh_t = d̃_t + e^{R_t} g(c);  dx_t = dh_t;  da_t = dh_t ⊙ e^{a_t} ⊙ h_{t−1}   (chunks in parallel)
// Passes 1 and 3 run a thread per (b, chunk, c), pass 2 a thread per (b, c).

// pass 1: d̃ into dx, R_F (B,NC,D)
__global__ void hgrn_chunk_local_grad_kernel(float* dx, float* RF, const float* dout, const float* a, int B, int T,
                                             int D, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NC + ch) D + c
    if (idx >= (size_t)B * NC * D) return;
    size_t bc = idx / D, c = idx % D;
    int ch = bc % NC, b = bc / NC;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    float R = 0.0f;
    for (int i = n - 1; i >= 0; i--) {
        size_t r = ((size_t)b * T + t0 + i) * D + c;
        dx[r] = dout[r] + (i < n - 1 ? expf(a[r + D]) * dx[r + D] : 0.0f);
        if (i > 0) R += a[r];
    }
    RF[idx] = R;
}

// pass 2: g_in (B,NC,D)
__global__ void hgrn_chunk_grad_carry_kernel(float* g_in, const float* RF, const float* dx, const float* a, int B,
                                             int T, int D, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = b D + c
    if (idx >= (size_t)B * D) return;
    size_t b = idx / D, c = idx % D;
    float g = 0.0f;
    g_in[(b * NC + NC - 1) * D + c] = 0.0f;
    for (int ch = NC - 2; ch >= 0; ch--) {
        // dh at the first row of chunk ch+1, then through its decay into chunk ch
        size_t next = (b * NC + ch + 1) * D + c, r = (b * T + (size_t)(ch + 1) * C) * D + c;
        g = expf(a[r]) * (dx[r] + expf(RF[next]) * g);
        g_in[next - D] = g;
    }
}

// pass 3: dx += e^{R_t} g, and da
__global__ void hgrn_chunk_grad_finish_kernel(float* dx, float* da, const float* g_in, const float* h, const float* a,
                                              int B, int T, int D, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NC + ch) D + c
    if (idx >= (size_t)B * NC * D) return;
    size_t bc = idx / D, c = idx % D;
    int ch = bc % NC, b = bc / NC;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    float g = g_in[idx], R = 0.0f;
    for (int i = n - 1; i >= 0; i--) {
        size_t r = ((size_t)b * T + t0 + i) * D + c;
        float decay = expf(a[r]);
        dx[r] += expf(R) * g;
        da[r] = t0 + i > 0 ? dx[r] * decay * h[r - D] : 0.0f;
        R += a[r];
    }
}

// dx, da (B,T,D) overwritten; dout (B,T,D); h, a (B,T,D) from the forward pass. Scratch: R_F and
// g_in (B,NC,D)
void hgrn_chunk_backward(float* dx, float* da, const float* dout, const float* h, const float* a, int B, int T, int D, int C) {
    int NC = ceil_div(T, C);
    size_t n = (size_t)B * NC * D;
    float* RF = device_scratch(SCRATCH_HGRN, 2 * n);
    float* g_in = RF + n;
    hgrn_chunk_local_grad_kernel<<<ceil_div(n, 256), 256>>>(dx, RF, dout, a, B, T, D, C);
    cuda_check(cudaGetLastError());
    hgrn_chunk_grad_carry_kernel<<<ceil_div((size_t)B * D, 256), 256>>>(g_in, RF, dx, a, B, T, D, C);
    cuda_check(cudaGetLastError());
    hgrn_chunk_grad_finish_kernel<<<ceil_div(n, 256), 256>>>(dx, da, g_in, h, a, B, T, D, C);
    cuda_check(cudaGetLastError());
}

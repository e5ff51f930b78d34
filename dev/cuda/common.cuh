// dev/cuda/common.cuh — what the kernel experiments of dev/cuda share (each includes train_gla.cu with
// TESTING first, for cuda_check and malloc_check): random host inputs, uploads, and the report of a
// device result against a host reference.

static float rand_uniform(float lo, float hi) { return lo + (hi - lo) * (float)rand() / (float)RAND_MAX; }

static float* host_random(size_t n, float lo, float hi) {
    float* x = (float*)malloc_check(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rand_uniform(lo, hi);
    return x;
}

static float* to_device(const float* x, size_t n) {
    float* d;
    cuda_check(cudaMalloc((void**)&d, n * sizeof(float)));
    cuda_check(cudaMemcpy(d, x, n * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}

// max |a − b| and ‖a − b‖ / ‖b‖ of a device result a against a host reference b
static int report(const char* what, const float* a_dev, const float* b, size_t n) {
    float* a = (float*)malloc_check(n * sizeof(float));
    cuda_check(cudaMemcpy(a, a_dev, n * sizeof(float), cudaMemcpyDeviceToHost));
    double maxerr = 0.0, num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= maxerr)) maxerr = d;   // NaN sticks
        num += d * d;
        den += (double)b[i] * b[i];
    }
    double rel = den > 0.0 ? sqrt(num / den) : sqrt(num);
    int ok = maxerr == maxerr && rel < 1e-5;
    printf("    %-7s max err %.3e  rel rms %.3e%s\n", what, maxerr, rel, ok ? "" : "  <-- FAIL");
    free(a);
    return ok;
}

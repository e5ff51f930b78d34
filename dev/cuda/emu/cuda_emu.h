/*
 * cuda_emu.h — runs CUDA C++ on the CPU, for CORRECTNESS CHECKS ONLY (it is thousands of times slower
 * than a GPU and says nothing about performance, registers or occupancy).
 *
 * What it provides, for g++ -std=c++17 -pthread (-fopenmp optional), to a .cu file that emulate.py
 * has rewritten (launches `k<<<g, b, smem, stream>>>(args)` -> emu::launch(...), __shared__
 * declarations -> per-block storage, see emulate.py):
 *   - the CUDA keywords as no-ops (__global__, __device__, __host__, __forceinline__, __launch_bounds__...)
 *   - dim3 / uint3, threadIdx, blockIdx, blockDim, gridDim, warpSize
 *   - kernels: every CUDA thread of a block is a FIBER (a user-level coroutine with its own stack), all
 *     of a block's fibers run on one OS thread; blocks are spread over a pool of worker OS threads
 *     (EMU_THREADS, default: all cores), created once. A fiber runs until it reaches a barrier
 *     (__syncthreads, __syncwarp, a shuffle/vote), then the next fiber runs; a barrier releases when
 *     every thread it waits for has arrived. So barriers mean exactly what they mean on the GPU, and
 *     the run is deterministic for a given EMU_THREADS... except for races between blocks.
 *   - shuffles (__shfl_sync, _xor, _up, _down, any 4- or 8-byte type), __ballot_sync, __any_sync,
 *     __all_sync, __syncwarp: a warp barrier + an exchange buffer
 *   - shared memory: static __shared__ and `extern __shared__` dynamic memory live in a per-block arena
 *     that is FILLED WITH NaN (0xFF bytes) before each block, so a read of shared memory the block did
 *     not write shows up; limits of sm_90 (48 KiB static, 48 KiB dynamic unless
 *     cudaFuncSetAttribute(MaxDynamicSharedMemorySize), 227 KiB in all, 1024 threads per block,
 *     grid.y/z <= 65535, __launch_bounds__) are checked and fail the launch as on the GPU
 *   - the runtime API subset used here (cudaMalloc/Free/Memcpy/Memset/..., errors sticky as on the GPU)
 *     with "device" memory = host memory FILLED WITH NaN (0xFF) by cudaMalloc; every allocation is
 *     tracked, so cudaMemcpy/cudaMemset/cuBLAS ranges and the pointer arguments of every kernel launch
 *     are checked to lie inside a device allocation (a host pointer passed to a kernel is an error)
 *   - cuBLAS: cublasSgemm and cublasSgemmStridedBatched with cuBLAS's column-major semantics
 *     (C = alpha op(A) op(B) + beta C; C not read when beta == 0), products summed in DOUBLE (and
 *     rounded to TF32 first under CUBLAS_TF32_TENSOR_OP_MATH); argument checks as cuBLAS's
 *   - kernel faults (a deadlocked barrier, a shuffle with an exited lane, a bad pointer argument) print
 *     the kernel, block and thread to stderr and leave a sticky cudaErrorLaunchFailure /
 *     cudaErrorIllegalAddress, as a real fault would
 *
 * Environment:
 *   EMU_THREADS=n      worker threads for blocks (default: hardware threads)
 *   EMU_ORDER=forward|reverse|random   the order fibers run between barriers, and the order blocks are
 *                      handed to the workers (default forward). A missing __syncthreads / __syncwarp
 *                      (or a block reading what another block of the launch writes) usually shows up
 *                      as a difference between orders: the reads of one thread see, or do not see,
 *                      another thread's writes; shared memory starts as NaN
 *   EMU_TRACE=1        print every launch (kernel, grid, block, dynamic smem)
 *   EMU_STRICT=1       a block barrier reached while some threads of the block have exited is an error
 *                      (by default a warning, once per kernel: exited threads count as arrived, as on
 *                      current GPUs, but the CUDA programming guide does not promise it)
 *   EMU_STACK_KB=n     fiber stack size (default 256; a guard page below catches overflows)
 * Not emulated: streams and asynchrony (everything runs at the call), graphs, textures, atomics on
 * other than plain int/float/double, out-of-bounds accesses inside kernels (build with
 * EMU_ASAN=1 in run.sh to catch those with AddressSanitizer), host code reading device pointers
 * (works here, crashes on a GPU), register or occupancy limits, __launch_bounds__ on templates.
 */
#pragma once
#define CUDA_EMULATED 1
#define __CUDA_EMU__ 1

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <math.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// ----------------------------------------------------------------------------
// keywords

#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
#ifndef __CUDACC__
#define __CUDACC_EMU__ 1
#endif

struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};
// per OS thread; the scheduler sets threadIdx before it resumes each fiber
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

// ----------------------------------------------------------------------------
// device math: what CUDA has and glibc lacks, and CUDA's integer min / max

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
inline float __uint_as_float(unsigned x) { float f; memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float x) { unsigned i; memcpy(&i, &x, 4); return i; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <typename T> inline T __ldg(const T* p) { return *p; }
// CUDA's min / max overloads (device code calls them unqualified on ints and floats)
template <typename A, typename B> inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)a < (C)b ? (C)a : (C)b;
}
template <typename A, typename B> inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)a > (C)b ? (C)a : (C)b;
}
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// ----------------------------------------------------------------------------
// runtime API types

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotSupported = 801,
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
} cudaMemcpyKind;

typedef enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9,
} cudaFuncAttribute;

typedef enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxBlockDimX = 2,
    cudaDevAttrMaxGridDimX = 5,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrClockRate = 13,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
} cudaDeviceAttr;

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock, sharedMemPerBlockOptin, sharedMemPerMultiprocessor, totalConstMem;
    int regsPerBlock, warpSize, maxThreadsPerBlock, maxThreadsDim[3], maxGridSize[3], clockRate, major, minor,
        multiProcessorCount, maxThreadsPerMultiProcessor, l2CacheSize, memoryClockRate, memoryBusWidth,
        concurrentKernels, unifiedAddressing, managedMemory;
};

typedef struct emu_stream* cudaStream_t;
typedef struct emu_event* cudaEvent_t;
#define cudaStreamDefault 0
#define cudaStreamNonBlocking 1

// ----------------------------------------------------------------------------
// the emulator

namespace emu {

// sm_90 limits (H100 / H200)
constexpr int kMaxThreads = 1024;
constexpr size_t kStaticSmem = 48 * 1024, kDefaultDynSmem = 48 * 1024, kMaxSmem = 227 * 1024;

[[noreturn]] inline void die(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuda_emu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(EXIT_FAILURE);
}

inline int env_int(const char* name, int dflt) {
    const char* s = getenv(name);
    return s && *s ? atoi(s) : dflt;
}

// -- errors: a launch-configuration error is returned once by cudaGetLastError; a fault is sticky
struct ErrorState {
    std::mutex mu;
    cudaError_t last = cudaSuccess, sticky = cudaSuccess;
};
inline ErrorState& errors() { static ErrorState e; return e; }
inline cudaError_t set_error(cudaError_t e) {
    std::lock_guard<std::mutex> lk(errors().mu);
    if (errors().last == cudaSuccess) errors().last = e;
    return e;
}
inline void fault(cudaError_t e) {
    std::lock_guard<std::mutex> lk(errors().mu);
    if (errors().sticky == cudaSuccess) errors().sticky = e;
    if (errors().last == cudaSuccess) errors().last = e;
}
inline cudaError_t sticky() {
    std::lock_guard<std::mutex> lk(errors().mu);
    return errors().sticky;
}

// -- device memory: host memory, tracked, filled with NaN bytes
struct Alloc { size_t size; bool managed; };
struct Memory {
    std::mutex mu;
    std::map<uintptr_t, Alloc> allocs;   // base -> size
    size_t in_use = 0;
};
inline Memory& memory() { static Memory m; return m; }
// the allocation holding [p, p + bytes), or NULL; *base_out its base
inline const Alloc* find_alloc(const void* p, size_t bytes, uintptr_t* base_out = nullptr) {
    Memory& m = memory();
    std::lock_guard<std::mutex> lk(m.mu);
    uintptr_t a = (uintptr_t)p;
    auto it = m.allocs.upper_bound(a);
    if (it == m.allocs.begin()) return nullptr;
    --it;
    if (a < it->first || a + bytes > it->first + it->second.size) return nullptr;
    if (base_out) *base_out = it->first;
    return &it->second;
}
inline bool is_device(const void* p, size_t bytes) { return find_alloc(p, bytes) != nullptr; }

// -- fibers: a minimal context switch (callee-saved registers + SSE/x87 control words on the stack)
#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .weak emu_ctx_switch
    .type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch, .-emu_ctx_switch
)");
#endif

enum FiberState { READY, WAIT_BLOCK, WAIT_WARP, DONE };

struct Fiber {
#if defined(__x86_64__)
    void* sp = nullptr;
#else
    ucontext_t uc;
#endif
    uint3 tid{0, 0, 0};
    int linear = 0;
    FiberState state = READY;
    unsigned shfl_parity = 0;
};

struct Launch;

// a warp's barrier and its shuffle exchange buffers (two, used alternately: see shfl)
struct Warp {
    unsigned arrived = 0, mask = 0, exited = 0, exists = 0;
    alignas(16) unsigned char xchg[2][32][16];
};

struct Worker {
    std::vector<Fiber> fibers;
    unsigned char* stacks = nullptr;
    size_t stack_bytes = 0, n_stacks = 0;
#if defined(__x86_64__)
    void* sched_sp = nullptr;
#else
    ucontext_t sched_uc;
#endif
    Fiber* cur = nullptr;
    const Launch* launch = nullptr;
    // block state
    int nthreads = 0, live = 0, bar_arrived = 0;
    bool bar_warned = false;
    std::vector<Warp> warps;
    std::vector<unsigned char> arena;       // dynamic shared memory at 0, static after it
    size_t arena_used = 0;
    std::vector<std::pair<const void*, size_t>> statics;   // tag -> offset, this block's static __shared__
    std::vector<int> order;
    std::mt19937 rng{12345};
    bool failed = false;
    char fail_msg[512] = {0};
};
inline thread_local Worker* t_worker = nullptr;

struct Launch {
    const char* name;
    const char* file;
    int line;
    dim3 grid, block;
    size_t smem;
    void (*thunk)(const void* params);   // calls the kernel with a copy of the parameters
    const void* params;
};

[[noreturn]] inline void fiber_entry();

inline size_t stack_bytes() {
    static size_t b = (size_t)env_int("EMU_STACK_KB", 256) * 1024;
    return b;
}

// fibers and stacks for n threads (grow-only; stacks are mmap'd lazily with a guard page each)
inline void ensure_fibers(Worker* w, int n) {
    if ((int)w->fibers.size() < n) w->fibers.resize(n);
    if ((size_t)n <= w->n_stacks) return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE), sb = stack_bytes();
    if (w->stacks) munmap(w->stacks, w->n_stacks * (sb + page));
    size_t total = (size_t)kMaxThreads * (sb + page);
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("mmap of %zu bytes of fiber stacks failed", total);
    w->stacks = (unsigned char*)p;
    w->n_stacks = kMaxThreads;
    w->stack_bytes = sb;
    for (int i = 0; i < kMaxThreads; i++) mprotect(w->stacks + i * (sb + page), page, PROT_NONE);   // guard
}

inline void fiber_init(Worker* w, Fiber* f, int i) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char* lo = w->stacks + i * (w->stack_bytes + page) + page;
    unsigned char* top = lo + w->stack_bytes;
#if defined(__x86_64__)
    // the frame emu_ctx_switch pops: control words, r15..rbp, then "returns" into fiber_entry with
    // rsp = top - 8 (so rsp + 8 is 16-byte aligned, as at any function entry)
    uintptr_t* sp = (uintptr_t*)((uintptr_t)top & ~(uintptr_t)15) - 9;
    uint32_t mxcsr;
    uint16_t fcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fcw));
    sp[0] = (uintptr_t)mxcsr | ((uintptr_t)fcw << 32);
    for (int r = 1; r <= 6; r++) sp[r] = 0;
    sp[7] = (uintptr_t)&fiber_entry;
    sp[8] = 0;
    f->sp = sp;
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = lo;
    f->uc.uc_stack.ss_size = w->stack_bytes;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, (void (*)())fiber_entry, 0);
#endif
}

// fiber -> scheduler
inline void yield_to_scheduler() {
    Worker* w = t_worker;
#if defined(__x86_64__)
    emu_ctx_switch(&w->cur->sp, w->sched_sp);
#else
    swapcontext(&w->cur->uc, &w->sched_uc);
#endif
}
// scheduler -> fiber f
inline void resume(Worker* w, Fiber* f) {
    w->cur = f;
    threadIdx = f->tid;
#if defined(__x86_64__)
    emu_ctx_switch(&w->sched_sp, f->sp);
#else
    swapcontext(&w->sched_uc, &f->uc);
#endif
    w->cur = nullptr;
}

// a kernel fault: remembered (the block stops at the end of the current pass) and reported once
inline void kernel_fault(Worker* w, const char* fmt, ...) {
    if (w->failed) return;
    w->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->fail_msg, sizeof(w->fail_msg), fmt, ap);
    va_end(ap);
}

inline const char* launch_name() { return t_worker && t_worker->launch ? t_worker->launch->name : "?"; }

// releases the block barrier: every waiting thread may go on
inline void release_block(Worker* w) {
    for (int i = 0; i < w->nthreads; i++)
        if (w->fibers[i].state == WAIT_BLOCK) w->fibers[i].state = READY;
    w->bar_arrived = 0;
}

inline void check_block_barrier(Worker* w) {
    if (w->bar_arrived == 0 || w->bar_arrived < w->live) return;
    if (w->live < w->nthreads && !w->bar_warned) {
        w->bar_warned = true;
        static std::mutex mu;
        static std::vector<std::string> warned;
        std::lock_guard<std::mutex> lk(mu);
        std::string name = launch_name();
        if (env_int("EMU_STRICT", 0)) {
            kernel_fault(w, "__syncthreads reached by %d threads while %d have exited", w->bar_arrived,
                         w->nthreads - w->live);
        } else if (std::find(warned.begin(), warned.end(), name) == warned.end()) {
            warned.push_back(name);
            fprintf(stderr, "cuda_emu: warning: %s: __syncthreads with %d of %d threads exited (counted as arrived; "
                    "EMU_STRICT=1 makes this an error)\n", name.c_str(), w->nthreads - w->live, w->nthreads);
        }
    }
    release_block(w);
}

inline void syncthreads() {
    Worker* w = t_worker;
    if (!w || !w->cur) die("__syncthreads outside a kernel");
    w->cur->state = WAIT_BLOCK;
    w->bar_arrived++;
    check_block_barrier(w);
    yield_to_scheduler();
}

// the warp barrier over the lanes of mask; every lane of mask must call it (exited lanes: a fault)
inline void warp_barrier(unsigned mask, const char* what) {
    Worker* w = t_worker;
    if (!w || !w->cur) die("%s outside a kernel", what);
    Fiber* f = w->cur;
    int lane = f->linear % 32;
    Warp& wp = w->warps[f->linear / 32];
    if (!((mask >> lane) & 1u)) kernel_fault(w, "%s: lane %d calls it with a mask 0x%08x that leaves it out", what, lane, mask);
    unsigned need = mask & wp.exists;
    if (wp.arrived == 0) wp.mask = mask;
    else if (wp.mask != mask) kernel_fault(w, "%s: lanes of one warp pass different masks (0x%08x, 0x%08x)", what, wp.mask, mask);
    if (need & wp.exited)
        kernel_fault(w, "%s (mask 0x%08x) while lanes 0x%08x of the warp have exited", what, mask, need & wp.exited);
    wp.arrived |= 1u << lane;
    f->state = WAIT_WARP;
    if ((wp.arrived & need) == need) {
        int base = f->linear / 32 * 32;
        for (int l = 0; l < 32; l++)
            if ((need >> l) & 1u) w->fibers[base + l].state = READY;
        wp.arrived = 0;
    }
    yield_to_scheduler();
}

// lane-exchange: every lane of mask writes v, reads lane src's value
template <typename T> inline T exchange(unsigned mask, T v, int src, const char* what) {
    static_assert(sizeof(T) <= 16 && std::is_trivially_copyable<T>::value, "shuffle of an unsupported type");
    Worker* w = t_worker;
    if (!w || !w->cur) die("%s outside a kernel", what);
    Fiber* f = w->cur;
    int lane = f->linear % 32;
    Warp& wp = w->warps[f->linear / 32];
    unsigned p = f->shfl_parity;
    f->shfl_parity ^= 1u;
    memcpy(wp.xchg[p][lane], &v, sizeof(T));
    warp_barrier(mask, what);
    if (!((mask >> src) & 1u) && src != lane)
        kernel_fault(w, "%s: lane %d reads lane %d, which is not in the mask 0x%08x", what, lane, src, mask);
    T r;
    memcpy(&r, wp.xchg[p][src], sizeof(T));
    return r;
}

inline int lane_id() { return t_worker->cur->linear % 32; }

// -- per-block shared memory
inline void* dynamic_shared() {
    Worker* w = t_worker;
    if (!w || !w->cur) die("extern __shared__ outside a kernel");
    return w->arena.data();
}
// the block's storage of the static __shared__ declaration identified by tag (allocated, NaN-filled,
// by the first thread that reaches it)
inline void* static_shared(const void* tag, size_t bytes, size_t align) {
    Worker* w = t_worker;
    if (!w || !w->cur) die("__shared__ outside a kernel");
    for (auto& s : w->statics)
        if (s.first == tag) return w->arena.data() + s.second;
    size_t off = (w->arena_used + align - 1) / align * align;
    size_t static_total = off + bytes - (w->launch->smem + 15) / 16 * 16;
    if (static_total > kStaticSmem) {
        kernel_fault(w, "static __shared__ memory exceeds 48 KiB (%zu bytes)", static_total);
    }
    if (off + bytes > w->arena.size()) {
        kernel_fault(w, "shared memory exceeds %zu bytes (dynamic %zu + static)", kMaxSmem, w->launch->smem);
        static unsigned char junk[1 << 20];
        return junk;   // lets the fiber reach its next barrier; the launch has failed already
    }
    memset(w->arena.data() + off, 0xff, bytes);
    w->arena_used = off + bytes;
    w->statics.push_back({tag, off});
    return w->arena.data() + off;
}

[[noreturn]] inline void fiber_entry() {
    Worker* w = t_worker;
    w->launch->thunk(w->launch->params);
    // the thread has exited: it no longer holds up block barriers; its warp's barriers fault if they
    // wait for it
    Fiber* f = w->cur;
    f->state = DONE;
    w->live--;
    Warp& wp = w->warps[f->linear / 32];
    wp.exited |= 1u << (f->linear % 32);
    if (wp.arrived & ~wp.exited && (wp.mask >> (f->linear % 32)) & 1u)
        kernel_fault(w, "thread exited while lanes 0x%08x of its warp wait for it in a warp barrier", wp.arrived);
    check_block_barrier(w);
    yield_to_scheduler();
    die("a finished fiber was resumed");
}

inline int order_mode() {
    static int m = [] {
        const char* s = getenv("EMU_ORDER");
        if (!s || !*s || !strcmp(s, "forward")) return 0;
        if (!strcmp(s, "reverse")) return 1;
        if (!strcmp(s, "random")) return 2;
        die("EMU_ORDER=%s: forward, reverse or random", s);
    }();
    return m;
}

// runs one block: all its threads as fibers, pass after pass, until all are done
inline void run_block(Worker* w, const Launch& L, unsigned linear_block) {
    int n = (int)(L.block.x * L.block.y * L.block.z);
    ensure_fibers(w, n);
    if (w->arena.size() < kMaxSmem + 64 * 1024) w->arena.resize(kMaxSmem + 64 * 1024);
    w->launch = &L;
    w->nthreads = n;
    w->live = n;
    w->bar_arrived = 0;
    w->bar_warned = false;
    w->warps.assign((n + 31) / 32, Warp());
    for (int i = 0; i < n; i++) w->warps[i / 32].exists |= 1u << (i % 32);
    memset(w->arena.data(), 0xff, L.smem);
    w->arena_used = (L.smem + 15) / 16 * 16;
    w->statics.clear();
    blockIdx = uint3{linear_block % L.grid.x, linear_block / L.grid.x % L.grid.y, linear_block / (L.grid.x * L.grid.y)};
    blockDim = L.block;
    gridDim = L.grid;
    for (int i = 0; i < n; i++) {
        Fiber& f = w->fibers[i];
        f.tid = uint3{i % L.block.x, i / L.block.x % L.block.y, i / (L.block.x * L.block.y)};
        f.linear = i;
        f.state = READY;
        f.shfl_parity = 0;
        fiber_init(w, &f, i);
    }
    int mode = order_mode();
    w->order.resize(n);
    for (int i = 0; i < n; i++) w->order[i] = mode == 1 ? n - 1 - i : i;
    while (w->live > 0 && !w->failed) {
        if (mode == 2) std::shuffle(w->order.begin(), w->order.end(), w->rng);
        bool progress = false;
        for (int k = 0; k < n && !w->failed; k++) {
            Fiber* f = &w->fibers[w->order[k]];
            if (f->state != READY) continue;
            progress = true;
            resume(w, f);
        }
        if (!progress && !w->failed) {
            int at_block = 0, at_warp = 0, first_block = -1, first_warp = -1;
            for (int i = 0; i < n; i++) {
                if (w->fibers[i].state == WAIT_BLOCK) { at_block++; if (first_block < 0) first_block = i; }
                if (w->fibers[i].state == WAIT_WARP) { at_warp++; if (first_warp < 0) first_warp = i; }
            }
            kernel_fault(w, "deadlock: %d threads wait at __syncthreads (first: thread %d), %d at warp barriers "
                         "(first: thread %d), %d exited", at_block, first_block, at_warp, first_warp, n - w->live);
        }
    }
}

// -- the worker pool: created once; each launch hands out its blocks through an atomic counter
struct Pool {
    std::vector<std::thread> threads;
    std::vector<Worker*> workers;   // [0] is the launching thread's
    std::mutex mu;
    std::condition_variable cv_go, cv_done;
    const Launch* launch = nullptr;
    uint64_t generation = 0;
    int busy = 0;
    std::atomic<size_t> next{0};
    size_t nblocks = 0;
    std::vector<size_t> block_order;   // EMU_ORDER=reverse / random: the order blocks are handed out
    std::mt19937_64 block_rng{2024};
    std::atomic<bool> failed{false};
    std::string fail_msg;
    bool stop = false;

    void work(Worker* w, const Launch& L) {
        t_worker = w;
        w->failed = false;
        for (;;) {
            if (failed.load(std::memory_order_relaxed)) break;
            size_t k = next.fetch_add(1);
            if (k >= nblocks) break;
            size_t b = block_order.empty() ? k : block_order[k];
            run_block(w, L, (unsigned)b);
            if (w->failed) {
                std::lock_guard<std::mutex> lk(mu);
                if (!failed.exchange(true)) {
                    unsigned bx = b % L.grid.x, by = b / L.grid.x % L.grid.y, bz = b / (L.grid.x * L.grid.y);
                    char buf[900];
                    snprintf(buf, sizeof(buf), "kernel %s (launched at %s:%d, grid (%u,%u,%u) block (%u,%u,%u)) "
                             "fault in block (%u,%u,%u): %s", L.name, L.file, L.line, L.grid.x, L.grid.y, L.grid.z,
                             L.block.x, L.block.y, L.block.z, bx, by, bz, w->fail_msg);
                    fail_msg = buf;
                }
                break;
            }
        }
        w->launch = nullptr;
    }
    void loop(Worker* w) {
        uint64_t seen = 0;
        for (;;) {
            const Launch* L;
            {
                std::unique_lock<std::mutex> lk(mu);
                cv_go.wait(lk, [&] { return stop || generation != seen; });
                if (stop) return;
                seen = generation;
                L = launch;
            }
            work(w, *L);
            std::lock_guard<std::mutex> lk(mu);
            if (--busy == 0) cv_done.notify_all();
        }
    }
    Pool() {
        int n = env_int("EMU_THREADS", (int)std::thread::hardware_concurrency());
        if (n < 1) n = 1;
        for (int i = 0; i < n; i++) workers.push_back(new Worker());
        for (int i = 1; i < n; i++) threads.emplace_back([this, i] { loop(workers[i]); });
    }
    ~Pool() {
        {
            std::lock_guard<std::mutex> lk(mu);
            stop = true;
        }
        cv_go.notify_all();
        for (auto& t : threads) t.join();
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        for (Worker* w : workers) {
            if (w->stacks) munmap(w->stacks, w->n_stacks * (w->stack_bytes + page));
            delete w;
        }
    }
    // runs every block of L; returns false (fail_msg set) on a fault
    bool run(const Launch& L) {
        size_t total = (size_t)L.grid.x * L.grid.y * L.grid.z;
        failed = false;
        next = 0;
        nblocks = total;
        // blocks in the order EMU_ORDER gives threads too (a block reading what another block of the
        // same launch writes is a race on a GPU; another order may expose it)
        block_order.clear();
        if (order_mode() != 0 && total > 1) {
            block_order.resize(total);
            for (size_t i = 0; i < total; i++) block_order[i] = order_mode() == 1 ? total - 1 - i : i;
            if (order_mode() == 2) std::shuffle(block_order.begin(), block_order.end(), block_rng);
        }
        int helpers = (int)std::min<size_t>(threads.size(), total > 0 ? total - 1 : 0);
        if (helpers > 0) {
            std::lock_guard<std::mutex> lk(mu);
            launch = &L;
            busy = (int)threads.size();
            generation++;
        }
        if (helpers > 0) cv_go.notify_all();
        Worker* saved = t_worker;
        work(workers[0], L);
        t_worker = saved;
        if (helpers > 0) {
            std::unique_lock<std::mutex> lk(mu);
            cv_done.wait(lk, [&] { return busy == 0; });
        }
        return !failed;
    }
};
inline Pool& pool() { static Pool p; return p; }

// -- per-kernel attributes (dynamic shared memory allowance, __launch_bounds__)
struct KernelAttrs { size_t max_dyn_smem = kDefaultDynSmem; int max_threads = kMaxThreads; };
inline std::map<const void*, KernelAttrs>& kernel_attrs() { static std::map<const void*, KernelAttrs> m; return m; }
inline std::mutex& attrs_mu() { static std::mutex m; return m; }
inline bool register_launch_bounds(const void* kernel, int max_threads) {
    std::lock_guard<std::mutex> lk(attrs_mu());
    kernel_attrs()[kernel].max_threads = max_threads;
    return true;
}

struct Stats { std::atomic<size_t> launches{0}, blocks{0}, threads{0}; };
inline Stats& stats() { static Stats s; return s; }

// the launch configuration: <<<grid, block, smem, stream>>>
struct Cfg {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    Cfg(dim3 g, dim3 b, size_t s = 0, cudaStream_t st = nullptr) : grid(g), block(b), smem(s), stream(st) {}
};

// a pointer argument of a kernel must be NULL or point into (or one past) a device allocation
template <typename P> inline bool check_pointer_arg(const P& p, int index, const char* kernel, const char* file,
                                                    int line) {
    if constexpr (std::is_pointer<P>::value) {
        if (p == nullptr || is_device((const void*)p, 0)) return true;
        // one past the end of an allocation
        if (is_device((const char*)(const void*)p - 1, 1)) return true;
        fprintf(stderr, "cuda_emu: kernel %s (launched at %s:%d): argument %d is %p, not a device pointer (a host "
                "pointer or a freed / unallocated address)\n", kernel, file, line, index, (const void*)p);
        return false;
    } else {
        (void)p; (void)index; (void)kernel; (void)file; (void)line;
        return true;
    }
}

template <typename... P, typename... A>
inline void launch(void (*kernel)(P...), const char* name, const char* file, int line, const Cfg& cfg, A&&... args) {
    static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
    if (sticky() != cudaSuccess) return;   // a faulted context runs nothing
    const dim3 g = cfg.grid, b = cfg.block;
    size_t threads = (size_t)b.x * b.y * b.z, blocks = (size_t)g.x * g.y * g.z;
    KernelAttrs attrs;
    {
        std::lock_guard<std::mutex> lk(attrs_mu());
        auto it = kernel_attrs().find((const void*)kernel);
        if (it != kernel_attrs().end()) attrs = it->second;
    }
    const char* bad = nullptr;
    cudaError_t err = cudaErrorInvalidConfiguration;
    if (blocks == 0 || threads == 0) bad = "an empty grid or block";
    else if (threads > (size_t)kMaxThreads || b.z > 64) bad = "more than 1024 threads per block (or block.z > 64)";
    else if (g.y > 65535 || g.z > 65535 || g.x > 2147483647u) bad = "grid.y or grid.z > 65535";
    else if (cfg.smem > attrs.max_dyn_smem) bad = "more dynamic shared memory than allowed (cudaFuncSetAttribute)";
    else if ((int)threads > attrs.max_threads) { bad = "more threads than its __launch_bounds__"; err = cudaErrorLaunchOutOfResources; }
    if (env_int("EMU_TRACE", 0))
        fprintf(stderr, "cuda_emu: launch %s grid (%u,%u,%u) block (%u,%u,%u) smem %zu  [%s:%d]%s\n", name, g.x, g.y,
                g.z, b.x, b.y, b.z, cfg.smem, file, line, bad ? "  REFUSED" : "");
    if (bad) {
        fprintf(stderr, "cuda_emu: launch of %s at %s:%d refused: %s (grid (%u,%u,%u), block (%u,%u,%u), smem %zu)\n",
                name, file, line, bad, g.x, g.y, g.z, b.x, b.y, b.z, cfg.smem);
        set_error(err);
        return;
    }
    // parameters converted to the kernel's types, as CUDA does at the launch
    typedef std::tuple<typename std::decay<P>::type...> Params;
    Params params(std::forward<A>(args)...);
    bool ok = std::apply([&](const auto&... p) {
        int i = 0;
        bool all = true;
        ((all = check_pointer_arg(p, i++, name, file, line) && all), ...);
        return all;
    }, params);
    if (!ok) {
        fault(cudaErrorIllegalAddress);
        return;
    }
    // the kernel and its converted parameters, which every fiber copies (its own parameters)
    struct Bound { void (*k)(P...); Params p; };
    Bound bound{kernel, params};
    Launch L{name, file, line, g, b, cfg.smem,
             [](const void* pp) {
                 const Bound* bd = (const Bound*)pp;
                 Params copy = bd->p;
                 std::apply([&](auto&... p) { bd->k(p...); }, copy);
             },
             &bound};
    stats().launches++;
    stats().blocks += blocks;
    stats().threads += blocks * threads;
    if (!pool().run(L)) {
        fprintf(stderr, "cuda_emu: %s\n", pool().fail_msg.c_str());
        fault(cudaErrorLaunchFailure);
    }
}

// -- memory range checks for the API calls
inline bool check_range(const void* p, size_t bytes, const char* what) {
    if (bytes == 0) return true;
    if (is_device(p, bytes)) return true;
    fprintf(stderr, "cuda_emu: %s: [%p, +%zu bytes) is not inside one device allocation\n", what, p, bytes);
    return false;
}

}  // namespace emu

// ----------------------------------------------------------------------------
// device-side intrinsics

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_barrier(mask, "__syncwarp"); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() {}
template <typename T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    int lane = emu::lane_id();
    return emu::exchange(mask, v, lane / width * width + (src % width + width) % width, "__shfl_sync");
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int lane = emu::lane_id(), src = lane ^ lane_mask;
    if (src / width != lane / width || src >= 32) src = lane;
    return emu::exchange(mask, v, src, "__shfl_xor_sync");
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = emu::lane_id(), src = lane + (int)delta;
    if (src / width != lane / width || src >= 32) src = lane;
    return emu::exchange(mask, v, src, "__shfl_down_sync");
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = emu::lane_id(), src = lane - (int)delta;
    if (src < 0 || src / width != lane / width) src = lane;
    return emu::exchange(mask, v, src, "__shfl_up_sync");
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    unsigned r = 0;
    for (int l = 0; l < 32; l++) {   // 32 exchanges: slow, and rarely used
        if (!((mask >> l) & 1u)) continue;
        r |= (unsigned)(emu::exchange(mask, pred != 0 ? 1 : 0, l, "__ballot_sync") != 0) << l;
    }
    return r;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == (mask & emu::t_worker->warps[emu::t_worker->cur->linear / 32].exists); }
inline unsigned __activemask() {
    emu::Worker* w = emu::t_worker;
    const emu::Warp& wp = w->warps[w->cur->linear / 32];
    return wp.exists & ~wp.exited;
}

// atomics (blocks run on several OS threads at once)
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
template <typename F> inline F emu_atomic_float_op(F* p, F v, F (*op)(F, F)) {
    typedef typename std::conditional<sizeof(F) == 4, uint32_t, uint64_t>::type U;
    U* u = (U*)p;
    U old = __atomic_load_n(u, __ATOMIC_SEQ_CST), nw;
    F of, nf;
    do {
        memcpy(&of, &old, sizeof(F));
        nf = op(of, v);
        memcpy(&nw, &nf, sizeof(F));
    } while (!__atomic_compare_exchange_n(u, &old, nw, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return of;
}
inline float atomicAdd(float* p, float v) { return emu_atomic_float_op<float>(p, v, [](float a, float b) { return a + b; }); }
inline double atomicAdd(double* p, double v) { return emu_atomic_float_op<double>(p, v, [](double a, double b) { return a + b; }); }
inline int atomicMax(int* p, int v) { int o = __atomic_load_n(p, __ATOMIC_SEQ_CST); while (o < v && !__atomic_compare_exchange_n(p, &o, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {} return o; }
inline int atomicMin(int* p, int v) { int o = __atomic_load_n(p, __ATOMIC_SEQ_CST); while (o > v && !__atomic_compare_exchange_n(p, &o, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {} return o; }
inline int atomicCAS(int* p, int cmp, int v) { __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); return cmp; }
inline unsigned atomicCAS(unsigned* p, unsigned cmp, unsigned v) { __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); return cmp; }
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }

// ----------------------------------------------------------------------------
// runtime API

// every call but cudaGetLastError / cudaPeekAtLastError returns a sticky fault once there is one
#define EMU_STICKY() do { cudaError_t s_ = emu::sticky(); if (s_ != cudaSuccess) return s_; } while (0)

inline const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    }
    return "unknown error";
}
inline const char* cudaGetErrorName(cudaError_t e) { return cudaGetErrorString(e); }
inline cudaError_t cudaGetLastError() {
    std::lock_guard<std::mutex> lk(emu::errors().mu);
    cudaError_t e = emu::errors().last;
    emu::errors().last = emu::errors().sticky;
    return e;
}
inline cudaError_t cudaPeekAtLastError() {
    std::lock_guard<std::mutex> lk(emu::errors().mu);
    return emu::errors().last;
}
inline cudaError_t cudaDeviceSynchronize() { EMU_STICKY(); return cudaSuccess; }
inline cudaError_t cudaDeviceReset() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaSetDevice(int d) { EMU_STICKY(); return d == 0 ? cudaSuccess : emu::set_error(cudaErrorInvalidDevice); }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }

inline size_t emu_total_memory() {
    struct sysinfo si;
    sysinfo(&si);
    return (size_t)si.totalram * si.mem_unit;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
    if (d != 0) return emu::set_error(cudaErrorInvalidDevice);
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "CPU emulation of sm_90 (cuda_emu.h, %d worker threads)",
             (int)emu::pool().workers.size());
    p->totalGlobalMem = emu_total_memory();
    p->sharedMemPerBlock = emu::kStaticSmem;
    p->sharedMemPerBlockOptin = emu::kMaxSmem;
    p->sharedMemPerMultiprocessor = 228 * 1024;
    p->totalConstMem = 64 * 1024;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = emu::kMaxThreads;
    p->maxThreadsDim[0] = 1024; p->maxThreadsDim[1] = 1024; p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 2147483647; p->maxGridSize[1] = 65535; p->maxGridSize[2] = 65535;
    p->clockRate = 1000000;   // kHz
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = (int)emu::pool().workers.size();
    p->maxThreadsPerMultiProcessor = 2048;
    p->l2CacheSize = 50 << 20;
    p->concurrentKernels = 1;
    p->unifiedAddressing = 1;
    p->managedMemory = 1;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
    if (d != 0) return emu::set_error(cudaErrorInvalidDevice);
    cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    switch (a) {
    case cudaDevAttrMaxThreadsPerBlock: *v = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *v = 1024; break;
    case cudaDevAttrMaxGridDimX: *v = p.maxGridSize[0]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    case cudaDevAttrClockRate: *v = p.clockRate; break;
    case cudaDevAttrMultiProcessorCount: *v = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *v = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *v = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = (int)p.sharedMemPerBlockOptin; break;
    default: return emu::set_error(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total) {
    EMU_STICKY();
    struct sysinfo si;
    sysinfo(&si);
    *total = (size_t)si.totalram * si.mem_unit;
    *free_b = (size_t)si.freeram * si.mem_unit;
    return cudaSuccess;
}

inline cudaError_t emu_malloc(void** p, size_t bytes, bool managed) {
    EMU_STICKY();
    if (!p) return emu::set_error(cudaErrorInvalidValue);
    if (bytes == 0) { *p = nullptr; return cudaSuccess; }
    // cudaMalloc's 256-byte alignment, the exact size (so that AddressSanitizer, in EMU_ASAN=1 builds,
    // flags the first byte past the end)
    void* q = nullptr;
    if (posix_memalign(&q, 256, bytes) != 0 || !q) { *p = nullptr; return emu::set_error(cudaErrorMemoryAllocation); }
    memset(q, 0xff, bytes);   // NaN floats: reads of what was never written show up
    emu::Memory& m = emu::memory();
    std::lock_guard<std::mutex> lk(m.mu);
    m.allocs[(uintptr_t)q] = emu::Alloc{bytes, managed};
    m.in_use += bytes;
    *p = q;
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) { return emu_malloc(p, bytes, false); }
template <typename T> inline cudaError_t cudaMalloc(T** p, size_t bytes) { return emu_malloc((void**)p, bytes, false); }
inline cudaError_t cudaMallocManaged(void** p, size_t bytes, unsigned = 1) { return emu_malloc(p, bytes, true); }
template <typename T> inline cudaError_t cudaMallocManaged(T** p, size_t bytes, unsigned = 1) { return emu_malloc((void**)p, bytes, true); }
inline cudaError_t cudaFree(void* p) {
    EMU_STICKY();
    if (!p) return cudaSuccess;
    emu::Memory& m = emu::memory();
    std::lock_guard<std::mutex> lk(m.mu);
    auto it = m.allocs.find((uintptr_t)p);
    if (it == m.allocs.end()) {
        fprintf(stderr, "cuda_emu: cudaFree(%p): not a live device allocation\n", p);
        return emu::set_error(cudaErrorInvalidValue);
    }
    m.in_use -= it->second.size;
    memset(p, 0xff, it->second.size);   // use after free reads NaN
    m.allocs.erase(it);
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMallocHost(void** p, size_t bytes) { *p = malloc(bytes ? bytes : 1); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
inline cudaError_t cudaFreeHost(void* p) { free(p); return cudaSuccess; }

inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    EMU_STICKY();
    if (bytes == 0) return cudaSuccess;
    bool dd = emu::is_device(dst, bytes), sd = emu::is_device(src, bytes);
    bool ok = true;
    const char* k = "";
    switch (kind) {
    case cudaMemcpyHostToDevice: ok = dd && !sd; k = "HostToDevice"; break;
    case cudaMemcpyDeviceToHost: ok = sd && !dd; k = "DeviceToHost"; break;
    case cudaMemcpyDeviceToDevice: ok = sd && dd; k = "DeviceToDevice"; break;
    case cudaMemcpyHostToHost: ok = !sd && !dd; k = "HostToHost"; break;
    case cudaMemcpyDefault: k = "Default"; break;
    default: return emu::set_error(cudaErrorInvalidMemcpyDirection);
    }
    // a managed allocation is valid on either side
    if (!ok) {
        const emu::Alloc* ad = emu::find_alloc(dst, bytes);
        const emu::Alloc* as = emu::find_alloc(src, bytes);
        bool dst_ok = (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice) ? ad != nullptr : (!ad || ad->managed);
        bool src_ok = (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice) ? as != nullptr : (!as || as->managed);
        ok = dst_ok && src_ok;
    }
    if (!ok) {
        fprintf(stderr, "cuda_emu: cudaMemcpy(%p, %p, %zu, cudaMemcpy%s): %s%s\n", dst, src, bytes, k,
                (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice) && !dd ? "destination is not (wholly) device memory " : "",
                (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice) && !sd ? "source is not (wholly) device memory" : "");
        return emu::set_error(cudaErrorInvalidValue);
    }
    memmove(dst, src, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t = nullptr) {
    return cudaMemcpy(dst, src, bytes, kind);
}
inline cudaError_t cudaMemset(void* p, int value, size_t bytes) {
    EMU_STICKY();
    if (!emu::check_range(p, bytes, "cudaMemset")) return emu::set_error(cudaErrorInvalidValue);
    memset(p, value, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) { return cudaMemset(p, value, bytes); }
template <typename K> inline cudaError_t cudaFuncSetAttribute(K kernel, cudaFuncAttribute attr, int value) {
    EMU_STICKY();
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || (size_t)value > emu::kMaxSmem) return emu::set_error(cudaErrorInvalidValue);
        std::lock_guard<std::mutex> lk(emu::attrs_mu());
        emu::kernel_attrs()[(const void*)kernel].max_dyn_smem = (size_t)value;
    }
    return cudaSuccess;
}

// streams and events: everything is synchronous here
inline cudaError_t cudaStreamCreate(cudaStream_t* s) { *s = nullptr; return cudaSuccess; }
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { *s = nullptr; return cudaSuccess; }
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { EMU_STICKY(); return cudaSuccess; }
struct emu_event { double t; };
inline double emu_now() { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }
inline cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new emu_event{0}; return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = nullptr) { e->t = emu_now(); return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { EMU_STICKY(); return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) { *ms = (float)((b->t - a->t) * 1e3); return cudaSuccess; }

// Under AddressSanitizer (run.sh's EMU_ASAN=1): a report from inside a kernel names the kernel, the
// block and the thread (ASan's own report gives the source line)
#if defined(__SANITIZE_ADDRESS__)
extern "C" void __sanitizer_set_death_callback(void (*)(void));
inline void emu_asan_death() {
    emu::Worker* w = emu::t_worker;
    if (w && w->launch && w->cur)
        fprintf(stderr, "cuda_emu: the report above came from kernel %s (launched at %s:%d), block (%u,%u,%u), "
                "thread (%u,%u,%u)\n", w->launch->name, w->launch->file, w->launch->line, blockIdx.x, blockIdx.y,
                blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
}
static const bool emu_asan_hook = (__sanitizer_set_death_callback(emu_asan_death), true);
#endif

// launch statistics, for the tools that want to print them
inline void emu_print_stats(FILE* f) {
    fprintf(f, "cuda_emu: %zu launches, %zu blocks, %zu threads emulated\n", emu::stats().launches.load(),
            emu::stats().blocks.load(), emu::stats().threads.load());
}

// DeepSeek V4 Flash forward-pass kernels, compiled at run time by NVRTC.
//
// Header-free on purpose: NVRTC then needs no CUDA include directory, and the text
// compiles anywhere NVRTC runs. The lookup tables of IQ2_XXS are prepended by the host
// (from ds4-quant's tables, so there is one copy of them).
//
// Layout conventions: a batch of T tokens is row-major [T, n]; a weight matrix is
// `rows` rows of `cols` elements stored as ggml blocks along the row; positions are
// absolute (pos0 + t), with pos0 read from device memory (`pos0p`) so that one captured
// decode graph serves every position.
//
// Numerics follow the CPU reference (ds4-engine, ds4-quant) operation for operation:
// activations are quantized to Q8_0 / Q8_K exactly as the CPU does before integer
// dot products, sums of squares for RMSNorm are accumulated in double, RoPE angles are
// an f32 product evaluated in double. What differs is summation order (parallel
// reductions), which the tests bound at 1e-3 relative on the logits.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define EMPTY_SCORE (-1e30f)
#define INFINITY (__int_as_float(0x7f800000))

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// KV rows as the state stores them: f32, or f16 (KV = u16) where the QAT simulation has
// rounded every stored row to f16 — then the f16 bits are the value exactly, in half the
// bytes. Row readers and writers are templates over the two.
__device__ __forceinline__ float kv_get(const float* p) { return *p; }
__device__ __forceinline__ float kv_get(const u16* p) { return h2f(*p); }
__device__ __forceinline__ void kv_put(float* p, float v) { *p = v; }
__device__ __forceinline__ void kv_put(u16* p, float v) { *p = f2h(v); }
__device__ __forceinline__ float2 kv_get2(const float* p) { return *(const float2*)p; }
__device__ __forceinline__ float2 kv_get2(const u16* p) {
    u32 w = *(const u32*)p;
    return make_float2(h2f((u16)(w & 0xffffu)), h2f((u16)(w >> 16)));
}
__device__ __forceinline__ float4 kv_ldg4(const float* p) { return __ldg((const float4*)p); }
__device__ __forceinline__ float4 kv_ldg4(const u16* p) {
    uint2 w = __ldg((const uint2*)p);
    return make_float4(h2f((u16)(w.x & 0xffffu)), h2f((u16)(w.x >> 16)),
                       h2f((u16)(w.y & 0xffffu)), h2f((u16)(w.y >> 16)));
}
__device__ __forceinline__ float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }
__device__ __forceinline__ u16 rd16(const u8* p) { return (u16)p[0] | ((u16)p[1] << 8); }
__device__ __forceinline__ u32 rd32(const u8* p) {
    return (u32)rd16(p) | ((u32)rd16(p + 2) << 16);
}

// Programmatic dependent launch (Hopper): the host may let this kernel's blocks start
// while the previous kernel runs. Every read and write of step data comes after the
// wait, i.e. after the previous kernel's (and so, transitively, every earlier kernel's)
// completion. The signal lets the next kernel's blocks be scheduled: with DS4_PDL_EARLY
// (the host's switch, DS4_CUDA_PDL_EARLY) before this kernel's wait, so that a chain of
// short kernels is resident ahead of time and may load what does not depend on the step
// (hc_pre_late's weights) before their turn; otherwise after it. Early signalling
// cannot deadlock: the next kernel is launched only once all of this one's blocks have
// started, so a waiting block never holds a slot that an earlier kernel still needs.
// Both are no-ops when the launch did not ask for PDL.
#ifndef DS4_PDL_EARLY
#define DS4_PDL_EARLY 0
#endif
__device__ __forceinline__ void pdl_signal_early() {
#if __CUDA_ARCH__ >= 900 && DS4_PDL_EARLY
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#if !DS4_PDL_EARLY
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
#endif
}
__device__ __forceinline__ void pdl_begin() {
    pdl_signal_early();
    pdl_wait();
}

struct SumOp {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename T, typename Op> __device__ __forceinline__ T warp_reduce(T v, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, SumOp()); }
__device__ __forceinline__ float warp_max(float v) { return warp_reduce(v, MaxOp()); }

// Block-wide reduction; every thread gets the result (warp partials combined in warp
// order). `sh` holds 32 entries; the leading barrier lets a block call it twice in a row.
template <typename T, typename Op> __device__ T block_reduce(T v, T* sh, Op op) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_reduce(v, op);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    T r = sh[0];
    for (int i = 1; i < nw; i++) r = op(r, sh[i]);
    return r;
}
__device__ double block_sum_d(double v, double* sh) { return block_reduce(v, sh, SumOp()); }
__device__ float block_sum(float v, float* sh) { return block_reduce(v, sh, SumOp()); }
__device__ float block_max(float v, float* sh) { return block_reduce(v, sh, MaxOp()); }

__device__ __forceinline__ float sigmoidf_(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}
__device__ __forceinline__ float siluf_(float x) { return x * sigmoidf_(x); }
__device__ __forceinline__ float softplusf_(float x) {
    if (x > 20.0f) return x;
    if (x < -20.0f) return expf(x);
    return log1pf(expf(x));
}

// RoPE on one pair: the angle is the f32 product pos*freq, evaluated in double.
// rope_pair's rotation from its rounded cosine and sine (sf = −sine for the inverse).
__device__ __forceinline__ void rope_cs(float* a, float* b, float cf, float sf) {
    float x = *a, y = *b;
    *a = x * cf - y * sf;
    *b = x * sf + y * cf;
}
__device__ __forceinline__ void rope_pair(float* a, float* b, int pos, float freq, int inverse) {
    float ang = (float)pos * freq;
    double s, c;
    sincos((double)ang, &s, &c);
    rope_cs(a, b, (float)c, (float)(inverse ? -s : s));
}

// ---------------------------------------------------------------------------------
// Quantization simulations (spec §3.9), element-wise parts.

__device__ float e4m3_round(float x) {
    float a = fabsf(x);
    if (a == 0.0f) return x;
    int e = (int)((__float_as_uint(a) >> 23) & 0xff) - 127;
    float step = e < -6 ? exp2f(-9.0f) : exp2f((float)(e - 3));
    float q = rintf(a / step) * step;
    return copysignf(fminf(q, 448.0f), x);
}

__device__ float e2m1_round(float x) {
    const float g[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float a = fabsf(x);
    int best = 0;
    for (int i = 1; i < 8; i++) {
        float db = fabsf(a - g[best]), di = fabsf(a - g[i]);
        if (di < db || (di == db && (i % 2) == 0)) best = i;
    }
    return copysignf(g[best], x);
}

__device__ __forceinline__ float f16_round(float x) { return h2f(f2h(x)); }

// The block scale 2^ceil(log2(amax/qmax)), computed as the CPU reference does.
__device__ __forceinline__ float pow2_scale(float amax, float qmax) {
    return exp2f(ceilf(log2f(amax / qmax)));
}

// ---------------------------------------------------------------------------------
// Activation quantization: Q8_0 (blocks of 32) and Q8_K (blocks of 256 with bsums).

// Q8_0 of a block of 32 values held four a lane by eight consecutive lanes (aligned to
// 8): the lane's four int8 values packed, the block's scale in *dd.
__device__ __forceinline__ u32 q8_0_lanes4(const float (&v)[4], float* dd) {
    float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    *dd = amax / 127.0f;
    float id = *dd != 0.0f ? 1.0f / *dd : 0.0f;
    u32 packed = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        int qi = max(-127, min(127, __float2int_rn(v[k] * id)));
        packed |= ((u32)qi & 0xffu) << (8 * k);
    }
    return packed;
}

// Eight lanes per block of 32, four values each (16-byte loads when x is aligned for
// them); a warp covers four blocks. q: int8 [T*n], d: [T*n/32]. Per value the same
// arithmetic as the CPU's (the block maximum is exact whatever the order).
extern "C" __global__ void quant_q8_0(const float* x, i8* q, float* d, int nblocks) { pdl_begin();
    int gt = blockIdx.x * blockDim.x + threadIdx.x;
    int b = gt >> 3, sub = gt & 7;
    bool ok = b < nblocks;
    const float* xp = x + (size_t)b * 32 + 4 * sub;
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (ok) {
        if (((size_t)x & 15) == 0) {
            float4 f = *(const float4*)xp;
            v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
        } else {
#pragma unroll
            for (int k = 0; k < 4; k++) v[k] = xp[k];
        }
    }
    float dd;
    u32 packed = q8_0_lanes4(v, &dd);
    if (ok) {
        *(u32*)(q + (size_t)b * 32 + 4 * sub) = packed;
        if (sub == 0) d[b] = dd;
    }
}

// One warp per block of 256. The scale comes from the element of largest magnitude
// (the first one on ties, as the CPU loop keeps it).
// One block of 256 by one warp: xb (global or shared) to qb, *db, bsb[16].
__device__ void q8_k_warp(const float* xb, i8* qb, float* db, short* bsb, int lane) {
    float amax = 0.0f, mx = 0.0f;
    int mi = 1 << 30;
    for (int i = lane; i < 256; i += 32) {
        float a = fabsf(xb[i]);
        if (a > amax) { amax = a; mx = xb[i]; mi = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float oa = __shfl_xor_sync(0xffffffffu, amax, o);
        float om = __shfl_xor_sync(0xffffffffu, mx, o);
        int oi = __shfl_xor_sync(0xffffffffu, mi, o);
        if (oa > amax || (oa == amax && oi < mi)) { amax = oa; mx = om; mi = oi; }
    }
    if (amax == 0.0f) {
        for (int i = lane; i < 256; i += 32) qb[i] = 0;
        if (lane < 16) bsb[lane] = 0;
        if (lane == 0) *db = 0.0f;
        return;
    }
    float iscale = -127.0f / mx;
    for (int i = lane; i < 256; i += 32) {
        int qi = __float2int_rn(iscale * xb[i]);
        qb[i] = (i8)max(-127, min(127, qi));
    }
    __syncwarp();
    if (lane < 16) {
        int s = 0;
        for (int i = 0; i < 16; i++) s += qb[lane * 16 + i];
        bsb[lane] = (short)s;
    }
    if (lane == 0) *db = 1.0f / iscale;
}

extern "C" __global__ void quant_q8_k(const float* x, i8* q, float* d, short* bsums, int nblocks) { pdl_begin();
    int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (b >= nblocks) return;
    q8_k_warp(x + (size_t)b * 256, q + (size_t)b * 256, d + b, bsums + (size_t)b * 16,
              threadIdx.x & 31);
}

// ---------------------------------------------------------------------------------
// Matrix × vector for a batch.
//
// Output row r of item b: y[b*y_stride + r] = W_b[r, :] · x_b, where
//   W_b = W + (ids ? ids[b] : 0) * mat_bytes           (routed experts: one matrix each)
//   x_b = activation of token b / act_div                (act_div = k for gate/up of experts)
//         offset by (r / group_rows) * group_stride      (grouped output projection)
//
// Decode reads every weight byte once per token, so these kernels are built to stream:
// one warp per output row, each lane loading 16 contiguous bytes of the row per step
// (a warp covers 512 contiguous bytes), integer dot products with dp4a on the Q8
// activations. Q8_0 and IQ2_XXS arrive split (quants, then the f16 block scales: see
// weights.rs), which makes those 16-byte loads aligned. Without expert ids, one warp
// also serves up to `nt` items with the weights it loaded (blockIdx.y picks the group).
// Per-block arithmetic is the CPU's (scale products in the same order); only the order
// of the final float sums differs.

#define MAXNT 8

struct MvArgs {
    const u8* w;
    long long mat_bytes;
    const int* ids;
    int rows, cols;
    const float* xf;     // f32 activations (float weights)
    const i8* xq;        // Q8 activations
    const float* xd;     // Q8 block scales
    const short* xs;     // Q8_K bsums
    int act_div, x_stride, group_rows, group_stride;
    float* y;
    int y_stride, nb;
    const u8* sc;        // split layout: f16 block scales of matrix 0
    long long sc_mat_bytes;
    int nt;              // items per warp (1 with expert ids)
    // Routed items grouped by expert (prefill): group g = blockIdx.y has expert
    // grp[3g], items perm[grp[3g+1] ..][.. grp[3g+2]] (≤ MAXNT); *ngrp groups exist.
    const int* perm;
    const int* grp;
    const int* ngrp;
    // Warps per row (a power of two dividing the block's warps): matrices with few
    // rows split each row's columns over several warps, summed in warp order.
    int ksplit;
    // mm_f16 only, when not null: token t's f32 activations are x[t]·xsc[t] (an RMSNorm
    // factor applied as the activations are staged, the same rounding as the normed
    // vector written out and read back; see rms_factor).
    const float* xsc;
};

// The items of this block's group (`item[0..nt]`) and their expert `e`.
#define MV_ITEMS                                                                      \
    int warps = blockDim.x >> 5;                                                      \
    int lane = threadIdx.x & 31;                                                      \
    int item[NTM];                                                                  \
    int nt;                                                                           \
    long long e;                                                                      \
    if (a.grp) {                                                                      \
        int g = blockIdx.y;                                                           \
        if (g >= *a.ngrp) return;                                                     \
        e = a.grp[3 * g];                                                             \
        int first = a.grp[3 * g + 1];                                                 \
        nt = a.grp[3 * g + 2];                                                        \
        for (int j = 0; j < NTM; j++) item[j] = j < nt ? a.perm[first + j] : 0;     \
    } else {                                                                          \
        int b0 = blockIdx.y * a.nt;                                                   \
        if (b0 >= a.nb) return;                                                       \
        nt = min(a.nt, a.nb - b0);                                                    \
        e = a.ids ? (long long)a.ids[b0] : 0;                                         \
        for (int j = 0; j < NTM; j++) item[j] = b0 + j;                             \
    }

// Row loop. Every warp of a block runs the same number of rounds (the split sum
// synchronises the block); a warp past the last row recomputes it and stores nothing.
// `sub` is the warp's column share, `ks` the number of shares.
#define MV_ROWS                                                                       \
    int ks = a.ksplit, sub = (threadIdx.x >> 5) % ks, rpb = warps / ks;               \
    for (int r0 = blockIdx.x * rpb; r0 < a.rows; r0 += gridDim.x * rpb)               \
        for (int rr = r0 + (threadIdx.x >> 5) / ks, r = min(rr, a.rows - 1), once = 1; \
             once; once = 0)
#define MV_LIVE (rr < a.rows)

__device__ __forceinline__ long long mv_xoff(const MvArgs& a, int b, int r) {
    return (long long)(b / a.act_div) * a.x_stride +
           (a.group_rows ? (long long)(r / a.group_rows) * a.group_stride : 0);
}

template <int NTM>
__device__ __forceinline__ void mv_store(const MvArgs& a, float* acc, const int* item, int nt, int r,
                                         int lane, bool live) {
    if (a.ksplit == 1) {
#pragma unroll
        for (int j = 0; j < NTM; j++) {
            if (j < nt) {
                float v = warp_sum(acc[j]);
                if (lane == 0 && live) a.y[(size_t)item[j] * a.y_stride + r] = v;
            }
        }
        return;
    }
    __shared__ float part[32][NTM];
    int w = threadIdx.x >> 5, ks = a.ksplit;
#pragma unroll
    for (int j = 0; j < NTM; j++) {
        if (j < nt) {
            float v = warp_sum(acc[j]);
            if (lane == 0) part[w][j] = v;
        }
    }
    __syncthreads();
    if (w % ks == 0 && lane == 0 && live) {
        for (int j = 0; j < nt; j++) {
            float v = 0.0f;
            for (int q = 0; q < ks; q++) v += part[w + q][j];
            a.y[(size_t)item[j] * a.y_stride + r] = v;
        }
    }
    __syncthreads();
}

__device__ __forceinline__ int dot16(int4 w, int4 x) {
    int s = __dp4a(w.x, x.x, 0);
    s = __dp4a(w.y, x.y, s);
    s = __dp4a(w.z, x.z, s);
    return __dp4a(w.w, x.w, s);
}

// Pieces in flight per lane of decode's Q8_0 product (the host's DS4_CUDA_Q8_U).
#ifndef DS4_Q8_U
#define DS4_Q8_U 4
#endif
// Dense decode products load their first weights before the PDL wait (DS4_CUDA_MV_EARLY).
#ifndef DS4_MV_EARLY
#define DS4_MV_EARLY 1
#endif
// Prefill's mm_f16 (its split activations stored in pairs) and mm_iq2_xxs_st (its B
// operands) take their fragments by ldmatrix (v21; DS4_CUDA_LDSM=0: v20's 16-bit stores
// and 32-bit fragment loads, the same values).
#ifndef DS4_LDSM_B
#define DS4_LDSM_B 1
#endif
// Decode's Q2_K product loads its next round before decoding the current one (v22: the
// step 1.1% shorter; DS4_CUDA_Q2K_PF=0 keeps the one-round loop, for comparisons).
#ifndef DS4_Q2K_PF
#define DS4_Q2K_PF 1
#endif
// Decode's IQ2_XXS product applies the signs as g ^ m and subtracts the masks' own dot
// products (two dp4a for four weights instead of an xor, a mask, an add and a dp4a; the
// same integers): 8% fewer instructions in its loop, the step 0.6% shorter (v23;
// DS4_CUDA_IQ2_DP2=0 keeps the masked words).
#ifndef DS4_IQ2_DP2
#define DS4_IQ2_DP2 1
#endif
// Decode attention's cluster kernel scores f16 rows a row per half-warp: the step 0.7%
// shorter (v23; DS4_CUDA_ATTN_HW=0 a row per warp).
#ifndef DS4_ATT_HW
#define DS4_ATT_HW 1
#endif
// Its weighted sums two columns a thread, 16 rows in flight (DS4_CUDA_ATTN_WV2=1; v23,
// prepared, not yet run on a GPU).
#ifndef DS4_ATT_WV2
#define DS4_ATT_WV2 0
#endif
// hc_pre_late's blocks all load the last block's inputs early (DS4_CUDA_HC_XEARLY=1; off
// by default since v21's 512-thread blocks, which would hold twice the registers for it).
#ifndef DS4_HC_XEARLY
#define DS4_HC_XEARLY 0
#endif
#ifndef DS4_Q8_LB
#define DS4_Q8_LB 1
#endif
// Blocks a SM the register budget of these decode kernels is cut for (launch bounds):
// mv_iq2_xxs_1ts (256 threads), mv_q2_k_1r (0: no minimum) and mv_q8_0_r2 (128, all
// their launches); mv_f16_1's as blocks of 512 threads (it takes up to 512; 0: none).
#ifndef DS4_IQ2_LB
#define DS4_IQ2_LB 3
#endif
#ifndef DS4_Q2K_LB
#define DS4_Q2K_LB 0
#endif
// (Bounds of (128, 1) are not those of (128): ptxas then took 95 registers, not 56.)
#if DS4_Q2K_LB
#define MV_Q2_K_1R_BOUNDS __launch_bounds__(128, DS4_Q2K_LB)
#else
#define MV_Q2_K_1R_BOUNDS __launch_bounds__(128)
#endif
#ifndef DS4_F16_LB
#define DS4_F16_LB 0
#endif
#if DS4_F16_LB
#define MV_F16_1_BOUNDS __launch_bounds__(512, DS4_F16_LB)
#else
#define MV_F16_1_BOUNDS
#endif
#ifndef DS4_R2_LB
#define DS4_R2_LB 8
#endif

// A 16-byte piece of a weight matrix (every caller streams weights). With DS4_WSTREAM
// (the host's DS4_CUDA_WSTREAM) the load skips L1 — weights are read once a step, and
// the activations each warp rereads stay there — and asks L2 for the whole 256-byte
// block around it, the rest of which the warp's next pieces read.
#ifndef DS4_WSTREAM
#define DS4_WSTREAM 0
#endif
__device__ __forceinline__ int4 ldg4(const void* p) {
#if DS4_WSTREAM
    int4 v;
    asm("ld.global.nc.L1::no_allocate.L2::256B.v4.s32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
#else
    return __ldg((const int4*)p);
#endif
}

// Float weights (f32, f16, bf16) times f32 activations; `T` is the stored element and
// `load` widens it. A lane takes 16 bytes of weights (16/sizeof(T) elements) per step.
// A lane's four 16-byte pieces of a float row from piece c0 (32·ks apart).
template <typename T>
__device__ __forceinline__ void mv_float_load(const T* w, int c0, int nch, int ks, int4 (&raw)[4]) {
    const int per = 16 / (int)sizeof(T);
#pragma unroll
    for (int u = 0; u < 4; u++) {
        int c = c0 + u * 32 * ks;
        raw[u] = c < nch ? ldg4(w + (size_t)c * per) : make_int4(0, 0, 0, 0);
    }
}
// EARLY as in mv_q8_0_body: a dense product's first four pieces before the wait.
template <int NTM, typename T, typename Load, bool EARLY = false>
__device__ void mv_float(const MvArgs& a, Load load) {
    const int per = 16 / (int)sizeof(T);
    int4 raw[4];
    bool held = false;
    if (EARLY) {
        int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
        int ks = a.ksplit, sub = (threadIdx.x >> 5) % ks, rpb = warps / ks;
        int r0 = blockIdx.x * rpb;
        if (!a.ids && !a.grp && r0 < a.rows && blockIdx.y * a.nt < a.nb) {
            int r = min(r0 + (threadIdx.x >> 5) / ks, a.rows - 1);
            mv_float_load<T>((const T*)a.w + (size_t)r * a.cols, lane + 32 * sub, a.cols / per, ks,
                             raw);
            held = true;
        }
        pdl_wait();
    }
    MV_ITEMS
    int nch = a.cols / per;
    // Activation rows whose offsets keep 16-byte alignment are read a float4 at a time
    // (the same values in the same order: only the loads are wider).
    bool vec = ((a.x_stride | a.group_stride) & 3) == 0 && ((size_t)a.xf & 15) == 0;
    MV_ROWS {
        const T* w = (const T*)(a.w + e * a.mat_bytes) + (size_t)r * a.cols;
        float acc[NTM];
        long long xo[NTM];
#pragma unroll
        for (int j = 0; j < NTM; j++) {
            acc[j] = 0.0f;
            xo[j] = j < nt ? mv_xoff(a, item[j], r) : 0;
        }
        // Four pieces in flight per lane: one 16-byte load per step leaves HBM idle.
        for (int c0 = lane + 32 * sub; c0 < nch; c0 += 4 * 32 * ks) {
            if (!held) mv_float_load<T>(w, c0, nch, ks, raw);
            held = false;
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int c = c0 + u * 32 * ks;
                if (c >= nch) break;
                const T* wv = (const T*)&raw[u];
#pragma unroll
                for (int j = 0; j < NTM; j++) {
                    if (j < nt) {
                        const float* x = a.xf + xo[j] + c * per;
                        float xv[per];
                        if (vec) {
#pragma unroll
                            for (int q = 0; q < per / 4; q++) {
                                float4 v = __ldg((const float4*)x + q);
                                xv[4 * q] = v.x;
                                xv[4 * q + 1] = v.y;
                                xv[4 * q + 2] = v.z;
                                xv[4 * q + 3] = v.w;
                            }
                        } else {
#pragma unroll
                            for (int i = 0; i < per; i++) xv[i] = x[i];
                        }
                        float s = 0.0f;
#pragma unroll
                        for (int i = 0; i < per; i++) s += load(wv[i]) * xv[i];
                        acc[j] += s;
                    }
                }
            }
        }
        held = false;  // a lane whose first piece lay past the row did not use them
        // Columns past the last whole 16-byte piece (rows not a multiple of it).
        for (int i = nch * per + lane + 32 * sub; i < a.cols; i += 32 * ks) {
#pragma unroll
            for (int j = 0; j < NTM; j++)
                if (j < nt) acc[j] += load(w[i]) * a.xf[xo[j] + i];
        }
        mv_store<NTM>(a, acc, item, nt, r, lane, MV_LIVE);
    }
}
struct LoadF32 {
    __device__ float operator()(float v) const { return v; }
};
struct LoadF16 {
    __device__ float operator()(u16 v) const { return h2f(v); }
};
struct LoadBf16 {
    __device__ float operator()(u16 v) const { return bf2f(v); }
};
// Each product has two entry points: up to MAXNT items per warp, and one item (decode:
// no per-item arrays, fewer registers, more warps resident to keep loads in flight).
extern "C" __global__ void mv_f32(MvArgs a) { pdl_begin(); mv_float<MAXNT, float>(a, LoadF32()); }
extern "C" __global__ void mv_f16(MvArgs a) { pdl_begin(); mv_float<MAXNT, u16>(a, LoadF16()); }
extern "C" __global__ void mv_bf16(MvArgs a) { pdl_begin(); mv_float<MAXNT, u16>(a, LoadBf16()); }
extern "C" __global__ void mv_f32_1(MvArgs a) { pdl_begin(); mv_float<1, float>(a, LoadF32()); }
extern "C" __global__ void MV_F16_1_BOUNDS mv_f16_1(MvArgs a) {
#if DS4_MV_EARLY
    pdl_signal_early();
    mv_float<1, u16, LoadF16, true>(a, LoadF16());
#else
    pdl_begin();
    mv_float<1, u16>(a, LoadF16());
#endif
}
extern "C" __global__ void mv_bf16_1(MvArgs a) { pdl_begin(); mv_float<1, u16>(a, LoadBf16()); }

// Q8_0, split: 32 int8 per block in `w`, f16 scales in `sc`. A lane takes half a block;
// the two halves' integer sums meet by a shuffle so each block is scaled once, as on
// the CPU. Every lane runs the same number of steps (the shuffle needs the full warp).
// U: pieces in flight per lane.
// A lane's U pieces of a Q8_0 row from piece c0 (32 apart) and their block scales.
template <int U>
__device__ __forceinline__ void mv_q8_0_load(const u8* wq, const u16* wd, int c0, int nch, int lane,
                                             int4 (&wv)[U], float (&dw)[U], bool (&ok)[U]) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        int c = c0 + 32 * u + lane;
        ok[u] = c < nch;
        wv[u] = ok[u] ? ldg4(wq + 16 * (size_t)c) : make_int4(0, 0, 0, 0);
        dw[u] = ok[u] ? h2f(__ldg(wd + (c >> 1))) : 0.0f;
    }
}
// EARLY: the caller signalled but did not wait (the entry points under DS4_MV_EARLY); a
// product whose weights do not depend on the step (no expert ids, no groups) then loads
// its first U pieces before the wait, so that their memory latency overlaps the previous
// kernel's tail.
template <int NTM, int U, bool EARLY = false> __device__ void mv_q8_0_body(const MvArgs& a) {
    bool held = false;
    int4 wv[U];
    float dw[U];
    bool ok[U];
    if (EARLY) {
        if (!a.ids && !a.grp) {
            int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
            int ks = a.ksplit, sub = (threadIdx.x >> 5) % ks, rpb = warps / ks;
            int r0 = blockIdx.x * rpb;
            if (r0 < a.rows && blockIdx.y * a.nt < a.nb) {
                int r = min(r0 + (threadIdx.x >> 5) / ks, a.rows - 1);
                mv_q8_0_load<U>(a.w + (size_t)r * a.cols, (const u16*)a.sc + (size_t)r * (a.cols >> 5),
                                32 * U * sub, a.cols >> 4, lane, wv, dw, ok);
                held = true;
            }
        }
        pdl_wait();
    }
    MV_ITEMS
    int nch = a.cols >> 4;
    MV_ROWS {
        const u8* wq = a.w + e * a.mat_bytes + (size_t)r * a.cols;
        const u16* wd = (const u16*)(a.sc + e * a.sc_mat_bytes) + (size_t)r * (a.cols >> 5);
        float acc[NTM];
#pragma unroll
        for (int j = 0; j < NTM; j++) acc[j] = 0.0f;
        for (int c0 = 32 * U * sub; c0 < nch; c0 += 32 * U * ks) {
            if (!held) mv_q8_0_load<U>(wq, wd, c0, nch, lane, wv, dw, ok);
            held = false;
#pragma unroll
            for (int j = 0; j < NTM; j++) {
                if (j < nt) {
                    long long xo = mv_xoff(a, item[j], r);
#pragma unroll
                    for (int u = 0; u < U; u++) {
                        int c = c0 + 32 * u + lane;
                        int s = 0;
                        float dx = 0.0f;
                        if (ok[u]) {
                            s = dot16(wv[u], *(const int4*)(a.xq + xo + 16 * c));
                            dx = a.xd[(xo >> 5) + (c >> 1)];
                        }
                        s += __shfl_xor_sync(0xffffffffu, s, 1);
                        if (ok[u] && (lane & 1) == 0) acc[j] += dw[u] * dx * (float)s;
                    }
                }
            }
        }
        held = false;  // a warp whose first share was empty did not use them
        mv_store<NTM>(a, acc, item, nt, r, lane, MV_LIVE);
    }
}
// Decode's Q8_0 products with R rows per warp (rows w, w + step, ..: neighbouring warps
// read neighbouring rows): each lane has R × 2 16-byte pieces in flight per step rather
// than 2, and a 1,024-column row (q_b: 32,768 of them) no longer makes a warp whose whole
// life is one load. Per row the same lane sums, shuffle and warp sum as mv_q8_0_body, so
// the values are identical. One item (NTM 1), ksplit 1. Row addresses are recomputed
// from 32-bit row numbers: kept as R 64-bit pointers each, R = 4 took 147 registers.
// The first R × 2 pieces of a warp's rows (its first column chunk) into wv, dw.
template <int R> __device__ __forceinline__ void mv_q8_0_rows_load(const MvArgs& a, const u8* wq0,
                                                                   const u16* wd0, int rb, int rstep,
                                                                   int c0, int nch, int lane,
                                                                   int4 (&wv)[R][2], float (&dw)[R][2]) {
#pragma unroll
    for (int j = 0; j < R; j++) {
        int r = min(rb + j * rstep, a.rows - 1);
#pragma unroll
        for (int u = 0; u < 2; u++) {
            int c = c0 + 32 * u + lane;
            bool ok = c < nch;
            wv[j][u] = ok ? ldg4(wq0 + (size_t)r * a.cols + 16 * c) : make_int4(0, 0, 0, 0);
            dw[j][u] = ok ? h2f(__ldg(wd0 + (size_t)r * (a.cols >> 5) + (c >> 1))) : 0.0f;
        }
    }
}
// EARLY as in mv_q8_0_body: the first chunk's loads before the wait (dense products).
template <int R, bool EARLY = false> __device__ __forceinline__ void mv_q8_0_rows(const MvArgs& a) {
    const int NTM = 1;
    int4 wv[R][2];
    float dw[R][2];
    bool held = false;
    if (EARLY) {
        int rstep = gridDim.x * (blockDim.x >> 5);
        int rb = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
        if (!a.ids && !a.grp && rb < a.rows && blockIdx.y * a.nt < a.nb) {
            mv_q8_0_rows_load<R>(a, a.w, (const u16*)a.sc, rb, rstep, 0, a.cols >> 4,
                                 threadIdx.x & 31, wv, dw);
            held = true;
        }
        pdl_wait();
    }
    MV_ITEMS
    int nch = a.cols >> 4;
    int rstep = gridDim.x * warps;
    int rbase = blockIdx.x * warps + (threadIdx.x >> 5);
    const u8* wq0 = a.w + e * a.mat_bytes;
    const u16* wd0 = (const u16*)(a.sc + e * a.sc_mat_bytes);
    for (int rb = rbase; rb < a.rows; rb += R * rstep) {
        float acc[R];
#pragma unroll
        for (int j = 0; j < R; j++) acc[j] = 0.0f;
        for (int c0 = 0; c0 < nch; c0 += 64) {
            if (!held) mv_q8_0_rows_load<R>(a, wq0, wd0, rb, rstep, c0, nch, lane, wv, dw);
            held = false;
#pragma unroll
            for (int j = 0; j < R; j++) {
                int r = min(rb + j * rstep, a.rows - 1);
                long long xo = mv_xoff(a, item[0], r);
#pragma unroll
                for (int u = 0; u < 2; u++) {
                    int c = c0 + 32 * u + lane;
                    bool ok = c < nch;
                    int s_ = 0;
                    float dx = 0.0f;
                    if (ok) {
                        s_ = dot16(wv[j][u], *(const int4*)(a.xq + xo + 16 * c));
                        dx = a.xd[(xo >> 5) + (c >> 1)];
                    }
                    s_ += __shfl_xor_sync(0xffffffffu, s_, 1);
                    if (ok && (lane & 1) == 0) acc[j] += dw[j][u] * dx * (float)s_;
                }
            }
        }
#pragma unroll
        for (int j = 0; j < R; j++) {
            int r = rb + j * rstep;
            float v = warp_sum(acc[j]);
            if (lane == 0 && r < a.rows) a.y[(size_t)item[0] * a.y_stride + r] = v;
        }
    }
}
extern "C" __global__ void __launch_bounds__(128, DS4_R2_LB) mv_q8_0_r2(MvArgs a) {
#if DS4_MV_EARLY
    pdl_signal_early();
    mv_q8_0_rows<2, true>(a);
#else
    pdl_begin();
    mv_q8_0_rows<2>(a);
#endif
}
extern "C" __global__ void __launch_bounds__(128, 4) mv_q8_0_r4(MvArgs a) { pdl_begin();
    mv_q8_0_rows<4>(a);
}
extern "C" __global__ void mv_q8_0(MvArgs a) { pdl_begin(); mv_q8_0_body<MAXNT, 2>(a); }
// Decode: DS4_Q8_U pieces a lane (the host's DS4_CUDA_Q8_U, default 4: 0.4% off an H100's
// decode step against 2, v15; 1 is 2.2% slower).
// DS4_Q8_LB (the host's DS4_CUDA_Q8_LB, on unless 0): at most 64 registers, eight
// 128-thread blocks a SM (its 69 registers left room for seven; 1.9% off the H200's
// decode step, v17). Bounds of 512 threads × 2 give the same cap: matrices of few rows
// split their columns over more warps, up to 512 threads a block (ksplit ≤ 16).
#if DS4_Q8_LB
#define MV_Q8_0_1_BOUNDS __launch_bounds__(512, 2)
#else
#define MV_Q8_0_1_BOUNDS
#endif
extern "C" __global__ void MV_Q8_0_1_BOUNDS mv_q8_0_1(MvArgs a) {
#if DS4_MV_EARLY
    pdl_signal_early();
    mv_q8_0_body<1, DS4_Q8_U, true>(a);
#else
    pdl_begin();
    mv_q8_0_body<1, DS4_Q8_U>(a);
#endif
}

// One 16×8 mma accumulator fragment into y: rows ra and ra + 8 of the lane's group,
// items i0 and i1 of its thread quad (an item < 0 is absent; rows past a.rows too).
__device__ __forceinline__ void mma_store(const MvArgs& a, const float* c, int ra, int i0,
                                          int i1) {
    int rb = ra + 8;
    if (ra < a.rows && i0 >= 0) a.y[(size_t)i0 * a.y_stride + ra] = c[0];
    if (ra < a.rows && i1 >= 0) a.y[(size_t)i1 * a.y_stride + ra] = c[1];
    if (rb < a.rows && i0 >= 0) a.y[(size_t)i0 * a.y_stride + rb] = c[2];
    if (rb < a.rows && i1 >= 0) a.y[(size_t)i1 * a.y_stride + rb] = c[3];
}

// NJ n8 tiles of m64 accumulators (4 a tile, wgmma's and mma.m16n8's layout) into y: rows
// ra and ra + 8, tokens t0 + 8j + 2tq and + 1 (tokens past the run are absent).
template <int NJ>
__device__ __forceinline__ void mma_store_tokens(const MvArgs& a, const float* acc, int ra, int t0, int tq) {
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        int ta = t0 + 8 * j + 2 * tq, tb = ta + 1;
        mma_store(a, acc + 4 * j, ra, ta < a.nb ? ta : -1, tb < a.nb ? tb : -1);
    }
}

// Q8_0 weights × Q8_0 activations for a run of tokens (prefill) on the tensor cores:
// a block computes a 64-row × 64-token tile; per Q8_0 block (32 columns) each warp
// issues int8 mma.m16n8k32 for its 16 rows and the 8 token groups, then scales the
// exact int32 sums by (weight scale × activation scale) and adds them in column order.
// Tiles stage 4 Q8_0 blocks (128 columns) at a time in shared memory, rows padded to
// 144 bytes so the fragment loads of a warp hit 32 different banks.
#define MM_BM 64
#define MM_BN 64
#define MM_KB 4
#define MM_LD 144

// The same product added into c (D = A·B + C).
__device__ __forceinline__ void mma_s8_16832_acc(int* c, const int* a, int b0, int b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_s8_16832(int* c, const int* a, int b0, int b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%10,%11,%12,%13};"
        : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0), "r"(0), "r"(0),
          "r"(0));
}

// Asynchronous copies global → shared (Ampere+); src_bytes 0 fills zeros.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
    u32 d = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
    u32 d = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async8(void* dst, const void* src, int src_bytes) {
    u32 d = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;" ::"r"(d), "l"(src), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait0() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

// One stage's products of a 64-row × 64-token tile: MM_KB Q8_0 blocks of each operand in
// shared memory (rows padded to MM_LD bytes); per block each warp issues int8
// mma.m16n8k32 for its 16 rows and the 8 token groups, then scales the exact int32 sums
// by (weight scale × activation scale) and adds them in column order. `da(row, kb)` is
// a weight row's block scale; UNROLL how many blocks the compiler may overlap.
template <int UNROLL, typename DA>
__device__ __forceinline__ void mm_q8_0_stage(const i8* as, const i8* bs, DA da,
                                              const float (*bd)[MM_KB], float (*acc)[4]) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
#pragma unroll UNROLL
    for (int kb = 0; kb < MM_KB; kb++) {
        const i8* ab = as + (16 * warp) * MM_LD + 32 * kb;
        int af[4];
        af[0] = *(const int*)(ab + g * MM_LD + 4 * tq);
        af[1] = *(const int*)(ab + (g + 8) * MM_LD + 4 * tq);
        af[2] = *(const int*)(ab + g * MM_LD + 16 + 4 * tq);
        af[3] = *(const int*)(ab + (g + 8) * MM_LD + 16 + 4 * tq);
        float da0 = da(16 * warp + g, kb), da1 = da(16 * warp + g + 8, kb);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const i8* bb = bs + (8 * j + g) * MM_LD + 32 * kb;
            int c[4];
            mma_s8_16832(c, af, *(const int*)(bb + 4 * tq), *(const int*)(bb + 16 + 4 * tq));
            float db0 = bd[8 * j + 2 * tq][kb], db1 = bd[8 * j + 2 * tq + 1][kb];
            acc[j][0] += da0 * db0 * (float)c[0];
            acc[j][1] += da0 * db1 * (float)c[1];
            acc[j][2] += da1 * db0 * (float)c[2];
            acc[j][3] += da1 * db1 * (float)c[3];
        }
    }
}

// Q8_0 weights × Q8_0 activations for a run of tokens (prefill) on the tensor cores, one
// stage at a time (`mm_q8_0_cp` overlaps the next stage's loads with this one's products).
extern "C" __global__ void __launch_bounds__(128) mm_q8_0(MvArgs a) { pdl_begin();
    __shared__ __align__(16) i8 as[MM_BM * MM_LD];
    __shared__ __align__(16) i8 bs[MM_BN * MM_LD];
    __shared__ float ad[MM_BM][MM_KB];
    __shared__ float bd[MM_BN][MM_KB];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tq = lane & 3;
    int r0 = blockIdx.x * MM_BM, t0 = blockIdx.y * MM_BN;
    int nblk = a.cols >> 5;
    long long goff = a.group_rows ? (long long)(r0 / a.group_rows) * a.group_stride : 0;
    float acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[j][q] = 0.0f;
    const u16* wd = (const u16*)a.sc;
    // Stage: 64 rows × 128 bytes of each operand (8 int4 per row, 4 per thread) and the
    // rows' block scales (2 each per thread), all loads issued before any store.
    int4 wv[4], xv[4];
    float adv[2], bdv[2];
    auto load = [&](int kb0) {
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int idx = threadIdx.x + 128 * u, row = idx >> 3, ch = idx & 7;
            int wr = r0 + row, tk = t0 + row;
            wv[u] = make_int4(0, 0, 0, 0);
            xv[u] = make_int4(0, 0, 0, 0);
            if (wr < a.rows) wv[u] = ldg4(a.w + (size_t)wr * a.cols + (size_t)kb0 * 32 + 16 * ch);
            if (tk < a.nb)
                xv[u] = *(const int4*)(a.xq + (long long)tk * a.x_stride + goff + (size_t)kb0 * 32 + 16 * ch);
        }
#pragma unroll
        for (int u = 0; u < 2; u++) {
            int idx = threadIdx.x + 128 * u, row = idx / MM_KB, kb = idx % MM_KB;
            int wr = r0 + row, tk = t0 + row;
            adv[u] = wr < a.rows ? h2f(wd[(size_t)wr * nblk + kb0 + kb]) : 0.0f;
            bdv[u] = tk < a.nb ? a.xd[(((long long)tk * a.x_stride + goff) >> 5) + kb0 + kb] : 0.0f;
        }
    };
    for (int kb0 = 0; kb0 < nblk; kb0 += MM_KB) {
        load(kb0);
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int idx = threadIdx.x + 128 * u, row = idx >> 3, ch = idx & 7;
            *(int4*)(as + row * MM_LD + 16 * ch) = wv[u];
            *(int4*)(bs + row * MM_LD + 16 * ch) = xv[u];
        }
#pragma unroll
        for (int u = 0; u < 2; u++) {
            int idx = threadIdx.x + 128 * u, row = idx / MM_KB, kb = idx % MM_KB;
            ad[row][kb] = adv[u];
            bd[row][kb] = bdv[u];
        }
        __syncthreads();
        mm_q8_0_stage<MM_KB>(as, bs, [&](int row, int kb) { return ad[row][kb]; }, bd, acc);
        __syncthreads();
    }
    int ra = r0 + 16 * warp + g;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        int ta = t0 + 8 * j + 2 * tq, tb = ta + 1;
        mma_store(a, acc[j], ra, ta < a.nb ? ta : -1, tb < a.nb ? tb : -1);
    }
}


// mm_q8_0 with each stage's operands copied by cp.async one stage ahead into a second
// buffer (no staging registers, so as many blocks stay resident as for the one-stage
// kernel); the weight scales arrive as f16 and widen when read. Same arithmetic.
extern "C" __global__ void __launch_bounds__(128, 4) mm_q8_0_cp(MvArgs a) { pdl_begin();
    __shared__ __align__(16) i8 as[2][MM_BM * MM_LD];
    __shared__ __align__(16) i8 bs[2][MM_BN * MM_LD];
    __shared__ __align__(16) u16 adh[2][MM_BM][MM_KB];
    __shared__ __align__(16) float bd[2][MM_BN][MM_KB];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tq = lane & 3;
    int r0 = blockIdx.x * MM_BM, t0 = blockIdx.y * MM_BN;
    int nblk = a.cols >> 5;
    long long goff = a.group_rows ? (long long)(r0 / a.group_rows) * a.group_stride : 0;
    const u16* wd = (const u16*)a.sc;
    auto stage = [&](int kb0, int buf) {
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int idx = threadIdx.x + 128 * u, row = idx >> 3, ch = idx & 7;
            int wr = r0 + row, tk = t0 + row;
            bool wok = wr < a.rows, xok = tk < a.nb;
            cp_async16(&as[buf][row * MM_LD + 16 * ch],
                       wok ? a.w + (size_t)wr * a.cols + (size_t)kb0 * 32 + 16 * ch : a.w, wok ? 16 : 0);
            cp_async16(&bs[buf][row * MM_LD + 16 * ch],
                       xok ? a.xq + (long long)tk * a.x_stride + goff + (size_t)kb0 * 32 + 16 * ch : a.xq,
                       xok ? 16 : 0);
        }
        if (threadIdx.x < MM_BM) {
            int wr = r0 + threadIdx.x;
            bool ok = wr < a.rows;
            cp_async8(&adh[buf][threadIdx.x][0], ok ? wd + (size_t)wr * nblk + kb0 : wd, ok ? 8 : 0);
        } else {
            int row = threadIdx.x - MM_BM, tk = t0 + row;
            bool ok = tk < a.nb;
            cp_async16(&bd[buf][row][0],
                       ok ? a.xd + (((long long)tk * a.x_stride + goff) >> 5) + kb0 : a.xd, ok ? 16 : 0);
        }
    };
    float acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[j][q] = 0.0f;
    stage(0, 0);
    cp_async_commit();
    for (int kb0 = 0, it = 0; kb0 < nblk; kb0 += MM_KB, it++) {
        int buf = it & 1;
        // The other buffer was last read before the previous iteration's closing barrier.
        if (kb0 + MM_KB < nblk) stage(kb0 + MM_KB, buf ^ 1);
        cp_async_commit();
        cp_async_wait1();
        __syncthreads();
        // One Q8_0 block at a time: unrolling the four lets the compiler hoist their
        // loads past the 128 registers that keep four blocks resident.
        mm_q8_0_stage<1>(as[buf], bs[buf],
                         [&](int row, int kb) { return h2f(adh[buf][row][kb]); }, bd[buf], acc);
        __syncthreads();
    }
    int ra = r0 + 16 * warp + g;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        int ta = t0 + 8 * j + 2 * tq, tb = ta + 1;
        mma_store(a, acc[j], ra, ta < a.nb ? ta : -1, tb < a.nb ? tb : -1);
    }
}

__device__ __forceinline__ void ldsm_x4(u32& r0, u32& r1, u32& r2, u32& r3, const void* p) {
    u32 a = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(a));
}
__device__ __forceinline__ void cp_async4z(void* dst, const void* src, int src_bytes) {
    u32 d = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(src), "r"(src_bytes)
                 : "memory");
}

// The 128×128 Q8_0 kernels' copy sources: byte offsets of weight rows w0 + STEP·u and
// activation rows x0 + STEP·u (u < U), chunk byte ch, each clamped to the last row.
template <int U, int STEP>
__device__ __forceinline__ void q8_copy_offsets(const MvArgs& a, int w0, int x0, long long goff, int ch,
                                                u32* woff, u32* xoff) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        int wrow = min(w0 + STEP * u, a.rows - 1), tk = min(x0 + STEP * u, a.nb - 1);
        woff[u] = (u32)wrow * (u32)a.cols + ch;
        xoff[u] = (u32)((long long)tk * a.x_stride + goff) + ch;
    }
}

// Q8_0 × Q8_0 on 128-row × 128-token tiles, 8 warps (warp w: rows 32·(w % 4).., tokens
// 64·(w / 4)..), two stages by cp.async as mm_q8_0_cp. The 64×64 tiles of mm_q8_0_cp read
// every weight byte from L2 once per 64 tokens and every activation byte once per 64
// rows: a 2,048-token chunk's dense products pull ≈ 400 GB through L2 in ≈ 0.11 s, at
// the L2's bandwidth rather than the tensor cores' rate; these tiles halve that. Both
// operands' fragments come by ldmatrix (rows of 16 bytes: lane 4g+tq receives bytes
// 4tq.. of row g), the activation scales are stored [block][token] so that a thread's
// two tokens are one 8-byte load. Each Q8_0 block's int32 sums are scaled and added in
// column order as in mm_q8_0 (outputs bit for bit). Dynamic shared memory: the host's
// MMB_SHARED bytes. (ncu, bench/results/h200-v14d-ncu-mm.log: issue 2.0–2.3 a cycle, a
// warp eligible in 51–58% of cycles — latency-bound with 16 warps an SM.)
#define MMB_BM 128
#define MMB_BN 128
extern "C" __global__ void __launch_bounds__(256, 2) mm_q8_0_big(MvArgs a) { pdl_begin();
    extern __shared__ __align__(16) u8 dsm[];
    i8* as = (i8*)dsm;                                      // [2][MMB_BM · MM_LD]
    i8* bs = as + 2 * MMB_BM * MM_LD;                       // [2][MMB_BN · MM_LD]
    u16* adh = (u16*)(bs + 2 * MMB_BN * MM_LD);             // [2][MMB_BM][MM_KB]
    float* bdt = (float*)(adh + 2 * MMB_BM * MM_KB);        // [2][MM_KB][MMB_BN]
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tq = lane & 3;
    int r0 = blockIdx.x * MMB_BM, t0 = blockIdx.y * MMB_BN;
    int wr = 32 * (warp & 3), wt = 64 * (warp >> 2);
    int nblk = a.cols >> 5;
    long long goff = a.group_rows ? (long long)(r0 / a.group_rows) * a.group_stride : 0;
    const u16* wd = (const u16*)a.sc;
    // A thread copies 16 bytes of rows tid/8 + 32u (u < 4) of each operand. Rows past
    // the matrix or the run read the last one instead (their products are never
    // stored): no predicates, and only 32-bit row offsets stay live across the loop
    // beside the 64 accumulators (SASS: ~90 instructions a stage with the scales, not ~210).
    int srow = threadIdx.x >> 3, sch = threadIdx.x & 7;
    u32 woff[4], xoff[4];
    q8_copy_offsets<4, 32>(a, r0 + srow, t0 + srow, goff, 16 * sch, woff, xoff);
    auto stage = [&](int kb0, int buf) {
        i8* ad = as + buf * MMB_BM * MM_LD + srow * MM_LD + 16 * sch;
        i8* bd = bs + buf * MMB_BN * MM_LD + srow * MM_LD + 16 * sch;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            cp_async16(ad + 32 * u * MM_LD, a.w + woff[u] + kb0 * 32, 16);
            cp_async16(bd + 32 * u * MM_LD, a.xq + xoff[u] + kb0 * 32, 16);
        }
        if (threadIdx.x < MMB_BM) {
            int wrow = r0 + threadIdx.x;
            bool ok = wrow < a.rows;
            cp_async8(adh + (buf * MMB_BM + threadIdx.x) * MM_KB, ok ? wd + (size_t)wrow * nblk + kb0 : wd,
                      ok ? 8 : 0);
        } else {
            int row = threadIdx.x - MMB_BM, tk = t0 + row;
            bool ok = tk < a.nb;
            const float* src = ok ? a.xd + (((long long)tk * a.x_stride + goff) >> 5) + kb0 : a.xd;
#pragma unroll
            for (int kb = 0; kb < MM_KB; kb++)
                cp_async4z(bdt + (buf * MM_KB + kb) * MMB_BN + row, src + (ok ? kb : 0), ok ? 4 : 0);
        }
    };
    float acc[2][8][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[i][j][q] = 0.0f;
    // ldmatrix row addresses. A (16 rows × 32 bytes): lanes 0-7 rows 0-7 bytes 0-15 (a0),
    // 8-15 rows 8-15 (a1), 16-23 rows 0-7 bytes 16-31 (a2), 24-31 rows 8-15 (a3). B (two
    // 8-token groups): lanes 0-7 group 2p bytes 0-15 (b0), 8-15 its bytes 16-31 (b1),
    // 16-31 the same for group 2p + 1.
    int arow = (lane & 7) + 8 * ((lane >> 3) & 1), acol = 16 * (lane >> 4);
    int lrow = (lane & 7) + 8 * (lane >> 4), lcol = 16 * ((lane >> 3) & 1);
    stage(0, 0);
    cp_async_commit();
    for (int kb0 = 0, it = 0; kb0 < nblk; kb0 += MM_KB, it++) {
        int buf = it & 1;
        // The other buffer was last read before the previous iteration's closing barrier.
        if (kb0 + MM_KB < nblk) stage(kb0 + MM_KB, buf ^ 1);
        cp_async_commit();
        cp_async_wait1();
        __syncthreads();
        const i8* asb = as + buf * MMB_BM * MM_LD;
        const i8* bsb = bs + buf * MMB_BN * MM_LD;
        const u16* adb = adh + buf * MMB_BM * MM_KB;
        const float* bdb = bdt + buf * MM_KB * MMB_BN;
#pragma unroll 1
        for (int kb = 0; kb < MM_KB; kb++) {
            u32 af[2][4];
            float da[2][2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                ldsm_x4(af[i][0], af[i][1], af[i][2], af[i][3],
                        asb + (wr + 16 * i + arow) * MM_LD + 32 * kb + acol);
                da[i][0] = h2f(adb[(wr + 16 * i + g) * MM_KB + kb]);
                da[i][1] = h2f(adb[(wr + 16 * i + g + 8) * MM_KB + kb]);
            }
#pragma unroll
            for (int p = 0; p < 4; p++) {
                u32 b[4];
                ldsm_x4(b[0], b[1], b[2], b[3], bsb + (wt + 16 * p + lrow) * MM_LD + 32 * kb + lcol);
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int j = 2 * p + h;
                    float2 db = *(const float2*)&bdb[kb * MMB_BN + wt + 8 * j + 2 * tq];
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        int c[4];
                        mma_s8_16832(c, (const int*)af[i], (int)b[2 * h], (int)b[2 * h + 1]);
                        float f[4] = {(float)c[0], (float)c[1], (float)c[2], (float)c[3]};
                        acc[i][j][0] += da[i][0] * db.x * f[0];
                        acc[i][j][1] += da[i][0] * db.y * f[1];
                        acc[i][j][2] += da[i][1] * db.x * f[2];
                        acc[i][j][3] += da[i][1] * db.y * f[3];
                    }
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int ra = r0 + wr + 16 * i + g;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int ta = t0 + wt + 8 * j + 2 * tq, tb = ta + 1;
            mma_store(a, acc[i][j], ra, ta < a.nb ? ta : -1, tb < a.nb ? tb : -1);
        }
    }
}

// Hopper's warpgroup products (sm_90a only: elsewhere the kernel below is empty and the
// host never launches it). A shared-memory operand is described by a 64-bit descriptor:
// its address / 16, the stride between 8-row groups (1,024 bytes: 8 rows of 128 bytes)
// and the 128-byte swizzle, under which the 16-byte chunk c of row r sits at chunk
// c ^ (r % 8) of its 1,024-byte-aligned group of 8 rows; a k-step of 32 bytes inside
// the 128-byte rows moves the start address only (the hardware swizzles the address bits).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ unsigned long long wg_desc_sw128(u32 saddr) {
    return (unsigned long long)((saddr & 0x3FFFF) >> 4) | (1ull << 16) | ((1024ull >> 4) << 32) |
           (1ull << 62);
}
// Dynamic shared memory from its first 1,024-byte boundary (the 128-byte swizzle's 8-row
// groups start there): generic and shared-window addresses.
__device__ __forceinline__ void dsm_at_1024(u8* dsm, u8*& base, u32& sbase) {
    u32 sraw = (u32)__cvta_generic_to_shared(dsm);
    u32 pad = (1024 - (sraw & 1023)) & 1023;
    base = dsm + pad;
    sbase = sraw + pad;
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
__device__ __forceinline__ void wg_wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory"); }
__device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
// D (64 rows × 64 tokens, int32) = A (64 × 32 int8) · B (32 × 64 int8), both operands
// K-major in shared memory. D's fragment is mma.m16n8's: warp w of the group has rows
// 16w.., and d[4j..4j+3] are rows g, g, g+8, g+8 × tokens 8j+2tq, +1.
__device__ __forceinline__ void wgmma_s8_64x64(int* d, unsigned long long da, unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p;\n}\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31])
        : "l"(da), "l"(db), "r"(0));
}
// The accumulators are written asynchronously: reading them is ordered after the wait
// by passing them through an empty asm that comes after it.
__device__ __forceinline__ void wg_fence_regs(int* d) {
#pragma unroll
    for (int i = 0; i < 32; i++) asm volatile("" : "+r"(d[i])::"memory");
}
#endif

// Q8_0 × Q8_0 on 128-row × 128-token tiles by wgmma (sm_90a): four warpgroups, group
// (wm, wn) = (g % 2, g / 2) computing rows 64·wm.. × tokens 64·wn.. with one
// m64n64k32 a Q8_0 block. The tensor cores take the mma.sync kernels' fragment loads and
// mma issue off the warps, which keep only the per-block scaling (int32 sums → float,
// × weight scale × activation scale, added in column order as in mm_q8_0_big: the same
// outputs bit for bit). Operands arrive by cp.async three stages deep (four blocks a
// stage), swizzled as the descriptors say.
// (v26: 100.6 ms a 2,048-token chunk against mm_q8_0_big's 105.8; ncu: 58% issue, the
// shared-memory pipes 65-68% busy — the scaling and the operand traffic bound it, not the
// tensor cores.)
#ifndef DS4_MMW_PIPE
#define DS4_MMW_PIPE 1
#endif
// MMW_STAGE (bytes a stage: A 128 × 128 B, B 128 × 128 B, f16 weight scales [128][4] at
// 32,768, f32 activation scales [4][128] at 33,792) and MMW_NST (3: the copies run two
// stages ahead) come from the host, which sizes the shared memory by them.
// One stage of mm_q8_0_wg / _wh: 128 weight rows and 128 tokens of 128 bytes (the
// thread's U chunks, rows 128 / U apart, at swizzled offset sdst), the rows' f16 scales of
// the stage's four blocks ([128][4] at 32,768) and the tokens' f32 ones ([4][128] at
// 33,792), by cp.async; rows and tokens past the end read zero scales.
template <int U> __device__ __forceinline__ void mmw_stage(const MvArgs& a, u8* sb, u32 sdst, const u32* woff,
                                                          const u32* xoff, int r0, int t0, int nblk,
                                                          long long goff, int kb0) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        cp_async16(sb + sdst + (16384 / U) * u, a.w + woff[u] + kb0 * 32, 16);
        cp_async16(sb + 16384 + sdst + (16384 / U) * u, a.xq + xoff[u] + kb0 * 32, 16);
    }
    const u16* wd = (const u16*)a.sc;
    if (threadIdx.x < 128) {
        int wrow = r0 + threadIdx.x;
        bool ok = wrow < a.rows;
        cp_async8(sb + 32768 + 8 * threadIdx.x, ok ? wd + (size_t)wrow * nblk + kb0 : wd, ok ? 8 : 0);
    } else if (threadIdx.x < 256) {
        int row = threadIdx.x - 128, tk = t0 + row;
        bool ok = tk < a.nb;
        const float* src = ok ? a.xd + (((long long)tk * a.x_stride + goff) >> 5) + kb0 : a.xd;
        float* bdt = (float*)(sb + 33792);
#pragma unroll
        for (int kb = 0; kb < 4; kb++) cp_async4z(bdt + kb * 128 + row, src + (ok ? kb : 0), ok ? 4 : 0);
    }
}
extern "C" __global__ void __launch_bounds__(512, 1) mm_q8_0_wg(MvArgs a) { pdl_begin();
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(16) u8 dsm[];
    u8* base;
    u32 sbase;
    dsm_at_1024(dsm, base, sbase);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tq = lane & 3;
    int wgi = warp >> 2, wm = wgi & 1, wn = wgi >> 1;
    int r0 = blockIdx.x * 128, t0 = blockIdx.y * 128;
    int nblk = a.cols >> 5, nst = nblk >> 2;
    long long goff = a.group_rows ? (long long)(r0 / a.group_rows) * a.group_stride : 0;
    // A thread copies 16-byte chunk sch of rows srow and srow + 64 of each operand (rows
    // past the matrix or the run repeat the last one; their products are never stored).
    int srow = threadIdx.x >> 3, sch = threadIdx.x & 7;
    u32 sdst = srow * 128 + ((sch ^ (srow & 7)) << 4);
    u32 woff[2], xoff[2];
    q8_copy_offsets<2, 64>(a, r0 + srow, t0 + srow, goff, 16 * sch, woff, xoff);
    auto stage = [&](int st, int buf) {
        mmw_stage<2>(a, base + buf * MMW_STAGE, sdst, woff, xoff, r0, t0, nblk, goff, 4 * st);
    };
    float acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[j][q] = 0.0f;
    int c[32], c2[DS4_MMW_PIPE ? 32 : 1];
#pragma unroll
    for (int i = 0; i < 32; i++) c[i] = 0;
#pragma unroll
    for (int i = 0; i < (DS4_MMW_PIPE ? 32 : 1); i++) c2[i] = 0;
    int arow = 64 * wm + 16 * (warp & 3) + g;
    stage(0, 0);
    cp_async_commit();
    if (nst > 1) stage(1, 1);
    cp_async_commit();
    for (int st = 0; st < nst; st++) {
        int buf = st % MMW_NST;
        cp_async_wait1();
        // cp.async's writes are the generic proxy's; the tensor cores read through the
        // async proxy.
        fence_proxy_async();
        __syncthreads();
        // Buffer (st + 2) % 3 was last read in iteration st - 1, whose products all
        // completed (wait 0) before this barrier.
        if (st + 2 < nst) stage(st + 2, (st + 2) % MMW_NST);
        cp_async_commit();
        u32 sa = sbase + buf * MMW_STAGE + 8192 * wm, sbb = sbase + buf * MMW_STAGE + 16384 + 8192 * wn;
        const u16* adb = (const u16*)(base + buf * MMW_STAGE + 32768);
        const float* bdb = (const float*)(base + buf * MMW_STAGE + 33792);
        auto issue = [&](int* c, int kb) {
            wg_fence();
            wgmma_s8_64x64(c, wg_desc_sw128(sa + 32 * kb), wg_desc_sw128(sbb + 32 * kb));
            wg_commit();
        };
        auto scale = [&](int* c, int kb) {
            wg_fence_regs(c);
            float da0 = h2f(adb[4 * arow + kb]), da1 = h2f(adb[4 * (arow + 8) + kb]);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float2 db = *(const float2*)&bdb[kb * 128 + 64 * wn + 8 * j + 2 * tq];
                float f[4] = {(float)c[4 * j], (float)c[4 * j + 1], (float)c[4 * j + 2], (float)c[4 * j + 3]};
                acc[j][0] += da0 * db.x * f[0];
                acc[j][1] += da0 * db.y * f[1];
                acc[j][2] += da1 * db.x * f[2];
                acc[j][3] += da1 * db.y * f[3];
            }
        };
#if DS4_MMW_PIPE
        // Two accumulator sets: the next block's product runs on the tensor cores while
        // this one's sums are scaled (all four warpgroups otherwise wait and scale in
        // step, v26c: 1,240 cycles a block for 134 instructions a warp).
        issue(c, 0);
        issue(c2, 1);
        wg_wait1();
        scale(c, 0);
        issue(c, 2);
        wg_wait1();
        scale(c2, 1);
        issue(c2, 3);
        wg_wait1();
        scale(c, 2);
        wg_wait0();
        scale(c2, 3);
#else
#pragma unroll 1
        for (int kb = 0; kb < 4; kb++) {
            issue(c, kb);
            wg_wait0();
            scale(c, kb);
        }
#endif
    }
#pragma unroll
    for (int j = 0; j < 8; j++) {
        int ta = t0 + 64 * wn + 8 * j + 2 * tq, tb = ta + 1;
        mma_store(a, acc[j], r0 + arow, ta < a.nb ? ta : -1, tb < a.nb ? tb : -1);
    }
#endif
}

__device__ __forceinline__ u32 f2h2(float lo, float hi) {
    u32 h;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(h) : "f"(hi), "f"(lo));
    return h;
}

// Four f32 values as f16 hi = f16(x) and lo = f16(x − hi), two a conversion: (hi, lo) as
// two f16 pairs each — the split that carries ~22 of an activation's 24 bits through f16
// tensor-core products (mm_f16, f32_to_f16_hl, the run attention's queries).
__device__ __forceinline__ void f16_split4(float4 v, uint2& hi, uint2& lo) {
    u32 h01 = f2h2(v.x, v.y), h23 = f2h2(v.z, v.w);
    u32 l01 = f2h2(v.x - h2f((u16)h01), v.y - h2f((u16)(h01 >> 16)));
    u32 l23 = f2h2(v.z - h2f((u16)h23), v.w - h2f((u16)(h23 >> 16)));
    hi = make_uint2(h01, h23);
    lo = make_uint2(l01, l23);
}

// Q8_0 weights × Q8_0 activations as f16 on the tensor cores (sm_90a; prefill's dense
// products by default, as ds4 takes them through cuBLAS in f16): each operand's blocks
// dequantized on the SM, weight w = f16(q·d) (one rounding of the exact product; d is
// f16), activation x = f16(q·d) with the f32 scale split as d_hi + d_lo in f16 (one
// fused step after the small term: within an ulp of x), summed in f32 by
// wgmma.m64n128k16 — no per-block scaling of integer sums, which is what bounds
// mm_q8_0_wg (v26: three float steps an output a block, 58% issue). Not the CPU's
// integers: outputs differ from it at f16's rounding of the operands (the tests bound it;
// `DS4_CUDA_MMQ8=wg` keeps the exact products).
//
// 128-row × 128-token tiles, two warpgroups (256 threads): group h takes rows 64h.. and
// all 128 tokens; two blocks an SM. Raw stages as mm_q8_0_wg's (A and B 128 × 128 bytes
// swizzled, the scales beside them, MMW_STAGE bytes), two by cp.async, one ahead. The weights go to the
// tensor cores from registers, in the mma.m16n8k16 A layout: a lane's two f16 pairs of a
// k16 step are bytes 4tq..4tq+3 of its row's 16-byte chunk, one 32-bit load — a
// permutation of k inside each k16 step that the activations' f16 tile takes too (its
// logical k 2tq + j at raw byte 4tq + j, 2tq + 8 + j at 4tq + 2 + j). That tile, 128
// tokens × 128 k in two 64-k panels of 16 KB swizzled at 128 bytes, is written by all
// threads from the raw stage and read by wgmma.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The 64 f32 accumulators of an m64n128 product: their operand list and constraints.
#define WG_D64                                                                                     \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
    "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
    "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "   \
    "%56, %57, %58, %59, %60, %61, %62, %63}"
#define WG_ACC8(d, i)                                                                              \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]),    \
        "+f"(d[i + 6]), "+f"(d[i + 7])
#define WG_ACC64(d)                                                                                \
    WG_ACC8(d, 0), WG_ACC8(d, 8), WG_ACC8(d, 16), WG_ACC8(d, 24), WG_ACC8(d, 32), WG_ACC8(d, 40), \
        WG_ACC8(d, 48), WG_ACC8(d, 56)
__device__ __forceinline__ void wgmma_f16_64x128_ra(float* d, const u32* af, unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        WG_D64 ", "
        "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        : WG_ACC64(d)
        : "r"(af[0]), "r"(af[1]), "r"(af[2]), "r"(af[3]), "l"(db), "r"(1));
}
__device__ __forceinline__ void wgmma_f16_64x128_ss(float* d, unsigned long long da, unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        WG_D64 ", "
        "%64, %65, p, 1, 1, 0, 0;\n}\n"
        : WG_ACC64(d)
        : "l"(da), "l"(db), "r"(1));
}
// Accumulators read or zeroed around asynchronous products: ordered by passing them
// through empty asm (as wg_fence_regs).
template <int N> __device__ __forceinline__ void wg_fence_fregs(float* d) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}
// A register operand stays in use until its product's wait: this keeps the compiler from
// giving its registers to other values before then.
template <int S> __device__ __forceinline__ void wg_fence_aregs(u32 (&f)[S][4]) {
#pragma unroll
    for (int s = 0; s < S; s++)
#pragma unroll
        for (int i = 0; i < 4; i++) asm volatile("" : "+r"(f[s][i])::"memory");
}
__device__ __forceinline__ u32 h2_sub(u32 a, u32 b) {
    u32 r;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
__device__ __forceinline__ u32 h2_mul(u32 a, u32 b) {
    u32 r;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
__device__ __forceinline__ u32 h2_fma(u32 a, u32 b, u32 c) {
    u32 r;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
__device__ __forceinline__ u16 f2h_rn(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
// Four int8 (a word) as two f16 pairs, bytes (0, 1) and (2, 3), exactly: each byte
// offset by 128 becomes the low mantissa of 1024 + b, and 1152 comes off.
__device__ __forceinline__ void q8_word_h2(u32 w, u32& lo, u32& hi) {
    u32 u = w ^ 0x80808080u;
    lo = h2_sub(__byte_perm(u, 0x64646464u, 0x5140), 0x64806480u);
    hi = h2_sub(__byte_perm(u, 0x64646464u, 0x5342), 0x64806480u);
}
// Sixteen Q8_0 activations (a 16-byte chunk, one block's scale d) as f16 pairs: o[i] the
// bytes (0, 1) of word i, o[4 + i] its bytes (2, 3).
__device__ __forceinline__ void q8_chunk_x16(uint4 w, float d, u32* o) {
    u32 wv[4] = {w.x, w.y, w.z, w.w};
    if (d >= 6.103515625e-05f) {
        // d = d_hi + d_lo in f16 (d_lo's own rounding below 2^-25, a relative 2^-11 of
        // the smallest normal d), x = q·d_hi + (q·d_lo) rounded once.
        u32 dh = f2h_rn(d);
        u32 dl = f2h_rn(d - h2f((u16)dh));
        u32 dh2 = dh | (dh << 16), dl2 = dl | (dl << 16);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            u32 lo, hi;
            q8_word_h2(wv[i], lo, hi);
            o[i] = h2_fma(lo, dh2, h2_mul(lo, dl2));
            o[4 + i] = h2_fma(hi, dh2, h2_mul(hi, dl2));
        }
    } else {
        // A scale below f16's normal range (a block of activations under 7.8e-3) would
        // lose its bits there: these in f32, rounded once.
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float x[4];
#pragma unroll
            for (int j = 0; j < 4; j++) x[j] = (float)(int)(signed char)(wv[i] >> (8 * j)) * d;
            o[i] = f2h2(x[0], x[1]);
            o[4 + i] = f2h2(x[2], x[3]);
        }
    }
}
// Two Q8_0 values (q0, q1) of a block of scale d as the f16 pair q8_chunk_x16 forms for
// them, bit for bit (the same roundings: q exact in f16, q·d_hi + (q·d_lo) once).
__device__ __forceinline__ u32 q8_pair_f16(int q0, int q1, float d) {
    if (d >= 6.103515625e-05f) {
        u32 dh = f2h_rn(d);
        u32 dl = f2h_rn(d - h2f((u16)dh));
        u32 q = f2h2((float)q0, (float)q1);
        return h2_fma(q, dh | (dh << 16), h2_mul(q, dl | (dl << 16)));
    }
    return f2h2((float)q0 * d, (float)q1 * d);
}
#endif
extern "C" __global__ void __launch_bounds__(256, 2) mm_q8_0_wh(MvArgs a) { pdl_begin();
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(16) u8 dsm[];
    u8* base;
    u32 sbase;
    dsm_at_1024(dsm, base, sbase);
    u8* ht = base + 2 * MMW_STAGE; // the activations' f16 tile
    u32 sht = sbase + 2 * MMW_STAGE;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tq = lane & 3;
    int wm = warp >> 2;
    int r0 = blockIdx.x * 128, t0 = blockIdx.y * 128;
    int nblk = a.cols >> 5, nst = nblk >> 2;
    long long goff = a.group_rows ? (long long)(r0 / a.group_rows) * a.group_stride : 0;
    int srow = threadIdx.x >> 3, sch = threadIdx.x & 7;
    u32 sdst = srow * 128 + ((sch ^ (srow & 7)) << 4);
    u32 woff[4], xoff[4];
    q8_copy_offsets<4, 32>(a, r0 + srow, t0 + srow, goff, 16 * sch, woff, xoff);
    auto stage = [&](int st, int buf) {
        mmw_stage<4>(a, base + buf * MMW_STAGE, sdst, woff, xoff, r0, t0, nblk, goff, 4 * st);
    };
    float acc[64];
#pragma unroll
    for (int i = 0; i < 64; i++) acc[i] = 0.0f;
    u32 fr[4][4];
    int arow = 64 * wm + 16 * (warp & 3) + g;
    stage(0, 0);
    cp_async_commit();
#pragma unroll 1
    for (int st = 0; st < nst; st++) {
        const u8* sb = base + (st & 1) * MMW_STAGE;
        cp_async_wait0();
        // Stage st's copies (the scales are other threads') visible to all, and every
        // group's products of stage st − 1 (the f16 tile's readers; each waited for its
        // own) done, as is the conversion that read the other raw stage.
        __syncthreads();
        if (st + 1 < nst) stage(st + 1, (st + 1) & 1);
        cp_async_commit();
        // Activations: 128 tokens × 8 chunks of 16 bytes, four chunks a thread (one at
        // a time: two blocks an SM leave a thread 128 registers).
#pragma unroll 1
        for (int u = 0; u < 4; u++) {
            int ci = threadIdx.x + 256 * u, row = ci >> 3, ch = ci & 7;
            uint4 w = *(const uint4*)(sb + 16384 + row * 128 + ((ch ^ (row & 7)) << 4));
            float d = ((const float*)(sb + 33792))[(ch >> 1) * 128 + row];
            u32 o[8];
            q8_chunk_x16(w, d, o);
            // k16 step s = ch (the raw chunk's 16 bytes): panel s / 4, its 16-byte
            // chunks 2 (s % 4) and + 1 of the row, swizzled.
            u8* pr = ht + (ch >> 2) * 16384 + row * 128;
            int c0 = 2 * (ch & 3);
            *(uint4*)(pr + ((c0 ^ (row & 7)) << 4)) = make_uint4(o[0], o[1], o[2], o[3]);
            *(uint4*)(pr + (((c0 + 1) ^ (row & 7)) << 4)) = make_uint4(o[4], o[5], o[6], o[7]);
        }
        // Weights: rows arow and arow + 8, the lane's word of each k16 step; the stage's
        // two 64-column halves in turn (16 registers of fragments, not 32: at two blocks
        // an SM a thread has 128).
        const u16* ad = (const u16*)(sb + 32768);
        uint2 dwa = *(const uint2*)(ad + 4 * arow), dwb = *(const uint2*)(ad + 4 * (arow + 8));
#pragma unroll
        for (int kh = 0; kh < 2; kh++) {
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                int row = arow + 8 * hr;
                u32 dw2 = hr ? (kh ? dwb.y : dwb.x) : (kh ? dwa.y : dwa.x);
#pragma unroll
                for (int s4 = 0; s4 < 4; s4++) {
                    int s = 4 * kh + s4;
                    u32 dh = (dw2 >> (16 * (s4 >> 1))) & 0xffffu;
                    u32 d2 = dh | (dh << 16);
                    u32 w = *(const u32*)(sb + row * 128 + ((s ^ (row & 7)) << 4) + 4 * tq);
                    u32 lo, hi;
                    q8_word_h2(w, lo, hi);
                    fr[s4][hr] = h2_mul(lo, d2);
                    fr[s4][2 + hr] = h2_mul(hi, d2);
                }
            }
            // The fragments complete before the products' fence (conversions sunk past
            // it make ptxas serialize the products).
            wg_fence_aregs(fr);
            if (kh == 0) {
                // The f16 tile's generic-proxy writes, before the tensor cores'
                // async-proxy reads.
                fence_proxy_async();
                __syncthreads();
            }
            wg_fence();
#pragma unroll
            for (int s4 = 0; s4 < 4; s4++)
                wgmma_f16_64x128_ra(acc, fr[s4], wg_desc_sw128(sht + kh * 16384 + 32 * s4));
            wg_commit();
            // Register operands may not be redefined under products in flight (ptxas
            // would serialize them): these finish here, and the SM's other block
            // converts while they run.
            wg_wait0();
            wg_fence_aregs(fr);
        }
    }
    wg_fence_fregs<64>(acc);
    mma_store_tokens<16>(a, acc, r0 + arow, t0, tq);
#endif
}

// Q8_0 activations (n values, xq and their block scales xd) as f16, sixteen a thread as
// q8_chunk_x16 forms them: in k order (mm_q8_0_wh2), or with PERM each 16 in the order of
// a k16 step's register fragments (mm_q8_0_wr: logical k 2j, 2j + 1 at raw 4j, 4j + 1;
// 8 + 2j, 9 + 2j at raw 4j + 2, 4j + 3), so that the weights' fragment is one 32-bit load
// of raw bytes.
template <bool PERM>
__device__ __forceinline__ void q8_0_to_f16_body(const i8* xq, const float* xd, u16* xh, int n) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    int i = 16 * (blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= n) return;
    u32 o[8];
    q8_chunk_x16(*(const uint4*)(xq + i), xd[i >> 5], o);
    if (PERM) {
        *(uint4*)(xh + i) = make_uint4(o[0], o[1], o[2], o[3]);
        *(uint4*)(xh + i + 8) = make_uint4(o[4], o[5], o[6], o[7]);
    } else {
        *(uint4*)(xh + i) = make_uint4(o[0], o[4], o[1], o[5]);
        *(uint4*)(xh + i + 8) = make_uint4(o[2], o[6], o[3], o[7]);
    }
#endif
}
// After the quantization before it (launched with PDL, a kernel starts early).
extern "C" __global__ void q8_0_to_f16(const i8* xq, const float* xd, u16* xh, int n) {
    pdl_begin();
    q8_0_to_f16_body<false>(xq, xd, xh, n);
}
extern "C" __global__ void q8_0_to_f16_p(const i8* xq, const float* xd, u16* xh, int n) {
    pdl_begin();
    q8_0_to_f16_body<true>(xq, xd, xh, n);
}

// mm_q8_0_wh with the activations already f16 (q8_0_to_f16, xh: [token][x_stride]) and
// both operands in shared memory, so its products run asynchronously to the warps: one
// block an SM, two warpgroups of m64n128k16 over 128-row × 128-token tiles. A stage (49
// KB: the weights' raw 128 × 128 bytes swizzled, their f16 scales [128][4], the
// activations' f16 tile 128 × 128 in two 64-k panels of 16 KB) arrives by cp.async one
// stage ahead into three buffers (the third is the one the products still read; MMH2_STAGE,
// from the host, which sizes the shared memory by it); the
// warps dequantize the stage's weights into one of two f16 tiles (the same panels)
// while the tensor cores run the previous stage's products.
extern "C" __global__ void __launch_bounds__(256, 1) mm_q8_0_wh2(MvArgs a, const u16* xh) { pdl_begin();
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(16) u8 dsm[];
    u8* base;
    u32 sbase;
    dsm_at_1024(dsm, base, sbase);
    u8* af16 = base + 3 * MMH2_STAGE; // the weights' two f16 tiles, 32 KB each
    u32 saf16 = sbase + 3 * MMH2_STAGE;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tq = lane & 3;
    int wm = warp >> 2;
    int r0 = blockIdx.x * 128, t0 = blockIdx.y * 128;
    int nblk = a.cols >> 5, nst = nblk >> 2;
    long long goff = a.group_rows ? (long long)(r0 / a.group_rows) * a.group_stride : 0;
    const u16* wd = (const u16*)a.sc;
    // Copies: weight chunk sch of rows srow + 32u; activation chunks (16 a token, 8 f16
    // each) hrow + 16v, chunk hch.
    int srow = threadIdx.x >> 3, sch = threadIdx.x & 7;
    u32 sdst = srow * 128 + ((sch ^ (srow & 7)) << 4);
    u32 woff[4], xoff_unused[4];
    q8_copy_offsets<4, 32>(a, r0 + srow, t0 + srow, goff, 16 * sch, woff, xoff_unused);
    int hrow = threadIdx.x >> 4, hch = threadIdx.x & 15;
    const u16* hsrc[8];
#pragma unroll
    for (int v = 0; v < 8; v++) {
        int tk = min(t0 + hrow + 16 * v, a.nb - 1);
        hsrc[v] = xh + (long long)tk * a.x_stride + goff + 8 * hch;
    }
    u32 hdst = (hch >> 3) * 16384 + hrow * 128 + (((hch & 7) ^ (hrow & 7)) << 4);
    auto stage = [&](int st, int buf) {
        u8* sb = base + buf * MMH2_STAGE;
#pragma unroll
        for (int u = 0; u < 4; u++) cp_async16(sb + sdst + 4096 * u, a.w + woff[u] + st * 128, 16);
        // Rows hrow + 16v keep hrow's swizzle (16v is a multiple of 8).
#pragma unroll
        for (int v = 0; v < 8; v++) cp_async16(sb + 17408 + hdst + 2048 * v, hsrc[v] + st * 128, 16);
        if (threadIdx.x < 128) {
            int wrow = r0 + threadIdx.x;
            bool ok = wrow < a.rows;
            cp_async8(sb + 16384 + 8 * threadIdx.x, ok ? wd + (size_t)wrow * nblk + 4 * st : wd, ok ? 8 : 0);
        }
    };
    float acc[64];
#pragma unroll
    for (int i = 0; i < 64; i++) acc[i] = 0.0f;
    // The zeros in place before any product's pipeline (ptxas serializes the products
    // if they are defined inside it).
    wg_fence_fregs<64>(acc);
    stage(0, 0);
    cp_async_commit();
#pragma unroll 1
    for (int st = 0; st < nst; st++) {
        int buf = st % 3;
        const u8* sb = base + buf * MMH2_STAGE;
        cp_async_wait0();
        // Stage st's copies visible to all; every group's products of stage st − 2 (the
        // weights' f16 tile st & 1 and raw buffer (st + 1) % 3) done: each waited for
        // them in iteration st − 1.
        __syncthreads();
        if (st + 1 < nst) stage(st + 1, (st + 1) % 3);
        cp_async_commit();
        // The weights: 128 rows × 8 chunks, four chunks a thread, in k order.
        u8* at = af16 + (st & 1) * 32768;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int ci = threadIdx.x + 256 * u, row = ci >> 3, ch = ci & 7;
            uint4 w = *(const uint4*)(sb + row * 128 + ((ch ^ (row & 7)) << 4));
            u32 dh = ((const u16*)(sb + 16384))[4 * row + (ch >> 1)];
            u32 d2 = dh | (dh << 16);
            u32 wv[4] = {w.x, w.y, w.z, w.w};
            u32 o[8];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                u32 lo, hi;
                q8_word_h2(wv[i], lo, hi);
                o[2 * i] = h2_mul(lo, d2);
                o[2 * i + 1] = h2_mul(hi, d2);
            }
            u8* pr = at + (ch >> 2) * 16384 + row * 128;
            int c0 = 2 * (ch & 3);
            *(uint4*)(pr + ((c0 ^ (row & 7)) << 4)) = make_uint4(o[0], o[1], o[2], o[3]);
            *(uint4*)(pr + (((c0 + 1) ^ (row & 7)) << 4)) = make_uint4(o[4], o[5], o[6], o[7]);
        }
        // Generic-proxy writes (the f16 tile, the copies) before the async proxy's reads.
        fence_proxy_async();
        __syncthreads();
        wg_fence();
        u32 sa = saf16 + (st & 1) * 32768 + 8192 * wm, sbb = sbase + buf * MMH2_STAGE + 17408;
#pragma unroll
        for (int s = 0; s < 8; s++)
            wgmma_f16_64x128_ss(acc, wg_desc_sw128(sa + (s >> 2) * 16384 + 32 * (s & 3)),
                                wg_desc_sw128(sbb + (s >> 2) * 16384 + 32 * (s & 3)));
        wg_commit();
        wg_wait1();
    }
    wg_wait0();
    wg_fence_fregs<64>(acc);
    int arow = 64 * wm + 16 * (warp & 3) + g;
    mma_store_tokens<16>(a, acc, r0 + arow, t0, tq);
#endif
}

// The accumulator list and constraints of an m64n256 product (128 f32 a thread).
#define WG_D128                                                                                    \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
    "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
    "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "   \
    "%56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, "   \
    "%74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, "   \
    "%92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, "     \
    "%108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, "   \
    "%123, %124, %125, %126, %127}"
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wgmma_f16_64x256_ra(float* d, const u32* af, unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 "
        WG_D128 ", "
        "{%128, %129, %130, %131}, %132, p, 1, 1, 0;\n}\n"
        : WG_ACC64(d), WG_ACC64((d + 64))
        : "r"(af[0]), "r"(af[1]), "r"(af[2]), "r"(af[3]), "l"(db), "r"(1));
}
__device__ __forceinline__ void wgmma_f16_64x256_ss(float* d, unsigned long long da, unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 "
        WG_D128 ", "
        "%128, %129, p, 1, 1, 0, 0;\n}\n"
        : WG_ACC64(d), WG_ACC64((d + 64))
        : "l"(da), "l"(db), "r"(1));
}
#endif

// mm_q8_0_wh2's values (weights f16(q·d), activations q8_0_to_f16's, f32 sums) with the
// weights as wgmma's register operand and 256 tokens a block. Why: wh2 is bound by
// shared-memory traffic (ncu, v29: ≈1.5× its tensor time — the f16 weight tile written
// and read back, the activations' tile read by both warpgroups at n128). Here the warps
// turn the raw weight bytes straight into A fragments (a lane's 32-bit word of a row's
// k16 chunk is its two f16 pairs, the activations permuted to match: q8_0_to_f16_p), and
// each warpgroup's m64n256k16 reads the activations' tile once per 64 × 256 × 16: per
// multiply-add about half of wh2's shared-memory bytes. 128 rows × 256 tokens, two
// warpgroups (rows 64h..), one block an SM; stages of 64 columns (MMR_STAGE: the
// activations' f16 tile 256 × 128 bytes swizzled, the raw weights 128 rows padded to 80
// bytes — a lane quad's words in distinct banks — and their f16 scales [128][2]) NS deep,
// NS − NF ahead by cp.async. A stage's fragments are converted while the previous
// stages' products run; they live in one of NF register sets, redefined only after
// wait_group NF − 1 has retired the products that read them (NF − 1 stages' products
// queued behind the running ones).
template <int N> __device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
template <int NS, int NF>
__device__ __forceinline__ void mm_q8_0_wr_body(const MvArgs& a, const u16* xh) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(16) u8 dsm[];
    u8* base;
    u32 sbase;
    dsm_at_1024(dsm, base, sbase);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tq = lane & 3;
    int wm = warp >> 2;
    int r0 = blockIdx.x * 128, t0 = blockIdx.y * 256;
    int nblk = a.cols >> 5, nst = a.cols >> 6;
    long long goff = a.group_rows ? (long long)(r0 / a.group_rows) * a.group_stride : 0;
    const u16* wd = (const u16*)a.sc;
    // Copies: weight rows wrow and wrow + 64, 16-byte chunk wch; activation tokens
    // hrow + 32v, chunk hch (8 f16), swizzled (32v keeps hrow's swizzle).
    int wrow = threadIdx.x >> 2, wch = threadIdx.x & 3;
    u32 woff[2];
#pragma unroll
    for (int u = 0; u < 2; u++) woff[u] = (u32)min(r0 + wrow + 64 * u, a.rows - 1) * (u32)a.cols + 16 * wch;
    int hrow = threadIdx.x >> 3, hch = threadIdx.x & 7;
    u32 hoff[8];
#pragma unroll
    for (int v = 0; v < 8; v++) {
        int tk = min(t0 + hrow + 32 * v, a.nb - 1);
        hoff[v] = (u32)((long long)tk * a.x_stride + goff) + 8 * hch;
    }
    u32 hdst = hrow * 128 + ((hch ^ (hrow & 7)) << 4);
    bool srow_ok = r0 + (int)threadIdx.x < a.rows;
    auto stage = [&](int st, int buf) {
        u8* sb = base + buf * MMR_STAGE;
#pragma unroll
        for (int v = 0; v < 8; v++) cp_async16(sb + hdst + 4096 * v, xh + hoff[v] + st * 64, 16);
#pragma unroll
        for (int u = 0; u < 2; u++)
            cp_async16(sb + 32768 + (wrow + 64 * u) * 80 + 16 * wch, a.w + woff[u] + st * 64, 16);
        if (threadIdx.x < 128)
            cp_async4z(sb + 43008 + 4 * threadIdx.x,
                       srow_ok ? wd + (size_t)(r0 + threadIdx.x) * nblk + 2 * st : wd, srow_ok ? 4 : 0);
    };
    float acc[128];
#pragma unroll
    for (int i = 0; i < 128; i++) acc[i] = 0.0f;
    wg_fence_fregs<128>(acc);
    int arow = 64 * wm + 16 * (warp & 3) + g;
#pragma unroll
    for (int p = 0; p < NS - NF; p++) {
        if (p < nst) stage(p, p);
        cp_async_commit();
    }
    // One stage's products with fragments fr: its copies complete (one commit group a
    // stage, NS − NF − 1 younger ones may be in flight), the next copies into the buffer
    // of stage st − NF, whose products the last wait_group NF − 1 retired in both groups.
    auto step = [&](int st, u32 (&fr)[4][4]) {
        asm volatile("cp.async.wait_group %0;" ::"n"(NS - NF - 1) : "memory");
        fence_proxy_async();
        __syncthreads();
        int nx = st + NS - NF;
        if (nx < nst) stage(nx, nx % NS);
        cp_async_commit();
        const u8* sb = base + (st % NS) * MMR_STAGE;
        u32 dsa = *(const u32*)(sb + 43008 + 4 * arow), dsb = *(const u32*)(sb + 43008 + 4 * (arow + 8));
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            const u8* rp = sb + 32768 + (arow + 8 * hr) * 80 + 4 * tq;
            u32 ds = hr ? dsb : dsa;
#pragma unroll
            for (int s = 0; s < 4; s++) {
                u32 dh = (s < 2 ? ds : ds >> 16) & 0xffffu;
                u32 d2 = dh | (dh << 16);
                u32 lo, hi;
                q8_word_h2(*(const u32*)(rp + 16 * s), lo, hi);
                fr[s][hr] = h2_mul(lo, d2);
                fr[s][2 + hr] = h2_mul(hi, d2);
            }
        }
        wg_fence_aregs(fr);
        wg_fence();
        u32 sx = sbase + (st % NS) * MMR_STAGE;
#pragma unroll
        for (int s = 0; s < 4; s++) wgmma_f16_64x256_ra(acc, fr[s], wg_desc_sw128(sx + 32 * s));
        wg_commit();
        // No register fence after this wait: it would redefine fr under the products
        // still in flight, and ptxas serializes them (C7513).
        wg_wait<NF - 1>();
    };
    u32 fa[4][4], fb[4][4], fc[4][4];
    // NF stages a turn with no branch between them: on a path that skipped a set's
    // turn, the next would be redefined under its own products (ptxas would serialize
    // them all). The rest after the loop, in the same order of sets.
    int st = 0;
#pragma unroll 1
    for (; st + NF - 1 < nst; st += NF) {
        step(st, fa);
        step(st + 1, fb);
        if (NF == 3) step(st + 2, fc);
    }
    if (st < nst) step(st, fa);
    if (NF == 3 && st + 1 < nst) step(st + 1, fb);
    wg_wait0();
    wg_fence_fregs<128>(acc);
    mma_store_tokens<32>(a, acc, r0 + arow, t0, tq);
#endif
}
// Five stages, three fragment sets (v30: the Q8_0 products 4.32 → 4.16 ms on 4 layers
// against four stages and two sets, `mm_q8_0_wr4`).
extern "C" __global__ void __launch_bounds__(256, 1) mm_q8_0_wr(MvArgs a, const u16* xh) {
    pdl_begin();
    mm_q8_0_wr_body<5, 3>(a, xh);
}
extern "C" __global__ void __launch_bounds__(256, 1) mm_q8_0_wr4(MvArgs a, const u16* xh) {
    pdl_begin();
    mm_q8_0_wr_body<4, 2>(a, xh);
}

// f32 activations (n values, rows of len; with xsc, row t's times xsc[t]: MvArgs::xsc) as
// f16 hi = f16(x) and lo = f16(x − hi), for mm_f16_ws: mm_f16_body's split, the same
// roundings, four values a thread.
extern "C" __global__ void f32_to_f16_hl(const float* x, const float* xsc, u16* hi, u16* lo, int n,
                                         int len) {
    pdl_begin();
    int i = 4 * (blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= n) return;
    float4 v = *(const float4*)(x + i);
    if (xsc) {
        float r = xsc[i / len];
        v = make_float4(v.x * r, v.y * r, v.z * r, v.w * r);
    }
    f16_split4(v, *(uint2*)(hi + i), *(uint2*)(lo + i));
}

// F16 weights × f32 activations for a run on wgmma (sm_90a): mm_f16_pf's operands (the
// weights exact, the activations as hi + lo from f32_to_f16_hl) with both in shared
// memory. One m64n256k16 takes a stage's k16 step of both parts at once: the activations'
// tile is 128 tokens of hi over 128 of lo (256 B-rows), so the accumulators hold the two
// sums apart, added in f32 at the end (mm_f16_pf adds them a k16 step at a time: the same
// terms, another order). Why: mm_f16_pf's mma.sync 64 × 64 tiles at 168 registers (12%
// occupancy, 26–30% issue, v29) ran these products at a fraction of the tensor rate.
// 128 rows × 128 tokens, two warpgroups (rows 64h..), one block an SM; stages of 64
// columns (MFW_STAGE: the weights' 128 × 128 bytes and the activations' 256 × 128 bytes,
// both swizzled at 128 bytes) four deep, two ahead by cp.async, as mm_q8_0_wr.
extern "C" __global__ void __launch_bounds__(256, 1) mm_f16_ws(MvArgs a, const u16* xhi, const u16* xlo) {
    pdl_begin();
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    const int NS = 4;
    extern __shared__ __align__(16) u8 dsm[];
    u8* base;
    u32 sbase;
    dsm_at_1024(dsm, base, sbase);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tq = lane & 3;
    int wm = warp >> 2;
    int r0 = blockIdx.x * 128, t0 = blockIdx.y * 128;
    int nst = a.cols >> 6;
    long long goff = a.group_rows ? (long long)(r0 / a.group_rows) * a.group_stride : 0;
    const u16* w = (const u16*)a.w;
    // Copies, 16 bytes (8 f16) each: rows crow + 32u of the weights (u < 4) and of the
    // activations' hi and lo tiles (u < 4 each), chunk cch, swizzled (32u keeps crow's
    // swizzle).
    int crow = threadIdx.x >> 3, cch = threadIdx.x & 7;
    u32 cdst = crow * 128 + ((cch ^ (crow & 7)) << 4);
    u32 woff[4], xoff[4];
#pragma unroll
    for (int u = 0; u < 4; u++) {
        woff[u] = (u32)min(r0 + crow + 32 * u, a.rows - 1) * (u32)a.cols + 8 * cch;
        int tk = min(t0 + crow + 32 * u, a.nb - 1);
        xoff[u] = (u32)((long long)tk * a.x_stride + goff) + 8 * cch;
    }
    auto stage = [&](int st, int buf) {
        u8* sb = base + buf * MFW_STAGE;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            cp_async16(sb + cdst + 4096 * u, w + woff[u] + st * 64, 16);
            cp_async16(sb + 16384 + cdst + 4096 * u, xhi + xoff[u] + st * 64, 16);
            cp_async16(sb + 32768 + cdst + 4096 * u, xlo + xoff[u] + st * 64, 16);
        }
    };
    float acc[128];
#pragma unroll
    for (int i = 0; i < 128; i++) acc[i] = 0.0f;
    wg_fence_fregs<128>(acc);
#pragma unroll
    for (int p = 0; p < NS - 2; p++) {
        if (p < nst) stage(p, p);
        cp_async_commit();
    }
#pragma unroll 1
    for (int st = 0; st < nst; st++) {
        asm volatile("cp.async.wait_group %0;" ::"n"(NS - 3) : "memory");
        fence_proxy_async();
        // Stage st visible to all; every group's products of stage st − 2 retired (the
        // last wait_group 1 of each), so its buffer takes stage st + 2.
        __syncthreads();
        int nx = st + NS - 2;
        if (nx < nst) stage(nx, nx % NS);
        cp_async_commit();
        u32 sb = sbase + (st % NS) * MFW_STAGE;
        wg_fence();
#pragma unroll
        for (int s = 0; s < 4; s++)
            wgmma_f16_64x256_ss(acc, wg_desc_sw128(sb + 8192 * wm + 32 * s),
                                wg_desc_sw128(sb + 16384 + 32 * s));
        wg_commit();
        wg_wait1();
    }
    wg_wait0();
    wg_fence_fregs<128>(acc);
    int arow = 64 * wm + 16 * (warp & 3) + g;
    // The hi and lo parts' sums, added.
#pragma unroll
    for (int i = 0; i < 64; i++) acc[i] += acc[64 + i];
    mma_store_tokens<16>(a, acc, r0 + arow, t0, tq);
#endif
}

__device__ __forceinline__ void mma_f16_16816(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// F16 weights × f32 activations for a run of tokens (prefill) on the tensor cores.
// The weights are exact in f16; each activation is split into f16 parts hi + lo (hi =
// f16(x), lo = f16(x − hi)), which carry ~22 of its 24 significant bits, and both
// products accumulate in f32 — accuracy at the level of f32 summation-order changes
// (the CPU-comparison tests bound it). Tile and staging as mm_q8_0: 64 rows × 64
// tokens, 64 columns per stage, rows padded to 144 bytes.
// A grid of several z splits the columns in gridDim.z equal ranges of whole 64-column
// stages: split z writes its partial sums to y + z·nb·y_stride (summed by sum_parts).
template <bool PF> __device__ __forceinline__ void mm_f16_body(MvArgs a) {
    __shared__ __align__(16) u16 as[MM_BM * (MM_LD / 2)];
    __shared__ __align__(16) u16 bh[MM_BN * (MM_LD / 2)];
    __shared__ __align__(16) u16 bl[MM_BN * (MM_LD / 2)];
    const int ld = MM_LD / 2;  // u16 per padded row
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tq = lane & 3;
    int r0 = blockIdx.x * MM_BM, t0 = blockIdx.y * MM_BN;
    long long goff = a.group_rows ? (long long)(r0 / a.group_rows) * a.group_stride : 0;
    const u16* w = (const u16*)a.w;
    float acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[j][q] = 0.0f;
    // Weights: 64 rows × 64 halves = 8 int4 per row (4 per thread); activations: 64
    // tokens × 64 floats (8 float4 per thread), split while staging. Read into registers
    // one stage ahead with PF.
    int4 wv[4];
    float4 xv[8];
    auto load = [&](int k0) {
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int idx = threadIdx.x + 128 * u, row = idx >> 3, ch = idx & 7;
            int wr = r0 + row;
            wv[u] = make_int4(0, 0, 0, 0);
            if (wr < a.rows) wv[u] = ldg4(w + (size_t)wr * a.cols + k0 + 8 * ch);
        }
#pragma unroll
        for (int u = 0; u < 8; u++) {
            int idx = threadIdx.x + 128 * u, row = idx >> 4, ch = idx & 15;  // 4 floats a piece
            int tk = t0 + row;
            xv[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (tk < a.nb) xv[u] = *(const float4*)(a.xf + (long long)tk * a.x_stride + goff + k0 + 4 * ch);
        }
    };
    int kspan = a.cols / gridDim.z, kbeg = blockIdx.z * kspan, kend = kbeg + kspan;
    a.y += (size_t)blockIdx.z * a.nb * a.y_stride;
    // A thread stages the same 8 tokens at every stage: their norm factors once.
    float xr[8];
#pragma unroll
    for (int u = 0; u < 8; u++) {
        int tk = t0 + ((threadIdx.x + 128 * u) >> 4);
        xr[u] = a.xsc && tk < a.nb ? a.xsc[tk] : 1.0f;
    }
    if (PF) load(kbeg);
    for (int k0 = kbeg; k0 < kend; k0 += 64) {
        if (!PF) load(k0);
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int idx = threadIdx.x + 128 * u, row = idx >> 3, ch = idx & 7;
            *(int4*)(as + row * ld + 8 * ch) = wv[u];
        }
        // The norm factors (MvArgs::xsc) applied here, once the loads have landed: in
        // load() the multiply made the prefetch wait for its data (v27: the kernel 2.7×
        // slower, with or without factors).
        if (a.xsc) {
#pragma unroll
            for (int u = 0; u < 8; u++)
                xv[u] = make_float4(xv[u].x * xr[u], xv[u].y * xr[u], xv[u].z * xr[u], xv[u].w * xr[u]);
        }
#if DS4_LDSM_B
#pragma unroll
        for (int u = 0; u < 8; u++) {
            int idx = threadIdx.x + 128 * u, row = idx >> 4, ch = idx & 15;
            // Two values a conversion (the same rounding as one at a time) and four a
            // store: the split was a quarter of the kernel's instructions as 16-bit stores.
            f16_split4(xv[u], *(uint2*)(bh + row * ld + 4 * ch), *(uint2*)(bl + row * ld + 4 * ch));
        }
        __syncthreads();
        if (PF && k0 + 64 < kend) load(k0 + 64);
        // Fragments by ldmatrix (the same registers as 32-bit loads of rows g, columns
        // 2tq..: one instruction for four of them). A: lanes 8m.. address rows
        // (m & 1)·8 + (lane & 7) at column (m >> 1)·8; B: tokens of j + (m >> 1), column
        // (m & 1)·8 — b0, b1 of j then of j + 1.
        int mi = lane >> 3, rr = lane & 7;
        // A warp whose 16 rows all lie past the matrix (the HC mixing's 24 rows fill half
        // a tile) stages its share but takes no fragments or products (v30: the narrow F16
        // run products −12%, the same outputs).
#pragma unroll
        for (int kk = 0; kk < 64 && r0 + 16 * warp < a.rows; kk += 16) {
            u32 af[4];
            ldsm_x4(af[0], af[1], af[2], af[3],
                    as + (16 * warp + (mi & 1) * 8 + rr) * ld + kk + (mi >> 1) * 8);
#pragma unroll
            for (int j = 0; j < 8; j += 2) {
                int o = (8 * (j + (mi >> 1)) + rr) * ld + kk + (mi & 1) * 8;
                u32 h[4], l[4];
                ldsm_x4(h[0], h[1], h[2], h[3], bh + o);
                ldsm_x4(l[0], l[1], l[2], l[3], bl + o);
                mma_f16_16816(acc[j], af, h[0], h[1]);
                mma_f16_16816(acc[j], af, l[0], l[1]);
                mma_f16_16816(acc[j + 1], af, h[2], h[3]);
                mma_f16_16816(acc[j + 1], af, l[2], l[3]);
            }
        }
#else  // v20's staging and fragment loads, for comparisons
#pragma unroll
        for (int u = 0; u < 8; u++) {
            int idx = threadIdx.x + 128 * u, row = idx >> 4, ch = idx & 15;
            float xs[4] = {xv[u].x, xv[u].y, xv[u].z, xv[u].w};
#pragma unroll
            for (int q = 0; q < 4; q++) {
                u16 hi = f2h(xs[q]);
                bh[row * ld + 4 * ch + q] = hi;
                bl[row * ld + 4 * ch + q] = f2h(xs[q] - h2f(hi));
            }
        }
        __syncthreads();
        if (PF && k0 + 64 < kend) load(k0 + 64);
#pragma unroll
        for (int kk = 0; kk < 64; kk += 16) {
            const u16* ab = as + (16 * warp) * ld + kk;
            u32 af[4];
            af[0] = *(const u32*)(ab + g * ld + 2 * tq);
            af[1] = *(const u32*)(ab + (g + 8) * ld + 2 * tq);
            af[2] = *(const u32*)(ab + g * ld + 8 + 2 * tq);
            af[3] = *(const u32*)(ab + (g + 8) * ld + 8 + 2 * tq);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                int o = (8 * j + g) * ld + kk + 2 * tq;
                mma_f16_16816(acc[j], af, *(const u32*)(bh + o), *(const u32*)(bh + o + 8));
                mma_f16_16816(acc[j], af, *(const u32*)(bl + o), *(const u32*)(bl + o + 8));
            }
        }
#endif
        __syncthreads();
    }
    int ra = r0 + 16 * warp + g;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        int ta = t0 + 8 * j + 2 * tq, tb = ta + 1;
        mma_store(a, acc[j], ra, ta < a.nb ? ta : -1, tb < a.nb ? tb : -1);
    }
}

// y[t·y_stride + r] = Σ_z part[z·n + t·rows + r] in z order, n = nb·rows (the column
// splits of a tensor-core product).
extern "C" __global__ void sum_parts(const float* part, int ks, int n, int rows, float* y,
                                     int y_stride) {
    pdl_begin();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float s = part[i];
    for (int z = 1; z < ks; z++) s += part[(size_t)z * n + i];
    y[(size_t)(i / rows) * y_stride + i % rows] = s;
}

extern "C" __global__ void __launch_bounds__(128) mm_f16(MvArgs a) { pdl_begin(); mm_f16_body<false>(a); }
extern "C" __global__ void __launch_bounds__(128) mm_f16_pf(MvArgs a) { pdl_begin(); mm_f16_body<true>(a); }

// Q2_K block (84 bytes): scales[16], qs[64], f16 d, f16 dmin. A lane takes a quarter
// of a block's quants (16 bytes: half k = q/2 of the 128-element halves, 16-element
// column h = q%2 of it), i.e. the four 16-element sub-blocks 8k+2j+h, j = 0..3.
template <int NTM> __device__ void mv_q2_k_body(const MvArgs& a) {
    MV_ITEMS
    int nblk = a.cols / 256;
    MV_ROWS {
        const u8* w = a.w + e * a.mat_bytes + (size_t)r * nblk * 84;
        float acc[NTM];
#pragma unroll
        for (int j = 0; j < NTM; j++) acc[j] = 0.0f;
        for (int it = lane + 32 * sub; it < nblk * 4; it += 32 * ks) {
            int ib = it >> 2, q = it & 3, k = q >> 1, h = q & 1;
            const u8* blk = w + ib * 84;
            const u32* q32 = (const u32*)(blk + 16 + 16 * q);
            u32 qw0 = __ldg(q32), qw1 = __ldg(q32 + 1), qw2 = __ldg(q32 + 2), qw3 = __ldg(q32 + 3);
            u32 dd = __ldg((const u32*)(blk + 80));
            u32 sc4 = __ldg((const u32*)(blk + 8 * k)) | 0;  // bytes 8k..8k+3
            u32 sc4b = __ldg((const u32*)(blk + 8 * k + 4)); // bytes 8k+4..8k+7
            float d = h2f((u16)(dd & 0xffff)), dmin = h2f((u16)(dd >> 16));
            // The four 2-bit planes as int8x4 words and their scale bytes (8k + 2j + h),
            // extracted once for all the items this warp serves.
            int pl[16], scb[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                u32 m = 0x03030303u;
                pl[4 * j] = (int)((qw0 >> (2 * j)) & m);
                pl[4 * j + 1] = (int)((qw1 >> (2 * j)) & m);
                pl[4 * j + 2] = (int)((qw2 >> (2 * j)) & m);
                pl[4 * j + 3] = (int)((qw3 >> (2 * j)) & m);
                int sb = 2 * j + h;
                scb[j] = (int)(((sb < 4 ? sc4 : sc4b) >> (8 * (sb & 3))) & 0xff);
            }
#pragma unroll
            for (int jt = 0; jt < NTM; jt++) {
                if (jt < nt) {
                    long long xo = mv_xoff(a, item[jt], r);
                    const i8* xb = a.xq + xo + 256 * ib + 128 * k + 16 * h;
                    const short* bs = a.xs + (xo >> 4) + 16 * ib + 8 * k + h;
                    int sumsc = 0, summs = 0;
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        int4 xv = *(const int4*)(xb + 32 * j);
                        int s = __dp4a(pl[4 * j], xv.x, 0);
                        s = __dp4a(pl[4 * j + 1], xv.y, s);
                        s = __dp4a(pl[4 * j + 2], xv.z, s);
                        s = __dp4a(pl[4 * j + 3], xv.w, s);
                        sumsc += (scb[j] & 0xf) * s;
                        summs += (scb[j] >> 4) * (int)bs[2 * j];
                    }
                    float dx = a.xd[(xo >> 8) + ib];
                    acc[jt] += dx * d * (float)sumsc;
                    acc[jt] -= dx * dmin * (float)summs;
                }
            }
        }
        mv_store<NTM>(a, acc, item, nt, r, lane, MV_LIVE);
    }
}
extern "C" __global__ void mv_q2_k(MvArgs a) { pdl_begin(); mv_q2_k_body<MAXNT>(a); }
extern "C" __global__ void mv_q2_k_1(MvArgs a) { pdl_begin(); mv_q2_k_body<1>(a); }

// Q2_K for one item per warp (decode), four rows a warp: mv_q2_k_body<1>'s per-lane
// arithmetic in the same order (bit-identical), with every row's quants, scales and
// d/dmin loaded before any is used — 28 loads in flight per lane where the general body
// has 7 and a warp then waits a whole memory round trip per row (the routed down
// product: 1,254 GB/s in v12). The activations are loaded once for the four rows.
// The prefetching decode loops' end of a round: rows rb + j·rstep get scale × their warp
// sums (rows past the matrix are not stored), and the sums restart.
__device__ __forceinline__ void rows4_store(const MvArgs& a, int item, int rb, int rstep, int lane,
                                            float scale, float (&acc)[4]) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int r = rb + j * rstep;
        float v = scale * warp_sum(acc[j]);
        if (lane == 0 && r < a.rows) a.y[(size_t)item * a.y_stride + r] = v;
        acc[j] = 0.0f;
    }
}
// Piece (block ib, quarter q, half k = q / 2) of four rows: their quants, d/dmin and scale
// words into qw, dd, sc4, sc4b.
__device__ __forceinline__ void q2k_load4(const u8* const (&w)[4], int ib, int q, int k,
                                          u32 (&qw)[4][4], u32 (&dd)[4], u32 (&sc4)[4],
                                          u32 (&sc4b)[4]) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const u8* blk = w[j] + ib * 84;
        const u32* q32 = (const u32*)(blk + 16 + 16 * q);
#pragma unroll
        for (int v = 0; v < 4; v++) qw[j][v] = __ldg(q32 + v);
        dd[j] = __ldg((const u32*)(blk + 80));
        sc4[j] = __ldg((const u32*)(blk + 8 * k));
        sc4b[j] = __ldg((const u32*)(blk + 8 * k + 4));
    }
}
// Piece (block ib, half k, column h) of four rows against the item's activations
// (mv_q2_k_body<1>'s arithmetic in its order) into acc.
__device__ __forceinline__ void q2k_piece4(const MvArgs& a, long long xo, int ib, int k, int h,
                                           const u32 (&qw)[4][4], const u32 (&dd)[4],
                                           const u32 (&sc4)[4], const u32 (&sc4b)[4],
                                           float (&acc)[4]) {
    const i8* xb = a.xq + xo + 256 * ib + 128 * k + 16 * h;
    const short* bs = a.xs + (xo >> 4) + 16 * ib + 8 * k + h;
    int4 xv[4];
    int bsv[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        xv[j] = *(const int4*)(xb + 32 * j);
        bsv[j] = (int)bs[2 * j];
    }
    float dx = a.xd[(xo >> 8) + ib];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float d = h2f((u16)(dd[j] & 0xffff)), dmin = h2f((u16)(dd[j] >> 16));
        int sumsc = 0, summs = 0;
#pragma unroll
        for (int p = 0; p < 4; p++) {
            u32 m = 0x03030303u;
            int s = __dp4a((int)((qw[j][0] >> (2 * p)) & m), xv[p].x, 0);
            s = __dp4a((int)((qw[j][1] >> (2 * p)) & m), xv[p].y, s);
            s = __dp4a((int)((qw[j][2] >> (2 * p)) & m), xv[p].z, s);
            s = __dp4a((int)((qw[j][3] >> (2 * p)) & m), xv[p].w, s);
            int sb = 2 * p + h;
            int scb = (int)(((sb < 4 ? sc4[j] : sc4b[j]) >> (8 * (sb & 3))) & 0xff);
            sumsc += (scb & 0xf) * s;
            summs += (scb >> 4) * bsv[p];
        }
        acc[j] += dx * d * (float)sumsc;
        acc[j] -= dx * dmin * (float)summs;
    }
}
extern "C" __global__ void MV_Q2_K_1R_BOUNDS mv_q2_k_1r(MvArgs a) { pdl_begin();
    if (a.ksplit != 1 || a.group_rows) {  // split columns, column groups: the general body
        mv_q2_k_body<1>(a);
        return;
    }
    const int NTM = 1;
    MV_ITEMS
    int nblk = a.cols / 256;
    int rstep = gridDim.x * warps;
    int rbase = blockIdx.x * warps + (threadIdx.x >> 5);
    long long xo = mv_xoff(a, item[0], 0);
#if DS4_Q2K_PF
    // The next piece of the four rows (or the first of the next round's rows) is loaded
    // before the current one is decoded, so that loads stay in flight through the
    // decoding (122 registers instead of 56: fewer warps, each with more in flight; the
    // step 1.1% shorter, v22). The same pieces in the same order: the same values.
    auto rows = [&](int rb_, const u8* (&w)[4]) {
#pragma unroll
        for (int j = 0; j < 4; j++)
            w[j] = a.w + e * a.mat_bytes + (size_t)min(rb_ + j * rstep, a.rows - 1) * nblk * 84;
    };
    int rb = rbase, ib0 = 0;  // ib0: the warp's first piece of this step (warp-uniform)
    const u8* w[4];
    u32 qw[4][4], dd[4], sc4[4], sc4b[4];
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    rows(rb, w);
    if (rb < a.rows && lane < nblk * 4) q2k_load4(w, lane >> 2, lane & 3, (lane & 3) >> 1, qw, dd, sc4, sc4b);
    while (rb < a.rows) {
        int in = ib0 + 32, rn = rb;
        const u8* wn[4];
        if (in >= nblk * 4) {
            in = 0;
            rn = rb + 4 * rstep;
            rows(rn, wn);
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++) wn[j] = w[j];
        }
        u32 qn[4][4], dn[4], sn[4], sbn[4];
        int itn = in + lane;
        if (rn < a.rows && itn < nblk * 4)
            q2k_load4(wn, itn >> 2, itn & 3, (itn & 3) >> 1, qn, dn, sn, sbn);
        int it = ib0 + lane;
        if (it < nblk * 4) q2k_piece4(a, xo, it >> 2, (it & 3) >> 1, it & 1, qw, dd, sc4, sc4b, acc);
        if (in == 0) rows4_store(a, item[0], rb, rstep, lane, 1.0f, acc);
        rb = rn;
        ib0 = in;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            w[j] = wn[j];
            dd[j] = dn[j];
            sc4[j] = sn[j];
            sc4b[j] = sbn[j];
#pragma unroll
            for (int v = 0; v < 4; v++) qw[j][v] = qn[j][v];
        }
    }
#else
    for (int rb = rbase; rb < a.rows; rb += 4 * rstep) {
        const u8* w[4];
        float acc[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int r = min(rb + j * rstep, a.rows - 1);
            w[j] = a.w + e * a.mat_bytes + (size_t)r * nblk * 84;
            acc[j] = 0.0f;
        }
        for (int it = lane; it < nblk * 4; it += 32) {
            int ib = it >> 2, q = it & 3, k = q >> 1, h = q & 1;
            u32 qw[4][4], dd[4], sc4[4], sc4b[4];
            q2k_load4(w, ib, q, k, qw, dd, sc4, sc4b);
            q2k_piece4(a, xo, ib, k, h, qw, dd, sc4, sc4b, acc);
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int r = rb + j * rstep;
            float v = warp_sum(acc[j]);
            if (lane == 0 && r < a.rows) a.y[(size_t)item[0] * a.y_stride + r] = v;
        }
    }
#endif
}

__device__ __forceinline__ void q4k_scale_min(int j, const u8* s, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Q4_K block (144 bytes): f16 d, f16 dmin, scales[12], qs[128]. Piece j = sub-block.
// (The q4 recipe's routed experts; byte loads, one item per warp: not a decode target.)
template <int NTM> __device__ void mv_q4_k_body(const MvArgs& a) {
    MV_ITEMS
    int nblk = a.cols / 256;
    MV_ROWS {
        const u8* w = a.w + e * a.mat_bytes + (size_t)r * nblk * 144;
        float acc[NTM];
#pragma unroll
        for (int j = 0; j < NTM; j++) acc[j] = 0.0f;
        for (int it = lane + 32 * sub; it < nblk * 8; it += 32 * ks) {
            int ib = it >> 3, j = it & 7;
            const u8* blk = w + ib * 144;
            int sc, m;
            q4k_scale_min(j, blk + 4, &sc, &m);
            const u8* q = blk + 16 + 32 * (j / 2);
            int shift = 4 * (j % 2);
#pragma unroll
            for (int jt = 0; jt < NTM; jt++) {
                if (jt < nt) {
                    long long xo = mv_xoff(a, item[jt], r);
                    const i8* xb = a.xq + xo + ib * 256 + 32 * j;
                    int part = 0;
#pragma unroll
                    for (int l = 0; l < 32; l++) part += ((q[l] >> shift) & 0xf) * (int)xb[l];
                    float dx = a.xd[(xo >> 8) + ib];
                    const short* xs = a.xs + (xo >> 4);
                    acc[jt] += dx * h2f(rd16(blk)) * (float)(sc * part);
                    acc[jt] -= dx * h2f(rd16(blk + 2)) *
                               (float)(m * ((int)xs[ib * 16 + 2 * j] + (int)xs[ib * 16 + 2 * j + 1]));
                }
            }
        }
        mv_store<NTM>(a, acc, item, nt, r, lane, MV_LIVE);
    }
}
extern "C" __global__ void mv_q4_k(MvArgs a) { pdl_begin(); mv_q4_k_body<MAXNT>(a); }
extern "C" __global__ void mv_q4_k_1(MvArgs a) { pdl_begin(); mv_q4_k_body<1>(a); }

// The block's copy of the IQ2_XXS grid and of the sign byte masks (the caller waits at
// a barrier before reading them).
__device__ __forceinline__ void iq2_tables_to_shared(u64* grid_s, u64* sign_s) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) grid_s[i] = IQ2XXS_GRID[i];
    for (int i = threadIdx.x; i < 128; i += blockDim.x) sign_s[i] = KSIGN_MASK[i];
}

// The IQ2_XXS grid replicated C times in shared memory, copy c of entry i at tab[C·i + c]:
// lanes index the grid with unrelated values, and one shared copy makes a warp's loads
// conflict (≈3 wavefronts per half-warp's 8-byte loads, ≈3 per warp's 4-byte ones);
// with a copy per bank pair they cannot. A lane reading a whole entry takes copy
// lane & 15 (C = 16: a half-warp's 16 lanes in 16 distinct bank pairs); a tensor-core
// lane wanting one half h = lane & 1 of an entry reads 32-bit word 2·(C·i + c) + h with
// c = (lane >> 1) % C (C = 16: 32 distinct banks). Each thread writes its entries'
// copies rotated by the entry so that a warp's stores fall in distinct bank pairs.
// Model constants: the kernels fill it before their dependency wait.
template <int C> __device__ __forceinline__ void iq2_grid_replicas(u64* tab) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) {
        u64 v = IQ2XXS_GRID[i];
#pragma unroll
        for (int c = 0; c < C; c++) tab[C * i + ((c + i) & (C - 1))] = v;
    }
}

// KSIGN_MASK replicated C times likewise (sgn[C·s + c]), for kernels whose integer
// pipeline is the bottleneck: one conflict-free load per 8 weights instead of about ten
// instructions of iq2_sign_word.
template <int C> __device__ __forceinline__ void iq2_sign_replicas(u64* sgn) {
    for (int i = threadIdx.x; i < 128; i += blockDim.x) {
        u64 v = KSIGN_MASK[i];
#pragma unroll
        for (int c = 0; c < C; c++) sgn[C * i + ((c + i) & (C - 1))] = v;
    }
}

// The sign byte masks of a 7-bit KSIGNS index, computed rather than looked up (one
// shared-memory or L1 gather fewer per 8 weights): KSIGNS[s] is s with bit 7 set to
// its parity (an even count of negated weights), so its bits are spread one per byte
// (s · 0x01010101 masked to bit j of byte j; the parity lands as bit 31, popc << 31)
// and each byte widened to 0x00 / 0xff: adding 0x7f sets a byte's top bit exactly
// where the byte is non-zero (no carry out: a byte is 0 or a power of two), and prmt's
// sign-replicate selectors (8 + byte) spread that bit over the byte — PTX prmt itself:
// the __byte_perm intrinsic keeps only the selectors' low three bits. `sel` picks bits
// 0-3 (0x08040201, the entry's low word) or 4-7 (0x80402010, its high word).
__device__ __forceinline__ u32 iq2_sign_word(u32 s7, u32 sel) {
    u32 t = (((s7 * 0x01010101u) | (__popc(s7) << 31)) & sel) + 0x7f7f7f7fu, m;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(m) : "r"(t), "r"(0u), "r"(0xBA98u));
    return m;
}
// A grid word with its signs applied: bytes under a 0xff mask negated, (g ^ m) + 1
// byte-wise. No byte carries into the next: grid bytes are 8, 25 or 43, so a negated
// byte is at most 0xf8. Equal to __vsub4(g ^ m, m), in three instructions.
__device__ __forceinline__ int iq2_signed(u32 g, u32 m) {
    return (int)((g ^ m) + (m & 0x01010101u));
}

// IQ2_XXS, split: per block 64 bytes of quants (8 groups of a u32 of grid indices and a
// u32 of signs + scale) in `w`, the f16 scale in `sc`. A lane takes 16 bytes = two
// groups. Grid and signs live in shared memory (lanes index them with different
// values); the signs are expanded to byte masks so a signed grid word is
// (g ^ s) - s, byte-wise, ready for dp4a.
template <int NTM> __device__ void mv_iq2_xxs_body(const MvArgs& a) {
    __shared__ u64 grid_s[256];
    __shared__ u64 sign_s[128];
    iq2_tables_to_shared(grid_s, sign_s);
    __syncthreads();
    MV_ITEMS
    int nch = a.cols / 64;  // 16-byte pieces: 4 per block of 256
    MV_ROWS {
        const u8* wq = a.w + e * a.mat_bytes + (size_t)r * nch * 16;
        const u16* wd = (const u16*)(a.sc + e * a.sc_mat_bytes) + (size_t)r * (a.cols >> 8);
        float acc[NTM];
#pragma unroll
        for (int j = 0; j < NTM; j++) acc[j] = 0.0f;
        for (int c = lane + 32 * sub; c < nch; c += 32 * ks) {
            int4 wv = ldg4(wq + 16 * (size_t)c);
            int ib = c >> 2, g0 = 2 * (c & 3);
            float dw = h2f(__ldg(wd + ib));
            u32 qw[4] = {(u32)wv.x, (u32)wv.y, (u32)wv.z, (u32)wv.w};
            // The two groups' 64 signed weights as int8x4 words, decoded once for all
            // the items this warp serves.
            int wq8[16], ls[2];
#pragma unroll
            for (int gg = 0; gg < 2; gg++) {
                u32 a0 = qw[2 * gg], a1 = qw[2 * gg + 1];
                ls[gg] = 2 * (int)(a1 >> 28) + 1;
#pragma unroll
                for (int l = 0; l < 4; l++) {
                    u64 gr = grid_s[(a0 >> (8 * l)) & 0xff];
                    u64 sg = sign_s[(a1 >> (7 * l)) & 127];
                    u32 glo = (u32)gr, ghi = (u32)(gr >> 32);
                    u32 slo = (u32)sg, shi = (u32)(sg >> 32);
                    wq8[8 * gg + 2 * l] = (int)__vsub4(glo ^ slo, slo);
                    wq8[8 * gg + 2 * l + 1] = (int)__vsub4(ghi ^ shi, shi);
                }
            }
#pragma unroll
            for (int jt = 0; jt < NTM; jt++) {
                if (jt < nt) {
                    long long xo = mv_xoff(a, item[jt], r);
                    float dx = a.xd[(xo >> 8) + ib];
#pragma unroll
                    for (int gg = 0; gg < 2; gg++) {
                        const i8* xb = a.xq + xo + 256 * ib + 32 * (g0 + gg);
                        int4 x0 = *(const int4*)xb, x1 = *(const int4*)(xb + 16);
                        int sumi = __dp4a(wq8[8 * gg], x0.x, 0);
                        sumi = __dp4a(wq8[8 * gg + 1], x0.y, sumi);
                        sumi = __dp4a(wq8[8 * gg + 2], x0.z, sumi);
                        sumi = __dp4a(wq8[8 * gg + 3], x0.w, sumi);
                        sumi = __dp4a(wq8[8 * gg + 4], x1.x, sumi);
                        sumi = __dp4a(wq8[8 * gg + 5], x1.y, sumi);
                        sumi = __dp4a(wq8[8 * gg + 6], x1.z, sumi);
                        sumi = __dp4a(wq8[8 * gg + 7], x1.w, sumi);
                        acc[jt] += 0.125f * (dw * dx) * (float)(sumi * ls[gg]);
                    }
                }
            }
        }
        mv_store<NTM>(a, acc, item, nt, r, lane, MV_LIVE);
    }
}
extern "C" __global__ void mv_iq2_xxs(MvArgs a) { pdl_begin(); mv_iq2_xxs_body<MAXNT>(a); }

// IQ2_XXS for one item, the general body: decode takes mv_iq2_xxs_1ts (whole rows, the
// host's case for every IQ2_XXS matrix); this serves split columns or column groups.
// (v12's tuned mv_iq2_xxs_1, lookups through L1, is in bench/CUDA-SPEED.md's logs.)
extern "C" __global__ void mv_iq2_xxs_1(MvArgs a) { pdl_begin(); mv_iq2_xxs_body<1>(a); }

// Eight int8x4 words against 32 int8 activations, added in word order.
__device__ __forceinline__ int dot8(const int (&w)[8], int4 x0, int4 x1) {
    int s = __dp4a(w[0], x0.x, 0);
    s = __dp4a(w[1], x0.y, s);
    s = __dp4a(w[2], x0.z, s);
    s = __dp4a(w[3], x0.w, s);
    s = __dp4a(w[4], x1.x, s);
    s = __dp4a(w[5], x1.y, s);
    s = __dp4a(w[6], x1.z, s);
    return __dp4a(w[7], x1.w, s);
}

// IQ2_XXS for one item per warp (decode), whole rows, four rows a warp with their loads in
// flight before any is decoded: the grid from a per-block replica in shared memory
// (conflict-free loads, filled before the dependency wait) and the sign masks from
// replicas too (ST) or computed — v12's two L1 gathers per 8 weights become one or two
// conflict-free shared loads — and each piece's two group sums added in integers. The
// host sizes the grid to one wave of resident blocks, so each block fills its replicas
// once and walks several rounds of rows.
// A 64-bit shared-memory load at a 32-bit shared address (the tables are written before a
// barrier the loads' addresses follow).
__device__ __forceinline__ u64 lds_u64(u32 addr) {
    u64 v;
    asm("ld.shared.u64 %0, [%1];" : "=l"(v) : "r"(addr));
    return v;
}
__device__ __forceinline__ int4 lds_i4(u32 addr) {
    int4 v;
    asm("ld.shared.v4.s32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
    return v;
}
__device__ __forceinline__ u32 lds_u32(u32 addr) {
    u32 v;
    asm("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(addr));
    return v;
}
// One 16-byte piece c (64 weights) of four rows (their pieces in wv, scales in dw) against
// the item's activations into acc: the two groups' sums times their scales in integers (as
// the CPU's block sum), then one float step per piece; the 1/8 at the end.
// XS: the activations from the block's swizzled copy in shared memory at xs (iq2_stage_x).
#define IQ2_XS_MAX 4096
#define IQ2_XS_SHARED (IQ2_XS_MAX + 4 * IQ2_XS_MAX / 256)
template <bool ST, bool XS = false>
__device__ __forceinline__ void iq2_piece4(const MvArgs& a, long long xo0, int c, const int4 (&wv)[4],
                                           const float (&dw)[4], const u64* tl, const u64* sgn,
                                           int lane, float (&acc)[4], const i8* xs = nullptr) {
    int ib = c >> 2, g0 = 2 * (c & 3);
#if DS4_IQ2_LA
    u32 tl_s = (u32)__cvta_generic_to_shared(tl);
    u32 sg_s = ST ? (u32)__cvta_generic_to_shared(sgn + (lane & 15)) : 0u;
#endif
    float dx;
    if (XS)
        dx = __int_as_float((int)lds_u32((u32)__cvta_generic_to_shared(xs) + IQ2_XS_MAX + 4u * ib));
    else
        dx = a.xd[(xo0 >> 8) + ib];
    int4 xv[2][2];
#pragma unroll
    for (int gg = 0; gg < 2; gg++) {
        if (XS) {
            // Chunk 4c + 2gg + h of the row, at its place in iq2_stage_x's swizzle (32-bit
            // shared addresses, as the table lookups: fewer registers than generic ones).
            u32 sw = (u32)(c >> 1) & 3u, xs_s = (u32)__cvta_generic_to_shared(xs);
            xv[gg][0] = lds_i4(xs_s + 16u * ((u32)(4 * c + 2 * gg) ^ sw));
            xv[gg][1] = lds_i4(xs_s + 16u * ((u32)(4 * c + 2 * gg + 1) ^ sw));
        } else {
            const i8* xb = a.xq + xo0 + 256 * ib + 32 * (g0 + gg);
            xv[gg][0] = *(const int4*)xb;
            xv[gg][1] = *(const int4*)(xb + 16);
        }
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
        u32 qw[4] = {(u32)wv[j].x, (u32)wv[j].y, (u32)wv[j].z, (u32)wv[j].w};
        int bsum = 0;
#pragma unroll
        for (int gg = 0; gg < 2; gg++) {
            u32 a0 = qw[2 * gg], a1 = qw[2 * gg + 1];
            int ls = 2 * (int)(a1 >> 28) + 1;
            int w8[8];
#if DS4_IQ2_DP2
            int m8[8];
#endif
#pragma unroll
            for (int l = 0; l < 4; l++) {
#if DS4_IQ2_LA
                // 32-bit shared addresses, the lane's replica folded into the base: the
                // grid byte by one prmt and its entry by one multiply-add (the generic
                // form spent a shift, a multiply, a mask-merge and a lea per lookup).
                u64 gr = lds_u64(tl_s + 128u * __byte_perm(a0, 0, 0x4440 + l));
#else
                u64 gr = tl[16 * ((a0 >> (8 * l)) & 0xff)];
#endif
                u32 s7 = (a1 >> (7 * l)) & 127;
                u32 slo, shi;
                if (ST) {
#if DS4_IQ2_LA
                    u64 sg = lds_u64(sg_s + 128u * s7);
#else
                    u64 sg = sgn[16 * s7 + (lane & 15)];
#endif
                    slo = (u32)sg;
                    shi = (u32)(sg >> 32);
                } else {
                    slo = iq2_sign_word(s7, 0x08040201u);
                    shi = iq2_sign_word(s7, 0x80402010u);
                }
#if DS4_IQ2_DP2
                // g ^ m alone: a negated byte is ~g = −g − 1, whose extra −1 · x the
                // masks' own products (m bytes −1 or 0) take back below.
                w8[2 * l] = (int)((u32)gr ^ slo);
                w8[2 * l + 1] = (int)((u32)(gr >> 32) ^ shi);
                m8[2 * l] = (int)slo;
                m8[2 * l + 1] = (int)shi;
#else
                w8[2 * l] = iq2_signed((u32)gr, slo);
                w8[2 * l + 1] = iq2_signed((u32)(gr >> 32), shi);
#endif
            }
            int sumi = dot8(w8, xv[gg][0], xv[gg][1]);
#if DS4_IQ2_DP2
            sumi -= dot8(m8, xv[gg][0], xv[gg][1]);  // the negated weights' sum exactly
#endif
            bsum += sumi * ls;
        }
        acc[j] += (dw[j] * dx) * (float)bsum;
    }
}
// Piece c (< nch) of the four rows rr into wv, dw.
__device__ __forceinline__ void iq2_load4(const u8* wq0, const u16* wd0, const int (&rr)[4], int c,
                                          int nch, int4 (&wv)[4], float (&dw)[4]) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        wv[j] = ldg4(wq0 + ((size_t)rr[j] * nch + c) * 16);
        dw[j] = h2f(__ldg(wd0 + (size_t)rr[j] * (nch >> 2) + (c >> 2)));
    }
}
template <bool ST>
__device__ __forceinline__ void mv_iq2_xxs_1t_body(const MvArgs& a, const u64* tab, const u64* sgn) {
    const int NTM = 1;
    MV_ITEMS
    int nch = a.cols / 64;
    int rstep = gridDim.x * warps;
    int rbase = blockIdx.x * warps + (threadIdx.x >> 5);
    long long xo0 = mv_xoff(a, item[0], 0);
    const u64* tl = tab + (lane & 15);
    const u8* wq0 = a.w + e * a.mat_bytes;
    const u16* wd0 = (const u16*)(a.sc + e * a.sc_mat_bytes);
    for (int rb = rbase; rb < a.rows; rb += 4 * rstep) {
        // Row indices rather than eight 64-bit pointers: the registers go to loads in flight.
        // (Loading the next pieces before decoding these, v21's DS4_CUDA_IQ2_PF, measured
        // 0.5% slower a step: bench/CUDA-SPEED.md v22.)
        int rr[4];
        float acc[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            rr[j] = min(rb + j * rstep, a.rows - 1);
            acc[j] = 0.0f;
        }
        for (int c0 = lane; c0 < nch; c0 += 32) {
            int4 wv[4];
            float dw[4];
            iq2_load4(wq0, wd0, rr, c0, nch, wv, dw);
            iq2_piece4<ST>(a, xo0, c0, wv, dw, tl, sgn, lane, acc);
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int r = rb + j * rstep;
            float v = 0.125f * warp_sum(acc[j]);
            if (lane == 0 && r < a.rows) a.y[(size_t)item[0] * a.y_stride + r] = v;
        }
    }
}

// mv_iq2_xxs_1tx (decode's default since v34; DS4_CUDA_IQ2_XS=0 keeps mv_iq2_xxs_1ts):
// the item's int8 activations staged once a block in shared memory. A lane's piece c reads the 64 bytes
// at 64c, so each of its four 16-byte loads from global memory had the warp's 32 lanes
// 64 bytes apart over 16 lines of L1: 16 wavefronts for 512 bytes, as many as the four
// rows' weights and the activations together (ncu, v33: the kernel's L1/shared pipe 76%
// busy, 32% of its global sectors excess). Staged with 16-byte chunk q at q ^ ((q >> 3)
// & 3), the 8 lanes of each quarter-warp meet 8 distinct bank quads: 4 wavefronts a load.
// The first round's weights are in flight before the staging's barrier.
// Its scales (a float per 256 columns) follow at IQ2_XS_MAX: IQ2_XS_SHARED bytes in all.
__device__ __forceinline__ void iq2_stage_x(const i8* x, const float* xd, int cols, i8* xs) {
    for (int q = threadIdx.x; q < cols / 16; q += blockDim.x)
        *(int4*)(xs + 16 * (q ^ ((q >> 3) & 3))) = *(const int4*)(x + 16 * q);
    if ((int)threadIdx.x < cols / 256) ((float*)(xs + IQ2_XS_MAX))[threadIdx.x] = xd[threadIdx.x];
}
// mv_iq2_xxs_1t_body<true> with the activations staged (rows of at most IQ2_XS_MAX
// columns; the caller checks). The same products in the same order: the same values.
// Its row loop is a copy of that body's: sharing one (a template over XS with a store
// callback) changed this kernel's register allocation and schedule (v34, NVRTC 13.2),
// so the copy stays until a device call can measure the shared form.
__device__ __forceinline__ void mv_iq2_xxs_1tx_body(const MvArgs& a, const u64* tab, const u64* sgn,
                                                    i8* xs) {
    // MV_ITEMS for one item, in scalars (as measured in v34; with MV_ITEMS's one-entry
    // array this body spilled while it shared a kernel with mv_iq2_xxs_1t_body).
    int warps = blockDim.x >> 5, lane = threadIdx.x & 31, item;
    long long e;
    if (a.grp) {
        int g = blockIdx.y;
        if (g >= *a.ngrp) return;
        e = a.grp[3 * g];
        item = a.grp[3 * g + 2] > 0 ? a.perm[a.grp[3 * g + 1]] : 0;
    } else {
        int b0 = blockIdx.y * a.nt;
        if (b0 >= a.nb) return;
        e = a.ids ? (long long)a.ids[b0] : 0;
        item = b0;
    }
    int nch = a.cols / 64;
    int rstep = gridDim.x * warps;
    int rbase = blockIdx.x * warps + (threadIdx.x >> 5);
    long long xo0 = mv_xoff(a, item, 0);
    const u64* tl = tab + (lane & 15);
    const u8* wq0 = a.w + e * a.mat_bytes;
    const u16* wd0 = (const u16*)(a.sc + e * a.sc_mat_bytes);
    // The output row's address read from shared memory after each round (as measured).
    __shared__ float* yrow;
    if (threadIdx.x == 0) yrow = a.y + (size_t)item * a.y_stride;
    iq2_stage_x(a.xq + xo0, a.xd + (xo0 >> 8), a.cols, xs);
    __syncthreads();
    for (int rb = rbase; rb < a.rows; rb += 4 * rstep) {
        int rr[4];
        float acc[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            rr[j] = min(rb + j * rstep, a.rows - 1);
            acc[j] = 0.0f;
        }
        for (int c0 = lane; c0 < nch; c0 += 32) {
            int4 wv[4];
            float dw[4];
            iq2_load4(wq0, wd0, rr, c0, nch, wv, dw);
            iq2_piece4<true, true>(a, xo0, c0, wv, dw, tl, sgn, lane, acc, xs);
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int r = rb + j * rstep;
            float v = 0.125f * warp_sum(acc[j]);
            if (lane == 0 && r < a.rows) yrow[r] = v;
        }
    }
}

// One 16-byte piece a lane per row per round (4 loads in flight): 80 registers, three
// blocks an SM (24 warps, 48 KB in flight); two pieces (v13's U = 2) took 236 (one block:
// 8 warps, 32 KB; ptxas hoists the table loads of all four rows) and measured slower.
extern "C" __global__ void __launch_bounds__(256, 3) mv_iq2_xxs_1t(MvArgs a) {
    __shared__ u64 tab[16 * 256];
    pdl_signal_early();
    iq2_grid_replicas<16>(tab);
    pdl_wait();
    __syncthreads();
    mv_iq2_xxs_1t_body<false>(a, tab, nullptr);
}
// The sign masks from 16 replicas of KSIGN_MASK as well (16 KB more shared memory, one
// conflict-free load per 8 weights instead of about a dozen integer instructions).
extern "C" __global__ void __launch_bounds__(256, DS4_IQ2_LB) mv_iq2_xxs_1ts(MvArgs a) {
    __shared__ u64 tab[16 * 256];
    __shared__ u64 sgn[16 * 128];
    pdl_signal_early();
    iq2_grid_replicas<16>(tab);
    iq2_sign_replicas<16>(sgn);
    pdl_wait();
    __syncthreads();
    mv_iq2_xxs_1t_body<true>(a, tab, sgn);
}
// mv_iq2_xxs_1ts with the activations staged (rows of at most IQ2_XS_MAX columns; the
// host's choice). Its own entry: as a branch of mv_iq2_xxs_1ts the other body spilled
// at the shared 80-register cap.
extern "C" __global__ void __launch_bounds__(256, DS4_IQ2_LB) mv_iq2_xxs_1tx(MvArgs a) {
    __shared__ u64 tab[16 * 256];
    __shared__ u64 sgn[16 * 128];
    extern __shared__ __align__(16) i8 xs[];  // IQ2_XS_SHARED bytes (the host's launch)
    pdl_signal_early();
    iq2_grid_replicas<16>(tab);
    iq2_sign_replicas<16>(sgn);
    pdl_wait();
    mv_iq2_xxs_1tx_body(a, tab, sgn, xs);  // its staging's barrier orders the tables too
}

#define MM_NG 32

__device__ __forceinline__ void mma_s8_16816(int* c, int a0, int a1, int b0) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%7,%8,%9,%10};"
        : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
        : "r"(a0), "r"(a1), "r"(b0), "r"(0), "r"(0), "r"(0), "r"(0));
}

// IQ2_XXS routed experts for a run of tokens (prefill), on the tensor cores: a block
// takes 64 rows (4 warps × 16) of one expert group's matrix and the group's ≤ NG (32 or
// 64) items, 8 per mma (n-tile). Per 256-column block, the 64 rows' quants (64 bytes each)
// and the group's activations (256 bytes per item) arrive by cp.async one block ahead
// (double-buffered), so the 4 warps read them from shared memory rather than each
// loading its own scattered words from global memory. Each lane decodes, per 32-column
// group, the int8x4 words of its A fragment from the grid (lane quad q holds columns
// 4q..4q+3 and 16+4q..) once for all the n-tiles; the int32 group sums are scaled as
// in mv_iq2_xxs. Rows padded to 80 and 272 bytes: a quad's words and the B fragments of
// a warp fall in distinct banks.
#define IQ_LDW 80
#define IQ_LDB 272
// C > 0: the grid from C replicas (iq2_grid_replicas) and the signs computed; C = 0: one
// copy of the grid and the sign masks looked up (v11).
template <int NG, int C> __device__ __forceinline__ void mm_iq2_xxs_st_body(const MvArgs& a) {
    __shared__ u64 tabs[C > 0 ? C * 256 : 384];
    u64* grid_s = tabs;
    u64* sign_s = tabs + 256;
    __shared__ int items[NG];
    __shared__ long long xoff[NG];
    __shared__ __align__(16) u8 ws[2][64 * IQ_LDW];
    // The activations' two buffers are dynamic shared memory (2 · NG · IQ_LDB bytes):
    // at 64 items the whole would pass the 48 KB a kernel may declare statically.
    extern __shared__ __align__(16) i8 xs_dyn[];
    i8 (*xs)[NG * IQ_LDB] = reinterpret_cast<i8 (*)[NG * IQ_LDB]>(xs_dyn);
    __shared__ float wds[2][64];
    __shared__ float dxs[2][NG];
    int gi = blockIdx.y;
    if (gi >= *a.ngrp) return;
    long long e = a.grp[3 * gi];
    int first = a.grp[3 * gi + 1], nt = a.grp[3 * gi + 2];
    if (C > 0)
        iq2_grid_replicas<(C > 0 ? C : 1)>(tabs);
    if (C == 0)
        iq2_tables_to_shared(grid_s, sign_s);
    for (int sl = threadIdx.x; sl < NG; sl += blockDim.x) {
        int it = sl < nt ? a.perm[first + sl] : -1;
        items[sl] = it;
        xoff[sl] = it >= 0 ? (long long)(it / a.act_div) * a.x_stride : -1;
    }
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int r0 = blockIdx.x * 64;
    int ra = r0 + 16 * warp + g;
    int nj = (nt + 7) >> 3;
    int nblk = a.cols >> 8;
    const u8* wbase = a.w + e * a.mat_bytes;
    const u16* wd = (const u16*)(a.sc + e * a.sc_mat_bytes);
    size_t row_bytes = (size_t)(a.cols >> 2);
    auto stage = [&](int ib, int buf) {
#pragma unroll
        for (int u = 0; u < 2; u++) {
            int idx = threadIdx.x + 128 * u, row = idx >> 2, ch = idx & 3;
            int wr = min(r0 + row, a.rows - 1);
            cp_async16(&ws[buf][row * IQ_LDW + 16 * ch], wbase + wr * row_bytes + 64 * ib + 16 * ch, 16);
        }
#pragma unroll
        for (int u = 0; u < NG * 16 / 128; u++) {
            int idx = threadIdx.x + 128 * u, sl = idx >> 4, ch = idx & 15;
            long long xo = xoff[sl];
            const i8* src = xo >= 0 ? a.xq + xo + 256 * ib + 16 * ch : a.xq;
            cp_async16(&xs[buf][sl * IQ_LDB + 16 * ch], src, xo >= 0 ? 16 : 0);
        }
        if (threadIdx.x < 64) {
            int wr = min(r0 + threadIdx.x, a.rows - 1);
            wds[buf][threadIdx.x] = h2f(wd[(size_t)wr * nblk + ib]);
        }
        for (int sl = threadIdx.x - 64; sl >= 0 && sl < NG; sl += 64) {
            long long xo = xoff[sl];
            dxs[buf][sl] = xo >= 0 ? a.xd[(xo >> 8) + ib] : 0.0f;
        }
    };
    float acc[NG / 8][4];
#pragma unroll
    for (int j = 0; j < NG / 8; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[j][q] = 0.0f;
    int l0 = tq >> 1, half = tq & 1, mi = lane >> 3, rr = lane & 7;
#if DS4_IQ2_PLA
    // C > 0 (DS4_IQ2_PLA, v25: prefill +1.5%): the lane's replica and half folded into a
    // 32-bit shared base once; a grid entry is then 64 bytes a byte from it, the byte taken
    // by one prmt. (The sign masks from C replicas too, v25's DS4_IQ2_PSG, cost more in
    // registers and shared memory than their eight instructions a lookup: +0.7% against
    // +1.6%.)
    u32 tab_lane = (u32)__cvta_generic_to_shared(tabs) + 8u * ((lane >> 1) & (C > 0 ? C - 1 : 0)) +
                   4u * half;
    u32 sel_lo = 0x4440u + l0, sel_hi = 0x4442u + l0;
#endif
    stage(0, 0);
    cp_async_commit();
    for (int ib = 0; ib < nblk; ib++) {
        int buf = ib & 1;
        // The other buffer was last read before the previous iteration's closing barrier.
        if (ib + 1 < nblk) stage(ib + 1, buf ^ 1);
        cp_async_commit();
        cp_async_wait1();
        __syncthreads();
        const u8* wa = ws[buf] + (16 * warp + g) * IQ_LDW;
        const u8* wb = wa + 8 * IQ_LDW;
        const i8* xb = xs[buf];
        float dwa = wds[buf][16 * warp + g], dwb = wds[buf][16 * warp + g + 8];
        float dx0[NG / 8], dx1[NG / 8];
#pragma unroll
        for (int j = 0; j < NG / 8; j++) {
            dx0[j] = dxs[buf][8 * j + 2 * tq];
            dx1[j] = dxs[buf][8 * j + 2 * tq + 1];
        }
        // C > 0: each group's mma sums times its scale added in integers over the
        // 256-column block (as the CPU's block sum; |sum| < 8·31·32·43·128), then one
        // float step per block — four integer multiply-adds per mma where v12 spent
        // four conversions and float steps per mma (the kernel is issue-bound).
        int ci[NG / 8][4];
#pragma unroll
        for (int j = 0; j < NG / 8; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) ci[j][q] = 0;
#pragma unroll 2
        for (int gq = 0; gq < 8; gq++) {
            uint2 wva = *(const uint2*)(wa + 8 * gq), wvb = *(const uint2*)(wb + 8 * gq);
            u32 a0a = wva.x, a1a = wva.y, a0b = wvb.x, a1b = wvb.y;
            int af[4];
#pragma unroll
            for (int q = 0; q < 4; q++) {
                // q: 0 row a cols 4tq.., 1 row b, 2 row a cols 16+4tq.., 3 row b.
                u32 g0 = (q & 1) ? a0b : a0a, g1 = (q & 1) ? a1b : a1a;
                int l = l0 + ((q & 2) ? 2 : 0);
                if (C > 0) {
#if DS4_IQ2_PLA
                    u32 gw = lds_u32(tab_lane + 8u * C * __byte_perm(g0, 0, (q & 2) ? sel_hi : sel_lo));
#else
                    u32 idx = (g0 >> (8 * l)) & 0xff;
                    u32 gw = ((const u32*)tabs)[2 * (C * idx + ((lane >> 1) & (C - 1))) + half];
#endif
                    u32 sw = iq2_sign_word((g1 >> (7 * l)) & 127, half ? 0x80402010u : 0x08040201u);
                    af[q] = iq2_signed(gw, sw);
                } else {
                    u64 gr = grid_s[(g0 >> (8 * l)) & 0xff];
                    u64 sg = sign_s[(g1 >> (7 * l)) & 127];
                    u32 gw = half ? (u32)(gr >> 32) : (u32)gr;
                    u32 sw = half ? (u32)(sg >> 32) : (u32)sg;
                    af[q] = (int)__vsub4(gw ^ sw, sw);
                }
            }
            int lsa = 2 * (int)(a1a >> 28) + 1, lsb = 2 * (int)(a1b >> 28) + 1;
#pragma unroll
            for (int j0 = 0; j0 < NG / 8; j0 += 2) {
                if (j0 >= nj) continue;  // the block's whole warps alike
                // The B fragments of n-tiles j0 and j0 + 1: (b0, b1) each, the tokens'
                // bytes 32·gq + 4tq.. and 16 further.
                int bf[4];
#if DS4_LDSM_B
                // By ldmatrix (an 8 × 16-byte matrix per address group of 8 lanes: lane
                // 4g + tq receives bytes 4tq.. of row g — the 32-bit loads' words).
                ldsm_x4(*(u32*)&bf[0], *(u32*)&bf[1], *(u32*)&bf[2], *(u32*)&bf[3],
                        xb + (8 * (j0 + (mi >> 1)) + rr) * IQ_LDB + 32 * gq + (mi & 1) * 16);
#else
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const i8* bp = xb + (8 * (j0 + h) + g) * IQ_LDB + 32 * gq + 4 * tq;
                    bf[2 * h] = *(const int*)bp;
                    bf[2 * h + 1] = *(const int*)(bp + 16);
                }
#endif
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int j = j0 + h;
                    if (j >= nj) break;
                    int c[4];
                    mma_s8_16832(c, af, bf[2 * h], bf[2 * h + 1]);
                    if (C > 0) {
                        ci[j][0] += c[0] * lsa;
                        ci[j][1] += c[1] * lsa;
                        ci[j][2] += c[2] * lsb;
                        ci[j][3] += c[3] * lsb;
                    } else {
                        acc[j][0] += 0.125f * (dwa * dx0[j]) * (float)(c[0] * lsa);
                        acc[j][1] += 0.125f * (dwa * dx1[j]) * (float)(c[1] * lsa);
                        acc[j][2] += 0.125f * (dwb * dx0[j]) * (float)(c[2] * lsb);
                        acc[j][3] += 0.125f * (dwb * dx1[j]) * (float)(c[3] * lsb);
                    }
                }
            }
        }
        // The CPU's block step exactly (sumf += d·bsum, d = dw·dx, two roundings: no
        // fused multiply-add) and its 1/8 at the end: each output is the CPU's dot
        // product bit for bit, given the same Q8_K activations.
        if (C > 0) {
#pragma unroll
            for (int j = 0; j < NG / 8; j++) {
                if (j < nj) {
                    acc[j][0] = __fadd_rn(acc[j][0], __fmul_rn(dwa * dx0[j], (float)ci[j][0]));
                    acc[j][1] = __fadd_rn(acc[j][1], __fmul_rn(dwa * dx1[j], (float)ci[j][1]));
                    acc[j][2] = __fadd_rn(acc[j][2], __fmul_rn(dwb * dx0[j], (float)ci[j][2]));
                    acc[j][3] = __fadd_rn(acc[j][3], __fmul_rn(dwb * dx1[j], (float)ci[j][3]));
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < NG / 8; j++) {
        if (C > 0)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[j][q] *= 0.125f;
        mma_store(a, acc[j], ra, items[8 * j + 2 * tq], items[8 * j + 2 * tq + 1]);
    }
}


// IQ2_XXS routed experts for a run on the tensor cores in f16 (sm_90a): each weight
// dequantized as f16 — grid byte × f16(d·(2ls + 1)), one fused step from the 1024 + b form
// (DS4_IQ2_WDL; else grid byte × (2·ls + 1) exactly, an integer ≤ 1,333, then × d, one
// rounding instead of two), the sign by xor — straight into
// wgmma's register fragments; the items' Q8_K activations dequantized to f16 beforehand
// (q8_k_to_f16_iq); summed in f32 by wgmma m64nNGk16, the CPU's 1/8 at the end. Not the
// CPU's integers (f16's rounding of the weight, ≈ 2^-12, and of the activation): the tests
// bound it. A block: 128 rows of one expert group's matrix (two warpgroups of 64) × the
// group's ≤ NG items; a stage is one 256-column IQ2_XXS block (the items' f16 tile of NG
// × 256 in four 64-column panels swizzled at 128 bytes, the rows' 64 bytes of quants) by
// cp.async one stage ahead, the rows' scales into registers a block ahead; two blocks an SM, so one block's decoding
// runs while the other's products do. A lane decodes one grid entry (8 weights) of its two
// rows per 32-column group: its k16 fragments take weights 8tq + 4s + (0, 1) and (2, 3)
// as the logical columns 2tq + (0, 1) and 2tq + 8 + (0, 1) of step s of the group, a
// permutation inside each group that q8_k_to_f16_iq applies to the activations.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wgmma_f16_64x64_ra(float* d, const u32* af, unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(af[0]), "r"(af[1]), "r"(af[2]), "r"(af[3]), "l"(db), "r"(1));
}
__device__ __forceinline__ u32 u2h_rn(u32 v) {
    u16 h;
    asm("cvt.rn.f16.u32 %0, %1;" : "=h"(h) : "r"(v));
    return h;
}
#endif

// The items' Q8_K activations (n values, xq and their 256-block scales xd) as f16 for
// mm_iq2_xxs_wh64: a thread per 32-column group, written in that kernel's permuted order
// (logical pair 8s + 4hi + tq of a group is its bytes 8tq + 4s + 2hi, + 1).
extern "C" __global__ void q8_k_to_f16_iq(const i8* xq, const float* xd, u16* xh, int n) {
    pdl_begin();
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    int i = 32 * (blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= n) return;
    float d = xd[i >> 8];
    u32 o0[8], o1[8];
    q8_chunk_x16(*(const uint4*)(xq + i), d, o0);
    q8_chunk_x16(*(const uint4*)(xq + i + 16), d, o1);
    // o0[w] / o0[4 + w]: word w's bytes (0, 1) / (2, 3), words 0..3; o1 words 4..7.
    u32 pr[8][2];
#pragma unroll
    for (int w = 0; w < 4; w++) {
        pr[w][0] = o0[w];
        pr[w][1] = o0[4 + w];
        pr[4 + w][0] = o1[w];
        pr[4 + w][1] = o1[4 + w];
    }
    u32 out[16];
#pragma unroll
    for (int sx = 0; sx < 2; sx++)
#pragma unroll
        for (int hi = 0; hi < 2; hi++)
#pragma unroll
            for (int tq = 0; tq < 4; tq++) out[8 * sx + 4 * hi + tq] = pr[2 * tq + sx][hi];
    uint4* dst = (uint4*)(xh + i);
#pragma unroll
    for (int v = 0; v < 4; v++) dst[v] = make_uint4(out[4 * v], out[4 * v + 1], out[4 * v + 2], out[4 * v + 3]);
#endif
}

// The f16 expert kernels' common parts (mm_iq2_xxs_wh64, mm_q2_k_w*64).
// Expert group blockIdx.y (false: past the run's groups): its matrix e, its ≤ NG items
// (−1 past the group) and their activation rows' offsets.
template <int NG>
__device__ __forceinline__ bool wh_group(const MvArgs& a, int* items, long long* xoff, long long& e) {
    int gi = blockIdx.y;
    if (gi >= *a.ngrp) return false;
    e = a.grp[3 * gi];
    int first = a.grp[3 * gi + 1], nt = a.grp[3 * gi + 2];
    for (int sl = threadIdx.x; sl < NG; sl += blockDim.x) {
        int it = sl < nt ? a.perm[first + sl] : -1;
        items[sl] = it;
        xoff[sl] = it >= 0 ? (long long)(it / a.act_div) * a.x_stride : -1;
    }
    return true;
}
// The items' f16 rows of one 256-column block (at xh + xoff + c0) into a stage: NG × 32
// chunks of 16 bytes by NT threads; chunk ch of item sl goes to 64-column panel ch / 8,
// its chunk ch % 8 swizzled by the row; items past the group are zeros.
template <int NG, int NT = 256>
__device__ __forceinline__ void wh_stage_items(u8* sb, const u16* xh, const long long* xoff, long long c0) {
#pragma unroll
    for (int u = 0; u < NG * 32 / NT; u++) {
        int idx = threadIdx.x + NT * u, sl = idx >> 5, ch = idx & 31;
        long long xo = xoff[sl];
        const u16* src = xo >= 0 ? xh + xo + c0 + 8 * ch : xh;
        cp_async16(sb + (ch >> 3) * (NG * 128) + sl * 128 + (((ch & 7) ^ (sl & 7)) << 4), src, xo >= 0 ? 16 : 0);
    }
}

// The f16 expert kernels' pipeline of NS stage buffers over nblk 256-column blocks, one
// commit group a stage (an empty one past the end, so the waits count alike). The first
// NS − 1 stages:
template <int NS, typename F> __device__ __forceinline__ void wh_pipe_start(int nblk, F&& stage) {
    static_assert(NS == 2 || NS == 3, "two or three stages");
#pragma unroll
    for (int st = 0; st < NS - 1; st++) {
        if (st < nblk) stage(st, st);
        cp_async_commit();
    }
}
// Block ib's buffer, once its stage has landed and every warpgroup is done with block
// ib − 1 (each waited for its own products), whose buffer then takes stage ib + NS − 1.
template <int NS, typename F> __device__ __forceinline__ int wh_pipe_next(int ib, int nblk, F&& stage) {
    int buf = NS == 2 ? ib & 1 : (int)((unsigned)ib % 3u);
    if (NS == 3)
        cp_async_wait1();
    else
        cp_async_wait0();
    fence_proxy_async();
    __syncthreads();
    if (ib + NS - 1 < nblk) stage(ib + NS - 1, NS == 2 ? buf ^ 1 : (buf == 0 ? 2 : buf - 1));
    cp_async_commit();
    return buf;
}

// QS: 32-column groups decoded per batch of products (4: 32 fragment registers, 2: 16,
// with twice the waits; the register budget of two blocks an SM is 128). RB rows a block
// (2·RB threads) and NS stages, as mm_q2_k_wh_body's (mm_iq2_xxs_wh256: 256 and 3).
template <int NG, int QS, int RB = 128, int NS = 2>
__device__ __forceinline__ void mm_iq2_xxs_wh_body(const MvArgs& a, const u16* xh) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int NT = 2 * RB;
    constexpr int BT = NG * 512;                  // the f16 tile: NG rows × 256 columns
    constexpr int STAGE = RB == 256 ? IQR_STAGE : BT + 128 * IQH_LDW; // + the quants (rows of 80 bytes)
    static_assert(BT + RB * IQH_LDW <= STAGE && STAGE % 1024 == 0, "IQR_STAGE");
    // DS4_IQ2_WGR replicas of the grid, entry i's copy r at i·WGR + r and a lane reading
    // copy lane % WGR: a half-warp's 64-bit loads (one wavefront's worth) then spread over
    // more bank pairs than one copy's random entries hit.
    constexpr int WGR = DS4_IQ2_WGR;
    static_assert((WGR & (WGR - 1)) == 0, "DS4_IQ2_WGR: a power of two");
    __shared__ u64 grid_s[256 * WGR];
    __shared__ uint4 sgn_s[128];
    __shared__ int items[NG];
    __shared__ long long xoff[NG];
    extern __shared__ __align__(16) u8 dsm_iq[];
    u8* base;
    u32 sbase;
    dsm_at_1024(dsm_iq, base, sbase);
    long long e;
    if (!wh_group<NG>(a, items, xoff, e)) return;
    for (int i = threadIdx.x; i < 256 * WGR; i += blockDim.x) grid_s[i] = IQ2XXS_GRID[i / WGR];
    // The sign table only where the signs are not formed by shifts (DS4_IQ2_WSA=0).
    for (int i = threadIdx.x; !DS4_IQ2_WSA && i < 128; i += blockDim.x) {
        u64 v = KSIGN_MASK[i];
        u32 lo = (u32)v, hi = (u32)(v >> 32);
        sgn_s[i] = make_uint4(__byte_perm(lo, 0, 0x1404) & 0x80008000u, __byte_perm(lo, 0, 0x3424) & 0x80008000u,
                              __byte_perm(hi, 0, 0x1404) & 0x80008000u, __byte_perm(hi, 0, 0x3424) & 0x80008000u);
    }
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wm = warp >> 2;
    int r0 = blockIdx.x * RB;
    int nblk = a.cols >> 8;
    const u8* wbase = a.w + e * a.mat_bytes;
    const u16* wd = (const u16*)(a.sc + e * a.sc_mat_bytes);
    size_t row_bytes = (size_t)(a.cols >> 2);
    auto stage = [&](int ib, int buf) {
        u8* sb = base + buf * STAGE;
        wh_stage_items<NG, NT>(sb, xh, xoff, 256 * ib);
#pragma unroll
        for (int u = 0; u < 2; u++) {
            int idx = threadIdx.x + NT * u, row = idx >> 2, ch = idx & 3;
            int wr = min(r0 + row, a.rows - 1);
            cp_async16(sb + BT + row * IQH_LDW + 16 * ch, wbase + wr * row_bytes + 64 * ib + 16 * ch, 16);
        }
    };
    float acc[NG / 2];
#pragma unroll
    for (int i = 0; i < NG / 2; i++) acc[i] = 0.0f;
    wg_fence_fregs<NG / 2>(acc);
    int arow = 64 * wm + 16 * (warp & 3) + g;
    u32 fr[2 * QS][4];
    // The lane's two rows' block scales, loaded a block ahead into registers.
    const u16* wd0 = wd + (size_t)min(r0 + arow, a.rows - 1) * nblk;
    const u16* wd1 = wd + (size_t)min(r0 + arow + 8, a.rows - 1) * nblk;
    u32 dn0 = wd0[0], dn1 = wd1[0];
    wh_pipe_start<NS>(nblk, stage);
#pragma unroll 1
    for (int ib = 0; ib < nblk; ib++) {
        int buf = wh_pipe_next<NS>(ib, nblk, stage);
        const u8* sb = base + buf * STAGE;
        u32 d0 = dn0 | (dn0 << 16), d1 = dn1 | (dn1 << 16);
#if DS4_IQ2_WDL
        u32 nd0 = h2_mul(d0, 0xE400E400u), nd1 = h2_mul(d1, 0xE400E400u); // −1024·d, exact
#endif
        if (ib + 1 < nblk) {
            dn0 = wd0[ib + 1];
            dn1 = wd1[ib + 1];
        }
        // The block's 8 / QS batches of QS groups (2·QS k16 steps).
#pragma unroll
        for (int kh = 0; kh < 8 / QS; kh++) {
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                const u8* wq = sb + BT + (arow + 8 * hr) * IQH_LDW + 8 * QS * kh;
                u32 d2 = hr ? d1 : d0;
#pragma unroll
                for (int q = 0; q < QS; q++) {
                    uint2 gw = *(const uint2*)(wq + 8 * q);
                    u32 idx = (gw.x >> (8 * tq)) & 255, s7 = (gw.y >> (7 * tq)) & 127;
#if DS4_IQ2_WDL
                    // DS4_IQ2_WDL: the scale d·(2ls + 1) rounded once (1024 + 2ls + 1 in f16
                    // by a mask: bit 27 of the word is 2ls's low bit's neighbour, or'd to 1),
                    // then each weight b · that scale — two roundings where the default has
                    // one, for one f16 step a pair fewer.
                    u32 t = ((gw.y >> 27) | 1u | 0x6400u) * 0x10001u;
                    u32 hd = hr ? d1 : d0, hnd = hr ? nd1 : nd0;
                    u32 s12 = h2_fma(t, hd, hnd);               // (2ls + 1)·d, one rounding
                    u32 m1024 = h2_mul(s12, 0xE400E400u);       // −1024·that, exact
#else
                    u32 s1 = u2h_rn(2 * (gw.y >> 28) + 1);
                    u32 s12 = s1 | (s1 << 16);
                    u32 m1024 = h2_mul(s12, 0xE400E400u); // −1024·(2ls + 1), exact
#endif
                    u64 gr = grid_s[idx * WGR + (lane & (WGR - 1))];
#if DS4_IQ2_WSA && DS4_IQ2_WSB
                    // The eight signs (the eighth the parity of the seven) with each bit
                    // also 15 places up (one multiply, no carries: s8 < 2^8): pair j's two
                    // sign bits 2j, 2j + 1 are then bits 15 and 31 of z << (15 − 2j), put on
                    // the pair by one xor-and (v29: the ALU-bound kernel's sign work was
                    // about four instructions a pair).
                    u32 z = (s7 | ((__popc(s7) & 1u) << 7)) * 0x8001u;
                    uint4 sg = make_uint4(z << 15, z << 13, z << 11, z << 9);
                    const u32 SGM = 0x80008000u;
#elif DS4_IQ2_WSA
                    // The eight signs (the eighth the parity of the seven) as f16 sign
                    // masks of the four pairs by shifts: the table's 16-byte loads are a
                    // quarter of this kernel's shared-memory traffic, the pipe that bounds
                    // it (v28i: 90% busy, the integer ALU 40%).
                    u32 s8 = s7 | ((__popc(s7) & 1u) << 7);
                    uint4 sg = make_uint4(((s8 << 15) & 0x8000u) | ((s8 << 30) & 0x80000000u),
                                          ((s8 << 13) & 0x8000u) | ((s8 << 28) & 0x80000000u),
                                          ((s8 << 11) & 0x8000u) | ((s8 << 26) & 0x80000000u),
                                          ((s8 << 9) & 0x8000u) | ((s8 << 24) & 0x80000000u));
                    const u32 SGM = 0xFFFFFFFFu;
#else
                    uint4 sg = sgn_s[s7];
                    const u32 SGM = 0xFFFFFFFFu;
#endif
                    u32 glo = (u32)gr, ghi = (u32)(gr >> 32);
                    u32 p0 = __byte_perm(glo, 0x64646464u, 0x5140), p1 = __byte_perm(glo, 0x64646464u, 0x5342);
                    u32 p2 = __byte_perm(ghi, 0x64646464u, 0x5140), p3 = __byte_perm(ghi, 0x64646464u, 0x5342);
                    // Steps 2q and 2q + 1 of this half: (a0 | a1) from pairs 0 / 2,
                    // (a2 | a3) from pairs 1 / 3.
#if DS4_IQ2_WDL
                    fr[2 * q][hr] = h2_fma(p0, s12, m1024) ^ (sg.x & SGM);
                    fr[2 * q][2 + hr] = h2_fma(p1, s12, m1024) ^ (sg.y & SGM);
                    fr[2 * q + 1][hr] = h2_fma(p2, s12, m1024) ^ (sg.z & SGM);
                    fr[2 * q + 1][2 + hr] = h2_fma(p3, s12, m1024) ^ (sg.w & SGM);
                    (void)d2;
#else
                    fr[2 * q][hr] = h2_mul(h2_fma(p0, s12, m1024), d2) ^ (sg.x & SGM);
                    fr[2 * q][2 + hr] = h2_mul(h2_fma(p1, s12, m1024), d2) ^ (sg.y & SGM);
                    fr[2 * q + 1][hr] = h2_mul(h2_fma(p2, s12, m1024), d2) ^ (sg.z & SGM);
                    fr[2 * q + 1][2 + hr] = h2_mul(h2_fma(p3, s12, m1024), d2) ^ (sg.w & SGM);
#endif
                }
            }
            // The fragments complete before the products' fence (see mm_q8_0_wh).
            wg_fence_aregs(fr);
            wg_fence();
#pragma unroll
            for (int s8 = 0; s8 < 2 * QS; s8++) {
                int ks = 2 * QS * kh + s8; // the k16 step in the block: panel ks / 4
                u32 sbb = sbase + buf * STAGE + (ks >> 2) * (NG * 128) + 32 * (ks & 3);
                wgmma_f16_64x64_ra(acc, fr[s8], wg_desc_sw128(sbb));
            }
            wg_commit();
            wg_wait0();
            wg_fence_aregs(fr);
        }
    }
    wg_fence_fregs<NG / 2>(acc);
#pragma unroll
    for (int j = 0; j < NG / 8; j++) {
        float c4[4];
#pragma unroll
        for (int q = 0; q < 4; q++) c4[q] = acc[4 * j + q] * 0.125f;
        mma_store(a, c4, r0 + arow, items[8 * j + 2 * tq], items[8 * j + 2 * tq + 1]);
    }
#endif
}
// Groups of 64, two groups decoded a batch: four a batch (32 fragment registers) spilled
// under the device's NVRTC at 128 registers (v28i: ncu's local-memory requests) and ran no
// faster without spills (v28j); groups of 32 (m64n32) were slower than the integer kernel
// (v28g).
extern "C" __global__ void __launch_bounds__(256, 2) mm_iq2_xxs_wh64(MvArgs a, const u16* xh) {
    pdl_begin();
    mm_iq2_xxs_wh_body<64, 2>(a, xh);
}
extern "C" __global__ void __launch_bounds__(512, 1) mm_iq2_xxs_wh256(MvArgs a, const u16* xh) {
    pdl_begin();
    mm_iq2_xxs_wh_body<64, 2, 256, 3>(a, xh);
}
extern "C" __global__ void __launch_bounds__(128) mm_iq2_xxs_st(MvArgs a) { pdl_begin(); mm_iq2_xxs_st_body<32, 0>(a); }
extern "C" __global__ void __launch_bounds__(128) mm_iq2_xxs_st64(MvArgs a) { pdl_begin(); mm_iq2_xxs_st_body<64, 0>(a); }
extern "C" __global__ void __launch_bounds__(128) mm_iq2_xxs_st_t8(MvArgs a) { pdl_begin(); mm_iq2_xxs_st_body<32, 8>(a); }
extern "C" __global__ void __launch_bounds__(128) mm_iq2_xxs_st64_t8(MvArgs a) { pdl_begin(); mm_iq2_xxs_st_body<64, 8>(a); }
// Four replicas (8 KB less shared memory a block: five blocks an SM instead of four).
extern "C" __global__ void __launch_bounds__(128) mm_iq2_xxs_st_t4(MvArgs a) { pdl_begin(); mm_iq2_xxs_st_body<32, 4>(a); }
// The groups of 64 likewise: four blocks an SM where `_st64_t8` has three.
extern "C" __global__ void __launch_bounds__(128) mm_iq2_xxs_st64_t4(MvArgs a) { pdl_begin(); mm_iq2_xxs_st_body<64, 4>(a); }


// Q2_K routed experts for a run in f16 on wgmma (sm_90a), as mm_iq2_xxs_wh64: weight
// d·sc·q − dmin·m dequantized straight into wgmma's register fragments, f32 sums. Not the
// CPU's integers (f16's rounding of d·sc·q, of dmin·m and of the activations; the tests
// bound it). (v29's first form kept the minimum terms apart, a seventeenth product a
// block over the sub-blocks' sums: a fifth more to stage, slower; commit fed5d93.)
// A k16 step's four lanes of a row each take one sub-block: lane tq holds Q2_K half
// h = tq / 2, bytes 16·(tq % 2).. of it (16 bytes, a word u a step), and step 4s + u
// takes shift s of word u — so a lane's four sub-blocks are 8h + 2s + tq % 2 (s = 0..3),
// one scale per four steps, and the two half-words of a word's shifted bytes (0, 2) and
// (1, 3) are its fragment pairs by one mask each (1024 + q in f16). q8_k_to_f16_q2
// writes the activations in that order.
extern "C" __global__ void q8_k_to_f16_q2(const i8* xq, const float* xd, u16* xh, int n) {
    pdl_begin();
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // A thread per 64 outputs: block B's steps 4s .. 4s + 3 (128 contiguous bytes, in
    // 16-byte stores).
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (64 * i >= n) return;
    int B = i >> 2, s = i & 3;
    float d = xd[B];
    u32 out[4][8];  // step 4s + u: word tq the pair (2tq, 2tq + 1), word 4 + tq (2tq + 8, + 9)
#pragma unroll
    for (int tq = 0; tq < 4; tq++) {
        // Lane tq's 16 activations of shift s: Q2_K half tq / 2, bytes 16·(tq % 2)..
        uint4 v = *(const uint4*)(xq + 256 * B + 128 * (tq >> 1) + 32 * s + 16 * (tq & 1));
        // Each word's bytes as (0, 2, 1, 3), so q8_chunk_x16's pairs (0, 1) and (2, 3)
        // are the fragments' (0, 2) and (1, 3); the values as q8_k_to_f16_iq rounds them.
        v = make_uint4(__byte_perm(v.x, 0, 0x3120), __byte_perm(v.y, 0, 0x3120),
                       __byte_perm(v.z, 0, 0x3120), __byte_perm(v.w, 0, 0x3120));
        u32 o[8];
        q8_chunk_x16(v, d, o);
#pragma unroll
        for (int u = 0; u < 4; u++) {
            out[u][tq] = o[u];
            out[u][4 + tq] = o[4 + u];
        }
    }
    uint4* o = (uint4*)(xh + 256 * (size_t)B + 64 * s);
#pragma unroll
    for (int u = 0; u < 4; u++) {
        o[2 * u] = make_uint4(out[u][0], out[u][1], out[u][2], out[u][3]);
        o[2 * u + 1] = make_uint4(out[u][4], out[u][5], out[u][6], out[u][7]);
    }
#endif
}

// A block: RB rows (RB / 64 warpgroups, 2·RB threads) × one expert group's ≤ 64 items; a
// stage is one 256-column block — the items' f16 tile (four 64-column panels swizzled at
// 128 bytes), the rows' 64 bytes of quants, 16 of scales and 4 of d, dmin (84-byte blocks
// are only 4-byte aligned: cp.async by words) — by cp.async NS − 1 stages ahead.
// mm_q2_k_wf64: 128 rows, two stages, two blocks an SM; mm_q2_k_wf256: 256 rows and three
// stages, one block an SM (the items' tile staged once for four warpgroups, two stages
// in flight; measured no faster, v29e).
template <int NG, int RB = 128, int NS = 2>
__device__ __forceinline__ void mm_q2_k_wf_body(const MvArgs& a, const u16* xh) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int NT = 2 * RB;
    constexpr int PANEL = NG * 128;
    constexpr int STG = RB == 256 ? Q2R_STAGE : Q2F_STAGE;
    constexpr int QS_OFF = 4 * PANEL, SC_OFF = QS_OFF + RB * 64, DD_OFF = SC_OFF + RB * 16;
    static_assert(DD_OFF + RB * 4 <= STG && STG % 1024 == 0, "Q2F_STAGE / Q2R_STAGE");
    __shared__ int items[NG];
    __shared__ long long xoff[NG];
    extern __shared__ __align__(16) u8 dsm_q2[];
    u8* base;
    u32 sbase;
    dsm_at_1024(dsm_q2, base, sbase);
    long long e;
    if (!wh_group<NG>(a, items, xoff, e)) return;
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wm = warp >> 2;
    int r0 = blockIdx.x * RB;
    int nblk = a.cols >> 8;
    const u8* wbase = a.w + e * a.mat_bytes;
    size_t row_bytes = (size_t)nblk * 84;
    auto stage = [&](int ib, int buf) {
        u8* sb = base + buf * STG;
        wh_stage_items<NG, NT>(sb, xh, xoff, 256 * ib);
        // The rows' words: one pointer stepped by NT / 16 or NT / 4 rows (a pointer a copy
        // cost spills); rows past the matrix are zeros (their outputs are not stored).
        {
            int row = threadIdx.x >> 4, w = threadIdx.x & 15;
            const u8* p = wbase + (size_t)(r0 + row) * row_bytes + 84 * ib + 16 + 4 * w;
#pragma unroll
            for (int u = 0; u < 8; u++, row += NT / 16, p += NT / 16 * row_bytes) {
                bool ok = r0 + row < a.rows;
                cp_async4z(sb + QS_OFF + row * 64 + 4 * w, ok ? p : (const u8*)a.w, ok ? 4 : 0);
            }
        }
        {
            int row = threadIdx.x >> 2, w = threadIdx.x & 3;
            const u8* p = wbase + (size_t)(r0 + row) * row_bytes + 84 * ib + 4 * w;
#pragma unroll
            for (int u = 0; u < 2; u++, row += NT / 4, p += NT / 4 * row_bytes) {
                bool ok = r0 + row < a.rows;
                cp_async4z(sb + SC_OFF + row * 16 + 4 * w, ok ? p : (const u8*)a.w, ok ? 4 : 0);
            }
        }
        if (threadIdx.x < RB) {
            int row = threadIdx.x;
            bool ok = r0 + row < a.rows;
            const u8* p = wbase + (size_t)(r0 + row) * row_bytes + 84 * ib + 80;
            cp_async4z(sb + DD_OFF + 4 * row, ok ? p : (const u8*)a.w, ok ? 4 : 0);
        }
    };
    float acc[NG / 2];
#pragma unroll
    for (int i = 0; i < NG / 2; i++) acc[i] = 0.0f;
    wg_fence_fregs<NG / 2>(acc);
    int arow = 64 * wm + 16 * (warp & 3) + g;
    // The lane's scale bytes b, b + 2 of each half-word pair: sub-blocks 8h + 2s + b.
    u32 ssel = 0x4240u + 0x0101u * (u32)(tq & 1);
    u32 fr[4][4];
    wh_pipe_start<NS>(nblk, stage);
#pragma unroll 1
    for (int ib = 0; ib < nblk; ib++) {
        int buf = wh_pipe_next<NS>(ib, nblk, stage);
        const u8* sb = base + buf * STG;
        u32 sbs = sbase + buf * STG;
        // Rows arow (hr 0) and arow + 8 (hr 1): their words and the lane's four sub-blocks'
        // d·sc and dmin·m as pairs (s = 0, 1 / 2, 3).
        uint4 qw[2];
        u32 dsc[2][2], mfr[2][2];
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            int row = arow + 8 * hr;
            qw[hr] = *(const uint4*)(sb + QS_OFF + row * 64 + 16 * tq);
            uint2 sc = *(const uint2*)(sb + SC_OFF + row * 16 + 8 * (tq >> 1));
            u32 dd = *(const u32*)(sb + DD_OFF + 4 * row);
            u32 d2 = __byte_perm(dd, 0, 0x1010), m2 = __byte_perm(dd, 0, 0x3232);
            u32 nd1024 = h2_mul(d2, 0xE400E400u);       // −1024·d, exact
            u32 nm1024 = h2_mul(m2, 0xE400E400u);       // −1024·dmin, exact
            u32 lo[2] = {sc.x & 0x0F0F0F0Fu, sc.y & 0x0F0F0F0Fu};
            u32 hi[2] = {(sc.x >> 4) & 0x0F0F0F0Fu, (sc.y >> 4) & 0x0F0F0F0Fu};
#pragma unroll
            for (int p = 0; p < 2; p++) {
                // (1024 + v) in f16 times the block scale less 1024 of it: v · scale,
                // rounded once.
                dsc[hr][p] = h2_fma(__byte_perm(lo[p], 0x64646464u, ssel), d2, nd1024);
                mfr[hr][p] = h2_fma(__byte_perm(hi[p], 0x64646464u, ssel), m2, nm1024);
            }
        }
        u32 qv[2][4] = {{qw[0].x, qw[0].y, qw[0].z, qw[0].w}, {qw[1].x, qw[1].y, qw[1].z, qw[1].w}};
#pragma unroll
        for (int s = 0; s < 4; s++) {
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                u32 sc2 = __byte_perm(dsc[hr][s >> 1], 0, (s & 1) ? 0x3232 : 0x1010);
                u32 n1024 = h2_mul(sc2, 0xE400E400u);
                u32 mn2 = __byte_perm(mfr[hr][s >> 1], 0, (s & 1) ? 0x3232 : 0x1010);
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    u32 w = qv[hr][u];
                    u32 lo = ((w >> (2 * s)) & 0x00030003u) | 0x64006400u;
                    u32 hi = ((w >> (2 * s + 8)) & 0x00030003u) | 0x64006400u;
                    // q·(d·sc) rounded once, less dmin·m: two roundings.
                    fr[u][hr] = h2_sub(h2_fma(lo, sc2, n1024), mn2);
                    fr[u][2 + hr] = h2_sub(h2_fma(hi, sc2, n1024), mn2);
                }
            }
            wg_fence_aregs(fr);
            wg_fence();
#pragma unroll
            for (int u = 0; u < 4; u++)
                wgmma_f16_64x64_ra(acc, fr[u], wg_desc_sw128(sbs + s * PANEL + 32 * u));
            wg_commit();
            wg_wait0();
            wg_fence_aregs(fr);
        }
    }
    wg_fence_fregs<NG / 2>(acc);
#pragma unroll
    for (int j = 0; j < NG / 8; j++)
        mma_store(a, &acc[4 * j], r0 + arow, items[8 * j + 2 * tq], items[8 * j + 2 * tq + 1]);
#endif
}
extern "C" __global__ void __launch_bounds__(256, 2) mm_q2_k_wf64(MvArgs a, const u16* xh) {
    pdl_begin();
    mm_q2_k_wf_body<64>(a, xh);
}
extern "C" __global__ void __launch_bounds__(512, 1) mm_q2_k_wf256(MvArgs a, const u16* xh) {
    pdl_begin();
    mm_q2_k_wf_body<64, 256, 3>(a, xh);
}

// Q2_K routed experts for a run of tokens (prefill), on the tensor cores, laid out as
// mm_iq2_xxs_st: a block takes 64 rows of one expert group's matrix and the group's ≤ NG
// items. Per 256-column block each item's 256 Q8_K values and 16 block sums arrive by
// cp.async one block ahead (double-buffered) and the four warps read their B fragments
// and sums from there; the weights are read per lane (__ldg). Rows of 304 bytes put a
// warp's B fragment in distinct banks. Each 16-column sub-block (its own scale and min)
// is one mma.m16n8k16 per n-tile on its 2-bit planes, taken straight from the block's
// bytes and extracted once for all n-tiles (v12's mm_q2_k_st re-read and re-extracted
// them per n-tile); the sub-block sums are combined in integers per block, then scaled as
// in mv_q2_k. The min term Σ_sb min[row][sb] · bsums[item][sb] is two mma.m16n8k16 per
// n-tile — mins (u8, 0..15) times the block sums split into their low bytes (u8) and high
// bytes (s8), lo + 256·hi — instead of 16 × 4 integer multiply-adds. The same integers as
// mm_q2_k_st, so the same outputs bit for bit (v13: 128 → 77 ms a 2,048-token chunk).
#define Q2_LDB 304
__device__ __forceinline__ void mma_u8_16816(int* c, int a0, int a1, int b0) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.s32.u8.u8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%7,%8,%9,%10};"
        : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
        : "r"(a0), "r"(a1), "r"(b0), "r"(0), "r"(0), "r"(0), "r"(0));
}
__device__ __forceinline__ void mma_u8s8_16816(int* c, int a0, int a1, int b0) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%7,%8,%9,%10};"
        : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
        : "r"(a0), "r"(a1), "r"(b0), "r"(0), "r"(0), "r"(0), "r"(0));
}
// HALVES: the groups hold up to 64 items and block y takes half y % 2 of group y / 2 (32
// items), so the groups of 64 that mm_iq2_xxs_wh64 wants leave this kernel its groups of
// 32 (v28: mm_q2_k_sm64 is 4.7 ms a 2,048-token chunk slower than mm_q2_k_sm).
template <int NG, bool HALVES = false> __device__ __forceinline__ void mm_q2_k_sm_body(const MvArgs& a) {
    __shared__ int items[NG];
    __shared__ long long xoff[NG];
    extern __shared__ __align__(16) i8 xs_dyn[];
    i8 (*xs)[NG * Q2_LDB] = reinterpret_cast<i8 (*)[NG * Q2_LDB]>(xs_dyn);
    __shared__ float dxs[2][NG];
    int gi = HALVES ? blockIdx.y >> 1 : blockIdx.y;
    if (gi >= *a.ngrp) return;
    long long e = a.grp[3 * gi];
    int first = a.grp[3 * gi + 1], nt = a.grp[3 * gi + 2];
    if (HALVES) {
        int h = blockIdx.y & 1;
        first += NG * h;
        nt = min(nt - NG * h, NG);
        if (nt <= 0) return;
    }
    for (int sl = threadIdx.x; sl < NG; sl += blockDim.x) {
        int it = sl < nt ? a.perm[first + sl] : -1;
        items[sl] = it;
        xoff[sl] = it >= 0 ? (long long)(it / a.act_div) * a.x_stride : -1;
    }
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int ra = blockIdx.x * 64 + 16 * warp + g, rb = ra + 8;
    int rac = min(ra, a.rows - 1), rbc = min(rb, a.rows - 1);
    int nj = (nt + 7) >> 3;
    int nblk = a.cols >> 8;
    const u8* wa = a.w + e * a.mat_bytes + (size_t)rac * nblk * 84;
    const u8* wb = a.w + e * a.mat_bytes + (size_t)rbc * nblk * 84;
#if DS4_Q2K_ST2
    // DS4_Q2K_ST2 (v25, NG = 32): a thread's ≤ 5 pieces of the group's activations are the
    // same every 256-column block but for a stride (256 bytes of Q8_K values, 32 of block
    // sums), so their sources and destinations are worked out once here — the per-block
    // loop spent ~46 instructions a piece (a division by 18, an 8-byte shared load, the
    // source's choice) in a kernel whose time is its instruction count (this kernel −4% a
    // chunk, prefill +0.6% at 8k). The same for IQ2_XXS's four pieces (v25's DS4_IQ2_ST2)
    // cost 22 registers and was slower (−1.2 to −1.7%).
    constexpr int NS = NG == 32 ? (NG * 18 + 127) / 128 : 1;
    const char* sbase[NS];
    u32 splan[NS];  // destination offset | source stride (bytes) << 16
    if (NG == 32) {
#pragma unroll
        for (int u = 0; u < NS; u++) {
            int idx = threadIdx.x + 128 * u;
            sbase[u] = (const char*)a.xq;
            splan[u] = 0;
            if (idx < NG * 18) {
                int sl = idx / 18, ch = idx % 18;
                long long xo = xoff[sl];
                u32 stride = 0;
                if (xo >= 0) {
                    sbase[u] = ch < 16 ? (const char*)(a.xq + xo + 16 * ch)
                                       : (const char*)(a.xs + (xo >> 4) + 8 * (ch - 16));
                    stride = ch < 16 ? 256u : 32u;
                }
                splan[u] = (u32)(sl * Q2_LDB + 16 * ch) | stride << 16;
            }
        }
    }
#endif
    auto stage = [&](int ib, int buf) {
#if DS4_Q2K_ST2
        if (NG == 32) {
#pragma unroll
            for (int u = 0; u < NS; u++) {
                if (u < NS - 1 || threadIdx.x + 128 * u < NG * 18) {
                    u32 stride = splan[u] >> 16;
                    cp_async16(&xs[buf][splan[u] & 0xffff], sbase[u] + (size_t)stride * ib,
                               stride ? 16 : 0);
                }
            }
        } else
#endif
        for (int idx = threadIdx.x; idx < NG * 18; idx += 128) {
            int sl = idx / 18, ch = idx % 18;
            long long xo = xoff[sl];
            const void* src = a.xq;
            if (xo >= 0)
                src = ch < 16 ? (const void*)(a.xq + xo + 256 * ib + 16 * ch)
                              : (const void*)(a.xs + (xo >> 4) + 16 * ib + 8 * (ch - 16));
            cp_async16(&xs[buf][sl * Q2_LDB + 16 * ch], src, xo >= 0 ? 16 : 0);
        }
        for (int sl = threadIdx.x; sl < NG; sl += blockDim.x) {
            long long xo = xoff[sl];
            dxs[buf][sl] = xo >= 0 ? a.xd[(xo >> 8) + ib] : 0.0f;
        }
    };
    float acc[NG / 8][4];
#pragma unroll
    for (int j = 0; j < NG / 8; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[j][q] = 0.0f;
    stage(0, 0);
    cp_async_commit();
    for (int ib = 0; ib < nblk; ib++) {
        int buf = ib & 1;
        if (ib + 1 < nblk) stage(ib + 1, buf ^ 1);
        cp_async_commit();
        const u8* ba = wa + ib * 84;
        const u8* bb = wb + ib * 84;
        cp_async_wait1();
        __syncthreads();
        // The mins of sub-blocks 4tq..4tq+3 (A fragment of the min products).
        int mina = (int)((__ldg((const u32*)(ba + 4 * tq)) >> 4) & 0x0f0f0f0fu);
        int minb = (int)((__ldg((const u32*)(bb + 4 * tq)) >> 4) & 0x0f0f0f0fu);
        u32 dda = __ldg((const u32*)(ba + 80)), ddb = __ldg((const u32*)(bb + 80));
        float da = h2f((u16)(dda & 0xffff)), dma = h2f((u16)(dda >> 16));
        float db = h2f((u16)(ddb & 0xffff)), dmb = h2f((u16)(ddb >> 16));
        const i8* xsb = xs[buf];
        int ssc[NG / 8][4];
#pragma unroll
        for (int j = 0; j < NG / 8; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) ssc[j][q] = 0;
#if DS4_Q2K_K32
        // DS4_Q2K_K32 (v25: this kernel 77.5 -> 58.8 ms a 2,048-token chunk): each 2-bit weight times its sub-block's 4-bit scale is at most
        // 45, so the scaled weights are int8 (one multiply a word: no byte carries) and two
        // adjacent sub-blocks (32 columns) are one m16n8k32 whose sums add into ssc in the
        // tensor core — Σ scale · Σ q · x in integers as before, the same sums exactly,
        // without the four multiply-adds per mma.
        for (int q4 = 0; q4 < 4; q4++) {
            u32 swa = __ldg((const u32*)(ba + 4 * q4)), swb = __ldg((const u32*)(bb + 4 * q4));
#pragma unroll
            for (int m = 0; m < 2; m++) {
                int k = q4 >> 1, jj = 2 * (q4 & 1) + m;
                int off = 16 + 32 * k + 4 * tq;
                u32 qa0 = __ldg((const u32*)(ba + off)), qa1 = __ldg((const u32*)(ba + off + 16));
                u32 qb0 = __ldg((const u32*)(bb + off)), qb1 = __ldg((const u32*)(bb + off + 16));
                int af[4];
                af[0] = (int)(((qa0 >> (2 * jj)) & 0x03030303u) * ((swa >> (16 * m)) & 0xf));
                af[1] = (int)(((qb0 >> (2 * jj)) & 0x03030303u) * ((swb >> (16 * m)) & 0xf));
                af[2] = (int)(((qa1 >> (2 * jj)) & 0x03030303u) * ((swa >> (16 * m + 8)) & 0xf));
                af[3] = (int)(((qb1 >> (2 * jj)) & 0x03030303u) * ((swb >> (16 * m + 8)) & 0xf));
#pragma unroll
                for (int j = 0; j < NG / 8; j++) {
                    if (j < nj) {
                        const i8* xp = xsb + (8 * j + g) * Q2_LDB + 128 * k + 32 * jj + 4 * tq;
                        mma_s8_16832_acc(ssc[j], af, *(const int*)xp, *(const int*)(xp + 16));
                    }
                }
            }
        }
#else
        // Sub-blocks in fours (one scale word each), the four unrolled: scale bytes
        // indexed by constants (a runtime index into a register array goes to memory).
        for (int q4 = 0; q4 < 4; q4++) {
            u32 swa = __ldg((const u32*)(ba + 4 * q4)), swb = __ldg((const u32*)(bb + 4 * q4));
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int k = q4 >> 1, jj = 2 * (q4 & 1) + (u >> 1), lh = u & 1;
                int off = 16 + 32 * k + 16 * lh + 4 * tq;
                u32 qa = __ldg((const u32*)(ba + off)), qb = __ldg((const u32*)(bb + off));
                int a0 = (int)((qa >> (2 * jj)) & 0x03030303u), a1 = (int)((qb >> (2 * jj)) & 0x03030303u);
                int sA = (int)((swa >> (8 * u)) & 0xf);
                int sB = (int)((swb >> (8 * u)) & 0xf);
#pragma unroll
                for (int j = 0; j < NG / 8; j++) {
                    if (j < nj) {
                        const i8* xrow = xsb + (8 * j + g) * Q2_LDB;
                        int b0 = *(const int*)(xrow + 128 * k + 32 * jj + 16 * lh + 4 * tq);
                        int c[4];
                        mma_s8_16816(c, a0, a1, b0);
                        ssc[j][0] += sA * c[0];
                        ssc[j][1] += sA * c[1];
                        ssc[j][2] += sB * c[2];
                        ssc[j][3] += sB * c[3];
                    }
                }
            }
        }
#endif
#pragma unroll
        for (int j = 0; j < NG / 8; j++) {
            if (j >= nj) break;
            // Block sums of item 8j + g, sub-blocks 4tq..4tq+3 (B fragment), split.
            uint2 bsw = *(const uint2*)(xsb + (8 * j + g) * Q2_LDB + 256 + 8 * tq);
            int blo = (int)__byte_perm(bsw.x, bsw.y, 0x6420);
            int bhi = (int)__byte_perm(bsw.x, bsw.y, 0x7531);
            int clo[4], chi[4];
            mma_u8_16816(clo, mina, minb, blo);
            mma_u8s8_16816(chi, mina, minb, bhi);
            int s0 = 8 * j + 2 * tq, s1 = s0 + 1;
            float dx0 = dxs[buf][s0], dx1 = dxs[buf][s1];
            int smn0 = clo[0] + 256 * chi[0], smn1 = clo[1] + 256 * chi[1];
            int smn2 = clo[2] + 256 * chi[2], smn3 = clo[3] + 256 * chi[3];
            acc[j][0] += dx0 * da * (float)ssc[j][0];
            acc[j][0] -= dx0 * dma * (float)smn0;
            acc[j][1] += dx1 * da * (float)ssc[j][1];
            acc[j][1] -= dx1 * dma * (float)smn1;
            acc[j][2] += dx0 * db * (float)ssc[j][2];
            acc[j][2] -= dx0 * dmb * (float)smn2;
            acc[j][3] += dx1 * db * (float)ssc[j][3];
            acc[j][3] -= dx1 * dmb * (float)smn3;
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < NG / 8; j++)
        mma_store(a, acc[j], ra, items[8 * j + 2 * tq], items[8 * j + 2 * tq + 1]);
}
extern "C" __global__ void __launch_bounds__(128) mm_q2_k_sm(MvArgs a) { pdl_begin(); mm_q2_k_sm_body<32>(a); }
extern "C" __global__ void __launch_bounds__(128) mm_q2_k_sm64(MvArgs a) { pdl_begin(); mm_q2_k_sm_body<64>(a); }
extern "C" __global__ void __launch_bounds__(128) mm_q2_k_sm_h(MvArgs a) { pdl_begin(); mm_q2_k_sm_body<32, true>(a); }

// Routed items grouped by expert for the prefill products: a counting sort of the
// nb items by ids[b], then groups of ≤ gsize items of one expert (see MvArgs; MAXNT
// for the matrix-vector kernels, MM_NG for the tensor-core ones). One
// block; shared memory holds 2 * n_expert ints. Order inside an expert does not
// matter: every item's sums are computed alone, whichever warp shares its loads.
extern "C" __global__ void group_by_expert(const int* ids, int nb, int n_expert, int* perm,
                                           int* grp, int* ngrp, int gsize) { pdl_begin();
    extern __shared__ int sh_i[];
    int* count = sh_i;
    int* cursor = sh_i + n_expert;
    for (int i = threadIdx.x; i < n_expert; i += blockDim.x) count[i] = 0;
    __syncthreads();
    for (int b = threadIdx.x; b < nb; b += blockDim.x) atomicAdd(&count[ids[b]], 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        int off = 0, g = 0;
        for (int x = 0; x < n_expert; x++) {
            int c = count[x];
            cursor[x] = off;
            for (int i = 0; i < c; i += gsize) {
                grp[3 * g] = x;
                grp[3 * g + 1] = off + i;
                grp[3 * g + 2] = min(gsize, c - i);
                g++;
            }
            off += c;
        }
        *ngrp = g;
    }
    __syncthreads();
    for (int b = threadIdx.x; b < nb; b += blockDim.x) perm[atomicAdd(&cursor[ids[b]], 1)] = b;
}

// Row lookup (token embedding): out[t, :] = dequant(W[toks[t], :]), repeated `reps`
// times (the HC streams start as copies of the embedding).
extern "C" __global__ void embed_rows(const u8* w, int ty, int cols, long long row_bytes,
                                      const int* toks, float* out, int reps) { pdl_begin();
    int t = blockIdx.x;
    const u8* row = w + (long long)toks[t] * row_bytes;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v;
        if (ty == 0) v = ((const float*)row)[i];
        else if (ty == 1) v = h2f(((const u16*)row)[i]);
        else if (ty == 30) v = bf2f(((const u16*)row)[i]);
        else {  // Q8_0
            const u8* blk = row + (i / 32) * 34;
            v = h2f(rd16(blk)) * (float)((const i8*)(blk + 2))[i % 32];
        }
        for (int h = 0; h < reps; h++) out[((size_t)t * reps + h) * cols + i] = v;
    }
}

// ---------------------------------------------------------------------------------
// Norms.

// Q8_0 of 32 consecutive values held one per lane (as quant_q8_0): the block's
// scale to d[blk], the int8 values to q[32·blk + lane].
__device__ __forceinline__ void q8_0_lanes(float v, int lane, i8* q, float* d, size_t blk) {
    float amax = warp_max(fabsf(v));
    float dd = amax / 127.0f;
    float id = dd != 0.0f ? 1.0f / dd : 0.0f;
    int qi = __float2int_rn(v * id);
    q[blk * 32 + lane] = (i8)max(-127, min(127, qi));
    if (lane == 0) d[blk] = dd;
}

// y[v, :] = x[v, :] * rsqrt(mean(x²) + eps) * (w ? w : 1), one block per vector. With
// `q`, also the Q8_0 of y (q: int8 [count·n], d: [count·n/32]; n a multiple of 32)
// for the product that reads it next, which then skips quant_q8_0.
__device__ __forceinline__ void rms_norm_row(const float* x, const float* w, float* y, int n,
                                             int x_stride, int y_stride, float eps, i8* q,
                                             float* d, int v) {
    __shared__ double sh[32];
    const float* xv = x + (size_t)v * x_stride;
    float* yv = y + (size_t)v * y_stride;
    double ss = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += (double)xv[i] * (double)xv[i];
    ss = block_sum_d(ss, sh);
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    // A warp's lanes take 32 consecutive values (blockDim is a multiple of 32), so
    // the loop is warp-uniform when n is a multiple of 32.
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v2 = xv[i] * r;
        v2 = w ? v2 * w[i] : v2;
        yv[i] = v2;
        if (q) q8_0_lanes(v2, threadIdx.x & 31, q, d, ((size_t)v * n + i) / 32);
    }
}

extern "C" __global__ void rms_norm(const float* x, const float* w, float* y, int n,
                                    int x_stride, int y_stride, float eps, i8* q, float* d) { pdl_begin();
    rms_norm_row(x, w, y, n, x_stride, y_stride, eps, q, d, blockIdx.x);
}

// rms_norm's factor alone, r[v] = rsqrt(mean(x[v]²) + eps), for a product that applies
// it as it reads x (MvArgs::xsc), without writing and reading back the normed vectors
// (the HC state in prefill: 64 KB a token). A thread's float4 loads are all issued
// before its sum (n a multiple of 4·blockDim, at most 16 a thread): rms_norm's r up to
// the order of the double sum.
extern "C" __global__ void rms_factor(const float* x, int n, int x_stride, float eps, float* r) {
    pdl_begin();
    __shared__ double sh[32];
    const float4* xv = (const float4*)(x + (size_t)blockIdx.x * x_stride);
    int nch = (n >> 2) / blockDim.x;
    float4 e[16];
#pragma unroll
    for (int c = 0; c < 16; c++)
        if (c < nch) e[c] = xv[c * blockDim.x + threadIdx.x];
    double ss = 0.0;
#pragma unroll
    for (int c = 0; c < 16; c++)
        if (c < nch)
            ss += (double)e[c].x * (double)e[c].x + (double)e[c].y * (double)e[c].y +
                  (double)e[c].z * (double)e[c].z + (double)e[c].w * (double)e[c].w;
    ss = block_sum_d(ss, sh);
    if (threadIdx.x == 0) r[blockIdx.x] = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
}

// Per-head weightless RMSNorm then RoPE at pos0 + token (queries). x: [T, heads*hd].
extern "C" __global__ void head_norm_rope(float* x, int heads, int hd, float eps,
                                          const float* freqs, int n_rot, const int* pos0p) { pdl_begin();
    int pos0 = *pos0p;
    __shared__ double sh[32];
    int v = blockIdx.x, t = v / heads;
    float* xv = x + (size_t)v * hd;
    double ss = 0.0;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) ss += (double)xv[i] * (double)xv[i];
    ss = block_sum_d(ss, sh);
    float r = (float)(1.0 / sqrt(ss / (double)hd + (double)eps));
    for (int i = threadIdx.x; i < hd; i += blockDim.x) xv[i] *= r;
    __syncthreads();
    int off = hd - n_rot;
    for (int k = threadIdx.x; k < n_rot / 2; k += blockDim.x)
        rope_pair(&xv[off + 2 * k], &xv[off + 2 * k + 1], pos0 + t, freqs[k], 0);
}

// head_norm_rope with one warp per (token, head), 8 a block, for hd a multiple of 128 up
// to 512: lane l holds dimensions 4l + 128j in registers, the sum of squares (double) is
// a warp sum, and the rotated pairs (whole float4s: (hd − n_rot) a multiple of 4) are
// the lane's own. No barriers; r as the block version's up to the order of its double
// sum of float squares. rows = T·heads.
// One warp's head_norm_rope_w of the vector xv (hd a multiple of 128, ≤ 512): lane l's
// dimensions 4l + 128j (j < hd / 128) normed and rotated into a[j]. Shared with the run
// attention, which takes the queries this way as it stages them.
// head_norm_rope_lane's arithmetic on lane l's loaded dimensions e[j] = 4l + 128j. With
// `cs` (cos, sin of pair k's angle, as rope_pair rounds them), the rotation takes them
// from there: the same values.
__device__ __forceinline__ void head_norm_rope_vals(const float4 (&e)[4], int hd, float eps,
                                                    const float* freqs, int n_rot, int pos,
                                                    float4 (&a)[4], const float2* cs = nullptr) {
    int lane = threadIdx.x & 31, nj = hd >> 7;
    double ss = 0.0;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        if (j < nj) {
            ss += (double)e[j].x * (double)e[j].x + (double)e[j].y * (double)e[j].y +
                  (double)e[j].z * (double)e[j].z + (double)e[j].w * (double)e[j].w;
        }
    }
    ss = warp_reduce(ss, SumOp());
    float r = (float)(1.0 / sqrt(ss / (double)hd + (double)eps));
    int off = hd - n_rot;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        if (j < nj) {
            float v[4] = {e[j].x * r, e[j].y * r, e[j].z * r, e[j].w * r};
            int d0 = 128 * j + 4 * lane;
            if (d0 >= off) {
                int k0 = (d0 - off) / 2;
                if (cs) {
                    rope_cs(&v[0], &v[1], cs[k0].x, cs[k0].y);
                    rope_cs(&v[2], &v[3], cs[k0 + 1].x, cs[k0 + 1].y);
                } else {
                    rope_pair(&v[0], &v[1], pos, freqs[k0], 0);
                    rope_pair(&v[2], &v[3], pos, freqs[k0 + 1], 0);
                }
            }
            a[j] = make_float4(v[0], v[1], v[2], v[3]);
        }
    }
}
__device__ __forceinline__ void head_norm_rope_lane(const float* xv, int hd, float eps,
                                                    const float* freqs, int n_rot, int pos,
                                                    float4 (&a)[4]) {
    int lane = threadIdx.x & 31, nj = hd >> 7;
    float4 e[4];
#pragma unroll
    for (int j = 0; j < 4; j++)
        if (j < nj) e[j] = *(const float4*)(xv + 128 * j + 4 * lane);
    head_norm_rope_vals(e, hd, eps, freqs, n_rot, pos, a);
}

extern "C" __global__ void head_norm_rope_w(float* x, int heads, int hd, float eps,
                                            const float* freqs, int n_rot, const int* pos0p,
                                            int rows) { pdl_begin();
    int pos0 = *pos0p;
    int lane = threadIdx.x & 31;
    int v = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (v >= rows) return;
    int t = v / heads, nj = hd >> 7;
    float* xv = x + (size_t)v * hd;
    float4 a[4];
    head_norm_rope_lane(xv, hd, eps, freqs, n_rot, pos0 + t, a);
#pragma unroll
    for (int j = 0; j < 4; j++)
        if (j < nj) *(float4*)(xv + 128 * j + 4 * lane) = a[j];
}

// ---------------------------------------------------------------------------------
// mHC (spec §3.3, §3.4, §3.11).

// The HC mixing logits of a short run (decode): z[t, row] = W[row, :] · (x_t · r_t) with
// r_t the weightless RMSNorm factor of the token's whole HC state (n = hc·n_embd values),
// in place of an rms_norm launch and a product launch. One block of 1024 threads per
// (row, token), each recomputing the token's sum of squares (the same partial sums and
// reduction as rms_norm with 1024 threads, so the same r); the normalized values x·r
// are formed as rms_norm forms them, then multiplied in another order than mv_*.
template <typename T, typename Load>
__device__ void hc_fn_rms_body(const T* w, const float* x, float* z, int n, int mix,
                               float eps, Load load) {
    __shared__ double sh[32];
    __shared__ float shf[32];
    int row = blockIdx.x, t = blockIdx.y;
    const float* xv = x + (size_t)t * n;
    double ss = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += (double)xv[i] * (double)xv[i];
    ss = block_sum_d(ss, sh);
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    const T* wr = w + (size_t)row * n;
    float acc = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += load(wr[i]) * (xv[i] * r);
    acc = block_sum(acc, shf);
    if (threadIdx.x == 0) z[(size_t)t * mix + row] = acc;
}
extern "C" __global__ void hc_fn_rms_f32(const float* w, const float* x, float* z, int n, int mix,
                                         float eps) { pdl_begin();
    hc_fn_rms_body<float>(w, x, z, n, mix, eps, LoadF32());
}
extern "C" __global__ void hc_fn_rms_f16(const u16* w, const float* x, float* z, int n, int mix,
                                         float eps) { pdl_begin();
    hc_fn_rms_body<u16>(w, x, z, n, mix, eps, LoadF16());
}

// HC pre-mix and the sublayer's RMSNorm, one block per token (of at least 64 threads). z: [T, mix] control
// vectors; x: [T, hc*n]; xn: [T, n] the sublayer input; mixo: [T, hc + hc*hc] = post
// then comb, kept for hc_post. The pre weights are hc sigmoids; warp 0 also runs the
// Sinkhorn normalisation of the hc × hc mixing, one lane per entry, each lane summing
// its row or column in the CPU's order. y = Σ pre[h]·X[h] stays in shared memory (n
// floats), then its norm with weight `nw` goes to xn and, with `q`, its Q8_0 (as
// rms_norm). blockDim as the host picks it for rms_norm, so the sums of squares and
// every value are those of the CPU's hc_pre followed by its RMSNorm, up to the order
// of the parallel sum.
// The post weights and the Sinkhorn-normalised comb of one token's mixing logits `zt`,
// by one warp (one lane per comb entry, each summing its row or column in the CPU's
// order), into mo = [post (hc), comb (hc·hc)].
__device__ __forceinline__ void hc_mix_warp(const float* zt, const float* scale,
                                            const float* base, float* mo, int hc, int iters,
                                            float hc_eps) {
    int lane = threadIdx.x & 31, nn = hc * hc;
    if (lane < hc) mo[lane] = 2.0f * sigmoidf_(zt[hc + lane] * scale[1] + base[hc + lane]);
    int a_ = lane < nn ? lane / hc : 0, b_ = lane < nn ? lane % hc : 0;
    float v = lane < nn ? zt[2 * hc + lane] * scale[2] + base[2 * hc + lane] : 0.0f;
    float m = -INFINITY;
    for (int b = 0; b < hc; b++) m = fmaxf(m, __shfl_sync(0xffffffffu, v, a_ * hc + b));
    v = expf(v - m);
    float s = 0.0f;
    for (int b = 0; b < hc; b++) s += __shfl_sync(0xffffffffu, v, a_ * hc + b);
    v = v / s + hc_eps;
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            s = 0.0f;
            for (int b = 0; b < hc; b++) s += __shfl_sync(0xffffffffu, v, a_ * hc + b);
            v = v / (s + hc_eps);
        }
        s = 0.0f;
        for (int a2 = 0; a2 < hc; a2++) s += __shfl_sync(0xffffffffu, v, a2 * hc + b_);
        v = v / (s + hc_eps);
    }
    if (lane < nn) mo[hc + lane] = v;
}

__device__ void hc_pre_norm_body(int t, const float* z, const float* x, const float* scale,
                                 const float* base, const float* nw, float* xn, float* mixo,
                                 int hc, int n, int mix, int iters, float hc_eps, float eps,
                                 i8* q, float* d) {
    extern __shared__ float ys[];  // n
    __shared__ float pre[16];
    __shared__ double sh[32];
    const float* zt = z + (size_t)t * mix;
    if (threadIdx.x < hc) pre[threadIdx.x] = sigmoidf_(zt[threadIdx.x] * scale[0] + base[threadIdx.x]) + hc_eps;
    __syncthreads();
    // Warp 0 runs the (serial) Sinkhorn iterations while the other warps form y.
    double ss = 0.0;
    const float* xt = x + (size_t)t * hc * n;
    if (threadIdx.x >= 32) {
        for (int i = threadIdx.x - 32; i < n; i += blockDim.x - 32) {
            float acc = 0.0f;
            for (int h = 0; h < hc; h++) acc += pre[h] * xt[h * n + i];
            ys[i] = acc;
            ss += (double)acc * (double)acc;
        }
    } else {
        hc_mix_warp(zt, scale, base, mixo + (size_t)t * (hc + hc * hc), hc, iters, hc_eps);
    }
    ss = block_sum_d(ss, sh);
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    float* xv = xn + (size_t)t * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = ys[i] * r * nw[i];
        xv[i] = v;
        if (q) q8_0_lanes(v, threadIdx.x & 31, q, d, ((size_t)t * n + i) / 32);
    }
}
// hc_pre_norm for runs, the Sinkhorn step left to hc_mix (a launch of its own, one warp a
// token: in hc_pre_norm it held each token's whole block for its serial iterations).
// A thread takes float4 column chunks c·blockDim + tid (up to nch = ⌈n / (4·blockDim)⌉ ≤ 8
// of them; n a multiple of 32) of all hc rows, so its loads are all in flight at once and y stays in registers;
// the Q8_0 blocks of 32 are eight lanes' chunks (as quant_q8_0). The values are
// hc_pre_norm's (the same products and order per column), r up to the order of the
// double sum of squares.
extern "C" __global__ void hc_pre_norm4(const float* z, const float* x, const float* scale,
                                        const float* base, const float* nw, float* xn, int hc,
                                        int n, int mix, float hc_eps, float eps, i8* q, float* d) {
    pdl_begin();
    const int HC4_MAX = 4;  // hc ≤ 4 (checked on the host)
    __shared__ float pre[HC4_MAX];
    __shared__ double sh[32];
    int t = blockIdx.x, n4 = n >> 2, nch = (n4 + blockDim.x - 1) / blockDim.x;
    const float* zt = z + (size_t)t * mix;
    if (threadIdx.x < hc) pre[threadIdx.x] = sigmoidf_(zt[threadIdx.x] * scale[0] + base[threadIdx.x]) + hc_eps;
    __syncthreads();
    const float4* xt = (const float4*)(x + (size_t)t * hc * n);
    float4 y[8];
    double ss = 0.0;
#pragma unroll
    for (int c = 0; c < 8; c++) {
        if (c >= nch) break;
        int i4 = c * blockDim.x + threadIdx.x;
        float4 xs[HC4_MAX];
#pragma unroll
        for (int h = 0; h < HC4_MAX; h++)
            xs[h] = h < hc && i4 < n4 ? xt[h * n4 + i4] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#pragma unroll
        for (int h = 0; h < HC4_MAX; h++) {
            if (h < hc) {
                a0 += pre[h] * xs[h].x;
                a1 += pre[h] * xs[h].y;
                a2 += pre[h] * xs[h].z;
                a3 += pre[h] * xs[h].w;
            }
        }
        y[c] = make_float4(a0, a1, a2, a3);
        ss += (double)a0 * (double)a0;
        ss += (double)a1 * (double)a1;
        ss += (double)a2 * (double)a2;
        ss += (double)a3 * (double)a3;
    }
    ss = block_sum_d(ss, sh);
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    float4* xv = (float4*)(xn + (size_t)t * n);
    const float4* w4 = (const float4*)nw;
#pragma unroll
    for (int c = 0; c < 8; c++) {
        if (c >= nch) break;
        // Lanes past n (a row narrower than the block) take part in the shuffles only:
        // n a multiple of 32, so a Q8_0 block's eight lanes are all in or all out.
        int i4 = c * blockDim.x + threadIdx.x;
        bool in = i4 < n4;
        float4 w = in ? w4[i4] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        float v[4] = {y[c].x * r * w.x, y[c].y * r * w.y, y[c].z * r * w.z, y[c].w * r * w.w};
        if (in) xv[i4] = make_float4(v[0], v[1], v[2], v[3]);
        if (q) {
            float dd;
            u32 packed = q8_0_lanes4(v, &dd);
            size_t e0 = (size_t)t * n + 4 * (size_t)i4;
            if (in) {
                *(u32*)(q + e0) = packed;
                if ((threadIdx.x & 7) == 0) d[e0 / 32] = dd;
            }
        }
    }
}

extern "C" __global__ void hc_pre_norm(const float* z, const float* x, const float* scale,
                                       const float* base, const float* nw, float* xn,
                                       float* mixo, int hc, int n, int mix, int iters,
                                       float hc_eps, float eps, i8* q, float* d) { pdl_begin();
    hc_pre_norm_body(blockIdx.x, z, x, scale, base, nw, xn, mixo, hc, n, mix, iters, hc_eps, eps,
                     q, d);
}

// Decode's whole HC pre-step in one launch (hc_fn_rms then hc_pre_norm were two, each one
// or a few blocks whose strided loads wait on memory one after another). Grid (he / HC_BT,
// T), HC_BT threads: block c writes its HC_BT columns' share of the `mix` products W·x and
// of the sum of squares into part[t][c]; the token's last block to finish (count[t],
// reset for the next step and graph replay) adds the shares in column order, scales the
// products by the norm's factor into z and runs hc_pre_norm's step (its values; the sums
// in another order). The product's rounding differs from hc_fn_rms (see hc_pre_late_body).
// The weight rows are read before the dependency wait: they do not depend on the step.
#define HC_MAX_MIX 24  // hc = 4: 2·4 + 4·4 (the host checks these bounds)
#define HC_MAX 4
// Threads of a block (HC_BT, from the host, which sizes the launch: 512, 1,024 or 256)
// and so the last block's columns a thread (n ≤ 4096) and its warps; blocks a token
// (hc·n / HC_BT) at most HC_MAX_BLK (the host's bound too).
#define HC_COLS (4096 / HC_BT)
#define HC_MAX_BLK 64
#define HC_NW (HC_BT / 32)
// The last block's part of the fused HC pre-steps: with the token's mixing logits in
// `zs` (shared, written by threads < mix before the call), hc_pre_norm's step — the
// pre-mix y = Σ pre[h]·X[h], its RMSNorm with `nw` into xn (and its Q8_0 with `q`), and
// warp 0's post weights and Sinkhorn into mixo — with this thread's columns (i =
// threadIdx.x + HC_BT·k), their hc inputs and norm weights loaded at once. blockDim HC_BT.
// X is read past L1: other blocks of the same launch may have just written it.
__device__ __forceinline__ void hc_pre_last_load(const float* xv, const float* nw, int hc, int n,
                                                 float (&xr)[HC_COLS][HC_MAX], float (&wn)[HC_COLS]) {
#pragma unroll
    for (int k = 0; k < HC_COLS; k++) {
        int i = threadIdx.x + HC_BT * k;
#pragma unroll
        for (int h = 0; h < HC_MAX; h++)
            xr[k][h] = i < n && h < hc ? __ldcg(&xv[(size_t)h * n + i]) : 0.0f;
        wn[k] = i < n ? nw[i] : 0.0f;
    }
}
__device__ __forceinline__ void hc_pre_last(int t, const float* zs, const float (&xr)[HC_COLS][HC_MAX],
                                            const float (&wn)[HC_COLS], const float* scale,
                                            const float* base, float* xn, float* mixo, int hc,
                                            int n, int mix, int iters, float hc_eps, float eps,
                                            i8* q, float* d, int mix_out) {
    __shared__ double shd[32];
    __shared__ float pre[HC_MAX];
    __syncthreads();
    if (threadIdx.x < hc) pre[threadIdx.x] = sigmoidf_(zs[threadIdx.x] * scale[0] + base[threadIdx.x]) + hc_eps;
    __syncthreads();
    double ss2 = 0.0;
    float y[HC_COLS];
#pragma unroll
    for (int k = 0; k < HC_COLS; k++) {
        float acc = 0.0f;
#pragma unroll
        for (int h = 0; h < HC_MAX; h++)
            if (h < hc) acc += pre[h] * xr[k][h];
        y[k] = acc;
        if (threadIdx.x + HC_BT * k < n) ss2 += (double)acc * (double)acc;
    }
    // Warp 0 then runs the Sinkhorn normalisation (only hc_post reads its result), unless
    // a separate hc_mix launch does (mix_out = 0: a graph branch, off the critical path).
    if (mix_out && threadIdx.x < 32)
        hc_mix_warp(zs, scale, base, mixo + (size_t)t * (hc + hc * hc), hc, iters, hc_eps);
    ss2 = block_sum_d(ss2, shd);
    float r2 = (float)(1.0 / sqrt(ss2 / (double)n + (double)eps));
    float* xo = xn + (size_t)t * n;
#pragma unroll
    for (int k = 0; k < HC_COLS; k++) {
        int i = threadIdx.x + HC_BT * k;
        if (i < n) {  // warp-uniform: n is a multiple of 32
            float v = y[k] * r2 * wn[k];
            xo[i] = v;
            if (q) q8_0_lanes(v, threadIdx.x & 31, q, d, ((size_t)t * n + i) / 32);
        }
    }
}

// One level of a warp's halving exchange over p[0 .. 2D): the lane keeps the half its
// bit D selects, sends the other to lane ^ D and adds what comes back, in p[0 .. D).
template <int D> __device__ __forceinline__ void halve_exchange(float* p, int lane) {
    bool up = lane & D;
#pragma unroll
    for (int i = 0; i < D; i++) {
        float lo = p[i], hi = p[i + D];
        float send = up ? lo : hi, keep = up ? hi : lo;
        p[i] = keep + __shfl_xor_sync(0xffffffffu, send, D);
    }
}
// The same level over doubles.
template <int D> __device__ __forceinline__ void halve_exchange_d(double* p, int lane) {
    bool up = lane & D;
#pragma unroll
    for (int i = 0; i < D; i++) {
        double lo = p[i], hi = p[i + D];
        double send = up ? lo : hi, keep = up ? hi : lo;
        p[i] = keep + __shfl_xor_sync(0xffffffffu, send, D);
    }
}
// The warp's 16 sums of p[0..16) in double (levels 8 .. 1, then the two half-warps
// added): lane l ends with the warp's sum of p[l & 15] in p[0].
__device__ __forceinline__ void warp_halve_sums_d16(double (&p)[16], int lane) {
    halve_exchange_d<8>(p, lane);
    halve_exchange_d<4>(p, lane);
    halve_exchange_d<2>(p, lane);
    halve_exchange_d<1>(p, lane);
    p[0] += __shfl_xor_sync(0xffffffffu, p[0], 16);
}
// The warp's 32 sums of p[0..32) by halving exchanges at distance 16, 8, .., 1: lane l
// ends with the warp's sum of p[l] in p[0].
__device__ __forceinline__ void warp_halve_sums(float (&p)[32], int lane) {
    halve_exchange<16>(p, lane);
    halve_exchange<8>(p, lane);
    halve_exchange<4>(p, lane);
    halve_exchange<2>(p, lane);
    halve_exchange<1>(p, lane);
}

// The product first and the norm's factor after, z = r·(W·x) rather than W·(x·r) (v13's
// hc_pre_fused, measured slower in v14): a block reads only its own 1,024 columns and
// sums only their squares (no block-wide sum of all 16,384 before the product); the last
// block adds the shares of both in block order, and loads the hc inputs for the pre-mix
// in the same round trip as the shares. The same values up to float rounding (r is
// applied to the sum rather than to each input).
template <typename T, typename Load>
__device__ void hc_pre_late_body(const T* w, const float* x, float* part, int* count,
                                 float* z, const float* scale, const float* base,
                                 const float* nw, float* xn, float* mixo, int hc, int n,
                                 int mix, int iters, float hc_eps, float eps, i8* q, float* d,
                                 int mix_out, Load load) {
    __shared__ double shd[32];
    __shared__ double pss_s[HC_MAX_BLK];
    __shared__ float shm[32][HC_MAX_MIX];  // [warp][row]
    __shared__ float ps[HC_MAX_BLK][HC_MAX_MIX];
    __shared__ float sc_s[3], base_s[HC_MAX_MIX];
    __shared__ int last;
    int he = hc * n, t = blockIdx.y, nblk = gridDim.x;
    int c = blockIdx.x * HC_BT + threadIdx.x;
    // The blocks' sums of squares after the shares, 8-byte aligned.
    double* pss = (double*)(part + ((size_t)gridDim.y * nblk * mix + 1) / 2 * 2);
    pdl_signal_early();
    // Model weights, not step data: all loaded before the wait (the last block's pre-step
    // reads scale and base from shared memory rather than one more round trip each).
    float wv[HC_MAX_MIX];
#pragma unroll
    for (int m = 0; m < HC_MAX_MIX; m++) wv[m] = m < mix ? load(w[(size_t)m * he + c]) : 0.0f;
    if (threadIdx.x < 3) sc_s[threadIdx.x] = scale[threadIdx.x];
    if (threadIdx.x < mix) base_s[threadIdx.x] = base[threadIdx.x];
    pdl_wait();
    const float* xv = x + (size_t)t * he;
    int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
    float v = xv[c];
    double sq = warp_reduce((double)v * (double)v, SumOp());
    if (lane == 0) shd[wp] = sq;
    // The warp's 24 sums by halving exchanges: at distance 16, 8, .., 1 a lane sends the
    // half of its values its partner keeps and adds the other half, so lane l ends with
    // the warp's sum of product l — 31 shuffles rather than 24 warp sums of 5 (the
    // shuffle unit, 1 warp instruction a cycle a SM, was the block's longest step).
    float p[32];
#pragma unroll
    for (int m = 0; m < 32; m++) p[m] = m < mix ? wv[m < HC_MAX_MIX ? m : 0] * v : 0.0f;
    warp_halve_sums(p, lane);
    if (lane < mix) shm[wp][lane] = p[0];
    // Every block loads the pre-mix inputs the last block needs (DS4_HC_XEARLY), so the
    // one that turns out last has them in registers when its atomic returns rather than
    // starting one more round trip after it; the others drop them.
    float xr[HC_COLS][HC_MAX], wn[HC_COLS];
#if DS4_HC_XEARLY
    hc_pre_last_load(xv, nw, hc, n, xr, wn);
#endif
    __syncthreads();
    // The block's sums: warp w adds products w, w + HC_NW, .. over the block's warps;
    // warp 24 mod HC_NW the squares.
#pragma unroll
    for (int m = wp; m < HC_MAX_MIX; m += HC_NW)
        if (m < mix) {
            float a = warp_sum(lane < HC_NW ? shm[lane][m] : 0.0f);
            if (lane == 0) part[((size_t)t * nblk + blockIdx.x) * mix + m] = a;
        }
    if (wp == HC_MAX_MIX % HC_NW) {
        double a = warp_reduce(lane < HC_NW ? shd[lane] : 0.0, SumOp());
        if (lane == 0) pss[(size_t)t * nblk + blockIdx.x] = a;
    }
    // One thread's fence orders the block's shares (the barrier put them before it) ahead
    // of its arrival, and the last block's own fence orders its loads after it: the
    // pattern of a grid barrier. (v21: the same step time as a fence by every thread.)
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        int l = atomicAdd(&count[t], 1) == nblk - 1;
        if (l) __threadfence();
        last = l;
    }
    __syncthreads();
    if (!last) return;
#if !DS4_HC_XEARLY
    hc_pre_last_load(xv, nw, hc, n, xr, wn);
#endif
    // Every block's shares in one round of loads, then added in block order.
    __shared__ float zs[HC_MAX_MIX];
    for (int i = threadIdx.x; i < nblk * mix; i += HC_BT)
        ps[i / mix][i % mix] = __ldcg(&part[(size_t)t * nblk * mix + i]);
    if (threadIdx.x < nblk) pss_s[threadIdx.x] = __ldcg(&pss[(size_t)t * nblk + threadIdx.x]);
    __syncthreads();
    if (threadIdx.x < mix) {
        float a = 0.0f;
        for (int k = 0; k < nblk; k++) a += ps[k][threadIdx.x];
        double ss = 0.0;
        for (int k = 0; k < nblk; k++) ss += pss_s[k];
        a *= (float)(1.0 / sqrt(ss / (double)he + (double)eps));
        zs[threadIdx.x] = a;
        z[(size_t)t * mix + threadIdx.x] = a;
    }
    if (threadIdx.x == 0) count[t] = 0;
    hc_pre_last(t, zs, xr, wn, sc_s, base_s, xn, mixo, hc, n, mix, iters, hc_eps, eps, q, d,
                mix_out);
}
extern "C" __global__ void __launch_bounds__(HC_BT, 1) hc_pre_late_f16(
    const u16* w, const float* x, float* part, int* count, float* z, const float* scale,
    const float* base, const float* nw, float* xn, float* mixo, int hc, int n, int mix, int iters,
    float hc_eps, float eps, i8* q, float* d, int mix_out) {
    hc_pre_late_body<u16>(w, x, part, count, z, scale, base, nw, xn, mixo, hc, n, mix, iters,
                          hc_eps, eps, q, d, mix_out, LoadF16());
}
extern "C" __global__ void __launch_bounds__(HC_BT, 1) hc_pre_late_f32(
    const float* w, const float* x, float* part, int* count, float* z, const float* scale,
    const float* base, const float* nw, float* xn, float* mixo, int hc, int n, int mix, int iters,
    float hc_eps, float eps, i8* q, float* d, int mix_out) {
    hc_pre_late_body<float>(w, x, part, count, z, scale, base, nw, xn, mixo, hc, n, mix, iters,
                            hc_eps, eps, q, d, mix_out, LoadF32());
}

// hc_pre_late's Sinkhorn step on its own (mix_out = 0 there): the post weights and
// comb of token blockIdx.x from its mixing logits z, by one warp — the same values.
// Queued on a graph branch beside the sublayer, so its ~2 µs of serial shuffles and
// divisions leave the chain between the HC pre-step and the next product.
extern "C" __global__ void hc_mix(const float* z, const float* scale, const float* base,
                                  float* mixo, int hc, int mix, int iters, float hc_eps) {
    pdl_begin();
    int t = blockIdx.x;
    hc_mix_warp(z + (size_t)t * mix, scale, base, mixo + (size_t)t * (hc + hc * hc), hc, iters,
                hc_eps);
}

// X'[b] = post[b]·F + Σ_a comb[a][b]·X[a]. One block per token.
// Grid (ceil(n / blockDim), T). One thread per column j reads the hc inputs of column j
// before writing its hc outputs, so `out` may be `x` (the update is in place).
// With `routed` (the MoE sublayer), F is f + Σ_r routed[t·k + r] (the shared expert's
// output plus the routed ones, in routing order, as the CPU adds them).
extern "C" __global__ void hc_post(const float* f, const float* routed, int k, const float* x,
                                   const float* mixi, float* out, int hc, int n) { pdl_begin();
    int t = blockIdx.y;
    const float* mo = mixi + (size_t)t * (hc + hc * hc);
    const float* xt = x + (size_t)t * hc * n;
    const float* ft = f + (size_t)t * n;
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float xs[8];  // hc ≤ 5 (checked on the host)
#pragma unroll
    for (int a = 0; a < 8; a++) xs[a] = a < hc ? xt[a * n + j] : 0.0f;
    float fj = ft[j];
    if (routed)
        for (int r = 0; r < k; r++) fj += routed[((size_t)t * k + r) * n + j];
    for (int b = 0; b < hc; b++) {
        // Rounded as written (the compiler may fuse either product into the first add
        // otherwise, and did so differently in hc_post4): post·F, then a fused step a row.
        float acc = __fmul_rn(mo[b], fj);
#pragma unroll
        for (int a = 0; a < 8; a++)
            if (a < hc) acc = __fmaf_rn(mo[hc + a * hc + b], xs[a], acc);
        out[(size_t)t * hc * n + b * n + j] = acc;
    }
}

// hc_post for runs, four columns a thread (n a multiple of 4): every load of the thread
// (hc rows, F and its k routed parts) issued before any sum, as float4s; the sums those of
// hc_post column by column, in its order. Grid (ceil(n / (4·blockDim)), T). With ssq, the
// block's sum of squares of what it wrote (in double, as rms_factor) at
// ssq[t·gridDim.x + blockIdx.x], for the next HC pre-step's norm (rms_from_ssq) without a
// pass over the state.
extern "C" __global__ void hc_post4(const float* f, const float* routed, int k, const float* x,
                                    const float* mixi, float* out, int hc, int n, double* ssq) {
    pdl_begin();
    const int HC4_MAX = 4, K_MAX = 8;  // hc ≤ 4, k ≤ 8 (checked on the host)
    int t = blockIdx.y, n4 = n >> 2;
    int j4 = blockIdx.x * blockDim.x + threadIdx.x;
    double ss = 0.0;
    // No early return: with ssq every thread joins the block's sum.
    if (j4 < n4) {
    const float* mo = mixi + (size_t)t * (hc + hc * hc);
    const float4* xt = (const float4*)(x + (size_t)t * hc * n);
    float4 xs[HC4_MAX], rv[K_MAX];
#pragma unroll
    for (int a = 0; a < HC4_MAX; a++)
        if (a < hc) xs[a] = xt[a * n4 + j4];
    float4 fv = ((const float4*)(f + (size_t)t * n))[j4];
#pragma unroll
    for (int r = 0; r < K_MAX; r++)
        if (routed && r < k) rv[r] = ((const float4*)(routed + ((size_t)t * k + r) * n))[j4];
    float fj[4] = {fv.x, fv.y, fv.z, fv.w};
#pragma unroll
    for (int r = 0; r < K_MAX; r++) {
        if (routed && r < k) {
            fj[0] += rv[r].x;
            fj[1] += rv[r].y;
            fj[2] += rv[r].z;
            fj[3] += rv[r].w;
        }
    }
    float4* ot = (float4*)(out + (size_t)t * hc * n);
#pragma unroll
    for (int b = 0; b < HC4_MAX; b++) {
        if (b >= hc) break;
        float o[4];
#pragma unroll
        for (int c = 0; c < 4; c++) {
            float acc = __fmul_rn(mo[b], fj[c]);  // hc_post's steps exactly
#pragma unroll
            for (int a = 0; a < HC4_MAX; a++) {
                float xa = c == 0 ? xs[a].x : c == 1 ? xs[a].y : c == 2 ? xs[a].z : xs[a].w;
                if (a < hc) acc = __fmaf_rn(mo[hc + a * hc + b], xa, acc);
            }
            o[c] = acc;
            if (ssq) ss += (double)acc * (double)acc;
        }
        ot[b * n4 + j4] = make_float4(o[0], o[1], o[2], o[3]);
    }
    }
    if (ssq) {
        __shared__ double sh[32];
        ss = block_sum_d(ss, sh);
        if (threadIdx.x == 0) ssq[(size_t)t * gridDim.x + blockIdx.x] = ss;
    }
}

// A run's HC norm factors from hc_post4's partial sums of squares (nparts a token, summed
// in block order): rms_factor's r up to the order of the double sum.
extern "C" __global__ void rms_from_ssq(const double* ssq, int nparts, int n, float eps, float* r,
                                        int T) {
    pdl_begin();
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    double s = 0.0;
    for (int b = 0; b < nparts; b++) s += ssq[(size_t)t * nparts + b];
    r[t] = (float)(1.0 / sqrt(s / (double)n + (double)eps));
}

// Output collapse: y = Σ_h (σ(z_h·scale + base_h) + ε)·X[h].
extern "C" __global__ void hc_head(const float* z, const float* x, const float* scale,
                                   const float* base, float* y, int hc, int n, int mix,
                                   float hc_eps) { pdl_begin();
    int t = blockIdx.x;
    const float* zt = z + (size_t)t * mix;
    const float* xt = x + (size_t)t * hc * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float acc = 0.0f;
        for (int h = 0; h < hc; h++) {
            float g = sigmoidf_(zt[h] * scale[0] + base[h]) + hc_eps;
            acc += g * xt[h * n + i];
        }
        y[(size_t)t * n + i] = acc;
    }
}

// ---------------------------------------------------------------------------------
// Attention rows.

// fp8_sim on `nope` dims of a row held in shared memory (blocks of 64), then f16
// rounding of the whole row. Called by all threads of a block.
__device__ void qat_kv_row(float* row, int d, int nope, float* sh_amax) {
    int nblk = (nope + 63) / 64;
    int lane = threadIdx.x & 31;
    for (int blk = threadIdx.x >> 5; blk < nblk; blk += blockDim.x >> 5) {
        int i0 = blk * 64 + lane, i1 = i0 + 32;
        float m = fmaxf(i0 < nope ? fabsf(row[i0]) : 0.0f, i1 < nope ? fabsf(row[i1]) : 0.0f);
        m = warp_max(m);
        if (lane == 0) sh_amax[blk] = fmaxf(m, 1e-4f);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nope; i += blockDim.x) {
        float s = pow2_scale(sh_amax[i / 64], 448.0f);
        float v = fminf(fmaxf(row[i] / s, -448.0f), 448.0f);
        row[i] = e4m3_round(v) * s;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += blockDim.x) row[i] = f16_round(row[i]);
    __syncthreads();
}

// Hadamard (butterflies of stride 1, 2, 4, …, scaled by 1/√n) then fp4_sim in blocks
// of 32: the indexer QAT, on a vector in shared memory.
__device__ void qat_indexer_vec(float* v, int n, float* sh_amax) {
    for (int h = 1; h < n; h <<= 1) {
        for (int p = threadIdx.x; p < n / 2; p += blockDim.x) {
            int i = (p / h) * 2 * h + (p % h);
            float a = v[i], b = v[i + h];
            v[i] = a + b;
            v[i + h] = a - b;
        }
        __syncthreads();
    }
    float sc = 1.0f / sqrtf((float)n);
    for (int i = threadIdx.x; i < n; i += blockDim.x) v[i] *= sc;
    __syncthreads();
    for (int blk = threadIdx.x >> 5; blk < (n + 31) / 32; blk += blockDim.x >> 5) {
        int lane = threadIdx.x & 31;
        int i = blk * 32 + lane;
        float m = warp_max(i < n ? fabsf(v[i]) : 0.0f);
        if (lane == 0) sh_amax[blk] = fmaxf(m, 7.052966e-38f);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float s = pow2_scale(sh_amax[i / 32], 6.0f);
        float x = fminf(fmaxf(v[i] / s, -6.0f), 6.0f);
        v[i] = e2m1_round(x) * s;
    }
    __syncthreads();
}

// The raw K=V row of each token: its RMSNorm (weight nw; blockDim as rms_norm would
// take, so the same sums), RoPE at its position, the KV QAT, stored into the ring of raw
// rows at slot pos % ring. One block per token, its row at kv + t·kv_stride; dynamic
// shared: hd floats.
template <typename KV>
__device__ __forceinline__ void kv_store_row(const float* kv, int kv_stride, const float* nw,
                                             float eps, KV* ring, int ring_rows, int hd,
                                             const float* freqs, int n_rot, int pos0, int sim,
                                             int t) {
    extern __shared__ float row[];
    __shared__ float amax[64];
    __shared__ double sh[32];
    int pos = pos0 + t;
    const float* xv = kv + (size_t)t * kv_stride;
    double ss = 0.0;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) ss += (double)xv[i] * (double)xv[i];
    ss = block_sum_d(ss, sh);
    float rs = (float)(1.0 / sqrt(ss / (double)hd + (double)eps));
    for (int i = threadIdx.x; i < hd; i += blockDim.x) row[i] = xv[i] * rs * nw[i];
    __syncthreads();
    int off = hd - n_rot;
    for (int k = threadIdx.x; k < n_rot / 2; k += blockDim.x)
        rope_pair(&row[off + 2 * k], &row[off + 2 * k + 1], pos, freqs[k], 0);
    __syncthreads();
    if (sim) qat_kv_row(row, hd, hd - n_rot, amax);
    KV* dst = ring + (size_t)(pos % ring_rows) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) kv_put(dst + i, row[i]);
}

// Each kernel over rows has an f32 entry point and an f16 one (`_kh`, the QAT state's):
// their parameters as a macro of the row type, their bodies one call.
#define KV_STORE_ARGS(KV)                                                                    \
    const float *kv, int kv_stride, const float *nw, float eps, KV *ring, int ring_rows,    \
        int hd, const float *freqs, int n_rot, const int *pos0p, int sim
#define KV_STORE_CALL                                                                        \
    kv_store_row(kv, kv_stride, nw, eps, ring, ring_rows, hd, freqs, n_rot, *pos0p, sim,    \
                 blockIdx.x)
extern "C" __global__ void kv_store(KV_STORE_ARGS(float)) { pdl_begin(); KV_STORE_CALL; }
extern "C" __global__ void kv_store_kh(KV_STORE_ARGS(u16)) { pdl_begin(); KV_STORE_CALL; }

// The q_a norm (rms_norm, blocks y = 0) and the K=V row's store (kv_store, y = 1) of the
// same [q_a; kv] product in one launch: both read only that product, and the decode
// chain then waits on one short kernel instead of two in a row.
#define QA_NORM_KV_STORE_ARGS(KV)                                                            \
    const float *x, const float *w, float *y, int n, int x_stride, float eps, i8 *q,         \
        float *d, const float *kv, const float *nw, KV *ring, int ring_rows, int hd,         \
        const float *freqs, int n_rot, const int *pos0p, int sim
#define QA_NORM_KV_STORE_CALL                                                                \
    if (blockIdx.y == 0)                                                                     \
        rms_norm_row(x, w, y, n, x_stride, n, eps, q, d, blockIdx.x);                        \
    else                                                                                     \
        kv_store_row(kv, x_stride, nw, eps, ring, ring_rows, hd, freqs, n_rot, *pos0p, sim,  \
                     blockIdx.x)
extern "C" __global__ void qa_norm_kv_store(QA_NORM_KV_STORE_ARGS(float)) {
    pdl_begin();
    QA_NORM_KV_STORE_CALL;
}
extern "C" __global__ void qa_norm_kv_store_kh(QA_NORM_KV_STORE_ARGS(u16)) {
    pdl_begin();
    QA_NORM_KV_STORE_CALL;
}

// The end of one compressed row, thread j holding its pooled value j (threads ≥ d hold
// 0 and only join the block-wide steps): RMSNorm with weight `norm`, RoPE at `rpos`, the
// row's quantization simulation (sim as in compress_run), then the store to `row`.
// `out` is d floats of shared memory.
template <typename KV>
__device__ void compress_finish(float pooled, const float* norm, int d, float eps,
                                const float* freqs, int n_rot, int rpos, int sim, float* out,
                                double* shd, float* amax, KV* row) {
    int j = threadIdx.x;
    bool act = j < d;
    double ss = block_sum_d((double)pooled * (double)pooled, shd);
    float rs = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
    if (act) out[j] = pooled * rs * norm[j];
    __syncthreads();
    int off = d - n_rot;
    if (j < n_rot / 2) rope_pair(&out[off + 2 * j], &out[off + 2 * j + 1], rpos, freqs[j], 0);
    __syncthreads();
    if (sim == 1) {
        qat_kv_row(out, d, d - n_rot, amax);
    } else if (sim == 2) {
        qat_indexer_vec(out, d, amax);
        if (act) out[j] = f16_round(out[j]);
        __syncthreads();
    }
    if (act) kv_put(row + j, out[j]);
}

// The compressor's pooling of one output column over its n slots: a softmax of the slot
// scores weighting the slot values, slots in order (compress_run and compress_rows call
// this with their own slot lookup, so their rows agree); 0 when every slot is empty.
// `slot(s, &kv, &score)` gives slot s.
template <typename Slot> __device__ __forceinline__ float compress_pool(int n_slots, Slot slot) {
    float m = -INFINITY;
    for (int s = 0; s < n_slots; s++) {
        float kv, sc;
        slot(s, &kv, &sc);
        m = fmaxf(m, sc);
    }
    if (!(m > EMPTY_SCORE / 2.0f)) return 0.0f;
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < n_slots; s++) {
        float kv, sc;
        slot(s, &kv, &sc);
        float e = expf(sc - m);
        num += e * kv;
        den += e;
    }
    return num / den;
}

// KV compressor (spec §3.6) over a run of T tokens, strictly in order (token t's
// values at kvp + t·in_stride, its scores at gate + t·in_stride): the frontier
// state lives in global memory (front_kv, front_score: coff·ratio slots of width
// coff·d) and carries across runs. One block of d threads; thread j owns output dim j
// and, for overlapping compressors (coff 2), the columns j (lane A) and d + j (lane B)
// of every slot, so pooling needs no synchronization.
// sim: 0 none, 1 attention row (fp8 on nope dims + f16), 2 indexer row (Hadamard+fp4, f16).
// Closed rows are written at index (pos + 1) / ratio − 1 of `rows`.
template <typename KV>
__device__ __forceinline__ void compress_run_body(const float* kvp, const float* gate, int in_stride,
                                        const float* ape,
                                        const float* norm, float* front_kv, float* front_score,
                                        KV* rows, int T, const int* pos0p, int ratio, int coff, int d,
                                        float eps, const float* freqs, int n_rot, int sim) {
    int pos0 = *pos0p;
    extern __shared__ float out[];  // d floats
    __shared__ double shd[32];
    __shared__ float amax[64];
    // blockDim.x is d rounded up to whole warps; threads past d only join the
    // block-wide steps.
    int j = threadIdx.x;
    bool act = j < d;
    int width = coff * d;
    for (int t = 0; t < T; t++) {
        int pos = pos0 + t;
        int r = pos % ratio;
        int slot = coff == 2 ? ratio + r : r;
        if (act) {
            for (int c = 0; c < coff; c++) {
                int col = j + c * d;
                front_kv[(size_t)slot * width + col] = kvp[(size_t)t * in_stride + col];
                front_score[(size_t)slot * width + col] =
                    gate[(size_t)t * in_stride + col] + ape[(size_t)r * width + col];
            }
        }
        if ((pos + 1) % ratio != 0) continue;
        int n_slots = coff * ratio;
        float pooled = 0.0f;
        if (act)
            pooled = compress_pool(n_slots, [&](int s, float* kv, float* sc) {
                size_t li = (coff == 2 && s >= ratio) ? (size_t)s * width + d + j : (size_t)s * width + j;
                *kv = front_kv[li];
                *sc = front_score[li];
            });
        compress_finish(pooled, norm, d, eps, freqs, n_rot, pos + 1 - ratio, sim, out, shd,
                        amax, rows + (size_t)((pos + 1) / ratio - 1) * d);
        if (act) {
            if (coff == 2) {
                for (int s = 0; s < ratio; s++) {
                    for (int c = 0; c < 2; c++) {
                        size_t dst = (size_t)s * width + j + c * d;
                        size_t src = (size_t)(s + ratio) * width + j + c * d;
                        front_kv[dst] = front_kv[src];
                        front_score[dst] = front_score[src];
                    }
                }
            }
        }
        __syncthreads();
    }
}
#define COMPRESS_RUN_ARGS(KV)                                                                \
    const float *kvp, const float *gate, int in_stride, const float *ape, const float *norm, \
        float *front_kv, float *front_score, KV *rows, int T, const int *pos0p, int ratio,   \
        int coff, int d, float eps, const float *freqs, int n_rot, int sim
#define COMPRESS_RUN_CALL                                                                    \
    compress_run_body(kvp, gate, in_stride, ape, norm, front_kv, front_score, rows, T, pos0p, \
                      ratio, coff, d, eps, freqs, n_rot, sim)
extern "C" __global__ void compress_run(COMPRESS_RUN_ARGS(float)) { pdl_begin(); COMPRESS_RUN_CALL; }
extern "C" __global__ void compress_run_kh(COMPRESS_RUN_ARGS(u16)) { pdl_begin(); COMPRESS_RUN_CALL; }

// The compressor for a run of tokens (prefill), its rows in parallel: one block per row
// closed in the run, the same pooling as compress_run. A row's window (and, for
// overlapping compressors, the window before it) takes each token's values from the run
// when the token is in it, else from the frontier state as the run found it (tokens
// before pos0; tokens before 0 are empty slots). Slots pool in compress_run's order
// (previous window, then current, each in position order), so rows are the same.
// compress_state then brings the frontier to the run's end.
__device__ __forceinline__ void compress_token(const float* kvp, const float* gate, int in_stride,
                                               const float* ape, const float* front_kv,
                                               const float* front_score, int pos0, int ratio,
                                               int coff, int width, int q, int col, float* kv,
                                               float* score) {
    int r = q % ratio;
    if (q >= pos0) {
        *kv = kvp[(size_t)(q - pos0) * in_stride + col];
        *score = gate[(size_t)(q - pos0) * in_stride + col] + ape[(size_t)r * width + col];
        return;
    }
    if (q < 0) {
        *kv = 0.0f;
        *score = EMPTY_SCORE;
        return;
    }
    // Before the run: the state's current window holds the tokens from the window
    // containing pos0 (W0) up to pos0, its previous-window slots the window before W0.
    int w0 = pos0 / ratio * ratio;
    int slot = (coff == 2 && q >= w0) ? ratio + r : r;
    *kv = front_kv[(size_t)slot * width + col];
    *score = front_score[(size_t)slot * width + col];
}

template <typename KV>
__device__ __forceinline__ void compress_rows_body(const float* kvp, const float* gate, int in_stride,
                                         const float* ape, const float* norm,
                                         const float* front_kv, const float* front_score,
                                         KV* rows, const int* pos0p, int ratio, int coff, int d,
                                         float eps, const float* freqs, int n_rot, int sim) {
    int pos0 = *pos0p;
    extern __shared__ float out[];  // d floats
    __shared__ double shd[32];
    __shared__ float amax[64];
    int j = threadIdx.x;
    bool act = j < d;
    int width = coff * d;
    // Row pos0 / ratio + blockIdx.x closes at p (its window starts at ws).
    int p = (pos0 / ratio + 1 + blockIdx.x) * ratio - 1;
    int ws = p + 1 - ratio;
    float pooled = 0.0f;
    if (act)
        // Slot s < ratio (overlapping compressors only): token ws - ratio + s, column j;
        // then the current window: token ws + s, column d + j (overlapping) or j.
        pooled = compress_pool(coff * ratio, [&](int s2, float* kv, float* sc) {
            bool prev = coff == 2 && s2 < ratio;
            int q = prev ? ws - ratio + s2 : ws + (s2 - (coff == 2 ? ratio : 0));
            int col = (coff == 2 && !prev) ? d + j : j;
            compress_token(kvp, gate, in_stride, ape, front_kv, front_score, pos0, ratio, coff,
                           width, q, col, kv, sc);
        });
    compress_finish(pooled, norm, d, eps, freqs, n_rot, ws, sim, out, shd, amax,
                    rows + (size_t)((p + 1) / ratio - 1) * d);
}
#define COMPRESS_ROWS_ARGS(KV)                                                               \
    const float *kvp, const float *gate, int in_stride, const float *ape, const float *norm, \
        const float *front_kv, const float *front_score, KV *rows, const int *pos0p,         \
        int ratio, int coff, int d, float eps, const float *freqs, int n_rot, int sim
#define COMPRESS_ROWS_CALL                                                                   \
    compress_rows_body(kvp, gate, in_stride, ape, norm, front_kv, front_score, rows, pos0p,  \
                       ratio, coff, d, eps, freqs, n_rot, sim)
extern "C" __global__ void compress_rows(COMPRESS_ROWS_ARGS(float)) { pdl_begin(); COMPRESS_ROWS_CALL; }
extern "C" __global__ void compress_rows_kh(COMPRESS_ROWS_ARGS(u16)) { pdl_begin(); COMPRESS_ROWS_CALL; }

// The frontier after a run of T tokens from pos0, as compress_run leaves it for every
// slot a later row reads: the current window's slots hold the tokens of the window still
// open at the run's end (from We = end / ratio · ratio up to the end), and (overlapping
// compressors, when a row closed in the run) the previous-window slots the window before
// We. A block a residue r of the window (v32: one block walking every token took 54 µs
// at ratio 128): it owns slots r and ratio + r, and thread j their columns j and d + j
// (as in compress_run), so reading the old state and writing the new one need no barrier.
extern "C" __global__ void compress_state(const float* kvp, const float* gate, int in_stride,
                                          const float* ape, float* front_kv,
                                          float* front_score, int T, const int* pos0p, int ratio,
                                          int coff, int d) { pdl_begin();
    int pos0 = *pos0p;
    int j = threadIdx.x, r = blockIdx.x;
    if (j >= d) return;
    int width = coff * d;
    int end = pos0 + T;
    int we = end / ratio * ratio;  // the window open after the run
    int w0 = pos0 / ratio * ratio;
    for (int c = 0; c < coff; c++) {
        int col = j + c * d;
        if (coff == 2 && we > w0) {
            // Previous window = [we - ratio, we): from the run, or (the window that held
            // pos0, when it closed in this run) from the old current-window slots.
            int q = we - ratio + r;
            float kv, sc;
            if (q >= pos0) {
                kv = kvp[(size_t)(q - pos0) * in_stride + col];
                sc = gate[(size_t)(q - pos0) * in_stride + col] + ape[(size_t)r * width + col];
            } else {
                kv = front_kv[(size_t)(ratio + r) * width + col];
                sc = front_score[(size_t)(ratio + r) * width + col];
            }
            front_kv[(size_t)r * width + col] = kv;
            front_score[(size_t)r * width + col] = sc;
        }
        int q = we + r;
        if (q >= pos0 && q < end) {
            int slot = coff == 2 ? ratio + r : r;
            front_kv[(size_t)slot * width + col] = kvp[(size_t)(q - pos0) * in_stride + col];
            front_score[(size_t)slot * width + col] =
                gate[(size_t)(q - pos0) * in_stride + col] + ape[(size_t)r * width + col];
        }
    }
}

// ---------------------------------------------------------------------------------
// Lightning indexer (spec §3.7).

// Indexer queries: RoPE at the token's position then the indexer QAT, per head; the
// head weights get 1/sqrt(head_dim·heads) folded in. One block per (token, head).
extern "C" __global__ void indexer_prep(float* qi, float* wi, int heads, int di,
                                        const float* freqs, int n_rot, const int* pos0p, int sim) { pdl_begin();
    int pos0 = *pos0p;
    extern __shared__ float v[];
    __shared__ float amax[64];
    int t = blockIdx.x / heads, h = blockIdx.x % heads;
    float* q = qi + ((size_t)t * heads + h) * di;
    for (int i = threadIdx.x; i < di; i += blockDim.x) v[i] = q[i];
    __syncthreads();
    int off = di - n_rot;
    for (int k = threadIdx.x; k < n_rot / 2; k += blockDim.x)
        rope_pair(&v[off + 2 * k], &v[off + 2 * k + 1], pos0 + t, freqs[k], 0);
    __syncthreads();
    if (sim) qat_indexer_vec(v, di, amax);
    for (int i = threadIdx.x; i < di; i += blockDim.x) q[i] = v[i];
    if (threadIdx.x == 0) wi[(size_t)t * heads + h] *= 1.0f / sqrtf((float)(di * heads));
}

// indexer_prep with one warp per (token, head), 8 a block, for 128-dimension heads: lane
// l holds dimensions 4l..4l+3 in registers; the Walsh-Hadamard stages h = 1, 2 run in
// the lane and h = 4..64 across lanes (shfl_xor h/4: the lower lane keeps a + b, the upper
// a − b), a 32-block's maximum over its 8 lanes. No barriers, where the block version
// waits on ~12 (a 2,048-token run has 131k such blocks). The same operations on the same
// values: bit for bit. Rows: nrows = T·heads.
extern "C" __global__ void indexer_prep_w(float* qi, float* wi, int heads, int di,
                                          const float* freqs, int n_rot, const int* pos0p,
                                          int sim, int nrows) { pdl_begin();
    int pos0 = *pos0p;
    int lane = threadIdx.x & 31;
    int idx = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (idx >= nrows) return;
    int t = idx / heads;
    float* q = qi + (size_t)idx * di;
    float4 v4 = *(const float4*)(q + 4 * lane);
    float v[4] = {v4.x, v4.y, v4.z, v4.w};
    int off = di - n_rot, d0 = 4 * lane;
    if (d0 >= off) {
        int k0 = (d0 - off) / 2;
        rope_pair(&v[0], &v[1], pos0 + t, freqs[k0], 0);
        rope_pair(&v[2], &v[3], pos0 + t, freqs[k0 + 1], 0);
    }
    if (sim) {
        float a = v[0], b = v[1];
        v[0] = a + b;
        v[1] = a - b;
        a = v[2], b = v[3];
        v[2] = a + b;
        v[3] = a - b;
        a = v[0], b = v[2];
        v[0] = a + b;
        v[2] = a - b;
        a = v[1], b = v[3];
        v[1] = a + b;
        v[3] = a - b;
#pragma unroll
        for (int sx = 1; sx < 32; sx <<= 1) {
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float o = __shfl_xor_sync(0xffffffffu, v[k], sx);
                v[k] = (lane & sx) ? o - v[k] : v[k] + o;
            }
        }
        float sc = 1.0f / sqrtf((float)di);
        float m = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            v[k] *= sc;
            m = fmaxf(m, fabsf(v[k]));
        }
#pragma unroll
        for (int sx = 1; sx < 8; sx <<= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, sx));
        float s = pow2_scale(fmaxf(m, 7.052966e-38f), 6.0f);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float x = fminf(fmaxf(v[k] / s, -6.0f), 6.0f);
            v[k] = e2m1_round(x) * s;
        }
    }
    *(float4*)(q + 4 * lane) = make_float4(v[0], v[1], v[2], v[3]);
    if (lane == 0) wi[idx] *= 1.0f / sqrtf((float)(di * heads));
}

// score[t, r] = Σ_h w_h · relu(q_h · row_r) for every row visible to token t
// (rows closed by positions ≤ pos). One warp per row; grid (row blocks, T).
template <typename KV>
__device__ __forceinline__ void indexer_scores_body(const float* qi, const float* wi, const KV* rows,
                                          float* scores, int heads, int di, const int* pos0p,
                                          int ratio, int max_rows) {
    int pos0 = *pos0p;
    int t = blockIdx.y;
    int n = (pos0 + t + 1) / ratio;
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= n) return;
    const KV* row = rows + (size_t)r * di;
    const float* q = qi + (size_t)t * heads * di;
    const float* w = wi + (size_t)t * heads;
    float acc = 0.0f;
    for (int h = 0; h < heads; h++) {
        float p = 0.0f;
        for (int i = lane; i < di; i += 32) p += q[h * di + i] * kv_get(row + i);
        p = warp_sum(p);
        acc += w[h] * fmaxf(p, 0.0f);
    }
    if (lane == 0) scores[(size_t)t * max_rows + r] = acc;
}
// Parameters of the three score kernels (each appends its own after max_rows).
#define IDX_ARGS(KV)                                                                         \
    const float *qi, const float *wi, const KV *rows, float *scores, int heads, int di,     \
        const int *pos0p, int ratio, int max_rows
#define IDX_PARAMS qi, wi, rows, scores, heads, di, pos0p, ratio, max_rows
extern "C" __global__ void indexer_scores(IDX_ARGS(float)) {
    pdl_begin();
    indexer_scores_body(IDX_PARAMS);
}
extern "C" __global__ void indexer_scores_kh(IDX_ARGS(u16)) {
    pdl_begin();
    indexer_scores_body(IDX_PARAMS);
}

// The same scores on the tensor cores (heads a multiple of 16 up to 64 after padding,
// di a multiple of 16 up to 128): per 8 rows, each warp multiplies its 16 heads' queries
// by the rows with mma.m16n8k16, f16 parts hi + lo of both sides (hi·hi + lo·hi + hi·lo:
// ~22 significant bits each side, f32 accumulation — summation-order accuracy; the QAT
// rows and queries lie on the fp4 grid and are exact in f16 already). The ReLU'd, head-
// weighted products are summed over the warp's heads by shuffles, then over the warps
// in warp order: each score's order depends on neither the run nor `rpb`, so a token
// gets the same scores in any run. Grid (ceil(rows / rpb), T), 32 · ceil(heads / 16)
// threads; rpb a multiple of 8, at most 256.
#define IDX_MAX_KS 8
__device__ __forceinline__ u32 pack_h2(u16 lo_half, u16 hi_half) {
    return (u32)lo_half | ((u32)hi_half << 16);
}
__device__ __forceinline__ void split_h2(float a, float b, u32& hi, u32& lo) {
    u16 ha = f2h(a), hb = f2h(b);
    hi = pack_h2(ha, hb);
    lo = pack_h2(f2h(a - h2f(ha)), f2h(b - h2f(hb)));
}
// The A fragments (row = head, column = dim) of a warp's 16 heads h0 = 16w + g and
// h1 = h0 + 8 (queries at q0, q1; ok0 / ok1: the head exists), as f16 hi and lo.
__device__ __forceinline__ void idx_load_a(const float* q0, const float* q1, bool ok0, bool ok1,
                                           int ks_n, int tq, u32 (&ah)[IDX_MAX_KS][4],
                                           u32 (&al)[IDX_MAX_KS][4]) {
#pragma unroll
    for (int ks = 0; ks < IDX_MAX_KS; ks++) {
        if (ks < ks_n) {
            int c = 16 * ks + 2 * tq;
            float2 x00 = ok0 ? *(const float2*)(q0 + c) : make_float2(0.0f, 0.0f);
            float2 x10 = ok1 ? *(const float2*)(q1 + c) : make_float2(0.0f, 0.0f);
            float2 x01 = ok0 ? *(const float2*)(q0 + c + 8) : make_float2(0.0f, 0.0f);
            float2 x11 = ok1 ? *(const float2*)(q1 + c + 8) : make_float2(0.0f, 0.0f);
            split_h2(x00.x, x00.y, ah[ks][0], al[ks][0]);
            split_h2(x10.x, x10.y, ah[ks][1], al[ks][1]);
            split_h2(x01.x, x01.y, ah[ks][2], al[ks][2]);
            split_h2(x11.x, x11.y, ah[ks][3], al[ks][3]);
        }
    }
}
// Whether any lo part of the warp's A fragments is nonzero (else their products are
// exact zeros and skipped).
__device__ __forceinline__ bool idx_any_lo(const u32 (&al)[IDX_MAX_KS][4], int ks_n) {
    u32 anz = 0;
#pragma unroll
    for (int ks = 0; ks < IDX_MAX_KS; ks++)
        if (ks < ks_n) anz |= al[ks][0] | al[ks][1] | al[ks][2] | al[ks][3];
    return __any_sync(0xffffffffu, anz != 0);
}
// c: (head h0, rows 2tq, 2tq + 1), (head h1, the same rows) of an 8-row tile: the ReLU'd
// scores weighted by the heads, summed over the warp's 16 heads (lanes g == 0 end with
// rows 2tq and 2tq + 1 in s0, s1).
__device__ __forceinline__ void idx_head_sums(const float (&c)[4], float w0, float w1, float& s0,
                                              float& s1) {
    s0 = w0 * fmaxf(c[0], 0.0f) + w1 * fmaxf(c[2], 0.0f);
    s1 = w0 * fmaxf(c[1], 0.0f) + w1 * fmaxf(c[3], 0.0f);
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) {
        s0 += __shfl_xor_sync(0xffffffffu, s0, o);
        s1 += __shfl_xor_sync(0xffffffffu, s1, o);
    }
}
template <typename KV>
__device__ __forceinline__ void indexer_scores_mma_body(const float* qi, const float* wi, const KV* rows,
                                              float* scores, int heads, int di, const int* pos0p,
                                              int ratio, int max_rows, int rpb, int lo_all) {
    __shared__ float part[4][256];
    int pos0 = *pos0p;
    int t = blockIdx.y;
    int n = (pos0 + t + 1) / ratio;
    // Blocks take row ranges blockIdx.x, + gridDim.x, ..: a decode graph's grid is fixed
    // at capture, and one block per range of the context allocated (16k ranges at 1M)
    // would launch mostly empty blocks every step.
    if (blockIdx.x * rpb >= n) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tq = lane & 3;
    int ks_n = di >> 4;
    // A fragments (row = head, column = dim) of this warp's 16 heads, hi and lo.
    u32 ah[IDX_MAX_KS][4], al[IDX_MAX_KS][4];
    int h0 = 16 * warp + g, h1 = h0 + 8;
    const float* q0 = qi + ((size_t)t * heads + h0) * di;
    const float* q1 = qi + ((size_t)t * heads + h1) * di;
    idx_load_a(q0, q1, h0 < heads, h1 < heads, ks_n, tq, ah, al);
    float w0 = h0 < heads ? wi[(size_t)t * heads + h0] : 0.0f;
    float w1 = h1 < heads ? wi[(size_t)t * heads + h1] : 0.0f;
    // Lo parts that are all zero (f16-exact queries or rows, the QAT grid) add exact
    // zeros: their mma is skipped, the bits stay (see indexer_scores_tt).
    bool a_lo = lo_all || idx_any_lo(al, ks_n);
    for (int r0 = blockIdx.x * rpb; r0 < n; r0 += gridDim.x * rpb) {
        int r_end = min(r0 + rpb, n);
        for (int nb = r0; nb < r_end; nb += 8) {
            // B fragment: column = row nb + g, k = 2tq, 2tq+1 and 2tq+8, 2tq+9.
            int rb = nb + g;
            const KV* rp = rows + (size_t)rb * di;
            float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            u32 bh[IDX_MAX_KS][2], bl[IDX_MAX_KS][2], bnz = 0;
#pragma unroll
            for (int ks = 0; ks < IDX_MAX_KS; ks++) {
                if (ks < ks_n) {
                    int k = 16 * ks + 2 * tq;
                    float2 y0 = rb < n ? kv_get2(rp + k) : make_float2(0.0f, 0.0f);
                    float2 y1 = rb < n ? kv_get2(rp + k + 8) : make_float2(0.0f, 0.0f);
                    split_h2(y0.x, y0.y, bh[ks][0], bl[ks][0]);
                    split_h2(y1.x, y1.y, bh[ks][1], bl[ks][1]);
                    bnz |= bl[ks][0] | bl[ks][1];
                }
            }
            bool b_lo = lo_all || __any_sync(0xffffffffu, bnz != 0);
#pragma unroll
            for (int ks = 0; ks < IDX_MAX_KS; ks++) {
                if (ks < ks_n) {
                    mma_f16_16816(c, ah[ks], bh[ks][0], bh[ks][1]);
                    if (a_lo) mma_f16_16816(c, al[ks], bh[ks][0], bh[ks][1]);
                    if (b_lo) mma_f16_16816(c, ah[ks], bl[ks][0], bl[ks][1]);
                }
            }
            // c: (head h0, rows nb+2tq, +1), (head h1, same rows).
            float s0, s1;
            idx_head_sums(c, w0, w1, s0, s1);
            if (g == 0) {
                part[warp][nb - r0 + 2 * tq] = s0;
                part[warp][nb - r0 + 2 * tq + 1] = s1;
            }
        }
        __syncthreads();
        int nw = blockDim.x >> 5;
        for (int i = threadIdx.x; i < r_end - r0; i += blockDim.x) {
            float acc = part[0][i];
            for (int x = 1; x < nw; x++) acc += part[x][i];
            scores[(size_t)t * max_rows + r0 + i] = acc;
        }
        __syncthreads();  // part is the next range's
    }
}
extern "C" __global__ void indexer_scores_mma(IDX_ARGS(float), int rpb, int lo_all) {
    pdl_begin();
    indexer_scores_mma_body(IDX_PARAMS, rpb, lo_all);
}
extern "C" __global__ void indexer_scores_mma_kh(IDX_ARGS(u16), int rpb, int lo_all) {
    pdl_begin();
    indexer_scores_mma_body(IDX_PARAMS, rpb, lo_all);
}

// indexer_scores_mma for a run of tokens (prefill), IDX_TT tokens a block: warp w takes
// head group w % hg (hg = ceil(heads / 16)) of token w / hg, with that token's A
// fragments in registers as there. The block's rows arrive once, converted to f16 hi and
// lo once, into shared memory, and every warp reads its B fragments there — the
// per-token kernel loads and converts each row once per token, IDX_TT times the L2
// traffic and conversions. Each (token, head group, 8 rows) runs the same mma chain and
// the same sums in the same order, so the scores are those of indexer_scores_mma bit for
// bit (a decode step and a run still select the same rows). Grid (row blocks, ceil(T /
// IDX_TT)); a block walks ranges of rpb rows blockIdx.x, + gridDim.x, .. up to the
// largest count its tokens see; 32 · hg · IDX_TT threads; dynamic shared memory
// 2 · rpb · (di + 8) halves and IDX_TT · hg · rpb floats (the host's indexer_scores_launch).
template <typename KV>
__device__ __forceinline__ void indexer_scores_tt_body(
    const float* qi, const float* wi, const KV* rows, float* scores, int heads, int di,
    const int* pos0p, int ratio, int max_rows, int rpb, int T) {
    extern __shared__ __align__(16) u8 idx_sm[];
    const int ld = di + 8;  // halves a staged row: B fragment words conflict-free
    int hg = (heads + 15) >> 4;
    u16* bhs = (u16*)idx_sm;                      // [rpb][ld] hi
    u16* bls = bhs + rpb * ld;                    // [rpb][ld] lo
    float* part = (float*)(bls + rpb * ld);       // [IDX_TT][hg][rpb]
    int pos0 = *pos0p;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tq = lane & 3;
    int tl = warp / hg, wg = warp % hg;
    int tbase = blockIdx.y * IDX_TT;
    int t = tbase + tl;
    bool tok = t < T;
    int n_max = (pos0 + min(tbase + IDX_TT, T)) / ratio;  // the tile's last token sees most
    if (blockIdx.x * rpb >= n_max) return;
    int ks_n = di >> 4;
    u32 ah[IDX_MAX_KS][4], al[IDX_MAX_KS][4];
    int h0 = 16 * wg + g, h1 = h0 + 8;
    const float* q0 = qi + ((size_t)(tok ? t : 0) * heads + h0) * di;
    const float* q1 = qi + ((size_t)(tok ? t : 0) * heads + h1) * di;
    idx_load_a(q0, q1, tok && h0 < heads, tok && h1 < heads, ks_n, tq, ah, al);
    float w0 = tok && h0 < heads ? wi[(size_t)t * heads + h0] : 0.0f;
    float w1 = tok && h1 < heads ? wi[(size_t)t * heads + h1] : 0.0f;
    // Queries or rows exact in f16 (the QAT simulation puts both on the fp4 grid) have
    // zero lo parts: their mma adds exact zeros, which leaves every accumulator's bits as
    // they are (it starts at +0, and x + 0 = x, +0 + ±0 = +0), so it is skipped — a third
    // of the mma work each where both are exact.
    bool a_lo = idx_any_lo(al, ks_n);
    int q4 = di >> 2;
    for (int r0 = blockIdx.x * rpb; r0 < n_max; r0 += gridDim.x * rpb) {
        int r_end = min(r0 + rpb, n_max);
        __syncthreads();  // the previous range's fragments and partials are read
        // Rows past the tile's count are zeros (their scores are not written).
        u32 bnz = 0;
        for (int i = threadIdx.x; i < rpb * q4; i += blockDim.x) {
            int j = i / q4, c = 4 * (i % q4);
            float4 v = r0 + j < n_max ? kv_ldg4(rows + (size_t)(r0 + j) * di + c)
                                      : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            u32 h01, l01, h23, l23;
            split_h2(v.x, v.y, h01, l01);
            split_h2(v.z, v.w, h23, l23);
            bnz |= l01 | l23;
            *(uint2*)(bhs + j * ld + c) = make_uint2(h01, h23);
            *(uint2*)(bls + j * ld + c) = make_uint2(l01, l23);
        }
        bool b_lo = __syncthreads_or(bnz != 0);
        for (int nb = r0; nb < r_end; nb += 8) {
            const u16* bh = bhs + (nb - r0 + g) * ld;
            const u16* bl = bls + (nb - r0 + g) * ld;
            float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int ks = 0; ks < IDX_MAX_KS; ks++) {
                if (ks < ks_n) {
                    int k = 16 * ks + 2 * tq;
                    u32 bh0 = *(const u32*)(bh + k), bh1 = *(const u32*)(bh + k + 8);
                    mma_f16_16816(c, ah[ks], bh0, bh1);
                    if (a_lo) mma_f16_16816(c, al[ks], bh0, bh1);
                    if (b_lo) {
                        u32 bl0 = *(const u32*)(bl + k), bl1 = *(const u32*)(bl + k + 8);
                        mma_f16_16816(c, ah[ks], bl0, bl1);
                    }
                }
            }
            float s0, s1;
            idx_head_sums(c, w0, w1, s0, s1);
            if (g == 0) {
                float* pp = part + (tl * hg + wg) * rpb + nb - r0 + 2 * tq;
                pp[0] = s0;
                pp[1] = s1;
            }
        }
        __syncthreads();
        // Each token's visible rows, its head groups' shares added in group order.
        for (int i = threadIdx.x; i < IDX_TT * rpb; i += blockDim.x) {
            int tt = i / rpb, j = i % rpb, ti = tbase + tt;
            if (ti >= T || r0 + j >= (pos0 + ti + 1) / ratio) continue;
            const float* pp = part + tt * hg * rpb + j;
            float acc = pp[0];
            for (int x = 1; x < hg; x++) acc += pp[x * rpb];
            scores[(size_t)ti * max_rows + r0 + j] = acc;
        }
    }
}
extern "C" __global__ void __launch_bounds__(512) indexer_scores_tt(IDX_ARGS(float), int rpb, int T) {
    pdl_begin();
    indexer_scores_tt_body(IDX_PARAMS, rpb, T);
}
extern "C" __global__ void __launch_bounds__(512) indexer_scores_tt_kh(IDX_ARGS(u16), int rpb, int T) {
    pdl_begin();
    indexer_scores_tt_body(IDX_PARAMS, rpb, T);
}

__device__ __forceinline__ u32 order_key(float f) {
    u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Top-k of each token's scores (ties to the lower row), by a radix select of the
// k-th largest key then an in-order compaction. One block of 1024 threads per token.
// sel[t, 0..k) gets the chosen rows in increasing row order; nsel[t] = k, or 0 when the
// token sees k rows or fewer (it then attends to all of them).
// Each of the four 8-bit passes counts the candidates' digits (a warp's equal digits
// added by one atomic: the top digits of similar scores are mostly the same, and
// one shared address taking hundreds of atomics serializes them) and finds the digit
// holding the k-th key by a parallel scan over the 256 counts (blockDim >= 256), not
// one thread's walk: a decode step waits on this kernel.
// The digit of the `remaining`-th largest candidate key, from thread j < 256's count of
// candidates whose digit is 255 - j (every thread of the block calls; the result in
// *found_digit and *found_remaining, shared). An inclusive scan in that order counts the
// candidates whose digit is >= d; the digit is where that count first reaches
// `remaining` — a parallel scan, not one thread's walk over 256 counts.
__device__ __forceinline__ void topk_digit(u32 cnt, u32 remaining, u32* wsum, u32* found_digit,
                                           u32* found_remaining) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    u32 ge = cnt;
    if (threadIdx.x < 256) {
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            u32 y = __shfl_up_sync(0xffffffffu, ge, o);
            if (lane >= o) ge += y;
        }
        if (lane == 31) wsum[w] = ge;
    }
    __syncthreads();
    if (threadIdx.x < 256) {
        for (int x = 0; x < w; x++) ge += wsum[x];
        u32 gt = ge - cnt;
        if (gt < remaining && ge >= remaining) {
            *found_digit = 255 - threadIdx.x;
            *found_remaining = remaining - gt;
        }
    }
    __syncthreads();
}

// Writes the rows of [lo, hi) that are taken — keys above `kth`, and keys equal to it
// while fewer than `take_eq` equal ones come before — in increasing order to selt, after
// the *base_take rows taken and the *base_eq equal rows met before `lo` (shared; set by
// the caller before a barrier, advanced here).
__device__ __forceinline__ void topk_compact(const float* s, int lo, int hi, u32 kth, u32 take_eq,
                                             int* selt, u32* warp_cnt, u32* base_take,
                                             u32* base_eq) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int start = lo; start < hi; start += blockDim.x) {
        int i = start + threadIdx.x;
        u32 key = i < hi ? order_key(s[i]) : 0;
        bool gt = i < hi && key > kth;
        bool eq = i < hi && key == kth;
        // in-order rank of this row among equal keys
        u32 eq_mask = __ballot_sync(0xffffffffu, eq);
        if (lane == 0) warp_cnt[w] = __popc(eq_mask);
        __syncthreads();
        u32 before = 0;
        for (int x = 0; x < w; x++) before += warp_cnt[x];
        u32 tile_eq = 0;
        for (int x = 0; x < nw; x++) tile_eq += warp_cnt[x];
        u32 eq_rank = *base_eq + before + __popc(eq_mask & ((1u << lane) - 1));
        bool take = gt || (eq && eq_rank < take_eq);
        __syncthreads();
        u32 tk_mask = __ballot_sync(0xffffffffu, take);
        if (lane == 0) warp_cnt[w] = __popc(tk_mask);
        __syncthreads();
        u32 tbefore = 0, tile_take = 0;
        for (int x = 0; x < nw; x++) {
            if (x < w) tbefore += warp_cnt[x];
            tile_take += warp_cnt[x];
        }
        if (take) selt[*base_take + tbefore + __popc(tk_mask & ((1u << lane) - 1))] = i;
        __syncthreads();
        if (threadIdx.x == 0) { *base_take += tile_take; *base_eq += tile_eq; }
        __syncthreads();
    }
}

// One block's selection of k of the n scores at `s` into `selt` (the body of topk_select;
// topk_select_cl's rank 0 runs it alone for a short row count).
__device__ __forceinline__ void topk_block(const float* s, int n, int* selt, int k) {
    __shared__ u32 hist[256];
    __shared__ u32 wsum[8];
    __shared__ u32 found_digit, found_remaining;
    __shared__ u32 warp_cnt[32];
    __shared__ u32 base_take, base_eq;
    int lane = threadIdx.x & 31;
    u32 prefix = 0, prefix_mask = 0, remaining = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        if (threadIdx.x < 256) hist[threadIdx.x] = 0;
        __syncthreads();
        // Whole warps go round the loop together (the match below needs every lane).
        for (int start = 0; start < n; start += blockDim.x) {
            int i = start + threadIdx.x;
            u32 key = i < n ? order_key(s[i]) : 0;
            bool in = i < n && (key & prefix_mask) == prefix;
            u32 d = in ? (key >> shift) & 0xffu : 256u;
            u32 peers = __match_any_sync(0xffffffffu, d);
            if (in && lane == __ffs(peers) - 1) atomicAdd(&hist[d], (u32)__popc(peers));
        }
        __syncthreads();
        topk_digit(threadIdx.x < 256 ? hist[255 - threadIdx.x] : 0, remaining, wsum, &found_digit,
                   &found_remaining);
        prefix |= found_digit << shift;
        prefix_mask |= 0xffu << shift;
        remaining = found_remaining;
    }
    // prefix is now the k-th largest key; `remaining` of the rows equal to it are taken
    // (the lowest-numbered ones), with every row above it.
    if (threadIdx.x == 0) { base_take = 0; base_eq = 0; }
    __syncthreads();
    topk_compact(s, 0, n, prefix, remaining, selt, warp_cnt, &base_take, &base_eq);
}
extern "C" __global__ void topk_select(const float* scores, int* sel, int* nsel, const int* pos0p,
                                       int ratio, int max_rows, int k) { pdl_begin();
    int t = blockIdx.x;
    int n = (*pos0p + t + 1) / ratio;
    if (n <= k) {
        if (threadIdx.x == 0) nsel[t] = 0;
        return;
    }
    topk_block(scores + (size_t)t * max_rows, n, sel + (size_t)t * k, k);
    if (threadIdx.x == 0) nsel[t] = k;
}

// topk_select over a cluster of TK_CL blocks a token (thread-block clusters, Hopper): block
// r of the cluster takes rows [r·sl, (r+1)·sl) of the token's n. Each digit pass
// counts the block's own rows into its histogram; after a cluster barrier every block
// adds the TK_CL histograms in rank order through distributed shared memory (the same
// totals in every block) and finds the same digit. The compaction takes each block's
// counts of rows above the k-th key and equal to it from the blocks before it (rows of
// lower blocks come first), so the rows come out in increasing order with ties to the
// lower row, as topk_select's. One block of 1,024 threads walked all n rows in every
// pass: at a 64k context's decode step (16k rows) it took ~57 µs a layer, 8% of the
// profiled step, on the chain. Warps whose rows hold no candidate skip the digit count.
// Grid (TK_CL, T), 1,024 threads; the histograms alternate by pass parity, so a block
// zeroing one for the pass after next cannot meet another block still reading it.
// TK_CL and TK_CL_MIN (like IDX_TT) come from the host (source.rs), which sizes the launch.
__device__ __forceinline__ u32 cluster_rank() {
    u32 r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ void cluster_barrier() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
// A u32 of block `rank`'s shared memory at the address `p` has in this block's.
__device__ __forceinline__ u32 dsmem_ld(const u32* p, u32 rank) {
    u32 a = (u32)__cvta_generic_to_shared(p), ra, v;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(a), "r"(rank));
    asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(v) : "r"(ra) : "memory");
    return v;
}
// A u64 of block `rank`'s shared memory (a double's bits) at the address `p` has here.
__device__ __forceinline__ double dsmem_ld_d(const double* p, u32 rank) {
    u32 a = (u32)__cvta_generic_to_shared(p), ra;
    unsigned long long v;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(a), "r"(rank));
    asm volatile("ld.shared::cluster.u64 %0, [%1];" : "=l"(v) : "r"(ra) : "memory");
    return __longlong_as_double((long long)v);
}

// hc_pre_late on a thread-block cluster (decode's default since v22: the step 5.3% shorter
// on the H200; DS4_CUDA_HC_CL=0 keeps hc_pre_late, for comparisons): the 8 blocks of a token's cluster meet through distributed shared memory instead
// of global partial sums, a fence and an atomic, and all 8 share the pre-mix, norm and
// Q8_0 that hc_pre_late leaves to its last block alone (n / 8 columns each instead of n).
// Block r takes the mixing product's columns 4·(512·r + thread) .. + 3 (one 8-byte load a
// weight row, one float4 of x: hc·n ≤ 16,384) and the pre-mix's columns cpb·r + thread
// (cpb = n / 8 rounded up to 32, so a Q8_0 block of 32 stays in one warp). Every block adds
// the 8 blocks' shares in rank order, so all hold the same z (rank 0 writes it). Three
// cluster barriers: the shares, the pre-mix's sums of squares, and, split, the last
// distributed reads before any block may leave. The values are hc_pre_late's up to the
// order of the sums (8 shares of 2,048 columns rather than 32 of 512).
// HCL_CL (8) and HCL_BT (512) come from the host (source.rs), which sizes the launch.
// DS4_HC_GRAM (default since v34: the H200's step 1.5% shorter; the host's
// DS4_CUDA_HC_GRAM=0 keeps the third barrier): the pre-mix's norm without its own
// reduction. y = Σ_h pre_h·x_h, so Σ y² = Σ_{h,h'} pre_h·pre_h'·G_hh' with G the streams'
// Gram matrix (Σ_i x_h[i]·x_h'[i]). A thread holds its pre-mix column of all hc streams
// before the first exchange anyway, so G's hc(hc+1)/2 sums (in double) travel with the
// mixing product's shares, and its trace is the flattened state's sum of squares the first
// norm needs. That leaves one cluster barrier and one block reduction of three: every
// block forms the same quadratic form from the same shares in rank order. The values are
// the default's up to rounding (y² summed from the float y there, the exact form here).
#ifndef DS4_HC_GRAM
#define DS4_HC_GRAM 0
#endif
#define HC_GRAM_N (HC_MAX * (HC_MAX + 1) / 2)
#define HCL_NW (HCL_BT / 32)
extern "C" __global__ void __cluster_dims__(HCL_CL, 1, 1) __launch_bounds__(HCL_BT, 1)
hc_pre_cl_f16(const u16* w, const float* x, float* z, const float* scale, const float* base,
              const float* nw, float* xn, float* mixo, int hc, int n, int mix, int iters,
              float hc_eps, float eps, i8* q, float* d, int mix_out) {
    __shared__ float shm[HCL_NW][HC_MAX_MIX];
    __shared__ float part_s[HC_MAX_MIX];
    __shared__ float ps[HCL_CL][HC_MAX_MIX];
#if !DS4_HC_GRAM
    __shared__ double shd[32];
    __shared__ double sq_s[2];  // the block's squares: of its x columns, of its pre-mix columns
    __shared__ double pq[HCL_CL];
#endif
    __shared__ float zs[HC_MAX_MIX], pre[HC_MAX], sc_s[3], base_s[HC_MAX_MIX];
    int he = hc * n, t = blockIdx.y;
    u32 rank = cluster_rank();
    int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
    int c0 = (int)(rank * HCL_BT + threadIdx.x) * 4;
    bool live = c0 < he;  // he is a multiple of 128 (n of 32)
    pdl_signal_early();
    // Model weights: loaded before the wait (24 rows × 4 halves, 48 registers).
    uint2 wr[HC_MAX_MIX];
#pragma unroll
    for (int m = 0; m < HC_MAX_MIX; m++)
        wr[m] = m < mix && live ? *(const uint2*)(w + (size_t)m * he + c0) : make_uint2(0, 0);
    if (threadIdx.x < 3) sc_s[threadIdx.x] = scale[threadIdx.x];
    if (threadIdx.x < mix) base_s[threadIdx.x] = base[threadIdx.x];
    int cpb = ((n + HCL_CL - 1) / HCL_CL + 31) & ~31;
    int i2 = (int)rank * cpb + threadIdx.x;
    bool live2 = (int)threadIdx.x < cpb && i2 < n;  // warp-uniform
    pdl_wait();
    const float* xv = x + (size_t)t * he;
    // Both phases' inputs in one round of loads.
    float4 v = live ? *(const float4*)(xv + c0) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float xr[HC_MAX];
#pragma unroll
    for (int h = 0; h < HC_MAX; h++) xr[h] = live2 && h < hc ? __ldcg(&xv[(size_t)h * n + i2]) : 0.0f;
    float wn = live2 ? nw[i2] : 0.0f;
#if DS4_HC_GRAM
    __shared__ double shg[HCL_NW][HC_GRAM_N];
    __shared__ double g_s[HC_GRAM_N];
    __shared__ double pg[HCL_CL][HC_GRAM_N];
    __shared__ double gt[HC_GRAM_N];
    {
        // Entry k of the upper triangle, row by row: (0,0), (0,1), .., (1,1), ..
        double g[16];
        int k = 0;
#pragma unroll
        for (int h = 0; h < HC_MAX; h++)
#pragma unroll
            for (int h2 = h; h2 < HC_MAX; h2++) g[k++] = (double)xr[h] * (double)xr[h2];
#pragma unroll
        for (int j = HC_GRAM_N; j < 16; j++) g[j] = 0.0;
        warp_halve_sums_d16(g, lane);
        if (lane < HC_GRAM_N) shg[wp][lane] = g[0];
    }
#else
    double sq = (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z + (double)v.w * v.w;
    sq = warp_reduce(sq, SumOp());
    if (lane == 0) shd[wp] = sq;
#endif
    float p[32];
#pragma unroll
    for (int m = 0; m < 32; m++) {
        p[m] = 0.0f;
        if (m < HC_MAX_MIX && m < mix) {
            uint2 r = wr[m < HC_MAX_MIX ? m : 0];
            p[m] = h2f((u16)(r.x & 0xffff)) * v.x + h2f((u16)(r.x >> 16)) * v.y +
                   h2f((u16)(r.y & 0xffff)) * v.z + h2f((u16)(r.y >> 16)) * v.w;
        }
    }
    warp_halve_sums(p, lane);
    if (lane < mix) shm[wp][lane] = p[0];
    __syncthreads();
#pragma unroll
    for (int m = wp; m < HC_MAX_MIX; m += HCL_NW)
        if (m < mix) {
            float a = warp_sum(lane < HCL_NW ? shm[lane][m] : 0.0f);
            if (lane == 0) part_s[m] = a;
        }
#if DS4_HC_GRAM
    // Warps from the last take the Gram entries (the first ones take two mixing rows).
    if (HCL_NW - 1 - wp < HC_GRAM_N) {
        int k = HCL_NW - 1 - wp;
        double a = warp_reduce(lane < HCL_NW ? shg[lane][k] : 0.0, SumOp());
        if (lane == 0) g_s[k] = a;
    }
#else
    if (wp == HC_MAX_MIX % HCL_NW) {
        double a = warp_reduce(lane < HCL_NW ? shd[lane] : 0.0, SumOp());
        if (lane == 0) sq_s[0] = a;
    }
#endif
    cluster_barrier();
    // Every block's shares in one round of distributed loads, then added in rank order.
    if ((int)threadIdx.x < HCL_CL * mix) {
        int r = threadIdx.x / mix, m = threadIdx.x % mix;
        ps[r][m] = __uint_as_float(dsmem_ld((const u32*)&part_s[m], r));
#if DS4_HC_GRAM
    } else if (threadIdx.x >= 256 && threadIdx.x < 256 + HCL_CL * HC_GRAM_N) {  // 8 · mix ≤ 192 above
        int r = (threadIdx.x - 256) / HC_GRAM_N, k = (threadIdx.x - 256) % HC_GRAM_N;
        pg[r][k] = dsmem_ld_d(&g_s[k], r);
    }
    __syncthreads();
    // The last distributed reads are done: the others may leave once all arrive.
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
    if (threadIdx.x >= 64 && threadIdx.x < 64 + HC_GRAM_N) {
        double a = 0.0;
#pragma unroll
        for (int r = 0; r < HCL_CL; r++) a += pg[r][threadIdx.x - 64];
        gt[threadIdx.x - 64] = a;
    }
    if ((int)threadIdx.x < mix) {
        float a = 0.0f;
        double ss = 0.0;
#pragma unroll
        for (int r = 0; r < HCL_CL; r++) {
            a += ps[r][threadIdx.x];
            int k = 0;
#pragma unroll
            for (int h = 0; h < HC_MAX; h++) {  // the trace: entries (h, h)
                ss += pg[r][k];
                k += HC_MAX - h;
            }
        }
#else
    } else if (threadIdx.x >= 256 && threadIdx.x < 256 + HCL_CL) {  // 8 · mix ≤ 192 above
        pq[threadIdx.x - 256] = dsmem_ld_d(&sq_s[0], threadIdx.x - 256);
    }
    __syncthreads();
    if ((int)threadIdx.x < mix) {
        float a = 0.0f;
        double ss = 0.0;
#pragma unroll
        for (int r = 0; r < HCL_CL; r++) {
            a += ps[r][threadIdx.x];
            ss += pq[r];
        }
#endif
        a *= (float)(1.0 / sqrt(ss / (double)he + (double)eps));
        zs[threadIdx.x] = a;
        if (rank == 0) z[(size_t)t * mix + threadIdx.x] = a;
    }
    __syncthreads();
    if ((int)threadIdx.x < hc) pre[threadIdx.x] = sigmoidf_(zs[threadIdx.x] * sc_s[0] + base_s[threadIdx.x]) + hc_eps;
    if (mix_out && rank == 0 && wp == 1)
        hc_mix_warp(zs, sc_s, base_s, mixo + (size_t)t * (hc + hc * hc), hc, iters, hc_eps);
    __syncthreads();
    float y = 0.0f;
#pragma unroll
    for (int h = 0; h < HC_MAX; h++)
        if (h < hc) y += pre[h] * xr[h];
#if DS4_HC_GRAM
    double ss2 = 0.0;
    {
        int k = 0;
#pragma unroll
        for (int h = 0; h < HC_MAX; h++)
#pragma unroll
            for (int h2 = h; h2 < HC_MAX; h2++, k++)
                if (h2 < hc) {
                    double ph = (double)pre[h] * (double)pre[h2];
                    ss2 += (h2 == h ? ph : 2.0 * ph) * gt[k];
                }
    }
    float r2 = (float)(1.0 / sqrt(ss2 / (double)n + (double)eps));
    if (live2) {
        float o = y * r2 * wn;
        xn[(size_t)t * n + i2] = o;
        if (q) q8_0_lanes(o, lane, q, d, ((size_t)t * n + i2) / 32);
    }
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
#else
    double s2 = block_sum_d(live2 ? (double)y * (double)y : 0.0, shd);
    if (threadIdx.x == 0) sq_s[1] = s2;
    cluster_barrier();
    if (threadIdx.x < HCL_CL) pq[threadIdx.x] = dsmem_ld_d(&sq_s[1], threadIdx.x);
    __syncthreads();
    // This block's distributed reads are done: the others may leave once all arrive.
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
    double ss2 = 0.0;
#pragma unroll
    for (int r = 0; r < HCL_CL; r++) ss2 += pq[r];
    float r2 = (float)(1.0 / sqrt(ss2 / (double)n + (double)eps));
    if (live2) {
        float o = y * r2 * wn;
        xn[(size_t)t * n + i2] = o;
        if (q) q8_0_lanes(o, lane, q, d, ((size_t)t * n + i2) / 32);
    }
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}

extern "C" __global__ void __cluster_dims__(TK_CL, 1, 1) __launch_bounds__(1024)
topk_select_cl(const float* scores, int* sel, int* nsel, const int* pos0p, int ratio, int max_rows,
               int k) { pdl_begin();
    int pos0 = *pos0p;
    __shared__ u32 hist[2][256];
    __shared__ u32 wsum[8];
    __shared__ u32 found_digit, found_remaining;
    __shared__ u32 warp_cnt[32];
    __shared__ u32 base_take, base_eq, blk_gt, blk_eq;
    int t = blockIdx.y;
    u32 rank = cluster_rank();
    int n = (pos0 + t + 1) / ratio;
    if (n <= k) {  // the whole cluster leaves before any barrier
        if (rank == 0 && threadIdx.x == 0) nsel[t] = 0;
        return;
    }
    // Few rows (a short context in a state allocated for a long one): rank 0 alone, as
    // topk_select, without the cluster's barriers (which cost more than they save there).
    if (n <= TK_CL_MIN) {
        if (rank == 0) {
            topk_block(scores + (size_t)t * max_rows, n, sel + (size_t)t * k, k);
            if (threadIdx.x == 0) nsel[t] = k;
        }
        return;
    }
    const float* s = scores + (size_t)t * max_rows;
    int lane = threadIdx.x & 31;
    int sl = ((n + TK_CL - 1) / TK_CL + 31) & ~31;
    int lo = min(n, (int)rank * sl), hi = min(n, lo + sl);
    u32 prefix = 0, prefix_mask = 0, remaining = k;
    for (int shift = 24, pass = 0; shift >= 0; shift -= 8, pass++) {
        u32* h = hist[pass & 1];
        if (threadIdx.x < 256) h[threadIdx.x] = 0;
        __syncthreads();
        for (int start = lo; start < hi; start += blockDim.x) {
            int i = start + threadIdx.x;
            u32 key = i < hi ? order_key(s[i]) : 0;
            bool in = i < hi && (key & prefix_mask) == prefix;
            if (!__any_sync(0xffffffffu, in)) continue;
            u32 d = in ? (key >> shift) & 0xffu : 256u;
            u32 peers = __match_any_sync(0xffffffffu, d);
            if (in && lane == __ffs(peers) - 1) atomicAdd(&h[d], (u32)__popc(peers));
        }
        cluster_barrier();
        // The cluster's count of digit 255 - j, added over the blocks in rank order.
        u32 cnt = 0;
        if (threadIdx.x < 256)
            for (u32 r = 0; r < TK_CL; r++) cnt += dsmem_ld(&h[255 - threadIdx.x], r);
        topk_digit(cnt, remaining, wsum, &found_digit, &found_remaining);
        prefix |= found_digit << shift;
        prefix_mask |= 0xffu << shift;
        remaining = found_remaining;
    }
    u32 kth = prefix, take_eq = remaining;
    // This block's rows above the k-th key and equal to it, then the blocks' before it.
    if (threadIdx.x == 0) { blk_gt = 0; blk_eq = 0; }
    __syncthreads();
    for (int start = lo; start < hi; start += blockDim.x) {
        int i = start + threadIdx.x;
        u32 key = i < hi ? order_key(s[i]) : 0;
        u32 g = __ballot_sync(0xffffffffu, i < hi && key > kth);
        u32 e = __ballot_sync(0xffffffffu, i < hi && key == kth);
        if (lane == 0 && (g | e)) {
            atomicAdd(&blk_gt, (u32)__popc(g));
            atomicAdd(&blk_eq, (u32)__popc(e));
        }
    }
    cluster_barrier();
    if (threadIdx.x == 0) {
        u32 bg = 0, be = 0;
        for (u32 r = 0; r < rank; r++) {
            bg += dsmem_ld(&blk_gt, r);
            be += dsmem_ld(&blk_eq, r);
        }
        // Rows taken before this block: every row above the k-th key, and the first
        // take_eq of those equal to it.
        base_take = bg + min(be, take_eq);
        base_eq = be;
    }
    __syncthreads();
    topk_compact(s, lo, hi, kth, take_eq, sel + (size_t)t * k, warp_cnt, &base_take, &base_eq);
    // No block leaves while another may still read its counts.
    cluster_barrier();
    if (rank == 0 && threadIdx.x == 0) nsel[t] = k;
}

// ---------------------------------------------------------------------------------
// Rows one query at pos0 + t reads: the raw window (oldest first), then the compressed
// rows (the indexer's selection when there is one, else every visible row).
struct AttnRows {
    int first, n_raw, n;
    bool selected;
};
__device__ __forceinline__ AttnRows attn_rows(int pos, int t, int window, int ratio,
                                             const int* sel, const int* nsel) {
    AttnRows a;
    a.first = pos + 1 > window ? pos + 1 - window : 0;
    a.n_raw = pos + 1 - a.first;
    int n_comp = 0;
    a.selected = false;
    if (ratio > 0) {
        if (sel && nsel[t] > 0) { n_comp = nsel[t]; a.selected = true; }
        else n_comp = (pos + 1) / ratio;
    }
    a.n = a.n_raw + n_comp;
    return a;
}

// Rows r0 .. r0+nr of those into rowp[0..nr): raw rows through the ring, compressed rows
// through the selection (each address looked up once per block).
template <typename KV>
__device__ __forceinline__ void attn_row_table(const AttnRows& ar, int r0, int nr,
                                               const KV* ring, int ring_rows,
                                               const KV* comp, const int* sel, int sel_k,
                                               int t, int hd, const KV** rowp) {
    for (int j = threadIdx.x; j < nr; j += blockDim.x) {
        int r = r0 + j;
        if (r < ar.n_raw) rowp[j] = ring + (size_t)((ar.first + r) % ring_rows) * hd;
        else {
            int c = r - ar.n_raw;
            rowp[j] = comp + (size_t)(ar.selected ? sel[(size_t)t * sel_k + c] : c) * hd;
        }
    }
}

// Scores of rows rowp[0..nr) against hb query rows qs[hb][hd] (hd ≤ 512, checked on the
// host): a warp holds a row in registers and scores it for every head;
// wts[hh·wstride + j] = scale · (q_hh · row_j).
template <int MAXH = 8, typename KV>
__device__ __forceinline__ void attn_scores_rows(const KV** rowp, int nr, const float* qs,
                                                 int hb, int hd, float scale, float* wts,
                                                 int wstride) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int j = w; j < nr; j += nw) {
        const KV* row = rowp[j];
        float rv[16];
#pragma unroll
        for (int m = 0; m < 16; m++) rv[m] = lane + 32 * m < hd ? kv_get(row + lane + 32 * m) : 0.0f;
#pragma unroll
        for (int hh = 0; hh < MAXH; hh++) {
            if (hh >= hb) break;
            const float* qh = qs + hh * hd;
            float p = 0.0f;
#pragma unroll
            for (int m = 0; m < 16; m++)
                if (lane + 32 * m < hd) p += qh[lane + 32 * m] * rv[m];
            p = warp_sum(p);
            if (lane == 0) wts[hh * wstride + j] = p * scale;
        }
    }
}

// attn_scores_rows over f16 rows with a row per half-warp, so that a warp has two rows'
// loads in flight where it had one (decode's cluster ranges are ~5 rows a warp, each an L2
// round trip): lane l of a half takes the dims 8l + 128k .. + 7 (one 16-byte load each,
// k < hd / 128; hd a multiple of 128), the sums over a half's 16 lanes. Another order of
// the dot products' additions than attn_scores_rows.
template <int HB>
__device__ __forceinline__ void attn_scores_rows_hw(const u16** rowp, int nr, const float* qs, int hd,
                                                    float scale, float* wts, int wstride) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int hl = lane & 15, half = lane >> 4, nk = hd >> 7;
    for (int j0 = 2 * w; j0 < nr; j0 += 2 * nw) {
        int j = j0 + half;
        bool ok = j < nr;
        const u16* row = ok ? rowp[j] : nullptr;
        uint4 rv[4];
#pragma unroll
        for (int k = 0; k < 4; k++)
            rv[k] = ok && k < nk ? *(const uint4*)(row + 8 * hl + 128 * k) : make_uint4(0, 0, 0, 0);
        float p[HB];
#pragma unroll
        for (int hh = 0; hh < HB; hh++) p[hh] = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            if (k >= nk) break;
            u32 wd[4] = {rv[k].x, rv[k].y, rv[k].z, rv[k].w};
#pragma unroll
            for (int u = 0; u < 4; u += 2) {
                float v0 = h2f((u16)(wd[u] & 0xffff)), v1 = h2f((u16)(wd[u] >> 16));
                float v2 = h2f((u16)(wd[u + 1] & 0xffff)), v3 = h2f((u16)(wd[u + 1] >> 16));
#if DS4_ATT_QP
                // The staged queries' float4 (2k + u/2)·16 + hl (attn_q_perm): the 16
                // lanes of a half read 256 consecutive bytes.
                int d = 4 * (((2 * k + (u >> 1)) << 4) + hl);
#else
                int d = 8 * hl + 128 * k + 2 * u;
#endif
#pragma unroll
                for (int hh = 0; hh < HB; hh++) {
                    float4 qv = *(const float4*)&qs[hh * hd + d];
                    p[hh] += qv.x * v0 + qv.y * v1 + qv.z * v2 + qv.w * v3;
                }
            }
        }
#pragma unroll
        for (int hh = 0; hh < HB; hh++)
#pragma unroll
            for (int o = 8; o > 0; o >>= 1) p[hh] += __shfl_xor_sync(0xffffffffu, p[hh], o);
        if (ok && hl == 0)
#pragma unroll
            for (int hh = 0; hh < HB; hh++) wts[hh * wstride + j] = p[hh] * scale;
    }
}
// The cluster kernel's scores: by half-warps over f16 rows where DS4_ATT_HW, else as
// attention_split's.
template <int HB>
__device__ __forceinline__ void attn_scores_cl(const u16** rowp, int nr, const float* qs, int hd,
                                               float scale, float* wts, int wstride) {
#if DS4_ATT_HW
    if ((hd & 127) == 0) {
        attn_scores_rows_hw<HB>(rowp, nr, qs, hd, scale, wts, wstride);
        return;
    }
#endif
    attn_scores_rows<HB, u16>(rowp, nr, qs, HB, hd, scale, wts, wstride);
}
template <int HB>
__device__ __forceinline__ void attn_scores_cl(const float** rowp, int nr, const float* qs, int hd,
                                               float scale, float* wts, int wstride) {
    attn_scores_rows<HB, float>(rowp, nr, qs, HB, hd, scale, wts, wstride);
}

// One warp's softmax numerators over one head's scores: wh[0..n) becomes exp(wh - m)
// with m = max(m0, wh[..]); returns m, and the warp's Σ exp in *sum (every lane).
__device__ __forceinline__ float warp_exp_scores(float* wh, int n, float m0, float* sum) {
    int lane = threadIdx.x & 31;
    float mx = m0;
    for (int r = lane; r < n; r += 32) mx = fmaxf(mx, wh[r]);
    mx = warp_max(mx);
    float d = 0.0f;
    for (int r = lane; r < n; r += 32) {
        float e = expf(wh[r] - mx);
        wh[r] = e;
        d += e;
    }
    *sum = warp_sum(d);
    return mx;
}

// Column i of the weighted sums of rows rowp[0..n) for hb ≤ 8 heads:
// acc[hh] = Σ_j wts[hh·wstride + j] · rowp[j][i], the rows added in order (loads four
// rows ahead of the adds).
template <int MAXH = 8, typename KV>
__device__ __forceinline__ void attn_weighted_col(const KV** rowp, int n, const float* wts,
                                                  int wstride, int hb, int i, float* acc) {
#pragma unroll
    for (int hh = 0; hh < MAXH; hh++) acc[hh] = 0.0f;
    // RA rows' loads in flight per thread: decode's blocks are latency-bound here.
    constexpr int RA = 8;
    int r = 0;
    for (; r + RA <= n; r += RA) {
        float v[RA];
#pragma unroll
        for (int u = 0; u < RA; u++) v[u] = kv_get(rowp[r + u] + i);
#pragma unroll
        for (int u = 0; u < RA; u++)
#pragma unroll
            for (int hh = 0; hh < MAXH; hh++)
                if (hh < hb) acc[hh] += wts[hh * wstride + r + u] * v[u];
    }
    for (; r < n; r++) {
        float v = kv_get(rowp[r] + i);
#pragma unroll
        for (int hh = 0; hh < MAXH; hh++)
            if (hh < hb) acc[hh] += wts[hh * wstride + r] * v;
    }
}

// One head's attention output row in shared memory (written before a barrier): the
// inverse rotation of its rotated dims (V = K carries each key's rotation), then the
// store to ov.
__device__ __forceinline__ void attn_unrotate_store(float* row, int hd, int n_rot, int pos,
                                                    const float* freqs, float* ov) {
    int off = hd - n_rot;
    for (int k = threadIdx.x; k < n_rot / 2; k += blockDim.x)
        rope_pair(&row[off + 2 * k], &row[off + 2 * k + 1], pos, freqs[k], 1);
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) ov[i] = row[i];
}

// Attention (spec §3.5): one block per (head, token) over the raw window (oldest
// first), then the compressed rows (all visible ones, or the indexer's selection),
// softmax with the sink in the denominator, then inverse RoPE on the output.
// Dynamic shared memory: hd floats of query + max_rows floats of weights.
template <typename KV>
__device__ __forceinline__ void attention_body(const float* q, const KV* ring, int ring_rows,
                                     const KV* comp, const int* sel, const int* nsel,
                                     int sel_k, const float* sinks, float* o, int heads, int hd,
                                     int window, const int* pos0p, int ratio, const float* freqs,
                                     int n_rot, float scale, int rows_max) {
    int pos0 = *pos0p;
    // Shared: the query row, a weight per visible row, and each row's address (looked
    // up once: raw rows through the ring, compressed rows through the selection).
    extern __shared__ float sm[];
    __shared__ float red[32];
    int h = blockIdx.x, t = blockIdx.y, pos = pos0 + t;
    float* qs = sm;
    float* wts = sm + hd;
    const KV** rowp = (const KV**)(sm + hd + rows_max + (rows_max & 1));
    const float* qv = q + ((size_t)t * heads + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = qv[i];
    AttnRows ar = attn_rows(pos, t, window, ratio, sel, nsel);
    int n = ar.n;
    attn_row_table(ar, 0, n, ring, ring_rows, comp, sel, sel_k, t, hd, rowp);
    __syncthreads();
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int r = w; r < n; r += nw) {
        const KV* row = rowp[r];
        float p = 0.0f;
        for (int i = lane; i < hd; i += 32) p += qs[i] * kv_get(row + i);
        p = warp_sum(p);
        if (lane == 0) wts[r] = p * scale;
    }
    __syncthreads();
    float sink = sinks[h];
    float m = sink;
    for (int r = threadIdx.x; r < n; r += blockDim.x) m = fmaxf(m, wts[r]);
    m = block_max(m, red);
    float den = 0.0f;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        float e = expf(wts[r] - m);
        wts[r] = e;
        den += e;
    }
    den = block_sum(den, red) + expf(sink - m);
    __syncthreads();
    float* ov = o + ((size_t)t * heads + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        // Rows in order (the sum's order is the CPU's); loads run ahead of the adds.
        float acc = 0.0f;
        int r = 0;
        for (; r + 8 <= n; r += 8) {
            float v[8];
#pragma unroll
            for (int u = 0; u < 8; u++) v[u] = kv_get(rowp[r + u] + i);
#pragma unroll
            for (int u = 0; u < 8; u++) acc += wts[r + u] * v[u];
        }
        for (; r < n; r++) acc += wts[r] * kv_get(rowp[r] + i);
        qs[i] = acc / den;
    }
    __syncthreads();
    attn_unrotate_store(qs, hd, n_rot, pos, freqs, ov);
}
#define ATT_ARGS(KV)                                                                         \
    const float *q, const KV *ring, int ring_rows, const KV *comp, const int *sel,          \
        const int *nsel, int sel_k, const float *sinks, float *o, int heads, int hd,        \
        int window, const int *pos0p, int ratio, const float *freqs, int n_rot, float scale, \
        int rows_max
extern "C" __global__ void attention(ATT_ARGS(float)) {
    pdl_begin();
    attention_body(q, ring, ring_rows, comp, sel, nsel, sel_k, sinks, o, heads, hd, window,
                   pos0p, ratio, freqs, n_rot, scale, rows_max);
}
extern "C" __global__ void attention_kh(ATT_ARGS(u16)) {
    pdl_begin();
    attention_body(q, ring, ring_rows, comp, sel, nsel, sel_k, sinks, o, heads, hd, window,
                   pos0p, ratio, freqs, n_rot, scale, rows_max);
}

// A range's dynamic shared memory, staged (attention_split and its cluster form): the hb
// heads' queries qs[hb][hd], a weight per row and head wts[hb][span], and the range's row
// addresses rowp[nr] (raw rows through the ring, compressed ones through the selection).
// Where attn_scores_rows_hw's lane hl of a half-warp reads dims 8hl + 128k + 4v .. + 3 of
// a head's query (float4 f = 2hl + 32k + v), the permuted copy holds them at float4
// (2k + v)·16 + hl, so that a half-warp's 16 float4 reads are 256 consecutive bytes rather
// than 16 spread at a 32-byte stride (v33: the attention cluster's shared-memory
// wavefronts, 38% of them excess by ncu, were the bulk of its L1 traffic).
__device__ __forceinline__ int attn_q_perm(int d) {
    int f = d >> 2;
    return 4 * ((((f >> 5) * 2 + (f & 1)) << 4) + ((f >> 1) & 15)) + (d & 3);
}
template <typename KV, bool QP = false>
__device__ __forceinline__ void attn_range_stage(const float* q, const KV* ring, int ring_rows,
                                                 const KV* comp, const int* sel, int sel_k,
                                                 const AttnRows& ar, int r0, int nr, int t,
                                                 int heads, int h0, int hb, int hd, int span,
                                                 float* sm, float*& qs, float*& wts,
                                                 const KV**& rowp) {
    qs = sm;
    wts = sm + hb * hd;
    int wend = hb * hd + hb * span;
    rowp = (const KV**)(sm + wend + (wend & 1));
    for (int i = threadIdx.x; i < hb * hd; i += blockDim.x) {
        int j = i;
        if (QP) j = (i / hd) * hd + attn_q_perm(i % hd);
        qs[j] = q[((size_t)t * heads + h0) * hd + i];
    }
    attn_row_table(ar, r0, nr, ring, ring_rows, comp, sel, sel_k, t, hd, rowp);
    __syncthreads();
}

// Rows of one attention_split range for a query reading n rows: the launch's `span` is
// the most, sized for the context allocated (a decode graph's launch is fixed at
// capture); a query with fewer rows spreads them over more of the nsplit ranges, 32 or
// more each, rather than running a long chain in a few blocks.
__device__ __forceinline__ int split_span(int n, int span, int nsplit) {
    if (span <= 32) return span;  // contexts up to 64k: the launch's ranges as they are
    int s = max(32, (((n + nsplit - 1) / nsplit) + 15) & ~15);
    return min(span, s);
}

// Decode attention split over row ranges (flash-decoding): one block per (hb heads,
// token, range of `span` rows) instead of one per head over all rows, so a step's few
// queries fill the GPU. Each warp holds a row in registers for the block's heads. The
// block writes, per head, its range's score maximum m, Σ exp(s - m) and the
// unnormalized Σ exp(s - m)·row to part[(t, head, z)] = [m, den, acc[hd]];
// attention_combine merges the ranges with the sink. (Sums run in another order than
// the CPU's: by range, then across ranges.)
template <int HB, typename KV>
__device__ __forceinline__ void attention_split_body(const float* q, const KV* ring,
                                                     int ring_rows, const KV* comp,
                                                     const int* sel, const int* nsel, int sel_k,
                                                     float* part, int heads, int hd, int window,
                                                     const int* pos0p, int ratio, float scale,
                                                     int span, int nsplit) {
    const int hb = HB;
    int pos0 = *pos0p;
    extern __shared__ float sm[];
    int h0 = blockIdx.x * hb, t = blockIdx.y, z = blockIdx.z, pos = pos0 + t;
    AttnRows ar = attn_rows(pos, t, window, ratio, sel, nsel);
    int sp = split_span(ar.n, span, nsplit);
    int r0 = z * sp, r1 = min(ar.n, r0 + sp);
    if (r0 >= r1) return;  // attention_combine reads only the ranges below n
    int nr = r1 - r0;
    float *qs, *wts;
    const KV** rowp;
    attn_range_stage(q, ring, ring_rows, comp, sel, sel_k, ar, r0, nr, t, heads, h0, hb, hd, span,
                     sm, qs, wts, rowp);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    attn_scores_rows<HB, KV>(rowp, nr, qs, hb, hd, scale, wts, span);
    __syncthreads();
    size_t stride = (size_t)hd + 2;
    if (w < hb) {
        float d;
        float mx = warp_exp_scores(wts + w * span, nr, -INFINITY, &d);
        float* pp = part + (((size_t)t * heads + h0 + w) * nsplit + z) * stride;
        if (lane == 0) { pp[0] = mx; pp[1] = d; }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc[HB];
        attn_weighted_col<HB, KV>(rowp, nr, wts, span, hb, i, acc);
#pragma unroll
        for (int hh = 0; hh < HB; hh++)
            if (hh < hb) part[(((size_t)t * heads + h0 + hh) * nsplit + z) * stride + 2 + i] = acc[hh];
    }
}
// The head count a block serves is a template argument (the host's split_heads_per_block:
// 1, 2, 4 or 8), so the per-head loops unroll without predicates; two blocks of 512
// threads a SM (at most 64 registers) keep a 2k context's 320 blocks near one wave. Over
// f16 rows there is no 2: that instantiation spills, and split_heads_per_block never asks.
#define SPLIT_ARGS(KV)                                                                       \
    const float *q, const KV *ring, int ring_rows, const KV *comp, const int *sel,          \
        const int *nsel, int sel_k, float *part, int heads, int hd, int window,             \
        const int *pos0p, int ratio, float scale, int span, int nsplit, int hb
#define SPLIT_CALL(HB, KV)                                                                   \
    attention_split_body<HB, KV>(q, ring, ring_rows, comp, sel, nsel, sel_k, part, heads,    \
                                 hd, window, pos0p, ratio, scale, span, nsplit)
extern "C" __global__ void __launch_bounds__(512, 2) attention_split(SPLIT_ARGS(float)) {
    pdl_begin();
    switch (hb) {
    case 8: SPLIT_CALL(8, float); break;
    case 4: SPLIT_CALL(4, float); break;
    case 2: SPLIT_CALL(2, float); break;
    default: SPLIT_CALL(1, float); break;
    }
}
extern "C" __global__ void __launch_bounds__(512, 2) attention_split_kh(SPLIT_ARGS(u16)) {
    pdl_begin();
    switch (hb) {
    case 8: SPLIT_CALL(8, u16); break;
    case 4: SPLIT_CALL(4, u16); break;
    default: SPLIT_CALL(1, u16); break;
    }
}

// Merges attention_split's ranges for one (head, token): the softmax over all rows and
// the sink, then the inverse rotation (V = K carries each key's rotation).
// With `q`, also the Q8_0 of the output row (blocks of 32 within the head: hd is a
// multiple of 32) for the output projection, which then skips quant_q8_0.
// The ranges' maxima and denominators arrive in one round of loads (threads z) and the
// weighted sums' values eight ranges at a time for a thread's dimensions: v19's loop
// loaded one value, waited and added, range after range — about 2 + hd / blockDim
// chains of nsplit dependent L2 round trips a block (≈ 8 µs a layer on the critical
// path, bench/CUDA-SPEED.md v20). Every sum runs in its former order: the same values.
#define COMB_DIMS 4  // hd ≤ COMB_DIMS · blockDim: 128 threads, and attention_split takes hd ≤ 512
extern "C" __global__ void attention_combine(const float* part, const int* sel, const int* nsel,
                                             const float* sinks, float* o, int heads, int hd,
                                             int window, const int* pos0p, int ratio,
                                             const float* freqs, int n_rot, int span,
                                             int nsplit, i8* q, float* qd) { pdl_begin();
    int pos0 = *pos0p;
    extern __shared__ float sm[];  // hd, then per range its factor, maximum, denominator
    float* ez = sm + hd;
    float* ms = ez + nsplit;
    float* ds = ms + nsplit;
    int h = blockIdx.x, t = blockIdx.y, pos = pos0 + t;
    AttnRows ar = attn_rows(pos, t, window, ratio, sel, nsel);
    int sp = split_span(ar.n, span, nsplit);
    int nz = (ar.n + sp - 1) / sp;
    size_t stride = (size_t)hd + 2;
    const float* pp = part + ((size_t)t * heads + h) * nsplit * stride;
    for (int z = threadIdx.x; z < nz; z += blockDim.x) {
        ms[z] = pp[z * stride];
        ds[z] = pp[z * stride + 1];
    }
    __syncthreads();
    float sink = sinks[h];
    float mx = sink;
    for (int z = 0; z < nz; z++) mx = fmaxf(mx, ms[z]);
    // Each range's factor once (threads z), not once per dimension: the same values.
    for (int z = threadIdx.x; z < nz; z += blockDim.x) ez[z] = expf(ms[z] - mx);
    __syncthreads();
    float den = expf(sink - mx);
    for (int z = 0; z < nz; z++) den += ds[z] * ez[z];
    float acc[COMB_DIMS];
#pragma unroll
    for (int k = 0; k < COMB_DIMS; k++) acc[k] = 0.0f;
    const int ZB = 8;
    for (int z0 = 0; z0 < nz; z0 += ZB) {
        float v[ZB][COMB_DIMS];
#pragma unroll
        for (int u = 0; u < ZB; u++)
#pragma unroll
            for (int k = 0; k < COMB_DIMS; k++) {
                int i = threadIdx.x + k * blockDim.x;
                v[u][k] = z0 + u < nz && i < hd ? pp[(z0 + u) * stride + 2 + i] : 0.0f;
            }
#pragma unroll
        for (int u = 0; u < ZB; u++)
            if (z0 + u < nz)
#pragma unroll
                for (int k = 0; k < COMB_DIMS; k++) acc[k] += v[u][k] * ez[z0 + u];
    }
#pragma unroll
    for (int k = 0; k < COMB_DIMS; k++) {
        int i = threadIdx.x + k * blockDim.x;
        if (i < hd) sm[i] = acc[k] / den;
    }
    __syncthreads();
    size_t base = ((size_t)t * heads + h) * hd;
    attn_unrotate_store(sm, hd, n_rot, pos, freqs, o + base);
    if (q)
        for (int i = threadIdx.x; i < hd; i += blockDim.x)
            q8_0_lanes(sm[i], threadIdx.x & 31, q, qd, (base + i) / 32);
}

// Every column's weighted sums of a range's rows for HB heads into qs[HB][hd], a column a
// thread (attn_weighted_col).
template <int HB, typename KV>
__device__ __forceinline__ void attn_weighted_cols(const KV** rowp, int nr, const float* wts,
                                                   int wstride, int hd, float* qs) {
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc[HB];
        attn_weighted_col<HB, KV>(rowp, nr, wts, wstride, HB, i, acc);
#pragma unroll
        for (int hh = 0; hh < HB; hh++) qs[hh * hd + i] = acc[hh];
    }
}
// The cluster kernel's weighted sums of its range into qs[HB][hd]. Over f16 rows with
// DS4_ATT_WV2 (default; DS4_CUDA_ATTN_WV2=0 the old loop): a thread takes two adjacent
// columns (one 4-byte load a row) and 16 rows' loads in flight, where attn_weighted_col
// takes one column and 8 — half the load instructions and half the dependent rounds over
// a range's ~80 rows, with half the threads (the H200's step −1.0%, v24). Each column's
// rows are added in the same order with the same products: the same values.
// Rows [r, r_end) of column pair i, i + 1 added into acc in row order.
template <int HB>
__device__ __forceinline__ void attn_weighted_pair(const u16** rowp, int r, int r_end, const float* wts,
                                                   int wstride, int i, float (&acc)[HB][2]) {
    constexpr int RA = 16;
    for (; r + RA <= r_end; r += RA) {
        u32 v[RA];
#pragma unroll
        for (int u = 0; u < RA; u++) v[u] = *(const u32*)(rowp[r + u] + i);
#pragma unroll
        for (int u = 0; u < RA; u++) {
            float lo = h2f((u16)(v[u] & 0xffff)), hi = h2f((u16)(v[u] >> 16));
#pragma unroll
            for (int hh = 0; hh < HB; hh++) {
                float wgt = wts[hh * wstride + r + u];
                acc[hh][0] += wgt * lo;
                acc[hh][1] += wgt * hi;
            }
        }
    }
    for (; r < r_end; r++) {
        u32 v = *(const u32*)(rowp[r] + i);
        float lo = h2f((u16)(v & 0xffff)), hi = h2f((u16)(v >> 16));
#pragma unroll
        for (int hh = 0; hh < HB; hh++) {
            float wgt = wts[hh * wstride + r];
            acc[hh][0] += wgt * lo;
            acc[hh][1] += wgt * hi;
        }
    }
}
template <int HB>
__device__ __forceinline__ void attn_weighted_cl(const u16** rowp, int nr, const float* wts,
                                                 int wstride, int hd, float* qs) {
#if DS4_ATT_WV2
    if ((hd & 1) == 0) {
        for (int i = 2 * threadIdx.x; i < hd; i += 2 * blockDim.x) {
            float acc[HB][2];
#pragma unroll
            for (int hh = 0; hh < HB; hh++) acc[hh][0] = acc[hh][1] = 0.0f;
            attn_weighted_pair<HB>(rowp, 0, nr, wts, wstride, i, acc);
#pragma unroll
            for (int hh = 0; hh < HB; hh++) {
                qs[hh * hd + i] = acc[hh][0];
                qs[hh * hd + i + 1] = acc[hh][1];
            }
        }
        return;
    }
#endif
    attn_weighted_cols<HB>(rowp, nr, wts, wstride, hd, qs);
}
template <int HB>
__device__ __forceinline__ void attn_weighted_cl(const float** rowp, int nr, const float* wts,
                                                 int wstride, int hd, float* qs) {
    attn_weighted_cols<HB>(rowp, nr, wts, wstride, hd, qs);
}

// Decode attention on a thread-block cluster: attention_split's ranges of one (4 heads,
// token) are the ATT_CL blocks of a cluster, which merge them through distributed shared
// memory instead of writing partials for attention_combine, a launch later on the chain
// (v20's critical path: the combine alone 262 µs of a 7,055 µs step). Each block scores
// and sums its range as attention_split does, into its own shared memory; after a cluster
// barrier block z merges dims z·hd/ATT_CL.. of its 4 heads over every block's range —
// the ranges' maxima and the sink, the denominator and the weighted sums added in range
// order as attention_combine adds them — then the inverse rotation of those dims (pairs
// within a slice: hd − n_rot and the slice a multiple of 32), the output and its Q8_0
// (a slice's warp holds whole Q8_0 blocks). Empty ranges (a short context) keep m = −∞,
// Σ = 0 and zero sums: factor 0. ATT_CL (8 or 16) comes from the host (source.rs), which
// checks hd % (32·ATT_CL) == 0 and 4·hd/ATT_CL ≤ 512 and sizes the launch: grid (heads/4,
// T, ATT_CL), 512 threads.
template <typename KV>
__device__ __forceinline__ void attention_split_cl_body(const float* q, const KV* ring,
                                                        int ring_rows, const KV* comp,
                                                        const int* sel, const int* nsel,
                                                        int sel_k, const float* sinks, float* o,
                                                        int heads, int hd, int window,
                                                        const int* pos0p, int ratio,
                                                        const float* freqs, int n_rot,
                                                        float scale, int span, i8* oq,
                                                        float* oqd) {
    const int HB = 4;
    __shared__ float mz[HB], dz[HB];          // this block's range, per head: max, Σ exp
    __shared__ float mall[HB][ATT_CL], fall[HB][ATT_CL], den_s[HB];
    __shared__ float ys[512];                 // this block's merged slice, [HB][hd / ATT_CL]
    int pos0 = *pos0p;
    extern __shared__ float sm[];
    int h0 = blockIdx.x * HB, t = blockIdx.y, pos = pos0 + t;
    u32 z = cluster_rank();
    AttnRows ar = attn_rows(pos, t, window, ratio, sel, nsel);
    int sp = split_span(ar.n, span, ATT_CL);
    int r0 = min(ar.n, (int)z * sp), r1 = min(ar.n, r0 + sp);
    int nr = r1 - r0;
    // qs: the queries, then this range's weighted sums.
    float *qs, *wts;
    const KV** rowp;
    constexpr bool QP = DS4_ATT_HW && DS4_ATT_QP && sizeof(KV) == 2;
    if (QP && (hd & 127) == 0)
        attn_range_stage<KV, QP>(q, ring, ring_rows, comp, sel, sel_k, ar, r0, nr, t, heads, h0, HB,
                                 hd, span, sm, qs, wts, rowp);
    else
        attn_range_stage(q, ring, ring_rows, comp, sel, sel_k, ar, r0, nr, t, heads, h0, HB, hd, span,
                         sm, qs, wts, rowp);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    attn_scores_cl<HB>(rowp, nr, qs, hd, scale, wts, span);
    __syncthreads();
    if (w < HB) {
        float d = 0.0f, mx = -INFINITY;
        if (nr > 0) mx = warp_exp_scores(wts + w * span, nr, -INFINITY, &d);
        if (lane == 0) { mz[w] = mx; dz[w] = d; }
    }
    __syncthreads();
    // The scores are done with the queries: the sums overwrite them, column by column.
    attn_weighted_cl<HB>(rowp, nr, wts, span, hd, qs);
    cluster_barrier();
    if ((int)threadIdx.x < HB * ATT_CL) {
        int hh = threadIdx.x % HB, r = threadIdx.x / HB;
        mall[hh][r] = __uint_as_float(dsmem_ld((const u32*)&mz[hh], r));
        fall[hh][r] = __uint_as_float(dsmem_ld((const u32*)&dz[hh], r));
    }
    __syncthreads();
    if ((int)threadIdx.x < HB) {
        int hh = threadIdx.x;
        float sink = sinks[h0 + hh], mx = sink;
        for (int r = 0; r < ATT_CL; r++) mx = fmaxf(mx, mall[hh][r]);
        float den = expf(sink - mx);
        for (int r = 0; r < ATT_CL; r++) {
            float f = expf(mall[hh][r] - mx);
            den += fall[hh][r] * f;
            fall[hh][r] = f;
        }
        den_s[hh] = den;
    }
    __syncthreads();
    int dsl = hd / ATT_CL;
    int hh = threadIdx.x / dsl, i = (int)z * dsl + threadIdx.x % dsl;
    bool live = hh < HB;
    if (live) {
        float v[ATT_CL];
#pragma unroll
        for (int r = 0; r < ATT_CL; r++) v[r] = __uint_as_float(dsmem_ld((const u32*)&qs[hh * hd + i], r));
        float acc = 0.0f;
#pragma unroll
        for (int r = 0; r < ATT_CL; r++) acc += v[r] * fall[hh][r];
        ys[threadIdx.x] = acc / den_s[hh];
    }
    // This block's distributed reads are done: the others may leave once all arrive.
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
    __syncthreads();
    int off = hd - n_rot;
    if (live && i >= off && ((i - off) & 1) == 0)
        rope_pair(&ys[threadIdx.x], &ys[threadIdx.x + 1], pos, freqs[(i - off) >> 1], 1);
    __syncthreads();
    if (live) {
        size_t base = ((size_t)t * heads + h0 + hh) * hd;
        float y = ys[threadIdx.x];
        o[base + i] = y;
        if (oq) q8_0_lanes(y, lane, oq, oqd, (base + i) / 32);
    }
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}
#define SPLIT_CL_ARGS(KV)                                                                    \
    const float *q, const KV *ring, int ring_rows, const KV *comp, const int *sel,          \
        const int *nsel, int sel_k, const float *sinks, float *o, int heads, int hd,        \
        int window, const int *pos0p, int ratio, const float *freqs, int n_rot, float scale, \
        int span, i8 *oq, float *oqd
#define SPLIT_CL_CALL                                                                        \
    attention_split_cl_body(q, ring, ring_rows, comp, sel, nsel, sel_k, sinks, o, heads, hd, \
                            window, pos0p, ratio, freqs, n_rot, scale, span, oq, oqd)
extern "C" __global__ void __cluster_dims__(1, 1, ATT_CL) __launch_bounds__(512, 2)
attention_split_cl(SPLIT_CL_ARGS(float)) { pdl_begin(); SPLIT_CL_CALL; }
extern "C" __global__ void __cluster_dims__(1, 1, ATT_CL) __launch_bounds__(512, 2)
attention_split_cl_kh(SPLIT_CL_ARGS(u16)) { pdl_begin(); SPLIT_CL_CALL; }

// The greedy choice over one logits row, on the GPU so that a greedy decode step copies
// back 4 bytes instead of the row (and the host does not scan it): the host's
// sampling::argmax exactly — NaN never chosen, the largest value, ties to the lower id —
// with `banned` (≥ 0) counted as −∞, as the host's callers set it. AM_BLOCKS (from the
// host) blocks of
// 1,024 threads, each thread two or three ids (one block alone walked 126 ids a thread, a
// load and its compare at a time: ~0.1 ms, as long as the host's scan, v22); each block's
// best to `pick`, and the last block to arrive merges them. pick: [0] the id (−1 where
// every value is NaN), [1] the arrival count (back to 0 by the last block), [4..) the
// blocks' values, then their ids.
__device__ __forceinline__ void argmax_merge(float& v, int& i, float v2, int i2) {
    if (i2 >= 0 && (i < 0 || v2 > v || (v2 == v && i2 < i))) { v = v2; i = i2; }
}
__device__ __forceinline__ void argmax_block(float& v, int& id, float* bv, int* bi) {
    for (int o = 16; o > 0; o >>= 1)
        argmax_merge(v, id, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, id, o));
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) { bv[w] = v; bi[w] = id; }
    __syncthreads();
    if (w == 0) {
        v = lane < (int)(blockDim.x >> 5) ? bv[lane] : 0.0f;
        id = lane < (int)(blockDim.x >> 5) ? bi[lane] : -1;
        for (int o = 16; o > 0; o >>= 1)
            argmax_merge(v, id, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, id, o));
    }
}
extern "C" __global__ void __launch_bounds__(1024) argmax_row(const float* x, int n, int banned, int* pick) {
    pdl_begin();
    __shared__ float bv[32];
    __shared__ int bi[32];
    __shared__ bool last;
    float* pv = (float*)(pick + 4);
    int* pi = pick + 4 + AM_BLOCKS;
    float v = 0.0f;
    int id = -1;
    // A thread's ids rise, so a strictly larger value alone replaces its best.
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n; k += gridDim.x * blockDim.x) {
        float y = k == banned ? -INFINITY : x[k];
        if (!isnan(y) && (id < 0 || y > v)) { v = y; id = k; }
    }
    argmax_block(v, id, bv, bi);
    if (threadIdx.x == 0) {
        pv[blockIdx.x] = v;
        pi[blockIdx.x] = id;
        __threadfence();
        last = atomicAdd((unsigned*)&pick[1], 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    v = 0.0f;
    id = -1;
    for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x) argmax_merge(v, id, __ldcg(&pv[b]), __ldcg(&pi[b]));
    __syncthreads();  // bv, bi reused
    argmax_block(v, id, bv, bi);
    if (threadIdx.x == 0) {
        pick[0] = id;
        pick[1] = 0;
    }
}

// ---------------------------------------------------------------------------------
// MoE (spec §3.10).

// Routing of one token per block (thread 0: 6 of 256 is tiny): sqrt(softplus) scores,
// hash table or biased top-k (ties to the lower expert), weights normalized by their
// sum (floored) and scaled. ids/wts: [T, k] in selection order.
// Attention for a run of tokens (prefill): one block per (token, `hb` heads). All heads
// read the same K=V rows, so a block loads each row once for its hb heads instead of
// once per head. Per head the dot products and the weighted sum run in the order of
// `attention`; the softmax denominators are summed per warp (another order).
template <typename KV>
__device__ __forceinline__ void attention_mh_body(const float* q, const KV* ring, int ring_rows,
                                        const KV* comp, const int* sel, const int* nsel,
                                        int sel_k, const float* sinks, float* o, int heads,
                                        int hd, int window, const int* pos0p, int ratio,
                                        const float* freqs, int n_rot, float scale, int rows_max,
                                        int hb) {
    int pos0 = *pos0p;
    extern __shared__ float sm[];
    __shared__ float den_s[8];
    int h0 = blockIdx.x * hb, t = blockIdx.y, pos = pos0 + t;
    float* qs = sm;                       // [hb][hd]
    float* wts = sm + hb * hd;            // [hb][rows_max]
    int wend = hb * hd + hb * rows_max;
    const KV** rowp = (const KV**)(sm + wend + (wend & 1));
    for (int i = threadIdx.x; i < hb * hd; i += blockDim.x)
        qs[i] = q[((size_t)t * heads + h0) * hd + i];
    AttnRows ar = attn_rows(pos, t, window, ratio, sel, nsel);
    int n = ar.n;
    attn_row_table(ar, 0, n, ring, ring_rows, comp, sel, sel_k, t, hd, rowp);
    __syncthreads();
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    attn_scores_rows(rowp, n, qs, hb, hd, scale, wts, rows_max);
    __syncthreads();
    if (w < hb) {
        float sink = sinks[h0 + w], d;
        float mx = warp_exp_scores(wts + w * rows_max, n, sink, &d);
        d += expf(sink - mx);
        if (lane == 0) den_s[w] = d;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc[8];
        attn_weighted_col(rowp, n, wts, rows_max, hb, i, acc);
#pragma unroll
        for (int hh = 0; hh < 8; hh++)
            if (hh < hb) qs[hh * hd + i] = acc[hh] / den_s[hh];
    }
    __syncthreads();
    int off = hd - n_rot;
    for (int k = threadIdx.x; k < hb * (n_rot / 2); k += blockDim.x) {
        int hh = k / (n_rot / 2), kk = k % (n_rot / 2);
        float* qh = qs + hh * hd;
        rope_pair(&qh[off + 2 * kk], &qh[off + 2 * kk + 1], pos, freqs[kk], 1);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hb * hd; i += blockDim.x)
        o[((size_t)t * heads + h0) * hd + i] = qs[i];
}
extern "C" __global__ void attention_mh(ATT_ARGS(float), int hb) {
    pdl_begin();
    attention_mh_body(q, ring, ring_rows, comp, sel, nsel, sel_k, sinks, o, heads, hd, window,
                      pos0p, ratio, freqs, n_rot, scale, rows_max, hb);
}
extern "C" __global__ void attention_mh_kh(ATT_ARGS(u16), int hb) {
    pdl_begin();
    attention_mh_body(q, ring, ring_rows, comp, sel, nsel, sel_k, sinks, o, heads, hd, window,
                      pos0p, ratio, freqs, n_rot, scale, rows_max, hb);
}

// Attention for a run of tokens on the tensor cores (rows exact in f16, as the QAT
// simulation stores them; hd a multiple of 64 up to 512). One block per (16·mt heads,
// token), 4·mt warps (mt = blockDim.x / 128: 1, 2 or 4), over the query's rows in tiles
// of 32 staged in shared memory as f16: warp w scores 8 rows (w % 4) of the tile for
// its 16 heads (w / 4) with mma m16n8k16, the queries as f16 hi + lo (~22 significant
// bits); the tile's softmax numerators update a running maximum per head (flash-style:
// the sums so far are rescaled when it grows; it starts at the sink), and warp w adds
// P·V for a quarter (w % 4) of the dimensions of its heads (P as f16 hi + lo, V through
// ldmatrix.trans). More heads per block stage each row for more of them. Sums run in
// another order than the CPU's and carry the rescaling roundings, as attention_split's.
// (Decode keeps attention_split: a step's few queries give this kernel too few blocks.)
// Dynamic shared memory: attention_mma_shared(hd, 16·mt, rows_max, NB) bytes.
#define ATT_TR 32
__device__ __forceinline__ void ldsm_x4_trans(u32& r0, u32& r1, u32& r2, u32& r3, const void* p) {
    u32 a = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(a));
}
// KV = u16 (rows stored in f16) stages the tiles by cp.async, straight into shared
// memory; NB = 2 loads the next tile while the block works on this one (f32 rows go
// through registers for their conversion, one buffer).
template <typename KV, int NB>
__device__ __forceinline__ void attention_mma_body(
    const float* q, const KV* ring, int ring_rows, const KV* comp, const int* sel,
    const int* nsel, int sel_k, const float* sinks, float* o, int heads, int hd, int window,
    const int* pos0p, int ratio, const float* freqs, int n_rot, float scale, int rows_max,
    i8* oq, float* od, float qeps) {
    int pos0 = *pos0p;
    int h0 = blockIdx.x * (blockDim.x >> 3), t = blockIdx.y, pos = pos0 + t;
    AttnRows ar = attn_rows(pos, t, window, ratio, sel, nsel);
    int n = ar.n;
    extern __shared__ __align__(16) u8 smb[];
    const int hpb = blockDim.x >> 3;  // 16 heads per 4 warps
    const int ld = hd + 8;  // halves per staged row: rows 16 bytes apart in the banks
    const int pld = ATT_TR + 8;
    // The row table's size rounded up to an even count: what follows is read by
    // ldmatrix, whose rows must be 16-byte aligned (an odd rows_max — a heavy layer at a
    // context whose ctx / ratio is odd — faulted with a misaligned address).
    const KV** rowp = (const KV**)smb;                    // [rows_max rounded up to even]
    u16* qh = (u16*)(smb + (size_t)((rows_max + 1) & ~1) * 8);  // [hpb][ld]
    u16* ql = qh + hpb * ld;                              // [hpb][ld]
    u16* rs = ql + hpb * ld;                              // [NB][ATT_TR][ld]
    float* ss = (float*)(rs + NB * ATT_TR * ld);          // [hpb][ATT_TR]
    u16* ph = (u16*)(ss + hpb * ATT_TR);                  // [hpb][pld]
    u16* pl = ph + hpb * pld;                             // [hpb][pld]
    float* m_run = (float*)(pl + hpb * pld);              // [hpb]
    float* den = m_run + hpb;
    float* alpha = den + hpb;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int mw = warp >> 2, nw = warp & 3;  // the warp's 16 heads; its rows / dimensions share
    if (qeps >= 0.0f) {
        // The queries as they come from q_b: head_norm_rope_w's norm and rotation here, a
        // warp a head (its values bit for bit), instead of a pass writing them back.
        for (int hh = warp; hh < hpb; hh += blockDim.x >> 5) {
            float4 a[4];
            head_norm_rope_lane(q + ((size_t)t * heads + h0 + hh) * hd, hd, qeps, freqs, n_rot, pos, a);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                if (j < (hd >> 7)) {
                    // As mm_f16's staging: two conversions an instruction, 8-byte stores.
                    int c = hh * ld + 128 * j + 4 * lane;
                    f16_split4(a[j], *(uint2*)(qh + c), *(uint2*)(ql + c));
                }
            }
        }
    } else {
        for (int i = threadIdx.x; i < hpb * hd; i += blockDim.x) {
            int hh = i / hd, c = i % hd;
            float x = q[((size_t)t * heads + h0 + hh) * hd + c];
            u16 hi = f2h(x);
            qh[hh * ld + c] = hi;
            ql[hh * ld + c] = f2h(x - h2f(hi));
        }
    }
    if (threadIdx.x < hpb) {
        // The sink enters as a row with score `sink`: exp(sink − m) at m = sink.
        m_run[threadIdx.x] = sinks[h0 + threadIdx.x];
        den[threadIdx.x] = 1.0f;
    }
    attn_row_table(ar, 0, n, ring, ring_rows, comp, sel, sel_k, t, hd, rowp);
    __syncthreads();
    int ntw = hd >> 5;  // n-tiles of 8 dimensions in a quarter of hd
    int dw0 = nw * (hd >> 2);
    float acc[16][4];
#pragma unroll
    for (int i = 0; i < 16; i++)
#pragma unroll
        for (int k = 0; k < 4; k++) acc[i][k] = 0.0f;
    // Stage tile r0's rows as f16 (exact) at dst; rows past n are zeros (0 · row, not NaN).
    auto stage = [&](int r0, u16* dst) {
        if constexpr (sizeof(KV) == 2) {
            int c8 = hd >> 3, tot = ATT_TR * c8;
            for (int i = threadIdx.x; i < tot; i += blockDim.x) {
                int j = i / c8, c = i % c8;
                bool ok = r0 + j < n;
                cp_async16(dst + j * ld + 8 * c, ok ? (const void*)(rowp[r0 + j] + 8 * c) : (const void*)rowp[r0],
                           ok ? 16 : 0);
            }
        } else {
            // Four loads in flight per thread before any conversion (the accumulators
            // leave no registers for more at two blocks per SM).
            int q4 = hd >> 2, total = ATT_TR * q4;
            for (int base = threadIdx.x; base < total; base += 4 * blockDim.x) {
                float4 v[4];
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    int i = base + u * blockDim.x, j = i / q4;
                    v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    if (i < total && r0 + j < n) v[u] = kv_ldg4(rowp[r0 + j] + 4 * (i % q4));
                }
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    int i = base + u * blockDim.x;
                    if (i < total) {
                        u32 lo = pack_h2(f2h(v[u].x), f2h(v[u].y)), hi = pack_h2(f2h(v[u].z), f2h(v[u].w));
                        *(uint2*)(dst + (i / q4) * ld + 4 * (i % q4)) = make_uint2(lo, hi);
                    }
                }
            }
        }
    };
    static_assert(NB == 1 || sizeof(KV) == 2, "double buffering takes f16 rows");
    if (NB == 2) {
        stage(0, rs);
        cp_async_commit();
    }
    for (int r0 = 0, it = 0; r0 < n; r0 += ATT_TR, it++) {
        u16* rt = rs + (NB == 2 ? (it & 1) : 0) * ATT_TR * ld;
        if (NB == 2) {
            // The other buffer was last read before the previous tile's closing barrier.
            if (r0 + ATT_TR < n) stage(r0 + ATT_TR, rs + ((it + 1) & 1) * ATT_TR * ld);
            cp_async_commit();
            cp_async_wait1();
        } else {
            stage(r0, rt);
            if constexpr (sizeof(KV) == 2) {
                cp_async_commit();
                cp_async_wait0();
            }
        }
        __syncthreads();
#if DS4_ATT_KS2
        // DS4_ATT_KS2 (v25, prepared): warp w scores rows 16·(nw & 1).. (two n-tiles) over
        // half the dimensions, (nw >> 1)·hd/2.., for heads 16·mw... Each query fragment
        // read from shared memory then serves two n-tiles, not one: 24 KB of shared loads a
        // warp a tile instead of 40 (the scores were bound by shared-memory bandwidth,
        // 16 warps re-reading 32 KB of queries each a tile), and two accumulators halve
        // the mma chain. The first half's sums go to ss, the second's to the P buffers
        // (free until the softmax, which reads each thread's four partials from the very
        // bytes it later writes its P to); the softmax adds them, scales and masks.
        {
            float c[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
            int rh = nw & 1, kh = nw >> 1, hd2 = hd >> 1;
            // Fragments by ldmatrix (8 row addresses a matrix, 16-byte rows): the queries'
            // lanes 0-7 rows 0-7, 8-15 rows 8-15, 16-31 the same 8 dimensions on (a0..a3);
            // the rows' lanes 0-7 n-tile 0, 8-15 its dimensions 8.., 16-31 n-tile 1 (b0, b1
            // of each).
            int mi = lane >> 3, ri = lane & 7;
            const u16* qa = qh + (16 * mw + ri + 8 * (mi & 1)) * ld + kh * hd2 + 8 * (mi >> 1);
            const u16* qb = ql + (16 * mw + ri + 8 * (mi & 1)) * ld + kh * hd2 + 8 * (mi >> 1);
            const u16* rb = rt + (16 * rh + 8 * (mi >> 1) + ri) * ld + kh * hd2 + 8 * (mi & 1);
            for (int k0 = 0; k0 < hd2; k0 += 16) {
                u32 ah[4], al[4], b[4];
                ldsm_x4(ah[0], ah[1], ah[2], ah[3], qa + k0);
                ldsm_x4(al[0], al[1], al[2], al[3], qb + k0);
                ldsm_x4(b[0], b[1], b[2], b[3], rb + k0);
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    mma_f16_16816(c[j], ah, b[2 * j], b[2 * j + 1]);
                    mma_f16_16816(c[j], al, b[2 * j], b[2 * j + 1]);
                }
            }
            int ha = 16 * mw + g;
#pragma unroll
            for (int j = 0; j < 2; j++) {
                int ja = 16 * rh + 8 * j + 2 * tq;
                if (kh == 0) {
                    ss[ha * ATT_TR + ja] = c[j][0];
                    ss[ha * ATT_TR + ja + 1] = c[j][1];
                    ss[(ha + 8) * ATT_TR + ja] = c[j][2];
                    ss[(ha + 8) * ATT_TR + ja + 1] = c[j][3];
                } else {
                    // Row r of head h: P slot (h, 4·(r/4) + r%4) — floats r%4 = 0, 1 in
                    // its ph bytes, 2, 3 in its pl bytes (ja is even: a pair shares one).
                    u8* hp = (u8*)((ja & 2) ? pl : ph);
                    int o0 = 2 * (ha * pld + (ja & ~3));
                    int o1 = 2 * ((ha + 8) * pld + (ja & ~3));
                    *(float2*)(hp + o0) = make_float2(c[j][0], c[j][1]);
                    *(float2*)(hp + o1) = make_float2(c[j][2], c[j][3]);
                }
            }
        }
#else
        // Scores of rows 8·nw.. for heads 16·mw..
        {
            float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            const u16* rb = rt + (8 * nw + g) * ld + 2 * tq;
            const u16* qa = qh + (16 * mw + g) * ld + 2 * tq;
            const u16* qb = ql + (16 * mw + g) * ld + 2 * tq;
            for (int k0 = 0; k0 < hd; k0 += 16) {
                u32 b0 = *(const u32*)(rb + k0), b1 = *(const u32*)(rb + k0 + 8);
                u32 ah[4], al[4];
                ah[0] = *(const u32*)(qa + k0);
                ah[1] = *(const u32*)(qa + 8 * ld + k0);
                ah[2] = *(const u32*)(qa + k0 + 8);
                ah[3] = *(const u32*)(qa + 8 * ld + k0 + 8);
                al[0] = *(const u32*)(qb + k0);
                al[1] = *(const u32*)(qb + 8 * ld + k0);
                al[2] = *(const u32*)(qb + k0 + 8);
                al[3] = *(const u32*)(qb + 8 * ld + k0 + 8);
                mma_f16_16816(c, ah, b0, b1);
                mma_f16_16816(c, al, b0, b1);
            }
            int ja = 8 * nw + 2 * tq, ha = 16 * mw + g;
            bool va = r0 + ja < n, vb = r0 + ja + 1 < n;
            ss[ha * ATT_TR + ja] = va ? c[0] * scale : -INFINITY;
            ss[ha * ATT_TR + ja + 1] = vb ? c[1] * scale : -INFINITY;
            ss[(ha + 8) * ATT_TR + ja] = va ? c[2] * scale : -INFINITY;
            ss[(ha + 8) * ATT_TR + ja + 1] = vb ? c[3] * scale : -INFINITY;
        }
#endif
        __syncthreads();
        // Softmax numerators: 8 threads (lanes of one warp) per head, 4 rows each.
        {
            int hh = threadIdx.x >> 3, sub = threadIdx.x & 7;
            float sv[4], mx = -INFINITY;
#if DS4_ATT_KS2
            // The two halves' sums (the second's from this thread's own P bytes, read
            // before it writes them), then scaled; rows past n are −inf.
            float2 p01 = *(const float2*)(ph + hh * pld + 4 * sub);
            float2 p23 = *(const float2*)(pl + hh * pld + 4 * sub);
            float part[4] = {p01.x, p01.y, p23.x, p23.y};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                sv[k] = r0 + 4 * sub + k < n ? (ss[hh * ATT_TR + 4 * sub + k] + part[k]) * scale
                                              : -INFINITY;
                mx = fmaxf(mx, sv[k]);
            }
#else
#pragma unroll
            for (int k = 0; k < 4; k++) {
                sv[k] = ss[hh * ATT_TR + 4 * sub + k];
                mx = fmaxf(mx, sv[k]);
            }
#endif
#pragma unroll
            for (int o2 = 1; o2 < 8; o2 <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o2));
            float m_old = m_run[hh];
            float m_new = fmaxf(m_old, mx);
            float psum = 0.0f;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float e = expf(sv[k] - m_new);
                psum += e;
                u16 hi = f2h(e);
                ph[hh * pld + 4 * sub + k] = hi;
                pl[hh * pld + 4 * sub + k] = f2h(e - h2f(hi));
            }
#pragma unroll
            for (int o2 = 1; o2 < 8; o2 <<= 1) psum += __shfl_xor_sync(0xffffffffu, psum, o2);
            __syncwarp();
            if (sub == 0) {
                float al_ = expf(m_old - m_new);
                alpha[hh] = al_;
                den[hh] = den[hh] * al_ + psum;
                m_run[hh] = m_new;
            }
        }
        __syncthreads();
        // P·V for this warp's heads and dimensions.
        {
            int ha = 16 * mw + g;
            float a0 = alpha[ha], a1 = alpha[ha + 8];
#pragma unroll
            for (int i = 0; i < 16; i++) {
                acc[i][0] *= a0;
                acc[i][1] *= a0;
                acc[i][2] *= a1;
                acc[i][3] *= a1;
            }
#pragma unroll
            for (int k0 = 0; k0 < ATT_TR; k0 += 16) {
                u32 pa[4], pb[4];
                const u16* pp = ph + ha * pld + k0 + 2 * tq;
                const u16* pq = pl + ha * pld + k0 + 2 * tq;
                pa[0] = *(const u32*)pp;
                pa[1] = *(const u32*)(pp + 8 * pld);
                pa[2] = *(const u32*)(pp + 8);
                pa[3] = *(const u32*)(pp + 8 * pld + 8);
                pb[0] = *(const u32*)pq;
                pb[1] = *(const u32*)(pq + 8 * pld);
                pb[2] = *(const u32*)(pq + 8);
                pb[3] = *(const u32*)(pq + 8 * pld + 8);
                // ldmatrix: lanes 0-7 give rows k0.., 8-15 rows k0+8.., at dimension d;
                // lanes 16-31 the same at d + 8.
                int mi = lane >> 3, ri = lane & 7;
                const u16* vb = rt + (k0 + ri + 8 * (mi & 1)) * ld + dw0 + 8 * (mi >> 1);
#pragma unroll
                for (int i = 0; i < 16; i += 2) {
                    if (i < ntw) {
                        u32 b0, b1, b2, b3;
                        ldsm_x4_trans(b0, b1, b2, b3, vb + 8 * i);
                        mma_f16_16816(acc[i], pa, b0, b1);
                        mma_f16_16816(acc[i], pb, b0, b1);
                        mma_f16_16816(acc[i + 1], pa, b2, b3);
                        mma_f16_16816(acc[i + 1], pb, b2, b3);
                    }
                }
            }
        }
        __syncthreads();
    }
    int ha = 16 * mw + g;
    // Normalize, undo the rotation of the rotated dims (pairs sit in one lane), store.
    float da = den[ha], db = den[ha + 8];
    int off = hd - n_rot;
    float* oa = o + ((size_t)t * heads + h0 + ha) * hd;
    float* ob = oa + 8 * (size_t)hd;
    // With oq (hd a multiple of 128, so a warp's quarter of the dimensions is whole
    // Q8_0 blocks), also o's Q8_0 for out_a, as quant_q8_0 would make it from the stored
    // values: a block of 32 dimensions is four n-tiles of the quad's lanes (2 each).
#pragma unroll
    for (int i0 = 0; i0 < 16; i0 += 4) {
        if (i0 < ntw) {
            float va[8], vb[8];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int i = i0 + u, d = dw0 + 8 * i + 2 * tq;
                float x0 = acc[i][0] / da, x1 = acc[i][1] / da;
                float y0 = acc[i][2] / db, y1 = acc[i][3] / db;
                if (d >= off) {
                    float f = freqs[(d - off) >> 1];
                    rope_pair(&x0, &x1, pos, f, 1);
                    rope_pair(&y0, &y1, pos, f, 1);
                }
                if (i < ntw) {  // hd a multiple of 32 only: ntw need not be of 4
                    *(float2*)(oa + d) = make_float2(x0, x1);
                    *(float2*)(ob + d) = make_float2(y0, y1);
                }
                va[2 * u] = x0;
                va[2 * u + 1] = x1;
                vb[2 * u] = y0;
                vb[2 * u + 1] = y1;
            }
            if (oq) {
                float ma = 0.0f, mb = 0.0f;
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    ma = fmaxf(ma, fabsf(va[k]));
                    mb = fmaxf(mb, fabsf(vb[k]));
                }
#pragma unroll
                for (int s_ = 1; s_ < 4; s_ <<= 1) {
                    ma = fmaxf(ma, __shfl_xor_sync(0xffffffffu, ma, s_));
                    mb = fmaxf(mb, __shfl_xor_sync(0xffffffffu, mb, s_));
                }
                float dda = ma / 127.0f, ddb = mb / 127.0f;
                float ida = dda != 0.0f ? 1.0f / dda : 0.0f, idb = ddb != 0.0f ? 1.0f / ddb : 0.0f;
                size_t ea = ((size_t)t * heads + h0 + ha) * hd + dw0 + 8 * i0;
                size_t eb = ea + 8 * (size_t)hd;
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    int qa0 = max(-127, min(127, __float2int_rn(va[2 * u] * ida)));
                    int qa1 = max(-127, min(127, __float2int_rn(va[2 * u + 1] * ida)));
                    int qb0 = max(-127, min(127, __float2int_rn(vb[2 * u] * idb)));
                    int qb1 = max(-127, min(127, __float2int_rn(vb[2 * u + 1] * idb)));
                    *(u16*)(oq + ea + 8 * u + 2 * tq) = (u16)((qa0 & 0xff) | ((qa1 & 0xff) << 8));
                    *(u16*)(oq + eb + 8 * u + 2 * tq) = (u16)((qb0 & 0xff) | ((qb1 & 0xff) << 8));
                }
                if (tq == 0) {
                    od[ea / 32] = dda;
                    od[eb / 32] = ddb;
                }
            }
        }
    }
}
#define ATT_MMA_CALL(KV, NB)                                                                 \
    attention_mma_body<KV, NB>(q, ring, ring_rows, comp, sel, nsel, sel_k, sinks, o, heads, hd, \
                               window, pos0p, ratio, freqs, n_rot, scale, rows_max, oq, od, qeps)
// attention's arguments, then o's Q8_0 (values, block scales; null: none) and the
// queries' norm epsilon (≥ 0: q is q_b's output, normed and rotated here; < 0: done).
#define ATT_MMA_ARGS(KV) ATT_ARGS(KV), i8 *oq, float *od, float qeps
extern "C" __global__ void __launch_bounds__(256, 2) attention_mma(ATT_MMA_ARGS(float)) {
    pdl_begin();
    ATT_MMA_CALL(float, 1);
}
extern "C" __global__ void __launch_bounds__(256, 2) attention_mma_kh(ATT_MMA_ARGS(u16)) {
    pdl_begin();
    ATT_MMA_CALL(u16, 1);
}
// 64 heads a block (16 warps, one block a SM): each staged tile of rows — loaded and
// converted to f16 once per block — serves twice the heads of attention_mma's 32. With
// f16 rows it has two tile buffers (the one block an SM has no other warps to hide the
// loads behind); 32 heads keep one, for two blocks an SM.
extern "C" __global__ void __launch_bounds__(512, 1) attention_mma_h64(ATT_MMA_ARGS(float)) {
    pdl_begin();
    ATT_MMA_CALL(float, 1);
}
extern "C" __global__ void __launch_bounds__(512, 1) attention_mma_h64_kh(ATT_MMA_ARGS(u16)) {
    pdl_begin();
    ATT_MMA_CALL(u16, 2);
}

// Attention for a run on wgmma (sm_90a; head_dim 512, rows in f16): attention_mma's values
// (queries and P as f16 hi + lo, rows exact, f32 sums, flash-style rescaling from the
// sink) with the products on the warpgroup tensor cores. Why: attention_mma's warps each
// re-read their 16 heads' queries from shared memory for every 8 rows they score (v30:
// 59.9 of a chunk's 308 ms, bound by shared-memory bandwidth and its four barriers a
// 32-row tile). Here the hi and lo parts of a head are the two rows g and g + 8 of one
// warp's m16 slice of an m64 operand — 32 heads a block make the 64 rows — so the one
// thread that holds a score's hi-part sum also holds its lo-part sum (wgmma's accumulator
// layout), and the P it makes from them is the register operand of the P·V product as is
// (hi in row g, lo in row g + 8: their products land in the same thread again, added at
// the end). Two warpgroups: group w scores the tile over dimensions 256w.. (the queries as
// the shared operand, the rows as the other, both K-major), the halves' sums meet in
// shared memory, each group runs the same softmax on the same sums (so the same P and
// rescaling), and adds P·V for its 256 dimensions of O — the tile's rows again, read
// MN-major (no transposed copy). Tiles of 64 rows, two buffers by cp.async (the next
// loaded while this one's softmax and P·V run); the row addresses come from the window and
// the selection as attn_row_table's (no table: the shared memory does not grow with the
// context). One block a (token, 32 heads), one block an SM.
// Dynamic shared memory (atw_shared on the host): the queries 64 KB, the tiles, the
// exchange, 512 bytes of rotation cosines and sines, from the first 1,024-byte boundary.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// A descriptor from its halves: lo the start address / 16 (bits 0–13) and the leading
// byte offset / 16 (16–29), hi the stride byte offset / 16 (bits 32–45) and the layout
// (62–63). For an MN-major operand swizzled at 128 bytes (64 elements of N a 128-byte
// row, 8 rows of K 128 bytes apart) the leading offset is the step to the next 64 of N,
// the stride the step to the next 8 rows of K.
__device__ __forceinline__ unsigned long long wg_desc_2(u32 lo, u32 hi) {
    unsigned long long d;
    asm("mov.b64 %0, {%1, %2};" : "=l"(d) : "r"(lo), "r"(hi));
    return d;
}
// acc = 0: D = A·B (D's registers not read).
__device__ __forceinline__ void wgmma_f16_64x64_ss(float* d, unsigned long long da, unsigned long long db,
                                                   int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db), "r"(acc));
}
// 2^x by the SFU (max relative error about 2^-22; subnormal results flush to 0).
__device__ __forceinline__ float ex2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// m64n256k16 with A from registers and B MN-major (imm-trans-b 1).
__device__ __forceinline__ void wgmma_f16_64x256_rt(float* d, const u32* af, unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 "
        WG_D128 ", "
        "{%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"
        : WG_ACC64(d), WG_ACC64((d + 64))
        : "r"(af[0]), "r"(af[1]), "r"(af[2]), "r"(af[3]), "l"(db), "r"(1));
}
#endif
// Pieces of attention_wg_kh. Row r's address (r < n): raw rows through
// the ring, compressed rows through the selection, as attn_row_table's; past n any valid
// address (its copy is a zero fill).
__device__ __forceinline__ const u16* atw_row_src(const AttnRows& ar, int r, int n,
                                                  const u16* ring, int ring_rows,
                                                  const u16* comp, const int* sel, int sel_k,
                                                  int t, int hd) {
    if (r >= n) return ring;
    if (r < ar.n_raw) return ring + (size_t)((ar.first + r) % ring_rows) * hd;
    int c = r - ar.n_raw;
    return comp + (size_t)(ar.selected ? sel[(size_t)t * sel_k + c] : c) * hd;
}
// Every head of the token turns pair k by the same angle: rope_pair's rounded cosine and
// sine once a block (double sincos is slow), for the queries and the output.
__device__ __forceinline__ void atw_rope_table(float2* cs, int pos, const float* freqs, int n_rot) {
    for (int k = threadIdx.x; k < (n_rot >> 1); k += blockDim.x) {
        double sn, cn;
        sincos((double)((float)pos * freqs[k]), &sn, &cn);
        cs[k] = make_float2((float)cn, (float)sn);
    }
}
// A query operand ([dimension block of 64][64 rows][128 bytes], swizzled at 128 bytes):
// head hh's hi part at row m = 16·(hh / 8) + hh % 8, its lo part at m + 8, from lane l's
// loaded dimensions 4l + 128j (normed and rotated first when qeps ≥ 0).
__device__ __forceinline__ void atw_stage_head(u8* qb, const float4 (&e)[4], int hh, float qeps,
                                               const float* freqs, int n_rot, int pos,
                                               const float2* cs) {
    int lane = threadIdx.x & 31;
    float4 a[4];
    if (qeps >= 0.0f) {
        head_norm_rope_vals(e, 512, qeps, freqs, n_rot, pos, a, cs);
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++) a[j] = e[j];
    }
    int m = 16 * (hh >> 3) + (hh & 7);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint2 hi, lo;
        f16_split4(a[j], hi, lo);
        int d = 128 * j + 4 * lane;
        u32 in = (u32)(((((d & 63) >> 3) ^ (m & 7)) << 4) + (d & 7) * 2);
        *(uint2*)(qb + (d >> 6) * 8192 + m * 128 + in) = hi;
        *(uint2*)(qb + (d >> 6) * 8192 + (m + 8) * 128 + in) = lo;
    }
}
// o's Q8_0 block at e0 (32 dimensions: four n8 steps of a lane quad, 8 values a lane) as
// quant_q8_0 makes it from the values; with oh, also those values in f16 as
// q8_0_to_f16_p turns the block (out_a's wgmma operand; its launch then skipped): in
// each 16, the pair of dimensions 4s, 4s + 1 at 32-bit slot s and 4s + 2, 4s + 3 at
// slot 4 + s, so lane tq's pairs 8u + 2tq fall in slots s0 and s0 + 2 of half u / 2
// (s0 = 0, 4, 1, 5); lanes tq and tq ^ 2 trade one so that each holds two adjacent
// slots, and a quad's four 8-byte stores fill a 32-byte sector (v32: 4-byte stores, two
// instructions a sector, made the kernel 5% slower).
__device__ __forceinline__ void atw_q8_block(const float (&v)[8], i8* oq, float* od, u16* oh,
                                             size_t e0, int tq) {
    float ma = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; k++) ma = fmaxf(ma, fabsf(v[k]));
    ma = fmaxf(ma, __shfl_xor_sync(0xffffffffu, ma, 1));
    ma = fmaxf(ma, __shfl_xor_sync(0xffffffffu, ma, 2));
    float dd = ma / 127.0f, id = dd != 0.0f ? 1.0f / dd : 0.0f;
    u32 pr[4];
#pragma unroll
    for (int u = 0; u < 4; u++) {
        int q0 = max(-127, min(127, __float2int_rn(v[2 * u] * id)));
        int q1 = max(-127, min(127, __float2int_rn(v[2 * u + 1] * id)));
        *(u16*)(oq + e0 + 8 * u + 2 * tq) = (u16)((q0 & 0xff) | ((q1 & 0xff) << 8));
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
        if (oh) pr[u] = q8_pair_f16(q0, q1, dd);
#endif
    }
    if (tq == 0) od[e0 / 32] = dd;
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if (oh) {
        bool first = (tq & 2) == 0;
        int base = 2 * (2 * (tq & 1) + (tq >> 1));  // 0, 4, 2, 6
#pragma unroll
        for (int c = 0; c < 2; c++) {
            u32 x = __shfl_xor_sync(0xffffffffu, first ? pr[2 * c + 1] : pr[2 * c], 2);
            uint2 w = first ? make_uint2(pr[2 * c], x) : make_uint2(x, pr[2 * c + 1]);
            *(uint2*)(oh + e0 + 16 * c + 2 * base) = w;
        }
    }
#endif
}
extern "C" __global__ void __launch_bounds__(256, 1) attention_wg_kh(ATT_MMA_ARGS(u16), u16* oh) {
    pdl_begin();
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    const int HD = 512;
    int pos0 = *pos0p;
    int h0 = blockIdx.x * 32, t = blockIdx.y, pos = pos0 + t;
    AttnRows ar = attn_rows(pos, t, window, ratio, sel, nsel);
    int n = ar.n;
    extern __shared__ __align__(16) u8 dsm[];
    u8* base;
    u32 sbase;
    dsm_at_1024(dsm, base, sbase);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wg = warp >> 2, wq = warp & 3, tid = threadIdx.x & 127;
    // [dimension block of 64][operand row][128 bytes], each swizzled at 128 bytes: the
    // queries (64 rows: 32 heads' hi and lo) at 0, two tile buffers of 64 K=V rows from
    // 64 KB, then the exchange [group][4][128 threads] float4, then the rotation's cosine
    // and sine a pair (n_rot ≤ 128).
    const u32 QS = 0, TS = 65536, XS = TS + 2 * 65536, CS = XS + 16384;
    // Staging: thread i copies row i / 4 of the tile, 16-byte chunks i % 4 + 4u (u < 16);
    // rows past n are zeros (0 · row, not NaN; their scores are masked). The row's address
    // is looked up a tile ahead (the selection's load under the scores' products).
    int srow = threadIdx.x >> 2, sq = threadIdx.x & 3;
    auto row_src = [&](int r0) {
        return atw_row_src(ar, r0 + srow, n, ring, ring_rows, comp, sel, sel_k, t, HD);
    };
    // Chunk c = sq + 4u sits in dimension block u / 2 at 16-byte slot (sq + 4(u & 1)) ^ (row & 7).
    u32 sw0 = (u32)((sq ^ (srow & 7)) << 4), sw1 = (u32)(((sq + 4) ^ (srow & 7)) << 4);
    auto stage = [&](int r0, const u16* src, int buf) {
        int ok = r0 + srow < n ? 16 : 0;
        u8* dst = base + TS + buf * 65536 + srow * 128;
#pragma unroll
        for (int u = 0; u < 16; u++)
            cp_async16(dst + (u >> 1) * 8192 + ((u & 1) ? sw1 : sw0), src + 8 * sq + 32 * u, ok);
    };
    int ntiles = (n + 63) >> 6;
    // The first tile's copies fly while the queries are staged.
    stage(0, row_src(0), 0);
    cp_async_commit();
    // A warp's four heads of queries, loaded before anything waits (the first tile's
    // copies and these loads in flight together; one head at a time left each load's
    // latency and each double reduction bare).
    float4 qe[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float* qv = q + ((size_t)t * heads + h0 + warp + 8 * i) * HD;
#pragma unroll
        for (int j = 0; j < 4; j++) qe[i][j] = *(const float4*)(qv + 128 * j + 4 * lane);
    }
    float2* cs = (float2*)(base + CS);
    atw_rope_table(cs, pos, freqs, n_rot);
    __syncthreads();
    // Head 8·wq + g of the block: its hi part is operand row 16·wq + g, its lo part 8 on.
#pragma unroll
    for (int i = 0; i < 4; i++)
        atw_stage_head(base + QS, qe[i], warp + 8 * i, qeps, freqs, n_rot, pos, cs);
    // The softmax runs in base 2 (one ex2 a score): scores × scale·log2(e), the running
    // maximum from the sink × log2(e). The maximum moves only when a tile's exceeds it by
    // more than 8 (P ≤ 2^8, far inside f16's range: the sums are the same up to rounding
    // for any maximum used consistently), so most tiles rescale nothing.
    const float LOG2E = 1.4426950408889634f;
    float sc2 = scale * LOG2E;
    float m_run = sinks[h0 + 8 * wq + g] * LOG2E;
    // A quad's four partial denominators, added at the end; the sink's 2^0 in one.
    float den = tq == 0 ? 1.0f : 0.0f;
    float acc[128];
#pragma unroll
    for (int i = 0; i < 128; i++) acc[i] = 0.0f;
    wg_fence_fregs<128>(acc);
    // Descriptors by their two 32-bit halves: the high one is a constant (the 1,024-byte
    // group stride, the 128-byte swizzle), the low one the start address / 16 (and the
    // MN-major operand's 8,192-byte block stride), which a k16 step moves by a
    // compile-time constant (no carry: shared addresses stay below 2^18). Whole 64-bit
    // descriptors per step cost ~19 instructions a product (v31 SASS).
    const u32 DHI = (1024 >> 4) | (1u << 30);
    u32 qlo = ((sbase + QS + wg * 32768) & 0x3FFFF) >> 4 | (1u << 16);
#pragma unroll 1
    for (int it = 0; it < ntiles; it++) {
        int r0 = it << 6;
        u32 tb = sbase + TS + (it & 1) * 65536;
        cp_async_wait0();
        fence_proxy_async();
        // Tile `it` (and the queries) visible to the async proxy of every thread.
        __syncthreads();
        const u16* nsrc = row_src(r0 + 64);
        // Scores over this group's half of the dimensions; the first product writes the
        // sums (scale-d 0): no zeroing.
        float s[32];
        u32 tlo = ((tb + wg * 32768) & 0x3FFFF) >> 4 | (1u << 16);
        wg_fence();
#pragma unroll
        for (int k = 0; k < 16; k++) {
            const u32 step = ((k >> 2) * 8192 + 32 * (k & 3)) >> 4;
            wgmma_f16_64x64_ss(s, wg_desc_2(qlo + step, DHI), wg_desc_2(tlo + step, DHI), k > 0);
        }
        wg_commit();
        // Retires this group's scores and its P·V of the previous tile.
        wg_wait0();
        wg_fence_fregs<32>(s);
        // This half's sums (hi + lo) to the other group.
        float ps[16];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            ps[2 * j] = s[4 * j] + s[4 * j + 2];
            ps[2 * j + 1] = s[4 * j + 1] + s[4 * j + 3];
        }
        float4* xw = (float4*)(base + XS) + wg * 512 + tid;
#pragma unroll
        for (int k = 0; k < 4; k++)
            xw[128 * k] = make_float4(ps[4 * k], ps[4 * k + 1], ps[4 * k + 2], ps[4 * k + 3]);
        // Both groups' sums written; both groups' products of the previous tile retired,
        // so its buffer takes the next tile.
        __syncthreads();
        if (it + 1 < ntiles) stage(r0 + 64, nsrc, (it + 1) & 1);
        cp_async_commit();
        const float4* xr = (const float4*)(base + XS) + (wg ^ 1) * 512 + tid;
        float sv[16], mx = -INFINITY;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float4 v = xr[128 * k];
            // p0 + p1 in both groups (addition commutes): the same scores.
            sv[4 * k] = (ps[4 * k] + v.x) * sc2;
            sv[4 * k + 1] = (ps[4 * k + 1] + v.y) * sc2;
            sv[4 * k + 2] = (ps[4 * k + 2] + v.z) * sc2;
            sv[4 * k + 3] = (ps[4 * k + 3] + v.w) * sc2;
        }
        if (r0 + 64 > n) {
            // The last tile: columns 8j + 2tq + (0, 1) past n are masked (j = i / 2).
#pragma unroll
            for (int i = 0; i < 16; i++)
                if (r0 + 8 * (i >> 1) + 2 * tq + (i & 1) >= n) sv[i] = -INFINITY;
        }
#pragma unroll
        for (int i = 0; i < 16; i++) mx = fmaxf(mx, sv[i]);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        float m_new = mx > m_run + 8.0f ? mx : m_run;
        float alpha = ex2_approx(m_run - m_new);
        m_run = m_new;
        float psum = 0.0f;
        u32 pf[16];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float e0 = ex2_approx(sv[2 * j] - m_new), e1 = ex2_approx(sv[2 * j + 1] - m_new);
            psum += e0 + e1;
            u32 hi = f2h2(e0, e1);
            u32 lo = f2h2(e0 - h2f((u16)hi), e1 - h2f((u16)(hi >> 16)));
            // k16 step j / 2: a0/a1 its columns 2tq.. (rows g: hi, g + 8: lo), a2/a3 8 on.
            pf[4 * (j >> 1) + 2 * (j & 1)] = hi;
            pf[4 * (j >> 1) + 2 * (j & 1) + 1] = lo;
        }
        den = den * alpha + psum;
        if (__any_sync(0xffffffffu, alpha != 1.0f)) {
#pragma unroll
            for (int i = 0; i < 128; i++) acc[i] *= alpha;
        }
        // P·V for this group's 256 dimensions: the tile's rows MN-major.
        wg_fence();
        u32 vlo = ((tb + wg * 32768) & 0x3FFFF) >> 4 | ((8192u >> 4) << 16);
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
            wgmma_f16_64x256_rt(acc, pf + 4 * kk, wg_desc_2(vlo + kk * (2048 >> 4), DHI));
        wg_commit();
    }
    wg_wait0();
    wg_fence_fregs<128>(acc);
    den += __shfl_xor_sync(0xffffffffu, den, 1);
    den += __shfl_xor_sync(0xffffffffu, den, 2);
    // One division a head, not 64 (a rounding more than attention_mma's quotients).
    float rden = 1.0f / den;
    int hh = 8 * wq + g;
    int off = HD - n_rot;
    size_t ob = ((size_t)t * heads + h0 + hh) * HD;
    // Dimensions 256·wg + 8j + 2tq + (0, 1): O is row g's sum (P hi) + row g + 8's (P lo).
    // With oq, o's Q8_0 for out_a as quant_q8_0 makes it: a block of 32 dimensions is
    // four j of the quad's lanes.
#pragma unroll
    for (int j0 = 0; j0 < 32; j0 += 4) {
        float v[8];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int j = j0 + u, d = 256 * wg + 8 * j + 2 * tq;
            float x0 = (acc[4 * j] + acc[4 * j + 2]) * rden, x1 = (acc[4 * j + 1] + acc[4 * j + 3]) * rden;
            if (d >= off) {
                float2 c = cs[(d - off) >> 1];
                rope_cs(&x0, &x1, c.x, -c.y);
            }
            // With oq, out_a reads o as Q8_0 (or oh's f16) only: f32 o would be 128 KB
            // a token written for nothing.
            if (!oq) *(float2*)(o + ob + d) = make_float2(x0, x1);
            v[2 * u] = x0;
            v[2 * u + 1] = x1;
        }
        if (oq) atw_q8_block(v, oq, od, oh, ob + 256 * wg + 8 * j0, tq);
    }
#endif
}

extern "C" __global__ void route(const float* logits, const float* bias, const int* tid2eid,
                                 const int* toks, int* ids, float* wts, int n_expert, int k,
                                 float scale, float floor_) { pdl_begin();
    extern __shared__ float p[];  // 2 * n_expert
    __shared__ int chosen[64];
    float* biased = p + n_expert;
    int t = blockIdx.x;
    for (int e = threadIdx.x; e < n_expert; e += blockDim.x) {
        float v = sqrtf(softplusf_(logits[(size_t)t * n_expert + e]));
        p[e] = v;
        biased[e] = bias ? v + bias[e] : v;
    }
    __syncthreads();
    if (threadIdx.x >= 32) return;
    int lane = threadIdx.x;
    if (tid2eid) {
        if (lane < k) chosen[lane] = tid2eid[(size_t)toks[t] * k + lane];
    } else {
        // k rounds of a warp-wide argmax; ties go to the lower expert id, as the
        // CPU's first-strictly-greater scan keeps the first maximum.
        for (int j = 0; j < k; j++) {
            float bv = -INFINITY;
            int bi = 1 << 30;
            for (int e = lane; e < n_expert; e += 32) {
                bool used = false;
                for (int x = 0; x < j; x++) used |= chosen[x] == e;
                if (!used && (bi == (1 << 30) || biased[e] > bv)) { bv = biased[e]; bi = e; }
            }
            for (int o = 16; o > 0; o >>= 1) {
                float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                if (oi != (1 << 30) && (bi == (1 << 30) || ov > bv || (ov == bv && oi < bi))) {
                    bv = ov;
                    bi = oi;
                }
            }
            if (lane == 0) chosen[j] = bi;
            __syncwarp();
        }
    }
    __syncwarp();
    if (lane != 0) return;
    int* it = ids + (size_t)t * k;
    float sum = 0.0f;
    for (int j = 0; j < k; j++) {
        it[j] = chosen[j];
        sum += p[chosen[j]];
    }
    float norm = scale / fmaxf(sum, floor_);
    for (int j = 0; j < k; j++) wts[(size_t)t * k + j] = p[chosen[j]] * norm;
}

// route for learned routing with at most 256 experts, by one warp per token with every
// value in registers (lane l holds experts l, l + 32, ...): the same scores and the same
// choices and weights as route, without its shared-memory rounds — each of the k
// rounds is a register scan and a five-step shuffle argmax. The winner's unbiased score
// travels with it through the argmax, so the weights need no second lookup. Ties go to
// the lower expert id; a lane's first unused expert is taken even at -inf (route's rule).
#define ROUTE_PER_LANE 8
extern "C" __global__ void route_warp(const float* logits, const float* bias, int* ids,
                                      float* wts, int n_expert, int k, float scale,
                                      float floor_) { pdl_begin();
    int t = blockIdx.x, lane = threadIdx.x;
    float pv[ROUTE_PER_LANE], bv8[ROUTE_PER_LANE];
#pragma unroll
    for (int i = 0; i < ROUTE_PER_LANE; i++) {
        int e = lane + 32 * i;
        float v = e < n_expert ? sqrtf(softplusf_(logits[(size_t)t * n_expert + e])) : 0.0f;
        pv[i] = v;
        bv8[i] = e < n_expert ? (bias ? v + bias[e] : v) : -INFINITY;
    }
    const int NONE = 1 << 30;
    unsigned used = 0;  // bit i: expert lane + 32 i taken
    int* it = ids + (size_t)t * k;
    __shared__ float chosen_p[64];  // the chosen experts' scores, for lane 0's weights
    float sum = 0.0f;
    for (int j = 0; j < k; j++) {
        float bv = -INFINITY, bp = 0.0f;
        int bi = NONE;
#pragma unroll
        for (int i = 0; i < ROUTE_PER_LANE; i++) {
            int e = lane + 32 * i;
            if (e < n_expert && !((used >> i) & 1) && (bi == NONE || bv8[i] > bv)) {
                bv = bv8[i];
                bi = e;
                bp = pv[i];
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            float op = __shfl_xor_sync(0xffffffffu, bp, o);
            if (oi != NONE && (bi == NONE || ov > bv || (ov == bv && oi < bi))) {
                bv = ov;
                bi = oi;
                bp = op;
            }
        }
        if ((bi & 31) == lane) used |= 1u << (bi >> 5);
        if (lane == 0) {
            it[j] = bi;
            chosen_p[j] = bp;
        }
        sum += bp;
    }
    if (lane != 0) return;
    float norm = scale / fmaxf(sum, floor_);
    for (int j = 0; j < k; j++) wts[(size_t)t * k + j] = chosen_p[j] * norm;
}

// mid = silu(min(g, c)) · clamp(u, −c, c) · weight, weight per row of the batch
// (wts may be null for weight 1).
// Item b's gate and up values sit at g and u + b·in_stride. With qkind 1 or 2 the block (256 threads, nb·ff a multiple of 256) also writes the
// Q8_0 (1) or Q8_K (2: the block is one Q8_K block) of its outputs, which the down
// product then reads instead of quantizing `mid` itself.
extern "C" __global__ void swiglu(const float* g, const float* u, int in_stride, const float* wts,
                                  float* mid, int ff, int nb, float clampv, i8* q, float* d,
                                  short* bs, int qkind) { pdl_begin();
    __shared__ float sv[256];
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)nb * ff) return;
    int b = (int)(i / ff);
    size_t gi = (size_t)b * in_stride + (i - (size_t)b * ff);
    float wt = wts ? wts[b] : 1.0f;
    float gv = fminf(g[gi], clampv);
    float uv = fminf(fmaxf(u[gi], -clampv), clampv);
    float v = siluf_(gv) * uv * wt;
    mid[i] = v;
    if (qkind == 1) q8_0_lanes(v, threadIdx.x & 31, q, d, i / 32);
    if (qkind == 2) {
        sv[threadIdx.x] = v;
        __syncthreads();
        if (threadIdx.x < 32)
            q8_k_warp(sv, q + (size_t)blockIdx.x * 256, d + blockIdx.x,
                      bs + (size_t)blockIdx.x * 16, threadIdx.x);
    }
}

// swiglu with Q8_K outputs (ff a multiple of 256), a warp a Q8_K block: lane l's values
// 4l.. and 128 + 4l.. of the block, each computed as swiglu computes it, then the block's
// quantization from registers with q8_k_warp's arithmetic (the first element of largest
// magnitude; exact integer sums), where swiglu stages the block in shared memory for its
// first warp while the other seven wait.
extern "C" __global__ void swiglu_qk(const float* g, const float* u, int in_stride,
                                     const float* wts, float* mid, int ff, int nblk,
                                     float clampv, i8* q, float* d, short* bs) {
    pdl_begin();
    int lane = threadIdx.x & 31;
    int blk = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (blk >= nblk) return;
    size_t i0 = (size_t)blk * 256;
    int b = (int)(i0 / ff);  // the block lies in one item's ff values
    size_t g0 = (size_t)b * in_stride + (i0 - (size_t)b * ff);
    float wt = wts ? wts[b] : 1.0f;
    float4 gr[2], ur[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        gr[h] = *(const float4*)(g + g0 + 128 * h + 4 * lane);
        ur[h] = *(const float4*)(u + g0 + 128 * h + 4 * lane);
    }
    float v[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float4 gg = gr[k >> 2], uu = ur[k >> 2];
        int c = k & 3;
        float gx = c == 0 ? gg.x : c == 1 ? gg.y : c == 2 ? gg.z : gg.w;
        float ux = c == 0 ? uu.x : c == 1 ? uu.y : c == 2 ? uu.z : uu.w;
        float gv = fminf(gx, clampv);
        float uv = fminf(fmaxf(ux, -clampv), clampv);
        v[k] = siluf_(gv) * uv * wt;
    }
#pragma unroll
    for (int h = 0; h < 2; h++)
        *(float4*)(mid + i0 + 128 * h + 4 * lane) =
            make_float4(v[4 * h], v[4 * h + 1], v[4 * h + 2], v[4 * h + 3]);
    // The lane's first element of largest magnitude (its values in index order), then
    // the warp's, ties to the lower index.
    float amax = 0.0f, mx = 0.0f;
    int mi = 1 << 30;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float a = fabsf(v[k]);
        if (a > amax) { amax = a; mx = v[k]; mi = 128 * (k >> 2) + 4 * lane + (k & 3); }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float oa = __shfl_xor_sync(0xffffffffu, amax, o);
        float om = __shfl_xor_sync(0xffffffffu, mx, o);
        int oi = __shfl_xor_sync(0xffffffffu, mi, o);
        if (oa > amax || (oa == amax && oi < mi)) { amax = oa; mx = om; mi = oi; }
    }
    float iscale = amax == 0.0f ? 0.0f : -127.0f / mx;
    int qv[8];
#pragma unroll
    for (int k = 0; k < 8; k++) qv[k] = amax == 0.0f ? 0 : max(-127, min(127, __float2int_rn(iscale * v[k])));
    i8* qb = q + i0;
#pragma unroll
    for (int h = 0; h < 2; h++)
        *(u32*)(qb + 128 * h + 4 * lane) = ((u32)qv[4 * h] & 0xffu) | (((u32)qv[4 * h + 1] & 0xffu) << 8) |
                                           (((u32)qv[4 * h + 2] & 0xffu) << 16) | ((u32)qv[4 * h + 3] << 24);
    // Block sum s covers values 16s..16s+15: lanes 4s'.. of each half, four a lane.
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int sum = qv[4 * h] + qv[4 * h + 1] + qv[4 * h + 2] + qv[4 * h + 3];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        if ((lane & 3) == 0) bs[(size_t)blk * 16 + 8 * h + (lane >> 2)] = (short)sum;
    }
    if (lane == 0) d[blk] = amax == 0.0f ? 0.0f : 1.0f / iscale;
}

// Diagnostics of what a dependent step costs (examples/cuda_sync.rs): a chain of launches,
// one a step, against one kernel whose blocks meet at a grid barrier each step. Each step
// a block streams its share of `w` (per_block float4s, of 32 rotating slices: a model's
// weights, independent of the step, so read before the dependency as the products' early
// loads are) and then reads a value another block wrote the step before (x, two halves).
__device__ __forceinline__ float sync_work(const float4* w, int per_block, int i) {
    const float4* p = w + ((size_t)(i & 31) * gridDim.x + blockIdx.x) * per_block;
    float s = 0.0f;
    for (int k = threadIdx.x; k < per_block; k += blockDim.x) {
        int4 v = ldg4(p + k);
        s += __int_as_float(v.x) + __int_as_float(v.y) + __int_as_float(v.z) + __int_as_float(v.w);
    }
    return s;
}
__device__ __forceinline__ void sync_dependent(float* x, float s, int i) {
    if (threadIdx.x == 0) {
        const float* xi = x + (i & 1) * gridDim.x;
        float* xo = x + ((i + 1) & 1) * gridDim.x;
        xo[blockIdx.x] = __ldcg(&xi[(blockIdx.x + 1) % gridDim.x]) + 1.0f;
    }
    // Keeps the loads (the slices hold zeros).
    if (s != 0.0f) x[2 * gridDim.x] = s;
}
extern "C" __global__ void sync_chain(float* x, const float4* w, int per_block, int i) {
    pdl_signal_early();
    float s = sync_work(w, per_block, i);
    pdl_wait();
    sync_dependent(x, s, i);
}
// The grid barrier of a persistent kernel: arrivals counted in bar[0], the last to arrive
// resets the count and bumps the generation bar[1] the others spin on. The grid must be
// resident at once (the host sizes it by the occupancy).
__device__ __forceinline__ void grid_barrier(unsigned* bar) {
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile unsigned* gen = bar + 1;
        unsigned g0 = *gen;
        __threadfence();
        if (atomicAdd(bar, 1u) == gridDim.x - 1) {
            bar[0] = 0;
            __threadfence();
            atomicAdd(bar + 1, 1u);
        } else {
            while (*gen == g0) {
            }
        }
        __threadfence();
    }
    __syncthreads();
}
extern "C" __global__ void sync_persistent(float* x, const float4* w, int per_block, int n,
                                           unsigned* bar) {
    pdl_begin();
    for (int i = 0; i < n; i++) {
        float s = sync_work(w, per_block, i);
        grid_barrier(bar);
        sync_dependent(x, s, i);
    }
}

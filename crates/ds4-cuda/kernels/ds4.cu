// DeepSeek V4 Flash forward-pass kernels, compiled at run time by NVRTC.
//
// Header-free on purpose: NVRTC then needs no CUDA include directory, and the text
// compiles anywhere NVRTC runs. The lookup tables of IQ2_XXS are prepended by the host
// (from ds4-quant's tables, so there is one copy of them).
//
// Layout conventions: a batch of T tokens is row-major [T, n]; a weight matrix is
// `rows` rows of `cols` elements stored as ggml blocks along the row; positions are
// absolute (pos0 + t).
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
__device__ __forceinline__ float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }
__device__ __forceinline__ u16 rd16(const u8* p) { return (u16)p[0] | ((u16)p[1] << 8); }
__device__ __forceinline__ u32 rd32(const u8* p) {
    return (u32)rd16(p) | ((u32)rd16(p + 2) << 16);
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
__device__ __forceinline__ void rope_pair(float* a, float* b, int pos, float freq, int inverse) {
    float ang = (float)pos * freq;
    double s, c;
    sincos((double)ang, &s, &c);
    float sf = (float)(inverse ? -s : s), cf = (float)c;
    float x = *a, y = *b;
    *a = x * cf - y * sf;
    *b = x * sf + y * cf;
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

// One warp per block of 32. q: int8 [T*n], d: [T*n/32].
extern "C" __global__ void quant_q8_0(const float* x, i8* q, float* d, int nblocks) {
    int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (b >= nblocks) return;
    float v = x[(size_t)b * 32 + lane];
    float amax = warp_max(fabsf(v));
    float dd = amax / 127.0f;
    float id = dd != 0.0f ? 1.0f / dd : 0.0f;
    int qi = __float2int_rn(v * id);
    qi = max(-127, min(127, qi));
    q[(size_t)b * 32 + lane] = (i8)qi;
    if (lane == 0) d[b] = dd;
}

// One warp per block of 256. The scale comes from the element of largest magnitude
// (the first one on ties, as the CPU loop keeps it).
extern "C" __global__ void quant_q8_k(const float* x, i8* q, float* d, short* bsums, int nblocks) {
    int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (b >= nblocks) return;
    const float* xb = x + (size_t)b * 256;
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
    i8* qb = q + (size_t)b * 256;
    if (amax == 0.0f) {
        for (int i = lane; i < 256; i += 32) qb[i] = 0;
        if (lane < 16) bsums[(size_t)b * 16 + lane] = 0;
        if (lane == 0) d[b] = 0.0f;
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
        bsums[(size_t)b * 16 + lane] = (short)s;
    }
    if (lane == 0) d[b] = 1.0f / iscale;
}

// ---------------------------------------------------------------------------------
// Matrix × vector for a batch.
//
// Output row r of item b: y[b*y_stride + r] = W_b[r, :] · x_b, where
//   W_b = W + (ids ? ids[b] : 0) * mat_bytes           (routed experts: one matrix each)
//   x_b = activation of token b / act_div                (act_div = k for gate/up of experts)
//         offset by (r / group_rows) * group_stride      (grouped output projection)
// One warp per output row; lanes split the row into 32-element pieces.

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
};

#define MV_PROLOGUE                                                                   \
    int warps = blockDim.x >> 5;                                                      \
    int r = blockIdx.x * warps + (threadIdx.x >> 5);                                  \
    int lane = threadIdx.x & 31;                                                      \
    int b = blockIdx.y;                                                               \
    if (r >= a.rows || b >= a.nb) return;                                             \
    long long e = a.ids ? (long long)a.ids[b] : 0;                                    \
    int tok = b / a.act_div;                                                          \
    long long xoff = (long long)tok * a.x_stride +                                    \
                     (a.group_rows ? (long long)(r / a.group_rows) * a.group_stride : 0);

// Float weights (f32, f16, bf16) times f32 activations; `T` is the stored element and
// `load` widens it.
template <typename T, typename Load> __device__ void mv_float(const MvArgs& a, Load load) {
    MV_PROLOGUE
    const T* w = (const T*)(a.w + e * a.mat_bytes) + (size_t)r * a.cols;
    const float* x = a.xf + xoff;
    float acc = 0.0f;
    for (int i = lane; i < a.cols; i += 32) acc += load(w[i]) * x[i];
    acc = warp_sum(acc);
    if (lane == 0) a.y[(size_t)b * a.y_stride + r] = acc;
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
extern "C" __global__ void mv_f32(MvArgs a) { mv_float<float>(a, LoadF32()); }
extern "C" __global__ void mv_f16(MvArgs a) { mv_float<u16>(a, LoadF16()); }
extern "C" __global__ void mv_bf16(MvArgs a) { mv_float<u16>(a, LoadBf16()); }

// Q8_0 block: f16 d, 32 int8.
extern "C" __global__ void mv_q8_0(MvArgs a) {
    MV_PROLOGUE
    int nblk = a.cols / 32;
    const u8* w = a.w + e * a.mat_bytes + (size_t)r * nblk * 34;
    const i8* xq = a.xq + xoff;
    const float* xd = a.xd + xoff / 32;
    float acc = 0.0f;
    for (int ib = lane; ib < nblk; ib += 32) {
        const u8* blk = w + ib * 34;
        const i8* qs = (const i8*)(blk + 2);
        const i8* xb = xq + ib * 32;
        int isum = 0;
#pragma unroll
        for (int i = 0; i < 32; i++) isum += (int)qs[i] * (int)xb[i];
        acc += h2f(rd16(blk)) * xd[ib] * (float)isum;
    }
    acc = warp_sum(acc);
    if (lane == 0) a.y[(size_t)b * a.y_stride + r] = acc;
}

// Q2_K block (84 bytes): scales[16], qs[64], f16 d, f16 dmin. Piece c (0..7) of a
// block covers elements 32c..32c+32: half k = c/4 of the 128-element halves and
// shift j = c%4 of the 2-bit planes.
extern "C" __global__ void mv_q2_k(MvArgs a) {
    MV_PROLOGUE
    int nblk = a.cols / 256;
    const u8* w = a.w + e * a.mat_bytes + (size_t)r * nblk * 84;
    const i8* xq = a.xq + xoff;
    const float* xd = a.xd + xoff / 256;
    const short* xs = a.xs + xoff / 16;
    float acc = 0.0f;
    for (int it = lane; it < nblk * 8; it += 32) {
        int ib = it >> 3, c = it & 7, k = c >> 2, j = c & 3;
        const u8* blk = w + ib * 84;
        const u8* sc = blk;
        const u8* qs = blk + 16;
        const i8* xb = xq + ib * 256 + 128 * k + 32 * j;
        int isum = 0;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int s = sc[8 * k + 2 * j + h] & 0xf;
            int part = 0;
#pragma unroll
            for (int l = 0; l < 16; l++) {
                int q = (qs[32 * k + 16 * h + l] >> (2 * j)) & 3;
                part += q * (int)xb[16 * h + l];
            }
            isum += s * part;
        }
        float dx = xd[ib];
        acc += dx * h2f(rd16(blk + 80)) * (float)isum;
        if (c == 0) {
            int summs = 0;
            for (int s = 0; s < 16; s++) summs += (sc[s] >> 4) * (int)xs[ib * 16 + s];
            acc -= dx * h2f(rd16(blk + 82)) * (float)summs;
        }
    }
    acc = warp_sum(acc);
    if (lane == 0) a.y[(size_t)b * a.y_stride + r] = acc;
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
extern "C" __global__ void mv_q4_k(MvArgs a) {
    MV_PROLOGUE
    int nblk = a.cols / 256;
    const u8* w = a.w + e * a.mat_bytes + (size_t)r * nblk * 144;
    const i8* xq = a.xq + xoff;
    const float* xd = a.xd + xoff / 256;
    const short* xs = a.xs + xoff / 16;
    float acc = 0.0f;
    for (int it = lane; it < nblk * 8; it += 32) {
        int ib = it >> 3, j = it & 7;
        const u8* blk = w + ib * 144;
        int sc, m;
        q4k_scale_min(j, blk + 4, &sc, &m);
        const u8* q = blk + 16 + 32 * (j / 2);
        int shift = 4 * (j % 2);
        const i8* xb = xq + ib * 256 + 32 * j;
        int part = 0;
#pragma unroll
        for (int l = 0; l < 32; l++) part += ((q[l] >> shift) & 0xf) * (int)xb[l];
        float dx = xd[ib];
        acc += dx * h2f(rd16(blk)) * (float)(sc * part);
        acc -= dx * h2f(rd16(blk + 2)) *
               (float)(m * ((int)xs[ib * 16 + 2 * j] + (int)xs[ib * 16 + 2 * j + 1]));
    }
    acc = warp_sum(acc);
    if (lane == 0) a.y[(size_t)b * a.y_stride + r] = acc;
}

// IQ2_XXS block (66 bytes): f16 d, then 8 groups of (u32 grid indices, u32 signs+scale).
// The lookup tables are copied to shared memory first: lanes index them with
// different values, which constant memory would serialize.
extern "C" __global__ void mv_iq2_xxs(MvArgs a) {
    __shared__ u64 grid_s[256];
    __shared__ u8 signs_s[128];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) grid_s[i] = IQ2XXS_GRID[i];
    for (int i = threadIdx.x; i < 128; i += blockDim.x) signs_s[i] = KSIGNS[i];
    __syncthreads();
    MV_PROLOGUE
    int nblk = a.cols / 256;
    const u8* w = a.w + e * a.mat_bytes + (size_t)r * nblk * 66;
    const i8* xq = a.xq + xoff;
    const float* xd = a.xd + xoff / 256;
    float acc = 0.0f;
    for (int it = lane; it < nblk * 8; it += 32) {
        int ib = it >> 3, g = it & 7;
        const u8* blk = w + ib * 66;
        u32 a0 = rd32(blk + 2 + 8 * g), a1 = rd32(blk + 6 + 8 * g);
        int ls = 2 * (int)(a1 >> 28) + 1;
        const i8* xb = xq + ib * 256 + 32 * g;
        int sumi = 0;
#pragma unroll
        for (int l = 0; l < 4; l++) {
            u64 grid = grid_s[(a0 >> (8 * l)) & 0xff];
            u32 signs = signs_s[(a1 >> (7 * l)) & 127];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                int v = (int)((grid >> (8 * j)) & 0xff) * (int)xb[8 * l + j];
                sumi += ((signs >> j) & 1) ? -v : v;
            }
        }
        acc += 0.125f * (h2f(rd16(blk)) * xd[ib]) * (float)(sumi * ls);
    }
    acc = warp_sum(acc);
    if (lane == 0) a.y[(size_t)b * a.y_stride + r] = acc;
}

// Row lookup (token embedding): out[t, :] = dequant(W[toks[t], :]), repeated `reps`
// times (the HC streams start as copies of the embedding).
extern "C" __global__ void embed_rows(const u8* w, int ty, int cols, long long row_bytes,
                                      const int* toks, float* out, int reps) {
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

// y[v, :] = x[v, :] * rsqrt(mean(x²) + eps) * (w ? w : 1), one block per vector.
extern "C" __global__ void rms_norm(const float* x, const float* w, float* y, int n,
                                    int x_stride, int y_stride, float eps) {
    __shared__ double sh[32];
    const float* xv = x + (size_t)blockIdx.x * x_stride;
    float* yv = y + (size_t)blockIdx.x * y_stride;
    double ss = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += (double)xv[i] * (double)xv[i];
    ss = block_sum_d(ss, sh);
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = xv[i] * r;
        yv[i] = w ? v * w[i] : v;
    }
}

// Per-head weightless RMSNorm then RoPE at pos0 + token (queries). x: [T, heads*hd].
extern "C" __global__ void head_norm_rope(float* x, int heads, int hd, float eps,
                                          const float* freqs, int n_rot, int pos0) {
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

// ---------------------------------------------------------------------------------
// mHC (spec §3.3, §3.4, §3.11).

// One block per token. z: [T, mix] control vectors; x: [T, hc*n]; y: [T, n] the
// sublayer input; mixo: [T, hc + hc*hc] = post then comb, kept for hc_post.
extern "C" __global__ void hc_pre(const float* z, const float* x, const float* scale,
                                  const float* base, float* y, float* mixo, int hc, int n,
                                  int mix, int iters, float hc_eps) {
    __shared__ float pre[16];
    __shared__ float c[256];
    int t = blockIdx.x;
    const float* zt = z + (size_t)t * mix;
    if (threadIdx.x == 0) {
        for (int i = 0; i < hc; i++) pre[i] = sigmoidf_(zt[i] * scale[0] + base[i]) + hc_eps;
        float* mo = mixo + (size_t)t * (hc + hc * hc);
        for (int i = 0; i < hc; i++) mo[i] = 2.0f * sigmoidf_(zt[hc + i] * scale[1] + base[hc + i]);
        for (int i = 0; i < hc * hc; i++) c[i] = zt[2 * hc + i] * scale[2] + base[2 * hc + i];
        for (int a = 0; a < hc; a++) {
            float* row = c + a * hc;
            float m = -INFINITY;
            for (int b = 0; b < hc; b++) m = fmaxf(m, row[b]);
            float s = 0.0f;
            for (int b = 0; b < hc; b++) { row[b] = expf(row[b] - m); s += row[b]; }
            for (int b = 0; b < hc; b++) row[b] = row[b] / s + hc_eps;
        }
        for (int it = 0; it < iters; it++) {
            if (it > 0) {
                for (int a = 0; a < hc; a++) {
                    float s = 0.0f;
                    for (int b = 0; b < hc; b++) s += c[a * hc + b];
                    for (int b = 0; b < hc; b++) c[a * hc + b] /= s + hc_eps;
                }
            }
            for (int b = 0; b < hc; b++) {
                float s = 0.0f;
                for (int a = 0; a < hc; a++) s += c[a * hc + b];
                for (int a = 0; a < hc; a++) c[a * hc + b] /= s + hc_eps;
            }
        }
        for (int i = 0; i < hc * hc; i++) mo[hc + i] = c[i];
    }
    __syncthreads();
    const float* xt = x + (size_t)t * hc * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float acc = 0.0f;
        for (int h = 0; h < hc; h++) acc += pre[h] * xt[h * n + i];
        y[(size_t)t * n + i] = acc;
    }
}

// X'[b] = post[b]·F + Σ_a comb[a][b]·X[a]. One block per token.
extern "C" __global__ void hc_post(const float* f, const float* x, const float* mixi,
                                   float* out, int hc, int n) {
    int t = blockIdx.x;
    const float* mo = mixi + (size_t)t * (hc + hc * hc);
    const float* xt = x + (size_t)t * hc * n;
    const float* ft = f + (size_t)t * n;
    for (int i = threadIdx.x; i < hc * n; i += blockDim.x) {
        int b = i / n, j = i % n;
        float acc = mo[b] * ft[j];
        for (int a = 0; a < hc; a++) acc += mo[hc + a * hc + b] * xt[a * n + j];
        out[(size_t)t * hc * n + i] = acc;
    }
}

// Output collapse: y = Σ_h (σ(z_h·scale + base_h) + ε)·X[h].
extern "C" __global__ void hc_head(const float* z, const float* x, const float* scale,
                                   const float* base, float* y, int hc, int n, int mix,
                                   float hc_eps) {
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

// The raw K=V row of each token: RoPE at its position, the KV QAT, stored into the
// ring of raw rows at slot pos % ring. One block per token; dynamic shared: hd floats.
extern "C" __global__ void kv_store(const float* kv, float* ring, int ring_rows, int hd,
                                    const float* freqs, int n_rot, int pos0, int sim) {
    extern __shared__ float row[];
    __shared__ float amax[64];
    int t = blockIdx.x, pos = pos0 + t;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) row[i] = kv[(size_t)t * hd + i];
    __syncthreads();
    int off = hd - n_rot;
    for (int k = threadIdx.x; k < n_rot / 2; k += blockDim.x)
        rope_pair(&row[off + 2 * k], &row[off + 2 * k + 1], pos, freqs[k], 0);
    __syncthreads();
    if (sim) qat_kv_row(row, hd, hd - n_rot, amax);
    float* dst = ring + (size_t)(pos % ring_rows) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) dst[i] = row[i];
}

// KV compressor (spec §3.6) over a run of T tokens, strictly in order: the frontier
// state lives in global memory (front_kv, front_score: coff·ratio slots of width
// coff·d) and carries across runs. One block of d threads; thread j owns output dim j
// and, for overlapping compressors (coff 2), the columns j (lane A) and d + j (lane B)
// of every slot, so pooling needs no synchronization.
// sim: 0 none, 1 attention row (fp8 on nope dims + f16), 2 indexer row (Hadamard+fp4, f16).
// Closed rows are written at index (pos + 1) / ratio − 1 of `rows`.
extern "C" __global__ void compress_run(const float* kvp, const float* gate, const float* ape,
                                        const float* norm, float* front_kv, float* front_score,
                                        float* rows, int T, int pos0, int ratio, int coff, int d,
                                        float eps, const float* freqs, int n_rot, int sim) {
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
                front_kv[(size_t)slot * width + col] = kvp[(size_t)t * width + col];
                front_score[(size_t)slot * width + col] =
                    gate[(size_t)t * width + col] + ape[(size_t)r * width + col];
            }
        }
        if ((pos + 1) % ratio != 0) continue;
        int n_slots = coff * ratio;
        float pooled = 0.0f;
        if (act) {
            float m = -INFINITY;
            for (int s = 0; s < n_slots; s++) {
                size_t li = (coff == 2 && s >= ratio) ? (size_t)s * width + d + j : (size_t)s * width + j;
                m = fmaxf(m, front_score[li]);
            }
            if (m > EMPTY_SCORE / 2.0f) {
                float num = 0.0f, den = 0.0f;
                for (int s = 0; s < n_slots; s++) {
                    size_t li = (coff == 2 && s >= ratio) ? (size_t)s * width + d + j : (size_t)s * width + j;
                    float e = expf(front_score[li] - m);
                    num += e * front_kv[li];
                    den += e;
                }
                pooled = num / den;
            }
        }
        double ss = block_sum_d((double)pooled * (double)pooled, shd);
        float rs = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
        if (act) out[j] = pooled * rs * norm[j];
        __syncthreads();
        int off = d - n_rot;
        if (j < n_rot / 2) rope_pair(&out[off + 2 * j], &out[off + 2 * j + 1], pos + 1 - ratio, freqs[j], 0);
        __syncthreads();
        if (sim == 1) {
            qat_kv_row(out, d, d - n_rot, amax);
        } else if (sim == 2) {
            qat_indexer_vec(out, d, amax);
            if (act) out[j] = f16_round(out[j]);
            __syncthreads();
        }
        if (act) {
            rows[(size_t)((pos + 1) / ratio - 1) * d + j] = out[j];
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

// ---------------------------------------------------------------------------------
// Lightning indexer (spec §3.7).

// Indexer queries: RoPE at the token's position then the indexer QAT, per head; the
// head weights get 1/sqrt(head_dim·heads) folded in. One block per (token, head).
extern "C" __global__ void indexer_prep(float* qi, float* wi, int heads, int di,
                                        const float* freqs, int n_rot, int pos0, int sim) {
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

// score[t, r] = Σ_h w_h · relu(q_h · row_r) for every row visible to token t
// (rows closed by positions ≤ pos). One warp per row; grid (row blocks, T).
extern "C" __global__ void indexer_scores(const float* qi, const float* wi, const float* rows,
                                          float* scores, int heads, int di, int pos0,
                                          int ratio, int max_rows) {
    int t = blockIdx.y;
    int n = (pos0 + t + 1) / ratio;
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= n) return;
    const float* row = rows + (size_t)r * di;
    const float* q = qi + (size_t)t * heads * di;
    const float* w = wi + (size_t)t * heads;
    float acc = 0.0f;
    for (int h = 0; h < heads; h++) {
        float p = 0.0f;
        for (int i = lane; i < di; i += 32) p += q[h * di + i] * row[i];
        p = warp_sum(p);
        acc += w[h] * fmaxf(p, 0.0f);
    }
    if (lane == 0) scores[(size_t)t * max_rows + r] = acc;
}

__device__ __forceinline__ u32 order_key(float f) {
    u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Top-k of each token's scores (ties to the lower row), by a radix select of the
// k-th largest key then an in-order compaction. One block of 1024 threads per token.
// sel[t, 0..k) gets the chosen rows in increasing row order; nsel[t] = k, or 0 when the
// token sees k rows or fewer (it then attends to all of them).
extern "C" __global__ void topk_select(const float* scores, int* sel, int* nsel, int pos0,
                                       int ratio, int max_rows, int k) {
    __shared__ u32 hist[256];
    __shared__ u32 prefix, prefix_mask, remaining;
    __shared__ u32 warp_cnt[32];
    __shared__ u32 base_gt, base_eq;
    int t = blockIdx.x;
    int n = (pos0 + t + 1) / ratio;
    if (n <= k) {
        if (threadIdx.x == 0) nsel[t] = 0;
        return;
    }
    const float* s = scores + (size_t)t * max_rows;
    if (threadIdx.x == 0) { prefix = 0; prefix_mask = 0; remaining = k; }
    __syncthreads();
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            u32 key = order_key(s[i]);
            if ((key & prefix_mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xff], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            u32 acc = 0;
            for (int dgt = 255; dgt >= 0; dgt--) {
                if (acc + hist[dgt] >= remaining) {
                    remaining -= acc;
                    prefix |= (u32)dgt << shift;
                    prefix_mask |= 0xffu << shift;
                    break;
                }
                acc += hist[dgt];
            }
        }
        __syncthreads();
    }
    // prefix is now the k-th largest key; `remaining` of the rows equal to it are taken
    // (the lowest-numbered ones), with every row above it.
    u32 kth = prefix, take_eq = remaining;
    if (threadIdx.x == 0) { base_gt = 0; base_eq = 0; }
    __syncthreads();
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int start = 0; start < n; start += blockDim.x) {
        int i = start + threadIdx.x;
        u32 key = i < n ? order_key(s[i]) : 0;
        bool gt = i < n && key > kth;
        bool eq = i < n && key == kth;
        // in-order rank of this row among equal keys
        u32 eq_mask = __ballot_sync(0xffffffffu, eq);
        if (lane == 0) warp_cnt[w] = __popc(eq_mask);
        __syncthreads();
        u32 before = 0;
        for (int x = 0; x < w; x++) before += warp_cnt[x];
        u32 tile_eq = 0;
        for (int x = 0; x < nw; x++) tile_eq += warp_cnt[x];
        u32 eq_rank = base_eq + before + __popc(eq_mask & ((1u << lane) - 1));
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
        if (take) sel[(size_t)t * k + base_gt + tbefore + __popc(tk_mask & ((1u << lane) - 1))] = i;
        __syncthreads();
        if (threadIdx.x == 0) { base_gt += tile_take; base_eq += tile_eq; }
        __syncthreads();
    }
    if (threadIdx.x == 0) nsel[t] = k;
}

// ---------------------------------------------------------------------------------
// Attention (spec §3.5): one block per (head, token) over the raw window (oldest
// first), then the compressed rows (all visible ones, or the indexer's selection),
// softmax with the sink in the denominator, then inverse RoPE on the output.
// Dynamic shared memory: hd floats of query + max_rows floats of weights.
extern "C" __global__ void attention(const float* q, const float* ring, int ring_rows,
                                     const float* comp, const int* sel, const int* nsel,
                                     int sel_k, const float* sinks, float* o, int heads, int hd,
                                     int window, int pos0, int ratio, const float* freqs,
                                     int n_rot, float scale) {
    extern __shared__ float sm[];
    __shared__ float red[32];
    int h = blockIdx.x, t = blockIdx.y, pos = pos0 + t;
    float* qs = sm;
    float* wts = sm + hd;
    const float* qv = q + ((size_t)t * heads + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = qv[i];
    __syncthreads();
    int first = pos + 1 > window ? pos + 1 - window : 0;
    int n_raw = pos + 1 - first;
    int n_comp = 0;
    bool selected = false;
    if (ratio > 0) {
        if (sel && nsel[t] > 0) { n_comp = nsel[t]; selected = true; }
        else n_comp = (pos + 1) / ratio;
    }
    int n = n_raw + n_comp;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int r = w; r < n; r += nw) {
        const float* row;
        if (r < n_raw) row = ring + (size_t)((first + r) % ring_rows) * hd;
        else {
            int c = r - n_raw;
            row = comp + (size_t)(selected ? sel[(size_t)t * sel_k + c] : c) * hd;
        }
        float p = 0.0f;
        for (int i = lane; i < hd; i += 32) p += qs[i] * row[i];
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
        float acc = 0.0f;
        for (int r = 0; r < n; r++) {
            const float* row;
            if (r < n_raw) row = ring + (size_t)((first + r) % ring_rows) * hd;
            else {
                int c = r - n_raw;
                row = comp + (size_t)(selected ? sel[(size_t)t * sel_k + c] : c) * hd;
            }
            acc += wts[r] * row[i];
        }
        qs[i] = acc / den;
    }
    __syncthreads();
    int off = hd - n_rot;
    for (int k = threadIdx.x; k < n_rot / 2; k += blockDim.x)
        rope_pair(&qs[off + 2 * k], &qs[off + 2 * k + 1], pos, freqs[k], 1);
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) ov[i] = qs[i];
}

// ---------------------------------------------------------------------------------
// MoE (spec §3.10).

// Routing of one token per block (thread 0: 6 of 256 is tiny): sqrt(softplus) scores,
// hash table or biased top-k (ties to the lower expert), weights normalized by their
// sum (floored) and scaled. ids/wts: [T, k] in selection order.
extern "C" __global__ void route(const float* logits, const float* bias, const int* tid2eid,
                                 const int* toks, int* ids, float* wts, int n_expert, int k,
                                 float scale, float floor_) {
    extern __shared__ float p[];  // 2 * n_expert
    float* biased = p + n_expert;
    int t = blockIdx.x;
    for (int e = threadIdx.x; e < n_expert; e += blockDim.x) {
        float v = sqrtf(softplusf_(logits[(size_t)t * n_expert + e]));
        p[e] = v;
        biased[e] = bias ? v + bias[e] : v;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    int* it = ids + (size_t)t * k;
    if (tid2eid) {
        for (int j = 0; j < k; j++) it[j] = tid2eid[(size_t)toks[t] * k + j];
    } else {
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < n_expert; e++) {
                bool used = false;
                for (int x = 0; x < j; x++) used |= it[x] == e;
                if (used) continue;
                if (best < 0 || biased[e] > biased[best]) best = e;
            }
            it[j] = best;
        }
    }
    float sum = 0.0f;
    for (int j = 0; j < k; j++) sum += p[it[j]];
    float norm = scale / fmaxf(sum, floor_);
    for (int j = 0; j < k; j++) wts[(size_t)t * k + j] = p[it[j]] * norm;
}

// mid = silu(min(g, c)) · clamp(u, −c, c) · weight, weight per row of the batch
// (wts may be null for weight 1).
extern "C" __global__ void swiglu(const float* g, const float* u, const float* wts, float* mid,
                                  int ff, int nb, float clampv) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)nb * ff) return;
    int b = (int)(i / ff);
    float wt = wts ? wts[b] : 1.0f;
    float gv = fminf(g[i], clampv);
    float uv = fminf(fmaxf(u[i], -clampv), clampv);
    mid[i] = siluf_(gv) * uv * wt;
}

// out[t] = shared[t] + Σ_j routed[t·k + j], in routing order.
extern "C" __global__ void moe_sum(const float* shared, const float* routed, float* out, int n,
                                   int k, int T) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * n) return;
    int t = (int)(i / n), c = (int)(i % n);
    float acc = shared[i];
    for (int j = 0; j < k; j++) acc += routed[((size_t)t * k + j) * n + c];
    out[i] = acc;
}

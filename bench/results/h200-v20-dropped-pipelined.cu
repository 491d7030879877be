// v20, measured and dropped (bench/CUDA-SPEED.md v20): decode's IQ2_XXS and Q8_0 products with
// their weights streamed by cp.async through a per-warp ring in shared memory. Kept for the
// record; not compiled. The host sized the ring (stages x 2,560 bytes a warp) and used a grid of
// one wave of resident blocks (DS4_CUDA_IQ2_PIPE, DS4_CUDA_Q8_PIPE, DS4_CUDA_Q8_STAGES).

// Decode's IQ2_XXS product with its weights streamed through shared memory (the host's
// DS4_CUDA_IQ2_PIPE): mv_iq2_xxs_1ts's rows, decoding and sums in the same order (the same
// values bit for bit), but a warp's pieces arrive by cp.async into a ring of IQP_S rounds
// per warp, IQP_S − 1 rounds ahead of the one it decodes. In mv_iq2_xxs_1ts a warp loads a
// round (four rows' pieces), waits a whole memory latency, then decodes for about as long
// (≈130 instructions a piece) with nothing in flight, and the warps of a SM start in step,
// so loading and decoding alternate; here the next rounds are in flight while it decodes,
// and they sit in shared memory rather than in registers (mv_iq2_xxs_1t's U = 2 took 236).
// A lane reads back only what it copied itself, so its own cp.async.wait_group is the only
// wait. A round of a warp: four rows × 32 lanes × (a 16-byte piece + the 4-byte word that
// holds its f16 block scale).
#ifndef DS4_IQ2_STAGES
#define DS4_IQ2_STAGES 3
#endif
#define IQP_S DS4_IQ2_STAGES
#define IQP_ROUND (4 * 32 * 16 + 4 * 32 * 4)
__device__ __forceinline__ void cp_async16_l2(void* dst, const void* src, int src_bytes) {
    u32 d = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;" ::"r"(d), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async4z(void* dst, const void* src, int src_bytes) {
    u32 d = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(src), "r"(src_bytes)
                 : "memory");
}
template <int N> __device__ __forceinline__ void cp_async_wait_n() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
extern "C" __global__ void __launch_bounds__(256, 2) mv_iq2_xxs_1p(MvArgs a) {
    __shared__ u64 tab[16 * 256];
    __shared__ u64 sgn[16 * 128];
    extern __shared__ __align__(16) u8 ring_dyn[];
    pdl_signal_early();
    iq2_grid_replicas<16>(tab);
    iq2_sign_replicas<16>(sgn);
    pdl_wait();
    __syncthreads();
    const int NTM = 1;
    MV_ITEMS
    int warp = threadIdx.x >> 5;
    int nch = a.cols / 64, nblk = a.cols >> 8;
    int rstep = gridDim.x * warps;
    int rbase = blockIdx.x * warps + warp;
    long long xo0 = mv_xoff(a, item[0], 0);
    const u64* tl = tab + (lane & 15);
    const u8* wq0 = a.w + e * a.mat_bytes;
    const u16* wd0 = (const u16*)(a.sc + e * a.sc_mat_bytes);
    u8* ring = ring_dyn + warp * (IQP_S * IQP_ROUND);
    // Rounds k = (row group g, column round cr): the rows rb + j·rstep (j < 4) of group g,
    // piece lane + 32·cr of each, as mv_iq2_xxs_1ts walks them.
    int ncr = (nch + 31) >> 5;
    int ngr = rbase < a.rows ? (a.rows - rbase + 4 * rstep - 1) / (4 * rstep) : 0;
    int nk = ngr * ncr;
    auto issue = [&](int k) {
        int g = k / ncr, cr = k - g * ncr;
        int rb = rbase + 4 * rstep * g, c = lane + 32 * cr;
        bool ok = c < nch;
        u8* slot = ring + (k % IQP_S) * IQP_ROUND;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int r = min(rb + j * rstep, a.rows - 1);
            size_t si = (size_t)r * nblk + (c >> 2);
            cp_async16_l2(slot + 512 * j + 16 * lane, ok ? wq0 + ((size_t)r * nch + c) * 16 : wq0,
                          ok ? 16 : 0);
            // The aligned word around the scale (the host checks the scales' alignment).
            cp_async4z(slot + 2048 + 128 * j + 4 * lane, ok ? wd0 + (si & ~(size_t)1) : wd0,
                       ok ? 4 : 0);
        }
    };
#pragma unroll
    for (int s = 0; s < IQP_S - 1; s++) {
        if (s < nk) issue(s);
        cp_async_commit();
    }
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int g = 0, cr = 0;
    for (int k = 0; k < nk; k++) {
        // The slot refilled now was decoded in round k − 1, by this lane alone.
        if (k + IQP_S - 1 < nk) issue(k + IQP_S - 1);
        cp_async_commit();
        cp_async_wait_n<IQP_S - 1>();
        int rb = rbase + 4 * rstep * g, c = lane + 32 * cr;
        const u8* slot = ring + (k % IQP_S) * IQP_ROUND;
        if (c < nch) {
            int ib = c >> 2, g0 = 2 * (c & 3);
            float dx = a.xd[(xo0 >> 8) + ib];
            int4 xv[2][2];
#pragma unroll
            for (int gg = 0; gg < 2; gg++) {
                const i8* xb = a.xq + xo0 + 256 * ib + 32 * (g0 + gg);
                xv[gg][0] = *(const int4*)xb;
                xv[gg][1] = *(const int4*)(xb + 16);
            }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int r = min(rb + j * rstep, a.rows - 1);
                int4 wv = *(const int4*)(slot + 512 * j + 16 * lane);
                u32 sw = *(const u32*)(slot + 2048 + 128 * j + 4 * lane);
                size_t si = (size_t)r * nblk + ib;
                float dw = h2f((u16)((si & 1) ? sw >> 16 : sw & 0xffff));
                u32 qw[4] = {(u32)wv.x, (u32)wv.y, (u32)wv.z, (u32)wv.w};
                int bsum = 0;
#pragma unroll
                for (int gg = 0; gg < 2; gg++) {
                    u32 a0 = qw[2 * gg], a1 = qw[2 * gg + 1];
                    int ls = 2 * (int)(a1 >> 28) + 1;
                    int w8[8];
#pragma unroll
                    for (int l = 0; l < 4; l++) {
                        u64 gr = tl[16 * ((a0 >> (8 * l)) & 0xff)];
                        u64 sg = sgn[16 * ((a1 >> (7 * l)) & 127) + (lane & 15)];
                        w8[2 * l] = iq2_signed((u32)gr, (u32)sg);
                        w8[2 * l + 1] = iq2_signed((u32)(gr >> 32), (u32)(sg >> 32));
                    }
                    int4 x0 = xv[gg][0], x1 = xv[gg][1];
                    int sumi = __dp4a(w8[0], x0.x, 0);
                    sumi = __dp4a(w8[1], x0.y, sumi);
                    sumi = __dp4a(w8[2], x0.z, sumi);
                    sumi = __dp4a(w8[3], x0.w, sumi);
                    sumi = __dp4a(w8[4], x1.x, sumi);
                    sumi = __dp4a(w8[5], x1.y, sumi);
                    sumi = __dp4a(w8[6], x1.z, sumi);
                    sumi = __dp4a(w8[7], x1.w, sumi);
                    bsum += sumi * ls;
                }
                acc[j] += (dw * dx) * (float)bsum;
            }
        }
        if (++cr == ncr) {
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int r = rb + j * rstep;
                float v = 0.125f * warp_sum(acc[j]);
                if (lane == 0 && r < a.rows) a.y[(size_t)item[0] * a.y_stride + r] = v;
                acc[j] = 0.0f;
            }
            cr = 0;
            g++;
        }
    }
    cp_async_wait_n<0>();
}

// Decode's Q8_0 product on whole rows with the weights streamed through shared memory
// (the host's DS4_CUDA_Q8_PIPE), in the manner of mv_iq2_xxs_1p: a grid of one wave whose
// warps walk rows gridDim.x · 4 apart, each row in rounds of four 16-byte pieces a lane
// (mv_q8_0_body<1, 4>'s pieces, sums, shuffle and warp sum in the same order: the same
// values bit for bit), copied by cp.async into a ring of Q8P_S rounds per warp. The ring
// keeps Q8P_S − 1 rounds in flight across the end of a row, where mv_q8_0_1's warp (one
// row of 2–4 rounds in a block of a multi-wave grid) waits a round trip per round and
// its block is retired and replaced. Weight rounds do not depend on the step: a plain
// product copies its first ones before the PDL wait.
#define Q8P_S 3
#define Q8P_ROUND (4 * 32 * 16 + 4 * 32 * 4)
extern "C" __global__ void __launch_bounds__(128) mv_q8_0_1p(MvArgs a) {
    extern __shared__ __align__(16) u8 ring_dyn[];
    int warps = blockDim.x >> 5, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int nch = a.cols >> 4, spr = a.cols >> 5;
    int rstep = gridDim.x * warps;
    int rbase = blockIdx.x * warps + warp;
    int ncr = (nch + 127) >> 7;
    int nrow = rbase < a.rows ? (a.rows - rbase + rstep - 1) / rstep : 0;
    int nk = nrow * ncr;
    u8* ring = ring_dyn + warp * (Q8P_S * Q8P_ROUND);
    auto issue = [&](int k, long long e) {
        int i = k / ncr, cr = k - i * ncr;
        int r = rbase + i * rstep;
        const u8* wq = a.w + e * a.mat_bytes + (size_t)r * a.cols;
        const u16* wd = (const u16*)(a.sc + e * a.sc_mat_bytes);
        u8* slot = ring + (k % Q8P_S) * Q8P_ROUND;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int c = 128 * cr + 32 * u + lane;
            bool ok = c < nch;
            size_t si = (size_t)r * spr + (c >> 1);
            cp_async16_l2(slot + 512 * u + 16 * lane, ok ? wq + 16 * (size_t)c : wq, ok ? 16 : 0);
            cp_async4z(slot + 2048 + 128 * u + 4 * lane, ok ? wd + (si & ~(size_t)1) : wd,
                       ok ? 4 : 0);
        }
    };
    pdl_signal_early();
    bool early = !a.ids && !a.grp && blockIdx.y * a.nt < a.nb;
    if (early) {
#pragma unroll
        for (int s = 0; s < Q8P_S - 1; s++) {
            if (s < nk) issue(s, 0);
            cp_async_commit();
        }
    }
    pdl_wait();
    const int NTM = 1;
    int item[NTM];
    int nt;
    long long e;
    if (a.grp) {
        int g = blockIdx.y;
        if (g >= *a.ngrp) return;
        e = a.grp[3 * g];
        nt = a.grp[3 * g + 2];
        item[0] = nt > 0 ? a.perm[a.grp[3 * g + 1]] : 0;
    } else {
        int b0 = blockIdx.y * a.nt;
        if (b0 >= a.nb) return;
        nt = 1;
        e = a.ids ? (long long)a.ids[b0] : 0;
        item[0] = b0;
    }
    (void)nt;
    if (!early) {
#pragma unroll
        for (int s = 0; s < Q8P_S - 1; s++) {
            if (s < nk) issue(s, e);
            cp_async_commit();
        }
    }
    float acc = 0.0f;
    int i = 0, cr = 0;
    for (int k = 0; k < nk; k++) {
        // The slot refilled now was read in round k − 1, by this lane alone.
        if (k + Q8P_S - 1 < nk) issue(k + Q8P_S - 1, e);
        cp_async_commit();
        cp_async_wait_n<Q8P_S - 1>();
        int r = rbase + i * rstep;
        long long xo = mv_xoff(a, item[0], r);
        const u8* slot = ring + (k % Q8P_S) * Q8P_ROUND;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int c = 128 * cr + 32 * u + lane;
            bool ok = c < nch;
            int s = 0;
            float dx = 0.0f, dw = 0.0f;
            if (ok) {
                s = dot16(*(const int4*)(slot + 512 * u + 16 * lane), *(const int4*)(a.xq + xo + 16 * c));
                dx = a.xd[(xo >> 5) + (c >> 1)];
                u32 sw = *(const u32*)(slot + 2048 + 128 * u + 4 * lane);
                size_t si = (size_t)r * spr + (c >> 1);
                dw = h2f((u16)((si & 1) ? sw >> 16 : sw & 0xffff));
            }
            s += __shfl_xor_sync(0xffffffffu, s, 1);
            if (ok && (lane & 1) == 0) acc += dw * dx * (float)s;
        }
        if (++cr == ncr) {
            float v = warp_sum(acc);
            if (lane == 0) a.y[(size_t)item[0] * a.y_stride + r] = v;
            acc = 0.0f;
            cr = 0;
            i++;
        }
    }
    cp_async_wait_n<0>();
}

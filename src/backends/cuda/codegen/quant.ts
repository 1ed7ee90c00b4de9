// Quantized layers on tensor cores: one kernel per kiln:QConv / kiln:QMatMul computing Y[M, N] = A[M, K] @ W[N, K]^T
// with 8-bit operands (int8 or uint8 activations x int8 weights into int32, or fp8 e4m3 x e4m3 into float32) through
// mma.sync m16n8k32, and the whole epilogue fused after the last k-step: per-channel scale (x_scale * w_scale[n]) and
// offset (bias minus the activation zero point's compensation), residual, activation, then float32/float16 out or a
// requantization to int8/uint8/fp8. For NHWC convolutions A is never materialized: each 16-byte chunk of an A tile is
// copied straight from the input image (implicit im2col), zero-filled outside the image.
// Also: QuantizeLinear / DequantizeLinear per tensor, and an explicit NHWC im2col (K padded to 16) for convolutions
// whose channels are not a multiple of 16 (the stem's 3).
import { renderCuda } from '../../../ir/expr.js';
import { activationExpr } from './elementwise.js';
import { ctype, finish, indexType, launch1d, lit, type KernelSource } from './types.js';

/** 8-bit operand types of the GEMM (weights are int8 for both integer cases, e4m3 for fp8). */
export type QOperand = 'int8' | 'uint8' | 'fp8';
/** What a quantized layer writes. */
export type QStore = 'float32' | 'float16' | 'int8' | 'uint8' | 'fp8';

export interface QConvGeometry {
  H: number; W: number; C: number; OH: number; OW: number; KH: number; KW: number;
  strides: number[]; pads: number[]; dilations: number[];
}

export interface QGemmArgs {
  /** output rows (N*OH*OW for a convolution), output channels, reduction length (KH*KW*C); K % 16 == 0 */
  M: number; N: number; K: number;
  a: QOperand;
  /** implicit im2col over an NHWC input with C % 16 == 0; absent: A is a dense row-major [M, K] */
  conv?: QConvGeometry;
  residual?: 'float32' | 'float16';
  activation: string;
  params: readonly number[];
  out: QStore;
  yScale?: number;
  yZeroPoint?: number;
  /** tile override (benchmarks and timed tactics); default qgemmTile(M, N) */
  tile?: { BM: number; BN: number };
  /** the first version's main loop (32-bit shared loads, one block per SM, scalar stores): kept for comparisons */
  legacy?: boolean;
  /**
   * mma.sync: 1- and 2-byte outputs go through shared memory for 16-byte coalesced stores (no measured gain yet).
   * wgmma: the whole epilogue works on a float tile staged in shared memory, 8 channels per thread: 16-byte residual
   * reads and 8- or 16-byte output stores, consecutive threads on consecutive chunks of a row (needs N % 8 == 0)
   */
  staged?: boolean;
  /** Hopper's warpgroup MMA (sm_90a) instead of mma.sync: tile `tile.BM` (64 or 128) x `tile.BN` (32, 64 or 128), see qgemmWgmma */
  wgmma?: boolean;
  /** wgmma: blocks per SM asked of the compiler (__launch_bounds__; capped by shared memory), default 2 when they fit */
  occupancy?: number;
  /**
   * wgmma: the device's SM count, for a persistent grid (SMs x blocks per SM): each block walks tiles blockIdx.x,
   * + gridDim.x, ... as one stream of k-steps, so the next tile's loads are in flight during a tile's epilogue
   */
  persistent?: number;
  /** a second output (out 1): the first (a float store) as stored, requantized to this 8-bit type */
  out2?: { store: 'int8' | 'uint8' | 'fp8'; yScale: number; yZeroPoint: number };
  /**
   * the first epilogue's arithmetic (I2F, div.rn, rintf, F2I on the conversion pipes): the byte-for-byte reference of
   * the checks for the FMA-pipe arithmetic used otherwise (see KQ_HELPERS)
   */
  v1Epilogue?: boolean;
  /** convert accumulators with I2F (XU pipe) even where the magic-number add applies (benchmarks) */
  xuConvert?: boolean;
}

/** The kernel parameters' tail: the output(s), with their C declarations. */
function outParams(g: QGemmArgs): { decl: string; params: KernelSource['params'] } {
  const decl = `${QSTORAGE[g.out]}* __restrict__ out${g.out2 ? `, ${QSTORAGE[g.out2.store]}* __restrict__ out2` : ''}`;
  return { decl, params: [{ kind: 'out', index: 0 }, ...(g.out2 ? [{ kind: 'out' as const, index: 1 }] : [])] };
}

/** The second output's value (C expression) from the stored first output `s` (its float value `v` for float32). */
function out2Expr(g: QGemmArgs, s: string, v: string): string {
  const o = g.out2!;
  return storeExpr(o.store, g.out === 'float16' ? `h2f(${s})` : v, o.yScale, o.yZeroPoint, g.v1Epilogue);
}

const BK = 64;
const ROW = BK + 16; // shared-memory row pitch in bytes: conflict-free fragment loads, 16-byte aligned rows
const STAGES = 3;

/** Tile shape for a problem: 128x128 when there are enough tiles to fill the device twice (2 blocks per SM), else smaller. */
export function qgemmTile(M: number, N: number): { BM: number; BN: number } {
  const tiles = (bm: number, bn: number) => Math.ceil(M / bm) * Math.ceil(N / bn);
  if (N > 64 && tiles(128, 128) >= 264) return { BM: 128, BN: 128 };
  if (N > 64 && tiles(64, 128) >= 132) return { BM: 64, BN: 128 };
  return { BM: 64, BN: 64 };
}

/** The tiles a timed tactic may choose from. */
export const QGEMM_TILES = [{ BM: 128, BN: 128 }, { BM: 64, BN: 128 }, { BM: 64, BN: 64 }] as const;

export const QSTORAGE: Record<QStore, string> = { float32: 'float', float16: 'unsigned short', int8: 'signed char', uint8: 'unsigned char', fp8: 'unsigned char' };

/** Device helpers for fp8 e4m3 (sm_89+): conversions through the hardware's paired converters. */
const FP8_HELPERS = String.raw`__device__ __forceinline__ unsigned char f2e4m3(float f) {
  unsigned short r; asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(0.0f), "f"(f)); return (unsigned char)(r & 0xff);
}
__device__ __forceinline__ float e4m32f(unsigned char v) {
  unsigned int h; asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h) : "h"((unsigned short)v)); return h2f((unsigned short)(h & 0xffff));
}`;

/**
 * Epilogue arithmetic without the conversion pipes. I2F, F2I, FRND and div.rn's reciprocal issue on the XU pipe (16
 * lanes per clock per SM, 1/8 of the FMA rate): four of them per output, with their ALU neighbours, bound the epilogue
 * of short-K layers (ncu, 1x1 56px 64->256 on an H100: 75-81 us, 52-54M warp instructions for 25.7M outputs; 32 us and
 * 18M with these). Each function returns exactly the bits of the plain expression it replaces.
 * - kq_i2f22: (float)a for |a| < 2^22 (accumulators of K * 128 * 255 < 2^22) by a magic-number add; longer
 *   reductions keep I2F, then the only XU instruction per output (8 XU cycles per warp, fewer than its other issues).
 * - kq_q8: rintf(clamp(v / y, lo, hi)) for integer bounds |lo|, |hi| <= 255 (an 8-bit store's range less its zero
 *   point: clamping before rounding is the same as after). v * r (r = 1/y rounded) is within 2 ulp (< 2^-13 here) of
 *   the rounded quotient; adding 1.5 * 2^23 rounds it to an integer, ties to even, like rintf. Only when v * r lies
 *   within 2^-12 of a half-integer can the two round differently: then the true division decides (1 output in 2^11
 *   on spread values). NaN goes to lo, as fmaxf(NaN, lo) did. kq_q8x8 does 8 outputs with one branch and packs bytes.
 */
const KQ_HELPERS = String.raw`__device__ __forceinline__ float kq_i2f22(int a) { return __int_as_float(0x4B400000 + a) - 12582912.0f; }
__device__ __forceinline__ int kq_q8(float v, float r, float y, float lo, float hi) {
  const float q = fminf(fmaxf(v * r, lo), hi);
  float t = q + 12582912.0f;
  if (fabsf(q - (t - 12582912.0f)) >= 0.499755859f) t = fminf(fmaxf(v / y, lo), hi) + 12582912.0f;
  return __float_as_int(t) - 0x4B400000;
}
__device__ __forceinline__ uint2 kq_q8x8(const float (&v)[8], float r, float y, float lo, float hi, int zp) {
  float t[8];
  bool slow = false;
  #pragma unroll
  for (int j = 0; j < 8; j++) {
    const float q = fminf(fmaxf(v[j] * r, lo), hi);
    t[j] = q + 12582912.0f;
    slow |= fabsf(q - (t[j] - 12582912.0f)) >= 0.499755859f;
  }
  if (slow) {
    #pragma unroll
    for (int j = 0; j < 8; j++) t[j] = fminf(fmaxf(v[j] / y, lo), hi) + 12582912.0f;
  }
  int b[8];
  #pragma unroll
  for (int j = 0; j < 8; j++) b[j] = __float_as_int(t[j]) + zp; // low byte: rint + zp (0x4B400000 ends in a zero byte)
  return make_uint2(__byte_perm(__byte_perm(b[0], b[1], 0x0040), __byte_perm(b[2], b[3], 0x0040), 0x5410),
                    __byte_perm(__byte_perm(b[4], b[5], 0x0040), __byte_perm(b[6], b[7], 0x0040), 0x5410));
}
__device__ __forceinline__ unsigned kq_h2(float lo, float hi) {
  unsigned d; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo)); return d;
}`;

/** The reciprocal of a requantization scale, when kq_q8's error bound holds (r a normal float32), else undefined. */
function recip(yScale: number): number | undefined {
  const y = Math.fround(yScale), r = Math.fround(1 / y);
  return y > 0 && Number.isFinite(r) && r >= 2 ** -126 ? r : undefined;
}

/** An 8-bit store's range less its zero point (the bounds of kq_q8 / kq_q8x8). */
const q8Bounds = (out: 'int8' | 'uint8', zp: number) => (out === 'int8' ? [-128 - zp, 127 - zp] : [-zp, 255 - zp]);

/** C expression storing the float `v` as `out` (requantizing with the literal scale and zero point); v1: the first arithmetic. */
function storeExpr(out: QStore, v: string, yScale: number, zp: number, v1 = false): string {
  const q = `(${v}) / ${fl(yScale)}`, r = v1 ? undefined : recip(yScale);
  const int8 = (o: 'int8' | 'uint8', T: string) => {
    const [lo, hi] = q8Bounds(o, zp);
    return r === undefined ? `(${T})fminf(fmaxf(rintf(${q}) + ${zp}.0f, ${lo + zp}.0f), ${hi + zp}.0f)`
      : `(${T})(kq_q8(${v}, ${fl(r)}, ${fl(yScale)}, ${lo}.0f, ${hi}.0f) + ${zp})`;
  };
  switch (out) {
    case 'float32': return `(${v})`;
    case 'float16': return `f2h(${v})`;
    case 'int8': return int8('int8', 'signed char');
    case 'uint8': return int8('uint8', 'unsigned char');
    case 'fp8': return `f2e4m3(${q})`;
  }
}

/**
 * Eight floats `v` (a float[8]) stored as 8-bit `out` and packed into a uint2 with one slow-path branch (kq_q8x8), or
 * undefined where the plain expressions must be used. relu: `v` is before a Relu, folded into the lower bound.
 */
function store8x8(out: QStore, v: string, yScale: number, zp: number, v1: boolean | undefined, relu = false): string | undefined {
  const r = recip(yScale);
  if (v1 || r === undefined || (out !== 'int8' && out !== 'uint8')) return undefined;
  const [lo, hi] = q8Bounds(out, zp);
  return `kq_q8x8(${v}, ${fl(r)}, ${fl(yScale)}, ${relu ? Math.max(lo, 0) : lo}.0f, ${hi}.0f, ${zp})`;
}

/** The accumulator as a float (C function name or cast): exact; on the FMA pipe for short reductions. */
function accToFloat(g: QGemmArgs): string {
  if (g.a === 'fp8' || g.v1Epilogue || g.xuConvert) return '(float)';
  return g.K * 128 * (g.a === 'uint8' ? 255 : 128) < 2 ** 22 ? 'kq_i2f22' : '(float)';
}

/** A float literal that round-trips through float32. */
const fl = (v: number): string => {
  const s = Math.fround(v).toPrecision(9);
  return /[.e]/.test(s) ? `${s}f` : `${s}.0f`;
};

function mmaInstr(a: QOperand): { asm: string; acc: string; accC: string } {
  if (a === 'fp8') return { asm: 'mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32', acc: 'float', accC: 'f' };
  return { asm: `mma.sync.aligned.m16n8k32.row.col.s32.${a === 'uint8' ? 'u8' : 's8'}.s8.s32`, acc: 'int', accC: 'r' };
}

/**
 * The fused quantized GEMM. Params: in 0 = activation (dense [M, K] or NHWC image), in 1 = weight [N, K] (8-bit),
 * ws = float32 [2N]: per-channel scale then offset, in 3 = residual [M, N] (when `residual`), out 0 = Y [M, N].
 * y = act(acc * scale[n] + offset[n] + residual), stored as `out`.
 */
export function qgemm(g: QGemmArgs): KernelSource {
  if (g.wgmma) return qgemmWgmma(g);
  const { M, N, K } = g;
  if (K % 16 !== 0) throw new Error(`qgemm: K = ${K} must be a multiple of 16`);
  if (g.conv && g.conv.C % 16 !== 0) throw new Error(`qgemm: implicit im2col needs C % 16 == 0, got ${g.conv.C}`);
  const { BM, BN } = g.tile ?? qgemmTile(M, N);
  const WM = BM / 2, WN = BN / 4, MT = WM / 16, NT = WN / 8;
  const aT = g.a === 'uint8' ? 'unsigned char' : g.a === 'int8' ? 'signed char' : 'unsigned char';
  const { asm, acc, accC } = mmaInstr(g.a);
  const KT = Math.ceil(K / BK);
  const stageBytes = (BM + BN) * ROW;
  const it = indexType(Math.max(M * N, M * K, N * K, g.conv ? g.conv.H * g.conv.W * g.conv.C * Math.ceil(M / (g.conv.OH * g.conv.OW)) : 0));
  const aPer = (BM * BK) / 16 / 256, bPer = (BN * BK) / 16 / 256;
  // per-thread A rows are fixed over the k loop: their coordinates are computed once
  const { setup: aSetup, src: aSrc } = aChunk(g, aT, it, aPer, '(tid + i * 256) / 4');
  const legacyFrag = `
      #pragma unroll
      for (int a = 0; a < ${MT}; a++) {
        const unsigned char* p = As + (wm * ${WM} + a * 16 + grp) * ${ROW} + ks + tig * 4;
        af[a][0] = *(const unsigned*)p;
        af[a][1] = *(const unsigned*)(p + 8 * ${ROW});
        af[a][2] = *(const unsigned*)(p + 16);
        af[a][3] = *(const unsigned*)(p + 8 * ${ROW} + 16);
      }
      #pragma unroll
      for (int b = 0; b < ${NT}; b++) {
        const unsigned char* p = Bs + (wn * ${WN} + b * 8 + grp) * ${ROW} + ks + tig * 4;
        bf[b][0] = *(const unsigned*)p;
        bf[b][1] = *(const unsigned*)(p + 16);
      }`;
  // ldmatrix.x4: A = rows 0-7 / 8-15 x bytes 0-15 / 16-31 (a0..a3); B = two n-tiles x bytes 0-15 / 16-31
  const ldsmFrag = `
      #pragma unroll
      for (int a = 0; a < ${MT}; a++)
        ldsm4(sA + (wm * ${WM} + a * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ${ROW} + ks + (lane >> 4) * 16, af[a][0], af[a][1], af[a][2], af[a][3]);
      #pragma unroll
      for (int b = 0; b < ${NT}; b += 2)
        ldsm4(sB + (wn * ${WN} + b * 8 + (lane & 7) + (lane >> 4) * 8) * ${ROW} + ks + ((lane >> 3) & 1) * 16, bf[b][0], bf[b][1], bf[b + 1][0], bf[b + 1][1]);`;
  const resArg = g.residual ? `, const ${g.residual === 'float16' ? 'unsigned short' : 'float'}* __restrict__ res` : '';
  const resAdd = g.residual ? `v += ${g.residual === 'float16' ? 'h2f(res[o])' : 'res[o]'};` : '';
  const act = renderCuda(activationExpr(g.activation, g.params), () => 'v');
  const store = storeExpr(g.out, 'v', g.yScale ?? 1, g.yZeroPoint ?? 0, g.v1Epilogue);
  const pairedEpilogue = pairedStores(g, { BM, BN, MT, NT, WM, WN, smemBytes: STAGES * stageBytes }, it, act);
  const body = `${g.a === 'fp8' || g.out === 'fp8' ? FP8_HELPERS : ''}
${KQ_HELPERS}
__device__ __forceinline__ void ldsm4(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\\n" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void cp16(unsigned dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\\n" :: "r"(dst), "l"(src), "r"(ok ? 16 : 0));
}
extern "C" __global__ void __launch_bounds__(256${g.legacy ? '' : ', 2'}) KNAME(const ${aT}* __restrict__ x, const unsigned char* __restrict__ w, const float* __restrict__ sc${resArg}, ${outParams(g).decl}) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3, grp = lane >> 2, tig = lane & 3;
  const int m0 = blockIdx.x * ${BM}, n0 = blockIdx.y * ${BN};
  const unsigned sbase = (unsigned)__cvta_generic_to_shared(smem);${aSetup}
  ${acc} accum[${MT}][${NT}][4];
  #pragma unroll
  for (int a = 0; a < ${MT}; a++)
    #pragma unroll
    for (int b = 0; b < ${NT}; b++)
      #pragma unroll
      for (int r = 0; r < 4; r++) accum[a][b][r] = 0;
  auto load = [&](int kt, int stage) {
    const unsigned sa = sbase + stage * ${stageBytes}, sb = sa + ${BM * ROW};
    #pragma unroll
    for (int i = 0; i < ${aPer}; i++) {
      const int id = tid + i * 256, row = id >> 2, k = kt * ${BK} + (id & 3) * 16;${aSrc}
      cp16(sa + row * ${ROW} + (id & 3) * 16, src, ok);
    }
    #pragma unroll
    for (int i = 0; i < ${bPer}; i++) {
      const int id = tid + i * 256, row = id >> 2, n = n0 + row, k = kt * ${BK} + (id & 3) * 16;
      const bool ok = n < ${N} && k < ${K};
      cp16(sb + row * ${ROW} + (id & 3) * 16, ok ? w + (${it})n * ${K} + k : w, ok);
    }
  };
  #pragma unroll
  for (int s = 0; s < ${STAGES - 1}; s++) {
    if (s < ${KT}) load(s, s);
    asm volatile("cp.async.commit_group;\\n");
  }
  for (int kt = 0; kt < ${KT}; kt++) {
    asm volatile("cp.async.wait_group ${STAGES - 2};\\n");
    __syncthreads();
    if (kt + ${STAGES - 1} < ${KT}) load(kt + ${STAGES - 1}, (kt + ${STAGES - 1}) % ${STAGES});
    asm volatile("cp.async.commit_group;\\n");
${g.legacy ? `    const unsigned char* As = smem + (kt % ${STAGES}) * ${stageBytes};
    const unsigned char* Bs = As + ${BM * ROW};
` : ''}    ${g.legacy ? '' : `const unsigned sA = sbase + (kt % ${STAGES}) * ${stageBytes}, sB = sA + ${BM * ROW};`}
    #pragma unroll
    for (int ks = 0; ks < ${BK}; ks += 32) {
      unsigned af[${MT}][4], bf[${NT}][2];${g.legacy ? legacyFrag : ldsmFrag}
      #pragma unroll
      for (int a = 0; a < ${MT}; a++)
        #pragma unroll
        for (int b = 0; b < ${NT}; b++)
          asm volatile("${asm} {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\\n"
            : "+${accC}"(accum[a][b][0]), "+${accC}"(accum[a][b][1]), "+${accC}"(accum[a][b][2]), "+${accC}"(accum[a][b][3])
            : "r"(af[a][0]), "r"(af[a][1]), "r"(af[a][2]), "r"(af[a][3]), "r"(bf[b][0]), "r"(bf[b][1]));
    }
  }
  asm volatile("cp.async.wait_group 0;\\n");
${g.legacy || N % 2 ? `  #pragma unroll
  for (int a = 0; a < ${MT}; a++)
    #pragma unroll
    for (int b = 0; b < ${NT}; b++)
      #pragma unroll
      for (int r = 0; r < 4; r++) {
        const int m = m0 + wm * ${WM} + a * 16 + grp + (r >> 1) * 8, n = n0 + wn * ${WN} + b * 8 + tig * 2 + (r & 1);
        if (m >= ${M} || n >= ${N}) continue;
        const ${it} o = (${it})m * ${N} + n;
        float v = ${accToFloat(g)}(accum[a][b][r]) * sc[n] + sc[${N} + n];
        ${resAdd}
        v = ${act};
        out[o] = ${store};${g.out2 ? `
        out2[o] = ${out2Expr(g, 'out[o]', 'v')};` : ''}
      }` : pairedEpilogue}
}`;
  const params: KernelSource['params'] = [{ kind: 'in', index: 0 }, { kind: 'in', index: 1 }, { kind: 'ws' }, ...(g.residual ? [{ kind: 'in' as const, index: 3 }] : []), ...outParams(g).params];
  return finish(`kiln_qgemm_${g.a}`, body, { grid: [Math.ceil(M / BM), Math.ceil(N / BN), 1], block: [256, 1, 1], sharedBytes: STAGES * stageBytes, params });
}

/**
 * The A-row coordinates and the source address of one 16-byte chunk (shared by both main loops): `rowsPer` rows per
 * thread. `stepBytes`: when a convolution's channel count is a multiple of the k-step, every k-step lies within one
 * filter tap, so the tap and its offset are worked out once per k-step (`step`, the same for all threads) and each
 * chunk costs a bounds test and an add on a row offset computed once per tile, not a division chain.
 */
function aChunk(g: QGemmArgs, aT: string, it: string, rowsPer: number, rowOf: string, stepBytes = 0) {
  const cv = g.conv, { M, K } = g;
  if (cv && stepBytes && cv.C % stepBytes === 0) {
    const setup = `
  ${it} a_off[${rowsPer}];
  int a_ih[${rowsPer}], a_iw[${rowsPer}];
  #pragma unroll
  for (int i = 0; i < ${rowsPer}; i++) {
    const int m = m0 + ${rowOf};
    const int mm = m < ${M} ? m : 0;
    const int ow = mm % ${cv.OW}, t = mm / ${cv.OW}, n = t / ${cv.OH};
    const int ih = (t % ${cv.OH}) * ${cv.strides[0]} - ${cv.pads[0]};
    a_iw[i] = ow * ${cv.strides[1]} - ${cv.pads[1]};
    a_ih[i] = m < ${M} ? ih : -(1 << 24); // rows past M read as padding
    a_off[i] = (((${it})n * ${cv.H} + ih) * ${cv.W} + a_iw[i]) * ${cv.C};
  }`;
    const per = cv.C / stepBytes; // k-steps per tap
    const step = `
    const int tap = kt / ${per}, dh = tap / ${cv.KW} * ${cv.dilations[0]}, dw = tap % ${cv.KW} * ${cv.dilations[1]};
    const ${it} tapOff = ((${it})dh * ${cv.W} + dw) * ${cv.C} + kt % ${per} * ${stepBytes};`;
    const src = `
      const bool ok = (unsigned)(a_ih[i] + dh) < ${cv.H}u && (unsigned)(a_iw[i] + dw) < ${cv.W}u;
      const ${aT}* src = ok ? x + a_off[i] + tapOff + ch * 16 : x;`;
    return { setup, step, src };
  }
  const setup = cv ? `
  int a_n[${rowsPer}], a_ih[${rowsPer}], a_iw[${rowsPer}];
  #pragma unroll
  for (int i = 0; i < ${rowsPer}; i++) {
    const int m = m0 + ${rowOf};
    const int mm = m < ${M} ? m : 0;
    const int ow = mm % ${cv.OW}, t = mm / ${cv.OW};
    a_iw[i] = ow * ${cv.strides[1]} - ${cv.pads[1]};
    a_ih[i] = (t % ${cv.OH}) * ${cv.strides[0]} - ${cv.pads[0]};
    a_n[i] = m < ${M} ? t / ${cv.OH} : -1;
  }` : '';
  const src = cv ? `
      const int c = k % ${cv.C}, kt2 = k / ${cv.C};
      const int ih = a_ih[i] + (kt2 / ${cv.KW}) * ${cv.dilations[0]}, iw = a_iw[i] + (kt2 % ${cv.KW}) * ${cv.dilations[1]};
      const bool ok = a_n[i] >= 0 && k < ${K} && (unsigned)ih < ${cv.H}u && (unsigned)iw < ${cv.W}u;
      const ${aT}* src = ok ? x + (((${it})a_n[i] * ${cv.H} + ih) * ${cv.W} + iw) * ${cv.C} + c : x;` : `
      const int m = m0 + row;
      const bool ok = m < ${M} && k < ${K};
      const ${aT}* src = ok ? x + (${it})m * ${K} + k : x;`;
  return { setup, step: '', src };
}

/**
 * The fused quantized GEMM on Hopper's warpgroup MMA (`wgmma.mma_async`, sm_90a). Block = BM / 64 warpgroups, tile
 * BM x BN (BM 64 or 128, BN 32, 64 or 128: narrow tiles give short-M layers more blocks; each warpgroup one m64nBNk32
 * chain), k-step 128 bytes (64 when K <= 64). Tiles go to shared
 * memory by cp.async (16-byte chunks; implicit im2col for convolutions as in `qgemm`) in the swizzled layout the
 * wgmma descriptors name (128-byte rows: chunk c of row r at c ^ (r % 8); 64-byte rows: c ^ ((r / 2) % 4)), 3-4
 * stages deep, one MMA group left in flight while the next k-step is set up. Integer only in the timed tactic: Hopper's fp8 wgmma accumulates with fewer bits than float32
 * (measured: half the fp16 outputs of a BERT GEMM differ in their last bits from mma.sync's), which compounds
 * through a chain of requantized fp8 layers.
 * Both operands K-major from shared memory, accumulators in registers, then the same epilogue as `qgemm`
 * (each warp owns 16 rows of its warpgroup's 64, so the m16n8 store mapping applies unchanged).
 */
export function qgemmWgmma(g: QGemmArgs): KernelSource {
  const { M, N, K } = g;
  if (K % 16 !== 0 || N % 2 !== 0) throw new Error(`qgemm (wgmma): needs K % 16 == 0 and an even N, got K = ${K}, N = ${N}`);
  if (g.conv && g.conv.C % 16 !== 0) throw new Error(`qgemm (wgmma): implicit im2col needs C % 16 == 0, got ${g.conv.C}`);
  // k-step: 128 bytes (128-byte swizzle), or 64 (64-byte swizzle) when K fits in it: no MMA on zero padding
  // one warpgroup per 64 rows of the tile: 64 x BN blocks (128 threads) leave fewer SMs idle on short M
  const BM = g.tile?.BM === 64 ? 64 : 128, BN = g.tile?.BN === 64 || g.tile?.BN === 32 ? g.tile.BN : 128, BKB = K <= 64 ? 64 : 128, CH = BKB / 16, TH = 2 * BM;
  const NT = BN / 8, KT = Math.ceil(K / BKB);
  // stages: loads run D = ST - 2 k-steps ahead while one wgmma group stays in flight behind the current one (the slot
  // a load refills was last read two groups back); no more stages than a short reduction needs, so shared memory
  // is left for a second block on the SM
  const ST = Math.max(3, Math.min(4, KT + 1)), D = ST - 2;
  const swz = (row: string) => (BKB === 128 ? `(ch ^ (${row} & 7))` : `(ch ^ ((${row} >> 1) & 3))`);
  const aT = g.a === 'uint8' ? 'unsigned char' : g.a === 'int8' ? 'signed char' : 'unsigned char';
  const staged = !!g.staged && N % 8 === 0, FP = BN + 4; // staged float tile: row pitch BN + 4 floats (rows 4 banks apart)
  // the staged tile reuses the idle pipeline buffers, except in a persistent grid (the next tile's loads are in flight)
  const stage = (BM + BN) * BKB, fOff = g.persistent ? ST * stage : 0;
  const smem = Math.max(ST * stage, staged ? fOff + BM * FP * 4 : 0) + 1024; // + alignment slack: swizzle atoms want 1024-aligned tiles
  const fit = Math.floor((227 * 1024) / (smem + 1024)), blocks = Math.max(1, Math.min(g.occupancy ?? 2, fit));
  const it = indexType(Math.max(M * N, M * K, N * K, g.conv ? g.conv.H * g.conv.W * g.conv.C * Math.ceil(M / (g.conv.OH * g.conv.OW)) : 0));
  const aPer = (BM * CH) / TH, bPer = (BN * CH) / TH;
  const a = aChunk(g, aT, it, aPer, `(tid + i * ${TH}) / ${CH}`, BKB);
  const fp8 = g.a === 'fp8';
  const accT = fp8 ? 'float' : 'int', accC = fp8 ? 'f' : 'r';
  const instr = fp8 ? `wgmma.mma_async.sync.aligned.m64n${BN}k32.f32.e4m3.e4m3`
    : `wgmma.mma_async.sync.aligned.m64n${BN}k32.s32.${g.a === 'uint8' ? 'u8' : 's8'}.s8`;
  const nAcc = BN / 2;
  const regs = Array.from({ length: nAcc }, (_, i) => `%${i}`).join(',');
  const outs = Array.from({ length: nAcc }, (_, i) => `"+${accC}"(accum[0][${i >> 2}][${i & 3}])`).join(', ');
  // scale-d = 1 (accumulate; the accumulators start at zero)
  const mma = `asm volatile("{\\n.reg .pred p;\\nsetp.ne.b32 p, %${nAcc + 2}, 0;\\n${instr} {${regs}}, %${nAcc}, %${nAcc + 1}, p${fp8 ? ', 1, 1' : ''};\\n}\\n"
          : ${outs}
          : "l"(da), "l"(db), "r"(1));`;
  const act = renderCuda(activationExpr(g.activation, g.params), () => 'v');
  const resArg = g.residual ? `, const ${g.residual === 'float16' ? 'unsigned short' : 'float'}* __restrict__ res` : '';
  const epilogue = staged ? stagedFloatStores(g, { BM, BN, NT, FP, TH, fOff }, it, act)
    : pairedStores({ ...g, staged: false }, { BM, BN, MT: 1, NT, WM: 16, WN: BN, smemBytes: 0 }, it, act);
  const tilesM = Math.ceil(M / BM), tilesN = Math.ceil(N / BN), grid = g.persistent ? Math.min(tilesM * tilesN, g.persistent * blocks) : 0;
  const loadBody = `
    const unsigned sa = sbase + stage * ${stage}, sb = sa + ${BM * BKB};${a.step}
    #pragma unroll
    for (int i = 0; i < ${aPer}; i++) {
      const int id = tid + i * ${TH}, row = id / ${CH}, ch = id % ${CH}${a.step ? '' : `, k = kt * ${BKB} + ch * 16`};${a.src}
      cp16(sa + row * ${BKB} + (${swz('row')} << 4), src, ok);
    }
    #pragma unroll
    for (int i = 0; i < ${bPer}; i++) {
      const int id = tid + i * ${TH}, row = id / ${CH}, ch = id % ${CH}, n = n0 + row, k = kt * ${BKB} + ch * 16;
      const bool ok = n < ${N} && k < ${K};
      cp16(sb + row * ${BKB} + (${swz('row')} << 4), ok ? w + (${it})n * ${K} + k : w, ok);
    }`;
  const mmaStep = (slot: string) => `const unsigned sA = sbase + (${slot}) * ${stage}, sB = sA + ${BM * BKB};
    asm volatile("wgmma.fence.sync.aligned;\\n" ::: "memory");
    #pragma unroll
    for (int ks = 0; ks < ${BKB / 32}; ks++) {
      const unsigned long long da = qdesc(sA + wgA + ks * 32), db = qdesc(sB + ks * 32);
      ${mma}
    }
    asm volatile("wgmma.commit_group.sync.aligned;\\n" ::: "memory");`;
  const zero = `#pragma unroll
  for (int b = 0; b < ${NT}; b++)
    #pragma unroll
    for (int r = 0; r < 4; r++) accum[0][b][r] = 0;`;
  // persistent: k-step s of this block is k-step s % KT of its tile s / KT; the loads run D steps ahead across tiles,
  // so a tile's epilogue (after waiting for its last MMA group) overlaps the next tile's first loads
  const tileOf = (step: string) => `const int tile = (int)blockIdx.x + (${step}) / ${KT} * ${grid}, m0 = tile / ${tilesN} * ${BM}, n0 = tile % ${tilesN} * ${BN};`;
  const pipeline = !grid ? `  const int m0 = blockIdx.x * ${BM}, n0 = blockIdx.y * ${BN};${a.setup}
  ${accT} accum[1][${NT}][4];
  ${zero}
  auto load = [&](int kt, int stage) {${loadBody}
  };
  #pragma unroll
  for (int s = 0; s < ${D}; s++) {
    if (s < ${KT}) load(s, s);
    asm volatile("cp.async.commit_group;\\n");
  }
  const unsigned wgA = (warp >> 2) * ${64 * BKB};
  for (int kt = 0; kt < ${KT}; kt++) {
    asm volatile("cp.async.wait_group ${D - 1};\\n");
    asm volatile("fence.proxy.async.shared::cta;\\n" ::: "memory"); // cp.async wrote it; the tensor cores read it
    __syncthreads();
    if (kt + ${D} < ${KT}) load(kt + ${D}, (kt + ${D}) % ${ST});
    asm volatile("cp.async.commit_group;\\n");
    ${mmaStep(`kt % ${ST}`)}
    asm volatile("wgmma.wait_group.sync.aligned 1;\\n" ::: "memory"); // this group may run on behind the next k-step's loads
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");
  asm volatile("cp.async.wait_group 0;\\n");
${epilogue}` : `  const int steps = (${tilesM * tilesN - 1} - (int)blockIdx.x) / ${grid} * ${KT} + ${KT};
  ${accT} accum[1][${NT}][4];
  ${zero}
  auto load = [&](int s) {
    ${tileOf('s')}
    const int kt = s % ${KT}, stage = s % ${ST};${a.setup}${loadBody}
  };
  #pragma unroll
  for (int s = 0; s < ${D}; s++) {
    if (s < steps) load(s);
    asm volatile("cp.async.commit_group;\\n");
  }
  const unsigned wgA = (warp >> 2) * ${64 * BKB};
  for (int s = 0; s < steps; s++) {
    asm volatile("cp.async.wait_group ${D - 1};\\n");
    asm volatile("fence.proxy.async.shared::cta;\\n" ::: "memory"); // cp.async wrote it; the tensor cores read it
    __syncthreads();
    if (s + ${D} < steps) load(s + ${D});
    asm volatile("cp.async.commit_group;\\n");
    ${mmaStep(`s % ${ST}`)}
    if (s % ${KT} != ${KT - 1}) {
      asm volatile("wgmma.wait_group.sync.aligned 1;\\n" ::: "memory");
      continue;
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");
    {
      ${tileOf('s')}
${epilogue}
    }
    ${zero}
  }
  asm volatile("cp.async.wait_group 0;\\n");`;
  const body = `${fp8 || g.out === 'fp8' ? FP8_HELPERS : ''}
${KQ_HELPERS}
__device__ __forceinline__ void cp16(unsigned dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\\n" :: "r"(dst), "l"(src), "r"(ok ? 16 : 0));
}
// shared-memory matrix descriptor: start >> 4, leading offset 1 (unused when K-major and swizzled), stride between
// 8-row atoms (8 rows of ${BKB} bytes), ${BKB}-byte swizzle
__device__ __forceinline__ unsigned long long qdesc(unsigned addr) {
  return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) | ((unsigned long long)(${8 * BKB} >> 4) << 32) | (${BKB === 128 ? 1 : 2}ull << 62);
}
extern "C" __global__ void __launch_bounds__(${TH}, ${blocks}) KNAME(const ${aT}* __restrict__ x, const unsigned char* __restrict__ w, const float* __restrict__ sc${resArg}, ${outParams(g).decl}) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp, wn = 0, grp = lane >> 2, tig = lane & 3;
  (void)wn;
  const unsigned sbase = ((unsigned)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;
${pipeline}
}`;
  const params: KernelSource['params'] = [{ kind: 'in', index: 0 }, { kind: 'in', index: 1 }, { kind: 'ws' }, ...(g.residual ? [{ kind: 'in' as const, index: 3 }] : []), ...outParams(g).params];
  return { ...finish(`kiln_qwgmma_${g.a}`, body, { grid: grid ? [grid, 1, 1] : [tilesM, tilesN, 1], block: [TH, 1, 1], sharedBytes: smem, params }), arch: 'sm_90a' };
}

/**
 * The wgmma kernel's staged epilogue. Pass 1: each thread writes acc * scale + offset (the same float expression as
 * the direct epilogue, so the bytes stored are identical) for its accumulator pairs into a float tile in shared
 * memory (the pipeline buffers, idle now, or a region of its own in a persistent grid). Pass 2: each thread takes 8 consecutive channels of one row: residual in
 * one 16-byte read (fp16; two for fp32), activation, then one 8-byte (int8), 16-byte (fp16) or two 16-byte (fp32)
 * stores, and 8 bytes for the second output; a warp covers whole rows of the tile, so every access is coalesced.
 */
function stagedFloatStores(g: QGemmArgs, t: { BM: number; BN: number; NT: number; FP: number; TH: number; fOff: number }, it: string, act: string): string {
  const { BM, BN, NT, FP, TH, fOff } = t, CPR = BN / 8, cvt = accToFloat(g), v1 = g.v1Epilogue;
  const edgeM = g.M % BM !== 0, edgeN = g.N % BN !== 0; // bounds checks only where a tile can stick out
  const T = QSTORAGE[g.out], st = (v: string) => storeExpr(g.out, v, g.yScale ?? 1, g.yZeroPoint ?? 0, v1);
  // 8-bit out: 8 channels requantized together (one slow-path branch), a Relu folded into the clamp
  const relu = g.activation === 'Relu';
  const pk = store8x8(g.out, 'vv', g.yScale ?? 1, g.yZeroPoint ?? 0, v1, relu);
  const res = !g.residual ? '' : g.residual === 'float16' ? `
    const uint4 rr = *(const uint4*)(res + o);
    const unsigned ru[4] = { rr.x, rr.y, rr.z, rr.w };
    #pragma unroll
    for (int j = 0; j < 8; j++) vv[j] += h2f((unsigned short)((ru[j >> 1] >> ((j & 1) * 16)) & 0xffff));` : `
    const float4 r0 = *(const float4*)(res + o), r1 = *(const float4*)(res + o + 4);
    vv[0] += r0.x; vv[1] += r0.y; vv[2] += r0.z; vv[3] += r0.w; vv[4] += r1.x; vv[5] += r1.y; vv[6] += r1.z; vv[7] += r1.w;`;
  const activate = pk && relu ? '' : `
    #pragma unroll
    for (int j = 0; j < 8; j++) { const float v = vv[j]; vv[j] = ${act}; }`;
  const pk4 = '__byte_perm(__byte_perm(s[0], s[1], 0x0040), __byte_perm(s[2], s[3], 0x0040), 0x5410), __byte_perm(__byte_perm(s[4], s[5], 0x0040), __byte_perm(s[6], s[7], 0x0040), 0x5410)';
  // fp16 out: channel pairs converted by one cvt.rn.f16x2 (the same rounding as two cvt.rn.f16)
  const put = g.out === 'float32' ? `
    *(float4*)(out + o) = make_float4(vv[0], vv[1], vv[2], vv[3]);
    *(float4*)(out + o + 4) = make_float4(vv[4], vv[5], vv[6], vv[7]);` : g.out === 'float16' ? `
    unsigned hh[4];
    #pragma unroll
    for (int j = 0; j < 4; j++) hh[j] = ${v1 ? '(unsigned)f2h(vv[2 * j]) | ((unsigned)f2h(vv[2 * j + 1]) << 16)' : 'kq_h2(vv[2 * j], vv[2 * j + 1])'};
    *(uint4*)(out + o) = make_uint4(hh[0], hh[1], hh[2], hh[3]);` : pk ? `
    *(uint2*)(out + o) = ${pk};` : `
    unsigned s[8];
    #pragma unroll
    for (int j = 0; j < 8; j++) s[j] = (unsigned)(${T})(${st('vv[j]')});
    *(uint2*)(out + o) = make_uint2(${pk4});`;
  let out2 = '';
  if (g.out2) {
    const o2 = g.out2;
    const stored = g.out === 'float16' ? `
    float ww[8];
    #pragma unroll
    for (int j = 0; j < 8; j++) ww[j] = h2f((unsigned short)((hh[j >> 1] >> ((j & 1) * 16)) & 0xffff));` : `
    const float (&ww)[8] = vv;`;
    const pk2 = store8x8(o2.store, 'ww', o2.yScale, o2.yZeroPoint, v1);
    out2 = `${stored}${pk2 ? `
    *(uint2*)(out2 + o) = ${pk2};` : `
    unsigned s[8];
    #pragma unroll
    for (int j = 0; j < 8; j++) s[j] = (unsigned)(unsigned char)(${storeExpr(o2.store, 'ww[j]', o2.yScale, o2.yZeroPoint, v1)});
    *(uint2*)(out2 + o) = make_uint2(${pk4});`}`;
  }
  return `  __syncthreads(); // every warpgroup is done with the pipeline buffers (or the last tile's float tile)
  float* sf = (float*)(smem + (sbase - (unsigned)__cvta_generic_to_shared(smem)) + ${fOff});
  #pragma unroll
  for (int b = 0; b < ${NT}; b++) {
    const int col = b * 8 + tig * 2, n = n0 + col;${edgeN ? `
    if (n >= ${g.N}) continue;` : ''}
    const float2 c = *(const float2*)(sc + n), d = *(const float2*)(sc + ${g.N} + n);
    #pragma unroll
    for (int h = 0; h < 2; h++)
      *(float2*)(sf + (wm * 16 + grp + h * 8) * ${FP} + col) = make_float2(${cvt}(accum[0][b][2 * h]) * c.x + d.x, ${cvt}(accum[0][b][2 * h + 1]) * c.y + d.y);
  }
  __syncthreads();
  #pragma unroll ${(BM * CPR) % TH === 0 ? (BM * CPR) / TH : 1}
  for (int id = tid; id < ${BM * CPR}; id += ${TH}) {
    const int r = id / ${CPR}, q8 = (id % ${CPR}) * 8, m = m0 + r, n = n0 + q8;${edgeM || edgeN ? `
    if (${[edgeM ? `m >= ${g.M}` : '', edgeN ? `n >= ${g.N}` : ''].filter(Boolean).join(' || ')}) continue;` : ''}
    const ${it} o = (${it})m * ${g.N} + n;
    const float4 p0 = *(const float4*)(sf + r * ${FP} + q8), p1 = *(const float4*)(sf + r * ${FP} + q8 + 4);
    float vv[8] = { p0.x, p0.y, p0.z, p0.w, p1.x, p1.y, p1.z, p1.w };${res}${activate}${put}${out2}
  }`;
}

/** Epilogue storing each thread's two adjacent channels with one 2-, 4- or 8-byte store (N even). */
function pairedStores(g: QGemmArgs, t: { BM: number; BN: number; MT: number; NT: number; WM: number; WN: number; smemBytes: number }, it: string, act: string): string {
  const { BM, BN, MT, NT, WM, WN } = t, cvt = accToFloat(g);
  const T = QSTORAGE[g.out], size = g.out === 'float32' ? 4 : g.out === 'float16' ? 2 : 1;
  const pitch = BN * size + 16; // staged row pitch: rows 4 banks apart, 16-byte aligned
  const staged = !!g.staged && size <= 2 && (g.N * size) % 16 === 0 && BM * pitch <= t.smemBytes;
  const st = (v: string) => storeExpr(g.out, v, g.yScale ?? 1, g.yZeroPoint ?? 0, g.v1Epilogue);
  const res = !g.residual ? '' : g.residual === 'float16'
    ? 'const unsigned rr = *(const unsigned*)(res + o); v0 += h2f((unsigned short)(rr & 0xffff)); v1 += h2f((unsigned short)(rr >> 16));'
    : 'const float2 rr = *(const float2*)(res + o); v0 += rr.x; v1 += rr.y;';
  const dst = staged ? `(smem + (m - m0) * ${pitch} + (n - n0) * ${size})` : '(out + o)';
  const put = size === 4 ? `*(float2*)${dst} = make_float2(s0, s1);`
    : size === 2 ? `*(unsigned*)${dst} = (unsigned)s0 | ((unsigned)s1 << 16);`
      : `*(unsigned short*)${dst} = (unsigned short)((unsigned char)s0 | ((unsigned)(unsigned char)s1 << 8));`;
  const chunks = (BN * size) / 16;
  const copy = !staged ? '' : `
  __syncthreads();
  for (int id = tid; id < ${BM * chunks}; id += 256) {
    const int r = id / ${chunks}, q = id % ${chunks}, m = m0 + r, n = n0 + q * ${16 / size};
    if (m < ${g.M} && n < ${g.N}) *(uint4*)((unsigned char*)out + ((${it})m * ${g.N} + n) * ${size}) = *(const uint4*)(smem + r * ${pitch} + q * 16);
  }`;
  return `${staged ? '  __syncthreads(); // every warp is done with the pipeline buffers: they hold the output tile now\n' : ''}  #pragma unroll
  for (int b = 0; b < ${NT}; b++) {
    const int n = n0 + wn * ${WN} + b * 8 + tig * 2;
    if (n >= ${g.N}) continue;
    const float c0 = sc[n], c1 = sc[n + 1], d0 = sc[${g.N} + n], d1 = sc[${g.N} + n + 1];
    #pragma unroll
    for (int a = 0; a < ${MT}; a++)
      #pragma unroll
      for (int h = 0; h < 2; h++) {
        const int m = m0 + wm * ${WM} + a * 16 + grp + h * 8;
        if (m >= ${g.M}) continue;
        ${staged && !g.residual && !g.out2 ? '' : `const ${it} o = (${it})m * ${g.N} + n;`}
        float v0 = ${cvt}(accum[a][b][2 * h]) * c0 + d0, v1 = ${cvt}(accum[a][b][2 * h + 1]) * c1 + d1;
        ${res}
        { const float v = v0; v0 = ${act}; }
        { const float v = v1; v1 = ${act}; }
        const ${T} s0 = ${st('v0')}, s1 = ${st('v1')};
        ${put}${g.out2 ? `
        *(unsigned short*)(out2 + o) = (unsigned short)((unsigned char)(${out2Expr(g, 's0', 'v0')}) | ((unsigned)(unsigned char)(${out2Expr(g, 's1', 'v1')}) << 8));` : ''}
      }
  }${copy}`;
}

/** Explicit NHWC im2col of 8-bit data into [M, Kp] (Kp = K rounded up to 16, tail zero); pads read as `pad`. */
export function qim2col(g: QConvGeometry & { N: number; Kp: number; pad: number }): KernelSource {
  const K = g.KH * g.KW * g.C, total = g.N * g.OH * g.OW * g.Kp;
  const it = indexType(Math.max(total, g.N * g.H * g.W * g.C));
  const body = `
extern "C" __global__ void __launch_bounds__(256) KNAME(const unsigned char* __restrict__ x, unsigned char* __restrict__ col) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(total)}; i += (${it})gridDim.x * blockDim.x) {
    const int k = (int)(i % ${g.Kp});
    ${it} t = i / ${g.Kp};
    unsigned char v = 0;
    if (k < ${K}) {
      const int c = k % ${g.C}, kk = k / ${g.C}, kw = kk % ${g.KW}, kh = kk / ${g.KW};
      const int ow = (int)(t % ${g.OW}); t /= ${g.OW};
      const int oh = (int)(t % ${g.OH}); t /= ${g.OH};
      const int ih = oh * ${g.strides[0]} - ${g.pads[0]} + kh * ${g.dilations[0]}, iw = ow * ${g.strides[1]} - ${g.pads[1]} + kw * ${g.dilations[1]};
      v = ((unsigned)ih < ${g.H}u && (unsigned)iw < ${g.W}u) ? x[((t * ${g.H} + ih) * ${g.W} + iw) * ${g.C} + c] : (unsigned char)${g.pad & 0xff};
    }
    col[i] = v;
  }
}`;
  return finish('kiln_qim2col', body, { ...launch1d(Math.max(1, total)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
}

/** QuantizeLinear per tensor: float32/float16 -> int8/uint8/fp8 with literal scale and zero point (saturating). */
export function quantizeKernel(a: { n: number; from: 'float32' | 'float16'; to: 'int8' | 'uint8' | 'fp8'; scale: number; zeroPoint: number }): KernelSource {
  const it = indexType(a.n);
  const ld = a.from === 'float16' ? 'h2f(x[i])' : 'x[i]';
  const body = `${a.to === 'fp8' ? FP8_HELPERS : ''}
${KQ_HELPERS}
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${ctype(a.from)}* __restrict__ x, ${QSTORAGE[a.to]}* __restrict__ y) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(a.n)}; i += (${it})gridDim.x * blockDim.x) {
    const float v = ${ld};
    y[i] = ${storeExpr(a.to, 'v', a.scale, a.zeroPoint)};
  }
}`;
  return finish(`kiln_quant_${a.to}`, body, { ...launch1d(Math.max(1, a.n)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
}

/** DequantizeLinear per tensor: int8/uint8/fp8 -> float32/float16. */
export function dequantizeKernel(a: { n: number; from: 'int8' | 'uint8' | 'fp8'; to: 'float32' | 'float16'; scale: number; zeroPoint: number }): KernelSource {
  const it = indexType(a.n);
  const v = a.from === 'fp8' ? `e4m32f(x[i]) * ${fl(a.scale)}` : `((float)x[i] - ${a.zeroPoint}.0f) * ${fl(a.scale)}`;
  const body = `${a.from === 'fp8' ? FP8_HELPERS : ''}
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${QSTORAGE[a.from]}* __restrict__ x, ${ctype(a.to)}* __restrict__ y) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(a.n)}; i += (${it})gridDim.x * blockDim.x) {
    const float v = ${v};
    y[i] = ${a.to === 'float16' ? 'f2h(v)' : 'v'};
  }
}`;
  return finish(`kiln_dequant_${a.from}`, body, { ...launch1d(Math.max(1, a.n)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
}


/**
 * The epilogue alone, after a library GEMM (cuBLASLt int8 -> int32, fp8 -> float32). Params: in 0 = acc [M, N],
 * ws = float32 [2N] scale then offset, in 3 = residual [M, N] (when `residual`), out 0 = Y [M, N].
 */
export function qepilogue(g: { M: number; N: number; acc: 'int32' | 'float32'; residual?: 'float32' | 'float16'; activation: string; params: readonly number[]; out: QStore; yScale?: number; yZeroPoint?: number }): KernelSource {
  const n = g.M * g.N, it = indexType(n);
  const act = renderCuda(activationExpr(g.activation, g.params), () => 'v');
  const resArg = g.residual ? `, const ${g.residual === 'float16' ? 'unsigned short' : 'float'}* __restrict__ res` : '';
  const body = `${g.out === 'fp8' ? FP8_HELPERS : ''}
${KQ_HELPERS}
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${g.acc === 'int32' ? 'int' : 'float'}* __restrict__ acc, const float* __restrict__ sc${resArg}, ${QSTORAGE[g.out]}* __restrict__ out) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(n)}; i += (${it})gridDim.x * blockDim.x) {
    const int c = (int)(i % ${g.N});
    float v = (float)acc[i] * sc[c] + sc[${g.N} + c];
    ${g.residual ? `v += ${g.residual === 'float16' ? 'h2f(res[i])' : 'res[i]'};` : ''}
    v = ${act};
    out[i] = ${storeExpr(g.out, 'v', g.yScale ?? 1, g.yZeroPoint ?? 0)};
  }
}`;
  const params: KernelSource['params'] = [{ kind: 'in', index: 0 }, { kind: 'ws' }, ...(g.residual ? [{ kind: 'in' as const, index: 3 }] : []), { kind: 'out', index: 0 }];
  return finish('kiln_qepi', body, { ...launch1d(Math.max(1, n)), sharedBytes: 0, params });
}

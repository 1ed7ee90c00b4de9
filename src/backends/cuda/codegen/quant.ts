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
import { ctype, finish, indexType, launch1d, lit, offsetCode, type KernelSource } from './types.js';
import { qgemmWgmma } from './quant-wgmma.js';

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
  /**
   * an 8-bit residual instead (kiln:QConv with an int8/uint8 input 3, folded from a residual Add quantized on both
   * inputs): the layer's sum is first rounded as its own QuantizeLinear stored it (c: cScale, cZeroPoint, saturated),
   * dequantized and added to the dequantized residual in float32, each product and the sum rounded on its own (no
   * contraction into an FMA: the unfolded nodes' arithmetic, so the bytes are theirs), then the activation and `out`:
   * v = (c_q - cZeroPoint) * cScale + (r_q - zeroPoint) * scale. Staged wgmma, paired and direct epilogues; not cuBLASLt's
   */
  qresidual?: QResidual;
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
  /** Hopper's warpgroup MMA (sm_90a) instead of mma.sync: tile `tile.BM` (64 or 128) x `tile.BN` (32, 64 or 128), see qgemmWgmma (quant-wgmma.ts) */
  wgmma?: boolean;
  /** wgmma: blocks per SM asked of the compiler (__launch_bounds__; capped by shared memory), default 2 when they fit */
  occupancy?: number;
  /**
   * wgmma: the device's SM count, for a persistent grid (SMs x blocks per SM): each block walks tiles blockIdx.x,
   * + gridDim.x, ... as one stream of k-steps, so the next tile's loads are in flight during a tile's epilogue
   */
  persistent?: number;
  /**
   * wgmma: pipeline depth in k-steps (3-8, 2 with `drain`; loads run stages - 2 k-steps ahead, stages - 1 with
   * `drain`), default 3-4 (see qgemmWgmma). Short reductions (1-2 k-steps) want 2: less shared memory, more blocks per SM
   */
  stages?: number;
  /** wgmma, not persistent: no MMA group left in flight across k-steps, for one more k-step of loads in flight */
  drain?: boolean;
  /**
   * wgmma: 64-byte k-steps (64-byte swizzle) even where K > 64. For implicit-im2col convolutions with C = 64 a 128-byte
   * k-step spans two taps, so each 16-byte chunk's tap and channel are divided out per load (aChunk's general path);
   * with 64-byte k-steps a k-step is one tap (the per-k-step path, no divisions in the load loop)
   */
  kStep?: 64;
  /**
   * wgmma, integer operands, not persistent: split the reduction over `splitK` blocks per tile (grid z). Each writes
   * its int32 partial tile to a workspace and counts itself in on the tile's counter; the last one in adds the others'
   * partials (integer sums: exact in any order) and runs the whole epilogue, so the output is byte for byte the
   * unsplit kernel's. Two more kernel parameters (sizes: splitKWorkspace in quant-wgmma.ts): `{ kind: 'in', index: 4 }`
   * = tile counters (zero before the first launch; the last block resets its tile's) and `index: 5` = partials
   */
  splitK?: number;
  /**
   * wgmma, unsplit, not persistent, with a residual: each block asks L2 for its residual tile (one bulk prefetch per
   * row) before its main loop, so the epilogue's residual reads hit L2 instead of waiting on DRAM after the last MMA.
   * A hint only: the bytes computed are the same; kernels without a residual keep their text (ops-quant.ts asks for it
   * where the reduction is one 64-byte k-step)
   */
  residualPrefetch?: boolean;
  /** a second output (out 1): the first (a float store) as stored, requantized to this 8-bit type */
  out2?: { store: 'int8' | 'uint8' | 'fp8'; yScale: number; yZeroPoint: number };
  /**
   * rows are [B, S] positions (M = B * S) and N is `parts` equal column groups of H heads of D channels: group j goes
   * to out j as [B, H, S, D] (kiln:QMatMul `heads`; the wgmma staged epilogue only, D % 8 == 0)
   */
  heads?: { S: number; H: number; D: number; parts: number };
  /**
   * the first epilogue's arithmetic (I2F, div.rn, rintf, F2I on the conversion pipes): the byte-for-byte reference of
   * the checks for the FMA-pipe arithmetic used otherwise (see KQ_HELPERS)
   */
  v1Epilogue?: boolean;
  /** convert accumulators with I2F (XU pipe) even where the magic-number add applies (benchmarks) */
  xuConvert?: boolean;
}

export interface QResidual { a: 'int8' | 'uint8'; scale: number; zeroPoint: number; c: 'int8' | 'uint8'; cScale: number; cZeroPoint: number }

/** The residual parameter's declaration (after the scale/offset table), or '' without a residual. */
export function residualParam(g: QGemmArgs): string {
  const t = g.qresidual ? QSTORAGE[g.qresidual.a] : g.residual === 'float16' ? 'unsigned short' : g.residual ? 'float' : '';
  return t ? `, const ${t}* __restrict__ res` : '';
}

/**
 * C expression: the float `v` (the layer's sum) with an 8-bit residual `r` (an int expression, the stored value) added
 * as `qresidual` says. The rounding to c is kq_q8's (or the first arithmetic's rintf of the quotient): both return
 * exactly the stored value less its zero point, so (c_q - zp) is an exact integer before its product.
 */
export function qresidualExpr(g: QGemmArgs, v: string, r: string): string {
  const q = g.qresidual!, rc = g.v1Epilogue ? undefined : recip(q.cScale);
  const [lo, hi] = q8Bounds(q.c, q.cZeroPoint);
  const c = rc === undefined ? `fminf(fmaxf(rintf((${v}) / ${fl(q.cScale)}), ${lo}.0f), ${hi}.0f)`
    : `kq_i2f22(kq_q8(${v}, ${fl(rc)}, ${fl(q.cScale)}, ${lo}.0f, ${hi}.0f))`;
  return `__fadd_rn(__fmul_rn(${c}, ${fl(q.cScale)}), __fmul_rn(kq_i2f22((int)(${r}) - ${q.zeroPoint}), ${fl(q.scale)}))`;
}

/** The kernel parameters' tail: the output(s), with their C declarations. */
export function outParams(g: QGemmArgs): { decl: string; params: KernelSource['params'] } {
  if (g.heads) {
    const outs = Array.from({ length: g.heads.parts }, (_, j) => `${QSTORAGE[g.out]}* __restrict__ ${j ? `outh${j}` : 'out'}`);
    return { decl: outs.join(', '), params: outs.map((_, j) => ({ kind: 'out' as const, index: j })) };
  }
  const decl = `${QSTORAGE[g.out]}* __restrict__ out${g.out2 ? `, ${QSTORAGE[g.out2.store]}* __restrict__ out2` : ''}`;
  return { decl, params: [{ kind: 'out', index: 0 }, ...(g.out2 ? [{ kind: 'out' as const, index: 1 }] : [])] };
}

/** A quantized GEMM kernel's parameters: activations, weights, the scale/offset workspace, the residual where it has one, the output(s). */
export function gemmParams(g: QGemmArgs): KernelSource['params'] {
  return [{ kind: 'in', index: 0 }, { kind: 'in', index: 1 }, { kind: 'ws' }, ...(g.residual || g.qresidual ? [{ kind: 'in' as const, index: 3 }] : []), ...outParams(g).params];
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
export const FP8_HELPERS = String.raw`__device__ __forceinline__ unsigned char f2e4m3(float f) {
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
/** 8 sums rounded to integers kept as floats biased by 1.5 * 2^23 (t[8]), kq_q8's way with one slow-path branch: the body
 * shared by kq_q8x8 (8-bit stores) and kq_c8 (an 8-bit residual's own rounding); `thr` the slow path's bound. */
const round8 = (thr: string) => String.raw`  float t[8];
  bool slow = false;
  #pragma unroll
  for (int j = 0; j < 8; j++) {
    const float q = fminf(fmaxf(v[j] * r, lo), hi);
    t[j] = q + 12582912.0f;
    slow |= fabsf(q - (t[j] - 12582912.0f)) >= ${thr};
  }
  if (slow) {
    #pragma unroll
    for (int j = 0; j < 8; j++) t[j] = fminf(fmaxf(v[j] / y, lo), hi) + 12582912.0f;
  }
`;
const ROUND8 = round8('0.499755859f'), ROUND8N = round8('0.49993896484375f');
/** kq_q8x8's tail: each rounded value plus the zero point, low bytes packed. */
const PACK8 = String.raw`  int b[8];
  #pragma unroll
  for (int j = 0; j < 8; j++) b[j] = __float_as_int(t[j]) + zp; // low byte: rint + zp (0x4B400000 ends in a zero byte)
  return make_uint2(__byte_perm(__byte_perm(b[0], b[1], 0x0040), __byte_perm(b[2], b[3], 0x0040), 0x5410),
                    __byte_perm(__byte_perm(b[4], b[5], 0x0040), __byte_perm(b[6], b[7], 0x0040), 0x5410));
}`;
/** kq_c8's tail: each stored value less its zero point, as an exact float. */
const C8 = String.raw`  #pragma unroll
  for (int j = 0; j < 8; j++) c[j] = t[j] - 12582912.0f;
}`;
export const KQ_HELPERS = String.raw`__device__ __forceinline__ float kq_i2f22(int a) { return __int_as_float(0x4B400000 + a) - 12582912.0f; }
__device__ __forceinline__ int kq_q8(float v, float r, float y, float lo, float hi) {
  const float q = fminf(fmaxf(v * r, lo), hi);
  float t = q + 12582912.0f;
  if (fabsf(q - (t - 12582912.0f)) >= 0.499755859f) t = fminf(fmaxf(v / y, lo), hi) + 12582912.0f;
  return __float_as_int(t) - 0x4B400000;
}
__device__ __forceinline__ uint2 kq_q8x8(const float (&v)[8], float r, float y, float lo, float hi, int zp) {
${ROUND8}${PACK8}
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
export function storeExpr(out: QStore, v: string, yScale: number, zp: number, v1 = false): string {
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
 * undefined where the plain expressions must be used. relu: `v` is before a Relu, folded into the lower bound;
 * narrow: kq_q8x8n (KQ8N_HELPERS).
 */
export function store8x8(out: QStore, v: string, yScale: number, zp: number, v1: boolean | undefined, relu = false, narrow = false): string | undefined {
  const r = recip(yScale);
  if (v1 || r === undefined || (out !== 'int8' && out !== 'uint8')) return undefined;
  const [lo, hi] = q8Bounds(out, zp);
  return `kq_q8x8${narrow ? 'n' : ''}(${v}, ${fl(r)}, ${fl(yScale)}, ${relu ? Math.max(lo, 0) : lo}.0f, ${hi}.0f, ${zp})`;
}

/** The accumulator as a float (C function name or cast): exact; on the FMA pipe for short reductions. */
export function accToFloat(g: QGemmArgs): string {
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
  if (g.heads) throw new Error('qgemm (mma.sync): no head split in this epilogue (see headSplitKernel)');
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
  const resArg = residualParam(g);
  const resAdd = g.qresidual ? `v = ${qresidualExpr(g, 'v', 'res[o]')};` : g.residual ? `v += ${g.residual === 'float16' ? 'h2f(res[o])' : 'res[o]'};` : '';
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
  const params = gemmParams(g);
  return finish(`kiln_qgemm_${g.a}`, body, { grid: [Math.ceil(M / BM), Math.ceil(N / BN), 1], block: [256, 1, 1], sharedBytes: STAGES * stageBytes, params });
}

/**
 * The A-row coordinates and the source address of one 16-byte chunk (shared by both main loops): `rowsPer` rows per
 * thread. `stepBytes`: when a convolution's channel count is a multiple of the k-step, every k-step lies within one
 * filter tap, so the tap and its offset are worked out once per k-step (`step`, the same for all threads) and each
 * chunk costs a bounds test and an add on a row offset computed once per tile, not a division chain.
 */
export function aChunk(g: QGemmArgs, aT: string, it: string, rowsPer: number, rowOf: string, stepBytes = 0) {
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
 * Device helper of the staged 8-bit residual epilogue, only in kernels with one (the others keep their text, and their
 * cached cubins): kq_c8 rounds 8 sums to c's scale as kq_q8x8 does (one slow-path branch) and returns each stored value
 * less its zero point as an exact float (t - 1.5 * 2^23), with no integer conversion on the way.
 */
export const QRES_HELPERS = String.raw`__device__ __forceinline__ void kq_c8(const float (&v)[8], float r, float y, float lo, float hi, float (&c)[8]) {
${ROUND8}${C8}`;

/**
 * kq_q8x8 and kq_c8 with the slow path's window narrowed from 2^-12 to 2^-14 around each half-integer (kq_q8x8n,
 * kq_c8n; the same bytes): the staged epilogues' 8-bit stores and residuals. With r = 1/y rounded (a normal float),
 * p = v * r rounded is within |v / y| * (2^-23 + 2^-48) of the quotient, under 2^-15 (1 + 2^-22) wherever the clamp
 * leaves it (|p| < 256), and the rounded quotient d = v / y within half an ulp (2^-17) of it: |p - d| < 1.26 * 2^-15.
 * Outside the window (|p - rint(p)| < 0.5 - 2^-14) d lies strictly on p's side of the half-integer, so rint(d) =
 * rint(p); at a clamp bound p and d round to the bound. On spread values the branch (8 divisions) is taken by a warp
 * of 256 outputs 3% of the time instead of 12% (ResNet-50's conv3 epilogue: 110 instructions a time; ncu source
 * counters, bench/quant/gpu-ncu.js). Only in the staged epilogues' kernels (their cubins are rebuilt anyway).
 */
export const KQ8N_HELPERS = String.raw`__device__ __forceinline__ uint2 kq_q8x8n(const float (&v)[8], float r, float y, float lo, float hi, int zp) {
${ROUND8N}${PACK8}
__device__ __forceinline__ void kq_c8n(const float (&v)[8], float r, float y, float lo, float hi, float (&c)[8]) {
${ROUND8N}${C8}`;

/**
 * The staged epilogue's 8-bit residual for 8 channels (`vv`, a float[8] of sums; the residual's 8 bytes in the uint2
 * `rq`), or undefined where the scalar qresidualExpr must be used (the first arithmetic, or no kq_q8 bound for c's
 * scale). Each residual byte becomes an exact float by one byte permute into 1.5 * 2^23's mantissa (int8 bytes
 * biased by 128 first) and one subtraction; the products and the sum as in qresidualExpr.
 */
export function qresidual8(g: QGemmArgs, narrow = false): string | undefined {
  const q = g.qresidual!, rc = g.v1Epilogue ? undefined : recip(q.cScale);
  if (rc === undefined) return undefined;
  const [lo, hi] = q8Bounds(q.c, q.cZeroPoint), bias = q.a === 'int8' ? 128 : 0;
  return `
    float cq[8];
    kq_c8${narrow ? 'n' : ''}(vv, ${fl(rc)}, ${fl(q.cScale)}, ${lo}.0f, ${hi}.0f, cq);
    const unsigned rw[2] = { rq.x${bias ? ' ^ 0x80808080u' : ''}, rq.y${bias ? ' ^ 0x80808080u' : ''} };
    #pragma unroll
    for (int j = 0; j < 8; j++) {
      const float rv = __int_as_float(__byte_perm(rw[j >> 2], 0x4B400000u, 0x7640u | (j & 3))) - ${fl(12582912 + bias + q.zeroPoint)};
      vv[j] = __fadd_rn(__fmul_rn(cq[j], ${fl(q.cScale)}), __fmul_rn(rv, ${fl(q.scale)}));
    }`;
}

/** Byte `k` of the packed 8-bit residual word `w` (C expression), as the stored value: sign-extended for int8. */
export function qresidualByte(q: QResidual, w: string, k: number | string): string {
  const sh = typeof k === 'number' ? `${8 * k}` : `(8 * ${k})`;
  return q.a === 'int8' ? `(int)(signed char)((${w} >> ${sh}) & 0xff)` : `(int)((${w} >> ${sh}) & 0xff)`;
}

/** Epilogue storing each thread's two adjacent channels with one 2-, 4- or 8-byte store (N even). */
export function pairedStores(g: QGemmArgs, t: { BM: number; BN: number; MT: number; NT: number; WM: number; WN: number; smemBytes: number }, it: string, act: string): string {
  const { BM, BN, MT, NT, WM, WN } = t, cvt = accToFloat(g);
  const T = QSTORAGE[g.out], size = g.out === 'float32' ? 4 : g.out === 'float16' ? 2 : 1;
  const pitch = BN * size + 16; // staged row pitch: rows 4 banks apart, 16-byte aligned
  const staged = !!g.staged && size <= 2 && (g.N * size) % 16 === 0 && BM * pitch <= t.smemBytes;
  const st = (v: string) => storeExpr(g.out, v, g.yScale ?? 1, g.yZeroPoint ?? 0, g.v1Epilogue);
  const res = g.qresidual ? `const unsigned short rr = *(const unsigned short*)(res + o); v0 = ${qresidualExpr(g, 'v0', qresidualByte(g.qresidual, 'rr', 0))}; v1 = ${qresidualExpr(g, 'v1', qresidualByte(g.qresidual, 'rr', 1))};`
    : !g.residual ? '' : g.residual === 'float16'
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
        ${staged && !g.residual && !g.qresidual && !g.out2 ? '' : `const ${it} o = (${it})m * ${g.N} + n;`}
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
  const K = g.KH * g.KW * g.C;
  if (g.Kp % 16 !== 0 || g.Kp < K) throw new Error(`qim2col: Kp = ${g.Kp} must be a multiple of 16 and at least K = ${K}`);
  // one thread per 16 bytes of a row: one vector store, the (kh, kw, c) tap walked by counters, not divisions
  const KC = g.Kp / 16, units = g.N * g.OH * g.OW * KC;
  const it = indexType(Math.max(units * 16, g.N * g.H * g.W * g.C));
  const body = `
extern "C" __global__ void __launch_bounds__(256) KNAME(const unsigned char* __restrict__ x, unsigned char* __restrict__ col) {
  for (${it} u = (${it})blockIdx.x * blockDim.x + threadIdx.x; u < ${lit(units)}; u += (${it})gridDim.x * blockDim.x) {
    const int k0 = (int)(u % ${KC}) * 16;
    ${it} t = u / ${KC};
    const int ow = (int)(t % ${g.OW}); t /= ${g.OW};
    const int oh = (int)(t % ${g.OH}); t /= ${g.OH};
    const int ih0 = oh * ${g.strides[0]} - ${g.pads[0]}, iw0 = ow * ${g.strides[1]} - ${g.pads[1]};
    int c = k0 % ${g.C}, kw = (k0 / ${g.C}) % ${g.KW}, kh = k0 / ${g.C * g.KW};
    unsigned int w[4] = { 0u, 0u, 0u, 0u };
    #pragma unroll
    for (int j = 0; j < 16; j++) {
      unsigned int v = 0u;
      if (k0 + j < ${K}) {
        const int ih = ih0 + kh * ${g.dilations[0]}, iw = iw0 + kw * ${g.dilations[1]};
        v = ((unsigned)ih < ${g.H}u && (unsigned)iw < ${g.W}u) ? (unsigned int)x[((t * ${g.H} + ih) * ${g.W} + iw) * ${g.C} + c] : ${g.pad & 0xff}u;
      }
      w[j >> 2] |= v << ((j & 3) * 8);
      if (++c == ${g.C}) { c = 0; if (++kw == ${g.KW}) { kw = 0; kh++; } }
    }
    uint4 o;
    o.x = w[0]; o.y = w[1]; o.z = w[2]; o.w = w[3];
    *(uint4*)(col + u * 16) = o;
  }
}`;
  return finish('kiln_qim2col', body, { ...launch1d(Math.max(1, units)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
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

/**
 * kiln:QTranspose: QuantizeLinear per tensor of Transpose(x, perm), in one pass (output order, each element's input
 * offset from the permuted strides). When the innermost axis stays innermost and holds a multiple of 8 elements, each
 * thread moves 8 of them: one 16-byte fp16 read (two for float32), kq_q8x8, one 8-byte store. Params: in 0, out 0.
 */
export function quantizeTransposeKernel(a: { dims: readonly number[]; perm: readonly number[]; from: 'float32' | 'float16'; to: 'int8' | 'uint8'; scale: number; zeroPoint: number }): KernelSource {
  const r = a.dims.length, n = a.dims.reduce((x, y) => x * y, 1), it = indexType(n);
  if (a.perm.length !== r || [...a.perm].sort((x, y) => x - y).some((v, i) => v !== i)) throw new Error(`quantizeTranspose: perm [${a.perm.join(',')}] is not a permutation of 0..${r - 1}`);
  const inSt = a.dims.map((_, d) => a.dims.slice(d + 1).reduce((x, y) => x * y, 1));
  const outDims = a.perm.map((p) => a.dims[p]), st = a.perm.map((p) => inSt[p]);
  const pk = store8x8(a.to, 'vv', a.scale, a.zeroPoint, false);
  const V = r > 0 && a.perm[r - 1] === r - 1 && a.dims[r - 1] % 8 === 0 && pk ? 8 : 1;
  const units = n / V, T = QSTORAGE[a.to], X = a.from === 'float16' ? 'unsigned short' : 'float';
  const walk = offsetCode('i', [...outDims.slice(0, -1), outDims[r - 1] / V], ['oi'], [[...st.slice(0, -1), V === 8 ? 8 : st[r - 1]]], it);
  const load8 = a.from === 'float16' ? `
    const uint4 u = *(const uint4*)(x + oi);
    const unsigned w[4] = { u.x, u.y, u.z, u.w };
    #pragma unroll
    for (int j = 0; j < 8; j++) vv[j] = h2f((unsigned short)((w[j >> 1] >> ((j & 1) * 16)) & 0xffff));` : `
    const float4 p0 = *(const float4*)(x + oi), p1 = *(const float4*)(x + oi + 4);
    vv[0] = p0.x; vv[1] = p0.y; vv[2] = p0.z; vv[3] = p0.w; vv[4] = p1.x; vv[5] = p1.y; vv[6] = p1.z; vv[7] = p1.w;`;
  const body = `${KQ_HELPERS}
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${X}* __restrict__ x, ${T}* __restrict__ y) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(units)}; i += (${it})gridDim.x * blockDim.x) {
    ${walk}${V === 8 ? `
    float vv[8];${load8}
    *(uint2*)(y + i * 8) = ${pk};` : `
    const float v = ${a.from === 'float16' ? 'h2f(x[oi])' : 'x[oi]'};
    y[i] = ${storeExpr(a.to, 'v', a.scale, a.zeroPoint)};`}
  }
}`;
  return finish(`kiln_qtranspose_${a.to}`, body, { ...launch1d(Math.max(1, units)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
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
 * The head split of kiln:QMatMul `heads` after a GEMM that wrote the plain [M = B * S, N] result (routes whose epilogue
 * cannot scatter: cuBLASLt, mma.sync, forced tactics): column group j of row b * S + s, head h, channel d -> out j
 * [b, h, s, d]. Params: in 0 = Y [M, N], out 0..parts-1.
 */
export function headSplitKernel(a: { M: number; S: number; H: number; D: number; parts: number; dtype: 'float32' | 'float16' }): KernelSource {
  const W = a.H * a.D, N = a.parts * W, n = a.M * N, it = indexType(n), T = QSTORAGE[a.dtype];
  const outs = Array.from({ length: a.parts }, (_, j) => `o${j}`);
  const body = `extern "C" __global__ void __launch_bounds__(256) KNAME(const ${T}* __restrict__ y, ${outs.map((o) => `${T}* __restrict__ ${o}`).join(', ')}) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(n)}; i += (${it})gridDim.x * blockDim.x) {
    const ${it} m = i / ${N};
    const int c = (int)(i - m * ${N}), j = c / ${W}, h = (c % ${W}) / ${a.D}, d = c % ${a.D};
    const ${it} b = m / ${a.S}, s = m % ${a.S};
    ${T}* dst = ${outs.slice(1).reduceRight((acc, o, k) => `j == ${k + 1} ? ${o} : ${acc}`, outs[0])};
    dst[((b * ${a.H} + h) * ${a.S} + s) * ${a.D} + d] = y[i];
  }
}`;
  return finish('kiln_qheads', body, { ...launch1d(Math.max(1, n)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, ...outs.map((_, j) => ({ kind: 'out' as const, index: j }))] });
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

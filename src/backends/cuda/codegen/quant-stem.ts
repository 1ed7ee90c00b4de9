// Quantized convolutions with few input channels (ResNet's 7x7 stem over C = 3) on Hopper's warpgroup MMA without an
// explicit im2col. The implicit-im2col kernels copy 16-byte chunks of one pixel's channels (C % 16 == 0); with C = 3
// the route was an im2col kernel writing [M, 160] bytes (64 MB at ResNet-50 bs32) and a GEMM reading them back: 118 us
// against a ~10 us floor (input 4.8 MB + output 25.7 MB). Here each A row is gathered into shared memory straight
// from the NHWC image: one kernel row (kh) of a window is KW * C contiguous bytes of the input (21 for the stem),
// read as aligned 32-bit words and shifted into place, so the GEMM's reduction is laid out as KH slots of SW bytes
// (SW = KW * C rounded up to 8) and the weights are reordered to match on the host (stemWeights). Integer
// accumulation and the wgmma kernel's staged epilogue: outputs byte for byte those of im2col + qgemm.
import { renderCuda } from '../../../ir/expr.js';
import { activationExpr } from './elementwise.js';
import { finish, indexType, type KernelSource } from './types.js';
import { FP8_HELPERS, KQ_HELPERS, QRES_HELPERS, gemmParams, outParams, residualParam, type QConvGeometry, type QGemmArgs } from './quant.js';
import { stagedFloatStores, stagedHelpers, stagedPitch } from './quant-wgmma.js';

/** The gathered reduction's layout: KH slots of SW bytes (S = KW * C of them real), padded to KP (whole 64-byte k-steps). */
export function stemLayout(geo: QConvGeometry): { S: number; SW: number; KP: number } {
  const S = geo.KW * geo.C, SW = Math.ceil(S / 8) * 8;
  return { S, SW, KP: Math.ceil((geo.KH * SW) / 64) * 64 };
}

/**
 * Why the gathered kernel cannot take this convolution, or undefined when it can: one kernel row of the window must be
 * contiguous in the input (no dilation along W) and at most 32 bytes; the input's bytes a multiple of 4 (whole-word
 * reads); N % 8 == 0 (staged epilogue); integer operands. `batch`: images in the input.
 */
export function stemUnsupported(geo: QConvGeometry, batch: number, g: Pick<QGemmArgs, 'N' | 'a'>): string | undefined {
  const { S, KP } = stemLayout(geo);
  if (g.a === 'fp8') return 'integer operands only';
  if (geo.dilations[1] !== 1) return 'a window row must be contiguous (dilation 1 along W)';
  if (S > 32) return `a window row of ${S} bytes (at most 32)`;
  if (KP > 256) return `a reduction of ${KP} bytes (at most 256)`;
  if ((batch * geo.H * geo.W * geo.C) % 4 !== 0) return 'the input bytes must be a multiple of 4';
  if (g.N % 8 !== 0) return `N = ${g.N} must be a multiple of 8`;
  return undefined;
}

/**
 * Weights [N, KH, KW, C] (int8, row-major: the QConv's NHWC weight layout) reordered into the gathered layout [N, KP]:
 * kernel row kh at bytes kh * SW .. kh * SW + KW * C - 1, zeros elsewhere (so whatever sits in the A tile's padding
 * bytes adds nothing).
 */
export function stemWeights(w: Uint8Array, geo: QConvGeometry, N: number): Uint8Array {
  const { S, SW, KP } = stemLayout(geo);
  if (w.length !== N * geo.KH * S) throw new Error(`stemWeights: ${w.length} weight bytes, expected ${N} x ${geo.KH} x ${S}`);
  const out = new Uint8Array(N * KP);
  for (let n = 0; n < N; n++) for (let kh = 0; kh < geo.KH; kh++) out.set(w.subarray((n * geo.KH + kh) * S, (n * geo.KH + kh + 1) * S), n * KP + kh * SW);
  return out;
}

/** The tiles: BM 64 or 128 rows (one warpgroup per 64), BN 64 or 128 channels. */
export const STEM_TILES = [{ BM: 128, BN: 64 }, { BM: 64, BN: 64 }, { BM: 128, BN: 128 }, { BM: 64, BN: 128 }] as const;

export interface StemOptions {
  /** the device's SM count: grid = min(M tiles, SMs x occupancy) blocks per N tile, each walking M tiles */
  sms: number;
  /** blocks per SM asked of the compiler (default 2: each thread holds its next tile's words as well as the accumulators) */
  occupancy?: number;
  /** the input's zero point: the value of padding pixels (0 for int8 activations) */
  pad?: number;
  /** images in the input (M = batch * OH * OW) */
  batch: number;
}

/**
 * The gathered convolution kernel. Params: in 0 = NHWC input (C small), in 1 = weights in the gathered layout
 * (stemWeights, [N, KP]), ws = scale/offset [2N], in 3 = residual (when `residual` / `qresidual`), outputs as qgemm's.
 * Block = BM / 64 warpgroups; it loads its N tile's weights once (cp.async, 64-byte swizzle), then walks its M tiles:
 * the words of a tile's window rows (thread t: row t % BM, kernel rows t / BM, t / BM + 2, ...) are loaded into
 * registers one tile ahead, so they are in flight during the previous tile's MMA and epilogue; then shifted and
 * masked into the BM x KP A tile, one wgmma chain m64nBNk32 over KP / 32 steps, the staged epilogue. (Loading each
 * row right before its stores held one global latency per kernel row: 52.8 us on ResNet-50's stem, H100.)
 */
export function qconvStem(g: QGemmArgs, o: StemOptions): KernelSource {
  const geo = g.conv;
  if (!geo) throw new Error('qconv (gathered): needs the convolution geometry');
  const why = stemUnsupported(geo, o.batch, g);
  if (why) throw new Error(`qconv (gathered): ${why}`);
  if (g.splitK && g.splitK > 1) throw new Error('qconv (gathered): no split-K');
  if (g.heads) throw new Error('qconv (gathered): no head split');
  const BM = g.tile?.BM ?? 128, BN = g.tile?.BN ?? 64;
  if (!STEM_TILES.some((t) => t.BM === BM && t.BN === BN)) throw new Error(`qconv (gathered): tile ${BM}x${BN} is not one of ${STEM_TILES.map((t) => `${t.BM}x${t.BN}`).join(', ')}`);
  const { M, N } = g, { H, W, C, OH, OW, KH, KW } = geo, { S, SW, KP } = stemLayout(geo);
  if (M !== o.batch * OH * OW) throw new Error(`qconv (gathered): M = ${M} is not ${o.batch} x ${OH} x ${OW}`);
  const TH = 2 * BM, NT = BN / 8, FP = stagedPitch(BN), TOTAL = o.batch * H * W * C;
  const pad = (o.pad ?? 0) & 0xff, padWord = (pad * 0x01010101) >>> 0;
  // words read per kernel row: the S bytes start anywhere in a word
  const NW = Math.ceil((3 + S) / 4), NWA = Math.max(NW, SW / 4) + 1;
  const aBytes = BM * KP, bBytes = BN * KP, stg = BM * FP * 4;
  const smem = bBytes + Math.max(aBytes, stg) + 1024;
  const occ = o.occupancy ?? 2;
  if (!(Number.isInteger(occ) && occ >= 1 && occ <= 8)) throw new Error(`qconv (gathered): occupancy must be 1 to 8, got ${String(occ)}`);
  if (!(Number.isInteger(o.sms) && o.sms >= 1)) throw new Error(`qconv (gathered): needs the device's SM count, got ${String(o.sms)}`);
  const blocks = Math.max(1, Math.min(occ, Math.floor((227 * 1024) / (smem + 1024))));
  const tilesM = Math.ceil(M / BM), tilesN = Math.ceil(N / BN), gridX = Math.min(tilesM, Math.ceil((o.sms * blocks) / tilesN));
  const it = indexType(Math.max(M * N, TOTAL + 64)), AT = TOTAL + 64 < 2 ** 31 ? 'int' : 'long long'; // input byte offsets
  const gE: QGemmArgs = { ...g, K: KP, staged: true };
  const act = renderCuda(activationExpr(g.activation, g.params), () => 'v');
  const epilogue = stagedFloatStores(gE, { BM, BN, NT, FP, TH, fOff: bBytes }, it, act);
  const aT = g.a === 'uint8' ? 'unsigned char' : 'signed char';
  const nAcc = BN / 2;
  const regs = Array.from({ length: nAcc }, (_, i) => `%${i}`).join(',');
  const outs = Array.from({ length: nAcc }, (_, i) => `"+r"(accum[0][${i >> 2}][${i & 3}])`).join(', ');
  const instr = `wgmma.mma_async.sync.aligned.m64n${BN}k32.s32.${g.a === 'uint8' ? 'u8' : 's8'}.s8`;
  const KHT = Math.ceil(KH / 2); // kernel rows per thread (two threads per row of the tile)
  // one 8-byte piece (q) of a kernel row's slot: funnel-shifted out of the words, masked to the bytes [a0, b0) that lie
  // inside the image when the row is at an edge (or when padding is not zero)
  const pieces = Array.from({ length: SW / 8 }, (_, q) => `
        {
          unsigned v0 = __funnelshift_r(wd[i][${2 * q}], wd[i][${2 * q + 1}], sh), v1 = __funnelshift_r(wd[i][${2 * q + 1}], wd[i][${2 * q + 2}], sh);
          if (edge) {
            const unsigned m0_ = kq_bytes(b0 - ${8 * q}) & ~kq_bytes(a0 - ${8 * q}), m1_ = kq_bytes(b0 - ${8 * q + 4}) & ~kq_bytes(a0 - ${8 * q + 4});
            v0 = (v0 & m0_)${pad ? ` | (${padWord}u & ~m0_)` : ''};
            v1 = (v1 & m1_)${pad ? ` | (${padWord}u & ~m1_)` : ''};
          }
          const int byte = kh * ${SW} + ${8 * q}, kb = byte >> 6, ch = (byte >> 4) & 3;
          asm volatile("st.shared.v2.b32 [%0], {%1, %2};\\n" :: "r"(sA + kb * ${BM * 64} + rowOff + ((ch ^ swz) << 4) + (byte & 8)), "r"(v0), "r"(v1) : "memory");
        }`).join('');
  const body = `${g.out === 'fp8' || g.out2?.store === 'fp8' ? FP8_HELPERS : ''}
${KQ_HELPERS}${g.qresidual ? `\n${QRES_HELPERS}` : ''}${stagedHelpers()}
__device__ __forceinline__ void cp16(unsigned dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\\n" :: "r"(dst), "l"(src), "r"(ok ? 16 : 0));
}
// shared-memory matrix descriptor: start >> 4, leading offset 1 (unused when K-major and swizzled), stride between
// 8-row atoms (8 rows of 64 bytes), 64-byte swizzle
__device__ __forceinline__ unsigned long long qdesc(unsigned addr) {
  return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) | ((unsigned long long)(512 >> 4) << 32) | (2ull << 62);
}
// a mask of the low k bytes of a word (k clamped to 0..4)
__device__ __forceinline__ unsigned kq_bytes(int k) { return __funnelshift_lc(0xffffffffu, 0u, (unsigned)min(max(k, 0), 4) * 8u); }
extern "C" __global__ void __launch_bounds__(${TH}, ${blocks}) KNAME(const ${aT}* __restrict__ x, const unsigned char* __restrict__ w, const float* __restrict__ sc${residualParam(g)}, ${outParams(g).decl}) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp, grp = lane >> 2, tig = lane & 3;
  const unsigned sbase = ((unsigned)__cvta_generic_to_shared(smem) + 1023u) & ~1023u, sB = sbase, sA = sbase + ${bBytes};
  const int n0 = blockIdx.y * ${BN};
  // the N tile's weights, once: KB k-blocks of BN rows x 64 bytes, 64-byte swizzle (chunk c of row r at c ^ ((r >> 1) & 3))
  for (int id = tid; id < ${BN * (KP / 16)}; id += ${TH}) {
    const int row = id / ${KP / 16}, cc = id % ${KP / 16}, n = n0 + row;
    const bool ok = n < ${N};
    cp16(sB + (cc >> 2) * ${BN * 64} + row * 64 + (((cc & 3) ^ ((row >> 1) & 3)) << 4), ok ? w + (${it})n * ${KP} + cc * 16 : w, ok);
  }
  asm volatile("cp.async.commit_group;\\n");
  const int r = tid % ${BM}, kh0 = tid / ${BM};
  const unsigned rowOff = r * 64, swz = (r >> 1) & 3;
  const unsigned char* xb = (const unsigned char*)x;
  int accum[1][${NT}][4];
  // the words of this thread's kernel rows of the next tile, loaded one tile ahead (in flight during the MMA and the
  // epilogue of the current one), with each row's byte shift and the range [a0, b0) of its bytes inside the image
  unsigned wd[${KHT}][${NWA}], shv[${KHT}];
  int a0v[${KHT}], b0v[${KHT}];
  auto fetch = [&](int mt) {
    const int m = mt * ${BM} + r, mm = m < ${M} ? m : 0;
    const int ow = mm % ${OW}, t = mm / ${OW}, oh = t % ${OH}, nb = t / ${OH};
    const int iw0 = ow * ${geo.strides[1]} - ${geo.pads[1]}, ih0 = oh * ${geo.strides[0]} - ${geo.pads[0]};
    // the window row's bytes inside the image: [lo, hi) of its ${S}
    const int lo = max(0, -iw0) * ${C}, hi = ${S} - max(0, iw0 + ${KW} - ${W}) * ${C};
    #pragma unroll
    for (int i = 0; i < ${KHT}; i++) {
      const int kh = kh0 + 2 * i, ih = ih0 + kh * ${geo.dilations[0]};
      const bool ok = ${KH % 2 ? `kh < ${KH} && ` : ''}m < ${M} && (unsigned)ih < ${H}u;
      const ${AT} s = ((${AT})(nb * ${H} + ih) * ${W} + iw0) * ${C}, base = s & ~(${AT})3;
      shv[i] = (unsigned)(s - base) * 8u;
      // every word read lies in the tensor (clamped): a word outside the image only feeds bytes masked below
      #pragma unroll
      for (int j = 0; j < ${NWA}; j++) wd[i][j] = j < ${NW} ? __ldg((const unsigned*)(xb + min(max(base + ${AT === 'int' ? '4 * j' : '4ll * j'}, (${AT})0), (${AT})${TOTAL - 4}))) : 0u;
      a0v[i] = ok ? lo : 0;
      b0v[i] = ok ? hi : 0;
    }
  };
  if ((int)blockIdx.x < ${tilesM}) fetch(blockIdx.x);
  for (int mt = blockIdx.x; mt < ${tilesM}; mt += ${gridX}) {
    const int m0 = mt * ${BM};
    #pragma unroll
    for (int i = 0; i < ${KHT}; i++) {
      const int kh = kh0 + 2 * i;${KH % 2 ? `
      if (kh >= ${KH}) break;` : ''}
      const unsigned sh = shv[i];
      const int a0 = a0v[i], b0 = b0v[i];
      const bool edge = ${pad ? 'b0 == 0 || ' : ''}a0 != 0 || b0 != ${S};${pieces}
    }
    #pragma unroll
    for (int b = 0; b < ${NT}; b++)
      #pragma unroll
      for (int q = 0; q < 4; q++) accum[0][b][q] = 0;
    asm volatile("cp.async.wait_group 0;\\n");
    asm volatile("fence.proxy.async.shared::cta;\\n" ::: "memory"); // ordinary stores wrote the tiles; the tensor cores read them
    __syncthreads();
    asm volatile("wgmma.fence.sync.aligned;\\n" ::: "memory");
    #pragma unroll
    for (int ks = 0; ks < ${KP / 32}; ks++) {
      const unsigned long long da = qdesc(sA + (ks >> 1) * ${BM * 64} + (warp >> 2) * ${64 * 64} + (ks & 1) * 32), db = qdesc(sB + (ks >> 1) * ${BN * 64} + (ks & 1) * 32);
      asm volatile("{\\n.reg .pred p;\\nsetp.ne.b32 p, %${nAcc + 2}, 0;\\n${instr} {${regs}}, %${nAcc}, %${nAcc + 1}, p;\\n}\\n"
          : ${outs}
          : "l"(da), "l"(db), "r"(1));
    }
    asm volatile("wgmma.commit_group.sync.aligned;\\n" ::: "memory");
    if (mt + ${gridX} < ${tilesM}) fetch(mt + ${gridX}); // the next tile's words, in flight during this one's MMA and epilogue
    asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");
${epilogue}
    __syncthreads(); // the float tile is read before the next gather overwrites it
  }
}`;
  const params = gemmParams(g);
  return { ...finish(`kiln_qstem_${g.a}`, body, { grid: [gridX, tilesN, 1], block: [TH, 1, 1], sharedBytes: smem, params }), arch: 'sm_90a' };
}

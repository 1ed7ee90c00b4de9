// The quantized GEMM on Hopper with the tensor copy engine (TMA) feeding warpgroup MMA: a producer warp, consumer
// warpgroups and an mbarrier ring. Plain GEMM operands only (A [M, K] row-major, B [N, K] K-major): QMatMuls and
// 1x1 stride-1 NHWC convolutions; implicit-im2col convolutions stay on qgemmWgmma (quant-wgmma.ts).
import { renderCuda } from '../../../ir/expr.js';
import { activationExpr } from './elementwise.js';
import { finish, indexType, type KernelSource } from './types.js';
import { FP8_HELPERS, KQ_HELPERS, gemmParams, outParams, type QGemmArgs } from './quant.js';
import { stagedFloatStores, stagedHelpers, stagedPitch } from './quant-wgmma.js';
import type { PdlAnchors } from './pdl.js';

/** One 2-D tensor map the launch encodes (cuTensorMapEncodeTiled, uint8 elements) over operand `operand`. */
export interface TmaOperandMap {
  /** the kernel input it maps: 0 = A [rows, K], 1 = B [rows, K] */
  operand: 0 | 1;
  /** global extent: `rows` rows of `cols` bytes, row pitch `cols` bytes */
  rows: number; cols: number;
  /** box (one TMA load): `boxRows` rows of `boxCols` bytes */
  boxRows: number; boxCols: number;
  /** CUtensorMapSwizzle: 2 = 64-byte, 3 = 128-byte (the layout the wgmma descriptors name) */
  swizzle: 2 | 3;
}

/** A TMA kernel: its first two parameters are tensor maps passed by value (128 bytes each), not device pointers. */
export type TmaKernelSource = KernelSource & PdlAnchors & { tma: [TmaOperandMap, TmaOperandMap] };

/** The tiles the TMA kernel takes: BM 64 or 128 (one consumer warpgroup per 64 rows), BN 64, 128 or 256. */
export const TMA_TILES = [{ BM: 128, BN: 128 }, { BM: 128, BN: 256 }, { BM: 128, BN: 64 }, { BM: 64, BN: 128 }, { BM: 64, BN: 64 }] as const;

/**
 * The fused quantized GEMM fed by TMA (sm_90a). Block = BM / 64 consumer warpgroups, then a producer (a warpgroup at
 * one block per SM, a warp otherwise). The producer's first thread issues, per k-step, one `cp.async.bulk.tensor.2d` for the A tile (BM rows x 128 bytes) and one for
 * the B tile (BN rows) into a ring of `stages` slots, completing on the slot's "full" mbarrier (expect_tx: the box
 * bytes; rows past M / N and bytes past K arrive as zeros, so ragged edges need no bounds checks); it waits on the
 * slot's "empty" mbarrier before refilling it. The copy engine writes the same 128-byte swizzle the wgmma descriptors
 * name (64-byte when K <= 64), so the MMA loop is the cp.async kernel's. Consumers wait on "full", issue m64nBNk32
 * (u8/s8 x s8 into s32), keep one MMA group in flight and release the slot read one k-step back (one arrive per
 * warp). So loads run stages - 1 k-steps ahead with no thread of the consumers spending issue slots on them, and
 * the MMA warps never wait on a block-wide barrier. `setmaxnreg` moves registers from the producer to the consumers
 * (one block per SM: 128x256 tiles hold 128 accumulators per thread). The epilogue is the wgmma kernel's staged one
 * (bias/scale, residual, activation, requantize, head split, second output), its barriers among the consumers only.
 * Integer operands only; outputs byte for byte the cp.async kernel's (integer accumulation; same epilogue).
 * `cluster: 2`: pairs of blocks share the B tile through TMA multicast (see the comment at `BH`); measured slower than
 * the unclustered tiles on most BERT / ResNet shapes (bench/quant/gpu-layers.js main), kept as tactic candidates.
 * `persistent: <SM count>`: the persistent ping-pong kernel instead (see `pingPong`; 64-row tiles).
 */
export function qgemmTma(g: QGemmArgs, opts: { cluster?: 1 | 2; persistent?: number } = {}): TmaKernelSource {
  const { M, N, K } = g, CL = opts.cluster ?? 1;
  if (CL !== 1 && CL !== 2) throw new Error(`qgemm (tma): clusters of 1 or 2 blocks, got ${String(CL)}`);
  if (g.a === 'fp8') throw new Error('qgemm (tma): integer operands only (fp8 wgmma accumulates with fewer bits)');
  if (g.conv) throw new Error('qgemm (tma): plain GEMM operands only; implicit-im2col convolutions take the cp.async wgmma kernel');
  if (K % 16 !== 0 || N % 8 !== 0) throw new Error(`qgemm (tma): needs K % 16 == 0 (TMA row pitch) and N % 8 == 0 (staged epilogue), got K = ${K}, N = ${N}`);
  if (g.splitK && g.splitK > 1) throw new Error('qgemm (tma): no split-K');
  if (g.persistent) throw new Error('qgemm (tma): no cp.async-style persistent grid (pass the SM count as the persistent option for the ping-pong kernel)');
  if (g.qresidual) throw new Error('qgemm (tma): no 8-bit residual (the cp.async wgmma kernel takes those layers)');
  if (g.heads && (g.heads.D % 8 !== 0 || g.residual || g.out2)) throw new Error('qgemm (tma): a head split needs D % 8 == 0 and no residual or second output');
  if (opts.persistent !== undefined) {
    if (CL !== 1) throw new Error('qgemm (tma): a persistent ping-pong grid takes no clusters');
    return pingPong(g, opts.persistent);
  }
  const BM = g.tile?.BM ?? 128, BN = g.tile?.BN ?? 128;
  if (!TMA_TILES.some((t) => t.BM === BM && t.BN === BN)) throw new Error(`qgemm (tma): tile ${BM}x${BN} is not one of ${TMA_TILES.map((t) => `${t.BM}x${t.BN}`).join(', ')}`);
  const BKB = K <= 64 ? 64 : 128, KT = Math.ceil(K / BKB), NWG = BM / 64, CT = 128 * NWG, NT = BN / 8;
  const stage = (BM + BN) * BKB, FP = stagedPitch(BN);
  const ST = g.stages ?? Math.max(2, Math.min(KT, Math.floor((220 * 1024) / (g.occupancy ?? 1) / stage), 6));
  if (!(Number.isInteger(ST) && ST >= 2 && ST <= 8)) throw new Error(`qgemm (tma): stages must be 2 to 8, got ${ST}`);
  const smem = Math.max(ST * stage, BM * FP * 4) + 1024; // the staged float tile reuses the ring; + 1024-byte alignment slack
  let blocks = Math.max(1, Math.min(g.occupancy ?? 1, Math.floor((227 * 1024) / (smem + 1024))));
  // no more blocks than leave the MMA's BN / 2 accumulators and its operands registers (ptxas compiles every path
  // under the entry cap: 64 accumulators needed a cap of 90)
  const capOf = (b: number) => Math.min(255, Math.floor(65536 / ((CT + (b === 1 ? 128 : 32)) * b) / 8) * 8);
  while (blocks > 1 && capOf(blocks) < BN / 2 + 32) blocks--;
  // the producer: a whole warpgroup at one block per SM, so that setmaxnreg (per warpgroup) can move its registers to
  // the consumers (ptxas compiles every path under the entry cap, so two blocks of 3 warpgroups could not hold a
  // 64-accumulator chain); a single warp at two or more blocks per SM. It comes after the consumers: wgmma's
  // warpgroups start at a warp index divisible by 4
  const wsp = blocks === 1, TH = CT + (wsp ? 128 : 32);
  const cap = capOf(blocks), low = 40;
  const high = Math.min(248, Math.floor((cap * TH - low * 128) / CT / 8) * 8);
  const { it, act, resArg, kstep } = consumerParts(g, BN, BKB);
  // the staged epilogue's block-wide barriers become a named barrier over the consumers (the producer has left)
  const staged = stagedFloatStores({ ...g, staged: true }, { BM, BN, NT, FP, TH: CT, fOff: 0 }, it, act)
    .replace(/__syncthreads\(\);/g, `asm volatile("bar.sync 1, ${CT};\\n" ::: "memory");`);
  // a cluster's grid is padded to whole pairs: the extra block loads (zeros) for its partner and stores nothing
  const tilesM = Math.ceil(M / BM), gridM = Math.ceil(tilesM / CL) * CL;
  const epilogue = gridM > tilesM ? `  if (m0 < ${M}) {\n${staged}\n  }` : staged;
  // 2-block cluster (blockIdx.x pairs: two M tiles of one N tile): each block loads its A tile and half the B tile,
  // multicast to both, so the pair reads B from L2 once; a slot is refilled only when both blocks' consumers are done
  // with it (their warps arrive on both blocks' "empty" barriers), and no block exits before its partner is done
  // arriving on its barriers (a cluster barrier at the end, the producer included)
  const BH = BN / CL;
  const loadB = CL === 1 ? `kq_tma(sa + ${BM * BKB}, &tmB, kt * ${BKB}, n0, bar);`
    : `asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;\\n"
          :: "r"(sa + ${BM * BKB} + rank * ${BH * BKB}), "l"(&tmB), "r"(kt * ${BKB}), "r"(n0 + rank * ${BH}), "r"(bar), "h"((unsigned short)3) : "memory");`;
  const release = CL === 1 ? `if (kt > 0 && lane == 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\\n" :: "r"(empty0 + 8 * prev) : "memory");`
    : `if (kt > 0 && lane == 0) {
      #pragma unroll
      for (unsigned c = 0; c < 2; c++) asm volatile("{\\n.reg .b32 ra;\\nmapa.shared::cluster.u32 ra, %0, %1;\\nmbarrier.arrive.shared::cluster.b64 _, [ra];\\n}\\n" :: "r"(empty0 + 8 * prev), "r"(c) : "memory");
    }`;
  const clusterSync = 'asm volatile("barrier.cluster.arrive.release;\\nbarrier.cluster.wait.acquire;\\n" ::: "memory");';
  const PF = Math.min(ST, KT);
  const render = (early: boolean) => `${g.out === 'fp8' ? FP8_HELPERS : ''}
${KQ_HELPERS}${stagedHelpers()}
${tmaHelpers(BKB)}extern "C" __global__ void __launch_bounds__(${TH}, ${blocks})${CL > 1 ? ` __cluster_dims__(${CL}, 1, 1)` : ''} KNAME(const __grid_constant__ KqTmap tmA, const __grid_constant__ KqTmap tmB, const float* __restrict__ sc${resArg}, ${outParams(g).decl}) {${early ? `
  ${PDL_TRIGGER}` : ''}
  extern __shared__ __align__(1024) unsigned char smem[];
  __shared__ __align__(8) unsigned long long kq_bars[${2 * ST}];
  const unsigned sbase = ((unsigned)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;
  const unsigned full0 = (unsigned)__cvta_generic_to_shared(kq_bars), empty0 = full0 + ${8 * ST};
  const int m0 = blockIdx.x * ${BM}, n0 = blockIdx.y * ${BN};
  if (threadIdx.x == 0) {
    #pragma unroll
    for (int s = 0; s < ${ST}; s++) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\\n" :: "r"(full0 + 8 * s));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], ${4 * NWG * CL};\\n" :: "r"(empty0 + 8 * s)); // one arrive per consumer warp${CL > 1 ? ' of the pair' : ''}
    }
    asm volatile("fence.mbarrier_init.release.cluster;\\n" ::: "memory"); // the copy engine sees the initialized barriers
    asm volatile("prefetch.tensormap [%0];\\n" :: "l"(&tmA) : "memory");
    asm volatile("prefetch.tensormap [%0];\\n" :: "l"(&tmB) : "memory");
  }
  ${CL > 1 ? `${clusterSync} // the partner's barriers are initialized before anything lands on them
  unsigned rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\\n" : "=r"(rank));` : '__syncthreads();'}
${producerSplit(CT)}one thread issues every load
    ${wsp ? `asm volatile("setmaxnreg.dec.sync.aligned.u32 ${low};\\n");` : ''}
    if (threadIdx.x == ${CT}) {${early ? prefetchB(PF, stage, BM * BKB, BKB, 'sbase') : ''}
      int s = 0;
      unsigned phase = 0;
      for (int kt = 0; kt < ${KT}; kt++) {
        if (kt >= ${ST}) kq_bar_wait(empty0 + 8 * s, phase ^ 1); // the consumers' release of this slot's last use
        const unsigned sa = sbase + s * ${stage}, bar = full0 + 8 * s;
        ${early ? `if (kt >= ${PF}) {
          asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], ${stage};\\n" :: "r"(bar) : "memory");
          ${loadB}
        }
        kq_tma(sa, &tmA, kt * ${BKB}, m0, bar);` : `asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], ${stage};\\n" :: "r"(bar) : "memory");
        kq_tma(sa, &tmA, kt * ${BKB}, m0, bar);
        ${loadB}`}
        if (++s == ${ST}) { s = 0; phase ^= 1; }
      }
    }
    ${CL > 1 ? `${clusterSync}
    return;` : 'return;'}
  }
  ${wsp ? `asm volatile("setmaxnreg.inc.sync.aligned.u32 ${high};\\n");` : ''}${early ? `
  ${PDL_WAIT}` : ''}
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp, grp = lane >> 2, tig = lane & 3;
  int accum[1][${NT}][4];
  #pragma unroll
  for (int b = 0; b < ${NT}; b++)
    #pragma unroll
    for (int r = 0; r < 4; r++) accum[0][b][r] = 0;
  const unsigned wgA = (warp >> 2) * ${64 * BKB};
  int s = 0, prev = ${ST - 1};
  unsigned phase = 0;
  for (int kt = 0; kt < ${KT}; kt++) {
    kq_bar_wait(full0 + 8 * s, phase);
    const unsigned sA = sbase + s * ${stage}, sB = sA + ${BM * BKB};
${kstep('sA + wgA', '    ')}
    ${release}
    prev = s;
    if (++s == ${ST}) { s = 0; phase ^= 1; }
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");
${epilogue}${CL > 1 ? `
  ${clusterSync}` : ''}
}`;
  const body = render(false);
  const params = gemmParams(g), tma = operandMaps(M, N, K, BM, BH, BKB);
  const launch = { grid: [gridM, Math.ceil(N / BN), 1] as [number, number, number], block: [TH, 1, 1] as [number, number, number], sharedBytes: smem, params };
  const k = finish('kiln_qtma', body, launch);
  // programmatic dependent launch (codegen/pdl.ts): barrier init and tensor-map prefetch overlap the previous kernel;
  // the next one is let in once the main loop is issued (only the epilogue is left). `early`: the first ring's weight
  // tiles load before the wait too (a cluster's multicast B waits for its partner: that one waits at the split)
  return { ...k, arch: 'sm_90a', tma, pdlAnchors: { wait: producerSplit(CT), trigger: '  asm volatile("wgmma.wait_group.sync.aligned 0;' }, ...(CL === 1 ? { pdlEarly: renamed(finish('kiln_qtma', render(true), launch), k.name) } : {}) };
}

/** The persistent ping-pong kernel's tiles: 64 rows (one consumer warpgroup's m64 MMA) by 64, 128 or 256 columns. */
export const TMA_PP_TILES = [{ BM: 64, BN: 128 }, { BM: 64, BN: 64 }, { BM: 64, BN: 256 }] as const;

/**
 * The persistent ping-pong variant (`qgemmTma(g, { persistent: SMs })`): grid = min(tiles, SMs x blocks per SM); block
 * b takes tiles b, b + grid, ... (M fastest) and hands them alternately to its two consumer warpgroups, each owning a
 * 64 x BN tile with its own accumulators and its own staging area for the staged epilogue (so one consumer's epilogue
 * never touches a ring slot in flight). The producer walks the block's tiles' k-steps in that order through one ring
 * of `stages` slots, running ahead across tiles, so the next tile's fill overlaps the current tile's main loop and
 * epilogue. The consumers' main loops take turns (an "order" mbarrier per consumer, arrived on when a main loop has
 * issued its last MMA): consumer 1 starts tile i + 1 once consumer 0 has waited for every k-step of tile i, which
 * keeps every "full" barrier at most one phase ahead of its waiter (parity waits stay exact) and gives the tensor
 * cores to one main loop while the other consumer runs its epilogue. Same MMA (m64nBNk32, integer accumulation) and
 * same epilogue text as qgemmTma: outputs byte for byte the cp.async kernel's.
 */
function pingPong(g: QGemmArgs, sms: number): TmaKernelSource {
  const { M, N, K } = g;
  if (!(Number.isInteger(sms) && sms >= 1)) throw new Error(`qgemm (tma): persistent needs the device's SM count, got ${String(sms)}`);
  const BM = g.tile?.BM ?? 64, BN = g.tile?.BN ?? 128;
  if (!TMA_PP_TILES.some((t) => t.BM === BM && t.BN === BN)) throw new Error(`qgemm (tma): the ping-pong tile ${BM}x${BN} is not one of ${TMA_PP_TILES.map((t) => `${t.BM}x${t.BN}`).join(', ')}`);
  const BKB = K <= 64 ? 64 : 128, KT = Math.ceil(K / BKB), NT = BN / 8, FP = stagedPitch(BN), stage = (BM + BN) * BKB, STG = BM * FP * 4;
  const occ = g.occupancy ?? 1;
  if (occ !== 1 && occ !== 2) throw new Error(`qgemm (tma): a ping-pong block holds one or two per SM, got occupancy ${String(occ)}`);
  // the ring takes what the two staging areas leave (alignment slack and the static barriers aside)
  const ST = g.stages ?? Math.min(8, Math.floor(((227 * 1024) / occ - 2048 - 2 * STG) / stage));
  if (!(Number.isInteger(ST) && ST >= 2 && ST <= 8)) throw new Error(`qgemm (tma): ping-pong ${BM}x${BN} at ${occ} per SM needs 2 to 8 ring stages, got ${ST}`);
  const smem = ST * stage + 2 * STG + 1024;
  // one block per SM: a producer warpgroup whose registers setmaxnreg gives to the consumers; two: a producer warp
  const wsp = occ === 1, CT = 256, TH = CT + (wsp ? 128 : 32);
  const cap = Math.min(255, Math.floor(65536 / (TH * occ) / 8) * 8), low = 40;
  if (cap < BN / 2 + 32) throw new Error(`qgemm (tma): ping-pong ${BM}x${BN} at ${occ} per SM leaves ${cap} registers per thread`);
  const high = Math.min(248, Math.floor((cap * TH - low * 128) / CT / 8) * 8);
  const tilesM = Math.ceil(M / BM), tiles = tilesM * Math.ceil(N / BN), grid = Math.min(tiles, sms * occ);
  const { it, act, resArg, kstep } = consumerParts(g, BN, BKB);
  // the staged epilogue over one consumer's tile and staging area: its block-wide barriers become the consumer's own
  // named barrier (1 or 2, 128 threads)
  const staged = stagedFloatStores({ ...g, staged: true }, { BM, BN, NT, FP, TH: 128, fOff: 0 }, it, act)
    .replace(/__syncthreads\(\);/g, 'asm volatile("bar.sync %0, 128;\\n" :: "r"(1 + cw) : "memory");');
  const tileAt = (i: string) => `const int tile = (int)blockIdx.x + (${i}) * ${grid}, m0 = tile % ${tilesM} * ${BM}, n0 = tile / ${tilesM} * ${BN};`;
  const PF = Math.min(ST, KT), tile0 = 'blockIdx.x';
  const render = (early: boolean) => `${g.out === 'fp8' ? FP8_HELPERS : ''}
${KQ_HELPERS}${stagedHelpers()}
${tmaHelpers(BKB)}extern "C" __global__ void __launch_bounds__(${TH}, ${occ}) KNAME(const __grid_constant__ KqTmap tmA, const __grid_constant__ KqTmap tmB, const float* __restrict__ sc${resArg}, ${outParams(g).decl}) {${early ? `
  ${PDL_TRIGGER}` : ''}
  extern __shared__ __align__(1024) unsigned char smem[];
  __shared__ __align__(8) unsigned long long kq_bars[${2 * ST + 2}];
  const unsigned ring = ((unsigned)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;
  const unsigned full0 = (unsigned)__cvta_generic_to_shared(kq_bars), empty0 = full0 + ${8 * ST}, order0 = empty0 + ${8 * ST};
  const int ntiles = (${tiles - 1} - (int)blockIdx.x) / ${grid} + 1; // this block's tiles: blockIdx.x + i * ${grid}
  if (threadIdx.x == 0) {
    #pragma unroll
    for (int s = 0; s < ${ST}; s++) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\\n" :: "r"(full0 + 8 * s));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 4;\\n" :: "r"(empty0 + 8 * s)); // one arrive per warp of the consumer that read it
    }
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\\n" :: "r"(order0));
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\\n" :: "r"(order0 + 8));
    asm volatile("fence.mbarrier_init.release.cluster;\\n" ::: "memory"); // the copy engine sees the initialized barriers
    asm volatile("prefetch.tensormap [%0];\\n" :: "l"(&tmA) : "memory");
    asm volatile("prefetch.tensormap [%0];\\n" :: "l"(&tmB) : "memory");
  }
  __syncthreads();
${producerSplit(CT)}one thread issues every load of every tile of the block, in order
    ${wsp ? `asm volatile("setmaxnreg.dec.sync.aligned.u32 ${low};\\n");` : ''}
    if (threadIdx.x == ${CT}) {${early ? `
      { const int n0 = ${tile0} / ${tilesM} * ${BN};${prefetchB(PF, stage, BM * BKB, BKB, 'ring')}
      }` : ''}
      int s = 0, step = 0;
      unsigned phase = 0;
      for (int i = 0; i < ntiles; i++) {
        ${tileAt('i')}
        for (int kt = 0; kt < ${KT}; kt++, step++) {
          if (step >= ${ST}) kq_bar_wait(empty0 + 8 * s, phase ^ 1); // the consumers' release of this slot's last use
          const unsigned sa = ring + s * ${stage}, bar = full0 + 8 * s;
          ${early ? `if (step >= ${PF}) {
            asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], ${stage};\\n" :: "r"(bar) : "memory");
            kq_tma(sa + ${BM * BKB}, &tmB, kt * ${BKB}, n0, bar);
          }
          kq_tma(sa, &tmA, kt * ${BKB}, m0, bar);` : `asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], ${stage};\\n" :: "r"(bar) : "memory");
          kq_tma(sa, &tmA, kt * ${BKB}, m0, bar);
          kq_tma(sa + ${BM * BKB}, &tmB, kt * ${BKB}, n0, bar);`}
          if (++s == ${ST}) { s = 0; phase ^= 1; }
        }
      }
    }
    return;
  }
  ${wsp ? `asm volatile("setmaxnreg.inc.sync.aligned.u32 ${high};\\n");` : ''}${early ? `
  ${PDL_WAIT}` : ''}
  const int cw = threadIdx.x >> 7; // consumer 0 takes the block's even tiles, consumer 1 the odd ones
  const int tid = threadIdx.x & 127, lane = tid & 31, warp = tid >> 5;
  const int wm = warp, grp = lane >> 2, tig = lane & 3;
  const unsigned sbase = ring + ${ST * stage} + cw * ${STG}; // this consumer's float tile (the staged epilogue's)
  int accum[1][${NT}][4];
  for (int i = cw, j = 0; i < ntiles; i += 2, j++) {
    ${tileAt('i')}
    // the other consumer's main loop on the tile before this one has waited for all its k-steps
    if (i > 0) kq_bar_wait(order0 + 8 * (1 - cw), (unsigned)(j - 1 + cw) & 1u);
    #pragma unroll
    for (int b = 0; b < ${NT}; b++)
      #pragma unroll
      for (int r = 0; r < 4; r++) accum[0][b][r] = 0;
    int s = i * ${KT} % ${ST}, prev = 0;
    unsigned phase = (unsigned)(i * ${KT} / ${ST}) & 1u;
    for (int kt = 0; kt < ${KT}; kt++) {
      kq_bar_wait(full0 + 8 * s, phase);
      const unsigned sA = ring + s * ${stage}, sB = sA + ${BM * BKB};
${kstep('sA', '      ')}
      if (kt > 0 && lane == 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\\n" :: "r"(empty0 + 8 * prev) : "memory");
      prev = s;
      if (++s == ${ST}) { s = 0; phase ^= 1; }
    }
    if (tid == 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\\n" :: "r"(order0 + 8 * cw) : "memory"); // the other consumer's turn
    asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");
    if (lane == 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\\n" :: "r"(empty0 + 8 * prev) : "memory"); // the tile's last slot
${staged}
  }
}`;
  const body = render(false);
  const params = gemmParams(g), tma = operandMaps(M, N, K, BM, BN, BKB);
  const launch = { grid: [grid, 1, 1] as [number, number, number], block: [TH, 1, 1] as [number, number, number], sharedBytes: smem, params };
  const k = finish('kiln_qtmapp', body, launch);
  // programmatic dependent launch: as qgemmTma's, without an explicit trigger (a block's last tile is not known to
  // finish last; the next kernel is let in as the blocks exit); `early` as qgemmTma's (the block's first tile's weights)
  return { ...k, arch: 'sm_90a', tma, pdlAnchors: { wait: producerSplit(CT) }, pdlEarly: renamed(finish('kiln_qtmapp', render(true), launch), k.name) };
}

/** The two operands' tensor maps: A boxes of BM rows, B boxes of `boxB` rows, one k-step (BKB bytes) wide, swizzled to match. */
function operandMaps(M: number, N: number, K: number, BM: number, boxB: number, BKB: number): [TmaOperandMap, TmaOperandMap] {
  const swizzle = BKB === 128 ? 3 : 2;
  return [{ operand: 0, rows: M, cols: K, boxRows: BM, boxCols: BKB, swizzle }, { operand: 1, rows: N, cols: K, boxRows: boxB, boxCols: BKB, swizzle }];
}

// the device helpers both TMA kernels share: the tensor-map parameter type, the mbarrier wait with its spin guard, one
// TMA load, and the wgmma shared-memory descriptor of a BKB-byte swizzled k-step
/**
 * What both kernels' consumers render alike: index type, activation, residual parameter, and one k-step of the
 * m64nBNk32 wgmma chain over the ring slot at sA/sB (A rows from `a`), waited for down to one group in flight.
 */
function consumerParts(g: QGemmArgs, BN: number, BKB: number) {
  const { M, N, K } = g, nAcc = BN / 2;
  const instr = `wgmma.mma_async.sync.aligned.m64n${BN}k32.s32.${g.a === 'uint8' ? 'u8' : 's8'}.s8`;
  const regs = Array.from({ length: nAcc }, (_, i) => `%${i}`).join(',');
  const outs = Array.from({ length: nAcc }, (_, i) => `"+r"(accum[0][${i >> 2}][${i & 3}])`).join(', ');
  const kstep = (a: string, pad: string) => `${pad}asm volatile("wgmma.fence.sync.aligned;\\n" ::: "memory");
${pad}#pragma unroll
${pad}for (int ks = 0; ks < ${BKB / 32}; ks++) {
${pad}  const unsigned long long da = qdesc(${a} + ks * 32), db = qdesc(sB + ks * 32);
${pad}  asm volatile("{\\n.reg .pred p;\\nsetp.ne.b32 p, %${nAcc + 2}, 0;\\n${instr} {${regs}}, %${nAcc}, %${nAcc + 1}, p;\\n}\\n"
${pad}      : ${outs}
${pad}      : "l"(da), "l"(db), "r"(1));
${pad}}
${pad}asm volatile("wgmma.commit_group.sync.aligned;\\n" ::: "memory");
${pad}asm volatile("wgmma.wait_group.sync.aligned 1;\\n" ::: "memory"); // the previous k-step's group is done with its slot`;
  return {
    it: indexType(Math.max(M * N, M * K, N * K)),
    act: renderCuda(activationExpr(g.activation, g.params), () => 'v'),
    resArg: g.residual ? `, const ${g.residual === 'float16' ? 'unsigned short' : 'float'}* __restrict__ res` : '',
    kstep,
  };
}

const PDL_WAIT = 'asm volatile("griddepcontrol.wait;" ::: "memory");';
const PDL_TRIGGER = 'asm volatile("griddepcontrol.launch_dependents;" ::: "memory");';

/**
 * PDL `early` (codegen/pdl.ts), the producer thread: the B (weight) boxes of the first `pf` k-steps, with each slot's
 * whole expect_tx, issued before griddepcontrol.wait: weights are constants no kernel writes, so they may load while
 * the previous kernel finishes; the A boxes (its output) follow the wait. `n0` is the first tile's column.
 */
function prefetchB(pf: number, stage: number, bOff: number, BKB: number, ring: string): string {
  return `
      for (int kt = 0; kt < ${pf}; kt++) { // constant weights: loaded before the wait
        const unsigned sa = ${ring} + kt * ${stage}, bar = full0 + 8 * kt;
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], ${stage};\\n" :: "r"(bar) : "memory");
        kq_tma(sa + ${bOff}, &tmB, kt * ${BKB}, n0, bar);
      }
      ${PDL_WAIT}`;
}

/** A rendered kernel's source with its name replaced (a variant rendered apart, named as the plain kernel). */
const renamed = (k: KernelSource, name: string) => k.source.split(k.name).join(name);

/** Where both kernels' roles split (every thread has passed barrier init): a PDL variant's wait goes right before. */
const producerSplit = (CT: number) => `  if (threadIdx.x >= ${CT}) { // the producer: `;

function tmaHelpers(BKB: number): string {
  return `struct __align__(64) KqTmap { unsigned long long v[16]; };
// a wait that never ends (a load that never completes) traps: a launch error instead of a hung stream
__device__ __forceinline__ void kq_bar_wait(unsigned bar, unsigned parity) {
  unsigned done, spins = 0;
  do {
    asm volatile("{\\n.reg .pred p;\\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\\nselp.u32 %0, 1, 0, p;\\n}\\n" : "=r"(done) : "r"(bar), "r"(parity) : "memory");
    if (++spins == ${1 << 22}u) __trap();
  } while (!done);
}
__device__ __forceinline__ void kq_tma(unsigned dst, const KqTmap* map, int k, int row, unsigned bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\\n"
    :: "r"(dst), "l"(map), "r"(k), "r"(row), "r"(bar) : "memory");
}
// shared-memory matrix descriptor: start >> 4, leading offset 1 (unused when K-major and swizzled), stride between
// 8-row atoms (8 rows of ${BKB} bytes), ${BKB}-byte swizzle
__device__ __forceinline__ unsigned long long qdesc(unsigned addr) {
  return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) | ((unsigned long long)(${8 * BKB} >> 4) << 32) | (${BKB === 128 ? 1 : 2}ull << 62);
}
`;
}

// The quantized GEMM on Hopper's warpgroup MMA (sm_90a): main loop, swizzled shared-memory pipeline and the staged
// epilogue. Arguments, operand loads and the direct epilogue are shared with the mma.sync kernel in quant.ts.
import { renderCuda } from '../../../ir/expr.js';
import { activationExpr } from './elementwise.js';
import { finish, indexType, type KernelSource } from './types.js';
import {
  FP8_HELPERS, KQ_HELPERS, KQ8N_HELPERS, QSTORAGE, accToFloat, aChunk, gemmParams, outParams, pairedStores, QRES_HELPERS, qresidual8, qresidualByte, qresidualExpr, residualParam,
  store8x8, storeExpr, type QGemmArgs,
} from './quant.js';

/**
 * The fused quantized GEMM on Hopper's warpgroup MMA (`wgmma.mma_async`, sm_90a). Block = BM / 64 warpgroups, tile
 * BM x BN (BM 64 or 128, BN 32, 64 or 128: narrow tiles give short-M layers more blocks; each warpgroup one m64nBNk32
 * chain), k-step 128 bytes (64 when K <= 64). Tiles go to shared
 * memory by cp.async (16-byte chunks; implicit im2col for convolutions as in `qgemm`) in the swizzled layout the
 * wgmma descriptors name (128-byte rows: chunk c of row r at c ^ (r % 8); 64-byte rows: c ^ ((r / 2) % 4)), 3-4
 * stages deep, one MMA group left in flight while the next k-step is set up (options: `stages`, `drain` and `splitK`
 * trade k-steps in flight, blocks per SM and grid size; see QGemmArgs). Integer only in the timed tactic: Hopper's fp8 wgmma accumulates with fewer bits than float32
 * (measured: half the fp16 outputs of a BERT GEMM differ in their last bits from mma.sync's), which compounds
 * through a chain of requantized fp8 layers.
 * Both operands K-major from shared memory, accumulators in registers, then the same epilogue as `qgemm`
 * (each warp owns 16 rows of its warpgroup's 64, so the m16n8 store mapping applies unchanged).
 */
export function qgemmWgmma(g: QGemmArgs): KernelSource {
  const { M, N, K } = g;
  if (K % 16 !== 0 || N % 2 !== 0) throw new Error(`qgemm (wgmma): needs K % 16 == 0 and an even N, got K = ${K}, N = ${N}`);
  if (g.conv && g.conv.C % 16 !== 0) throw new Error(`qgemm (wgmma): implicit im2col needs C % 16 == 0, got ${g.conv.C}`);
  if (g.heads && (!g.staged || N % 8 !== 0 || g.heads.D % 8 !== 0 || g.residual || g.qresidual || g.out2 || g.conv)) throw new Error('qgemm (wgmma): a head split needs the staged epilogue, N % 8 == 0, D % 8 == 0 and no residual, second output or convolution');
  // k-step: 128 bytes (128-byte swizzle), or 64 (64-byte swizzle) when K fits in it: no MMA on zero padding
  // one warpgroup per 64 rows of the tile: 64 x BN blocks (128 threads) leave fewer SMs idle on short M
  const { BM, BN } = wgmmaTile(g), BKB = K <= 64 || g.kStep === 64 ? 64 : 128, CH = BKB / 16, TH = 2 * BM;
  const NT = BN / 8, KT = Math.ceil(K / BKB);
  const SK = g.splitK ?? 1;
  if (SK > 1 && (g.a === 'fp8' || g.persistent || SK > KT)) throw new Error(`qgemm (wgmma): split-K needs integer operands, no persistent grid and at most one split per k-step (K = ${K}, ${SK} splits)`);
  if (g.stages !== undefined && !(Number.isInteger(g.stages) && g.stages >= (g.drain ? 2 : 3) && g.stages <= 8)) throw new Error(`qgemm (wgmma): stages must be 3 to 8 (2 with drain), got ${g.stages}`);
  // stages: loads run D = ST - 2 k-steps ahead while one wgmma group stays in flight behind the current one (the slot
  // a load refills was last read two groups back); by default no more stages than a short reduction (or split) needs,
  // so shared memory is left for a second block on the SM
  // (drain: each k-step's group is waited for before the next k-step, so loads run D = ST - 1 ahead)
  if (g.drain && g.persistent) throw new Error('qgemm (wgmma): drain is for the non-persistent grid');
  const ST = g.stages ?? Math.max(3, Math.min(4, Math.floor(KT / SK) + 1)), D = g.drain ? ST - 1 : ST - 2;
  const swz = (row: string) => (BKB === 128 ? `(ch ^ (${row} & 7))` : `(ch ^ ((${row} >> 1) & 3))`);
  const aT = g.a === 'uint8' ? 'unsigned char' : g.a === 'int8' ? 'signed char' : 'unsigned char';
  const staged = !!g.staged && N % 8 === 0;
  const epi = stagedEpilogueOptions(g, staged && !g.persistent && SK === 1 && N % 16 === 0 && K <= 64, BN);
  // staged float tile: row pitch BN + 4 floats (rows 4 banks apart), or BN + 8 with the conflict-free split layout
  const FP = epi.split ? BN + 8 : BN + 4;
  // the staged tile reuses the idle pipeline buffers, except in a persistent grid (the next tile's loads are in flight);
  // an 8-bit residual tile read into shared memory sits after both (it is loaded with the first k-step)
  const stage = (BM + BN) * BKB, fOff = g.persistent ? ST * stage : 0, rb = g.qresidual ? 1 : g.residual === 'float16' ? 2 : 4;
  const bufBytes = Math.max(ST * stage, staged ? fOff + BM * FP * 4 : 0), rOff = epi.resTile ? bufBytes : undefined;
  const smem = bufBytes + (epi.resTile ? BM * BN * rb : 0) + 1024; // + alignment slack: swizzle atoms want 1024-aligned tiles
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
  const resArg = residualParam(g);
  const epilogue = staged ? stagedFloatStores(g, { BM, BN, NT, FP, TH, fOff, rOff }, it, act)
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
  // split-K: block z takes k-steps [kb, ke) of its tile (unsplit, the loop's text is the same as before split-K: the
  // cubin caches and the tactic's earlier timings stay valid)
  const range = SK > 1 ? `
  const int kb = (int)blockIdx.z * ${KT} / ${SK}, ke = ((int)blockIdx.z + 1) * ${KT} / ${SK};` : '';
  const [kb, ke, rel] = SK > 1 ? ['kb', 'ke', '(kt - kb)'] : ['0', `${KT}`, 'kt'];
  const from = (v: string) => (SK > 1 ? `kb + ${v}` : v);
  // the residual tile's rows into L2 while the main loop runs (cp.async.bulk.prefetch: 16-byte multiples; N % 8 == 0)
  const prefetch = rOff !== undefined ? residualTileLoad(BM, BN, TH, M, N, rOff, it, rb) : (g.residual || g.qresidual) && g.residualPrefetch && SK === 1 && N % 8 === 0 && (N * rb) % 16 === 0 ? `
  if (tid < ${BM} && m0 + tid < ${M}) {
    const unsigned bytes = ${N % BN === 0 ? `${BN * rb}u` : `(unsigned)min(${BN}, ${N} - n0) * ${rb}u`};
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\\n" :: "l"(res + (${it})(m0 + tid) * ${N} + n0), "r"(bytes) : "memory");
  }` : '';
  const pipeline = !grid ? `  const int m0 = blockIdx.x * ${BM}, n0 = blockIdx.y * ${BN};${prefetch}${a.setup}${range}
  ${accT} accum[1][${NT}][4];
  ${zero}
  auto load = [&](int kt, int stage) {${loadBody}
  };
  #pragma unroll
  for (int s = 0; s < ${D}; s++) {
    if (${from('s')} < ${ke}) load(${from('s')}, s);
    asm volatile("cp.async.commit_group;\\n");
  }
  const unsigned wgA = (warp >> 2) * ${64 * BKB};
  for (int kt = ${kb}; kt < ${ke}; kt++) {
    asm volatile("cp.async.wait_group ${D - 1};\\n");
    asm volatile("fence.proxy.async.shared::cta;\\n" ::: "memory"); // cp.async wrote it; the tensor cores read it
    __syncthreads();
    if (kt + ${D} < ${ke}) load(kt + ${D}, (${rel} + ${D}) % ${ST});
    asm volatile("cp.async.commit_group;\\n");
    ${mmaStep(`${rel} % ${ST}`)}
    ${g.drain ? 'asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory"); // the slot this k-step read is refilled next' : 'asm volatile("wgmma.wait_group.sync.aligned 1;\\n" ::: "memory"); // this group may run on behind the next k-step\'s loads'}
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");
  asm volatile("cp.async.wait_group 0;\\n");${SK > 1 ? splitKReduce(BM, BN, NT, TH, SK) : ''}
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
${KQ_HELPERS}${g.qresidual && g.staged ? `\n${QRES_HELPERS}` : ''}${staged ? stagedHelpers() : ''}
__device__ __forceinline__ void cp16(unsigned dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\\n" :: "r"(dst), "l"(src), "r"(ok ? 16 : 0));
}
// shared-memory matrix descriptor: start >> 4, leading offset 1 (unused when K-major and swizzled), stride between
// 8-row atoms (8 rows of ${BKB} bytes), ${BKB}-byte swizzle
__device__ __forceinline__ unsigned long long qdesc(unsigned addr) {
  return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) | ((unsigned long long)(${8 * BKB} >> 4) << 32) | (${BKB === 128 ? 1 : 2}ull << 62);
}
extern "C" __global__ void __launch_bounds__(${TH}, ${blocks}) KNAME(const ${aT}* __restrict__ x, const unsigned char* __restrict__ w, const float* __restrict__ sc${resArg}, ${outParams(g).decl}${SK > 1 ? ', int* __restrict__ cnt, int* __restrict__ part' : ''}) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp, wn = 0, grp = lane >> 2, tig = lane & 3;
  (void)wn;
  const unsigned sbase = ((unsigned)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;
${pipeline}
}`;
  const params: KernelSource['params'] = [...gemmParams(g), ...(SK > 1 ? [{ kind: 'in' as const, index: 4 }, { kind: 'in' as const, index: 5 }] : [])];
  return { ...finish(`kiln_qwgmma_${g.a}`, body, { grid: grid ? [grid, 1, 1] : [tilesM, tilesN, SK], block: [TH, 1, 1], sharedBytes: smem, params }), arch: 'sm_90a' };
}

/** The wgmma kernel's tile for these arguments: BM 64 or 128 (default 128), BN 32, 64 or 128 (default 128). */
export function wgmmaTile(g: QGemmArgs): { BM: number; BN: number } {
  return { BM: g.tile?.BM === 64 ? 64 : 128, BN: g.tile?.BN === 64 || g.tile?.BN === 32 ? g.tile.BN : 128 };
}

/** Split-K workspace of a wgmma kernel: `counters` ints (zero before its first launch) and `bytes` of partials. */
export function splitKWorkspace(g: QGemmArgs): { counters: number; bytes: number } {
  const { BM, BN } = wgmmaTile(g), tiles = Math.ceil(g.M / BM) * Math.ceil(g.N / BN);
  return { counters: tiles, bytes: tiles * (g.splitK ?? 1) * BM * BN * 4 };
}

/**
 * Split-K's reduction, after a block's last k-step: its int32 partial tile goes to the workspace (16-byte stores, a
 * thread's accumulators at consecutive chunks of the thread block), then a fence and one atomic on the tile's counter;
 * every block but the last returns. The last adds the other splits' partials (L2 reads: they were written by other
 * SMs) to its accumulators, resets the counter for the next launch, and goes on to the epilogue.
 */
function splitKReduce(BM: number, BN: number, NT: number, TH: number, SK: number): string {
  return `
  {
    __shared__ int kq_last;
    const int tile = (int)blockIdx.y * (int)gridDim.x + (int)blockIdx.x;
    int4* mine = (int4*)part + ((size_t)tile * ${SK} + blockIdx.z) * ${(BM * BN) / 4};
    #pragma unroll
    for (int b = 0; b < ${NT}; b++) __stcg(mine + b * ${TH} + tid, make_int4(accum[0][b][0], accum[0][b][1], accum[0][b][2], accum[0][b][3]));
    __threadfence();
    __syncthreads();
    if (tid == 0) {
      kq_last = atomicAdd(cnt + tile, 1) == ${SK - 1};
      if (kq_last) atomicExch(cnt + tile, 0);
    }
    __syncthreads();
    if (!kq_last) return;
    __threadfence();
    for (int z = 0; z < ${SK}; z++) {
      if (z == (int)blockIdx.z) continue;
      const int4* other = (const int4*)part + ((size_t)tile * ${SK} + z) * ${(BM * BN) / 4};
      #pragma unroll
      for (int b = 0; b < ${NT}; b++) {
        const int4 v = __ldcg(other + b * ${TH} + tid);
        accum[0][b][0] += v.x; accum[0][b][1] += v.y; accum[0][b][2] += v.z; accum[0][b][3] += v.w;
      }
    }
  }`;
}

/**
 * The staged epilogue's options for an 8-bit-residual kernel (bench/quant/gpu-layers.js qepi, H100):
 * - `resTile`: the BM x BN residual bytes copied into shared memory by cp.async with the k-step's loads, then read by
 *   pass 2 from shared memory, where the reduction is one 64-byte k-step (`canTile`: K <= 64, a non-persistent,
 *   unsplit grid and N % 16 == 0). There a tile's loads, MMA and epilogue run back to back, so pass 2's 8-byte
 *   residual reads from L2 stalled in line (ResNet-50's layer-1 conv3, K = 64: 66.8 -> 58.0 us, best tile each; in
 *   the model 66 -> 52 us). From K = 128 on it won nowhere: the shared memory it adds cost blocks per SM (128x128
 *   tiles at K = 128: 34.6 -> 46.4 us) and the L2 prefetch (QGemmArgs.residualPrefetch) or the longer main loop hide
 *   the reads already.
 * - `split`: the float tile's conflict-free layout (stagedFloatStores; BN >= 64): ncu on the layer-1 conv3 128x128
 *   kernel, shared-memory bank conflicts 1.66M -> 0.04M, wavefronts 3.66M -> 2.24M; 0.2-0.9 us on the K >= 128 shapes.
 *   By default in every staged kernel, the stem's and the TMA kernels' too (stagedPitch): the plain 1x1 56 px
 *   64->256 conv 29.9 -> 27.4 us; ResNet-50 bs32 int8 in the model, same process, 1.030 -> 1.014 ms (default file),
 *   0.981 -> 0.971 ms (--quantize-residual). Before helper qepi2 only in 8-bit-residual kernels (`banks`).
 * - `hres`: the same residual tile for an fp16 residual (2 bytes per channel), the default file's conv3s with K = 64
 *   (ResNet-50's layer 1: fp16 residual in, fp16 out plus the int8 second output, 5 bytes per output); pass 2's
 *   16-byte residual reads then come from shared memory instead of stalling on L2/HBM in line. Helper qepi3.
 * KILN_QEPI switches them (epilogueFeatures).
 */
function stagedEpilogueOptions(g: QGemmArgs, canTile: boolean, BN: number): { resTile: boolean; split: boolean } {
  const f = epilogueFeatures(), q = !!g.qresidual, h = !q && g.residual === 'float16';
  return { resTile: canTile && ((q && f.res) || (h && f.hres)), split: BN >= 64 && !!g.staged && (f.split || (q && f.banks)) };
}

/** The staged epilogue's options (KILN_QEPI; see stagedEpilogueOptions, stagedFloatStores and KQ8N_HELPERS). */
interface EpilogueFeatures {
  /** an 8-bit residual tile in shared memory (K <= 64) */
  res: boolean;
  /** the split float-tile layout in 8-bit-residual kernels */
  banks: boolean;
  /** the split float-tile layout in every staged kernel (BN >= 64): the wgmma, stem and TMA kernels */
  split: boolean;
  /** kq_q8x8n / kq_c8n: the narrow slow-path window */
  narrow: boolean;
  /** pass 2 walks fixed rows: tid's row and channels once, then constant strides */
  loop: boolean;
  /** the residual tile in shared memory for an fp16 residual too (K <= 64: the default file's layer-1 conv3s) */
  hres: boolean;
}

/**
 * KILN_QEPI, an A/B switch: unset = res, split, narrow, loop and hres (the measured set); `qepi2` = res, split, narrow
 * and loop (the kernels before helper qepi3's hres, texts unchanged); `qepi` = res and banks (the kernels before helper
 * qepi2's options, texts unchanged); `0` = none; `res`, `banks`, `split`, `narrow`, `loop`, `hres` or a comma list of
 * them = those; `all` = res and split.
 */
export function epilogueFeatures(): EpilogueFeatures {
  const mode = process.env.KILN_QEPI ?? '';
  const qepi2 = ['res', 'split', 'narrow', 'loop'];
  const on = new Set(mode === '' ? [...qepi2, 'hres'] : mode.split(',').flatMap((t) => (t === 'qepi' ? ['res', 'banks'] : t === 'qepi2' ? qepi2 : t === 'all' ? ['res', 'split'] : [t])));
  return { res: on.has('res'), banks: on.has('banks'), split: on.has('split'), narrow: on.has('narrow'), loop: on.has('loop'), hres: on.has('hres') };
}

/**
 * The staged float tile's row pitch in the kernels that call stagedFloatStores themselves (the gathered stem, the TMA
 * kernels): BN + 8, the split layout (BN >= 64), else BN + 4.
 */
export function stagedPitch(BN: number): number {
  return BN >= 64 && epilogueFeatures().split ? BN + 8 : BN + 4;
}

/** Device helpers that stagedFloatStores' text may call beyond KQ_HELPERS (and QRES_HELPERS): '' or KQ8N_HELPERS. */
export function stagedHelpers(): string {
  return epilogueFeatures().narrow ? `\n${KQ8N_HELPERS}` : '';
}

/**
 * The residual's BM x BN tile (rb bytes per element: 1 for 8-bit, 2 for fp16) into shared memory at `rOff` (dense
 * rows of BN * rb bytes), 16-byte cp.async chunks issued before the first k-step's loads so that they join its commit
 * group: the main loop's last wait covers them. Rows and chunks outside the tensor are zero-filled (never read).
 * Needs N % 16 == 0 (whole, aligned chunks).
 */
function residualTileLoad(BM: number, BN: number, TH: number, M: number, N: number, rOff: number, it: string, rb: number): string {
  const CPR = (BN * rb) / 16, per = (BM * CPR) / TH, edge = M % BM !== 0 || N % BN !== 0;
  return `
  #pragma unroll
  for (int i = 0; i < ${per}; i++) {
    const int id = tid + i * ${TH}, m = m0 + id / ${CPR}, n = n0 + id % ${CPR} * ${16 / rb};${edge ? `
    const bool ok = m < ${M} && n < ${N};` : ''}
    cp16(sbase + ${rOff} + id * 16, ${edge ? `ok ? res + (${it})m * ${N} + n : res, ok` : `res + (${it})m * ${N} + n, true`});
  }`;
}

/**
 * The wgmma kernel's staged epilogue. Pass 1: each thread writes acc * scale + offset (the same float expression as
 * the direct epilogue, so the bytes stored are identical) for its accumulator pairs into a float tile in shared
 * memory (the pipeline buffers, idle now, or a region of its own in a persistent grid). Pass 2: each thread takes 8 consecutive channels of one row: residual in
 * one 16-byte read (fp16; two for fp32), activation, then one 8-byte (int8), 16-byte (fp16) or two 16-byte (fp32)
 * stores, and 8 bytes for the second output; a warp covers whole rows of the tile, so every access is coalesced.
 */
export function stagedFloatStores(g: QGemmArgs, t: { BM: number; BN: number; NT: number; FP: number; TH: number; fOff: number; rOff?: number }, it: string, act: string): string {
  const { BM, BN, NT, FP, TH, fOff, rOff } = t, CPR = BN / 8, cvt = accToFloat(g), v1 = g.v1Epilogue, f = epilogueFeatures();
  // a generic pointer to byte `off` of the dynamic shared memory (sbase: its shared-window address, 1024-aligned)
  const smemAt = (off: string) => `smem + (sbase - (unsigned)__cvta_generic_to_shared(smem)) + ${off}`;
  // pass 2's residual bytes for its 8 channels: from the shared-memory residual tile (rows of BN elements) or global
  const resAt = (bytes: number) => (rOff !== undefined ? smemAt(bytes === 1 ? `${rOff} + r * ${BN} + q8` : `${rOff} + r * ${BN * bytes} + q8 * ${bytes}`) : 'res + o');
  // split layout (row pitch BN + 8): each 8-channel group's first 4 floats at 4 * group, its last 4 at H + 4 * group
  // (H = BN / 2 + 4). Pass 1's float2 writes (a half-warp: 4 rows x 4 column pairs) and pass 2's float4 reads (a
  // quarter-warp: 8 consecutive groups of one row) then touch each bank once; with pitch BN + 4 and 8 consecutive
  // floats per thread both are 2-way bank conflicts
  const split = FP === BN + 8, H = BN / 2 + 4;
  // loop: thread tid (0 <= tid < TH) takes ids tid + i * TH, i.e. rows tid / CPR + i * TH / CPR and the same channels
  // each time (TH % CPR == 0): its row index, channels and addresses are set up once instead of divided out per id
  const fixed = f.loop && (BM * CPR) % TH === 0 && TH % CPR === 0;
  const edgeM = g.M % BM !== 0, edgeN = g.N % BN !== 0; // bounds checks only where a tile can stick out
  const T = QSTORAGE[g.out], st = (v: string) => storeExpr(g.out, v, g.yScale ?? 1, g.yZeroPoint ?? 0, v1);
  // 8-bit out: 8 channels requantized together (one slow-path branch), a Relu folded into the clamp
  const relu = g.activation === 'Relu';
  const pk = store8x8(g.out, 'vv', g.yScale ?? 1, g.yZeroPoint ?? 0, v1, relu, f.narrow);
  const qr = g.qresidual;
  // 8-bit residual: 8 bytes in one read, each channel's sum rounded to its own scale first (qresidualExpr)
  const res = qr ? `
    const uint2 rq = *(const uint2*)(${resAt(1)});${qresidual8(g, f.narrow) ?? `
    #pragma unroll
    for (int j = 0; j < 4; j++) {
      vv[j] = ${qresidualExpr(g, 'vv[j]', qresidualByte(qr, 'rq.x', 'j'))};
      vv[j + 4] = ${qresidualExpr(g, 'vv[j + 4]', qresidualByte(qr, 'rq.y', 'j'))};
    }`}` : !g.residual ? '' : g.residual === 'float16' ? `
    const uint4 rr = *(const uint4*)(${resAt(2)});
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
  // heads: the 8 channels go to their column group's output at [b, h, s, d] (contiguous: D % 8 == 0)
  const hd = g.heads;
  const headDst = hd ? `
    const int jg = n / ${hd.H * hd.D}, hc = n - jg * ${hd.H * hd.D}, hh_ = hc / ${hd.D}, dd = hc - hh_ * ${hd.D}, bb = m / ${hd.S}, ss = m - bb * ${hd.S};
    ${QSTORAGE[g.out]}* dst = ${Array.from({ length: hd.parts - 1 }, (_, k) => k + 1).reduceRight((acc, k) => `jg == ${k} ? outh${k} : ${acc}`, 'out')};
    const ${it} oh = ((${it})(bb * ${hd.H} + hh_) * ${hd.S} + ss) * ${hd.D} + dd;` : '';
  const dstOf = (s: string) => (hd ? s.replace(/\(out \+ o/g, '(dst + oh') : s);
  let out2 = '';
  if (g.out2) {
    const o2 = g.out2;
    const stored = g.out === 'float16' ? `
    float ww[8];
    #pragma unroll
    for (int j = 0; j < 8; j++) ww[j] = h2f((unsigned short)((hh[j >> 1] >> ((j & 1) * 16)) & 0xffff));` : `
    const float (&ww)[8] = vv;`;
    const pk2 = store8x8(o2.store, 'ww', o2.yScale, o2.yZeroPoint, v1, false, f.narrow);
    out2 = `${stored}${pk2 ? `
    *(uint2*)(out2 + o) = ${pk2};` : `
    unsigned s[8];
    #pragma unroll
    for (int j = 0; j < 8; j++) s[j] = (unsigned)(unsigned char)(${storeExpr(o2.store, 'ww[j]', o2.yScale, o2.yZeroPoint, v1)});
    *(uint2*)(out2 + o) = make_uint2(${pk4});`}`;
  }
  return `  __syncthreads(); // every warpgroup is done with the pipeline buffers (or the last tile's float tile)
  float* sf = (float*)(${smemAt(String(fOff))});
  #pragma unroll
  for (int b = 0; b < ${NT}; b++) {
    const int col = b * 8 + tig * 2, n = n0 + col;${edgeN ? `
    if (n >= ${g.N}) continue;` : ''}
    const float2 c = *(const float2*)(sc + n), d = *(const float2*)(sc + ${g.N} + n);
    #pragma unroll
    for (int h = 0; h < 2; h++)
      *(float2*)(sf + (wm * 16 + grp + h * 8) * ${FP} + ${split ? `b * 4 + (tig & 1) * 2 + (tig >> 1) * ${H}` : 'col'}) = make_float2(${cvt}(accum[0][b][2 * h]) * c.x + d.x, ${cvt}(accum[0][b][2 * h + 1]) * c.y + d.y);
  }
  __syncthreads();${fixed ? `
  const int r0 = tid / ${CPR}, q8 = (tid % ${CPR}) * 8, n = n0 + q8;
  #pragma unroll ${Math.min(4, (BM * CPR) / TH)}
  for (int i = 0; i < ${(BM * CPR) / TH}; i++) {
    const int r = r0 + i * ${TH / CPR}, m = m0 + r;` : `
  #pragma unroll ${(BM * CPR) % TH === 0 ? (BM * CPR) / TH : 1}
  for (int id = tid; id < ${BM * CPR}; id += ${TH}) {
    const int r = id / ${CPR}, q8 = (id % ${CPR}) * 8, m = m0 + r, n = n0 + q8;`}${edgeM || edgeN ? `
    if (${[edgeM ? `m >= ${g.M}` : '', edgeN ? `n >= ${g.N}` : ''].filter(Boolean).join(' || ')}) continue;` : ''}${hd ? '' : `
    const ${it} o = (${it})m * ${g.N} + n;`}
    const float4 p0 = *(const float4*)(sf + r * ${FP} + ${split ? 'q8 / 2' : 'q8'}), p1 = *(const float4*)(sf + r * ${FP} + ${split ? `q8 / 2 + ${H}` : 'q8 + 4'});
    float vv[8] = { p0.x, p0.y, p0.z, p0.w, p1.x, p1.y, p1.z, p1.w };${res}${activate}${headDst}${dstOf(put)}${out2}
  }`;
}

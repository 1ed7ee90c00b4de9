// Fused attention for kiln:Attention (fp16 / bf16): softmax(Q K^T * scale + mask) V in one kernel, flash style, so
// the [S, L] scores never go to device memory (the unfused plan writes them, reads them twice and writes P back).
// A block takes `warps` x 16 query rows of one leading index (batch, head), with `split` warps per 16 rows: each
// warp owns 16 rows and 1/split of every key tile (BN keys, staged in shared memory by cp.async two tiles deep), and
// the split warps' partial softmax states are merged through shared memory at the end. Short sequences give few warps
// per SM (BERT-base 8x128: 768 of them, ~6 per SM) and the kernel is latency-bound; a key split halves each warp's
// instructions but on BERT-base moved the kernel little (Nsight Compute 9.15 -> 8.86 us), so the shape is a timed
// tactic of the factory (ops.ts).
//   S = Q K^T on mma.sync m16n8k16 (Q fragments stay in registers for the whole walk, K fragments by ldmatrix),
//   scale + mask + online softmax in fp32 (exp2 domain), P repacked from the S accumulators straight into A
//   fragments (the m16n8 C layout is the A layout of the next product), O += P V (V fragments by ldmatrix.trans).
// K comes as [.., L, D] or, k_transposed, [.., D, L]: both are copied as stored and read by ldmatrix with or without
// .trans, so neither layout costs a transpose. Keys past L are zero-filled and scored -inf, query rows past S are
// computed on zeros and not stored. A row whose every score is -inf gives NaN, as the reference softmax does.
import {
  broadcastDims, broadcastStrides, ctype, finish, load, lit, offsetCode, prod, unsupported, type DevDType, type KernelSource,
} from './types.js';
import { KQ_HELPERS, storeExpr } from './quant.js';

export interface FusedAttentionArgs {
  /** Leading dims of Q, K, V and the output (e.g. [B, H]); one block row per flattened index. */
  lead: readonly number[];
  /** Query rows, key rows, head size of Q/K, head size of V. */
  S: number;
  L: number;
  D: number;
  Dv: number;
  dtype: 'float16' | 'bfloat16';
  /** K is stored [.., D, L] instead of [.., L, D]. */
  kTransposed: boolean;
  scale: number;
  /** Boolean (true = keep) or additive float mask, broadcastable to [...lead, S, L]. */
  mask?: { dtype: DevDType; dims: readonly number[] };
  /** Row groups per block, 16 query rows each: 1, 2, 4 or 8 (default by `fusedAttentionShape`). */
  warps?: number;
  /** Warps per 16 query rows, each taking 1/split of every key tile: 1, 2 or 4 (default by `fusedAttentionShape`). */
  split?: number;
  /**
   * kiln:QAttention's store: the output written as [B, S, H, Dv] (lead [B, H]: heads after positions, the layout the
   * output projection reads) when `headsLast`, and each value quantized per tensor as stored, i.e. rounded to fp16
   * first, then as kiln:QTranspose / QuantizeLinear quantize it (the same expression, so the same bytes).
   */
  quantized?: { headsLast: boolean; dtype: 'int8' | 'uint8'; scale: number; zeroPoint: number };
}

/** Keys per shared-memory tile. */
export const ATTN_BN = 64;
/** Head sizes up to this run fused: the O accumulators (Dv / 2 floats per thread) and Q fragments stay in registers. */
export const ATTN_MAX_HEAD = 128;

/** Why these shapes cannot run fused (the factory keeps the three-kernel plan then), or undefined when they can. */
export function fusedAttentionUnsupported(a: Pick<FusedAttentionArgs, 'S' | 'L' | 'D' | 'Dv' | 'dtype' | 'mask'> & { batch: number }): string | undefined {
  if (a.dtype !== 'float16' && a.dtype !== 'bfloat16') return `dtype ${a.dtype as string} (fused: float16, bfloat16)`;
  if (a.D % 16 || a.D < 16 || a.D > ATTN_MAX_HEAD) return `head size ${a.D} (fused: a multiple of 16 up to ${ATTN_MAX_HEAD})`;
  if (a.Dv % 16 || a.Dv < 16 || a.Dv > ATTN_MAX_HEAD) return `value head size ${a.Dv} (fused: a multiple of 16 up to ${ATTN_MAX_HEAD})`;
  if (a.S < 1 || a.L < 1) return 'empty attention';
  if (a.batch > 65535) return `${a.batch} heads in all (fused: at most 65535, one grid row each)`;
  if (a.mask && !['bool', 'float32', 'float16', 'bfloat16'].includes(a.mask.dtype)) return `mask dtype ${a.mask.dtype}`;
  return undefined;
}

/**
 * Row groups per block and key split: 4 row groups (64 query rows) unless that leaves the device short of blocks, then
 * fewer; keys split in two when there are at least two key tiles (the walk is the serial part).
 */
export function fusedAttentionShape(S: number, L: number, batch: number, sms = 132): { warps: number; split: number } {
  let warps = 1;
  for (const w of [4, 2]) if (Math.ceil(S / (16 * w)) * batch >= 2 * sms) { warps = w; break; }
  return { warps, split: L > ATTN_BN ? 2 : 1 };
}

/**
 * Dynamic shared memory of the kernel: two stages of a K tile and a V tile (rows padded by 16 bytes: no bank
 * conflicts), then two stages of the key tile's additive mask row (float); with a key split, at least the partial
 * states of the split warps (the tiles' space is reused for them once the walk is done).
 */
export function fusedAttentionSmem(D: number, Dv: number, kTransposed: boolean, warps = 1, split = 1): number {
  const k = kTransposed ? D * (ATTN_BN + 8) : ATTN_BN * (D + 8);
  const tiles = 2 * (k + ATTN_BN * (Dv + 8)) * 2 + 2 * ATTN_BN * 4;
  return Math.max(tiles, (split - 1) * warps * 32 * (Dv / 2 + 4) * 4);
}

/**
 * The kernel. Params: in 0 Q [...lead, S, D], in 1 K ([...lead, L, D], or [...lead, D, L] when kTransposed), in 2 V
 * [...lead, L, Dv], in 3 mask (when given), out 0 O [...lead, S, Dv], all of `dtype` but the mask.
 */
export function fusedAttention(a: FusedAttentionArgs): KernelSource {
  const batch = prod(a.lead);
  const why = fusedAttentionUnsupported({ ...a, batch });
  if (why) unsupported('fused attention', why, 'the unfused attention plan runs these shapes');
  const { S, L, D, Dv, kTransposed: kT } = a;
  const shape = fusedAttentionShape(S, L, batch);
  const W = a.warps ?? shape.warps, KS = a.split ?? shape.split;
  if (![1, 2, 4, 8].includes(W) || ![1, 2, 4].includes(KS) || W * KS > 16) unsupported('fused attention', `${W} row groups x ${KS} key splits (supported: 1, 2, 4, 8 x 1, 2, 4, at most 16 warps)`);
  const qo = a.quantized;
  if (qo && a.dtype !== 'float16') unsupported('fused attention', `a quantized output from ${a.dtype} (float16 only)`);
  if (qo?.headsLast && a.lead.length !== 2) unsupported('fused attention', `heads-last output with ${a.lead.length} leading dims (needs [B, H])`);
  const BM = 16 * W, BN = ATTN_BN, NT = W * KS * 32;
  const KB = BN / KS, JT = KB / 8; // keys and n-tiles of one warp in each key tile
  const KST = kT ? BN + 8 : D + 8, VST = Dv + 8; // shared row strides, halves
  const KSZ = kT ? D * KST : BN * KST, VSZ = BN * VST, STAGE = KSZ + VSZ;
  const tiles = Math.ceil(L / BN);
  const big = Math.max(batch * S * Math.max(D, Dv), batch * L * Math.max(D, Dv)) >= 2 ** 31;
  const it = big ? 'long long' : 'int';
  const mmaT = a.dtype === 'bfloat16' ? 'bf16' : 'f16';
  const LOG2E = 1.4426950408889634;

  // The mask: element offset of (lead index, query row, key) through broadcast strides. When it does not move with the
  // query row (BERT's [B, 1, 1, L]), or there is none but the last key tile has a tail, each key tile's additive row
  // (mask * log2(e), bool as 0 / -inf, -inf past L) is staged in shared memory with the tile: one shared load per score.
  let maskParam = '', maskLead = '', rowMask = '';
  let perRow: ((x: string, row: string, key: string) => string) | undefined;
  const tail = L % BN !== 0;
  let staged = tail;
  if (a.mask) {
    const full = [...a.lead, S, L];
    broadcastDims([a.mask.dims, full], 'fused attention mask');
    if (a.mask.dims.length > full.length) unsupported('fused attention', `mask of rank ${a.mask.dims.length} is larger than the scores' rank ${full.length}`);
    const st = broadcastStrides(a.mask.dims, full);
    const [sS, sL] = st.slice(-2);
    const mt = prod(a.mask.dims) < 2 ** 31 ? 'int' : 'long long';
    maskParam = `const ${ctype(a.mask.dtype)}* __restrict__ mask, `;
    maskLead = offsetCode('bh', a.lead, ['mo'], [st.slice(0, -2)], mt, 'lq');
    const md = a.mask.dtype;
    const at = (row: string, key: string) => `mask[mo + ${sS ? `(${mt})(${row}) * ${lit(sS)}` : '0'} + ${sL ? `(${mt})(${key}) * ${lit(sL)}` : '0'}]`;
    const add = (v: string) => (md === 'bool' ? `(${v} ? 0.0f : -K_INF)` : `${load(md, v)} * ${LOG2E}f`);
    if (sS === 0) {
      staged = true;
      rowMask = add(at('0', 'key'));
    } else {
      perRow = md === 'bool'
        ? (x, row, key) => `(${at(row, key)} ? ${x} : -K_INF)`
        : (x, row, key) => `(${x} + ${load(md, at(row, key))} * ${LOG2E}f)`;
    }
  }
  const maskCopy = staged ? `for (int i = tid; i < ${BN}; i += ${NT}) {
      const int key = j0 + i;
      smask[stage * ${BN} + i] = key < ${L} ? ${rowMask || '0.0f'} : -K_INF;
    }` : '';
  const score = (x: string, row: string) => {
    const v = perRow ? perRow(x, `min(${row}, ${S - 1})`, 'key') : x;
    if (staged) return `${v} + sm[kb + j * 8 + t4 * 2 + e]`;
    return perRow && tail ? `(key < ${L} ? ${v} : -K_INF)` : v;
  };
  const KSMEM = 2 * STAGE * 2; // the mask rows follow the two stages of tiles

  // Tile copies in 16-byte chunks: `rows` rows of `cpr` chunks. When the threads divide into whole rows, each thread
  // keeps one chunk column and steps rows by a constant (addresses are a base plus literals); else a flat loop.
  const copy = (rows: number, cpr: number, body: string) => (NT % cpr === 0
    ? `{
      const int c = (tid % ${cpr}) * 8, r0 = tid / ${cpr};
      #pragma unroll
      for (int n = 0; n < ${Math.ceil(rows / (NT / cpr))}; n++) {
        const int r = r0 + n * ${NT / cpr};
        ${rows % (NT / cpr) ? `if (r < ${rows}) ` : ''}{ ${body} }
      }
    }`
    : `for (int i = tid; i < ${rows * cpr}; i += ${NT}) {
      const int r = i / ${cpr}, c = (i - r * ${cpr}) * 8;
      ${body}
    }`);
  const guard = (cond: string) => (tail ? cond : 'true');
  // K tile: [L, D] rows are keys; [D, L] rows (k_transposed) are only 16-byte aligned when L % 8 == 0, else element-wise
  const kVec = !kT || L % 8 === 0;
  const kCopy = !kT
    ? copy(BN, D / 8, `const int key = j0 + r; const bool ok = ${guard(`key < ${L}`)};
        cp16(sk + (r * ${KST} + c) * 2, ok ? kg + (${it})key * ${D} + c : kg, ok);`)
    : kVec
      ? copy(D, BN / 8, `const int key = j0 + c; const bool ok = ${guard(`key < ${L}`)};
        cp16(sk + (r * ${KST} + c) * 2, ok ? kg + (${it})r * ${L} + key : kg, ok);`)
      : `for (int i = tid; i < ${D * BN}; i += ${NT}) {
      const int r = i / ${BN}, c = i - r * ${BN}, key = j0 + c;
      skp[r * ${KST} + c] = key < ${L} ? kg[(${it})r * ${L} + key] : (unsigned short)0;
    }`;
  const vCopy = copy(BN, Dv / 8, `const int key = j0 + r; const bool ok = ${guard(`key < ${L}`)};
        cp16(sv + (r * ${VST} + c) * 2, ok ? vg + (${it})key * ${Dv} + c : vg, ok);`);
  // ldmatrix.x4 addresses: lane l gives row (l & 7) of matrix l >> 3; matrices 0/1 are k 0-7 / 8-15 of n-tile 0, 2/3 of n-tile 1
  const kAddr = kT
    ? `sk + ((kc * 16 + (mi & 1) * 8 + mr) * ${KST} + kb + np * 16 + (mi >> 1) * 8) * 2`
    : `sk + ((kb + np * 16 + (mi >> 1) * 8 + mr) * ${KST} + kc * 16 + (mi & 1) * 8) * 2`;
  const vAddr = `sv + ((kb + kk * 16 + (mi & 1) * 8 + mr) * ${VST} + np * 16 + (mi >> 1) * 8) * 2`;
  // the split warps' states (m, l per row, then the O fragments), lane-minor: [split - 1][row group][value][lane]
  const PV = Dv / 2 + 4;
  const merge = KS === 1 ? '' : `
  float* const part = (float*)smem + (${it === 'int' ? '' : '(long long)'}rg * ${PV * 32}) + lane;
  if (ks > 0) {
    float* p = part + (ks - 1) * ${W * PV * 32};
    p[0] = m0; p[32] = m1; p[64] = l0; p[96] = l1;
    #pragma unroll
    for (int j = 0; j < ${Dv / 8}; j++) {
      #pragma unroll
      for (int e = 0; e < 4; e++) p[(4 + j * 4 + e) * 32] = acc[j][e];
    }
  }
  __syncthreads();
  if (ks > 0) return;
  #pragma unroll
  for (int w = 0; w < ${KS - 1}; w++) {
    const float* p = part + w * ${W * PV * 32};
    const float mb0 = p[0], mb1 = p[32];
    const float n0 = fmaxf(m0, mb0), n1 = fmaxf(m1, mb1);
    const float u0 = n0 == -K_INF ? 0.0f : n0, u1 = n1 == -K_INF ? 0.0f : n1;
    const float fa0 = exp2f(m0 - u0), fb0 = exp2f(mb0 - u0), fa1 = exp2f(m1 - u1), fb1 = exp2f(mb1 - u1);
    l0 = l0 * fa0 + p[64] * fb0; l1 = l1 * fa1 + p[96] * fb1;
    m0 = n0; m1 = n1;
    #pragma unroll
    for (int j = 0; j < ${Dv / 8}; j++) {
      acc[j][0] = acc[j][0] * fa0 + p[(4 + j * 4) * 32] * fb0;
      acc[j][1] = acc[j][1] * fa0 + p[(5 + j * 4) * 32] * fb0;
      acc[j][2] = acc[j][2] * fa1 + p[(6 + j * 4) * 32] * fb1;
      acc[j][3] = acc[j][3] * fa1 + p[(7 + j * 4) * 32] * fb1;
    }
  }`;

  const body = `${qo ? `${KQ_HELPERS}\n` : ''}
__device__ __forceinline__ void ldsm4(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\\n" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void ldsm4t(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\\n" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void cp16(unsigned dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\\n" :: "r"(dst), "l"(src), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
  unsigned r; asm("cvt.rn.${mmaT}x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
}
__device__ __forceinline__ void mma16816(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.${mmaT}.${mmaT}.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\\n"
    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
extern "C" __global__ void __launch_bounds__(${NT}) KNAME(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k, const unsigned short* __restrict__ v, ${maskParam}${qo ? 'unsigned char' : 'unsigned short'}* __restrict__ o) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int mi = lane >> 3, mr = lane & 7;
  // warp = ks * W + rg: row group rg (16 query rows), key part ks (keys kb .. kb + ${KB} of every tile)
  const int rg = warp % ${W}, ks = warp / ${W}, kb = ks * ${KB}; (void)ks;
  const ${it} bh = blockIdx.y;
  const int q0 = blockIdx.x * ${BM} + rg * 16;
  const unsigned short* kg = k + bh * ${lit(L * D)};
  const unsigned short* vg = v + bh * ${lit(L * Dv)};
  ${kVec ? '' : 'unsigned short* const skb = (unsigned short*)smem;'}
  const unsigned sbase = (unsigned)__cvta_generic_to_shared(smem);
  ${staged ? `float* const smask = (float*)(smem + ${KSMEM});` : ''}
  ${maskLead}
  float acc[${Dv / 8}][4];
  #pragma unroll
  for (int j = 0; j < ${Dv / 8}; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
  float m0 = -K_INF, m1 = -K_INF, l0 = 0.0f, l1 = 0.0f;
  auto load_tile = [&](int tile, int stage) {
    const int j0 = tile * ${BN};
    const unsigned sk = sbase + stage * ${STAGE * 2}, sv = sk + ${KSZ * 2};
    ${kVec ? '' : `unsigned short* const skp = skb + stage * ${STAGE}; (void)sk;`}
    ${kCopy}
    ${vCopy}
    ${maskCopy}
  };
  load_tile(0, 0);
  asm volatile("cp.async.commit_group;\\n");
  // Q fragments (rows q0 + g and q0 + g + 8, columns 16 kc + 2 t4 (+8)), zeros past S; loaded while tile 0 is in flight
  unsigned qf[${D / 16}][4];
  {
    const unsigned short* qg = q + bh * ${lit(S * D)};
    const int r0 = q0 + g, r1 = r0 + 8;
    #pragma unroll
    for (int kc = 0; kc < ${D / 16}; kc++) {
      const int c = kc * 16 + t4 * 2;
      qf[kc][0] = r0 < ${S} ? *(const unsigned*)(qg + (${it})r0 * ${D} + c) : 0u;
      qf[kc][1] = r1 < ${S} ? *(const unsigned*)(qg + (${it})r1 * ${D} + c) : 0u;
      qf[kc][2] = r0 < ${S} ? *(const unsigned*)(qg + (${it})r0 * ${D} + c + 8) : 0u;
      qf[kc][3] = r1 < ${S} ? *(const unsigned*)(qg + (${it})r1 * ${D} + c + 8) : 0u;
    }
  }
  for (int tile = 0; tile < ${tiles}; tile++) {
    if (tile + 1 < ${tiles}) load_tile(tile + 1, (tile + 1) & 1);
    asm volatile("cp.async.commit_group;\\n");
    asm volatile("cp.async.wait_group 1;\\n");
    __syncthreads();
    const int j0 = tile * ${BN}; (void)j0;
    const unsigned sk = sbase + (tile & 1) * ${STAGE * 2}, sv = sk + ${KSZ * 2};
    ${staged ? `const float* sm = smask + (tile & 1) * ${BN};` : ''}
    float s[${JT}][4];
    #pragma unroll
    for (int j = 0; j < ${JT}; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
    #pragma unroll
    for (int kc = 0; kc < ${D / 16}; kc++) {
      #pragma unroll
      for (int np = 0; np < ${JT / 2}; np++) {
        unsigned b0, b1, b2, b3;
        ${kT ? 'ldsm4t' : 'ldsm4'}(${kAddr}, b0, b1, b2, b3);
        mma16816(s[2 * np], qf[kc][0], qf[kc][1], qf[kc][2], qf[kc][3], b0, b1);
        mma16816(s[2 * np + 1], qf[kc][0], qf[kc][1], qf[kc][2], qf[kc][3], b2, b3);
      }
    }
    // scores in the exp2 domain: x * scale * log2(e) + mask * log2(e); keys past L are -inf
    float mx0 = -K_INF, mx1 = -K_INF;
    #pragma unroll
    for (int j = 0; j < ${JT}; j++) {
      #pragma unroll
      for (int e = 0; e < 2; e++) {
        const int key = j0 + kb + j * 8 + t4 * 2 + e; (void)key;
        const float x0 = ${score(`s[j][e] * ${a.scale * LOG2E}f`, 'q0 + g')};
        const float x1 = ${score(`s[j][2 + e] * ${a.scale * LOG2E}f`, 'q0 + g + 8')};
        s[j][e] = x0; s[j][2 + e] = x1;
        mx0 = fmaxf(mx0, x0); mx1 = fmaxf(mx1, x1);
      }
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1)); mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1)); mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    // a row with no finite score yet subtracts 0, so exp2(-inf) = 0 instead of exp2(-inf + inf) = NaN
    const float u0 = n0 == -K_INF ? 0.0f : n0, u1 = n1 == -K_INF ? 0.0f : n1;
    const float al0 = exp2f(m0 - u0), al1 = exp2f(m1 - u1);
    m0 = n0; m1 = n1;
    float ps0 = 0.0f, ps1 = 0.0f;
    #pragma unroll
    for (int j = 0; j < ${JT}; j++) {
      s[j][0] = exp2f(s[j][0] - u0); s[j][1] = exp2f(s[j][1] - u0);
      s[j][2] = exp2f(s[j][2] - u1); s[j][3] = exp2f(s[j][3] - u1);
      ps0 += s[j][0] + s[j][1]; ps1 += s[j][2] + s[j][3];
    }
    l0 = l0 * al0 + ps0; l1 = l1 * al1 + ps1;
    #pragma unroll
    for (int j = 0; j < ${Dv / 8}; j++) { acc[j][0] *= al0; acc[j][1] *= al0; acc[j][2] *= al1; acc[j][3] *= al1; }
    #pragma unroll
    for (int kk = 0; kk < ${JT / 2}; kk++) {
      const unsigned p0 = pack2(s[2 * kk][0], s[2 * kk][1]), p1 = pack2(s[2 * kk][2], s[2 * kk][3]);
      const unsigned p2 = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]), p3 = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      #pragma unroll
      for (int np = 0; np < ${Dv / 16}; np++) {
        unsigned b0, b1, b2, b3;
        ldsm4t(${vAddr}, b0, b1, b2, b3);
        mma16816(acc[2 * np], p0, p1, p2, p3, b0, b1);
        mma16816(acc[2 * np + 1], p0, p1, p2, p3, b2, b3);
      }
    }
    __syncthreads();
  }
  asm volatile("cp.async.wait_group 0;\\n");
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1); l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1); l1 += __shfl_xor_sync(0xffffffffu, l1, 2);${merge}
  const float i0 = 1.0f / l0, i1 = 1.0f / l1;
  ${qo ? quantizedStore(qo, a.lead, S, Dv, it) : `unsigned short* og = o + bh * ${lit(S * Dv)};
  const int r0 = q0 + g, r1 = r0 + 8;
  #pragma unroll
  for (int j = 0; j < ${Dv / 8}; j++) {
    const int c = j * 8 + t4 * 2;
    if (r0 < ${S}) *(unsigned*)(og + (${it})r0 * ${Dv} + c) = pack2(acc[j][0] * i0, acc[j][1] * i0);
    if (r1 < ${S}) *(unsigned*)(og + (${it})r1 * ${Dv} + c) = pack2(acc[j][2] * i1, acc[j][3] * i1);
  }`}
}`;
  const params: KernelSource['params'] = [{ kind: 'in', index: 0 }, { kind: 'in', index: 1 }, { kind: 'in', index: 2 }, ...(a.mask ? [{ kind: 'in' as const, index: 3 }] : []), { kind: 'out', index: 0 }];
  return finish(qo ? `kiln_qattn_${qo.dtype}` : 'kiln_attn_fused', body, { grid: [Math.ceil(S / BM), batch, 1], block: [NT, 1, 1], sharedBytes: fusedAttentionSmem(D, Dv, kT, W, KS), params });
}

/**
 * The quantized store: each pair of outputs rounded to fp16 as the float kernel stores them, then each value quantized
 * (storeExpr: QuantizeLinear's rounding) and the pair written as two bytes, at [b, s, h, d] when heads-last.
 */
function quantizedStore(q: NonNullable<FusedAttentionArgs['quantized']>, lead: readonly number[], S: number, Dv: number, it: string): string {
  const H = q.headsLast ? lead[1] : 1, rs = H * Dv; // row stride of the output, bytes
  const byte = (h: string) => `(unsigned)(unsigned char)${storeExpr(q.dtype, `h2f((unsigned short)(${h}))`, q.scale, q.zeroPoint)}`;
  const pair = (v0: string, v1: string) => `{ const unsigned h = pack2(${v0}, ${v1}); const unsigned short b = (unsigned short)(${byte('h & 0xffffu')} | (${byte('h >> 16')} << 8)); `;
  const base = q.headsLast ? `(bh / ${H}) * ${lit(S * rs)} + (bh % ${H}) * ${Dv}` : `bh * ${lit(S * Dv)}`;
  return `unsigned char* og = o + ${base};
  const int r0 = q0 + g, r1 = r0 + 8;
  #pragma unroll
  for (int j = 0; j < ${Dv / 8}; j++) {
    const int c = j * 8 + t4 * 2;
    if (r0 < ${S}) ${pair('acc[j][0] * i0', 'acc[j][1] * i0')}*(unsigned short*)(og + (${it})r0 * ${rs} + c) = b; }
    if (r1 < ${S}) ${pair('acc[j][2] * i1', 'acc[j][3] * i1')}*(unsigned short*)(og + (${it})r1 * ${rs} + c) = b; }
  }`;
}

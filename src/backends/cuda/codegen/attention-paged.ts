// Paged attention for the LLM runtime (src/llm/attention-cuda.ts): three kernels over a KV cache stored in fixed-size
// blocks, one cache per layer laid out [block][slot in block][kv head][headDim]:
// - `write`: the step's new k/v rows (fp32, or the engine's fp16/bf16) into their cache slots (slots given per row), converted to the cache type;
// - `decode`: one query token per sequence; a block per (sequence, head), its warps split the keys and combine their
//   online-softmax partials at the end (where the head size allows, 16-byte loads by lane groups, and the kernel
//   also stores the step's new k/v, so a step of decodes needs no `write`);
// - `prefill`: flash-style, a block per (query tile of a sequence, head): each warp owns one query row, key/value tiles
//   of 32 are staged in shared memory once for the whole query tile, causal masking per row, online softmax.
// Grouped-query heads read kv head h / (numHeads / numKvHeads). Math in fp32. Launch metadata (per-sequence rows,
// context lengths and block tables) is one int32 buffer written per step; see `PagedMeta` for its layout.
import { ctype, finish, load, sizeOf, store, unsupported, type DevDType, type KernelSource } from './types.js';

export interface PagedAttentionShape {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  blockSize: number;
  scale: number;
  /** Cache element type: float32 (for checks), float16 or bfloat16. */
  cacheDtype: DevDType;
  /** Element type of the q/k/v rows read and the output rows written (default float32). */
  rowDtype?: DevDType;
}

/**
 * Offsets (in int32 elements) into the step's metadata buffer, passed as kernel parameters:
 * seqs at `seqOff`: 4 ints per sequence (first row, new tokens, tokens already cached, offset of its block table);
 * tables at `tabOff` + that offset; `decOff`: the decode sequences' indices; `tileOff`: 2 ints per prefill query tile
 * (sequence index, first new token of the tile); the write kernel takes the slot of every row at `slotOff` (-1: a row it leaves alone).
 */
export interface PagedKernels {
  write: KernelSource;
  decode: KernelSource;
  /**
   * The decode kernel is the vectorized one, whose parameters also take the step's k/v rows and `slotOff`: it reads
   * each sequence's new key and value from them and, with its last parameter set, writes them into the cache itself,
   * so a step of decodes only needs no `write` launch.
   */
  decodeWrites: boolean;
  prefill: KernelSource;
  /** Query rows per prefill tile (one warp each). */
  queryTile: number;
}

const DECODE_WARPS = 4;
/** Warps of the vectorized decode kernel: its keys are split across them. */
const VDECODE_WARPS = 8;
const QUERY_TILE = 8;

export function pagedAttentionKernels(s: PagedAttentionShape): PagedKernels {
  const { numHeads: H, numKvHeads: KVH, headDim: HD, blockSize: BS, cacheDtype: ct, rowDtype: rt = 'float32' } = s;
  if (!Number.isInteger(HD) || HD < 1 || HD > 128) unsupported('paged attention', `head size ${HD} (supported: up to 128)`, 'use the cpu provider for this model');
  if (H % KVH !== 0) unsupported('paged attention', `${H} heads are not a multiple of ${KVH} kv heads`);
  if (!['float32', 'float16', 'bfloat16'].includes(ct)) unsupported('paged attention', `cache type ${ct}`, 'use float32, float16 or bfloat16');
  if (!['float32', 'float16', 'bfloat16'].includes(rt)) unsupported('paged attention', `row type ${rt}`, 'use float32, float16 or bfloat16');
  const R = ctype(rt), ldr = (v: string) => load(rt, v), str = (v: string) => store(rt, v);
  const C = ctype(ct), DPL = Math.ceil(HD / 32), KW = KVH * HD, QW = H * HD;
  const consts = `constexpr int HD = ${HD}, BS = ${BS}, KW = ${KW}, QW = ${QW}, GROUP = ${H / KVH};
constexpr float SCALE = ${s.scale.toPrecision(9)}f;
__device__ __forceinline__ long long slot_of(const int* table, int p) { return (long long)table[p / BS] * BS + p % BS; }`;
  const ld = (v: string) => load(ct, v);

  const write = finish('kiln_paged_write', `constexpr long long KW = ${KW};
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${R}* k, const ${R}* v, ${C}* kc, ${C}* vc, const int* meta, long long slotOff, long long rows) {
  const int* slots = meta + slotOff;
  const long long n = rows * KW;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / KW, e = i - r * KW;
    if (slots[r] < 0) continue;
    const long long dst = (long long)slots[r] * KW + e;
    kc[dst] = ${store(ct, ldr('k[i]'))};
    vc[dst] = ${store(ct, ldr('v[i]'))};
  }
}`, { grid: [1, 1, 1], block: [256, 1, 1], sharedBytes: 0, params: [] });

  // head sizes whose rows split into 16-byte pieces over a power-of-two lane group take the vectorized decode
  const vec = 16 / sizeOf(ct), lanesPerKey = HD / vec;
  const decodeWrites = HD % vec === 0 && 32 % lanesPerKey === 0;
  const decode = decodeWrites ? vectorDecode(consts, C, R, ct, rt, vec, H) : finish('kiln_paged_decode', `${consts}
constexpr int NW = ${DECODE_WARPS}, DPL = ${DPL};
extern "C" __global__ void __launch_bounds__(NW * 32) KNAME(const ${R}* q, const ${C}* kc, const ${C}* vc, ${R}* out, const int* meta,
    long long seqOff, long long tabOff, long long decOff) {
  const int* si = meta + seqOff + 4 * meta[decOff + blockIdx.x];
  const long long row = si[0];
  const int len = si[2] + 1;
  const int* table = meta + tabOff + si[3];
  const int h = blockIdx.y, kvh = h / GROUP;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __shared__ float qs[HD];
  __shared__ float ms[NW], ls[NW], accs[NW][HD];
  for (int d = threadIdx.x; d < HD; d += blockDim.x) qs[d] = ${ldr('q[row * QW + h * HD + d]')} * SCALE;
  __syncthreads();
  float m = -K_INF, l = 0.0f, acc[DPL];
  #pragma unroll
  for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
  for (int base = warp * 32; base < len; base += NW * 32) {
    const int p = base + lane;
    float sc = -K_INF;
    if (p < len) {
      const ${C}* kr = kc + slot_of(table, p) * KW + kvh * HD;
      float dot = 0.0f;
      #pragma unroll 8
      for (int d = 0; d < HD; d++) dot += qs[d] * ${ld('kr[d]')};
      sc = dot;
    }
    const float mn = fmaxf(m, warp_max(sc));
    const float corr = expf(m - mn);
    const float e = p < len ? expf(sc - mn) : 0.0f;
    l = l * corr + warp_sum(e);
    #pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] *= corr;
    const int cnt = min(32, len - base);
    for (int j = 0; j < cnt; j++) {
      const float pj = __shfl_sync(0xffffffffu, e, j);
      const ${C}* vr = vc + slot_of(table, base + j) * KW + kvh * HD;
      #pragma unroll
      for (int i = 0; i < DPL; i++) if (lane + 32 * i < HD) acc[i] += pj * ${ld('vr[lane + 32 * i]')};
    }
    m = mn;
  }
  if (lane == 0) { ms[warp] = m; ls[warp] = l; }
  #pragma unroll
  for (int i = 0; i < DPL; i++) if (lane + 32 * i < HD) accs[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  if (warp != 0) return;
  float M = -K_INF;
  for (int w = 0; w < NW; w++) M = fmaxf(M, ms[w]);
  float L = 0.0f, f[NW];
  for (int w = 0; w < NW; w++) { f[w] = ms[w] == -K_INF ? 0.0f : expf(ms[w] - M); L += ls[w] * f[w]; }
  #pragma unroll
  for (int i = 0; i < DPL; i++) {
    if (lane + 32 * i >= HD) break;
    float a = 0.0f;
    for (int w = 0; w < NW; w++) a += accs[w][lane + 32 * i] * f[w];
    out[row * QW + h * HD + lane + 32 * i] = ${str('a / L')};
  }
}`, { grid: [1, H, 1], block: [DECODE_WARPS * 32, 1, 1], sharedBytes: 0, params: [] });

  const prefill = finish('kiln_paged_prefill', `${consts}
constexpr int NW = ${QUERY_TILE}, DPL = ${DPL};
extern "C" __global__ void __launch_bounds__(NW * 32) KNAME(const ${R}* q, const ${C}* kc, const ${C}* vc, ${R}* out, const int* meta,
    long long seqOff, long long tabOff, long long tileOff) {
  const int* tile = meta + tileOff + 2 * blockIdx.x;
  const int* si = meta + seqOff + 4 * tile[0];
  const int t0 = tile[1], rowStart = si[0], ntok = si[1], ctx = si[2];
  const int* table = meta + tabOff + si[3];
  const int h = blockIdx.y, kvh = h / GROUP;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int ti = t0 + warp;
  const bool active = ti < ntok;
  const int pos = ctx + ti;
  const int last = ctx + min(t0 + NW, ntok) - 1;
  __shared__ float qs[NW][HD];
  __shared__ float ks[32][HD + 1];
  __shared__ float vs[32][HD];
  const long long row = (long long)rowStart + ti;
  if (active) for (int d = lane; d < HD; d += 32) qs[warp][d] = ${ldr('q[row * QW + h * HD + d]')} * SCALE;
  float m = -K_INF, l = 0.0f, acc[DPL];
  #pragma unroll
  for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
  for (int base = 0; base <= last; base += 32) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < 32 * HD; idx += NW * 32) {
      const int j = idx / HD, d = idx - j * HD, p = base + j;
      if (p <= last) {
        const long long off = slot_of(table, p) * KW + kvh * HD + d;
        ks[j][d] = ${ld('kc[off]')};
        vs[j][d] = ${ld('vc[off]')};
      }
    }
    __syncthreads();
    if (!active || base > pos) continue;
    const int p = base + lane;
    float sc = -K_INF;
    if (p <= pos) {
      float dot = 0.0f;
      #pragma unroll 8
      for (int d = 0; d < HD; d++) dot += qs[warp][d] * ks[lane][d];
      sc = dot;
    }
    const float mn = fmaxf(m, warp_max(sc));
    const float corr = expf(m - mn);
    const float e = p <= pos ? expf(sc - mn) : 0.0f;
    l = l * corr + warp_sum(e);
    #pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] *= corr;
    const int cnt = min(32, pos - base + 1);
    for (int j = 0; j < cnt; j++) {
      const float pj = __shfl_sync(0xffffffffu, e, j);
      #pragma unroll
      for (int i = 0; i < DPL; i++) if (lane + 32 * i < HD) acc[i] += pj * vs[j][lane + 32 * i];
    }
    m = mn;
  }
  if (!active) return;
  #pragma unroll
  for (int i = 0; i < DPL; i++) if (lane + 32 * i < HD) out[row * QW + h * HD + lane + 32 * i] = ${str('acc[i] / l')};
}`, { grid: [1, H, 1], block: [QUERY_TILE * 32, 1, 1], sharedBytes: 0, params: [] });

  return { write, decode, decodeWrites, prefill, queryTile: QUERY_TILE };
}

/**
 * Decode with 16-byte loads: a group of HD / VEC lanes holds one key's row (VEC elements each), so a warp scores
 * 32 / group keys at once and reads K and V rows whole and coalesced; the groups' and warps' online-softmax partials
 * are combined at the end. Keys of the block are split across its warps.
 */
function vectorDecode(consts: string, C: string, R: string, ct: DevDType, rt: DevDType, vec: number, heads: number): KernelSource {
  const ld = (v: string) => load(ct, v);
  return finish('kiln_paged_decode_v', `${consts}
constexpr int NW = ${VDECODE_WARPS}, VEC = ${vec}, LK = HD / VEC, KPI = 32 / LK;
extern "C" __global__ void __launch_bounds__(NW * 32) KNAME(const ${R}* q, const ${R}* kin, const ${R}* vin, ${C}* kc, ${C}* vc, ${R}* out, const int* meta,
    long long seqOff, long long tabOff, long long decOff, long long slotOff, long long write) {
  const int* si = meta + seqOff + 4 * meta[decOff + blockIdx.x];
  const long long row = si[0];
  const int len = si[2] + 1;
  const int* table = meta + tabOff + si[3];
  const int h = blockIdx.y, kvh = h / GROUP;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane % LK, sub = lane / LK;
  const long long fresh = row * KW + kvh * HD;
  // the new token's key and value: into the cache by one block of the kv head's group (when no write kernel ran)
  if (write && h % GROUP == 0) {
    const long long dst = (long long)meta[slotOff + row] * KW + kvh * HD;
    for (int d = threadIdx.x; d < HD; d += NW * 32) {
      kc[dst + d] = ${store(ct, load(rt, 'kin[fresh + d]'))};
      vc[dst + d] = ${store(ct, load(rt, 'vin[fresh + d]'))};
    }
  }
  float qv[VEC], acc[VEC];
  #pragma unroll
  for (int i = 0; i < VEC; i++) { qv[i] = ${load(rt, 'q[row * QW + h * HD + g * VEC + i]')} * SCALE; acc[i] = 0.0f; }
  float m = -K_INF, l = 0.0f;
  #pragma unroll 2
  for (int base = warp * KPI; base < len; base += NW * KPI) {
    const int p = base + sub;
    const bool ok = p < len;
    float kf[VEC], vf[VEC];
    if (ok && p == len - 1) {
      // this step's own row (another block may be writing it to the cache), rounded as the cache would hold it
      #pragma unroll
      for (int i = 0; i < VEC; i++) {
        kf[i] = ${ld(store(ct, load(rt, 'kin[fresh + g * VEC + i]')))};
        vf[i] = ${ld(store(ct, load(rt, 'vin[fresh + g * VEC + i]')))};
      }
    } else {
      uint4 kr = make_uint4(0u, 0u, 0u, 0u), vr = kr;
      if (ok) {
        const long long off = slot_of(table, p) * KW + kvh * HD + g * VEC;
        kr = *reinterpret_cast<const uint4*>(kc + off);
        vr = *reinterpret_cast<const uint4*>(vc + off);
      }
      const ${C}* ke = reinterpret_cast<const ${C}*>(&kr);
      const ${C}* ve = reinterpret_cast<const ${C}*>(&vr);
      #pragma unroll
      for (int i = 0; i < VEC; i++) { kf[i] = ${ld('ke[i]')}; vf[i] = ${ld('ve[i]')}; }
    }
    float dot = 0.0f;
    #pragma unroll
    for (int i = 0; i < VEC; i++) dot += qv[i] * kf[i];
    #pragma unroll
    for (int o = LK / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    // the group of sub 0 always holds a key (base < len), so the warp's maximum is finite
    const float mn = fmaxf(m, warp_max(ok ? dot : -K_INF));
    const float corr = expf(m - mn);
    const float e = ok ? expf(dot - mn) : 0.0f;
    l = l * corr + e;
    #pragma unroll
    for (int i = 0; i < VEC; i++) acc[i] = acc[i] * corr + e * vf[i];
    m = mn;
  }
  // lanes with the same g hold partials over different keys
  #pragma unroll
  for (int o = LK; o < 32; o <<= 1) {
    l += __shfl_xor_sync(0xffffffffu, l, o);
    #pragma unroll
    for (int i = 0; i < VEC; i++) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], o);
  }
  __shared__ float ms[NW], ls[NW], accs[NW][HD];
  if (lane == 0) { ms[warp] = m; ls[warp] = l; }
  if (sub == 0) {
    #pragma unroll
    for (int i = 0; i < VEC; i++) accs[warp][g * VEC + i] = acc[i];
  }
  __syncthreads();
  float M = -K_INF;
  #pragma unroll
  for (int w = 0; w < NW; w++) M = fmaxf(M, ms[w]);
  for (int d = threadIdx.x; d < HD; d += NW * 32) {
    float L = 0.0f, a = 0.0f;
    #pragma unroll
    for (int w = 0; w < NW; w++) {
      const float f = ms[w] == -K_INF ? 0.0f : expf(ms[w] - M);
      L += ls[w] * f;
      a += accs[w][d] * f;
    }
    out[row * QW + h * HD + d] = ${store(rt, 'a / L')};
  }
}`, { grid: [1, heads, 1], block: [VDECODE_WARPS * 32, 1, 1], sharedBytes: 0, params: [] });
}

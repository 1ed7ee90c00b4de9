// Paged attention for the LLM runtime (src/llm/attention-cuda.ts): three kernels over a KV cache stored in fixed-size
// blocks, one cache per layer laid out [block][slot in block][kv head][headDim]:
// - `write`: the step's new k/v rows (fp32) into their cache slots (slots given per row), converted to the cache type;
// - `decode`: one query token per sequence; a block per (sequence, head), its warps split the keys and combine their
//   online-softmax partials at the end;
// - `prefill`: flash-style, a block per (query tile of a sequence, head): each warp owns one query row, key/value tiles
//   of 32 are staged in shared memory once for the whole query tile, causal masking per row, online softmax.
// Grouped-query heads read kv head h / (numHeads / numKvHeads). Math in fp32. Launch metadata (per-sequence rows,
// context lengths and block tables) is one int32 buffer written per step; see `PagedMeta` for its layout.
import { ctype, finish, load, store, unsupported, type DevDType, type KernelSource } from './types.js';

export interface PagedAttentionShape {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  blockSize: number;
  scale: number;
  /** Cache element type: float32 (for checks), float16 or bfloat16. */
  cacheDtype: DevDType;
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
  prefill: KernelSource;
  /** Query rows per prefill tile (one warp each). */
  queryTile: number;
}

const DECODE_WARPS = 4;
const QUERY_TILE = 8;

export function pagedAttentionKernels(s: PagedAttentionShape): PagedKernels {
  const { numHeads: H, numKvHeads: KVH, headDim: HD, blockSize: BS, cacheDtype: ct } = s;
  if (!Number.isInteger(HD) || HD < 1 || HD > 128) unsupported('paged attention', `head size ${HD} (supported: up to 128)`, 'use the cpu provider for this model');
  if (H % KVH !== 0) unsupported('paged attention', `${H} heads are not a multiple of ${KVH} kv heads`);
  if (!['float32', 'float16', 'bfloat16'].includes(ct)) unsupported('paged attention', `cache type ${ct}`, 'use float32, float16 or bfloat16');
  const C = ctype(ct), DPL = Math.ceil(HD / 32), KW = KVH * HD, QW = H * HD;
  const consts = `constexpr int HD = ${HD}, BS = ${BS}, KW = ${KW}, QW = ${QW}, GROUP = ${H / KVH}, DPL = ${DPL};
constexpr float SCALE = ${s.scale.toPrecision(9)}f;
__device__ __forceinline__ long long slot_of(const int* table, int p) { return (long long)table[p / BS] * BS + p % BS; }`;
  const ld = (v: string) => load(ct, v);

  const write = finish('kiln_paged_write', `constexpr long long KW = ${KW};
extern "C" __global__ void __launch_bounds__(256) KNAME(const float* k, const float* v, ${C}* kc, ${C}* vc, const int* meta, long long slotOff, long long rows) {
  const int* slots = meta + slotOff;
  const long long n = rows * KW;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / KW, e = i - r * KW;
    if (slots[r] < 0) continue;
    const long long dst = (long long)slots[r] * KW + e;
    kc[dst] = ${store(ct, 'k[i]')};
    vc[dst] = ${store(ct, 'v[i]')};
  }
}`, { grid: [1, 1, 1], block: [256, 1, 1], sharedBytes: 0, params: [] });

  const decode = finish('kiln_paged_decode', `${consts}
constexpr int NW = ${DECODE_WARPS};
extern "C" __global__ void __launch_bounds__(NW * 32) KNAME(const float* q, const ${C}* kc, const ${C}* vc, float* out, const int* meta,
    long long seqOff, long long tabOff, long long decOff) {
  const int* si = meta + seqOff + 4 * meta[decOff + blockIdx.x];
  const long long row = si[0];
  const int len = si[2] + 1;
  const int* table = meta + tabOff + si[3];
  const int h = blockIdx.y, kvh = h / GROUP;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __shared__ float qs[HD];
  __shared__ float ms[NW], ls[NW], accs[NW][HD];
  for (int d = threadIdx.x; d < HD; d += blockDim.x) qs[d] = q[row * QW + h * HD + d] * SCALE;
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
    out[row * QW + h * HD + lane + 32 * i] = a / L;
  }
}`, { grid: [1, H, 1], block: [DECODE_WARPS * 32, 1, 1], sharedBytes: 0, params: [] });

  const prefill = finish('kiln_paged_prefill', `${consts}
constexpr int NW = ${QUERY_TILE};
extern "C" __global__ void __launch_bounds__(NW * 32) KNAME(const float* q, const ${C}* kc, const ${C}* vc, float* out, const int* meta,
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
  if (active) for (int d = lane; d < HD; d += 32) qs[warp][d] = q[row * QW + h * HD + d] * SCALE;
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
  for (int i = 0; i < DPL; i++) if (lane + 32 * i < HD) out[row * QW + h * HD + lane + 32 * i] = acc[i] / l;
}`, { grid: [1, H, 1], block: [QUERY_TILE * 32, 1, 1], sharedBytes: 0, params: [] });

  return { write, decode, prefill, queryTile: QUERY_TILE };
}

// The LLM GPU step's own small kernels (src/llm/step-cuda.ts): gathering the rows that need logits, and greedy
// token choice on the device so a step copies back one int32 per sequence instead of a row of logits.
import { finish } from '../backends/cuda/codegen/types.js';

/** dst[r, :] = src[sel[r], :] over rows of `width` 4-byte words; a block per output row. */
export const gatherKernel = finish('kiln_llm_gather_rows', `
extern "C" __global__ void __launch_bounds__(256) KNAME(const float* src, float* dst, const int* sel, long long width) {
  const float* s = src + (long long)sel[blockIdx.x] * width;
  float* d = dst + (long long)blockIdx.x * width;
  for (long long i = threadIdx.x; i < width; i += blockDim.x) d[i] = s[i];
}`, { grid: [1, 1, 1], block: [256, 1, 1], sharedBytes: 0, params: [] });

const ARGMAX_THREADS = 1024;
/** out[r] = the first index of the largest of logits[r, :] (NaN never wins; a row of -inf gives 0); a block per row. */
export const argmaxKernel = finish('kiln_llm_argmax', `
constexpr int NT = ${ARGMAX_THREADS};
extern "C" __global__ void __launch_bounds__(NT) KNAME(const float* logits, int* out, long long V) {
  const float* row = logits + (long long)blockIdx.x * V;
  float best = -K_INF;
  long long bi = V;
  for (long long i = threadIdx.x; i < V; i += NT) {
    const float v = row[i];
    if (v > best || (bi == V && v == best)) { best = v; bi = i; }
  }
  __shared__ float bv[NT / 32];
  __shared__ long long bx[NT / 32];
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_down_sync(0xffffffffu, best, o);
    const long long oi = __shfl_down_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) { bv[warp] = best; bx[warp] = bi; }
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < NT / 32; w++) if (bv[w] > best || (bv[w] == best && bx[w] < bi)) { best = bv[w]; bi = bx[w]; }
  out[blockIdx.x] = bi < V ? (int)bi : 0;
}`, { grid: [1, 1, 1], block: [ARGMAX_THREADS, 1, 1], sharedBytes: 0, params: [] });

/** ids[r] = tok[map[r]] where map[r] >= 0: a chained step's ids from the greedy tokens of the step before it. */
export const idsKernel = finish('kiln_llm_ids_from_tokens', `
extern "C" __global__ void __launch_bounds__(256) KNAME(const int* tok, const int* map, long long* ids, long long rows) {
  const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows && map[r] >= 0) ids[r] = tok[map[r]];
}`, { grid: [1, 1, 1], block: [256, 1, 1], sharedBytes: 0, params: [] });

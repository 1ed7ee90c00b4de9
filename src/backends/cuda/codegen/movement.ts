// Data movement: Transpose, N-D strided copies (Slice, parts of Concat and Split) and Gather. These copy raw
// elements, so they work on words of the element size, widened to 16 bytes when the innermost run and every
// offset allow it.
import {
  checkDType, collapseDims, contiguousStrides, finish, indexType, launch1d, lit, offsetCode, prod, sizeOf, SM_COUNT,
  unsupported, wordType, type DevDType, type KernelSource,
} from './types.js';

interface CopyPlan {
  dims: number[];
  inStrides: number[];
  outStrides: number[];
  inOffset: number;
  outOffset: number;
}

/** Widest word (<= 16 bytes) that divides the innermost run, every other stride and both offsets, in bytes. */
export function widenCopy(p: CopyPlan, elemBytes: number): { plan: CopyPlan; word: number } {
  const r = p.dims.length;
  const unit = p.inStrides[r - 1] === 1 && p.outStrides[r - 1] === 1;
  for (const w of [16, 8, 4, 2, 1]) {
    if (w < elemBytes || w % elemBytes !== 0) continue;
    const f = w / elemBytes;
    if (f === 1) return { plan: p, word: w };
    if (!unit) continue;
    const ok = p.dims[r - 1] % f === 0 && p.inOffset % f === 0 && p.outOffset % f === 0
      && p.inStrides.slice(0, -1).every((s) => s % f === 0) && p.outStrides.slice(0, -1).every((s) => s % f === 0);
    if (!ok) continue;
    const div = (s: number[]) => s.map((x, i) => (i === r - 1 ? 1 : x / f));
    return {
      plan: { dims: [...p.dims.slice(0, -1), p.dims[r - 1] / f], inStrides: div(p.inStrides), outStrides: div(p.outStrides), inOffset: p.inOffset / f, outOffset: p.outOffset / f },
      word: w,
    };
  }
  return { plan: p, word: elemBytes };
}

function stridedCopy(prefix: string, p0: CopyPlan, elemBytes: number, inMax: number, outMax: number): KernelSource {
  const c = collapseDims(p0.dims, [p0.inStrides, p0.outStrides]);
  const { plan: p, word } = widenCopy({ ...p0, dims: c.dims, inStrides: c.strides[0], outStrides: c.strides[1] }, elemBytes);
  const n = prod(p.dims), it = indexType(Math.max(n, inMax, outMax));
  const dense = p.outStrides.every((s, d) => s === contiguousStrides(p.dims)[d]);
  const walk = dense ? [p.inStrides] : [p.inStrides, p.outStrides];
  const names = dense ? ['oi'] : ['oi', 'oo'];
  const W = wordType(word);
  const body = `
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${W}* __restrict__ in, ${W}* __restrict__ out) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(n)}; i += (${it})gridDim.x * blockDim.x) {
    ${offsetCode('i', p.dims, names, walk, it)}
    out[${lit(p.outOffset)} + ${dense ? 'i' : 'oo'}] = in[${lit(p.inOffset)} + oi];
  }
}`;
  return finish(prefix, body, { ...launch1d(Math.max(1, n)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
}

/**
 * ONNX Transpose: out dims[i] = dims[perm[i]]. Params: in 0, out 0. When the input's innermost axis stays innermost
 * it is a strided copy (16-byte words where possible); otherwise 32x32 tiles pass through shared memory so that
 * reads and writes are both coalesced.
 */
export function transpose(a: { dims: readonly number[]; perm: readonly number[]; dtype: DevDType }): KernelSource {
  checkDType(a.dtype, 'transpose');
  const r = a.dims.length, eb = sizeOf(a.dtype);
  if (a.perm.length !== r || [...a.perm].sort((x, y) => x - y).some((v, i) => v !== i)) {
    unsupported('transpose', `perm [${a.perm.join(',')}] is not a permutation of 0..${r - 1}`);
  }
  const inSt = contiguousStrides(a.dims);
  const outDims = a.perm.map((p) => a.dims[p]);
  const n = prod(a.dims);
  const c = collapseDims(outDims, [a.perm.map((p) => inSt[p]), contiguousStrides(outDims)]);
  const [inS, outS] = c.strides;
  const last = c.dims.length - 1;
  if (inS[last] === 1 || n <= 1) {
    return stridedCopy('kiln_transpose', { dims: c.dims, inStrides: inS, outStrides: outS, inOffset: 0, outOffset: 0 }, eb, n, n);
  }
  const ax = inS.indexOf(1);
  const others = c.dims.map((_, i) => i).filter((i) => i !== ax && i !== last);
  const DA = c.dims[ax], DB = c.dims[last], SB = inS[last], OA = outS[ax];
  const batch = prod(others.map((i) => c.dims[i]));
  const ta = Math.ceil(DA / 32), tb = Math.ceil(DB / 32), tiles = ta * tb * batch;
  const it = indexType(n);
  const W = wordType(eb);
  const bo = offsetCode('bt', others.map((i) => c.dims[i]), ['ib', 'ob'], [others.map((i) => inS[i]), others.map((i) => outS[i])], it);
  const body = `
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${W}* __restrict__ in, ${W}* __restrict__ out) {
  __shared__ ${W} tile[32][33];
  for (${it} tl = blockIdx.x; tl < ${lit(tiles)}; tl += gridDim.x) {
    const int xa = (int)(tl % ${ta}) * 32; ${it} rest = tl / ${ta};
    const int xb = (int)(rest % ${tb}) * 32; const ${it} bt = rest / ${tb}; (void)bt;
    ${bo}
    #pragma unroll
    for (int jj = 0; jj < 32; jj += 8) {
      const int j = jj + threadIdx.y, b = xb + j, aa = xa + threadIdx.x;
      if (b < ${DB} && aa < ${DA}) tile[j][threadIdx.x] = in[ib + (${it})b * ${lit(SB)} + aa];
    }
    __syncthreads();
    #pragma unroll
    for (int jj = 0; jj < 32; jj += 8) {
      const int j = jj + threadIdx.y, aa = xa + j, b = xb + threadIdx.x;
      if (b < ${DB} && aa < ${DA}) out[ob + (${it})aa * ${lit(OA)} + b] = tile[threadIdx.x][j];
    }
    __syncthreads();
  }
}`;
  const grid = Math.max(1, Math.min(tiles, SM_COUNT * 16));
  return finish('kiln_transpose_tiled', body, { grid: [grid, 1, 1], block: [32, 8, 1], sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
}

export interface CopyStridedArgs {
  dtype: DevDType;
  inDims: readonly number[];
  outDims: readonly number[];
  /** Elements copied along each axis. */
  region: readonly number[];
  /** First element read along each axis (default 0). */
  inStart?: readonly number[];
  /** Step between elements read along each axis (default 1; negative for Slice with negative steps). */
  inSteps?: readonly number[];
  /** First element written along each axis (default 0). */
  outStart?: readonly number[];
  outSteps?: readonly number[];
}

/**
 * out[outStart + j * outSteps] = in[inStart + j * inSteps] for every j in the region (per axis; all tensors dense
 * row-major, same rank). Slice: region = output dims, inStart = clamped starts, inSteps = steps. Concat part k:
 * in = part k, outStart = offset of part k along the axis. Split part k: inStart = its offset. Params: in 0, out 0.
 */
export function copyStrided(a: CopyStridedArgs): KernelSource {
  checkDType(a.dtype, 'copyStrided');
  const r = a.region.length;
  if (a.inDims.length !== r || a.outDims.length !== r) unsupported('copyStrided', `ranks differ: in ${a.inDims.length}, out ${a.outDims.length}, region ${r}`);
  const inStart = a.inStart ?? new Array<number>(r).fill(0), outStart = a.outStart ?? new Array<number>(r).fill(0);
  const inSteps = a.inSteps ?? new Array<number>(r).fill(1), outSteps = a.outSteps ?? new Array<number>(r).fill(1);
  for (let d = 0; d < r; d++) {
    const inside = (start: number, step: number, dim: number) => a.region[d] === 0 || (start >= 0 && start < dim && start + (a.region[d] - 1) * step >= 0 && start + (a.region[d] - 1) * step < dim);
    if (!inside(inStart[d], inSteps[d], a.inDims[d]) || !inside(outStart[d], outSteps[d], a.outDims[d])) {
      unsupported('copyStrided', `axis ${d}: the region of ${a.region[d]} elements leaves the input or output`, 'clamp starts and ends as Slice does before rendering');
    }
  }
  const iS = contiguousStrides(a.inDims), oS = contiguousStrides(a.outDims);
  const plan: CopyPlan = {
    dims: [...a.region], inStrides: iS.map((s, d) => s * inSteps[d]), outStrides: oS.map((s, d) => s * outSteps[d]),
    inOffset: inStart.reduce((acc, s, d) => acc + s * iS[d], 0), outOffset: outStart.reduce((acc, s, d) => acc + s * oS[d], 0),
  };
  return stridedCopy('kiln_copy', plan, sizeOf(a.dtype), prod(a.inDims), prod(a.outDims));
}

export interface GatherArgs {
  data: { dtype: DevDType; dims: readonly number[] };
  indices: { dtype: 'int32' | 'int64'; dims: readonly number[] };
  axis: number;
}

/**
 * ONNX Gather: out dims = data[..axis) + indices + data(axis..]. Negative indices count from the end; indices
 * still out of range after that are clamped (the reference throws; a kernel cannot). Params: in 0 data,
 * in 1 indices, out 0.
 */
export function gather(a: GatherArgs): KernelSource {
  checkDType(a.data.dtype, 'gather');
  const r = a.data.dims.length, axis = a.axis < 0 ? a.axis + r : a.axis;
  if (!(axis >= 0 && axis < r)) unsupported('gather', `axis ${a.axis} is out of range for rank ${r}`);
  const outer = prod(a.data.dims.slice(0, axis)), dax = a.data.dims[axis], inner = prod(a.data.dims.slice(axis + 1));
  const k = prod(a.indices.dims), eb = sizeOf(a.data.dtype);
  let word = eb;
  for (const w of [16, 8, 4, 2]) if (w > eb && (inner * eb) % w === 0) { word = w; break; }
  const innerW = (inner * eb) / word, n = outer * k * innerW;
  const it = indexType(Math.max(n, prod(a.data.dims) * eb / word));
  const W = wordType(word), I = a.indices.dtype === 'int64' ? 'long long' : 'int';
  const body = `
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${W}* __restrict__ data, const ${I}* __restrict__ indices, ${W}* __restrict__ out) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(n)}; i += (${it})gridDim.x * blockDim.x) {
    const ${it} e = i % ${lit(innerW)}; const ${it} t = i / ${lit(innerW)};
    const ${it} j = t % ${lit(k)}; const ${it} o = t / ${lit(k)};
    long long idx = indices[j];
    if (idx < 0) idx += ${dax};
    idx = idx < 0 ? 0 : (idx >= ${dax} ? ${dax - 1} : idx);
    out[i] = data[(o * ${lit(dax)} + (${it})idx) * ${lit(innerW)} + e];
  }
}`;
  if (dax === 0 && n > 0) unsupported('gather', 'the gathered axis is empty');
  return finish('kiln_gather', body, { ...launch1d(Math.max(1, n)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'in', index: 1 }, { kind: 'out', index: 0 }] });
}

// MaxPool / AveragePool (NCHW, 1-3 spatial axes, ONNX pads/strides/dilations/ceil_mode/count_include_pad) and the
// global pools. One thread per output element for windows; one warp (or block) per (n, c) plane for global pools.
import { planRows, rowEach, rowHelpers, rowLoop, rowReduce } from './rows.js';
import {
  checkDType, contiguousStrides, ctype, finish, indexType, launch1d, lit, load, prod, sizeOf, store, unsupported, wordType, type DevDType, type KernelSource,
  type TensorSpec,
} from './types.js';

export interface PoolArgs {
  /** [N, C, ...spatial] with 1 to 3 spatial axes. */
  x: TensorSpec;
  kernel: readonly number[];
  /** Explicit pads [begin..., end...] (resolve auto_pad before calling); default zeros. */
  pads?: readonly number[];
  strides?: readonly number[];
  dilations?: readonly number[];
  ceilMode?: boolean;
  /** AveragePool: divide by the taps inside the padded input rather than by the taps inside the input. */
  countIncludePad?: boolean;
  /** MaxPool: also write Indices (int64, flat over N, C and the spatial axes, as ONNX). */
  indices?: boolean;
  /** MaxPool storage_order: 1 = spatial offsets in column-major order. */
  storageOrder?: number;
}

interface Window { spatial: number[]; kernel: number[]; strides: number[]; dilations: number[]; pb: number[]; pe: number[]; out: number[] }

/** Output spatial dims of a pooling window as ONNX computes them (ceil_mode drops a window that starts in the end pad). */
export function poolOutputDims(spatial: readonly number[], kernel: readonly number[], pads: readonly number[], strides: readonly number[], dilations: readonly number[], ceil: boolean): number[] {
  const r = spatial.length;
  return spatial.map((n, i) => {
    const span = n + pads[i] + pads[i + r] - ((kernel[i] - 1) * dilations[i] + 1);
    let out = (ceil ? Math.ceil(span / strides[i]) : Math.floor(span / strides[i])) + 1;
    if (ceil && (out - 1) * strides[i] >= n + pads[i]) out--;
    return out;
  });
}

function resolve(a: PoolArgs, where: string): Window {
  checkDType(a.x.dtype, where);
  const spatial = a.x.dims.slice(2), r = spatial.length;
  if (r < 1 || r > 3) unsupported(where, `x must be [N, C, ...spatial] with 1 to 3 spatial axes, got [${a.x.dims.join(',')}]`);
  if (a.kernel.length !== r) unsupported(where, `kernel has ${a.kernel.length} axes for ${r} spatial axes`);
  const pads = a.pads ?? new Array<number>(2 * r).fill(0);
  const strides = a.strides ?? new Array<number>(r).fill(1), dilations = a.dilations ?? new Array<number>(r).fill(1);
  const out = poolOutputDims(spatial, a.kernel, pads, strides, dilations, !!a.ceilMode);
  if (out.some((o) => o < 1)) unsupported(where, `the window does not fit: output spatial dims [${out.join(',')}]`, 'check kernel_shape, pads and strides');
  return { spatial, kernel: [...a.kernel], strides: [...strides], dilations: [...dilations], pb: pads.slice(0, r), pe: pads.slice(r), out };
}

/** Output dims [N, C, ...out spatial] of a window pool. */
export function poolOutputShape(a: PoolArgs): number[] {
  return [a.x.dims[0], a.x.dims[1], ...resolve(a, 'pool').out];
}

/** The loop nest over the window taps inside the input; `inner` sees `off` (spatial offset) and i0.. coordinates. */
function tapLoops(w: Window, inner: string): string {
  const r = w.spatial.length;
  const ist = contiguousStrides(w.spatial);
  let code = inner;
  for (let d = r - 1; d >= 0; d--) {
    code = `#pragma unroll
      for (int k${d} = 0; k${d} < ${w.kernel[d]}; k${d}++) {
        const int i${d} = o${d} * ${w.strides[d]} - ${w.pb[d]} + k${d} * ${w.dilations[d]};
        if (i${d} < 0 || i${d} >= ${w.spatial[d]}) continue;
        const int off${d} = ${d === 0 ? '' : `off${d - 1} + `}i${d} * ${ist[d]};
        ${code}
      }`;
  }
  return code.replace(/off\$LAST/g, `off${r - 1}`);
}

function windowKernel(a: PoolArgs, w: Window, kind: 'max' | 'avg'): { body: string; n: number } {
  const r = w.spatial.length, d = a.x.dtype;
  const planes = a.x.dims[0] * a.x.dims[1], I = prod(w.spatial), G = prod(w.out);
  const n = planes * G, it = indexType(Math.max(n, planes * I));
  const outCoords = [`${it} t = i;`];
  for (let k = r - 1; k >= 0; k--) outCoords.push(`const int o${k} = (int)(t % ${w.out[k]}); t /= ${w.out[k]};`);
  const inner = kind === 'max'
    ? `{ const float v = ${load(d, `xp[off$LAST]`)}; if (v > best || arg < 0) { best = v; arg = off$LAST; } }`
    : `{ s += ${load(d, `xp[off$LAST]`)}; cnt++; }`;
  let tail: string;
  if (kind === 'max') {
    let idx = 'arg';
    if (a.storageOrder === 1) {
      const terms: string[] = [];
      for (let k = 0, st = 1; k < r; k++, st *= w.spatial[k - 1]) terms.push(`(${lit(st)} * ((arg / ${contiguousStrides(w.spatial)[k]}) % ${w.spatial[k]}))`);
      idx = terms.join(' + ');
    }
    tail = `y[i] = ${store(d, 'best')};${a.indices ? `\n    ind[i] = (long long)t * ${lit(I)} + (arg < 0 ? arg : (long long)(${idx}));` : ''}`;
  } else if (a.countIncludePad) {
    const factors = w.spatial.map((sz, k) => `c${k}`);
    const counts = w.spatial.map((sz, k) => `int c${k} = 0;
    for (int k = 0; k < ${w.kernel[k]}; k++) { const int p = o${k} * ${w.strides[k]} - ${w.pb[k]} + k * ${w.dilations[k]}; c${k} += (p >= ${-w.pb[k]} && p < ${sz + w.pe[k]}); }`);
    tail = `${counts.join('\n    ')}
    y[i] = ${store(d, `s / (float)(${factors.join(' * ')})`)};`;
  } else {
    tail = `y[i] = ${store(d, 's / (float)cnt')};`;
  }
  const decl = kind === 'max' ? 'float best = -K_INF; int arg = -1;' : 'float s = 0.0f; int cnt = 0; (void)cnt;';
  const body = `
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${ctype(d)}* __restrict__ x, ${ctype(d)}* __restrict__ y${a.indices ? ', long long* __restrict__ ind' : ''}) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(n)}; i += (${it})gridDim.x * blockDim.x) {
    ${outCoords.join('\n    ')}
    const ${ctype(d)}* xp = x + t * ${lit(I)};
    ${decl}
    ${tapLoops(w, inner)}
    ${tail}
  }
}`;
  return { body, n };
}

/**
 * ONNX MaxPool. Params: in 0 X, out 0 Y [N, C, ...out] (see `poolOutputShape`), out 1 Indices (int64, when
 * `indices`). Ties keep the first tap in row-major window order; NaN taps after the first are ignored, as the
 * reference does.
 */
export function maxPool(a: PoolArgs): KernelSource {
  const w = resolve(a, 'maxPool');
  const { body, n } = windowKernel(a, w, 'max');
  const params: KernelSource['params'] = [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }, ...(a.indices ? [{ kind: 'out' as const, index: 1 }] : [])];
  return finish('kiln_maxpool', body, { ...launch1d(Math.max(n, 1)), sharedBytes: 0, params });
}

/** ONNX AveragePool. Params: in 0 X, out 0 Y [N, C, ...out]. */
export function averagePool(a: PoolArgs): KernelSource {
  if (a.indices) unsupported('averagePool', 'AveragePool has no Indices output');
  const w = resolve(a, 'averagePool');
  const { body, n } = windowKernel(a, w, 'avg');
  return finish('kiln_avgpool', body, { ...launch1d(Math.max(n, 1)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
}

function globalPool(x: TensorSpec, kind: 'avg' | 'max', outDtype?: DevDType): KernelSource {
  const where = kind === 'avg' ? 'globalAveragePool' : 'globalMaxPool';
  checkDType(x.dtype, where);
  if (x.dims.length < 2) unsupported(where, `x must be [N, C, ...spatial], got [${x.dims.join(',')}]`);
  const planes = x.dims[0] * x.dims[1], size = prod(x.dims.slice(2));
  const od = outDtype ?? x.dtype;
  const p = { ...planRows(planes, size, [x.dtype]), cached: false };
  const acc = kind === 'avg'
    ? `float s = 0.0f;
    ${rowEach(p, x.dtype, 'x', 's += v;')}
    const float res = ${rowReduce(p, 's', 'sum')} / ${size}.0f;`
    : `float s = -K_INF;
    ${rowEach(p, x.dtype, 'x', 's = (v != v || s != s) ? K_NAN : fmaxf(s, v);')}
    const float res = ${rowReduce(p, 's', 'max')};`;
  const body = `${rowHelpers(p)}
extern "C" __global__ void __launch_bounds__(${p.launch.block[0]}) KNAME(const ${ctype(x.dtype)}* __restrict__ x, ${ctype(od)}* __restrict__ y) {
  ${rowLoop(p, `${acc}
    if (lane == 0) y[row] = ${store(od, 'res')};`)}
}`;
  return finish(kind === 'avg' ? 'kiln_gavgpool' : 'kiln_gmaxpool', body, { ...p.launch, sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
}

/** ONNX GlobalAveragePool: Y [N, C, 1, ...] = mean over the spatial axes (float32 sums). Params: in 0 X, out 0 Y. */
export const globalAveragePool = (a: { x: TensorSpec; outDtype?: DevDType }): KernelSource => globalPool(a.x, 'avg', a.outDtype);
/** ONNX GlobalMaxPool: Y [N, C, 1, ...] = max over the spatial axes (NaN propagates). Params: in 0 X, out 0 Y. */
export const globalMaxPool = (a: { x: TensorSpec; outDtype?: DevDType }): KernelSource => globalPool(a.x, 'max', a.outDtype);

/**
 * kiln:MaxPoolNHWC: 2-D MaxPool over channels-last X [N, H, W, C] -> Y [N, OH, OW, C]. Each thread takes one output
 * pixel's run of up to 16 bytes of channels, so every tap is one aligned vector load along contiguous memory (the
 * NCHW kernel's taps are scattered single elements). Same tie and NaN rule as `maxPool`: the first tap in row-major
 * window order wins ties, NaN taps after the first are ignored. Params: in 0 X, out 0 Y.
 */
export function maxPoolNHWC(a: Omit<PoolArgs, 'x' | 'indices' | 'storageOrder' | 'countIncludePad'> & { x: TensorSpec }): KernelSource {
  const [N, H, W, C] = a.x.dims;
  if (a.x.dims.length !== 4) unsupported('maxPoolNHWC', `x must be [N, H, W, C], got [${a.x.dims.join(',')}]`);
  const w = resolve({ ...a, x: { dtype: a.x.dtype, dims: [N, C, H, W] } }, 'maxPoolNHWC');
  const d = a.x.dtype, size = sizeOf(d);
  // channels per thread: a 16-byte vector where the channel run allows it, else one element
  let V = 1;
  for (const bytes of [16, 8, 4, 2]) if (bytes >= size && (C * size) % bytes === 0) { V = bytes / size; break; }
  const S = size, bits = 8 * S, mask = S === 4 ? '0xffffffffu' : `${(1 << bits) - 1}u`;
  const [OH, OW] = w.out, CV = C / V;
  const n = N * OH * OW * CV, it = indexType(Math.max(n * V, N * H * W * C));
  // the vector is split and rebuilt with shifts (no pointer casts of a local: those would put it in local memory)
  const wide = V * S === 16, word = wide ? 'uint4' : wordType(V * S);
  const part = (j: number) => (wide ? `rw[${(j * S) >> 2}] >> ${((j * S) & 3) * 8}` : `raw >> ${j * bits}`);
  const fromBits = (b: string) => (d === 'float32' ? `__uint_as_float((unsigned)(${b}))` : load(d, `(${ctype(d)})(${b})`));
  const toBits = (v: string) => (d === 'float32' ? `__float_as_uint(${v})` : `(unsigned)(${S === 1 ? 'unsigned char' : 'unsigned short'})${store(d, v)}`);
  const taps = Array.from({ length: V }, (_, j) => `{ const float v = ${fromBits(`(${part(j)}) & ${mask}`)}; if (first || v > best${j}) best${j} = v; }`);
  const packed = wide
    ? [0, 1, 2, 3].map((q) => Array.from({ length: 4 / S }, (_, e) => `(${toBits(`best${(q * 4) / S + e}`)} << ${e * bits})`).join(' | '))
    : [Array.from({ length: V }, (_, j) => `((${word})${toBits(`best${j}`)} << ${j * bits})`).join(' | ')];
  const body = `
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${ctype(d)}* __restrict__ x, ${ctype(d)}* __restrict__ y) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(n)}; i += (${it})gridDim.x * blockDim.x) {
    ${it} t = i;
    const int cv = (int)(t % ${CV}); t /= ${CV};
    const int o1 = (int)(t % ${OW}); t /= ${OW};
    const int o0 = (int)(t % ${OH}); t /= ${OH};
    float ${Array.from({ length: V }, (_, j) => `best${j} = 0.0f`).join(', ')};
    bool first = true;
    #pragma unroll
    for (int k0 = 0; k0 < ${w.kernel[0]}; k0++) {
      const int i0 = o0 * ${w.strides[0]} - ${w.pb[0]} + k0 * ${w.dilations[0]};
      if (i0 < 0 || i0 >= ${H}) continue;
      #pragma unroll
      for (int k1 = 0; k1 < ${w.kernel[1]}; k1++) {
        const int i1 = o1 * ${w.strides[1]} - ${w.pb[1]} + k1 * ${w.dilations[1]};
        if (i1 < 0 || i1 >= ${W}) continue;
        const ${word} raw = *(const ${word}*)(x + ((t * ${H} + i0) * ${W} + i1) * ${C} + (${it})cv * ${V});${wide ? `
        const unsigned int rw[4] = { raw.x, raw.y, raw.z, raw.w };` : ''}
        ${taps.join('\n        ')}
        first = false;
      }
    }
    ${wide ? `uint4 res;
    ${packed.map((e, q) => `res.${'xyzw'[q]} = ${e};`).join('\n    ')}` : `const ${word} res = ${packed[0]};`}
    *(${word}*)(y + ((t * ${OH} + o0) * ${OW} + o1) * ${C} + (${it})cv * ${V}) = res;
  }
}`;
  return finish('kiln_maxpool_nhwc', body, { ...launch1d(Math.max(n, 1)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
}

// Convolution helpers: im2col (turns a grouped N-D convolution into one GEMM per image and group) and a direct
// depthwise 2-D convolution with bias and activation fused.
import { renderCuda } from '../../../ir/expr.js';
import { activationExpr } from './elementwise.js';
import { poolOutputDims } from './pool.js';
import { checkDType, contiguousStrides, ctype, finish, indexType, launch1d, lit, load, prod, store, unsupported, type DevDType, type KernelSource } from './types.js';

export interface ConvGeometry {
  /** X dims [N, C, ...spatial], 1 to 3 spatial axes. */
  x: readonly number[];
  /** Kernel spatial dims (W's dims after [M, C/group]). */
  kernel: readonly number[];
  /** Explicit pads [begin..., end...] (resolve auto_pad first); default zeros. */
  pads?: readonly number[];
  strides?: readonly number[];
  dilations?: readonly number[];
  group?: number;
}

export interface Im2colArgs extends ConvGeometry { dtype: DevDType }

/** Resolved geometry: output spatial dims and the GEMM sizes per image and group. */
export interface Im2colLayout {
  n: number; c: number; group: number; cg: number;
  spatial: number[]; kernel: number[]; pads: number[]; strides: number[]; dilations: number[];
  /** Output spatial dims. */
  out: number[];
  /** Kernel taps: prod(kernel). */
  kk: number;
  /** Output positions per image: prod(out). */
  p: number;
  /** GEMM K per group: cg * kk. */
  k: number;
  /** Elements of the column buffer: N * C * kk * P. */
  elements: number;
}

export function im2colLayout(g: ConvGeometry): Im2colLayout {
  const spatial = g.x.slice(2), r = spatial.length;
  if (r < 1 || r > 3) unsupported('im2col', `x must be [N, C, ...spatial] with 1 to 3 spatial axes, got [${g.x.join(',')}]`);
  if (g.kernel.length !== r) unsupported('im2col', `kernel has ${g.kernel.length} axes for ${r} spatial axes`);
  const group = g.group ?? 1, c = g.x[1];
  if (c % group !== 0) unsupported('im2col', `C = ${c} is not divisible by group = ${group}`);
  const pads = [...(g.pads ?? new Array<number>(2 * r).fill(0))];
  const strides = [...(g.strides ?? new Array<number>(r).fill(1))], dilations = [...(g.dilations ?? new Array<number>(r).fill(1))];
  const out = poolOutputDims(spatial, g.kernel, pads, strides, dilations, false);
  if (out.some((o) => o < 1)) unsupported('im2col', `the kernel does not fit: output spatial dims [${out.join(',')}]`);
  const kk = prod(g.kernel), p = prod(out);
  return {
    n: g.x[0], c, group, cg: c / group, spatial, kernel: [...g.kernel], pads, strides, dilations, out, kk, p, k: (c / group) * kk,
    elements: g.x[0] * c * kk * p,
  };
}

/**
 * Flat column-buffer index of (image n, channel ci (global, 0..C), tap kidx (row-major over the kernel dims),
 * output position q (row-major over the output spatial dims)): the buffer is [N, C * kk, P] row-major. For group g
 * (channels g*cg..(g+1)*cg) of image n, rows g*k..(g+1)*k of that image form the GEMM operand col_g [k, P].
 */
export const im2colIndex = (l: Im2colLayout, n: number, ci: number, kidx: number, q: number): number => ((n * l.c + ci) * l.kk + kidx) * l.p + q;

/**
 * Column buffer for a convolution as GEMMs. Params: in 0 X, out 0 = the column buffer (a workspace the runtime
 * allocates: `im2colLayout(...).elements` elements of `dtype`). Layout: col[n][ci * kk + kidx][q] (see `im2colIndex`),
 * padding taps are 0. Then for each image n and group g, with W viewed as [M, k] (W's own layout [M, C/g, ...kernel]):
 *   Y[n][g*Mg .. (g+1)*Mg][0..P) = W[g*Mg .. (g+1)*Mg][0..k) @ col[n][g*k .. (g+1)*k][0..P)
 * row-major, so one strided-batched GEMM over (n, g) with batch strides (col: k*P per group, C*kk*P per image;
 * W: Mg*k per group; Y: Mg*P per group, M*P per image). To bound the workspace, render with N = 1 and launch once
 * per image with X offset by n * C * prod(spatial) elements.
 */
export function im2col(a: Im2colArgs): KernelSource {
  checkDType(a.dtype, 'im2col');
  const l = im2colLayout(a), r = l.spatial.length;
  const it = indexType(Math.max(l.elements, prod(a.x)));
  const ist = contiguousStrides(l.spatial), kst = contiguousStrides(l.kernel);
  const lines = [`${it} t = i;`];
  for (let d = r - 1; d >= 0; d--) lines.push(`const int o${d} = (int)(t % ${l.out[d]}); t /= ${l.out[d]};`);
  lines.push(`const int kidx = (int)(t % ${l.kk}); t /= ${l.kk};`, `/* t = n * C + ci */`);
  const checks: string[] = [], offs: string[] = [];
  for (let d = 0; d < r; d++) {
    lines.push(`const int i${d} = o${d} * ${l.strides[d]} - ${l.pads[d]} + ((kidx / ${kst[d]}) % ${l.kernel[d]}) * ${l.dilations[d]};`);
    checks.push(`(unsigned)i${d} < ${l.spatial[d]}u`);
    offs.push(`i${d} * ${ist[d]}`);
  }
  const body = `
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${ctype(a.dtype)}* __restrict__ x, ${ctype(a.dtype)}* __restrict__ col) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(l.elements)}; i += (${it})gridDim.x * blockDim.x) {
    ${lines.join('\n    ')}
    col[i] = (${checks.join(' && ')}) ? x[t * ${lit(prod(l.spatial))} + ${offs.join(' + ')}] : (${ctype(a.dtype)})0;
  }
}`;
  return finish('kiln_im2col', body, { ...launch1d(Math.max(1, l.elements)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
}

export interface DepthwiseArgs {
  /** X [N, C, H, W]; W is [C, 1, kh, kw] (group == C == M). */
  x: readonly number[];
  kernel: readonly [number, number];
  pads?: readonly number[];
  strides?: readonly number[];
  dilations?: readonly number[];
  dtype: DevDType;
  hasBias: boolean;
  /** A key of ACTIVATIONS ('' for none) and its parameters. */
  activation?: string;
  params?: readonly number[];
}

/**
 * Direct depthwise convolution, y = act(conv(x, w) + b). Params: in 0 X, in 1 W [C, 1, kh, kw], in 2 B [C] (when
 * hasBias), out 0 Y [N, C, OH, OW]. One thread per output element, float32 accumulation in row-major tap order.
 */
export function depthwiseConv2d(a: DepthwiseArgs): KernelSource {
  checkDType(a.dtype, 'depthwiseConv2d');
  if (a.x.length !== 4 || a.kernel.length !== 2) unsupported('depthwiseConv2d', `needs X [N, C, H, W] and a 2-D kernel, got [${a.x.join(',')}] and [${a.kernel.join(',')}]`);
  const l = im2colLayout({ ...a, group: a.x[1] });
  const [H, W] = l.spatial, [OH, OW] = l.out, [KH, KW] = l.kernel;
  const n = l.n * l.c * OH * OW, it = indexType(Math.max(n, prod(a.x)));
  const act = renderCuda(activationExpr(a.activation ?? '', a.params ?? []), () => 'v');
  const body = `
__device__ __forceinline__ float k_act(float v) { return ${act}; }
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${ctype(a.dtype)}* __restrict__ x, const ${ctype(a.dtype)}* __restrict__ w, ${a.hasBias ? `const ${ctype(a.dtype)}* __restrict__ b, ` : ''}${ctype(a.dtype)}* __restrict__ y) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(n)}; i += (${it})gridDim.x * blockDim.x) {
    const int ow = (int)(i % ${OW}); ${it} t = i / ${OW};
    const int oh = (int)(t % ${OH}); t /= ${OH};
    const int c = (int)(t % ${l.c});
    const ${ctype(a.dtype)}* xp = x + t * ${lit(H * W)};
    const ${ctype(a.dtype)}* wp = w + c * ${KH * KW};
    float s = 0.0f;
    #pragma unroll
    for (int kh = 0; kh < ${KH}; kh++) {
      const int ih = oh * ${l.strides[0]} - ${l.pads[0]} + kh * ${l.dilations[0]};
      if ((unsigned)ih >= ${H}u) continue;
      #pragma unroll
      for (int kw = 0; kw < ${KW}; kw++) {
        const int iw = ow * ${l.strides[1]} - ${l.pads[1]} + kw * ${l.dilations[1]};
        if ((unsigned)iw >= ${W}u) continue;
        s += ${load(a.dtype, `xp[ih * ${W} + iw]`)} * ${load(a.dtype, `wp[kh * ${KW} + kw]`)};
      }
    }
    y[i] = ${store(a.dtype, a.hasBias ? `k_act(s + ${load(a.dtype, 'b[c]')})` : 'k_act(s)')};
  }
}`;
  const params: KernelSource['params'] = [{ kind: 'in', index: 0 }, { kind: 'in', index: 1 }, ...(a.hasBias ? [{ kind: 'in' as const, index: 2 }] : []), { kind: 'out', index: 0 }];
  return finish('kiln_dwconv', body, { ...launch1d(Math.max(1, n)), sharedBytes: 0, params });
}

import { describe, expect, it } from 'vitest';
import { compileSm90, hasNvcc, kernelResources } from '../../helpers/nvcc.js';
import {
  broadcastStrides, cast, collapseDims, copyStrided, elementwise, epilogue, im2colIndex, im2colLayout, poolOutputDims, PRELUDE,
  softmax, transpose, widenCopy, type KernelSource,
} from '../../../src/backends/cuda/codegen/index.js';
import { CASES, f32 } from './codegen-cases.js';

const rendered = Object.entries(CASES).map(([k, f]) => [k, f()] as const);

/** The kernel's parameter list as written in the source. */
function signature(k: KernelSource): string[] {
  const m = new RegExp(`${k.name}\\(([^)]*)\\)`).exec(k.source);
  if (!m) throw new Error(`no definition of ${k.name}`);
  return m[1].split(',').map((s) => s.trim());
}

describe('cuda codegen: kernel sources and launch configs', () => {
  it.each(rendered)('%s', (_, k) => {
    expect(k.name).toMatch(/^kiln_[a-z0-9_]+_[0-9a-f]{16}$/);
    expect(k.source).not.toMatch(/#include/);
    expect(k.source).toContain(`extern "C" __global__ void `);
    expect(k.source.match(/__global__/g)).toHaveLength(1);
    const sig = signature(k);
    expect(sig).toHaveLength(k.params.length);
    sig.forEach((p) => expect(p).toMatch(/\*/));
    sig.forEach((p, i) => expect(/^const /.test(p) || k.params[i].kind !== 'in' || /softmax/.test(k.name)).toBe(true));
    const threads = k.block[0] * k.block[1] * k.block[2];
    expect(threads % 32).toBe(0);
    expect(threads).toBeLessThanOrEqual(1024);
    expect(k.grid.every((g) => Number.isInteger(g) && g >= 1)).toBe(true);
    expect(k.grid[0]).toBeLessThanOrEqual(2 ** 31 - 1);
    expect(k.sharedBytes).toBeLessThanOrEqual(48 * 1024);
    const bounds = /__launch_bounds__\((\d+)\)/.exec(k.source);
    if (bounds) expect(Number(bounds[1])).toBe(threads);
  });

  it('names differ when the shapes differ and repeat when nothing changes', () => {
    const a = () => softmax({ dims: [8, 10], dtype: f32 });
    expect(a().name).toBe(a().name);
    expect(softmax({ dims: [8, 11], dtype: f32 }).name).not.toBe(a().name);
  });

  it('uses 64-bit indices only for tensors beyond 2^31 elements', () => {
    expect(CASES.ewHuge().source).toMatch(/long long i = /);
    expect(CASES.ewBiasRow().source).not.toMatch(/long long i = /);
  });

  it('takes the 16-byte path for dense operands and the strided path for broadcasts', () => {
    expect(CASES.ewDenseF16().source).toContain('kv4');
    expect(CASES.ewScalarBf16().source).toContain('kv4');
    expect(CASES.ewBiasRow().source).not.toContain('reinterpret_cast');
    expect(CASES.copyConcatPart().source).toMatch(/const kv4\* __restrict__ in/);
    expect(CASES.transposeNchwNhwc().source).toContain('tile[32][33]');
    expect(CASES.transposeHeads().source).toMatch(/const kv4\* __restrict__ in/);
  });

  it('rejects what it cannot render with a clear error', () => {
    expect(() => epilogue({ y: { dtype: f32, dims: [2, 3] }, activation: 'Swish2', params: [], out: { dtype: f32 }, biasAxis: 1 })).toThrow(/unknown activation 'Swish2'/);
    expect(() => softmax({ dims: [2, 3], axis: 0, dtype: f32 })).toThrow(/not the last axis/);
    expect(() => transpose({ dims: [2, 3], perm: [0, 0], dtype: f32 })).toThrow(/not a permutation/);
    expect(() => elementwise({ expr: '(add $0 $1)', inputs: [{ dtype: f32, dims: [2] }, { dtype: f32, dims: [3] }], out: { dtype: f32, dims: [2] } })).toThrow(/cannot be broadcast/);
    expect(() => copyStrided({ dtype: f32, inDims: [4], outDims: [4], region: [4], inStart: [1] })).toThrow(/leaves the input/);
    expect(() => cast({ from: 'float64' as never, to: f32, n: 4 })).toThrow(/not supported/);
  });
});

describe('cuda codegen: pure helpers', () => {
  it('broadcast strides and dimension collapsing', () => {
    expect(broadcastStrides([3, 1], [2, 3, 4])).toEqual([0, 1, 0]);
    expect(broadcastStrides([], [2, 3])).toEqual([0, 0]);
    expect(collapseDims([2, 3, 4], [[12, 4, 1], [12, 4, 1]])).toEqual({ dims: [24], strides: [[1], [1]] });
    expect(collapseDims([2, 3, 4], [[12, 4, 1], [0, 1, 0]])).toEqual({ dims: [2, 3, 4], strides: [[12, 4, 1], [0, 1, 0]] });
    expect(collapseDims([2, 1, 4], [[4, 4, 1], [0, 0, 1]])).toEqual({ dims: [2, 4], strides: [[4, 1], [0, 1]] });
    expect(collapseDims([1, 1], [[1, 1]])).toEqual({ dims: [1], strides: [[0]] });
  });

  it('pool output dims follow ONNX, ceil mode included', () => {
    expect(poolOutputDims([112, 112], [3, 3], [1, 1, 1, 1], [2, 2], [1, 1], false)).toEqual([56, 56]);
    expect(poolOutputDims([9], [2], [0, 0], [2], [1], true)).toEqual([5]);
    expect(poolOutputDims([9], [2], [0, 0], [2], [1], false)).toEqual([4]);
    expect(poolOutputDims([5], [2], [0, 1], [2], [1], true)).toEqual([3]);
  });

  it('widens raw copies to 16-byte words only when every offset allows', () => {
    const p = { dims: [4, 64], inStrides: [128, 1], outStrides: [64, 1], inOffset: 64, outOffset: 0 };
    expect(widenCopy(p, 2)).toEqual({ word: 16, plan: { dims: [4, 8], inStrides: [16, 1], outStrides: [8, 1], inOffset: 8, outOffset: 0 } });
    expect(widenCopy({ ...p, inOffset: 3 }, 2).word).toBe(2);
    expect(widenCopy({ ...p, inStrides: [128, 2] }, 4).word).toBe(4);
  });

  it('im2col layout: per image and group, W_g @ col_g is the convolution', () => {
    const geo = { x: [2, 4, 5, 6], kernel: [3, 2], pads: [1, 0, 2, 1], strides: [2, 1], dilations: [1, 2], group: 2 };
    const l = im2colLayout(geo);
    const [N, C, H, W] = geo.x, M = 6, G = geo.group, Mg = M / G, [KH, KW] = geo.kernel;
    const x = Float64Array.from({ length: N * C * H * W }, (_, i) => Math.sin(i * 0.37));
    const w = Float64Array.from({ length: M * l.cg * KH * KW }, (_, i) => Math.cos(i * 0.91));
    // the column buffer, filled by the documented formula
    const col = new Float64Array(l.elements);
    for (let n = 0; n < N; n++) for (let ci = 0; ci < C; ci++) for (let kh = 0; kh < KH; kh++) for (let kw = 0; kw < KW; kw++) {
      for (let oh = 0; oh < l.out[0]; oh++) for (let ow = 0; ow < l.out[1]; ow++) {
        const ih = oh * geo.strides[0] - geo.pads[0] + kh * geo.dilations[0], iw = ow * geo.strides[1] - geo.pads[1] + kw * geo.dilations[1];
        const v = ih >= 0 && ih < H && iw >= 0 && iw < W ? x[((n * C + ci) * H + ih) * W + iw] : 0;
        col[im2colIndex(l, n, ci, kh * KW + kw, oh * l.out[1] + ow)] = v;
      }
    }
    // GEMM per (n, g) with the documented batch strides
    const y = new Float64Array(N * M * l.p);
    for (let n = 0; n < N; n++) for (let g = 0; g < G; g++) for (let m = 0; m < Mg; m++) for (let q = 0; q < l.p; q++) {
      let s = 0;
      for (let k = 0; k < l.k; k++) s += w[g * Mg * l.k + m * l.k + k] * col[n * C * l.kk * l.p + g * l.k * l.p + k * l.p + q];
      y[n * M * l.p + g * Mg * l.p + m * l.p + q] = s;
    }
    // direct grouped convolution
    for (let n = 0; n < N; n++) for (let m = 0; m < M; m++) for (let oh = 0; oh < l.out[0]; oh++) for (let ow = 0; ow < l.out[1]; ow++) {
      const g = Math.floor(m / Mg);
      let s = 0;
      for (let c = 0; c < l.cg; c++) for (let kh = 0; kh < KH; kh++) for (let kw = 0; kw < KW; kw++) {
        const ih = oh * geo.strides[0] - geo.pads[0] + kh * geo.dilations[0], iw = ow * geo.strides[1] - geo.pads[1] + kw * geo.dilations[1];
        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
        s += x[((n * C + g * l.cg + c) * H + ih) * W + iw] * w[((m * l.cg + c) * KH + kh) * KW + kw];
      }
      expect(y[(n * M + m) * l.p + oh * l.out[1] + ow]).toBeCloseTo(s, 12);
    }
    expect(l.out).toEqual([3, 5]);
    expect(l.elements).toBe(N * C * KH * KW * l.p);
  });
});

if (!hasNvcc) console.warn('cuda codegen: nvcc is not on the PATH; the sm_90 compile test is skipped (install the CUDA toolkit to run it)');

describe.skipIf(!hasNvcc)('cuda codegen: every source compiles with nvcc for sm_90', () => {
  it('compiles without errors, warnings, spills or local memory', () => {
    // one translation unit (each kernel in its own namespace) keeps this to a single nvcc run
    const { status, output } = compileSm90(rendered.map(([key, k]) => [key, k.source]));
    expect(status, output).toBe(0);
    expect(output).not.toMatch(/warning/i);
    const fns = kernelResources(output);
    expect(fns.map((m) => m[0]).sort()).toEqual(rendered.map(([, k]) => k.name).sort());
    // sinf/cosf keep a small local array for large-argument range reduction: a stack frame there is expected
    const trig = new Set(rendered.filter(([, k]) => /k_(sin|cos)\(/.test(k.source.slice(PRELUDE.length))).map(([, k]) => k.name));
    for (const m of fns) expect([m[0], trig.has(m[0]) ? '0' : m[1], m[2], m[3]]).toEqual([m[0], '0', '0', '0']);
  });
});

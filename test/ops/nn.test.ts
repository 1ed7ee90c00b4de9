import { describe, it, expect } from 'vitest';
import nnOps from '../../src/ops/nn.js';
import { parseAttrs, type InferContext, type KernelContext, type OpDef } from '../../src/ir/schema.js';
import type { AttrValue, Node, ValueType } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import type { DType } from '../../src/ir/dtype.js';
import { convForward, convTransposeForward } from '../../src/ops/nn-conv.js';
import { resolveWindow } from '../../src/ops/nn-window.js';
import { roundHalfEven } from '../../src/ops/nn-common.js';

const byName = new Map(nnOps.map((d) => [d.name, d as OpDef]));

function toAttrs(a: Record<string, number | number[] | string>): Record<string, AttrValue> {
  return Object.fromEntries(Object.entries(a).map(([k, v]): [string, AttrValue] => [k,
    Array.isArray(v) ? { type: 'ints', value: v } : typeof v === 'string' ? { type: 'string', value: v } : { type: 'int', value: v }]));
}

function nodeFor(op: string, n: number, attrs: Record<string, AttrValue>, nOut = 1): Node {
  return { name: 'n', opType: op, domain: '', inputs: Array.from({ length: n }, (_, i) => `x${i}`), outputs: Array.from({ length: nOut }, (_, i) => `y${i}`), attrs };
}

function run(op: string, inputs: (TensorData | undefined)[], attrs: Record<string, number | number[] | string> = {}, nOut = 1, opset = 22): TensorData[] {
  const def = byName.get(op)!;
  const node = nodeFor(op, inputs.length, toAttrs(attrs), nOut);
  const ctx: KernelContext<any> = {
    node, opset, attrs: parseAttrs(def, node), inputs, numOutputs: nOut, wantsOutput: (i) => i < nOut,
    tensor: (i) => inputs[i]!, optionalTensor: (i) => inputs[i], runSubgraph: () => [], random: () => 0,
  };
  return def.run(ctx) as TensorData[];
}

function infer(op: string, types: (ValueType | undefined)[], attrs: Record<string, number | number[] | string> = {}, nOut = 1,
  constants: (TensorData | undefined)[] = []): ValueType[] {
  const def = byName.get(op)!;
  const node = nodeFor(op, types.length, toAttrs(attrs), nOut);
  const ctx: InferContext<any> = { node, opset: 22, attrs: parseAttrs(def, node), inputTypes: types, constant: (i) => constants[i], numOutputs: nOut };
  return def.infer!(ctx);
}

const T = (dtype: DType, shape?: (number | string | undefined)[]): ValueType => ({ kind: 'tensor', dtype, shape });

let seed = 7;
function rand(dims: number[], dtype: DType = 'float32'): TensorData {
  const n = dims.reduce((a, b) => a * b, 1);
  const v = Array.from({ length: n }, () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return Math.round((seed / 2 ** 31 - 0.5) * 16) / 4;
  });
  return TensorData.fromNumbers(dtype, dims, v);
}

/** Direct definition of an N-d grouped convolution, for cross-checking the im2col/GEMM/depthwise paths. */
function naiveConv(x: TensorData, w: TensorData, b: TensorData | undefined, strides: number[], dil: number[], pads: number[], group: number) {
  const [N, C, ...sp] = x.dims, [M, Cg, ...k] = w.dims, r = sp.length;
  const out = sp.map((d, i) => Math.floor((d + pads[i] + pads[i + r] - (k[i] - 1) * dil[i] - 1) / strides[i]) + 1);
  const G = out.reduce((a, c) => a * c, 1), Kp = k.reduce((a, c) => a * c, 1), I = sp.reduce((a, c) => a * c, 1);
  const xv = x.toFloat64(), wv = w.toFloat64(), y = new Float64Array(N * M * G);
  const unr = (i: number, dims: number[]) => { const o: number[] = []; for (let d = dims.length - 1; d >= 0; d--) { o[d] = i % dims[d]; i = Math.floor(i / dims[d]); } return o; };
  for (let n = 0; n < N; n++) for (let m = 0; m < M; m++) for (let g = 0; g < G; g++) {
    const o = unr(g, out);
    let s = b ? b.get(m) : 0;
    for (let c = 0; c < Cg; c++) for (let kk = 0; kk < Kp; kk++) {
      const t = unr(kk, k);
      const pos = o.map((oi, i) => oi * strides[i] - pads[i] + t[i] * dil[i]);
      if (pos.some((p, i) => p < 0 || p >= sp[i])) continue;
      const flat = pos.reduce((a, p, i) => a * sp[i] + p, 0);
      const ci = Math.floor(m / (M / group)) * Cg + c;
      s += xv[(n * C + ci) * I + flat] * wv[(m * Cg + c) * Kp + kk];
    }
    y[(n * M + m) * G + g] = s;
  }
  return { y, dims: [N, M, ...out] };
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-4) {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (Math.abs(actual[i] - expected[i]) > tol * (1 + Math.abs(expected[i]))) throw new Error(`element ${i}: ${actual[i]} != ${expected[i]}`);
  }
}

describe('Conv', () => {
  const cases: { x: number[]; w: number[]; s: number[]; d: number[]; p: number[]; g: number }[] = [
    { x: [2, 4, 9], w: [6, 2, 3], s: [2], d: [2], p: [1, 2], g: 2 },
    { x: [1, 3, 7, 6], w: [4, 3, 3, 2], s: [1, 2], d: [1, 1], p: [1, 0, 2, 1], g: 1 },
    { x: [2, 4, 5, 5], w: [8, 1, 3, 3], s: [1, 1], d: [2, 1], p: [1, 1, 1, 1], g: 4 }, // depthwise, multiplier 2
    { x: [1, 6, 4, 5], w: [3, 6, 1, 1], s: [1, 1], d: [1, 1], p: [0, 0, 0, 0], g: 1 }, // pointwise
    { x: [1, 2, 4, 5, 3], w: [2, 2, 2, 3, 2], s: [1, 2, 1], d: [1, 1, 2], p: [0, 1, 1, 1, 0, 1], g: 1 },
  ];
  for (const [i, c] of cases.entries()) {
    for (const dtype of ['float32', 'float64'] as DType[]) {
      it(`matches the direct definition (case ${i}, ${dtype})`, () => {
        const x = rand(c.x, dtype), w = rand(c.w, dtype), b = rand([c.w[0]], dtype);
        const [y] = run('Conv', [x, w, b], { strides: c.s, dilations: c.d, pads: c.p, group: c.g });
        const ref = naiveConv(x, w, b, c.s, c.d, c.p, c.g);
        expect(y.dtype).toBe(dtype);
        expect(y.dims).toEqual(ref.dims);
        expectClose(y.toFloat64(), ref.y);
      });
    }
  }

  it('gives the same result when the im2col buffer is processed in chunks', () => {
    const x = rand([2, 3, 6, 7]), w = rand([4, 3, 3, 3]);
    const win = resolveWindow([6, 7], { kernel: [3, 3], pads: [1, 1, 1, 1], strides: [1, 2] });
    const whole = new Float32Array(2 * 4 * win.outDims[0] * win.outDims[1]), chunked = whole.slice();
    convForward(x.data as Float32Array, x.dims, w.data as Float32Array, w.dims, undefined, win, 1, whole);
    convForward(x.data as Float32Array, x.dims, w.data as Float32Array, w.dims, undefined, win, 1, chunked, 27 * 5);
    expectClose(chunked, whole, 1e-6);
    const t = rand([1, 3, 4, 5]), tw = rand([3, 2, 3, 3]);
    const tw2 = resolveWindow([4, 5], { kernel: [3, 3] });
    const tWin = { ...tw2, strides: [2, 2], padsBegin: [1, 0], outDims: [8, 11] };
    const a = new Float32Array(2 * 88), b = a.slice();
    convTransposeForward(t.data as Float32Array, t.dims, tw.data as Float32Array, tw.dims, undefined, tWin, 1, a);
    convTransposeForward(t.data as Float32Array, t.dims, tw.data as Float32Array, tw.dims, undefined, tWin, 1, b, 18 * 3);
    expectClose(b, a, 1e-6);
  });

  it('computes float16 in float32 and rounds once', () => {
    const x = rand([1, 2, 4, 4], 'float16'), w = rand([2, 2, 3, 3], 'float16');
    const [y] = run('Conv', [x, w], { auto_pad: 'SAME_UPPER' });
    expect(y.dtype).toBe('float16');
    expect(y.dims).toEqual([1, 2, 4, 4]);
    const ref = naiveConv(x, w, undefined, [1, 1], [1, 1], [1, 1, 1, 1], 1);
    expectClose(y.toFloat64(), ref.y, 1e-3);
  });

  it('rejects mismatched channels with a descriptive error', () => {
    expect(() => run('Conv', [rand([1, 3, 5, 5]), rand([2, 2, 3, 3])])).toThrow(/input channels per group/);
    expect(() => run('Conv', [rand([1, 3, 2, 2]), rand([2, 3, 3, 3])])).toThrow(/smaller than the kernel/);
  });

  it('infers output shapes with symbolic dims and auto_pad', () => {
    expect(infer('Conv', [T('float32', ['N', 3, 224, 'W']), T('float32', [64, 3, 7, 7])], { strides: [2, 2], pads: [3, 3, 3, 3] }))
      .toEqual([T('float32', ['N', 64, 112, undefined])]);
    expect(infer('Conv', [T('float32', [1, 3, 7, 8]), T('float32', [4, 3, 3, 3])], { strides: [2, 3], auto_pad: 'SAME_LOWER' }))
      .toEqual([T('float32', [1, 4, 4, 3])]);
    expect(infer('Conv', [T('float16', undefined), T('float16', [4, 3, 3, 3])])).toEqual([T('float16', [undefined, 4, undefined, undefined])]);
    expect(infer('ConvTranspose', [T('float32', ['B', 4, 5, 5]), T('float32', [4, 3, 3, 3])], { strides: [2, 2], group: 2, output_padding: [1, 0] }))
      .toEqual([T('float32', ['B', 6, 12, 11])]);
  });
});

describe('pooling', () => {
  it('MaxPool returns row-major and column-major argmax indices', () => {
    const x = TensorData.fromNumbers('float32', [1, 1, 2, 3], [1, 9, 2, 8, 3, 10]);
    const [y, i] = run('MaxPool', [x], { kernel_shape: [2, 2] }, 2);
    expect(Array.from(y.toFloat64())).toEqual([9, 10]);
    expect(i.toBigInts()).toEqual([1n, 5n]);
    const [, ic] = run('MaxPool', [x], { kernel_shape: [2, 2], storage_order: 1 }, 2);
    expect(ic.toBigInts()).toEqual([2n, 5n]);
  });

  it('AveragePool with ceil_mode drops windows that start in the padding', () => {
    const x = rand([1, 1, 5, 5]);
    const [y] = run('AveragePool', [x], { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1 });
    expect(y.dims).toEqual([1, 1, 3, 3]);
    expect(infer('AveragePool', [T('float32', ['N', 'C', 5, 6])], { kernel_shape: [3, 3], strides: [2, 2], ceil_mode: 1, pads: [1, 1, 1, 1] }))
      .toEqual([T('float32', ['N', 'C', 3, 4])]);
  });

  it('requires kernel_shape', () => {
    expect(() => run('MaxPool', [rand([1, 1, 4, 4])])).toThrow(/kernel_shape/);
  });
});

describe('MatMul and Gemm', () => {
  function naiveMatMul(a: TensorData, b: TensorData) {
    // a [..., M, K] (batch 2, 1, M, K) x b [5, K, N]: explicit loops for the case below
    const [B0, , M, K] = a.dims, [B1, , N] = b.dims;
    const av = a.toFloat64(), bv = b.toFloat64(), y = new Float64Array(B0 * B1 * M * N);
    for (let i = 0; i < B0; i++) for (let j = 0; j < B1; j++) for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += av[(i * M + m) * K + k] * bv[(j * K + k) * N + n];
      y[((i * B1 + j) * M + m) * N + n] = s;
    }
    return y;
  }

  it('broadcasts batch dims and promotes 1-D operands', () => {
    const a = rand([2, 1, 5, 7]), b = rand([3, 7, 6]);
    const [y] = run('MatMul', [a, b]);
    expect(y.dims).toEqual([2, 3, 5, 6]);
    expectClose(y.toFloat64(), naiveMatMul(a, b));
    expect(run('MatMul', [rand([7]), rand([3, 7, 6])])[0].dims).toEqual([3, 6]);
    expect(run('MatMul', [rand([3, 5, 7]), rand([7])])[0].dims).toEqual([3, 5]);
    expect(run('MatMul', [rand([7]), rand([7])])[0].dims).toEqual([]);
    expect(() => run('MatMul', [rand([3, 4]), rand([5, 2])])).toThrow(/inner dimensions/);
  });

  it('keeps int32 results exact', () => {
    const a = TensorData.fromNumbers('int32', [1, 2], [40000, 3]), b = TensorData.fromNumbers('int32', [2, 1], [50000, -7]);
    const [y] = run('MatMul', [a, b]);
    expect(y.dtype).toBe('int32');
    expect(Array.from(y.data as Int32Array)).toEqual([2000000000 - 21]);
  });

  it('infers symbolic batch shapes', () => {
    expect(infer('MatMul', [T('float32', ['B', 'S', 64]), T('float32', [64, 128])])).toEqual([T('float32', ['B', 'S', 128])]);
    expect(infer('MatMul', [T('float32', [64]), T('float32', ['B', 64, 'N'])])).toEqual([T('float32', ['B', 'N'])]);
    expect(infer('Gemm', [T('float32', [64, 'M']), T('float32', ['N', 64])], { transA: 1, transB: 1 })).toEqual([T('float32', ['M', 'N'])]);
  });

  it('Gemm applies transposes, alpha, beta and a broadcast C', () => {
    const a = rand([4, 3]), b = rand([5, 4]), c = rand([5]);
    const def = byName.get('Gemm')!;
    const node = nodeFor('Gemm', 3, { transA: { type: 'int', value: 1 }, transB: { type: 'int', value: 1 }, alpha: { type: 'float', value: 0.5 }, beta: { type: 'float', value: 2 } });
    const inputs = [a, b, c];
    const y = def.run({ node, opset: 13, attrs: parseAttrs(def, node), inputs, numOutputs: 1, wantsOutput: () => true, tensor: (i) => inputs[i], optionalTensor: (i) => inputs[i], runSubgraph: () => [], random: () => 0 })[0] as TensorData;
    const av = a.toFloat64(), bv = b.toFloat64(), cv = c.toFloat64(), ref: number[] = [];
    for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += av[k * 3 + i] * bv[j * 4 + k];
      ref.push(0.5 * s + 2 * cv[j]);
    }
    expect(y.dims).toEqual([3, 5]);
    expectClose(y.toFloat64(), ref);
  });
});

describe('quantized', () => {
  it('rounds half to even', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, 2.4, -2.6].map((v) => roundHalfEven(v) + 0)).toEqual([0, 2, 2, 0, -2, 2, -3]);
  });

  it('QLinearMatMul saturates to the output type', () => {
    const a = TensorData.fromNumbers('uint8', [1, 2], [255, 255]), b = TensorData.fromNumbers('uint8', [2, 1], [255, 255]);
    const s = TensorData.scalar('float32', 1), z = TensorData.scalar('uint8', 0);
    const [y] = run('QLinearMatMul', [a, s, z, b, s, z, s, z]);
    expect(Array.from(y.data as Uint8Array)).toEqual([255]);
    expect(infer('QLinearMatMul', [T('int8', ['M', 4]), undefined, undefined, T('int8', [4, 3]), undefined, undefined, undefined, T('int8', [])]))
      .toEqual([T('int8', ['M', 3])]);
  });
});

import { describe, it, expect } from 'vitest';
import elementwise from '../../src/ops/elementwise.js';
import { erf } from '../../src/ops/elementwise-unary.js';
import { inferBroadcast } from '../../src/ops/elementwise-core.js';
import { parseAttrs, type KernelContext, type InferContext } from '../../src/ir/schema.js';
import type { AttrValue, Node, ValueType } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import type { DType } from '../../src/ir/dtype.js';

function nodeFor(op: string, n: number, attrs: Record<string, AttrValue>): Node {
  return { name: 'n', opType: op, domain: '', inputs: Array.from({ length: n }, (_, i) => `x${i}`), outputs: ['y'], attrs };
}

function run(op: string, inputs: (TensorData | undefined)[], attrs: Record<string, AttrValue> = {}, opset = 22): TensorData {
  const def = elementwise.find((d) => d.name === op)!;
  const node = nodeFor(op, inputs.length, attrs);
  const ctx: KernelContext<any> = {
    node, opset, attrs: parseAttrs(def, node), inputs, numOutputs: 1, wantsOutput: () => true,
    tensor: (i) => inputs[i]!, optionalTensor: (i) => inputs[i],
    runSubgraph: () => { throw new Error('no subgraphs'); }, random: () => 0,
  };
  return def.run(ctx)[0] as TensorData;
}

function infer(op: string, types: ValueType[], attrs: Record<string, AttrValue> = {}, opset = 22): ValueType {
  const def = elementwise.find((d) => d.name === op)!;
  const node = nodeFor(op, types.length, attrs);
  const ctx: InferContext<any> = { node, opset, attrs: parseAttrs(def, node), inputTypes: types, constant: () => undefined, numOutputs: 1 };
  return def.infer!(ctx)[0];
}

const t = (dtype: DType, dims: number[], v: number[]) => TensorData.fromNumbers(dtype, dims, v);
const big = (dtype: 'int64' | 'uint64', v: bigint[]) => TensorData.fromBigInts(dtype, [v.length], v);
const vals = (x: TensorData) => Array.from(x.data as ArrayLike<number | bigint>);

describe('integer arithmetic wraps like C and stays exact for 64 bits', () => {
  it('wraps 8/32-bit results', () => {
    expect(vals(run('Add', [t('int8', [2], [127, -128]), t('int8', [2], [1, -1])]))).toEqual([-128, 127]);
    expect(vals(run('Sub', [t('uint8', [1], [0]), t('uint8', [1], [1])]))).toEqual([255]);
    expect(vals(run('Mul', [t('int32', [1], [65536]), t('int32', [1], [65536])]))).toEqual([0]);
    expect(vals(run('Mul', [t('uint32', [1], [0xffffffff]), t('uint32', [1], [0xffffffff])]))).toEqual([1]);
    expect(vals(run('Neg', [t('int8', [1], [-128])]))).toEqual([-128]);
    expect(vals(run('Abs', [t('int8', [1], [-128])]))).toEqual([-128]);
  });

  it('keeps int64/uint64 exact', () => {
    expect(vals(run('Add', [big('int64', [2n ** 62n + 1n, 2n ** 63n - 1n]), big('int64', [2n ** 62n, 1n])]))).toEqual([2n ** 63n + 1n - 2n ** 64n, -(2n ** 63n)]);
    expect(vals(run('Max', [big('int64', [9007199254740993n]), big('int64', [9007199254740992n])]))).toEqual([9007199254740993n]);
    expect(vals(run('Min', [big('uint64', [2n ** 64n - 1n]), big('uint64', [2n ** 64n - 2n])]))).toEqual([2n ** 64n - 2n]);
    expect(vals(run('Div', [big('int64', [-7n, 7n]), big('int64', [2n, 0n])]))).toEqual([-3n, 0n]);
    expect(vals(run('Greater', [big('int64', [9007199254740993n]), big('int64', [9007199254740992n])]))).toEqual([1]);
  });

  it('divides integers truncating toward zero', () => {
    expect(vals(run('Div', [t('int32', [4], [7, -7, 7, -7]), t('int32', [4], [2, 2, -2, -2])]))).toEqual([3, -3, -3, 3]);
  });

  it('implements both Mod conventions', () => {
    const a = t('int32', [4], [-7, 7, -7, 7]), b = t('int32', [4], [3, -3, -3, 3]);
    expect(vals(run('Mod', [a, b]))).toEqual([2, -2, -1, 1]);
    expect(vals(run('Mod', [a, b], { fmod: { type: 'int', value: 1 } }))).toEqual([-1, 1, -1, 1]);
    expect(vals(run('Mod', [big('int64', [-7n]), big('int64', [3n])]))).toEqual([2n]);
    expect(() => run('Mod', [t('float32', [1], [1]), t('float32', [1], [1])])).toThrow(/fmod must be 1/);
  });

  it('computes integer powers exactly', () => {
    expect(vals(run('Pow', [t('int32', [4], [3, 2, -1, 2]), t('int32', [4], [4, -1, -3, 31])]))).toEqual([81, 0, -1, -(2 ** 31)]);
    expect(vals(run('Pow', [big('int64', [3n]), big('int64', [40n])]))).toEqual([BigInt.asIntN(64, 3n ** 40n)]);
    expect(vals(run('Pow', [t('float32', [2], [1, -1]), t('float32', [2], [NaN, Infinity])]))).toEqual([1, 1]);
    expect(run('Pow', [t('int64', [1], [3]), t('float32', [1], [0.5])]).dtype).toBe('int64');
  });

  it('shifts unsigned integers', () => {
    const l = { direction: { type: 'string', value: 'LEFT' } } as Record<string, AttrValue>;
    const r = { direction: { type: 'string', value: 'RIGHT' } } as Record<string, AttrValue>;
    expect(vals(run('BitShift', [t('uint8', [3], [1, 255, 1]), t('uint8', [3], [7, 1, 8])], l))).toEqual([128, 254, 0]);
    expect(vals(run('BitShift', [big('uint64', [2n ** 63n]), big('uint64', [63n])], r))).toEqual([1n]);
    expect(() => run('BitShift', [t('int8', [1], [1]), t('int8', [1], [1])], l)).toThrow(/unsigned/);
  });
});

describe('float semantics', () => {
  it('rounds float16 results once', () => {
    const one = t('float16', [2], [1, 1]), small = t('float16', [2], [2 ** -11, 3 * 2 ** -12]);
    expect(vals(run('Add', [one, small]))).toEqual([0x3c00, 0x3c01]);
    const tiny = t('float16', [2], [2 ** -11, 2 ** -11]); // pairwise rounding would lose both halves
    expect(run('Sum', [one, tiny, tiny]).get(0)).toBe(1 + 2 ** -10);
  });

  it('rounds half to even', () => {
    const y = run('Round', [t('float32', [7], [0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, -2.6])]);
    expect(Array.from(y.data as Float32Array)).toEqual([0, 2, 2, -0, -2, 2, -3]);
  });

  it('computes erf to double precision', () => {
    const known: [number, number][] = [[0.5, 0.5204998778130465], [1, 0.8427007929497149], [2, 0.9953222650189527],
      [3, 0.9999779095030014], [4, 0.9999999845827421], [1e-10, 1.1283791670955126e-10], [-1.5, -0.9661051464753108]];
    for (const [x, y] of known) expect(Math.abs(erf(x) - y)).toBeLessThan(4e-16 * Math.max(1, Math.abs(y)) + Math.abs(y) * 4e-16);
  });

  it('propagates NaN through Max/Min and keeps it through Relu and Clip', () => {
    expect(Number.isNaN(run('Max', [t('float32', [2], [NaN, 1]), t('float32', [2], [0, NaN])]).get(1))).toBe(true);
    expect(Number.isNaN(run('Relu', [t('float32', [1], [NaN])]).get(0))).toBe(true);
    expect(Number.isNaN(run('Clip', [t('float32', [1], [NaN]), t('float32', [], [0]), t('float32', [], [1])]).get(0))).toBe(true);
  });
});

describe('broadcasting', () => {
  it('matches a naive broadcast', () => {
    const a = t('float32', [2, 1, 3], [1, 2, 3, 4, 5, 6]), b = t('float32', [4, 1], [10, 20, 30, 40]);
    const y = run('Sub', [a, b]);
    expect(y.dims).toEqual([2, 4, 3]);
    const exp: number[] = [];
    for (let i = 0; i < 2; i++) for (let j = 0; j < 4; j++) for (let k = 0; k < 3; k++) exp.push(a.get(i * 3 + k) - b.get(j));
    expect(Array.from(y.data as Float32Array)).toEqual(exp);
    expect(run('Add', [t('float32', [], [1]), t('float32', [], [2])]).dims).toEqual([]);
    expect(run('Add', [t('float32', [0, 3], []), t('float32', [3], [1, 2, 3])]).dims).toEqual([0, 3]);
  });

  it('supports opset-6 axis broadcasting', () => {
    const a = t('float32', [2, 3, 2], new Array(12).fill(0)), b = t('float32', [3], [1, 2, 3]);
    const y = run('Add', [a, b], { broadcast: { type: 'int', value: 1 }, axis: { type: 'int', value: 1 } }, 6);
    expect(Array.from(y.data as Float32Array)).toEqual([1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]);
  });

  it('selects any element type with Where, and compares strings', () => {
    const c = t('bool', [2, 1], [1, 0]);
    const y = run('Where', [c, TensorData.strings([2], ['a', 'b']), TensorData.strings([], ['z'])]);
    expect(y.dims).toEqual([2, 2]);
    expect(y.data).toEqual(['a', 'b', 'z', 'z']);
    expect(vals(run('Equal', [TensorData.strings([2], ['a', 'b']), TensorData.strings([], ['b'])]))).toEqual([0, 1]);
  });

  it('rejects bad inputs with clear errors', () => {
    expect(() => run('Add', [t('float32', [1], [1]), t('int32', [1], [1])])).toThrow(/same element type/);
    expect(() => run('Add', [t('float32', [2], [1, 2]), t('float32', [3], [1, 2, 3])])).toThrow(/broadcast/);
    expect(() => run('Sqrt', [t('int32', [1], [4])])).toThrow(/int32 is not supported/);
    expect(() => run('PRelu', [t('float32', [2], [1, 2]), t('float32', [2, 2], [1, 2, 3, 4])])).toThrow(/must broadcast/);
    expect(() => run('Gelu', [t('float32', [1], [1])], { approximate: { type: 'string', value: 'erf' } })).toThrow(/'none' or 'tanh'/);
  });
});

describe('Clip', () => {
  it('handles attributes (opset 6), inputs, min > max and int64 bounds', () => {
    const x = t('float32', [3], [-2, 0.5, 2]);
    const attrs: Record<string, AttrValue> = { min: { type: 'float', value: -1 }, max: { type: 'float', value: 1 } };
    expect(Array.from(run('Clip', [x], attrs, 6).data as Float32Array)).toEqual([-1, 0.5, 1]);
    expect(Array.from(run('Clip', [x, undefined, t('float32', [], [0])]).data as Float32Array)).toEqual([-2, 0, 0]);
    expect(Array.from(run('Clip', [x, t('float32', [], [1]), t('float32', [], [0])]).data as Float32Array)).toEqual([0, 0, 0]);
    const y = run('Clip', [big('int64', [2n ** 60n + 3n, 0n]), big('int64', [1n]).reshape([]), big('int64', [2n ** 60n + 1n]).reshape([])]);
    expect(vals(y)).toEqual([2n ** 60n + 1n, 1n]);
  });
});

describe('inference', () => {
  const ft = (shape?: (number | string | undefined)[], dtype: DType = 'float32'): ValueType => ({ kind: 'tensor', dtype, shape });
  it('broadcasts symbolic shapes', () => {
    expect(inferBroadcast(['N', 3, 1], [1, 'M'])).toEqual(['N', 3, 'M']);
    expect(inferBroadcast(['N'], [5])).toEqual([5]);
    expect(inferBroadcast(['N'], ['M'])).toEqual([undefined]);
    expect(inferBroadcast([undefined], [1])).toEqual([undefined]);
    expect(inferBroadcast(['N'], undefined)).toBeUndefined();
    expect(() => inferBroadcast([2], [3])).toThrow(/broadcast/);
  });
  it('gives bool for comparisons and predicates, the value type for Where and the base type for Pow', () => {
    expect(infer('Less', [ft(['B', 4]), ft([4])])).toEqual(ft(['B', 4], 'bool'));
    expect(infer('IsNaN', [ft(['B'], 'float16')])).toEqual(ft(['B'], 'bool'));
    expect(infer('Where', [ft([2, 1], 'bool'), ft([3], 'int64'), ft([], 'int64')])).toEqual(ft([2, 3], 'int64'));
    expect(infer('Pow', [ft(['S'], 'int32'), ft([], 'float32')])).toEqual(ft(['S'], 'int32'));
    expect(infer('Sum', [ft([2, 1]), ft([1, 'K']), ft(undefined)])).toEqual(ft(undefined));
    expect(infer('Clip', [ft(['N', 3])])).toEqual(ft(['N', 3]));
  });
});

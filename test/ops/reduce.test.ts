import { describe, it, expect } from 'vitest';
import { parseAttrs, type InferContext, type KernelContext, type OpDef } from '../../src/ir/schema.js';
import type { AttrValue, Node, ValueType } from '../../src/ir/graph.js';
import { TensorData, type Value } from '../../src/ir/tensor.js';
import reduceOps from '../../src/ops/reduce.js';
import normOps from '../../src/ops/normalization.js';

const byName = new Map([...reduceOps, ...normOps].map((d) => [d.name, d as OpDef]));
const op = (name: string) => byName.get(name)!;

function nodeOf(name: string, attrs: Record<string, AttrValue>, nIn: number, nOut: number): Node {
  return {
    name: 'n', opType: name, domain: '', attrs,
    inputs: Array.from({ length: nIn }, (_, i) => `i${i}`), outputs: Array.from({ length: nOut }, (_, i) => `o${i}`),
  };
}

function run(name: string, inputs: (TensorData | undefined)[], attrs: Record<string, AttrValue> = {}, opset = 21, nOut = 1): TensorData[] {
  const def = op(name);
  const node = nodeOf(name, attrs, inputs.length, nOut);
  inputs.forEach((t, i) => { if (!t) node.inputs[i] = ''; });
  const ctx: KernelContext<unknown> = {
    node, opset, attrs: parseAttrs(def, node), inputs: inputs as Value[], numOutputs: nOut,
    wantsOutput: (i) => i < nOut,
    tensor: (i) => inputs[i]!,
    optionalTensor: (i) => inputs[i],
    runSubgraph: () => [],
    random: () => 0,
  };
  return def.run(ctx as KernelContext<never>) as TensorData[];
}

function infer(name: string, types: (ValueType | undefined)[], attrs: Record<string, AttrValue> = {}, opset = 21,
  constants: (TensorData | undefined)[] = [], nOut = 1): ValueType[] {
  const def = op(name);
  const node = nodeOf(name, attrs, types.length, nOut);
  const ctx: InferContext<unknown> = {
    node, opset, attrs: parseAttrs(def, node), inputTypes: types, constant: (i) => constants[i], numOutputs: nOut,
  };
  return def.infer!(ctx as InferContext<never>);
}

const f32 = (dims: number[], v: number[]) => TensorData.fromNumbers('float32', dims, v);
const i64 = (v: number[]) => TensorData.fromNumbers('int64', [v.length], v);
const ints = (v: number[]): AttrValue => ({ type: 'ints', value: v });
const int = (v: number): AttrValue => ({ type: 'int', value: v });

describe('reductions', () => {
  it('infers symbolic shapes from attribute and constant axes', () => {
    const x: ValueType = { kind: 'tensor', dtype: 'float32', shape: ['batch', 'seq', 768] };
    expect(infer('ReduceMean', [x], { axes: ints([-1]) }, 13)).toEqual([{ kind: 'tensor', dtype: 'float32', shape: ['batch', 'seq', 1] }]);
    expect(infer('ReduceMean', [x, { kind: 'tensor', dtype: 'int64', shape: [1] }], { keepdims: int(0) }, 18, [undefined, i64([1])]))
      .toEqual([{ kind: 'tensor', dtype: 'float32', shape: ['batch', 768] }]);
    // axes input present but unknown: rank is kept with keepdims, unknown otherwise
    expect(infer('ReduceSum', [x, { kind: 'tensor', dtype: 'int64', shape: [1] }], {}, 13)[0]).toEqual({ kind: 'tensor', dtype: 'float32', shape: [undefined, undefined, undefined] });
    expect(infer('ReduceSum', [x, { kind: 'tensor', dtype: 'int64', shape: [1] }], { keepdims: int(0) }, 13)[0]).toEqual({ kind: 'tensor', dtype: 'float32', shape: undefined });
    expect(infer('ArgMax', [x], { axis: int(1), keepdims: int(0) })[0]).toEqual({ kind: 'tensor', dtype: 'int64', shape: ['batch', 768] });
  });

  it('reduces non-contiguous axes and keeps int64 exact', () => {
    const x = f32([2, 3, 2], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    const y = run('ReduceSum', [x, i64([0, 2])], { keepdims: int(0) }, 13)[0];
    expect(y.dims).toEqual([3]);
    expect(Array.from(y.data as Float32Array)).toEqual([1 + 2 + 7 + 8, 3 + 4 + 9 + 10, 5 + 6 + 11 + 12]);
    const big = TensorData.fromBigInts('int64', [2], [2n ** 62n + 1n, 2n ** 62n + 3n]);
    expect((run('ReduceSum', [big], {}, 13)[0].data as BigInt64Array)[0]).toBe(2n ** 63n + 4n - 2n ** 64n);
    expect((run('ReduceMax', [big], {}, 18)[0].data as BigInt64Array)[0]).toBe(2n ** 62n + 3n);
  });

  it('gives identities for empty sets and applies noop_with_empty_axes', () => {
    const empty = TensorData.zeros('int32', [2, 0]);
    expect(Array.from(run('ReduceMax', [empty, i64([1])], {}, 18)[0].data as Int32Array)).toEqual([-(2 ** 31), -(2 ** 31)]);
    expect(Array.from(run('ReduceProd', [empty, i64([1])], {}, 18)[0].data as Int32Array)).toEqual([1, 1]);
    const x = f32([2], [-3, 4]);
    expect(Array.from(run('ReduceSumSquare', [x, undefined], { noop_with_empty_axes: int(1) }, 18)[0].data as Float32Array)).toEqual([9, 16]);
  });

  it('wraps integer products like the integer type', () => {
    const x = TensorData.fromNumbers('int32', [2], [65536, 65537]);
    expect((run('ReduceProd', [x], {}, 13)[0].data as Int32Array)[0]).toBe(65536); // 2^32 + 2^16 wraps to 2^16
  });
});

describe('Einsum and Det', () => {
  const eq = (s: string): Record<string, AttrValue> => ({ equation: { type: 'string', value: s } });

  it('handles ellipsis broadcasting, diagonals and implicit output', () => {
    const a = f32([1, 2, 2], [1, 2, 3, 4]);
    const b = f32([3, 2, 1], [1, 1, 2, 2, 3, 3]);
    const y = run('Einsum', [a, b], eq('...ij,...jk'))[0];
    expect(y.dims).toEqual([3, 2, 1]);
    expect(Array.from(y.data as Float32Array)).toEqual([3, 7, 6, 14, 9, 21]);
    expect(Array.from(run('Einsum', [f32([2, 2], [1, 2, 3, 4])], eq('ii'))[0].data as Float32Array)).toEqual([5]);
    expect(run('Einsum', [f32([2, 2], [1, 2, 3, 4])], eq('ii->i'))[0].data).toEqual(Float32Array.of(1, 4));
    const three = run('Einsum', [f32([2], [1, 2]), f32([2, 3], [1, 2, 3, 4, 5, 6]), f32([3], [1, 0, 1])], eq('i,ij,j->'))[0];
    expect(three.dims).toEqual([]);
    expect(three.data[0]).toBe(1 * (1 + 3) + 2 * (4 + 6));
    expect(infer('Einsum', [{ kind: 'tensor', dtype: 'float32', shape: ['b', 4, 5] }, { kind: 'tensor', dtype: 'float32', shape: ['b', 5, 6] }], eq('bij,bjk->bki'))[0])
      .toEqual({ kind: 'tensor', dtype: 'float32', shape: ['b', 6, 4] });
    expect(() => run('Einsum', [f32([2, 3], [1, 2, 3, 4, 5, 6])], eq('ijk'))).toThrow(/rank 2/);
  });

  it('computes determinants with pivoting', () => {
    const m = f32([2, 3, 3], [0, 1, 2, 1, 0, 3, 4, -3, 8, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
    const d = run('Det', [m])[0];
    expect(d.dims).toEqual([2]);
    expect(d.data[0]).toBeCloseTo(-2, 5);
    expect(d.data[1]).toBeCloseTo(24, 5);
  });
});

describe('normalization', () => {
  it('uses the 2-D coercion before opset 13 and a single axis from 13', () => {
    const x = f32([2, 2], [1, 1, 1, 1]);
    expect(Array.from(run('Softmax', [x], { axis: int(0) }, 11)[0].data as Float32Array)).toEqual([0.25, 0.25, 0.25, 0.25]);
    expect(Array.from(run('Softmax', [x], { axis: int(0) }, 13)[0].data as Float32Array)).toEqual([0.5, 0.5, 0.5, 0.5]);
    expect(Array.from(run('Hardmax', [f32([3], [1, 3, 3])], {}, 13)[0].data as Float32Array)).toEqual([0, 1, 0]);
  });

  it('LayerNormalization outputs statistics and infers their shapes', () => {
    const x = f32([2, 2], [1, 3, 0, 4]);
    const [y, mean, inv] = run('LayerNormalization', [x, f32([2], [1, 1])], { epsilon: { type: 'float', value: 0 } }, 17, 3);
    expect(Array.from(y.data as Float32Array)).toEqual([-1, 1, -1, 1]);
    expect(mean.dims).toEqual([2, 1]);
    expect(Array.from(mean.data as Float32Array)).toEqual([2, 2]);
    expect(Array.from(inv.data as Float32Array)).toEqual([1, 0.5]);
    const types = infer('LayerNormalization', [{ kind: 'tensor', dtype: 'float16', shape: ['b', 's', 8] }], { axis: int(-2) }, 17, [], 3);
    expect(types[1]).toEqual({ kind: 'tensor', dtype: 'float32', shape: ['b', 1, 1] });
    expect(() => run('LayerNormalization', [x, f32([2], [1, 1])], { axis: int(2) }, 17)).toThrow(/out of range/);
  });

  it('softmax over the last axis of a large float32 tensor sums to one per row', () => {
    const n = 12 * 128 * 128;
    const x = new TensorData('float32', [12, 128, 128], new Float32Array(n).map((_, i) => Math.sin(i)));
    const y = run('Softmax', [x], {}, 13)[0];
    let s = 0;
    for (let k = 0; k < 128; k++) s += (y.data as Float32Array)[k];
    expect(s).toBeCloseTo(1, 5);
  });

  it('rejects bad loss targets', () => {
    const x = f32([1, 2], [-0.5, -1]);
    expect(() => run('NegativeLogLikelihoodLoss', [x, i64([2])], {}, 13)).toThrow(/outside the class range/);
    expect(run('NegativeLogLikelihoodLoss', [x, i64([1])], {}, 13)[0].data[0]).toBe(1);
  });
});

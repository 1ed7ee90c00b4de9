import { describe, it, expect } from 'vitest';
import { parseAttrs, type InferContext, type OpDef } from '../../src/ir/schema.js';
import type { AttrValue, Dim, Graph, Node, ValueType } from '../../src/ir/graph.js';
import { SequenceValue, TensorData, type Value } from '../../src/ir/tensor.js';
import { floatToFloat16 } from '../../src/ir/dtype.js';
import { executeGraph } from '../../src/ops/execute.js';
import shapeOps from '../../src/ops/shape.js';

const byName = new Map(shapeOps.map((d) => [d.name, d as OpDef]));

const ints = (value: number[]): AttrValue => ({ type: 'ints', value });
const int = (value: number): AttrValue => ({ type: 'int', value });
const str = (value: string): AttrValue => ({ type: 'string', value });
const i64 = (dims: number[], v: (number | bigint)[]) => TensorData.fromBigInts('int64', dims, v.map((x) => BigInt(x)));
const f32 = (dims: number[], v: number[]) => TensorData.fromNumbers('float32', dims, v);
const tt = (dtype: 'float32' | 'int64', shape?: Dim[]): ValueType => ({ kind: 'tensor', dtype, shape });

function node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue>): Node {
  return { name: '', opType, domain: '', inputs, outputs, attrs };
}

/** Run one node on the given inputs (undefined = omitted) and return its outputs. */
function run1(opType: string, inputs: (Value | undefined)[], attrs: Record<string, AttrValue> = {}, nOut = 1, opset = 21): Value[] {
  const names = inputs.map((v, i) => (v === undefined ? '' : `i${i}`));
  const outs = Array.from({ length: nOut }, (_, i) => `o${i}`);
  const unknown = (name: string) => ({ name, type: { kind: 'unknown' } as ValueType });
  const g: Graph = {
    name: 'g', nodes: [node(opType, names, outs, attrs)], inputs: names.filter(Boolean).map(unknown), outputs: outs.map(unknown),
    initializers: new Map(), valueInfo: new Map(),
  };
  const feeds = new Map<string, Value>();
  inputs.forEach((v, i) => { if (v !== undefined) feeds.set(`i${i}`, v); });
  const res = executeGraph(g, feeds, { opsets: new Map([['', opset]]) });
  return outs.map((o) => res.get(o) as Value);
}
const t1 = (...a: Parameters<typeof run1>) => run1(...a)[0] as TensorData;

function infer(opType: string, types: (ValueType | undefined)[], attrs: Record<string, AttrValue> = {}, constants: (TensorData | undefined)[] = [],
  nOut = 1, opset = 21): ValueType[] {
  const def = byName.get(opType)!;
  const n = node(opType, types.map((_, i) => `i${i}`), Array.from({ length: nOut }, (_, i) => `o${i}`), attrs);
  const ctx: InferContext<unknown> = { node: n, opset, attrs: parseAttrs(def, n), inputTypes: types, constant: (i) => constants[i], numOutputs: nOut };
  return def.infer!(ctx as never);
}
const shapeOf = (t: ValueType) => (t.kind === 'tensor' ? t.shape : 'not a tensor');

describe('shape family: inference on symbolic shapes', () => {
  it('Reshape resolves -1 when symbolic dims cancel, and copies 0 dims', () => {
    const r = infer('Reshape', [tt('float32', ['batch', 128, 768]), tt('int64', [4])], {}, [undefined, i64([4], [0, 0, 12, -1])]);
    expect(shapeOf(r[0])).toEqual(['batch', 128, 12, 64]);
    const u = infer('Reshape', [tt('float32', ['batch', 'seq', 768]), tt('int64', [2])], {}, [undefined, i64([2], [-1, 768])]);
    expect(shapeOf(u[0])).toEqual([undefined, 768]);
    const k = infer('Reshape', [tt('float32', ['b', 4]), tt('int64', [3])]);
    expect(shapeOf(k[0])).toEqual([undefined, undefined, undefined]);
  });

  it('Shape gives the length even for symbolic dims, honouring start/end', () => {
    expect(shapeOf(infer('Shape', [tt('float32', ['n', 'c', 7])])[0])).toEqual([3]);
    expect(shapeOf(infer('Shape', [tt('float32', ['n', 'c', 7])], { start: int(-2) })[0])).toEqual([2]);
    expect(shapeOf(infer('Shape', [tt('float32', undefined)])[0])).toEqual([undefined]);
  });

  it('Slice/Concat/Transpose/Gather/Unsqueeze keep symbolic dims where they are untouched', () => {
    const s = infer('Slice', [tt('float32', ['b', 10]), tt('int64', [1]), tt('int64', [1]), tt('int64', [1])], {},
      [undefined, i64([1], [2]), i64([1], [-1]), i64([1], [1])]);
    expect(shapeOf(s[0])).toEqual(['b', 7]);
    expect(shapeOf(infer('Concat', [tt('float32', ['b', 3]), tt('float32', ['b', 4])], { axis: int(1) })[0])).toEqual(['b', 7]);
    expect(shapeOf(infer('Transpose', [tt('float32', ['b', 's', 8])], { perm: ints([0, 2, 1]) })[0])).toEqual(['b', 8, 's']);
    expect(shapeOf(infer('Gather', [tt('float32', [100, 16]), tt('int64', ['b', 's'])])[0])).toEqual(['b', 's', 16]);
    expect(shapeOf(infer('Unsqueeze', [tt('float32', ['b', 's']), tt('int64', [2])], {}, [undefined, i64([2], [1, -1])])[0]))
      .toEqual(['b', 1, 's', 1]);
    expect(shapeOf(infer('Expand', [tt('float32', ['b', 1]), tt('int64', [2])], {}, [undefined, i64([2], [1, 5])])[0])).toEqual(['b', 5]);
  });

  it('returns unknown dims rather than guessing when the shape input is not constant', () => {
    expect(shapeOf(infer('Squeeze', [tt('float32', ['b', 1]), tt('int64', [1])])[0])).toBeUndefined();
    expect(shapeOf(infer('Tile', [tt('float32', [2, 3]), tt('int64', [2])])[0])).toEqual([undefined, undefined]);
    expect(shapeOf(infer('ConstantOfShape', [tt('int64', [3])])[0])).toEqual([undefined, undefined, undefined]);
    expect(shapeOf(infer('Range', [tt('float32', []), tt('float32', []), tt('float32', [])])[0])).toEqual([undefined]);
  });
});

describe('shape family: kernels', () => {
  it('moves float16 bit patterns, bigints and strings unchanged', () => {
    const h = new TensorData('float16', [2, 2], Uint16Array.from([0x8000, 0x7e01, 0x3c00, 0xfc00]));
    expect(Array.from(t1('Transpose', [h]).data as Uint16Array)).toEqual([0x8000, 0x3c00, 0x7e01, 0xfc00]);
    const big = i64([3], [2n ** 62n + 1n, -(2n ** 63n), 5n]);
    expect(Array.from(t1('Slice', [big, i64([1], [-1]), i64([1], [-(2 ** 62)]), i64([1], [0]), i64([1], [-1])]).data as BigInt64Array))
      .toEqual([5n, -(2n ** 63n), 2n ** 62n + 1n]);
    const s = TensorData.strings([2, 2], ['a', 'b', 'c', 'd']);
    expect(t1('Pad', [s, i64([4], [0, 1, 0, 1]), TensorData.strings([], ['-'])]).data).toEqual(['-', 'a', 'b', '-', '-', 'c', 'd', '-']);
  });

  it('Slice clamps INT64 min/max bounds and handles negative steps', () => {
    const x = f32([5], [0, 1, 2, 3, 4]);
    const big = 2n ** 63n - 1n, small = -(2n ** 63n);
    const rev = t1('Slice', [x, i64([1], [big]), i64([1], [small]), i64([1], [0]), i64([1], [-2])]);
    expect(Array.from(rev.data as Float32Array)).toEqual([4, 2, 0]);
    const empty = t1('Slice', [x, i64([1], [3]), i64([1], [1])]);
    expect(empty.dims).toEqual([0]);
  });

  it('Pad reflect/edge/wrap and negative pads', () => {
    const x = f32([3], [1, 2, 3]);
    const p = (mode: string, pads: number[]) => Array.from(t1('Pad', [x, i64([2], pads)], { mode: str(mode) }).data as Float32Array);
    expect(p('reflect', [4, 1])).toEqual([1, 2, 3, 2, 1, 2, 3, 2]);
    expect(p('edge', [2, 2])).toEqual([1, 1, 1, 2, 3, 3, 3]);
    expect(p('wrap', [2, 1])).toEqual([2, 3, 1, 2, 3, 1]);
    expect(p('constant', [-1, 1])).toEqual([2, 3, 0]);
  });

  it('Split with num_outputs makes the last chunk smaller (opset 18)', () => {
    const out = run1('Split', [f32([5], [1, 2, 3, 4, 5])], { num_outputs: int(3) }, 3, 18) as TensorData[];
    expect(out.map((t) => t.dims[0])).toEqual([2, 2, 1]);
  });

  it('TopK breaks ties toward the lower index; Unique sorts with all outputs', () => {
    const [v, i] = run1('TopK', [f32([5], [1, 3, 3, 2, 3]), i64([1], [3])], {}, 2, 11) as TensorData[];
    expect(Array.from(v.data as Float32Array)).toEqual([3, 3, 3]);
    expect(Array.from(i.data as BigInt64Array)).toEqual([1n, 2n, 4n]);
    const u = run1('Unique', [f32([5], [2, 1, 2, 0, 1])], {}, 4, 11) as TensorData[];
    expect(Array.from(u[0].data as Float32Array)).toEqual([0, 1, 2]);
    expect(u.slice(1).map((t) => Array.from(t.data as BigInt64Array).map(Number))).toEqual([[3, 1, 0], [2, 1, 2, 0, 1], [1, 2, 2]]);
  });

  it('ScatterND reduces exactly in float16 and int64', () => {
    const h = (v: number[]) => new TensorData('float16', [v.length], Uint16Array.from(v.map(floatToFloat16)));
    const out = t1('ScatterND', [h([1, 2, 3]), i64([2, 1], [0, 0]), h([2, 5])], { reduction: str('mul') }, 1, 18);
    expect(Array.from(out.data as Uint16Array)).toEqual([10, 2, 3].map(floatToFloat16));
    const big = t1('ScatterElements', [i64([2], [2n ** 60n, 0]), i64([1], [0]), i64([1], [3])], { reduction: str('add') }, 1, 18);
    expect((big.data as BigInt64Array)[0]).toBe(2n ** 60n + 3n);
  });

  it('Identity passes sequences and empty optionals through', () => {
    const seq = new SequenceValue([f32([1], [1])]);
    expect(run1('Identity', [seq])[0]).toBe(seq);
  });

  it('seeded training Dropout is reproducible; inference Dropout is identity with an all-true mask', () => {
    const x = f32([8], [1, 2, 3, 4, 5, 6, 7, 8]);
    const a = t1('Dropout', [x, f32([], [0.5]), new TensorData('bool', [], Uint8Array.of(1))], { seed: int(3) }, 1, 13);
    const b = t1('Dropout', [x, f32([], [0.5]), new TensorData('bool', [], Uint8Array.of(1))], { seed: int(3) }, 1, 13);
    expect(Array.from(a.data as Float32Array)).toEqual(Array.from(b.data as Float32Array));
    const [y, mask] = run1('Dropout', [x], {}, 2, 13) as TensorData[];
    expect(y).toBe(x);
    expect(mask.dtype).toBe('bool');
    expect(Array.from(mask.data as Uint8Array).every((m) => m === 1)).toBe(true);
  });

  it('rejects bad input with a descriptive error', () => {
    expect(() => run1('Reshape', [f32([2, 3], [1, 2, 3, 4, 5, 6]), i64([2], [4, -1])])).toThrow(/cannot reshape/);
    expect(() => run1('Gather', [f32([3], [1, 2, 3]), i64([1], [3])])).toThrow(/out of bounds/);
    expect(() => run1('ConstantOfShape', [i64([2], [-1, 4])])).toThrow(/invalid dimension/);
    expect(() => run1('Expand', [f32([2], [1, 2]), i64([3], [1e5, 1e5, 2])])).toThrow(/refusing to allocate/);
    expect(() => run1('Pad', [f32([2], [1, 2]), i64([2], [1, 0])], { mode: str('mirror') })).toThrow(/unknown pad mode/);
  });
});

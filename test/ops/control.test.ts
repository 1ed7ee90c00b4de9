import { describe, it, expect } from 'vitest';
import { parseAttrs, type InferContext, type OpDef } from '../../src/ir/schema.js';
import type { AttrValue, Graph, Node, ValueInfo, ValueType } from '../../src/ir/graph.js';
import { SequenceValue, TensorData, type Value } from '../../src/ir/tensor.js';
import { executeGraph } from '../../src/ops/execute.js';
import controlOps, { setMaxLoopIterations } from '../../src/ops/control.js';
import sequenceOps from '../../src/ops/sequence.js';
import rnnOps from '../../src/ops/rnn.js';

const byName = new Map([...controlOps, ...sequenceOps, ...rnnOps].map((d) => [d.name, d as OpDef]));

const f32 = (shape?: (number | string | undefined)[]): ValueType => ({ kind: 'tensor', dtype: 'float32', shape });
const vi = (name: string, type: ValueType): ValueInfo => ({ name, type });

function node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}): Node {
  return { name: '', opType, domain: '', inputs, outputs, attrs };
}

function graph(nodes: Node[], inputs: ValueInfo[], outputs: ValueInfo[]): Graph {
  return { name: 'g', nodes, inputs, outputs, initializers: new Map(), valueInfo: new Map() };
}

/** Run one node with the given inputs (named i0, i1, ...; undefined = omitted) and return its outputs. */
function run1(opType: string, inputs: (Value | undefined)[], attrs: Record<string, AttrValue> = {}, nOut = 1, opset = 21): Value[] {
  const names = inputs.map((v, i) => (v === undefined ? '' : `i${i}`));
  const outs = Array.from({ length: nOut }, (_, i) => `o${i}`);
  const unknown = (n: string) => vi(n, { kind: 'unknown' });
  const g = graph([node(opType, names, outs, attrs)], names.filter(Boolean).map(unknown), outs.map(unknown));
  const feeds = new Map<string, Value>();
  inputs.forEach((v, i) => { if (v !== undefined) feeds.set(`i${i}`, v); });
  const res = executeGraph(g, feeds, { opsets: new Map([['', opset]]) });
  return outs.map((o) => res.get(o) as Value);
}

function infer(opType: string, types: (ValueType | undefined)[], attrs: Record<string, AttrValue> = {}, nOut = 1, opset = 21,
  constants: (TensorData | undefined)[] = []): ValueType[] {
  const def = byName.get(opType)!;
  const n = node(opType, types.map((_, i) => `i${i}`), Array.from({ length: nOut }, (_, i) => `o${i}`), attrs);
  const ctx: InferContext<unknown> = {
    node: n, opset, attrs: parseAttrs(def, n), inputTypes: types, constant: (i) => constants[i], numOutputs: nOut,
  };
  return def.infer!(ctx as InferContext<never>);
}

const i64 = (v: number, dims: number[] = []) => TensorData.fromBigInts('int64', dims, [BigInt(v)]);
const bool = (v: boolean) => TensorData.fromNumbers('bool', [], [v ? 1 : 0]);
const floats = (dims: number[], v: number[]) => TensorData.fromNumbers('float32', dims, v);

// A Loop body that passes the condition and one carried value through and emits the iteration number as scan output.
const iterT: ValueType = { kind: 'tensor', dtype: 'int64', shape: [] }, condT: ValueType = { kind: 'tensor', dtype: 'bool', shape: [] };
const passBody = graph([], [vi('it', iterT), vi('c', condT), vi('v', f32([2]))], [vi('c', condT), vi('v', f32([2])), vi('it', iterT)]);

describe('Loop', () => {
  it('runs M iterations without a cond input and stacks scan outputs', () => {
    const [v, scan] = run1('Loop', [i64(3), undefined, floats([2], [1, 2])], { body: { type: 'graph', value: passBody } }, 2);
    expect((v as TensorData).toNumberArray()).toEqual([1, 2]);
    expect((scan as TensorData).dims).toEqual([3]);
    expect((scan as TensorData).toNumberArray()).toEqual([0, 1, 2]);
  });

  it('produces an empty scan output with the body shape for zero iterations', () => {
    const body = graph([], passBody.inputs, [passBody.outputs[0], passBody.outputs[1], vi('v', f32([2]))]);
    const [, scan] = run1('Loop', [i64(0), bool(true), floats([2], [1, 2])], { body: { type: 'graph', value: body } }, 2);
    expect((scan as TensorData).dims).toEqual([0, 2]);
  });

  it('stops a loop whose condition never turns false instead of hanging', () => {
    const prev = setMaxLoopIterations(50);
    try {
      expect(() => run1('Loop', [undefined, bool(true), floats([2], [1, 2])], { body: { type: 'graph', value: passBody } }, 2))
        .toThrow(/ran 50 iterations/);
    } finally {
      setMaxLoopIterations(prev);
    }
  });

  it('infers carried and scan output types', () => {
    const t = infer('Loop', [undefined, undefined, f32(['N'])], { body: { type: 'graph', value: passBody } }, 2);
    // zero iterations return the initial value, so only dims shared with the body's output are known
    expect(t[0]).toEqual(f32([undefined]));
    expect(infer('Loop', [undefined, undefined, f32([2])], { body: { type: 'graph', value: passBody } }, 2)[0]).toEqual(f32([2]));
    expect(t[1]).toEqual({ kind: 'tensor', dtype: 'int64', shape: [undefined] });
  });
});

describe('If', () => {
  it('merges the branch types', () => {
    const a = graph([], [], [vi('x', f32([2, 3]))]), b = graph([], [], [vi('y', f32([2, 4]))]);
    const t = infer('If', [condT], { then_branch: { type: 'graph', value: a }, else_branch: { type: 'graph', value: b } });
    expect(t[0]).toEqual(f32([2, undefined]));
  });
});

describe('Scan', () => {
  it('honours scan_input_directions and scan_output_axes', () => {
    // body: state passes through, scan output = the slice
    const body = graph([], [vi('s', f32([])), vi('x', f32([2]))], [vi('s', f32([])), vi('x', f32([2]))]);
    const x = floats([2, 3], [1, 2, 3, 4, 5, 6]);
    const attrs: Record<string, AttrValue> = {
      body: { type: 'graph', value: body }, num_scan_inputs: { type: 'int', value: 1 },
      scan_input_axes: { type: 'ints', value: [1] }, scan_input_directions: { type: 'ints', value: [1] },
      scan_output_axes: { type: 'ints', value: [1] },
    };
    const [, y] = run1('Scan', [floats([], [0]), x], attrs, 2, 11);
    expect((y as TensorData).dims).toEqual([2, 3]);
    expect((y as TensorData).toNumberArray()).toEqual([3, 2, 1, 6, 5, 4]);
    const t = infer('Scan', [f32([]), f32(['B', 7])], attrs, 2, 11);
    expect(t[1]).toEqual(f32([2, 7]));
  });
});

describe('sequences', () => {
  it('splits with a scalar split leaving a smaller last chunk', () => {
    const [seq] = run1('SplitToSequence', [floats([5], [1, 2, 3, 4, 5]), i64(2)]);
    expect((seq as SequenceValue).items.map((t) => t.toNumberArray())).toEqual([[1, 2], [3, 4], [5]]);
  });

  it('infers SplitToSequence and ConcatFromSequence on symbolic shapes', () => {
    expect(infer('SplitToSequence', [f32(['N', 6])], { axis: { type: 'int', value: 1 }, keepdims: { type: 'int', value: 0 } }))
      .toEqual([{ kind: 'sequence', elem: f32(['N']) }]);
    expect(infer('SplitToSequence', [f32(['N', 6]), { kind: 'tensor', dtype: 'int64', shape: [2] }], { axis: { type: 'int', value: 1 } }, 1, 21,
      [undefined, TensorData.fromBigInts('int64', [2], [3n, 3n])])).toEqual([{ kind: 'sequence', elem: f32(['N', 3]) }]);
    const seq: ValueType = { kind: 'sequence', elem: f32(['N', 4]) };
    expect(infer('ConcatFromSequence', [seq], { axis: { type: 'int', value: -1 }, new_axis: { type: 'int', value: 1 } }))
      .toEqual([f32(['N', 4, undefined])]);
  });

  it('rejects out-of-range positions with the valid range', () => {
    const s = new SequenceValue([floats([1], [1])], 'float32');
    expect(() => run1('SequenceInsert', [s, floats([1], [2]), i64(3)])).toThrow(/out of range \[-1, 1\]/);
    expect((run1('SequenceAt', [s, i64(-1)])[0] as TensorData).toNumberArray()).toEqual([1]);
    expect(() => run1('SequenceInsert', [s, i64(1)])).toThrow(/int64 tensor into a sequence of float32/);
  });

  it('handles empty optionals', () => {
    expect((run1('OptionalHasElement', [null])[0] as TensorData).toNumberArray()).toEqual([0]);
    expect(() => run1('OptionalGetElement', [null])).toThrow(/empty/);
  });
});

describe('recurrent', () => {
  it('infers RNN shapes for both layouts', () => {
    const x = f32(['S', 'B', 4]);
    const t = infer('RNN', [x, f32([2, 3, 4]), f32([2, 3, 3])], { direction: { type: 'string', value: 'bidirectional' } }, 2);
    expect(t).toEqual([f32(['S', 2, 'B', 3]), f32([2, 'B', 3])]);
    const t1 = infer('LSTM', [f32(['B', 'S', 4])], { hidden_size: { type: 'int', value: 5 }, layout: { type: 'int', value: 1 } }, 3);
    expect(t1).toEqual([f32(['B', 'S', 1, 5]), f32(['B', 1, 5]), f32(['B', 1, 5])]);
  });

  it('LSTM respects sequence_lens and returns Y_c', () => {
    // zero weights: every gate is 0.5 and the candidate is 0, so C halves each step and H = 0.5 * tanh(C)
    const H = 1, x = floats([2, 2, 1], [1, 1, 1, 1]);
    const [y, yh, yc] = run1('LSTM', [x, floats([1, 4, 1], [0, 0, 0, 0]), floats([1, 4, H], [0, 0, 0, 0]), undefined,
      TensorData.fromNumbers('int32', [2], [1, 2]), undefined, floats([1, 2, 1], [1, 1])], { hidden_size: { type: 'int', value: 1 } }, 3);
    const h = (c: number) => 0.5 * Math.tanh(c);
    expect(Array.from((yc as TensorData).toNumberArray())).toEqual([0.5, 0.25]);
    (yh as TensorData).toNumberArray().forEach((v, i) => expect(v).toBeCloseTo([h(0.5), h(0.25)][i], 6));
    const yv = (y as TensorData).toNumberArray(); // [S=2, dir=1, B=2, H=1]
    expect(yv[2]).toBe(0); // batch 0 has length 1: no output at t=1
    expect(yv[3]).toBeCloseTo(h(0.25), 6);
  });

  it('GRU applies linear_before_reset as specified', () => {
    const [wz, wr, wh, rz, rr, rh, rbh, h0] = [0.3, -0.2, 0.5, 0.1, 0.4, -0.7, 0.25, 0.5];
    const sig = (v: number) => 1 / (1 + Math.exp(-v));
    const z = sig(wz + rz * h0), r = sig(wr + rr * h0);
    for (const lbr of [0, 1]) {
      const hc = Math.tanh(lbr ? wh + r * (rh * h0 + rbh) : wh + rh * (r * h0) + rbh);
      const want = (1 - z) * hc + z * h0;
      const [, yh] = run1('GRU', [floats([1, 1, 1], [1]), floats([1, 3, 1], [wz, wr, wh]), floats([1, 3, 1], [rz, rr, rh]),
        floats([1, 6], [0, 0, 0, 0, 0, rbh]), undefined, floats([1, 1, 1], [h0])],
      { hidden_size: { type: 'int', value: 1 }, linear_before_reset: { type: 'int', value: lbr } }, 2);
      expect((yh as TensorData).toNumberArray()[0]).toBeCloseTo(want, 6);
    }
  });
});

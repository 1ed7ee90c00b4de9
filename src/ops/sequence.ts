// Sequence and optional operators. A sequence is a SequenceValue (a list of tensors of one element type); an empty
// optional is `null` and a present optional is the value it holds.
import type { ValueType } from '../ir/graph.js';
import { dtypeFromOnnx, type DType } from '../ir/dtype.js';
import { attr, defineOp, type OpDef } from '../ir/schema.js';
import { SequenceValue, TensorData, describeValue, type Value } from '../ir/tensor.js';
import { normAxis } from './util.js';
import { concatAxis, normNewAxis, splitAxis, stackAxis } from './sequence-tensor.js';
import { UNKNOWN, mergeTypes, outerType, seqElem } from './control-types.js';

function sequenceInput(v: Value | undefined, what = 'input 0'): SequenceValue {
  if (v instanceof SequenceValue) return v;
  throw new Error(`${what} must be a sequence, got ${describeValue(v)}`);
}

/** A scalar (or one-element) integer input as a number. */
function scalarIndex(t: TensorData, what: string): number {
  if (t.size !== 1) throw new Error(`${what} must be a scalar, got shape [${t.dims.join(', ')}]`);
  if (t.dtype !== 'int32' && t.dtype !== 'int64') throw new Error(`${what} must be int32 or int64, got ${t.dtype}`);
  return Number(t.toBigInts()[0]);
}

/** Resolve a possibly negative position against a sequence of length n; valid range [-n, n - 1 + extra]. */
function seqPosition(pos: number, n: number, extra: number, what: string): number {
  const p = pos < 0 ? pos + n : pos;
  if (!(p >= 0 && p < n + extra)) throw new Error(`${what} ${pos} is out of range [${-n}, ${n - 1 + extra}] for a sequence of length ${n}`);
  return p;
}

function checkElemType(seq: SequenceValue, t: TensorData): void {
  const dt = seq.elemType ?? seq.items[0]?.dtype;
  if (dt && dt !== t.dtype) throw new Error(`cannot put a ${t.dtype} tensor into a sequence of ${dt} tensors`);
}

/** Sequence type whose element is `elem` with the shape dropped when `seq`'s element shape is not the same. */
function insertType(seqT: ValueType | undefined, t: ValueType | undefined): ValueType {
  const e = seqElem(seqT);
  if (e.kind === 'tensor') {
    return { kind: 'sequence', elem: mergeTypes(e, t && t.kind === 'tensor' ? t : { kind: 'tensor', dtype: e.dtype }) };
  }
  if (t && t.kind === 'tensor') return { kind: 'sequence', elem: { kind: 'tensor', dtype: t.dtype } };
  return { kind: 'sequence', elem: UNKNOWN };
}

const SequenceConstruct = defineOp({
  name: 'SequenceConstruct', versions: [11], attrs: {}, inputs: [1, Infinity], outputs: [1, 1],
  doc: 'A sequence of the input tensors',
  infer: (ctx) => {
    const elem = ctx.inputTypes.reduce<ValueType>((a, t, i) => (i === 0 ? t ?? UNKNOWN : mergeTypes(a, t)), UNKNOWN);
    return [{ kind: 'sequence', elem }];
  },
  run: (ctx) => {
    const items = ctx.inputs.map((_, i) => ctx.tensor(i));
    const dt = items[0].dtype;
    items.forEach((t, i) => {
      if (t.dtype !== dt) throw new Error(`all inputs must have one element type: input 0 is ${dt}, input ${i} is ${t.dtype}`);
    });
    return [new SequenceValue(items, dt)];
  },
});

function seqEmptyDType(dtype: number | undefined): DType {
  return dtype === undefined ? 'float32' : dtypeFromOnnx(dtype);
}

const SequenceEmpty = defineOp({
  name: 'SequenceEmpty', versions: [11], attrs: { dtype: attr.int() }, inputs: [0, 0], outputs: [1, 1],
  doc: 'An empty sequence of the given element type (default float)',
  infer: (ctx) => [{ kind: 'sequence', elem: { kind: 'tensor', dtype: seqEmptyDType(ctx.attrs.dtype) } }],
  run: (ctx) => [new SequenceValue([], seqEmptyDType(ctx.attrs.dtype))],
});

const SequenceAt = defineOp({
  name: 'SequenceAt', versions: [11], attrs: {}, inputs: [2, 2], outputs: [1, 1],
  doc: 'The tensor at a position of a sequence (negative counts from the back)',
  infer: (ctx) => [seqElem(ctx.inputTypes[0])],
  run: (ctx) => {
    const seq = sequenceInput(ctx.inputs[0]);
    const p = seqPosition(scalarIndex(ctx.tensor(1), 'position'), seq.items.length, 0, 'position');
    return [seq.items[p]];
  },
});

const SequenceInsert = defineOp({
  name: 'SequenceInsert', versions: [11], attrs: {}, inputs: [2, 3], outputs: [1, 1],
  doc: 'A copy of the sequence with a tensor inserted at a position (default: at the end)',
  infer: (ctx) => [insertType(ctx.inputTypes[0], ctx.inputTypes[1])],
  run: (ctx) => {
    const seq = sequenceInput(ctx.inputs[0]);
    const t = ctx.tensor(1);
    checkElemType(seq, t);
    const pos = ctx.optionalTensor(2);
    const n = seq.items.length;
    const p = pos ? seqPosition(scalarIndex(pos, 'position'), n, 1, 'position') : n;
    const items = [...seq.items.slice(0, p), t, ...seq.items.slice(p)];
    return [new SequenceValue(items, seq.elemType ?? t.dtype)];
  },
});

const SequenceErase = defineOp({
  name: 'SequenceErase', versions: [11], attrs: {}, inputs: [1, 2], outputs: [1, 1],
  doc: 'A copy of the sequence without the tensor at a position (default: the last)',
  infer: (ctx) => [ctx.inputTypes[0] ?? { kind: 'sequence', elem: UNKNOWN }],
  run: (ctx) => {
    const seq = sequenceInput(ctx.inputs[0]);
    const pos = ctx.optionalTensor(1);
    const n = seq.items.length;
    if (n === 0) throw new Error('cannot erase from an empty sequence');
    const p = seqPosition(pos ? scalarIndex(pos, 'position') : -1, n, 0, 'position');
    return [new SequenceValue([...seq.items.slice(0, p), ...seq.items.slice(p + 1)], seq.elemType ?? seq.items[0].dtype)];
  },
});

const SequenceLength = defineOp({
  name: 'SequenceLength', versions: [11], attrs: {}, inputs: [1, 1], outputs: [1, 1],
  doc: 'Number of tensors in a sequence (int64 scalar)',
  infer: () => [{ kind: 'tensor', dtype: 'int64', shape: [] }],
  run: (ctx) => [TensorData.fromBigInts('int64', [], [BigInt(sequenceInput(ctx.inputs[0]).items.length)])],
});

/** Chunk lengths of SplitToSequence along an axis of size `len`. */
function splitLengths(split: TensorData | undefined, len: number): number[] {
  if (!split) return new Array<number>(len).fill(1);
  if (split.dtype !== 'int32' && split.dtype !== 'int64') throw new Error(`split must be int32 or int64, got ${split.dtype}`);
  const v = split.toNumberArray();
  if (split.rank === 0) {
    const s = v[0];
    if (!(s > 0)) throw new Error(`a scalar split must be positive, got ${s}`);
    const out: number[] = [];
    for (let start = 0; start < len; start += s) out.push(Math.min(s, len - start));
    return out;
  }
  if (split.rank !== 1) throw new Error(`split must be a scalar or a 1-D tensor, got shape [${split.dims.join(', ')}]`);
  if (v.some((x) => !(x >= 0))) throw new Error(`split values must be >= 0, got [${v.join(', ')}]`);
  const sum = v.reduce((a, b) => a + b, 0);
  if (sum !== len) throw new Error(`split values [${v.join(', ')}] sum to ${sum}, but the axis has size ${len}`);
  return v;
}

const SplitToSequence = defineOp({
  name: 'SplitToSequence', versions: [11, 24], attrs: { axis: attr.int(0), keepdims: attr.int(1) }, inputs: [1, 2], outputs: [1, 1],
  doc: 'Split a tensor along an axis into a sequence of tensors',
  infer: (ctx) => {
    const t = ctx.inputTypes[0];
    if (!t || t.kind !== 'tensor') return [{ kind: 'sequence', elem: UNKNOWN }];
    if (!t.shape || t.shape.length === 0) return [{ kind: 'sequence', elem: { kind: 'tensor', dtype: t.dtype } }];
    const axis = normAxis(ctx.attrs.axis, t.shape.length);
    const hasSplit = ctx.inputTypes[1] !== undefined;
    const shape = [...t.shape];
    if (!hasSplit && !ctx.attrs.keepdims) shape.splice(axis, 1);
    else {
      let size: number | undefined = hasSplit ? undefined : 1;
      const split = hasSplit ? ctx.constant(1) : undefined;
      const len = shape[axis];
      if (split && typeof len === 'number') {
        const v = splitLengths(split, len);
        if (v.length > 0 && v.every((x) => x === v[0])) size = v[0];
      }
      shape[axis] = size;
    }
    return [{ kind: 'sequence', elem: { kind: 'tensor', dtype: t.dtype, shape } }];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    if (t.rank === 0) throw new Error('cannot split a scalar; the input needs rank >= 1');
    const axis = normAxis(ctx.attrs.axis, t.rank);
    const split = ctx.optionalTensor(1);
    let parts = splitAxis(t, axis, splitLengths(split, t.dims[axis]));
    if (!split && !ctx.attrs.keepdims) parts = parts.map((p) => p.reshape([...p.dims.slice(0, axis), ...p.dims.slice(axis + 1)]));
    return [new SequenceValue(parts, t.dtype)];
  },
});

const ConcatFromSequence = defineOp({
  name: 'ConcatFromSequence', versions: [11], attrs: { axis: attr.int(), new_axis: attr.int(0) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'Concatenate (or stack, with new_axis=1) the tensors of a sequence',
  infer: (ctx) => {
    const e = seqElem(ctx.inputTypes[0]);
    if (e.kind !== 'tensor') return [UNKNOWN];
    if (!e.shape || ctx.attrs.axis === undefined) return [{ kind: 'tensor', dtype: e.dtype }];
    const shape = [...e.shape];
    if (ctx.attrs.new_axis) shape.splice(normNewAxis(ctx.attrs.axis, shape.length), 0, undefined);
    else shape[normAxis(ctx.attrs.axis, shape.length)] = undefined;
    return [{ kind: 'tensor', dtype: e.dtype, shape }];
  },
  run: (ctx) => {
    const seq = sequenceInput(ctx.inputs[0]);
    const { axis, new_axis } = ctx.attrs;
    if (axis === undefined) throw new Error("the required attribute 'axis' is missing");
    if (seq.items.length === 0) throw new Error('cannot concatenate an empty sequence');
    const rank = seq.items[0].rank;
    if (new_axis) return [stackAxis(seq.items, normNewAxis(axis, rank), 'sequence item')];
    if (rank === 0) throw new Error('cannot concatenate scalars without new_axis=1');
    return [concatAxis(seq.items, normAxis(axis, rank), 'sequence item')];
  },
});

const SequenceMap = defineOp({
  name: 'SequenceMap', versions: [17], attrs: { body: attr.graph() }, inputs: [1, Infinity], outputs: [1, Infinity],
  doc: 'Apply a graph to each element of the input sequence(s); outputs are sequences',
  infer: (ctx) => {
    const body = ctx.attrs.body;
    return Array.from({ length: ctx.numOutputs }, (_, k): ValueType => ({ kind: 'sequence', elem: outerType(body?.outputs[k]?.type) }));
  },
  run: (ctx) => {
    const body = ctx.attrs.body;
    if (!body) throw new Error("the required attribute 'body' is missing");
    const seq = sequenceInput(ctx.inputs[0]);
    const n = seq.items.length;
    ctx.inputs.forEach((v, i) => {
      if (v instanceof SequenceValue && v.items.length !== n) {
        throw new Error(`input ${i} is a sequence of ${v.items.length} tensors, but input 0 has ${n}; ` +
          'all sequences must have one length');
      }
      if (v === undefined || v === null) throw new Error(`input ${i} must be a tensor or a sequence, got ${describeValue(v)}`);
    });
    const nOut = body.outputs.length;
    const outs: TensorData[][] = Array.from({ length: nOut }, () => []);
    for (let j = 0; j < n; j++) {
      const feeds = ctx.inputs.map((v) => (v instanceof SequenceValue ? v.items[j] : (v as Value)));
      const res = ctx.runSubgraph(body, feeds);
      res.forEach((r, k) => {
        if (!(r instanceof TensorData)) throw new Error(`body output ${k} must be a tensor, got ${describeValue(r)} for element ${j}`);
        outs[k].push(r);
      });
    }
    return outs.map((items, k) => {
      const declared = body.outputs[k].type;
      const dt = items[0]?.dtype ?? (declared.kind === 'tensor' ? declared.dtype : undefined);
      return new SequenceValue(items, dt);
    });
  },
});

const Optional = defineOp({
  name: 'Optional', versions: [15], attrs: { type: attr.type() }, inputs: [0, 1], outputs: [1, 1],
  doc: 'An optional holding the input, or an empty optional of the given type',
  infer: (ctx) => {
    const t = ctx.inputTypes[0];
    return [{ kind: 'optional', elem: t ?? ctx.attrs.type ?? UNKNOWN }];
  },
  run: (ctx) => {
    const v = ctx.inputs[0];
    if (v === undefined) {
      if (!ctx.attrs.type) throw new Error("an Optional without an input needs the 'type' attribute");
      return [null];
    }
    return [v];
  },
});

const OptionalHasElement = defineOp({
  name: 'OptionalHasElement', versions: [15, 18], attrs: {}, inputs: [0, 1], outputs: [1, 1],
  doc: 'Whether an optional holds a value (false for an omitted input)',
  infer: () => [{ kind: 'tensor', dtype: 'bool', shape: [] }],
  run: (ctx) => {
    const v = ctx.inputs[0];
    return [TensorData.fromNumbers('bool', [], [v === undefined || v === null ? 0 : 1])];
  },
});

const OptionalGetElement = defineOp({
  name: 'OptionalGetElement', versions: [15, 18], attrs: {}, inputs: [1, 1], outputs: [1, 1],
  doc: 'The value held by an optional (a tensor or sequence input is returned as is)',
  infer: (ctx) => {
    const t = ctx.inputTypes[0];
    return [t && t.kind === 'optional' ? t.elem : t ?? UNKNOWN];
  },
  run: (ctx) => {
    const v = ctx.inputs[0];
    if (v === null || v === undefined) throw new Error('the input optional is empty');
    return [v];
  },
});

const ops: OpDef<any>[] = [
  SequenceConstruct, SequenceEmpty, SequenceAt, SequenceInsert, SequenceErase, SequenceLength, SplitToSequence,
  ConcatFromSequence, SequenceMap, Optional, OptionalHasElement, OptionalGetElement,
];
export default ops;

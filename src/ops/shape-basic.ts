// Constants, shape queries and the ops that only reinterpret or rearrange a tensor's layout: Constant,
// ConstantOfShape, Identity, Shape, Size, Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice,
// Expand, Tile, Pad.
import type { Dim } from '../ir/graph.js';
import { attr, defineOp, type KernelContext, type OpDef } from '../ir/schema.js';
import { TensorData, stridesOf } from '../ir/tensor.js';
import { broadcastDims, broadcastShapes, broadcastStrides, prod } from './util.js';
import {
  UNKNOWN, constInts, copyBlock, dimProduct, encodeSlot, inType, int64Tensor, intsOf, mappedCopy,
  normAxes, slotWidth, stridedCopy, tensorOut,
} from './shape-util.js';

// ---------------------------------------------------------------------------------------------------------------
// Constant, ConstantOfShape, Identity, Shape, Size

const constantAttrs = {
  value: attr.tensor(), sparse_value: attr.sparseTensor(), value_float: attr.float(), value_floats: attr.floats(),
  value_int: attr.int(), value_ints: attr.ints(), value_string: attr.string(), value_strings: attr.strings(),
};
type ConstantAttrs = { [K in keyof typeof constantAttrs]: (typeof constantAttrs)[K]['default'] };

function constantValue(a: ConstantAttrs): TensorData {
  const set = Object.entries(a).filter(([, v]) => v !== undefined).map(([k]) => k);
  if (set.length !== 1) throw new Error(`Constant needs exactly one value attribute, found ${set.length ? set.join(', ') : 'none'}`);
  if (a.value) return a.value;
  if (a.sparse_value) return a.sparse_value;
  if (a.value_float !== undefined) return TensorData.scalar('float32', a.value_float);
  if (a.value_floats) return TensorData.fromNumbers('float32', [a.value_floats.length], a.value_floats);
  if (a.value_int !== undefined) return int64Tensor([], [a.value_int]);
  if (a.value_ints) return int64Tensor([a.value_ints.length], a.value_ints);
  if (a.value_string !== undefined) return TensorData.strings([], [a.value_string]);
  return TensorData.strings([a.value_strings!.length], [...a.value_strings!]);
}

const Constant = defineOp({
  name: 'Constant', versions: [1, 9, 11, 12, 13, 19, 21, 23, 24, 25], attrs: constantAttrs, inputs: [0, 0], outputs: [1, 1],
  doc: 'A constant tensor from one of the value* attributes',
  infer: (ctx) => {
    const t = constantValue(ctx.attrs);
    return [tensorOut(t.dtype, [...t.dims])];
  },
  run: (ctx) => [constantValue(ctx.attrs)],
});

function checkShape(dims: number[], what = 'shape'): number[] {
  for (const d of dims) if (!(Number.isInteger(d) && d >= 0)) throw new Error(`${what} [${dims.join(', ')}] has an invalid dimension ${d}`);
  return dims;
}

const ConstantOfShape = defineOp({
  name: 'ConstantOfShape', versions: [9, 20, 21, 23, 24, 25], attrs: { value: attr.tensor() }, inputs: [1, 1], outputs: [1, 1],
  doc: 'A tensor of the given shape filled with one value',
  infer: (ctx) => {
    const dtype = ctx.attrs.value?.dtype ?? 'float32';
    const shape = constInts(ctx, 0);
    if (shape) return [tensorOut(dtype, shape)];
    const n = inType(ctx, 0)?.shape?.[0];
    return [tensorOut(dtype, typeof n === 'number' ? new Array<Dim>(n).fill(undefined) : undefined)];
  },
  run: (ctx) => {
    const v = ctx.attrs.value ?? TensorData.scalar('float32', 0);
    if (v.size !== 1) throw new Error(`value must hold exactly one element, found ${v.size}`);
    const out = TensorData.zeros(v.dtype, checkShape(intsOf(ctx.tensor(0))));
    const w = slotWidth(v.dtype);
    const d = out.data as unknown[], x = v.data as unknown as unknown[];
    for (let i = 0; i < out.size; i++) for (let c = 0; c < w; c++) d[i * w + c] = x[c];
    return [out];
  },
});

const Identity = defineOp({
  name: 'Identity', versions: [1, 13, 14, 16, 19, 21, 23, 24, 25], attrs: {}, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = x (tensors, sequences and optionals)',
  infer: (ctx) => [ctx.inputTypes[0] ?? UNKNOWN],
  run: (ctx) => {
    const v = ctx.inputs[0];
    if (v === undefined) throw new Error('Identity needs an input value');
    return [v];
  },
});

function shapeRange(rank: number, start: number, end: number | undefined): [number, number] {
  const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + rank : v, 0), rank);
  const s = clamp(start), e = clamp(end ?? rank);
  return [s, Math.max(s, e)];
}

const Shape = defineOp({
  name: 'Shape', versions: [1, 13, 15, 19, 21, 23, 24, 25], attrs: { start: attr.int(0), end: attr.int() },
  inputs: [1, 1], outputs: [1, 1],
  doc: 'The shape of a tensor as a 1-D int64 tensor (optionally a [start, end) range of it)',
  infer: (ctx) => {
    const shape = inType(ctx, 0)?.shape;
    if (!shape) return [tensorOut('int64', [undefined])];
    const [s, e] = ctx.opset >= 15 ? shapeRange(shape.length, ctx.attrs.start, ctx.attrs.end) : [0, shape.length];
    return [tensorOut('int64', [e - s])];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    const [s, e] = ctx.opset >= 15 ? shapeRange(t.rank, ctx.attrs.start, ctx.attrs.end) : [0, t.rank];
    return [int64Tensor([e - s], t.dims.slice(s, e))];
  },
});

const Size = defineOp({
  name: 'Size', versions: [1, 13, 19, 21, 23, 24, 25], attrs: {}, inputs: [1, 1], outputs: [1, 1],
  doc: 'The number of elements of a tensor as an int64 scalar',
  infer: () => [tensorOut('int64', [])],
  run: (ctx) => [int64Tensor([], [ctx.tensor(0).size])],
});

// ---------------------------------------------------------------------------------------------------------------
// Reshape, Flatten, Squeeze, Unsqueeze

/**
 * Reshape's target dims: 0 copies the input dim (unless allowzero), -1 is inferred. Works on static dims with
 * symbolic names: the -1 dim is resolved when the symbolic factors of input and output cancel.
 */
export function reshapeDims(inDims: readonly Dim[], shape: readonly number[], allowzero: boolean): Dim[] {
  let inferAt = -1;
  const out: Dim[] = shape.map((s, i) => {
    if (s === -1) {
      if (inferAt >= 0) throw new Error(`shape [${shape.join(', ')}] has more than one -1`);
      inferAt = i;
      return undefined;
    }
    if (!Number.isInteger(s) || s < -1) throw new Error(`shape [${shape.join(', ')}] has an invalid dimension ${s}`);
    if (s === 0 && !allowzero) {
      if (i >= inDims.length) throw new Error(`shape [${shape.join(', ')}] copies dimension ${i} (0), but the input has rank ${inDims.length}`);
      return inDims[i];
    }
    return s;
  });
  if (allowzero && inferAt >= 0 && shape.includes(0)) throw new Error(`shape [${shape.join(', ')}] combines -1 with 0 while allowzero=1`);
  const factor = (dims: readonly Dim[]) => {
    let n = 1;
    const syms: string[] = [];
    for (const d of dims) {
      if (typeof d === 'number') n *= d;
      else if (typeof d === 'string') syms.push(d);
      else return undefined;
    }
    return { n, syms: syms.sort() };
  };
  const fin = factor(inDims), fout = factor(out.filter((_, i) => i !== inferAt));
  if (inferAt >= 0) {
    if (fin && fout) {
      const rest = [...fin.syms];
      let ok = true;
      for (const s of fout.syms) {
        const k = rest.indexOf(s);
        if (k < 0) ok = false;
        else rest.splice(k, 1);
      }
      if (ok && rest.length === 0) {
        if (fout.n === 0 || fin.n % fout.n !== 0) {
          throw new Error(`cannot reshape ${fin.n} elements into [${shape.join(', ')}]`);
        }
        out[inferAt] = fin.n / fout.n;
      }
    }
  } else if (fin && fout && fin.syms.length === 0 && fout.syms.length === 0 && fin.n !== fout.n) {
    throw new Error(`cannot reshape [${inDims.join(', ')}] (${fin.n} elements) into [${shape.join(', ')}] (${fout.n} elements)`);
  }
  return out;
}

const Reshape = defineOp({
  name: 'Reshape', versions: [1, 5, 13, 14, 19, 21, 23, 24, 25], attrs: { shape: attr.ints(), allowzero: attr.int(0) },
  inputs: [1, 2], outputs: [1, 1],
  doc: 'The same elements with a new shape (0 copies a dim unless allowzero, -1 is inferred)',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    const shape = ctx.opset < 5 ? ctx.attrs.shape : constInts(ctx, 1);
    if (!shape) {
      const n = inType(ctx, 1)?.shape?.[0];
      return [tensorOut(t?.dtype, typeof n === 'number' ? new Array<Dim>(n).fill(undefined) : undefined)];
    }
    const allowzero = ctx.opset >= 14 && ctx.attrs.allowzero === 1;
    if (!t?.shape) return [tensorOut(t?.dtype, shape.map((s) => (s > 0 || (s === 0 && allowzero) ? s : undefined)))];
    return [tensorOut(t.dtype, reshapeDims(t.shape, shape, allowzero))];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    let shape: number[];
    if (ctx.opset < 5) {
      if (!ctx.attrs.shape) throw new Error('Reshape-1 needs the shape attribute');
      shape = ctx.attrs.shape;
    } else shape = intsOf(ctx.tensor(1));
    const dims = reshapeDims(t.dims, shape, ctx.opset >= 14 && ctx.attrs.allowzero === 1) as number[];
    if (prod(dims) !== t.size) throw new Error(`cannot reshape [${t.dims.join(', ')}] into [${shape.join(', ')}]`);
    return [t.reshape(dims)];
  },
});

function flattenAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!(a >= 0 && a <= rank)) throw new Error(`axis ${axis} is out of range for a tensor of rank ${rank} (allowed ${-rank}..${rank})`);
  return a;
}

const Flatten = defineOp({
  name: 'Flatten', versions: [1, 9, 11, 13, 21, 23, 24, 25], attrs: { axis: attr.int(1) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'Reshape to 2-D: [prod(dims[:axis]), prod(dims[axis:])]',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    if (!t?.shape) return [tensorOut(t?.dtype, [undefined, undefined])];
    const a = flattenAxis(ctx.attrs.axis, t.shape.length);
    return [tensorOut(t.dtype, [dimProduct(t.shape.slice(0, a)), dimProduct(t.shape.slice(a))])];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    const a = flattenAxis(ctx.attrs.axis, t.rank);
    return [t.reshape([prod(t.dims, 0, a), prod(t.dims, a)])];
  },
});

function axesArg(ctx: KernelContext<{ axes?: number[] }>, since: number): number[] | undefined {
  if (ctx.opset < since) return ctx.attrs.axes;
  const t = ctx.optionalTensor(1);
  return t ? intsOf(t) : undefined;
}

function squeezeDims<D extends Dim>(dims: readonly D[], axes: number[] | undefined): D[] {
  if (!axes) return dims.filter((d) => d !== 1);
  const ax = new Set(normAxes(axes, dims.length));
  for (const a of ax) {
    if (typeof dims[a] === 'number' && dims[a] !== 1) throw new Error(`cannot squeeze axis ${a} of size ${dims[a]} (shape [${dims.join(', ')}])`);
  }
  return dims.filter((_, i) => !ax.has(i));
}

const Squeeze = defineOp({
  name: 'Squeeze', versions: [1, 11, 13, 21, 23, 24, 25], attrs: { axes: attr.ints() }, inputs: [1, 2], outputs: [1, 1],
  doc: 'Remove size-1 dimensions (the given axes, or all)',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    const axes = ctx.opset < 13 ? ctx.attrs.axes : ctx.inputTypes[1] ? constInts(ctx, 1) : undefined;
    if (!t?.shape) return [tensorOut(t?.dtype)];
    if (ctx.opset >= 13 && ctx.inputTypes[1] && !axes) return [tensorOut(t.dtype)];
    if (!axes && t.shape.some((d) => typeof d !== 'number')) return [tensorOut(t.dtype)];
    return [tensorOut(t.dtype, squeezeDims(t.shape, axes))];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    return [t.reshape(squeezeDims(t.dims, axesArg(ctx, 13)))];
  },
});

function unsqueezeDims<D extends Dim>(dims: readonly D[], axes: number[]): (D | 1)[] {
  const rank = dims.length + axes.length;
  const ax = new Set(normAxes(axes, rank));
  const out: (D | 1)[] = [];
  let k = 0;
  for (let i = 0; i < rank; i++) out.push(ax.has(i) ? 1 : dims[k++]);
  return out;
}

const Unsqueeze = defineOp({
  name: 'Unsqueeze', versions: [1, 11, 13, 21, 23, 24, 25], attrs: { axes: attr.ints() }, inputs: [1, 2], outputs: [1, 1],
  doc: 'Insert size-1 dimensions at the given axes of the output',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    const axes = ctx.opset < 13 ? ctx.attrs.axes : constInts(ctx, 1);
    if (!t?.shape || !axes) return [tensorOut(t?.dtype)];
    return [tensorOut(t.dtype, unsqueezeDims(t.shape, axes))];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    const axes = axesArg(ctx, 13);
    if (!axes) throw new Error('Unsqueeze needs axes');
    return [t.reshape(unsqueezeDims(t.dims, axes))];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Transpose, Concat, Split

function permOf(perm: number[] | undefined, rank: number): number[] {
  if (!perm) return Array.from({ length: rank }, (_, i) => rank - 1 - i);
  if (perm.length !== rank) throw new Error(`perm [${perm.join(', ')}] has ${perm.length} entries for a tensor of rank ${rank}`);
  return normAxes(perm, rank, 'perm');
}

/** Transpose `t` by `perm` (output dim i = input dim perm[i]). */
export function transpose(t: TensorData, perm: readonly number[]): TensorData {
  const st = stridesOf(t.dims);
  return stridedCopy(t, perm.map((p) => t.dims[p]), perm.map((p) => st[p]), 0);
}

const Transpose = defineOp({
  name: 'Transpose', versions: [1, 13, 21, 23, 24, 25], attrs: { perm: attr.ints() }, inputs: [1, 1], outputs: [1, 1],
  doc: 'Permute dimensions (default: reverse them)',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    if (!t?.shape) return [tensorOut(t?.dtype, ctx.attrs.perm?.map(() => undefined))];
    const shape = t.shape;
    return [tensorOut(t.dtype, permOf(ctx.attrs.perm, shape.length).map((p) => shape[p]))];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    return [transpose(t, permOf(ctx.attrs.perm, t.rank))];
  },
});

/** Concatenate tensors of one dtype along `axis` (already normalized). */
export function concat(ts: TensorData[], axis: number): TensorData {
  const first = ts[0];
  const dims = [...first.dims];
  let total = 0;
  for (const t of ts) {
    if (t.dtype !== first.dtype) throw new Error(`all inputs must have one element type, found ${first.dtype} and ${t.dtype}`);
    if (t.rank !== first.rank || t.dims.some((d, i) => i !== axis && d !== first.dims[i])) {
      throw new Error(`input shapes [${first.dims.join(', ')}] and [${t.dims.join(', ')}] differ outside axis ${axis}`);
    }
    total += t.dims[axis];
  }
  dims[axis] = total;
  const out = TensorData.zeros(first.dtype, dims);
  const w = slotWidth(first.dtype);
  const outer = prod(dims, 0, axis), inner = prod(dims, axis + 1) * w;
  const rowOut = total * inner;
  let at = 0;
  for (const t of ts) {
    const chunk = t.dims[axis] * inner;
    for (let o = 0; o < outer; o++) copyBlock(out.data, o * rowOut + at, t.data, o * chunk, chunk);
    at += chunk;
  }
  return out;
}

const Concat = defineOp({
  name: 'Concat', versions: [1, 4, 11, 13], attrs: { axis: attr.int() }, inputs: [1, Infinity], outputs: [1, 1],
  doc: 'Join tensors along an axis',
  infer: (ctx) => {
    const ts = ctx.inputTypes.map((_, i) => inType(ctx, i));
    const dtype = ts.find((t) => t)?.dtype;
    const withShape = ts.filter((t) => t?.shape).map((t) => t!.shape!);
    if (!withShape.length) return [tensorOut(dtype)];
    const rank = withShape[0].length;
    const axis = concatAxis(ctx.attrs.axis, ctx.opset, rank);
    const out: Dim[] = [];
    for (let i = 0; i < rank; i++) {
      if (i === axis) {
        const all = ts.length === withShape.length ? withShape.map((s) => s[i]) : [undefined];
        out.push(dimProduct(all) === undefined ? undefined : all.reduce<number>((a, b) => a + (b as number), 0));
      } else out.push(withShape.map((s) => s[i]).find((d) => typeof d === 'number') ?? withShape[0][i]);
    }
    return [tensorOut(dtype, out)];
  },
  run: (ctx) => {
    const ts = ctx.inputs.map((_, i) => ctx.tensor(i));
    return [concat(ts, concatAxis(ctx.attrs.axis, ctx.opset, ts[0].rank))];
  },
});

function concatAxis(axis: number | undefined, opset: number, rank: number): number {
  if (axis === undefined) {
    if (opset < 4) return 1;
    throw new Error('Concat needs the axis attribute');
  }
  const a = axis < 0 ? axis + rank : axis;
  if (!(a >= 0 && a < rank)) throw new Error(`axis ${axis} is out of range for tensors of rank ${rank}`);
  return a;
}

/** Split sizes along a dim of size `n`: explicit, or `parts` equal chunks (the last smaller when allowed). */
export function splitSizes(n: number, split: number[] | undefined, parts: number, unevenOk: boolean): number[] {
  if (split) {
    const sum = split.reduce((a, b) => a + b, 0);
    if (split.some((s) => !(Number.isInteger(s) && s >= 0)) || sum !== n) {
      throw new Error(`split [${split.join(', ')}] must be non-negative sizes summing to the dimension ${n}`);
    }
    return split;
  }
  if (!(parts >= 1)) throw new Error(`cannot split into ${parts} outputs`);
  if (n % parts === 0) return new Array<number>(parts).fill(n / parts);
  if (!unevenOk) throw new Error(`dimension ${n} cannot be split evenly into ${parts} outputs`);
  const chunk = Math.ceil(n / parts);
  const sizes = new Array<number>(parts).fill(chunk);
  sizes[parts - 1] = n - chunk * (parts - 1);
  if (sizes[parts - 1] <= 0) throw new Error(`dimension ${n} cannot be split into ${parts} chunks of ${chunk}`);
  return sizes;
}

/** Slice `t` along `axis` from `start` for `len` elements. */
export function sliceAxis(t: TensorData, axis: number, start: number, len: number): TensorData {
  const st = stridesOf(t.dims);
  const dims = [...t.dims];
  dims[axis] = len;
  return stridedCopy(t, dims, st, start * st[axis]);
}

const Split = defineOp({
  name: 'Split', versions: [1, 2, 11, 13, 18], attrs: { axis: attr.int(0), split: attr.ints(), num_outputs: attr.int() },
  inputs: [1, 2], outputs: [1, Infinity],
  doc: 'Split a tensor into several along an axis (given sizes, or equal parts)',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    const n = ctx.numOutputs;
    if (!t?.shape) return new Array(n).fill(tensorOut(t?.dtype));
    const shape = t.shape;
    const axis = normAxes([ctx.attrs.axis], shape.length, 'axis')[0];
    const split = ctx.opset < 13 ? ctx.attrs.split : ctx.inputTypes[1] ? constInts(ctx, 1) : undefined;
    const d = shape[axis];
    let sizes: Dim[];
    if (split) sizes = split;
    else if (ctx.opset >= 13 && ctx.inputTypes[1]) sizes = new Array(n).fill(undefined);
    else if (typeof d === 'number') sizes = splitSizes(d, undefined, n, ctx.opset >= 18);
    else sizes = new Array(n).fill(undefined);
    return sizes.map((s) => tensorOut(t.dtype, shape.map((x, i) => (i === axis ? s : x))));
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    const axis = normAxes([ctx.attrs.axis], t.rank, 'axis')[0];
    const splitT = ctx.opset >= 13 || ctx.opset < 2 ? ctx.optionalTensor(1) : undefined;
    const split = splitT ? intsOf(splitT) : ctx.attrs.split;
    if (ctx.opset >= 18 && ctx.attrs.num_outputs !== undefined) {
      if (split) throw new Error('Split takes either the split input or num_outputs, not both');
      if (ctx.attrs.num_outputs !== ctx.numOutputs) {
        throw new Error(`num_outputs is ${ctx.attrs.num_outputs} but the node has ${ctx.numOutputs} outputs`);
      }
    }
    const sizes = splitSizes(t.dims[axis], split, ctx.numOutputs, ctx.opset >= 18);
    if (sizes.length !== ctx.numOutputs) throw new Error(`split has ${sizes.length} entries for ${ctx.numOutputs} outputs`);
    let at = 0;
    return sizes.map((s) => {
      const r = sliceAxis(t, axis, at, s);
      at += s;
      return r;
    });
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Slice, Expand, Tile

interface SliceAxis { axis: number; start: number; end: number; step: number }

/** Per-axis slice parameters; `dims` may hold non-numbers only for axes that are not sliced. */
function sliceSpecs(rank: number, starts: number[], ends: number[], axes?: number[], steps?: number[]): SliceAxis[] {
  if (starts.length !== ends.length) throw new Error(`starts has ${starts.length} entries but ends has ${ends.length}`);
  const ax = normAxes(axes ?? starts.map((_, i) => i), rank);
  if (ax.length !== starts.length) throw new Error(`axes has ${ax.length} entries but starts has ${starts.length}`);
  if (steps && steps.length !== starts.length) throw new Error(`steps has ${steps.length} entries but starts has ${starts.length}`);
  return ax.map((axis, i) => {
    const step = steps ? steps[i] : 1;
    if (step === 0) throw new Error('slice step cannot be 0');
    return { axis, start: starts[i], end: ends[i], step };
  });
}

/** Clamp one axis's slice to a dim of size n: [first index, output length]. */
function clampSlice(s: SliceAxis, n: number): [number, number] {
  let start = s.start < 0 ? s.start + n : s.start;
  let end = s.end < 0 ? s.end + n : s.end;
  if (s.step > 0) {
    start = Math.min(Math.max(start, 0), n);
    end = Math.min(Math.max(end, 0), n);
  } else {
    start = Math.min(Math.max(start, 0), n - 1);
    end = Math.min(Math.max(end, -1), n - 1);
  }
  return [start, Math.max(0, Math.ceil((end - start) / s.step))];
}

function sliceArgs(ctx: { opset: number; attrs: { starts?: number[]; ends?: number[]; axes?: number[] } }, get: (i: number) => number[] | undefined | null) {
  if (ctx.opset < 10) {
    if (!ctx.attrs.starts || !ctx.attrs.ends) throw new Error('Slice-1 needs the starts and ends attributes');
    return { starts: ctx.attrs.starts, ends: ctx.attrs.ends, axes: ctx.attrs.axes, steps: undefined };
  }
  return { starts: get(1), ends: get(2), axes: get(3) ?? undefined, steps: get(4) ?? undefined };
}

const Slice = defineOp({
  name: 'Slice', versions: [1, 10, 11, 13], attrs: { starts: attr.ints(), ends: attr.ints(), axes: attr.ints() },
  inputs: [1, 5], outputs: [1, 1],
  doc: 'Strided slice along some axes (negative steps, clamped bounds)',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    if (!t?.shape) return [tensorOut(t?.dtype)];
    const shape = t.shape;
    // null: input given but not constant
    const get = (i: number) => (ctx.inputTypes[i] ? constInts(ctx, i) ?? null : undefined);
    const a = sliceArgs(ctx, get);
    if (a.starts === null || a.ends === null || a.axes === null || a.steps === null || !a.starts || !a.ends) {
      return [tensorOut(t.dtype, shape.map(() => undefined))];
    }
    const out: Dim[] = [...shape];
    for (const s of sliceSpecs(shape.length, a.starts, a.ends, a.axes, a.steps)) {
      const d = shape[s.axis];
      if (typeof d === 'number') out[s.axis] = clampSlice(s, d)[1];
      else out[s.axis] = s.start === 0 && s.step === 1 && s.end >= 2 ** 31 - 1 ? d : undefined;
    }
    return [tensorOut(t.dtype, out)];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    const get = (i: number) => {
      const x = ctx.optionalTensor(i);
      return x ? intsOf(x) : undefined;
    };
    const a = sliceArgs(ctx, get);
    if (!a.starts || !a.ends) throw new Error('Slice needs starts and ends');
    const st = stridesOf(t.dims);
    const dims = [...t.dims], strides = [...st];
    let offset = 0;
    for (const s of sliceSpecs(t.rank, a.starts, a.ends, a.axes, a.steps)) {
      const [start, len] = clampSlice(s, t.dims[s.axis]);
      dims[s.axis] = len;
      strides[s.axis] = st[s.axis] * s.step;
      if (len > 0) offset += start * st[s.axis];
    }
    return [stridedCopy(t, dims, strides, offset)];
  },
});

/** Broadcast `t` to `dims` (which must be a broadcast of t's shape). */
export function expandTo(t: TensorData, dims: readonly number[]): TensorData {
  return stridedCopy(t, dims, broadcastStrides(t.dims, dims), 0);
}

const Expand = defineOp({
  name: 'Expand', versions: [8, 13], attrs: {}, inputs: [2, 2], outputs: [1, 1],
  doc: 'Broadcast a tensor to a shape (bidirectionally)',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    const shape = constInts(ctx, 1);
    if (!shape) {
      const n = inType(ctx, 1)?.shape?.[0];
      const r = t?.shape && typeof n === 'number' ? Math.max(n, t.shape.length) : undefined;
      return [tensorOut(t?.dtype, r === undefined ? undefined : new Array<Dim>(r).fill(undefined))];
    }
    return [tensorOut(t?.dtype, t?.shape ? broadcastDims(t.shape, shape) : undefined)];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    const shape = checkShape(intsOf(ctx.tensor(1)));
    return [expandTo(t, broadcastShapes(t.dims, shape))];
  },
});

function tileRepeats(ctx: KernelContext<unknown>, rank: number): number[] {
  if (ctx.opset < 6) {
    const r = new Array<number>(rank).fill(1);
    r[normAxes([intsOf(ctx.tensor(2))[0]], rank, 'axis')[0]] = intsOf(ctx.tensor(1))[0];
    return r;
  }
  const reps = intsOf(ctx.tensor(1));
  if (reps.length !== rank) throw new Error(`repeats has ${reps.length} entries for a tensor of rank ${rank}`);
  return reps;
}

const Tile = defineOp({
  name: 'Tile', versions: [1, 6, 13], attrs: {}, inputs: [2, 3], outputs: [1, 1],
  doc: 'Repeat a tensor along each axis',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    if (!t?.shape) return [tensorOut(t?.dtype)];
    const reps = ctx.opset >= 6 ? constInts(ctx, 1) : undefined;
    if (!reps || reps.length !== t.shape.length) return [tensorOut(t.dtype, t.shape.map(() => undefined))];
    return [tensorOut(t.dtype, t.shape.map((d, i) => (reps[i] === 1 ? d : typeof d === 'number' ? d * reps[i] : undefined)))];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    const reps = tileRepeats(ctx, t.rank);
    checkShape(reps, 'repeats');
    // view the output as [r0, d0, r1, d1, ...] reading the input with stride 0 along each repeat axis
    const st = stridesOf(t.dims);
    const dims: number[] = [], strides: number[] = [];
    for (let i = 0; i < t.rank; i++) {
      dims.push(reps[i], t.dims[i]);
      strides.push(0, st[i]);
    }
    const out = stridedCopy(t, dims, strides, 0);
    return [out.reshape(t.dims.map((d, i) => d * reps[i]))];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Pad

/** Source index along one axis for output position i (with `before` padding), or -1 for the constant fill. */
function padIndex(i: number, n: number, mode: string): number {
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case 'constant': return -1;
    case 'edge': return i < 0 ? 0 : n - 1;
    case 'wrap': return ((i % n) + n) % n;
    case 'reflect': {
      if (n === 1) return 0;
      const p = 2 * (n - 1);
      const j = ((i % p) + p) % p;
      return j < n ? j : p - j;
    }
    default: throw new Error(`unknown pad mode '${mode}'`);
  }
}

/** Full per-dimension [begins..., ends...] pads from pads over `axes`. */
function fullPads(pads: number[], rank: number, axes?: number[]): number[] {
  const ax = axes ? normAxes(axes, rank) : Array.from({ length: rank }, (_, i) => i);
  if (pads.length !== 2 * ax.length) throw new Error(`pads has ${pads.length} entries, expected ${2 * ax.length} (2 per padded axis)`);
  const full = new Array<number>(2 * rank).fill(0);
  ax.forEach((a, i) => {
    full[a] = pads[i];
    full[a + rank] = pads[i + ax.length];
  });
  return full;
}

export function pad(t: TensorData, pads: number[], mode: string, fill: unknown): TensorData {
  if (!['constant', 'reflect', 'edge', 'wrap'].includes(mode)) throw new Error(`unknown pad mode '${mode}' (expected constant, reflect, edge or wrap)`);
  const r = t.rank;
  const maps = t.dims.map((n, d) => {
    const len = n + pads[d] + pads[d + r];
    if (len < 0) throw new Error(`pads [${pads.join(', ')}] remove more than the ${n} elements of axis ${d}`);
    if (n === 0 && len > 0 && mode !== 'constant') throw new Error(`cannot ${mode}-pad the empty axis ${d}`);
    const m = new Int32Array(len);
    for (let i = 0; i < len; i++) m[i] = padIndex(i - pads[d], n, mode);
    return m;
  });
  return mappedCopy(t, maps, fill);
}

const Pad = defineOp({
  name: 'Pad', versions: [1, 2, 11, 13, 18, 19, 21, 23, 24, 25],
  attrs: { mode: attr.string('constant'), pads: attr.ints(), paddings: attr.ints(), value: attr.float(0) },
  inputs: [1, 4], outputs: [1, 1],
  doc: 'Pad (or crop, with negative pads) with a constant, reflection, edge or wrap-around',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    if (!t?.shape) return [tensorOut(t?.dtype)];
    const shape = t.shape;
    const pads = ctx.opset < 11 ? ctx.attrs.pads ?? ctx.attrs.paddings : constInts(ctx, 1);
    const axes = ctx.opset >= 18 && ctx.inputTypes[3] ? constInts(ctx, 3) : undefined;
    if (!pads || (ctx.opset >= 18 && ctx.inputTypes[3] && !axes)) return [tensorOut(t.dtype, shape.map(() => undefined))];
    const full = fullPads(pads, shape.length, axes);
    const r = shape.length;
    return [tensorOut(t.dtype, shape.map((d, i) => {
      const extra = full[i] + full[i + r];
      return extra === 0 ? d : typeof d === 'number' ? d + extra : undefined;
    }))];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    let pads: number[] | undefined, fill: unknown;
    let axes: number[] | undefined;
    if (ctx.opset < 11) {
      pads = ctx.opset < 2 ? ctx.attrs.paddings ?? ctx.attrs.pads : ctx.attrs.pads;
      fill = encodeSlot(t.dtype, ctx.attrs.value);
    } else {
      pads = intsOf(ctx.tensor(1));
      const cv = ctx.optionalTensor(2);
      if (cv && cv.size !== 1) throw new Error(`constant_value must hold one element, found ${cv.size}`);
      if (cv && cv.dtype !== t.dtype) throw new Error(`constant_value has type ${cv.dtype}, expected the data type ${t.dtype}`);
      fill = cv ? (cv.data as unknown as unknown[])[0] : encodeSlot(t.dtype, 0);
      const ax = ctx.opset >= 18 ? ctx.optionalTensor(3) : undefined;
      axes = ax ? intsOf(ax) : undefined;
    }
    if (!pads) throw new Error('Pad needs pads');
    return [pad(t, fullPads(pads, t.rank, axes), ctx.attrs.mode, fill)];
  },
});

const ops: OpDef<any>[] = [
  Constant, ConstantOfShape, Identity, Shape, Size, Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split,
  Slice, Expand, Tile, Pad,
];
export default ops;

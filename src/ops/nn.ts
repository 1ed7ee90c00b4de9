// Convolution, pooling and matrix-multiply operators. float32 runs on Float32Array through the blocked GEMM
// (nn-gemm.ts); every other type is decoded to float64, computed the same way and rounded once to the output type.
import type { Dim, ValueType } from '../ir/graph.js';
import { attr, defineOp, type OpDef } from '../ir/schema.js';
import { TensorData, stridesOf } from '../ir/tensor.js';
import { broadcastShapes, broadcastStrides, prod, tensorTypeOf } from './util.js';
import { gemm, rowMajor, type MatView } from './nn-gemm.js';
import { allocLike, col2imAdd, convForward, convTransposeForward, deformConvForward } from './nn-conv.js';
import { inferWindowDims, resolveWindow, unravel, type Window, type WindowAttrs } from './nn-window.js';
import { averagePool, columnMajorIndex, lpPool, maxPool, windowTable } from './nn-pool.js';
import {
  checkConvRanks, convAttrs, convKernel, floats, fromFloats, inferConvShape, inferMatMulShape, planMatMul, requireRank, runMatMul,
  windowAttrs, type ConvAttrs,
} from './nn-common.js';
import quantOps from './nn-quant.js';

// ---------------------------------------------------------------------------------------------------------------
// shared helpers

const unknown: ValueType = { kind: 'unknown' };

function sameType(ctx: { inputTypes: (ValueType | undefined)[] }, i: number) {
  return tensorTypeOf(ctx.inputTypes[i]);
}

// ---------------------------------------------------------------------------------------------------------------
// Conv family

const Conv = defineOp({
  name: 'Conv', versions: [1, 11, 22], attrs: convAttrs, inputs: [2, 3], outputs: [1, 1],
  doc: 'N-d convolution with groups, strides, dilations and padding (im2col + blocked GEMM)',
  infer: (ctx) => {
    const x = sameType(ctx, 0), w = sameType(ctx, 1);
    if (!x) return [unknown];
    return [{ kind: 'tensor', dtype: x.dtype, shape: inferConvShape(x.shape, w?.shape, ctx.attrs, (wd) => wd[0]) }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), w = ctx.tensor(1), b = ctx.optionalTensor(2);
    checkConvRanks(x, w);
    const win = resolveWindow(x.dims.slice(2), windowAttrs(ctx.attrs, convKernel(w, ctx.attrs)));
    const f32 = x.dtype === 'float32';
    const outDims = [x.dims[0], w.dims[0], ...win.outDims];
    const xs = floats(x, f32);
    const y = allocLike(xs, prod(outDims));
    convForward(xs, x.dims, floats(w, f32), w.dims, b && floats(b, f32), win, ctx.attrs.group, y);
    return [fromFloats(x.dtype, outDims, y)];
  },
});

const convTransposeAttrs = { ...convAttrs, output_padding: attr.ints(), output_shape: attr.ints() };
type ConvTAttrs = ConvAttrs & { output_padding?: number[]; output_shape?: number[] };

/** ConvTranspose geometry: output spatial dims and the start padding (cropping) per axis. */
function convTransposeWindow(inDims: readonly Dim[], kernel: number[], a: ConvTAttrs): { outDims: Dim[]; padsBegin: number[] } {
  const r = kernel.length;
  const base = resolveWindowAttrsOnly(r, windowAttrs(a, kernel));
  const op = a.output_padding?.length ? a.output_padding : new Array<number>(r).fill(0);
  if (op.length !== r) throw new Error(`output_padding should have ${r} values, found ${op.length}`);
  let explicit = a.output_shape?.length ? a.output_shape : undefined;
  if (explicit && explicit.length === r + 2) explicit = explicit.slice(2);
  if (explicit && explicit.length !== r) throw new Error(`output_shape should have ${r} spatial values, found ${explicit.length}`);
  const mode = a.auto_pad || 'NOTSET';
  const outDims: Dim[] = [], padsBegin: number[] = [];
  for (let i = 0; i < r; i++) {
    const n = inDims[i], s = base.strides[i], eff = (kernel[i] - 1) * base.dilations[i] + 1;
    const natural = typeof n === 'number' ? s * (n - 1) + op[i] + eff : undefined;
    let out: Dim;
    if (explicit) out = explicit[i];
    else if (mode === 'SAME_UPPER' || mode === 'SAME_LOWER') out = typeof n === 'number' ? n * s : undefined;
    else if (mode === 'VALID') out = natural;
    else out = natural === undefined ? undefined : natural - base.pads[i] - base.pads[i + r];
    outDims.push(out);
    if (explicit || mode === 'SAME_UPPER' || mode === 'SAME_LOWER') {
      const total = natural !== undefined && typeof out === 'number' ? natural - out : 0;
      const half = Math.floor(total / 2);
      padsBegin.push(mode === 'SAME_UPPER' ? half : total - half);
    } else padsBegin.push(mode === 'VALID' ? 0 : base.pads[i]);
  }
  return { outDims, padsBegin };
}

function resolveWindowAttrsOnly(r: number, a: WindowAttrs) {
  const list = (v: number[] | undefined, n: number, d: number) => (v && v.length ? v : new Array<number>(n).fill(d));
  const strides = list(a.strides, r, 1), dilations = list(a.dilations, r, 1), pads = list(a.pads, 2 * r, 0);
  if (strides.length !== r || dilations.length !== r || pads.length !== 2 * r) {
    throw new Error(`strides/dilations need ${r} values and pads ${2 * r}, found ${strides.length}/${dilations.length}/${pads.length}`);
  }
  if (strides.some((s) => !(s >= 1)) || dilations.some((d) => !(d >= 1))) throw new Error('strides and dilations must be >= 1');
  return { strides, dilations, pads };
}

const ConvTranspose = defineOp({
  name: 'ConvTranspose', versions: [1, 11, 22], attrs: convTransposeAttrs, inputs: [2, 3], outputs: [1, 1],
  doc: 'N-d transposed convolution (GEMM + col2im) with output_padding / output_shape',
  infer: (ctx) => {
    const x = sameType(ctx, 0), w = sameType(ctx, 1);
    if (!x) return [unknown];
    const rank = x.shape?.length ?? w?.shape?.length;
    if (rank === undefined) return [{ kind: 'tensor', dtype: x.dtype }];
    const kernel = ctx.attrs.kernel_shape?.length ? ctx.attrs.kernel_shape : w?.shape?.slice(2);
    const inSp = x.shape ? x.shape.slice(2) : new Array<Dim>(rank - 2).fill(undefined);
    const spatial = kernel && kernel.every((k) => typeof k === 'number')
      ? convTransposeWindow(inSp, kernel as number[], ctx.attrs).outDims : inSp.map(() => undefined);
    const m = w?.shape?.[1];
    return [{ kind: 'tensor', dtype: x.dtype, shape: [x.shape?.[0], typeof m === 'number' ? m * ctx.attrs.group : undefined, ...spatial] }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), w = ctx.tensor(1), b = ctx.optionalTensor(2);
    checkConvRanks(x, w);
    const kernel = convKernel(w, ctx.attrs);
    const geo = convTransposeWindow(x.dims.slice(2), kernel, ctx.attrs);
    const outSp = geo.outDims as number[];
    if (outSp.some((d) => !(d >= 0))) throw new Error(`ConvTranspose output spatial shape [${outSp}] is invalid`);
    const base = resolveWindowAttrsOnly(kernel.length, windowAttrs(ctx.attrs, kernel));
    const win: Window = { kernel, strides: base.strides, dilations: base.dilations, padsBegin: geo.padsBegin, padsEnd: [], outDims: outSp };
    const f32 = x.dtype === 'float32';
    const outDims = [x.dims[0], w.dims[1] * ctx.attrs.group, ...outSp];
    const xs = floats(x, f32);
    const y = allocLike(xs, prod(outDims));
    convTransposeForward(xs, x.dims, floats(w, f32), w.dims, b && floats(b, f32), win, ctx.attrs.group, y);
    return [fromFloats(x.dtype, outDims, y)];
  },
});

const DeformConv = defineOp({
  name: 'DeformConv', versions: [19, 22],
  attrs: { dilations: attr.ints(), group: attr.int(1), kernel_shape: attr.ints(), offset_group: attr.int(1), pads: attr.ints(), strides: attr.ints() },
  inputs: [3, 5], outputs: [1, 1],
  doc: '2-D deformable convolution: per-tap learned offsets, bilinear sampling and an optional modulation mask',
  infer: (ctx) => {
    const x = sameType(ctx, 0), w = sameType(ctx, 1);
    if (!x) return [unknown];
    return [{ kind: 'tensor', dtype: x.dtype, shape: inferConvShape(x.shape, w?.shape, { ...ctx.attrs, auto_pad: 'NOTSET' }, (wd) => wd[0]) }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), w = ctx.tensor(1), off = ctx.tensor(2), b = ctx.optionalTensor(3), mask = ctx.optionalTensor(4);
    checkConvRanks(x, w);
    if (x.rank !== 4) throw new Error(`DeformConv supports 2-D inputs [N, C, H, W], found shape [${x.dims.join(', ')}]`);
    const a = { ...ctx.attrs, auto_pad: 'NOTSET' };
    const win = resolveWindow(x.dims.slice(2), windowAttrs(a, convKernel(w, a)));
    const f32 = x.dtype === 'float32';
    const outDims = [x.dims[0], w.dims[0], ...win.outDims];
    if (mask && mask.size !== off.size / 2) throw new Error(`mask should have ${off.size / 2} elements (half of offset), found ${mask.size}`);
    const xs = floats(x, f32);
    const y = allocLike(xs, prod(outDims));
    deformConvForward(xs, x.dims, floats(w, f32), w.dims, floats(off, f32), off.dims, mask && floats(mask, f32), b && floats(b, f32),
      win, ctx.attrs.group, ctx.attrs.offset_group, y);
    return [fromFloats(x.dtype, outDims, y)];
  },
});

const Col2Im = defineOp({
  name: 'Col2Im', versions: [18], attrs: { dilations: attr.ints(), pads: attr.ints(), strides: attr.ints() }, inputs: [3, 3], outputs: [1, 1],
  doc: 'Rearrange column blocks [N, C*prod(block), L] back into an image, summing overlaps',
  infer: (ctx) => {
    const x = sameType(ctx, 0);
    if (!x) return [unknown];
    const img = ctx.constant(1)?.toNumberArray(), block = ctx.constant(2)?.toNumberArray();
    const r = img?.length ?? block?.length ?? tensorTypeOf(ctx.inputTypes[1])?.shape?.[0];
    if (typeof r !== 'number') return [{ kind: 'tensor', dtype: x.dtype }];
    const c = x.shape?.[1];
    const ch = typeof c === 'number' && block ? c / prod(block) : undefined;
    return [{ kind: 'tensor', dtype: x.dtype, shape: [x.shape?.[0], ch, ...(img ?? new Array<Dim>(r).fill(undefined))] }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), img = ctx.tensor(1).toNumberArray(), block = ctx.tensor(2).toNumberArray();
    if (x.rank !== 3) throw new Error(`input should have rank 3 [N, C*prod(block_shape), L], found shape [${x.dims.join(', ')}]`);
    if (img.length !== block.length || img.length === 0) throw new Error(`image_shape and block_shape should have the same non-zero length, found ${img.length} and ${block.length}`);
    if (img.some((d) => !Number.isInteger(d) || d < 1)) throw new Error(`image_shape must be positive integers, found [${img}]`);
    const win = resolveWindow(img, { kernel: block, strides: ctx.attrs.strides, dilations: ctx.attrs.dilations, pads: ctx.attrs.pads });
    const Kp = prod(block), [N, CK, L] = x.dims;
    if (CK % Kp !== 0) throw new Error(`input dimension 1 (${CK}) is not divisible by prod(block_shape) = ${Kp}`);
    if (L !== prod(win.outDims)) throw new Error(`input dimension 2 should be the number of blocks ${prod(win.outDims)} ([${win.outDims}]), found ${L}`);
    const C = CK / Kp, f32 = x.dtype === 'float32', xs = floats(x, f32);
    const outDims = [N, C, ...img];
    const y = allocLike(xs, prod(outDims));
    for (let n = 0; n < N; n++) {
      col2imAdd(xs, n * CK * L, C, block, win.outDims, img, win.strides, win.dilations, win.padsBegin, y, n * C * prod(img));
    }
    return [fromFloats(x.dtype, outDims, y)];
  },
});

const CausalConvWithState = defineOp({
  name: 'CausalConvWithState', versions: [27], attrs: { activation: attr.string('none') }, inputs: [2, 4], outputs: [1, 2],
  doc: 'Stateful causal depthwise 1-D convolution with carry state and optional fused SiLU',
  infer: (ctx) => {
    const x = sameType(ctx, 0), w = sameType(ctx, 1);
    if (!x) return [unknown, unknown];
    const k = w?.shape?.[2];
    const state: Dim[] | undefined = x.shape ? [x.shape[0], x.shape[1], typeof k === 'number' ? k - 1 : undefined] : undefined;
    return [{ kind: 'tensor', dtype: x.dtype, shape: x.shape }, { kind: 'tensor', dtype: x.dtype, shape: state }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), w = ctx.tensor(1), b = ctx.optionalTensor(2), past = ctx.optionalTensor(3);
    const act = ctx.attrs.activation.toLowerCase();
    if (!['none', 'silu', 'swish'].includes(act)) throw new Error(`activation must be 'none', 'silu' or 'swish', found '${ctx.attrs.activation}'`);
    if (x.rank !== 3) throw new Error(`input should have rank 3 [batch, channels, length], found shape [${x.dims.join(', ')}]`);
    const [B, C, L] = x.dims;
    if (w.rank !== 3 || w.dims[0] !== C || w.dims[1] !== 1) throw new Error(`weight should have shape [${C}, 1, k], found [${w.dims.join(', ')}]`);
    const K = w.dims[2], S = K - 1;
    if (K < 1) throw new Error('weight kernel size must be >= 1');
    if (b && b.size !== C) throw new Error(`bias should have ${C} elements, found ${b.size}`);
    if (past && past.dims.join() !== [B, C, S].join()) throw new Error(`past_state should have shape [${B}, ${C}, ${S}], found [${past.dims.join(', ')}]`);
    const xv = x.toFloat64(), wv = w.toFloat64(), bv = b?.toFloat64(), pv = past?.toFloat64();
    const y = new Float64Array(x.size), state = new Float64Array(B * C * S);
    const seq = new Float64Array(S + L);
    for (let bc = 0; bc < B * C; bc++) {
      const c = bc % C;
      for (let i = 0; i < S; i++) seq[i] = pv ? pv[bc * S + i] : 0;
      for (let i = 0; i < L; i++) seq[S + i] = xv[bc * L + i];
      for (let t = 0; t < L; t++) {
        let s = bv ? bv[c] : 0;
        for (let k = 0; k < K; k++) s += wv[c * K + k] * seq[t + k];
        y[bc * L + t] = act === 'none' ? s : s / (1 + Math.exp(-s));
      }
      for (let i = 0; i < S; i++) state[bc * S + i] = seq[L + i];
    }
    return [TensorData.fromNumbers(x.dtype, x.dims, y), TensorData.fromNumbers(x.dtype, [B, C, S], state)];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// pooling

const poolAttrs = {
  auto_pad: attr.string('NOTSET'), ceil_mode: attr.int(0), dilations: attr.ints(), kernel_shape: attr.ints(), pads: attr.ints(),
  strides: attr.ints(),
};
type PoolAttrs = { auto_pad: string; ceil_mode: number; dilations?: number[]; kernel_shape?: number[]; pads?: number[]; strides?: number[] };

function poolKernel(a: PoolAttrs, rank: number): number[] {
  if (!a.kernel_shape || a.kernel_shape.length === 0) throw new Error('the kernel_shape attribute is required');
  if (a.kernel_shape.length !== rank) throw new Error(`kernel_shape should have ${rank} values (one per spatial axis of X), found ${a.kernel_shape.length}`);
  return a.kernel_shape;
}

function poolWindowAttrs(a: PoolAttrs, kernel: number[]): WindowAttrs {
  return { kernel, strides: a.strides, dilations: a.dilations, pads: a.pads, autoPad: a.auto_pad, ceilMode: a.ceil_mode !== 0 };
}

function inferPool(ctx: { inputTypes: (ValueType | undefined)[]; attrs: PoolAttrs }): Dim[] | undefined {
  const x = tensorTypeOf(ctx.inputTypes[0]);
  if (!x?.shape) return undefined;
  const k = ctx.attrs.kernel_shape;
  const sp = x.shape.slice(2);
  const spatial = k && k.length === sp.length ? inferWindowDims(sp, poolWindowAttrs(ctx.attrs, k)) : sp.map(() => undefined);
  return [x.shape[0], x.shape[1], ...spatial];
}

/** Shared driver: resolve the window, build its table and run `body` over float64 planes. */
function runPool(x: TensorData, a: PoolAttrs, body: (xs: Float64Array, planes: number, I: number, y: Float64Array, t: ReturnType<typeof windowTable>, win: Window) => void) {
  requireRank(x, 3, 'X');
  const inDims = x.dims.slice(2);
  const win = resolveWindow(inDims, poolWindowAttrs(a, poolKernel(a, inDims.length)));
  const outDims = [x.dims[0], x.dims[1], ...win.outDims];
  const y = new Float64Array(prod(outDims));
  body(x.toFloat64(), x.dims[0] * x.dims[1], prod(inDims), y, windowTable(inDims, win), win);
  return { y, outDims, inDims };
}

const MaxPool = defineOp({
  name: 'MaxPool', versions: [1, 8, 10, 11, 12, 22], attrs: { ...poolAttrs, storage_order: attr.int(0) }, inputs: [1, 1], outputs: [1, 2],
  doc: 'Max pooling with optional argmax indices (storage_order), ceil_mode, dilations and padding',
  infer: (ctx) => {
    const x = sameType(ctx, 0);
    if (!x) return [unknown, unknown];
    const shape = inferPool(ctx);
    return [{ kind: 'tensor', dtype: x.dtype, shape }, { kind: 'tensor', dtype: 'int64', shape }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), want = ctx.wantsOutput(1);
    let idx: Float64Array | undefined;
    const { y, outDims, inDims } = runPool(x, ctx.attrs, (xs, planes, I, out, t) => {
      idx = want ? new Float64Array(out.length) : undefined;
      maxPool(xs, planes, I, t, out, idx);
    });
    const res = [TensorData.fromNumbers(x.dtype, outDims, y)];
    if (idx) {
      const I = prod(inDims), G = prod(outDims.slice(2));
      const big = new BigInt64Array(idx.length);
      for (let i = 0; i < idx.length; i++) {
        const sp = ctx.attrs.storage_order ? columnMajorIndex(idx[i], inDims) : idx[i];
        big[i] = BigInt(Math.floor(i / G) * I + sp);
      }
      res.push(new TensorData('int64', outDims, big));
    }
    return res;
  },
});

const AveragePool = defineOp({
  name: 'AveragePool', versions: [1, 7, 10, 11, 19, 22], attrs: { ...poolAttrs, count_include_pad: attr.int(0) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'Average pooling (count_include_pad, ceil_mode, dilations)',
  infer: (ctx) => {
    const x = sameType(ctx, 0);
    return x ? [{ kind: 'tensor', dtype: x.dtype, shape: inferPool(ctx) }] : [unknown];
  },
  run: (ctx) => {
    const x = ctx.tensor(0);
    const { y, outDims } = runPool(x, ctx.attrs, (xs, planes, I, out, t) => averagePool(xs, planes, I, t, ctx.attrs.count_include_pad !== 0, out));
    return [TensorData.fromNumbers(x.dtype, outDims, y)];
  },
});

function checkP(p: number): number {
  if (!(p > 0) || !Number.isFinite(p)) throw new Error(`p must be a positive number, found ${p}`);
  return p;
}

const LpPool = defineOp({
  name: 'LpPool', versions: [1, 2, 11, 18, 22], attrs: { ...poolAttrs, p: attr.float(2) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'Lp-norm pooling over sliding windows',
  infer: (ctx) => {
    const x = sameType(ctx, 0);
    return x ? [{ kind: 'tensor', dtype: x.dtype, shape: inferPool(ctx) }] : [unknown];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), p = checkP(ctx.attrs.p);
    const { y, outDims } = runPool(x, ctx.attrs, (xs, planes, I, out, t) => lpPool(xs, planes, I, t, p, out));
    return [TensorData.fromNumbers(x.dtype, outDims, y)];
  },
});

function globalPool(name: string, versions: number[], doc: string, reduce: (x: Float64Array, from: number, to: number, p: number) => number, withP = false) {
  return defineOp({
    name, versions, attrs: withP ? { p: attr.float(2) } : {}, inputs: [1, 1], outputs: [1, 1], doc,
    infer: (ctx) => {
      const x = sameType(ctx, 0);
      if (!x) return [unknown];
      return [{ kind: 'tensor', dtype: x.dtype, shape: x.shape && [...x.shape.slice(0, 2), ...x.shape.slice(2).map(() => 1)] }];
    },
    run: (ctx) => {
      const x = ctx.tensor(0);
      requireRank(x, 2, 'X');
      const p = withP ? checkP((ctx.attrs as { p: number }).p) : 0;
      const planes = x.dims[0] * x.dims[1], I = prod(x.dims, 2), xs = x.toFloat64();
      const y = new Float64Array(planes);
      for (let i = 0; i < planes; i++) y[i] = reduce(xs, i * I, (i + 1) * I, p);
      return [TensorData.fromNumbers(x.dtype, [x.dims[0], x.dims[1], ...x.dims.slice(2).map(() => 1)], y)];
    },
  });
}

const GlobalAveragePool = globalPool('GlobalAveragePool', [1, 22], 'Mean over all spatial positions', (x, a, b) => {
  let s = 0;
  for (let i = a; i < b; i++) s += x[i];
  return s / (b - a);
});
const GlobalMaxPool = globalPool('GlobalMaxPool', [1, 22], 'Max over all spatial positions', (x, a, b) => {
  let m = -Infinity;
  for (let i = a; i < b; i++) if (x[i] > m || Number.isNaN(x[i])) m = x[i];
  return m;
});
const GlobalLpPool = globalPool('GlobalLpPool', [1, 2, 22], 'Lp norm over all spatial positions', (x, a, b, p) => {
  let s = 0;
  for (let i = a; i < b; i++) s += Math.abs(x[i]) ** p;
  return s ** (1 / p);
}, true);

const MaxUnpool = defineOp({
  name: 'MaxUnpool', versions: [9, 11, 22], attrs: { kernel_shape: attr.ints(), pads: attr.ints(), strides: attr.ints() }, inputs: [2, 3], outputs: [1, 1],
  doc: 'Scatter pooled values back to the positions given by MaxPool indices',
  infer: (ctx) => {
    const x = sameType(ctx, 0);
    if (!x) return [unknown];
    const os = ctx.constant(2);
    if (os) return [{ kind: 'tensor', dtype: x.dtype, shape: os.toNumberArray() }];
    if (!x.shape) return [{ kind: 'tensor', dtype: x.dtype }];
    if (ctx.inputTypes[2]) return [{ kind: 'tensor', dtype: x.dtype, shape: x.shape.map(() => undefined) }];
    const spatial = x.shape.slice(2);
    const k = ctx.attrs.kernel_shape;
    const dims = k && k.length === spatial.length ? unpoolDims(spatial, ctx.attrs) : spatial.map(() => undefined);
    return [{ kind: 'tensor', dtype: x.dtype, shape: [x.shape[0], x.shape[1], ...dims] }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), ind = ctx.tensor(1), os = ctx.optionalTensor(2);
    requireRank(x, 3, 'X');
    if (ind.dims.join() !== x.dims.join()) throw new Error(`I should have the shape of X [${x.dims}], found [${ind.dims}]`);
    // indices address the unpooled tensor of the default shape; an explicit output_shape re-places each element at
    // the same coordinates in the (possibly larger) requested shape
    const natural = [x.dims[0], x.dims[1], ...(unpoolDims(x.dims.slice(2), ctx.attrs) as number[])];
    const outDims = os ? os.toNumberArray() : natural;
    if (outDims.length !== x.rank) throw new Error(`output_shape should have ${x.rank} values, found ${outDims.length}`);
    const y = TensorData.zeros(x.dtype, outDims);
    const idx = ind.toBigInts(), n = BigInt(prod(natural));
    const remap = outDims.join() !== natural.join();
    const coord = new Array<number>(x.rank), outStrides = stridesOf(outDims);
    const dst = y.data as unknown as (number | bigint)[], src = x.data as unknown as (number | bigint)[];
    for (let i = 0; i < x.size; i++) {
      if (idx[i] < 0n || idx[i] >= n) throw new Error(`index ${idx[i]} is out of range for an unpooled shape [${natural.join(', ')}]`);
      let k = Number(idx[i]);
      if (remap) {
        unravel(k, natural, coord);
        if (coord.some((c, d) => c >= outDims[d])) throw new Error(`index ${idx[i]} falls outside output_shape [${outDims.join(', ')}]`);
        k = coord.reduce((acc, c, d) => acc + c * outStrides[d], 0);
      }
      dst[k] = src[i];
    }
    return [y];
  },
});

function unpoolDims(spatial: readonly Dim[], a: { kernel_shape?: number[]; pads?: number[]; strides?: number[] }): Dim[] {
  const r = spatial.length, k = a.kernel_shape ?? [];
  if (k.length !== r) throw new Error(`kernel_shape should have ${r} values, found ${k.length}`);
  const s = a.strides?.length ? a.strides : new Array<number>(r).fill(1), p = a.pads?.length ? a.pads : new Array<number>(2 * r).fill(0);
  return spatial.map((d, i) => (typeof d === 'number' ? (d - 1) * s[i] - p[i] - p[i + r] + k[i] : undefined));
}

// ---------------------------------------------------------------------------------------------------------------
// matrix multiply

const MatMul = defineOp({
  name: 'MatMul', versions: [1, 9, 13], attrs: {}, inputs: [2, 2], outputs: [1, 1],
  doc: 'numpy-style matrix product (1-D promotion, batch broadcasting; blocked GEMM)',
  infer: (ctx) => {
    const a = sameType(ctx, 0), b = sameType(ctx, 1);
    if (!a) return [unknown];
    return [{ kind: 'tensor', dtype: a.dtype, shape: inferMatMulShape(a.shape, b?.shape) }];
  },
  run: (ctx) => {
    const a = ctx.tensor(0), b = ctx.tensor(1);
    if (a.dtype !== b.dtype) throw new Error(`A and B should have the same type, found ${a.dtype} and ${b.dtype}`);
    const p = planMatMul(a.dims, b.dims);
    const f32 = a.dtype === 'float32';
    const as = floats(a, f32);
    const y = allocLike(as, prod(p.outDims));
    runMatMul(p, as, floats(b, f32), y);
    return [fromFloats(a.dtype, p.outDims, y)];
  },
});

const Gemm = defineOp({
  name: 'Gemm', versions: [1, 6, 7, 9, 11, 13],
  attrs: { alpha: attr.float(1), beta: attr.float(1), transA: attr.int(0), transB: attr.int(0) }, inputs: [2, 3], outputs: [1, 1],
  doc: 'Y = alpha * op(A) . op(B) + beta * C (C broadcast to [M, N])',
  infer: (ctx) => {
    const a = sameType(ctx, 0), b = sameType(ctx, 1);
    if (!a) return [unknown];
    const m = a.shape?.length === 2 ? a.shape[ctx.attrs.transA ? 1 : 0] : undefined;
    const n = b?.shape?.length === 2 ? b.shape[ctx.attrs.transB ? 0 : 1] : undefined;
    return [{ kind: 'tensor', dtype: a.dtype, shape: [m, n] }];
  },
  run: (ctx) => {
    const a = ctx.tensor(0), b = ctx.tensor(1), c = ctx.optionalTensor(2);
    const { alpha, beta, transA, transB } = ctx.attrs;
    if (a.rank !== 2 || b.rank !== 2) throw new Error(`A and B should be 2-D, found [${a.dims.join(', ')}] and [${b.dims.join(', ')}]`);
    const [M, K] = transA ? [a.dims[1], a.dims[0]] : a.dims;
    const [K2, N] = transB ? [b.dims[1], b.dims[0]] : b.dims;
    if (K !== K2) throw new Error(`inner dimensions differ: op(A) is [${M}, ${K}], op(B) is [${K2}, ${N}]`);
    const f32 = a.dtype === 'float32';
    const as = floats(a, f32), bs = floats(b, f32);
    const y = allocLike(as, M * N);
    if (c && beta !== 0) {
      const bc = broadcastShapes([M, N], c.dims);
      if (bc.length !== 2 || bc[0] !== M || bc[1] !== N) throw new Error(`C of shape [${c.dims.join(', ')}] cannot be broadcast to [${M}, ${N}]`);
      const [s0, s1] = broadcastStrides(c.dims, [M, N]), cs = floats(c, f32);
      for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) y[i * N + j] = beta * cs[i * s0 + j * s1];
    }
    const A: MatView = transA ? { data: as, off: 0, rs: 1, cs: M } : rowMajor(as, 0, K);
    const B: MatView = transB ? { data: bs, off: 0, rs: 1, cs: K } : rowMajor(bs, 0, N);
    gemm(M, N, K, A, B, y, 0, N, alpha);
    return [fromFloats(a.dtype, [M, N], y)];
  },
});

// ---------------------------------------------------------------------------------------------------------------

const ops: OpDef<any>[] = [
  Conv, ConvTranspose, DeformConv, Col2Im, CausalConvWithState, MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool,
  GlobalLpPool, MaxUnpool, MatMul, Gemm, ...quantOps,
];
export default ops;

// Resize and Upsample: separable N-D resampling. Each resized axis gets a 1-D "plan" (for every output position,
// a few input taps and their weights); the plans are applied one axis at a time, so the cost is linear in the
// output size times the filter footprint.
import type { Dim, ValueType } from '../ir/graph.js';
import { defineOp, attr, type InferContext } from '../ir/schema.js';
import { TensorData, MAX_ELEMENTS } from '../ir/tensor.js';
import { isFloat, intRange, dtypeKind } from '../ir/dtype.js';
import { normAxis, tensorTypeOf } from './util.js';

export type NearestMode = 'round_prefer_floor' | 'round_prefer_ceil' | 'floor' | 'ceil' | 'simple';

export interface ResizeOptions {
  mode: 'nearest' | 'linear' | 'cubic';
  coord: string;
  nearestMode: NearestMode;
  cubicA: number;
  excludeOutside: boolean;
  antialias: boolean;
  extrapolation: number;
}

/** One axis of the resampling: `taps` input indices and weights per output position. */
interface AxisPlan {
  outLen: number;
  taps: number;
  idx: Int32Array;
  w: Float64Array;
  /** Output positions whose source coordinate lies outside the input (tf_crop_and_resize extrapolation). */
  outside: Uint8Array | null;
}

/** Keys cubic convolution weight for a distance |x| (Keys 1981), with coefficient `a`. */
export function cubicKernel(x: number, a: number): number {
  const t = Math.abs(x);
  if (t <= 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
  return 0;
}

/** Map an output coordinate to the input coordinate of one axis. */
function sourceCoord(o: number, coord: string, scale: number, inLen: number, outLen: number, roiStart: number, roiEnd: number): number {
  switch (coord) {
    case 'half_pixel': return (o + 0.5) / scale - 0.5;
    case 'half_pixel_symmetric': {
      const adjustment = outLen / (scale * inLen);
      const offset = (inLen / 2) * (1 - adjustment);
      return offset + (o + 0.5) / scale - 0.5;
    }
    // These two use the unrounded resized length (scale * inLen), as the ONNX reference does when scales are given.
    case 'pytorch_half_pixel': return scale * inLen > 1 ? (o + 0.5) / scale - 0.5 : 0;
    case 'align_corners': return scale * inLen === 1 ? 0 : (o * (inLen - 1)) / (scale * inLen - 1);
    case 'asymmetric': return o / scale;
    case 'tf_half_pixel_for_nn': return (o + 0.5) / scale;
    case 'tf_crop_and_resize':
      return outLen > 1
        ? roiStart * (inLen - 1) + (o * (roiEnd - roiStart) * (inLen - 1)) / (outLen - 1)
        : 0.5 * (roiStart + roiEnd) * (inLen - 1);
    default:
      throw new Error(`unsupported coordinate_transformation_mode '${coord}' (expected half_pixel, half_pixel_symmetric, `
        + 'pytorch_half_pixel, align_corners, asymmetric, tf_half_pixel_for_nn or tf_crop_and_resize)');
  }
}

function roundNearest(x: number, mode: NearestMode, downsample: boolean): number {
  switch (mode) {
    case 'round_prefer_floor': return x - Math.floor(x) === 0.5 ? Math.floor(x) : Math.round(x);
    case 'round_prefer_ceil': return x - Math.floor(x) === 0.5 ? Math.ceil(x) : Math.round(x);
    case 'floor': return Math.floor(x);
    case 'ceil': return Math.ceil(x);
    case 'simple': return downsample ? Math.ceil(x) : Math.floor(x);
    default: throw new Error(`unsupported nearest_mode '${mode}' (expected round_prefer_floor, round_prefer_ceil, floor or ceil)`);
  }
}

function planAxis(inLen: number, outLen: number, scale: number, roiStart: number, roiEnd: number, o: ResizeOptions): AxisPlan {
  const crop = o.coord === 'tf_crop_and_resize';
  const outside = crop ? new Uint8Array(outLen) : null;
  const clampIdx = (i: number) => (i < 0 ? 0 : i >= inLen ? inLen - 1 : i);
  if (o.mode === 'nearest') {
    const idx = new Int32Array(outLen), w = new Float64Array(outLen).fill(1);
    for (let j = 0; j < outLen; j++) {
      const x = sourceCoord(j, o.coord, scale, inLen, outLen, roiStart, roiEnd);
      if (outside && (x < 0 || x > inLen - 1)) outside[j] = 1;
      idx[j] = clampIdx(roundNearest(x, o.nearestMode, scale < 1));
    }
    return { outLen, taps: 1, idx, w, outside };
  }
  // Linear/cubic: positions base+i for i in [start, start+taps), base = ceil(x)-1 so that ratio = x-base is in (0, 1].
  // With antialias the kernel is stretched by 1/scale when downsampling, and the weights are normalized.
  const s = o.antialias ? Math.min(scale, 1) : 1;
  const support = o.mode === 'linear' ? 1 : 2;
  const start = Math.floor(-support / s) + 1;
  const taps = 2 - 2 * start;
  if (taps * outLen > MAX_ELEMENTS) throw new Error(`resize filter of ${taps} taps for ${outLen} outputs is too large`);
  const kernel = o.mode === 'linear' ? (d: number) => Math.max(0, 1 - Math.abs(d)) : (d: number) => cubicKernel(d, o.cubicA);
  const idx = new Int32Array(outLen * taps), w = new Float64Array(outLen * taps);
  for (let j = 0; j < outLen; j++) {
    const x = sourceCoord(j, o.coord, scale, inLen, outLen, roiStart, roiEnd);
    if (outside && (x < 0 || x > inLen - 1)) outside[j] = 1;
    const base = Math.ceil(x) - 1;
    const ratio = x - base;
    let sum = 0;
    for (let k = 0; k < taps; k++) {
      const p = base + start + k;
      let wk = kernel((start + k - ratio) * s);
      if (o.excludeOutside && (p < 0 || p >= inLen)) wk = 0;
      idx[j * taps + k] = clampIdx(p);
      w[j * taps + k] = wk;
      sum += wk;
    }
    if ((o.antialias || o.excludeOutside) && sum !== 0) for (let k = 0; k < taps; k++) w[j * taps + k] /= sum;
  }
  return { outLen, taps, idx, w, outside };
}

function isIdentity(p: AxisPlan, inLen: number): boolean {
  if (p.outLen !== inLen || p.outside?.some((v) => v)) return false;
  for (let j = 0; j < p.outLen; j++) {
    for (let k = 0; k < p.taps; k++) {
      const wk = p.w[j * p.taps + k];
      if (wk !== 0 && !(wk === 1 && p.idx[j * p.taps + k] === j)) return false;
    }
  }
  return true;
}

function applyPlan(src: Float64Array, dims: number[], axis: number, p: AxisPlan): Float64Array {
  let outer = 1, inner = 1;
  for (let i = 0; i < axis; i++) outer *= dims[i];
  for (let i = axis + 1; i < dims.length; i++) inner *= dims[i];
  const inLen = dims[axis];
  const dst = new Float64Array(outer * p.outLen * inner);
  const { taps, idx, w } = p;
  for (let a = 0; a < outer; a++) {
    const sBase = a * inLen * inner, dBase = a * p.outLen * inner;
    for (let j = 0; j < p.outLen; j++) {
      const d = dBase + j * inner;
      for (let k = 0; k < taps; k++) {
        const wk = w[j * taps + k];
        if (wk === 0) continue;
        const s = sBase + idx[j * taps + k] * inner;
        for (let i = 0; i < inner; i++) dst[d + i] += wk * src[s + i];
      }
    }
  }
  return dst;
}

/** Encode resampled values as `dtype`; integer outputs round to nearest and saturate. */
export function encodeResampled(dtype: TensorData['dtype'], dims: readonly number[], v: Float64Array): TensorData {
  if (dtype === 'float32' || dtype === 'float64' || isFloat(dtype)) return TensorData.fromNumbers(dtype, dims, v);
  if (dtypeKind(dtype) === 'int' || dtypeKind(dtype) === 'uint') {
    const [lo, hi] = intRange(dtype);
    const r = new Float64Array(v.length);
    for (let i = 0; i < v.length; i++) r[i] = Number.isNaN(v[i]) ? 0 : Math.min(hi, Math.max(lo, Math.round(v[i])));
    return TensorData.fromNumbers(dtype, dims, r);
  }
  throw new Error(`cannot resample a tensor of type ${dtype} (expected a numeric type)`);
}

/** Resample `x` to `outDims` with per-axis `scales` (used by the coordinate transforms) and `roi`. */
export function resample(x: TensorData, outDims: number[], scales: number[], roi: number[] | undefined, o: ResizeOptions): TensorData {
  const rank = x.rank;
  let dims = [...x.dims];
  let data = x.toFloat64();
  const masks: (Uint8Array | null)[] = new Array(rank).fill(null);
  // shrinking axes first, so that no intermediate is larger than both the input and the output
  const order = [...Array(rank).keys()].sort((a, b) => outDims[a] / (dims[a] || 1) - outDims[b] / (dims[b] || 1));
  for (const a of order) {
    const start = roi ? roi[a] : 0, end = roi ? roi[a + rank] : 1;
    const plan = planAxis(dims[a], outDims[a], scales[a], start, end, o);
    masks[a] = plan.outside;
    if (isIdentity(plan, dims[a])) continue;
    data = applyPlan(data, dims, a, plan);
    dims[a] = outDims[a];
  }
  dims = outDims;
  if (o.coord === 'tf_crop_and_resize' && masks.some((m) => m?.some((v) => v))) {
    const outside = new Uint8Array(data.length); // flat mask over the output, built from the per-axis masks
    let stride = data.length;
    for (let a = 0; a < rank; a++) {
      const len = dims[a];
      stride /= len;
      const m = masks[a];
      if (!m || !m.some((v) => v)) continue;
      for (let i = 0; i < data.length; i++) if (m[Math.floor(i / stride) % len]) outside[i] = 1;
    }
    for (let i = 0; i < data.length; i++) if (outside[i]) data[i] = o.extrapolation;
  }
  return encodeResampled(x.dtype, dims, data);
}

// ---------------------------------------------------------------------------------------------------------------
// Resize

const resizeAttrs = {
  antialias: attr.int(0),
  axes: attr.ints(),
  coordinate_transformation_mode: attr.string('half_pixel'),
  cubic_coeff_a: attr.float(-0.75),
  exclude_outside: attr.int(0),
  extrapolation_value: attr.float(0),
  keep_aspect_ratio_policy: attr.string('stretch'),
  mode: attr.string('nearest'),
  nearest_mode: attr.string('round_prefer_floor'),
};
type ResizeAttrs = { [K in keyof typeof resizeAttrs]: (typeof resizeAttrs)[K]['default'] };

function checkMode(mode: string, opset: number): ResizeOptions['mode'] {
  if (mode === 'nearest' || mode === 'linear' || (mode === 'cubic' && opset >= 11)) return mode;
  if (mode === 'bilinear') return 'linear'; // Upsample-7 spelling
  throw new Error(`unsupported mode '${mode}' (expected nearest, linear${opset >= 11 ? ' or cubic' : ''})`);
}

function resizeOptions(a: ResizeAttrs, opset: number): ResizeOptions {
  const legacy = opset < 11;
  return {
    mode: checkMode(a.mode ?? 'nearest', opset),
    coord: legacy ? 'asymmetric' : a.coordinate_transformation_mode ?? 'half_pixel',
    nearestMode: (legacy ? 'simple' : a.nearest_mode ?? 'round_prefer_floor') as NearestMode,
    cubicA: a.cubic_coeff_a ?? -0.75,
    excludeOutside: !!a.exclude_outside,
    antialias: opset >= 18 && !!a.antialias,
    extrapolation: a.extrapolation_value ?? 0,
  };
}

/** Where Resize's inputs sit in each opset: opset 10 is (X, scales); 11+ is (X, roi, scales, sizes). */
const resizeInputIndex = (opset: number) => (opset < 11 ? { roi: -1, scales: 1, sizes: -1 } : { roi: 1, scales: 2, sizes: 3 });

interface ResizeShapePlan { outDims: number[]; scales: number[]; roi?: number[] }

/**
 * Output dims and per-axis scales from the scales/sizes/roi inputs (numbers, already read), honouring `axes`
 * and keep_aspect_ratio_policy.
 */
export function planResize(inDims: readonly number[], scalesIn: number[] | undefined, sizesIn: number[] | undefined,
  roiIn: number[] | undefined, a: ResizeAttrs, opset: number): ResizeShapePlan {
  const rank = inDims.length;
  const axes = opset >= 18 && a.axes ? a.axes.map((ax) => normAxis(ax, rank, 'Resize axis')) : [...Array(rank).keys()];
  if (new Set(axes).size !== axes.length) throw new Error(`Resize axes [${a.axes}] repeat an axis`);
  const scales = new Array<number>(rank).fill(1);
  const outDims = [...inDims];
  let roi: number[] | undefined;
  const crop = (a.coordinate_transformation_mode ?? 'half_pixel') === 'tf_crop_and_resize' && opset >= 11;
  if (crop && roiIn && roiIn.length) {
    if (roiIn.length !== 2 * axes.length) throw new Error(`roi has ${roiIn.length} values, expected ${2 * axes.length} (2 per resized axis)`);
    roi = [...new Array(rank).fill(0), ...new Array(rank).fill(1)];
    axes.forEach((ax, i) => { roi![ax] = roiIn[i]; roi![ax + rank] = roiIn[i + axes.length]; });
  }
  if (scalesIn && scalesIn.length) {
    if (sizesIn && sizesIn.length) throw new Error('Resize takes either scales or sizes, but both were given');
    if (scalesIn.length !== axes.length) throw new Error(`scales has ${scalesIn.length} values, expected ${axes.length} (one per resized axis)`);
    axes.forEach((ax, i) => {
      const s = scalesIn[i];
      if (!(s > 0) || !Number.isFinite(s)) throw new Error(`scales must be positive, found ${s} for axis ${ax}`);
      scales[ax] = s;
      const extent = roi ? roi[ax + rank] - roi[ax] : 1;
      outDims[ax] = Math.floor(inDims[ax] * extent * s);
    });
  } else if (sizesIn && sizesIn.length) {
    if (sizesIn.length !== axes.length) throw new Error(`sizes has ${sizesIn.length} values, expected ${axes.length} (one per resized axis)`);
    if (sizesIn.some((s) => !Number.isInteger(s) || s < 0)) throw new Error(`sizes must be non-negative integers, found [${sizesIn}]`);
    const policy = opset >= 18 ? a.keep_aspect_ratio_policy ?? 'stretch' : 'stretch';
    if (policy === 'stretch') {
      axes.forEach((ax, i) => { outDims[ax] = sizesIn[i]; scales[ax] = sizesIn[i] / inDims[ax]; });
    } else if (policy === 'not_larger' || policy === 'not_smaller') {
      const ratios = axes.map((ax, i) => sizesIn[i] / inDims[ax]);
      const s = policy === 'not_larger' ? Math.min(...ratios) : Math.max(...ratios);
      axes.forEach((ax) => { scales[ax] = s; outDims[ax] = Math.round(s * inDims[ax]); });
    } else {
      throw new Error(`unsupported keep_aspect_ratio_policy '${policy}' (expected stretch, not_larger or not_smaller)`);
    }
  } else {
    throw new Error('Resize needs scales or sizes, but neither was given');
  }
  if (outDims.reduce((x, y) => x * y, 1) > MAX_ELEMENTS) throw new Error(`Resize output [${outDims}] is too large`);
  return { outDims, scales, roi };
}

function numbersOf(t: TensorData | undefined): number[] | undefined {
  return t ? t.toNumberArray() : undefined;
}

export const Resize = defineOp({
  name: 'Resize', versions: [10, 11, 13, 18, 19], attrs: resizeAttrs, inputs: [1, 4], outputs: [1, 1],
  doc: 'Resize (nearest/linear/cubic, every coordinate transformation mode, antialias)',
  infer: (ctx) => [resizeInfer(ctx, ctx.opset)],
  run: (ctx) => {
    const x = ctx.tensor(0);
    const at = resizeInputIndex(ctx.opset);
    const roi = at.roi >= 0 ? numbersOf(ctx.optionalTensor(at.roi)) : undefined;
    const scales = numbersOf(ctx.optionalTensor(at.scales));
    const sizes = at.sizes >= 0 ? numbersOf(ctx.optionalTensor(at.sizes)) : undefined;
    const p = planResize(x.dims, scales, sizes, roi, ctx.attrs, ctx.opset);
    return [resample(x, p.outDims, p.scales, p.roi, resizeOptions(ctx.attrs, ctx.opset))];
  },
});

function resizeInfer(ctx: InferContext<ResizeAttrs>, opset: number, scalesAttr?: number[]): ValueType {
  const t = tensorTypeOf(ctx.inputTypes[0]);
  if (!t) return { kind: 'unknown' };
  const shape = t.shape;
  if (!shape) return { kind: 'tensor', dtype: t.dtype };
  const at = opset < 11 ? { roi: -1, scales: scalesAttr ? -1 : 1, sizes: -1 } : resizeInputIndex(opset);
  const known = (i: number) => (i >= 0 && ctx.inputTypes[i] ? ctx.constant(i) : undefined);
  const scales = scalesAttr ?? numbersOf(known(at.scales));
  const sizes = numbersOf(known(at.sizes));
  const roi = numbersOf(known(at.roi));
  const unknownAll = (): ValueType => ({ kind: 'tensor', dtype: t.dtype, shape: shape.map(() => undefined) });
  if (!(scales && scales.length) && !(sizes && sizes.length)) return unknownAll();
  const crop = ctx.attrs.coordinate_transformation_mode === 'tf_crop_and_resize';
  if (crop && at.roi >= 0 && ctx.inputTypes[at.roi] && !roi) return unknownAll();
  // Resolve with placeholder 1s for symbolic dims, then keep the dims that the op leaves alone.
  const numeric = shape.map((d) => (typeof d === 'number' ? d : 1));
  let p: ResizeShapePlan;
  try {
    p = planResize(numeric, scales, sizes, roi, ctx.attrs, opset);
  } catch {
    return unknownAll();
  }
  const rank = shape.length;
  const axes = opset >= 18 && ctx.attrs.axes ? ctx.attrs.axes.map((a) => (a < 0 ? a + rank : a)) : [...Array(rank).keys()];
  const bySizes = !(scales && scales.length);
  const aspect = bySizes && opset >= 18 && (ctx.attrs.keep_aspect_ratio_policy ?? 'stretch') !== 'stretch';
  const allKnown = axes.every((a) => typeof shape[a] === 'number');
  const out: Dim[] = shape.map((d, i) => {
    if (!axes.includes(i)) return d;
    if (bySizes) return aspect && !allKnown ? undefined : p.outDims[i];
    if (typeof d === 'number') return p.outDims[i];
    return p.scales[i] === 1 && !p.roi ? d : undefined;
  });
  return { kind: 'tensor', dtype: t.dtype, shape: out };
}

// ---------------------------------------------------------------------------------------------------------------
// Upsample (deprecated in opset 10): nearest/linear with asymmetric coordinates

export const Upsample = defineOp({
  name: 'Upsample', versions: [7, 9, 10],
  attrs: { mode: attr.string('nearest'), scales: attr.floats() }, inputs: [1, 2], outputs: [1, 1],
  doc: 'Upsample by scales (nearest or linear, asymmetric coordinates); deprecated in favour of Resize',
  infer: (ctx) => {
    const a = { ...defaultResizeAttrs(), mode: ctx.attrs.mode };
    return [resizeInfer({ ...ctx, attrs: a } as InferContext<ResizeAttrs>, 10, ctx.opset < 9 ? ctx.attrs.scales ?? [] : undefined)];
  },
  run: (ctx) => {
    const x = ctx.tensor(0);
    const scales = ctx.opset < 9 ? ctx.attrs.scales : ctx.tensor(1).toNumberArray();
    if (!scales) throw new Error('Upsample-7 needs the scales attribute');
    if (scales.length !== x.rank) throw new Error(`scales has ${scales.length} values, expected ${x.rank} (the input rank)`);
    if (scales.some((s) => !(s >= 1))) throw new Error(`Upsample scales must be >= 1, found [${scales}]`);
    const a = { ...defaultResizeAttrs(), mode: ctx.attrs.mode };
    const p = planResize(x.dims, scales, undefined, undefined, a, 10);
    return [resample(x, p.outDims, p.scales, undefined, resizeOptions(a, 10))];
  },
});

function defaultResizeAttrs(): ResizeAttrs {
  return Object.fromEntries(Object.entries(resizeAttrs).map(([k, s]) => [k, s.default])) as ResizeAttrs;
}

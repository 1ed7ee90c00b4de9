// Image operators: Resize/Upsample (image-resize.ts), GridSample, AffineGrid, RoiAlign, NonMaxSuppression and
// ImageDecoder (image-decode.ts).
import type { Dim, ValueType } from '../ir/graph.js';
import { defineOp, attr, type OpDef } from '../ir/schema.js';
import { TensorData, MAX_ELEMENTS, stridesOf } from '../ir/tensor.js';
import { isFloat } from '../ir/dtype.js';
import { prod, tensorTypeOf } from './util.js';
import { Resize, Upsample, cubicKernel, encodeResampled } from './image-resize.js';
import { ImageDecoder } from './image-decode.js';

const unknown: ValueType = { kind: 'unknown' };

function checkCount(n: number, what: string): void {
  if (n > MAX_ELEMENTS) throw new Error(`${what} would have ${n} elements (limit ${MAX_ELEMENTS})`);
}

function requireFloat(t: TensorData, what: string): void {
  if (!isFloat(t.dtype)) throw new Error(`${what} must be a floating-point tensor, found ${t.dtype}`);
}

// ---------------------------------------------------------------------------------------------------------------
// GridSample

type Padding = 'zeros' | 'border' | 'reflection';

/** Reflect x into [lo, hi] (repeatedly, like a mirror at both ends). */
function reflect(x: number, lo: number, hi: number): number {
  const range = hi - lo;
  if (range <= 0) return lo;
  if (x < lo) {
    const d = lo - x, n = Math.floor(d / range), r = d - n * range;
    return n % 2 === 0 ? lo + r : hi - r;
  }
  if (x > hi) {
    const d = x - hi, n = Math.floor(d / range), r = d - n * range;
    return n % 2 === 0 ? hi - r : lo + r;
  }
  return x;
}

/** Round half to even (C nearbyint in the default rounding mode). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const GRID_MODES: Record<string, 'nearest' | 'linear' | 'cubic'> = {
  nearest: 'nearest', linear: 'linear', bilinear: 'linear', cubic: 'cubic', bicubic: 'cubic',
};

function gridSample(x: TensorData, grid: TensorData, mode: 'nearest' | 'linear' | 'cubic', padding: Padding, align: boolean): TensorData {
  const r = x.rank - 2;
  if (r < 1) throw new Error(`GridSample input must have rank >= 3 ([N, C, spatial...]), found rank ${x.rank}`);
  if (grid.rank !== r + 2 || grid.dims[0] !== x.dims[0] || grid.dims[r + 1] !== r) {
    throw new Error(`grid must have shape [${x.dims[0]}, out spatial (${r} dims)..., ${r}] for input [${x.dims}], found [${grid.dims}]`);
  }
  const [N, C] = x.dims;
  const inSp = x.dims.slice(2), outSp = grid.dims.slice(1, r + 1);
  const inSize = prod(inSp), P = prod(outSp);
  const inStrides = stridesOf(inSp);
  checkCount(N * C * P, 'GridSample output');
  const xd = x.toFloat64(), gd = grid.toFloat64();
  const out = new Float64Array(N * C * P);
  const nt = mode === 'nearest' ? 1 : mode === 'linear' ? 2 : 4;
  const tapIdx = new Float64Array(r * nt), tapW = new Float64Array(r * nt);
  const combos = nt ** r;
  const offs = new Int32Array(combos), ws = new Float64Array(combos);
  const counter = new Int32Array(r);
  for (let n = 0; n < N; n++) {
    for (let p = 0; p < P; p++) {
      let valid = true;
      for (let d = 0; d < r && valid; d++) {
        const size = inSp[d];
        const c = gd[(n * P + p) * r + (r - 1 - d)]; // grid components run x (last spatial dim) first
        let v = align ? ((c + 1) / 2) * (size - 1) : ((c + 1) * size - 1) / 2;
        if (Number.isNaN(v)) { valid = false; break; }
        if (mode === 'nearest') v = roundHalfEven(v);
        const lo = align ? 0 : -0.5, hi = align ? size - 1 : size - 0.5;
        if (v < lo || v > hi) {
          if (padding === 'border') v = Math.min(Math.max(v, 0), size - 1);
          else if (padding === 'reflection') v = reflect(v, lo, hi);
        }
        const f = Math.floor(v), t = v - f;
        for (let k = 0; k < nt; k++) {
          let i: number, w: number;
          if (mode === 'nearest') { i = v; w = 1; }
          else if (mode === 'linear') { i = f + k; w = k === 0 ? 1 - t : t; }
          else { i = f - 1 + k; w = cubicKernel(t - (k - 1), -0.75); }
          if (i < 0 || i >= size) {
            if (padding === 'zeros') i = -1;
            else if (padding === 'border') i = Math.min(Math.max(i, 0), size - 1);
            else i = Math.min(Math.max(Math.trunc(reflect(i, lo, hi)), 0), size - 1);
          }
          tapIdx[d * nt + k] = i;
          tapW[d * nt + k] = w;
        }
      }
      if (!valid) continue;
      // enumerate the nt^r corner combinations
      let m = 0;
      counter.fill(0);
      for (let q = 0; q < combos; q++) {
        let off = 0, w = 1;
        for (let d = 0; d < r; d++) {
          const i = tapIdx[d * nt + counter[d]];
          if (i < 0) { w = 0; break; }
          off += i * inStrides[d];
          w *= tapW[d * nt + counter[d]];
        }
        if (w !== 0) { offs[m] = off; ws[m] = w; m++; }
        for (let d = r - 1; d >= 0; d--) {
          if (++counter[d] < nt) break;
          counter[d] = 0;
        }
      }
      for (let ch = 0; ch < C; ch++) {
        const base = (n * C + ch) * inSize;
        let s = 0;
        for (let k = 0; k < m; k++) s += ws[k] * xd[base + offs[k]];
        out[(n * C + ch) * P + p] = s;
      }
    }
  }
  return encodeResampled(x.dtype, [N, C, ...outSp], out);
}

const GridSample = defineOp({
  name: 'GridSample', versions: [16, 20, 22],
  attrs: { align_corners: attr.int(0), mode: attr.string('linear'), padding_mode: attr.string('zeros') },
  inputs: [2, 2], outputs: [1, 1],
  doc: 'Sample the input at grid locations (nearest/linear/cubic; zeros/border/reflection padding; N-D from opset 20)',
  infer: (ctx) => {
    const x = tensorTypeOf(ctx.inputTypes[0]), g = tensorTypeOf(ctx.inputTypes[1]);
    if (!x) return [unknown];
    if (!x.shape || !g?.shape) return [{ kind: 'tensor', dtype: x.dtype }];
    return [{ kind: 'tensor', dtype: x.dtype, shape: [x.shape[0] ?? g.shape[0], x.shape[1], ...g.shape.slice(1, -1)] }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), grid = ctx.tensor(1);
    requireFloat(grid, 'grid');
    const mode = GRID_MODES[ctx.attrs.mode];
    if (!mode) throw new Error(`unsupported GridSample mode '${ctx.attrs.mode}' (expected linear, nearest or cubic)`);
    const padding = ctx.attrs.padding_mode as Padding;
    if (!['zeros', 'border', 'reflection'].includes(padding)) {
      throw new Error(`unsupported padding_mode '${padding}' (expected zeros, border or reflection)`);
    }
    if (ctx.opset < 20 && x.rank !== 4) throw new Error(`GridSample-${ctx.opset} takes a 4-D input, found rank ${x.rank}`);
    return [gridSample(x, grid, mode, padding, !!ctx.attrs.align_corners)];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// AffineGrid

const AffineGrid = defineOp({
  name: 'AffineGrid', versions: [20], attrs: { align_corners: attr.int(0) }, inputs: [2, 2], outputs: [1, 1],
  doc: 'Sampling grid [N, (D,) H, W, 2|3] from affine matrices theta',
  infer: (ctx) => {
    const th = tensorTypeOf(ctx.inputTypes[0]);
    if (!th) return [unknown];
    const size = ctx.constant(1)?.toNumberArray();
    if (size) return [{ kind: 'tensor', dtype: th.dtype, shape: [size[0], ...size.slice(2), size.length - 2] }];
    const st = tensorTypeOf(ctx.inputTypes[1]);
    const len = st?.shape?.[0];
    if (typeof len === 'number') {
      const shape: Dim[] = [th.shape?.[0], ...new Array(len - 2).fill(undefined), len - 2];
      return [{ kind: 'tensor', dtype: th.dtype, shape }];
    }
    return [{ kind: 'tensor', dtype: th.dtype }];
  },
  run: (ctx) => {
    const theta = ctx.tensor(0);
    requireFloat(theta, 'theta');
    const size = ctx.tensor(1).toNumberArray();
    if (size.length !== 4 && size.length !== 5) throw new Error(`size must have 4 ([N, C, H, W]) or 5 ([N, C, D, H, W]) values, found ${size.length}`);
    if (size.some((s) => !Number.isInteger(s) || s < 0)) throw new Error(`size must hold non-negative integers, found [${size}]`);
    const nd = size.length - 2, N = size[0];
    if (theta.rank !== 3 || theta.dims[0] !== N || theta.dims[1] !== nd || theta.dims[2] !== nd + 1) {
      throw new Error(`theta must have shape [${N}, ${nd}, ${nd + 1}], found [${theta.dims}]`);
    }
    const sp = size.slice(2); // (D,) H, W
    const align = !!ctx.attrs.align_corners;
    // base coordinate along each spatial dim, indexed in x, y, z order (x = last dim)
    const base = sp.slice().reverse().map((L) => {
      const b = new Float64Array(L);
      for (let i = 0; i < L; i++) b[i] = align ? (L === 1 ? -1 : -1 + (2 * i) / (L - 1)) : (2 * i + 1) / L - 1;
      return b;
    });
    const th = theta.toFloat64();
    const P = prod(sp);
    checkCount(N * P * nd, 'AffineGrid output');
    const vals = new Float64Array(N * P * nd);
    const spStrides = stridesOf(sp);
    const coord = new Float64Array(nd);
    for (let n = 0; n < N; n++) {
      for (let p = 0; p < P; p++) {
        for (let d = 0; d < nd; d++) coord[nd - 1 - d] = base[nd - 1 - d][Math.floor(p / spStrides[d]) % sp[d]];
        for (let k = 0; k < nd; k++) {
          const row = (n * nd + k) * (nd + 1);
          let s = th[row + nd];
          for (let j = 0; j < nd; j++) s += th[row + j] * coord[j];
          vals[(n * P + p) * nd + k] = s;
        }
      }
    }
    return [TensorData.fromNumbers(theta.dtype, [N, ...sp, nd], vals)];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// RoiAlign

const RoiAlign = defineOp({
  name: 'RoiAlign', versions: [10, 16, 22],
  attrs: {
    coordinate_transformation_mode: attr.string('half_pixel'), mode: attr.string('avg'), output_height: attr.int(1),
    output_width: attr.int(1), sampling_ratio: attr.int(0), spatial_scale: attr.float(1),
  },
  inputs: [3, 3], outputs: [1, 1],
  doc: 'Region-of-interest align: bilinear samples averaged (or maxed) per output bin',
  infer: (ctx) => {
    const x = tensorTypeOf(ctx.inputTypes[0]), rois = tensorTypeOf(ctx.inputTypes[1]);
    if (!x) return [unknown];
    return [{ kind: 'tensor', dtype: x.dtype, shape: [rois?.shape?.[0], x.shape?.[1], ctx.attrs.output_height, ctx.attrs.output_width] }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), rois = ctx.tensor(1), bi = ctx.tensor(2).toNumberArray();
    const a = ctx.attrs;
    if (x.rank !== 4) throw new Error(`RoiAlign input must be 4-D [N, C, H, W], found [${x.dims}]`);
    if (rois.rank !== 2 || rois.dims[1] !== 4) throw new Error(`rois must have shape [num_rois, 4], found [${rois.dims}]`);
    const R = rois.dims[0];
    if (bi.length !== R) throw new Error(`batch_indices has ${bi.length} values, expected ${R} (one per roi)`);
    if (a.mode !== 'avg' && a.mode !== 'max') throw new Error(`unsupported RoiAlign mode '${a.mode}' (expected avg or max)`);
    const mode16 = ctx.opset >= 16 ? a.coordinate_transformation_mode : 'output_half_pixel';
    if (mode16 !== 'half_pixel' && mode16 !== 'output_half_pixel') {
      throw new Error(`unsupported coordinate_transformation_mode '${mode16}' (expected half_pixel or output_half_pixel)`);
    }
    const oh = a.output_height, ow = a.output_width;
    if (!(oh > 0 && ow > 0)) throw new Error(`output_height and output_width must be positive, found ${oh} and ${ow}`);
    const [N, C, H, W] = x.dims;
    checkCount(R * C * oh * ow, 'RoiAlign output');
    const xd = x.toFloat64(), rd = rois.toFloat64();
    const out = new Float64Array(R * C * oh * ow);
    const halfPixel = mode16 === 'half_pixel';
    const offset = halfPixel ? 0.5 : 0;
    for (let r = 0; r < R; r++) {
      const b = bi[r];
      if (!(Number.isInteger(b) && b >= 0 && b < N)) throw new Error(`batch index ${b} of roi ${r} is out of range [0, ${N})`);
      const x0 = rd[r * 4] * a.spatial_scale - offset, y0 = rd[r * 4 + 1] * a.spatial_scale - offset;
      let rw = rd[r * 4 + 2] * a.spatial_scale - offset - x0, rh = rd[r * 4 + 3] * a.spatial_scale - offset - y0;
      if (!halfPixel) { rw = Math.max(rw, 1); rh = Math.max(rh, 1); }
      const bh = rh / oh, bw = rw / ow;
      const gh = a.sampling_ratio > 0 ? a.sampling_ratio : Math.ceil(rh / oh);
      const gw = a.sampling_ratio > 0 ? a.sampling_ratio : Math.ceil(rw / ow);
      if (gh * gw > 1 << 24) throw new Error(`roi ${r} needs ${gh * gw} samples per bin; set sampling_ratio`);
      const count = Math.max(gh * gw, 1);
      for (let c = 0; c < C; c++) {
        const img = (b * C + c) * H * W;
        for (let ph = 0; ph < oh; ph++) {
          for (let pw = 0; pw < ow; pw++) {
            let acc = a.mode === 'avg' ? 0 : -Infinity;
            for (let iy = 0; iy < gh; iy++) {
              const y = y0 + ph * bh + ((iy + 0.5) * bh) / gh;
              for (let ix = 0; ix < gw; ix++) {
                const xx = x0 + pw * bw + ((ix + 0.5) * bw) / gw;
                const v = bilinearRoi(xd, img, H, W, y, xx, a.mode === 'max');
                acc = a.mode === 'avg' ? acc + v : Math.max(acc, v);
              }
            }
            out[((r * C + c) * oh + ph) * ow + pw] = a.mode === 'avg' ? acc / count : acc === -Infinity ? 0 : acc;
          }
        }
      }
    }
    return [TensorData.fromNumbers(x.dtype, [R, C, oh, ow], out)];
  },
});

/**
 * Bilinear sample at (y, x) for RoiAlign; samples more than one pixel outside the image count as 0. In max mode
 * the result is the largest of the four weighted corner terms (the behaviour of the ONNX reference and ORT).
 */
function bilinearRoi(d: Float64Array, base: number, H: number, W: number, y: number, x: number, max: boolean): number {
  if (y < -1 || y > H || x < -1 || x > W) return 0;
  y = Math.max(y, 0);
  x = Math.max(x, 0);
  let yl = Math.floor(y), xl = Math.floor(x), yh: number, xh: number;
  if (yl >= H - 1) { yh = yl = H - 1; y = yl; } else yh = yl + 1;
  if (xl >= W - 1) { xh = xl = W - 1; x = xl; } else xh = xl + 1;
  const ly = y - yl, lx = x - xl, hy = 1 - ly, hx = 1 - lx;
  const v1 = hy * hx * d[base + yl * W + xl], v2 = hy * lx * d[base + yl * W + xh];
  const v3 = ly * hx * d[base + yh * W + xl], v4 = ly * lx * d[base + yh * W + xh];
  return max ? Math.max(v1, v2, v3, v4) : v1 + v2 + v3 + v4;
}

// ---------------------------------------------------------------------------------------------------------------
// NonMaxSuppression

const NonMaxSuppression = defineOp({
  name: 'NonMaxSuppression', versions: [10, 11], attrs: { center_point_box: attr.int(0) }, inputs: [2, 5], outputs: [1, 1],
  doc: 'Greedy per-class non-maximum suppression; outputs [num_selected, 3] (batch, class, box) indices',
  infer: () => [{ kind: 'tensor', dtype: 'int64', shape: [undefined, 3] }],
  run: (ctx) => {
    const boxes = ctx.tensor(0), scores = ctx.tensor(1);
    if (boxes.rank !== 3 || boxes.dims[2] !== 4) throw new Error(`boxes must have shape [batch, boxes, 4], found [${boxes.dims}]`);
    const [B, NB] = boxes.dims;
    if (scores.rank !== 3 || scores.dims[0] !== B || scores.dims[2] !== NB) {
      throw new Error(`scores must have shape [${B}, classes, ${NB}], found [${scores.dims}]`);
    }
    const C = scores.dims[1];
    const maxOut = ctx.optionalTensor(2)?.size ? Number(ctx.optionalTensor(2)!.toBigInts()[0]) : 0;
    const iouT = ctx.optionalTensor(3)?.size ? ctx.optionalTensor(3)!.get(0) : 0;
    const scoreT = ctx.optionalTensor(4)?.size ? ctx.optionalTensor(4)!.get(0) : undefined;
    if (iouT < 0 || iouT > 1) throw new Error(`iou_threshold must be in [0, 1], found ${iouT}`);
    const bd = boxes.toFloat64(), sd = scores.toFloat64();
    // corners as (y1, x1, y2, x2) with y1 <= y2, x1 <= x2
    const corners = new Float64Array(B * NB * 4);
    for (let i = 0; i < B * NB; i++) {
      const [a, b, c, d] = [bd[i * 4], bd[i * 4 + 1], bd[i * 4 + 2], bd[i * 4 + 3]];
      let y1: number, x1: number, y2: number, x2: number;
      if (ctx.attrs.center_point_box) { x1 = a - c / 2; x2 = a + c / 2; y1 = b - d / 2; y2 = b + d / 2; }
      else { y1 = Math.min(a, c); y2 = Math.max(a, c); x1 = Math.min(b, d); x2 = Math.max(b, d); }
      corners.set([y1, x1, y2, x2], i * 4);
    }
    const iou = (i: number, j: number) => {
      const p = i * 4, q = j * 4;
      const ih = Math.min(corners[p + 2], corners[q + 2]) - Math.max(corners[p], corners[q]);
      const iw = Math.min(corners[p + 3], corners[q + 3]) - Math.max(corners[p + 1], corners[q + 1]);
      if (ih <= 0 || iw <= 0) return 0;
      const inter = ih * iw;
      const areaI = (corners[p + 2] - corners[p]) * (corners[p + 3] - corners[p + 1]);
      const areaJ = (corners[q + 2] - corners[q]) * (corners[q + 3] - corners[q + 1]);
      const union = areaI + areaJ - inter;
      return union > 0 ? inter / union : 0;
    };
    const sel: number[] = [];
    if (maxOut > 0) {
      for (let b = 0; b < B; b++) {
        for (let c = 0; c < C; c++) {
          const sBase = (b * C + c) * NB;
          const cand: number[] = [];
          for (let i = 0; i < NB; i++) if (scoreT === undefined || sd[sBase + i] > scoreT) cand.push(i);
          cand.sort((i, j) => sd[sBase + j] - sd[sBase + i] || i - j);
          const kept: number[] = [];
          for (const i of cand) {
            if (kept.length >= maxOut) break;
            if (kept.every((k) => iou(b * NB + i, b * NB + k) <= iouT)) {
              kept.push(i);
              sel.push(b, c, i);
            }
          }
        }
      }
    }
    return [TensorData.fromNumbers('int64', [sel.length / 3, 3], sel)];
  },
});

const ops: OpDef<any>[] = [Resize, Upsample, GridSample, AffineGrid, RoiAlign, NonMaxSuppression, ImageDecoder];
export default ops;

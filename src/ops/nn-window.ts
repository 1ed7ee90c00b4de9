// Sliding-window geometry shared by the convolutions and poolings: resolving kernel/strides/dilations/pads/auto_pad
// into per-axis padding and output sizes (for kernels and for shape inference), and the flat input offset of every
// output position for one kernel tap (the gather table behind im2col, col2im and the pooling windows).
import type { Dim } from '../ir/graph.js';

export interface WindowAttrs {
  kernel: number[];
  strides?: number[];
  dilations?: number[];
  pads?: number[];
  autoPad?: string;
  ceilMode?: boolean;
}

export interface Window {
  kernel: number[];
  strides: number[];
  dilations: number[];
  padsBegin: number[];
  padsEnd: number[];
  outDims: number[];
}

function checkList(name: string, v: number[] | undefined, len: number, min: number, dflt: number): number[] {
  if (v === undefined || v.length === 0) return new Array<number>(len).fill(dflt);
  if (v.length !== len) throw new Error(`${name} should have ${len} values (one per spatial axis), found ${v.length}`);
  for (const x of v) if (!Number.isInteger(x) || x < min) throw new Error(`${name} values must be integers >= ${min}, found [${v.join(', ')}]`);
  return v;
}

/** Validated per-axis kernel/strides/dilations and the explicit pads (begin, end) for `rank` spatial axes. */
function normalize(rank: number, a: WindowAttrs) {
  const kernel = checkList('kernel_shape', a.kernel, rank, 1, 1);
  const strides = checkList('strides', a.strides, rank, 1, 1);
  const dilations = checkList('dilations', a.dilations, rank, 1, 1);
  const pads = checkList('pads', a.pads, 2 * rank, 0, 0);
  const mode = a.autoPad || 'NOTSET';
  if (!['NOTSET', 'SAME_UPPER', 'SAME_LOWER', 'VALID'].includes(mode)) {
    throw new Error(`auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, found '${mode}'`);
  }
  return { kernel, strides, dilations, pads, mode };
}

/** Output size and padding of one axis; `input` may be unknown (then only the pads that do not depend on it). */
function axis(input: number, k: number, s: number, d: number, pb: number, pe: number, mode: string, ceil: boolean) {
  const eff = (k - 1) * d + 1;
  if (mode === 'SAME_UPPER' || mode === 'SAME_LOWER') {
    const out = Math.ceil(input / s);
    const total = Math.max(0, (out - 1) * s + eff - input);
    const small = Math.floor(total / 2);
    return mode === 'SAME_UPPER' ? { out, pb: small, pe: total - small } : { out, pb: total - small, pe: small };
  }
  if (mode === 'VALID') pb = pe = 0;
  const span = input + pb + pe - eff;
  if (span < 0) throw new Error(`the input size ${input} (padded ${input + pb + pe}) is smaller than the kernel extent ${eff}`);
  let out = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  // with ceil_mode, a last window that would start inside the end padding is dropped
  if (ceil && (out - 1) * s >= input + pb) out--;
  return { out, pb, pe };
}

/** Resolve the window geometry for known spatial input dims. */
export function resolveWindow(inDims: readonly number[], a: WindowAttrs): Window {
  const r = inDims.length;
  const { kernel, strides, dilations, pads, mode } = normalize(r, a);
  const w: Window = { kernel, strides, dilations, padsBegin: [], padsEnd: [], outDims: [] };
  for (let i = 0; i < r; i++) {
    const x = axis(inDims[i], kernel[i], strides[i], dilations[i], pads[i], pads[i + r], mode, !!a.ceilMode);
    w.padsBegin.push(x.pb);
    w.padsEnd.push(x.pe);
    w.outDims.push(x.out);
  }
  return w;
}

/** Output spatial dims for inference: unknown where the input dim is not a known number. */
export function inferWindowDims(inDims: readonly Dim[], a: WindowAttrs): Dim[] {
  const r = inDims.length;
  const { kernel, strides, dilations, pads, mode } = normalize(r, a);
  return inDims.map((d, i) => (typeof d === 'number'
    ? axis(d, kernel[i], strides[i], dilations[i], pads[i], pads[i + r], mode, !!a.ceilMode).out : undefined));
}

/** Decode flat index `k` of `dims` (row-major) into `out`. */
export function unravel(k: number, dims: readonly number[], out: number[]): number[] {
  for (let i = dims.length - 1; i >= 0; i--) {
    out[i] = k % dims[i];
    k = Math.floor(k / dims[i]);
  }
  return out;
}

/**
 * For kernel tap `tap` (multi-index), the flat offset into a `target`-shaped plane of each grid position in
 * [g0, g1) of `grid` (row-major), or -1 where the tap falls outside the target (in the padding). Position g maps to
 * target coordinate g * stride - padBegin + tap * dilation on each axis.
 */
export function tapOffsets(grid: readonly number[], target: readonly number[], strides: readonly number[],
  dilations: readonly number[], padsBegin: readonly number[], tap: readonly number[], g0: number, g1: number, out: Int32Array): void {
  const r = grid.length;
  if (r === 0) { // no spatial axes: every position is the single element
    for (let g = g0; g < g1; g++) out[g - g0] = 0;
    return;
  }
  // per-axis offset tables; an invalid coordinate gets a large negative value so the sum stays negative
  const INVALID = -(2 ** 40);
  const tables: Float64Array[] = [];
  let stride = 1;
  for (let i = r - 1; i >= 0; i--) {
    const t = new Float64Array(grid[i]);
    for (let g = 0; g < grid[i]; g++) {
      const c = g * strides[i] - padsBegin[i] + tap[i] * dilations[i];
      t[g] = c >= 0 && c < target[i] ? c * stride : INVALID;
    }
    tables[i] = t;
    stride *= target[i];
  }
  const idx = unravel(g0, grid, new Array<number>(r));
  const last = r - 1, lastTable = tables[last], lastLen = grid[last];
  // sum of the tables of every axis but the last, maintained incrementally
  let base = 0;
  for (let i = 0; i < last; i++) base += tables[i][idx[i]];
  let j = idx[last];
  for (let g = g0; g < g1; g++) {
    const v = base + lastTable[j];
    out[g - g0] = v >= 0 ? v : -1;
    if (++j === lastLen) {
      j = 0;
      for (let i = last - 1; i >= 0; i--) {
        base -= tables[i][idx[i]];
        if (++idx[i] < grid[i]) { base += tables[i][idx[i]]; break; }
        idx[i] = 0;
        base += tables[i][0];
      }
    }
  }
}

// Pooling kernels over float64 planes. A window table lists, for each output position, the flat spatial offsets of
// its taps that fall inside the input (row-major tap order, so MaxPool's first maximum wins ties); it is built once
// per call and shared by every (n, c) plane.
import { tapOffsets, unravel, type Window } from './nn-window.js';
import { prod } from './util.js';

export interface WindowTable {
  /** Taps of output o are offs[starts[o] .. starts[o+1]). */
  starts: Int32Array;
  offs: Int32Array;
  /** Per output position: number of taps inside the padded input (count_include_pad's divisor). */
  padCounts: Float64Array;
}

const MAX_TABLE = 1 << 27;

export function windowTable(inDims: readonly number[], win: Window): WindowTable {
  const G = prod(win.outDims), Kp = prod(win.kernel);
  if (G * Kp > MAX_TABLE) throw new Error(`pooling window table of ${G} outputs x ${Kp} taps is too large`);
  const all = new Int32Array(Kp * G);
  const tap = new Array<number>(win.kernel.length);
  for (let kk = 0; kk < Kp; kk++) {
    tapOffsets(win.outDims, inDims, win.strides, win.dilations, win.padsBegin, unravel(kk, win.kernel, tap), 0, G, all.subarray(kk * G));
  }
  const starts = new Int32Array(G + 1);
  let n = 0;
  for (let o = 0; o < G; o++) {
    starts[o] = n;
    for (let kk = 0; kk < Kp; kk++) if (all[kk * G + o] >= 0) n++;
  }
  starts[G] = n;
  const offs = new Int32Array(n);
  for (let o = 0, t = 0; o < G; o++) for (let kk = 0; kk < Kp; kk++) if (all[kk * G + o] >= 0) offs[t++] = all[kk * G + o];
  return { starts, offs, padCounts: padCounts(inDims, win) };
}

/** Taps of each output position that lie in [-padBegin, input + padEnd) on every axis (a separable product). */
function padCounts(inDims: readonly number[], win: Window): Float64Array {
  const r = inDims.length, G = prod(win.outDims);
  const perAxis = inDims.map((n, i) => {
    const c = new Float64Array(win.outDims[i]);
    for (let o = 0; o < win.outDims[i]; o++) {
      for (let k = 0; k < win.kernel[i]; k++) {
        const p = o * win.strides[i] - win.padsBegin[i] + k * win.dilations[i];
        if (p >= -win.padsBegin[i] && p < n + win.padsEnd[i]) c[o]++;
      }
    }
    return c;
  });
  const out = new Float64Array(G);
  const idx = new Array<number>(r);
  for (let o = 0; o < G; o++) {
    unravel(o, win.outDims, idx);
    let p = 1;
    for (let i = 0; i < r; i++) p *= perAxis[i][idx[i]];
    out[o] = p;
  }
  return out;
}

/** Max over each window; `indices` (if given) receives the row-major spatial offset of the first maximum. */
export function maxPool(x: Float64Array, planes: number, I: number, t: WindowTable, y: Float64Array, indices?: Float64Array): void {
  const G = t.starts.length - 1, { starts, offs } = t;
  for (let p = 0; p < planes; p++) {
    const xb = p * I, yb = p * G;
    for (let o = 0; o < G; o++) {
      let best = -Infinity, arg = -1;
      for (let k = starts[o]; k < starts[o + 1]; k++) {
        const v = x[xb + offs[k]];
        if (v > best || arg < 0) { best = v; arg = offs[k]; }
      }
      y[yb + o] = best;
      if (indices) indices[yb + o] = arg;
    }
  }
}

export function averagePool(x: Float64Array, planes: number, I: number, t: WindowTable, includePad: boolean, y: Float64Array): void {
  const G = t.starts.length - 1, { starts, offs, padCounts: pc } = t;
  for (let p = 0; p < planes; p++) {
    const xb = p * I, yb = p * G;
    for (let o = 0; o < G; o++) {
      let s = 0;
      for (let k = starts[o]; k < starts[o + 1]; k++) s += x[xb + offs[k]];
      y[yb + o] = s / (includePad ? pc[o] : starts[o + 1] - starts[o]);
    }
  }
}

export function lpPool(x: Float64Array, planes: number, I: number, t: WindowTable, pNorm: number, y: Float64Array): void {
  const G = t.starts.length - 1, { starts, offs } = t;
  for (let p = 0; p < planes; p++) {
    const xb = p * I, yb = p * G;
    for (let o = 0; o < G; o++) {
      let s = 0;
      for (let k = starts[o]; k < starts[o + 1]; k++) s += Math.abs(x[xb + offs[k]]) ** pNorm;
      y[yb + o] = s ** (1 / pNorm);
    }
  }
}

/** Convert a row-major spatial offset to the column-major one (MaxPool storage_order = 1). */
export function columnMajorIndex(off: number, dims: readonly number[]): number {
  let r = 0, stride = 1;
  const idx = unravel(off, dims, new Array<number>(dims.length));
  for (let i = 0; i < dims.length; i++) {
    r += idx[i] * stride;
    stride *= dims[i];
  }
  return r;
}

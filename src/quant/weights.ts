// Weight quantization: symmetric int8 / float8 per channel or per tensor, int4 in blocks along the reduction axis,
// plus the two scale migrations that run before it: SmoothQuant (activation outliers into the weights) and an
// AWQ-style search (per-input-channel scales from activation magnitude that minimise the int4 output error).
import { TensorData } from '../ir/tensor.js';
import { quantizeLinear, dequantizeLinear } from '../ops/quantize.js';

export type QuantDType = 'int8' | 'float8e4m3fn' | 'int4';
/** Largest representable magnitude used for symmetric scales. */
export const QMAX: Record<QuantDType, number> = { int8: 127, float8e4m3fn: 448, int4: 7 };

export interface QuantizedWeight {
  q: TensorData;
  scale: TensorData;
  /** DequantizeLinear attributes. */
  axis?: number;
  blockSize?: number;
}

function splitDims(dims: readonly number[], axis: number): [number, number, number] {
  const outer = dims.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  return [outer, dims[axis], inner];
}

const safeScale = (amax: number, qmax: number) => (amax > 0 ? Math.fround(amax / qmax) : 1);

/** Symmetric quantization of a float weight, per channel along `axis` or per tensor (axis undefined). */
export function quantizeWeight(w: TensorData, dtype: 'int8' | 'float8e4m3fn', axis?: number): QuantizedWeight {
  const v = w.toFloat64();
  if (axis === undefined) {
    let m = 0;
    for (let i = 0; i < v.length; i++) m = Math.max(m, Math.abs(v[i]));
    const scale = TensorData.scalar('float32', safeScale(m, QMAX[dtype]));
    return { q: quantizeLinear(w, scale, undefined, dtype), scale };
  }
  const [outer, d, inner] = splitDims(w.dims, axis);
  const amax = new Float64Array(d);
  for (let o = 0; o < outer; o++) for (let c = 0; c < d; c++) for (let k = 0; k < inner; k++) {
    amax[c] = Math.max(amax[c], Math.abs(v[(o * d + c) * inner + k]));
  }
  const scale = TensorData.fromNumbers('float32', [d], Array.from(amax, (m) => safeScale(m, QMAX[dtype])));
  return { q: quantizeLinear(w, scale, undefined, dtype, { axis }), scale, axis };
}

/** Symmetric int4 in blocks of `blockSize` along `axis` (the reduction axis); the scale has ceil(D/blockSize) there. */
export function quantizeWeightInt4(w: TensorData, axis: number, blockSize: number): QuantizedWeight {
  const v = w.toFloat64();
  const [outer, d, inner] = splitDims(w.dims, axis);
  const nb = Math.ceil(d / blockSize);
  const amax = new Float64Array(outer * nb * inner);
  for (let o = 0; o < outer; o++) for (let c = 0; c < d; c++) for (let k = 0; k < inner; k++) {
    const s = (o * nb + Math.floor(c / blockSize)) * inner + k;
    amax[s] = Math.max(amax[s], Math.abs(v[(o * d + c) * inner + k]));
  }
  const dims = [...w.dims];
  dims[axis] = nb;
  const scale = TensorData.fromNumbers('float32', dims, Array.from(amax, (m) => safeScale(m, QMAX.int4)));
  return { q: quantizeLinear(w, scale, undefined, 'int4', { axis, blockSize }), scale, axis, blockSize };
}

export function dequantizeWeight(qw: QuantizedWeight): TensorData {
  return dequantizeLinear(qw.q, qw.scale, undefined, 'float32', qw.axis ?? 1, qw.blockSize ?? 0);
}

/** A 2-D weight seen as W[k][n] whatever its layout: kAxis 0 for MatMul's [K, N], 1 for Gemm's transposed [N, K]. */
export interface WeightView {
  w: TensorData;
  kAxis: 0 | 1;
}
const kSize = (v: WeightView) => v.w.dims[v.kAxis];
const nSize = (v: WeightView) => v.w.dims[1 - v.kAxis];
const at = (v: WeightView, k: number, n: number) => (v.kAxis === 0 ? k * nSize(v) + n : n * kSize(v) + k);

/** W with every input channel k multiplied by s[k]. */
export function scaleInputChannels(v: WeightView, s: Float64Array): TensorData {
  const src = v.w.toFloat64();
  const out = new Float32Array(src.length);
  const K = kSize(v), N = nSize(v);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) out[at(v, k, n)] = src[at(v, k, n)] * s[k];
  return new TensorData('float32', v.w.dims, out);
}

/** SmoothQuant: s[k] = max|X_k|^alpha / max|W_k|^(1-alpha); X is divided by s and W multiplied by it. */
export function smoothScales(actAmax: Float64Array, v: WeightView, alpha: number): Float64Array {
  const src = v.w.toFloat64();
  const K = kSize(v), N = nSize(v);
  const s = new Float64Array(K);
  for (let k = 0; k < K; k++) {
    let wm = 0;
    for (let n = 0; n < N; n++) wm = Math.max(wm, Math.abs(src[at(v, k, n)]));
    const x = Math.max(actAmax[k], 1e-5), w = Math.max(wm, 1e-5);
    s[k] = Math.min(1e4, Math.max(1e-4, x ** alpha / w ** (1 - alpha)));
  }
  return s;
}

/** Squared error of X·W_a vs X·W_b over the rows of x ([rows, K] float64, row-major). */
function outputError(x: Float64Array, rows: number, a: WeightView, b: Float64Array): number {
  const K = kSize(a), N = nSize(a);
  const wa = a.w.toFloat64();
  let err = 0;
  for (let r = 0; r < rows; r++) {
    for (let n = 0; n < N; n++) {
      let ya = 0, yb = 0;
      for (let k = 0; k < K; k++) {
        const xv = x[r * K + k];
        ya += xv * wa[at(a, k, n)];
        yb += xv * b[at(a, k, n)];
      }
      err += (ya - yb) ** 2;
    }
  }
  return err;
}

export interface AwqResult {
  alpha: number;
  /** Per-input-channel scale folded into the weight (the activation is divided by it); undefined for alpha 0. */
  scales?: Float64Array;
  weight: QuantizedWeight;
  error: number;
}

/**
 * AWQ-style search: for each alpha, scale input channel k by mean|X_k|^alpha (normalised), quantize to int4 blocks,
 * undo the scale and measure the output error on calibration rows; keep the alpha with the least error.
 */
export function awqSearch(v: WeightView, x: Float64Array, rows: number, meanAbs: Float64Array, blockSize: number,
  alphas = [0, 0.25, 0.5, 0.75, 1]): AwqResult {
  const K = kSize(v);
  let best: AwqResult | undefined;
  for (const alpha of alphas) {
    const s = new Float64Array(K);
    let lo = Infinity, hi = 0;
    for (let k = 0; k < K; k++) {
      s[k] = Math.max(meanAbs[k], 1e-8) ** alpha;
      lo = Math.min(lo, s[k]);
      hi = Math.max(hi, s[k]);
    }
    const norm = Math.sqrt(lo * hi);
    for (let k = 0; k < K; k++) s[k] = Math.fround(Math.max(s[k] / norm, 1e-4));
    const scaled = alpha === 0 ? v.w : scaleInputChannels(v, s);
    const weight = quantizeWeightInt4(scaled, v.kAxis, blockSize);
    const deq = dequantizeWeight(weight).toFloat64();
    const eff = new Float64Array(deq.length);
    const N = nSize(v);
    for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) eff[at(v, k, n)] = deq[at(v, k, n)] / (alpha === 0 ? 1 : s[k]);
    const error = outputError(x, rows, v, eff);
    if (!best || error < best.error) best = { alpha, scales: alpha === 0 ? undefined : s, weight, error };
  }
  return best as AwqResult;
}

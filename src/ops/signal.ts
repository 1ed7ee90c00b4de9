// Signal operators: DFT, STFT, the Hann/Hamming/Blackman windows and MelWeightMatrix.
import type { Dim, ValueType } from '../ir/graph.js';
import { defineOp, attr, type OpDef, type InferContext } from '../ir/schema.js';
import { TensorData, MAX_ELEMENTS } from '../ir/tensor.js';
import { type DType, dtypeFromOnnx, isFloat } from '../ir/dtype.js';
import { prod, tensorTypeOf } from './util.js';
import { fftPlan } from './signal-fft.js';

const unknown: ValueType = { kind: 'unknown' };

function scalarOf(t: TensorData | undefined, what: string): number | undefined {
  if (!t) return undefined;
  if (t.size !== 1) throw new Error(`${what} must be a scalar, found shape [${t.dims}]`);
  return t.get(0);
}

function positiveInt(v: number, what: string): number {
  if (!(Number.isInteger(v) && v > 0)) throw new Error(`${what} must be a positive integer, found ${v}`);
  return v;
}

/** Normalize a DFT axis: accepted range [-r, -2] ∪ [0, r-2] (the last dim holds the real/imaginary parts). */
function dftAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!(a >= 0 && a <= rank - 2)) throw new Error(`DFT axis ${axis} is out of range for an input of rank ${rank} (the last dim holds the complex parts)`);
  return a;
}

// ---------------------------------------------------------------------------------------------------------------
// DFT

interface DftParams { axis: number; inverse: boolean; onesided: boolean; length?: number }

function dft(x: TensorData, p: DftParams): TensorData {
  const rank = x.rank;
  const comps = x.dims[rank - 1];
  if (rank < 2 || (comps !== 1 && comps !== 2)) throw new Error(`DFT input must end in a dim of 1 (real) or 2 (complex), found [${x.dims}]`);
  const a = p.axis, L = x.dims[a];
  const irfft = p.inverse && p.onesided;
  const n = p.length ?? (irfft ? 2 * (L - 1) : L);
  positiveInt(n, 'dft_length');
  const outLen = irfft ? n : p.onesided ? Math.floor(n / 2) + 1 : n;
  const outComps = irfft ? 1 : 2;
  const outer = prod(x.dims, 0, a), inner = prod(x.dims, a + 1, rank - 1);
  const outDims = [...x.dims];
  outDims[a] = outLen;
  outDims[rank - 1] = outComps;
  if (outer * outLen * inner * outComps > MAX_ELEMENTS) throw new Error(`DFT output [${outDims}] is too large`);
  const src = x.toFloat64();
  const out = new Float64Array(outer * outLen * inner * outComps);
  const plan = fftPlan(n);
  const re = new Float64Array(n), im = new Float64Array(n);
  const scale = p.inverse ? 1 / n : 1;
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      re.fill(0); im.fill(0);
      const at = (k: number) => ((o * L + k) * inner + i) * comps;
      if (irfft) {
        // rebuild the Hermitian-symmetric spectrum from its first half
        const half = Math.min(L, Math.floor(n / 2) + 1);
        for (let k = 0; k < half; k++) {
          re[k] = src[at(k)]; im[k] = comps === 2 ? src[at(k) + 1] : 0;
          if (k > 0 && n - k > k) { re[n - k] = re[k]; im[n - k] = -im[k]; }
        }
      } else {
        const m = Math.min(L, n);
        for (let k = 0; k < m; k++) { re[k] = src[at(k)]; if (comps === 2) im[k] = src[at(k) + 1]; }
      }
      plan.run(re, im, p.inverse);
      for (let k = 0; k < outLen; k++) {
        const d = ((o * outLen + k) * inner + i) * outComps;
        out[d] = re[k] * scale;
        if (outComps === 2) out[d + 1] = im[k] * scale;
      }
    }
  }
  return TensorData.fromNumbers(x.dtype, outDims, out);
}

const DFT = defineOp({
  name: 'DFT', versions: [17, 20], attrs: { axis: attr.int(1), inverse: attr.int(0), onesided: attr.int(0) },
  inputs: [1, 3], outputs: [1, 1],
  doc: 'Discrete Fourier transform along one axis (FFT; Bluestein for non-power-of-two lengths)',
  infer: (ctx) => {
    const t = tensorTypeOf(ctx.inputTypes[0]);
    if (!t) return [unknown];
    if (!t.shape) return [{ kind: 'tensor', dtype: t.dtype }];
    const rank = t.shape.length;
    const axisIn = ctx.opset >= 20 ? (ctx.inputTypes[2] ? ctx.constant(2)?.get(0) : -2) : ctx.attrs.axis;
    const lenIn = ctx.inputTypes[1] ? ctx.constant(1) : undefined;
    const irfft = !!ctx.attrs.inverse && !!ctx.attrs.onesided;
    const shape: Dim[] = [...t.shape];
    shape[rank - 1] = irfft ? 1 : 2;
    if (axisIn === undefined) return [{ kind: 'tensor', dtype: t.dtype, shape: shape.map((d, i) => (i === rank - 1 ? d : undefined)) }];
    const a = dftAxis(axisIn, rank);
    const L = t.shape[a];
    const onesided = !!ctx.attrs.onesided;
    let n: Dim;
    if (ctx.inputTypes[1]) n = lenIn?.get(0);
    else n = typeof L === 'number' ? (irfft ? 2 * (L - 1) : L) : onesided ? undefined : L;
    shape[a] = typeof n === 'number' && onesided && !irfft ? Math.floor(n / 2) + 1 : n;
    return [{ kind: 'tensor', dtype: t.dtype, shape }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0);
    if (!isFloat(x.dtype)) throw new Error(`DFT input must be a floating-point tensor, found ${x.dtype}`);
    const axisIn = ctx.opset >= 20 ? scalarOf(ctx.optionalTensor(2), 'axis') ?? -2 : ctx.attrs.axis;
    const len = scalarOf(ctx.optionalTensor(1), 'dft_length');
    return [dft(x, { axis: dftAxis(axisIn, x.rank), inverse: !!ctx.attrs.inverse, onesided: !!ctx.attrs.onesided, length: len })];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// STFT

const STFT = defineOp({
  name: 'STFT', versions: [17], attrs: { onesided: attr.int(1) }, inputs: [2, 4], outputs: [1, 1],
  doc: 'Short-time Fourier transform: [batch, frames, bins, 2]',
  infer: (ctx) => {
    const t = tensorTypeOf(ctx.inputTypes[0]);
    if (!t) return [unknown];
    const step = ctx.constant(1)?.get(0);
    const win = tensorTypeOf(ctx.inputTypes[2])?.shape?.[0];
    const fl = ctx.inputTypes[3] ? ctx.constant(3)?.get(0) : typeof win === 'number' ? win : undefined;
    const L = t.shape?.[1];
    const frames = typeof L === 'number' && step !== undefined && fl !== undefined ? Math.floor((L - fl) / step) + 1 : undefined;
    const bins = fl === undefined ? undefined : ctx.attrs.onesided ? Math.floor(fl / 2) + 1 : fl;
    return [{ kind: 'tensor', dtype: t.dtype, shape: [t.shape?.[0], frames, bins, 2] }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0);
    if (!isFloat(x.dtype)) throw new Error(`STFT signal must be a floating-point tensor, found ${x.dtype}`);
    if (x.rank !== 3 || (x.dims[2] !== 1 && x.dims[2] !== 2)) throw new Error(`STFT signal must have shape [batch, length, 1 or 2], found [${x.dims}]`);
    const step = positiveInt(scalarOf(ctx.tensor(1), 'frame_step')!, 'frame_step');
    const window = ctx.optionalTensor(2);
    let fl = scalarOf(ctx.optionalTensor(3), 'frame_length');
    if (window && window.rank !== 1) throw new Error(`window must be 1-D, found shape [${window.dims}]`);
    if (fl === undefined) {
      if (!window) throw new Error('STFT needs a window or a frame_length');
      fl = window.size;
    } else if (window && window.size !== fl) throw new Error(`window has ${window.size} values but frame_length is ${fl}`);
    positiveInt(fl, 'frame_length');
    const [B, L, comps] = x.dims;
    if (fl > L) throw new Error(`frame_length ${fl} is longer than the signal (${L})`);
    const frames = Math.floor((L - fl) / step) + 1;
    const bins = ctx.attrs.onesided ? Math.floor(fl / 2) + 1 : fl;
    if (B * frames * bins * 2 > MAX_ELEMENTS) throw new Error(`STFT output [${B}, ${frames}, ${bins}, 2] is too large`);
    const w = window?.toFloat64();
    const src = x.toFloat64();
    const out = new Float64Array(B * frames * bins * 2);
    const plan = fftPlan(fl);
    const re = new Float64Array(fl), im = new Float64Array(fl);
    for (let b = 0; b < B; b++) {
      for (let f = 0; f < frames; f++) {
        for (let j = 0; j < fl; j++) {
          const s = (b * L + f * step + j) * comps, g = w ? w[j] : 1;
          re[j] = src[s] * g;
          im[j] = comps === 2 ? src[s + 1] * g : 0;
        }
        plan.run(re, im, false);
        const d = (b * frames + f) * bins * 2;
        for (let k = 0; k < bins; k++) { out[d + 2 * k] = re[k]; out[d + 2 * k + 1] = im[k]; }
      }
    }
    return [TensorData.fromNumbers(x.dtype, [B, frames, bins, 2], out)];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Windows: w[n] = Σ_k a_k cos(2πkn / N), N = size (periodic) or size - 1 (symmetric)

function outputType(code: number): DType {
  const d = dtypeFromOnnx(code);
  if (!isFloat(d) && !['int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64'].includes(d)) {
    throw new Error(`output_datatype ${code} (${d}) is not a numeric type`);
  }
  return d;
}

function windowOp(name: string, coeffs: number[], doc: string) {
  return defineOp({
    name, versions: [17], attrs: { output_datatype: attr.int(1), periodic: attr.int(1) }, inputs: [1, 1], outputs: [1, 1],
    doc,
    infer: (ctx) => {
      const size = ctx.constant(0)?.get(0);
      return [{ kind: 'tensor', dtype: outputType(ctx.attrs.output_datatype), shape: [size] }];
    },
    run: (ctx) => {
      const size = scalarOf(ctx.tensor(0), 'size')!;
      if (!(Number.isInteger(size) && size >= 0 && size <= MAX_ELEMENTS)) throw new Error(`window size must be a non-negative integer, found ${size}`);
      const N = ctx.attrs.periodic ? size : size - 1;
      const v = new Float64Array(size);
      for (let i = 0; i < size; i++) {
        let s = 0;
        for (let k = 0; k < coeffs.length; k++) s += coeffs[k] * (N === 0 ? 1 : Math.cos((2 * Math.PI * k * i) / N));
        v[i] = s;
      }
      return [TensorData.fromNumbers(outputType(ctx.attrs.output_datatype), [size], v)];
    },
  });
}

const HannWindow = windowOp('HannWindow', [0.5, -0.5], 'Hann window: 0.5 - 0.5 cos(2πn/N)');
const HammingWindow = windowOp('HammingWindow', [25 / 46, -(21 / 46)], 'Hamming window: 25/46 - 21/46 cos(2πn/N)');
const BlackmanWindow = windowOp('BlackmanWindow', [0.42, -0.5, 0.08], 'Blackman window: 0.42 - 0.5 cos(2πn/N) + 0.08 cos(4πn/N)');

// ---------------------------------------------------------------------------------------------------------------
// MelWeightMatrix

const MelWeightMatrix = defineOp({
  name: 'MelWeightMatrix', versions: [17], attrs: { output_datatype: attr.int(1) }, inputs: [5, 5], outputs: [1, 1],
  doc: 'Triangular mel filter bank [dft_length/2 + 1, num_mel_bins]',
  infer: (ctx: InferContext<{ output_datatype: number }>) => {
    const bins = ctx.constant(0)?.get(0), len = ctx.constant(1)?.get(0);
    return [{ kind: 'tensor', dtype: outputType(ctx.attrs.output_datatype), shape: [len === undefined ? undefined : Math.floor(len / 2) + 1, bins] }];
  },
  run: (ctx) => {
    const numMel = positiveInt(scalarOf(ctx.tensor(0), 'num_mel_bins')!, 'num_mel_bins');
    const dftLen = positiveInt(scalarOf(ctx.tensor(1), 'dft_length')!, 'dft_length');
    const rate = positiveInt(scalarOf(ctx.tensor(2), 'sample_rate')!, 'sample_rate');
    const lo = scalarOf(ctx.tensor(3), 'lower_edge_hertz')!, hi = scalarOf(ctx.tensor(4), 'upper_edge_hertz')!;
    if (!(lo >= 0 && hi > lo)) throw new Error(`expected 0 <= lower_edge_hertz < upper_edge_hertz, found ${lo} and ${hi}`);
    const specBins = Math.floor(dftLen / 2) + 1;
    if (specBins * numMel > MAX_ELEMENTS) throw new Error(`MelWeightMatrix [${specBins}, ${numMel}] is too large`);
    const mel = (hz: number) => 2595 * Math.log10(1 + hz / 700);
    // (num_mel_bins + 2) band edges, spaced by (hi - lo) / (num_mel_bins + 2) as in the ONNX reference
    const loMel = mel(lo), step = (mel(hi) - loMel) / (numMel + 2);
    const edges = new Array<number>(numMel + 2);
    for (let i = 0; i < numMel + 2; i++) {
      const hz = 700 * (10 ** ((loMel + i * step) / 2595) - 1);
      edges[i] = Math.min(specBins - 1, Math.max(0, Math.floor(((dftLen + 1) * hz) / rate)));
    }
    const out = new Float64Array(specBins * numMel);
    for (let m = 0; m < numMel; m++) {
      const [l, c, r] = [edges[m], edges[m + 1], edges[m + 2]];
      if (c === l) out[c * numMel + m] = 1;
      else for (let j = l; j <= c; j++) out[j * numMel + m] = (j - l) / (c - l);
      for (let j = c; j < r; j++) out[j * numMel + m] = (r - j) / (r - c);
    }
    return [TensorData.fromNumbers(outputType(ctx.attrs.output_datatype), [specBins, numMel], out)];
  },
});

const ops: OpDef<any>[] = [DFT, STFT, HannWindow, HammingWindow, BlackmanWindow, MelWeightMatrix];
export default ops;

// Calibrators: choose the clipping threshold (amax) of an activation from its values on calibration data.
//   max        the largest |x| seen
//   percentile the given percentile of |x| (e.g. 99.99)
//   entropy    the threshold whose quantized distribution is closest to the original in KL divergence, searched over a
//              2048-bin histogram of |x| as TensorRT's entropy calibrator does
import type { TensorData } from '../ir/tensor.js';

export type CalibratorKind = 'max' | 'entropy' | 'percentile';
export const HISTOGRAM_BINS = 2048;

/** Histogram of |x| over [0, range]; values above the range land in the last bin. */
export class AbsHistogram {
  readonly counts: Float64Array;
  total = 0;
  constructor(readonly range: number, bins = HISTOGRAM_BINS) {
    this.counts = new Float64Array(bins);
  }

  get binWidth(): number {
    return this.range / this.counts.length;
  }

  add(t: TensorData): void {
    const v = t.toFloat64();
    const bins = this.counts.length;
    const inv = this.range > 0 ? bins / this.range : 0;
    for (let i = 0; i < v.length; i++) {
      const a = Math.abs(v[i]);
      if (Number.isNaN(a)) continue;
      this.counts[Math.min(bins - 1, Math.floor(a * inv))]++;
    }
    this.total += v.length;
  }

  /** Fraction of values above `threshold` (approximate to one bin). */
  fractionAbove(threshold: number): number {
    if (!this.total || threshold >= this.range) return 0;
    const first = Math.ceil(threshold / this.binWidth);
    let n = 0;
    for (let i = first; i < this.counts.length; i++) n += this.counts[i];
    return n / this.total;
  }
}

/** Largest |x| of a tensor, and whether any x is negative (uint8 activations start at 0 on tensors that are not). */
export function absMax(t: TensorData): { amax: number; negative: boolean } {
  const v = t.toFloat64();
  let m = 0, negative = false;
  for (let i = 0; i < v.length; i++) {
    const a = Math.abs(v[i]);
    if (a > m) m = a;
    if (v[i] < 0) negative = true;
  }
  return { amax: m, negative };
}

/** The |x| below which `pct` percent of the values lie (upper edge of the bin that reaches it). */
export function percentileThreshold(h: AbsHistogram, pct: number): number {
  const target = (pct / 100) * h.total;
  let acc = 0;
  for (let i = 0; i < h.counts.length; i++) {
    acc += h.counts[i];
    if (acc >= target) return Math.min(h.range, (i + 1) * h.binWidth);
  }
  return h.range;
}

function klDivergence(p: Float64Array, q: Float64Array): number {
  let ps = 0, qs = 0;
  for (let i = 0; i < p.length; i++) { ps += p[i]; qs += q[i]; }
  if (!ps || !qs) return Infinity;
  let kl = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === 0) continue;
    if (q[i] === 0) return Infinity;
    const pi = p[i] / ps;
    kl += pi * Math.log(pi / (q[i] / qs));
  }
  return kl;
}

/**
 * Entropy calibration: for every candidate cut i (from `levels` bins up), P is the histogram up to i with the tail
 * folded into its last bin, Q the same counts merged into `levels` buckets and spread back evenly over their non-empty
 * bins; the cut with the least KL(P||Q) gives the threshold. `levels` is 128 for int8 (the positive half of the
 * grid).
 */
export function entropyThreshold(h: AbsHistogram, levels = 128): number {
  const bins = h.counts.length;
  let best = bins, bestKl = Infinity;
  for (let i = levels; i <= bins; i++) {
    const p = h.counts.slice(0, i);
    let tail = 0;
    for (let k = i; k < bins; k++) tail += h.counts[k];
    p[i - 1] += tail;
    const q = new Float64Array(i);
    const per = i / levels;
    for (let j = 0; j < levels; j++) {
      const lo = Math.floor(j * per), hi = j === levels - 1 ? i : Math.floor((j + 1) * per);
      let sum = 0, nonzero = 0;
      for (let k = lo; k < hi; k++) { sum += h.counts[k]; if (h.counts[k]) nonzero++; }
      if (!nonzero) continue;
      for (let k = lo; k < hi; k++) if (h.counts[k]) q[k] = sum / nonzero;
    }
    const kl = klDivergence(p, q);
    if (kl < bestKl) { bestKl = kl; best = i; }
  }
  return Math.min(h.range, (best + 0.5) * h.binWidth);
}

export interface CalibratorOptions {
  kind: CalibratorKind;
  percentile?: number;
  /** Quantization levels on the positive side, for entropy (127 int8, ~ for fp8 a few). */
  levels?: number;
}

/** The threshold for one activation from its max and histogram. */
export function pickThreshold(amax: number, h: AbsHistogram | undefined, o: CalibratorOptions): number {
  if (o.kind === 'max' || !h || amax === 0) return amax;
  if (o.kind === 'percentile') return Math.min(amax, percentileThreshold(h, o.percentile ?? 99.99));
  return Math.min(amax, entropyThreshold(h, o.levels ?? 128));
}

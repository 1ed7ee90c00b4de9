// Output comparison: error statistics between a reference tensor and another runner's, with Polygraphy's tolerance
// semantics (an element fails only when it exceeds BOTH atol and rtol; the statistic modes compare max/mean/median/
// a quantile of the errors against each tolerance instead).
import { TensorData } from '../ir/tensor.js';
import { InputError } from '../ir/errors.js';

export type ErrorStat = 'elemwise' | 'max' | 'mean' | 'median' | 'quantile';
export const ERROR_STATS: ErrorStat[] = ['elemwise', 'max', 'mean', 'median', 'quantile'];

export interface Tolerance {
  atol: number;
  rtol: number;
  stat: ErrorStat;
  /** For stat 'quantile' (default 0.99). */
  quantile: number;
}

export const DEFAULT_TOLERANCE: Tolerance = { atol: 1e-5, rtol: 1e-5, stat: 'elemwise', quantile: 0.99 };

/** A value given once for every output, with per-output overrides (`--atol 1e-5 logits:1e-3`). */
export interface PerOutput<T> {
  default?: T;
  byOutput?: Record<string, T>;
}

export interface ToleranceOptions {
  atol?: number | PerOutput<number>;
  rtol?: number | PerOutput<number>;
  stat?: ErrorStat | PerOutput<ErrorStat>;
  quantile?: number | PerOutput<number>;
}

const pick = <T>(v: T | PerOutput<T> | undefined, output: string, d: T): T => {
  if (v === undefined) return d;
  if (typeof v === 'object' && v !== null && ('default' in v || 'byOutput' in v)) {
    const p = v as PerOutput<T>;
    return p.byOutput?.[output] ?? p.default ?? d;
  }
  return v as T;
};

export function toleranceFor(opts: ToleranceOptions, output: string): Tolerance {
  return {
    atol: pick(opts.atol, output, DEFAULT_TOLERANCE.atol),
    rtol: pick(opts.rtol, output, DEFAULT_TOLERANCE.rtol),
    stat: pick(opts.stat, output, DEFAULT_TOLERANCE.stat),
    quantile: pick(opts.quantile, output, DEFAULT_TOLERANCE.quantile),
  };
}

/** Parse `1e-5`, `out:1e-3`, or a list of them (comma separated or repeated) into a PerOutput. */
export function parsePerOutput<T>(specs: string[] | string | undefined, flag: string, parse: (s: string) => T | undefined, expected: string): PerOutput<T> | undefined {
  const list = (Array.isArray(specs) ? specs : specs === undefined ? [] : [specs]).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
  if (!list.length) return undefined;
  const out: PerOutput<T> = {};
  for (const item of list) {
    const i = item.lastIndexOf(':');
    const [name, text] = i > 0 ? [item.slice(0, i), item.slice(i + 1)] : [undefined, item];
    const v = parse(text);
    if (v === undefined) throw new InputError(`${flag}: bad value '${item}', expected ${expected} or OUTPUT:${expected}.`);
    if (name === undefined) out.default = v;
    else (out.byOutput ??= {})[name] = v;
  }
  return out;
}

export const parseNumber = (s: string): number | undefined => (s.trim() !== '' && Number.isFinite(Number(s)) && Number(s) >= 0 ? Number(s) : undefined);
export const parseStat = (s: string): ErrorStat | undefined => (ERROR_STATS.includes(s as ErrorStat) ? (s as ErrorStat) : undefined);

export interface ErrorSummary {
  max: number;
  mean: number;
  median: number;
  quantile: number;
}

export interface TensorComparison {
  output: string;
  passed: boolean;
  tolerance: Tolerance;
  /** Set when the tensors cannot be compared element by element (shape or type mismatch). */
  mismatch?: string;
  /** A note that does not fail the comparison (e.g. same elements, different dims). */
  note?: string;
  elements: number;
  abs: ErrorSummary;
  rel: ErrorSummary;
  /** Elements failing both tolerances (elemwise mode). */
  failing: number;
  worst?: { index: number[]; reference: number; value: number; abs: number; rel: number };
  /** Counts of absolute errors per bin (10 bins, linear between the smallest and largest error). */
  histogram: { lo: number; hi: number; counts: number[] };
  /** What the reference and the other tensor look like (for the report). */
  refStats?: ValueStats;
  valueStats?: ValueStats;
}

export interface ValueStats {
  min: number;
  max: number;
  mean: number;
  std: number;
}

export function valueStats(v: Float64Array): ValueStats {
  let min = Infinity, max = -Infinity, sum = 0, sq = 0, n = 0;
  for (const x of v) {
    if (Number.isNaN(x)) continue;
    if (x < min) min = x;
    if (x > max) max = x;
    if (Number.isFinite(x)) { sum += x; sq += x * x; n++; }
  }
  const mean = n ? sum / n : NaN;
  return { min, max, mean, std: n ? Math.sqrt(Math.max(0, sq / n - mean * mean)) : NaN };
}

export function histogram(v: Float64Array, bins = 10): { lo: number; hi: number; counts: number[] } {
  let lo = Infinity, hi = -Infinity;
  for (const x of v) if (Number.isFinite(x)) { if (x < lo) lo = x; if (x > hi) hi = x; }
  const counts = new Array<number>(bins).fill(0);
  if (lo === Infinity) return { lo: 0, hi: 0, counts };
  const w = (hi - lo) / bins;
  for (const x of v) {
    if (!Number.isFinite(x)) { counts[bins - 1]++; continue; }
    counts[w > 0 ? Math.min(bins - 1, Math.floor((x - lo) / w)) : 0]++;
  }
  return { lo, hi, counts };
}

function quantileOf(sorted: Float64Array, q: number): number {
  if (!sorted.length) return 0;
  const pos = (sorted.length - 1) * Math.min(1, Math.max(0, q));
  const i = Math.floor(pos), f = pos - i;
  return i + 1 < sorted.length ? sorted[i] * (1 - f) + sorted[i + 1] * f : sorted[i];
}

function summarize(errs: Float64Array, q: number): ErrorSummary {
  if (!errs.length) return { max: 0, mean: 0, median: 0, quantile: 0 };
  const sorted = Float64Array.from(errs).sort();
  let sum = 0;
  for (const e of errs) sum += e;
  return { max: sorted[sorted.length - 1], mean: sum / errs.length, median: quantileOf(sorted, 0.5), quantile: quantileOf(sorted, q) };
}

export function unravel(i: number, dims: readonly number[]): number[] {
  const idx = new Array<number>(dims.length).fill(0);
  for (let k = dims.length - 1; k >= 0; k--) {
    idx[k] = dims[k] ? i % dims[k] : 0;
    i = dims[k] ? Math.floor(i / dims[k]) : 0;
  }
  return idx;
}

const EMPTY: ErrorSummary = { max: 0, mean: 0, median: 0, quantile: 0 };

function failed(output: string, tol: Tolerance, mismatch: string, elements = 0): TensorComparison {
  return { output, passed: false, tolerance: tol, mismatch, elements, abs: EMPTY, rel: EMPTY, failing: elements, histogram: { lo: 0, hi: 0, counts: [] } };
}

/** Compare `value` against `reference` (the first runner's tensor) under `tol`. */
export function compareTensors(output: string, reference: TensorData, value: TensorData, tol: Tolerance = DEFAULT_TOLERANCE): TensorComparison {
  const shape = (t: TensorData) => `[${t.dims.join(', ')}]`;
  if (reference.size !== value.size) {
    return failed(output, tol, `shapes differ: reference ${reference.dtype}${shape(reference)}, this runner ${value.dtype}${shape(value)}`, Math.max(reference.size, value.size));
  }
  const note = reference.dims.join(',') !== value.dims.join(',') ? `dims differ (${shape(reference)} vs ${shape(value)}) but the element counts match; compared element by element` : undefined;
  if (reference.dtype === 'string' || value.dtype === 'string') {
    const a = reference.data as string[], b = value.data as string[];
    const bad = a.filter((s, i) => s !== b[i]).length;
    const r = failed(output, tol, `${bad} of ${a.length} strings differ`, a.length);
    return bad ? { ...r, failing: bad } : { ...r, passed: true, mismatch: undefined, failing: 0 };
  }
  const a = reference.toFloat64(), b = value.toFloat64();
  const n = a.length;
  const abs = new Float64Array(n), rel = new Float64Array(n);
  let failing = 0, worst = -1;
  for (let i = 0; i < n; i++) {
    const x = a[i], y = b[i];
    let d: number;
    if (Number.isNaN(x) || Number.isNaN(y)) d = Number.isNaN(x) && Number.isNaN(y) ? 0 : Infinity;
    else if (x === y) d = 0; // also equal infinities
    else d = Math.abs(x - y);
    abs[i] = d;
    rel[i] = d === 0 ? 0 : Number.isFinite(x) && x !== 0 ? d / Math.abs(x) : Infinity;
    if (d > tol.atol && rel[i] > tol.rtol) failing++;
    if (worst < 0 || d > abs[worst] || (Number.isNaN(abs[worst]))) worst = i;
  }
  const absS = summarize(abs, tol.quantile), relS = summarize(rel, tol.quantile);
  let passed: boolean;
  if (tol.stat === 'elemwise') passed = failing === 0;
  else {
    const k = tol.stat === 'quantile' ? 'quantile' : tol.stat;
    passed = absS[k] <= tol.atol || relS[k] <= tol.rtol;
  }
  return {
    output, passed, tolerance: tol, note, elements: n, abs: absS, rel: relS, failing,
    worst: worst >= 0 ? { index: unravel(worst, reference.dims), reference: a[worst], value: b[worst], abs: abs[worst], rel: rel[worst] } : undefined,
    histogram: histogram(abs),
    refStats: valueStats(a), valueStats: valueStats(b),
  };
}

/** Text histogram: one line per bin with a bar scaled to the largest bin. */
export function formatHistogram(h: { lo: number; hi: number; counts: number[] }, width = 40, fmt: (x: number) => string = (x) => x.toExponential(2)): string[] {
  const total = h.counts.reduce((x, y) => x + y, 0);
  if (!total) return [];
  const top = Math.max(...h.counts);
  const w = (h.hi - h.lo) / h.counts.length;
  return h.counts.map((c, i) => {
    const range = `[${fmt(h.lo + i * w)}, ${fmt(h.lo + (i + 1) * w)})`;
    return `  ${range.padEnd(24)} ${String(c).padStart(8)} | ${'#'.repeat(Math.round((c / top) * width))}`;
  });
}

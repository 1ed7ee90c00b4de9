// String operators: StringConcat, StringSplit, StringNormalizer, RegexFullMatch and TfIdfVectorizer.
import { defineOp, attr, type OpDef } from '../ir/schema.js';
import { TensorData } from '../ir/tensor.js';
import type { Dim, ValueType } from '../ir/graph.js';
import { broadcastDims, broadcastIndex, broadcastShapes, tensorTypeOf } from './util.js';

function stringsOf(t: TensorData, what: string): string[] {
  if (t.dtype !== 'string') throw new Error(`${what} must be a string tensor, got ${t.dtype}`);
  return t.data as string[];
}

// ---------------------------------------------------------------------------------------------------------------
// StringConcat

const StringConcat = defineOp({
  name: 'StringConcat', versions: [20], attrs: {}, inputs: [2, 2], outputs: [1, 1],
  doc: 'Elementwise concatenation of two string tensors (with broadcasting).',
  infer: (ctx) => [{ kind: 'tensor', dtype: 'string', shape: broadcastDims(tensorTypeOf(ctx.inputTypes[0])?.shape, tensorTypeOf(ctx.inputTypes[1])?.shape) }],
  run: (ctx) => {
    const a = ctx.tensor(0), b = ctx.tensor(1);
    const x = stringsOf(a, 'X'), y = stringsOf(b, 'Y');
    const dims = broadcastShapes(a.dims, b.dims);
    const [ia, ib] = broadcastIndex([a.dims, b.dims], dims);
    const out = TensorData.zeros('string', dims);
    const o = out.data as string[];
    for (let i = 0; i < o.length; i++) o[i] = x[ia ? ia[i] : i] + y[ib ? ib[i] : i];
    return [out];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// StringSplit

const WS = /\s/;

/** Python's str.split(None, maxsplit): runs of whitespace separate, no empty pieces. */
function splitWhitespace(s: string, maxsplit: number): string[] {
  const parts: string[] = [];
  let i = 0;
  const n = s.length;
  while (i < n) {
    while (i < n && WS.test(s[i])) i++;
    if (i >= n) break;
    if (maxsplit >= 0 && parts.length === maxsplit) {
      // the remainder keeps its trailing whitespace, as in Python
      parts.push(s.slice(i));
      break;
    }
    let j = i;
    while (j < n && !WS.test(s[j])) j++;
    parts.push(s.slice(i, j));
    i = j;
  }
  return parts;
}

/** Python's str.split(sep, maxsplit). */
function splitOn(s: string, sep: string, maxsplit: number): string[] {
  const parts: string[] = [];
  let start = 0;
  while (maxsplit < 0 || parts.length < maxsplit) {
    const k = s.indexOf(sep, start);
    if (k < 0) break;
    parts.push(s.slice(start, k));
    start = k + sep.length;
  }
  parts.push(s.slice(start));
  return parts;
}

const StringSplit = defineOp({
  name: 'StringSplit', versions: [20], attrs: { delimiter: attr.string(''), maxsplit: attr.int() }, inputs: [1, 1], outputs: [2, 2],
  doc: 'Split each string by a delimiter (or whitespace runs); pads with empty strings and returns the piece counts.',
  infer: (ctx) => {
    const shape = tensorTypeOf(ctx.inputTypes[0])?.shape;
    return [
      // the padded width depends on the data, except for an empty input
      { kind: 'tensor', dtype: 'string', shape: shape ? [...shape, shape.includes(0) ? 0 : undefined] : undefined },
      { kind: 'tensor', dtype: 'int64', shape },
    ];
  },
  run: (ctx) => {
    const x = ctx.tensor(0);
    const strs = stringsOf(x, 'X');
    const { delimiter } = ctx.attrs;
    const maxsplit = ctx.attrs.maxsplit ?? -1;
    const pieces = strs.map((s) => (delimiter ? splitOn(s, delimiter, maxsplit) : splitWhitespace(s, maxsplit)));
    const width = pieces.reduce((m, p) => Math.max(m, p.length), 0);
    const out = TensorData.zeros('string', [...x.dims, width]);
    const o = out.data as string[];
    pieces.forEach((p, i) => p.forEach((s, j) => { o[i * width + j] = s; }));
    const lengths = TensorData.fromBigInts('int64', x.dims, pieces.map((p) => BigInt(p.length)));
    return [out, lengths];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// StringNormalizer

const StringNormalizer = defineOp({
  name: 'StringNormalizer', versions: [10],
  attrs: { case_change_action: attr.string('NONE'), is_case_sensitive: attr.int(0), stopwords: attr.strings([]), locale: attr.string('') },
  inputs: [1, 1], outputs: [1, 1],
  doc: 'Remove stop words and change the case of a [C] or [1, C] string tensor.',
  infer: (ctx) => {
    const shape = tensorTypeOf(ctx.inputTypes[0])?.shape;
    const keepsAll = ctx.attrs.stopwords.length === 0;
    const out = shape && !keepsAll ? shape.map((d, i): Dim => (i === shape.length - 1 ? undefined : d)) : shape;
    return [{ kind: 'tensor', dtype: 'string', shape: out }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0);
    const strs = stringsOf(x, 'X');
    if (!(x.rank === 1 || (x.rank === 2 && x.dims[0] === 1))) {
      throw new Error(`StringNormalizer expects a [C] or [1, C] input, got shape [${x.dims.join(', ')}]`);
    }
    const { case_change_action: action, is_case_sensitive: sensitive, stopwords } = ctx.attrs;
    if (action !== 'NONE' && action !== 'LOWER' && action !== 'UPPER') {
      throw new Error(`case_change_action must be NONE, LOWER or UPPER, got '${action}'`);
    }
    const fold = (s: string) => (sensitive ? s : s.toLowerCase());
    const stop = new Set(stopwords.map(fold));
    let kept = strs.filter((s) => !stop.has(fold(s)));
    if (action === 'LOWER') kept = kept.map((s) => s.toLowerCase());
    else if (action === 'UPPER') kept = kept.map((s) => s.toUpperCase());
    // everything removed: a single empty string, keeping the rank
    if (kept.length === 0) return [TensorData.strings(x.rank === 1 ? [1] : [1, 1], [''])];
    return [TensorData.strings(x.rank === 1 ? [kept.length] : [1, kept.length], kept)];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// RegexFullMatch

/** Compile an RE2 pattern as an anchored JS RegExp, translating the RE2-only syntax JS lacks. */
export function compileFullMatch(pattern: string): RegExp {
  let flags = '';
  let p = pattern;
  const inline = /^\(\?([imsU]+)\)/.exec(p);
  if (inline) {
    if (inline[1].includes('U')) throw new Error(`RE2 flag U (ungreedy) is not supported in pattern '${pattern}'`);
    flags += inline[1].replace(/[^ims]/g, '');
    p = p.slice(inline[0].length);
  }
  p = p.replace(/\(\?P</g, '(?<').replace(/\\A/g, '^').replace(/\\z/g, '$').replace(/\\p([A-Z])/g, '\\p{$1}').replace(/\\P([A-Z])/g, '\\P{$1}');
  const src = `^(?:${p})$`;
  try {
    return new RegExp(src, flags + 'u');
  } catch {
    // RE2 accepts identity escapes of any punctuation, which only non-unicode JS patterns allow
    try {
      return new RegExp(src, flags);
    } catch (e) {
      throw new Error(`invalid regular expression '${pattern}': ${(e as Error).message}`, { cause: e });
    }
  }
}

const RegexFullMatch = defineOp({
  name: 'RegexFullMatch', versions: [20], attrs: { pattern: attr.string() }, inputs: [1, 1], outputs: [1, 1],
  doc: 'Whether each string fully matches an RE2 regular expression.',
  infer: (ctx) => [{ kind: 'tensor', dtype: 'bool', shape: tensorTypeOf(ctx.inputTypes[0])?.shape }],
  run: (ctx) => {
    const x = ctx.tensor(0);
    const strs = stringsOf(x, 'X');
    if (ctx.attrs.pattern === undefined) throw new Error("the required attribute 'pattern' is missing");
    const re = compileFullMatch(ctx.attrs.pattern);
    const out = TensorData.zeros('bool', x.dims);
    const o = out.data as Uint8Array;
    for (let i = 0; i < strs.length; i++) o[i] = re.test(strs[i]) ? 1 : 0;
    return [out];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// TfIdfVectorizer

interface NgramPool {
  /** n-gram key (items joined by \u0000) -> pool position, one map per n-gram length (index n-1). */
  byLength: Map<string, number>[];
  /** pool position -> output column. */
  columns: number[];
  width: number;
}

function buildPool(a: TfIdfAttrs): NgramPool {
  const items: string[] = a.pool_strings?.length ? a.pool_strings : (a.pool_int64s ?? []).map(String);
  const counts = a.ngram_counts ?? [];
  const indexes = a.ngram_indexes ?? [];
  const byLength: Map<string, number>[] = [];
  let pos = 0;
  for (let k = 0; k < counts.length; k++) {
    const n = k + 1;
    const start = counts[k], end = k + 1 < counts.length ? counts[k + 1] : items.length;
    if (start < 0 || end > items.length || start > end || (end - start) % n !== 0) {
      throw new Error(`ngram_counts ${JSON.stringify(counts)} do not split a pool of ${items.length} items into ${n}-grams`);
    }
    const m = new Map<string, number>();
    for (let i = start; i < end; i += n) m.set(items.slice(i, i + n).join('\u0000'), pos++);
    byLength.push(m);
  }
  if (indexes.length !== pos) throw new Error(`ngram_indexes has ${indexes.length} entries, but the pool holds ${pos} n-grams`);
  if (indexes.some((c) => c < 0)) throw new Error('ngram_indexes must be non-negative');
  const width = indexes.length ? Math.max(...indexes) + 1 : 0;
  return { byLength, columns: indexes, width };
}

interface TfIdfAttrs {
  max_gram_length?: number; min_gram_length?: number; max_skip_count?: number; mode?: string;
  ngram_counts?: number[]; ngram_indexes?: number[]; pool_int64s?: number[]; pool_strings?: string[]; weights?: number[];
}

function tfidfRow(row: string[], pool: NgramPool, a: TfIdfAttrs, out: Float32Array, off: number): void {
  const minN = a.min_gram_length ?? 1, maxN = a.max_gram_length ?? 1, maxSkip = a.max_skip_count ?? 0;
  const counts = new Float64Array(pool.columns.length);
  const len = row.length;
  for (let n = Math.max(1, minN); n <= maxN && n <= pool.byLength.length; n++) {
    const map = pool.byLength[n - 1];
    if (map.size === 0) continue;
    // unigrams do not depend on the skip distance: count them once
    const skips = n === 1 ? 0 : maxSkip;
    for (let s = 0; s <= skips; s++) {
      const step = s + 1;
      for (let i = 0; i + (n - 1) * step < len; i++) {
        let key = row[i];
        for (let j = 1; j < n; j++) key += '\u0000' + row[i + j * step];
        const p = map.get(key);
        if (p !== undefined) counts[p]++;
      }
    }
  }
  const mode = a.mode ?? 'TF';
  const w = a.weights;
  for (let p = 0; p < counts.length; p++) {
    if (counts[p] === 0) continue;
    const weight = w && w.length ? w[p] : 1;
    const v = mode === 'TF' ? counts[p] : mode === 'IDF' ? weight : counts[p] * weight;
    out[off + pool.columns[p]] += v;
  }
}

const TfIdfVectorizer = defineOp({
  name: 'TfIdfVectorizer', versions: [9],
  attrs: {
    max_gram_length: attr.int(), min_gram_length: attr.int(), max_skip_count: attr.int(), mode: attr.string(),
    ngram_counts: attr.ints(), ngram_indexes: attr.ints(), pool_int64s: attr.ints(), pool_strings: attr.strings(), weights: attr.floats(),
  },
  inputs: [1, 1], outputs: [1, 1],
  doc: 'Count n-grams (with skips) from a pool, producing TF, IDF or TF-IDF vectors.',
  infer: (ctx) => {
    const shape = tensorTypeOf(ctx.inputTypes[0])?.shape;
    const idx = ctx.attrs.ngram_indexes ?? [];
    const width: Dim = idx.length ? Math.max(...idx) + 1 : 0;
    const out: Dim[] | undefined = shape === undefined ? undefined : shape.length <= 1 ? [width] : [shape[0], width];
    return [{ kind: 'tensor', dtype: 'float32', shape: out } as ValueType];
  },
  run: (ctx) => {
    const x = ctx.tensor(0);
    const a = ctx.attrs;
    const mode = a.mode ?? 'TF';
    if (mode !== 'TF' && mode !== 'IDF' && mode !== 'TFIDF') throw new Error(`mode must be TF, IDF or TFIDF, got '${mode}'`);
    if (x.rank > 2) throw new Error(`TfIdfVectorizer expects a 1-D or 2-D input, got rank ${x.rank}`);
    const pool = buildPool(a);
    const items = x.dtype === 'string' ? (x.data as string[]) : Array.from(x.toBigInts(), String);
    const rows = x.rank === 2 ? x.dims[0] : 1;
    const cols = x.rank === 0 ? 1 : x.dims[x.rank - 1];
    const out = TensorData.zeros('float32', x.rank === 2 ? [rows, pool.width] : [pool.width]);
    const o = out.data as Float32Array;
    for (let r = 0; r < rows; r++) tfidfRow(items.slice(r * cols, (r + 1) * cols), pool, a, o, r * pool.width);
    return [out];
  },
});

const ops: OpDef<any>[] = [StringConcat, StringSplit, StringNormalizer, RegexFullMatch, TfIdfVectorizer];
export default ops;

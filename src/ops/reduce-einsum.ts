// Einsum: parses the equation (implicit/explicit output, ellipsis, repeated labels), then contracts the operands
// pairwise from left to right. Each step loops once over the labels of its two operands, so the cost is that of
// the chosen contraction order, never the product of every label of every operand.
import { attr, defineOp } from '../ir/schema.js';
import type { Dim } from '../ir/graph.js';
import { TensorData, MAX_ELEMENTS, stridesOf } from '../ir/tensor.js';
import { tensorTypeOf } from './util.js';

interface Equation {
  /** Labels of each operand's axes, in order; ellipsis axes get labels '.0', '.1', ... aligned to the right. */
  terms: string[][];
  out: string[];
}

const ELLIPSIS = '...';

function splitTerm(term: string, what: string): (string | typeof ELLIPSIS)[] {
  const r: string[] = [];
  let seenEllipsis = false;
  for (let i = 0; i < term.length; i++) {
    if (term.startsWith(ELLIPSIS, i)) {
      if (seenEllipsis) throw new Error(`${what} '${term}' has more than one ellipsis`);
      seenEllipsis = true;
      r.push(ELLIPSIS);
      i += 2;
    } else if (/[a-zA-Z]/.test(term[i])) r.push(term[i]);
    else throw new Error(`${what} '${term}' has an unexpected character '${term[i]}' (expected letters and '...')`);
  }
  return r;
}

export function parseEquation(equation: string, ranks: readonly number[]): Equation {
  const eq = equation.replace(/\s+/g, '');
  const arrow = eq.indexOf('->');
  const lhs = arrow >= 0 ? eq.slice(0, arrow) : eq;
  const terms = lhs.split(',').map((t) => splitTerm(t, 'input term'));
  if (terms.length !== ranks.length) {
    throw new Error(`equation '${equation}' has ${terms.length} input terms but the node has ${ranks.length} inputs`);
  }
  const ellRanks = terms.map((t, k) => {
    const letters = t.filter((l) => l !== ELLIPSIS).length;
    const hasEll = t.includes(ELLIPSIS);
    if (hasEll ? ranks[k] < letters : ranks[k] !== letters) {
      throw new Error(`einsum term '${t.join('')}' does not match input ${k} of rank ${ranks[k]}`);
    }
    return hasEll ? ranks[k] - letters : 0;
  });
  const maxE = Math.max(0, ...ellRanks);
  const ellLabels = (e: number) => Array.from({ length: e }, (_, j) => `.${maxE - e + j}`);
  const labeled = terms.map((t, k) => t.flatMap((l) => (l === ELLIPSIS ? ellLabels(ellRanks[k]) : [l])));
  let out: string[];
  if (arrow >= 0) {
    const rhs = splitTerm(eq.slice(arrow + 2), 'output term');
    out = rhs.flatMap((l) => (l === ELLIPSIS ? ellLabels(maxE) : [l]));
    if (new Set(out).size !== out.length) throw new Error(`output term of '${equation}' repeats a label`);
    const known = new Set(labeled.flat());
    for (const l of out) if (!known.has(l)) throw new Error(`output label '${l}' of '${equation}' appears in no input`);
  } else {
    const count = new Map<string, number>();
    for (const t of terms) for (const l of t) if (l !== ELLIPSIS) count.set(l, (count.get(l) ?? 0) + 1);
    const single = [...count].filter(([, c]) => c === 1).map(([l]) => l).sort();
    out = [...ellLabels(maxE), ...single];
  }
  return { terms: labeled, out };
}

interface Operand {
  labels: string[];
  sizes: number[];
  strides: number[];
  data: Float64Array;
}

/** Size of every label: equal across occurrences, except that 1 broadcasts. */
function labelSizes(eq: Equation, dims: (readonly number[])[]): Map<string, number> {
  const size = new Map<string, number>();
  eq.terms.forEach((t, k) => t.forEach((l, i) => {
    const d = dims[k][i], cur = size.get(l);
    if (cur === undefined || cur === 1) size.set(l, d);
    else if (d !== cur && d !== 1) throw new Error(`einsum label '${l}' has size ${cur} in one place and ${d} in another`);
  }));
  return size;
}

/** A strided view of an input: repeated labels (diagonals) add their strides, broadcast axes get stride 0. */
function viewOf(labels: string[], t: TensorData, size: Map<string, number>): Operand {
  const st = stridesOf(t.dims);
  const out: Operand = { labels: [], sizes: [], strides: [], data: t.toFloat64() };
  labels.forEach((l, i) => {
    const s = t.dims[i] === 1 && size.get(l)! !== 1 ? 0 : st[i];
    const j = out.labels.indexOf(l);
    if (j >= 0) {
      if (t.dims[i] !== out.sizes[j] && t.dims[i] !== 1) throw new Error(`repeated einsum label '${l}' has sizes ${out.sizes[j]} and ${t.dims[i]}`);
      out.strides[j] += s;
    } else {
      out.labels.push(l);
      out.sizes.push(size.get(l)!);
      out.strides.push(s);
    }
  });
  return out;
}

/** Sum the product of `a` and `b` (or `a` alone) over every label not in `outLabels`; result is dense. */
function contract(a: Operand, b: Operand | null, outLabels: string[], size: Map<string, number>): Operand {
  const all = [...a.labels, ...(b ? b.labels.filter((l) => !a.labels.includes(l)) : [])];
  const outSizes = outLabels.map((l) => size.get(l)!);
  const n = outSizes.reduce((p, q) => p * q, 1);
  if (n > MAX_ELEMENTS) throw new Error(`einsum intermediate of ${n} elements exceeds the limit of ${MAX_ELEMENTS}`);
  const outStrides = stridesOf(outSizes);
  const strideIn = (op: Operand | null, l: string) => {
    const j = op ? op.labels.indexOf(l) : -1;
    return j >= 0 ? op!.strides[j] : 0;
  };
  // loop order: output labels first (outermost), summed labels innermost
  const order = [...all.filter((l) => outLabels.includes(l)), ...all.filter((l) => !outLabels.includes(l))];
  const dims = order.map((l) => size.get(l)!);
  const sa = order.map((l) => strideIn(a, l));
  const sb = order.map((l) => strideIn(b, l));
  const so = order.map((l) => (outLabels.includes(l) ? outStrides[outLabels.indexOf(l)] : 0));
  const res = new Float64Array(n);
  const total = dims.reduce((p, q) => p * q, 1);
  const rank = order.length;
  if (total > 0) {
    const ad = a.data, bd = b?.data;
    const last = rank - 1;
    const inner = rank ? dims[last] : 1;
    const ia = rank ? sa[last] : 0, ib = rank ? sb[last] : 0, io = rank ? so[last] : 0;
    const counter = new Array<number>(rank).fill(0);
    let oa = 0, ob = 0, oo = 0;
    for (let done = 0; done < total; done += inner) {
      if (io === 0) {
        // innermost label is summed: accumulate in a register
        let s = 0;
        if (bd) for (let k = 0; k < inner; k++) s += ad[oa + k * ia] * bd[ob + k * ib];
        else for (let k = 0; k < inner; k++) s += ad[oa + k * ia];
        res[oo] += s;
      } else if (bd) for (let k = 0; k < inner; k++) res[oo + k * io] += ad[oa + k * ia] * bd[ob + k * ib];
      else for (let k = 0; k < inner; k++) res[oo + k * io] += ad[oa + k * ia];
      for (let d = last - 1; d >= 0; d--) {
        counter[d]++;
        oa += sa[d]; ob += sb[d]; oo += so[d];
        if (counter[d] < dims[d]) break;
        oa -= sa[d] * dims[d]; ob -= sb[d] * dims[d]; oo -= so[d] * dims[d];
        counter[d] = 0;
      }
    }
  }
  return { labels: outLabels, sizes: outSizes, strides: outStrides, data: res };
}

export function einsum(equation: string, inputs: TensorData[]): TensorData {
  if (inputs.length === 0) throw new Error('Einsum needs at least one input');
  const dtype = inputs[0].dtype;
  for (const t of inputs) if (t.dtype !== dtype) throw new Error(`Einsum inputs must share one type, got ${dtype} and ${t.dtype}`);
  const eq = parseEquation(equation, inputs.map((t) => t.rank));
  const size = labelSizes(eq, inputs.map((t) => t.dims));
  let ops = eq.terms.map((labels, k) => viewOf(labels, inputs[k], size));
  const needed = (skip: number, from: number) => {
    const s = new Set(eq.out);
    ops.forEach((op, k) => { if (k !== skip && k >= from) op.labels.forEach((l) => s.add(l)); });
    return s;
  };
  // sum out labels private to one operand before any pairwise product
  ops = ops.map((op, k) => {
    const keep = needed(k, 0);
    return op.labels.every((l) => keep.has(l)) ? op : contract(op, null, op.labels.filter((l) => keep.has(l)), size);
  });
  let acc = ops[0];
  for (let k = 1; k < ops.length; k++) {
    const keep = needed(-1, k + 1);
    const union = [...acc.labels, ...ops[k].labels.filter((l) => !acc.labels.includes(l))];
    acc = contract(acc, ops[k], union.filter((l) => keep.has(l)), size);
  }
  const result = contract(acc, null, eq.out, size);
  return TensorData.fromNumbers(dtype, result.sizes, result.data);
}

export const Einsum = defineOp({
  name: 'Einsum', versions: [12], attrs: { equation: attr.string() }, inputs: [1, Infinity], outputs: [1, 1],
  doc: 'Einstein summation over the inputs (explicit/implicit output, ellipsis, diagonals, broadcasting)',
  infer: (ctx) => {
    const types = ctx.inputTypes.map(tensorTypeOf);
    const t0 = types[0];
    if (!t0) return [{ kind: 'unknown' }];
    if (ctx.attrs.equation === undefined || types.some((t) => !t?.shape)) return [{ kind: 'tensor', dtype: t0.dtype }];
    const shapes = types.map((t) => t!.shape!);
    const eq = parseEquation(ctx.attrs.equation, shapes.map((s) => s.length));
    const dimOf = new Map<string, Dim>();
    eq.terms.forEach((t, k) => t.forEach((l, i) => {
      const d = shapes[k][i], cur = dimOf.get(l);
      if (!dimOf.has(l) || cur === 1 || (typeof cur !== 'number' && typeof d === 'number' && d !== 1)) dimOf.set(l, d);
    }));
    return [{ kind: 'tensor', dtype: t0.dtype, shape: eq.out.map((l) => dimOf.get(l)) }];
  },
  run: (ctx) => {
    if (ctx.attrs.equation === undefined) throw new Error("Einsum needs the 'equation' attribute");
    const inputs = ctx.inputs.map((_, i) => ctx.tensor(i));
    return [einsum(ctx.attrs.equation, inputs)];
  },
});

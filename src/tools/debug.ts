// `kiln debug` (Polygraphy's `debug precision` / `debug reduce`).
//
// precision: an fp16/bf16 build fails the comparison with fp32; find a small set of layers to keep in fp32. The layers
//   the build runs in reduced precision are searched in topological order (forward) or reverse order: a bisection
//   finds the shortest prefix that, kept in fp32, passes; its last layer is needed; repeat until it passes, then
//   drop every layer that is not needed after all.
// reduce: a model fails (a runner throws, or two runners disagree); find a minimal failing subgraph: bisect the end
//   and the start of a window over the topological order, then remove nodes one by one. Every subgraph is fed the
//   values its inputs had in the full model (computed once by the reference kernels), so it fails the same way.
import type { Model, Node, ValueInfo } from '../ir/graph.js';
import { TensorData } from '../ir/tensor.js';
import { KilnError, InputError } from '../ir/errors.js';
import { executeGraph, topoSort } from '../ops/execute.js';
import type { LayerPrecision, Precision } from '../passes/precision.js';
import { build } from '../build/builder.js';
import { createRunner, modelInputs } from './runners.js';
import { comparePair, makeInputData, type CompareOptions } from './compare.js';

export type PrecisionMode = 'forward' | 'reverse';

export interface DebugPrecisionOptions extends CompareOptions {
  /** The reduced precision to debug (default fp16). */
  precision?: 'fp16' | 'bf16';
  mode?: PrecisionMode;
  /** Called after each build with the layers kept in fp32 and whether it passed. */
  onCheck?: (fp32Layers: string[], passed: boolean) => void;
}

export interface DebugPrecisionResult {
  /** Layers to keep in fp32 (empty when the reduced build already passes). */
  layers: string[];
  /** The flag that applies it: --layer-precisions a:fp32,b:fp32 */
  flag: string;
  /** Builds compared. */
  checks: number;
  /** Layers the reduced build runs in reduced precision, in topological order. */
  candidates: string[];
}

/** Find the fp32 layers a reduced-precision build needs to pass the comparison against the fp32 reference kernels. */
export async function debugPrecision(model: Model, opts: DebugPrecisionOptions = {}): Promise<DebugPrecisionResult> {
  const precision: Precision = opts.precision ?? 'fp16';
  const feeds = makeInputData(modelInputs(model), opts);
  const shapes = Object.fromEntries([...feeds].map(([k, t]) => [k, [...t.dims]]));
  const refRunner = await createRunner('kiln-ref', model);
  const reference = await refRunner.run(feeds);
  refRunner.release();
  let checks = 0;
  const memo = new Map<string, boolean>();
  const passes = async (fp32: string[]): Promise<boolean> => {
    const key = [...fp32].sort().join('\n');
    if (memo.has(key)) return memo.get(key)!;
    const pins: Record<string, LayerPrecision> = { ...opts.layerPrecisions };
    for (const l of fp32) pins[l] = 'fp32';
    const r = await createRunner('kiln-cpu', model, { precision, layerPrecisions: pins, shapes });
    try {
      const ok = comparePair(r.name, 'kiln-ref', reference, await r.run(feeds), opts).passed;
      checks++;
      memo.set(key, ok);
      opts.onCheck?.(fp32, ok);
      return ok;
    } finally {
      r.release();
    }
  };
  const plan = await build(model, { precision, layerPrecisions: opts.layerPrecisions, shapes });
  const candidates = plan.header.layers.filter((l) => l.precision !== 'fp32').map((l) => l.name);
  const result = (layers: string[]): DebugPrecisionResult => ({
    layers, candidates, checks, flag: layers.length ? `--layer-precisions ${layers.map((l) => `${l}:fp32`).join(',')}` : '',
  });
  if (await passes([])) return result([]);
  if (!(await passes(candidates))) {
    throw new KilnError(`the ${precision} build fails the comparison even with all ${candidates.length} reduced-precision layers in fp32.`, {
      hint: 'The difference does not come from layer precision: compare the fp32 build (kiln compare --runner kiln-ref --runner kiln-cpu --mark-all), or loosen --atol/--rtol.',
    });
  }
  const order = opts.mode === 'reverse' ? [...candidates].reverse() : candidates;
  const kept: string[] = [];
  while (!(await passes(kept))) {
    const rest = order.filter((l) => !kept.includes(l));
    // smallest k such that kept + rest[0..k] passes; rest[k] is then needed
    let lo = 0, hi = rest.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (await passes([...kept, ...rest.slice(0, mid + 1)])) hi = mid;
      else lo = mid + 1;
    }
    kept.push(rest[lo]);
  }
  for (const l of [...kept]) {
    if (kept.length > 1 && (await passes(kept.filter((x) => x !== l)))) kept.splice(kept.indexOf(l), 1);
  }
  return result(candidates.filter((c) => kept.includes(c)));
}

// ---------------------------------------------------------------------------------------------------------------
// reduce

export interface DebugReduceOptions extends CompareOptions {
  /** 'bisect' (default) narrows a window first, then removes nodes one by one; 'linear' only removes one by one. */
  mode?: 'bisect' | 'linear';
  /** Custom failure test; default: runners[1] throws, or disagrees with runners[0] (default kiln-ref vs kiln-cpu). */
  fails?: (model: Model, feeds: Map<string, TensorData>) => Promise<boolean>;
  /** Count only errors whose message matches (for a runner that throws). */
  failRegex?: RegExp;
  onCheck?: (nodes: number, failed: boolean) => void;
}

export interface DebugReduceResult {
  model: Model;
  /** Inputs of the reduced model (values the original model computed there). */
  feeds: Map<string, TensorData>;
  nodes: string[];
  checks: number;
}

/** A model made of `nodes` of `model`: values they read from outside become inputs, values nothing inside reads become outputs. */
export function subgraphModel(model: Model, nodes: Node[], values: Map<string, TensorData>): Model {
  const g = model.graph;
  const produced = new Set(nodes.flatMap((n) => n.outputs.filter(Boolean)));
  const read = new Set(nodes.flatMap((n) => n.inputs.filter(Boolean)));
  const inputs: ValueInfo[] = [];
  const seen = new Set<string>();
  for (const n of nodes) {
    for (const i of n.inputs) {
      if (!i || produced.has(i) || g.initializers.has(i) || seen.has(i)) continue;
      seen.add(i);
      const v = values.get(i);
      const decl = g.inputs.find((x) => x.name === i);
      inputs.push({ name: i, type: v ? { kind: 'tensor', dtype: v.dtype, shape: [...v.dims] } : decl?.type ?? { kind: 'unknown' } });
    }
  }
  const graphOutputs = new Set(g.outputs.map((o) => o.name));
  const outputs: ValueInfo[] = [];
  for (const n of nodes) {
    for (const o of n.outputs) {
      if (!o || (read.has(o) && !graphOutputs.has(o))) continue;
      const v = values.get(o);
      outputs.push({ name: o, type: v ? { kind: 'tensor', dtype: v.dtype, shape: [...v.dims] } : g.valueInfo.get(o) ?? { kind: 'unknown' } });
    }
  }
  const initializers = new Map([...g.initializers].filter(([k]) => read.has(k)));
  return {
    ...model, path: undefined,
    graph: { name: `${g.name}_reduced`, nodes: nodes.map((n) => ({ ...n })), inputs, outputs, initializers, valueInfo: new Map() },
  };
}

/** Reduce a failing model to a minimal failing subgraph. */
export async function debugReduce(model: Model, opts: DebugReduceOptions = {}): Promise<DebugReduceResult> {
  const feeds = makeInputData(modelInputs(model), opts);
  const values = new Map<string, TensorData>(feeds);
  // every value of the full model, from the reference kernels
  executeGraph(model.graph, feeds, {
    opsets: model.opsets, onNode: (n, outs) => n.outputs.forEach((o, k) => o && outs[k] instanceof TensorData && values.set(o, outs[k] as TensorData)),
  });
  const [refName, testName] = opts.runners?.length ? [opts.runners[0], opts.runners[1] ?? opts.runners[0]] : ['kiln-ref', 'kiln-cpu'];
  const defaultFails = async (m: Model, f: Map<string, TensorData>): Promise<boolean> => {
    const shapes = Object.fromEntries([...f].map(([k, t]) => [k, [...t.dims]]));
    const runnerOpts = { precision: opts.precision, layerPrecisions: opts.layerPrecisions, shapes };
    let ref;
    try {
      const rr = await createRunner(refName, m, runnerOpts);
      try { ref = await rr.run(f); } finally { rr.release(); }
    } catch (e) {
      if (refName === testName) return !opts.failRegex || opts.failRegex.test((e as Error).message);
      return false; // the reference cannot run this subgraph: not the failure we are looking for
    }
    if (refName === testName) return false;
    try {
      const tr = await createRunner(testName, m, runnerOpts);
      try {
        return !comparePair(testName, refName, ref, await tr.run(f), opts).passed && !opts.failRegex;
      } finally { tr.release(); }
    } catch (e) {
      return !opts.failRegex || opts.failRegex.test((e as Error).message);
    }
  };
  const test = opts.fails ?? defaultFails;
  let checks = 0;
  const fails = async (nodes: Node[]): Promise<boolean> => {
    if (!nodes.length) return false;
    const m = subgraphModel(model, nodes, values);
    const f = new Map(m.graph.inputs.map((i) => [i.name, values.get(i.name)!]));
    if ([...f.values()].some((v) => !v)) return false;
    checks++;
    const r = await test(m, f);
    opts.onCheck?.(nodes.length, r);
    return r;
  };
  const order = topoSort(model.graph, () => true);
  if (!(await fails(order))) {
    throw new InputError(`the model does not fail: ${testName} matches ${refName} on it${opts.failRegex ? ` (or no error matches ${opts.failRegex})` : ''}, so there is nothing to reduce.`);
  }
  let nodes = order;
  if (opts.mode !== 'linear') {
    // the shortest failing prefix, then the shortest failing suffix of it
    let lo = 0, hi = order.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (await fails(order.slice(0, mid + 1))) hi = mid;
      else lo = mid + 1;
    }
    const end = lo;
    lo = 0;
    hi = end;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (await fails(order.slice(mid, end + 1))) lo = mid;
      else hi = mid - 1;
    }
    nodes = order.slice(lo, end + 1);
    if (!(await fails(nodes))) nodes = order; // branches made the window pass: fall back to removing one by one
  }
  for (const n of [...nodes]) {
    if (nodes.length === 1) break;
    const without = nodes.filter((x) => x !== n);
    if (await fails(without)) nodes = without;
  }
  const reduced = subgraphModel(model, nodes, values);
  return { model: reduced, feeds: new Map(reduced.graph.inputs.map((i) => [i.name, values.get(i.name)!])), nodes: nodes.map((n) => n.name), checks };
}

// `kiln compare` (Polygraphy's `run`): one model on several runners, the same inputs, every output compared with
// the first runner's (or stored golden outputs), optionally every intermediate tensor (--mark-all) to find the
// first layer that diverges.
import type { Model, Node } from '../ir/graph.js';
import { TensorData } from '../ir/tensor.js';
import { KilnError, InputError } from '../ir/errors.js';
import { seededRandom } from '../ir/builder.js';
import type { DType } from '../ir/dtype.js';
import { isFloat } from '../ir/dtype.js';
import { topoSort } from '../ops/execute.js';
import type { LayerPrecision, Precision } from '../passes/precision.js';
import { toTensorData } from '../runtime/tensor.js';
import { randomTensor, resolveShape } from './inputs.js';
import { readTensors, writeTensors } from './compare-io.js';
import { createRunner, modelInputs, type ModelRunner, type RunResult, type TensorSpec } from './runners.js';
import {
  compareTensors, formatHistogram, toleranceFor, type TensorComparison, type ToleranceOptions,
} from './compare-stats.js';

export * from './compare-stats.js';

export type Range = [number, number];

export interface InputDataOptions {
  /** Tensors to feed (by input name); the rest are generated. */
  inputs?: Record<string, TensorData>;
  /** .npy (for the first input), .npz or .json files holding inputs. */
  loadInputs?: string[];
  /** Seed of the random inputs (default 1). */
  seed?: number;
  /** Value range of random inputs: for all, and per input. Floats default to [0, 1), integers to [0, 10). */
  inputRange?: { default?: Range; byInput?: Record<string, Range> };
  /** Shapes for inputs with dynamic dims (others default to 1). */
  shapes?: Record<string, number[]>;
}

export interface CompareOptions extends ToleranceOptions, InputDataOptions {
  /** Runner names, the first is the reference (default kiln-ref, kiln-cpu). See runners.ts. */
  runners?: string[];
  /** Precision of kiln-cpu/kiln-cuda runners that do not name one. */
  precision?: Precision;
  layerPrecisions?: Record<string, LayerPrecision>;
  /** Compare every intermediate tensor the runners share, and name the first layer that diverges. */
  markAll?: boolean;
  /** Golden outputs (.npz/.json) to compare every runner against, instead of the first runner. */
  loadOutputs?: string;
  /** Save the first runner's outputs (.npz, or .json) as golden outputs for later runs. */
  saveOutputs?: string;
  /** Save the inputs used. */
  saveInputs?: string;
}

export interface LayerComparison {
  tensor: string;
  /** The original model's node that produced the tensor. */
  layer: string;
  opType: string;
  comparison: TensorComparison;
}

export interface PairReport {
  runner: string;
  reference: string;
  passed: boolean;
  /** Why the runner could not be compared (it failed, or its inputs do not match). */
  error?: string;
  outputs: TensorComparison[];
  layers?: LayerComparison[];
  firstDivergence?: LayerComparison;
}

export interface CompareReport {
  model?: string;
  inputs: { name: string; dtype: string; shape: number[] }[];
  runners: { name: string; ms?: number; error?: string }[];
  pairs: PairReport[];
  passed: boolean;
}

const parseDtype = (s: string): DType => s as DType;

/** Seeded inputs for the given specs, honoring loaded tensors, shapes and ranges. */
export function makeInputData(specs: TensorSpec[], opts: InputDataOptions): Map<string, TensorData> {
  const feeds = new Map<string, TensorData>();
  for (const f of opts.loadInputs ?? []) {
    for (const [k, t] of Object.entries(readTensors(f, specs[0]?.name))) feeds.set(k, t);
  }
  for (const [k, t] of Object.entries(opts.inputs ?? {})) feeds.set(k, t);
  const rand = seededRandom(opts.seed ?? 1);
  const shapes = new Map(Object.entries(opts.shapes ?? {}));
  for (const name of Object.keys(opts.inputRange?.byInput ?? {})) {
    if (!specs.some((s) => s.name === name)) throw new InputError(`--input-range names '${name}', which is not an input. Inputs: ${specs.map((s) => s.name).join(', ')}.`);
  }
  for (const s of specs) {
    if (feeds.has(s.name)) continue;
    if (s.dtype.includes('(') || s.dtype === '?') throw new InputError(`input '${s.name}' is ${s.dtype}; random data can only be made for tensors.`, { hint: 'Pass it with --load-inputs.' });
    const dtype = parseDtype(s.dtype);
    const range = opts.inputRange?.byInput?.[s.name] ?? opts.inputRange?.default ?? (isFloat(dtype) ? [0, 1] : [0, 10]);
    const dims = resolveShape({ name: s.name, isTensor: true, type: s.dtype, shape: s.shape.map((d) => d ?? -1) }, shapes);
    feeds.set(s.name, toTensorData(randomTensor(dtype, dims, rand, range)));
  }
  return feeds;
}

/** Why these feeds do not fit a runner's inputs ('' when they do). */
export function explainInputMismatch(runner: { name: string; inputs: TensorSpec[] }, feeds: Map<string, TensorData>, source: string): string {
  const problems: string[] = [];
  const names = new Set(runner.inputs.map((i) => i.name));
  for (const i of runner.inputs) {
    const v = feeds.get(i.name);
    if (!v) {
      problems.push(`it needs input '${i.name}' (${i.dtype}[${i.shape.map((d) => d ?? '?').join(', ')}]), which ${source} does not have`);
      continue;
    }
    if (!i.dtype.includes('(') && i.dtype !== '?' && v.dtype !== i.dtype) problems.push(`input '${i.name}' is ${i.dtype} here but ${v.dtype} in ${source}`);
    if (i.shape.length && (i.shape.length !== v.dims.length || i.shape.some((d, k) => typeof d === 'number' && d !== v.dims[k]))) {
      problems.push(`input '${i.name}' has shape [${i.shape.map((d) => d ?? '?').join(', ')}] here, but the data has [${v.dims.join(', ')}]`);
    }
  }
  for (const k of feeds.keys()) if (!names.has(k)) problems.push(`${source} has input '${k}', which this runner does not have`);
  if (!problems.length) return '';
  return `${runner.name}: inputs do not match: ${problems.join('; ')}. Inputs of ${runner.name}: ${runner.inputs.map((i) => `${i.name}: ${i.dtype}[${i.shape.map((d) => d ?? '?').join(', ')}]`).join(', ') || 'none'}.`;
}

/** Compare `result` against `reference` output by output (and layer by layer with markAll). */
export function comparePair(name: string, refName: string, reference: RunResult, result: RunResult, opts: CompareOptions, model?: Model): PairReport {
  const outputs: TensorComparison[] = [];
  for (const [out, ref] of reference.outputs) {
    const v = result.outputs.get(out);
    const tol = toleranceFor(opts, out);
    if (!v) {
      outputs.push({ ...compareTensors(out, ref, ref, tol), passed: false, mismatch: `${name} has no output '${out}' (it has ${[...result.outputs.keys()].join(', ') || 'none'})` });
      continue;
    }
    outputs.push(compareTensors(out, ref, v, tol));
  }
  const report: PairReport = { runner: name, reference: refName, passed: outputs.every((o) => o.passed), outputs };
  if (reference.tensors && result.tensors) {
    const producers = new Map<string, Node>();
    for (const n of model?.graph.nodes ?? []) for (const o of n.outputs) if (o) producers.set(o, n);
    report.layers = [];
    for (const [tensor, ref] of reference.tensors) {
      const v = result.tensors.get(tensor);
      if (!v) continue;
      const p = producers.get(tensor);
      const c = compareTensors(tensor, ref, v, toleranceFor(opts, tensor));
      const lc: LayerComparison = { tensor, layer: p?.name || tensor, opType: p?.opType ?? '?', comparison: c };
      report.layers.push(lc);
      if (!c.passed && !report.firstDivergence) report.firstDivergence = lc;
    }
    if (report.firstDivergence) report.passed = false;
  }
  return report;
}

/** Run `model` on every runner with the same inputs and compare. Runners are released before returning. */
export async function compareModel(model: Model | undefined, opts: CompareOptions = {}): Promise<CompareReport> {
  const names = opts.runners?.length ? opts.runners : ['kiln-ref', 'kiln-cpu'];
  let specs: TensorSpec[];
  const runners: (ModelRunner | undefined)[] = [];
  const report: CompareReport = { model: model?.path, inputs: [], runners: [], pairs: [], passed: true };
  if (model) specs = modelInputs(model);
  else {
    const first = await createRunner(names[0], undefined, opts);
    runners.push(first);
    specs = first.inputs;
  }
  const feeds = makeInputData(specs, opts);
  report.inputs = [...feeds].map(([name, t]) => ({ name, dtype: t.dtype, shape: [...t.dims] }));
  if (opts.saveInputs) writeTensors(opts.saveInputs, Object.fromEntries(feeds));
  const shapes = Object.fromEntries([...feeds].map(([k, t]) => [k, [...t.dims]]));
  try {
    for (let i = runners.length; i < names.length; i++) {
      try {
        runners.push(await createRunner(names[i], model, { precision: opts.precision, layerPrecisions: opts.layerPrecisions, shapes }));
      } catch (e) {
        if (!(e instanceof KilnError)) throw e;
        runners.push(undefined);
        report.runners[i] = { name: names[i], error: e.message };
      }
    }
    const results: (RunResult | undefined)[] = [];
    for (let i = 0; i < names.length; i++) {
      const r = runners[i];
      if (!r) { results.push(undefined); continue; }
      const mismatch = explainInputMismatch(r, feeds, model ? `the model '${model.path ?? model.graph.name}'` : `runner ${names[0]}`);
      if (mismatch) {
        report.runners[i] = { name: r.name, error: mismatch };
        results.push(undefined);
        continue;
      }
      try {
        const res = await r.run(feeds, { markAll: opts.markAll });
        results.push(res);
        report.runners[i] = { name: r.name, ms: res.ms };
      } catch (e) {
        if (!(e instanceof KilnError)) throw e;
        report.runners[i] = { name: r.name, error: e.message };
        results.push(undefined);
      }
    }
    if (opts.saveOutputs && results[0]) writeTensors(opts.saveOutputs, Object.fromEntries(results[0].outputs));
    let refName = report.runners[0].name;
    let ref = results[0];
    let start = 1;
    if (opts.loadOutputs) {
      refName = `golden outputs (${opts.loadOutputs})`;
      ref = { outputs: new Map(Object.entries(readTensors(opts.loadOutputs, model?.graph.outputs[0]?.name))), ms: 0 };
      start = 0;
    }
    for (let i = start; i < names.length; i++) {
      const res = results[i];
      const name = report.runners[i].name;
      if (!ref) {
        report.pairs.push({ runner: name, reference: refName, passed: false, outputs: [], error: `the reference runner ${refName} did not run: ${report.runners[0].error}` });
      } else if (!res) {
        report.pairs.push({ runner: name, reference: refName, passed: false, outputs: [], error: report.runners[i].error });
      } else report.pairs.push(comparePair(name, refName, ref, res, opts, model));
    }
    report.passed = report.runners.every((r) => !r.error) && report.pairs.every((p) => p.passed);
    return report;
  } finally {
    for (const r of runners) r?.release();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Report

const e = (x: number, digits = 4) => (x === 0 ? '0' : !Number.isFinite(x) ? String(x)
  : Math.abs(x) >= 1e-3 && Math.abs(x) < 1e5 ? Number(x.toPrecision(digits + 1)).toString() : Number(x.toPrecision(digits)).toExponential());
const v8 = (x: number) => e(x, 8);

function formatOutput(c: TensorComparison, runner: string, reference: string): string[] {
  const t = c.tolerance;
  const mode = t.stat === 'quantile' ? `quantile ${t.quantile}` : t.stat;
  const lines = [`  ${c.output}: ${c.passed ? 'PASSED' : 'FAILED'} (${mode}, atol ${e(t.atol)}, rtol ${e(t.rtol)}; ${c.elements} elements)`];
  if (c.mismatch) return [...lines, `    ${c.mismatch}`];
  if (c.note) lines.push(`    note: ${c.note}`);
  if (c.refStats && c.valueStats) {
    const s = (v: typeof c.refStats) => (v!.min > v!.max ? 'no values other than NaN' : `min ${e(v!.min)}, max ${e(v!.max)}, mean ${e(v!.mean)}, std ${e(v!.std)}`);
    lines.push(`    ${reference}: ${s(c.refStats)}`, `    ${runner}: ${s(c.valueStats)}`);
  }
  lines.push(`    abs error: max ${e(c.abs.max)}, mean ${e(c.abs.mean)}, median ${e(c.abs.median)}${t.stat === 'quantile' ? `, q${t.quantile} ${e(c.abs.quantile)}` : ''}`);
  lines.push(`    rel error: max ${e(c.rel.max)}, mean ${e(c.rel.mean)}, median ${e(c.rel.median)}${t.stat === 'quantile' ? `, q${t.quantile} ${e(c.rel.quantile)}` : ''}`);
  if (t.stat === 'elemwise' && c.failing) lines.push(`    ${c.failing} of ${c.elements} elements exceed both atol and rtol`);
  if (c.worst) lines.push(`    worst element [${c.worst.index.join(', ')}]: ${reference} ${v8(c.worst.reference)}, ${runner} ${v8(c.worst.value)} (abs ${e(c.worst.abs)}, rel ${e(c.worst.rel)})`);
  const h = formatHistogram(c.histogram, 30, e);
  if (h.length) lines.push('    abs error histogram:', ...h.map((x) => `    ${x}`));
  if (!c.passed) {
    const k = t.stat === 'elemwise' ? 'max' : t.stat === 'quantile' ? 'quantile' : t.stat;
    lines.push(`    minimum required tolerance: ${t.stat} error atol=${e(c.abs[k])} OR rtol=${e(c.rel[k])}`);
  }
  return lines;
}

export function formatCompareReport(r: CompareReport, opts: { markAll?: boolean } = {}): string {
  const lines: string[] = [];
  lines.push(`Inputs: ${r.inputs.map((i) => `${i.name}: ${i.dtype}[${i.shape.join(', ')}]`).join(', ') || 'none'}`);
  for (const x of r.runners) lines.push(x.error ? `Runner ${x.name}: ERROR ${x.error}` : `Runner ${x.name}: ran in ${e(x.ms ?? 0)} ms`);
  const bad: string[] = [];
  for (const p of r.pairs) {
    lines.push('', `Comparing ${p.runner} against ${p.reference}`);
    if (p.error) lines.push(`  cannot compare: ${p.error}`);
    for (const c of p.outputs) {
      lines.push(...formatOutput(c, p.runner, p.reference));
      if (!c.passed) bad.push(`${c.output} (${p.runner})`);
    }
    if (p.layers) {
      const failing = p.layers.filter((l) => !l.comparison.passed);
      lines.push(`  per-layer: ${p.layers.length} intermediate tensors compared, ${failing.length} differ`);
      const show = opts.markAll ? p.layers : failing.slice(0, 10);
      for (const l of show) {
        const c = l.comparison;
        lines.push(`    ${c.passed ? 'ok  ' : 'DIFF'} ${l.layer} (${l.opType}) -> ${l.tensor}: max abs ${e(c.abs.max)}, max rel ${e(c.rel.max)}${c.mismatch ? ` — ${c.mismatch}` : ''}`);
      }
      if (p.firstDivergence) {
        const f = p.firstDivergence;
        lines.push(`  First layer that diverges: '${f.layer}' (${f.opType}), output '${f.tensor}' (max abs error ${e(f.comparison.abs.max)})`);
      }
    }
    if (p.error) bad.push(`(${p.runner} did not run)`);
  }
  lines.push('', r.passed ? 'PASSED | All outputs matched' : `FAILED | Mismatched outputs: ${bad.join(', ') || r.runners.filter((x) => x.error).map((x) => x.name).join(', ')}`);
  return lines.join('\n');
}

/** The TypeScript program equivalent to a `kiln compare` invocation, using only Kiln's public API. */
export function compareScript(modelPath: string, opts: CompareOptions): string {
  const o: Record<string, unknown> = { ...opts };
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  delete o.inputs;
  return [
    `// Generated by kiln compare --gen-script: runs the same comparison through Kiln's public API.`,
    `import { loadOnnx, compareModel, formatCompareReport } from 'kiln';`,
    '',
    `const model = await loadOnnx(${JSON.stringify(modelPath)});`,
    `const report = await compareModel(model, ${JSON.stringify(o, null, 2).replace(/\n/g, '\n')});`,
    `console.log(formatCompareReport(report));`,
    `process.exitCode = report.passed ? 0 : 1;`,
    '',
  ].join('\n');
}

/** Topological order of a model's nodes (for reports that list layers in order). */
export function layerOrder(model: Model): Node[] {
  return topoSort(model.graph, () => true);
}

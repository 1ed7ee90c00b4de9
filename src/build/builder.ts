// The builder: ONNX model -> optimized, precision-assigned, tactic-selected, memory-planned plan.
import fs from 'node:fs';
import path from 'node:path';
import type { Dim, Model, Node, ValueType } from '../ir/graph.js';
import { formatType } from '../ir/graph.js';
import { KilnError, InputError } from '../ir/errors.js';
import { parseOnnx } from '../onnx/reader.js';
import { serializeOnnx } from '../onnx/writer.js';
import { optimize, type OptimizeReport } from '../passes/pipeline.js';
import { inferShapes } from '../passes/infer.js';
import { assignPrecision, type LayerPrecision, type Precision } from '../passes/precision.js';
import { topoSort } from '../ops/execute.js';
import { findBackend, parseDevice } from '../backends/index.js';
import type { Tactic } from '../backends/backend.js';
import { KILN_DOMAIN } from '../ops/fused.js';
import { planMemory, tensorBytes } from './memory.js';
import { KILN_VERSION, PLAN_FORMAT_VERSION, serializePlan, type LayerInfo, type PlanHeader, type ShapeProfile } from './plan.js';
import { TimingCache, nodeSignature, timeTactic } from './timing.js';
import { writeIrDump } from './dump.js';

export interface BuildOptions {
  device?: string;
  precision?: Precision;
  /** Pin layers (by name or op type) to a precision. */
  layerPrecisions?: Record<string, LayerPrecision>;
  /** min/opt/max dims per dynamic input. */
  profiles?: ShapeProfile[];
  /** Static shapes (min = opt = max) per input. */
  shapes?: Record<string, number[]>;
  /** Timing cache file: read before timing, written after. */
  timingCache?: string;
  /** Write the graph after this optimizer stage ('all' for every stage) into dumpDir as .onnx + .txt. */
  dumpIr?: string;
  dumpDir?: string;
  /** Progress over the layers being timed. */
  onProgress?: (done: number, total: number, layer: string) => void;
  /** Convolution layout to convert to (default: the backend's preference). */
  layout?: 'NCHW' | 'NHWC';
  /** Fail the build when a layer has no kernel on the device and would fall back to the CPU. */
  strict?: boolean;
  /** Run the optimizer (default true). */
  optimize?: boolean;
  /** How the user asked for this build (recorded for mismatch errors). */
  buildCommand?: string;
}

export class Plan {
  constructor(readonly header: PlanHeader, readonly bytes: Uint8Array) {}
  async save(file: string): Promise<void> {
    await fs.promises.writeFile(file, this.bytes);
  }
}

const dimsOf = (t: ValueType | undefined): (number | string | null)[] =>
  t?.kind === 'tensor' && t.shape ? t.shape.map((d) => d ?? null) : [];
const dtypeOf = (t: ValueType | undefined): string => (t?.kind === 'tensor' ? t.dtype : formatType(t));

/** Resolve every graph input's min/opt/max from the options; unbounded dynamic dims get max -1. */
export function resolveProfile(model: Model, opts: BuildOptions): ShapeProfile {
  const inits = new Set(model.graph.initializers.keys());
  const p: ShapeProfile = {};
  const given = opts.profiles?.[0] ?? {};
  for (const name of [...Object.keys(given), ...Object.keys(opts.shapes ?? {})]) {
    if (!model.graph.inputs.some((i) => i.name === name && !inits.has(name))) {
      throw new InputError(`shape given for '${name}', which is not an input of the model. Inputs: ${model.graph.inputs.filter((i) => !inits.has(i.name)).map((i) => i.name).join(', ')}.`);
    }
  }
  for (const inp of model.graph.inputs) {
    if (inits.has(inp.name) || inp.type.kind !== 'tensor') continue;
    const decl = inp.type.shape;
    const fixed = opts.shapes?.[inp.name];
    const prof = fixed ? { min: fixed, opt: fixed, max: fixed } : given[inp.name];
    if (prof) {
      for (const key of ['min', 'opt', 'max'] as const) {
        if (decl && prof[key].length !== decl.length) throw new InputError(`profile ${key} shape for '${inp.name}' has rank ${prof[key].length}, the model declares [${decl.map((d) => d ?? '?').join(', ')}].`);
        prof[key].forEach((d, i) => {
          if (typeof decl?.[i] === 'number' && decl[i] !== d) throw new InputError(`profile ${key} shape for '${inp.name}' sets dim ${i} to ${d}, but the model fixes it to ${decl[i]}.`);
        });
      }
      prof.min.forEach((d, i) => {
        if (!(d <= prof.opt[i] && prof.opt[i] <= prof.max[i])) throw new InputError(`profile for '${inp.name}': dim ${i} needs min <= opt <= max, got ${d}, ${prof.opt[i]}, ${prof.max[i]}.`);
      });
      p[inp.name] = prof;
      continue;
    }
    if (!decl) continue;
    const opt = decl.map((d) => (typeof d === 'number' ? d : 1));
    p[inp.name] = { min: decl.map((d) => (typeof d === 'number' ? d : 1)), opt, max: decl.map((d) => (typeof d === 'number' ? d : -1)) };
  }
  return p;
}

export async function build(model: Model, opts: BuildOptions = {}): Promise<Plan> {
  const t0 = performance.now();
  const { name: device, deviceId } = parseDevice(opts.device ?? 'cpu');
  const backend = findBackend(device);
  if (!backend) throw new InputError(`unknown device '${device}'.`);
  const avail = backend.availability();
  if (!avail.ok) throw new KilnError(`cannot build for device '${device}': ${avail.reason}`);
  const profile = resolveProfile(model, opts);
  const m = parseOnnx(serializeOnnx(model), { path: model.path }); // work on a copy
  // Fixed dims are optimized for as constants; dynamic ones stay symbolic so the plan is valid over the profile.
  const buildShapes = new Map<string, Dim[]>();
  for (const [name, p] of Object.entries(profile)) {
    const inp = m.graph.inputs.find((i) => i.name === name)!;
    const decl = (inp.type as { shape?: Dim[] }).shape;
    const dims = p.min.map((d, i) => (d === p.max[i] ? d : (typeof decl?.[i] === 'string' ? decl[i] : `${name}_${i}`)));
    buildShapes.set(name, dims);
    // the plan's input declares what the profile fixes, so every pass sees static dims as constants
    if (inp.type.kind === 'tensor') inp.type = { ...inp.type, shape: dims };
  }
  const report: OptimizeReport = opts.optimize === false ? { stages: [], nodesBefore: m.graph.nodes.length, nodesAfter: m.graph.nodes.length } : await optimize(m, {
    inputShapes: buildShapes,
    layout: opts.layout ?? backend.preferredLayout,
    onStage: opts.dumpIr ? async (stage, mm) => {
      if (opts.dumpIr === 'all' || opts.dumpIr === stage) await writeIrDump(mm, stage, opts.dumpDir ?? '.');
    } : undefined,
  });
  if (opts.dumpIr && opts.dumpIr !== 'all' && !report.stages.some((s) => s.name === opts.dumpIr)) {
    throw new InputError(`--dump-ir: unknown stage '${opts.dumpIr}'. Stages: ${report.stages.map((s) => s.name).join(', ')}, all.`);
  }
  const precision = opts.precision ?? 'fp32';
  const mathMode = !!backend.fpmath?.includes(precision);
  const precisions = assignPrecision(m.graph, { precision, layerPrecisions: opts.layerPrecisions, mathMode });

  // Shapes at the profile's opt (for tactic timing and layer info) and max (for the memory plan), on a scratch copy
  // of the value types so the stored graph keeps its symbolic shapes.
  const symbolic = new Map(m.graph.valueInfo);
  const at = (which: 'opt' | 'max') => {
    m.graph.valueInfo = new Map(symbolic);
    inferShapes(m.graph, m.opsets, { inputShapes: new Map(Object.entries(profile).map(([k, p]) => [k, p[which].map((d) => (d < 0 ? undefined : d))])) });
    return new Map(m.graph.valueInfo);
  };
  const maxTypes = at('max');
  const optTypes = at('opt');
  m.graph.valueInfo = symbolic;
  const order = topoSort(m.graph, () => true);

  // tactics
  const cache = new TimingCache(opts.timingCache);
  const deviceSig = backend.signature();
  const tactics = new Map<Node, { tactic: Tactic; ms?: number }>();
  const typeAt = (types: Map<string, ValueType>, name: string): ValueType | undefined => {
    const c = m.graph.initializers.get(name);
    if (c) return { kind: 'tensor', dtype: c.dtype, shape: [...c.dims] };
    const inp = m.graph.inputs.find((i) => i.name === name);
    if (inp?.type.kind === 'tensor' && profile[name]) return { ...inp.type, shape: profile[name][types === maxTypes ? 'max' : 'opt'].map((d) => (d < 0 ? undefined : d)) };
    return types.get(name) ?? inp?.type;
  };
  let done = 0;
  const timing = { timed: 0, cached: 0 };
  for (const n of order) {
    // in a math mode the backend offers reduced-type kernels beside the fp32 ones; a layer keeps only those of its own
    // precision (a pin to fp32, or an op that stays fp32, keeps the reduced-type kernels out)
    const offered = backend.tactics(n, m, (x) => typeAt(optTypes, x), precision);
    const cands = mathMode ? offered.filter((t) => !t.precision || t.precision === precisions.get(n)) : offered;
    let chosen = { tactic: cands[0] } as { tactic: Tactic; ms?: number };
    if (cands.length > 1) {
      // a math mode offers other tactics for the same fp32 layer: its timings are kept apart
      const sig = nodeSignature(n, (x) => typeAt(optTypes, x), (x) => m.graph.initializers.has(x)) + (mathMode ? `|${precisions.get(n)}` : '');
      const hit = cache.lookup(deviceSig, sig);
      const fromCache = hit && cands.find((c) => c.name === hit.tactic);
      if (fromCache) {
        chosen = { tactic: fromCache, ms: hit!.ms };
        timing.cached++;
      } else {
        timing.timed++;
        let best: { tactic: Tactic; ms: number } | undefined;
        for (const t of cands) {
          const ms = await timeTactic(t, n, m, (x) => typeAt(optTypes, x));
          if (ms !== undefined && (!best || ms < best.ms)) best = { tactic: t, ms };
        }
        if (best) {
          chosen = best;
          cache.record(deviceSig, sig, best.tactic.name, best.ms);
        }
      }
    }
    tactics.set(n, chosen);
    opts.onProgress?.(++done, order.length, n.name || n.opType);
  }
  cache.save();
  const fallback = order.filter((n) => tactics.get(n)!.tactic.name === 'cpu-fallback');
  if (opts.strict && fallback.length) {
    throw new KilnError(`--strict: ${fallback.length} layer(s) have no ${device} kernel and would run on the CPU: ${fallback.slice(0, 20).map((n) => `${n.name || '(unnamed)'} (${n.opType})`).join(', ')}${fallback.length > 20 ? ', ...' : ''}.`, {
      hint: 'Drop --strict to let them run on the CPU inside the engine, or see `kiln inspect capability MODEL`.',
    });
  }

  // Arena sized for the profile's max; for unbounded dims (no max given), for opt — larger runs allocate as needed.
  const sizeAt = (name: string) => {
    const bounded = (t?: ValueType) => t?.kind === 'tensor' && !!t.shape && t.shape.every((d) => typeof d === 'number');
    const t = bounded(maxTypes.get(name)) ? maxTypes.get(name) : optTypes.get(name);
    if (t?.kind !== 'tensor' || !t.shape || t.shape.some((d) => typeof d !== 'number')) return undefined;
    return tensorBytes(t.dtype, t.shape as number[]);
  };
  const mem = planMemory(m.graph, order, sizeAt);
  const io = (names: string[], types: Map<string, ValueType>) => names.filter(Boolean).map((x) => ({ name: x, dtype: dtypeOf(typeAt(types, x)), shape: dimsOf(typeAt(types, x)) }));
  const layers: LayerInfo[] = order.map((n) => {
    const weights = n.inputs.filter((x) => x && m.graph.initializers.has(x));
    const t = tactics.get(n)!;
    return {
      name: n.name, opType: n.domain === KILN_DOMAIN ? n.opType : n.domain ? `${n.domain}:${n.opType}` : n.opType,
      fused: fusedOps(n), tactic: t.tactic.name, precision: mathMode ? t.tactic.precision ?? 'fp32' : precisions.get(n) ?? 'fp32',
      inputs: io(n.inputs.filter((x) => !m.graph.initializers.has(x)), optTypes), outputs: io(n.outputs, optTypes),
      weightBytes: weights.reduce((a, w) => a + tensorBytes(m.graph.initializers.get(w)!.dtype, m.graph.initializers.get(w)!.dims), 0),
      workspaceBytes: t.tactic.workspaceBytes ?? 0,
      ...(t.ms !== undefined ? { timeMs: t.ms } : {}),
    };
  });
  const inits = new Set(m.graph.initializers.keys());
  const header: Omit<PlanHeader, 'blobs'> = {
    kilnVersion: KILN_VERSION, formatVersion: PLAN_FORMAT_VERSION, created: new Date().toISOString(), device: deviceSig,
    buildCommand: opts.buildCommand ?? `kiln build --onnx ${model.path ?? 'MODEL.onnx'} --save-engine MODEL.plan --device ${device}${precision !== 'fp32' ? ` --${precision}` : ''}`,
    precision,
    inputs: m.graph.inputs.filter((i) => !inits.has(i.name)).map((i) => ({ name: i.name, dtype: dtypeOf(i.type), shape: dimsOf(i.type) })),
    outputs: m.graph.outputs.map((o) => ({ name: o.name, dtype: dtypeOf(o.type), shape: dimsOf(o.type) })),
    profiles: [profile],
    layers,
    memory: { alignment: mem.alignment, arenaBytes: mem.arenaBytes, lowerBound: mem.lowerBound, weightBytes: mem.weightBytes, slots: mem.slots.length, dynamic: mem.dynamic.length },
    optimizer: { nodesBefore: report.nodesBefore, nodesAfter: report.nodesAfter, stages: report.stages.map((s) => ({ name: s.name, changes: s.changes })) },
    buildMs: 0,
    timing,
  };
  const optShapes = Object.fromEntries(Object.entries(profile).map(([k, p]) => [k, p.opt]));
  const compiled = backend.compileForPlan ? await backend.compileForPlan(m, optShapes, deviceId) : [];
  header.buildMs = Math.round(performance.now() - t0);
  const tacticMap = Object.fromEntries(order.map((n) => [n.name, tactics.get(n)!.tactic.name]));
  const blobs = new Map<string, Uint8Array>([
    ['graph.onnx', serializeOnnx(m)],
    ['tactics.json', new TextEncoder().encode(JSON.stringify(tacticMap))],
    ...backend.serializeKernels(order.map((n) => ({ node: n, tactic: tactics.get(n)!.tactic }))),
    ...compiled,
  ]);
  return new Plan({ ...header, blobs: [] }, serializePlan(header, blobs));
}

/** The ONNX ops a fused layer stands for (from its type and epilogue). */
function fusedOps(n: Node): string[] {
  if (n.domain !== KILN_DOMAIN) return [n.opType];
  const act = (n.attrs.activation?.value as string | undefined) || undefined;
  const base = n.opType === 'FusedConv' ? ['Conv'] : n.opType === 'FusedMatMul' ? [n.attrs.gemm?.value ? 'Gemm' : 'MatMul'] : [n.opType];
  if (n.opType === 'Elementwise') return [`Elementwise${n.attrs.expr ? ` ${String(n.attrs.expr.value)}` : ''}`];
  if (n.inputs[2]) base.push('bias');
  if (n.inputs[3]) base.push('residual Add');
  if (act) base.push(act);
  return base;
}

export function defaultPlanPath(onnxPath: string): string {
  return path.join(path.dirname(onnxPath), `${path.basename(onnxPath, '.onnx')}.plan`);
}

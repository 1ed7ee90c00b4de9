// Runners for `kiln compare` / `kiln debug`: one model run by several implementations behind one small interface.
//
//   kiln-ref        the reference kernels on the graph as written (no optimizer): the oracle
//   kiln-cpu        built by Kiln's builder (optimizer, precision) and run by the CPU backend; `kiln-cpu:fp16` etc.
//   kiln-cuda       the CUDA backend, when it can run here
//   onnxruntime     onnxruntime-node, imported only when asked for
//   plan:FILE       a Kiln plan built earlier (--load-engine)
import type { Model, Node, ValueType } from '../ir/graph.js';
import { formatType } from '../ir/graph.js';
import { TensorData, type Value } from '../ir/tensor.js';
import { KilnError, InputError } from '../ir/errors.js';
import { executeGraph, topoSort } from '../ops/execute.js';
import { parseOnnx } from '../onnx/reader.js';
import { serializeOnnx } from '../onnx/writer.js';
import { inferShapes } from '../passes/infer.js';
import type { LayerPrecision, Precision } from '../passes/precision.js';
import { build } from '../build/builder.js';
import { findBackend } from '../backends/index.js';
import { KILN_DOMAIN } from '../ops/fused.js';
import { Engine } from '../runtime/engine.js';
import { Tensor, fromTensorData, toTensorData } from '../runtime/tensor.js';

export interface TensorSpec {
  name: string;
  dtype: string;
  shape: (number | string | null)[];
}

export interface RunResult {
  outputs: Map<string, TensorData>;
  /** Every tensor the runner can show (with markAll), by name, in the order the runner computed them. */
  tensors?: Map<string, TensorData>;
  ms: number;
}

export interface ModelRunner {
  name: string;
  inputs: TensorSpec[];
  outputs: string[];
  run(feeds: Map<string, TensorData>, opts?: { markAll?: boolean }): Promise<RunResult>;
  release(): void;
}

export interface RunnerOptions {
  /** Precision for kiln-cpu/kiln-cuda runners without one in their name. */
  precision?: Precision;
  layerPrecisions?: Record<string, LayerPrecision>;
  /** Static input shapes to build for (the shapes the inputs will have). */
  shapes?: Record<string, number[]>;
}

export const RUNNER_KINDS = ['kiln-ref', 'kiln-cpu', 'kiln-cuda', 'onnxruntime'] as const;

/** Every runner kind and whether it can run here (with the reason when not). */
export async function listRunners(): Promise<{ name: string; available: boolean; reason?: string }[]> {
  const out: { name: string; available: boolean; reason?: string }[] = [{ name: 'kiln-ref', available: true }];
  for (const dev of ['cpu', 'cuda']) {
    const a = findBackend(dev)?.availability() ?? { ok: false, reason: 'no such backend in this build' };
    out.push({ name: `kiln-${dev}`, available: a.ok, reason: a.reason });
  }
  try {
    await import('onnxruntime-node' as string);
    out.push({ name: 'onnxruntime', available: true });
  } catch (e) {
    out.push({ name: 'onnxruntime', available: false, reason: `onnxruntime-node is not installed (${(e as Error).message.split('\n')[0]})` });
  }
  return out;
}

const specOf = (name: string, t: ValueType | undefined): TensorSpec => ({
  name,
  dtype: t?.kind === 'tensor' ? t.dtype : formatType(t),
  shape: t?.kind === 'tensor' && t.shape ? t.shape.map((d) => d ?? null) : [],
});

export function modelInputs(m: Model): TensorSpec[] {
  return m.graph.inputs.filter((i) => !m.graph.initializers.has(i.name)).map((i) => specOf(i.name, i.type));
}

/** Keep only tensors (sequences and empty optionals cannot be compared element-wise). */
function tensorsOf(values: Iterable<[string, Value | undefined]>): Map<string, TensorData> {
  const out = new Map<string, TensorData>();
  for (const [k, v] of values) if (v instanceof TensorData) out.set(k, v);
  return out;
}

function refRunner(model: Model): ModelRunner {
  return {
    name: 'kiln-ref',
    inputs: modelInputs(model),
    outputs: model.graph.outputs.map((o) => o.name),
    async run(feeds, opts) {
      const t0 = performance.now();
      const tensors = new Map<string, TensorData>();
      const onNode = opts?.markAll ? (n: Node, outs: Value[]) => n.outputs.forEach((o, k) => o && outs[k] instanceof TensorData && tensors.set(o, outs[k] as TensorData)) : undefined;
      const all = executeGraph(model.graph, feeds, { opsets: model.opsets, onNode });
      const ms = performance.now() - t0;
      return { outputs: tensorsOf(all), tensors: opts?.markAll ? tensors : undefined, ms };
    },
    release() {},
  };
}

/**
 * The optimizer may keep a tensor's name while changing what it holds (a fused layer writes its activation's
 * result under the first op's output name). A tensor of an optimized runner is compared with the reference only
 * when the layer that wrote it computes the same single op as the original node.
 */
function sameComputation(original: Node | undefined, layer: Node): boolean {
  if (!original) return false;
  if (layer.domain === '' || layer.domain === 'ai.onnx') return layer.opType === original.opType && original.domain === layer.domain;
  if (layer.domain !== KILN_DOMAIN) return false;
  const epilogue = !!layer.inputs[2] || !!layer.inputs[3] || !!layer.attrs.activation?.value;
  if (epilogue) return false;
  if (layer.opType === 'FusedMatMul') return original.opType === (layer.attrs.gemm?.value ? 'Gemm' : 'MatMul');
  if (layer.opType === 'FusedConv') return original.opType === 'Conv';
  return layer.opType === original.opType;
}

function engineRunner(name: string, engine: Engine, original?: Model): ModelRunner {
  const producers = new Map<string, Node>();
  for (const n of original?.graph.nodes ?? []) for (const o of n.outputs) if (o) producers.set(o, n);
  const ctx = engine.createContext();
  return {
    name,
    inputs: engine.header.inputs.map((i) => ({ name: i.name, dtype: i.dtype, shape: i.shape })),
    outputs: engine.outputNames,
    async run(feeds, opts) {
      const tensors = new Map<string, TensorData>();
      const onLayer = opts?.markAll ? (n: Node, outs: Value[]) => n.outputs.forEach((o, k) => {
        if (o && outs[k] instanceof TensorData && (!original || sameComputation(producers.get(o), n))) tensors.set(o, outs[k] as TensorData);
      }) : undefined;
      const t0 = performance.now();
      const out = await ctx.run(Object.fromEntries([...feeds].map(([k, v]) => [k, fromTensorData(v)])), undefined, onLayer ? { onLayer, retainOutputs: true } : undefined);
      const ms = performance.now() - t0;
      const outputs = new Map<string, TensorData>();
      for (const [k, v] of Object.entries(out)) if (v instanceof Tensor) outputs.set(k, toTensorData(v));
      return { outputs, tensors: opts?.markAll ? tensors : undefined, ms };
    },
    release: () => engine.dispose(),
  };
}

type Ort = typeof import('onnxruntime-node');

async function importOrt(): Promise<Ort> {
  try {
    // a variable specifier keeps bundlers and the type checker from making onnxruntime-node a hard dependency
    const spec = 'onnxruntime-node';
    return (await import(spec)) as Ort;
  } catch (e) {
    throw new KilnError(`runner 'onnxruntime' needs the onnxruntime-node package, which cannot be loaded: ${(e as Error).message.split('\n')[0]}`, {
      hint: 'Install it next to Kiln: npm install onnxruntime-node',
    });
  }
}

/** A copy of the model whose graph outputs also list every intermediate tensor with a known element type. */
function markAllOutputs(model: Model): Model {
  const m = parseOnnx(serializeOnnx(model));
  inferShapes(m.graph, m.opsets);
  const have = new Set(m.graph.outputs.map((o) => o.name));
  for (const n of topoSort(m.graph, () => true)) {
    for (const o of n.outputs) {
      const t = m.graph.valueInfo.get(o);
      if (!o || have.has(o) || t?.kind !== 'tensor') continue;
      m.graph.outputs.push({ name: o, type: { kind: 'tensor', dtype: t.dtype } });
      have.add(o);
    }
  }
  return m;
}

async function ortRunner(model: Model): Promise<ModelRunner> {
  const ort = await importOrt();
  const sessions = new Map<boolean, Awaited<ReturnType<Ort['InferenceSession']['create']>>>();
  const session = async (markAll: boolean) => {
    let s = sessions.get(markAll);
    if (!s) {
      s = await ort.InferenceSession.create(serializeOnnx(markAll ? markAllOutputs(model) : model), { graphOptimizationLevel: 'all' });
      sessions.set(markAll, s);
    }
    return s;
  };
  const plain = await session(false);
  const outputs = model.graph.outputs.map((o) => o.name);
  return {
    name: 'onnxruntime',
    inputs: plain.inputNames.map((n) => {
      const meta = (plain as unknown as { inputMetadata?: { name: string; isTensor: boolean; type?: string; shape?: (number | string)[] }[] }).inputMetadata?.find((x) => x.name === n);
      const decl = modelInputs(model).find((i) => i.name === n);
      return { name: n, dtype: meta?.type ?? decl?.dtype ?? '?', shape: (meta?.shape as (number | string)[] | undefined)?.map((d) => (typeof d === 'number' && d < 0 ? null : d)) ?? decl?.shape ?? [] };
    }),
    outputs,
    async run(feeds, opts) {
      const s = await session(!!opts?.markAll);
      const ortFeeds: Record<string, InstanceType<Ort['Tensor']>> = {};
      for (const [k, v] of feeds) {
        const t = fromTensorData(v);
        ortFeeds[k] = new ort.Tensor(t.type as never, t.data as never, t.dims as number[]);
      }
      const t0 = performance.now();
      const res = await s.run(ortFeeds);
      const ms = performance.now() - t0;
      const all = new Map<string, TensorData>();
      for (const [k, v] of Object.entries(res)) {
        all.set(k, toTensorData(new Tensor(v.type as never, v.data as never, v.dims)));
        v.dispose?.();
      }
      return { outputs: new Map(outputs.map((o) => [o, all.get(o)!])), tensors: opts?.markAll ? all : undefined, ms };
    },
    release() {
      for (const s of sessions.values()) void s.release();
    },
  };
}

/** Split `kiln-cpu:fp16` into kind and precision. */
export function parseRunnerName(spec: string): { kind: string; precision?: Precision; file?: string } {
  if (spec.startsWith('plan:')) return { kind: 'plan', file: spec.slice(5) };
  const [kind, prec] = spec.split(':');
  if (!(RUNNER_KINDS as readonly string[]).includes(kind)) {
    throw new InputError(`unknown runner '${spec}'.`, { hint: `Runners: ${RUNNER_KINDS.join(', ')} (kiln-cpu/kiln-cuda take :fp16 or :bf16), plan:FILE.` });
  }
  if (prec !== undefined && !['fp32', 'fp16', 'bf16', 'tf32'].includes(prec)) throw new InputError(`runner '${spec}': unknown precision '${prec}' (fp32, fp16, bf16, tf32).`);
  return { kind, precision: prec as Precision | undefined };
}

/** Create a runner from its name (`kiln-ref`, `kiln-cpu`, `kiln-cpu:fp16`, `kiln-cuda`, `onnxruntime`, `plan:FILE`). */
export async function createRunner(spec: string, model: Model | undefined, opts: RunnerOptions = {}): Promise<ModelRunner> {
  const { kind, precision, file } = parseRunnerName(spec);
  if (kind === 'plan') {
    const engine = await Engine.load(file!);
    return engineRunner(spec, engine, model);
  }
  if (!model) throw new InputError(`runner '${spec}' needs an ONNX model.`);
  if (kind === 'kiln-ref') return refRunner(model);
  if (kind === 'onnxruntime') return ortRunner(model);
  const device = kind.slice('kiln-'.length);
  const backend = findBackend(device);
  const avail = backend?.availability() ?? { ok: false, reason: 'no such backend' };
  if (!avail.ok) {
    throw new KilnError(`runner '${spec}' is unavailable here: ${avail.reason}`, { hint: 'Use kiln-cpu, or list runners with `kiln compare --list-runners`.' });
  }
  const prec = precision ?? opts.precision ?? 'fp32';
  const plan = await build(model, { device, precision: prec, layerPrecisions: opts.layerPrecisions, shapes: opts.shapes });
  const engine = await Engine.load(plan);
  return engineRunner(precision || prec === 'fp32' ? spec : `${spec}:${prec}`, engine, model);
}

// InferenceSession: the onnxruntime-compatible entry point.
import type { Dim, ValueInfo, ValueType } from '../ir/graph.js';
import { formatType } from '../ir/graph.js';
import { InputError, KilnError } from '../ir/errors.js';
import { loadOnnx } from '../onnx/reader.js';
import { BACKENDS, findBackend, parseDevice } from '../backends/index.js';
import { build } from '../build/builder.js';
import type { Precision } from '../passes/precision.js';
import { Tensor, type OnnxValue, type TensorType } from './tensor.js';
import { Engine, ExecutionContext, PassedFeeds, isPlanBytes, isPlanFile } from './engine.js';

export interface SessionOptions {
  /** Providers to try, in order. Default ['cpu']. Unknown or unavailable providers are errors. */
  executionProviders?: (string | { name: string; deviceId?: number })[];
  /** GPU index for the cuda provider when the provider entry names none ('cuda:1' or { name: 'cuda', deviceId: 1 }). */
  deviceId?: number;
  /** Threads for CPU kernels. */
  intraOpNumThreads?: number;
  /** CPU: run steady-state inferences on the calling thread, blocking the event loop as onnxruntime-node does
   * (EngineLoadOptions.runOnCallingThread). Default false. */
  runOnCallingThread?: boolean;
  /** Folder to resolve external data in when the model is given as bytes. */
  baseDir?: string;
  /** Precision to build ONNX models in (default fp32). */
  precision?: Precision;
  /** 'disabled' runs the model's graph as it is; 'all' (default) runs Kiln's optimizer first. */
  graphOptimizationLevel?: 'disabled' | 'all';
}

export interface ValueMetadata {
  name: string;
  isTensor: boolean;
  /** Element type for tensors ('float32', ...), or a description such as 'seq(float32[*])'. */
  type: string;
  /** Dims: numbers, symbolic names, or -1 for unknown. Empty for non-tensors. */
  shape: (number | string)[];
}

function metadata(v: ValueInfo): ValueMetadata {
  const t = v.type;
  if (t.kind === 'tensor') return { name: v.name, isTensor: true, type: t.dtype, shape: (t.shape ?? []).map((d) => d ?? -1) };
  return { name: v.name, isTensor: false, type: formatType(t), shape: [] };
}

export class InferenceSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly ValueMetadata[];
  readonly outputMetadata: readonly ValueMetadata[];
  /** The provider that runs this session. */
  readonly executionProvider: string;
  private released = false;
  private readonly context: ExecutionContext;
  /** The last feeds that passed the model's checks (see PassedFeeds): the same names, types and dims pass again. */
  private readonly passed = new PassedFeeds();
  /** What a run without fetches asks the context for: undefined (every output, without a copy of the list) where the
   * plan's outputs are the model's. */
  private readonly fetchAll: readonly string[] | undefined;

  private constructor(readonly engine: Engine, provider: string) {
    const g = engine.model.graph;
    const inputs = g.inputs.filter((i) => !g.initializers.has(i.name));
    this.inputNames = inputs.map((i) => i.name);
    this.outputNames = g.outputs.map((o) => o.name);
    this.inputMetadata = inputs.map(metadata);
    this.outputMetadata = g.outputs.map(metadata);
    this.executionProvider = provider;
    this.context = engine.createContext();
    const all = engine.allOutputs;
    this.fetchAll = all.length === this.outputNames.length && all.every((o, i) => o === this.outputNames[i]) ? undefined : this.outputNames;
  }

  /**
   * Load a model (path to .onnx or .plan, or its bytes) on the first available requested provider. ONNX models are
   * built in memory first (optimized, with the requested precision); plans load as they are.
   */
  static async create(model: string | Uint8Array | ArrayBuffer, options: SessionOptions = {}): Promise<InferenceSession> {
    const source = model instanceof ArrayBuffer ? new Uint8Array(model) : model;
    if (typeof source !== 'string' && !(source instanceof Uint8Array)) {
      throw new InputError('InferenceSession.create: pass a model file path or its bytes (Uint8Array/ArrayBuffer).');
    }
    if (typeof source === 'string' ? isPlanFile(source) : isPlanBytes(source)) {
      const engine = await Engine.load(source, { intraOpNumThreads: options.intraOpNumThreads, runOnCallingThread: options.runOnCallingThread, deviceId: options.deviceId });
      return new InferenceSession(engine, engine.header.device.backend);
    }
    const m = await loadOnnx(source, { baseDir: options.baseDir });
    const wanted = (options.executionProviders ?? ['cpu']).map((p) => {
      const d = parseDevice(typeof p === 'string' ? p : p.name);
      return { name: d.name, deviceId: (typeof p === 'string' ? undefined : p.deviceId) ?? (d.deviceId || (options.deviceId ?? 0)) };
    });
    const failures: string[] = [];
    for (const { name, deviceId } of wanted) {
      const b = findBackend(name);
      if (!b) {
        throw new InputError(`execution provider '${name}' is unknown. Known providers: ${BACKENDS.map((x) => x.name).join(', ')}.`);
      }
      const a = b.availability();
      if (!a.ok) {
        failures.push(`${name}: ${a.reason}`);
        continue;
      }
      const plan = await build(m, { device: `${name}:${deviceId}`, precision: options.precision, optimize: options.graphOptimizationLevel !== 'disabled' });
      const engine = await Engine.load(plan, { intraOpNumThreads: options.intraOpNumThreads, runOnCallingThread: options.runOnCallingThread, deviceId });
      return new InferenceSession(engine, name);
    }
    throw new KilnError(`none of the requested execution providers can run here:\n  ${failures.join('\n  ')}`, {
      hint: `Add 'cpu' to executionProviders as a fallback.`,
    });
  }

  /** Run the model. `fetches` limits which outputs are returned (default: all). */
  run(feeds: Record<string, OnnxValue>, fetches?: readonly string[]): Promise<Record<string, OnnxValue>> {
    // feeds like the last checked ones go straight to the context (no async function around it: a promise less)
    if (!this.released && !fetches && feeds !== null && typeof feeds === 'object' && this.passed.match(feeds)) return this.context.run(feeds, this.fetchAll);
    return this.runChecked(feeds, fetches);
  }

  private async runChecked(feeds: Record<string, OnnxValue>, fetches?: readonly string[]): Promise<Record<string, OnnxValue>> {
    if (this.released) throw new InputError('this InferenceSession was released; create a new one.');
    if (feeds === null || typeof feeds !== 'object') throw new InputError('session.run(feeds): feeds must be an object mapping input names to Tensors.');
    for (const name of Object.keys(feeds)) {
      if (!this.inputNames.includes(name)) {
        throw new InputError(`input '${name}' is not an input of this model. Inputs: ${this.inputNames.map((n) => `'${n}'`).join(', ') || '(none)'}.`);
      }
    }
    const checked: Record<string, OnnxValue> = {};
    for (const info of this.engine.model.graph.inputs) {
      if (!this.inputNames.includes(info.name)) continue;
      const v = feeds[info.name];
      if (v === undefined) {
        if (info.type.kind === 'optional') continue;
        throw new InputError(`input '${info.name}' is missing; the model needs ${formatType(info.type)}.`, {
          hint: `Pass all of: ${this.inputNames.join(', ')}.`,
        });
      }
      checkInput(info, v);
      checked[info.name] = v;
    }
    const out = fetches ? [...fetches] : [...this.outputNames];
    for (const f of out) if (!this.outputNames.includes(f)) throw new InputError(`'${f}' is not an output of this model. Outputs: ${this.outputNames.join(', ')}.`);
    this.passed.remember(feeds);
    return this.context.run(checked, out);
  }

  async release(): Promise<void> {
    if (!this.released) this.engine.dispose();
    this.released = true;
  }
}

function checkInput(info: ValueInfo, v: OnnxValue): void {
  const t = info.type;
  const want = t.kind === 'optional' ? t.elem : t;
  if (v === null) {
    if (t.kind === 'optional') return;
    throw new InputError(`input '${info.name}' is null, but the model needs ${formatType(t)}.`);
  }
  if (Array.isArray(v)) {
    if (want.kind !== 'sequence') throw new InputError(`input '${info.name}' is a sequence (array of Tensors), but the model needs ${formatType(t)}.`);
    return;
  }
  if (!(v instanceof Tensor)) throw new InputError(`input '${info.name}' must be a Tensor, got ${Object.prototype.toString.call(v).slice(8, -1)}.`);
  if (want.kind === 'tensor') checkTensor(info.name, want, v);
  else if (want.kind === 'sequence') throw new InputError(`input '${info.name}' must be a sequence (array of Tensors), got a Tensor.`);
}

function checkTensor(name: string, want: Extract<ValueType, { kind: 'tensor' }>, v: Tensor): void {
  if (v.type !== (want.dtype as TensorType)) {
    throw new InputError(`input '${name}' has type ${v.type}, but the model expects ${want.dtype}.`, {
      hint: `Create it as new Tensor('${want.dtype}', ...).`,
    });
  }
  if (!want.shape) return;
  const shape = want.shape as Dim[];
  if (shape.length !== v.dims.length) {
    throw new InputError(`input '${name}' has rank ${v.dims.length} (shape [${v.dims.join(', ')}]), but the model expects rank ${shape.length}: [${shape.map((d) => d ?? '?').join(', ')}].`);
  }
  shape.forEach((d, i) => {
    if (typeof d === 'number' && d !== v.dims[i]) {
      throw new InputError(`input '${name}' has shape [${v.dims.join(', ')}], but dimension ${i} must be ${d} (model shape [${shape.map((x) => x ?? '?').join(', ')}]).`);
    }
  });
}

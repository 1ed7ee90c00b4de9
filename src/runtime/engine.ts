// Engine and ExecutionContext: the run phase. An engine holds one plan's graph and weights on a device; each
// context has its own activation state, so several run at once on one engine.
import fs from 'node:fs';
import type { Model } from '../ir/graph.js';
import { KilnError, InputError } from '../ir/errors.js';
import { parseOnnx } from '../onnx/reader.js';
import { findBackend } from '../backends/index.js';
import { isDeviceRef, type DeviceRef, type Runner, type RunHooks, type RunnerContext } from '../backends/backend.js';
import { GpuTensor } from './gpu-tensor.js';
import { deviceMismatch, parsePlan, readPlanFile, PLAN_MAGIC, type PlanData, type PlanHeader, type ShapeProfile } from '../build/plan.js';
import type { Plan } from '../build/builder.js';
import { sameDims, type Value } from '../ir/tensor.js';
import { Tensor, type OnnxValue, fromValue, toValue } from './tensor.js';

export function isPlanBytes(b: Uint8Array): boolean {
  return b.length >= 8 && new TextDecoder().decode(b.subarray(0, 8)) === PLAN_MAGIC;
}

export interface EngineLoadOptions {
  /** CPU threads for intra-op parallelism. */
  intraOpNumThreads?: number;
  /** Capture CUDA runs into graphs and replay them (default true). */
  cudaGraph?: boolean;
  /** Which GPU runs the engine (default 0); a plan built on one GPU loads on any other of the same kind. */
  deviceId?: number;
  /**
   * CPU: run each steady-state (replayed) inference on the calling thread, as onnxruntime-node does, instead of on a
   * worker thread. It saves the two thread handoffs of a run (0.1-0.4 ms a run on the 2-core VM of bench/RESULTS.md,
   * where waking a thread costs 10-80 us), but the event loop waits for the whole inference: for batch jobs and
   * benchmarks, not for a server. Default false.
   */
  runOnCallingThread?: boolean;
}

/**
 * The names (in order), types and dims of the last feeds that passed a run's checks. Feeds that match them pass
 * again with one pass over them: on a run's hot path every check runs on caches the previous run flushed, and a
 * MobileNetV2 run spent tens of microseconds on checks whose answer could not have changed. Only plain Tensors are
 * remembered (a GpuTensor may be disposed between runs, a sequence's items vary).
 */
export class PassedFeeds {
  names: readonly string[] = [];
  private types: string[] = [];
  private dims: (readonly number[])[] = [];

  match(feeds: Record<string, unknown>): boolean {
    const names = this.names, keys = Object.keys(feeds);
    if (!names.length || keys.length !== names.length) return false;
    for (let i = 0; i < keys.length; i++) {
      const v = feeds[keys[i]];
      if (keys[i] !== names[i] || !(v instanceof Tensor) || v.type !== this.types[i] || !sameDims(v.dims, this.dims[i])) return false;
    }
    return true;
  }

  /** Remember feeds that just passed every check. */
  remember(feeds: Record<string, unknown>): void {
    const keys = Object.keys(feeds), vs = keys.map((k) => feeds[k]);
    if (!vs.every((v) => v instanceof Tensor)) return void (this.names = []);
    this.names = keys;
    this.types = vs.map((v) => (v as Tensor).type);
    this.dims = vs.map((v) => (v as Tensor).dims);
  }
}

export class Engine {
  private disposed = false;
  /** See PassedFeeds: shared by the engine's contexts (the checks depend on the plan alone). */
  readonly passed = new PassedFeeds();
  /** Every output's name, for runs that fetch them all (outputNames makes a fresh array per call). */
  readonly allOutputs: readonly string[];

  private constructor(readonly header: PlanHeader, readonly model: Model, private runner: Runner, readonly source: string) {
    this.allOutputs = Object.freeze(this.outputNames);
  }

  /** Load a plan from a file, its bytes, or a Plan just built. */
  static async load(plan: string | Uint8Array | Plan, opts: EngineLoadOptions = {}): Promise<Engine> {
    let data: PlanData;
    let source: string;
    if (typeof plan === 'string') {
      data = await readPlanFile(plan);
      source = plan;
    } else if (plan instanceof Uint8Array) {
      data = parsePlan(plan);
      source = 'plan bytes';
    } else {
      data = parsePlan(plan.bytes);
      source = 'built plan';
    }
    const h = data.header;
    const backend = findBackend(h.device.backend);
    if (!backend) throw new KilnError(`${source}: built for backend '${h.device.backend}', which this Kiln does not have.`, { hint: `Rebuild: ${h.buildCommand}` });
    const avail = backend.availability();
    if (!avail.ok) throw new KilnError(`${source}: built for '${h.device.backend}', which cannot run here: ${avail.reason}`, { hint: `Rebuild for this machine: ${h.buildCommand.replace(/--device \S+/, '--device cpu')}` });
    const diff = deviceMismatch(h.device, backend.signature());
    if (diff) throw new KilnError(`${source}: built for a different device (${diff}).`, { hint: `Rebuild on this machine: ${h.buildCommand}` });
    const graphBytes = data.blobs.get('graph.onnx');
    if (!graphBytes) throw new KilnError(`${source}: the plan has no graph blob.`, { hint: `Rebuild: ${h.buildCommand}` });
    const model = parseOnnx(graphBytes, { path: source });
    const tactics = JSON.parse(new TextDecoder().decode(data.blobs.get('tactics.json') ?? new TextEncoder().encode('{}')));
    const runner = await backend.createRunner(model, { intraOpNumThreads: opts.intraOpNumThreads, runOnCallingThread: opts.runOnCallingThread, cudaGraph: opts.cudaGraph, deviceId: opts.deviceId, precision: h.precision, tactics, kernels: data.blobs });
    return new Engine(h, model, runner, source);
  }

  get inputNames(): string[] {
    return this.header.inputs.map((i) => i.name);
  }
  get outputNames(): string[] {
    return this.header.outputs.map((o) => o.name);
  }
  get profile(): ShapeProfile {
    return this.header.profiles[0] ?? {};
  }

  createContext(): ExecutionContext {
    if (this.disposed) throw new InputError('this Engine was disposed; load it again.');
    return new ExecutionContext(this, this.runner);
  }

  /** Frees the engine's memory; its contexts stop working. */
  dispose(): void {
    this.disposed = true;
    this.runner.release();
  }

  /** The backend's runner, for runtimes that chain a GPU backend's captured graphs themselves (the LLM step). */
  get backendRunner(): Runner {
    return this.runner;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** Check input shapes against the profile; the error prints the profile. */
  checkProfile(feeds: Map<string, Value | DeviceRef>): void {
    const p = this.profile;
    for (const [name, v] of feeds) {
      const prof = p[name];
      if (!prof || !v || !('dims' in v)) continue;
      const bad = v.dims.some((d, i) => d < prof.min[i] || (prof.max[i] >= 0 && d > prof.max[i]));
      if (bad || v.dims.length !== prof.min.length) {
        const fmt = (a: number[]) => `[${a.map((d) => (d < 0 ? '∞' : d)).join(', ')}]`;
        throw new InputError(`input '${name}' has shape [${v.dims.join(', ')}], outside the plan's shape profile: min ${fmt(prof.min)}, opt ${fmt(prof.opt)}, max ${fmt(prof.max)}.`, {
          hint: 'Rebuild with a profile that covers this shape (--min-shapes/--opt-shapes/--max-shapes).',
        });
      }
    }
  }
}

export class ExecutionContext {
  private state?: RunnerContext;

  constructor(readonly engine: Engine, private runner: Runner) {}

  /** Frees what this context holds on the device (its stream and captured CUDA graphs); the engine stays. */
  dispose(): void {
    this.state?.release();
    this.state = undefined;
    this.disposed = true;
  }
  private disposed = false;

  /**
   * Run one inference; resolves with every output (or those named in `fetches`) as host Tensors. Feeds may be
   * GpuTensors on a GPU engine (read where they are, no host copy).
   */
  run(feeds: Record<string, OnnxValue | GpuTensor>, fetches?: readonly string[], hooks?: RunHooks): Promise<Record<string, OnnxValue>> {
    const e = this.engine;
    // the steady state: feeds like the last checked ones, and a backend replay (see Runner.runReplayed): one pass over the
    // feeds, the outputs made into Tensors while the backend computes, one promise
    if (!hooks && this.runner.runReplayed && !this.disposed && !e.isDisposed && e.passed.match(feeds)) {
      try {
        const inputs = new Map<string, Value>();
        for (const k of e.passed.names) inputs.set(k, toValue(feeds[k] as Tensor));
        const out = fetches ? [...fetches] : (e.allOutputs as string[]);
        const done = this.runner.runReplayed(inputs, out, (r) => this.result(out, r) as Record<string, OnnxValue>);
        if (done) return done;
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.runOn(feeds, fetches, hooks, false) as Promise<Record<string, OnnxValue>>;
  }

  /** Like `run`, with the outputs left on the engine's GPU as GpuTensors the caller disposes. */
  async runToDevice(feeds: Record<string, OnnxValue | GpuTensor>, fetches?: readonly string[]): Promise<Record<string, GpuTensor>> {
    if (!this.runner.deviceIO) throw new InputError(`runToDevice needs a GPU engine; this plan runs on '${this.engine.header.device.backend}'.`);
    return (await this.runOn(feeds, fetches, undefined, true)) as Record<string, GpuTensor>;
  }

  private async runOn(feeds: Record<string, OnnxValue | GpuTensor>, fetches: readonly string[] | undefined, hooks: RunHooks | undefined, deviceOutputs: boolean): Promise<Record<string, OnnxValue | GpuTensor>> {
    const e = this.engine;
    if (e.isDisposed) throw new InputError('the Engine of this context was disposed.');
    const h2d = hooks?.onPhase ? performance.now() : 0;
    const inputs = new Map<string, Value | DeviceRef>();
    if (e.passed.match(feeds)) {
      for (const k of e.passed.names) inputs.set(k, toValue(feeds[k] as Tensor));
    } else this.check(feeds, inputs);
    const out = fetches ? [...fetches] : (e.allOutputs as string[]);
    hooks?.onPhase?.('h2d', h2d, performance.now());
    if (this.disposed) throw new InputError('this ExecutionContext was disposed; create a new one with engine.createContext().');
    this.state ??= this.runner.createContext?.();
    const onLayerTime = hooks?.onLayerTime;
    if (onLayerTime && !this.runner.tracesLayers) {
      const onLayer = hooks?.onLayer;
      hooks = { ...hooks, onLayerTime: undefined, onLayer: (n, o, ms, start) => (onLayer?.(n, o, ms, start), onLayerTime(n, ms)) };
    }
    const r = await this.runner.run(inputs, out, hooks, this.state, { deviceOutputs });
    const d2h = hooks?.onPhase ? performance.now() : 0;
    const result = this.result(out, r);
    hooks?.onPhase?.('d2h', d2h, performance.now());
    return result;
  }

  private result(out: string[], r: Map<string, Value | DeviceRef>): Record<string, OnnxValue | GpuTensor> {
    const result: Record<string, OnnxValue | GpuTensor> = {};
    for (let i = 0; i < out.length; i++) {
      const v = r.get(out[i]) ?? null;
      result[out[i]] = isDeviceRef(v) ? GpuTensor.adopt(v) : fromValue(v);
    }
    return result;
  }

  /** Checks the feeds' names, types and shapes (clear errors), converting them into \`inputs\`. */
  private check(feeds: Record<string, OnnxValue | GpuTensor>, inputs: Map<string, Value | DeviceRef>): void {
    const e = this.engine;
    const deviceIO = !!this.runner.deviceIO;
    for (const [k, v] of Object.entries(feeds)) {
      if (!e.inputNames.includes(k)) throw new InputError(`input '${k}' is not an input of this plan. Inputs: ${e.inputNames.join(', ')}.`);
      if (v instanceof GpuTensor) {
        if (!deviceIO) throw new InputError(`input '${k}' is a GpuTensor, but this plan runs on '${e.header.device.backend}'.`, { hint: 'Copy it to the host first: await t.toTensor().' });
        if (v.disposed) throw new InputError(`input '${k}' is a disposed GpuTensor.`);
        inputs.set(k, v);
      } else inputs.set(k, toValue(v));
    }
    for (const i of e.header.inputs) {
      if (!inputs.has(i.name)) throw new InputError(`input '${i.name}' is missing; the plan needs ${i.dtype}[${i.shape.map((d) => d ?? '?').join(', ')}].`);
      const v = feeds[i.name];
      const type = v instanceof Tensor || v instanceof GpuTensor ? v.type : undefined;
      if (type && !i.dtype.includes('(') && type !== i.dtype) throw new InputError(`input '${i.name}' has type ${type}, but the plan expects ${i.dtype}.`);
    }
    e.checkProfile(inputs);
    e.passed.remember(feeds);
  }
}

/** Peek at a file: is it a Kiln plan? */
export function isPlanFile(file: string): boolean {
  try {
    const fd = fs.openSync(file, 'r');
    const b = new Uint8Array(8);
    fs.readSync(fd, b, 0, 8, 0);
    fs.closeSync(fd);
    return isPlanBytes(b);
  } catch {
    return false;
  }
}

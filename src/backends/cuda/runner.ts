// The CUDA runner: executes a planned graph layer by layer on one stream. Each value lives on the device, on the
// host, or both, and moves only when a consumer needs it where it is not: GPU layers read device copies; layers with
// no CUDA kernel run their reference kernel on the CPU inside the same engine (small shape arithmetic such as
// Shape -> Gather -> Concat stays on the host that way). Kernels are generated per layer and input shapes, compiled
// once (or taken from the plan's cubins), and replayed. Weights and kernels belong to the engine; each execution
// context has its own stream, CUDA graphs and events (a `StreamContext`), so contexts of one engine run at once.
import type { Model, Node, ValueType } from '../../ir/graph.js';
import { nodeLabel } from '../../ir/graph.js';
import type { DType, TypedArray } from '../../ir/dtype.js';
import { allocStorage } from '../../ir/dtype.js';
import { resolveOp, parseAttrs, type KernelContext } from '../../ir/schema.js';
import { TensorData, SequenceValue, type Value } from '../../ir/tensor.js';
import { executeGraph, makeContext, nodeDeps, topoSort } from '../../ops/execute.js';
import { ExecutionError } from '../../ir/errors.js';
import { isDeviceRef, type DeviceRef, type Runner, type RunHooks, type RunIO, type RunnerContext } from '../backend.js';
import type { AllocationRecord, CudaDevice, PinnedBuffer } from './device.js';
import { cu, loadDriver } from './ffi/driver.js';
import { dropWorkspace } from './ffi/cublaslt.js';
import { GPU_OPS, type DeviceTensor, type GpuImpl } from './ops.js';

interface GraphEntry {
  exec: unknown;
  inputs: Map<string, DeviceTensor>;
  outputs: Map<string, DeviceTensor>;
  buffers: number[];
  /** the context arena the captured run allocated from (0: none) */
  arena: number;
  /** page-locked staging for each input and output (by name) */
  pinned: Map<string, PinnedBuffer>;
  /** layer timing (CudaRunner.layerTiming): an event before the first layer and after each one, inside the graph */
  marks?: LayerMarks;
}

interface LayerMarks {
  layers: Node[];
  events: unknown[];
}

/** What one execution context owns: a stream, the CUDA graphs captured on it, its timing events, its run queue. */
class StreamContext implements RunnerContext {
  readonly stream: unknown;
  readonly graphs = new Map<string, GraphEntry>();
  /** shapes whose last eager run had every layer on the GPU: the next run captures them */
  readonly eligible = new Set<string>();
  /** the allocation sequence of each shape's last eager run, from which its capture's arena is planned */
  readonly records = new Map<string, AllocationRecord>();
  /** device time of the last run between its first and last layer (CUDA events), ms */
  lastDeviceMs = 0;
  /** runs of one context share its stream and graph buffers, so they take turns, in order */
  turn: Promise<void> = Promise.resolve();
  private ev?: unknown[];
  released = false;

  constructor(private dev: CudaDevice, private onRelease: (c: StreamContext) => void) {
    this.stream = dev.createStream();
  }

  events(): unknown[] {
    this.ev ??= [0, 1, 2, 3].map(() => { const e = [null]; cu('cuEventCreate', e, 0); return e[0]; });
    return this.ev;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.dev.makeCurrent();
    this.dev.sync(this.stream);
    for (const g of this.graphs.values()) {
      loadDriver().cuGraphExecDestroy(g.exec);
      for (const p of g.buffers) this.dev.release(p);
      this.dev.freeArena(g.arena);
      for (const b of g.pinned.values()) this.dev.freePinned(b);
      for (const e of g.marks?.events ?? []) loadDriver().cuEventDestroy_v2(e);
    }
    this.graphs.clear();
    if (this.ev) for (const e of this.ev) loadDriver().cuEventDestroy_v2(e);
    this.ev = undefined;
    const ws = dropWorkspace(this.stream);
    if (ws) this.dev.release(ws);
    this.dev.settle(this.stream);
    loadDriver().cuStreamDestroy_v2(this.stream);
    this.onRelease(this);
  }
}

/** A captured run's graph and its fixed input and output buffers (see CudaRunner.prepareGraph). */
export interface CapturedRun {
  readonly exec: unknown;
  readonly inputs: ReadonlyMap<string, DeviceTensor>;
  readonly outputs: ReadonlyMap<string, DeviceTensor>;
}

interface Slot {
  host?: Value;
  dev?: DeviceTensor;
}


const bytesOf = (dtype: DType, dims: readonly number[]) => {
  const n = dims.reduce((a, b) => a * b, 1);
  const size: Partial<Record<DType, number>> = { float32: 4, float16: 2, bfloat16: 2, int32: 4, int64: 8, uint8: 1, bool: 1, int8: 1, float8e4m3fn: 1 };
  return n * (size[dtype] ?? 0);
};

export class CudaRunner implements Runner {
  private order: Node[];
  private weights = new Map<string, DeviceTensor>();
  private impls = new Map<string, GpuImpl | null>();
  private contexts = new Set<StreamContext>();
  /** the context of runs made on the runner itself (build-time kernel generation, engine-level runs) */
  private main?: StreamContext;
  /** layers that ran on the CPU in the last run (for inspect --capability and tests) */
  cpuLayers = new Set<string>();
  /** why a layer with a CUDA implementation still ran on the CPU */
  fallbackReasons = new Map<string, string>();

  constructor(private model: Model, readonly dev: CudaDevice) {
    this.order = topoSort(model.graph, () => true);
  }

  /** A new execution context: its own stream, so it runs concurrently with the engine's other contexts. */
  createContext(): StreamContext {
    this.dev.makeCurrent();
    const c = new StreamContext(this.dev, (x) => this.contexts.delete(x));
    this.contexts.add(c);
    return c;
  }

  /** Device time of the last run on the engine's own context (for benchmarks that hold the runner). */
  get lastDeviceMs(): number {
    return this.main?.lastDeviceMs ?? 0;
  }

  private weight(name: string, stream: unknown): DeviceTensor | undefined {
    let w = this.weights.get(name);
    if (w) return w;
    const t = this.model.graph.initializers.get(name);
    if (!t || t.dtype === 'string' || !(t.data instanceof Object)) return undefined;
    const bytes = bytesOf(t.dtype, t.dims);
    if (!bytes && t.size) return undefined;
    const ptr = this.dev.alloc(Math.max(bytes, 1), true);
    // complete before any stream may read it: weights are shared by every context's stream
    this.dev.upload(ptr, t.data as TypedArray, stream);
    this.dev.sync(stream);
    w = { ptr, dtype: t.dtype, dims: [...t.dims], bytes, owned: false };
    this.weights.set(name, w);
    return w;
  }

  private toDevice(slot: Slot, name: string, temps: number[], refs: Map<number, number>, stream: unknown): DeviceTensor | undefined {
    if (slot.dev) return slot.dev;
    const w = this.weight(name, stream);
    if (w) return (slot.dev = w);
    const v = slot.host;
    if (!(v instanceof TensorData) || v.dtype === 'string') return undefined;
    const bytes = bytesOf(v.dtype, v.dims);
    if (!bytes && v.size) return undefined; // a type with no device representation
    const ptr = this.dev.alloc(Math.max(bytes, 1));
    this.dev.upload(ptr, v.data as TypedArray, stream);
    temps.push(ptr);
    refs.set(ptr, 1); // this value holds the buffer; views taken of it add their own references
    slot.dev = { ptr, dtype: v.dtype, dims: [...v.dims], bytes, owned: true };
    return slot.dev;
  }

  private toHost(slot: Slot, stream: unknown): Value {
    if (slot.host !== undefined) return slot.host;
    const d = slot.dev!;
    const data = allocStorage(d.dtype, d.dims.reduce((a, b) => a * b, 1)) as TypedArray;
    this.dev.download(d.ptr, data, stream);
    slot.host = new TensorData(d.dtype, d.dims, data);
    return slot.host;
  }

  private implFor(node: Node, inputs: (Slot | undefined)[], opset: number, attrs: unknown): GpuImpl | null {
    const key = `${node.name}|${node.outputs[0]}|${inputs.map((s) => {
      const t = s?.dev ?? s?.host;
      return t instanceof TensorData || (t && 'ptr' in t) ? `${(t as { dtype: string }).dtype}[${(t as { dims: number[] }).dims.join('x')}]` : '-';
    }).join(',')}`;
    let impl = this.impls.get(key);
    if (impl === undefined) {
      const make = GPU_OPS[node.domain === 'kiln' ? `kiln:${node.opType}` : node.opType];
      impl = null;
      if (make) {
        try {
          impl = make({
            node, opset, attrs, dev: this.dev, tf32: this.tf32,
            inputs: inputs.map((s, i) => {
              const v = s?.dev ?? (s?.host instanceof TensorData ? s.host : undefined);
              return v ? { dtype: v.dtype, dims: [...v.dims], constant: s?.host instanceof TensorData ? s.host : this.model.graph.initializers.get(node.inputs[i]) } : undefined;
            }),
          }) ?? null;
        } catch (e) {
          impl = null; // shapes/dtypes this kernel family does not handle: run the layer on the CPU
          this.fallbackReasons.set(node.name || node.opType, (e as Error).message.split('\n')[0]);
        }
      }
      this.impls.set(key, impl);
    }
    return impl;
  }

  /** Feeds and outputs may be DeviceRefs (GpuTensors): read in place / left on the device. */
  readonly deviceIO = true;

  async run(feeds: Map<string, Value | DeviceRef>, fetches: string[], hooks?: RunHooks, context?: RunnerContext, io?: RunIO): Promise<Map<string, Value | DeviceRef>> {
    const c = (context as StreamContext | undefined) ?? (this.main ??= this.createContext());
    if (c.released) throw new ExecutionError('this execution context was disposed; create a new one.');
    const prev = c.turn;
    let done!: () => void;
    c.turn = new Promise((r) => (done = r));
    await prev;
    try {
      for (const [k, v] of feeds) {
        if (isDeviceRef(v) && v.deviceId !== this.dev.info.ordinal) throw new ExecutionError(`input '${k}' is on GPU ${v.deviceId}, but this engine runs on GPU ${this.dev.info.ordinal}.`);
      }
      return await this.runNow(feeds, fetches, hooks, c, io);
    } finally {
      done();
    }
  }

  /** Resolve once `event` has completed, polling between event-loop turns so Node stays responsive. */
  private async waitFor(event: unknown): Promise<void> {
    const d = loadDriver();
    for (;;) {
      const st = d.cuEventQuery(event);
      if (st === 0) return;
      if (st !== 600) cu('cuEventQuery', event); // 600 = CUDA_ERROR_NOT_READY; anything else is an error
      await new Promise((r) => setImmediate(r));
    }
  }

  /** Outputs as fresh device blocks the caller owns (a device-to-device copy out of the run's own buffers). */
  private keepOnDevice(out: Map<string, Value | DeviceTensor>, stream: unknown): Map<string, DeviceRef> {
    const res = new Map<string, DeviceRef>();
    for (const [k, v] of out) {
      const src = v !== null && 'ptr' in v ? v : undefined;
      if (!src && !(v instanceof TensorData)) throw new ExecutionError(`output '${k}' is not a tensor and cannot be returned on the device.`);
      const dtype = src ? src.dtype : (v as TensorData).dtype, dims = src ? src.dims : (v as TensorData).dims;
      const bytes = bytesOf(dtype, dims);
      const ptr = this.dev.alloc(Math.max(bytes, 1), true);
      if (src) this.dev.copy(ptr, src.ptr, bytes, stream);
      else this.dev.upload(ptr, (v as TensorData).data as TypedArray, stream);
      res.set(k, { kind: 'device', dtype, dims: [...dims], deviceId: this.dev.info.ordinal, ptr, bytes });
    }
    this.dev.sync(stream);
    return res;
  }

  private async runNow(feeds: Map<string, Value | DeviceRef>, fetches: string[], hooks: RunHooks | undefined, c: StreamContext, io?: RunIO): Promise<Map<string, Value | DeviceRef>> {
    this.dev.makeCurrent();
    const stream = c.stream;
    // CUDA graphs: the second run of a shape with every layer on the GPU is captured once, later runs replay it
    const shapeKey = [...feeds].map(([k, v]) => `${k}:${v instanceof TensorData || isDeviceRef(v) ? `${v.dtype}[${v.dims.join('x')}]${isDeviceRef(v) ? '@dev' : ''}` : '?'}`).join('|') + `>${fetches.join(',')}`;
    const graph = c.graphs.get(shapeKey);
    const timingOnly = !!hooks?.onPhase && !hooks.onLayer && !hooks.keepAll;
    if (graph && (!hooks || timingOnly)) return this.replay(graph, feeds, hooks, c, io);
    const capture = (!hooks || timingOnly) && this.useGraphs && c.eligible.has(shapeKey);
    const env = new Map<string, Slot>();
    for (const [k, v] of feeds) if (!isDeviceRef(v)) env.set(k, { host: v });
    for (const [k, v] of this.model.graph.initializers) env.set(k, { host: v });
    const temps: number[] = []; // device buffers this run allocated
    const refs = new Map<number, number>(); // live values per device buffer (views share their base's buffer)
    const lastUse = new Map<string, number>();
    this.order.forEach((n, i) => nodeDeps(n).forEach((x) => lastUse.set(x, i))); // subgraphs' outer reads included
    const keep = new Set([...fetches, ...this.model.graph.outputs.map((o) => o.name)]);
    this.cpuLayers.clear();
    // inputs go up first, so the timed region (events on the stream) is the inference itself
    const ev = c.events();
    const hostStart = performance.now();
    cu('cuEventRecord', ev[2], stream);
    // an eager run that may be captured next records its allocations; the capture then runs in a planned arena
    const record = !capture && this.useGraphs && (!hooks || timingOnly);
    if (record) this.dev.startRecording();
    const planned = capture ? c.records.get(shapeKey) : undefined;
    const arena = planned ? this.dev.beginArena(planned) : 0;
    for (const [k, v] of feeds) {
      if (!this.order.some((n) => n.inputs.includes(k))) continue;
      if (v instanceof TensorData) this.toDevice(env.get(k)!, k, temps, refs, stream);
      else if (isDeviceRef(v)) {
        // the run reads its own copy (a captured graph's input buffer must not change between replays)
        const ptr = this.dev.alloc(Math.max(v.bytes, 1));
        this.dev.copy(ptr, v.ptr, v.bytes, stream);
        temps.push(ptr);
        refs.set(ptr, 1);
        env.set(k, { dev: { ptr, dtype: v.dtype, dims: [...v.dims], bytes: v.bytes, owned: true } });
      }
    }
    const inputPtrs = new Map([...feeds.keys()].filter((k) => env.get(k)?.dev).map((k) => [k, env.get(k)!.dev!]));
    if (capture) cu('cuStreamBeginCapture_v2', stream, 2 /* relaxed: allocation is allowed while capturing */);
    else cu('cuEventRecord', ev[0], stream);
    let captured = false;
    const marks: LayerMarks | undefined = capture && this.layerTiming ? { layers: [], events: [] } : undefined;
    const mark = (node?: Node) => {
      const e = [null];
      cu('cuEventCreate', e, 0);
      marks!.events.push(e[0]);
      if (node) marks!.layers.push(node);
      cu('cuEventRecordWithFlags', e[0], stream, 1 /* CU_EVENT_RECORD_EXTERNAL: an event node of the graph */);
    };
    if (marks) mark();
    this.dev.active = stream;
    try {
      for (let li = 0; li < this.order.length; li++) {
        const node = this.order[li];
        const { def, opset } = resolveOp(node, this.model.opsets);
        const attrs = parseAttrs(def, node);
        const slots = node.inputs.map((x) => (x ? env.get(x) : undefined));
        node.inputs.forEach((x, k) => {
          if (x && !slots[k]) throw new ExecutionError(`${nodeLabel(node)}: input '${x}' has no value.`);
        });
        const t0 = hooks?.onLayer ? performance.now() : 0;
        let impl = this.implFor(node, slots, opset, attrs);
        let outs: Slot[];
        const ins = impl ? slots.map((s, k) => (s ? this.toDevice(s, node.inputs[k], temps, refs, stream) : undefined)) : [];
        if (impl && ins.some((d, k) => node.inputs[k] && !d)) impl = null; // an input with no device form: run on the CPU
        if (impl) {
          const produced = impl.run(ins, stream);
          for (const d of produced) if (d.owned) temps.push(d.ptr);
          outs = produced.map((d) => ({ dev: d }));
          if (marks) mark(node);
        } else {
          if (capture) throw new ExecutionError(`${nodeLabel(node)} has no CUDA kernel and cannot be captured into a CUDA graph.`);
          this.cpuLayers.add(node.name || node.opType);
          const hostIns = slots.map((s) => (s ? this.toHost(s, stream) : undefined));
          // subgraphs (If/Loop/Scan bodies) run on the reference kernels, reading outer values from this run
          const ctx = makeContext(node, opset, attrs, hostIns, (graph, subInputs) => {
            const subFeeds = new Map<string, Value>();
            graph.inputs.forEach((inp, k) => { if (k < subInputs.length) subFeeds.set(inp.name, subInputs[k]); });
            const res = executeGraph(graph, subFeeds, { opsets: this.model.opsets, outer: (name) => (env.has(name) ? this.toHost(env.get(name)!, stream) : undefined) });
            return graph.outputs.map((o) => res.get(o.name) as Value);
          });
          const produced = def.run(ctx as KernelContext<never>);
          outs = produced.map((v) => ({ host: v === undefined ? null : v }));
        }
        node.outputs.forEach((o, k) => {
          if (!o) return;
          const s = outs[k] ?? { host: null };
          env.set(o, s);
          if (s.dev) refs.set(s.dev.ptr, (refs.get(s.dev.ptr) ?? 0) + 1);
        });
        if (hooks?.onLayer) {
          this.dev.sync(stream);
          hooks.onLayer(node, hooks.keepAll ? node.outputs.map((o) => (o ? this.toHost(env.get(o)!, stream) : null)) : [], performance.now() - t0);
        }
        // free device buffers whose last reader just ran
        if (!hooks?.keepAll) {
          for (const x of new Set(nodeDeps(node))) {
            if (!x || lastUse.get(x) !== li || keep.has(x)) continue;
            const s = env.get(x);
            if (!s?.dev || this.model.graph.initializers.has(x)) continue;
            const left = (refs.get(s.dev.ptr) ?? 1) - 1;
            refs.set(s.dev.ptr, left);
            const k = temps.indexOf(s.dev.ptr);
            if (left <= 0 && k >= 0) {
              this.dev.release(s.dev.ptr); // reuse is ordered on this one stream: no sync needed
              temps.splice(k, 1);
            }
            s.dev = undefined;
          }
        }
      }
      if (capture) {
        const g = [null];
        cu('cuStreamEndCapture', stream, g);
        captured = true;
        const exec = [null];
        cu('cuGraphInstantiateWithFlags', exec, g[0], 0);
        cu('cuGraphDestroy', g[0]);
        const outputs = new Map(fetches.map((f) => [f, env.get(f)?.dev]).filter((e): e is [string, DeviceTensor] => !!e[1]));
        // intermediates freed inside the capture are reused by the graph on every replay: the graph owns them too
        const pinned = new Map([...inputPtrs, ...outputs].map(([k, d]) => [k, this.dev.allocPinned(d.bytes)]));
        const entry = { exec: exec[0], inputs: inputPtrs, outputs, buffers: [...temps, ...this.dev.takePending(stream)], arena, pinned, marks };
        temps.length = 0; // the graph owns them now
        c.graphs.set(shapeKey, entry);
        return this.replay(entry, feeds, hooks, c, io);
      }
      cu('cuEventRecord', ev[1], stream);
      this.dev.sync(stream);
      this.reportDeviceTimes(c, hostStart, hooks);
      if ((!hooks || timingOnly) && this.cpuLayers.size === 0 && fetches.every((f) => env.get(f)?.dev)) {
        c.eligible.add(shapeKey);
        const rec = this.dev.stopRecording();
        if (rec) c.records.set(shapeKey, rec);
      }
      const out = new Map<string, Value | DeviceTensor>();
      const names = hooks?.keepAll ? [...env.keys()] : fetches;
      const d2h = performance.now();
      for (const f of names) {
        const s = env.get(f);
        if (!s) continue;
        out.set(f, s.host instanceof SequenceValue || s.host === null ? s.host : io?.deviceOutputs && s.dev ? s.dev : this.toHost(s, stream));
      }
      // copied out before this run's buffers go back to the pool
      const res = io?.deviceOutputs ? this.keepOnDevice(out, stream) : (out as Map<string, Value>);
      hooks?.onPhase?.('d2h', d2h, performance.now());
      return res;
    } catch (e) {
      if (capture && !captured) {
        // leave capture mode cleanly, then run this shape without graphs from now on
        const g = [null];
        loadDriver().cuStreamEndCapture(stream, g);
        if (g[0]) loadDriver().cuGraphDestroy(g[0]);
        c.eligible.delete(shapeKey);
        loadDriver().cuStreamSynchronize(stream); // the input uploads before the capture may still be in flight
        this.dev.freeArena(arena);
      }
      throw e;
    } finally {
      if (!(capture && !captured)) this.dev.sync(stream);
      for (const p of temps) this.dev.release(p);
      this.dev.active = undefined;
      this.dev.stopRecording();
      this.dev.endArena();
      this.dev.settle(stream);
    }
  }

  /**
   * After a completed run, from its events (2: before the uploads, 0: before the first layer, 1: after the last):
   * device compute time, and the H2D and compute phases mapped onto the host clock from `hostStart`.
   */
  private reportDeviceTimes(c: StreamContext, hostStart: number, hooks?: RunHooks): void {
    const ev = c.events();
    const ms = [0], up = [0];
    cu('cuEventElapsedTime', ms, ev[0], ev[1]);
    cu('cuEventElapsedTime', up, ev[2], ev[0]);
    c.lastDeviceMs = ms[0];
    hooks?.onPhase?.('h2d', hostStart, hostStart + up[0]);
    hooks?.onPhase?.('compute', hostStart + up[0], hostStart + up[0] + ms[0]);
  }

  /** Replay a captured run: inputs into the graph's input buffers, one launch, outputs back. */
  private async replay(g: GraphEntry, feeds: Map<string, Value | DeviceRef>, hooks: RunHooks | undefined, c: StreamContext, io?: RunIO): Promise<Map<string, Value | DeviceRef>> {
    this.dev.makeCurrent();
    const stream = c.stream;
    const ev = c.events();
    const hostStart = performance.now();
    cu('cuEventRecord', ev[2], stream);
    // through page-locked staging: inputs go up, the graph runs and outputs come down without blocking the host
    for (const [k, d] of g.inputs) {
      const v = feeds.get(k), pin = g.pinned.get(k)!;
      if (isDeviceRef(v)) this.dev.copy(d.ptr, v.ptr, v.bytes, stream);
      if (!(v instanceof TensorData)) continue;
      const src = v.data as TypedArray;
      pin.view.set(new Uint8Array(src.buffer, src.byteOffset, Math.min(src.byteLength, pin.bytes)));
      this.dev.uploadPinned(d.ptr, pin, stream);
    }
    cu('cuEventRecord', ev[0], stream);
    cu('cuGraphLaunch', g.exec, stream);
    cu('cuEventRecord', ev[1], stream);
    if (!io?.deviceOutputs) for (const [k, d] of g.outputs) this.dev.downloadPinned(g.pinned.get(k)!, d.ptr, stream);
    cu('cuEventRecord', ev[3], stream);
    await this.waitFor(ev[3]); // the event loop keeps turning while the GPU works
    this.reportDeviceTimes(c, hostStart, hooks);
    if (g.marks) this.lastLayerTimes = g.marks.layers.map((node, i) => {
      const ms = [0];
      cu('cuEventElapsedTime', ms, g.marks!.events[i], g.marks!.events[i + 1]);
      return { node, ms: ms[0] };
    });
    const d2h = performance.now();
    const out = new Map<string, Value>();
    if (io?.deviceOutputs) return this.keepOnDevice(g.outputs, stream); // the graph's buffers stay the graph's
    for (const [k, d] of g.outputs) {
      const data = allocStorage(d.dtype, d.dims.reduce((a, b) => a * b, 1)) as TypedArray;
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength).set(g.pinned.get(k)!.view.subarray(0, data.byteLength));
      out.set(k, new TensorData(d.dtype, d.dims, data));
    }
    hooks?.onPhase?.('d2h', d2h, performance.now());
    return out;
  }

  /**
   * The CUDA graph of a run with these feeds' shapes (eager run, then capture, as `run` does on its own), for callers
   * that chain several engines' graphs on one stream of theirs with no host round trip (the LLM runtime's step):
   * they write the graph's input buffers, `launchGraph` it, and read its output buffers in place.
   */
  async prepareGraph(feeds: Map<string, Value>, fetches: string[], context: RunnerContext): Promise<CapturedRun> {
    const c = context as StreamContext;
    const key = [...feeds].map(([k, v]) => `${k}:${v instanceof TensorData ? `${v.dtype}[${v.dims.join('x')}]` : '?'}`).join('|') + `>${fetches.join(',')}`;
    for (let i = 0; i < 2 && !c.graphs.has(key); i++) await this.run(feeds, fetches, undefined, c);
    const g = c.graphs.get(key);
    if (!g) throw new ExecutionError(`no CUDA graph for this run (layers on the CPU: ${[...this.cpuLayers].join(', ') || 'none'}; graphs ${this.useGraphs ? 'on' : 'off'}).`);
    return { exec: g.exec, inputs: g.inputs, outputs: g.outputs };
  }

  /** Launch a prepared graph on `stream` (asynchronous; ordered after what the caller queued there). */
  launchGraph(g: CapturedRun, stream: unknown): void {
    cu('cuGraphLaunch', g.exec, stream);
  }

  /** TF32 tensor cores for fp32 GEMMs (plans built with --tf32). */
  tf32 = false;
  /** Capture whole runs into CUDA graphs (on by default; --no-cuda-graph turns it off). */
  useGraphs = true;
  /**
   * Profiling (bench/quant/gpu-layer-times.ts): graphs captured while this is set hold an event after each layer, so
   * a replay gives every layer's device time with no host in the loop (each event node adds a little time itself).
   */
  layerTiming = false;
  /** Device time of each layer in the last replay of a graph captured with `layerTiming` (layers in run order). */
  lastLayerTimes: { node: Node; ms: number }[] = [];

  /** Device memory held by weights (for reports). */
  weightBytes(): number {
    let n = 0;
    for (const w of this.weights.values()) n += w.bytes;
    return n;
  }

  release(): void {
    for (const c of [...this.contexts]) c.release();
    this.main = undefined;
    for (const w of this.weights.values()) this.dev.release(w.ptr);
    for (const impl of this.impls.values()) impl?.destroy?.();
    this.weights.clear();
    this.impls.clear();
  }
}

export type { ValueType };

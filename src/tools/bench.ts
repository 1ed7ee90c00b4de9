// `kiln bench`: trtexec-style benchmarking of an engine. Each inference is timed through the backend contract
// (RunHooks.onPhase): H2D = the context's input preparation plus whatever the backend reports as input transfer,
// compute = what the backend reports as compute, D2H = output transfer plus conversion back to Tensors. The CPU
// backend computes on the calling thread, so there its enqueue returns only when compute is done.
import { loadOnnx } from '../onnx/reader.js';
import { build, type BuildOptions, type Plan } from '../build/builder.js';
import { Engine, ExecutionContext, isPlanFile } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import type { ValueMetadata } from '../runtime/session.js';
import type { RunHooks, RunPhase } from '../backends/backend.js';
import { InputError } from '../ir/errors.js';
import { parseDevice } from '../backends/index.js';
import type { DType } from '../ir/dtype.js';
import { makeInputs, randomTensor } from './inputs.js';

export interface EngineSource {
  /** ONNX model to build first. */
  onnx?: string;
  /** Plan file to load. */
  plan?: string;
  /** Build options (for onnx). */
  build?: BuildOptions;
  /** Where to save the built plan. */
  saveEngine?: string;
  /** CPU intra-op threads. */
  threads?: number;
  /** CUDA graphs (cuda backend; default on). */
  cudaGraph?: boolean;
  /** GPU index to run on (default: the index in build.device, e.g. cuda:1, else 0). */
  deviceId?: number;
}

/** Build (from ONNX) or load (a plan) the engine to benchmark. */
export async function loadBenchEngine(src: EngineSource): Promise<{ engine: Engine; plan?: Plan; source: string }> {
  if (!!src.onnx === !!src.plan) throw new InputError('give exactly one model: --onnx MODEL.onnx or --load-engine MODEL.plan.');
  const deviceId = src.deviceId ?? parseDevice(src.build?.device ?? 'cpu').deviceId;
  if (src.plan) {
    if (!isPlanFile(src.plan)) throw new InputError(`'${src.plan}' is not a Kiln plan.`, { hint: 'Build one with `kiln build --onnx MODEL.onnx`, or pass the ONNX model with --onnx.' });
    return { engine: await Engine.load(src.plan, { intraOpNumThreads: src.threads, cudaGraph: src.cudaGraph, deviceId }), source: src.plan };
  }
  const plan = await build(await loadOnnx(src.onnx!), { ...src.build, device: `${parseDevice(src.build?.device ?? 'cpu').name}:${deviceId}` });
  if (src.saveEngine) await plan.save(src.saveEngine);
  return { engine: await Engine.load(plan, { intraOpNumThreads: src.threads, cudaGraph: src.cudaGraph, deviceId }), plan, source: src.onnx! };
}

/** The engine's inputs, with dynamic dims at the shape profile's opt (what trtexec runs without --shapes). */
export function engineInputs(engine: Engine): ValueMetadata[] {
  const prof = engine.profile;
  return engine.header.inputs.map((i) => ({
    name: i.name, isTensor: !i.dtype.includes('('), type: i.dtype,
    shape: i.shape.map((d, k) => (typeof d === 'number' ? d : prof[i.name]?.opt[k] ?? -1)),
  }));
}

export interface BenchInputOptions {
  /** `name:file.npy` (trtexec spelling; `name=file.npy` works too) or one .npz holding all inputs. */
  loadInputs?: string[];
  /** Zeros instead of seeded random values for inputs not loaded from files. */
  zeros?: boolean;
  seed?: number;
  /** `name:1x3x224x224,...` */
  shapes?: string;
}

/** Inputs for a benchmark: loaded from files, else seeded random (or zeros). */
export function benchInputs(inputs: ValueMetadata[], o: BenchInputOptions = {}): Record<string, Tensor> {
  const files = (o.loadInputs ?? []).flatMap((s) => s.split(',')).filter(Boolean).map((f) => {
    if (f.includes('=') || f.endsWith('.npz')) return f;
    const i = f.indexOf(':');
    return i > 0 && inputs.some((m) => m.name === f.slice(0, i)) ? `${f.slice(0, i)}=${f.slice(i + 1)}` : `${inputs[0]?.name ?? 'input'}=${f}`;
  });
  const feeds = makeInputs(inputs, { files, random: true, seed: o.seed ?? 1, shapes: o.shapes });
  if (!o.zeros) return feeds;
  const fromFiles = new Set(Object.keys(makeInputs([], { files })));
  for (const [name, t] of Object.entries(feeds)) {
    if (!fromFiles.has(name)) feeds[name] = randomTensor(t.type as DType, [...t.dims], () => 0, [0, 0]);
  }
  return feeds;
}

/** One inference's timestamps, in ms (absolute performance.now() while running; relative in results). */
export interface IterationTimes {
  startEnqMs: number;
  endEnqMs: number;
  startH2dMs: number;
  endH2dMs: number;
  startComputeMs: number;
  endComputeMs: number;
  startD2hMs: number;
  endD2hMs: number;
  h2dMs: number;
  computeMs: number;
  d2hMs: number;
  latencyMs: number;
}

/** Run one inference on ctx and time its phases as the backend reports them. */
export async function timedRun(ctx: ExecutionContext, feeds: Record<string, Tensor>, extra: RunHooks = {}, dataTransfers = true): Promise<IterationTimes> {
  const marks = new Map<RunPhase, [number, number]>();
  const hooks: RunHooks = {
    ...extra,
    onPhase(p, s, e) {
      const m = marks.get(p);
      marks.set(p, m ? [Math.min(m[0], s), Math.max(m[1], e)] : [s, e]);
      extra.onPhase?.(p, s, e);
    },
  };
  const t0 = performance.now();
  const pending = ctx.run(feeds, undefined, hooks);
  const t1 = performance.now();
  await pending;
  const t2 = performance.now();
  // a backend that reports nothing is timed as one compute span
  const c = marks.get('compute') ?? [t0, t2];
  const h = marks.get('h2d') ?? [t0, c[0]];
  const d = marks.get('d2h') ?? [c[1], t2];
  const latency = dataTransfers ? d[1] - h[0] : c[1] - c[0];
  return {
    startEnqMs: t0, endEnqMs: t1, startH2dMs: h[0], endH2dMs: h[1], startComputeMs: c[0], endComputeMs: c[1], startD2hMs: d[0], endD2hMs: d[1],
    h2dMs: h[1] - h[0], computeMs: c[1] - c[0], d2hMs: d[1] - d[0], latencyMs: latency,
  };
}

export interface Stats {
  min: number;
  max: number;
  mean: number;
  median: number;
  /** percentile (e.g. '99') -> value (nearest rank) */
  percentiles: Record<string, number>;
  stdDev: number;
  /** coefficient of variation, stdDev / mean */
  cov: number;
}

export function stats(xs: number[], percentiles: number[] = [90, 95, 99]): Stats {
  if (!xs.length) throw new InputError('no measurements to summarize.');
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  const mean = s.reduce((a, b) => a + b, 0) / n;
  const stdDev = Math.sqrt(s.reduce((a, x) => a + (x - mean) ** 2, 0) / n);
  const median = n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  const pct = Object.fromEntries(percentiles.map((p) => [String(p), s[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]]));
  return { min: s[0], max: s[n - 1], mean, median, percentiles: pct, stdDev, cov: mean > 0 ? stdDev / mean : 0 };
}

export interface BenchOptions {
  /** Warm-up time before timing, ms (default 200). */
  warmUpMs?: number;
  /** Run at least this long, s (default 3). */
  durationS?: number;
  /** Run at least this many inferences (default 10). */
  iterations?: number;
  /** Concurrent execution contexts of the engine (default 1). */
  streams?: number;
  /** Count input/output transfers in the latency (default true). */
  dataTransfers?: boolean;
  /** Percentiles to report (default 90, 95, 99). */
  percentiles?: number[];
  /** Accepted for every backend, meaningful where the backend has them (CUDA). */
  cudaGraph?: boolean;
  spinWait?: boolean;
  threads?: number;
  /** Called as the run goes: phase, elapsed ms, planned ms, queries so far. */
  onProgress?: (phase: 'warm-up' | 'timing', elapsedMs: number, totalMs: number, queries: number) => void;
}

export interface BenchSummary {
  backend: string;
  device: string;
  /** leading dim of the first input */
  batch: number;
  streams: number;
  /** cudaGraph undefined: the backend's default */
  options: { warmUpMs: number; durationS: number; iterations: number; dataTransfers: boolean; percentiles: number[]; cudaGraph?: boolean; spinWait: boolean; threads?: number };
  warmUp: { queries: number; ms: number };
  queries: number;
  throughput: { qps: number; itemsPerS: number };
  latency: Stats;
  enqueue: Stats;
  /** absent with dataTransfers: false */
  h2d?: Stats;
  compute: Stats;
  d2h?: Stats;
  totalHostWalltimeS: number;
  totalComputeTimeS: number;
  /** The CPU backend computes inside enqueue (no asynchronous launch). */
  synchronousEnqueue: boolean;
  warnings: string[];
  notes: string[];
}

export interface BenchResult {
  summary: BenchSummary;
  /** every timed inference, ms relative to the start of timing (trtexec --exportTimes) */
  times: IterationTimes[];
}

const yieldToLoop = () => new Promise<void>((r) => setImmediate(r));

/** Run inferences on every context until `until` (ms) has passed and at least `min` ran; returns their times. */
async function drive(ctxs: ExecutionContext[], feeds: Record<string, Tensor>, untilMs: number, min: number, dataTransfers: boolean,
  onRun: (count: number) => void): Promise<IterationTimes[]> {
  const times: IterationTimes[] = [];
  let started = 0;
  let lastYield = performance.now();
  await Promise.all(ctxs.map(async (ctx) => {
    while (performance.now() < untilMs || started < min) {
      started++;
      times.push(await timedRun(ctx, feeds, {}, dataTransfers));
      onRun(times.length);
      // inferences run back to back on microtasks; let timers (progress bar, signals) run now and then
      if (performance.now() - lastYield > 100) {
        await yieldToLoop();
        lastYield = performance.now();
      }
    }
  }));
  return times;
}

/** Benchmark an engine on fixed inputs: warm-up, then timed inferences on `streams` contexts. */
export async function bench(engine: Engine, feeds: Record<string, Tensor>, o: BenchOptions = {}): Promise<BenchResult> {
  const opts = {
    warmUpMs: o.warmUpMs ?? 200, durationS: o.durationS ?? 3, iterations: o.iterations ?? 10, streams: o.streams ?? 1,
    dataTransfers: o.dataTransfers ?? true, percentiles: o.percentiles ?? [90, 95, 99],
  };
  for (const [k, v] of Object.entries({ warmUpMs: opts.warmUpMs, durationS: opts.durationS, iterations: opts.iterations })) {
    if (!(v >= 0) || !Number.isFinite(v)) throw new InputError(`bench: ${k} must be a non-negative number, got ${v}.`);
  }
  if (!Number.isSafeInteger(opts.streams) || opts.streams < 1) throw new InputError(`bench: streams must be a positive integer, got ${opts.streams}.`);
  if (opts.percentiles.some((p) => !(p >= 0 && p <= 100))) throw new InputError(`bench: percentiles must lie in [0, 100], got ${opts.percentiles.join(', ')}.`);
  const ctxs = Array.from({ length: opts.streams }, () => engine.createContext());

  const w0 = performance.now();
  const warm = opts.warmUpMs > 0 ? await drive(ctxs, feeds, w0 + opts.warmUpMs, 0, opts.dataTransfers, (n) => o.onProgress?.('warm-up', performance.now() - w0, opts.warmUpMs, n)) : [];
  const warmMs = performance.now() - w0;

  const t0 = performance.now();
  const durMs = opts.durationS * 1000;
  const raw = await drive(ctxs, feeds, t0 + durMs, Math.max(1, opts.iterations), opts.dataTransfers, (n) => o.onProgress?.('timing', performance.now() - t0, durMs, n));
  const wallMs = performance.now() - t0;

  const times = raw.map((t) => ({
    ...t, startEnqMs: t.startEnqMs - t0, endEnqMs: t.endEnqMs - t0, startH2dMs: t.startH2dMs - t0, endH2dMs: t.endH2dMs - t0,
    startComputeMs: t.startComputeMs - t0, endComputeMs: t.endComputeMs - t0, startD2hMs: t.startD2hMs - t0, endD2hMs: t.endD2hMs - t0,
  }));
  const first = engine.inputNames.map((n) => feeds[n]).find((t) => t && t.dims.length);
  const batch = first?.dims[0] ?? 1;
  const summary = summarize(engine, times, { ...opts, cudaGraph: o.cudaGraph, spinWait: o.spinWait ?? false, threads: o.threads }, batch, wallMs, { queries: warm.length, ms: warmMs });
  return { summary, times };
}

function summarize(engine: Engine, times: IterationTimes[], options: BenchSummary['options'] & { streams: number }, batch: number, wallMs: number,
  warmUp: BenchSummary['warmUp']): BenchSummary {
  const { streams, ...opts } = options;
  const pick = (f: (t: IterationTimes) => number) => stats(times.map(f), opts.percentiles);
  const compute = pick((t) => t.computeMs);
  const qps = times.length / (wallMs / 1000);
  const s: BenchSummary = {
    backend: engine.header.device.backend, device: engine.header.device.name, batch, streams, options: opts, warmUp,
    queries: times.length, throughput: { qps, itemsPerS: qps * batch },
    latency: pick((t) => t.latencyMs), enqueue: pick((t) => t.endEnqMs - t.startEnqMs),
    ...(opts.dataTransfers ? { h2d: pick((t) => t.h2dMs) } : {}),
    compute,
    ...(opts.dataTransfers ? { d2h: pick((t) => t.d2hMs) } : {}),
    totalHostWalltimeS: wallMs / 1000,
    totalComputeTimeS: times.reduce((a, t) => a + t.computeMs, 0) / 1000,
    synchronousEnqueue: times.every((t) => t.endEnqMs >= t.endComputeMs),
    warnings: [], notes: [],
  };
  s.warnings = benchWarnings(s);
  s.notes = benchNotes(s);
  return s;
}

const computeName = (backend: string) => (backend === 'cuda' ? 'GPU Compute Time' : 'Device Compute Time');

/** trtexec's bottleneck and stability warnings, adapted to what the backend can tell. */
export function benchWarnings(s: BenchSummary): string[] {
  const w: string[] = [];
  const c = s.compute.median;
  if (s.backend === 'cuda' && !s.synchronousEnqueue && s.enqueue.median > 0.8 * c) {
    w.push(`* Throughput may be bound by Enqueue Time rather than ${computeName(s.backend)} and the device may be under-utilized.`,
      '  If not already in use, CUDA graphs (the default; see --no-cuda-graph) may increase the throughput.');
  }
  if (s.h2d && s.h2d.median >= c) {
    w.push(`* Throughput may be bound by host-to-device transfers for the inputs rather than ${computeName(s.backend)}.`,
      '  Add --no-data-transfers to leave transfers out of the timing.');
  }
  if (s.d2h && s.d2h.median >= c) {
    w.push(`* Throughput may be bound by device-to-host transfers for the outputs rather than ${computeName(s.backend)}.`,
      '  Add --no-data-transfers to leave transfers out of the timing.');
  }
  if (s.compute.cov > 0.025) {
    const hint = s.backend === 'cpu' ? 'stopping other load, pinning the process to cores (taskset) or a longer --warm-up/--duration may improve the stability.'
      : 'locking the GPU clock frequency or adding --use-spin-wait may improve the stability.';
    w.push(`* ${computeName(s.backend)} is unstable, with coefficient of variance = ${(s.compute.cov * 100).toFixed(3)}%: results may be unstable.`, `  If not already in use, ${hint}`);
  }
  if (s.streams > 1 && s.synchronousEnqueue) {
    w.push(`* ${s.streams} streams share one thread on the ${s.backend} backend: their inferences take turns, so Latency includes waiting for other streams.`,
      '  Compare Throughput, not Latency, across stream counts.');
  }
  return w;
}

function benchNotes(s: BenchSummary): string[] {
  const n: string[] = [];
  if (s.backend === 'cpu') {
    if (s.h2d) n.push('H2D/D2H Latency on the cpu backend: checking and converting the input Tensors to engine values, and the engine\'s outputs back to Tensors (buffers are shared, not copied).');
    else n.push('--no-data-transfers: input/output conversion still happens on the cpu backend, but is left out of Latency.');
    if (s.synchronousEnqueue) n.push('Enqueue Time includes Device Compute Time: the cpu backend computes on the calling thread, so enqueue returns when compute is done.');
    if (s.options.cudaGraph || s.options.spinWait) n.push('CUDA graphs and spin-wait apply to the cuda backend only; they change nothing here.');
  } else if (s.backend === 'cuda') {
    n.push('Device Compute Time: CUDA events around the inference on the context\'s stream (a CUDA graph replay unless --no-cuda-graph); H2D/D2H: input uploads (events) and output downloads (host clock), pageable memory.');
  }
  return n;
}

export interface DeviceBenchResult {
  /** one summary per device, in the order asked */
  perDevice: { deviceId: number; summary: BenchSummary }[];
  /** sums over devices (the timing windows run at the same time) */
  aggregate: { qps: number; itemsPerS: number };
}

/**
 * `kiln bench --devices 0,1`: the same plan loaded once per GPU, each benchmarked with its own contexts, all at once
 * (runs wait on their GPU without blocking the event loop, so one process keeps every device busy).
 */
export async function benchDevices(plan: string | Plan, deviceIds: number[], feeds: Record<string, Tensor>, o: BenchOptions = {}): Promise<DeviceBenchResult> {
  if (!deviceIds.length) throw new InputError('bench --devices: give at least one device index, e.g. --devices 0,1.');
  const engines: Engine[] = [];
  try {
    for (const d of deviceIds) engines.push(await Engine.load(plan, { intraOpNumThreads: o.threads, cudaGraph: o.cudaGraph, deviceId: d }));
    const results = await Promise.all(engines.map((e) => bench(e, feeds, o)));
    const perDevice = results.map((r, i) => ({ deviceId: deviceIds[i], summary: r.summary }));
    return {
      perDevice,
      aggregate: {
        qps: perDevice.reduce((a, p) => a + p.summary.throughput.qps, 0),
        itemsPerS: perDevice.reduce((a, p) => a + p.summary.throughput.itemsPerS, 0),
      },
    };
  } finally {
    for (const e of engines) e.dispose();
  }
}

/** `--devices 0,1` → [0, 1] */
export function parseDeviceList(spec: string): number[] {
  const ids = spec.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (!ids.length || ids.some((n) => !Number.isSafeInteger(n) || n < 0)) throw new InputError(`--devices: expected GPU indices separated by commas (e.g. 0,1), got '${spec}'.`);
  if (new Set(ids).size !== ids.length) throw new InputError(`--devices: '${spec}' names a device twice; use --streams for several contexts on one device.`);
  return ids;
}

// Model repository: DIR/<model>/{config.json|config.pbtxt} and DIR/<model>/<version>/{model.plan|model.onnx}.
// Engines are built on load; a model that fails to load is kept with its error and does not stop the others.
import fs from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { Engine, Tensor, build, loadOnnx, type TensorType } from '../index.js';
import { Batcher, ServeError, type BatchResult, type SubmitOptions } from './batcher.js';
import { buckets } from '../runtime/buckets.js';
import { inThreadInstance, modelInstance, workerInstance, type Instance } from './instances.js';
import { configTypeFromKiln, parseConfigText, selectVersions, type ModelConfig } from './config.js';
import { deviceLabel, nvidiaSmiProvider, placeInstances, type DeviceProvider, type Placement } from './devices.js';
import { runEnsemble, validateEnsemble } from './ensemble.js';
import { modelBackend } from './model.js';
import type { ServeTensor } from './model.js';
import { emptyStats, type Metrics, type VersionStats } from './metrics.js';
import { llmModelDir } from './llm.js';

export type ModelState = 'READY' | 'LOADING' | 'UNLOADING' | 'UNAVAILABLE';

export interface LoadedVersion {
  version: number;
  engines: Engine[];
  instances: Instance[];
  /** Where each instance runs ('cpu', 'gpu0', ...), in instance order. */
  devices: string[];
  /** Absent for ensembles, whose steps go through their own models' batchers. */
  batcher?: Batcher;
  stats: VersionStats;
  run(feeds: Record<string, ServeTensor>, outputs: string[], batch: number, opts: SubmitOptions): Promise<BatchResult>;
  pending(): number;
  close?(): Promise<void>;
}

export interface ModelEntry {
  name: string;
  state: ModelState;
  reason: string;
  config?: ModelConfig;
  versions: Map<number, LoadedVersion>;
  signature: string;
}

export interface RepositoryOptions {
  device?: string;
  maxQueueSize?: number;
  /** Where KIND_CPU instances run: true = each on its own worker thread, false = execution contexts on the server's
   *  thread; default (undefined): on the server's thread when every compute layer of the plan is native (see
   *  `offLoopEngine`), else on workers. */
  workers?: boolean;
  /** GPUs for KIND_GPU / KIND_AUTO instance groups (default: nvidia-smi's list). */
  devices?: DeviceProvider;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

export class ModelRepository {
  readonly root: string;
  private models = new Map<string, ModelEntry>();
  private loading = new Map<string, Promise<void>>();

  readonly devices: DeviceProvider;

  constructor(root: string, private metrics: Metrics, private opts: RepositoryOptions = {}) {
    this.root = fs.realpathSync(root);
    this.devices = opts.devices ?? nvidiaSmiProvider();
  }

  /** The model folder, refusing names that could leave the repository. */
  modelDir(name: string): string {
    if (!NAME_RE.test(name) || name.includes('..')) throw new ServeError(`invalid model name '${name}': use letters, digits, '_', '-' and '.'.`, 400);
    const dir = path.join(this.root, name);
    let real: string;
    try {
      real = fs.realpathSync(dir);
    } catch {
      throw new ServeError(`model '${name}' is not in the repository ${this.root}.`, 404);
    }
    if (!real.startsWith(this.root + path.sep)) throw new ServeError(`model '${name}' resolves outside the repository; refused.`, 400);
    return real;
  }

  /** Model folders present on disk. */
  scan(): string[] {
    return fs
      .readdirSync(this.root, { withFileTypes: true })
      .filter((d) => (d.isDirectory() || d.isSymbolicLink()) && NAME_RE.test(d.name) && !d.name.startsWith('.'))
      .filter((d) => llmModelDir(path.join(this.root, d.name)) === undefined) // LLM folders are served by llm.ts
      .map((d) => d.name)
      .sort();
  }

  entries(): ModelEntry[] {
    return [...this.models.values()];
  }

  entry(name: string): ModelEntry | undefined {
    return this.models.get(name);
  }

  /** A ready version (the highest when none is named), or a 4xx ServeError saying why not. */
  get(name: string, version?: string): { model: ModelEntry; v: LoadedVersion } {
    if (!NAME_RE.test(name) || name.includes('..')) throw new ServeError(`invalid model name '${name}': use letters, digits, '_', '-' and '.'.`, 400);
    const m = this.models.get(name);
    if (!m) throw new ServeError(`unknown model '${name}'. Models: ${[...this.models.keys()].join(', ') || '(none loaded)'}.`, 404);
    if (m.state !== 'READY') throw new ServeError(`model '${name}' is not ready (${m.state}${m.reason ? `: ${m.reason}` : ''}).`, 400);
    if (version !== undefined && version !== '') {
      if (!/^[0-9]+$/.test(version)) throw new ServeError(`invalid version '${version}' for model '${name}': versions are positive integers.`, 400);
      const v = m.versions.get(Number(version));
      if (!v) throw new ServeError(`model '${name}' has no ready version ${version}. Ready: ${[...m.versions.keys()].join(', ')}.`, 404);
      return { model: m, v };
    }
    const latest = Math.max(...m.versions.keys());
    return { model: m, v: m.versions.get(latest)! };
  }

  /** Load (or reload) a model; never throws for the model's own errors, which are kept in its entry. */
  load(name: string, chain: string[] = []): Promise<void> {
    const prev = this.loading.get(name) ?? Promise.resolve();
    const p = prev.then(() => this.loadNow(name, chain));
    this.loading.set(name, p);
    return p.finally(() => {
      if (this.loading.get(name) === p) this.loading.delete(name);
    });
  }

  private async loadNow(name: string, chain: string[]): Promise<void> {
    const dir = this.modelDir(name);
    const old = this.models.get(name);
    const entry: ModelEntry = { name, state: 'LOADING', reason: '', versions: new Map(), signature: signature(dir) };
    if (!old || old.state !== 'READY') this.models.set(name, entry);
    const t0 = performance.now();
    try {
      const cfg = (entry.config = readConfig(dir, name));
      if (cfg.ensemble_scheduling) await this.loadSteps(name, cfg, chain);
      const custom = cfg.ensemble_scheduling || modelBackend(cfg.backend);
      for (const v of findVersions(dir, cfg, !!custom)) {
        const loaded = cfg.ensemble_scheduling
          ? this.ensembleVersion(name, cfg, v.version)
          : custom ? await this.customVersion(name, cfg, v.version, dir) : await this.loadVersion(name, cfg, v.version, v.file);
        entry.versions.set(v.version, loaded);
      }
      entry.state = 'READY';
      this.log('info', 'model loaded', { model: name, versions: [...entry.versions.keys()], ms: Math.round(performance.now() - t0) });
    } catch (e) {
      await retire(entry);
      entry.versions.clear();
      entry.state = 'UNAVAILABLE';
      entry.reason = (e as Error).message;
      this.log('error', 'model failed to load', { model: name, error: entry.reason });
    }
    this.models.set(name, entry);
    if (old && old !== entry) await retire(old);
  }

  /** Load (or wait for) an ensemble's step models first, then check the DAG against their configs. */
  private async loadSteps(name: string, cfg: ModelConfig, chain: string[]): Promise<void> {
    for (const st of cfg.ensemble_scheduling!.step) {
      const m = st.model_name;
      if (m === name || chain.includes(m)) throw new ServeError(`ensemble '${name}' uses '${m}', which (through its steps) uses '${name}' again; ensembles cannot be cyclic.`, 400);
      if (this.loading.has(m)) await this.loading.get(m);
      else if (this.models.get(m)?.state !== 'READY') await this.load(m, [...chain, name]).catch(() => {}); // reported below
    }
    validateEnsemble(cfg, (m) => {
      const e = this.models.get(m);
      if (!e || e.state !== 'READY') throw new ServeError(`ensemble '${name}': step model '${m}' is not available (${e ? `${e.state}: ${e.reason}` : 'not in the repository'}).`, 400);
      return e.config!;
    });
  }

  private ensembleVersion(name: string, cfg: ModelConfig, version: number): LoadedVersion {
    const stats = emptyStats();
    let pending = 0;
    const vs = String(version);
    return {
      version, engines: [], instances: [], devices: [], stats,
      pending: () => pending,
      run: async (feeds, outputs, batch, so) => {
        pending++;
        try {
          const configOf = (m: string) => (this.models.get(m)?.state === 'READY' ? this.models.get(m)!.config : undefined);
          const r = await runEnsemble(cfg, feeds, outputs, so, (model, ver, f, o, b) => this.runStep(model, ver, f, o, b, so), configOf);
          this.metrics.recordExec(name, vs, stats, batch, 'ensemble');
          return r;
        } finally {
          pending--;
        }
      },
    };
  }

  /** One ensemble step through its model's own batcher, recorded in that model's statistics. */
  private async runStep(model: string, version: number, feeds: Record<string, ServeTensor>, outputs: string[], batch: number, so: SubmitOptions): Promise<BatchResult> {
    const t0 = performance.now();
    const { v } = this.get(model, version >= 0 ? String(version) : undefined);
    try {
      const r = await v.run(feeds, outputs, batch, so);
      this.metrics.recordSuccess(model, String(v.version), v.stats, { requestNs: Math.round((performance.now() - t0) * 1e6), ...r });
      return r;
    } catch (e) {
      this.metrics.recordFailure(model, String(v.version), v.stats, e instanceof ServeError ? e.reason : 'BACKEND', Math.round((performance.now() - t0) * 1e6));
      throw e;
    }
  }

  private placements(name: string, cfg: ModelConfig): Placement[] {
    const wantsGpu = cfg.instance_group.some((g) => g.kind === 'KIND_GPU' || g.kind === 'KIND_AUTO');
    return placeInstances(cfg.instance_group, wantsGpu ? this.devices.list() : [], name);
  }

  private async customVersion(name: string, cfg: ModelConfig, version: number, dir: string): Promise<LoadedVersion> {
    const factory = modelBackend(cfg.backend)!;
    const places = this.placements(name, cfg);
    const versionDir = path.join(dir, String(version));
    const models = [];
    for (const [i, p] of places.entries()) models.push(await factory({ name, dir, versionDir, version, config: cfg, instance: i, deviceId: p.deviceId }));
    for (const key of ['input', 'output'] as const) if (cfg[key].length === 0) cfg[key] = models[0][key === 'input' ? 'inputs' : 'outputs'];
    return this.withBatcher(name, cfg, version, [], models.map((m, i) => modelInstance(m, deviceLabel(places[i]))));
  }

  private async loadVersion(name: string, cfg: ModelConfig, version: number, file: string): Promise<LoadedVersion> {
    const places = this.placements(name, cfg);
    const gpuBackend = this.devices.backend ?? 'cuda';
    const cpuDevice = this.opts.device ?? 'cpu';
    const plans = new Map<string, Uint8Array>();
    const planFor = async (device: string) => {
      if (!plans.has(device)) plans.set(device, await loadPlan(file, device, cfg.precision));
      return plans.get(device)!;
    };
    const engines: Engine[] = [];
    const byDevice = new Map<string, Engine>();
    // the CPU instances share the cores: each instance's engine gets its part, so N instances don't run N x cores
    // kernel threads (2 cores, 2 instances, tiny CNN, binary requests: 2241 req/s split vs 1877-1965 all cores)
    const onCpu = places.filter((p) => p.kind === 'cpu').length;
    const intraOpNumThreads = Math.max(1, Math.floor(availableParallelism() / Math.max(1, onCpu)));
    const engineFor = async (p: Placement) => {
      const key = deviceLabel(p);
      if (!byDevice.has(key)) {
        const plan = await planFor(p.kind === 'gpu' ? gpuBackend : cpuDevice);
        const e = await Engine.load(plan, p.kind === 'gpu' ? { deviceId: p.deviceId } : { intraOpNumThreads });
        engines.push(e);
        byDevice.set(key, e);
      }
      return byDevice.get(key)!;
    };
    const contexts: Instance[] = [];
    const used = new Set<Engine>();
    try {
      const first = await engineFor(places[0]);
      completeConfig(cfg, first, file);
      const cpuWorkers = this.opts.workers ?? !(places[0].kind === 'cpu' && offLoopEngine(first));
      for (const p of places) {
        const threads = p.kind === 'cpu' && cpuDevice === 'cpu' && cpuWorkers;
        if (threads) contexts.push(await workerInstance(await planFor(cpuDevice), { intraOpNumThreads }));
        else {
          const e = await engineFor(p);
          used.add(e);
          contexts.push(inThreadInstance(e, deviceLabel(p)));
        }
      }
    } catch (e) {
      await Promise.all(contexts.map((c) => c.close()));
      for (const en of engines) en.dispose();
      throw e;
    }
    // an engine loaded here only to complete the config (every instance on a worker) would hold a copy of the
    // weights for nothing
    for (const en of engines) if (!used.has(en)) en.dispose();
    // GPU engines capture one CUDA graph per shape: batches are padded to a few sizes, each run once per GPU
    // instance here so no request pays for an eager run and a capture (Triton's model_warmup, made automatic)
    const padBatches = !!cfg.dynamic_batching && cfg.max_batch_size > 0 && places.some((p) => p.kind === 'gpu');
    if (padBatches) {
      await warmUp(engines.find((en) => used.has(en))!, contexts.filter((_, i) => places[i].kind === 'gpu'), buckets(cfg.max_batch_size)).catch(async (e: unknown) => {
        await Promise.all(contexts.map((c) => c.close()));
        for (const en of engines) en.dispose();
        throw e;
      });
    }
    return this.withBatcher(name, cfg, version, engines.filter((en) => used.has(en)), contexts, padBatches);
  }

  private withBatcher(name: string, cfg: ModelConfig, version: number, engines: Engine[], contexts: Instance[], padBatches = false): LoadedVersion {
    const stats = emptyStats();
    const db = cfg.dynamic_batching;
    const q = db?.default_queue_policy;
    const vs = String(version);
    const batcher = new Batcher(contexts, {
      maxBatchSize: cfg.max_batch_size,
      dynamic: !!db,
      preferred: db?.preferred_batch_size ?? [],
      maxQueueDelayUs: db?.max_queue_delay_microseconds ?? 0,
      maxQueueSize: q?.max_queue_size || this.opts.maxQueueSize || 4096,
      defaultTimeoutUs: q?.default_timeout_microseconds ?? 0,
      allowTimeoutOverride: q?.allow_timeout_override ?? false,
      timeoutAction: q?.timeout_action ?? 'REJECT',
      priorityLevels: db?.priority_levels ?? 0,
      defaultPriority: db?.default_priority_level ?? 1,
      onExec: (rows, _n, device) => this.metrics.recordExec(name, vs, stats, rows, device),
      padBatches,
    });
    return {
      version, engines, instances: contexts, devices: contexts.map((c) => c.device ?? 'cpu'), batcher, stats,
      run: (f, o, b, so) => batcher.submit(f, o, b, so),
      pending: () => batcher.pending,
    };
  }

  /** Unload: new requests are refused at once, queued and running ones finish, then the engines are freed. */
  async unload(name: string): Promise<void> {
    const m = this.models.get(name);
    if (!m) throw new ServeError(`unknown model '${name}'; nothing to unload.`, 404);
    await (this.loading.get(name) ?? Promise.resolve());
    const cur = this.models.get(name)!;
    this.models.set(name, { ...cur, state: 'UNAVAILABLE', reason: 'unloaded', versions: new Map() });
    await retire(cur);
    this.log('info', 'model unloaded', { model: name });
  }

  /** Poll mode: load new or changed models, unload removed ones. */
  async poll(): Promise<void> {
    const present = new Set(this.scan());
    for (const name of present) {
      const m = this.models.get(name);
      if (!m || (m.reason !== 'unloaded' && m.signature !== signature(path.join(this.root, name)))) await this.load(name);
    }
    for (const name of this.models.keys()) if (!present.has(name) && this.models.get(name)!.state === 'READY') await this.unload(name);
  }

  async close(): Promise<void> {
    await Promise.all([...this.models.keys()].map((n) => (this.models.get(n)!.state === 'READY' ? this.unload(n) : undefined)));
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void {
    this.opts.log?.(level, msg, fields);
  }
}

async function retire(m: ModelEntry): Promise<void> {
  await Promise.all([...m.versions.values()].map((v) => v.batcher?.drain()));
  await Promise.all([...m.versions.values()].flatMap((v) => v.instances.map((i) => i.close())));
  for (const v of m.versions.values()) for (const e of v.engines) e.dispose();
}

function readConfig(dir: string, name: string): ModelConfig {
  for (const f of ['config.json', 'config.pbtxt']) {
    const p = path.join(dir, f);
    if (fs.existsSync(p)) return parseConfigText(fs.readFileSync(p, 'utf8'), name, `${name}/${f}`);
  }
  return parseConfigText('{}', name, `${name}/config.json`);
}

/** Version folders with a model file; for ensembles and custom backends any version folder (none = version 1). */
function findVersions(dir: string, cfg: ModelConfig, anyFolder: boolean): { version: number; file: string }[] {
  const found = new Map<number, string>();
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    if (!d.isDirectory() || !/^[0-9]+$/.test(d.name) || Number(d.name) < 1) continue;
    if (anyFolder) found.set(Number(d.name), path.join(dir, d.name));
    for (const f of ['model.plan', 'model.onnx']) {
      const p = path.join(dir, d.name, f);
      if (fs.existsSync(p)) {
        found.set(Number(d.name), p);
        break;
      }
    }
  }
  if (anyFolder && found.size === 0) found.set(1, dir);
  const chosen = selectVersions(cfg, [...found.keys()]);
  if (chosen.length === 0) {
    throw new ServeError(`no version folder with model.plan or model.onnx matches the version policy (found: ${[...found.keys()].join(', ') || 'none'}).`, 400);
  }
  return chosen.map((v) => ({ version: v, file: found.get(v)! }));
}

/** Layers the CPU runtime runs in JavaScript that only reshape or relabel (views, no per-element work). */
const VIEW_OPS = new Set(['Flatten', 'Reshape', 'Identity', 'Squeeze', 'Unsqueeze', 'Shape', 'Constant']);

/**
 * Whether an engine's runs leave the event loop free: every layer that computes runs a native kernel (koffi calls
 * it on a libuv thread; the kernel's own pool does the rest). Such an engine is served from execution contexts on
 * the server's thread: no worker hop, no structured clone of each batch, no second copy of the weights per
 * instance, and no worker thread competing with the server's thread for the cores. Measured on 2 shared cores at
 * 256 connections (bench/serve/load.ts, binary bodies, same-run A/B): tiny CNN 5.5-9.6 k req/s on the server's
 * thread vs 3.9-5.3 k on workers and CPU per request 0.14-0.16 vs 0.20 ms; MLP even (6.3 k vs 4.1 k in one run,
 * 6.3 k vs 6.6 k in another); RSS about half. A plan with reference (JS) kernels that compute would block request
 * handling for the whole run: its instances stay on workers.
 * Small chains of native layers (below the runner's synchronous-call threshold) still run on the calling thread.
 */
export function offLoopEngine(engine: Engine): boolean {
  return engine.header.layers.every((l) => l.tactic.startsWith('native') || VIEW_OPS.has(l.opType));
}

/** Plan bytes for the device: a .plan file as is; an ONNX model built, reusing a plan cached next to it when newer. */
async function loadPlan(file: string, device: string, precision?: string): Promise<Uint8Array> {
  if (file.endsWith('.plan')) return new Uint8Array(fs.readFileSync(file));
  const cache = file.replace(/\.onnx$/, `.${device}${precision ? `.${precision}` : ''}.kiln.plan`);
  if (fs.existsSync(cache) && fs.statSync(cache).mtimeMs >= fs.statSync(file).mtimeMs) {
    const plan = new Uint8Array(fs.readFileSync(cache));
    try {
      (await Engine.load(plan)).dispose(); // stale or built on another machine: rebuild below
      return plan;
    } catch {
      // rebuild
    }
  }
  const built = await build(await loadOnnx(file), { device, precision: precision as never });
  try {
    await built.save(cache);
  } catch {
    // read-only repository: serve without the cache
  }
  return built.bytes;
}

/** Runs every batch size in `sizes` once on each instance with zeros; skipped when an input has a non-batch dynamic dim. */
async function warmUp(engine: Engine, instances: Instance[], sizes: number[]): Promise<void> {
  const inputs = engine.header.inputs;
  if (inputs.some((t) => t.shape.slice(1).some((d) => typeof d !== 'number'))) return;
  for (const inst of instances) {
    for (const n of sizes) {
      const feeds: Record<string, ServeTensor> = {};
      for (const t of inputs) {
        const dims = [n, ...(t.shape.slice(1) as number[])];
        const count = dims.reduce((a, b) => a * b, 1);
        const zero = t.dtype === 'int64' || t.dtype === 'uint64' ? 0n : t.dtype === 'bool' ? false : 0;
        feeds[t.name] = new Tensor(t.dtype as TensorType, new Array(count).fill(zero) as number[], dims);
      }
      await inst.run(feeds, engine.header.outputs.map((o) => o.name), true);
    }
  }
}

/** Fill inputs/outputs from the engine when the config leaves them out, and check them when it gives them. */
function completeConfig(cfg: ModelConfig, engine: Engine, file: string): void {
  const mb = cfg.max_batch_size > 0;
  const fromEngine = (list: { name: string; dtype: string; shape: (number | string | null)[] }[]) =>
    list.map((t) => ({ name: t.name, data_type: configTypeFromKiln(t.dtype), dims: t.shape.slice(mb ? 1 : 0).map((d) => (typeof d === 'number' ? d : -1)) }));
  for (const [key, list] of [['input', engine.header.inputs], ['output', engine.header.outputs]] as const) {
    if (cfg[key].length === 0) {
      cfg[key] = fromEngine(list);
      continue;
    }
    for (const t of cfg[key]) {
      const e = list.find((x) => x.name === t.name);
      if (!e) throw new ServeError(`config ${key} '${t.name}' is not an ${key} of ${file}; it has ${list.map((x) => x.name).join(', ')}.`, 400);
      if (configTypeFromKiln(e.dtype) !== t.data_type) throw new ServeError(`config ${key} '${t.name}' is ${t.data_type}, but ${file} has ${configTypeFromKiln(e.dtype)}.`, 400);
      const rank = e.shape.length - (mb ? 1 : 0);
      if (t.dims.length !== rank) throw new ServeError(`config ${key} '${t.name}' has ${t.dims.length} dims, but ${file} has rank ${e.shape.length}${mb ? ' (one is the batch dim)' : ''}.`, 400);
    }
  }
}

/** Changes to a model folder's config or model files, for poll mode. */
function signature(dir: string): string {
  const parts: string[] = [];
  const walk = (d: string, depth: number) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, e.name);
      if (e.isDirectory() && depth === 0) walk(p, 1);
      else if (/^(config\.(json|pbtxt)|model\.(onnx|plan))$/.test(e.name)) parts.push(`${p}:${fs.statSync(p).mtimeMs}:${fs.statSync(p).size}`);
    }
  };
  try {
    walk(dir, 0);
  } catch {
    return '';
  }
  return parts.join('|');
}

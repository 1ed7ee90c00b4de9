// Model repository: DIR/<model>/{config.json|config.pbtxt} and DIR/<model>/<version>/{model.plan|model.onnx}.
// Engines are built on load; a model that fails to load is kept with its error and does not stop the others.
import fs from 'node:fs';
import path from 'node:path';
import { Engine, build, loadOnnx } from '../index.js';
import { Batcher, ServeError } from './batcher.js';
import { inThreadInstance, workerInstance, type Instance } from './instances.js';
import { configTypeFromKiln, parseConfigText, selectVersions, type ModelConfig } from './config.js';
import { emptyStats, type Metrics, type VersionStats } from './metrics.js';

export type ModelState = 'READY' | 'LOADING' | 'UNLOADING' | 'UNAVAILABLE';

export interface LoadedVersion {
  version: number;
  engine: Engine;
  instances: Instance[];
  batcher: Batcher;
  stats: VersionStats;
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
  /** Run each CPU instance on its own worker thread (default true), so inference never blocks request handling. */
  workers?: boolean;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

export class ModelRepository {
  readonly root: string;
  private models = new Map<string, ModelEntry>();
  private loading = new Map<string, Promise<void>>();

  constructor(root: string, private metrics: Metrics, private opts: RepositoryOptions = {}) {
    this.root = fs.realpathSync(root);
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
  load(name: string): Promise<void> {
    const prev = this.loading.get(name) ?? Promise.resolve();
    const p = prev.then(() => this.loadNow(name));
    this.loading.set(name, p);
    return p.finally(() => {
      if (this.loading.get(name) === p) this.loading.delete(name);
    });
  }

  private async loadNow(name: string): Promise<void> {
    const dir = this.modelDir(name);
    const old = this.models.get(name);
    const entry: ModelEntry = { name, state: 'LOADING', reason: '', versions: new Map(), signature: signature(dir) };
    if (!old || old.state !== 'READY') this.models.set(name, entry);
    const t0 = performance.now();
    try {
      entry.config = readConfig(dir, name);
      for (const v of findVersions(dir, entry.config)) entry.versions.set(v.version, await this.loadVersion(name, entry.config, v.version, v.file));
      entry.state = 'READY';
      this.log('info', 'model loaded', { model: name, versions: [...entry.versions.keys()], ms: Math.round(performance.now() - t0) });
    } catch (e) {
      for (const v of entry.versions.values()) v.engine.dispose();
      entry.versions.clear();
      entry.state = 'UNAVAILABLE';
      entry.reason = (e as Error).message;
      this.log('error', 'model failed to load', { model: name, error: entry.reason });
    }
    this.models.set(name, entry);
    if (old && old !== entry) await retire(old);
  }

  private async loadVersion(name: string, cfg: ModelConfig, version: number, file: string): Promise<LoadedVersion> {
    const gpu = cfg.instance_group.some((g) => g.kind === 'KIND_GPU');
    const device = gpu ? 'cuda' : (this.opts.device ?? 'cpu');
    const { engine, plan } = await loadEngine(file, device, cfg.precision);
    const count = cfg.instance_group.reduce((s, g) => s + g.count, 0);
    let contexts: Instance[];
    try {
      completeConfig(cfg, engine, file);
      contexts = device === 'cpu' && this.opts.workers !== false
        ? await Promise.all(Array.from({ length: count }, () => workerInstance(plan)))
        : Array.from({ length: count }, () => inThreadInstance(engine));
    } catch (e) {
      engine.dispose();
      throw e;
    }
    const stats = emptyStats();
    const db = cfg.dynamic_batching;
    const vs = String(version);
    const batcher = new Batcher(contexts, {
      maxBatchSize: cfg.max_batch_size,
      dynamic: !!db,
      preferred: db?.preferred_batch_size ?? [],
      maxQueueDelayUs: db?.max_queue_delay_microseconds ?? 0,
      maxQueueSize: db?.default_queue_policy?.max_queue_size || this.opts.maxQueueSize || 4096,
      defaultTimeoutUs: db?.default_queue_policy?.default_timeout_microseconds ?? 0,
      onExec: (rows) => this.metrics.recordExec(name, vs, stats, rows),
    });
    return { version, engine, instances: contexts, batcher, stats };
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
  await Promise.all([...m.versions.values()].map((v) => v.batcher.drain()));
  await Promise.all([...m.versions.values()].flatMap((v) => v.instances.map((i) => i.close())));
  for (const v of m.versions.values()) v.engine.dispose();
}

function readConfig(dir: string, name: string): ModelConfig {
  for (const f of ['config.json', 'config.pbtxt']) {
    const p = path.join(dir, f);
    if (fs.existsSync(p)) return parseConfigText(fs.readFileSync(p, 'utf8'), name, `${name}/${f}`);
  }
  return parseConfigText('{}', name, `${name}/config.json`);
}

function findVersions(dir: string, cfg: ModelConfig): { version: number; file: string }[] {
  const found = new Map<number, string>();
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    if (!d.isDirectory() || !/^[0-9]+$/.test(d.name) || Number(d.name) < 1) continue;
    for (const f of ['model.plan', 'model.onnx']) {
      const p = path.join(dir, d.name, f);
      if (fs.existsSync(p)) {
        found.set(Number(d.name), p);
        break;
      }
    }
  }
  const chosen = selectVersions(cfg, [...found.keys()]);
  if (chosen.length === 0) {
    throw new ServeError(`no version folder with model.plan or model.onnx matches the version policy (found: ${[...found.keys()].join(', ') || 'none'}).`, 400);
  }
  return chosen.map((v) => ({ version: v, file: found.get(v)! }));
}

/** Build an ONNX model for the device, reusing a plan cached next to it when it is newer than the model. */
async function loadEngine(file: string, device: string, precision?: string): Promise<{ engine: Engine; plan: Uint8Array }> {
  if (file.endsWith('.plan')) {
    const plan = new Uint8Array(fs.readFileSync(file));
    return { engine: await Engine.load(plan), plan };
  }
  const cache = file.replace(/\.onnx$/, `.${device}${precision ? `.${precision}` : ''}.kiln.plan`);
  if (fs.existsSync(cache) && fs.statSync(cache).mtimeMs >= fs.statSync(file).mtimeMs) {
    try {
      const plan = new Uint8Array(fs.readFileSync(cache));
      return { engine: await Engine.load(plan), plan };
    } catch {
      // stale or built on another machine: rebuild below
    }
  }
  const built = await build(await loadOnnx(file), { device, precision: precision as never });
  try {
    await built.save(cache);
  } catch {
    // read-only repository: serve without the cache
  }
  return { engine: await Engine.load(built), plan: built.bytes };
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

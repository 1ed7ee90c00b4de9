// `kiln serve` as a library: a model repository behind KServe v2 HTTP and gRPC, with metrics on their own port.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ServeError } from './batcher.js';
import { kserveFromConfigType } from './config.js';
import type { DeviceProvider } from './devices.js';
import { createHttpApp, type HttpPlugin } from './http.js';
import { DecodePool, type DecodeOptions } from './decode-pool.js';
import { createGrpcServer, type GrpcHandle } from './grpc.js';
import { Metrics } from './metrics.js';
import { ModelRepository } from './repository.js';
import { LlmModels } from './llm.js';
import { llmRoutes } from './openai.js';

export type ControlMode = 'none' | 'explicit' | 'poll';
type Level = 'info' | 'warn' | 'error';

export interface ServeOptions {
  repository: string;
  host?: string;
  /** Ports; 0 picks a free one, -1 turns that endpoint off. */
  httpPort?: number;
  grpcPort?: number;
  metricsPort?: number;
  modelControlMode?: ControlMode;
  /** Models to load at startup in explicit mode ('*' = all). */
  loadModels?: string[];
  pollSeconds?: number;
  device?: string;
  apiKey?: string;
  maxRequestBytes?: number;
  maxQueueSize?: number;
  /** KIND_CPU instances on worker threads (true) or as execution contexts on the server's thread (false); default:
   *  the server's thread when every compute layer of the model has a native kernel, else workers. */
  workers?: boolean;
  /** Request decoding threads (JSON parse and tensor conversion off the event loop); `{ threads: 0 }` turns them off. */
  decode?: DecodeOptions;
  /** GPUs for KIND_GPU / KIND_AUTO instance groups and the per-GPU metrics (default: nvidia-smi). */
  devices?: DeviceProvider;
  /** Extra HTTP routes (e.g. OpenAI-compatible endpoints), registered after the KServe v2 routes. */
  plugins?: HttpPlugin[];
  /** Structured log sink; default one JSON line per event on stderr. */
  log?: (level: Level, msg: string, fields?: Record<string, unknown>) => void;
}

const EXTENSIONS = ['binary_tensor_data', 'model_configuration', 'statistics', 'model_repository', 'model_repository(unload_dependents)'];
const VERSION = '0.1.0';

export class ServerCore {
  readonly metrics = new Metrics();
  readonly repo: ModelRepository;
  /** LLM model folders of the repository (OpenAI and KServe generate routes). */
  readonly llm: LlmModels;
  /** Decodes HTTP infer bodies, on its threads when they are large. */
  readonly decoder: DecodePool;
  readonly options: Required<Pick<ServeOptions, 'maxRequestBytes' | 'modelControlMode'>> & ServeOptions;
  live = true;
  /** Set when shutdown starts: not ready any more, and HTTP answers close their connections. */
  draining = false;

  constructor(opts: ServeOptions) {
    this.options = { maxRequestBytes: 64 * 1024 * 1024, modelControlMode: 'none', ...opts };
    this.repo = new ModelRepository(opts.repository, this.metrics, { device: opts.device, maxQueueSize: opts.maxQueueSize, workers: opts.workers, devices: opts.devices, log: (l, m, f) => this.log(l, m, f) });
    this.decoder = new DecodePool(opts.decode, (m, f) => this.log('warn', m, f));
    this.llm = new LlmModels(this.repo.root, this.metrics.registry, { device: opts.device, maxQueueSize: opts.maxQueueSize, log: (l, m, f) => this.log(l, m, f) });
  }

  log(level: Level, msg: string, fields?: Record<string, unknown>): void {
    if (this.options.log) this.options.log(level, msg, fields);
    else process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + '\n');
  }

  async loadInitial(): Promise<void> {
    const mode = this.options.modelControlMode;
    const explicit = mode === 'explicit' && !(this.options.loadModels ?? []).includes('*');
    const names = explicit ? (this.options.loadModels ?? []) : this.repo.scan();
    await Promise.all([...names.filter((n) => !this.llm.owns(n)).map((n) => this.repo.load(n)), this.llm.loadAll(explicit ? names : undefined)]);
  }

  ready(): boolean {
    return this.live && !this.draining && this.repo.entries().every((m) => m.state !== 'LOADING') && !this.llm.loading();
  }

  serverMetadata() {
    return { name: 'kiln', version: VERSION, extensions: EXTENSIONS };
  }

  modelReady(name: string, version?: string): boolean {
    if (this.llm.has(name)) return this.llm.isReady(name, version);
    try {
      this.repo.get(name, version);
      return true;
    } catch {
      return false;
    }
  }

  modelMetadata(name: string, version?: string) {
    if (this.llm.has(name)) return this.llm.metadata(name);
    const { model } = this.repo.get(name, version);
    const cfg = model.config!;
    const meta = (t: { name: string; data_type: string; dims: number[] }) => ({
      name: t.name,
      datatype: kserveFromConfigType(t.data_type),
      shape: cfg.max_batch_size > 0 ? [-1, ...t.dims] : t.dims,
    });
    return {
      name,
      versions: [...model.versions.keys()].map(String),
      platform: cfg.platform || cfg.backend || 'kiln',
      inputs: cfg.input.map(meta),
      outputs: cfg.output.map(meta),
    };
  }

  statistics(name?: string, version?: string) {
    const models = name ? [this.repo.get(name, version).model] : this.repo.entries().filter((m) => m.state === 'READY');
    const model_stats = models.flatMap((m) =>
      [...m.versions.values()]
        .filter((v) => !version || String(v.version) === version)
        .map((v) => ({
          name: m.name,
          version: String(v.version),
          last_inference: v.stats.last_inference,
          inference_count: v.stats.inference_count,
          execution_count: v.stats.execution_count,
          inference_stats: { success: v.stats.success, fail: v.stats.fail, queue: v.stats.queue, compute_input: v.stats.compute_input, compute_infer: v.stats.compute_infer, compute_output: v.stats.compute_output },
          batch_stats: [],
        })),
    );
    return { model_stats };
  }

  repositoryIndex(readyOnly = false) {
    const known = new Map(this.repo.entries().map((m) => [m.name, m]));
    const names = [...new Set([...this.repo.scan(), ...known.keys()])].sort();
    const rows: { name: string; version?: string; state?: string; reason?: string }[] = [];
    for (const n of names) {
      const m = known.get(n);
      if (!m) {
        if (!readyOnly) rows.push({ name: n });
        continue;
      }
      if (readyOnly && m.state !== 'READY') continue;
      if (m.versions.size === 0) rows.push({ name: n, state: m.state, reason: m.reason });
      for (const v of m.versions.keys()) rows.push({ name: n, version: String(v), state: m.state, reason: m.reason });
    }
    return this.llm.mergeIndex(rows, readyOnly);
  }

  private checkExplicit(action: string): void {
    if (this.options.modelControlMode !== 'explicit') {
      throw new ServeError(`explicit model ${action} is not allowed in model control mode '${this.options.modelControlMode}'; start with --model-control-mode explicit.`, 400);
    }
  }

  async loadModel(name: string): Promise<void> {
    this.checkExplicit('load');
    if (this.llm.owns(name)) return this.llm.loadExplicit(name);
    this.repo.modelDir(name);
    await this.repo.load(name);
    const m = this.repo.entry(name)!;
    if (m.state !== 'READY') throw new ServeError(`failed to load '${name}': ${m.reason}`, 400);
  }

  async unloadModel(name: string): Promise<void> {
    this.checkExplicit('unload');
    if (this.llm.has(name)) return this.llm.unload(name);
    await this.repo.unload(name);
  }

  async stop(): Promise<void> {
    this.draining = true;
    await Promise.all([this.repo.close(), this.llm.close()]);
    await this.decoder.close();
    this.live = false;
  }
}

export interface RunningServer {
  core: ServerCore;
  httpUrl?: string;
  grpcAddress?: string;
  metricsUrl?: string;
  /** Graceful: stop accepting, finish in-flight requests, free the engines. */
  close(): Promise<void>;
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const core = new ServerCore(opts);
  const host = opts.host ?? '127.0.0.1';
  await core.loadInitial();
  const app = (opts.httpPort ?? 8000) >= 0 ? await createHttpApp(core, [llmRoutes, ...(opts.plugins ?? [])]) : undefined;
  let httpUrl: string | undefined;
  if (app) void core.decoder.start();
  if (app) httpUrl = await app.listen({ host, port: opts.httpPort ?? 8000 });
  let grpc: GrpcHandle | undefined;
  if ((opts.grpcPort ?? 8001) >= 0) grpc = await createGrpcServer(core, host, opts.grpcPort ?? 8001);
  let metricsServer: http.Server | undefined;
  let metricsUrl: string | undefined;
  if ((opts.metricsPort ?? 8002) >= 0) {
    metricsServer = http.createServer((req, res) => {
      if (req.url !== '/metrics') return void res.writeHead(404).end('see /metrics\n');
      for (const m of core.repo.entries()) for (const v of m.versions.values()) core.metrics.pendingGauge.set({ model: m.name, version: String(v.version) }, v.pending());
      const threads = [...core.repo.entries()].flatMap((m) =>
        [...m.versions.values()].flatMap((v) => v.instances.map((instance, i) => ({ thread: `${m.name}/${v.version}/${i}`, instance }))));
      void core.metrics
        .collectMemory(threads)
        .then(() => core.metrics.collectGpus(core.repo.devices))
        .catch((e: Error) => core.log('warn', 'GPU metrics unavailable', { error: e.message }))
        .then(() => core.metrics.registry.metrics())
        .then((text) => res.writeHead(200, { 'Content-Type': core.metrics.registry.contentType }).end(text));
    });
    await new Promise<void>((r) => metricsServer!.listen(opts.metricsPort ?? 8002, host, r));
    metricsUrl = `http://${host}:${(metricsServer.address() as AddressInfo).port}/metrics`;
  }
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  if (opts.modelControlMode === 'poll') {
    const next = () => {
      if (!closed) timer = setTimeout(tick, (opts.pollSeconds ?? 15) * 1000);
    };
    const tick = () => void core.repo.poll().catch((e: Error) => core.log('error', 'poll failed', { error: e.message })).finally(next);
    timer = setTimeout(tick, (opts.pollSeconds ?? 15) * 1000);
  }
  core.log('info', 'server started', { http: httpUrl, grpc: grpc?.address, metrics: metricsUrl, models: core.repositoryIndex() });
  return {
    core,
    httpUrl,
    grpcAddress: grpc?.address,
    metricsUrl,
    async close() {
      closed = true;
      core.draining = true;
      clearTimeout(timer);
      await Promise.all([app?.close(), grpc?.close()]);
      await core.stop();
      await new Promise((r) => (metricsServer ? metricsServer.close(r) : r(undefined)));
      core.log('info', 'server stopped');
    },
  };
}

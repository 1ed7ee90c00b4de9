// LLM models in the model repository: which folders are LLMs, loading their engines, and one generation path (with
// metrics, a bound on requests in flight, cancellation) shared by the OpenAI routes and KServe's generate extension.
//
// A folder is an LLM model when its config.json either says `"backend": "kiln_llm"` (the Hugging Face files then
// live in `parameters.model_dir`, default `1/`) or is itself a Hugging Face config (`model_type`) next to
// `*.safetensors` or `model.onnx` weights.
import fs from 'node:fs';
import path from 'node:path';
import type { Registry } from 'prom-client';
import { LlmEngine, type GenerateEvent, type GenerateRequest } from '../llm/engine.js';
import { InputError } from '../index.js';
import { ServeError } from './batcher.js';
import { LlmMetrics, type FinishReason } from './llm-metrics.js';

export type LlmLoadOptions = NonNullable<Parameters<typeof LlmEngine.load>[1]>;
type Level = 'info' | 'warn' | 'error';

export interface LlmEntry {
  name: string;
  state: 'READY' | 'LOADING' | 'UNAVAILABLE';
  reason: string;
  /** The Hugging Face folder the engine loads. */
  dir: string;
  engine?: LlmEngine;
  created: number;
  active: number;
}

/** Sampling and stopping parameters as the endpoints accept them (validated). */
export type Sampling = Omit<GenerateRequest, 'prompt' | 'signal'>;

/** The engine folder of an LLM model folder, or undefined when the folder is not an LLM model. */
export function llmModelDir(dir: string): string | undefined {
  const cfg = readJson(path.join(dir, 'config.json'));
  if (!cfg) return undefined;
  if (cfg.backend === 'kiln_llm') return path.resolve(dir, paramString(cfg.parameters, 'model_dir') ?? '1');
  if (typeof cfg.model_type !== 'string') return undefined;
  const files = fs.readdirSync(dir);
  return files.some((f) => f.endsWith('.safetensors') || f === 'model.onnx') ? dir : undefined;
}

/** Engine options from a kiln_llm config.json's `parameters` (plain values or Triton's {string_value}). */
export function llmLoadOptions(dir: string, device: string | undefined): LlmLoadOptions {
  const cfg = readJson(path.join(dir, 'config.json')) ?? {};
  const gpu = Array.isArray(cfg.instance_group) && cfg.instance_group.some((g: { kind?: string }) => g?.kind === 'KIND_GPU');
  const where = `${path.basename(dir)}/config.json parameters`;
  const int = (key: string) => {
    const v = paramString(cfg.parameters, key);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 1) throw new ServeError(`${where}: ${key} must be a positive integer, found '${v}'.`, 400);
    return n;
  };
  const provider = paramString(cfg.parameters, 'provider') ?? (gpu || device?.startsWith('cuda') ? 'cuda' : 'cpu');
  if (provider !== 'cpu' && provider !== 'cuda') throw new ServeError(`${where}: provider must be cpu or cuda, found '${provider}'.`, 400);
  const dtype = paramString(cfg.parameters, 'dtype');
  if (dtype !== undefined && !['float32', 'float16', 'bfloat16'].includes(dtype)) {
    throw new ServeError(`${where}: dtype must be float32, float16 or bfloat16, found '${dtype}'.`, 400);
  }
  return {
    provider, dtype: dtype as LlmLoadOptions['dtype'], maxBatch: int('max_batch'), blockSize: int('block_size'), kvBlocks: int('kv_blocks'),
    maxSeqLen: int('max_seq_len'),
  };
}

export interface LlmModelsOptions {
  device?: string;
  /** Requests in flight per model (running + waiting) before new ones get 429. */
  maxQueueSize?: number;
  log?: (level: Level, msg: string, fields?: Record<string, unknown>) => void;
}

export class LlmModels {
  readonly metrics: LlmMetrics;
  private models = new Map<string, LlmEntry>();
  private draining = false;

  constructor(private root: string, registry: Registry, private opts: LlmModelsOptions = {}) {
    this.metrics = new LlmMetrics(registry, () => this.ready().map((m) => ({ model: m.name, stats: () => m.engine!.stats() })));
  }

  /** LLM model folders on disk. */
  scan(): string[] {
    return fs
      .readdirSync(this.root, { withFileTypes: true })
      .filter((d) => (d.isDirectory() || d.isSymbolicLink()) && !d.name.startsWith('.') && this.owns(d.name))
      .map((d) => d.name)
      .sort();
  }

  /** Whether `name` is (or was loaded as) an LLM model folder of the repository. */
  owns(name: string): boolean {
    if (this.models.has(name)) return true;
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(name)) return false;
    try {
      return llmModelDir(path.join(this.root, name)) !== undefined;
    } catch {
      return false;
    }
  }

  entries(): LlmEntry[] {
    return [...this.models.values()];
  }

  ready(): LlmEntry[] {
    return this.entries().filter((m) => m.state === 'READY');
  }

  loading(): boolean {
    return this.entries().some((m) => m.state === 'LOADING');
  }

  /** Load the named LLM models (all on disk when none are named); a model's own error is kept in its entry. */
  async loadAll(names?: string[]): Promise<void> {
    await Promise.all((names ?? this.scan()).filter((n) => this.owns(n)).map((n) => this.load(n)));
  }

  async load(name: string): Promise<void> {
    const modelFolder = path.join(this.root, name);
    const old = this.models.get(name);
    const entry: LlmEntry = { name, state: 'LOADING', reason: '', dir: modelFolder, created: Math.floor(Date.now() / 1000), active: 0 };
    this.models.set(name, entry);
    const t0 = performance.now();
    try {
      entry.dir = llmModelDir(modelFolder) ?? modelFolder;
      entry.engine = await LlmEngine.load(entry.dir, llmLoadOptions(modelFolder, this.opts.device));
      entry.state = 'READY';
      this.opts.log?.('info', 'LLM model loaded', { model: name, dir: entry.dir, engine: entry.engine.name, ms: Math.round(performance.now() - t0) });
    } catch (e) {
      entry.state = 'UNAVAILABLE';
      entry.reason = (e as Error).message;
      this.opts.log?.('error', 'LLM model failed to load', { model: name, error: entry.reason });
    }
    if (old?.engine) await old.engine.close();
  }

  async unload(name: string): Promise<void> {
    const m = this.models.get(name);
    if (!m) throw new ServeError(`unknown model '${name}'; nothing to unload.`, 404);
    this.models.set(name, { ...m, state: 'UNAVAILABLE', reason: 'unloaded', engine: undefined });
    await m.engine?.close();
  }

  /** A ready model, or a 4xx ServeError saying why not. */
  get(name: string): LlmEntry & { engine: LlmEngine } {
    const m = this.models.get(name);
    if (!m) {
      const known = this.ready().map((x) => x.name);
      throw new ServeError(`unknown model '${name}'. LLM models: ${known.join(', ') || '(none loaded)'}.`, 404);
    }
    if (m.state !== 'READY') throw new ServeError(`model '${name}' is not ready (${m.state}${m.reason ? `: ${m.reason}` : ''}).`, 400);
    return m as LlmEntry & { engine: LlmEngine };
  }

  /** Room left for output after a prompt of `promptTokens` (the engine's sequence limit), when the engine says. */
  roomAfter(name: string, promptTokens: number): number | undefined {
    const limits = (this.get(name).engine as { limits?: { maxSeqLen?: number } }).limits;
    return limits?.maxSeqLen !== undefined ? Math.max(1, limits.maxSeqLen - promptTokens) : undefined;
  }

  has(name: string): boolean {
    return this.models.has(name);
  }

  isReady(name: string, version?: string): boolean {
    return this.models.get(name)?.state === 'READY' && (version === undefined || version === '' || version === '1');
  }

  /** Explicit load (model control API): fails with 400 when the model does not load. */
  async loadExplicit(name: string): Promise<void> {
    await this.load(name);
    const m = this.models.get(name)!;
    if (m.state !== 'READY') throw new ServeError(`failed to load '${name}': ${m.reason}`, 400);
  }

  /** The ONNX repository's index rows with the LLM models' rows merged in, in name order. */
  mergeIndex<R extends { name: string }>(rows: R[], readyOnly: boolean): (R | ReturnType<LlmModels['index']>[number])[] {
    const all = [...rows, ...this.index(readyOnly)];
    return all.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Rows for the repository index. */
  index(readyOnly: boolean): { name: string; version?: string; state?: string; reason?: string }[] {
    return this.entries()
      .filter((m) => !readyOnly || m.state === 'READY')
      .map((m) => (m.state === 'READY' ? { name: m.name, version: '1', state: m.state, reason: '' } : { name: m.name, state: m.state, reason: m.reason }));
  }

  /** KServe model metadata: Triton's text_input/text_output convention for LLMs. */
  metadata(name: string) {
    this.get(name);
    const bytes = (n: string) => ({ name: n, datatype: 'BYTES', shape: [1] });
    return { name, versions: ['1'], platform: 'kiln_llm', inputs: [bytes('text_input')], outputs: [bytes('text_output')] };
  }

  /**
   * Generate with metrics; the stream ends early when `signal` aborts. `promptTokens` is filled before the first
   * event. Requests beyond the model's in-flight bound fail at once with 429.
   */
  async *generate(name: string, prompt: string | number[], sampling: Sampling, signal: AbortSignal, usage: { promptTokens: number; completionTokens: number }): AsyncGenerator<GenerateEvent> {
    if (this.draining) throw new ServeError('the server is shutting down; not accepting new requests.', 503);
    const m = this.get(name);
    const limit = this.opts.maxQueueSize ?? 4096;
    if (m.active >= limit) throw new ServeError(`model '${name}' has ${m.active} requests in flight, its limit; retry later or raise --max-queue-size.`, 429);
    const ids = typeof prompt === 'string' ? m.engine.tokenizer.encode(prompt) : prompt;
    usage.promptTokens = ids.length;
    const t0 = performance.now();
    let last = t0;
    let reason: FinishReason = 'cancelled';
    m.active++;
    try {
      for await (const ev of m.engine.generate({ ...sampling, prompt, signal })) {
        if (ev.tokenId < 0) {
          // the engine's end-of-stream marker for a cancelled request, not a token
          if (ev.finishReason) reason = ev.finishReason;
          continue;
        }
        const now = performance.now();
        if (usage.completionTokens === 0) {
          this.metrics.ttft.observe({ model: name }, (now - t0) / 1000);
          this.metrics.firstResponseMs.observe({ model: name, version: '1' }, now - t0);
          this.metrics.promptTokens.inc({ model: name }, ids.length);
        } else this.metrics.itl.observe({ model: name }, (now - last) / 1000);
        last = now;
        usage.completionTokens++;
        this.metrics.generatedTokens.inc({ model: name });
        if (ev.finishReason) reason = ev.finishReason;
        yield ev;
      }
      if (signal.aborted) reason = 'cancelled';
    } catch (e) {
      reason = signal.aborted ? 'cancelled' : 'error';
      throw engineError(e, name);
    } finally {
      m.active--;
      this.metrics.requests.inc({ model: name, finish_reason: reason });
      if (reason !== 'cancelled' && reason !== 'error') this.metrics.e2e.observe({ model: name }, (performance.now() - t0) / 1000);
    }
  }

  async close(): Promise<void> {
    this.draining = true;
    const deadline = Date.now() + 30_000;
    while (this.entries().some((m) => m.active > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await Promise.all(this.entries().map((m) => m.engine?.close()));
    for (const m of this.entries()) this.models.set(m.name, { ...m, state: 'UNAVAILABLE', reason: 'server stopped', engine: undefined });
  }
}

/** Engine failures as HTTP statuses: bad input 400, capacity 429, the rest 500. */
function engineError(e: unknown, model: string): Error {
  if (e instanceof ServeError) return e;
  const err = e as Error & { status?: number };
  if (typeof err.status === 'number') return new ServeError(err.message, err.status);
  if (err instanceof InputError) return new ServeError(err.message, 400);
  if (/kv.?cache|capacity|exhausted|queue.*full/i.test(err.message ?? '')) return new ServeError(`model '${model}': ${err.message}`, 429);
  return new ServeError(`model '${model}' failed while generating: ${err.message ?? String(e)}`, 500);
}

// ---- request parameters shared by the OpenAI and KServe routes

const num = (o: Record<string, unknown>, key: string, where: string, min: number, max: number, int = false): number | undefined => {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (int && !Number.isInteger(v))) {
    throw new ServeError(`${where}'${key}' must be ${int ? 'an integer' : 'a number'} in [${min}, ${max}], got ${JSON.stringify(v)}.`, 400);
  }
  return v;
};

/** Sampling parameters from a request object (OpenAI names; `where` prefixes errors, e.g. "parameters."). */
export function samplingFrom(o: Record<string, unknown>, where = ''): Sampling {
  const stop = o.stop;
  let stops: string[] | undefined;
  if (typeof stop === 'string') stops = [stop];
  else if (Array.isArray(stop) && stop.every((s) => typeof s === 'string')) stops = stop as string[];
  else if (stop !== undefined && stop !== null) throw new ServeError(`${where}'stop' must be a string or an array of strings, got ${JSON.stringify(stop)}.`, 400);
  if (stops && stops.length > 16) throw new ServeError(`${where}'stop' takes at most 16 sequences, got ${stops.length}.`, 400);
  if (stops?.some((s) => s === '')) throw new ServeError(`${where}'stop' sequences must not be empty.`, 400);
  const ignoreEos = o.ignore_eos;
  if (ignoreEos !== undefined && typeof ignoreEos !== 'boolean') throw new ServeError(`${where}'ignore_eos' must be a boolean.`, 400);
  const s: Sampling = {
    maxTokens: num(o, 'max_tokens', where, 1, 1 << 20, true) ?? num(o, 'max_completion_tokens', where, 1, 1 << 20, true),
    temperature: num(o, 'temperature', where, 0, 2),
    topP: num(o, 'top_p', where, Number.MIN_VALUE, 1),
    topK: num(o, 'top_k', where, -1, 1 << 20, true),
    repetitionPenalty: num(o, 'repetition_penalty', where, Number.MIN_VALUE, 10),
    seed: num(o, 'seed', where, -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, true),
    stop: stops,
    ignoreEos: ignoreEos as boolean | undefined,
  };
  if (s.topK !== undefined && s.topK <= 0) s.topK = undefined; // OpenAI-style servers treat -1/0 as "off"
  for (const k of Object.keys(s) as (keyof Sampling)[]) if (s[k] === undefined) delete s[k];
  return s;
}

function readJson(file: string): Record<string, any> | undefined {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, any>) : undefined;
  } catch {
    return undefined;
  }
}

function paramString(params: unknown, key: string): string | undefined {
  if (typeof params !== 'object' || params === null) return undefined;
  const v = (params as Record<string, unknown>)[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'object' && 'string_value' in v) return String((v as { string_value: unknown }).string_value);
  return String(v);
}

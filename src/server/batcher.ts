// Dynamic batcher: one queue per model version, served by its execution contexts (the instance group). Requests
// with the same non-batch shape are concatenated along dim 0 up to a preferred size within the queue delay, run
// once, and the outputs split back. Requests wait in priority order (level 1 first, FIFO within a level) and may
// carry a timeout; a batch goes to the idle instance on the least busy device, so batches spread over GPUs.
import { Tensor, type TensorType } from '../index.js';
import { bucket } from '../runtime/buckets.js';
import type { Instance } from './instances.js';
import { BytesTensor, type ServeTensor } from './model.js';

export class ServeError extends Error {
  constructor(message: string, readonly status: number, readonly reason = 'OTHER') {
    super(message);
  }
}

export interface SubmitOptions {
  /** Triton's request `priority`: 1 = highest; 0 or absent = the model's default level. */
  priority?: number;
  /** Triton's request `timeout` in microseconds; 0 or absent = the model's default. */
  timeoutUs?: number;
}

export interface BatchRequest {
  inputs: Record<string, ServeTensor>;
  outputs: string[];
  /** Rows along dim 0 (1 when the model does not batch). */
  batch: number;
  level: number;
  /** Input names, types and non-batch dims plus the outputs: only requests with equal keys share a batch. */
  key: string;
  enqueued: number;
  deadline: number;
  resolve: (r: BatchResult) => void;
  reject: (e: Error) => void;
}

export interface BatchResult {
  outputs: Record<string, ServeTensor>;
  queueNs: number;
  computeInputNs: number;
  computeInferNs: number;
  computeOutputNs: number;
}

export interface BatcherOptions {
  maxBatchSize: number;
  dynamic: boolean;
  preferred: number[];
  maxQueueDelayUs: number;
  maxQueueSize: number;
  defaultTimeoutUs: number;
  /** 0 = priorities off. */
  priorityLevels?: number;
  defaultPriority?: number;
  allowTimeoutOverride?: boolean;
  timeoutAction?: 'REJECT' | 'DELAY';
  onExec?: (batchSize: number, requests: number, device: string) => void;
  /**
   * Pad every batch with zero rows up to its bucket (runtime/buckets.ts; outputs of the padding are dropped). GPU
   * engines replay one captured CUDA graph per input shape, so an unpadded dynamic batcher meets up to
   * max_batch_size shapes, each run eagerly and captured the first time (~0.1–0.5 s each, per GPU): on ResNet-50
   * over 2 GPUs that warm-up took most of a 20 s load test. With buckets the shapes are few and are warmed at load.
   */
  padBatches?: boolean;
}

const ns = (ms: number) => Math.round(ms * 1e6);

export class Batcher {
  private queue: BatchRequest[] = [];
  private idle: Instance[];
  private busy = new Map<string, number>();
  private lastUse = new Map<string, number>();
  private uses = 0;
  private timer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private deadlineAt = Infinity;
  private inFlight = 0;
  private drainWaiters: (() => void)[] = [];
  private closed = false;

  constructor(contexts: Instance[], private opts: BatcherOptions) {
    this.idle = [...contexts];
  }

  get pending(): number {
    return this.queue.length + this.inFlight;
  }

  submit(inputs: Record<string, ServeTensor>, outputs: string[], batch: number, so: SubmitOptions = {}): Promise<BatchResult> {
    if (this.closed) return Promise.reject(new ServeError('the model is being unloaded; request rejected.', 503, 'REJECTED'));
    if (this.queue.length >= this.opts.maxQueueSize) {
      return Promise.reject(new ServeError(`the model's queue is full (${this.opts.maxQueueSize} requests waiting); retry later.`, 429, 'REJECTED'));
    }
    let level: number;
    let timeoutUs: number;
    try {
      level = this.level(so.priority);
      timeoutUs = this.timeout(so.timeoutUs);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    return new Promise((resolve, reject) => {
      const now = performance.now();
      const r: BatchRequest = { inputs, outputs, batch, level, key: shapeKey(inputs, outputs), enqueued: now, deadline: timeoutUs > 0 ? now + timeoutUs / 1000 : Infinity, resolve, reject };
      this.enqueue(r);
      if (r.deadline < Infinity) this.armDeadline(r.deadline);
      this.pump();
    });
  }

  /** Stop taking requests and resolve when the queue and every running batch are done. */
  drain(): Promise<void> {
    this.closed = true;
    this.pump();
    if (this.pending === 0) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  private level(p: number | undefined): number {
    const levels = this.opts.priorityLevels ?? 0;
    if (levels === 0) return 1;
    if (p === undefined || p === 0) return this.opts.defaultPriority ?? 1;
    if (!Number.isInteger(p) || p < 0 || p > levels) throw new ServeError(`priority ${p} is outside 1..${levels} (the model's priority_levels); 0 = default.`, 400);
    return p;
  }

  private timeout(requested: number | undefined): number {
    const dflt = this.opts.defaultTimeoutUs;
    if (requested === undefined || requested === 0) return dflt;
    if (!Number.isInteger(requested) || requested < 0) throw new ServeError(`timeout must be a non-negative integer of microseconds, got ${requested}.`, 400);
    if (dflt === 0) return requested;
    return this.opts.allowTimeoutOverride ? Math.min(requested, dflt) : dflt;
  }

  /** Insert after every request of the same or a higher priority (lower level number): FIFO within a level. */
  private enqueue(r: BatchRequest): void {
    let i = this.queue.length;
    while (i > 0 && this.queue[i - 1].level > r.level) i--;
    this.queue.splice(i, 0, r);
  }

  private armDeadline(at: number): void {
    if (at >= this.deadlineAt) return;
    clearTimeout(this.deadlineTimer);
    this.deadlineAt = at;
    this.deadlineTimer = setTimeout(() => this.onDeadline(), Math.max(0, at - performance.now()) + 1);
  }

  private onDeadline(): void {
    this.deadlineAt = Infinity;
    this.deadlineTimer = undefined;
    this.expire();
    this.pump();
    const next = this.queue.reduce((m, r) => Math.min(m, r.deadline), Infinity);
    if (next < Infinity) this.armDeadline(next);
  }

  private pump(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const take = this.pick();
      if (take === 0) break;
      void this.execute(this.takeInstance(), this.queue.splice(0, take));
    }
    if (this.pending === 0 && this.closed) {
      clearTimeout(this.deadlineTimer);
      clearTimeout(this.timer);
      for (const w of this.drainWaiters.splice(0)) w();
    }
  }

  /** The idle instance on the device with the fewest running batches, least recently used first. */
  private takeInstance(): Instance {
    let best = 0;
    const score = (i: Instance) => [this.busy.get(dev(i)) ?? 0, this.lastUse.get(dev(i)) ?? -1];
    for (let i = 1; i < this.idle.length; i++) {
      const [b, u] = score(this.idle[i]);
      const [bb, bu] = score(this.idle[best]);
      if (b < bb || (b === bb && u < bu)) best = i;
    }
    const ctx = this.idle.splice(best, 1)[0];
    this.busy.set(dev(ctx), (this.busy.get(dev(ctx)) ?? 0) + 1);
    this.lastUse.set(dev(ctx), this.uses++);
    return ctx;
  }

  private expire(): void {
    const now = performance.now();
    const keep: BatchRequest[] = [];
    const late: BatchRequest[] = [];
    for (const r of this.queue) {
      if (r.deadline > now) keep.push(r);
      else if (this.opts.timeoutAction === 'DELAY') late.push({ ...r, deadline: Infinity });
      else r.reject(new ServeError('the request timed out while waiting in the queue.', 504, 'REJECTED'));
    }
    // DELAY: a late request waits behind every request still within its timeout, whatever its priority
    this.queue = [...keep, ...late.map((r) => ({ ...r, level: Number.MAX_SAFE_INTEGER }))];
  }

  /** How many queued requests to run now as one batch; 0 to wait for more (a timer is set). */
  private pick(): number {
    const o = this.opts;
    if (!o.dynamic || o.maxBatchSize === 0) return 1;
    const sig = this.queue[0].key;
    let rows = 0;
    let n = 0;
    for (const r of this.queue) {
      if (r.key !== sig || rows + r.batch > o.maxBatchSize) break;
      rows += r.batch;
      n++;
    }
    const full = rows >= o.maxBatchSize || n < this.queue.length || o.preferred.includes(rows);
    const waited = (performance.now() - this.queue[0].enqueued) * 1000;
    if (full || waited >= o.maxQueueDelayUs || this.closed) return n;
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.pump();
      }, Math.max(0, (o.maxQueueDelayUs - waited) / 1000));
    }
    return 0;
  }

  private async execute(ctx: Instance, reqs: BatchRequest[]): Promise<void> {
    this.inFlight += reqs.length;
    const t0 = performance.now();
    try {
      const rows = reqs.reduce((s, r) => s + r.batch, 0);
      const padded = this.opts.padBatches ? bucket(rows, this.opts.maxBatchSize) : rows;
      const single = reqs.length === 1 && padded === rows;
      const feeds = single ? reqs[0].inputs : concatInputs(reqs, padded - rows);
      const wanted = [...new Set(reqs.flatMap((r) => r.outputs))];
      const t1 = performance.now();
      // a concatenated batch belongs to the batcher alone, so a worker may take its buffers without a copy
      const out = await ctx.run(feeds, wanted, !single);
      const t2 = performance.now();
      const parts = single ? [pickOutputs(out, reqs[0].outputs)] : splitOutputs(out, reqs, padded);
      const t3 = performance.now();
      this.opts.onExec?.(rows, reqs.length, dev(ctx));
      reqs.forEach((r, i) =>
        r.resolve({ outputs: parts[i], queueNs: ns(t0 - r.enqueued), computeInputNs: ns(t1 - t0), computeInferNs: ns(t2 - t1), computeOutputNs: ns(t3 - t2) }),
      );
    } catch (e) {
      const err = e instanceof ServeError ? e : new ServeError((e as Error).message, 400, 'BACKEND');
      for (const r of reqs) r.reject(err);
    } finally {
      this.inFlight -= reqs.length;
      this.busy.set(dev(ctx), (this.busy.get(dev(ctx)) ?? 1) - 1);
      this.idle.push(ctx);
      this.pump();
    }
  }
}

const dev = (i: Instance) => i.device ?? 'cpu';

function shapeKey(inputs: Record<string, ServeTensor>, outputs: string[]): string {
  return Object.keys(inputs)
    .sort()
    .map((k) => `${k}:${inputs[k].type}:${inputs[k].dims.slice(1).join('x')}`)
    .join('|') + `>${outputs.join(',')}`;
}

/** The requests' rows one after the other, then `pad` rows of zeros (empty byte strings for BYTES). */
function concatInputs(reqs: BatchRequest[], pad = 0): Record<string, ServeTensor> {
  const feeds: Record<string, ServeTensor> = {};
  for (const name of Object.keys(reqs[0].inputs)) {
    const first = reqs[0].inputs[name];
    const rows = reqs.reduce((s, r) => s + r.inputs[name].dims[0], 0);
    const dims = [rows + pad, ...first.dims.slice(1)];
    const perRow = first.dims.slice(1).reduce((a, b) => a * b, 1);
    if (first instanceof BytesTensor) {
      feeds[name] = new BytesTensor([...reqs.flatMap((r) => (r.inputs[name] as BytesTensor).data), ...Array.from({ length: pad * perRow }, () => new Uint8Array(0))], dims);
      continue;
    }
    const total = reqs.reduce((s, r) => s + r.inputs[name].size, 0) + pad * perRow;
    const Ctor = (first.data as object).constructor as new (n: number) => { set(a: ArrayLike<unknown>, o: number): void };
    const data = new Ctor(total);
    let off = 0;
    for (const r of reqs) {
      data.set(r.inputs[name].data as ArrayLike<unknown>, off);
      off += r.inputs[name].size;
    }
    feeds[name] = new Tensor(first.type, data as never, dims);
  }
  return feeds;
}

function pickOutputs(out: Record<string, unknown>, names: string[]): Record<string, ServeTensor> {
  const r: Record<string, ServeTensor> = {};
  for (const n of names) r[n] = asTensor(out[n], n);
  return r;
}

function asTensor(v: unknown, name: string): ServeTensor {
  if (!(v instanceof Tensor) && !(v instanceof BytesTensor)) throw new ServeError(`output '${name}' is not a tensor; the server can only return tensors.`, 500, 'BACKEND');
  return v;
}

/** Each request's rows of the outputs; rows past the requests' (padding) are dropped. */
function splitOutputs(out: Record<string, unknown>, reqs: BatchRequest[], rows: number): Record<string, ServeTensor>[] {
  const parts = reqs.map(() => ({}) as Record<string, ServeTensor>);
  for (const name of new Set(reqs.flatMap((r) => r.outputs))) {
    const t = asTensor(out[name], name);
    if (t.dims[0] !== rows) throw new ServeError(`output '${name}' has ${t.dims[0]} rows for a batch of ${rows}; this model cannot be batched (set max_batch_size to 0).`, 500, 'BACKEND');
    const per = t.size / rows;
    let row = 0;
    reqs.forEach((r, i) => {
      const dims = [r.batch, ...t.dims.slice(1)];
      if (r.outputs.includes(name)) {
        parts[i][name] = t instanceof BytesTensor
          ? new BytesTensor(t.data.slice(row * per, (row + r.batch) * per), dims)
          : new Tensor(t.type as TensorType, (t.data as unknown as { slice(a: number, b: number): unknown }).slice(row * per, (row + r.batch) * per) as never, dims);
      }
      row += r.batch;
    });
  }
  return parts;
}

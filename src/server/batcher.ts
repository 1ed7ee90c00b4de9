// Dynamic batcher: one queue per model version, served by its execution contexts (the instance group). Requests
// with the same non-batch shape are concatenated along dim 0 up to a preferred size within the queue delay, run
// once, and the outputs split back.
import { Tensor, type TensorType } from '../index.js';
import type { Instance } from './instances.js';

export class ServeError extends Error {
  constructor(message: string, readonly status: number, readonly reason = 'OTHER') {
    super(message);
  }
}

export interface BatchRequest {
  inputs: Record<string, Tensor>;
  outputs: string[];
  /** Rows along dim 0 (1 when the model does not batch). */
  batch: number;
  enqueued: number;
  deadline: number;
  resolve: (r: BatchResult) => void;
  reject: (e: Error) => void;
}

export interface BatchResult {
  outputs: Record<string, Tensor>;
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
  onExec?: (batchSize: number, requests: number) => void;
}

const ns = (ms: number) => Math.round(ms * 1e6);

export class Batcher {
  private queue: BatchRequest[] = [];
  private idle: Instance[];
  private timer: NodeJS.Timeout | undefined;
  private inFlight = 0;
  private drainWaiters: (() => void)[] = [];
  private closed = false;

  constructor(contexts: Instance[], private opts: BatcherOptions) {
    this.idle = [...contexts];
  }

  get pending(): number {
    return this.queue.length + this.inFlight;
  }

  submit(inputs: Record<string, Tensor>, outputs: string[], batch: number, timeoutUs?: number): Promise<BatchResult> {
    if (this.closed) return Promise.reject(new ServeError('the model is being unloaded; request rejected.', 503, 'REJECTED'));
    if (this.queue.length >= this.opts.maxQueueSize) {
      return Promise.reject(new ServeError(`the model's queue is full (${this.opts.maxQueueSize} requests waiting); retry later.`, 429, 'REJECTED'));
    }
    const t = timeoutUs ?? this.opts.defaultTimeoutUs;
    return new Promise((resolve, reject) => {
      const now = performance.now();
      this.queue.push({ inputs, outputs, batch, enqueued: now, deadline: t > 0 ? now + t / 1000 : Infinity, resolve, reject });
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

  private pump(): void {
    this.expire();
    while (this.idle.length > 0 && this.queue.length > 0) {
      const take = this.pick();
      if (take === 0) return;
      const ctx = this.idle.pop()!;
      void this.execute(ctx, this.queue.splice(0, take));
    }
    if (this.pending === 0) for (const w of this.drainWaiters.splice(0)) w();
  }

  private expire(): void {
    const now = performance.now();
    const keep: BatchRequest[] = [];
    for (const r of this.queue) {
      if (r.deadline <= now) r.reject(new ServeError('the request timed out while waiting in the queue.', 504, 'REJECTED'));
      else keep.push(r);
    }
    this.queue = keep;
  }

  /** How many queued requests to run now as one batch; 0 to wait for more (a timer is set). */
  private pick(): number {
    const o = this.opts;
    if (!o.dynamic || o.maxBatchSize === 0) return 1;
    const sig = shapeKey(this.queue[0]);
    let rows = 0;
    let n = 0;
    for (const r of this.queue) {
      if (shapeKey(r) !== sig || rows + r.batch > o.maxBatchSize) break;
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
      const feeds = reqs.length === 1 ? reqs[0].inputs : concatInputs(reqs);
      const wanted = [...new Set(reqs.flatMap((r) => r.outputs))];
      const t1 = performance.now();
      const out = await ctx.run(feeds, wanted);
      const t2 = performance.now();
      const parts = reqs.length === 1 ? [pickOutputs(out, reqs[0].outputs)] : splitOutputs(out, reqs);
      const t3 = performance.now();
      const rows = reqs.reduce((s, r) => s + r.batch, 0);
      this.opts.onExec?.(rows, reqs.length);
      reqs.forEach((r, i) =>
        r.resolve({ outputs: parts[i], queueNs: ns(t0 - r.enqueued), computeInputNs: ns(t1 - t0), computeInferNs: ns(t2 - t1), computeOutputNs: ns(t3 - t2) }),
      );
    } catch (e) {
      const err = e instanceof ServeError ? e : new ServeError((e as Error).message, 400, 'BACKEND');
      for (const r of reqs) r.reject(err);
    } finally {
      this.inFlight -= reqs.length;
      this.idle.push(ctx);
      this.pump();
    }
  }
}

function shapeKey(r: BatchRequest): string {
  return Object.keys(r.inputs)
    .sort()
    .map((k) => `${k}:${r.inputs[k].type}:${r.inputs[k].dims.slice(1).join('x')}`)
    .join('|') + `>${r.outputs.join(',')}`;
}

function concatInputs(reqs: BatchRequest[]): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const name of Object.keys(reqs[0].inputs)) {
    const first = reqs[0].inputs[name];
    const rows = reqs.reduce((s, r) => s + r.inputs[name].dims[0], 0);
    const total = reqs.reduce((s, r) => s + r.inputs[name].size, 0);
    const Ctor = (first.data as object).constructor as new (n: number) => { set(a: ArrayLike<unknown>, o: number): void };
    const data = new Ctor(total);
    let off = 0;
    for (const r of reqs) {
      data.set(r.inputs[name].data as ArrayLike<unknown>, off);
      off += r.inputs[name].size;
    }
    feeds[name] = new Tensor(first.type, data as never, [rows, ...first.dims.slice(1)]);
  }
  return feeds;
}

function pickOutputs(out: Record<string, unknown>, names: string[]): Record<string, Tensor> {
  const r: Record<string, Tensor> = {};
  for (const n of names) r[n] = asTensor(out[n], n);
  return r;
}

function asTensor(v: unknown, name: string): Tensor {
  if (!(v instanceof Tensor)) throw new ServeError(`output '${name}' is not a tensor; the server can only return tensors.`, 500, 'BACKEND');
  return v;
}

function splitOutputs(out: Record<string, unknown>, reqs: BatchRequest[]): Record<string, Tensor>[] {
  const rows = reqs.reduce((s, r) => s + r.batch, 0);
  const parts = reqs.map(() => ({}) as Record<string, Tensor>);
  for (const name of new Set(reqs.flatMap((r) => r.outputs))) {
    const t = asTensor(out[name], name);
    if (t.dims[0] !== rows) throw new ServeError(`output '${name}' has ${t.dims[0]} rows for a batch of ${rows}; this model cannot be batched (set max_batch_size to 0).`, 500, 'BACKEND');
    const per = t.size / rows;
    let row = 0;
    reqs.forEach((r, i) => {
      const data = (t.data as unknown as { slice(a: number, b: number): unknown }).slice(row * per, (row + r.batch) * per);
      if (r.outputs.includes(name)) parts[i][name] = new Tensor(t.type as TensorType, data as never, [r.batch, ...t.dims.slice(1)]);
      row += r.batch;
    });
  }
  return parts;
}

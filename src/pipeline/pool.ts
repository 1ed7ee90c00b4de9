// Executors run single items. The inline one works in the calling thread (libvips still decodes on libuv's thread
// pool); the worker pool spreads items over worker threads, a few in flight per worker, so the fused pass and
// sharp's JavaScript side run off the main thread too. The GPU executor plugs in beside these: it implements
// Executor over the same ResolvedSpec (a batch-wide form suits it better: nvJPEG decodes the batch, then one NVRTC
// kernel does resize, crop, flip, normalize, layout and dtype straight into the engine's input binding), and
// Pipeline.create picks it when asked for the 'cuda' device.
import os from 'node:os';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { InputError } from '../ir/errors.js';
import { processItem, type ItemResult, type PipelineItem } from './decode.js';
import { lookupTable } from './pack.js';
import type { ResolvedSpec } from './spec.js';
import type { WorkerReply, WorkerTask } from './worker.js';

export interface Executor {
  /** Decode and preprocess one item (its index seeds its random crop/flip). */
  run(item: PipelineItem, index: number): Promise<ItemResult>;
  close(): Promise<void>;
}

export function inlineExecutor(spec: ResolvedSpec): Executor {
  const lut = lookupTable(spec);
  return { run: (item, index) => processItem(item, spec, lut, index), close: async () => {} };
}

/** The worker's module; from TypeScript sources (tests, tsx) it first registers tsx's loader. */
function workerSource(): [string | URL, { eval?: boolean }] {
  if (!import.meta.url.endsWith('.ts')) return [new URL('./worker.js', import.meta.url), {}];
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const worker = new URL('./worker.ts', import.meta.url).href;
  return [`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(worker)}); });`, { eval: true }];
}

interface Pending {
  task: WorkerTask;
  resolve: (r: ItemResult) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  busy: Map<number, Pending>;
}

export class WorkerPool implements Executor {
  private slots: Slot[] = [];
  private queue: Pending[] = [];
  private nextId = 0;
  private closed = false;

  private constructor(private spec: ResolvedSpec, private perWorker: number) {}

  /** Start `threads` workers (default: one per core, at most 4) and wait until they are ready. */
  static async create(spec: ResolvedSpec, threads = Math.min(4, os.availableParallelism()), perWorker = 2): Promise<WorkerPool> {
    if (!Number.isSafeInteger(threads) || threads < 1) throw new InputError(`pipeline workers must be a positive integer, got ${threads}.`);
    const pool = new WorkerPool(spec, perWorker);
    await Promise.all(Array.from({ length: threads }, () => pool.spawn(true)));
    return pool;
  }

  /** The worker threads (for monitoring; a worker that exits is replaced and its items fail). */
  get threads(): readonly Worker[] {
    return this.slots.map((s) => s.worker);
  }

  private spawn(waitReady: boolean): Promise<void> {
    const [src, how] = workerSource();
    const slot: Slot = { worker: new Worker(src, { ...how, workerData: { spec: this.spec } }), busy: new Map() };
    this.slots.push(slot);
    const ready = new Promise<void>((resolve, reject) => {
      slot.worker.once('message', () => resolve());
      slot.worker.once('error', reject);
    });
    slot.worker.on('message', (m: WorkerReply | 'ready') => this.reply(slot, m));
    slot.worker.on('error', (e: Error) => this.lost(slot, `failed: ${e.message}`));
    slot.worker.on('exit', (code) => this.lost(slot, `exited with code ${code}`));
    return waitReady ? ready : Promise.resolve();
  }

  private reply(slot: Slot, m: WorkerReply | 'ready') {
    if (m === 'ready') return;
    const p = slot.busy.get(m.id);
    if (!p) return;
    slot.busy.delete(m.id);
    if ('error' in m) p.reject(new InputError(m.error));
    else p.resolve({ data: m.data, dims: m.dims });
    this.pump();
  }

  private lost(slot: Slot, why: string) {
    const i = this.slots.indexOf(slot);
    if (i < 0) return;
    this.slots.splice(i, 1);
    for (const p of slot.busy.values()) p.reject(new InputError(`${p.task.item.name}: the pipeline worker ${why} while processing this item.`));
    slot.busy.clear();
    if (this.closed) return;
    void this.spawn(false);
    this.pump();
  }

  private pump() {
    while (this.queue.length) {
      const slot = this.slots.reduce<Slot | undefined>((best, s) => (s.busy.size < this.perWorker && (!best || s.busy.size < best.busy.size) ? s : best), undefined);
      if (!slot) return;
      const p = this.queue.shift()!;
      slot.busy.set(p.task.id, p);
      slot.worker.postMessage(p.task);
    }
  }

  run(item: PipelineItem, index: number): Promise<ItemResult> {
    if (this.closed) return Promise.reject(new InputError('this pipeline was closed.'));
    return new Promise((resolve, reject) => {
      // bytes are copied to the worker (structured clone), leaving the caller's buffer intact
      this.queue.push({ task: { id: this.nextId++, index, item }, resolve, reject });
      this.pump();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.queue.splice(0)) p.reject(new InputError('the pipeline was closed before this item ran.'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
    this.slots = [];
  }
}

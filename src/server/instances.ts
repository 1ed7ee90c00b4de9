// Execution instances of a model version: engine contexts in this thread, engines on worker threads, or a
// ServedModel (non-ONNX). Each carries the device it runs on, so the batcher can spread batches over devices.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { InputError, Tensor, type Engine, type TensorType } from '../index.js';
import { fromEngineOutput, toEngineFeeds, type ServeTensor, type ServedModel } from './model.js';
import type { ThreadMemory, WireTensor } from './worker.js';

export interface Instance {
  /** 'cpu', or 'gpu<N>' for an instance placed on GPU N. */
  readonly device?: string;
  /** `transfer`: the feeds' buffers belong to the caller alone and may be moved instead of copied. */
  run(feeds: Record<string, ServeTensor>, fetches: string[], transfer?: boolean): Promise<Record<string, ServeTensor>>;
  close(): Promise<void>;
  /** The instance thread's memory, for instances on their own thread (metrics, leak checks). */
  memory?(): Promise<ThreadMemory>;
  /** Runs sent to the instance and not answered yet. */
  readonly waiting?: number;
}

function servable(out: Record<string, unknown>): Record<string, ServeTensor> {
  const r: Record<string, ServeTensor> = {};
  for (const [k, v] of Object.entries(out)) if (v instanceof Tensor) r[k] = fromEngineOutput(v);
  return r;
}

export function inThreadInstance(engine: Engine, device = 'cpu'): Instance {
  const ctx = engine.createContext();
  return { device, run: async (f, o) => servable(await ctx.run(toEngineFeeds(f), o)), close: async () => {} };
}

/** A non-ONNX model (see model.ts) as an instance. */
export function modelInstance(model: ServedModel, device = 'cpu'): Instance {
  return { device, run: (f, o) => model.infer(f, o), close: async () => model.close?.() };
}

/** A worker module of this folder; from TypeScript sources (tests, `tsx src/cli/main.ts`) it first registers tsx's loader. */
export function workerSource(name = 'worker'): [string | URL, { eval?: boolean }] {
  if (!import.meta.url.endsWith('.ts')) return [new URL(`./${name}.js`, import.meta.url), {}];
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const worker = new URL(`./${name}.ts`, import.meta.url).href;
  return [`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(worker)}); });`, { eval: true }];
}

/** A worker thread holding its own engine built from the same plan bytes. */
export async function workerInstance(plan: Uint8Array, opts: { deviceId?: number; device?: string; intraOpNumThreads?: number } = {}): Promise<Instance> {
  const copy = plan.slice().buffer;
  const [src, how] = workerSource();
  const workerData = { plan: copy, deviceId: opts.deviceId, intraOpNumThreads: opts.intraOpNumThreads };
  const w = new Worker(src, { ...how, workerData, transferList: [copy] });
  const waiting = new Map<number, { resolve: (v: Record<string, ServeTensor>) => void; reject: (e: Error) => void }>();
  const memoryAsks = new Map<number, { resolve: (m: ThreadMemory) => void; reject: (e: Error) => void }>();
  let next = 0;
  let dead: Error | undefined;
  const fail = (e: Error) => {
    dead = e;
    for (const p of [...waiting.values(), ...memoryAsks.values()]) p.reject(e);
    waiting.clear();
    memoryAsks.clear();
  };
  await new Promise<void>((resolve, reject) => {
    w.once('error', reject);
    w.once('exit', (code) => reject(new InputError(`model worker exited with code ${code} before it was ready.`)));
    w.once('message', () => resolve());
  });
  w.removeAllListeners('error');
  w.removeAllListeners('exit');
  w.on('error', fail);
  w.on('exit', (code) => fail(new InputError(`model worker exited (code ${code}).`)));
  w.on('message', (m: { id: number; outputs?: Record<string, WireTensor>; error?: string; memory?: ThreadMemory }) => {
    if (m.memory) {
      memoryAsks.get(m.id)?.resolve(m.memory);
      memoryAsks.delete(m.id);
      return;
    }
    const p = waiting.get(m.id);
    if (!p) return;
    waiting.delete(m.id);
    if (m.error !== undefined) return p.reject(new InputError(m.error));
    const out: Record<string, ServeTensor> = {};
    for (const [k, t] of Object.entries(m.outputs!)) out[k] = fromEngineOutput(new Tensor(t.type as TensorType, t.data as never, t.dims));
    p.resolve(out);
  });
  return {
    device: opts.device ?? 'cpu',
    run(feeds, fetches, transfer = false) {
      if (dead) return Promise.reject(dead);
      const id = next++;
      const wire: Record<string, WireTensor> = {};
      const moved = new Set<ArrayBuffer>();
      for (const [k, t] of Object.entries(toEngineFeeds(feeds))) {
        wire[k] = { type: t.type, data: t.data as ArrayBufferView, dims: [...t.dims] };
        const d = t.data as unknown as ArrayBufferView;
        if (transfer && ArrayBuffer.isView(d) && d.buffer instanceof ArrayBuffer && d.byteOffset === 0 && d.byteLength === d.buffer.byteLength) moved.add(d.buffer);
      }
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        w.postMessage({ id, feeds: wire, fetches }, [...moved]);
      });
    },
    memory() {
      if (dead) return Promise.reject(dead);
      const id = next++;
      return new Promise((resolve, reject) => {
        memoryAsks.set(id, { resolve, reject });
        w.postMessage({ id, memory: true });
      });
    },
    get waiting() {
      return waiting.size;
    },
    async close() {
      w.removeAllListeners('exit');
      await w.terminate();
    },
  };
}

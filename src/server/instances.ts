// Execution instances of a model version: engine contexts in this thread, or engines on worker threads.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { InputError, Tensor, type Engine, type OnnxValue, type TensorType } from '../index.js';
import type { WireTensor } from './worker.js';

export interface Instance {
  run(feeds: Record<string, Tensor>, fetches: string[]): Promise<Record<string, OnnxValue>>;
  close(): Promise<void>;
}

export function inThreadInstance(engine: Engine): Instance {
  const ctx = engine.createContext();
  return { run: (f, o) => ctx.run(f, o), close: async () => {} };
}

/** The worker's module; from TypeScript sources (tests, `tsx src/cli/main.ts`) it first registers tsx's loader. */
function workerSource(): [string | URL, { eval?: boolean }] {
  if (!import.meta.url.endsWith('.ts')) return [new URL('./worker.js', import.meta.url), {}];
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const worker = new URL('./worker.ts', import.meta.url).href;
  return [`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(worker)}); });`, { eval: true }];
}

/** A worker thread holding its own engine built from the same plan bytes. */
export async function workerInstance(plan: Uint8Array): Promise<Instance> {
  const copy = plan.slice().buffer;
  const [src, how] = workerSource();
  const w = new Worker(src, { ...how, workerData: { plan: copy }, transferList: [copy] });
  const waiting = new Map<number, { resolve: (v: Record<string, OnnxValue>) => void; reject: (e: Error) => void }>();
  let next = 0;
  let dead: Error | undefined;
  const fail = (e: Error) => {
    dead = e;
    for (const p of waiting.values()) p.reject(e);
    waiting.clear();
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
  w.on('message', (m: { id: number; outputs?: Record<string, WireTensor>; error?: string }) => {
    const p = waiting.get(m.id);
    if (!p) return;
    waiting.delete(m.id);
    if (m.error !== undefined) return p.reject(new InputError(m.error));
    const out: Record<string, OnnxValue> = {};
    for (const [k, t] of Object.entries(m.outputs!)) out[k] = new Tensor(t.type as TensorType, t.data as never, t.dims);
    p.resolve(out);
  });
  return {
    run(feeds, fetches) {
      if (dead) return Promise.reject(dead);
      const id = next++;
      const wire: Record<string, WireTensor> = {};
      for (const [k, t] of Object.entries(feeds)) wire[k] = { type: t.type, data: t.data as ArrayBufferView, dims: [...t.dims] };
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        w.postMessage({ id, feeds: wire, fetches });
      });
    },
    async close() {
      w.removeAllListeners('exit');
      await w.terminate();
    },
  };
}

// NVRTC compiles on worker threads. A tactic about to time several candidate kernels submits them all; the workers
// compile them concurrently while the builder, which needs each cubin synchronously (timing runs inside one kernel
// call), blocks in `take` until the one it needs is done. No thread starts until something is submitted, so running
// a plan never starts one.
// Hand-off: each submitted batch carries a shared claim word per job (0 = free, else who took it); a worker claims
// the oldest free job, compiles it and posts the result on its own MessagePort, then bumps a shared counter. The main
// thread sleeps on that counter (Atomics.wait) and reads results with receiveMessageOnPort, which needs no event loop
// turn. A job nobody has claimed yet when the main thread asks for it is claimed and compiled by the main thread
// itself (it would otherwise sit idle), as is one whose worker died.
import os from 'node:os';
import { Worker, MessageChannel, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';

export interface CompileJob {
  /** the cache key of this compile (cubin-cache.ts): equal keys are one job */
  key: string;
  source: string;
  name: string;
  sm: number;
  options: string[];
}

export type CompileResult = { cubin: Uint8Array } | { error: string; kiln: boolean };

/** Where a worker finds the compiler: the URL of a module and the name of its CubinCompiler export. */
export interface CompilerRef {
  module: string;
  export: string;
}

const MAX_WORKERS = 64;
const MAX_IDS = 1024; // worker ids are never reused (a terminated worker's flag stays put); pools restart after idling
const MAIN = -1; // the claim mark of the main thread (workers mark id + 1)
const IDLE_MS = 10_000; // workers are ended once every job is done and nothing new came for this long

// Each worker: load the compiler module (a .ts one, when Kiln itself runs from its sources, through tsx's loader),
// then compile claimed jobs until none is free. Plain JavaScript: it runs as is in every setting.
const WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const { port, signal, alive, id, module: url, export: name } = workerData;
const wake = () => { Atomics.add(signal, 0, 1); Atomics.notify(signal, 0); };
const fatal = (e) => {
  Atomics.store(alive, id, 0);
  try { port.postMessage({ fatal: String((e && e.stack) || e) }); } finally { wake(); }
  process.exit(1);
};
process.on('uncaughtException', fatal);
const batches = [];
let compiler;
function work() {
  for (;;) {
    let job;
    while (batches.length && !job) {
      const b = batches[0];
      while (b.next < b.jobs.length && Atomics.compareExchange(b.states, b.next, 0, id + 1) !== 0) b.next++;
      if (b.next < b.jobs.length) job = b.jobs[b.next++];
      else batches.shift();
    }
    if (!job) return;
    let msg;
    try {
      msg = { key: job.key, cubin: compiler.compile(job.source, job.name, job.sm, job.options) };
    } catch (e) {
      msg = { key: job.key, error: String((e && e.message) || e), kiln: !!e && e.name === 'KilnError' };
    }
    port.postMessage(msg);
    wake();
  }
}
async function load() {
  if (!url.endsWith('.ts')) return import(url);
  const { createRequire } = require('node:module');
  const api = createRequire(url).resolve('tsx/esm/api').replace(/\\.cjs$/, '.mjs');
  return (await import(require('node:url').pathToFileURL(api).href)).tsImport(url, url);
}
load().then((m) => {
  compiler = m[name];
  if (!compiler || typeof compiler.compile !== 'function') throw new Error(url + ' has no compiler export ' + name);
  parentPort.on('message', (b) => { batches.push({ jobs: b.jobs, states: b.states, next: 0 }); work(); });
}).catch(fatal);
`;

/** Workers for a machine with `cores` cores: one per core beside the main thread's, at most 15. */
export function poolSize(env: NodeJS.ProcessEnv = process.env, cores = os.availableParallelism()): number {
  const set = env.KILN_NVRTC_THREADS;
  if (set !== undefined && set !== '') {
    const n = Number(set);
    if (!Number.isInteger(n) || n < 0) throw new Error(`KILN_NVRTC_THREADS must be a whole number of threads (0 compiles on the main thread only), not '${set}'`);
    return Math.min(n, MAX_WORKERS);
  }
  return Math.max(0, Math.min(cores - 1, 15));
}

interface Queued {
  states: Int32Array;
  index: number;
}

export class CompilePool {
  private workers: { worker: Worker; port: MessagePort }[] = [];
  private readonly signal = new Int32Array(new SharedArrayBuffer(4));
  private readonly alive = new Int32Array(new SharedArrayBuffer(4 * MAX_IDS));
  private nextId = 0;
  private queued = new Map<string, Queued>();
  private done = new Map<string, CompileResult>();
  private timer?: NodeJS.Timeout;
  /** the first fatal error of a worker (its compiler module could not be loaded): later submits are refused */
  broken?: string;
  /** compiles finished by workers (tests and benchmarks read it) */
  compiled = 0;

  /** `onCompiled` sees every cubin a worker made, whether or not it is ever taken (the disk cache stores them). */
  constructor(private readonly ref: CompilerRef, private readonly size: number, private readonly onCompiled: (key: string, cubin: Uint8Array) => void = () => undefined) {}

  /** workers running now */
  get threads(): number {
    return this.liveCount();
  }

  /** Queue jobs (ones already queued or done are skipped); starts workers up to the pool size as needed. */
  submit(jobs: CompileJob[]): void {
    if (this.broken || this.size === 0) return;
    const fresh = jobs.filter((j, i) => !this.queued.has(j.key) && !this.done.has(j.key) && jobs.findIndex((o) => o.key === j.key) === i);
    if (!fresh.length) return;
    const states = new Int32Array(new SharedArrayBuffer(4 * fresh.length));
    fresh.forEach((j, index) => this.queued.set(j.key, { states, index }));
    const want = Math.min(this.size, this.liveCount() + fresh.length);
    while (this.liveCount() < want && this.nextId < MAX_IDS) this.start();
    for (const w of this.workers) w?.worker.postMessage({ jobs: fresh, states });
    this.armIdle();
  }

  /**
   * The result of a submitted job, waiting while a worker compiles it. Undefined when the pool does not have it
   * (never submitted, or claimed by the main thread just now): the caller compiles it itself.
   */
  take(key: string): CompileResult | undefined {
    const q = this.queued.get(key);
    if (!q && !this.done.has(key)) return undefined;
    for (;;) {
      const seen = Atomics.load(this.signal, 0);
      this.drain();
      const r = this.done.get(key);
      if (r) {
        this.done.delete(key);
        this.queued.delete(key);
        return r;
      }
      const by = Atomics.compareExchange(q!.states, q!.index, 0, MAIN);
      if (by === 0 || (by > 0 && Atomics.load(this.alive, by - 1) === 0)) {
        this.queued.delete(key);
        return undefined;
      }
      Atomics.wait(this.signal, 0, seen, 1000);
    }
  }

  /** Whether every submitted job has its result (reads what workers posted so far; never waits). */
  idle(): boolean {
    this.drain();
    return [...this.queued.keys()].every((k) => this.done.has(k));
  }

  /** End the workers (results already received stay available). */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const w of this.workers) {
      if (!w) continue;
      w.port.close();
      void w.worker.terminate();
    }
    this.workers = [];
  }

  private liveCount(): number {
    return this.workers.filter((w, id) => w && Atomics.load(this.alive, id) === 1).length;
  }

  private start(): void {
    const id = this.nextId++;
    const { port1, port2 } = new MessageChannel();
    Atomics.store(this.alive, id, 1);
    const worker = new Worker(WORKER, {
      eval: true,
      workerData: { port: port2, signal: this.signal, alive: this.alive, id, module: this.ref.module, export: this.ref.export },
      transferList: [port2],
    });
    worker.unref(); // idle workers never keep the process alive
    worker.on('error', () => undefined); // reported through the port (fatal); this only keeps Node from rethrowing
    this.workers[id] = { worker, port: port1 };
  }

  /** Move every posted result into `done` (synchronous: works while the event loop is blocked in `take`). */
  private drain(): void {
    for (const w of this.workers) {
      if (!w) continue;
      let m;
      while ((m = receiveMessageOnPort(w.port))) {
        const msg = m.message as { key: string; cubin?: Uint8Array; error?: string; kiln?: boolean; fatal?: string };
        if (msg.fatal !== undefined) {
          this.broken ??= msg.fatal; // every worker loads the same module: one failing means all do
          continue;
        }
        if (msg.cubin) {
          this.compiled++;
          this.done.set(msg.key, { cubin: msg.cubin });
          this.onCompiled(msg.key, msg.cubin);
        } else this.done.set(msg.key, { error: msg.error ?? 'unknown error', kiln: !!msg.kiln });
      }
    }
  }

  /** End the workers once nothing is queued and nothing was submitted for a while. */
  private armIdle(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (this.idle()) this.close();
      else this.armIdle();
    }, IDLE_MS);
    this.timer.unref();
  }
}

// Loading a compiled kernel library with koffi and calling into it. Every layer function takes eight pointers
// (inputs, packed weights, output; unused ones null) and the run-time batch; packing functions take the raw weights and return a buffer
// the library allocated (aligned for the microkernels). Async calls run on a libuv worker thread, so a large layer
// does not block the event loop; small layers are called synchronously (a thread handoff costs more than they do).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';

type KoffiFn = ((...args: unknown[]) => unknown) & { async: (...args: unknown[]) => void };
interface KoffiLib {
  func(decl: string): KoffiFn;
}
interface Koffi {
  load(path: string): KoffiLib;
}

let koffi: Koffi | null | undefined;
let koffiError = '';

/** koffi, or null (with the reason in `nativeUnavailable()`) where it cannot load on this platform. */
export function loadKoffi(): Koffi | null {
  if (koffi === undefined) {
    try {
      koffi = createRequire(import.meta.url)('koffi') as Koffi;
    } catch (e) {
      koffi = null;
      koffiError = (e as Error).message.split('\n')[0];
    }
  }
  return koffi;
}

export const nativeUnavailable = (): string => (loadKoffi() ? '' : `koffi could not load (${koffiError})`);

export type Ptr = unknown;
const loaded = new Map<string, KoffiLib>();
export const LAYER_ARGS = 8;

export class NativeLibrary {
  private fns = new Map<string, KoffiFn>();
  private lib: KoffiLib;
  private setThreads: KoffiFn;
  private freeFn: KoffiFn;
  private syms: ((name: string) => unknown) | null | undefined;
  private chainFn: KoffiFn | undefined;

  /** Write the library to a file named by its hash (the loader needs a path) and load it. */
  constructor(readonly bytes: Uint8Array) {
    const k = loadKoffi();
    if (!k) throw new Error(`cannot load compiled CPU kernels: ${nativeUnavailable()}`);
    const dir = path.join(os.tmpdir(), `kiln-cpu-lib-${os.userInfo().uid}`);
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 32)}.so`);
    if (!fs.existsSync(file) || fs.statSync(file).size !== bytes.length) {
      const tmp = `${file}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, bytes);
      fs.renameSync(tmp, file);
    }
    // koffi unloads a library whose object is collected, but the library's pool threads live on: keep it for good
    let lib = loaded.get(file);
    if (!lib) loaded.set(file, (lib = k.load(file)));
    this.lib = lib;
    this.setThreads = this.lib.func('void kiln_set_threads(int)');
    this.freeFn = this.lib.func('void kiln_free(void *)');
  }

  threads(n: number): void {
    this.setThreads(n);
  }

  /** The code a layer recorded for bad run-time data since the last call (0: none), cleared; 0 where the library
   * predates the error word (older plans). */
  takeError(): number {
    if (this.errFn === undefined) {
      try {
        this.errFn = this.lib.func('int64_t kiln_take_error(void)');
      } catch {
        this.errFn = null;
      }
    }
    return this.errFn ? Number(this.errFn()) : 0;
  }
  private errFn: KoffiFn | null | undefined;

  private layerFn(name: string): KoffiFn {
    let f = this.fns.get(name);
    if (!f) {
      f = this.lib.func(`void ${name}(${Array(LAYER_ARGS).fill('void *').join(', ')}, int)`);
      this.fns.set(name, f);
    }
    return f;
  }

  /** Pack constant inputs once; returns the library's buffer (free it with `free`). */
  pack(name: string, args: Ptr[]): Ptr {
    return this.lib.func(`void *${name}(void *, void *)`)(...args, ...Array(2 - args.length).fill(null));
  }

  free(p: Ptr): void {
    this.freeFn(p);
  }

  callSync(name: string, args: Ptr[], batch: number): void {
    this.layerFn(name)(...pad(args), batch);
  }

  /** A layer function's address (for chains), or undefined where the library has no symbol table (older plans). */
  symbol(name: string): bigint | undefined {
    if (this.syms === undefined) {
      try {
        const f = this.lib.func('void *kiln_symbol(const char *)');
        this.syms = (n: string) => f(n);
      } catch {
        this.syms = null;
      }
    }
    const p = this.syms?.(name);
    return p ? (loadKoffi() as unknown as { address(p: unknown): bigint }).address(p) : undefined;
  }

  /** Run a chain of layer calls (records from \`chainRecord\`) in one foreign call, on a worker thread unless \`sync\`. */
  runChain(prog: BigInt64Array, n: number, sync: boolean): Promise<void> | void {
    // void *: koffi passes the array's address as is; as int64_t * it copied the program in and back on every call
    this.chainFn ??= this.lib.func('void kiln_run_chain(void *, int)');
    if (sync) return void this.chainFn(prog, n);
    return new Promise((resolve, reject) => {
      this.chainFn!.async(prog, n, (err: unknown) => (err ? reject(err) : resolve()));
    });
  }

  /** A replayed run (see replay.ts): the thread count, the chain and the error word (see \`takeError\`) in one
   * foreign call, on a worker thread unless \`sync\`; resolves to the error code. Where the library predates
   * kiln_run_replay, or a bench or test hook has replaced \`runChain\` (to see or time every chain), the three calls
   * go one by one through \`runChain\`. */
  runReplay(prog: BigInt64Array, n: number, threads: number, sync: boolean): number | Promise<number> {
    if (this.replayFn === undefined) {
      try {
        this.replayFn = this.lib.func('int64_t kiln_run_replay(void *, int, int)');
      } catch {
        this.replayFn = null;
      }
    }
    const f = this.replayFn;
    if (!f || this.runChain !== ownRunChain) {
      this.threads(threads);
      if (sync) {
        this.runChain(prog, n, true);
        return this.takeError();
      }
      return (this.runChain(prog, n, false) as Promise<void>).then(() => this.takeError());
    }
    if (sync) return Number(f(prog, n, threads));
    return new Promise((resolve, reject) => {
      f.async(prog, n, threads, (err: unknown, code: bigint | number) => (err ? reject(err) : resolve(Number(code))));
    });
  }
  private replayFn: KoffiFn | null | undefined;

  /**
   * One layer call timed \`reps\` times by the calling thread's CPU clock (ns each) with \`evict\` (typed arrays, or
   * library buffers from \`pack\`) written back and evicted from the caches before each (kiln_time_cold); undefined
   * where the library predates it or has no symbol table.
   */
  timeCold(name: string, args: Ptr[], batch: number, evict: Ptr[], reps: number): Float64Array | undefined {
    if (this.coldFn === undefined) {
      try {
        this.coldFn = this.lib.func('void kiln_time_cold(void *, void *, int, int, void *)');
        this.sizeFn = this.lib.func('int64_t kiln_alloc_bytes(void *)');
      } catch {
        this.coldFn = null;
      }
    }
    const fn = this.coldFn ? this.symbol(name) : undefined;
    if (!this.coldFn || fn === undefined) return undefined;
    const prog = new BigInt64Array(10);
    chainRecord(prog, 0, fn, pad(args), batch);
    const ranges = new BigInt64Array(evict.length * 2);
    evict.forEach((p, i) => {
      const view = ArrayBuffer.isView(p) ? p : undefined;
      ranges[2 * i] = addressOf(p);
      ranges[2 * i + 1] = view ? BigInt(view.byteLength) : BigInt(this.sizeFn!(p) as number | bigint);
    });
    const out = new Float64Array(reps);
    this.coldFn(prog, ranges, evict.length, reps, out);
    return out;
  }
  private coldFn: KoffiFn | null | undefined;
  private sizeFn: KoffiFn | undefined;

  /** Starts tracing into \`buf\` (kiln_trace: each layer run appends its function's address and the clock), or with
   * null stops; returns the words the trace before this call wrote. */
  trace(buf: BigInt64Array | null): number {
    this.traceFn ??= this.lib.func('int kiln_trace(void *, int)');
    return this.traceFn(buf, buf ? buf.length : 0) as number;
  }
  private traceFn: KoffiFn | undefined;

  callAsync(name: string, args: Ptr[], batch: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.layerFn(name).async(...pad(args), batch, (err: unknown) => (err ? reject(err) : resolve()));
    });
  }
}

/**
 * Reads \`words\` of a trace (NativeLibrary.trace, kiln_trace's format: {0, clock} where a chain starts, {function,
 * clock} after each layer call, {-9 or -8, clock} where a pool worker or the caller went to sleep): \`onRecord\` gets
 * each call's function and its time since the call before it or its chain's start (ms), \`onSleep\` each sleep
 * (worker or not) in order among them. Returns the first chain's start and the last call's end (the clock, ns), or
 * undefined where no call was traced.
 */
export function readTrace(buf: BigInt64Array, words: number, onRecord: (fn: bigint, ms: number) => void,
  onSleep?: (worker: boolean) => void): { start: bigint; end: bigint } | undefined {
  let prev = 0n, start: bigint | undefined, end: bigint | undefined;
  for (let i = 0; i + 1 < Math.min(words, buf.length); i += 2) {
    const f = buf[i], t = buf[i + 1];
    if (f === -9n || f === -8n) {
      onSleep?.(f === -9n);
      continue;
    }
    if (f === 0n) start ??= t;
    else {
      onRecord(f, Number(t - prev) / 1e6);
      end = t;
    }
    prev = t;
  }
  return start !== undefined && end !== undefined ? { start, end } : undefined;
}

/** The address of a typed array's first element (move small arrays off V8's heap first: see offHeap in build.ts). */
export function addressOf(a: unknown): bigint {
  return (loadKoffi() as unknown as { address(p: unknown): bigint }).address(a);
}

/** Fills record \`i\` of a chain program: the function's address, its pointer arguments (typed arrays or library
 * pointers; absent: null) and the batch. */
export function chainRecord(prog: BigInt64Array, i: number, fn: bigint, args: Ptr[], batch: number): void {
  prog[i * 10] = fn;
  for (let a = 0; a < LAYER_ARGS; a++) prog[i * 10 + 1 + a] = args[a] ? addressOf(args[a]) : 0n;
  prog[i * 10 + 9] = BigInt(batch);
}

const pad = (args: Ptr[]) => (args.length === LAYER_ARGS ? args : [...args, ...Array(LAYER_ARGS - args.length).fill(null)]);

// the library's own runChain, to tell when a hook has replaced it (see runReplay)
const ownRunChain = NativeLibrary.prototype.runChain;

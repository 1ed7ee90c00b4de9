// NVRTC: CUDA C -> cubin for the device's SM, at build time. Plans store the cubins, so running needs no compiler.
// A build compiles each kernel once per machine: cubins are kept in memory for the process and on disk across
// processes (cubin-cache.ts), and a tactic's candidate kernels compile concurrently on worker threads
// (nvrtc-pool.ts) when it prefetches them.
import { KilnError } from '../../../ir/errors.js';
import { loadLibrary } from './libs.js';
import { cubinCacheDir, cubinKey, readCubin, writeCubin } from './cubin-cache.js';
import { CompilePool, poolSize, type CompileJob, type CompilerRef } from './nvrtc-pool.js';

type Fn = (...args: any[]) => any;
let api: Record<string, Fn> | undefined;

function load(): Record<string, Fn> {
  if (api) return api;
  const lib = loadLibrary('NVRTC', ['libnvrtc.so', 'libnvrtc.so.13', 'libnvrtc.so.12', 'libnvrtc.so.*']);
  api = {
    version: lib.func('int nvrtcVersion(_Out_ int *major, _Out_ int *minor)'),
    create: lib.func('int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, const char **headers, const char **includeNames)'),
    compile: lib.func('int nvrtcCompileProgram(void *prog, int numOptions, const char **options)'),
    logSize: lib.func('int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *size)'),
    log: lib.func('int nvrtcGetProgramLog(void *prog, _Out_ uint8_t *log)'),
    cubinSize: lib.func('int nvrtcGetCUBINSize(void *prog, _Out_ size_t *size)'),
    cubin: lib.func('int nvrtcGetCUBIN(void *prog, _Out_ uint8_t *cubin)'),
    destroy: lib.func('int nvrtcDestroyProgram(_Inout_ void **prog)'),
    errorString: lib.func('const char *nvrtcGetErrorString(int status)'),
  };
  return api;
}

export function nvrtcAvailable(): string | undefined {
  try {
    load();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** What compiles kernels: NVRTC, or a stand-in in tests. Workers load it by module URL and export name. */
export interface CubinCompiler {
  /** names the compiler build in cache keys: cubins from another NVRTC version are not reused */
  version(): string;
  /** CUDA C -> cubin; failures throw with the kernel name, the SM and the compiler's log */
  compile(source: string, name: string, sm: number, options: string[]): Uint8Array;
}

export const nvrtcCompiler: CubinCompiler = {
  version() {
    const major = [0], minor = [0];
    load().version(major, minor);
    return `nvrtc ${major[0]}.${minor[0]}`;
  },
  compile(source, name, sm, options) {
    const n = load();
    const prog: unknown[] = [null];
    let st = n.create(prog, source, `${name}.cu`, 0, null, null);
    if (st !== 0) throw new KilnError(`NVRTC could not create program ${name}: ${n.errorString(st)}`);
    try {
      st = n.compile(prog[0], options.length, options);
      if (st !== 0) {
        const size = [0];
        n.logSize(prog[0], size);
        const log = Buffer.alloc(Number(size[0]));
        n.log(prog[0], log);
        throw new KilnError(`NVRTC failed to compile kernel ${name} for sm_${sm}: ${n.errorString(st)}\n${log.toString('utf8').slice(0, 4000)}`);
      }
      const size = [0];
      n.cubinSize(prog[0], size);
      const out = Buffer.alloc(Number(size[0]));
      n.cubin(prog[0], out);
      return new Uint8Array(out);
    } finally {
      n.destroy(prog);
    }
  },
};

const NVRTC_REF: CompilerRef = { module: import.meta.url, export: 'nvrtcCompiler' };
let compiler: CubinCompiler = nvrtcCompiler;
let compilerRef = NVRTC_REF;
let pool: CompilePool | undefined;
let version: string | undefined;
const cache = new Map<string, Uint8Array>();
let disabled = false;
let warned = false;

/** Refuse to compile from now on (tests that prove a plan runs from its stored cubins alone). */
export function disableNvrtc(): void {
  disabled = true;
}

/**
 * Compile with `c` from now on (tests: a stand-in for NVRTC; no arguments: NVRTC again); `ref` is where worker
 * threads import the same compiler from. Forgets the cubins compiled so far and ends the worker threads.
 */
export function setCubinCompiler(c: CubinCompiler = nvrtcCompiler, ref: CompilerRef = NVRTC_REF): void {
  pool?.close();
  pool = undefined;
  compiler = c;
  compilerRef = ref;
  version = undefined;
  cache.clear();
  disabled = false;
  warned = false;
}

/** The worker pool, if a prefetch started one (tests and benchmarks read its counters). */
export const cubinPool = (): CompilePool | undefined => pool;

/** NVRTC's options for a kernel: an architecture among the extra options (sm_90a for wgmma) replaces the device's. */
function nvrtcOptions(sm: number, extraOptions: string[]): string[] {
  const arch = extraOptions.some((o) => o.startsWith('--gpu-architecture=')) ? [] : [`--gpu-architecture=sm_${sm}`];
  return [...arch, '--std=c++17', '-default-device', ...extraOptions];
}

const memoryKey = (options: string[], name: string, source: string) => `${options.join(' ')}|${name}|${source}`;

function job(source: string, name: string, sm: number, extraOptions: string[]): CompileJob & { mem: string } {
  const options = nvrtcOptions(sm, extraOptions);
  version ??= compiler.version();
  return { key: cubinKey(version, options, name, source), mem: memoryKey(options, name, source), source, name, sm, options };
}

/**
 * Compile CUDA C to a cubin for `sm` (e.g. 90). Results are cached per source, in memory and on disk; a compile
 * that a prefetch handed to a worker thread is waited for.
 */
export function compileCubin(source: string, name: string, sm: number, extraOptions: string[] = []): Uint8Array {
  const hit = cache.get(memoryKey(nvrtcOptions(sm, extraOptions), name, source));
  if (hit) return hit;
  if (disabled) throw new KilnError(`kernel ${name} is not in the plan and NVRTC is disabled; rebuild the plan on this GPU.`);
  const j = job(source, name, sm, extraOptions);
  const dir = cubinCacheDir();
  const r = pool?.take(j.key);
  if (pool?.broken) warnOnce(`Kiln: NVRTC worker threads could not start, so kernels compile on the main thread: ${pool.broken.split('\n')[0]}`);
  if (r && 'error' in r) throw r.kiln ? new KilnError(r.error) : new Error(r.error);
  let cubin = r?.cubin ?? (dir ? readCubin(dir, j.key) : undefined);
  if (!cubin) {
    cubin = compiler.compile(source, name, sm, j.options);
    if (dir) writeCubin(dir, j.key, cubin);
  }
  cache.set(j.mem, cubin);
  return cubin;
}

/**
 * Start compiling kernels a tactic is about to try, on worker threads (what the disk cache already holds is read
 * now instead); `compileCubin` then takes each result. Fewer than two compiles start no thread. Never throws: a
 * prefetch is only a head start, and whatever fails here `compileCubin` does again (or reports) for its kernel.
 */
export function prefetchCubins(kernels: { source: string; name: string; sm: number; extraOptions?: string[] }[]): void {
  if (disabled || !kernels.length) return;
  try {
    const size = poolSize();
    if (size === 0) return;
    const dir = cubinCacheDir();
    const todo: CompileJob[] = [];
    for (const k of kernels) {
      const j = job(k.source, k.name, k.sm, k.extraOptions ?? []);
      if (cache.has(j.mem)) continue;
      const disk = dir ? readCubin(dir, j.key) : undefined;
      if (disk) cache.set(j.mem, disk);
      else todo.push(j);
    }
    if (todo.length < 2 && !pool?.threads) return;
    pool ??= new CompilePool(compilerRef, size, (key, cubin) => {
      const d = cubinCacheDir();
      if (d) writeCubin(d, key, cubin);
    });
    pool.submit(todo);
  } catch (e) {
    warnOnce(`Kiln: kernels compile on the main thread only: ${(e as Error).message.split('\n')[0]}`);
  }
}

function warnOnce(message: string): void {
  if (warned) return;
  warned = true;
  process.emitWarning(message);
}

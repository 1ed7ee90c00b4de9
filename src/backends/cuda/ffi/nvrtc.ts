// NVRTC: CUDA C -> cubin for the device's SM, at build time. Plans store the cubins, so running needs no compiler.
import { KilnError } from '../../../ir/errors.js';
import { loadLibrary } from './libs.js';

type Fn = (...args: any[]) => any;
let api: Record<string, Fn> | undefined;

function load(): Record<string, Fn> {
  if (api) return api;
  const lib = loadLibrary('NVRTC', ['libnvrtc.so', 'libnvrtc.so.13', 'libnvrtc.so.12', 'libnvrtc.so.*']);
  api = {
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

const cache = new Map<string, Uint8Array>();
let disabled = false;
/** Refuse to compile from now on (tests that prove a plan runs from its stored cubins alone). */
export function disableNvrtc(): void {
  disabled = true;
}

/** Compile CUDA C to a cubin for `sm` (e.g. 90). Results are cached per source. */
export function compileCubin(source: string, name: string, sm: number, extraOptions: string[] = []): Uint8Array {
  const key = `${sm}|${extraOptions.join(' ')}|${source}`;
  const hit = cache.get(key);
  if (hit) return hit;
  if (disabled) throw new KilnError(`kernel ${name} is not in the plan and NVRTC is disabled; rebuild the plan on this GPU.`);
  const n = load();
  const prog: unknown[] = [null];
  let st = n.create(prog, source, `${name}.cu`, 0, null, null);
  if (st !== 0) throw new KilnError(`NVRTC could not create program ${name}: ${n.errorString(st)}`);
  try {
    // an architecture among the extra options (sm_90a for wgmma) replaces the device's plain one
    const arch = extraOptions.some((o) => o.startsWith('--gpu-architecture=')) ? [] : [`--gpu-architecture=sm_${sm}`];
    const opts = [...arch, '--std=c++17', '-default-device', ...extraOptions];
    st = n.compile(prog[0], opts.length, opts);
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
    const cubin = new Uint8Array(out);
    cache.set(key, cubin);
    return cubin;
  } finally {
    n.destroy(prog);
  }
}

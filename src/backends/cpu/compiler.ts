// Finding and invoking the system C compiler. The ISA is chosen from the host's CPU flags and passed as explicit
// -m flags (with -mtune=native), so the plan's device signature names exactly what the code needs. Libraries and
// their units' objects are cached on disk by the hash of their sources, flags and compiler version.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';

export type Isa = 'avx512' | 'avx2' | 'portable';

export interface Compiler {
  path: string;
  version: string;
}

const ISA_FLAGS: Record<Isa, string[]> = {
  avx512: ['-mavx512f', '-mavx512vl', '-mavx512bw', '-mavx512dq', '-mavx2', '-mfma', '-mprefer-vector-width=512'],
  avx2: ['-mavx2', '-mfma'],
  portable: [],
};

let flags: string | undefined;
/** Whether this x86-64 CPU has a feature flag (as /proc/cpuinfo names it; false where there is no /proc/cpuinfo). */
export function hasCpuFlag(f: string): boolean {
  if (flags === undefined) {
    try {
      flags = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1] ?? '';
    } catch {
      flags = '';
    }
  }
  return process.arch === 'x64' && new RegExp(`\\b${f}\\b`).test(flags);
}

/** The widest vector ISA this CPU has that the kernels use. */
export function hostIsa(): Isa {
  if (['avx512f', 'avx512vl', 'avx512bw', 'avx512dq', 'avx2', 'fma'].every((f) => hasCpuFlag(f))) return 'avx512';
  if (hasCpuFlag('avx2') && hasCpuFlag('fma')) return 'avx2';
  return 'portable';
}

let found: Compiler | null | undefined;

/**
 * The C compiler: $KILN_CC (a path, or 'none' to build without native kernels), else cc, gcc, clang on PATH.
 * Returns null when there is none.
 */
export function findCompiler(): Compiler | null {
  if (found !== undefined) return found;
  const env = process.env.KILN_CC;
  const candidates = env ? (env === 'none' ? [] : [env]) : ['cc', 'gcc', 'clang'];
  found = null;
  for (const c of candidates) {
    try {
      const version = execFileSync(c, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0];
      found = { path: c, version };
      break;
    } catch {
      // not installed or not runnable: try the next one
    }
  }
  return found;
}

/** Forget the compiler found (tests switch KILN_CC). */
export function resetCompiler(): void {
  found = undefined;
}

export function compileFlags(isa: Isa): string[] {
  const tune = process.arch === 'x64' ? ['-mtune=native'] : [];
  return ['-O3', '-std=gnu11', '-fPIC', '-pthread', '-fvisibility=hidden', ...ISA_FLAGS[isa], ...tune];
}

const cacheDir = () => path.join(os.tmpdir(), `kiln-cpu-cache-${os.userInfo().uid}`);
const hash = (x: unknown) => crypto.createHash('sha256').update(JSON.stringify(x)).digest('hex').slice(0, 32);

/** Write a file so that a reader never sees it half written (other processes share the cache). */
function writeAtomic(file: string, bytes: Uint8Array | string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, bytes);
  fs.renameSync(tmp, file);
}

/**
 * Compile translation units (sharing `header`) into one shared library and return its bytes. Libraries are cached
 * whole, and each unit's object on its own: the runtime unit (GEMM tiles, thread pool, int8) is the same for every
 * model of one ISA and is the slowest to compile, so a new model only compiles its layers. Missing units compile in
 * parallel, one compiler process each.
 */
export function compileLibrary(cc: Compiler, isa: Isa, header: string, units: string[]): Uint8Array {
  const flags = compileFlags(isa);
  const dir = cacheDir();
  const lib = path.join(dir, `${hash([cc.version, flags, header, units])}.so`);
  if (fs.existsSync(lib)) return fs.readFileSync(lib);
  fs.mkdirSync(dir, { recursive: true });
  const objs = units.map((u) => path.join(dir, `${hash([cc.version, flags, header, u])}.o`));
  const work = fs.mkdtempSync(path.join(dir, 'build-'));
  fs.writeFileSync(path.join(work, 'kiln.h'), header);
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const missing = units.flatMap((u, i) => (fs.existsSync(objs[i]) ? [] : [i]));
  for (const i of missing) fs.writeFileSync(path.join(work, `u${i}.c`), `#include "kiln.h"\n${units[i]}`);
  const script = [
    ...missing.map((i) => `${q(cc.path)} ${flags.join(' ')} -c u${i}.c -o u${i}.o 2>u${i}.err & p${i}=$!`),
    ...missing.map((i) => `wait $p${i} || { cat u${i}.err >&2; exit 1; }`),
  ].join('\n');
  const run = (sh: string, what: string) => {
    try {
      execFileSync('sh', ['-c', sh], { cwd: work, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 16 << 20 });
    } catch (e) {
      const err = String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).slice(0, 4000);
      throw new Error(`the C compiler '${cc.path}' failed ${what} Kiln's generated kernels (kept in ${work}):\n${err}`, { cause: e });
    }
  };
  if (missing.length) run(script, 'on');
  for (const i of missing) writeAtomic(objs[i], fs.readFileSync(path.join(work, `u${i}.o`)));
  run(`${q(cc.path)} -shared -pthread ${objs.map(q).join(' ')} -o lib.so -lm`, 'linking');
  const bytes = fs.readFileSync(path.join(work, 'lib.so'));
  writeAtomic(lib, bytes);
  fs.rmSync(work, { recursive: true, force: true });
  return bytes;
}

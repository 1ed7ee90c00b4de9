// Parallel kernel compiles: prefetched kernels compile on worker threads and compileCubin waits for each one, with a
// stand-in compiler that worker threads import by URL like NVRTC's (no GPU needed).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { compileCubin, cubinPool, prefetchCubins, setCubinCompiler, type CubinCompiler } from '../../../src/backends/cuda/ffi/nvrtc.js';
import { poolSize } from '../../../src/backends/cuda/ffi/nvrtc-pool.js';
import { KilnError } from '../../../src/ir/errors.js';
import { fakeCompiler, readFake } from './fake-cubin-compiler.js';

const REF = { module: new URL('./fake-cubin-compiler.ts', import.meta.url).href, export: 'fakeCompiler' };
const saved = { ...process.env };
let dir: string;
let onMain: string[];
const counting: CubinCompiler = {
  version: () => fakeCompiler.version(),
  compile: (source, name, sm, options) => {
    onMain.push(name);
    return fakeCompiler.compile(source, name, sm, options);
  },
};
const kernel = (name: string, body = '') => ({ source: `extern "C" __global__ void ${name}() { ${body} }`, name, sm: 90 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Wait, with the event loop free (workers start and post), until every prefetched kernel is compiled. */
async function settle(): Promise<void> {
  for (let i = 0; i < 1200 && !cubinPool()!.idle(); i++) await sleep(25);
  expect(cubinPool()!.idle()).toBe(true);
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-pool-test-'));
  process.env.KILN_CACHE_DIR = dir;
  process.env.KILN_NVRTC_THREADS = '2';
  onMain = [];
  setCubinCompiler(counting, REF);
});

afterEach(() => {
  process.env = { ...saved };
  setCubinCompiler();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('compile pool size', () => {
  it('is one worker per core beside the main thread, at most 15, or KILN_NVRTC_THREADS', () => {
    expect(poolSize({}, 16)).toBe(15);
    expect(poolSize({}, 64)).toBe(15);
    expect(poolSize({}, 2)).toBe(1);
    expect(poolSize({}, 1)).toBe(0);
    expect(poolSize({ KILN_NVRTC_THREADS: '4' }, 16)).toBe(4);
    expect(poolSize({ KILN_NVRTC_THREADS: '0' }, 16)).toBe(0);
    expect(() => poolSize({ KILN_NVRTC_THREADS: 'lots' }, 16)).toThrow(/KILN_NVRTC_THREADS must be a whole number/);
  });
});

describe('prefetched compiles', () => {
  it('start no thread when nothing, or only one kernel, is prefetched', () => {
    compileCubin(kernel('a').source, 'a', 90);
    prefetchCubins([kernel('b')]);
    expect(cubinPool()).toBeUndefined();
    prefetchCubins([kernel('a'), kernel('b')]); // 'a' is known already: one compile left
    expect(cubinPool()).toBeUndefined();
    expect(onMain).toEqual(['a']);
  });

  it('compile on worker threads; compileCubin waits for each and gets its own cubin in any order', async () => {
    const ks = Array.from({ length: 6 }, (_, i) => kernel(`k${i}`, 'SLEEP 100'));
    prefetchCubins(ks);
    expect(cubinPool()!.threads).toBe(2);
    await settle();
    for (const k of [...ks].reverse()) {
      const c = readFake(compileCubin(k.source, k.name, 90));
      expect(c).toMatchObject({ name: k.name, source: k.source, sm: 90 });
      expect(c.thread).not.toBe(0);
    }
    expect(onMain).toEqual([]);
    expect(cubinPool()!.compiled).toBe(6);
  });

  it('block until a slow compile on a worker finishes', async () => {
    const started = path.join(dir, 'started');
    const slow = kernel('slow', `MARK ${started} SLEEP 1000`);
    prefetchCubins([slow, kernel('other')]);
    for (let i = 0; i < 1200 && !fs.existsSync(started); i++) await sleep(25); // a worker has it now
    expect(fs.existsSync(started)).toBe(true);
    const c = readFake(compileCubin(slow.source, 'slow', 90));
    expect(c.name).toBe('slow');
    expect(c.thread).not.toBe(0);
    expect(onMain.includes('slow')).toBe(false);
  });

  it('are taken over by the main thread when it asks before any worker claimed them, each compiled once', () => {
    const ks = Array.from({ length: 8 }, (_, i) => kernel(`m${i}`));
    prefetchCubins(ks);
    for (const k of ks) expect(readFake(compileCubin(k.source, k.name, 90)).name).toBe(k.name);
    expect(onMain.length + cubinPool()!.compiled).toBe(8);
  });

  it('surface a worker compile error exactly as a main-thread compile does', async () => {
    let mainError: unknown;
    try {
      fakeCompiler.compile('FAIL', 'bad', 90, []);
    } catch (e) {
      mainError = e;
    }
    prefetchCubins([{ source: 'FAIL', name: 'bad', sm: 90 }, kernel('good')]);
    await settle();
    let err: unknown;
    try {
      compileCubin('FAIL', 'bad', 90);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KilnError);
    expect((err as Error).message).toBe((mainError as Error).message);
    expect(onMain).toEqual([]);
    expect(() => compileCubin('FAIL', 'bad', 90)).toThrow((mainError as Error).message); // retried, on the main thread now
    expect(onMain).toEqual(['bad']);
  });

  it('store what workers compiled on disk, for the next process', async () => {
    const ks = [kernel('d0'), kernel('d1'), kernel('d2')];
    prefetchCubins(ks);
    await settle();
    for (const k of ks) compileCubin(k.source, k.name, 90);
    expect(fs.readdirSync(path.join(dir, 'cubins')).filter((f) => f.endsWith('.cubin'))).toHaveLength(3);
    setCubinCompiler(counting, REF);
    prefetchCubins(ks); // all on disk: no thread
    expect(cubinPool()).toBeUndefined();
    for (const k of ks) expect(readFake(compileCubin(k.source, k.name, 90)).name).toBe(k.name);
    expect(onMain).toEqual([]);
  });

  it('fall back to the main thread, with a warning, when workers cannot load the compiler', async () => {
    setCubinCompiler(counting, { module: REF.module, export: 'noSuchCompiler' });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      const ks = [kernel('f0'), kernel('f1'), kernel('f2')];
      prefetchCubins(ks);
      for (let i = 0; i < 1200 && (cubinPool()!.idle(), !cubinPool()!.broken); i++) await sleep(25);
      for (const k of ks) expect(readFake(compileCubin(k.source, k.name, 90)).name).toBe(k.name);
      expect(onMain).toEqual(['f0', 'f1', 'f2']);
      expect(cubinPool()!.broken).toMatch(/has no compiler export noSuchCompiler/);
      await sleep(10);
      expect(warnings.join('\n')).toMatch(/NVRTC worker threads could not start/);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('a bad KILN_NVRTC_THREADS warns and compiles on the main thread (the prefetch never throws)', async () => {
    process.env.KILN_NVRTC_THREADS = 'many';
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      expect(() => prefetchCubins([kernel('w0'), kernel('w1')])).not.toThrow();
      expect(cubinPool()).toBeUndefined();
      compileCubin(kernel('w0').source, 'w0', 90);
      expect(onMain).toEqual(['w0']);
      await sleep(10);
      expect(warnings.join('\n')).toMatch(/KILN_NVRTC_THREADS must be a whole number/);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('KILN_NVRTC_THREADS=0 compiles everything on the main thread', () => {
    process.env.KILN_NVRTC_THREADS = '0';
    prefetchCubins([kernel('z0'), kernel('z1')]);
    expect(cubinPool()).toBeUndefined();
    compileCubin(kernel('z0').source, 'z0', 90);
    expect(onMain).toEqual(['z0']);
  });
});

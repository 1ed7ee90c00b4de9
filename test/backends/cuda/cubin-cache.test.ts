// The cubin cache on disk and compileCubin's use of it, with a stand-in compiler (no GPU needed).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cubinCacheDir, cubinKey, readCubin, writeCubin } from '../../../src/backends/cuda/ffi/cubin-cache.js';
import { compileCubin, disableNvrtc, setCubinCompiler, type CubinCompiler } from '../../../src/backends/cuda/ffi/nvrtc.js';
import { fakeCompiler, readFake } from './fake-cubin-compiler.js';

const REF = { module: new URL('./fake-cubin-compiler.ts', import.meta.url).href, export: 'fakeCompiler' };
const saved = { ...process.env };
let dir: string;
let compiles: string[];
const counting: CubinCompiler = {
  version: () => fakeCompiler.version(),
  compile: (source, name, sm, options) => {
    compiles.push(name);
    return fakeCompiler.compile(source, name, sm, options);
  },
};
const entries = () => fs.readdirSync(path.join(dir, 'cubins')).filter((f) => f.endsWith('.cubin'));

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-cubin-test-'));
  process.env.KILN_CACHE_DIR = dir;
  delete process.env.KILN_CUBIN_CACHE;
  compiles = [];
  setCubinCompiler(counting, REF);
});

afterEach(() => {
  process.env = { ...saved };
  setCubinCompiler();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('cubin cache folder', () => {
  it('follows KILN_CACHE_DIR, then XDG_CACHE_HOME, then ~/.cache, and KILN_CUBIN_CACHE=0 turns it off', () => {
    expect(cubinCacheDir({ KILN_CACHE_DIR: '/x/y' })).toBe(path.join('/x/y', 'cubins'));
    expect(cubinCacheDir({ XDG_CACHE_HOME: '/xdg' })).toBe(path.join('/xdg', 'kiln', 'cubins'));
    expect(cubinCacheDir({})).toBe(path.join(os.homedir(), '.cache', 'kiln', 'cubins'));
    expect(cubinCacheDir({ KILN_CUBIN_CACHE: '0', KILN_CACHE_DIR: '/x/y' })).toBeUndefined();
  });
});

describe('cubin cache entries', () => {
  it('key changes with the compiler version, options, kernel name and source', () => {
    const base = cubinKey('nvrtc 13.0', ['--gpu-architecture=sm_90'], 'k', 'src');
    expect(cubinKey('nvrtc 13.0', ['--gpu-architecture=sm_90'], 'k', 'src')).toBe(base);
    expect(new Set([
      base,
      cubinKey('nvrtc 13.1', ['--gpu-architecture=sm_90'], 'k', 'src'),
      cubinKey('nvrtc 13.0', ['--gpu-architecture=sm_90a'], 'k', 'src'),
      cubinKey('nvrtc 13.0', ['--gpu-architecture=sm_90'], 'k2', 'src'),
      cubinKey('nvrtc 13.0', ['--gpu-architecture=sm_90'], 'k', 'src '),
    ]).size).toBe(5);
  });

  it('round-trips, and a missing, truncated, corrupt or foreign entry reads as absent', () => {
    const cubin = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 255);
    const key = cubinKey('v', [], 'k', 's');
    const file = path.join(dir, 'cubins', `${key}.cubin`);
    expect(readCubin(path.join(dir, 'cubins'), key)).toBeUndefined();
    writeCubin(path.join(dir, 'cubins'), key, cubin);
    expect(readCubin(path.join(dir, 'cubins'), key)).toEqual(cubin);
    expect(fs.readdirSync(path.join(dir, 'cubins'))).toEqual([`${key}.cubin`]); // no temp files left behind
    const good = fs.readFileSync(file);
    fs.writeFileSync(file, good.subarray(0, good.length - 10));
    expect(readCubin(path.join(dir, 'cubins'), key)).toBeUndefined();
    const flipped = Buffer.from(good);
    flipped[500] ^= 1;
    fs.writeFileSync(file, flipped);
    expect(readCubin(path.join(dir, 'cubins'), key)).toBeUndefined();
    fs.writeFileSync(file, cubin); // the bytes alone, without the header
    expect(readCubin(path.join(dir, 'cubins'), key)).toBeUndefined();
    fs.writeFileSync(file, good.subarray(0, 20));
    expect(readCubin(path.join(dir, 'cubins'), key)).toBeUndefined();
  });

  it('a folder that cannot be written is skipped without an error', () => {
    const blocker = path.join(dir, 'file');
    fs.writeFileSync(blocker, 'not a folder');
    expect(() => writeCubin(path.join(blocker, 'cubins'), 'k', new Uint8Array(4))).not.toThrow();
    expect(readCubin(path.join(blocker, 'cubins'), 'k')).toBeUndefined();
  });
});

describe('compileCubin with the disk cache', () => {
  it('compiles on a miss, reads the entry in a later process, and recompiles over a corrupt one', () => {
    const a = compileCubin('extern "C" __global__ void a() {}', 'a', 90);
    expect(readFake(a)).toMatchObject({ name: 'a', sm: 90, options: ['--gpu-architecture=sm_90', '--std=c++17', '-default-device'] });
    expect(compiles).toEqual(['a']);
    expect(compileCubin('extern "C" __global__ void a() {}', 'a', 90)).toBe(a); // same process: memory
    expect(entries()).toHaveLength(1);

    setCubinCompiler(counting, REF); // a new process: memory is empty, the disk is not
    expect(compileCubin('extern "C" __global__ void a() {}', 'a', 90)).toEqual(a);
    expect(compiles).toEqual(['a']);

    const file = path.join(dir, 'cubins', entries()[0]);
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 0xff;
    fs.writeFileSync(file, bytes);
    setCubinCompiler(counting, REF);
    expect(compileCubin('extern "C" __global__ void a() {}', 'a', 90)).toEqual(a);
    expect(compiles).toEqual(['a', 'a']);
    setCubinCompiler(counting, REF);
    compileCubin('extern "C" __global__ void a() {}', 'a', 90); // the rewritten entry is good again
    expect(compiles).toEqual(['a', 'a']);
  });

  it('keeps one entry per source, SM and options', () => {
    compileCubin('s1', 'k', 90);
    compileCubin('s2', 'k', 90);
    compileCubin('s1', 'k', 89);
    compileCubin('s1', 'k', 90, ['--gpu-architecture=sm_90a']);
    compileCubin('s1', 'k', 90); // memory hit
    expect(compiles).toHaveLength(4);
    expect(entries()).toHaveLength(4);
    expect(readFake(compileCubin('s1', 'k', 90, ['--gpu-architecture=sm_90a'])).options).toEqual(['--std=c++17', '-default-device', '--gpu-architecture=sm_90a']);
  });

  it('KILN_CUBIN_CACHE=0 writes and reads nothing', () => {
    process.env.KILN_CUBIN_CACHE = '0';
    compileCubin('s', 'k', 90);
    setCubinCompiler(counting, REF);
    compileCubin('s', 'k', 90);
    expect(compiles).toEqual(['k', 'k']);
    expect(fs.existsSync(path.join(dir, 'cubins'))).toBe(false);
  });

  it('a failed compile throws the compiler error and caches nothing', () => {
    expect(() => compileCubin('FAIL', 'bad', 90)).toThrow(/NVRTC failed to compile kernel bad for sm_90: NVRTC_ERROR_COMPILATION\nerror: 'FAIL'/);
    expect(() => compileCubin('FAIL', 'bad', 90)).toThrow(/kernel bad/);
    expect(compiles).toEqual(['bad', 'bad']);
    expect(fs.existsSync(path.join(dir, 'cubins'))).toBe(false);
  });

  it('disabled NVRTC refuses kernels it has not compiled, even ones on disk', () => {
    compileCubin('s', 'k', 90);
    setCubinCompiler(counting, REF);
    disableNvrtc();
    expect(() => compileCubin('s', 'k', 90)).toThrow(/kernel k is not in the plan and NVRTC is disabled/);
  });
});

// A stand-in for NVRTC in the cubin cache and compile pool tests (no GPU, no CUDA libraries): its "cubin" spells out
// what it was asked to compile and on which thread, and source markers make it slow (SLEEP <ms>), fail (FAIL) or
// say that it started (MARK <file>: creates the file).
// Worker threads import this module by URL, like the real compiler's.
import fs from 'node:fs';
import { threadId } from 'node:worker_threads';
import { KilnError } from '../../../src/ir/errors.js';
import type { CubinCompiler } from '../../../src/backends/cuda/ffi/nvrtc.js';

export interface FakeCubin {
  name: string;
  sm: number;
  options: string[];
  source: string;
  thread: number;
}

export const fakeCompiler: CubinCompiler = {
  version: () => 'fake 1.0',
  compile(source, name, sm, options) {
    const mark = /MARK (\S+)/.exec(source);
    if (mark) fs.writeFileSync(mark[1], '');
    const sleep = /SLEEP (\d+)/.exec(source);
    if (sleep) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(sleep[1]));
    if (source.includes('FAIL')) throw new KilnError(`NVRTC failed to compile kernel ${name} for sm_${sm}: NVRTC_ERROR_COMPILATION\nerror: 'FAIL' is undefined`);
    const cubin: FakeCubin = { name, sm, options, source, thread: threadId };
    return new TextEncoder().encode(JSON.stringify(cubin));
  },
};

export const readFake = (b: Uint8Array): FakeCubin => JSON.parse(new TextDecoder().decode(b)) as FakeCubin;

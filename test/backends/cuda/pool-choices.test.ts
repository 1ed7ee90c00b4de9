// poolChoices (ffi/cublaslt.ts): after the build's device run, layers of one shape (choice keys equal but for the layer
// name) take the candidate with the least summed time, so identical layers run one kernel and the pick rests on every
// layer's repetitions instead of one layer's five. No GPU: the times are set by hand. Also the timing hold's kernel
// (device.ts HOLD: what timeOnStream queues each timed run behind) compiles cleanly where nvcc is on the PATH.
import { afterEach, describe, expect, it } from 'vitest';
import { choiceSets, choiceTimes, gemmChoices, poolChoices } from '../../../src/backends/cuda/ffi/cublaslt.js';
import { HOLD } from '../../../src/backends/cuda/device.js';
import { expectCleanCompile, hasNvcc } from '../../helpers/nvcc.js';

const set = (key: string, times: number[], list?: string) => {
  choiceTimes.set(key, times);
  gemmChoices.set(key, times.indexOf(Math.min(...times)));
  if (list !== undefined) choiceSets.set(key, list);
};

afterEach(() => {
  choiceTimes.clear();
  choiceSets.clear();
  gemmChoices.clear();
  delete process.env.KILN_POOL_CHOICES;
});

describe('tactic choices pooled per shape', () => {
  it('gives every layer of a shape the candidate with the least summed time', () => {
    // layer 0 alone would pick 1, layer 1 alone 0; summed, 0 wins (10.0 + 10.9 < 10.5 + 11.5)
    set('qgemm|c7|ffn1.0|1024x3072x768|int8|float16', [10.0, 9.9, 12]);
    set('qgemm|c7|ffn1.1|1024x3072x768|int8|float16', [10.9, 11.5, 12]);
    set('qgemm|c7|ffn1.2|1024x3072x768|int8|float16', [10.1, 10.0, 12]);
    // another shape keeps its own pick
    set('qgemm|c7|ffn2.0|1024x768x3072|int8|float16', [5, 4, 6]);
    expect(poolChoices()).toBe(2);
    expect(['ffn1.0', 'ffn1.1', 'ffn1.2'].map((l) => gemmChoices.get(`qgemm|c7|${l}|1024x3072x768|int8|float16`))).toEqual([0, 0, 0]);
    expect(gemmChoices.get('qgemm|c7|ffn2.0|1024x768x3072|int8|float16')).toBe(1);
  });

  it('keeps shapes apart by every field but the layer name (revision, flags), and skips a candidate that failed anywhere', () => {
    set('attn|a4|l0|8x12|128x128x64x64|float16|N|q0213', [3, 2, 9]);
    set('attn|a4|l1|8x12|128x128x64x64|float16|N|q0213', [3, Infinity, 9]);
    set('attn|a4|l2|8x12|128x128x64x64|float16|N', [3, 2, 9]);
    set('qgemm|c5|l3|8x12|128x128x64x64|float16|N|q0213', [3, 2, 9]);
    poolChoices();
    expect(gemmChoices.get('attn|a4|l0|8x12|128x128x64x64|float16|N|q0213')).toBe(0);
    expect(gemmChoices.get('attn|a4|l1|8x12|128x128x64x64|float16|N|q0213')).toBe(0);
    expect(gemmChoices.get('attn|a4|l2|8x12|128x128x64x64|float16|N')).toBe(1);
    expect(gemmChoices.get('qgemm|c5|l3|8x12|128x128x64x64|float16|N|q0213')).toBe(1);
  });

  it('pools only layers whose candidate lists are alike: an index names a kernel within its own list', () => {
    // same shape key, same list length, but the second layer's list is made up otherwise (e.g. no cuBLASLt, one more
    // TMA tile): its index 1 is another kernel, so neither layer may take the other's times
    set('qgemm|c7|l0|512x256x64|int8|int8|conv', [2, 1, 3], 'staged,3,1,1,1,0,0,-');
    set('qgemm|c7|l1|512x256x64|int8|int8|conv', [1, 3, 2], 'staged,3,1,0,2,0,0,-');
    set('qgemm|c7|l2|512x256x64|int8|int8|conv', [2.5, 1.2, 3], 'staged,3,1,1,1,0,0,-');
    expect(poolChoices()).toBe(0);
    expect(['l0', 'l1', 'l2'].map((l) => gemmChoices.get(`qgemm|c7|${l}|512x256x64|int8|int8|conv`))).toEqual([1, 0, 1]);
  });

  it('KILN_POOL_CHOICES=0 keeps each layer\'s own pick', () => {
    set('qgemm|c7|a|64x64x64|int8|float16', [1, 2]);
    set('qgemm|c7|b|64x64x64|int8|float16', [2, 1.5]);
    process.env.KILN_POOL_CHOICES = '0';
    expect(poolChoices()).toBe(0);
    expect(gemmChoices.get('qgemm|c7|b|64x64x64|int8|float16')).toBe(1);
  });
});

describe.skipIf(!hasNvcc)('the tactic timing hold', () => {
  it('spins one warp on the global timer, takes its duration by value, compiles cleanly for sm_90', () => {
    expect(HOLD.source).toMatch(/KNAME|kiln_hold_\w+\(unsigned long long ns\)/);
    expect(HOLD.source).toContain('%%globaltimer');
    expect(HOLD.grid).toEqual([1, 1, 1]);
    expectCleanCompile([['hold', HOLD.source]]);
  }, 60_000);
});

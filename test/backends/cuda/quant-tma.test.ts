// The TMA-fed, warp-specialized int8 GEMM (codegen/quant-tma.ts): launch shape, tensor-map boxes, the producer /
// consumer split (setmaxnreg only where one block holds the SM), the staged epilogue reused with barriers among the
// consumers only, errors for what it does not take, and (where nvcc is on the PATH) an sm_90a compile of each tile with
// no warnings, spills or local memory. Outputs are held byte for byte to the cp.async wgmma kernel on a GPU by
// bench/quant/gpu-layers.ts (main: every plain GEMM shape of BERT-base and ResNet-50, fp16 out + residual + second
// output, uint8 A, head split) and bench/quant/tma-check.ts (whole models, run + graph replay).
import { describe, expect, it } from 'vitest';
import { expectCleanCompile, hasNvcc } from '../../helpers/nvcc.js';
import { qgemmTma, TMA_PP_TILES, TMA_TILES } from '../../../src/backends/cuda/codegen/quant-tma.js';
import { qgemm, type QGemmArgs } from '../../../src/backends/cuda/codegen/quant.js';
import { TMA_CANDIDATES, TMA_PP_CANDIDATES, tmaCandidates } from '../../../src/backends/cuda/ops-quant-tma.js';
import { encodeTensorMap2d, pointerArray } from '../../../src/backends/cuda/ffi/driver.js';
import type { CudaDevice } from '../../../src/backends/cuda/device.js';

const qkv: QGemmArgs = { M: 1024, N: 2304, K: 768, a: 'int8', activation: '', params: [], out: 'float16', staged: true, wgmma: true };
const conv1x1: QGemmArgs = { M: 32 * 56 * 56, N: 256, K: 64, a: 'uint8', activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 0, residual: 'float16', staged: true, wgmma: true };

describe('TMA-fed int8 GEMM', () => {
  it('sizes the block, grid, ring and tensor-map boxes from the tile', () => {
    const k = qgemmTma({ ...qkv, tile: { BM: 128, BN: 128 }, occupancy: 2 });
    expect(k.block).toEqual([2 * 128 + 32, 1, 1]); // two consumer warpgroups + a producer warp
    expect(k.grid).toEqual([8, 18, 1]);
    expect(k.sharedBytes).toBe(3 * 256 * 128 + 1024); // 3 stages of (128 + 128) rows x 128 bytes fit twice per SM
    expect(k.tma).toEqual([
      { operand: 0, rows: 1024, cols: 768, boxRows: 128, boxCols: 128, swizzle: 3 },
      { operand: 1, rows: 2304, cols: 768, boxRows: 128, boxCols: 128, swizzle: 3 },
    ]);
    expect(k.params.slice(0, 3)).toEqual([{ kind: 'in', index: 0 }, { kind: 'in', index: 1 }, { kind: 'ws' }]);
    expect(k.arch).toBe('sm_90a');
    // K <= 64: one 64-byte k-step, 64-byte swizzle, and the residual's parameter before the output
    const c = qgemmTma({ ...conv1x1, tile: { BM: 64, BN: 64 }, occupancy: 3 });
    expect(c.tma.map((t) => [t.boxRows, t.boxCols, t.swizzle])).toEqual([[64, 64, 2], [64, 64, 2]]);
    expect(c.params).toEqual([{ kind: 'in', index: 0 }, { kind: 'in', index: 1 }, { kind: 'ws' }, { kind: 'in', index: 3 }, { kind: 'out', index: 0 }]);
    expect(c.source).toMatch(/m64n64k32\.s32\.u8\.s8/);
  });

  it('gives the producer warpgroup\'s registers to the consumers only at one block per SM', () => {
    const one = qgemmTma({ ...qkv, tile: { BM: 128, BN: 256 } }).source;
    const dec = Number(/setmaxnreg\.dec\.sync\.aligned\.u32 (\d+)/.exec(one)![1]), inc = Number(/setmaxnreg\.inc\.sync\.aligned\.u32 (\d+)/.exec(one)![1]);
    expect(one).toMatch(/__launch_bounds__\(384, 1\)/);
    expect(dec * 128 + inc * 256).toBeLessThanOrEqual(65536);
    expect(inc).toBeGreaterThanOrEqual(200); // 128 accumulators per thread at 128x256
    const two = qgemmTma({ ...qkv, tile: { BM: 128, BN: 128 }, occupancy: 2 }).source;
    expect(two).not.toMatch(/setmaxnreg/);
    expect(two).toMatch(/if \(threadIdx\.x >= 256\) \{ \/\/ the producer/); // after the consumers' two warpgroups
  });

  it('runs the staged epilogue with barriers among the consumers only', () => {
    const src = qgemmTma({ ...qkv, tile: { BM: 128, BN: 128 }, occupancy: 2 }).source;
    const tail = src.slice(src.indexOf('wgmma.wait_group.sync.aligned 0'));
    expect(tail).not.toMatch(/__syncthreads/);
    expect(tail.match(/bar\.sync 1, 256;/g)).toHaveLength(2);
    // the same stores as the cp.async kernel's staged epilogue (its second pass, from the float tile on)
    const ref = qgemm({ ...qkv, tile: { BM: 128, BN: 128 } }).source;
    const pass2 = (s: string) => s.slice(s.indexOf('const float4 p0'), s.lastIndexOf('}'));
    expect(pass2(src)).toBe(pass2(ref));
    // one expect_tx per k-step of both boxes' bytes, waits on full / empty slots by parity
    expect(src).toMatch(/mbarrier\.arrive\.expect_tx\.shared::cta\.b64 _, \[%0\], 32768;/);
    expect(src).toMatch(/cp\.async\.bulk\.tensor\.2d\.shared::cluster\.global\.mbarrier::complete_tx::bytes/);
  });

  it('pairs blocks in a cluster that multicast halves of the B tile', () => {
    const k = qgemmTma({ ...qkv, M: 1000, tile: { BM: 128, BN: 128 }, occupancy: 2 }, { cluster: 2 });
    expect(k.grid).toEqual([8, 18, 1]); // 8 M tiles: already whole pairs
    expect(k.tma[1].boxRows).toBe(64);
    expect(k.source).toMatch(/__cluster_dims__\(2, 1, 1\)/);
    expect(k.source).toMatch(/multicast::cluster/);
    expect(k.source).toMatch(/mbarrier\.init\.shared::cta\.b64 \[%0\], 16;/); // 8 consumer warps of each block release a slot
    expect(k.source).not.toMatch(/if \(m0 < 1000\)/);
    const odd = qgemmTma({ ...qkv, M: 1100, tile: { BM: 128, BN: 128 }, occupancy: 2 }, { cluster: 2 });
    expect(odd.grid).toEqual([10, 18, 1]); // 9 tiles padded to 5 pairs; the extra block stores nothing
    expect(odd.source).toMatch(/if \(m0 < 1100\)/);
    // one block: the same text as without the option
    expect(qgemmTma(qkv, { cluster: 1 }).source).toBe(qgemmTma(qkv).source);
  });

  it('offers its candidates to the tactic only for plain integer GEMMs on Hopper', () => {
    const dev = (sm: number) => ({ info: { sm, smCount: 132 } }) as unknown as CudaDevice;
    const made = tmaCandidates(dev(90), qkv, 0);
    expect(made).toHaveLength(TMA_CANDIDATES.length + TMA_PP_CANDIDATES.length); // the ping-pong tiles after the others
    const kernels = made.map((mk) => mk().kernels[0] as ReturnType<typeof qgemmTma>);
    expect(kernels.map((k) => [k.tma[0].boxRows, k.tma[1].boxRows * (/__cluster_dims__/.test(k.source) ? 2 : 1)]))
      .toEqual([...TMA_CANDIDATES, ...TMA_PP_CANDIDATES].map(([BM, BN]) => [BM, BN]));
    expect(kernels.slice(TMA_CANDIDATES.length).map((k) => k.grid[0])).toEqual(TMA_PP_CANDIDATES.map(([, , o]) => 132 * o));
    expect(tmaCandidates(dev(89), qkv, 0)).toEqual([]);
    expect(tmaCandidates(dev(90), { ...qkv, a: 'fp8' }, 0)).toEqual([]);
    expect(tmaCandidates(dev(90), { ...qkv, N: 2300 }, 0)).toEqual([]);
    expect(tmaCandidates(dev(90), { ...qkv, conv: { H: 7, W: 7, C: 512, OH: 7, OW: 7, KH: 3, KW: 3, strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1] } }, 0)).toEqual([]);
    expect(tmaCandidates(dev(90), { ...qkv, qresidual: { a: 'int8', scale: 1, zeroPoint: 0, c: 'int8', cScale: 1, cZeroPoint: 0 } } as QGemmArgs, 0)).toEqual([]);
  });

  it('walks tiles persistently, two consumers taking turns, each with its own staging area', () => {
    const k = qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 } }, { persistent: 132 });
    expect(k.grid).toEqual([132, 1, 1]); // 16 x 18 tiles over 132 blocks
    expect(k.block).toEqual([384, 1, 1]); // two consumer warpgroups + a producer warpgroup (setmaxnreg)
    expect(k.tma.map((t) => t.boxRows)).toEqual([64, 128]);
    const ring = 6 * 192 * 128, stg = 64 * 136 * 4; // staging rows of BN + 8 floats (the split layout)
    expect(k.sharedBytes).toBe(ring + 2 * stg + 1024); // the staging areas come after the ring: no slot is reused
    expect(k.source).toMatch(new RegExp(`const unsigned sbase = ring \\+ ${ring} \\+ cw \\* ${stg};`));
    expect(k.source).toMatch(/const int ntiles = \(287 - \(int\)blockIdx\.x\) \/ 132 \+ 1;/);
    expect(k.source).toMatch(/tile % 16 \* 64, n0 = tile \/ 16 \* 128/);
    // the epilogue's barriers are the consumer's own (1 or 2, 128 threads), its stores the staged epilogue's
    const tail = k.source.slice(k.source.indexOf('the other consumer\'s turn'));
    expect(tail).not.toMatch(/__syncthreads/);
    expect(tail.match(/bar\.sync %0, 128;/g)).toHaveLength(2);
    const ref = qgemm({ ...qkv, tile: { BM: 64, BN: 128 } }).source;
    const pass2 = (s: string) => s.slice(s.indexOf('const float4 p0'), s.lastIndexOf('}'));
    expect(pass2(k.source).slice(0, 400)).toBe(pass2(ref).slice(0, 400));
    // the turn-taking waits: consumer 1 on consumer 0's barrier for tile i - 1 (phase j), consumer 0 on consumer 1's (phase j - 1)
    expect(k.source).toMatch(/if \(i > 0\) kq_bar_wait\(order0 \+ 8 \* \(1 - cw\), \(unsigned\)\(j - 1 \+ cw\) & 1u\);/);
    expect(k.source).toMatch(/mbarrier\.init\.shared::cta\.b64 \[%0\], 4;/); // one consumer's 4 warps release a slot
    // fewer tiles than SMs: one block per tile; two blocks per SM: a producer warp, no setmaxnreg
    expect(qgemmTma({ ...qkv, N: 768, tile: { BM: 64, BN: 128 } }, { persistent: 132 }).grid).toEqual([96, 1, 1]);
    const two = qgemmTma({ ...qkv, tile: { BM: 64, BN: 64 }, occupancy: 2 }, { persistent: 132 });
    expect([two.grid[0], two.block[0]]).toEqual([264, 288]);
    expect(two.source).not.toMatch(/setmaxnreg/);
    expect(() => qgemmTma({ ...qkv, tile: { BM: 128, BN: 128 } }, { persistent: 132 })).toThrow(/ping-pong tile 128x128/);
    expect(() => qgemmTma(qkv, { persistent: 132, cluster: 2 })).toThrow(/no clusters/);
    expect(() => qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 }, occupancy: 2 }, { persistent: 132 })).toThrow(/ring stages/);
  });

  it('passes a tensor map by value in the launch parameters', () => {
    const map = Buffer.alloc(128, 7);
    const [a, b] = pointerArray([map, 0x1234]);
    expect(a).toBe(map); // its 128 bytes, not a pointer to them
    expect(b.readBigUInt64LE()).toBe(0x1234n);
    // the copy engine's alignment, checked before the driver is asked
    expect(() => encodeTensorMap2d(0x1008, 1024, 768, 128, 128, 3)).toThrow(/16-byte aligned address and row pitch, got address 0x1008/);
    expect(() => encodeTensorMap2d(0x1000, 1024, 760, 128, 128, 3)).toThrow(/760-byte rows/);
  });

  it('rejects what it does not take', () => {
    expect(() => qgemmTma({ ...qkv, a: 'fp8' })).toThrow(/integer operands/);
    expect(() => qgemmTma({ ...qkv, conv: { H: 7, W: 7, C: 512, OH: 7, OW: 7, KH: 3, KW: 3, strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1] } })).toThrow(/im2col/);
    expect(() => qgemmTma({ ...qkv, K: 760 })).toThrow(/K % 16/);
    expect(() => qgemmTma({ ...qkv, N: 2300 })).toThrow(/N % 8/);
    expect(() => qgemmTma({ ...qkv, tile: { BM: 64, BN: 32 } })).toThrow(/not one of/);
    expect(() => qgemmTma({ ...qkv, splitK: 2 })).toThrow(/split-K/);
    expect(() => qgemmTma({ ...qkv, stages: 9 })).toThrow(/stages/);
  });

  it.skipIf(!hasNvcc)('compiles every tile for sm_90a with no warnings, spills or local memory', () => {
    const units: [string, string][] = TMA_TILES.flatMap((t) => [1, 2, 3].map((o) => [t, o] as const))
      .filter(([t, o]) => o === 1 || t.BN <= 128)
      .map(([t, o]) => [`t${t.BM}x${t.BN}o${o}`, qgemmTma({ ...qkv, tile: t, occupancy: o }).source]);
    units.push(['conv1x1', qgemmTma({ ...conv1x1, tile: { BM: 128, BN: 128 }, occupancy: 2 }).source]);
    units.push(['heads', qgemmTma({ ...qkv, tile: { BM: 128, BN: 256 }, heads: { S: 128, H: 12, D: 64, parts: 3 } }).source]);
    units.push(['out2', qgemmTma({ ...conv1x1, K: 512, out: 'float16', out2: { store: 'int8', yScale: 0.1, yZeroPoint: 0 }, tile: { BM: 64, BN: 128 }, occupancy: 2 }).source]);
    units.push(['cl2', qgemmTma({ ...qkv, tile: { BM: 128, BN: 128 }, occupancy: 2 }, { cluster: 2 }).source]);
    units.push(['cl2ws', qgemmTma({ ...conv1x1, M: 1568, K: 2048, N: 512, tile: { BM: 128, BN: 256 } }, { cluster: 2 }).source]);
    for (const t of TMA_PP_TILES) for (const o of t.BN === 64 ? [1, 2] : [1]) units.push([`pp${t.BN}o${o}`, qgemmTma({ ...qkv, tile: t, occupancy: o }, { persistent: 132 }).source]);
    units.push(['ppconv', qgemmTma({ ...conv1x1, tile: { BM: 64, BN: 64 }, occupancy: 2 }, { persistent: 132 }).source]);
    units.push(['ppheads', qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 }, heads: { S: 128, H: 12, D: 64, parts: 3 } }, { persistent: 132 }).source]);
    units.push(['ppout2', qgemmTma({ ...conv1x1, K: 512, out: 'float16', out2: { store: 'int8', yScale: 0.1, yZeroPoint: 0 }, tile: { BM: 64, BN: 128 } }, { persistent: 132 }).source]);
    expectCleanCompile(units, 'sm_90a');
  }, 120_000);
});

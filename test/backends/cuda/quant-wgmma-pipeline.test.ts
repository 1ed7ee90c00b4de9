// The wgmma kernel's main-loop options (pipeline depth, drain, split-K): rendered launch shapes, shared memory and
// parameters, the errors for bad combinations, the unsplit loop's text unchanged (cubin caches and saved tactic
// timings stay valid), and (where nvcc is on the PATH) that each variant compiles for sm_90a with no spills and no
// local memory. Results are held byte for byte to the unsplit kernel on a GPU by bench/quant/gpu-layers.ts (main) and
// bench/gpu/quant-check.ts (split-K on whole models).
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { expectCleanCompile, hasNvcc } from '../../helpers/nvcc.js';
import { qgemm, type QGemmArgs } from '../../../src/backends/cuda/codegen/quant.js';
import { splitKWorkspace } from '../../../src/backends/cuda/codegen/quant-wgmma.js';

const ffn2: QGemmArgs = { M: 1024, N: 768, K: 3072, a: 'int8', activation: '', params: [], out: 'float16', wgmma: true, staged: true, tile: { BM: 64, BN: 64 }, occupancy: 4 };
const conv3x3: QGemmArgs = {
  M: 32 * 49, N: 512, K: 9 * 512, a: 'int8', activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 0, wgmma: true, staged: true, tile: { BM: 128, BN: 64 },
  conv: { H: 7, W: 7, C: 512, OH: 7, OW: 7, KH: 3, KW: 3, strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1] },
};
const CASES: Record<string, QGemmArgs> = {
  st6: { ...ffn2, stages: 6, occupancy: 2 },
  drain: { ...ffn2, drain: true, occupancy: 3 },
  st2_drain_short: { ...ffn2, K: 128, stages: 2, drain: true, occupancy: 5 },
  st5_conv: { ...conv3x3, stages: 5, occupancy: 1 },
  splitk3: { ...ffn2, splitK: 3 },
  splitk2_conv_res_out2: { ...conv3x3, splitK: 2, out: 'float16', residual: 'float16', out2: { store: 'int8', yScale: 0.1, yZeroPoint: 0 } },
  splitk2_heads: { ...ffn2, K: 1024, N: 2304, heads: { S: 128, H: 12, D: 64, parts: 3 }, splitK: 2 },
};
const rendered = Object.entries(CASES).map(([key, g]) => [key, qgemm(g)] as const);

describe('wgmma main loop: stages, drain, split-K', () => {
  it('sizes shared memory by the stages (and the staged float tile for two stages)', () => {
    const k = (g: QGemmArgs) => qgemm(g).sharedBytes;
    expect(k(CASES.st6)).toBe(6 * 128 * 128 + 1024);
    expect(k({ ...ffn2 })).toBe(4 * 128 * 128 + 1024); // default: 4 stages on a long reduction
    expect(k(CASES.st2_drain_short)).toBe(Math.max(2 * 128 * 128, 64 * 68 * 4) + 1024);
    expect(k(CASES.st5_conv)).toBe(5 * (128 + 64) * 128 + 1024);
  });

  it('waits for each MMA group only when drained', () => {
    const src = (g: QGemmArgs) => qgemm(g).source;
    expect(src(CASES.drain)).toMatch(/aligned 0;\\n" ::: "memory"\); \/\/ the slot this k-step read/);
    expect(src(ffn2)).not.toMatch(/the slot this k-step read/);
    // drained: loads run ST - 1 k-steps ahead (cp.async.wait_group keeps ST - 2 groups pending)
    expect(src({ ...ffn2, drain: true, stages: 4 })).toContain('cp.async.wait_group 2;');
    expect(src({ ...ffn2, stages: 4 })).toContain('cp.async.wait_group 1;');
  });

  it('launches split-K on grid z with its counters and partials as the last parameters', () => {
    const k = qgemm(CASES.splitk3), plain = qgemm(ffn2);
    expect(k.grid).toEqual([plain.grid[0], plain.grid[1], 3]);
    expect(k.params.slice(-2)).toEqual([{ kind: 'in', index: 4 }, { kind: 'in', index: 5 }]);
    expect(k.params.slice(0, -2)).toEqual(plain.params);
    expect(new RegExp(`${k.name}\\(([^)]*)\\)`).exec(k.source)![1].split(',')).toHaveLength(k.params.length);
    expect(k.source).toContain('atomicAdd(cnt + tile, 1) == 2');
    expect(splitKWorkspace(CASES.splitk3)).toEqual({ counters: 16 * 12, bytes: 16 * 12 * 3 * 64 * 64 * 4 });
    expect(splitKWorkspace(CASES.splitk2_conv_res_out2)).toEqual({ counters: 13 * 8, bytes: 13 * 8 * 2 * 128 * 64 * 4 });
  });

  it('renders the unsplit, undrained loop exactly as before these options', () => {
    for (const g of [ffn2, conv3x3, { ...ffn2, persistent: 132 }]) {
      expect(qgemm({ ...g, splitK: 1 }).name).toBe(qgemm(g).name);
      expect(qgemm({ ...g, drain: false }).name).toBe(qgemm(g).name);
    }
    expect(qgemm(ffn2).source).not.toMatch(/\bkb\b|blockIdx\.z/);
  });

  it('refuses split-K and stages it cannot run', () => {
    expect(() => qgemm({ ...ffn2, a: 'fp8', splitK: 2 })).toThrow(/split-K needs integer operands/);
    expect(() => qgemm({ ...ffn2, persistent: 132, splitK: 2 })).toThrow(/split-K/);
    expect(() => qgemm({ ...ffn2, K: 256, splitK: 3 })).toThrow(/at most one split per k-step/);
    expect(() => qgemm({ ...ffn2, stages: 2 })).toThrow(/stages must be 3 to 8 \(2 with drain\)/);
    expect(() => qgemm({ ...ffn2, stages: 9 })).toThrow(/stages must be/);
    expect(() => qgemm({ ...ffn2, persistent: 132, drain: true })).toThrow(/drain is for the non-persistent grid/);
  });
});

const hasSm90a = hasNvcc && spawnSync('nvcc', ['--list-gpu-arch'], { encoding: 'utf8' }).stdout?.includes('compute_90');
if (!hasSm90a) console.warn('wgmma main loop: nvcc is not on the PATH; the sm_90a compile test is skipped');

describe.skipIf(!hasSm90a)('wgmma main-loop variants compile with nvcc for sm_90a', () => {
  it('compiles without errors, warnings, spills or local memory', () => {
    expectCleanCompile(rendered.map(([ns, k]) => [ns, k.source] as [string, string]), 'sm_90a');
  }, 180_000);
});

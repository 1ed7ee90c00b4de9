// The Hopper wgmma variants of the quantized GEMM (tactic candidates in src/backends/cuda/ops-quant.ts): launch shapes,
// shared memory, the staged epilogue's wide accesses and the persistent grid, and (where nvcc is on the PATH) that
// each compiles for sm_90a with no spills or local memory. Their results are held to the mma.sync kernel byte for byte
// on a GPU by bench/quant/gpu-layers.ts and bench/gpu/quant-check.ts.
import { describe, expect, it } from 'vitest';
import { expectCleanCompile, hasNvcc } from '../helpers/nvcc.js';
import { qgemm, type QGemmArgs } from '../../src/backends/cuda/codegen/quant.js';

const SMS = 132;
const VARIANTS: Record<string, Partial<QGemmArgs>> = {
  direct128x64: { tile: { BM: 128, BN: 64 } },
  staged128x128: { tile: { BM: 128, BN: 128 }, staged: true },
  staged128x64: { tile: { BM: 128, BN: 64 }, staged: true, occupancy: 3 },
  staged64x64: { tile: { BM: 64, BN: 64 }, staged: true, occupancy: 4 },
  staged64x32: { tile: { BM: 64, BN: 32 }, staged: true, occupancy: 4 },
  persistent128x64: { tile: { BM: 128, BN: 64 }, persistent: SMS },
  persistentStaged128x64: { tile: { BM: 128, BN: 64 }, staged: true, occupancy: 3, persistent: SMS },
};
const conv = { H: 28, W: 28, C: 64, OH: 28, OW: 28, KH: 3, KW: 3, strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1] };
const LAYERS: Record<string, QGemmArgs> = {
  // 1x1 convolution as a GEMM, K = 64: one k-step per tile (the case the persistent grid targets)
  k64_i8: { M: 25088, N: 256, K: 64, a: 'int8', activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 0 },
  // the fp16 engines' residual block: fp16 out, fp16 residual, int8 second output, implicit im2col
  conv_f16_out2: { M: 2 * 784, N: 64, K: 576, a: 'uint8', conv, residual: 'float16', activation: 'Relu', params: [], out: 'float16', out2: { store: 'int8', yScale: 0.03, yZeroPoint: 0 } },
  gemm_f32_res: { M: 1000, N: 768, K: 768, a: 'int8', residual: 'float32', activation: '', params: [], out: 'float32' },
  // channels a multiple of the k-step: the filter tap is worked out once per k-step; an odd M leaves a partial tile
  conv_c128: { M: 2 * 196 - 5, N: 128, K: 9 * 128, a: 'int8', conv: { ...conv, H: 14, W: 14, C: 128, OH: 14, OW: 14 }, activation: 'Relu', params: [], out: 'uint8', yScale: 0.02, yZeroPoint: 5 },
};
const rendered = Object.entries(VARIANTS).flatMap(([v, more]) => Object.entries(LAYERS).map(([l, g]) => [`${v}_${l}`, { ...g, wgmma: true, ...more }, qgemm({ ...g, wgmma: true, ...more })] as const));

describe('cuda wgmma quantized GEMM variants', () => {
  it.each(rendered)('%s: launch shape and shared memory', (_, g, k) => {
    const BM = g.tile!.BM, BN = g.tile!.BN, tiles = Math.ceil(g.M / BM) * Math.ceil(g.N / BN);
    expect(k.arch).toBe('sm_90a');
    expect(k.block).toEqual([2 * BM, 1, 1]);
    expect(k.sharedBytes).toBeLessThanOrEqual(227 * 1024);
    if (g.persistent) {
      expect(k.grid[1] * k.grid[2]).toBe(1);
      expect(k.grid[0]).toBeLessThanOrEqual(Math.min(tiles, 4 * SMS));
      expect(k.grid[0]).toBeGreaterThanOrEqual(Math.min(tiles, SMS));
    } else {
      expect(k.grid).toEqual([Math.ceil(g.M / BM), Math.ceil(g.N / BN), 1]);
    }
    const sig = new RegExp(`${k.name}\\(([^)]*)\\)`).exec(k.source)![1].split(',');
    expect(sig).toHaveLength(k.params.length);
  });

  it('stages the epilogue with 8-channel accesses: 16-byte fp16 stores and residual reads, 8-byte int8 stores', () => {
    const f16 = qgemm({ ...LAYERS.conv_f16_out2, wgmma: true, ...VARIANTS.staged128x64 });
    expect(f16.source).toMatch(/\*\(uint4\*\)\(out \+ o\) = make_uint4/);
    expect(f16.source).toMatch(/const uint4 rr = \*\(const uint4\*\)\(res \+ o\)/);
    expect(f16.source).toMatch(/\*\(uint2\*\)\(out2 \+ o\) = kq_q8x8n\(ww,/);
    const i8 = qgemm({ ...LAYERS.k64_i8, wgmma: true, ...VARIANTS.staged128x128 });
    expect(i8.source).toMatch(/\*\(uint2\*\)\(out \+ o\) = kq_q8x8n\(vv,/);
    const direct = qgemm({ ...LAYERS.k64_i8, wgmma: true, ...VARIANTS.direct128x64 });
    expect(direct.source).not.toMatch(/float\* sf/);
  });

  it('computes the filter tap once per k-step when the channels are a multiple of it', () => {
    const fast = qgemm({ ...LAYERS.conv_c128, wgmma: true, ...VARIANTS.staged128x64 }).source;
    expect(fast).toMatch(/const int tap = kt \/ 1, dh = tap \/ 3 \* 1, dw = tap % 3 \* 1;/);
    expect(fast).toMatch(/src = ok \? x \+ a_off\[i\] \+ tapOff \+ ch \* 16 : x;/);
    expect(fast).not.toMatch(/k % 128/);
    const slow = qgemm({ ...LAYERS.conv_f16_out2, wgmma: true, ...VARIANTS.staged128x64 }).source; // C = 64 < 128-byte k-step
    expect(slow).toMatch(/const int c = k % 64, kt2 = k \/ 64;/);
  });

  it('falls back to the direct epilogue when N is not a multiple of 8', () => {
    const k = qgemm({ ...LAYERS.k64_i8, N: 74, wgmma: true, ...VARIANTS.staged128x64 });
    expect(k.source).not.toMatch(/float\* sf/);
    expect(k.source).toMatch(/\*\(unsigned short\*\)\(out \+ o\)/);
  });

  it('keeps the persistent grid\'s staged tile apart from the pipeline buffers', () => {
    const flat = qgemm({ ...LAYERS.k64_i8, wgmma: true, ...VARIANTS.staged128x64 });
    const pers = qgemm({ ...LAYERS.k64_i8, wgmma: true, ...VARIANTS.persistentStaged128x64 });
    // K = 64: 3 stages of (128 + 64) rows x 64 bytes; the float tile (128 rows x 72 floats: the split layout) follows them
    expect(pers.source).toMatch(/smem \+ \(sbase - \(unsigned\)__cvta_generic_to_shared\(smem\)\) \+ 36864\)/);
    expect(pers.sharedBytes).toBe(36864 + 128 * 72 * 4 + 1024);
    expect(flat.sharedBytes).toBe(Math.max(36864, 128 * 72 * 4) + 1024);
  });
});

if (!hasNvcc) console.warn('wgmma codegen: nvcc is not on the PATH; the sm_90a compile test is skipped');

describe.skipIf(!hasNvcc)('cuda wgmma variants compile with nvcc for sm_90a', () => {
  it('compiles without errors, spills or local memory', () => {
    expectCleanCompile(rendered.map(([ns, , k]) => [ns, k.source] as [string, string]), 'sm_90a');
  }, 300_000);
});

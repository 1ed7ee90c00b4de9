// Generated quantized-layer kernels: launch shapes, and (where nvcc is on the PATH) that every variant compiles for
// sm_90 with no spills and no local memory. The kernels' results are checked on a GPU by bench/gpu/quant-check.ts.
import { describe, expect, it } from 'vitest';
import { expectCleanCompile, hasNvcc } from '../../helpers/nvcc.js';
import { dequantizeKernel, qgemm, qgemmTile, qim2col, quantizeKernel } from '../../../src/backends/cuda/codegen/quant.js';

const conv = { H: 14, W: 14, C: 64, OH: 7, OW: 7, KH: 3, KW: 3, strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1] };
const CASES = {
  gemm_s8_f32: () => qgemm({ M: 1000, N: 200, K: 96, a: 'int8', activation: '', params: [], out: 'float32' }),
  gemm_u8_relu_i8: () => qgemm({ M: 4096, N: 64, K: 64, a: 'uint8', activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 0 }),
  conv_s8_res_i8: () => qgemm({ M: 2 * 49, N: 128, K: 9 * 64, a: 'int8', conv, residual: 'float32', activation: 'Relu', params: [], out: 'int8', yScale: 0.1 }),
  conv_s8_res16_f16: () => qgemm({ M: 32 * 3136, N: 256, K: 64, a: 'int8', conv: { ...conv, H: 56, W: 56, OH: 56, OW: 56, KH: 1, KW: 1, strides: [1, 1], pads: [0, 0, 0, 0] }, residual: 'float16', activation: 'Clip', params: [0, 6], out: 'float16' }),
  gemm_fp8_gelu_fp8: () => qgemm({ M: 1024, N: 3072, K: 768, a: 'fp8', activation: 'Gelu', params: [], out: 'fp8', yScale: 0.02 }),
  gemm_fp8_f32: () => qgemm({ M: 128, N: 768, K: 3072, a: 'fp8', activation: '', params: [], out: 'float32' }),
  gemm_s8_legacy_i8: () => qgemm({ M: 1024, N: 768, K: 768, a: 'int8', activation: 'Relu', params: [], out: 'int8', yScale: 0.05, legacy: true }),
  conv_s8_tile128_f16: () => qgemm({ M: 2 * 49, N: 128, K: 9 * 64, a: 'int8', conv, residual: 'float16', activation: '', params: [], out: 'float16', tile: { BM: 128, BN: 128 } }),
  gemm_staged_f16: () => qgemm({ M: 1000, N: 768, K: 768, a: 'fp8', activation: 'Relu', params: [], out: 'float16', residual: 'float16', staged: true }),
  conv_staged_i8: () => qgemm({ M: 2 * 49, N: 128, K: 9 * 64, a: 'uint8', conv, activation: 'Relu', params: [], out: 'uint8', yScale: 0.1, yZeroPoint: 3, staged: true }),
  gemm_odd_n_f32: () => qgemm({ M: 64, N: 75, K: 64, a: 'int8', activation: '', params: [], out: 'float32' }),
  im2col: () => qim2col({ ...conv, C: 3, KH: 7, KW: 7, N: 2, Kp: 160, pad: 0 }),
  quant_i8: () => quantizeKernel({ n: 1000, from: 'float32', to: 'int8', scale: 0.01, zeroPoint: 0 }),
  quant_u8_f16: () => quantizeKernel({ n: 1000, from: 'float16', to: 'uint8', scale: 0.01, zeroPoint: 128 }),
  quant_fp8: () => quantizeKernel({ n: 1000, from: 'float32', to: 'fp8', scale: 0.5, zeroPoint: 0 }),
  dequant_fp8: () => dequantizeKernel({ n: 1000, from: 'fp8', to: 'float32', scale: 0.5, zeroPoint: 0 }),
  dequant_u8_f16: () => dequantizeKernel({ n: 1000, from: 'uint8', to: 'float16', scale: 0.5, zeroPoint: 3 }),
};
const rendered = Object.entries(CASES).map(([k, f]) => [k, f()] as const);

describe('cuda quantized kernels: sources and launch shapes', () => {
  it.each(rendered)('%s', (_, k) => {
    expect(k.name).toMatch(/^kiln_[a-z0-9_]+_[0-9a-f]{16}$/);
    expect(k.source).not.toMatch(/#include/);
    expect(k.source.match(/__global__/g)).toHaveLength(1);
    const sig = new RegExp(`${k.name}\\(([^)]*)\\)`).exec(k.source)![1].split(',');
    expect(sig).toHaveLength(k.params.length);
    expect(k.block[0] * k.block[1] * k.block[2]).toBe(256);
  });

  it('covers every output tile with the chosen grid', () => {
    const k = CASES.gemm_s8_f32();
    const { BM, BN } = qgemmTile(1000, 200);
    expect(k.grid[0] * BM).toBeGreaterThanOrEqual(1000);
    expect(k.grid[1] * BN).toBeGreaterThanOrEqual(200);
    expect(k.sharedBytes).toBe(3 * (BM + BN) * 80);
  });

  it('refuses reductions that are not a multiple of 16', () => {
    expect(() => qgemm({ M: 8, N: 8, K: 147, a: 'int8', activation: '', params: [], out: 'float32' })).toThrow(/multiple of 16/);
    expect(() => qgemm({ M: 8, N: 8, K: 48, a: 'int8', conv: { ...conv, C: 3 }, activation: '', params: [], out: 'float32' })).toThrow(/C % 16/);
  });
});

if (!hasNvcc) console.warn('cuda quantized codegen: nvcc is not on the PATH; the sm_90 compile test is skipped');

describe.skipIf(!hasNvcc)('cuda quantized kernels compile with nvcc for sm_90', () => {
  it('compiles without errors, warnings, spills or local memory', () => {
    expectCleanCompile(rendered.map(([key, k]) => [key, k.source] as [string, string]));
  }, 120_000);
});

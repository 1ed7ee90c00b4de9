// The TMA-fed GEMM over implicit-im2col convolutions (codegen/quant-tma-conv.ts): the im2col tensor map's bounding
// box and strides reproduce the convolution's output positions, the kernel is qgemmTma's with only the A load
// replaced (plain and persistent ping-pong), errors, and (with nvcc) a clean sm_90a compile. Outputs are held byte for
// byte to explicit im2col + GEMM on a GPU by bench/quant/gpu-layers.ts (convx) and bench/quant/tma-check.ts (tma-conv).
import { describe, expect, it } from 'vitest';
import { expectCleanCompile, hasNvcc } from '../../helpers/nvcc.js';
import { qconvTma, tmaConvUnsupported } from '../../../src/backends/cuda/codegen/quant-tma-conv.js';
import { qgemmTma } from '../../../src/backends/cuda/codegen/quant-tma.js';
import type { QConvGeometry, QGemmArgs } from '../../../src/backends/cuda/codegen/quant.js';

const geoOf = (H: number, C: number, k: number, s: number): QConvGeometry => {
  const p = k >> 1, OH = Math.floor((H + 2 * p - k) / s) + 1;
  return { H, W: H, C, OH, OW: OH, KH: k, KW: k, strides: [s, s], pads: [p, p, p, p], dilations: [1, 1] };
};
const argsOf = (geo: QConvGeometry, N: number): QGemmArgs => ({
  M: 32 * geo.OH * geo.OW, N, K: geo.KH * geo.KW * geo.C, a: 'int8', conv: geo, activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 0, staged: true, wgmma: true,
});

describe('TMA-fed implicit-im2col convolution', () => {
  it('bounds the window corners so that the strided walk yields exactly the output positions', () => {
    for (const [H, C, k, s] of [[14, 256, 3, 1], [28, 256, 3, 2], [56, 256, 1, 2], [7, 512, 3, 1], [15, 128, 3, 2]] as const) {
      const geo = geoOf(H, C, k, s), t = qconvTma({ ...argsOf(geo, 128), tile: { BM: 128, BN: 128 }, occupancy: 2 }).tma[0];
      expect(t).toMatchObject({ N: 32, H, W: H, C, channels: 128, pixels: 128, swizzle: 3, strides: [s, s] });
      // corners walked: lower, lower + s, ... <= dim - 1 + upper; each must be the window corner of one output position
      for (const d of [0, 1]) {
        const walk: number[] = [];
        for (let x = t.lower[d]; x <= H - 1 + t.upper[d]; x += t.strides[d]) walk.push(x);
        expect(walk).toEqual(Array.from({ length: geo.OW }, (_, o) => o * s - (k >> 1)));
      }
    }
  });

  it('is the TMA kernel with its A load replaced by the im2col load of the k-step\'s tap', () => {
    const g = argsOf(geoOf(14, 256, 3, 1), 256);
    const k = qconvTma({ ...g, tile: { BM: 128, BN: 128 }, occupancy: 2 });
    const ref = qgemmTma({ ...g, conv: undefined, tile: { BM: 128, BN: 128 }, occupancy: 2 });
    expect(k.name).toMatch(/^kiln_qtmaconv_[0-9a-f]+$/);
    expect(k.source).not.toContain(ref.name);
    expect(k.source.replace(k.name, 'K').replace(/__device__ __forceinline__ void kq_tma_im2col[\s\S]*?\n}\n/, '').replace('kq_tma_im2col(sa, &tmA, kt, m0, bar);', 'kq_tma(sa, &tmA, kt * 128, m0, bar);'))
      .toBe(ref.source.replace(ref.name, 'K'));
    expect(k.source).toMatch(/cp\.async\.bulk\.tensor\.4d\.shared::cluster\.global\.im2col\.mbarrier::complete_tx::bytes/);
    expect(k.source).toMatch(/const int tap = kt \/ 2, c = \(kt - tap \* 2\) \* 128, kh = tap \/ 3, kw = tap - kh \* 3;/);
    expect(k.tma[1]).toEqual(ref.tma[1]);
    expect([k.grid, k.block, k.sharedBytes, k.params]).toEqual([ref.grid, ref.block, ref.sharedBytes, ref.params]);
    // a PDL `early` variant (where quant-tma.ts renders one) carries the same A load under this kernel's name
    for (const v of [k, qconvTma({ ...g, tile: { BM: 64, BN: 128 } }, { persistent: 132 })]) {
      const early = (v as { pdlEarly?: string }).pdlEarly;
      if (early === undefined) continue;
      expect(early).toContain(`void __launch_bounds__`);
      expect(early).toContain(v.name);
      expect(early).not.toMatch(/kq_tma\(sa, &tmA/);
      expect(early).toMatch(/kq_tma_im2col\(sa, &tmA, kt, m0, bar\);/);
    }
    const pp = qconvTma({ ...g, tile: { BM: 64, BN: 128 } }, { persistent: 132 });
    expect(pp.source).toMatch(/kq_tma_im2col\(sa, &tmA, kt, m0, bar\);/);
    expect(pp.tma[0].pixels).toBe(64);
  });

  it('says what it does not take', () => {
    expect(tmaConvUnsupported(argsOf(geoOf(56, 64, 3, 1), 64))).toMatch(/C = 64/);
    expect(tmaConvUnsupported({ ...argsOf(geoOf(14, 256, 3, 1), 256), conv: undefined })).toMatch(/not a convolution/);
    expect(tmaConvUnsupported({ ...argsOf(geoOf(14, 256, 3, 1), 256), a: 'fp8' })).toMatch(/integer/);
    expect(() => qconvTma({ ...argsOf(geoOf(14, 256, 3, 1), 256), K: 256 })).toThrow(/K = 256/);
    expect(() => qconvTma({ ...argsOf(geoOf(14, 256, 3, 1), 256), qresidual: { a: 'int8', scale: 1, zeroPoint: 0, c: 'int8', cScale: 1, cZeroPoint: 0 } })).toThrow(/8-bit residual/);
  });

  it.skipIf(!hasNvcc)('compiles for sm_90a without warnings, spills or local memory', () => {
    const g = argsOf(geoOf(28, 256, 3, 2), 256);
    const units: [string, string][] = [
      qconvTma({ ...g, tile: { BM: 128, BN: 128 }, occupancy: 2 }),
      qconvTma({ ...g, tile: { BM: 128, BN: 64 }, occupancy: 3 }),
      qconvTma({ ...g, a: 'uint8', out: 'float16', residual: 'float16', tile: { BM: 64, BN: 128 }, occupancy: 3 }),
      qconvTma({ ...g, tile: { BM: 64, BN: 128 } }, { persistent: 132 }),
      qconvTma({ ...g, tile: { BM: 64, BN: 64 }, occupancy: 2 }, { persistent: 132 }),
    ].map((k, i) => [`u${i}`, k.source]);
    expectCleanCompile(units, 'sm_90a');
  });
});

// The gathered small-channel convolution (codegen/quant-stem.ts): the reduction's layout (kernel rows in SW-byte
// slots, weights reordered to match) computes the convolution, the launch shape, the staged epilogue shared with the
// wgmma kernel, errors for what it does not take, and (where nvcc is on the PATH) an sm_90a compile of each epilogue
// form with no warnings, spills or local memory. Outputs are held byte for byte to im2col + the cp.async wgmma kernel on
// a GPU by bench/quant/gpu-layers.ts (stem mode) and bench/quant/tma-check.ts (whole ResNet, KILN_QGEMM=stem).
import { describe, expect, it } from 'vitest';
import { expectCleanCompile, hasNvcc } from '../../helpers/nvcc.js';
import { qconvStem, stemLayout, stemUnsupported, stemWeights } from '../../../src/backends/cuda/codegen/quant-stem.js';
import { qgemm, type QConvGeometry, type QGemmArgs } from '../../../src/backends/cuda/codegen/quant.js';

const geoOf = (H: number, C: number, k: number, s: number): QConvGeometry => {
  const p = k >> 1, OH = Math.floor((H + 2 * p - k) / s) + 1;
  return { H, W: H, C, OH, OW: OH, KH: k, KW: k, strides: [s, s], pads: [p, p, p, p], dilations: [1, 1] };
};
const stem = geoOf(224, 3, 7, 2);
const g: QGemmArgs = { M: 32 * 112 * 112, N: 64, K: 160, a: 'int8', conv: stem, activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 0 };

function lcg(seed: number) {
  let s = seed;
  return () => { s = (s * 1103515245 + 12345) >>> 0; return (s >>> 16) & 0xff; };
}

describe('gathered small-channel convolution', () => {
  it('lays the reduction out in kernel-row slots, and the reordered weights compute the convolution', () => {
    expect(stemLayout(stem)).toEqual({ S: 21, SW: 24, KP: 192 });
    expect(stemLayout(geoOf(30, 8, 3, 1))).toEqual({ S: 24, SW: 24, KP: 128 });
    // a small uint8 image with a zero point (the padding value), int8 weights: every output of the slot layout (A
    // gathered per kernel row, padding = zero point, slot tails anything) equals the direct convolution's sum
    for (const [geo, N, zp] of [[geoOf(9, 3, 7, 2), 8, 5], [geoOf(6, 4, 5, 1), 16, 0], [geoOf(7, 8, 3, 2), 8, 3]] as const) {
      const { SW, KP } = stemLayout(geo), { H, W, C, KH, KW, OH, OW } = geo, B = 2, rnd = lcg(N + C);
      const x = Uint8Array.from({ length: B * H * W * C }, rnd), w = Uint8Array.from({ length: N * KH * KW * C }, rnd);
      const wg = stemWeights(w, geo, N);
      expect(wg.length).toBe(N * KP);
      const s8 = (v: number) => (v << 24) >> 24;
      for (let b = 0; b < B; b++) for (let oh = 0; oh < OH; oh++) for (let ow = 0; ow < OW; ow++) {
        const ih0 = oh * geo.strides[0] - geo.pads[0], iw0 = ow * geo.strides[1] - geo.pads[1];
        const px = (ih: number, iw: number, c: number) => (ih >= 0 && ih < H && iw >= 0 && iw < W ? x[((b * H + ih) * W + iw) * C + c] : zp);
        const row = new Uint8Array(KP).map((_, k) => (k % SW < KW * C && k < KH * SW ? px(ih0 + Math.floor(k / SW), iw0 + Math.floor((k % SW) / C), k % C) : 77));
        for (let n = 0; n < N; n++) {
          let direct = 0, slots = 0;
          for (let kh = 0; kh < KH; kh++) for (let kw = 0; kw < KW; kw++) for (let c = 0; c < C; c++) direct += px(ih0 + kh, iw0 + kw, c) * s8(w[((n * KH + kh) * KW + kw) * C + c]);
          for (let k = 0; k < KP; k++) slots += row[k] * s8(wg[n * KP + k]);
          if (slots !== direct) expect([b, oh, ow, n, slots]).toEqual([b, oh, ow, n, direct]);
        }
      }
    }
  });

  it('sizes the launch: a grid over the device per N tile, weights and the A tile / float tile in shared memory', () => {
    const k = qconvStem({ ...g, tile: { BM: 128, BN: 64 } }, { sms: 132, batch: 32 });
    expect(k.block).toEqual([256, 1, 1]);
    expect(k.grid).toEqual([264, 1, 1]); // 132 SMs x 2 blocks, each walking M tiles
    // weights + max(A tile, float tile; rows of BN + 8 floats, the split layout) + alignment
    expect(k.sharedBytes).toBe(64 * 192 + 128 * 72 * 4 + 1024);
    expect(k.params).toEqual([{ kind: 'in', index: 0 }, { kind: 'in', index: 1 }, { kind: 'ws' }, { kind: 'out', index: 0 }]);
    expect(k.arch).toBe('sm_90a');
    expect(k.source).toMatch(/__launch_bounds__\(256, 2\)/);
    expect(k.source.match(/m64n64k32\.s32\.s8\.s8/g)).toHaveLength(1); // one chain of 6 k32 steps in an unrolled loop
    expect(k.source).toMatch(/for \(int ks = 0; ks < 6; ks\+\+\)/);
    // the next tile's words loaded after this tile's MMA is issued; shifted into place; padding only masked at the
    // image's edges (zero point 0)
    const body = k.source.slice(k.source.indexOf('wgmma.commit_group'));
    expect(body.indexOf('fetch(mt + 264)')).toBeGreaterThan(0);
    expect(body.indexOf('fetch(mt + 264)')).toBeLessThan(body.indexOf('wgmma.wait_group.sync.aligned 0'));
    expect(k.source).toMatch(/__funnelshift_r\(wd\[i\]\[0\], wd\[i\]\[1\], sh\)/);
    expect(k.source).not.toMatch(/16843009u/);
    const n = qconvStem({ ...g, N: 136, tile: { BM: 64, BN: 128 } }, { sms: 132, occupancy: 3, batch: 32 });
    expect(n.grid).toEqual([198, 2, 1]); // 396 blocks over 2 N tiles
    expect(n.block).toEqual([128, 1, 1]);
  });

  it('fills padding with the zero point of uint8 inputs and takes a residual and a second output', () => {
    const u = qconvStem({ ...g, a: 'uint8', out: 'uint8', activation: '', yZeroPoint: 117, tile: { BM: 128, BN: 64 } }, { sms: 132, pad: 5, batch: 32 });
    expect(u.source).toMatch(/m64n64k32\.s32\.u8\.s8/);
    expect(u.source).toMatch(/84215045u/); // 0x05050505: padding bytes
    expect(u.source).toMatch(/const bool edge = b0 == 0 \|\|/);
    const r = qconvStem({ ...g, out: 'float16', residual: 'float16', out2: { store: 'int8', yScale: 0.03, yZeroPoint: 0 } }, { sms: 132, batch: 32 });
    expect(r.params).toEqual([{ kind: 'in', index: 0 }, { kind: 'in', index: 1 }, { kind: 'ws' }, { kind: 'in', index: 3 }, { kind: 'out', index: 0 }, { kind: 'out', index: 1 }]);
    // the staged epilogue's second pass is the cp.async wgmma kernel's, character for character
    const ref = qgemm({ ...g, conv: undefined, out: 'float16', residual: 'float16', out2: { store: 'int8', yScale: 0.03, yZeroPoint: 0 }, wgmma: true, staged: true, K: 192, tile: { BM: 128, BN: 64 } }).source;
    const pass2 = (s: string) => s.slice(s.indexOf('const float4 p0'), s.indexOf('}', s.indexOf('out2 + o')));
    expect(pass2(r.source)).toBe(pass2(ref));
  });

  it('says what it does not take', () => {
    expect(stemUnsupported(stem, 32, g)).toBeUndefined();
    expect(stemUnsupported({ ...stem, dilations: [1, 2] }, 32, g)).toMatch(/dilation/);
    expect(stemUnsupported(geoOf(56, 16, 3, 1), 32, g)).toMatch(/48 bytes/);
    expect(stemUnsupported(geoOf(31, 3, 7, 2), 2, g)).toMatch(/multiple of 4/);
    expect(stemUnsupported(stem, 32, { ...g, N: 60 })).toMatch(/multiple of 8/);
    expect(stemUnsupported(stem, 32, { ...g, a: 'fp8' })).toMatch(/integer/);
    expect(() => qconvStem({ ...g, conv: undefined }, { sms: 132, batch: 32 })).toThrow(/geometry/);
    expect(() => qconvStem({ ...g, tile: { BM: 32, BN: 64 } }, { sms: 132, batch: 32 })).toThrow(/tile 32x64/);
    expect(() => qconvStem(g, { sms: 132, batch: 31 })).toThrow(/M = 401408/);
    expect(() => stemWeights(new Uint8Array(10), stem, 64)).toThrow(/10 weight bytes/);
  });

  it.skipIf(!hasNvcc)('compiles for sm_90a without warnings, spills or local memory', () => {
    const odd = geoOf(30, 8, 3, 1);
    const units: [string, string][] = [
      qconvStem({ ...g, tile: { BM: 128, BN: 64 } }, { sms: 132, occupancy: 2, batch: 32 }),
      qconvStem({ ...g, tile: { BM: 64, BN: 64 } }, { sms: 132, occupancy: 4, batch: 32 }),
      qconvStem({ ...g, a: 'uint8', out: 'uint8', activation: '', yZeroPoint: 117, tile: { BM: 128, BN: 128 } }, { sms: 132, occupancy: 1, pad: 5, batch: 32 }),
      qconvStem({ ...g, out: 'float16', residual: 'float16', out2: { store: 'int8', yScale: 0.03, yZeroPoint: 0 }, tile: { BM: 64, BN: 128 } }, { sms: 132, occupancy: 3, batch: 32 }),
      qconvStem({ ...g, M: 2 * 30 * 30, N: 40, conv: odd, tile: { BM: 128, BN: 64 } }, { sms: 132, batch: 2 }),
    ].map((k, i) => [`u${i}`, k.source]);
    expectCleanCompile(units, 'sm_90a');
  });
});

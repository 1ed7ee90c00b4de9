// The stem convolution variant (stem.ts), forced tile by tile, against the reference kernel: the stems of
// MobileNetV2 / EfficientNet (3 -> 32, 3x3 s2 pad 1), SqueezeNet 1.1 (3 -> 64, 3x3 s2 unpadded) and ResNet (3 -> 64,
// 7x7 s2 pad 3) at 224 x 224, and awkward ones: odd and asymmetric sizes and pads, output channels that are not a
// multiple of the register block, two and four input channels, stride 1, rows narrower than two vectors, 2 images,
// bias / residual / Relu / Relu6 epilogues; one and two threads.
import { describe, it, expect } from 'vitest';
import { findCompiler, hostIsa } from '../../../src/backends/cpu/compiler.js';
import { cpuBackend } from '../../../src/backends/cpu/index.js';
import { convModel, variantErrors, type ConvCase } from './conv-model.js';

type Case = ConvCase;

const stemModel = (k: Case) => convModel(k, k.C * 97 + k.Co, 'stem');

const CASES: [string, Case][] = [
  ['MobileNetV2 / EfficientNet stem', { batch: 1, C: 3, H: 224, W: 224, Co: 32, k: [3, 3], s: 2, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu6' }],
  ['SqueezeNet 1.1 stem', { batch: 1, C: 3, H: 224, W: 224, Co: 64, k: [3, 3], s: 2, pads: [0, 0, 0, 0], bias: true, res: false, act: 'relu' }],
  ['ResNet stem 7x7', { batch: 1, C: 3, H: 224, W: 224, Co: 64, k: [7, 7], s: 2, pads: [3, 3, 3, 3], bias: true, res: false, act: 'relu' }],
  ['odd sizes, 13 channels, 2 images', { batch: 2, C: 3, H: 37, W: 45, Co: 13, k: [3, 3], s: 2, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu6' }],
  ['asymmetric pads and window, 4 channels, residual', { batch: 2, C: 4, H: 30, W: 71, Co: 19, k: [5, 3], s: 2, pads: [2, 0, 1, 2], bias: true, res: true, act: 'relu' }],
  ['two channels, no bias, no activation', { batch: 1, C: 2, H: 40, W: 67, Co: 8, k: [3, 3], s: 2, pads: [0, 1, 0, 1], bias: false, res: false, act: 'none' }],
  ['stride 1, 3 channels', { batch: 2, C: 3, H: 21, W: 35, Co: 10, k: [3, 3], s: 1, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu' }],
];

// the variant is offered on AVX-512 hosts only (stem.ts)
describe.skipIf(!findCompiler() || hostIsa() !== 'avx512')('stem convolution variant', () => {
  for (const [name, k] of CASES) {
    it(`${name}: every stem tile matches the reference at 1 and 2 threads`, async () => {
      const { m, inputs } = await stemModel(k);
      for (const threads of [1, 2]) {
        const errors = await variantErrors(m, inputs, threads, '-stem-');
        expect(errors.size, 'stem tactics offered').toBeGreaterThan(0);
        for (const [t, e] of errors) expect(e, `${t} at ${threads} threads`).toBeLessThan(1e-3);
      }
    }, 120_000);
  }

  it('is not offered for more than 4 input channels', async () => {
    for (const k of [
      { batch: 1, C: 8, H: 32, W: 32, Co: 16, k: [3, 3], s: 2, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu' },
    ] as Case[]) {
      const { m } = await stemModel(k);
      const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
      const node = m.graph.nodes.find((n) => n.opType === 'FusedConv')!;
      const names = cpuBackend.tactics(node, m, typeOf).map((t) => t.name);
      expect(names.some((n) => n.includes('conv'))).toBe(true);
      expect(names.some((n) => n.includes('-stem-'))).toBe(false);
    }
  }, 60_000);
});

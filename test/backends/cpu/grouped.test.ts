// The grouped convolution variant (grouped.ts), forced tile by tile, against the reference kernel: RegNetY's grouped
// 3 x 3 layers (16 channels per group; stride 2 at 112 -> 56 and 56 -> 28, stride 1 at 28 x 28 and 14 x 14), and
// block4's 7 x 7 (and 14 -> 7), awkward ones: odd sizes, groups of 6 input and 9 output channels (partial register blocks), asymmetric pads and
// windows, rows of exactly one and two vectors, 2 and 3 images, bias / residual / Relu / Relu6 epilogues; one and
// two threads.
import { describe, it, expect } from 'vitest';
import type { Model } from '../../../src/ir/graph.js';
import { findCompiler, hostIsa } from '../../../src/backends/cpu/compiler.js';
import { cpuBackend } from '../../../src/backends/cpu/index.js';
import { convModel, variantErrors, type ConvCase } from './conv-model.js';

const groupedModel = (k: ConvCase) => convModel(k, k.C * 31 + k.Co, 'grouped');
const typeOfIn = (m: Model) => (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;

const CASES: [string, ConvCase][] = [
  ['RegNetY block1-0.b (64 / 4 groups, 112 -> 56, stride 2)', { batch: 1, C: 64, H: 112, W: 112, Co: 64, k: [3, 3], s: 2, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu', group: 4 }],
  ['RegNetY block2-0.b (144 / 9 groups, 56 -> 28, stride 2)', { batch: 1, C: 144, H: 56, W: 56, Co: 144, k: [3, 3], s: 2, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu', group: 9 }],
  ['RegNetY block2 (144 / 9 groups, 28 x 28), 2 images', { batch: 2, C: 144, H: 28, W: 28, Co: 144, k: [3, 3], s: 1, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu', group: 9 }],
  ['RegNetY block3 (320 / 20 groups, 14 x 14)', { batch: 1, C: 320, H: 14, W: 14, Co: 320, k: [3, 3], s: 1, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu', group: 20 }],
  ['RegNetY block4 (7 x 7, and 14 -> 7 at stride 2; 8 of its 49 groups)', { batch: 1, C: 128, H: 7, W: 7, Co: 128, k: [3, 3], s: 1, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu', group: 8 }],
  ['14 -> 7 at stride 2, 2 images', { batch: 2, C: 128, H: 14, W: 14, Co: 128, k: [3, 3], s: 2, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu', group: 8 }],
  ['odd sizes, 3 groups of 16, residual, 2 images', { batch: 2, C: 48, H: 37, W: 61, Co: 48, k: [3, 3], s: 2, pads: [1, 1, 1, 1], bias: true, res: true, act: 'relu6', group: 3 }],
  ['groups of 6 -> 9 channels, asymmetric pads and window, 3 images', { batch: 3, C: 24, H: 19, W: 29, Co: 36, k: [5, 3], s: 1, pads: [2, 0, 1, 2], bias: true, res: false, act: 'relu', group: 4 }],
  ['rows of one vector, unpadded, stride 2, no bias, no activation', { batch: 1, C: 32, H: 33, W: 33, Co: 32, k: [3, 3], s: 2, pads: [0, 0, 0, 0], bias: false, res: false, act: 'none', group: 2 }],
  ['rows of two vectors, odd pads, 2 output channels per input channel', { batch: 2, C: 32, H: 20, W: 33, Co: 64, k: [3, 3], s: 1, pads: [0, 1, 1, 0], bias: true, res: true, act: 'relu', group: 2 }],
];

// the variant is offered on AVX-512 hosts only (grouped.ts)
describe.skipIf(!findCompiler() || hostIsa() !== 'avx512')('grouped convolution variant', () => {
  for (const [name, k] of CASES) {
    it(`${name}: every grouped tile matches the reference at 1 and 2 threads`, async () => {
      const { m, inputs } = await groupedModel(k);
      for (const threads of [1, 2]) {
        const errors = await variantErrors(m, inputs, threads, '-grouped-');
        expect(errors.size, 'grouped tactics offered').toBeGreaterThan(0);
        for (const [t, e] of errors) expect(e, `${t} at ${threads} threads`).toBeLessThan(1e-3);
      }
    }, 120_000);
  }

  it('is not offered for depthwise layers', async () => {
    for (const k of [
      { batch: 1, C: 16, H: 28, W: 28, Co: 16, k: [3, 3], s: 1, pads: [1, 1, 1, 1], bias: true, res: false, act: 'relu', group: 16 },
    ] as ConvCase[]) {
      const { m } = await groupedModel(k);
      const node = m.graph.nodes.find((n) => n.opType === 'FusedConv')!;
      const names = cpuBackend.tactics(node, m, typeOfIn(m)).map((t) => t.name);
      expect(names.length).toBeGreaterThan(0);
      expect(names.some((n) => n.includes('-grouped-'))).toBe(false);
    }
  }, 60_000);
});

// The grid form of the int8 convolutions (kernels/int8.c.ts, kiln_qconv_grid: im2col rows read from stride-phase
// planes of the padded input, the columns past each output row dropped by the epilogue) against the per-row im2col
// packing it replaces (KILN_INT8_FORCE=im2col at build time). int8 math is exact, so the two engines must agree bit for
// bit: odd spatial sizes, channel counts that are not multiples of 4 or 16, padding on all sides (asymmetric), strides
// 1 and 2, a 7x7 stride-2 stem with 3 channels, 1x1 stride 2, residual epilogues, int8 and uint8 activations (zero
// points 0 and 128: the padding reads the zero point), rows wider than one vector (149 columns), batch 2, one and two
// threads. Then the AVX-512 plane copies and epilogue (masked loads and stores of the grid's short runs) against the
// portable C ones (KILN_INT8_PORTABLE=1 at run time): bit for bit again. And the pixel-rows variant (kiln_qconv_px,
// KILN_INT8_FORCE=px) against both forms, on its VNNI and portable paths.
import { describe, it, expect, afterEach } from 'vitest';
import type { Model } from '../../../src/ir/graph.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { quantizeModel } from '../../../src/tools/quantize.js';
import { randomCalibrationData } from '../../../src/quant/data.js';

const hasCompiler = !!findCompiler();

/** A stem (7x7 s2, 3 channels) then odd layers: 3x3 asymmetric pads, 3x3 s2, 1x1 s2 shortcut + residual Add, 5x3. */
function oddNet(batch: number, H: number, W: number): Model {
  const r = seededRandom(H * 31 + W);
  const b = new GraphBuilder('odd_net');
  let n = 0;
  const conv = (x: string, ci: number, co: number, k: [number, number], attrs: Record<string, number[]>) =>
    b.op('Conv', [x, b.initializer(`w${++n}`, randomTensor(r, [co, ci, ...k], 0.3)), b.initializer(`b${n}`, randomTensor(r, [co], 0.2))], { kernel_shape: k, ...attrs });
  const x = b.input('x', 'float32', [batch, 3, H, W]);
  const stem = b.op('Relu', [conv(x, 3, 5, [7, 7], { strides: [2, 2], pads: [3, 3, 3, 3] })]);
  const a = b.op('Relu', [conv(stem, 5, 7, [3, 3], { pads: [1, 2, 2, 1] })]);
  const s2 = b.op('Relu', [conv(a, 7, 9, [3, 3], { strides: [2, 2], pads: [1, 1, 1, 1] })]);
  const main = conv(s2, 9, 18, [3, 3], { pads: [1, 1, 1, 1] });
  const short = conv(a, 7, 18, [1, 1], { strides: [2, 2] });
  const res = b.op('Relu', [b.op('Add', [main, short])]);
  const tail = b.op('Relu', [conv(res, 18, 6, [5, 3], { pads: [2, 0, 1, 1], strides: [1, 2] })]);
  b.output(b.op('Add', [tail, b.initializer('tb', randomTensor(r, [6, 1, 1], 0.1))]));
  return b.model(13);
}

/** Layers the pixel-rows variant takes (output widths multiples of 7): 3x3 with 70 output channels (a partial block of
 * 64), a pointwise 1x1 and an asymmetrically padded 3x3 summed (a residual epilogue), then 3x3 stride 3 (3 phases). */
function sevensNet(batch: number): Model {
  const r = seededRandom(77);
  const b = new GraphBuilder('sevens_net');
  let n = 0;
  const conv = (x: string, ci: number, co: number, k: [number, number], attrs: Record<string, number[]>) =>
    b.op('Conv', [x, b.initializer(`w${++n}`, randomTensor(r, [co, ci, ...k], 0.3)), b.initializer(`b${n}`, randomTensor(r, [co], 0.2))], { kernel_shape: k, ...attrs });
  const x = b.input('x', 'float32', [batch, 13, 14, 21]);
  const a = b.op('Relu', [conv(x, 13, 70, [3, 3], { pads: [1, 1, 1, 1] })]);
  const sum = b.op('Relu', [b.op('Add', [conv(a, 70, 9, [1, 1], {}), conv(a, 70, 9, [3, 3], { pads: [0, 1, 2, 1] })])]);
  b.output(b.op('Add', [conv(sum, 9, 5, [3, 3], { strides: [3, 3] }), b.initializer('tb', randomTensor(r, [5, 1, 1], 0.1))]));
  return b.model(13);
}

/** oddNet's output pixels per channel (output size per axis: floor((in + pads - k) / stride) + 1). */
function outHW(H: number, W: number): number {
  const o = (n: number, pads: number, k: number, s: number) => Math.floor((n + pads - k) / s) + 1;
  const [sh, sw] = [o(H, 6, 7, 2), o(W, 6, 7, 2)];
  const [ah, aw] = [o(sh, 3, 3, 1), o(sw, 3, 3, 1)];
  const [rh, rw] = [o(ah, 2, 3, 2), o(aw, 2, 3, 2)];
  return o(rh, 3, 5, 1) * o(rw, 1, 3, 2);
}

/** The engine's outputs for `feeds`, built with or without the grid form, run on the VNNI or the portable C path. */
async function run(m: Model, input: Float32Array, dims: number[], threads: number, force?: 'im2col' | 'px', portable = false) {
  if (force) process.env.KILN_INT8_FORCE = force;
  else delete process.env.KILN_INT8_FORCE;
  const plan = await build(m, { device: 'cpu', shapes: { x: dims } });
  delete process.env.KILN_INT8_FORCE;
  const engine = await Engine.load(plan.bytes, { intraOpNumThreads: threads });
  if (portable) process.env.KILN_INT8_PORTABLE = '1';
  const out = await engine.createContext().run({ x: new Tensor('float32', input, dims) });
  delete process.env.KILN_INT8_PORTABLE;
  engine.dispose();
  const tactics = plan.header.layers.map((l) => l.tactic);
  return { tactics, out: Object.values(out).map((t) => Float32Array.from((t as Tensor).data as Float32Array)) };
}

describe.skipIf(!hasCompiler)('int8 convolutions in grid form', () => {
  afterEach(() => { delete process.env.KILN_INT8_FORCE; delete process.env.KILN_INT8_PORTABLE; });

  for (const [activationType, H, W, threads] of [['int8', 29, 23, 1], ['uint8', 27, 31, 2], ['uint8', 19, 149, 1]] as const) {
    it(`${activationType} activations, ${H}x${W}, batch 2, ${threads} thread(s): bit-identical to the per-row im2col packing`, async () => {
      const m = oddNet(2, H, W);
      const cal = randomCalibrationData(m.graph, 4, { seed: 9 });
      const q = quantizeModel(m, { mode: 'int8', calibrationData: cal, evalData: randomCalibrationData(m.graph, 2, { seed: 10 }), activationType }).model;
      const x = randomCalibrationData(m.graph, 2, { seed: 11 }).get('x')!;
      const dims = [...x.dims];
      const grid = await run(q, x.data as Float32Array, dims, threads);
      const im2col = await run(q, x.data as Float32Array, dims, threads, 'im2col');
      // every convolution but none in grid form on one side, all of them on the other
      expect(grid.tactics.filter((t) => t.includes('-int8-conv-') && /-(grid|px)-/.test(t)).length).toBe(6);
      expect(im2col.tactics.filter((t) => t.includes('-int8-conv')).length).toBe(6);
      expect(im2col.tactics.some((t) => t.includes('-grid-'))).toBe(false);
      expect(grid.out.length).toBe(1);
      const [g, i] = [grid.out[0], im2col.out[0]];
      expect(g.length).toBe(2 * 6 * outHW(H, W));
      expect(i.length).toBe(g.length);
      let nonzero = 0;
      for (let k = 0; k < g.length; k++) if (g[k] !== 0) nonzero++;
      expect(nonzero).toBeGreaterThan(g.length / 4);
      expect(Buffer.from(g.buffer).equals(Buffer.from(i.buffer))).toBe(true);
      // the portable C microkernel and epilogue (no AVX-512 stores), grid form: the same bits again
      const portable = await run(q, x.data as Float32Array, dims, threads, undefined, true);
      expect(Buffer.from(portable.out[0].buffer).equals(Buffer.from(g.buffer))).toBe(true);
    });
  }

  for (const activationType of ['int8', 'uint8'] as const) {
    it(`${activationType} activations, pixels as rows (7x64 tiles), batch 2: bit-identical to the im2col and grid forms`, async () => {
      const m = sevensNet(2);
      const q = quantizeModel(m, { mode: 'int8', calibrationData: randomCalibrationData(m.graph, 4, { seed: 12 }), evalData: randomCalibrationData(m.graph, 2, { seed: 13 }), activationType }).model;
      const x = randomCalibrationData(m.graph, 2, { seed: 14 }).get('x')!;
      const dims = [...x.dims], data = x.data as Float32Array;
      const px = await run(q, data, dims, 2, 'px');
      expect(px.tactics.filter((t) => t.includes('-int8-conv-px-')).length).toBe(4);
      const bits = (o: { out: Float32Array[] }) => Buffer.from(o.out[0].buffer);
      expect(px.out[0].length).toBe(2 * 5 * 4 * 7);
      expect(px.out[0].filter((v) => v !== 0).length).toBeGreaterThan(px.out[0].length / 4);
      for (const other of [await run(q, data, dims, 1, 'im2col'), await run(q, data, dims, 1), await run(q, data, dims, 1, 'px', true)]) {
        expect(bits(other).equals(bits(px))).toBe(true);
      }
    });
  }
});

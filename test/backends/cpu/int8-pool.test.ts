// Max pooling over quantized tensors on the CPU: NCHW builds move a QuantizeLinear that reads a MaxPool before it
// (quantizing is monotonic and saturating, so pooling the stored integers gives the same bytes) and run the pool on
// 8-bit planes natively (AVX-512BW with masked tails, and the portable C path). Checked bit for bit against the
// reference kernels on the unmoved graph, over odd sizes, padding, ceil mode, dilation and strides 1 to 3 (large enough
// that the builder's timing picks the native kernels over the reference ones).
import { describe, it, expect, afterEach } from 'vitest';
import { GraphBuilder, seededRandom } from '../../../src/ir/builder.js';
import type { Model } from '../../../src/ir/graph.js';
import { TensorData } from '../../../src/ir/tensor.js';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { resnet50, RESNET_SMALL } from '../../../bench/models/zoo.js';
import { quantizeModel } from '../../../src/tools/quantize.js';
import { randomCalibrationData } from '../../../src/quant/data.js';

const hasCompiler = !!findCompiler();

/** Per case, x_i (float) -> MaxPool -> QuantizeLinear -> DequantizeLinear: the pool's output quantized, as a Q/DQ
 * file has it. All cases in one graph: one build (one compile) per type. */
function pooled(dtype: 'int8' | 'uint8'): Model {
  const b = new GraphBuilder('pools');
  const s = b.initializer('s', TensorData.fromNumbers('float32', [], [0.03]));
  const z = b.initializer('z', TensorData.fromNumbers(dtype, [], [dtype === 'uint8' ? 17 : -5]));
  CASES.forEach(([, dims, attrs], i) => {
    const p = b.op('MaxPool', [b.input(`x${i}`, 'float32', dims)], attrs);
    b.output(b.op('DequantizeLinear', [b.op('QuantizeLinear', [p, s, z]), s, z]), { kind: 'unknown' });
  });
  return b.model(13);
}

const CASES: [string, number[], Record<string, number | number[]>][] = [
  ['3x3 s2 p1 (ResNet stem)', [1, 16, 57, 45], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }],
  ['2x2 s2, ceil mode, odd size', [2, 16, 67, 83], { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1 }],
  ['3x3 s1 p1, rows wider than 64 bytes', [1, 8, 29, 150], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }],
  ['3x2 s3, dilation 2, asymmetric pads', [1, 24, 89, 95], { kernel_shape: [3, 2], strides: [3, 3], dilations: [2, 2], pads: [2, 1, 0, 2] }],
  ['5x5 s2 p2 on a 7-wide image', [1, 1024, 7, 7], { kernel_shape: [5, 5], strides: [2, 2], pads: [2, 2, 2, 2] }],
];

describe.skipIf(!hasCompiler)('8-bit max pools on the CPU', () => {
  afterEach(() => { delete process.env.KILN_INT8_PORTABLE; });

  for (const dtype of ['uint8', 'int8'] as const) {
    it(`${dtype}: native 8-bit pools (AVX-512 and portable C), outputs identical to the reference`, async () => {
      const m = pooled(dtype);
      const r = seededRandom(dtype === 'uint8' ? 5 : 6);
      // values around the zero point and past both saturation ends
      const feeds = new Map(CASES.map(([, dims], i) => [`x${i}`, new TensorData('float32', dims, Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => (r() - 0.5) * 12))]));
      const plan = await build(m, { device: 'cpu', shapes: Object.fromEntries(CASES.map(([, dims], i) => [`x${i}`, dims])) });
      expect(plan.header.layers.filter((l) => l.tactic.endsWith(`maxpool-${dtype}`))).toHaveLength(CASES.length);
      const ref = executeGraph(m.graph, feeds, { opsets: m.opsets });
      const engine = await Engine.load(plan.bytes, { intraOpNumThreads: 2 });
      const ctx = engine.createContext();
      for (const portable of [false, true]) {
        if (portable) process.env.KILN_INT8_PORTABLE = '1';
        const got = await ctx.run(Object.fromEntries([...feeds].map(([k, t]) => [k, new Tensor('float32', t.data as Float32Array, [...t.dims])])));
        m.graph.outputs.forEach((o, i) => {
          const want = ref.get(o.name) as TensorData, out = got[o.name] as Tensor;
          expect(out.dims, CASES[i][0]).toEqual(want.dims);
          expect(Array.from(out.data as Float32Array), `${CASES[i][0]}${portable ? ' (portable)' : ''}`).toEqual(Array.from(want.toFloat64(), (v) => Math.fround(v)));
        });
      }
      engine.dispose();
    });
  }

  it('int8 ResNet: the stem requantizes in its epilogue and the pool runs on its bytes; no QuantizeLinear after the pool', async () => {
    const m = resnet50({ ...RESNET_SMALL, image: 64 });
    const q = quantizeModel(m, { mode: 'int8', activationType: 'uint8', calibrationData: randomCalibrationData(m.graph, 4, { seed: 1 }), batchSize: 4 }).model;
    const plan = await build(q, { device: 'cpu', shapes: { input: [1, 3, 64, 64] } });
    const layers = plan.header.layers;
    const pool = layers.findIndex((l) => l.tactic.endsWith('maxpool-uint8'));
    expect(pool).toBeGreaterThan(0);
    expect(layers[pool - 1].tactic).toMatch(/-int8-conv/);
    expect(layers[pool + 1].tactic).not.toMatch(/quantize$/);
  });
});

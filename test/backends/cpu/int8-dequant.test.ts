// Per-tensor DequantizeLinear of 8-bit tensors on the CPU: a Q/DQ file keeps them between integer layers where a
// float op reads quantized values (both inputs of a residual Add under `kiln quantize --quantize-residual`). They run
// natively (one float multiply per element, rounded as the reference rounds), not on the reference kernel: a
// --quantize-residual ResNet ran 6x slower than the default file on the CPU before.
import { describe, it, expect } from 'vitest';
import { GraphBuilder, seededRandom } from '../../../src/ir/builder.js';
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

describe.skipIf(!hasCompiler)('8-bit DequantizeLinear on the CPU', () => {
  it('int8 and uint8, with and without a zero point: native, outputs identical to the reference', async () => {
    const b = new GraphBuilder('dq');
    const dims = [1, 16, 61, 67];
    const cases: [string, number | undefined][] = [['int8', -7], ['uint8', 131], ['int8', undefined], ['uint8', undefined]];
    cases.forEach(([dtype, zp], i) => {
      const x = b.input(`x${i}`, 'float32', dims);
      const s = b.initializer(`s${i}`, TensorData.fromNumbers('float32', [], [0.0371 * (i + 1)]));
      const z = b.initializer(`z${i}`, TensorData.fromNumbers(dtype as 'int8', [], [zp ?? 0]));
      // the zero point input omitted where zp is undefined (then 0, and the quantized type is uint8 by default)
      const q = zp === undefined ? b.op('QuantizeLinear', [x, s]) : b.op('QuantizeLinear', [x, s, z]);
      b.output(zp === undefined ? b.op('DequantizeLinear', [q, s]) : b.op('DequantizeLinear', [q, s, z]), { kind: 'unknown' });
    });
    const m = b.model(13);
    const r = seededRandom(11);
    const feeds = new Map(cases.map((_, i) => [`x${i}`, new TensorData('float32', dims, Float32Array.from({ length: dims.reduce((a, c) => a * c, 1) }, () => (r() - 0.5) * 20))]));
    const plan = await build(m, { device: 'cpu', shapes: Object.fromEntries(cases.map((_, i) => [`x${i}`, dims])) });
    expect(plan.header.layers.filter((l) => l.tactic.endsWith('-dequantize'))).toHaveLength(cases.length);
    const engine = await Engine.load(plan.bytes, { intraOpNumThreads: 2 });
    const got = await engine.createContext().run(Object.fromEntries([...feeds].map(([k, t]) => [k, new Tensor('float32', t.data as Float32Array, dims)])));
    const ref = executeGraph(m.graph, feeds, { opsets: m.opsets });
    for (const o of m.graph.outputs) {
      expect(Array.from((got[o.name] as Tensor).data as Float32Array), o.name).toEqual(Array.from((ref.get(o.name) as TensorData).toFloat64(), (v) => Math.fround(v)));
    }
    engine.dispose();
  });

  it('a --quantize-residual ResNet: every DequantizeLinear native, outputs within one LSB of the reference', async () => {
    const m = resnet50({ ...RESNET_SMALL, image: 64 });
    const q = quantizeModel(m, { mode: 'int8', activationType: 'uint8', quantizeResidual: true, calibrationData: randomCalibrationData(m.graph, 4, { seed: 1 }), batchSize: 4 }).model;
    const feeds = randomCalibrationData(q.graph, 1, { seed: 5 });
    const x = feeds.get('input')!;
    const plan = await build(q, { device: 'cpu', shapes: { input: [...x.dims] } });
    const dq = plan.header.layers.filter((l) => l.opType === 'DequantizeLinear');
    expect(dq.length).toBeGreaterThan(0);
    expect(dq.every((l) => l.tactic.endsWith('-dequantize'))).toBe(true);
    const engine = await Engine.load(plan.bytes, { intraOpNumThreads: 2 });
    const out = (await engine.createContext().run({ input: new Tensor('float32', x.data as Float32Array, [...x.dims]) })).logits as Tensor;
    const ref = (executeGraph(q.graph, feeds as Map<string, TensorData>, { opsets: q.opsets }).get('logits') as TensorData).toFloat64();
    const amax = ref.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
    const worst = ref.reduce((a, v, i) => Math.max(a, Math.abs(v - (out.data as Float32Array)[i])), 0);
    expect(worst / (amax / 127)).toBeLessThanOrEqual(1);
    engine.dispose();
  });
});

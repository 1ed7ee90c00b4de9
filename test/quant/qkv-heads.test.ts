// The 'split heads in quantized matmuls' and 'quantize in transposes' stages (GPU builds: it runs with the NHWC layout stages): BERT's merged Q/K/V
// kiln:QMatMul -> Split -> Reshape -> Transpose chains become one QMatMul with `heads` writing [B, H, S, D] per part
// (attention reads K untransposed), with exactly the unfused graph's results on the reference kernels.
import { describe, it, expect } from 'vitest';
import { bertBase, BERT_SMALL } from '../../bench/models/zoo.js';
import { quantized } from '../helpers/quant.js';
import type { Model } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { cloneModel } from '../../src/quant/qdq.js';
import { optimize } from '../../src/passes/pipeline.js';
import { assignPrecision } from '../../src/passes/precision.js';
import { verifyGraph } from '../../src/passes/verify.js';
import { outputsOf } from './outputs.js';

const count = (m: Model, op: string) => m.graph.nodes.filter((n) => n.opType === op).length;

describe('split heads in quantized matmuls', () => {
  it('BERT-small int8 (static shapes): Q/K/V written head-split by the QMatMul, same results as Split + Transposes, fp32 and fp16', async () => {
    const q = quantized(bertBase(BERT_SMALL), 4);
    const feeds = randomCalibrationData(q.graph, 2, { seed: 5 });
    const shapes = new Map([...feeds].map(([k, t]) => [k, [...t.dims]]));
    const gpu = cloneModel(q), cpu = cloneModel(q);
    await optimize(gpu, { verify: true, layout: 'NHWC', inputShapes: shapes });
    await optimize(cpu, { verify: true, inputShapes: shapes });
    const attention = count(cpu, 'Attention');
    expect(attention).toBeGreaterThan(0);
    const split = gpu.graph.nodes.filter((n) => n.opType === 'QMatMul' && n.attrs.heads);
    expect(split.length).toBe(attention);
    for (const n of split) {
      expect(n.outputs.length).toBe(3);
      const [B, S] = shapes.get('input_ids')!;
      const t = gpu.graph.valueInfo.get(n.outputs[1]);
      expect(t).toMatchObject({ kind: 'tensor', shape: [B, n.attrs.heads.value, S, expect.any(Number)] });
    }
    for (const n of gpu.graph.nodes.filter((x) => x.opType === 'Attention' || x.opType === 'QAttention')) expect(n.attrs.k_transposed?.value ?? 0).toBe(0);
    expect(count(gpu, 'Split')).toBe(0);
    // what is left of the Transposes: attention's output back to [B, S, H, D], one per layer, quantized as it moves
    // for the output projection ('quantize in transposes'), then stored so by the attention itself ('quantize
    // attention outputs')
    expect(count(gpu, 'Transpose')).toBe(0);
    expect(count(gpu, 'QTranspose')).toBe(0);
    expect(count(gpu, 'QAttention')).toBe(attention);
    expect(count(gpu, 'QuantizeLinear')).toBe(count(cpu, 'QuantizeLinear') - attention - count(gpu, 'QLayerNormalization'));
    expect(count(cpu, 'Transpose')).toBe(4 * attention);
    const [a, b] = [outputsOf(cloneModel(cpu), feeds), outputsOf(cloneModel(gpu), feeds)];
    a.forEach((x, i) => expect(Array.from(b[i])).toEqual(Array.from(x)));
    for (const m of [gpu, cpu]) {
      assignPrecision(m.graph, { precision: 'fp16' });
      verifyGraph(m.graph, m.opsets, 'after fp16 precision');
    }
    for (const n of split) for (const o of n.outputs) expect(gpu.graph.valueInfo.get(o)).toMatchObject({ dtype: 'float16' });
    const [c, d] = [outputsOf(cpu, feeds), outputsOf(gpu, feeds)];
    c.forEach((x, i) => expect(Array.from(d[i])).toEqual(Array.from(x)));
  }, 60_000);

  it('leaves the chain alone where a part has another reader', async () => {
    const q = quantized(bertBase(BERT_SMALL), 4);
    const feeds = randomCalibrationData(q.graph, 2, { seed: 5 });
    const shapes = new Map([...feeds].map(([k, t]) => [k, [...t.dims]]));
    const m = cloneModel(q);
    await optimize(m, { layout: 'NHWC', inputShapes: shapes, stopAfter: 'quantize in layer norms' });
    // a second reader of the first layer's V in [B, S, H, D] (a graph output) keeps that layer's chain; a reader of
    // a Transpose's output would not: the QMatMul writes that very value
    const v = m.graph.nodes.find((n) => n.opType === 'Reshape' && n.name.includes('value'))!;
    m.graph.outputs.push({ name: v.outputs[0], type: { kind: 'unknown' } });
    await optimize(m, { layout: 'NHWC', inputShapes: shapes });
    expect(m.graph.nodes.filter((n) => n.opType === 'QMatMul' && n.attrs.heads).length).toBe(count(m, 'Attention') + count(m, 'QAttention') - 1);
    expect(count(m, 'Split')).toBe(1);
  }, 60_000);
});

describe('quantize in transposes', () => {
  /** x [2, 6, 64] -> MatMul -> [2, 6, 128] -> Reshape [2, 6, 4, 32] -> Transpose(perm) [-> Reshape] -> QuantizeLinear -> DequantizeLinear */
  function model(perm: number[], reshapeAfter: boolean, dtype: 'int8' | 'uint8', zp: number): Model {
    const r = seededRandom(11);
    const b = new GraphBuilder('qt');
    const x = b.input('x', 'float32', [2, 6, 64]);
    const h = b.op('Reshape', [b.op('MatMul', [x, b.initializer('w', randomTensor(r, [64, 128], 0.4))]), b.initializer('shape', TensorData.fromBigInts('int64', [4], [2n, 6n, 4n, 32n]))]);
    let t = b.op('Transpose', [h], { perm });
    if (reshapeAfter) t = b.op('Reshape', [t, b.initializer('flat', TensorData.fromBigInts('int64', [2], [2n, -1n]))]);
    const s = b.initializer('s', TensorData.scalar('float32', 0.013)), z = b.initializer('z', TensorData.scalar(dtype, zp));
    b.output(b.op('DequantizeLinear', [b.op('QuantizeLinear', [t, s, z]), s, z]), { kind: 'unknown' });
    return b.model(17);
  }
  for (const [perm, reshapeAfter, dtype, zp] of [[[0, 2, 1, 3], true, 'int8', 0], [[0, 2, 1, 3], false, 'uint8', 121], [[2, 0, 1, 3], true, 'int8', -3]] as const) {
    it(`Transpose [${perm.join(',')}]${reshapeAfter ? ' -> Reshape' : ''} -> QuantizeLinear (${dtype}) becomes kiln:QTranspose with the same result`, async () => {
      const ref = model([...perm], reshapeAfter, dtype, zp);
      const f = cloneModel(ref);
      await optimize(f, { verify: true, layout: 'NHWC' });
      expect(count(f, 'QTranspose')).toBe(1);
      expect(count(f, 'Transpose') + count(f, 'QuantizeLinear')).toBe(0);
      const feeds = randomCalibrationData(ref.graph, 2, { seed: 4 });
      const [a, b] = [outputsOf(ref, feeds), outputsOf(f, feeds)];
      expect(Array.from(b[0])).toEqual(Array.from(a[0]));
      assignPrecision(f.graph, { precision: 'fp16' });
      // the QTranspose reads the fp16 MatMul output as it is (the only Cast: the graph input's, for the MatMul)
      expect(f.graph.nodes.filter((n) => n.opType === 'Cast').map((n) => n.name)).toEqual(['x/cast_float16']);
    });
  }

  it('leaves a Transpose that moves the innermost axis (its reads would not coalesce), and CPU builds, alone', async () => {
    const nhwc = cloneModel(model([0, 1, 3, 2], true, 'int8', 0));
    await optimize(nhwc, { layout: 'NHWC' });
    expect(count(nhwc, 'QTranspose')).toBe(0);
    const cpu = cloneModel(model([0, 2, 1, 3], true, 'int8', 0));
    await optimize(cpu);
    expect(count(cpu, 'QTranspose')).toBe(0);
  });
});

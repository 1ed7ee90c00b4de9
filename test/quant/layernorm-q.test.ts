// The 'quantize in layer norms' stage (GPU builds: it runs with the NHWC layout stages) and fp16 LayerNormalization in
// fp16 builds: a QuantizeLinear reading a LayerNormalization becomes kiln:QLayerNormalization's second output, and the
// rewritten graph computes exactly what the unfused one does (reference kernels, fp32 and fp16 builds).
import { describe, it, expect } from 'vitest';
import { bertBase, BERT_SMALL } from '../../bench/models/zoo.js';
import { quantized } from '../helpers/quant.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import type { Model } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { cloneModel } from '../../src/quant/qdq.js';
import { optimize } from '../../src/passes/pipeline.js';
import { assignPrecision } from '../../src/passes/precision.js';
import { verifyGraph } from '../../src/passes/verify.js';
import { inferShapes } from '../../src/passes/infer.js';
import { maxDiff } from './outputs.js';

const count = (m: Model, op: string) => m.graph.nodes.filter((n) => n.opType === op).length;

/** x -> LayerNormalization -> (graph output y, QuantizeLinear -> graph output dq(yq)) */
function lnModel(dtype: 'int8' | 'uint8', zp: number, qAsOutput = false): Model {
  const r = seededRandom(7);
  const b = new GraphBuilder('ln_q');
  const x = b.input('x', 'float32', [3, 5, 32]);
  const y = b.op('LayerNormalization', [x, b.initializer('g', randomTensor(r, [32], 1)), b.initializer('b', randomTensor(r, [32], 0.5))], { epsilon: 1e-5 });
  const s = b.initializer('s', TensorData.scalar('float32', 0.021));
  const z = b.initializer('z', TensorData.scalar(dtype, zp));
  const q = b.op('QuantizeLinear', [y, s, z]);
  b.output(y, { kind: 'tensor', dtype: 'float32', shape: [3, 5, 32] });
  if (qAsOutput) b.output(q, { kind: 'tensor', dtype, shape: [3, 5, 32] });
  else b.output(b.op('DequantizeLinear', [q, s, z]), { kind: 'tensor', dtype: 'float32', shape: [3, 5, 32] });
  return b.model(17);
}

const feedsFor = (m: Model, seed: number) => randomCalibrationData(m.graph, 3, { seed });

describe('quantize in layer norms', () => {
  for (const [dtype, zp] of [['int8', 0], ['int8', -9], ['uint8', 117]] as const) {
    it(`LayerNormalization -> QuantizeLinear (${dtype}, zero point ${zp}) becomes one kiln:QLayerNormalization with the same outputs`, async () => {
      const ref = lnModel(dtype, zp);
      const f = cloneModel(ref);
      await optimize(f, { verify: true, layout: 'NHWC' });
      expect(count(f, 'QLayerNormalization')).toBe(1);
      expect(count(f, 'QuantizeLinear')).toBe(0);
      const ln = f.graph.nodes.find((n) => n.opType === 'QLayerNormalization')!;
      expect(ln.outputs.length).toBe(2);
      expect(ln.attrs.y2_dtype.value).toBe(dtype);
      expect(ln.attrs.y2_zero_point.value).toBe(zp);
      expect(maxDiff(ref, f, feedsFor(ref, 1))).toBe(0);
    });
  }

  it('leaves a QuantizeLinear that is a graph output, and CPU builds (no layout stages), alone', async () => {
    const out = cloneModel(lnModel('int8', 0, true));
    await optimize(out, { layout: 'NHWC' });
    expect(count(out, 'QLayerNormalization')).toBe(0);
    const cpu = cloneModel(lnModel('int8', 0));
    await optimize(cpu);
    expect(count(cpu, 'QLayerNormalization')).toBe(0);
    expect(count(cpu, 'QuantizeLinear')).toBe(1);
  });

  it('BERT-small int8: every quantized LayerNorm output is written by the norm; exactly the unfused results, fp32 and fp16 builds', async () => {
    const q = quantized(bertBase(BERT_SMALL), 4);
    const feeds = randomCalibrationData(q.graph, 2, { seed: 5 });
    const gpu = cloneModel(q), cpu = cloneModel(q);
    await optimize(gpu, { verify: true, layout: 'NHWC' });
    await optimize(cpu, { verify: true });
    const lns = count(cpu, 'LayerNormalization');
    expect(count(gpu, 'QLayerNormalization')).toBeGreaterThan(0);
    // a norm's output that is quantized before another op reads it (the last block's, via the pooler's Gather) stays
    for (const n of gpu.graph.nodes.filter((x) => x.opType === 'QuantizeLinear')) expect(gpu.graph.nodes.find((p) => p.outputs.includes(n.inputs[0]))?.opType).not.toBe('LayerNormalization');
    expect(count(gpu, 'QLayerNormalization') + count(gpu, 'LayerNormalization')).toBe(lns);
    expect(count(cpu, 'QuantizeLinear') - count(gpu, 'QuantizeLinear')).toBe(count(gpu, 'QLayerNormalization'));
    expect(maxDiff(cloneModel(cpu), cloneModel(gpu), feeds)).toBe(0);
    // fp16 builds: the norms read and write fp16 (no Casts around them), scale and bias stay fp32
    for (const m of [gpu, cpu]) {
      assignPrecision(m.graph, { precision: 'fp16' });
      verifyGraph(m.graph, m.opsets, 'after fp16 precision');
    }
    for (const n of gpu.graph.nodes.filter((x) => x.opType === 'QLayerNormalization')) {
      expect(gpu.graph.valueInfo.get(n.outputs[0])).toMatchObject({ dtype: 'float16' });
      expect(gpu.graph.initializers.get(n.inputs[1])?.dtype).toBe('float32');
    }
    // no cast in front of a norm, and its output goes on as fp16 (this model's shapes are dynamic: the only Casts of a
    // norm's output feed Shape ops)
    const casts = new Map(gpu.graph.nodes.filter((n) => n.opType === 'Cast').map((n) => [n.outputs[0], n]));
    for (const n of gpu.graph.nodes.filter((x) => x.opType.endsWith('LayerNormalization'))) expect(casts.has(n.inputs[0])).toBe(false);
    for (const n of gpu.graph.nodes.filter((x) => x.opType !== 'Shape')) for (const i of n.inputs) expect(casts.get(i)?.name ?? '').not.toMatch(/LayerNorm/);
    expect(maxDiff(cpu, gpu, feeds)).toBe(0);
  }, 60_000);
});

describe('fp16 precision of LayerNormalization', () => {
  it('runs reduced only on a reduced input and without its statistics outputs', () => {
    const b = new GraphBuilder('ln_prec');
    const r = seededRandom(3);
    const x = b.input('x', 'float32', [2, 16]);
    const g = b.initializer('g', randomTensor(r, [16], 1)), bb = b.initializer('b', randomTensor(r, [16], 1));
    const w = b.initializer('w', randomTensor(r, [16, 16], 0.3));
    const direct = b.op('LayerNormalization', [x, g, bb]); // its input is the fp32 graph input: stays fp32
    const h = b.op('MatMul', [direct, w]); // reduced: its output is fp16
    const reduced = b.op('LayerNormalization', [h, g, bb]);
    const [withStats, mean] = b.node('LayerNormalization', [h, g, bb], {}, { outputs: 2 });
    b.output(b.op('Add', [reduced, withStats]), { kind: 'tensor', dtype: 'float32', shape: [2, 16] });
    b.output(mean, { kind: 'tensor', dtype: 'float32', shape: [2, 1] });
    const m = b.model(17);
    inferShapes(m.graph, m.opsets);
    const p = assignPrecision(m.graph, { precision: 'fp16' });
    const byOut = (o: string) => m.graph.nodes.find((n) => n.outputs.includes(o))!;
    expect(p.get(byOut(direct))).toBe('fp32');
    expect(p.get(byOut(reduced))).toBe('fp16');
    expect(p.get(byOut(withStats))).toBe('fp32');
    expect(byOut(reduced).inputs.slice(1).map((i) => m.graph.initializers.get(i)?.dtype)).toEqual(['float32', 'float32']);
    // bf16 builds keep every norm fp32
    const bf = b.model(17);
    inferShapes(bf.graph, bf.opsets);
    const pb = assignPrecision(bf.graph, { precision: 'bf16' });
    for (const n of bf.graph.nodes.filter((x) => x.opType === 'LayerNormalization')) expect(pb.get(n)).toBe('fp32');
  });
});

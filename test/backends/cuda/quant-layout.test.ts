// The NHWC layout pass on quantized convolutions, and the fp8 fold, checked on the reference executor (no GPU):
// a Q/DQ model optimized for NHWC (as the cuda backend is) computes what the NCHW-optimized one does.
import { describe, expect, it } from 'vitest';
import { resnet50, RESNET_SMALL, bertBase, BERT_SMALL } from '../../../bench/models/zoo.js';
import { quantizeModel } from '../../../src/tools/quantize.js';
import { randomCalibrationData } from '../../../src/quant/data.js';
import { optimize } from '../../../src/passes/pipeline.js';
import { cloneModel } from '../../../src/quant/qdq.js';
import { executeGraph } from '../../../src/ops/execute.js';
import type { Model } from '../../../src/ir/graph.js';
import type { TensorData } from '../../../src/ir/tensor.js';

function quantized(m: Model, mode: 'int8' | 'fp8'): Model {
  return quantizeModel(m, { mode, calibrationData: randomCalibrationData(m.graph, 2, { seed: 1 }), batchSize: 2 }).model;
}
const census = (m: Model, op: string, pred: (n: Model['graph']['nodes'][number]) => boolean = () => true) =>
  m.graph.nodes.filter((n) => n.opType === op && pred(n)).length;
const run = (m: Model, feeds: Map<string, TensorData>) => executeGraph(m.graph, new Map(feeds), { opsets: m.opsets });

describe('quantized layers for the GPU', () => {
  it('moves every QConv to NHWC and computes the same outputs', async () => {
    const q = quantized(resnet50(RESNET_SMALL), 'int8');
    const nchw = cloneModel(q), nhwc = cloneModel(q);
    await optimize(nchw, { layout: 'NCHW' });
    await optimize(nhwc, { layout: 'NHWC' });
    const convs = census(nchw, 'QConv');
    expect(convs).toBeGreaterThan(10);
    expect(census(nhwc, 'QConv', (n) => n.attrs.layout?.value === 'NHWC')).toBe(convs);
    expect(census(nhwc, 'Transpose')).toBeLessThanOrEqual(4); // only at the graph's edges and around the max pool
    const feeds = randomCalibrationData(q.graph, 2, { seed: 5 });
    const a = run(nchw, feeds).get(nchw.graph.outputs[0].name) as TensorData, b = run(nhwc, feeds).get(nhwc.graph.outputs[0].name) as TensorData;
    const x = a.toFloat64(), y = b.toFloat64();
    const amax = Math.max(...x.map(Math.abs));
    // summation order differs between layouts: a requantized value may land one step away, never more than an LSB
    expect(Math.max(...x.map((v, i) => Math.abs(v - y[i])))).toBeLessThanOrEqual(amax / 127);
  }, 60_000);

  it('folds fp8 Q/DQ MatMuls into QMatMul with fp8 operands, computing what the Q/DQ graph does', async () => {
    const q = quantized(bertBase(BERT_SMALL), 'fp8');
    const folded = cloneModel(q);
    await optimize(folded, {});
    const layers = folded.graph.nodes.filter((n) => n.opType === 'QMatMul');
    expect(layers.length).toBeGreaterThanOrEqual(8);
    // Q, K and V read one quantized activation: one QMatMul three projections wide, then a Split
    const splits = folded.graph.nodes.filter((n) => n.opType === 'Split' && n.domain === 'kiln');
    expect(splits.length).toBeGreaterThanOrEqual(2);
    for (const s of splits) expect(layers.find((l) => l.outputs[0] === s.inputs[0])?.inputs[1]).toBeDefined();
    expect(layers.some((n) => n.attrs.y_dtype?.value === 'float8e4m3fn')).toBe(true);
    expect(census(folded, 'DequantizeLinear')).toBe(0);
    const feeds = randomCalibrationData(q.graph, 2, { seed: 5 });
    const a = run(q, feeds), b = run(folded, feeds);
    for (const o of q.graph.outputs) {
      const x = (a.get(o.name) as TensorData).toFloat64(), y = (b.get(o.name) as TensorData).toFloat64();
      let d = 0, nx = 0, ny = 0;
      for (let i = 0; i < x.length; i++) { d += x[i] * y[i]; nx += x[i] * x[i]; ny += y[i] * y[i]; }
      expect(d / Math.sqrt(nx * ny)).toBeGreaterThan(0.9999);
    }
  }, 60_000);
});

const avail = (await import('../../../src/backends/cuda/index.js')).cudaBackend.availability();
describe.skipIf(!avail.ok)(`quantized layers on the GPU${avail.ok ? '' : ` (skipped: ${avail.reason})`}`, () => {
  it('runs int8 ResNet-small with every QConv on the GPU, within one LSB of the CPU engine', async () => {
    const { build } = await import('../../../src/build/builder.js');
    const { Engine } = await import('../../../src/runtime/engine.js');
    const { Tensor } = await import('../../../src/runtime/tensor.js');
    const q = quantized(resnet50(RESNET_SMALL), 'int8');
    const feeds = randomCalibrationData(q.graph, 2, { seed: 5 });
    const shapes = { input: [...feeds.get('input')!.dims] };
    const x = { input: new Tensor('float32', feeds.get('input')!.data as Float32Array, shapes.input) };
    const gpu = await Engine.load(await build(q, { device: 'cuda', shapes, strict: true }));
    const cpu = await Engine.load(await build(q, { device: 'cpu', shapes }));
    const a = Object.values(await gpu.createContext().run(x))[0] as InstanceType<typeof Tensor>;
    const b = Object.values(await cpu.createContext().run(x))[0] as InstanceType<typeof Tensor>;
    const u = a.data as Float32Array, v = b.data as Float32Array;
    const amax = Math.max(...v.map(Math.abs));
    expect(Math.max(...u.map((p, i) => Math.abs(p - v[i])))).toBeLessThanOrEqual(amax / 127);
    gpu.dispose();
  }, 120_000);
});

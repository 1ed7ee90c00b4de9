// Quantized residual Adds (`kiln quantize --quantize-residual`, TensorRT's Q/DQ placement): the quantizer puts Q/DQ on
// both inputs of each Add of two activations (sharing a Q the layers already have, bias Adds untouched), and the GPU
// build folds DQ(Q(conv)) + DQ(r_q) -> Add [-> Relu] [-> Q] into the QConv before it (an 8-bit residual, int8 out), so
// ResNet's residual stream stays int8. Checked on the reference kernels: the folded graph computes exactly what the
// unfolded one does (the epilogue rounds twice, as the file says); ORT and the CPU int8 engine run the file.
import { describe, it, expect } from 'vitest';
import * as ort from 'onnxruntime-node';
import { resnet50, RESNET_SMALL, bertBase, BERT_SMALL } from '../../bench/models/zoo.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import type { Model, Node } from '../../src/ir/graph.js';
import { randomCalibrationData, type Feeds } from '../../src/quant/data.js';
import { cloneModel } from '../../src/quant/qdq.js';
import { quantizeModel, formatQuantizeReport } from '../../src/tools/quantize.js';
import { optimize } from '../../src/passes/pipeline.js';
import { assignPrecision } from '../../src/passes/precision.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { findCompiler } from '../../src/backends/cpu/compiler.js';
import { maxDiff, outputsOf } from './outputs.js';

// two blocks in the first two stages: identity skips (the previous block's int8 output) beside projection ones
const deep = () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1] });
const calib = (m: Model, n: number, seed: number) => randomCalibrationData(m.graph, n, { seed });
const quantize = (m: Model, residual: boolean, activationType?: 'uint8') =>
  quantizeModel(m, { mode: 'int8', quantizeResidual: residual, activationType, calibrationData: calib(m, 8, 1), evalData: calib(m, 8, 2), batchSize: 4 });
function cosine(x: Float64Array, y: Float64Array): number {
  let d = 0, p = 0, r = 0;
  for (let i = 0; i < x.length; i++) { d += x[i] * y[i]; p += x[i] * x[i]; r += y[i] * y[i]; }
  return d / Math.sqrt(p * r);
}
const producerOf = (m: Model) => new Map(m.graph.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));

describe('quantize --quantize-residual: Q/DQ placement', () => {
  it('both inputs of every residual Add come through DequantizeLinear; one Q per tensor; default files unchanged', () => {
    const m = deep();
    const { model, report } = quantize(m, true);
    const p = producerOf(model);
    const adds = model.graph.nodes.filter((n) => n.opType === 'Add');
    expect(adds).toHaveLength(6);
    for (const a of adds) for (const i of a.inputs) expect(p.get(i)?.opType).toBe('DequantizeLinear');
    // a tensor the convolutions already read quantized (a block's output: the next block's input and its skip) keeps
    // its one QuantizeLinear, and the Add reads the same DequantizeLinear
    const qs = model.graph.nodes.filter((n) => n.opType === 'QuantizeLinear');
    expect(new Set(qs.map((q) => q.inputs[0])).size).toBe(qs.length);
    const skip = adds.find((a) => a.name === 'layer1.1.add')!;
    const skipDq = skip.inputs.map((i) => p.get(i)!).find((d) => p.get(p.get(d.inputs[0])!.inputs[0])?.opType === 'Relu')!;
    expect(model.graph.nodes.some((n) => n.opType === 'Conv' && n.inputs[0] === skipDq.outputs[0])).toBe(true);
    // the report has a row per Add with both inputs' scales, and the accuracy cost
    const rows = report.layers.filter((l) => l.opType === 'Add');
    expect(rows).toHaveLength(6);
    for (const r of rows) expect(r.activation!.scale > 0 && r.activation2!.scale > 0 && r.cosine > 0.99).toBe(true);
    expect(formatQuantizeReport(report)).toMatch(/layer1\.1\.add\s+Add .*input 2: amax/);
    expect(report.outputs[0].cosine).toBeGreaterThan(0.99);
    // default: no Add reads a DequantizeLinear
    const plain = quantize(m, false).model, pp = producerOf(plain);
    expect(plain.graph.nodes.filter((n) => n.opType === 'Add').every((a) => a.inputs.every((i) => pp.get(i)?.opType !== 'DequantizeLinear'))).toBe(true);
    expect(quantizeModel(m, { mode: 'int8', opTypesToQuantize: ['Conv', 'Gemm', 'Add'], calibrationData: calib(m, 8, 1), evalData: calib(m, 8, 2), batchSize: 4 })
      .model.graph.nodes.filter((n) => n.opType === 'QuantizeLinear')).toHaveLength(qs.length);
  }, 60_000);

  it('BERT: the two residual Adds per layer (after a MatMul and its bias Add) only; embedding sums and mask Adds stay float', () => {
    const m = bertBase(BERT_SMALL);
    const { report } = quantizeModel(m, { mode: 'int8', quantizeResidual: true, calibrationData: calib(m, 8, 3), evalData: calib(m, 4, 4) });
    const adds = report.layers.filter((l) => l.opType === 'Add').map((l) => l.node);
    expect(adds).toEqual(['encoder.layer.0.attention.output.residual', 'encoder.layer.0.output.residual', 'encoder.layer.1.attention.output.residual', 'encoder.layer.1.output.residual']);
    const notResidual = report.skipped.filter((s) => s.reason.startsWith('not a residual Add')).map((s) => s.node);
    expect(notResidual).toEqual(expect.arrayContaining(['embeddings.add_pos', 'encoder.layer.0.attention.self.add_mask']));
    expect(report.outputs.every((o) => o.cosine > 0.999)).toBe(true);
  }, 60_000);

  it('leaves Adds with a constant input (a bias) alone; refuses int4', () => {
    const rnd = seededRandom(3);
    const b = new GraphBuilder('bias-add');
    const x = b.input('x', 'float32', [4, 16]);
    const h = b.op('MatMul', [x, b.initializer('w1', randomTensor(rnd, [16, 16], 0.3))]);
    const biased = b.op('Add', [h, b.initializer('b1', randomTensor(rnd, [16], 0.3))], {}, 'bias_add');
    const y = b.op('Add', [biased, x], {}, 'skip_add');
    const out = b.op('MatMul', [y, b.initializer('w2', randomTensor(rnd, [16, 8], 0.3))]);
    b.output(out, { kind: 'tensor', dtype: 'float32', shape: [4, 8] });
    const m = b.model();
    const { model, report } = quantizeModel(m, { quantizeResidual: true, calibrationData: calib(m, 16, 1) });
    const p = producerOf(model);
    const bias = model.graph.nodes.find((n) => n.name === 'bias_add')!, skip = model.graph.nodes.find((n) => n.name === 'skip_add')!;
    expect(p.get(bias.inputs[0])?.opType).toBe('MatMul');
    expect(model.graph.initializers.get(bias.inputs[1])?.dtype).toBe('float32');
    expect(skip.inputs.map((i) => p.get(i)?.opType)).toEqual(['DequantizeLinear', 'DequantizeLinear']);
    expect(report.skipped).toContainEqual({ node: 'bias_add', reason: 'constant input (bias add)' });
    expect(() => quantizeModel(m, { mode: 'int4', quantizeResidual: true, calibrationData: calib(m, 16, 1) })).toThrow(/needs quantized activations/);
  });
});

/** The folded int8-residual layers of a GPU (NHWC) build. */
const folded = (m: Model): Node[] => m.graph.nodes.filter((n) => n.opType === 'QConv' && !!n.attrs.c_dtype);

describe('quantized residuals folded into the layer before (GPU builds)', () => {
  for (const activationType of [undefined, 'uint8'] as const) {
    it(`resnet (2+2+1+1 blocks) ${activationType ?? 'int8'}: every Add folds, the residual stream is 8-bit; exactly the unfolded graph's outputs`, async () => {
      const q = quantize(deep(), true, activationType).model;
      const [nchw, nhwc] = [cloneModel(q), cloneModel(q)];
      await optimize(nchw, { verify: true });
      await optimize(nhwc, { verify: true, layout: 'NHWC' });
      // CPU builds (no layout stages) keep the nodes; the GPU build has no Add, DequantizeLinear or float residual left
      expect(nchw.graph.nodes.filter((n) => n.opType === 'Add' || (n.domain === 'kiln' && n.opType === 'Elementwise')).length).toBe(6);
      expect(folded(nchw)).toHaveLength(0);
      const f = folded(nhwc);
      expect(f).toHaveLength(6);
      expect(nhwc.graph.nodes.filter((n) => ['Add', 'Elementwise', 'DequantizeLinear'].includes(n.opType))).toHaveLength(0);
      const types = (name: string) => nhwc.graph.valueInfo.get(name);
      for (const n of f) {
        expect(types(n.inputs[3])).toMatchObject({ dtype: activationType ?? 'int8' });
        expect(n.attrs.activation.value).toBe('Relu');
      }
      // all but the last block write 8-bit (the last one feeds the float global pool)
      expect(f.filter((n) => n.attrs.y_dtype?.value).length).toBe(5);
      const feeds = calib(q, 2, 9);
      expect(maxDiff(nchw, nhwc, feeds)).toBe(0);
      // against the Q/DQ file itself (the reference executor on the unoptimized graph), also exact
      expect(maxDiff(q, nhwc, feeds)).toBe(0);
    }, 120_000);
  }

  it('fp16 build: the folded layers keep 8-bit residuals (no Cast), the last block writes fp16; close to the fp32 file', async () => {
    const q = quantize(deep(), true).model;
    const b = cloneModel(q);
    await optimize(b, { layout: 'NHWC' });
    assignPrecision(b.graph, { precision: 'fp16' });
    expect(b.graph.nodes.filter((n) => n.opType === 'Cast').length).toBe(1); // the graph's output only
    const f = folded(b);
    expect(f).toHaveLength(6);
    for (const n of f) expect(b.graph.valueInfo.get(n.inputs[3])).toMatchObject({ dtype: 'int8' });
    const last = f.find((n) => !n.attrs.y_dtype?.value)!;
    expect(b.graph.valueInfo.get(last.outputs[0])).toMatchObject({ dtype: 'float16' });
    // only the last block's fp16 output and the classifier differ from the fp32 file
    const feeds = calib(q, 2, 9);
    expect(cosine(outputsOf(q, feeds)[0], outputsOf(b, feeds)[0])).toBeGreaterThan(0.999);
  }, 120_000);

  it('leaves an Add whose conv output has another reader, and a fp8 file, unfolded', async () => {
    const m = deep();
    const fp8 = quantizeModel(m, { mode: 'fp8', quantizeResidual: true, calibrationData: calib(m, 8, 1), batchSize: 4 }).model;
    const g = cloneModel(fp8);
    await optimize(g, { verify: true, layout: 'NHWC' });
    expect(folded(g)).toHaveLength(0);
    // a second reader of a conv3 output (here: a graph output) keeps that block's Add as it is
    const q = quantize(m, true).model;
    const conv3 = q.graph.nodes.find((n) => n.name === 'layer1.1.conv3')!;
    q.graph.outputs.push({ name: conv3.outputs[0], type: { kind: 'tensor', dtype: 'float32' } });
    const o = cloneModel(q);
    await optimize(o, { verify: true, layout: 'NHWC' });
    expect(folded(o)).toHaveLength(5);
  }, 120_000);
});

describe('the --quantize-residual file elsewhere', () => {
  const feedsOf = (m: Model, n: number, seed: number): Feeds => calib(m, n, seed);

  it('onnxruntime-node loads it and matches Kiln within one output LSB; accuracy vs fp32 and vs the default int8 file', async () => {
    const m = deep();
    const withAdds = quantize(m, true), plain = quantize(m, false);
    // (4 inputs: over many, one-step flips where ORT's float convolutions sum in another order compound through the
    // blocks, for the default file too: see the results of issue 8's residual mode)
    const feeds = feedsOf(m, 4, 11);
    const bytes = serializeOnnx(withAdds.model);
    const s = await ort.InferenceSession.create(bytes);
    const input = feeds.get('input')!;
    const o = await s.run({ input: new ort.Tensor('float32', input.data as Float32Array, [...input.dims]) });
    const kiln = outputsOf(withAdds.model, feeds)[0];
    const ortOut = o[withAdds.model.graph.outputs[0].name].data as Float32Array;
    let d = 0;
    for (let i = 0; i < kiln.length; i++) d = Math.max(d, Math.abs(kiln[i] - ortOut[i]));
    expect(d).toBeLessThanOrEqual(withAdds.report.outputs[0].lsb);
    // the mode's cost on this random-weight model: a little below the default file, both close to fp32
    expect(withAdds.report.outputs[0].cosine).toBeGreaterThan(0.99);
    expect(plain.report.outputs[0].cosine).toBeGreaterThan(0.99);
    const f32 = outputsOf(m, feeds)[0], def = outputsOf(plain.model, feeds)[0];
    expect(cosine(def, kiln)).toBeGreaterThan(0.99);
    expect(cosine(f32, kiln)).toBeGreaterThan(0.99);
  }, 120_000);

  it.skipIf(!findCompiler())('the CPU int8 engine runs it (Adds unfolded) and matches the reference executor within one LSB', async () => {
    const m = deep();
    const { model, report } = quantize(m, true);
    const feeds = feedsOf(m, 2, 12);
    const input = feeds.get('input')!;
    const plan = await build(model, { shapes: { input: [...input.dims] } });
    expect(plan.header.layers.filter((l) => l.opType === 'QConv').length).toBeGreaterThan(5);
    const engine = await Engine.load(plan, { intraOpNumThreads: 2 });
    const out = await engine.createContext().run({ input: new Tensor('float32', input.data as Float32Array, [...input.dims]) });
    engine.dispose();
    const ref = outputsOf(model, feeds)[0];
    const got = (out[model.graph.outputs[0].name] as Tensor).data as Float32Array;
    let d = 0;
    for (let i = 0; i < ref.length; i++) d = Math.max(d, Math.abs(ref[i] - got[i]));
    expect(d).toBeLessThanOrEqual(report.outputs[0].lsb);
  }, 180_000);
});


// kiln quantize's graph preparation: BatchNormalization folds into the layer before it, and int8 Conv/Gemm layers
// carry their bias as int32 at scale x_scale * w_scale behind a DequantizeLinear (the form integer runtimes fuse).
import { describe, it, expect } from 'vitest';
import * as ort from 'onnxruntime-node';
import { tinyCnn } from '../../bench/models/zoo.js';
import type { Model, Node } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import { quantizeModel, formatQuantizeReport } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { executeGraph } from '../../src/ops/execute.js';

const m = tinyCnn();
const calib = randomCalibrationData(m.graph, 32, { seed: 5 });
const producer = (q: Model, name: string) => q.graph.nodes.find((n) => n.outputs.includes(name));
const init = (q: Model, name: string) => q.graph.initializers.get(name) as TensorData;

/** The layer's bias input: its DequantizeLinear and that node's stored int32 values, scales and zero points. */
function biasDq(q: Model, layer: Node) {
  const dq = producer(q, layer.inputs[2]);
  if (!dq || dq.opType !== 'DequantizeLinear') return undefined;
  return { dq, q: init(q, dq.inputs[0]), scale: init(q, dq.inputs[1]), zp: init(q, dq.inputs[2]) };
}

describe('quantize: BatchNormalization folding and int32 bias', () => {
  it('int8: BN folded, Conv and Gemm biases int32 at x_scale * w_scale, equal to the fp32 bias within half a step', () => {
    const { model: q, report } = quantizeModel(m, { mode: 'int8', calibrationData: calib });
    expect(q.graph.nodes.some((n) => n.opType === 'BatchNormalization')).toBe(false);
    expect(report.batchNormsFolded).toBe(2);
    expect(formatQuantizeReport(report)).toMatch(/folded 2 BatchNormalization nodes/);
    const layers = q.graph.nodes.filter((n) => n.opType === 'Conv' || n.opType === 'Gemm');
    expect(layers.map((n) => n.name)).toEqual(['conv1', 'conv2', 'fc']);
    for (const layer of layers) {
      const b = biasDq(q, layer)!;
      expect(b, layer.name).toBeDefined();
      expect(b.q.dtype).toBe('int32');
      expect(b.zp.dtype).toBe('int32');
      expect(b.dq.attrs.axis?.value).toBe(0);
      const xDq = producer(q, layer.inputs[0])!, wDq = producer(q, layer.inputs[1])!;
      const xs = init(q, xDq.inputs[1]).get(0), ws = init(q, wDq.inputs[1]).toFloat64();
      const s = b.scale.toFloat64(), v = b.q.toFloat64();
      expect(s.length).toBe(ws.length);
      for (let c = 0; c < s.length; c++) {
        expect(s[c]).toBe(Math.fround(xs * ws[c]));
        expect(b.zp.get(c)).toBe(0);
      }
      // the folded float bias the int32 one replaces: the same model quantized at fp8 keeps it as a float constant
      const { model: f } = quantizeModel(m, { mode: 'fp8', calibrationData: calib });
      const fb = init(f, f.graph.nodes.find((n) => n.name === layer.name)!.inputs[2]).toFloat64();
      for (let c = 0; c < s.length; c++) expect(Math.abs(v[c] * s[c] - fb[c])).toBeLessThanOrEqual(s[c] / 2 + 1e-7 * Math.abs(fb[c]));
    }
  });

  it('fp8 keeps float biases (no int32 form for float8 layers); BN is folded all the same', () => {
    const { model: f, report } = quantizeModel(m, { mode: 'fp8', calibrationData: calib });
    expect(report.batchNormsFolded).toBe(2);
    for (const layer of f.graph.nodes.filter((n) => n.opType === 'Conv' || n.opType === 'Gemm')) {
      expect(f.graph.initializers.get(layer.inputs[2])?.dtype).toBe('float32');
    }
  });

  it('a Gemm with beta != 1 keeps its float bias', () => {
    const g: Model = { ...m, graph: { ...m.graph, nodes: m.graph.nodes.map((n) => (n.opType === 'Gemm' ? { ...n, attrs: { ...n.attrs, beta: { type: 'float', value: 0.5 } } } : n)) } };
    const { model: q } = quantizeModel(g, { mode: 'int8', calibrationData: calib });
    const fc = q.graph.nodes.find((n) => n.opType === 'Gemm')!;
    expect(q.graph.initializers.get(fc.inputs[2])?.dtype).toBe('float32');
    expect(biasDq(q, q.graph.nodes.find((n) => n.name === 'conv1')!)?.q.dtype).toBe('int32');
  });

  it('the int8 file runs in onnxruntime-node and matches Kiln within one output LSB; accuracy vs fp32 holds', async () => {
    const { model: q, report } = quantizeModel(m, { mode: 'int8', calibrationData: calib, evalData: randomCalibrationData(m.graph, 64, { seed: 6 }) });
    expect(report.outputs[0].cosine).toBeGreaterThanOrEqual(0.99);
    const feeds = randomCalibrationData(m.graph, 4, { seed: 9 });
    const kiln = executeGraph(q.graph, feeds as Map<string, TensorData>, { opsets: q.opsets }).get('probabilities') as TensorData;
    const s = await ort.InferenceSession.create(serializeOnnx(q));
    const x = feeds.get('input')!;
    const o = (await s.run({ input: new ort.Tensor('float32', x.data as Float32Array, x.dims as number[]) })).probabilities.data as Float32Array;
    const a = kiln.toFloat64();
    let d = 0;
    for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - o[i]));
    expect(d).toBeLessThanOrEqual(report.outputs[0].lsb);
  });
});

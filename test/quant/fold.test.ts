// The 'quantized layers' optimizer stages: Q/DQ around Conv/MatMul/Gemm folds into kiln:QConv/QMatMul (BatchNorm,
// bias, residual and activation absorbed), chains stay int8, and the folded graph computes what the Q/DQ graph does
// (within one LSB) on Kiln-quantized zoo models and on an ORT-style file (uint8 activations, int32 bias).
import { describe, it, expect } from 'vitest';
import { tinyCnn, resnet50, RESNET_SMALL } from '../../bench/models/zoo.js';
import { quantized, ortStyleModel } from '../helpers/quant.js';
import { GraphBuilder } from '../../src/ir/builder.js';
import type { Model } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import { randomCalibrationData, type Feeds } from '../../src/quant/data.js';
import { cloneModel } from '../../src/quant/qdq.js';
import { optimize } from '../../src/passes/pipeline.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { assignPrecision } from '../../src/passes/precision.js';
import { executeGraph } from '../../src/ops/execute.js';

/** Max |a - b| over the outputs, in units of amax/127 of the reference output. */
function lsbError(ref: Model, test: Model, feeds: Feeds): number {
  const a = executeGraph(ref.graph, feeds as Map<string, TensorData>, { opsets: ref.opsets });
  const b = executeGraph(test.graph, feeds as Map<string, TensorData>, { opsets: test.opsets });
  let worst = 0;
  for (const o of ref.graph.outputs) {
    const x = (a.get(o.name) as TensorData).toFloat64(), y = (b.get(o.name) as TensorData).toFloat64();
    const lsb = x.reduce((m, v) => Math.max(m, Math.abs(v)), 0) / 127;
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]) / lsb);
  }
  return worst;
}

function cosine(x: Float64Array, y: Float64Array): number {
  let d = 0, nx = 0, ny = 0;
  for (let i = 0; i < x.length; i++) { d += x[i] * y[i]; nx += x[i] * x[i]; ny += y[i] * y[i]; }
  return d / Math.sqrt(nx * ny);
}

const ops = (m: Model) => m.graph.nodes.map((n) => `${n.opType}${n.attrs.y_dtype?.value ? `>${n.attrs.y_dtype.value as string}` : ''}`);

describe('quantized layers: folding Q/DQ', () => {
  it('tiny-cnn: every Conv/Gemm folds (BatchNorm, bias and Relu absorbed); same outputs as the Q/DQ graph', async () => {
    const q = quantized(tinyCnn());
    const f = cloneModel(q);
    await optimize(f, { verify: true });
    const names = ops(f);
    expect(names.filter((n) => n.startsWith('QConv')).length).toBe(2);
    expect(names.filter((n) => n === 'QMatMul').length).toBe(1);
    expect(names).not.toContain('DequantizeLinear');
    expect(names).not.toContain('BatchNormalization');
    const conv = f.graph.nodes.find((n) => n.opType === 'QConv')!;
    expect(conv.attrs.activation.value).toBe('Relu');
    expect((conv.attrs.w_scales.value as number[]).length).toBe(16);
    expect(lsbError(q, f, randomCalibrationData(q.graph, 8, { seed: 9 }))).toBeLessThanOrEqual(1);
  });

  it('resnet-small: consecutive quantized convolutions pass int8 (requantizing epilogue), within one LSB', async () => {
    const q = quantized(resnet50(RESNET_SMALL));
    const f = cloneModel(q);
    await optimize(f, { verify: true });
    const names = ops(f);
    expect(names.filter((n) => n === 'QConv>int8').length).toBeGreaterThanOrEqual(8);
    expect(names).not.toContain('DequantizeLinear');
    // residual adds are absorbed into the last conv of each block
    expect(f.graph.nodes.filter((n) => n.opType === 'QConv' && n.inputs[3]).length).toBe(4);
    expect(lsbError(q, f, randomCalibrationData(q.graph, 4, { seed: 9 }))).toBeLessThanOrEqual(1);
  });

  it('ORT-style file: uint8 activations with zero points and an int32 bias fold, within one LSB', async () => {
    const q = ortStyleModel();
    const f = cloneModel(q);
    await optimize(f, { verify: true });
    const conv = f.graph.nodes.find((n) => n.opType === 'QConv')!;
    expect(conv.attrs.x_zero_point.value).toBe(120);
    expect(conv.attrs.y_dtype.value).toBe('uint8');
    expect(conv.attrs.y_zero_point.value).toBe(3);
    expect(f.graph.nodes.some((n) => n.opType === 'QMatMul' && n.inputs[2])).toBe(true);
    expect(lsbError(q, f, randomCalibrationData(q.graph, 4, { seed: 2 }))).toBeLessThanOrEqual(1);
  });

  it('resnet-small fp8: every Conv folds into QConv with fp8 operands, chains pass fp8; same function as the Q/DQ graph', async () => {
    const q = quantizeModel(resnet50(RESNET_SMALL), { mode: 'fp8', calibrationData: randomCalibrationData(resnet50(RESNET_SMALL).graph, 4, { seed: 3 }), batchSize: 4 }).model;
    const convs = q.graph.nodes.filter((n) => n.opType === 'Conv').length;
    const f = cloneModel(q);
    await optimize(f, { verify: true });
    const layers = f.graph.nodes.filter((n) => n.opType === 'QConv');
    expect(layers.length).toBe(convs);
    expect(f.graph.nodes.some((n) => n.opType === 'Conv' || n.opType === 'BatchNormalization')).toBe(false);
    expect(ops(f).filter((n) => n === 'QConv>float8e4m3fn').length).toBeGreaterThanOrEqual(8);
    expect(f.graph.nodes.filter((n) => n.opType === 'QConv' && n.inputs[3]).length).toBe(4);
    for (const l of layers) expect(f.graph.initializers.get(l.inputs[1])!.dtype).toBe('float8e4m3fn');
    // one fp8 step is 6-12% of a value: BatchNorm folded into the weight scales rounds differently from BatchNorm
    // after the convolution, so requantized values may land one step away; the functions agree, not the bits
    const feeds = randomCalibrationData(q.graph, 2, { seed: 9 });
    const a = executeGraph(q.graph, feeds as Map<string, TensorData>, { opsets: q.opsets });
    const b = executeGraph(f.graph, feeds as Map<string, TensorData>, { opsets: f.opsets });
    for (const o of q.graph.outputs) expect(cosine((a.get(o.name) as TensorData).toFloat64(), (b.get(o.name) as TensorData).toFloat64())).toBeGreaterThan(0.999);
  }, 60_000);

  it('NHWC + fp16 (the GPU build): residual quantization moves into the NHWC layers\' epilogues, float tensors between layers are fp16', async () => {
    // two blocks per stage: the first block's output is both the second's residual and its quantized input
    const q = quantized(resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1] }));
    const f = cloneModel(q);
    await optimize(f, { verify: true, layout: 'NHWC' });
    // one Transpose, before the global pool: the input is quantized as it moves to NHWC (kiln:QTranspose) and the max
    // pool runs channels-last (kiln:MaxPoolNHWC), so none sits between a layer and a QuantizeLinear
    expect(f.graph.nodes.filter((n) => n.opType === 'Transpose').length).toBeLessThanOrEqual(1);
    expect(f.graph.nodes.filter((n) => n.opType === 'QTranspose' || n.opType === 'MaxPoolNHWC')).toHaveLength(2);
    // ... and the two blocks' output quantizations are their last convolution's second (int8) output
    const dual = f.graph.nodes.filter((n) => n.opType === 'QConv' && n.outputs.length === 2);
    expect(dual.length).toBe(2);
    for (const n of dual) expect(n.attrs.y2_dtype.value).toBe('int8');
    // the classifier's: the graph input's is in its QTranspose, the max pool's in the stem's epilogue (the pool reads int8)
    expect(f.graph.nodes.filter((n) => n.opType === 'QuantizeLinear').length).toBe(1);
    const feeds = randomCalibrationData(q.graph, 2, { seed: 9 });
    expect(lsbError(q, cloneModel(f), feeds)).toBeLessThanOrEqual(1);
    const ref = executeGraph(cloneModel(f).graph, feeds as Map<string, TensorData>, { opsets: f.opsets });
    // bf16 builds keep quantized layers fp32 (their kernels read and write fp16 or float32 only)
    const bf = cloneModel(f);
    assignPrecision(bf.graph, { precision: 'bf16' });
    for (const n of bf.graph.nodes.filter((x) => x.opType === 'QConv' && x.inputs[3])) expect(bf.graph.valueInfo.get(n.inputs[3])).toMatchObject({ dtype: 'float32' });
    assignPrecision(f.graph, { precision: 'fp16' });
    const residual = f.graph.nodes.filter((n) => n.opType === 'QConv' && n.inputs[3]);
    expect(residual.length).toBe(6);
    for (const n of residual) expect(f.graph.valueInfo.get(n.inputs[3])).toMatchObject({ dtype: 'float16' });
    expect(f.graph.nodes.filter((n) => n.opType === 'Cast').length).toBe(1); // the graph's output only: the input is quantized as it comes
    // fp16 rounding before a requantization moves some int8 values by one step: the fp16 engine differs from the
    // fp32 one about as much as int8 differs from float on this random-weight model (cosine 0.998-0.999)
    const half = executeGraph(f.graph, feeds as Map<string, TensorData>, { opsets: f.opsets });
    for (const o of f.graph.outputs) expect(cosine((ref.get(o.name) as TensorData).toFloat64(), (half.get(o.name) as TensorData).toFloat64())).toBeGreaterThan(0.995);
  }, 60_000);

  it('leaves asymmetric weights (non-zero weight zero point) in Q/DQ form', async () => {
    const b = new GraphBuilder('asym');
    const x = b.input('x', 'float32', [2, 4]);
    const s = b.initializer('s', TensorData.scalar('float32', 0.1));
    const xd = b.op('DequantizeLinear', [b.op('QuantizeLinear', [x, s]), s]);
    const w = b.op('DequantizeLinear', [b.initializer('w', TensorData.fromNumbers('int8', [4, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])), s, b.initializer('z', TensorData.scalar('int8', 1))]);
    b.output(b.op('MatMul', [xd, w]), { kind: 'tensor', dtype: 'float32', shape: [2, 3] });
    const m = b.model(13);
    await optimize(m);
    expect(m.graph.nodes.some((n) => n.opType === 'QMatMul')).toBe(false);
  });
});

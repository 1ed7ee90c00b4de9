// MaxPool in GPU (NHWC) builds: the layout pass runs a MaxPool between NHWC layers channels-last (kiln:MaxPoolNHWC, no
// Transpose pair around it), and a per-tensor int8/uint8 QuantizeLinear reading a MaxPool moves before it (in NCHW
// builds too), so the pool works on the stored integers (quantization is monotonic: the same bytes) and ResNet's stem writes int8 from its
// epilogue. Checked on the reference kernels: the rewritten graphs compute exactly what the NCHW ones do.
import { describe, it, expect } from 'vitest';
import { resnet50, RESNET_SMALL } from '../../bench/models/zoo.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import type { Model } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import { randomCalibrationData, type Feeds } from '../../src/quant/data.js';
import { cloneModel } from '../../src/quant/qdq.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { optimize } from '../../src/passes/pipeline.js';
import { maxDiff } from './outputs.js';
import { assignPrecision } from '../../src/passes/precision.js';
import { inferShapes } from '../../src/passes/infer.js';

const ops = (m: Model, op: string) => m.graph.nodes.filter((n) => n.opType === op);

/** NCHW build (no layout stages) and NHWC build of the same model, and their largest output difference. */
async function both(m: Model, feeds: Feeds) {
  const [a, b] = [cloneModel(m), cloneModel(m)];
  await optimize(a, { verify: true });
  await optimize(b, { verify: true, layout: 'NHWC' });
  return { nchw: a, nhwc: b, worst: maxDiff(a, b, feeds) };
}

const quantizedResnet = (activationType?: 'uint8') => {
  const m = resnet50(RESNET_SMALL);
  return quantizeModel(m, { mode: 'int8', activationType, calibrationData: randomCalibrationData(m.graph, 4, { seed: 1 }), batchSize: 4 }).model;
};

describe('MaxPool in NHWC builds', () => {
  it('float ResNet: the stem pool runs channels-last with no Transpose around it; same outputs', async () => {
    const m = resnet50(RESNET_SMALL);
    const { nhwc, worst } = await both(m, randomCalibrationData(m.graph, 2, { seed: 9 }));
    expect(ops(nhwc, 'MaxPool')).toHaveLength(0);
    const [pool] = ops(nhwc, 'MaxPoolNHWC');
    expect(pool).toBeDefined();
    const producer = nhwc.graph.nodes.find((n) => n.outputs.includes(pool.inputs[0]))!;
    expect(producer.opType).toBe('FusedConv');
    expect(nhwc.graph.nodes.filter((n) => n.inputs.includes(pool.outputs[0])).every((n) => n.opType === 'FusedConv')).toBe(true);
    expect(worst).toBe(0);
    // fp16 and bf16 builds run the pool reduced: no Cast on either side of it
    for (const precision of ['fp16', 'bf16'] as const) {
      const r = cloneModel(nhwc);
      assignPrecision(r.graph, { precision });
      inferShapes(r.graph, r.opsets);
      const [p] = ops(r, 'MaxPoolNHWC');
      expect(r.graph.nodes.filter((n) => n.opType === 'Cast' && (n.outputs.includes(p.inputs[0]) || n.inputs.includes(p.outputs[0])))).toHaveLength(0);
      expect(r.graph.valueInfo.get(p.outputs[0])).toMatchObject({ dtype: precision === 'fp16' ? 'float16' : 'bfloat16' });
    }
  });

  for (const act of [undefined, 'uint8'] as const) {
    it(`int8 ResNet${act ? ' (uint8 activations)' : ''}: the pool reads the stem's quantized output, no QuantizeLinear after it; same outputs`, async () => {
      const q = quantizedResnet(act);
      const { nchw, nhwc, worst } = await both(q, randomCalibrationData(q.graph, 2, { seed: 9 }));
      const [pool] = ops(nhwc, 'MaxPoolNHWC');
      const stem = nhwc.graph.nodes.find((n) => n.outputs.includes(pool.inputs[0]))!;
      expect(stem.opType).toBe('QConv');
      expect(stem.outputs).toHaveLength(1);
      expect(stem.attrs.y_dtype?.value).toBe(act ?? 'int8');
      // the pool's QuantizeLinear is gone in both builds (folded into the stem's epilogue: NCHW builds move it too, for
      // the CPU's 8-bit pool), and the input's in NHWC (folded into the input's QTranspose)
      const nchwPool = ops(nchw, 'MaxPool')[0];
      expect(nchw.graph.nodes.find((n) => n.outputs.includes(nchwPool.inputs[0]))?.attrs.y_dtype?.value).toBe(act ?? 'int8');
      expect(ops(nhwc, 'QuantizeLinear').length).toBe(ops(nchw, 'QuantizeLinear').length - 1);
      expect(ops(nhwc, 'Transpose').length).toBeLessThan(ops(nchw, 'Transpose').length + 3);
      // the 3-channel input is quantized as it moves to NHWC (one kiln:QTranspose, no QuantizeLinear + Transpose)
      const qt = ops(nhwc, 'QTranspose');
      expect(qt.map((n) => (n.attrs.perm.value as number[]).join())).toEqual(['0,2,3,1']);
      expect(qt[0].inputs[0]).toBe(q.graph.inputs[0].name);
      expect(worst).toBe(0);
    });
  }

  /** x [1, 4, 9, 9] -> Conv (a) or nothing (b) -> MaxPool -> QuantizeLinear -> DequantizeLinear, + the pool's float output */
  function poolModel(withConv: boolean, floatUse: boolean, dtype: 'int8' | 'uint8', zp: number): Model {
    const r = seededRandom(3);
    const b = new GraphBuilder('pool_q');
    const x = b.input('x', 'float32', [1, 4, 9, 9]);
    const h = withConv ? b.op('Conv', [x, b.initializer('w', randomTensor(r, [16, 4, 3, 3], 0.5))], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }) : x;
    const p = b.op('MaxPool', [h], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [2, 2], ceil_mode: 1 });
    const s = b.initializer('s', TensorData.scalar('float32', 0.013)), z = b.initializer('z', TensorData.scalar(dtype, zp));
    const dq = b.op('DequantizeLinear', [b.op('QuantizeLinear', [p, s, z]), s, z]);
    const c = withConv ? 16 : 4;
    b.output(dq, { kind: 'tensor', dtype: 'float32', shape: [1, c, 5, 5] });
    if (floatUse) b.output(p, { kind: 'tensor', dtype: 'float32', shape: [1, c, 5, 5] });
    return b.model(17);
  }

  for (const [dtype, zp] of [['int8', 0], ['int8', -7], ['uint8', 131]] as const) {
    it(`Conv -> MaxPool (ceil_mode, pads) -> QuantizeLinear ${dtype} zp ${zp}: pooled after quantizing, bit-identical`, async () => {
      const m = poolModel(true, false, dtype, zp);
      const { nhwc, worst } = await both(m, randomCalibrationData(m.graph, 1, { seed: 5 }));
      const [pool] = ops(nhwc, 'MaxPoolNHWC');
      // a float conv keeps a standalone QuantizeLinear (a quantized one takes it into its epilogue): now before the pool
      const q = nhwc.graph.nodes.find((n) => n.outputs.includes(pool.inputs[0]))!;
      expect(q.opType).toBe('QuantizeLinear');
      expect(nhwc.graph.nodes.find((n) => n.outputs.includes(q.inputs[0]))!.opType).toBe('FusedConv');
      expect(worst).toBe(0);
    });
  }

  it('leaves a pool whose float output is used too, and a pool fed NCHW data, as they are', async () => {
    const used = poolModel(true, true, 'int8', 0);
    const a = await both(used, randomCalibrationData(used.graph, 1, { seed: 5 }));
    const [pool] = ops(a.nhwc, 'MaxPoolNHWC');
    expect(a.nhwc.graph.nodes.find((n) => n.inputs.includes(pool.outputs[0]))?.opType).toBe('Transpose');
    expect(ops(a.nhwc, 'QuantizeLinear')).toHaveLength(1);
    expect(a.worst).toBe(0);
    const plain = poolModel(false, false, 'int8', 0);
    const b = await both(plain, randomCalibrationData(plain.graph, 1, { seed: 5 }));
    expect(ops(b.nhwc, 'MaxPoolNHWC')).toHaveLength(0);
    expect(ops(b.nhwc, 'MaxPool')).toHaveLength(1);
    expect(b.worst).toBe(0);
  });
});

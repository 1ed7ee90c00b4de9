// Quantized test models shared by the int8 folding and native-kernel tests.
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import type { Model } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';

/** `m` quantized by `kiln quantize`'s int8 defaults, calibrated on seeded random inputs. */
export function quantized(m: Model, samples = 16): Model {
  return quantizeModel(m, { mode: 'int8', calibrationData: randomCalibrationData(m.graph, samples, { seed: 3 }), evalData: randomCalibrationData(m.graph, 2, { seed: 4 }) }).model;
}

/** An ORT-style Q/DQ model: uint8 activations with non-zero zero points, int32 bias through DequantizeLinear. */
export function ortStyleModel(): Model {
  const r = seededRandom(5);
  const b = new GraphBuilder('ort_style');
  const x = b.input('x', 'float32', [1, 8, 10, 10]);
  const sc = (v: number) => b.initializer(`s${v}`, TensorData.scalar('float32', v));
  const zp = (name: string, v: number) => b.initializer(name, TensorData.scalar('uint8', v));
  const xq = b.op('QuantizeLinear', [x, sc(0.02), zp('zx', 120)]);
  const xd = b.op('DequantizeLinear', [xq, sc(0.02), zp('zx2', 120)]);
  const wq = b.initializer('wq', TensorData.fromNumbers('int8', [16, 8, 3, 3], Array.from({ length: 16 * 72 }, () => Math.round(r() * 254 - 127))));
  const ws = b.initializer('ws', TensorData.fromNumbers('float32', [16], Array.from({ length: 16 }, () => 0.001 + r() * 0.002)));
  const wd = b.op('DequantizeLinear', [wq, ws], { axis: 0 });
  const bq = b.initializer('bq', TensorData.fromNumbers('int32', [16], Array.from({ length: 16 }, () => Math.round(r() * 2000 - 1000))));
  const bs = b.initializer('bs', TensorData.fromNumbers('float32', [16], Array.from({ length: 16 }, (_, i) => 0.00003 * (i + 1))));
  const bd = b.op('DequantizeLinear', [bq, bs], { axis: 0 });
  const y = b.op('Relu', [b.op('Conv', [xd, wd, bd], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [2, 2] })]);
  const yq = b.op('QuantizeLinear', [y, sc(0.05), zp('zy', 3)]);
  const yd = b.op('DequantizeLinear', [yq, sc(0.05), zp('zy2', 3)]);
  const f = b.op('MatMul', [yd, b.op('DequantizeLinear', [b.initializer('w2', TensorData.fromNumbers('int8', [5, 10], Array.from({ length: 50 }, () => Math.round(r() * 200 - 100)))),
    b.initializer('w2s', TensorData.fromNumbers('float32', [10], Array.from({ length: 10 }, () => 0.002))), b.initializer('w2z', TensorData.zeros('int8', [10]))], { axis: 1 })]);
  const out = b.op('Add', [f, b.initializer('b2', randomTensor(r, [10], 0.1))]);
  b.output(out, { kind: 'tensor', dtype: 'float32', shape: [1, 16, 5, 10] });
  return b.model(13);
}


// One convolution (optionally + bias, + a residual input, Relu / Relu6) fused by the optimizer, with seeded inputs:
// the single-layer models the CPU variant tests (Winograd, stem) force their tactics on.
import type { Model } from '../../../src/ir/graph.js';
import { TensorData, type Value } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { optimize } from '../../../src/passes/pipeline.js';
import { inferShapes } from '../../../src/passes/infer.js';

export interface ConvCase {
  batch: number; C: number; H: number; W: number; Co: number;
  /** window [kh, kw], stride (both axes), pads [top, left, bottom, right] */
  k: number[]; s: number; pads: number[];
  bias: boolean; res: boolean; act: 'none' | 'relu' | 'relu6';
  /** groups (default 1) */
  group?: number;
}

export const convOutSize = (k: ConvCase) => [0, 1].map((i) => Math.floor(([k.H, k.W][i] + k.pads[i] + k.pads[i + 2] - k.k[i]) / k.s) + 1);

/** The model (weights from \`seed\`) and its inputs (seeds 7 and 8), optimized and shape-inferred. */
export async function convModel(k: ConvCase, seed: number, name = 'conv'): Promise<{ m: Model; inputs: Map<string, Value> }> {
  const r = seededRandom(seed);
  const b = new GraphBuilder(name);
  const x = b.input('x', 'float32', [k.batch, k.C, k.H, k.W]);
  const [OH, OW] = convOutSize(k);
  const ins = [x, b.initializer('w', randomTensor(r, [k.Co, k.C / (k.group ?? 1), ...k.k], 0.3)), ...(k.bias ? [b.initializer('b', randomTensor(r, [k.Co], 0.5))] : [])];
  let h = b.op('Conv', ins, { kernel_shape: k.k, pads: k.pads, strides: [k.s, k.s], group: k.group ?? 1 }, 'conv');
  if (k.res) h = b.op('Add', [h, b.input('res', 'float32', [k.batch, k.Co, OH, OW])], {}, 'add');
  if (k.act === 'relu') h = b.op('Relu', [h], {}, 'relu');
  if (k.act === 'relu6') {
    h = b.op('Clip', [h, b.initializer('lo', new TensorData('float32', [], Float32Array.of(0))), b.initializer('hi', new TensorData('float32', [], Float32Array.of(6)))], {}, 'relu6');
  }
  b.output(h);
  const m = b.model(17);
  await optimize(m, { inputShapes: new Map(m.graph.inputs.map((i) => [i.name, (i.type as { shape: number[] }).shape])) });
  inferShapes(m.graph, m.opsets);
  const inputs = new Map<string, Value>([['x', randomTensor(seededRandom(7), [k.batch, k.C, k.H, k.W], 1)]]);
  if (k.res) inputs.set('res', randomTensor(seededRandom(8), [k.batch, k.Co, OH, OW], 1));
  return { m, inputs };
}

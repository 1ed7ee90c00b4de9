// One convolution (optionally + bias, + a residual input, Relu / Relu6) fused by the optimizer, with seeded inputs:
// the single-layer models the CPU variant tests (Winograd, stem) force their tactics on.
import { expect } from 'vitest';
import type { Model, Node } from '../../../src/ir/graph.js';
import { TensorData, type Value } from '../../../src/ir/tensor.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { cpuBackend } from '../../../src/backends/cpu/index.js';
import type { NativeLibrary } from '../../../src/backends/cpu/native.js';
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

/** Worst error of each tactic of the model's convolution whose name holds \`family\` (e.g. '-stem-'), forced at the
 * given thread count, relative to each value with a floor at 1e-3 of the largest (float32 sums in another order). */
export async function variantErrors(m: Model, inputs: Map<string, Value>, threads: number, family: string): Promise<Map<string, number>> {
  const ref = executeGraph(m.graph, inputs, { opsets: m.opsets, keepAll: true });
  const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
  const node = m.graph.nodes.find((n) => n.opType === 'FusedConv')!;
  const want = ref.get(m.graph.outputs[0].name) as TensorData;
  expect(node.outputs[0]).toBe(m.graph.outputs[0].name);
  const ins = node.inputs.map((n) => (n ? ref.get(n) : undefined));
  const errors = new Map<string, number>();
  for (const t of cpuBackend.tactics(node, m, typeOf)) {
    if (!t.name.includes(family)) continue;
    (t as unknown as { build: { lib: NativeLibrary } }).build.lib.threads(threads);
    const [out] = (await t.run(node as Node, ins, m.opsets)) as TensorData[];
    expect(out.dims).toEqual(want.dims);
    const a = out.data as Float32Array, w = want.data as Float32Array;
    const atol = 1e-3 * w.reduce((x, v) => Math.max(x, Math.abs(v)), 0);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - w[i]) / (atol + Math.abs(w[i])));
    errors.set(t.name, worst);
  }
  return errors;
}

// Batch-generic native kernels: a plan built with a dynamic batch (the default profile, as InferenceSession and
// `kiln serve` build) runs other batch sizes on its compiled kernels, with outputs matching the reference executor;
// shapes that differ elsewhere still fall back per layer.
import { describe, it, expect } from 'vitest';
import type { Model } from '../../../src/ir/graph.js';
import { TensorData } from '../../../src/ir/tensor.js';
import { GraphBuilder } from '../../../src/ir/builder.js';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { parsePlan } from '../../../src/build/plan.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { modelFeeds, worstDiff } from './feeds.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { runBatch, type KernelsMeta } from '../../../src/backends/cpu/build.js';
import { tinyCnn, mobilenetV2, MOBILENET_SMALL, bertBase, BERT_SMALL } from '../../../bench/models/zoo.js';

const hasCompiler = !!findCompiler();

const feedsAt = (m: Model, batch: number) => modelFeeds(m, { batch });

const meta = (plan: Uint8Array): KernelsMeta => JSON.parse(new TextDecoder().decode(parsePlan(plan).blobs.get('cpu/kernels.json')!));

/** ConvNeXt's permutes around a channels-last block: the axis-group swap kernel at any batch. */
function permutes(): Model {
  const b = new GraphBuilder('permutes');
  const x = b.input('x', 'float32', ['n', 32, 24, 30]); // enough work to compile (MIN_MODEL_WORK)
  const last = b.op('Relu', [b.op('Transpose', [b.op('Relu', [x])], { perm: [0, 2, 3, 1] })]);
  b.output(b.op('Transpose', [last], { perm: [0, 3, 1, 2] }));
  return b.model(17);
}

describe.skipIf(!hasCompiler)('batch-generic native kernels', () => {
  const cases: [string, () => Model, Record<string, { min: number[]; opt: number[]; max: number[] }> | undefined, string[]][] = [
    ['tiny CNN (default profile)', () => tinyCnn(), undefined, ['FusedConv', 'MaxPool', 'GlobalAveragePool', 'FusedMatMul', 'Softmax']],
    ['mobilenet-v2 (small)', () => mobilenetV2(MOBILENET_SMALL), undefined, ['FusedConv']],
    ['channels-last permutes', permutes, undefined, ['Transpose']],
    ['bert (small, seq 32 fixed, batch 1..8)', () => bertBase(BERT_SMALL), { input_ids: { min: [1, 32], opt: [1, 32], max: [8, 32] } },
      ['FusedMatMul', 'Attention', 'LayerNormalization']],
  ];
  for (const [name, make, profile, ops] of cases) {
    it(`${name}: other batch sizes run on the compiled layers and match the reference`, async () => {
      const m = make();
      let profiles;
      if (profile) {
        // every input of the model gets the same batch/seq profile
        const inputs = m.graph.inputs.filter((i) => !m.graph.initializers.has(i.name)).map((i) => i.name);
        profiles = [Object.fromEntries(inputs.map((i) => [i, profile.input_ids]))];
      }
      const plan = await build(m, { profiles });
      const layers = meta(plan.bytes).layers;
      const batched = new Set(layers.filter((l) => l.batch).map((l) => l.node));
      const opOf = new Map(parsePlan(plan.bytes).header.layers.map((l) => [l.name, l.opType]));
      for (const op of ops) expect([...batched].map((n) => opOf.get(n)), op).toContain(op);
      const engine = await Engine.load(plan, { intraOpNumThreads: 2 });
      const ctx = engine.createContext();
      for (const batch of [1, 3, 8]) {
        const feeds = feedsAt(m, batch);
        expect(worstDiff(m, feeds, await ctx.run(feeds)), `batch ${batch}`).toBeLessThan(1e-3);
      }
      engine.dispose();
    }, 60_000);
  }

  it('pooling without padding (baked windows: strides, dilations, average and max, NaN) matches the reference', async () => {
    const b = new GraphBuilder('pools');
    const x = b.input('x', 'float32', ['n', 8, 33, 30]);
    const specs: [string, Record<string, number[]>][] = [
      ['MaxPool', { kernel_shape: [2, 2], strides: [2, 2] }], ['MaxPool', { kernel_shape: [3, 3], strides: [1, 2], dilations: [2, 1] }],
      ['AveragePool', { kernel_shape: [3, 2], strides: [2, 2] }], ['AveragePool', { kernel_shape: [1, 1], strides: [1, 1] }],
    ];
    specs.forEach(([op, attrs], i) => b.output(b.op(op, [x], attrs, `pool${i}`)));
    const m = b.model(17);
    const plan = await build(m, { profiles: [{ x: { min: [1, 8, 33, 30], opt: [2, 8, 33, 30], max: [4, 8, 33, 30] } }] });
    expect(meta(plan.bytes).layers.filter((l) => l.batch).length).toBe(4);
    const engine = await Engine.load(plan, { intraOpNumThreads: 2 });
    for (const batch of [2, 3]) {
      const feeds = feedsAt(m, batch);
      (feeds.x.data as Float32Array)[5] = NaN;
      const out = await engine.createContext().run(feeds);
      expect(Number.isNaN(((out[Object.keys(out)[0]] as Tensor).data as Float32Array)[2])).toBe(true);
      (feeds.x.data as Float32Array)[5] = 0;
      expect(worstDiff(m, feeds, await engine.createContext().run(feeds)), `batch ${batch}`).toBeLessThan(1e-4);
    }
    engine.dispose();
  }, 60_000);

  it('accepts any leading dim on the inputs that carry it, and nothing else', () => {
    const l = { inputDims: [[1, 16, 8, 8], [16, 16, 3, 3], null], outDims: [1, 16, 8, 8], batch: [true, false, false] };
    const t = (...dims: number[]) => new TensorData('float32', dims, new Float32Array(dims.reduce((a, b) => a * b, 1)));
    expect(runBatch(l, [t(1, 16, 8, 8), t(16, 16, 3, 3), undefined])).toBe(1);
    expect(runBatch(l, [t(7, 16, 8, 8), t(16, 16, 3, 3), undefined])).toBe(7);
    expect(runBatch(l, [t(7, 16, 9, 8), t(16, 16, 3, 3), undefined])).toBeUndefined();
    expect(runBatch(l, [t(7, 16, 8, 8), t(17, 16, 3, 3), undefined])).toBeUndefined();
    expect(runBatch({ ...l, batch: undefined }, [t(7, 16, 8, 8), t(16, 16, 3, 3), undefined])).toBeUndefined();
  });
});

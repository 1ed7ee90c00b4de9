// How a layer's work is cut into pool tasks (kiln_split2, runtime.c.ts) depends on the thread count and the batch:
// panels x tiles for transposed convolutions, channel x position panels for pointwise and direct convolutions and
// matrix products. Every native variant of layers whose panel and tile counts split raggedly (20 panels over 2 and 3
// threads, 3 channel panels of a pointwise layer, a partial last tile) runs at 1, 2 and 3 threads, at batch 1 and 3:
// the outputs must be the same bits at every thread count (each output is computed by one task with the same code
// whatever the cut; a chunk lost or run twice changes them) and match the reference kernel.
import { describe, it, expect } from 'vitest';
import type { Model, Node } from '../../../src/ir/graph.js';
import { TensorData, type Value } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { optimize } from '../../../src/passes/pipeline.js';
import { inferShapes } from '../../../src/passes/infer.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { cpuBackend } from '../../../src/backends/cpu/index.js';
import { layerArgs, runBatch, type LayerMeta } from '../../../src/backends/cpu/build.js';
import type { NativeLibrary } from '../../../src/backends/cpu/native.js';

/** The parts of build.ts's (unexported) NativeTactic this test reaches into. */
interface NativeTacticView {
  build: { lib: NativeLibrary };
  kernel: Pick<LayerMeta, 'args' | 'inputDims' | 'outDims' | 'batch'>;
  variant: { fn: string; accumulate?: boolean };
  packed: unknown;
}

function model(batch: number): Model {
  const r = seededRandom(31);
  const b = new GraphBuilder(`split_b${batch}`);
  const conv = (inp: string, cin: number, cout: number, name: string, k: number, pad: number, stride = 1) =>
    b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin, k, k], 0.2)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.1))],
      { kernel_shape: [k, k], pads: [pad, pad, pad, pad], strides: [stride, stride] }, name);
  // 7 x 7: one tile per row; 960 channels are 20 panels of 48, 30 of 32, 60 of 16 (the cuts that left 9 | 11 panels)
  const x7 = b.input('x7', 'float32', [batch, 40, 7, 7]);
  b.output(conv(x7, 40, 960, 'wide7', 1, 0));
  // 14 x 14, few output channels: 2-5 panels, the tiles cut instead; a 3 x 3 padded layer with a ragged row of tiles
  const x14 = b.input('x14', 'float32', [batch, 96, 14, 14]);
  b.output(conv(x14, 96, 72, 'narrow14', 1, 0));
  b.output(conv(x14, 96, 40, 'pad15', 3, 2));
  // 28 x 28 pointwise with 24 output channels (3 row panels of 8) and a strided 3 x 3
  const x28 = b.input('x28', 'float32', [batch, 48, 28, 28]);
  b.output(conv(x28, 48, 24, 'pw28', 1, 0));
  b.output(conv(x28, 48, 56, 's2', 3, 1, 2));
  // a pointwise output over 1 MB (64 x 4757 positions): row panels along chunks of 2720 positions, the last ragged
  const xb = b.input('xb', 'float32', [batch, 24, 67, 71]);
  b.output(conv(xb, 24, 64, 'pwbig', 1, 0));
  // matrix products: a few rows (the row-panel path) and 37 rows x 200 columns
  const v = b.input('v', 'float32', [37 * batch, 64]);
  b.output(b.op('MatMul', [v, b.initializer('wv', randomTensor(r, [64, 200], 0.2))], {}, 'mm'));
  return b.model(17);
}

describe.skipIf(!findCompiler())('layers cut into pool tasks by thread count and batch', () => {
  it.each([1, 3])('every variant gives the same bits at 1, 2 and 3 threads, batch %i, and matches the reference', async (batch) => {
    const m = model(batch);
    await optimize(m, { inputShapes: new Map(m.graph.inputs.map((i) => [i.name, (i.type as { shape: number[] }).shape])) });
    inferShapes(m.graph, m.opsets);
    const rnd = seededRandom(7 + batch);
    const inputs = new Map<string, Value>(m.graph.inputs.map((i) => [i.name, randomTensor(rnd, (i.type as { shape: number[] }).shape, 1)]));
    const ref = executeGraph(m.graph, inputs, { opsets: m.opsets, keepAll: true });
    const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
    const kinds = new Set<string>();
    for (const node of m.graph.nodes) {
      const ins = node.inputs.map((n) => (n ? ref.get(n) : undefined));
      const want = (ref.get(node.outputs[0]) as TensorData).data as Float32Array;
      const atol = 1e-3 * want.reduce((x, v) => Math.max(x, Math.abs(v)), 0);
      for (const t of cpuBackend.tactics(node, m, typeOf)) {
        const nt = t as unknown as NativeTacticView;
        if (!nt.variant || nt.variant.accumulate) continue;
        await t.run(node as Node, ins, m.opsets); // packs the weights
        let first: Float32Array | undefined;
        for (const threads of [1, 2, 3]) {
          const out = new Float32Array(want.length).fill(Number.NaN);
          nt.build.lib.threads(threads);
          nt.build.lib.callSync(nt.variant.fn, layerArgs(nt.kernel.args, ins, nt.packed, out), runBatch(nt.kernel, ins)!);
          if (!first) {
            let worst = 0;
            for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(out[i] - want[i]) / (atol + Math.abs(want[i])));
            // Winograd F(4, 3) rounds more than direct sums (its transforms scale some terms by up to 10)
            expect(worst, `${node.name} ${t.name}`).toBeLessThan(t.name.includes('winograd-f4') ? 5e-3 : 1e-3);
            first = out;
          } else {
            let diff = 0;
            for (let i = 0; i < out.length; i++) if (!Object.is(out[i], first[i])) diff++;
            expect(diff, `${node.name} ${t.name} at ${threads} threads: outputs differing from 1 thread`).toBe(0);
          }
        }
        kinds.add(t.name.replace(/^native-\w+?-/, '').replace(/-\d+x\d+$/, ''));
      }
    }
    for (const k of ['gemm', 'pw', 'tconv']) expect([...kinds], k).toContain(k);
  }, 240_000);
});

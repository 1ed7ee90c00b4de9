// ConvNeXt's block as torchvision exports it (7 x 7 depthwise, permute to channels-last, LayerNorm, Linear 4x with
// GELU written out as Div / Erf / Add / Mul / Mul, Linear back, permute back, layer scale, residual), built and run at 1
// and 2 threads against the reference executor, batch 2 over odd planes. Matrix products with at least as many rows as
// columns (both of the block's, 1922 rows) cut their rows into pool tasks (kiln_gemm, tiles.c.ts): a tall product gives
// the same bits at 1, 2 and 3 threads. And the native erf (kerf, runtime.c.ts) over a dense grid, at float precision.
import { describe, it, expect } from 'vitest';
import type { Model } from '../../../src/ir/graph.js';
import { TensorData } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { build } from '../../../src/build/builder.js';
import { parsePlan } from '../../../src/build/plan.js';
import { Engine } from '../../../src/runtime/engine.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { erf } from '../../../src/ops/elementwise-unary.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { pairRunsMatchReference } from './pairs.js';

// scalars as Constant nodes, as torch.onnx.export writes them
const scalar = (b: GraphBuilder, name: string, v: number) => b.op('Constant', [], { value: new TensorData('float32', [], Float32Array.of(v)) }, name);

function block(X: number[]): Model {
  const r = seededRandom(23);
  const b = new GraphBuilder('convnext_block');
  const C = X[1];
  const x = b.input('x', 'float32', X);
  const init = (name: string, dims: number[], s: number) => b.initializer(name, randomTensor(r, dims, s));
  const dw = b.op('Conv', [x, init('dw.w', [C, 1, 7, 7], 0.3), init('dw.b', [C], 0.1)], { kernel_shape: [7, 7], pads: [3, 3, 3, 3], group: C }, 'dw');
  const last = b.op('Transpose', [dw], { perm: [0, 2, 3, 1] }, 'to_last');
  const gamma = b.initializer('ln.g', new TensorData('float32', [C], Float32Array.from({ length: C }, () => 1 + (r() - 0.5) * 0.2)));
  const ln = b.op('LayerNormalization', [last, gamma, init('ln.b', [C], 0.1)], { axis: -1, epsilon: 1e-6 }, 'ln');
  const h = b.op('Add', [init('fc1.b', [4 * C], 0.1), b.op('MatMul', [ln, init('fc1.w', [C, 4 * C], 1 / Math.sqrt(C))], {}, 'fc1')], {}, 'fc1_bias');
  const erfOf = b.op('Erf', [b.op('Div', [h, scalar(b, 'sqrt2', Math.SQRT2)], {}, 'div')], {}, 'erf');
  const xmul = b.op('Mul', [h, b.op('Add', [erfOf, scalar(b, 'one', 1)], {}, 'one_plus')], {}, 'xmul');
  const gelu = b.op('Mul', [xmul, scalar(b, 'half', 0.5)], {}, 'gelu');
  const y = b.op('Add', [init('fc2.b', [C], 0.1), b.op('MatMul', [gelu, init('fc2.w', [4 * C, C], 1 / Math.sqrt(4 * C))], {}, 'fc2')], {}, 'fc2_bias');
  const back = b.op('Transpose', [y], { perm: [0, 3, 1, 2] }, 'to_first');
  const scaled = b.op('Mul', [b.initializer('scale', randomTensor(r, [C, 1, 1], 0.5)), back], {}, 'layer_scale');
  b.output(b.op('Add', [scaled, x], {}, 'residual'));
  return b.model(17);
}

describe.skipIf(!findCompiler())('ConvNeXt', () => {
  it('a block (GELU fused into the expansion) matches the reference at 1 and 2 threads, batch 2', async () => {
    const X = [2, 40, 31, 31];
    const m = block(X);
    await pairRunsMatchReference(m, X, 3, 2);
    const layers = parsePlan((await build(block(X), { shapes: { x: X } })).bytes).header.layers;
    const fc1 = layers.find((l) => l.name === 'fc1');
    expect(fc1?.tactic).toMatch(/^native-\w+-gemm-/);
    // the GELU's five nodes went into fc1's epilogue: none of them is a layer of its own
    expect(layers.filter((l) => ['div', 'erf', 'one_plus', 'xmul', 'gelu'].includes(l.name))).toEqual([]);
  }, 120_000);

  it('a tall matrix product (rows cut into tasks) gives the same bits at 1, 2 and 3 threads and matches the reference', async () => {
    const r = seededRandom(29);
    const b = new GraphBuilder('tall');
    const v = b.input('v', 'float32', [2, 517, 72]);
    const y = b.op('Add', [b.op('MatMul', [v, b.initializer('w', randomTensor(r, [72, 40], 0.2))], {}, 'mm'), b.initializer('bias', randomTensor(r, [40], 0.1))], {}, 'mm_bias');
    b.output(y);
    const m = b.model(17);
    const { bytes: plan } = await build(m, { shapes: { v: [2, 517, 72] } });
    expect(parsePlan(plan).header.layers[0].tactic).toMatch(/^native-\w+-gemm-/);
    const data = randomTensor(seededRandom(30), [2, 517, 72], 1);
    const ref = executeGraph(m.graph, new Map([['v', data]]), { opsets: m.opsets }).get(y) as TensorData;
    let first: Float32Array | undefined;
    for (const threads of [1, 2, 3]) {
      const engine = await Engine.load(plan, { intraOpNumThreads: threads });
      const out = ((await engine.createContext().run({ v: new Tensor('float32', data.data as Float32Array, [2, 517, 72]) }))[y] as Tensor).data as Float32Array;
      engine.dispose();
      if (!first) {
        first = out;
        const w = ref.data as Float32Array, atol = 1e-3 * w.reduce((q, x) => Math.max(q, Math.abs(x)), 0);
        let worst = 0;
        for (let i = 0; i < w.length; i++) worst = Math.max(worst, Math.abs(out[i] - w[i]) / (atol + Math.abs(w[i])));
        expect(worst).toBeLessThan(1e-3);
      } else expect(Buffer.from(out.buffer).equals(Buffer.from(first.buffer)), `${threads} threads`).toBe(true);
    }
  }, 60_000);

  it('the native erf is within 5e-7 of erf over [-6, 6], keeps NaN and saturates at +-1', async () => {
    const n = 48001;
    const grid = Float32Array.from({ length: n }, (_, i) => -6 + (12 * i) / (n - 1));
    grid.set([Infinity, -Infinity, NaN, 0, -0], 0);
    const b = new GraphBuilder('erf_grid');
    const out = b.op('Erf', [b.input('x', 'float32', [1, n])], {}, 'erf');
    b.output(out);
    const m = b.model(17);
    const { bytes: plan } = await build(m, { shapes: { x: [1, n] } });
    expect(parsePlan(plan).header.layers[0].tactic).toMatch(/^native-/);
    for (const threads of [1, 2]) {
      const engine = await Engine.load(plan, { intraOpNumThreads: threads });
      const y = ((await engine.createContext().run({ x: new Tensor('float32', grid, [1, n]) }))[out] as Tensor).data as Float32Array;
      engine.dispose();
      expect([...y.subarray(0, 5)]).toEqual([1, -1, NaN, 0, -0]);
      let worst = 0;
      for (let i = 5; i < n; i++) worst = Math.max(worst, Math.abs(y[i] - erf(grid[i])));
      expect(worst, `${threads} thread(s)`).toBeLessThan(5e-7);
      // odd, and never past 1 by more than one float step
      for (let i = 5; i < n; i++) expect(Math.abs(y[i])).toBeLessThanOrEqual(1 + 2 ** -23);
    }
  }, 60_000);
});

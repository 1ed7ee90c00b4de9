// Layers that add their product onto their residual in place (Variant.accumulate: the runner passes the residual's
// buffer as the output where the residual dies at the layer): every such variant, called that way, matches the
// reference, on convolutions whose tiles are whole and partial in both positions and channels (pointwise layers too), and
// on matrix products.
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

async function prepared(m: Model) {
  await optimize(m, { inputShapes: new Map(m.graph.inputs.map((i) => [i.name, (i.type as { shape: number[] }).shape])) });
  inferShapes(m.graph, m.opsets);
  return m;
}

/** Runs every accumulating variant of every layer with a residual, output buffer = a copy of the residual; returns
 * the variants checked (by tactic name). */
async function checkAccumulating(m: Model, inputs: Map<string, Value>, threads: number): Promise<string[]> {
  const ref = executeGraph(m.graph, inputs, { opsets: m.opsets, keepAll: true });
  const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
  const checked: string[] = [];
  for (const node of m.graph.nodes) {
    if (!node.inputs[3]) continue;
    const ins = node.inputs.map((n) => (n ? ref.get(n) : undefined));
    for (const t of cpuBackend.tactics(node, m, typeOf)) {
      const nt = t as unknown as NativeTacticView;
      if (!nt.variant?.accumulate) continue;
      await t.run(node as Node, ins, m.opsets); // packs the weights
      const buf = Float32Array.from((ins[3] as TensorData).data as Float32Array);
      const args = layerArgs(nt.kernel.args, ins, nt.packed, buf);
      args[3] = buf; // the residual argument is the output buffer
      nt.build.lib.threads(threads);
      nt.build.lib.callSync(nt.variant.fn, args, runBatch(nt.kernel, ins)!);
      const w = (ref.get(node.outputs[0]) as TensorData).data as Float32Array;
      const atol = 1e-3 * w.reduce((x, v) => Math.max(x, Math.abs(v)), 0);
      let worst = 0;
      for (let i = 0; i < w.length; i++) worst = Math.max(worst, Math.abs(buf[i] - w[i]) / (atol + Math.abs(w[i])));
      expect(worst, `${node.name} ${t.name}`).toBeLessThan(1e-3);
      checked.push(t.name);
    }
  }
  return checked;
}

describe.skipIf(!findCompiler())('layers accumulating onto their residual', () => {
  it('convolutions (GEMM and transposed tiles, whole and partial, 2 images) and matrix products', async () => {
    const r = seededRandom(12);
    const b = new GraphBuilder('accumulate');
    const x = b.input('x', 'float32', [2, 16, 19, 37]);
    const conv = (inp: string, cin: number, cout: number, name: string, k: number, pad: number) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin, k, k], 0.2)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.1))],
        { kernel_shape: [k, k], pads: [pad, pad, pad, pad] }, name);
    // 32 channels: whole 16-channel tiles (and 13: partial ones); rows of 37 positions: whole and partial tiles
    const h = b.op('Relu', [conv(x, 16, 32, 'pw', 1, 0)], {}, 'r0');
    const y = b.op('Relu', [b.op('Add', [conv(h, 32, 32, 'c3', 3, 1), h], {}, 'res')], {}, 'r1');
    const z = b.op('Add', [conv(y, 32, 13, 'c13', 3, 1), conv(y, 32, 13, 'side', 1, 0)], {}, 'res13');
    b.output(z);
    // a pointwise layer with its residual (pw: 703 positions, 43 x 16 + 15 and 21 x 32 + 31, the last block copied)
    b.output(b.op('Add', [conv(y, 32, 32, 'pwres', 1, 0), y], {}, 'res_pw'));
    // a matrix product with bias and residual (the residual is its fourth input)
    const v = b.input('v', 'float32', [40, 64]);
    const g = b.op('MatMul', [v, b.initializer('wv', randomTensor(r, [64, 64], 0.2))], {}, 'mm0');
    const dense = b.op('Add', [b.op('MatMul', [g, b.initializer('w1', randomTensor(r, [64, 64], 0.2))], {}, 'mm1'), b.initializer('b1', randomTensor(r, [64], 0.1))], {}, 'bias1');
    b.output(b.op('Add', [dense, v], {}, 'res_mm'));
    const m = await prepared(b.model(17));
    const inputs = new Map<string, Value>([['x', randomTensor(seededRandom(1), [2, 16, 19, 37], 1)], ['v', randomTensor(seededRandom(2), [40, 64], 1)]]);
    for (const threads of [1, 2]) {
      const checked = await checkAccumulating(m, inputs, threads);
      const kinds = new Set(checked.map((t) => t.replace(/^native-\w+?-/, '').replace(/-\d+x\d+$/, '')));
      expect([...kinds].sort()).toEqual(['conv', 'gemm', 'pw', 'tconv', 'winograd-f2', 'winograd-f4']);
      expect(checked.filter((t) => t.includes('-pw-')).length).toBeGreaterThan(1);
      expect(checked.filter((t) => t.includes('tconv-16x16')).length).toBeGreaterThan(1);
    }
  }, 120_000);

  it('transposed tiles stored as whole blocks (rows of whole 7- and 14-position tiles) add onto the residual', async () => {
    const r = seededRandom(14);
    const b = new GraphBuilder('accumulate_blocks');
    const x = b.input('x', 'float32', [2, 32, 14, 14]);
    const conv = (inp: string, cout: number, name: string, k: number, pad: number) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, 32, k, k], 0.1)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.1))],
        { kernel_shape: [k, k], pads: [pad, pad, pad, pad] }, name);
    // 196 positions in one row (1 x 1) and 14-wide rows (3 x 3, padded copy), tiles of 7 and 14 positions x 32 channels
    const y = b.op('Relu', [b.op('Add', [conv(x, 32, 'pw14', 1, 0), x], {}, 'res1')], {}, 'r1');
    b.output(b.op('Add', [conv(y, 32, 'c14', 3, 1), y], {}, 'res2'));
    const m = await prepared(b.model(17));
    const inputs = new Map<string, Value>([['x', randomTensor(seededRandom(3), [2, 32, 14, 14], 1)]]);
    for (const threads of [1, 2]) {
      const checked = await checkAccumulating(m, inputs, threads);
      expect(checked.filter((t) => /tconv-(7|14)x/.test(t)).length).toBeGreaterThan(3);
    }
  }, 120_000);

  it('pointwise layers with outputs of 1 MB and more (row panels along chunks of positions) add onto the residual', async () => {
    const r = seededRandom(16);
    const b = new GraphBuilder('accumulate_pw_big');
    // 64 channels x 67 x 71 = 4757 positions: five chunks of 1024 (1008) positions, the last ragged, its tail copied
    const x = b.input('x', 'float32', [2, 64, 67, 71]);
    const w = b.initializer('p.w', randomTensor(r, [64, 64, 1, 1], 0.1)), bias = b.initializer('p.b', randomTensor(r, [64], 0.1));
    b.output(b.op('Relu', [b.op('Add', [b.op('Conv', [x, w, bias], { kernel_shape: [1, 1] }, 'p'), x], {}, 'res')], {}, 'r'));
    const m = await prepared(b.model(17));
    const inputs = new Map<string, Value>([['x', randomTensor(seededRandom(5), [2, 64, 67, 71], 1)]]);
    for (const threads of [1, 2]) {
      const checked = await checkAccumulating(m, inputs, threads);
      expect(checked.filter((t) => t.includes('-pw-')).length).toBe(2);
    }
  }, 120_000);

  it('padded layers on the image in place (edges checked) add onto the residual', async () => {
    const r = seededRandom(15);
    const b = new GraphBuilder('accumulate_edges');
    const x = b.input('x', 'float32', [2, 16, 40, 40]);
    // 3 x 3 pads 1 at 40 x 40: 38 x 38 of the positions read only inside the image; 40 = 5 x 7 + 5 (a partial last tile)
    const w = b.initializer('c.w', randomTensor(r, [16, 16, 3, 3], 0.1)), bias = b.initializer('c.b', randomTensor(r, [16], 0.1));
    b.output(b.op('Add', [b.op('Conv', [x, w, bias], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'c'), x], {}, 'res'));
    const m = await prepared(b.model(17));
    const inputs = new Map<string, Value>([['x', randomTensor(seededRandom(4), [2, 16, 40, 40], 1)]]);
    for (const threads of [1, 2]) {
      const checked = await checkAccumulating(m, inputs, threads);
      expect(checked.filter((t) => t.includes('-etconv-')).length).toBeGreaterThan(1);
    }
  }, 120_000);
});

// The Winograd convolution variants (winograd.ts), forced one by one, against the reference kernel: odd and
// asymmetric spatial sizes (partial tiles and tile rows), pads 0 and 1, channel counts that are not multiples of the
// microkernel tile, bias / residual / Relu epilogues, the accumulate-in-place mode, batches of 1 and 3, one and two
// threads; and a deliberately broken transform must be caught by the same comparison.
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
import { WINOGRAD } from '../../../src/backends/cpu/winograd.js';
import { convModel as convOf } from './conv-model.js';

/** The parts of build.ts's (unexported) NativeTactic this test reaches into. */
interface NativeTacticView {
  build: { lib: NativeLibrary };
  kernel: Pick<LayerMeta, 'args' | 'inputDims' | 'outDims' | 'batch'>;
  variant: { fn: string; accumulate?: boolean };
  packed: unknown;
}

interface Case { name: string; batch: number; C: number; Co: number; H: number; W: number; pads: number[]; bias: boolean; res: boolean; relu: boolean }

/** One 3x3 stride-1 convolution (optionally + bias, + a residual input, Relu), fused by the optimizer. */
const convModel = (k: Case) => convOf({ ...k, k: [3, 3], s: 1, act: k.relu ? 'relu' : 'none' }, k.C * 131 + k.Co, k.name);

/** Max abs error over the output's scale (its largest magnitude). Winograd's transforms sum terms of a tile with
 * coefficients up to 8 (F(4,3)), so its rounding error follows the tile's magnitudes, not each output's: relative to
 * the output scale it stays near 1e-6, while one output near zero can be 1e-3 off relative to itself. */
function worstError(got: Float32Array, want: Float32Array): number {
  let err = 0, scale = 0;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return err / scale;
}

/** Runs every Winograd variant of the model's convolution (plain and, with a residual, accumulating in place) at
 * the given thread count; returns the worst error per tactic. */
async function winogradErrors(m: Model, inputs: Map<string, Value>, threads: number): Promise<Map<string, number>> {
  const ref = executeGraph(m.graph, inputs, { opsets: m.opsets, keepAll: true });
  const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
  const node = m.graph.nodes.find((n) => n.opType === 'FusedConv')!;
  const want = (ref.get(node.outputs[0]) as TensorData).data as Float32Array;
  const ins = node.inputs.map((n) => (n ? ref.get(n) : undefined));
  const errors = new Map<string, number>();
  for (const t of cpuBackend.tactics(node, m, typeOf)) {
    if (!t.name.includes('winograd')) continue;
    const nt = t as unknown as NativeTacticView;
    nt.build.lib.threads(threads);
    const [out] = (await t.run(node as Node, ins, m.opsets)) as TensorData[];
    expect(out.dims).toEqual((ref.get(node.outputs[0]) as TensorData).dims);
    errors.set(t.name, worstError(out.data as Float32Array, want));
    if (nt.variant.accumulate) {
      const buf = Float32Array.from((ins[3] as TensorData).data as Float32Array);
      const args = layerArgs(nt.kernel.args, ins, nt.packed, buf);
      args[3] = buf;
      nt.build.lib.callSync(nt.variant.fn, args, runBatch(nt.kernel, ins)!);
      errors.set(`${t.name} accumulate`, worstError(buf, want));
    }
  }
  return errors;
}

const CASES: Case[] = [
  { name: 'odd, pad 1, bias relu', batch: 1, C: 16, Co: 24, H: 13, W: 15, pads: [1, 1, 1, 1], bias: true, relu: true, res: false },
  { name: 'pad 0, residual, 3 images', batch: 3, C: 19, Co: 17, H: 11, W: 17, pads: [0, 0, 0, 0], bias: true, relu: true, res: true },
  { name: 'asymmetric pads, no bias', batch: 1, C: 33, Co: 40, H: 13, W: 9, pads: [1, 0, 2, 1], bias: false, relu: false, res: false },
  { name: 'resnet-like 64ch 14x14 residual', batch: 1, C: 64, Co: 64, H: 14, W: 14, pads: [1, 1, 1, 1], bias: true, relu: true, res: true },
  { name: 'wide rows, 3 images', batch: 3, C: 20, Co: 36, H: 6, W: 61, pads: [1, 1, 1, 1], bias: true, relu: false, res: false },
  // 24 panels: at two threads tasks of 3 panels, some across a boundary of the weights' panel groups
  { name: 'squeezenet-like 48 -> 192 at 13x13', batch: 1, C: 48, Co: 192, H: 13, W: 13, pads: [1, 1, 1, 1], bias: true, relu: true, res: false },
];

describe.skipIf(!findCompiler())('Winograd convolution variants', () => {
  for (const k of CASES) {
    it(`${k.name}: F(2,3) and F(4,3) match the reference`, async () => {
      const { m, inputs } = await convModel(k);
      for (const threads of [1, 2]) {
        const errors = await winogradErrors(m, inputs, threads);
        const kinds = [...errors.keys()].map((t) => t.replace(/^native-\w+?-/, '').replace(/-\d+x\d+/, ''));
        expect(kinds.filter((n) => !n.endsWith('accumulate')).sort()).toEqual(['winograd-f2', 'winograd-f4']);
        if (k.res) expect(kinds.filter((n) => n.endsWith('accumulate')).length).toBe(2);
        // measured: F(2,3) 1-3e-7 of the output scale, F(4,3) 2-4e-6 (a direct convolution: about 1e-7)
        for (const [t, e] of errors) expect(e, `${t} at ${threads} threads`).toBeLessThan(t.includes('-f4-') ? 2e-5 : 2e-6);
      }
    }, 120_000);
  }

  it('is not offered for small channel counts, strides or dilations', async () => {
    const { m } = await convModel({ name: 'small', batch: 1, C: 5, Co: 24, H: 13, W: 15, pads: [1, 1, 1, 1], bias: true, relu: true, res: false });
    const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
    const node = m.graph.nodes.find((n) => n.opType === 'FusedConv')!;
    const names = cpuBackend.tactics(node, m, typeOf).map((t) => t.name);
    expect(names.some((n) => n.includes('conv'))).toBe(true);
    expect(names.some((n) => n.includes('winograd'))).toBe(false);
    // 7x7 and 2x3 outputs: F(2,3) only (F(4,3) would have 4 tiles or 1), and it matches the reference
    for (const [H, W] of [[7, 7], [2, 3]]) {
      const { m: ms, inputs } = await convModel({ name: `small${H}x${W}`, batch: 2, C: 32, Co: 32, H, W, pads: [1, 1, 1, 1], bias: true, relu: true, res: true });
      const errors = await winogradErrors(ms, inputs, 2);
      expect([...errors.keys()].map((n) => n.replace(/^native-\w+?-/, '').replace(/-\d+x\d+/, '')).sort()).toEqual(['winograd-f2', 'winograd-f2 accumulate']);
      for (const [t, e] of errors) expect(e, `${t} ${H}x${W}`).toBeLessThan(2e-6);
    }
  }, 120_000);

  it('batch-generic: generated at 2 images, run at 3 and 1', async () => {
    const k: Case = { name: 'dynamic', batch: 2, C: 24, Co: 32, H: 10, W: 12, pads: [1, 1, 1, 1], bias: true, relu: true, res: true };
    const r = seededRandom(5);
    const b = new GraphBuilder(k.name);
    const x = b.input('x', 'float32', ['N', k.C, k.H, k.W]);
    const conv = b.op('Conv', [x, b.initializer('w', randomTensor(r, [k.Co, k.C, 3, 3], 0.3)), b.initializer('b', randomTensor(r, [k.Co], 0.5))], { kernel_shape: [3, 3], pads: k.pads }, 'conv');
    b.output(b.op('Relu', [b.op('Add', [conv, b.input('res', 'float32', ['N', k.Co, k.H, k.W])], {}, 'add')], {}, 'relu'));
    const m = b.model(17);
    // as the builder does: the graph keeps its symbolic batch, value types and tactic queries see 2 images
    await optimize(m, { inputShapes: new Map([['x', ['N', k.C, k.H, k.W]], ['res', ['N', k.Co, k.H, k.W]]]) });
    const at2 = new Map([['x', [2, k.C, k.H, k.W]], ['res', [2, k.Co, k.H, k.W]]]);
    inferShapes(m.graph, m.opsets, { inputShapes: at2 });
    const typeOf = (n: string) => (at2.has(n) ? { kind: 'tensor' as const, dtype: 'float32' as const, shape: at2.get(n)! } : m.graph.valueInfo.get(n));
    const node = m.graph.nodes.find((n) => n.opType === 'FusedConv')!;
    const tactics = cpuBackend.tactics(node, m, typeOf).filter((t) => t.name.includes('winograd'));
    expect(tactics.length).toBe(2);
    for (const nb of [3, 1]) {
      const inputs = new Map<string, Value>([['x', randomTensor(seededRandom(nb), [nb, k.C, k.H, k.W], 1)], ['res', randomTensor(seededRandom(nb + 9), [nb, k.Co, k.H, k.W], 1)]]);
      const ref = executeGraph(m.graph, inputs, { opsets: m.opsets, keepAll: true });
      const want = (ref.get(node.outputs[0]) as TensorData).data as Float32Array;
      const ins = node.inputs.map((n) => (n ? ref.get(n) : undefined));
      for (const t of tactics) {
        const nt = t as unknown as NativeTacticView;
        expect(nt.kernel.batch, t.name).toBeDefined();
        expect(runBatch(nt.kernel, ins), t.name).toBe(nb);
        const [out] = (await t.run(node as Node, ins, m.opsets)) as TensorData[];
        expect(out.dims).toEqual([nb, k.Co, k.H, k.W]);
        expect(worstError(out.data as Float32Array, want), `${t.name} at batch ${nb}`).toBeLessThan(t.name.includes('-f4-') ? 2e-5 : 2e-6);
      }
    }
  }, 120_000);

  it('a broken input transform is caught', async () => {
    const row = WINOGRAD[4].BT[1], saved = [...row];
    row[2] = -3; // -4 in the real transform
    try {
      const { m, inputs } = await convModel({ ...CASES[0], name: 'broken' });
      const errors = await winogradErrors(m, inputs, 1);
      expect([...errors].find(([t]) => t.includes('-f4-'))![1]).toBeGreaterThan(1e-3);
      expect([...errors].find(([t]) => t.includes('-f2-'))![1]).toBeLessThan(2e-6);
    } finally {
      row.splice(0, row.length, ...saved);
    }
  }, 120_000);
});

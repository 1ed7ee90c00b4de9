// The epilogue the GEMM and pointwise tiles apply to their accumulators before the store (kfuse_t: per-row bias, then
// ReLU, Clip or HardSwish): every native variant of layers that take it, called at 1 and 2 threads (and, where it
// accumulates, onto its residual), against the reference; and the layers whose activation it does not cover keep the
// generic epilogue pass.
import { describe, it, expect } from 'vitest';
import type { Model, Node } from '../../../src/ir/graph.js';
import { TensorData, type Value } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { optimize } from '../../../src/passes/pipeline.js';
import { inferShapes } from '../../../src/passes/infer.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { findCompiler, hostIsa } from '../../../src/backends/cpu/compiler.js';
import { cpuBackend } from '../../../src/backends/cpu/index.js';
import { layerKernel } from '../../../src/backends/cpu/codegen.js';
import { layerArgs, runBatch, type LayerMeta } from '../../../src/backends/cpu/build.js';
import type { NativeLibrary } from '../../../src/backends/cpu/native.js';

/** The parts of build.ts's (unexported) NativeTactic this test reaches into. */
interface NativeTacticView {
  build: { lib: NativeLibrary };
  kernel: Pick<LayerMeta, 'args' | 'inputDims' | 'outDims' | 'batch'>;
  variant: { fn: string; accumulate?: boolean };
  packed: unknown;
}

const worstDiff = (a: Float32Array, w: Float32Array) => {
  const atol = 1e-3 * w.reduce((x, v) => Math.max(x, Math.abs(v)), 0);
  let worst = 0;
  for (let i = 0; i < w.length; i++) worst = Math.max(worst, Math.abs(a[i] - w[i]) / (atol + Math.abs(w[i])));
  return worst;
};

/** Every native variant of every convolution, at each thread count, into a fresh output and (accumulating variants)
 * onto a copy of the residual passed as the output; returns the tactics checked. */
async function checkVariants(m: Model, inputs: Map<string, Value>): Promise<Set<string>> {
  const ref = executeGraph(m.graph, inputs, { opsets: m.opsets, keepAll: true });
  const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
  const seen = new Set<string>();
  for (const node of m.graph.nodes) {
    const ins = node.inputs.map((n) => (n ? ref.get(n) : undefined));
    const want = (ref.get(node.outputs[0]) as TensorData).data as Float32Array;
    for (const t of cpuBackend.tactics(node, m, typeOf)) {
      if (t.name === 'reference') continue;
      const nt = t as unknown as NativeTacticView;
      await t.run(node as Node, ins, m.opsets); // packs the weights
      for (const threads of [1, 2]) {
        nt.build.lib.threads(threads);
        const out = new Float32Array(want.length).fill(Number.NaN);
        nt.build.lib.callSync(nt.variant.fn, layerArgs(nt.kernel.args, ins, nt.packed, out), runBatch(nt.kernel, ins)!);
        expect(worstDiff(out, want), `${node.name} ${t.name} ${threads}T`).toBeLessThan(1e-3);
        if (!nt.variant.accumulate) continue;
        const buf = Float32Array.from((ins[3] as TensorData).data as Float32Array);
        const args = layerArgs(nt.kernel.args, ins, nt.packed, buf);
        args[3] = buf;
        nt.build.lib.callSync(nt.variant.fn, args, runBatch(nt.kernel, ins)!);
        expect(worstDiff(buf, want), `${node.name} ${t.name} ${threads}T accumulating`).toBeLessThan(1e-3);
      }
      seen.add(`${node.name} ${t.name.replace(/^native-\w+?-/, '')}`);
    }
  }
  return seen;
}

describe.skipIf(!findCompiler())('the epilogue in the tile stores', () => {
  it('pointwise and GEMM convolutions: bias, ReLU, Clip, HardSwish, residual, groups, partial panels, K in blocks, 2 images', async () => {
    const r = seededRandom(21);
    const b = new GraphBuilder('fused');
    const x = b.input('x', 'float32', [2, 32, 11, 23]);
    const conv = (inp: string, cin: number, cout: number, name: string, k: number, o: { bias?: boolean; group?: number } = {}) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin / (o.group ?? 1), k, k], 0.3)),
        ...(o.bias === false ? [] : [b.initializer(`${name}.b`, randomTensor(r, [cout], 0.5))])],
      { kernel_shape: [k, k], pads: Array(4).fill((k - 1) / 2), group: o.group ?? 1 }, name);
    const clip = (h: string, name: string) => b.op('Clip', [h, b.initializer(`${name}.lo`, new TensorData('float32', [], Float32Array.of(-0.5))),
      b.initializer(`${name}.hi`, new TensorData('float32', [], Float32Array.of(1.5)))], {}, name);
    // 253 positions per image: whole and partial tiles of positions
    const h = b.op('Relu', [conv(x, 32, 32, 'pw_relu', 1)], {}, 'r0');
    b.output(b.op('HardSwish', [conv(h, 32, 48, 'pw_hswish', 1, { bias: false })], {}, 'hs'));
    b.output(conv(h, 32, 16, 'pw_bias', 1));
    // the residual: the generic pass where it is its own buffer, the tile stores where the output is the residual's
    b.output(clip(b.op('Add', [conv(h, 32, 32, 'pw_res', 1), h], {}, 'add_pw'), 'clip_pw'));
    // 3 x 3 through the GEMM: K = 288 runs in several K blocks (the epilogue on the last one only); 13 channels leave
    // the last row panel partial
    b.output(b.op('HardSwish', [conv(h, 32, 13, 'c3_hswish', 3)], {}, 'hs3'));
    b.output(b.op('Relu', [b.op('Add', [conv(h, 32, 32, 'c3_res', 3), h], {}, 'add_c3')], {}, 'r3'));
    // groups: each group's bias (6 channels a group, partial panels)
    b.output(b.op('Relu', [conv(h, 32, 12, 'g_relu', 1, { group: 2 })], {}, 'rg'));
    // an activation the tiles do not apply (Sigmoid): the generic epilogue
    b.output(b.op('Sigmoid', [conv(h, 32, 16, 'pw_sigmoid', 1)], {}, 'sig'));
    const m = b.model(17);
    await optimize(m, { inputShapes: new Map([['x', [2, 32, 11, 23]]]) });
    inferShapes(m.graph, m.opsets);

    // which layers' GEMM and pointwise variants take the epilogue in their stores (the rest: the generic pass)
    const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
    const fused = m.graph.nodes.filter((n) => n.opType === 'FusedConv' && layerKernel(n, m, typeOf, hostIsa(), 'k')?.source.includes('g.fuse = &fu'));
    expect(fused.map((n) => n.name).sort()).toEqual(['c3_hswish', 'c3_res', 'g_relu', 'pw_bias', 'pw_hswish', 'pw_relu', 'pw_res']);

    const seen = await checkVariants(m, new Map([['x', randomTensor(seededRandom(5), [2, 32, 11, 23], 1)]]));
    const kinds = [...seen].map((s) => s.split(' ')[1].replace(/-\d+x\d+$/, ''));
    expect(kinds).toContain('pw');
    expect(kinds).toContain('conv');
    expect(kinds).toContain('gconv');
  }, 300_000);
});

// Baked MaxPool / AveragePool kernels (codegen.ts windowPool) and the generic one (runtime kiln_pool2d): interior outputs run the unrolled-tap loop, border
// outputs clip their window; every shape below puts outputs on each side of that split (pads on one side only,
// ceil_mode overhang, dilation, strides 1-3, count_include_pad, SAME padding), against the
// reference kernel. Two image widths: 41 (rows of whole 16-float blocks plus an overlapping last block, horizontal
// passes padded to 16 or 32 outputs) and 13 (blocks of 8, and horizontal passes too short for a vector).
import { describe, it, expect } from 'vitest';
import type { Model, Node } from '../../../src/ir/graph.js';
import type { TensorData } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { inferShapes } from '../../../src/passes/infer.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { cpuBackend } from '../../../src/backends/cpu/index.js';
import { layerArgs, runBatch, type LayerMeta } from '../../../src/backends/cpu/build.js';
import type { NativeLibrary } from '../../../src/backends/cpu/native.js';

/** The parts of build.ts's (unexported) NativeTactic the thread-count case reaches into. */
interface NativeTacticView {
  build: { lib: NativeLibrary };
  kernel: Pick<LayerMeta, 'args' | 'inputDims' | 'outDims' | 'batch'>;
  variant: { fn: string };
  packed: unknown;
}

type Attrs = Record<string, number | number[] | string>;
const CASES: [string, Attrs][] = [
  ['resnet', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }],
  ['inside', { kernel_shape: [2, 2], strides: [2, 2] }],
  ['k2pad', { kernel_shape: [2, 2], strides: [2, 2], pads: [1, 1, 1, 1], ceil_mode: 1 }],
  ['tall', { kernel_shape: [4, 3], strides: [3, 2], pads: [2, 0, 0, 1] }],
  ['s1', { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }],
  ['oneside', { kernel_shape: [3, 2], strides: [1, 2], pads: [0, 1, 2, 0] }],
  ['ceil', { kernel_shape: [3, 3], strides: [2, 2], ceil_mode: 1 }],
  ['ceilpad', { kernel_shape: [3, 3], strides: [3, 3], pads: [1, 1, 1, 1], ceil_mode: 1 }],
  ['dilated', { kernel_shape: [3, 3], strides: [2, 1], pads: [2, 1, 2, 1], dilations: [2, 3] }],
  ['big', { kernel_shape: [7, 5], strides: [3, 2], pads: [3, 2, 3, 2] }],
  ['same', { kernel_shape: [4, 3], strides: [2, 3], auto_pad: 'SAME_UPPER' }],
  ['samelo', { kernel_shape: [4, 4], strides: [2, 2], auto_pad: 'SAME_LOWER' }],
  ['huge', { kernel_shape: [9, 9], strides: [4, 4], pads: [4, 4, 4, 4] }],
  ['generic', { kernel_shape: [20, 15], strides: [2, 3], pads: [1, 2, 3, 1] }], // past the unrolled limit: kiln_pool2d
];

function model(X: number[]): Model {
  const b = new GraphBuilder('pools');
  const x = b.input('x', 'float32', X);
  for (const [name, attrs] of CASES) {
    const k = attrs.kernel_shape as number[], dil = (attrs.dilations as number[] | undefined) ?? [1, 1];
    if (k.some((v, i) => (v - 1) * dil[i] + 1 > X[2 + i])) continue; // the window must fit the (unpadded) image
    b.output(b.op('MaxPool', [x], attrs, `max_${name}`));
    b.output(b.op('AveragePool', [x], attrs, `avg_${name}`));
    if (!attrs.ceil_mode && !attrs.auto_pad) b.output(b.op('AveragePool', [x], { ...attrs, count_include_pad: 1 }, `avgpad_${name}`));
  }
  return b.model(19);
}

describe.skipIf(!findCompiler())('baked window pooling', () => {
  // 111: SqueezeNet's first pool row (3 blocks of 16 outputs, the last moved back, at stride 2)
  it.each([[[2, 3, 37, 41]], [[4, 32, 11, 13]], [[1, 3, 23, 111]]])('matches the reference kernel on every shape, interior and border (input %j)', async (X) => {
    const m = model(X);
    inferShapes(m.graph, m.opsets);
    const input = randomTensor(seededRandom(5), X, 1);
    const ref = executeGraph(m.graph, new Map([['x', input]]), { opsets: m.opsets, keepAll: true });
    const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
    let checked = 0;
    for (const node of m.graph.nodes) {
      const tactics = cpuBackend.tactics(node, m, typeOf).filter((q) => q.name.endsWith('-pool'));
      expect(tactics.length, node.name).toBe(1);
      const [out] = (await tactics[0].run(node as Node, [ref.get('x')], m.opsets)) as TensorData[];
      const want = ref.get(node.outputs[0]) as TensorData;
      expect(out.dims, node.name).toEqual(want.dims);
      const a = out.data as Float32Array, w = want.data as Float32Array;
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - w[i]) / (1 + Math.abs(w[i])));
      expect(worst, node.name).toBeLessThan(1e-5);
      checked++;
    }
    expect(checked).toBe(m.graph.nodes.length);
  }, 120_000);

  // The stride-2 max pools split an image's output rows into bands (one task per band and image, every plane): at 1, 2
  // and 3 threads, batch 2 and 3, bands of unequal rows and more bands wanted than there are rows, the same as the
  // reference.
  it('stride-2 max pools by bands of rows: 1, 2 and 3 threads, batches of 2 and 3', async () => {
    const shapes: [number[], Attrs][] = [
      [[2, 5, 23, 111], { kernel_shape: [3, 3], strides: [2, 2], ceil_mode: 1 }],
      [[3, 24, 9, 17], { kernel_shape: [3, 3], strides: [2, 2], ceil_mode: 1 }],
      [[2, 6, 30, 30], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }],
    ];
    // one model (one library to compile): an input and a pool per shape
    const b = new GraphBuilder('bands');
    shapes.forEach(([X, attrs], k) => b.output(b.op('MaxPool', [b.input(`x${k}`, 'float32', X)], attrs, `max${k}`)));
    const m = b.model(19);
    inferShapes(m.graph, m.opsets);
    const inputs = shapes.map(([X], k) => randomTensor(seededRandom(3 + k), X, 1));
    const ref = executeGraph(m.graph, new Map(inputs.map((x, k) => [`x${k}`, x])), { opsets: m.opsets });
    const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
    for (const [k, node] of m.graph.nodes.entries()) {
      const want = (ref.get(node.outputs[0]) as TensorData).data as Float32Array;
      const [t] = cpuBackend.tactics(node, m, typeOf).filter((q) => q.name.endsWith('-pool'));
      await t.run(node as Node, [inputs[k]], m.opsets); // compiles the library
      const nt = t as unknown as NativeTacticView;
      for (const threads of [1, 2, 3]) {
        const out = new Float32Array(want.length).fill(NaN);
        nt.build.lib.threads(threads);
        nt.build.lib.callSync(nt.variant.fn, layerArgs(nt.kernel.args, [inputs[k]], nt.packed, out), runBatch(nt.kernel, [inputs[k]])!);
        let bad = 0;
        for (let i = 0; i < out.length; i++) if (out[i] !== want[i]) bad++;
        expect(bad, `${shapes[k][0]} ${threads} threads`).toBe(0);
      }
    }
  }, 120_000);

  // Kiln's native max pools let a NaN anywhere in the window win (kmaxv; the reference kernel keeps only a leading one):
  // the stride-2 AVX-512 path must too. Expected: the reference on the input with NaN as +Infinity, +Infinity -> NaN.
  it('propagates NaN through stride-2 max pools', async () => {
    const X = [1, 16, 57, 91];
    const b = new GraphBuilder('nanpool');
    const x = b.input('x', 'float32', X);
    b.output(b.op('MaxPool', [x], { kernel_shape: [3, 3], strides: [2, 2], ceil_mode: 1 }, 'max_nan3'));
    b.output(b.op('MaxPool', [x], { kernel_shape: [2, 2], strides: [2, 2], pads: [1, 1, 1, 1] }, 'max_nan2'));
    const m = b.model(19);
    inferShapes(m.graph, m.opsets);
    const input = randomTensor(seededRandom(9), X, 1), inf = randomTensor(seededRandom(9), X, 1);
    const d = input.data as Float32Array;
    for (let i = 7; i < d.length; i += 331) { d[i] = NaN; (inf.data as Float32Array)[i] = Infinity; }
    const ref = executeGraph(m.graph, new Map([['x', inf]]), { opsets: m.opsets, keepAll: true });
    const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
    for (const node of m.graph.nodes) {
      const tactics = cpuBackend.tactics(node, m, typeOf).filter((q) => q.name.endsWith('-pool'));
      expect(tactics.length, node.name).toBe(1);
      const [out] = (await tactics[0].run(node as Node, [input], m.opsets)) as TensorData[];
      const a = out.data as Float32Array, w = (ref.get(node.outputs[0]) as TensorData).data as Float32Array;
      let nans = 0, bad = 0;
      for (let i = 0; i < a.length; i++) {
        if (w[i] === Infinity) nans++;
        if (w[i] === Infinity ? !Number.isNaN(a[i]) : a[i] !== w[i]) bad++;
      }
      expect(bad, node.name).toBe(0);
      expect(nans, node.name).toBeGreaterThan(10);
    }
  }, 60_000);
});

// Every native variant the builder may choose (GEMM tiles, im2col and direct convolution, pooling) is checked
// against the reference kernel on awkward shapes: channel counts that are not multiples of the register tile, rows
// narrower and wider than a tile, dilations, asymmetric windows, residual and activation epilogues.
import { describe, it, expect } from 'vitest';
import type { Model, Node } from '../../../src/ir/graph.js';
import { TensorData, type Value } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { optimize } from '../../../src/passes/pipeline.js';
import { inferShapes } from '../../../src/passes/infer.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { findCompiler, hostIsa } from '../../../src/backends/cpu/compiler.js';
import { cpuBackend } from '../../../src/backends/cpu/index.js';

const hasCompiler = !!findCompiler();

/** A chain of convolutions (with BatchNorm-free bias, residual Add and Relu to fuse) and pools over [2, 5, 19, 37]. */
function convModel(): Model {
  const r = seededRandom(4);
  const b = new GraphBuilder('conv_variants');
  const x = b.input('x', 'float32', [2, 5, 19, 37]);
  const conv = (inp: string, cin: number, cout: number, name: string, attrs: Record<string, number[]>, k: number[]) =>
    b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin, ...k], 0.3)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.1))],
      { kernel_shape: k, ...attrs }, name);
  let h = b.op('Relu', [conv(x, 5, 13, 'c3x3', { pads: [1, 1, 1, 1] }, [3, 3])], {}, 'r1');
  const d = conv(h, 13, 13, 'dil', { pads: [2, 2, 2, 2], dilations: [2, 2] }, [3, 3]);
  h = b.op('Relu', [b.op('Add', [d, h], {}, 'res')], {}, 'r2');
  h = conv(h, 13, 7, 'c3x2', { pads: [0, 1, 0, 0] }, [3, 2]);
  h = conv(h, 7, 29, 'c5', { pads: [2, 2, 2, 2] }, [5, 5]);
  h = conv(h, 29, 16, 'pw', {}, [1, 1]);
  h = conv(h, 16, 16, 's2', { pads: [1, 1, 1, 1], strides: [2, 2] }, [3, 3]);
  b.output(h);
  return b.model(17);
}

async function prepared(m: Model) {
  await optimize(m, { inputShapes: new Map(m.graph.inputs.map((i) => [i.name, (i.type as { shape: number[] }).shape])) });
  inferShapes(m.graph, m.opsets);
  return m;
}

/** Max |a - b| over every native tactic of every node of `m`, against the reference executor's values. */
async function checkAllTactics(m: Model, inputs: Map<string, Value>): Promise<Set<string>> {
  const ref = executeGraph(m.graph, inputs, { opsets: m.opsets, keepAll: true });
  const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
  const seen = new Set<string>();
  for (const node of m.graph.nodes) {
    const ins = node.inputs.map((n) => (n ? ref.get(n) : undefined));
    for (const t of cpuBackend.tactics(node, m, typeOf)) {
      if (t.name === 'reference') continue;
      seen.add(t.name.replace(/^native-\w+?-/, '').replace(/-\d+x\d+$/, ''));
      const [out] = (await t.run(node as Node, ins, m.opsets)) as TensorData[];
      const want = ref.get(node.outputs[0]) as TensorData;
      expect(out.dims, `${node.name} ${t.name}`).toEqual(want.dims);
      // float32 sums in another order: errors relative to each value, with a floor at 1e-3 of the largest
      const a = out.data as Float32Array, w = want.data as Float32Array, atol = 1e-3 * w.reduce((x, v) => Math.max(x, Math.abs(v)), 0);
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - w[i]) / (atol + Math.abs(w[i])));
      expect(worst, `${node.name} ${t.name}`).toBeLessThan(1e-3);
    }
  }
  return seen;
}

describe.skipIf(!hasCompiler)('native variants against the reference kernels', () => {
  it('transposes: batch-keeping, batch-moving, axis-group swapping and reversing permutations', async () => {
    const b = new GraphBuilder('transposes');
    const x = b.input('x', 'float32', [2, 8, 24, 33]);
    const big = b.op('Relu', [b.op('Concat', [x, x, x, x], { axis: 1 }, 'cat')], {}, 'relu');
    // [0, 2, 3, 1], [0, 3, 1, 2] and [2, 3, 0, 1] swap two axis groups (16 x 16 blocks, partial edge blocks)
    for (const [i, perm] of [[0, 2, 1, 3], [0, 2, 3, 1], [3, 1, 0, 2], [1, 0, 2, 3], [0, 3, 1, 2], [2, 3, 0, 1]].entries()) b.output(b.op('Transpose', [big], { perm }, `t${i}`));
    b.output(b.op('Transpose', [big], {}, 'rev'));
    const m = await prepared(b.model(17));
    const seen = await checkAllTactics(m, new Map([['x', randomTensor(seededRandom(3), [2, 8, 24, 33], 1)]]));
    expect(seen).toContain('transpose');
  }, 120_000);

  it('convolutions: every tile of the im2col and direct variants', async () => {
    const m = await prepared(convModel());
    const seen = await checkAllTactics(m, new Map([['x', randomTensor(seededRandom(9), [2, 5, 19, 37], 1)]]));
    // etconv: c3x2's one padded column leaves 36 of its 37 output columns inside the image (in place, edges checked)
    expect([...seen].sort()).toEqual(['conv', 'dconv', 'etconv', 'pw', 'tconv']);
  }, 120_000);

  it('grouped convolutions: the per-group GEMM, the transposed kernel over group images and the grouped kernel (bias, residual, strides, pads)', async () => {
    const r = seededRandom(12);
    const b = new GraphBuilder('grouped');
    const x = b.input('x', 'float32', [2, 32, 15, 13]);
    const conv = (inp: string, cin: number, cout: number, g: number, name: string, attrs: Record<string, number[]>, k: number[]) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin / g, ...k], 0.3)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.1))],
        { kernel_shape: k, group: g, ...attrs }, name);
    // RegNet's shape (16 channels per group), a residual over it, stride 2, and groups of 6 output channels (partial panels)
    let h = b.op('Relu', [conv(x, 32, 32, 2, 'g16', { pads: [1, 1, 1, 1] }, [3, 3])], {}, 'r1');
    h = b.op('Relu', [b.op('Add', [conv(h, 32, 32, 2, 'g16r', { pads: [1, 1, 1, 1] }, [3, 3]), h], {}, 'res')], {}, 'r2');
    b.output(conv(h, 32, 48, 2, 's2', { pads: [1, 0, 1, 1], strides: [2, 2] }, [3, 3]));
    b.output(conv(h, 32, 24, 4, 'g6', {}, [1, 1]));
    const m = await prepared(b.model(17));
    const seen = await checkAllTactics(m, new Map([['x', randomTensor(seededRandom(7), [2, 32, 15, 13], 1)]]));
    // the grouped kernel is offered on AVX-512 hosts only (grouped.ts)
    expect([...seen].filter((t) => t.startsWith('g')).sort()).toEqual(hostIsa() === 'avx512' ? ['gconv', 'grouped', 'gtconv'] : ['gconv', 'gtconv']);
  }, 120_000);

  it('pointwise layers over a 1 x 1 image (squeeze-excite): the matrix-vector kernel, partial panels, bias and activations', async () => {
    const r = seededRandom(13);
    const b = new GraphBuilder('gemv');
    const x = b.input('x', 'float32', [2, 240, 1, 1]); // enough work to compile (MIN_MODEL_WORK)
    const fc = (inp: string, cin: number, cout: number, name: string) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin, 1, 1], 0.3)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.1))], { kernel_shape: [1, 1] }, name);
    b.output(b.op('Sigmoid', [fc(b.op('Relu', [fc(x, 240, 61, 'fc1')], {}, 'relu'), 61, 243, 'fc2')], {}, 'gate'));
    const m = await prepared(b.model(17));
    const seen = await checkAllTactics(m, new Map([['x', randomTensor(seededRandom(3), [2, 240, 1, 1], 1)]]));
    expect([...seen].filter((t) => t.startsWith('gemv'))).toHaveLength(1);
  }, 120_000);

  it('depthwise convolutions: strides 1 and 2, asymmetric strides and pads, dilation, channel multiplier, residual, clip', async () => {
    const r = seededRandom(8);
    const b = new GraphBuilder('depthwise');
    const x = b.input('x', 'float32', [2, 6, 17, 23]);
    const dw = (inp: string, c: number, mult: number, name: string, attrs: Record<string, number[]>, k: number[]) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [c * mult, 1, ...k], 0.3)), b.initializer(`${name}.b`, randomTensor(r, [c * mult], 0.1))],
        { kernel_shape: k, group: c, ...attrs }, name);
    let h = b.op('Relu', [dw(x, 6, 1, 'dw1', { pads: [1, 1, 1, 1] }, [3, 3])], {}, 'r1');
    h = b.op('Relu', [b.op('Add', [dw(h, 6, 1, 'dw2', { pads: [2, 2, 2, 2], dilations: [2, 2] }, [3, 3]), h], {}, 'res')], {}, 'r2');
    b.output(dw(h, 6, 1, 's2', { pads: [1, 1, 1, 1], strides: [2, 2] }, [3, 3]));
    b.output(dw(h, 6, 2, 's21', { pads: [2, 1, 0, 2], strides: [2, 1] }, [5, 5]));
    b.output(dw(h, 6, 1, 's3', { strides: [3, 3] }, [3, 3]));
    b.output(dw(h, 6, 1, 's12', { pads: [0, 2, 1, 1], strides: [1, 2] }, [3, 5]));
    b.output(b.op('Clip', [dw(h, 6, 1, 's22', { pads: [0, 0, 1, 1], strides: [2, 2] }, [3, 3]), b.initializer('lo', new TensorData('float32', [], Float32Array.of(0))), b.initializer('hi', new TensorData('float32', [], Float32Array.of(0.5)))], {}, 'relu6'));
    const m = await prepared(b.model(17));
    const seen = await checkAllTactics(m, new Map([['x', randomTensor(seededRandom(5), [2, 6, 17, 23], 1)]]));
    expect(seen).toContain('depthwise');
  }, 120_000);

  it('transposed convolutions reading the input in place: whole tiles per row, asymmetric strides', async () => {
    const r = seededRandom(6);
    const b = new GraphBuilder('tconv_inplace');
    const x = b.input('x', 'float32', [2, 6, 14, 28]);
    const conv = (inp: string, cin: number, cout: number, name: string, attrs: Record<string, number[]>, k: number[]) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin, ...k], 0.3)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.1))],
        { kernel_shape: k, ...attrs }, name);
    // 1x1 over 14x28 (one row of 392 positions), 1x1 stride 2 (7x14), 3x1 strides [2, 1] (6x28): no padded copy
    const h = b.op('Relu', [conv(x, 6, 40, 'flat', {}, [1, 1])], {}, 'r');
    b.output(conv(h, 40, 33, 'down', { strides: [2, 2] }, [1, 1]));
    b.output(conv(h, 40, 70, 'tall', { strides: [2, 1] }, [3, 1]));
    const m = await prepared(b.model(17));
    const seen = await checkAllTactics(m, new Map([['x', randomTensor(seededRandom(2), [2, 6, 14, 28], 1)]]));
    expect(seen).toContain('tconv');
  }, 120_000);
  it('transposed convolutions storing whole blocks of tiles: masked last squares, partial panels, K in several slices, many blocks', async () => {
    const r = seededRandom(21);
    const b = new GraphBuilder('tconv_blocks');
    const x = b.input('x', 'float32', [2, 600, 7, 7]);
    const y = b.input('y', 'float32', [1, 12, 28, 28]);
    const conv = (inp: string, cin: number, cout: number, name: string, attrs: Record<string, number[]>, k: number[]) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin, ...k], 0.05)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.1))],
        { kernel_shape: k, ...attrs }, name);
    // 7 x 7 rows of 7-position tiles: 49 positions, the last 16 x 16 square holds one; 600 input channels are several K
    // slices for every tile width (the next slice's weights prefetched); 40 output channels leave panels part empty
    const h = b.op('Relu', [conv(x, 600, 40, 'seven', {}, [1, 1])], {}, 'r1');
    // 14-wide rows with a padded copy (3 x 3), then a residual over them
    const u = b.op('Relu', [conv(h, 40, 24, 'up14', { pads: [1, 1, 1, 1] }, [3, 3])], {}, 'r2');
    b.output(u);
    // 28 x 28: 112 tiles of 7 (seven blocks of 16 tiles), 56 of 14, 49 of 16; and a stride-2 3 x 3 down to 14 x 14
    const v = b.op('Relu', [b.op('Add', [conv(y, 12, 12, 'same28', {}, [1, 1]), y], {}, 'res28')], {}, 'r3');
    b.output(conv(v, 12, 20, 'wide28', {}, [1, 1]));
    b.output(conv(v, 12, 36, 'down14', { pads: [1, 1, 1, 1], strides: [2, 2] }, [3, 3]));
    const m = await prepared(b.model(17));
    const inputs = new Map<string, Value>([['x', randomTensor(seededRandom(4), [2, 600, 7, 7], 1)], ['y', randomTensor(seededRandom(5), [1, 12, 28, 28], 1)]]);
    const seen = await checkAllTactics(m, inputs);
    expect(seen).toContain('tconv');
  }, 120_000);
  it('padded convolutions on the image in place with checked edges: stems (3 x 3 and 7 x 7, stride 2), asymmetric pads, dilation, groups, 2 images', async () => {
    const r = seededRandom(22);
    const b = new GraphBuilder('tconv_edges');
    const x = b.input('x', 'float32', [2, 3, 64, 64]);
    const y = b.input('y', 'float32', [2, 3, 160, 160]);
    const z = b.input('z', 'float32', [2, 8, 48, 48]);
    const conv = (inp: string, cin: number, cout: number, name: string, attrs: Record<string, number[]>, k: number[], group = 1) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin / group, ...k], 0.2)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.1))],
        { kernel_shape: k, group, ...attrs }, name);
    // MobileNet's stem at 64 x 64: the top row of tiles off the image's memory (checked throughout), the first tile of
    // every other row in place with its first position redone
    const h = b.op('Relu', [conv(x, 3, 32, 'stem', { pads: [1, 1, 1, 1], strides: [2, 2] }, [3, 3])], {}, 'r1');
    // 3 x 3 over 32 x 32, pads on the bottom and left only, strides [1, 2]; dilation 2 (pads 2); grouped over 48 x 48
    b.output(conv(h, 32, 32, 'asym', { pads: [0, 1, 1, 0], strides: [1, 2] }, [3, 3])); // K = 288: two K slices at 32 channels
    b.output(conv(h, 32, 16, 'dil', { pads: [2, 2, 2, 2], dilations: [2, 2] }, [3, 3]));
    b.output(conv(z, 8, 32, 'grp', { pads: [1, 1, 1, 1] }, [3, 3], 2));
    // ResNet's stem shape: 7 x 7 stride 2 pads 3 (two rows and columns of edges on each side)
    b.output(conv(y, 3, 16, 'stem7', { pads: [3, 3, 3, 3], strides: [2, 2] }, [7, 7]));
    const m = await prepared(b.model(17));
    const inputs = new Map<string, Value>([['x', randomTensor(seededRandom(8), [2, 3, 64, 64], 1)], ['y', randomTensor(seededRandom(9), [2, 3, 160, 160], 1)],
      ['z', randomTensor(seededRandom(10), [2, 8, 48, 48], 1)]]);
    const seen = await checkAllTactics(m, inputs);
    expect(seen).toContain('etconv');
    expect(seen).toContain('getconv');
  }, 120_000);
  it('pointwise convolutions reading the input in place: positions off the tile width, partial channel panels, residual, activation', async () => {
    const r = seededRandom(13);
    const b = new GraphBuilder('pointwise');
    const x = b.input('x', 'float32', [2, 16, 9, 13]);
    const conv = (inp: string, cin: number, cout: number, name: string) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin, 1, 1], 0.3)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.1))],
        { kernel_shape: [1, 1] }, name);
    // 117 positions (7 x 16 + 5, 3 x 32 + 21): the last block of positions goes through the zero-padded copy; 48 and
    // 16 channels get both tiles, 40 the 8-row one only
    const h = b.op('Relu', [conv(x, 16, 48, 'up')], {}, 'r1');
    b.output(b.op('Relu', [b.op('Add', [conv(h, 48, 16, 'down'), x], {}, 'res')], {}, 'r2'));
    b.output(conv(h, 48, 40, 'wide'));
    const m = await prepared(b.model(17));
    const seen = await checkAllTactics(m, new Map([['x', randomTensor(seededRandom(7), [2, 16, 9, 13], 1)]]));
    expect(seen).toContain('pw');
  }, 120_000);
  it('pointwise convolutions with outputs of 1 MB and more (row panels along chunks of positions): chunk and image edges, residual, activation', async () => {
    const r = seededRandom(14);
    const b = new GraphBuilder('pointwise_big');
    // 67 x 71 = 4757 positions (4757 = 297 x 16 + 5 = 148 x 32 + 21): with K = 16 one chunk of 4096 positions and a
    // ragged one ending in the zero-padded copy, with K = 64 five chunks of 1024 (1008 for the 32-wide tile)
    const x = b.input('x', 'float32', [2, 16, 67, 71]);
    const conv = (inp: string, cin: number, cout: number, name: string) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin, 1, 1], 0.3)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.1))],
        { kernel_shape: [1, 1] }, name);
    const h = b.op('Relu', [conv(x, 16, 64, 'up')], {}, 'r1');
    b.output(b.op('Relu', [b.op('Add', [conv(h, 64, 64, 'mid'), h], {}, 'res')], {}, 'r2'));
    // 56 channels: the 8-row tile only, 266 392 outputs per image
    b.output(conv(h, 64, 56, 'wide'));
    const m = await prepared(b.model(17));
    const seen = await checkAllTactics(m, new Map([['x', randomTensor(seededRandom(8), [2, 16, 67, 71], 1)]]));
    expect(seen).toContain('pw');
  }, 240_000);
  it('matrix products of 1 to 5 rows (the few-row path and the tile path): odd K, N off the panel width, bias and activation', async () => {
    const r = seededRandom(12);
    const b = new GraphBuilder('few_rows');
    for (const rows of [1, 2, 3, 5]) {
      const x = b.input(`x${rows}`, 'float32', [rows, 1283]);
      const y = b.op('Gemm', [x, b.initializer(`w${rows}`, randomTensor(r, [1283, 1001], 0.05)), b.initializer(`b${rows}`, randomTensor(r, [1001], 0.1))], {}, `fc${rows}`);
      b.output(b.op('Relu', [y], {}, `relu${rows}`));
    }
    const m = await prepared(b.model(17));
    const inputs = new Map<string, Value>([1, 2, 3, 5].map((rows) => [`x${rows}`, randomTensor(seededRandom(rows), [rows, 1283], 1)]));
    const seen = await checkAllTactics(m, inputs);
    expect(seen).toContain('gemm');
  }, 120_000);
});

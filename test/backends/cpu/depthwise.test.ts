// Depthwise kernels on planes large enough to run in several bands of output rows (see codegen.ts depthwise), with
// strides 1, 2 (the paired-vector path, in rows too) and 3 (the phase planes), pads on one side only, dilation, a
// channel multiplier, a residual and a clip, against the reference kernel; and pointwise + depthwise pairs run as
// one call inside a chain, against the reference executor.
import { describe, it, expect } from 'vitest';
import type { Model, Node } from '../../../src/ir/graph.js';
import { TensorData } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { optimize } from '../../../src/passes/pipeline.js';
import { inferShapes } from '../../../src/passes/infer.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { findCompiler, hostIsa } from '../../../src/backends/cpu/compiler.js';
import { cpuBackend } from '../../../src/backends/cpu/index.js';
import { pairRunsMatchReference } from './pairs.js';

const X = [2, 3, 61, 150];

/** Every kind of depthwise layer over input dims X: strides 1, 2 (also odd pads, a channel multiplier with a 5x5
 * dilated window), [3, 2], [1, 2] and 3, one-sided pads, dilation, a residual, a clip. */
function model(X: number[]): Model {
  const r = seededRandom(21);
  const b = new GraphBuilder('depthwise_bands');
  const x = b.input('x', 'float32', X), C = X[1];
  const dw = (inp: string, c: number, mult: number, name: string, attrs: Record<string, number[]>, k: number[]) =>
    b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [c * mult, 1, ...k], 0.3)), b.initializer(`${name}.b`, randomTensor(r, [c * mult], 0.1))],
      { kernel_shape: k, group: c, ...attrs }, name);
  const h = b.op('Relu', [dw(x, C, 1, 'one', { pads: [1, 1, 1, 1] }, [3, 3])], {}, 'r1');
  b.output(b.op('Add', [dw(h, C, 1, 'res', { pads: [2, 0, 2, 4], dilations: [2, 2] }, [3, 3]), h], {}, 'add'));
  b.output(dw(h, C, 1, 's2', { pads: [1, 1, 1, 1], strides: [2, 2] }, [3, 3]));
  b.output(dw(h, C, 1, 's2odd', { pads: [0, 1, 1, 0], strides: [2, 2] }, [3, 3]));
  b.output(dw(h, C, 2, 's2mult', { pads: [2, 2, 2, 2], strides: [2, 2], dilations: [1, 2] }, [5, 5]));
  b.output(dw(h, C, 1, 's32', { pads: [1, 3, 0, 1], strides: [3, 2] }, [4, 3]));
  b.output(dw(h, C, 1, 's12', { pads: [0, 1, 0, 1], strides: [1, 2] }, [1, 3]));
  b.output(dw(h, C, 1, 's3', { pads: [1, 1, 1, 1], strides: [3, 3] }, [3, 3]));
  const lo = b.initializer('lo', new TensorData('float32', [], Float32Array.of(0)));
  const hi = b.initializer('hi', new TensorData('float32', [], Float32Array.of(0.4)));
  b.output(b.op('Clip', [dw(h, C, 1, 'clip', { pads: [1, 1, 1, 1], strides: [2, 2] }, [3, 3]), lo, hi], {}, 'relu6'));
  return b.model(17);
}

/** Runs every tactic whose name ends with \`suffix\` on every layer of model(X) against the reference kernel; returns
 * how many (layer, tactic) pairs it checked. */
const checkTactics = (X: number[], suffix: string) => checkModel(model(X), randomTensor(seededRandom(3), X, 1), suffix);

/** Every tactic ending in \`suffix\` on every layer of \`m\` against the reference kernel, on input \`xin\`. */
async function checkModel(m: Model, xin: TensorData, suffix: string): Promise<number> {
  await optimize(m, { inputShapes: new Map([['x', [...xin.dims]]]) });
  inferShapes(m.graph, m.opsets);
  const ref = executeGraph(m.graph, new Map([['x', xin]]), { opsets: m.opsets, keepAll: true });
  const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
  let checked = 0;
  for (const node of m.graph.nodes) {
    const ins = node.inputs.map((n) => (n ? ref.get(n) : undefined));
    for (const t of cpuBackend.tactics(node, m, typeOf).filter((q) => q.name.endsWith(suffix))) {
      const [out] = (await t.run(node as Node, ins, m.opsets)) as TensorData[];
      const want = ref.get(node.outputs[0]) as TensorData;
      expect(out.dims, node.name).toEqual(want.dims);
      const a = out.data as Float32Array, w = want.data as Float32Array;
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - w[i]) / (1e-3 + Math.abs(w[i])));
      expect(worst, `${node.name} ${t.name}`).toBeLessThan(1e-4);
      checked++;
    }
  }
  return checked;
}

describe.skipIf(!findCompiler())('depthwise kernels in bands of rows', () => {
  it('match the reference kernel on every layer', async () => {
    expect(await checkTactics(X, 'depthwise')).toBe(9);
  }, 120_000);
});

// channels in vector lanes (AVX-512 only): 20, 17 and 5 channels (full blocks of 16 and partial ones, lanes past the
// last channel), planes whose sizes are not multiples of 16 (the scalar tails of both transposes, bands whose rows start
// inside a 16-position chunk), planes in one band and in two (31 and 50 rows: the second band shorter), batch 2
describe.skipIf(!findCompiler() || hostIsa() !== 'avx512')('depthwise kernels with channels in vector lanes', () => {
  it('match the reference kernel on every layer', async () => {
    expect(await checkTactics([2, 20, 13, 11], 'depthwise-c16')).toBe(9);
    expect(await checkTactics([1, 5, 23, 19], 'depthwise-c16')).toBe(9);
    expect(await checkTactics([1, 17, 31, 40], 'depthwise-c16')).toBe(9);
    expect(await checkTactics([2, 17, 50, 62], 'depthwise-c16')).toBe(9);
    // past 56 x 56 the layer alone keeps the banded row kernel (the pairs below run these planes in lanes)
    expect(await checkTactics(X, 'depthwise-c16')).toBe(0);
  }, 120_000);
});

/** Inverted-residual blocks (1x1 expansion, depthwise, 1x1 projection) over X: a stride-1 pair with a residual
 * around the block, a stride-2 pair without bias on the expansion and with a residual added by the depthwise layer,
 * and an expansion that a second layer also reads (no pair). */
function blocks(X: number[]): Model {
  const r = seededRandom(31);
  const b = new GraphBuilder('pairs');
  const x = b.input('x', 'float32', X);
  const lo = b.initializer('lo', new TensorData('float32', [], Float32Array.of(0)));
  const hi = b.initializer('hi', new TensorData('float32', [], Float32Array.of(6)));
  const conv = (inp: string, cin: number, cout: number, name: string, attrs: Record<string, number[]>, k: number[], group = 1, bias = true) =>
    b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin / group, ...k], 0.4)),
      ...(bias ? [b.initializer(`${name}.b`, randomTensor(r, [cout], 0.2))] : [])], { kernel_shape: k, group, ...attrs }, name);
  const clip = (v: string, name: string) => b.op('Clip', [v, lo, hi], {}, name);
  let e = clip(conv(x, 6, 90, 'e1', {}, [1, 1]), 'c1');
  let h = clip(conv(e, 90, 90, 'd1', { pads: [1, 1, 1, 1] }, [3, 3], 90), 'c2');
  const y1 = b.op('Add', [conv(h, 90, 6, 'p1', {}, [1, 1]), x], {}, 'add1');
  // (made first: the pair needs the expansion's call right before the depthwise layer's)
  const skip = conv(y1, 6, 85, 'sk', { strides: [2, 2] }, [1, 1]);
  e = b.op('Relu', [conv(y1, 6, 85, 'e2', {}, [1, 1], 1, false)], {}, 'r2');
  h = clip(b.op('Add', [conv(e, 85, 85, 'd2', { pads: [1, 1, 1, 1], strides: [2, 2] }, [3, 3], 85), skip], {}, 'add2'), 'c3');
  b.output(conv(h, 85, 7, 'p2', {}, [1, 1]));
  e = clip(conv(y1, 6, 16, 'e3', {}, [1, 1]), 'c4');
  b.output(b.op('Add', [conv(e, 16, 16, 'd3', { pads: [1, 1, 1, 1] }, [3, 3], 16), e], {}, 'add3'));
  return b.model(17);
}

// On AVX-512 planes up to 112 x 112 pair with channels in lanes (X<id>_pwdwc: one band, two bands, bands of rows with
// a partial last one), larger ones with the banded row kernel (X<id>_pwdw, expansions of at least 1 M floats).
const PAIRS: [number[], string][] = [[[1, 6, 17, 20], 'c'], [[1, 6, 30, 27], 'c'], [[2, 6, 111, 113], 'c'], [[1, 6, 115, 116], '']];

describe.skipIf(!findCompiler())('pointwise + depthwise pairs', () => {
  it.each(PAIRS)('over %j run as one call in a chain and match the reference executor at 1 and 2 threads', async (X, kind) => {
    const m = blocks(X);
    const asked = await pairRunsMatchReference(m, X, 4, 3);
    // the two expansions read only by their depthwise layer pair up; the third is read twice
    const pairs = new Set(asked.filter((a) => /_pwdwc?$/.test(a)));
    expect(pairs.size).toBe(2);
    if (hostIsa() === 'avx512') expect([...pairs].every((f) => f.endsWith(`_pwdw${kind}`)), [...pairs].join()).toBe(true);
  }, 120_000);
});

/** Depthwise layers with EfficientNet's and MobileNetV3's activations over input dims X: 5 x 5 and 3 x 3 windows,
 * strides 1 and 2, SiLU (Mul by its own Sigmoid, fused into the layer) and HardSwish, one with a residual. */
function activations(X: number[]): Model {
  const r = seededRandom(41);
  const b = new GraphBuilder('depthwise_acts');
  const x = b.input('x', 'float32', X), C = X[1];
  const dw = (inp: string, name: string, k: number, s: number) =>
    b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [C, 1, k, k], 0.3)), b.initializer(`${name}.b`, randomTensor(r, [C], 0.1))],
      { kernel_shape: [k, k], group: C, pads: [k >> 1, k >> 1, k >> 1, k >> 1], strides: [s, s] }, name);
  const silu = (v: string, name: string) => b.op('Mul', [v, b.op('Sigmoid', [v], {}, `${name}.sig`)], {}, name);
  const h = silu(dw(x, 'k5', 5, 1), 'silu1');
  b.output(h);
  b.output(silu(dw(h, 'k5s2', 5, 2), 'silu2'));
  b.output(b.op('HardSwish', [dw(h, 'k3', 3, 1)], {}, 'hs1'));
  b.output(b.op('HardSwish', [dw(h, 'k3s2', 3, 2)], {}, 'hs2'));
  b.output(silu(b.op('Add', [dw(h, 'k3res', 3, 1), h], {}, 'add'), 'silu3'));
  return b.model(17);
}

// the position blocks of the channels-in-lanes kernel: 7-wide rows two to a block with a last row alone (7 x 7), 14-wide
// rows one to a block, 17-wide rows in a piece of 9 and one of 8, 28-wide in two of 14; 20 channels (a partial block of
// lanes), batch 2
describe.skipIf(!findCompiler())('depthwise kernels with SiLU and HardSwish', () => {
  it.each([[2, 20, 7, 7], [1, 20, 14, 14], [2, 20, 13, 17], [1, 20, 28, 28]])('over %j match the reference kernel', async (...X) => {
    const xin = randomTensor(seededRandom(5), X, 3);
    expect(await checkModel(activations(X), xin, 'depthwise')).toBe(5);
    if (hostIsa() === 'avx512') expect(await checkModel(activations(X), xin, 'depthwise-c16')).toBe(5);
  }, 120_000);

  // SiLU's vector form (on AVX-512 a SIMD function of the runtime): saturation far out, infinities, NaN, in both the
  // vector lanes and the scalar tails (a 1x1 depthwise layer with weight 1 and bias 0 passes the input to the
  // activation unchanged; 21 positions a row: a vector, a half and a scalar tail; 16 x 64 rows, enough work for a native
  // build)
  it('SiLU keeps its value at the extremes', async () => {
    const X = [1, 16, 64, 21];
    const b = new GraphBuilder('silu_edges');
    const x = b.input('x', 'float32', X);
    const conv = b.op('Conv', [x, b.initializer('w', new TensorData('float32', [16, 1, 1, 1], new Float32Array(16).fill(1))),
      b.initializer('b', new TensorData('float32', [16], new Float32Array(16)))], { kernel_shape: [1, 1], group: 16 }, 'dw');
    b.output(b.op('Mul', [conv, b.op('Sigmoid', [conv], {}, 'sig')], {}, 'silu'));
    const edges = [0, -0, 1e-30, -1e-30, 0.5, -0.5, 10, -10, 20, -20, 80, -80, 87, -87, 88.5, -88.5, 89, -89, 100, -100, 1e30, -1e30,
      Infinity, NaN, 3.75, -3.75, 15.2, -15.2, 50, -50];
    const data = Float32Array.from({ length: 16 * 64 * 21 }, (_, i) => edges[i % edges.length]);
    const m = b.model(17);
    await optimize(m, { inputShapes: new Map([['x', X]]) });
    inferShapes(m.graph, m.opsets);
    const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
    const node = m.graph.nodes.find((n) => n.opType === 'FusedConv')!;
    const tactics = cpuBackend.tactics(node, m, typeOf).filter((q) => /depthwise/.test(q.name));
    expect(tactics.length).toBeGreaterThan(0);
    const silu = (v: number) => v / (1 + Math.exp(-v));
    for (const t of tactics) {
      const [out] = (await t.run(node as Node, [new TensorData('float32', X, data), ...node.inputs.slice(1).map((n) => m.graph.initializers.get(n!))], m.opsets)) as TensorData[];
      const a = out.data as Float32Array;
      for (let i = 0; i < a.length; i++) {
        const want = Math.fround(silu(data[i]));
        if (Number.isNaN(want)) expect(a[i], `${t.name} at ${data[i]}`).toBeNaN();
        else if (!Number.isFinite(want)) expect(a[i], `${t.name} at ${data[i]}`).toBe(want);
        // (far below zero the output is e^-88.3 x, not 0: for outputs under 1e-3 the absolute error counts)
        else if (Math.abs(want) < 1e-3) expect(Math.abs(a[i] - want), `${t.name} at ${data[i]}`).toBeLessThan(1e-8);
        else expect(Math.abs(a[i] - want) / Math.abs(want), `${t.name} at ${data[i]}`).toBeLessThan(2e-6);
      }
    }
  }, 120_000);

  // ReLU, Clip and HardSwish in registers on AVX-512 (renderActivation512: max / min instead of the scalar selects):
  // the reference's values exactly at NaN, infinities, signed zeros and the clip bounds, and a Clip whose min is over
  // its max (every element becomes the max); through the layer alone, banded and in lanes (a 1x1 identity layer)
  it.each<[string, number[]]>([['Relu', []], ['Clip', [0, 6]], ['Clip', [0.5, -0.5]], ['HardSwish', []]])('%s %j keeps the reference values at the edges', async (act, bounds) => {
    const X = [1, 16, 64, 21];
    const b = new GraphBuilder('act_edges');
    const x = b.input('x', 'float32', X);
    const conv = b.op('Conv', [x, b.initializer('w', new TensorData('float32', [16, 1, 1, 1], new Float32Array(16).fill(1))),
      b.initializer('b', new TensorData('float32', [16], new Float32Array(16)))], { kernel_shape: [1, 1], group: 16 }, 'dw');
    const lims = bounds.map((v, i) => b.initializer(`lim${i}`, new TensorData('float32', [], Float32Array.of(v))));
    b.output(b.op(act, [conv, ...lims], {}, 'act'));
    const edges = [0, -0, 1e-30, -1e-30, 0.5, -0.5, 6, -6, 3, -3, 2.9999998, 6.0000005, 1e30, -1e30, Infinity, -Infinity, NaN, 0.25, -0.75];
    const xin = new TensorData('float32', X, Float32Array.from({ length: 16 * 64 * 21 }, (_, i) => edges[i % edges.length]));
    const m = b.model(17);
    await optimize(m, { inputShapes: new Map([['x', X]]) });
    inferShapes(m.graph, m.opsets);
    const want = executeGraph(m.graph, new Map([['x', xin]]), { opsets: m.opsets }).get(m.graph.outputs[0].name) as TensorData;
    const typeOf = (n: string) => m.graph.valueInfo.get(n) ?? m.graph.inputs.find((i) => i.name === n)?.type;
    const node = m.graph.nodes.find((n) => n.opType === 'FusedConv')!;
    expect(node.attrs.activation?.value).toBe(act);
    const tactics = cpuBackend.tactics(node, m, typeOf).filter((q) => /depthwise/.test(q.name));
    expect(tactics.length).toBe(hostIsa() === 'avx512' ? 2 : 1);
    for (const t of tactics) {
      const [out] = (await t.run(node as Node, [xin, ...node.inputs.slice(1).map((n) => m.graph.initializers.get(n!))], m.opsets)) as TensorData[];
      const a = out.data as Float32Array, w = want.data as Float32Array;
      for (let i = 0; i < a.length; i++) expect(Object.is(a[i], w[i]), `${t.name} at ${xin.data[i]}: ${a[i]} vs ${w[i]}`).toBe(true);
    }
  }, 120_000);
});

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
async function checkTactics(X: number[], suffix: string): Promise<number> {
  const m = model(X);
  await optimize(m, { inputShapes: new Map([['x', X]]) });
  inferShapes(m.graph, m.opsets);
  const ref = executeGraph(m.graph, new Map([['x', randomTensor(seededRandom(3), X, 1)]]), { opsets: m.opsets, keepAll: true });
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

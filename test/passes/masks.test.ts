// The 'bool masks as numbers' stage (src/passes/masks.ts): a Where whose condition is built in bool from an integer
// mask (Cast, Unsqueeze/Reshape, Gather, And/Or/Not/Xor with constants) computes the same values on float twins of
// the bool tensors; regions with a comparison, a bool graph output or a bool read as something else stay; a Where on
// attention scores still becomes kiln:Attention's mask. On the CPU the rewritten mask layers run natively, and the
// run replays.
import { describe, it, expect, vi, afterEach } from 'vitest';
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import type { Model } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import { cloneModel } from '../../src/quant/qdq.js';
import { optimize } from '../../src/passes/pipeline.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { findCompiler } from '../../src/backends/cpu/compiler.js';
import { Replay } from '../../src/backends/cpu/replay.js';
import { outputsOf, maxDiff } from '../quant/outputs.js';

const B = 2, S = 6;
/** The native test's sequence: enough work that the CPU compiles the model (MIN_MODEL_WORK). */
const LONG = 128;
const f32 = (shape: number[]) => ({ kind: 'tensor' as const, dtype: 'float32' as const, shape });
const bools = (dims: number[], f: (i: number) => boolean) => TensorData.fromNumbers('bool', dims, Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => (f(i) ? 1 : 0)));

/**
 * DistilBERT's mask, with every op of the region: int64 mask [B, S] -> Cast(bool) -> Flatten -> Gather -> Reshape ->
 * And(causal) -> Or(Not(pad)) -> Xor -> Where(., 0, -big) + scores, and a Cast of the mask back to float (a second
 * output). `variant` swaps the leaf for a comparison or exposes a bool as a graph output (regions left alone).
 */
function maskModel(variant: 'mask' | 'comparison' | 'bool output' = 'mask', S = 6): Model {
  const r = seededRandom(3);
  const b = new GraphBuilder('masks');
  const mask = b.input('mask', 'int64', [B, S]);
  const scores = b.input('scores', 'float32', [B, 1, S, S]);
  const leaf = variant === 'comparison'
    ? b.op('Greater', [b.op('Cast', [mask], { to: 1 }), b.initializer('half', TensorData.scalar('float32', 0.5))])
    : b.op('Cast', [mask], { to: 9 });
  const flat = b.op('Flatten', [leaf], { axis: 2 }); // [B * S, 1]
  const ids = b.initializer('ids', TensorData.fromNumbers('int64', [B, S], Array.from({ length: B * S }, (_, i) => i)));
  const picked = b.op('Gather', [flat, ids], { axis: 0 }); // [B, S, 1]
  const keep = b.op('Reshape', [picked, b.initializer('shape', TensorData.fromNumbers('int64', [4], [B, 1, 1, S]))]);
  const causal = b.initializer('causal', bools([1, 1, S, S], (i) => i % S <= Math.floor(i / S)));
  const both = b.op('And', [keep, causal]);
  const pad = b.initializer('pad', bools([1, 1, 1, S], (i) => i === S - 1));
  const either = b.op('Or', [both, b.op('Not', [pad])]);
  const cond = b.op('Xor', [either, b.initializer('flip', bools([1, 1, S, 1], (i) => i === 0))]);
  const bias = b.op('Where', [cond, b.initializer('zero', TensorData.scalar('float32', 0)), b.initializer('big', TensorData.scalar('float32', -3.4e38))]);
  b.output(b.op('Add', [scores, bias]), f32([B, 1, S, S]));
  b.output(b.op('Mul', [b.op('Cast', [keep], { to: 1 }), b.initializer('w', randomTensor(r, [S], 1))]), f32([B, 1, 1, S]));
  if (variant === 'bool output') b.output(both, { kind: 'tensor', dtype: 'bool', shape: [B, 1, S, S] });
  return b.model(17);
}

/** Masks with zeros, ones and other integers (any nonzero integer is true). */
function feeds(seed: number, S = 6): Map<string, TensorData> {
  const r = seededRandom(seed);
  const m = Array.from({ length: B * S }, () => [0, 1, 1, 7, -3][Math.floor(r() * 5)]);
  return new Map([
    ['mask', TensorData.fromBigInts('int64', [B, S], m.map(BigInt))],
    ['scores', randomTensor(r, [B, 1, S, S], 1)],
  ]);
}

const ops = (m: Model) => m.graph.nodes.map((n) => n.opType);
const boolValues = (m: Model) => m.graph.nodes.flatMap((n) => n.outputs).filter((o) => {
  const t = m.graph.valueInfo.get(o);
  return t?.kind === 'tensor' && t.dtype === 'bool';
});

afterEach(() => vi.restoreAllMocks());

describe('bool masks as numbers', () => {
  it('rewrites a mask region to float twins with exactly the same outputs; no bool value is left', async () => {
    const ref = maskModel();
    const opt = cloneModel(ref);
    const report = await optimize(opt, { verify: true });
    expect(report.stages.find((s) => s.name === 'bool masks as numbers')!.changes).toBe(2); // the Where and the Cast back
    for (const op of ['And', 'Or', 'Not', 'Xor', 'Where']) expect(ops(opt)).not.toContain(op);
    expect(boolValues(opt)).toEqual([]);
    for (const seed of [1, 2, 3]) {
      expect(maxDiff(ref, opt, feeds(seed))).toBe(0);
      // the -3.4e38 bias survives as itself (no 0 * -big or inf arithmetic)
      expect(Math.min(...outputsOf(opt, feeds(seed))[0])).toBeLessThan(-1e38);
    }
  });

  for (const variant of ['comparison', 'bool output'] as const) {
    it(`leaves a region alone when it has a ${variant}`, async () => {
      const opt = cloneModel(maskModel(variant));
      await optimize(opt, { verify: true });
      expect(ops(opt)).toContain('Where');
      expect(maxDiff(maskModel(variant), opt, feeds(4))).toBe(0);
    });
  }

  it('a Where on attention scores still becomes kiln:Attention with its bool mask', async () => {
    const r = seededRandom(5);
    const b = new GraphBuilder('attn');
    const q = b.input('q', 'float32', [1, 2, S, 8]), kt = b.input('kt', 'float32', [1, 2, 8, S]), vv = b.input('v', 'float32', [1, 2, S, 8]);
    const mask = b.input('mask', 'int64', [1, S]);
    const keep = b.op('Unsqueeze', [b.op('Cast', [mask], { to: 9 }), b.initializer('axes', TensorData.fromNumbers('int64', [2], [1, 2]))]);
    const scores = b.op('Mul', [b.op('MatMul', [q, kt]), b.initializer('scale', TensorData.scalar('float32', 0.35))]);
    const masked = b.op('Where', [keep, scores, b.initializer('neg', TensorData.scalar('float32', -1e9))]);
    b.output(b.op('MatMul', [b.op('Softmax', [masked], { axis: -1 }), vv]), f32([1, 2, S, 8]));
    const ref = b.model(17);
    const opt = cloneModel(ref);
    await optimize(opt, { verify: true });
    expect(ops(opt)).toContain('Attention');
    const fd = new Map([['q', randomTensor(r, [1, 2, S, 8], 1)], ['kt', randomTensor(r, [1, 2, 8, S], 1)], ['v', randomTensor(r, [1, 2, S, 8], 1)],
      ['mask', TensorData.fromBigInts('int64', [1, S], [1n, 1n, 0n, 1n, 0n, 1n])]]);
    expect(maxDiff(ref, opt, fd)).toBeLessThan(1e-5);
  });

  it.skipIf(!findCompiler())('on the CPU every mask layer is native, outputs match, and the run replays', async () => {
    const m = maskModel('mask', LONG);
    const plan = await build(m);
    const js = plan.header.layers.filter((l) => !l.tactic.startsWith('native') && !['Flatten', 'Reshape'].includes(l.opType));
    expect(js.map((l) => `${l.opType} ${l.tactic}`)).toEqual([]);
    const engine = await Engine.load(plan, { intraOpNumThreads: 2 });
    const ctx = engine.createContext();
    const binds = vi.spyOn(Replay.prototype, 'bind');
    for (const seed of [1, 2, 3, 4]) {
      const fd = feeds(seed, LONG);
      const out = await ctx.run(Object.fromEntries([...fd].map(([k, t]) => [k, new Tensor(t.dtype as 'float32', t.data as Float32Array, [...t.dims])])));
      const want = outputsOf(m, fd);
      m.graph.outputs.forEach((o, j) => expect([...(out[o.name] as Tensor).data as Float32Array]).toEqual([...want[j]].map(Math.fround)));
    }
    expect(binds).toHaveBeenCalledTimes(2); // runs 3 and 4
    engine.dispose();
  }, 60_000);
});

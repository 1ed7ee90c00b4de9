// The CPU backend's compiled kernels: outputs match the reference executor on the zoo's small models, plans carry
// the library and the ISA, a missing compiler falls back to reference kernels with one warning, other shapes than
// the compiled ones fall back per layer, and session.run leaves the event loop free while native layers run.
import { describe, it, expect, afterEach, vi } from 'vitest';
import type { Model } from '../../../src/ir/graph.js';
import { TensorData } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { parsePlan, serializePlan } from '../../../src/build/plan.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { findCompiler, resetCompiler } from '../../../src/backends/cpu/compiler.js';
import { NativeLibrary } from '../../../src/backends/cpu/native.js';
import { renderC, renderActivation } from '../../../src/backends/cpu/expr-c.js';
import { parseExpr } from '../../../src/ir/expr.js';
import { resnet50, RESNET_SMALL, mobilenetV2, MOBILENET_SMALL, bertBase, BERT_SMALL, gpt2, GPT2_SMALL } from '../../../bench/models/zoo.js';

const hasCompiler = !!findCompiler();

function feedsFor(m: Model, dimsOf: (d: unknown) => number) {
  const r = seededRandom(11);
  const feeds: Record<string, Tensor> = {};
  const shapes: Record<string, number[]> = {};
  for (const i of m.graph.inputs) {
    if (m.graph.initializers.has(i.name) || i.type.kind !== 'tensor') continue;
    const dims = (i.type.shape ?? []).map((d) => (typeof d === 'number' ? d : dimsOf(d)));
    const n = dims.reduce((a, b) => a * b, 1);
    shapes[i.name] = dims;
    feeds[i.name] = i.type.dtype === 'float32' ? new Tensor('float32', Float32Array.from({ length: n }, () => r() * 2 - 1), dims)
      : new Tensor('int64', BigInt64Array.from({ length: n }, (_, k) => (i.name.includes('mask') ? BigInt(k % 7 !== 6) : BigInt(Math.floor(r() * 20)))), dims);
  }
  return { feeds, shapes };
}

/** Max |a - b| / (atol + |b|) over every output, comparing a plan's run with the reference executor. */
async function compareWithReference(m: Model, feeds: Record<string, Tensor>, plan: Uint8Array, threads = 2) {
  const engine = await Engine.load(plan, { intraOpNumThreads: threads });
  const out = await engine.createContext().run(feeds);
  engine.dispose();
  const ref = executeGraph(m.graph, new Map(Object.entries(feeds).map(([k, v]) => [k, new TensorData(v.type as 'float32', v.dims, v.data as Float32Array)])), { opsets: m.opsets });
  let worst = 0;
  for (const [k, v] of Object.entries(out)) {
    const a = (v as Tensor).data as Float32Array, b = (ref.get(k) as TensorData).data as Float32Array;
    expect(a.length).toBe(b.length);
    for (let i = 0; i < a.length; i++) {
      expect(Number.isNaN(a[i])).toBe(Number.isNaN(b[i]));
      if (!Number.isNaN(b[i]) && a[i] !== b[i]) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1e-4 + Math.abs(b[i]))); // equal infinities too
    }
  }
  return worst;
}

/** Largest |a - w| relative to each reference value, with a floor at 1e-3 of the largest one (float32 sums in another
 * order, and values that cancel to near zero). */
function worstRelative(a: Float32Array, w: Float32Array): number {
  const atol = 1e-3 * w.reduce((p, q) => Math.max(p, Math.abs(q)), 0);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - w[i]) / (atol + Math.abs(w[i])));
  return worst;
}

const nativeLayers = (bytes: Uint8Array) => parsePlan(bytes).header.layers.filter((l) => l.tactic.startsWith('native-'));

describe.skipIf(!hasCompiler)('compiled CPU kernels on the zoo models', () => {
  // sizes where pooling, normalization and attention layers have enough work to get native kernels
  const seq = (d: unknown) => (/seq|len/.test(String(d)) ? 128 : 1);
  const cases: [string, () => Model, (d: unknown) => number, string[]][] = [
    ['resnet50 (small, 128x128)', () => resnet50({ ...RESNET_SMALL, image: 128 }), () => 1, ['FusedConv', 'MaxPool', 'GlobalAveragePool']],
    ['mobilenet-v2 (small, 64x64)', () => mobilenetV2({ ...MOBILENET_SMALL, image: 64 }), () => 1, ['FusedConv']],
    ['bert (small, seq 128)', () => bertBase({ ...BERT_SMALL, maxPositions: 128 }), seq, ['FusedMatMul', 'Attention', 'LayerNormalization', 'Elementwise']],
    ['gpt2 (small, seq 128)', () => gpt2({ ...GPT2_SMALL, maxPositions: 128 }), seq, ['FusedMatMul', 'Attention', 'LayerNormalization']],
    // attention rows and columns that are not multiples of its 4-row, 64-column blocks
    ['gpt2 (small, seq 37)', () => gpt2({ ...GPT2_SMALL, maxPositions: 64 }), (d) => (/seq|len/.test(String(d)) ? 37 : 1), ['FusedMatMul', 'Attention']],
  ];
  for (const [name, make, dimsOf, expectOps] of cases) {
    it(`${name}: native layers match the reference kernels`, async () => {
      const m = make();
      const { feeds, shapes } = feedsFor(m, dimsOf);
      const plan = await build(m, { shapes });
      const native = nativeLayers(plan.bytes);
      for (const op of expectOps) expect(native.map((l) => l.opType), op).toContain(op);
      expect(parsePlan(plan.bytes).blobs.has('cpu/kernels.so')).toBe(true);
      expect(await compareWithReference(m, feeds, plan.bytes)).toBeLessThan(1e-3);
    }, 60_000);
  }

  it('runs the same plan with one thread and with a shape other than the compiled one (reference fallback)', async () => {
    const m = resnet50({ ...RESNET_SMALL, image: 64 });
    const { feeds } = feedsFor(m, () => 2);
    const plan = await build(m, { profiles: [{ input: { min: [1, 3, 64, 64], opt: [1, 3, 64, 64], max: [4, 3, 64, 64] } }] });
    expect(nativeLayers(plan.bytes).length).toBeGreaterThan(0);
    expect(await compareWithReference(m, feeds, plan.bytes, 1)).toBeLessThan(1e-3);
  }, 60_000);

  it('reuses intermediate buffers across runs without mixing values (fresh inputs each run, views through Reshape)', async () => {
    const m = bertBase({ ...BERT_SMALL, maxPositions: 128 });
    const seq = (d: unknown) => (/seq|len/.test(String(d)) ? 128 : 1);
    const plan = await build(m, { shapes: feedsFor(m, seq).shapes });
    const engine = await Engine.load(plan, { intraOpNumThreads: 2 });
    const ctx = engine.createContext();
    const r = seededRandom(3);
    const kept: [Record<string, Tensor>, Record<string, unknown>][] = [];
    for (let run = 0; run < 3; run++) {
      const { feeds } = feedsFor(m, seq);
      for (const [k, t] of Object.entries(feeds)) if (t.type === 'int64') (t.data as BigInt64Array).forEach((_, i, a) => { if (!k.includes('mask')) a[i] = BigInt(Math.floor(r() * 20)); });
      kept.push([feeds, await ctx.run(feeds)]);
    }
    engine.dispose();
    // every run's outputs stay intact after later runs and match the reference executor on that run's inputs
    for (const [feeds, out] of kept) {
      const ref = executeGraph(m.graph, new Map(Object.entries(feeds).map(([k, v]) => [k, new TensorData(v.type as 'float32', v.dims, v.data as Float32Array)])), { opsets: m.opsets });
      for (const [k, v] of Object.entries(out)) {
        const a = (v as Tensor).data as Float32Array, b = (ref.get(k) as TensorData).data as Float32Array;
        let worst = 0;
        for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1e-4 + Math.abs(b[i])));
        expect(worst, k).toBeLessThan(1e-3);
      }
    }
  }, 60_000);

  it('overlapping runs of one library at 1, 2 and 3 threads (one shared pool, thread count changing mid-run) agree', async () => {
    const m = mobilenetV2({ ...MOBILENET_SMALL, image: 64 });
    const plan = await build(m, { shapes: feedsFor(m, () => 1).shapes });
    const engines = await Promise.all([1, 2, 3].map((t) => Engine.load(plan, { intraOpNumThreads: t })));
    const inputs = Array.from({ length: 6 }, (_, i) => {
      const { feeds } = feedsFor(m, () => 1);
      for (const t of Object.values(feeds)) (t.data as Float32Array).forEach((x, j, a) => { a[j] = x * (1 + i) + 0.1 * i; });
      return feeds;
    });
    // the one-thread engine's outputs, one run at a time
    const want: Record<string, unknown>[] = [];
    for (const f of inputs) want.push(await engines[0].createContext().run(f));
    // every input on every engine at once: 18 runs in flight, each setting the pool's thread count before its layers
    const got = await Promise.all(engines.flatMap((e) => inputs.map((f) => e.createContext().run(f))));
    for (const e of engines) e.dispose();
    got.forEach((out, i) => {
      for (const [k, v] of Object.entries(out)) {
        const a = (v as Tensor).data as Float32Array, b = (want[i % inputs.length][k] as Tensor).data as Float32Array;
        let worst = 0;
        for (let j = 0; j < a.length; j++) worst = Math.max(worst, Math.abs(a[j] - b[j]) / (1e-5 + Math.abs(b[j])));
        expect(worst, `run ${i}, ${k}`).toBeLessThan(1e-5);
      }
    });
  }, 60_000);

  it('grouped convolutions (3x3 stride 2 with pads and bias, 1x1 with a residual) run natively (per-group GEMM, transposed or grouped kernel) at batch 1 and 3', async () => {
    const b = new GraphBuilder('grouped');
    const r = seededRandom(8);
    const x = b.input('x', 'float32', ['n', 16, 15, 17]);
    const g1 = b.op('Relu', [b.op('Conv', [x, b.initializer('w1', randomTensor(r, [24, 4, 3, 3], 0.3)), b.initializer('b1', randomTensor(r, [24], 0.1))],
      { group: 4, kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, 'gconv1')], {}, 'relu1');
    const g2 = b.op('Conv', [g1, b.initializer('w2', randomTensor(r, [24, 12, 1, 1], 0.3)), b.initializer('b2', randomTensor(r, [24], 0.1))], { group: 2 }, 'gconv2');
    b.output(b.op('Add', [g2, g1], {}, 'res'));
    const m = b.model(17);
    for (const n of [1, 3]) {
      const plan = await build(m, { shapes: { x: [n, 16, 15, 17] } });
      const tactics = parsePlan(plan.bytes).header.layers.map((l) => l.tactic);
      expect(tactics.filter((t) => /-(gt?conv|grouped)-/.test(t)).length, tactics.join()).toBe(2);
      const feeds = { x: new Tensor('float32', randomTensor(seededRandom(n), [n, 16, 15, 17], 1).data as Float32Array, [n, 16, 15, 17]) };
      for (const threads of [1, 2]) expect(await compareWithReference(m, feeds, plan.bytes, threads)).toBeLessThan(1e-3);
    }
  }, 60_000);

  it('Concat (channels, last axis, batch-generic) and Slice (negative starts, axes out of order, open ends) run natively', async () => {
    const b = new GraphBuilder('copies');
    const r = seededRandom(9);
    const x = b.input('x', 'float32', ['n', 8, 9, 10]);
    const c = b.op('Conv', [x, b.initializer('w', randomTensor(r, [12, 8, 3, 3], 0.3))], { pads: [1, 1, 1, 1] }, 'conv');
    const cat = b.op('Concat', [c, x, c], { axis: 1 }, 'cat1');
    const i64 = (name: string, v: number[]) => b.initializer(name, new TensorData('int64', [v.length], BigInt64Array.from(v.map(BigInt))));
    const sl = b.op('Slice', [cat, i64('st', [-7, 3, 1]), i64('en', [9, 1000, 8]), i64('ax', [3, 1, 2])], {}, 'slice');
    const sl2 = b.op('Slice', [cat, i64('st2', [0, 5, 3]), i64('en2', [2, 9, 32]), i64('ax2', [2, 3, 1])], {}, 'slice2');
    b.output(b.op('Relu', [b.op('Concat', [sl2, b.op('Slice', [sl, i64('st3', [0]), i64('en3', [2]), i64('ax3', [2])], {}, 'slice3')], { axis: -1 }, 'cat2')], {}, 'relu'));
    b.output(b.op('Sigmoid', [sl], {}, 'sig'));
    const m = b.model(17);
    for (const n of [1, 2]) {
      const plan = await build(m, { shapes: { x: [n, 8, 9, 10] } });
      const native = new Set(nativeLayers(plan.bytes).map((l) => l.name));
      for (const name of ['cat1', 'slice', 'slice2', 'cat2']) expect(native.has(name), name).toBe(true);
      const feeds = { x: new Tensor('float32', randomTensor(seededRandom(n), [n, 8, 9, 10], 1).data as Float32Array, [n, 8, 9, 10]) };
      expect(await compareWithReference(m, feeds, plan.bytes)).toBeLessThan(1e-4);
    }
  }, 60_000);

  it('Concat and Slice with rows longer than a copy piece (split over the pool at 2 threads, pieces across part boundaries) match the reference at 1 and 2 threads', async () => {
    const b = new GraphBuilder('long-rows');
    const x = b.input('x', 'float32', ['n', 5, 41, 43]);
    const c = b.op('Mul', [x, x], {}, 'sq');
    // one output row per image: 15 x 1763 floats, two pieces at 2 threads, split inside the middle part
    const cat = b.op('Concat', [c, x, c], { axis: 1 }, 'cat');
    const i64 = (name: string, v: number[]) => b.initializer(name, new TensorData('int64', [v.length], BigInt64Array.from(v.map(BigInt))));
    b.output(b.op('Relu', [cat], {}, 'relu'));
    b.output(b.op('Sigmoid', [b.op('Slice', [cat, i64('st', [2]), i64('en', [13]), i64('ax', [1])], {}, 'slice')], {}, 'sig'));
    const m = b.model(17);
    for (const n of [1, 2]) {
      const plan = await build(m, { shapes: { x: [n, 5, 41, 43] } });
      const native = new Set(nativeLayers(plan.bytes).map((l) => l.name));
      for (const name of ['cat', 'slice']) expect(native.has(name), name).toBe(true);
      const feeds = { x: new Tensor('float32', randomTensor(seededRandom(n), [n, 5, 41, 43], 1).data as Float32Array, [n, 5, 41, 43]) };
      for (const threads of [1, 2]) expect(await compareWithReference(m, feeds, plan.bytes, threads)).toBeLessThan(1e-6);
    }
  }, 60_000);

  it('broadcast elementwise ops with merged dims (per-channel, per-position, per-row operands; batch 1 and batch-generic 3) match the reference', async () => {
    const b = new GraphBuilder('merged-dims');
    const r = seededRandom(11);
    const x = b.input('x', 'float32', ['n', 32, 28, 27]);
    const y = b.op('Relu', [b.op('Conv', [x, b.initializer('w', randomTensor(r, [32, 32, 1, 1], 0.3))], {}, 'conv')], {}, 'relu');
    // [C, 1, 1]: C rows of 756; [1, H, W]: one plane read by every channel; [C, H, 1]: no merge but the leading dims;
    // [n, C, 1, 1] from the graph: a batch-carrying per-channel gate
    const perC = b.op('Mul', [y, b.initializer('g', randomTensor(r, [32, 1, 1], 1))], {}, 'mul_c');
    const perHW = b.op('Add', [perC, b.initializer('h', randomTensor(r, [1, 28, 27], 1))], {}, 'add_hw');
    const perRow = b.op('Sub', [perHW, b.initializer('s', randomTensor(r, [32, 28, 1], 1))], {}, 'sub_row');
    const gate = b.op('GlobalAveragePool', [y], {}, 'gap');
    b.output(b.op('Mul', [perRow, gate], {}, 'mul_gate'));
    const m = b.model(17);
    for (const n of [1, 3]) {
      const plan = await build(m, { shapes: { x: [n, 32, 28, 27] } });
      const native = new Set(nativeLayers(plan.bytes).map((l) => l.name));
      for (const name of ['mul_c', 'add_hw', 'sub_row', 'mul_gate']) expect(native.has(name), `${name} in ${[...native].join()}`).toBe(true);
      const feeds = { x: new Tensor('float32', randomTensor(seededRandom(n), [n, 32, 28, 27], 1).data as Float32Array, [n, 32, 28, 27]) };
      for (const threads of [1, 2]) expect(await compareWithReference(m, feeds, plan.bytes, threads)).toBeLessThan(1e-3);
    }
  }, 60_000);

  it('Gather (embedding rows by run-time ids, negative ids; a scalar index on axis 1) and Cast run natively; an id out of range is that node\'s error', async () => {
    const b = new GraphBuilder('gathers');
    const r = seededRandom(12);
    const ids = b.input('ids', 'int64', ['n', 7]), mask = b.input('mask', 'int64', ['n', 7]);
    const emb = b.op('Gather', [b.initializer('table', randomTensor(r, [20, 64], 1)), ids], {}, 'emb');
    const m = b.op('Unsqueeze', [b.op('Cast', [mask], { to: 1 }, 'cast'), b.initializer('ax', new TensorData('int64', [1], BigInt64Array.of(2n)))], {}, 'unsq');
    const h = b.op('MatMul', [b.op('Mul', [emb, m], {}, 'mul'), b.initializer('w', randomTensor(r, [64, 64], 0.2))], {}, 'mm');
    const first = b.op('Gather', [h, b.initializer('i0', new TensorData('int64', [], BigInt64Array.of(0n)))], { axis: 1 }, 'first');
    b.output(b.op('MatMul', [first, b.initializer('w2', randomTensor(r, [64, 5], 0.3))], {}, 'fc'));
    const model = b.model(17);
    const feedsAt = (n: number, bad = false) => ({
      ids: new Tensor('int64', BigInt64Array.from({ length: n * 7 }, (_, k) => BigInt(bad && k === 3 ? 20 : (k * 7) % 23 - 3)), [n, 7]),
      mask: new Tensor('int64', BigInt64Array.from({ length: n * 7 }, (_, k) => BigInt(k % 5 !== 4)), [n, 7]),
    });
    const plan = await build(model);
    const native = new Set(nativeLayers(plan.bytes).map((l) => l.name));
    for (const name of ['emb', 'cast', 'first']) expect(native.has(name), name).toBe(true);
    for (const n of [1, 3]) expect(await compareWithReference(model, feedsAt(n), plan.bytes), `batch ${n}`).toBeLessThan(1e-4);
    const engine = await Engine.load(plan, { intraOpNumThreads: 2 });
    await expect(engine.createContext().run(feedsAt(2, true))).rejects.toThrow(/Gather 'emb': an index in 'ids' is out of range for axis 0 of \[20, 64\] \(valid: -20 to 19\)/);
    // the error is taken once: the next run with good ids is right
    expect(await engine.createContext().run(feedsAt(2))).toBeDefined();
    engine.dispose();
  }, 60_000);

  it('ReduceMean / ReduceMax over trailing axes (axes as input or attribute, keepdims 0 and 1, negative axes) run natively; others keep the reference', async () => {
    const r = seededRandom(13);
    for (const opset of [13, 18]) {
      const b = new GraphBuilder(`reduce${opset}`);
      const x = b.input('x', 'float32', ['n', 24, 9, 11]);
      const c = b.op('Conv', [x, b.initializer('w', randomTensor(r, [32, 24, 3, 3], 0.2))], { pads: [1, 1, 1, 1] }, 'conv');
      const axes = (name: string, v: number[]): { inputs: string[]; attrs: Record<string, number[]> } => (opset >= 18
        ? { inputs: [b.initializer(name, new TensorData('int64', [v.length], BigInt64Array.from(v.map(BigInt))))], attrs: {} }
        : { inputs: [], attrs: { axes: v } });
      const red = (op: string, name: string, v: number[], keepdims: number) => {
        const a = axes(`${name}_axes`, v);
        return b.op(op, [c, ...a.inputs], { ...a.attrs, keepdims }, name);
      };
      b.output(red('ReduceMean', 'mean_hw', [2, 3], 0));
      b.output(red('ReduceMean', 'mean_w', [-1], 1));
      b.output(red('ReduceMax', 'max_chw', [-3, -2, -1], 1));
      b.output(red('ReduceMean', 'mean_c', [1], 1)); // not trailing: the reference kernel
      const m = b.model(opset);
      const plan = await build(m);
      const native = new Set(nativeLayers(plan.bytes).map((l) => l.name));
      for (const name of ['mean_hw', 'mean_w', 'max_chw']) expect(native.has(name), `${name}, opset ${opset}`).toBe(true);
      expect(native.has('mean_c')).toBe(false);
      for (const n of [1, 3]) {
        const feeds = { x: new Tensor('float32', randomTensor(seededRandom(n), [n, 24, 9, 11], 1).data as Float32Array, [n, 24, 9, 11]) };
        expect(await compareWithReference(m, feeds, plan.bytes), `opset ${opset}, batch ${n}`).toBeLessThan(1e-3);
      }
    }
  }, 60_000);

  it('Sigmoid, Tanh, Erf and SiLU match the reference at the edges of their exponentials (saturation, infinities, NaN)', async () => {
    const b = new GraphBuilder('transcendental');
    const n = 16384;
    const x = b.input('x', 'float32', [1, n]);
    for (const op of ['Sigmoid', 'Tanh', 'Erf']) b.output(b.op(op, [x], {}, op.toLowerCase()));
    const siluOut = b.op('Mul', [x, b.op('Sigmoid', [x], {}, 'gate')], {}, 'silu');
    b.output(siluOut);
    const m = b.model(17);
    const plan = await build(m);
    expect(nativeLayers(plan.bytes).length).toBeGreaterThan(0);
    const edges = [-Infinity, -1e4, -100, -88.5, -87.5, -87, -20, -9.5, -1, -1e-3, 0, 1e-3, 1, 9.5, 20, 87, 87.5, 88.5, 100, 1e4, Infinity, NaN];
    const r = seededRandom(4);
    const xs = Float32Array.from({ length: n }, (_, i) => (i < edges.length ? edges[i] : (r() * 2 - 1) * 12));
    const feeds = { x: new Tensor('float32', xs, [1, n]) };
    // SiLU at -inf is -inf x (a tiny gate) here and -inf x 0 = NaN in the reference: both say "no signal"
    const silu = (await (await Engine.load(plan)).createContext().run(feeds))[siluOut] as Tensor;
    expect((silu.data as Float32Array)[0]).toBe(-Infinity);
    xs[0] = -1e30;
    // Erf's polynomial is good to ~1.5e-7 absolute, so relative to values near 1e-3 it is ~1e-4
    expect(await compareWithReference(m, feeds, plan.bytes)).toBeLessThan(1e-3);
  }, 60_000);

  it('lone elementwise ops (a squeeze-excite broadcast Mul, Sub, Sigmoid, Max) run as native kernels and match the reference', async () => {
    const b = new GraphBuilder('lone');
    const r = seededRandom(6);
    const x = b.input('x', 'float32', [1, 24, 20, 20]);
    const c = b.op('Conv', [x, b.initializer('w', randomTensor(r, [32, 24, 1, 1], 0.2))], {}, 'conv');
    // squeeze-excite: the gate [1, 32, 1, 1] scales the feature map; between two convolutions nothing fuses the Mul
    const gate = b.op('Sigmoid', [b.op('Conv', [b.op('GlobalAveragePool', [c], {}, 'gap'), b.initializer('w2', randomTensor(r, [32, 32, 1, 1], 0.2))], {}, 'fc')], {}, 'sig');
    const scaled = b.op('Mul', [c, gate], {}, 'se_mul');
    const d = b.op('Conv', [scaled, b.initializer('w3', randomTensor(r, [32, 32, 1, 1], 0.2))], {}, 'conv3');
    const diff = b.op('Sub', [d, c], {}, 'sub');
    b.output(b.op('Max', [b.op('Conv', [diff, b.initializer('w4', randomTensor(r, [16, 32, 1, 1], 0.2))], {}, 'conv4'),
      b.initializer('floor', new TensorData('float32', [16, 1, 1], new Float32Array(16).fill(-0.05)))], {}, 'max'));
    const m = b.model(17);
    const plan = await build(m);
    const native = new Set(nativeLayers(plan.bytes).map((l) => l.name));
    for (const name of ['se_mul', 'sub', 'max']) expect(native.has(name), name).toBe(true);
    const xs = randomTensor(seededRandom(2), [1, 24, 20, 20], 1);
    const engine = await Engine.load(plan, { intraOpNumThreads: 2 });
    const out = await engine.createContext().run({ x: new Tensor('float32', xs.data as Float32Array, [1, 24, 20, 20]) });
    engine.dispose();
    const ref = executeGraph(m.graph, new Map([['x', xs]]), { opsets: m.opsets });
    for (const [k, v] of Object.entries(out)) {
      const a = (v as Tensor).data as Float32Array, w = (ref.get(k) as TensorData).data as Float32Array;
      // the Sub cancels: errors relative to each value with a floor at 1e-3 of the largest (sums in another order)
      expect(worstRelative(a, w), k).toBeLessThan(1e-4);
    }
  }, 60_000);

  it('Split between native layers (uneven sizes, negative axis, equal parts) runs into pooled buffers and matches the reference', async () => {
    const b = new GraphBuilder('splits');
    const r = seededRandom(4);
    const x = b.input('x', 'float32', [2, 16, 64]);
    const h = b.op('MatMul', [x, b.initializer('w0', randomTensor(r, [64, 96], 0.1))], {}, 'mm0');
    const parts = b.node('Split', [h, b.initializer('sizes', new TensorData('int64', [3], BigInt64Array.of(10n, 50n, 36n)))], { axis: -1 }, { outputs: 3, name: 'split' });
    const halves = b.node('Split', [h], { axis: 1 }, { outputs: 2, name: 'halves' });
    parts.forEach((p, i) => b.output(b.op('Relu', [b.op('MatMul', [p, b.initializer(`w${i + 1}`, randomTensor(r, [[10, 50, 36][i], 32], 0.1))], {}, `mm${i + 1}`)], {}, `relu${i}`)));
    halves.forEach((p, i) => b.output(b.op('MatMul', [p, b.initializer(`v${i}`, randomTensor(r, [96, 40], 0.1))], {}, `half${i}`)));
    const m = b.model(17);
    const plan = await build(m);
    expect(nativeLayers(plan.bytes).length).toBeGreaterThan(0);
    const engine = await Engine.load(plan, { intraOpNumThreads: 2 });
    const ctx = engine.createContext();
    for (let run = 0; run < 3; run++) {
      const xs = randomTensor(seededRandom(run), [2, 16, 64], 1);
      const out = await ctx.run({ x: new Tensor('float32', xs.data as Float32Array, [2, 16, 64]) });
      const ref = executeGraph(m.graph, new Map([['x', xs]]), { opsets: m.opsets });
      for (const [k, v] of Object.entries(out)) {
        const a = (v as Tensor).data as Float32Array, w = (ref.get(k) as TensorData).data as Float32Array;
        expect(a.length, k).toBe(w.length);
        // float32 sums in another order: errors relative to each value, with a floor at 1e-3 of the largest
        expect(worstRelative(a, w), `run ${run}, ${k}`).toBeLessThan(1e-4);
      }
    }
    engine.dispose();
  }, 60_000);

  it("a transformer's Split and Reshapes run inside one chain of native calls and match the reference", async () => {
    // BERT's attention input: one QKV product, Split along the last axis, Reshape to heads, Transpose
    const b = new GraphBuilder('qkv');
    const r = seededRandom(6);
    const x = b.input('x', 'float32', [1, 32, 64]);
    const qkv = b.op('MatMul', [x, b.initializer('wqkv', randomTensor(r, [64, 192], 0.1))], {}, 'qkv');
    const heads = b.initializer('heads', new TensorData('int64', [4], BigInt64Array.of(1n, 32n, 4n, 16n)));
    const merge = b.initializer('merge', new TensorData('int64', [3], BigInt64Array.of(1n, 32n, 64n)));
    const parts = b.node('Split', [qkv, b.initializer('sizes', new TensorData('int64', [3], BigInt64Array.of(64n, 64n, 64n)))], { axis: -1 }, { outputs: 3, name: 'split' });
    // heads-major back to [1, 32, 64] (a different order of the same values: the Reshapes cannot cancel)
    const back = parts.map((p, i) => b.op('Reshape', [b.op('Transpose', [b.op('Reshape', [p, heads], {}, `to_heads${i}`)], { perm: [0, 2, 1, 3] }, `t${i}`), merge], {}, `merge${i}`));
    const sum = b.op('Add', [b.op('Add', [back[0], back[1]], {}, 'add0'), back[2]], {}, 'add1');
    b.output(b.op('MatMul', [sum, b.initializer('wo', randomTensor(r, [64, 48], 0.1))], {}, 'out'));
    const m = b.model(17);
    const plan = await build(m);
    expect(nativeLayers(plan.bytes).length).toBeGreaterThan(3);
    const engine = await Engine.load(plan, { intraOpNumThreads: 2 });
    const ctx = engine.createContext();
    const calls = { chain: 0, single: 0 };
    const proto = NativeLibrary.prototype;
    const { runChain, callSync, callAsync } = proto;
    const spies = [
      vi.spyOn(proto, 'runChain').mockImplementation(function (this: NativeLibrary, ...a) { calls.chain++; return runChain.apply(this, a); }),
      vi.spyOn(proto, 'callSync').mockImplementation(function (this: NativeLibrary, ...a) { calls.single++; return callSync.apply(this, a); }),
      vi.spyOn(proto, 'callAsync').mockImplementation(function (this: NativeLibrary, ...a) { calls.single++; return callAsync.apply(this, a); }),
    ];
    try {
      for (let run = 0; run < 3; run++) {
        const xs = randomTensor(seededRandom(run), [1, 32, 64], 1);
        const out = await ctx.run({ x: new Tensor('float32', xs.data as Float32Array, [1, 32, 64]) });
        const ref = executeGraph(m.graph, new Map([['x', xs]]), { opsets: m.opsets });
        const [k, v] = Object.entries(out)[0];
        const a = (v as Tensor).data as Float32Array, w = (ref.get(k) as TensorData).data as Float32Array;
        expect(a.length).toBe(w.length);
        expect(worstRelative(a, w), `run ${run}`).toBeLessThan(1e-4);
      }
    } finally {
      spies.forEach((s) => s.mockRestore());
      engine.dispose();
    }
    // every layer in one foreign call per run: the Split is a copy in the library, the Reshapes are views
    expect(calls).toEqual({ chain: 3, single: 0 });
  }, 60_000);

  it("BERT's attention block (QKV Split, head Transposes, attention, merge Transpose) runs as one strided attention call", async () => {
    // the layout of bert.ts: one QKV product split three ways, heads by Reshape + Transpose (K to [B, H, D, S]),
    // scaled scores plus an additive mask, softmax, times V, heads merged back; S = 37 is off the 6-row blocks
    const [S, H, DH] = [37, 4, 16], hidden = H * DH;
    const b = new GraphBuilder('attn_block');
    const r = seededRandom(8);
    const x = b.input('x', 'float32', [1, S, hidden]);
    // an additive key mask the chain of calls holds (a constant; bert.ts computes it in a native layer)
    const scalar = (name: string, v: number) => b.initializer(name, new TensorData('float32', [], Float32Array.of(v)));
    const mask = b.initializer('mask', new TensorData('float32', [1, 1, 1, S], Float32Array.from({ length: S }, (_, i) => (i % 5 === 4 ? -1e4 : 0))));
    const qkv = b.op('MatMul', [x, b.initializer('wqkv', randomTensor(r, [hidden, 3 * hidden], 0.2))], {}, 'qkv');
    const heads = b.initializer('heads', new TensorData('int64', [4], BigInt64Array.of(1n, BigInt(S), BigInt(H), BigInt(DH))));
    const parts = b.node('Split', [qkv, b.initializer('sizes', new TensorData('int64', [3], BigInt64Array.of(...[1, 2, 3].map(() => BigInt(hidden)))))], { axis: -1 }, { outputs: 3, name: 'split' });
    const [q, kT, v] = parts.map((p, i) => b.op('Transpose', [b.op('Reshape', [p, heads], {}, `to_heads${i}`)], { perm: i === 1 ? [0, 2, 3, 1] : [0, 2, 1, 3] }, `t${i}`));
    let sc = b.op('Div', [b.op('MatMul', [q, kT], {}, 'scores'), scalar('scale', Math.sqrt(DH))], {}, 'div');
    sc = b.op('Add', [sc, mask], {}, 'add_mask');
    const ctxv = b.op('MatMul', [b.op('Softmax', [sc], { axis: -1 }, 'softmax'), v], {}, 'context');
    const merged = b.op('Reshape', [b.op('Transpose', [ctxv], { perm: [0, 2, 1, 3] }, 'merge_t'), b.initializer('merge', new TensorData('int64', [3], BigInt64Array.of(1n, BigInt(S), BigInt(hidden))))], {}, 'merge');
    b.output(b.op('MatMul', [merged, b.initializer('wo', randomTensor(r, [hidden, 24], 0.2))], {}, 'out'));
    const m = b.model(17);
    const plan = await build(m);
    expect(nativeLayers(plan.bytes).map((l) => l.opType)).toContain('Attention');
    const engine = await Engine.load(plan, { intraOpNumThreads: 2 });
    const ctx = engine.createContext();
    let records = 0;
    const proto = NativeLibrary.prototype;
    const { runChain } = proto;
    const spy = vi.spyOn(proto, 'runChain').mockImplementation(function (this: NativeLibrary, prog, n, sync) { records += n; return runChain.call(this, prog, n, sync); });
    try {
      for (let run = 0; run < 3; run++) {
        const xs = randomTensor(seededRandom(run), [1, S, hidden], 1);
        const out = await ctx.run({ x: new Tensor('float32', xs.data as Float32Array, xs.dims) });
        const ref = executeGraph(m.graph, new Map([['x', xs]]), { opsets: m.opsets });
        const [k, val] = Object.entries(out)[0];
        const a = (val as Tensor).data as Float32Array, w = (ref.get(k) as TensorData).data as Float32Array;
        expect(a.length).toBe(w.length);
        expect(worstRelative(a, w), `run ${run}`).toBeLessThan(1e-3);
      }
    } finally {
      spy.mockRestore();
      engine.dispose();
    }
    // per run: the QKV product, one attention call, the output product (no Split copies, no Transposes)
    expect(records).toBe(3 * 3);
  }, 60_000);

  it('a layer adds its product onto its residual in place only where the residual dies there', async () => {
    const b = new GraphBuilder('residuals');
    const r = seededRandom(9);
    const x = b.input('x', 'float32', [40, 64]);
    const mm = (h: string, name: string) => b.op('MatMul', [h, b.initializer(`w_${name}`, randomTensor(r, [64, 64], 0.2))], {}, name);
    // with a bias, so the sum is the layer's residual input (a full-size sum alone would be taken as its bias)
    const dense = (h: string, res: string, name: string) => b.op('Add', [b.op('Add', [mm(h, name), b.initializer(`b_${name}`, randomTensor(r, [64], 0.2))], {}, `${name}_bias`), res], {}, `${name}_res`);
    const h0 = mm(x, 'mm0');
    const h1 = dense(mm(h0, 'mmA'), h0, 'd1'); // h0 dies here: in place
    const h2 = dense(h1, h1, 'd2'); // its own input: not in place
    const h3 = dense(mm(h2, 'mmB'), h2, 'd3'); // h2 dies here: in place
    const h4 = dense(mm(h3, 'mmC'), h3, 'd4'); // h3 is read again below: not in place
    b.output(mm(b.op('Add', [h4, h3], {}, 'sum'), 'out'));
    const m = b.model(17);
    const plan = await build(m);
    const engine = await Engine.load(plan, { intraOpNumThreads: 2 });
    const ctx = engine.createContext();
    let inPlace = 0;
    const proto = NativeLibrary.prototype;
    const { runChain } = proto;
    // a record's a3 (residual) and a4 (output) at the same address: the layer accumulates onto its residual
    const spy = vi.spyOn(proto, 'runChain').mockImplementation(function (this: NativeLibrary, prog, n, sync) {
      for (let i = 0; i < n; i++) if (prog[i * 10 + 4] !== 0n && prog[i * 10 + 4] === prog[i * 10 + 5]) inPlace++;
      return runChain.call(this, prog, n, sync);
    });
    try {
      for (let run = 0; run < 3; run++) {
        const xs = randomTensor(seededRandom(20 + run), [40, 64], 1);
        const out = await ctx.run({ x: new Tensor('float32', xs.data as Float32Array, xs.dims) });
        const ref = executeGraph(m.graph, new Map([['x', xs]]), { opsets: m.opsets });
        for (const [k, v] of Object.entries(out)) {
          const a = (v as Tensor).data as Float32Array, w = (ref.get(k) as TensorData).data as Float32Array;
          expect(worstRelative(a, w), `run ${run}, ${k}`).toBeLessThan(1e-3);
        }
      }
    } finally {
      spy.mockRestore();
      engine.dispose();
    }
    expect(inPlace).toBe(2 * 3);
  }, 60_000);

  it('lets the event loop in during a run of many small layers', async () => {
    // layers far below the synchronous-call threshold, with a reference-only op between them (no chain)
    const b = new GraphBuilder('small_layers');
    const r = seededRandom(3);
    let h = b.input('x', 'float32', [64, 256]);
    const axis = b.initializer('axis', new TensorData('int64', [], BigInt64Array.of(1n)));
    for (let i = 0; i < 40; i++) h = b.op('CumSum', [b.op('MatMul', [h, b.initializer(`w${i}`, randomTensor(r, [256, 256], 0.005))], {}, `mm${i}`), axis], {}, `cs${i}`);
    b.output(h, { kind: 'tensor', dtype: 'float32', shape: [64, 256] });
    const m = b.model(17);
    const plan = await build(m);
    expect(nativeLayers(plan.bytes).length).toBe(40);
    const engine = await Engine.load(plan, { intraOpNumThreads: 1 });
    const x = new Tensor('float32', new Float32Array(64 * 256).fill(0.01), [64, 256]);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    await engine.createContext().run({ x });
    clearInterval(timer);
    engine.dispose();
    // 40 native calls of 4M multiply-adds and 40 reference CumSums: several milliseconds on any machine
    expect(ticks).toBeGreaterThan(1);
  }, 60_000);

  it('keeps the event loop running while native layers compute', async () => {
    const b = new GraphBuilder('deep_mlp');
    const r = seededRandom(2);
    let h = b.input('x', 'float32', [512, 1024]);
    for (let i = 0; i < 8; i++) h = b.op('MatMul', [h, b.initializer(`w${i}`, randomTensor(r, [1024, 1024], 0.03))], {}, `mm${i}`);
    b.output(h, { kind: 'tensor', dtype: 'float32', shape: [512, 1024] });
    const m = b.model(17);
    const plan = await build(m);
    expect(nativeLayers(plan.bytes).length).toBe(8);
    const engine = await Engine.load(plan, { intraOpNumThreads: 1 });
    const x = new Tensor('float32', new Float32Array(512 * 1024).fill(0.01), [512, 1024]);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    await engine.createContext().run({ x });
    clearInterval(timer);
    engine.dispose();
    // 8 GFLOP in 8 native calls: timers fire while they run on the worker thread (a blocking run would give 0)
    expect(ticks).toBeGreaterThan(2);
  }, 60_000);

  it('a plan whose kernels need another ISA refuses to load', async () => {
    const m = resnet50(RESNET_SMALL);
    const plan = await build(m, { shapes: { input: [1, 3, 32, 32] } });
    const { header, blobs } = parsePlan(plan.bytes);
    const { blobs: _, ...rest } = header;
    const other = serializePlan({ ...rest, device: { ...header.device, features: { isa: 'some-other-isa' } } }, blobs);
    await expect(Engine.load(other)).rejects.toThrow(/isa some-other-isa/);
  }, 60_000);
});

describe('without a C compiler', () => {
  afterEach(() => {
    delete process.env.KILN_CC;
    resetCompiler();
  });

  it('builds with reference kernels, warns once and still runs correctly', async () => {
    process.env.KILN_CC = 'none';
    resetCompiler();
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    const m = mobilenetV2(MOBILENET_SMALL);
    const { feeds, shapes } = feedsFor(m, () => 1);
    const plan = await build(m, { shapes });
    await build(mobilenetV2(MOBILENET_SMALL), { shapes });
    await new Promise((res) => setImmediate(res));
    process.off('warning', onWarning);
    const h = parsePlan(plan.bytes).header;
    expect(h.layers.every((l) => l.tactic === 'reference')).toBe(true);
    expect(warnings.filter((w) => w.includes('no C compiler')).length).toBeLessThanOrEqual(1);
    expect(await compareWithReference(m, feeds, plan.bytes)).toBeLessThan(1e-5);
  }, 60_000);
});

describe('C rendering', () => {
  it('renders expressions and activations with the vectorizable helpers', () => {
    expect(renderC(parseExpr('(mul (add $0 $1) 0.5)'), (i) => `x${i}[i]`)).toBe('((x0[i] + x1[i]) * (0.500000000f))');
    expect(renderC(parseExpr('(erf $0)'), () => 'v')).toBe('kerf(v)');
    expect(renderC(parseExpr('(relu (add $0 1))'), () => 'v')).toContain('float _t = (v + (1.00000000f))');
    expect(renderActivation('Clip', [0, 6], 'v')).toBe('kclip(v, (0.00000000f), (6.00000000f))');
    expect(renderActivation('Unknown', [], 'v')).toBeUndefined();
  });
});

// The build phase: optimizer equivalence (conformance cases and zoo models), fusion counts, plans, profiles,
// precision, timing cache, memory plan and IR dumps.
import { describe, it, expect, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { build, type BuildOptions } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor, toTensorData, fromValue, toValue, type OnnxValue } from '../../src/runtime/tensor.js';
import { parsePlan, serializePlan } from '../../src/build/plan.js';
import { parseOnnx, loadOnnx } from '../../src/onnx/reader.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { executeGraph } from '../../src/ops/execute.js';
import { listCases, loadCase, checkOutputs } from '../conformance/cases.js';
import { skipReason } from '../conformance/skip.js';
import { BACKENDS } from '../../src/backends/index.js';
import { cpuBackend } from '../../src/backends/cpu/index.js';
import type { Backend } from '../../src/backends/backend.js';
import type { Model } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import { makeInputs } from '../../src/tools/inputs.js';
import { verifyGraph } from '../../src/passes/verify.js';
import { optimize } from '../../src/passes/pipeline.js';
import { tinyCnn, resnet50, RESNET_SMALL, mobilenetV2, MOBILENET_SMALL, bertBase, BERT_SMALL, gpt2, GPT2_SMALL } from '../../bench/models/zoo.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-build-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function runPlan(planBytes: Uint8Array, feeds: Record<string, OnnxValue>) {
  const engine = await Engine.load(planBytes);
  const out = await engine.createContext().run(feeds);
  engine.dispose();
  return out;
}

describe('optimizer and plans on the conformance cases', () => {
  const cases = listCases().filter((c) => !skipReason(c));
  it.skipIf(cases.length === 0)('every case gives the same outputs after optimization and a plan save/load round trip', async () => {
    const failures: string[] = [];
    for (const c of cases) {
      try {
        const { model, feeds, shapes, expected } = await loadCase(c);
        const plan = await build(model, { shapes });
        const out = await runPlan(plan.bytes, Object.fromEntries([...feeds].map(([k, v]) => [k, fromValue(v)])));
        for (const m of checkOutputs(expected, (n) => toValue(out[n] ?? null))) failures.push(`${c.name} ${m}`);
      } catch (e) {
        failures.push(`${c.name}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    expect(failures).toEqual([]);
  });
});

const zoo: [string, () => Model, Record<string, number[]>][] = [
  ['tiny CNN', () => tinyCnn(), { input: [2, 3, 32, 32] }],
  ['ResNet (small)', () => resnet50(RESNET_SMALL), {}],
  ['MobileNetV2 (small)', () => mobilenetV2(MOBILENET_SMALL), {}],
  ['BERT (small)', () => bertBase(BERT_SMALL), {}],
  ['BERT (small, decomposed LayerNorm, constant shapes)', () => bertBase({ ...BERT_SMALL, layerNorm: 'decomposed', shapeOps: 'constant' }), {}],
  ['GPT-2 (small)', () => gpt2(GPT2_SMALL), {}],
];

describe('optimizer on the zoo models', () => {
  for (const [name, make, shapes] of zoo) {
    it(`${name}: same outputs before and after optimization, and through a saved plan`, async () => {
      const model = make();
      const metas = model.graph.inputs.filter((i) => !model.graph.initializers.has(i.name)).map((i) => ({
        name: i.name, isTensor: true, type: (i.type as { dtype: string }).dtype,
        shape: ((i.type as { shape: (number | string)[] }).shape ?? []).map((d) => (typeof d === 'number' ? d : i.name.includes('input_ids') || i.name.includes('mask') ? 5 : 2)),
      }));
      const feeds = makeInputs(metas, { random: true, seed: 3, range: [0, 1] });
      if (feeds.attention_mask) feeds.attention_mask = new Tensor('int64', BigInt64Array.from({ length: feeds.attention_mask.size }, (_, i) => (i % 5 === 4 ? 0n : 1n)), feeds.attention_mask.dims);
      const ref = executeGraph(model.graph, new Map(Object.entries(feeds).map(([k, t]) => [k, toTensorData(t)])), { opsets: model.opsets });
      const plan = await build(model, { shapes });
      const file = path.join(tmp, `${name.replace(/\W+/g, '_')}.plan`);
      await plan.save(file);
      const engine = await Engine.load(file);
      const out = await engine.createContext().run(feeds);
      for (const [k, v] of ref) {
        const a = toTensorData(out[k] as Tensor), e = v as TensorData;
        const scale = Math.max(1e-6, ...Array.from(e.toFloat64(), Math.abs));
        const err = Math.max(...Array.from(a.toFloat64(), (x, i) => Math.abs(x - e.get(i))));
        expect(a.dims).toEqual(e.dims);
        expect(err / scale, `${k}: max abs error ${err} at output scale ${scale}`).toBeLessThan(1e-5);
      }
      engine.dispose();
    });
  }

  const countOps = (plan: Awaited<ReturnType<typeof build>>) => {
    const h = new Map<string, number>();
    for (const l of plan.header.layers) h.set(l.opType, (h.get(l.opType) ?? 0) + 1);
    return h;
  };

  it('ResNet: no BatchNormalization left, one layer per convolution with bias, residual and activation fused', async () => {
    const model = resnet50(RESNET_SMALL);
    const convs = model.graph.nodes.filter((n) => n.opType === 'Conv').length;
    const plan = await build(model);
    const ops = countOps(plan);
    expect(ops.get('BatchNormalization')).toBeUndefined();
    expect(ops.get('Relu')).toBeUndefined();
    expect(ops.get('Add')).toBeUndefined();
    expect(ops.get('FusedConv')).toBe(convs);
    expect(plan.header.layers.filter((l) => l.fused.includes('residual Add')).length).toBe(model.graph.nodes.filter((n) => n.opType === 'Add').length);
  });

  it('BERT: one Attention layer per encoder layer and one LayerNormalization per place, in both export styles', async () => {
    for (const style of ['fused', 'decomposed'] as const) {
      const model = bertBase({ ...BERT_SMALL, layerNorm: style, shapeOps: style === 'fused' ? 'dynamic' : 'constant' });
      const layers = BERT_SMALL.layers!;
      const ops = countOps(await build(model));
      expect(ops.get('Attention')).toBe(layers);
      expect(ops.get('LayerNormalization')).toBe(2 * layers + 1);
      expect(ops.get('Softmax')).toBeUndefined();
      expect(ops.get('Erf')).toBeUndefined();
      expect(ops.get('ReduceMean')).toBeUndefined();
    }
  });

  it('verifies the IR after every stage', async () => {
    const model = bertBase({ ...BERT_SMALL, layerNorm: 'decomposed' });
    await expect(optimize(parseOnnx(serializeOnnx(model)), { verify: true })).resolves.toBeDefined();
  });
});

describe('plans', () => {
  it('reject corrupted files, other format versions and other devices with the rebuild command', async () => {
    const plan = await build(tinyCnn());
    const bad = new Uint8Array(plan.bytes);
    bad[bad.length >> 1] ^= 0xff;
    await expect(Engine.load(bad)).rejects.toThrow(/corrupted \(checksum mismatch\)[\s\S]*kiln build/);
    const v2 = new Uint8Array(plan.bytes);
    new DataView(v2.buffer).setUint32(8, 99, true);
    await expect(Engine.load(v2)).rejects.toThrow(/format version 99/);
    const { header, blobs } = parsePlan(plan.bytes);
    const foreign = serializePlan({ ...header, device: { ...header.device, arch: 'arm64' } }, blobs);
    await expect(Engine.load(foreign)).rejects.toThrow(/different device \(architecture arm64 vs x64\)[\s\S]*Rebuild on this machine: kiln build/);
    await expect(Engine.load(new TextEncoder().encode('not a plan at all, definitely not'))).rejects.toThrow(/not a Kiln plan/);
  });

  it('enforce the shape profile and print it', async () => {
    const plan = await build(tinyCnn(), { profiles: [{ input: { min: [1, 3, 32, 32], opt: [4, 3, 32, 32], max: [8, 3, 32, 32] } }] });
    const engine = await Engine.load(plan);
    const ctx = engine.createContext();
    const x = (n: number) => new Tensor('float32', new Float32Array(n * 3 * 32 * 32), [n, 3, 32, 32]);
    expect(((await ctx.run({ input: x(8) }))[engine.outputNames[0]] as Tensor).dims).toEqual([8, 10]);
    await expect(ctx.run({ input: x(9) })).rejects.toThrow(/outside the plan's shape profile: min \[1, 3, 32, 32\], opt \[4, 3, 32, 32\], max \[8, 3, 32, 32\]/);
    await expect(build(tinyCnn(), { profiles: [{ input: { min: [4, 3, 32, 32], opt: [2, 3, 32, 32], max: [8, 3, 32, 32] } }] })).rejects.toThrow(/min <= opt <= max/);
    await expect(build(tinyCnn(), { shapes: { input: [1, 4, 32, 32] } })).rejects.toThrow(/fixes it to 3/);
    await expect(build(tinyCnn(), { shapes: { nope: [1] } })).rejects.toThrow(/not an input/);
  });

  it('report memory: arena close to the lower bound, weights counted', async () => {
    const plan = await build(resnet50(RESNET_SMALL), { shapes: { input: [2, 3, 32, 32] } });
    const m = plan.header.memory;
    expect(m.lowerBound).toBeGreaterThan(0);
    expect(m.arenaBytes).toBeGreaterThanOrEqual(m.lowerBound);
    expect(m.arenaBytes).toBeLessThanOrEqual(m.lowerBound * 1.1);
    expect(m.weightBytes).toBeGreaterThan(0);
    expect(m.dynamic).toBe(0);
  });
});

describe('memory planner', () => {
  it('never overlaps tensors that are alive at the same time, and reaches the lower bound on ResNet', async () => {
    const { planMemory, tensorBytes } = await import('../../src/build/memory.js');
    const { inferShapes } = await import('../../src/passes/infer.js');
    const { topoSort } = await import('../../src/ops/execute.js');
    for (const model of [resnet50(RESNET_SMALL), bertBase(BERT_SMALL), mobilenetV2(MOBILENET_SMALL)]) {
      const m = parseOnnx(serializeOnnx(model));
      await optimize(m);
      const shapes = new Map(m.graph.inputs.map((i) => [i.name, ((i.type as { shape: unknown[] }).shape ?? []).map((d) => (typeof d === 'number' ? d : 3))]));
      inferShapes(m.graph, m.opsets, { inputShapes: shapes as never });
      const order = topoSort(m.graph, () => true);
      const plan = planMemory(m.graph, order, (name) => {
        const t = m.graph.valueInfo.get(name);
        return t?.kind === 'tensor' && t.shape?.every((d) => typeof d === 'number') ? tensorBytes(t.dtype, t.shape as number[]) : undefined;
      });
      const roots = plan.slots.filter((x) => !x.alias);
      for (const a of roots) for (const b of roots) {
        if (a === b || a.end < b.start || b.end < a.start) continue;
        expect(a.offset + a.bytes <= b.offset || b.offset + b.bytes <= a.offset, `${a.name} and ${b.name} overlap`).toBe(true);
      }
      expect(plan.arenaBytes).toBeGreaterThanOrEqual(plan.lowerBound);
      expect(plan.arenaBytes).toBeLessThanOrEqual(plan.lowerBound * 1.1);
    }
  });
});

describe('precision', () => {
  it('fp16 builds keep sensitive layers in fp32, honour pins, and stay within fp16 tolerance', async () => {
    const model = tinyCnn();
    const x = new Tensor('float32', Float32Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => Math.sin(i)), [2, 3, 32, 32]);
    const ref = (await runPlan((await build(model)).bytes, { input: x }))[model.graph.outputs[0].name] as Tensor<'float32'>;
    for (const precision of ['fp16', 'bf16'] as const) {
      const plan = await build(model, { precision, layerPrecisions: { conv2: 'fp32' } });
      const by = Object.fromEntries(plan.header.layers.map((l) => [l.name, l]));
      // the CPU takes bf16 as a math mode (tensors stay fp32): a layer is bf16 where its chosen kernel multiplies in
      // bf16, which it may only offer on AVX-512 BF16 hosts and may lose to an fp32 kernel in the timing
      const mathMode = precision === 'bf16' && !!cpuBackend.fpmath?.includes('bf16');
      if (mathMode) {
        expect(plan.header.precision).toBe('bf16');
        for (const l of plan.header.layers) expect(l.precision).toBe(l.tactic.includes('-bf16-') ? 'bf16' : 'fp32');
      } else expect(by.conv1.precision).toBe(precision);
      expect(by.conv2.precision).toBe('fp32');
      expect(by.conv2.tactic).not.toContain('bf16');
      expect(by.softmax.precision).toBe('fp32');
      const out = (await runPlan(plan.bytes, { input: x }))[model.graph.outputs[0].name] as Tensor<'float32'>;
      expect(out.type).toBe('float32');
      const err = Math.max(...Array.from(out.data, (v, i) => Math.abs(v - ref.data[i])));
      expect(err).toBeLessThan(precision === 'fp16' ? 2e-3 : 2e-2);
      // really ran in reduced precision (in the math mode: where a layer's kernel does)
      if (!mathMode || plan.header.layers.some((l) => l.precision === 'bf16')) expect(err).toBeGreaterThan(0);
    }
  });
});

describe('tactics and the timing cache', () => {
  it('times every candidate once, keeps the fastest, and times nothing on a warm cache', async () => {
    const ref = cpuBackend.tactics({} as never, {} as never)[0];
    // the candidates report their own times (Tactic.time), so which one is faster does not depend on the machine's load
    let timings = 0;
    const testBackend: Backend = {
      ...cpuBackend,
      name: 'test-tactics',
      signature: () => ({ ...cpuBackend.signature(), backend: 'test-tactics' }),
      tactics: (n) => (n.opType === 'FusedConv' ? [
        { name: 'slow', run: (node, ins, ops) => ref.run(node, ins, ops), time: () => (timings++, 3) },
        { name: 'fast', run: (node, ins, ops) => ref.run(node, ins, ops), time: () => (timings++, 1) },
      ] : [ref]),
    };
    BACKENDS.push(testBackend);
    try {
      const cacheFile = path.join(tmp, 'timing.cache');
      const opts: BuildOptions = { device: 'test-tactics', timingCache: cacheFile, shapes: { input: [1, 3, 32, 32] } };
      const first = await build(tinyCnn(), opts);
      const convs = first.header.layers.filter((l) => l.opType === 'FusedConv');
      expect(convs.every((l) => l.tactic === 'fast')).toBe(true);
      expect(first.header.timing).toEqual({ timed: convs.length, cached: 0 });
      expect(timings).toBe(2 * convs.length);
      const second = await build(tinyCnn(), opts);
      expect(second.header.timing).toEqual({ timed: 0, cached: convs.length });
      expect(timings).toBe(2 * convs.length);
      expect(second.header.layers.filter((l) => l.opType === 'FusedConv').every((l) => l.tactic === 'fast')).toBe(true);
    } finally {
      BACKENDS.splice(BACKENDS.indexOf(testBackend), 1);
    }
  });
});

describe('a math mode (Backend.fpmath)', () => {
  it('offers a layer the reduced-type tactics only where its precision is reduced: a pin to fp32 keeps them out', async () => {
    const ref = cpuBackend.tactics({} as never, {} as never)[0];
    const seen: (string | undefined)[] = [];
    // the reduced-type tactic reports itself faster, so a layer that is offered it picks it
    const testBackend: Backend = {
      ...cpuBackend,
      name: 'test-fpmath',
      signature: () => ({ ...cpuBackend.signature(), backend: 'test-fpmath' }),
      fpmath: ['bf16'],
      tactics: (n, _m, _t, precision) => (seen.push(precision), n.opType === 'FusedConv' ? [
        { name: 'fp32', run: (node, ins, ops) => ref.run(node, ins, ops), time: () => 2 },
        { name: 'bf16', precision: 'bf16', run: (node, ins, ops) => ref.run(node, ins, ops), time: () => 1 },
      ] : [ref]),
    };
    BACKENDS.push(testBackend);
    try {
      const plan = await build(tinyCnn(), { device: 'test-fpmath', precision: 'bf16', layerPrecisions: { conv2: 'fp32' }, shapes: { input: [1, 3, 32, 32] } });
      const by = Object.fromEntries(plan.header.layers.map((l) => [l.name, l]));
      expect(seen.every((p) => p === 'bf16')).toBe(true); // the backend sees the build's mode for every layer
      expect([by.conv1.tactic, by.conv1.precision]).toEqual(['bf16', 'bf16']);
      expect([by.conv2.tactic, by.conv2.precision]).toEqual(['fp32', 'fp32']);
    } finally {
      BACKENDS.splice(BACKENDS.indexOf(testBackend), 1);
    }
  });
});

describe('--dump-ir', () => {
  it('writes the graph after a stage as ONNX that loads again and as text', async () => {
    const dir = path.join(tmp, 'dump');
    await build(tinyCnn(), { dumpIr: 'fold batch norm', dumpDir: dir });
    const onnx = await loadOnnx(path.join(dir, 'ir-fold-batch-norm.onnx'));
    expect(onnx.graph.nodes.some((n) => n.opType === 'BatchNormalization')).toBe(false);
    verifyGraph(onnx.graph, onnx.opsets);
    expect(fs.readFileSync(path.join(dir, 'ir-fold-batch-norm.txt'), 'utf8')).toMatch(/= Conv\(input, /);
    await expect(build(tinyCnn(), { dumpIr: 'no such stage', dumpDir: dir })).rejects.toThrow(/unknown stage/);
  });
});

describe('layout pass (NHWC convolutions)', () => {
  it('converts 2-D convolutions to NHWC, cancels the transposes between them, and keeps the outputs', async () => {
    for (const model of [resnet50(RESNET_SMALL), tinyCnn()]) {
      const feeds = { input: new Tensor('float32', Float32Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => Math.sin(i * 0.37)), [2, 3, 32, 32]) };
      const ref = await runPlan((await build(model, { shapes: { input: [2, 3, 32, 32] } })).bytes, feeds);
      const plan = await build(model, { shapes: { input: [2, 3, 32, 32] }, layout: 'NHWC' });
      const convs = plan.header.layers.filter((l) => l.opType === 'FusedConv').length;
      const transposes = plan.header.layers.filter((l) => l.opType === 'Transpose').length;
      expect(convs).toBeGreaterThan(0);
      // one transpose at the input edge, one at the output edge, two around each NCHW-only op between convs
      const nchwOnly = plan.header.layers.filter((l) => ['MaxPool', 'GlobalAveragePool'].includes(l.opType)).length;
      expect(transposes).toBeLessThanOrEqual(2 * nchwOnly + 1);
      const out = await runPlan(plan.bytes, feeds);
      const name = model.graph.outputs[0].name;
      const a = (out[name] as Tensor<'float32'>).data, e = (ref[name] as Tensor<'float32'>).data;
      expect(Math.max(...Array.from(a, (x, i) => Math.abs(x - e[i])))).toBeLessThan(1e-4);
    }
  });
});

describe('--strict', () => {
  it('fails a build whose layers would fall back to the CPU, naming them', async () => {
    const testBackend: Backend = {
      ...cpuBackend, name: 'test-strict', signature: () => ({ ...cpuBackend.signature(), backend: 'test-strict' }),
      tactics: (n, m) => (n.opType === 'Softmax' ? [{ ...cpuBackend.tactics(n, m)[0], name: 'cpu-fallback' }] : cpuBackend.tactics(n, m)),
    };
    BACKENDS.push(testBackend);
    try {
      await expect(build(tinyCnn(), { device: 'test-strict', strict: true })).rejects.toThrow(/--strict: 1 layer\(s\) have no test-strict kernel[\s\S]*softmax \(Softmax\)/);
      await expect(build(tinyCnn(), { device: 'test-strict' })).resolves.toBeDefined();
    } finally {
      BACKENDS.splice(BACKENDS.indexOf(testBackend), 1);
    }
  });
});

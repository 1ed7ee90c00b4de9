// Native int8 kernels for quantized layers: the built engine (VNNI where the CPU has it, and the portable C path)
// matches the unfolded Q/DQ model's reference outputs and onnxruntime on the same file within one LSB; the int8
// engine agrees with the fp32 engine (cosine >= 0.99, classifier top-1 >= 99% on held-out seeded inputs).
import { describe, it, expect, afterEach } from 'vitest';
import * as ort from 'onnxruntime-node';
import type { Model } from '../../../src/ir/graph.js';
import { TensorData } from '../../../src/ir/tensor.js';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { serializeOnnx } from '../../../src/onnx/writer.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { randomCalibrationData, type Feeds } from '../../../src/quant/data.js';
import { tinyCnn, resnet50, RESNET_SMALL } from '../../../bench/models/zoo.js';
import { quantized, ortStyleModel } from '../../helpers/quant.js';

const hasCompiler = !!findCompiler();

/** Build for the feeds' shapes (or `batch` samples at a time) and run every sample; outputs concatenated. */
async function engineOutputs(m: Model, feeds: Feeds, shapes: Record<string, number[]>, batch?: number) {
  const n = [...feeds.values()][0].dims[0], step = batch ?? n;
  const plan = await build(m, { device: 'cpu', shapes: Object.fromEntries(Object.entries(shapes).map(([k, d]) => [k, [step, ...d.slice(1)]])) });
  const engine = await Engine.load(plan.bytes, { intraOpNumThreads: 2 });
  const ctx = engine.createContext();
  const out: Record<string, number[]> = {};
  for (let s = 0; s < n; s += step) {
    const f = Object.fromEntries([...feeds].map(([k, t]) => {
      const per = t.size / n;
      return [k, new Tensor('float32', (t.data as Float32Array).slice(s * per, (s + step) * per), [step, ...t.dims.slice(1)])];
    }));
    for (const [k, v] of Object.entries(await ctx.run(f))) (out[k] ??= []).push(...((v as Tensor).data as Float32Array));
  }
  engine.dispose();
  return { plan, out: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Float32Array.from(v)])) };
}

/** Max |a - b| in units of amax(reference)/127. */
function lsbs(ref: ArrayLike<number>, got: ArrayLike<number>): number {
  let amax = 0, d = 0;
  for (let i = 0; i < ref.length; i++) {
    amax = Math.max(amax, Math.abs(ref[i]));
    d = Math.max(d, Math.abs(ref[i] - got[i]));
  }
  return d / (amax / 127);
}

const shapesOf = (feeds: Feeds) => Object.fromEntries([...feeds].map(([k, t]) => [k, [...t.dims]]));

describe.skipIf(!hasCompiler)('native int8 layers', () => {
  afterEach(() => { delete process.env.KILN_INT8_PORTABLE; });

  const cases: [string, () => Model][] = [
    ['tiny-cnn', () => quantized(tinyCnn())],
    ['resnet-small (64x64)', () => quantized(resnet50({ ...RESNET_SMALL, image: 64 }), 8)],
    ['ORT-style (uint8, zero points, int32 bias)', ortStyleModel],
  ];
  for (const [name, make] of cases) {
    for (const portable of [false, true]) {
      it(`${name}${portable ? ' (portable C path)' : ''}: native int8 kernels match the Q/DQ reference within one LSB`, async () => {
        if (portable) process.env.KILN_INT8_PORTABLE = '1';
        const q = make();
        const feeds = randomCalibrationData(q.graph, name.startsWith('ORT') ? 1 : 2, { seed: 21 });
        const { plan, out } = await engineOutputs(q, feeds, shapesOf(feeds));
        const tactics = plan.header.layers.map((l) => l.tactic);
        expect(tactics.filter((t) => t.includes('-int8-')).length).toBeGreaterThanOrEqual(2);
        const ref = executeGraph(q.graph, feeds as Map<string, TensorData>, { opsets: q.opsets });
        for (const o of q.graph.outputs) expect(lsbs((ref.get(o.name) as TensorData).toFloat64(), out[o.name])).toBeLessThanOrEqual(1);
      });
    }
  }

  it('a Kiln-quantized file in onnxruntime-node matches the int8 engine within one LSB', async () => {
    const q = quantized(resnet50({ ...RESNET_SMALL, image: 64 }), 8);
    const feeds = randomCalibrationData(q.graph, 2, { seed: 22 });
    const { out } = await engineOutputs(q, feeds, shapesOf(feeds));
    const s = await ort.InferenceSession.create(serializeOnnx(q));
    const x = feeds.get('input')!;
    const o = await s.run({ input: new ort.Tensor('float32', x.data as Float32Array, x.dims as number[]) });
    expect(lsbs(o.logits.data as Float32Array, out.logits)).toBeLessThanOrEqual(1);
  });

  it('tiny-cnn int8 engine vs fp32 engine: cosine >= 0.99 and top-1 agreement >= 99% on 300 held-out inputs', async () => {
    const m = tinyCnn();
    const q = quantized(m, 32);
    const feeds = randomCalibrationData(m.graph, 300, { seed: 23 });
    const a = await engineOutputs(m, feeds, shapesOf(feeds), 50), b = await engineOutputs(q, feeds, shapesOf(feeds), 50);
    const x = a.out.probabilities, y = b.out.probabilities;
    let dot = 0, nx = 0, ny = 0, agree = 0;
    for (let i = 0; i < x.length; i++) { dot += x[i] * y[i]; nx += x[i] * x[i]; ny += y[i] * y[i]; }
    const argmax = (v: Float32Array, r: number) => { let best = 0; for (let c = 1; c < 10; c++) if (v[r * 10 + c] > v[r * 10 + best]) best = c; return best; };
    for (let r = 0; r < 300; r++) if (argmax(x, r) === argmax(y, r)) agree++;
    expect(dot / Math.sqrt(nx * ny)).toBeGreaterThanOrEqual(0.99);
    expect(agree / 300).toBeGreaterThanOrEqual(0.99);
    expect(b.plan.header.layers.some((l) => l.tactic.includes('-int8-conv'))).toBe(true);
  });
});

// GPU tests: run where a CUDA device is found (they do on the lent H100 through bench/gpu/check.ts), and skip with
// the backend's own reason elsewhere (CI has no GPU).
import { describe, it, expect } from 'vitest';
import { cudaBackend } from '../../../src/backends/cuda/index.js';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { InferenceSession } from '../../../src/runtime/session.js';
import { Tensor, toTensorData } from '../../../src/runtime/tensor.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { serializeOnnx } from '../../../src/onnx/writer.js';
import { tinyCnn, bertBase, BERT_SMALL } from '../../../bench/models/zoo.js';

const avail = cudaBackend.availability();

describe('cuda backend without a GPU', () => {
  it.skipIf(avail.ok)('reports why it is unavailable, listing where it looked, and the session says so', async () => {
    expect(avail.reason).toMatch(/CUDA driver|libcuda|NVRTC|cuBLASLt/);
    await expect(InferenceSession.create(serializeOnnx(tinyCnn()), { executionProviders: ['cuda'] })).rejects.toThrow(/cuda: /);
    const s = await InferenceSession.create(serializeOnnx(tinyCnn()), { executionProviders: ['cuda', 'cpu'] });
    expect(s.executionProvider).toBe('cpu');
  });
});

describe.skipIf(!avail.ok)(`cuda backend on the GPU${avail.ok ? '' : ` (skipped: ${avail.reason})`}`, () => {
  it('matches the reference kernels on the tiny CNN and BERT (fp32, fp16), eager and through CUDA graphs', async () => {
    for (const [model, feeds] of [
      [tinyCnn(), { input: new Tensor('float32', Float32Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => Math.sin(i)), [2, 3, 32, 32]) }],
      [bertBase(BERT_SMALL), { input_ids: new Tensor('int64', BigInt64Array.from({ length: 32 }, (_, i) => BigInt(i % 50)), [2, 16]), attention_mask: new Tensor('int64', BigInt64Array.from({ length: 32 }, () => 1n), [2, 16]) }],
    ] as const) {
      const ref = executeGraph(model.graph, new Map(Object.entries(feeds).map(([k, t]) => [k, toTensorData(t as Tensor)])), { opsets: model.opsets });
      for (const precision of ['fp32', 'fp16'] as const) {
        const engine = await Engine.load(await build(model, { device: 'cuda', precision }));
        const ctx = engine.createContext();
        for (let i = 0; i < 3; i++) {
          const out = await ctx.run(feeds as Record<string, Tensor>);
          for (const [k, v] of ref) {
            const a = toTensorData(out[k] as Tensor).toFloat64(), e = (v as ReturnType<typeof toTensorData>).toFloat64();
            let num = 0, den = 0;
            for (let j = 0; j < e.length; j++) { num += (a[j] - e[j]) ** 2; den += e[j] ** 2; }
            expect(Math.sqrt(num / den)).toBeLessThan(precision === 'fp16' ? 2e-2 : 1e-3);
          }
        }
        engine.dispose();
      }
    }
  });
});

describe.skipIf(!avail.ok)(`cuda backend device selection${avail.ok ? '' : ` (skipped: ${avail.reason})`}`, () => {
  it('runs one plan on every visible GPU (deviceId) with the same outputs, and names a missing GPU', async () => {
    const { deviceCount } = await import('../../../src/backends/cuda/device.js');
    const n = deviceCount();
    const model = tinyCnn();
    const feeds = { input: new Tensor('float32', Float32Array.from({ length: 3 * 32 * 32 }, (_, i) => Math.cos(i)), [1, 3, 32, 32]) };
    const plan = await build(model, { device: 'cuda:0' });
    let first: Float32Array | undefined;
    for (let d = 0; d < n; d++) {
      const engine = await Engine.load(plan, { deviceId: d });
      const out = toTensorData((await engine.createContext().run(feeds)).output as Tensor).toFloat64();
      first ??= Float32Array.from(out);
      expect(Array.from(out)).toEqual(Array.from(first));
      engine.dispose();
    }
    await expect(Engine.load(plan, { deviceId: n })).rejects.toThrow(`CUDA device ${n} does not exist (${n} found)`);
    const s = await InferenceSession.create(serializeOnnx(model), { executionProviders: [`cuda:${n - 1}`] });
    expect(s.executionProvider).toBe('cuda');
  });
});

describe.skipIf(!avail.ok)(`cuda backend with GPU tensors${avail.ok ? '' : ` (skipped: ${avail.reason})`}`, () => {
  it('reads GpuTensor inputs in place and leaves outputs on the device, eager and replayed, same values as host I/O', async () => {
    const { GpuTensor } = await import('../../../src/runtime/gpu-tensor.js');
    const engine = await Engine.load(await build(tinyCnn(), { device: 'cuda', shapes: { input: [2, 3, 32, 32] } }));
    const host = new Tensor('float32', Float32Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => Math.sin(i / 7)), [2, 3, 32, 32]);
    const expected = Array.from(((await engine.createContext().run({ input: host })).probabilities as Tensor).data as Float32Array);
    const ctx = engine.createContext();
    const g = await GpuTensor.fromTensor(host);
    for (let i = 0; i < 4; i++) { // eager, capture, replays
      const onHost = await ctx.run({ input: g });
      expect(Array.from((onHost.probabilities as Tensor).data as Float32Array)).toEqual(expected);
      const onDev = await ctx.runToDevice({ input: g });
      expect(onDev.probabilities).toBeInstanceOf(GpuTensor);
      expect(Array.from((await onDev.probabilities.toTensor()).data as Float32Array)).toEqual(expected);
      await onDev.probabilities.dispose();
    }
    await g.dispose();
    await expect(ctx.run({ input: g })).rejects.toThrow(/disposed GpuTensor/);
    ctx.dispose();
    engine.dispose();
  });
});

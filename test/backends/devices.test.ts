// Device names as users write them (`cuda:1`), and what the CPU-only path does with them.
import { describe, it, expect } from 'vitest';
import { parseDevice } from '../../src/backends/index.js';
import { InferenceSession } from '../../src/runtime/session.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { tinyCnn } from '../../bench/models/zoo.js';

describe('device names', () => {
  it('parses a backend name with an optional GPU index', () => {
    expect(parseDevice('cpu')).toEqual({ name: 'cpu', deviceId: 0 });
    expect(parseDevice('cuda:1')).toEqual({ name: 'cuda', deviceId: 1 });
    expect(parseDevice(' CUDA:12 ')).toEqual({ name: 'cuda', deviceId: 12 });
    expect(() => parseDevice('cuda:x')).toThrow(/device 'cuda:x' is not understood/);
    expect(() => parseDevice('gpu-1:')).toThrow(/cuda:1/);
  });

  it('accepts provider entries with an index in InferenceSession.create', async () => {
    const s = await InferenceSession.create(serializeOnnx(tinyCnn()), { executionProviders: ['cpu:0'] });
    expect(s.executionProvider).toBe('cpu');
    await expect(InferenceSession.create(serializeOnnx(tinyCnn()), { executionProviders: ['tpu:0'] })).rejects.toThrow(/execution provider 'tpu' is unknown/);
  });
});

describe('GPU tensors on a CPU engine', () => {
  it('refuses GpuTensor feeds and device outputs with what to do instead', async () => {
    const { Engine } = await import('../../src/runtime/engine.js');
    const { GpuTensor } = await import('../../src/runtime/gpu-tensor.js');
    const { build } = await import('../../src/build/builder.js');
    const engine = await Engine.load(await build(tinyCnn(), { device: 'cpu', shapes: { input: [1, 3, 32, 32] } }));
    const ctx = engine.createContext();
    // a reference to device memory that was never allocated: the CPU engine must refuse it before touching it
    const fake = GpuTensor.adopt({ kind: 'device', dtype: 'float32', dims: [1, 3, 32, 32], deviceId: 0, ptr: 0, bytes: 12288 });
    await expect(ctx.run({ input: fake })).rejects.toThrow(/input 'input' is a GpuTensor, but this plan runs on 'cpu'/);
    await expect(ctx.runToDevice({})).rejects.toThrow(/runToDevice needs a GPU engine/);
    engine.dispose();
  });
});

describe('bench over several devices', () => {
  it('parses device lists and refuses repeats and junk', async () => {
    const { parseDeviceList } = await import('../../src/tools/bench.js');
    expect(parseDeviceList('0,1')).toEqual([0, 1]);
    expect(parseDeviceList(' 3 ')).toEqual([3]);
    expect(() => parseDeviceList('0,0')).toThrow(/names a device twice/);
    expect(() => parseDeviceList('a')).toThrow(/expected GPU indices/);
  });

  it('benchmarks one engine per listed device and sums their throughput', async () => {
    const { benchDevices, benchInputs, engineInputs } = await import('../../src/tools/bench.js');
    const { build } = await import('../../src/build/builder.js');
    const { Engine } = await import('../../src/runtime/engine.js');
    const plan = await build(tinyCnn(), { device: 'cpu', shapes: { input: [1, 3, 32, 32] } });
    const probe = await Engine.load(plan);
    const feeds = benchInputs(engineInputs(probe));
    probe.dispose();
    // the CPU backend has one device: the per-device bookkeeping is what is checked here (GPUs: bench/gpu)
    const r = await benchDevices(plan, [0], feeds, { warmUpMs: 0, durationS: 0, iterations: 3 });
    expect(r.perDevice.map((p) => p.deviceId)).toEqual([0]);
    expect(r.perDevice[0].summary.queries).toBeGreaterThanOrEqual(3);
    expect(r.aggregate.itemsPerS).toBeCloseTo(r.perDevice[0].summary.throughput.itemsPerS, 6);
  });
});

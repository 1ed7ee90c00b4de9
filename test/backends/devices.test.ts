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

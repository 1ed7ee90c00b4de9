import { describe, it, expect } from 'vitest';
import { InferenceSession, Tensor } from '../../src/index.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { GraphBuilder } from '../../src/ir/builder.js';
import { tinyCnn } from '../../bench/models/zoo.js';

function addModel() {
  const b = new GraphBuilder();
  const x = b.input('x', 'float32', ['n', 3]);
  const y = b.input('y', 'float32', [1, 3]);
  b.output(b.op('Add', [x, y], {}, 'add'), { kind: 'tensor', dtype: 'float32', shape: ['n', 3] });
  return serializeOnnx(b.model(17));
}

describe('InferenceSession', () => {
  it('exposes names and metadata and runs', async () => {
    const s = await InferenceSession.create(addModel());
    expect(s.inputNames).toEqual(['x', 'y']);
    expect(s.inputMetadata[0]).toEqual({ name: 'x', isTensor: true, type: 'float32', shape: ['n', 3] });
    const out = await s.run({ x: new Tensor('float32', [1, 2, 3, 4, 5, 6], [2, 3]), y: new Tensor(new Float32Array([10, 20, 30]), [1, 3]) });
    const r = out[s.outputNames[0]] as Tensor<'float32'>;
    expect(Array.from(r.data)).toEqual([11, 22, 33, 14, 25, 36]);
    expect(r.dims).toEqual([2, 3]);
  });

  it('runs the tiny CNN example with batch 2', async () => {
    const s = await InferenceSession.create(serializeOnnx(tinyCnn()));
    const out = await s.run({ input: new Tensor('float32', new Float32Array(2 * 3 * 32 * 32).fill(0.5), [2, 3, 32, 32]) });
    const p = out[s.outputNames[0]] as Tensor<'float32'>;
    expect(p.dims).toEqual([2, 10]);
    expect(p.data.slice(0, 10).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
  });

  it('explains wrong names, types, shapes and missing inputs', async () => {
    const s = await InferenceSession.create(addModel());
    const y = new Tensor('float32', [1, 2, 3], [1, 3]);
    await expect(s.run({ x: new Tensor('float32', [1, 2, 3], [1, 3]) })).rejects.toThrow(/input 'y' is missing/);
    await expect(s.run({ x: new Tensor('float32', [1, 2, 3], [1, 3]), y, z: y })).rejects.toThrow(/'z' is not an input.*'x', 'y'/);
    await expect(s.run({ x: new Tensor('int32', [1, 2, 3], [1, 3]), y })).rejects.toThrow(/type int32, but the model expects float32/);
    await expect(s.run({ x: new Tensor('float32', [1, 2, 3, 4], [1, 4]), y })).rejects.toThrow(/dimension 1 must be 3/);
    await expect(s.run({ x: new Tensor('float32', [1, 2, 3], [3]), y })).rejects.toThrow(/rank 1/);
    expect(() => new Tensor('float32', [1, 2, 3], [2, 2])).toThrow(/needs 4 elements/);
    expect(() => new Tensor('float99' as 'float32', [1], [1])).toThrow(/unknown type 'float99'/);
  });

  it('rejects unknown and unavailable providers with the list of known ones', async () => {
    await expect(InferenceSession.create(addModel(), { executionProviders: ['tpu'] })).rejects.toThrow(/'tpu' is unknown. Known providers: .*cpu/);
    await expect(InferenceSession.create(addModel(), { executionProviders: ['cuda'] })).rejects.toThrow(/cuda:/);
    const s = await InferenceSession.create(addModel(), { executionProviders: ['cuda', 'cpu'] });
    expect(s.executionProvider).toBe('cpu');
  });

  it('packs and unpacks sub-byte tensors at the API edge', async () => {
    const b = new GraphBuilder();
    b.output(b.op('Identity', [b.input('x', 'int4', [3])]), { kind: 'tensor', dtype: 'int4', shape: [3] });
    const s = await InferenceSession.create(serializeOnnx(b.model(21)));
    const out = (await s.run({ x: new Tensor('int4', new Uint8Array([0xf1, 0x07]), [3]) }))[s.outputNames[0]] as Tensor;
    expect(Array.from(out.data as Uint8Array)).toEqual([0xf1, 0x07]);
  });
});

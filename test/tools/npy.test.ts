import { describe, it, expect } from 'vitest';
import { encodeNpy, decodeNpy, encodeNpz, decodeNpz } from '../../src/tools/npy.js';
import { TensorData } from '../../src/ir/tensor.js';

describe('npy', () => {
  it('round-trips numeric, bool and string tensors', () => {
    const ts = [
      TensorData.fromNumbers('float32', [2, 3], [1, 2, 3, 4, 5, 6.5]),
      TensorData.fromNumbers('int64', [3], [1, -2, 3]),
      TensorData.fromNumbers('bool', [2], [1, 0]),
      TensorData.fromNumbers('float16', [2], [0.5, -2]),
      TensorData.fromNumbers('uint8', [], [7]),
      TensorData.strings([2], ['héllo', 'x']),
    ];
    for (const t of ts) {
      const bytes = encodeNpy(t);
      expect((10 + new DataView(bytes.buffer).getUint16(8, true)) % 64).toBe(0); // header aligned as numpy writes it
      const back = decodeNpy(bytes);
      expect(back.dtype).toBe(t.dtype);
      expect(back.dims).toEqual(t.dims);
      expect(Array.from(back.data as ArrayLike<unknown>)).toEqual(Array.from(t.data as ArrayLike<unknown>));
    }
  });
  it('round-trips npz archives', () => {
    const z = decodeNpz(encodeNpz({ a: TensorData.fromNumbers('float32', [2], [1, 2]), b: TensorData.fromNumbers('int32', [1], [3]) }));
    expect(Object.keys(z).sort()).toEqual(['a', 'b']);
    expect(Array.from(z.b.data as Int32Array)).toEqual([3]);
  });
  it('rejects garbage and truncated data with a clear error', () => {
    expect(() => decodeNpy(new Uint8Array([1, 2, 3]))).toThrow(/not a \.npy file/);
    const good = encodeNpy(TensorData.fromNumbers('float32', [100], new Array(100).fill(1)));
    expect(() => decodeNpy(good.subarray(0, good.length - 10))).toThrow(/needs 400/);
    expect(() => decodeNpz(new Uint8Array([0x50, 0x4b, 1, 2]))).toThrow(/npz/);
  });
});

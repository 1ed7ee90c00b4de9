// Packing of sub-byte types (int4/uint4/float4e2m1: 2 per byte; int2/uint2: 4 per byte), low bits first, as ONNX
// stores them in raw_data and as the public Tensor API exchanges them. Inside Kiln they are unpacked.
import { type DType, type TypedArray, dtypeBits, allocStorage } from './dtype.js';

export function packedByteLength(dtype: DType, n: number): number {
  const bits = dtypeBits(dtype);
  return Math.ceil((n * bits) / 8);
}

export function packSubByte(dtype: DType, data: ArrayLike<number>): Uint8Array {
  const bits = dtypeBits(dtype);
  const per = 8 / bits;
  const mask = (1 << bits) - 1;
  const out = new Uint8Array(Math.ceil(data.length / per));
  for (let i = 0; i < data.length; i++) out[(i / per) | 0] |= (data[i] & mask) << ((i % per) * bits);
  return out;
}

export function unpackSubByte(dtype: DType, bytes: Uint8Array, n: number): TypedArray {
  const bits = dtypeBits(dtype);
  const per = 8 / bits;
  const mask = (1 << bits) - 1;
  const signed = dtype === 'int4' || dtype === 'int2';
  const out = allocStorage(dtype, n) as TypedArray;
  for (let i = 0; i < n; i++) {
    let v = (bytes[(i / per) | 0] >> ((i % per) * bits)) & mask;
    if (signed && v & (1 << (bits - 1))) v -= 1 << bits;
    (out as Int8Array)[i] = v;
  }
  return out;
}

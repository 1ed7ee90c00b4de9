import { describe, it, expect } from 'vitest';
import { floatToFloat16, float16ToFloat, floatToBfloat16, bfloat16ToFloat, floatToMiniFloat, miniFloatToFloat } from '../../src/ir/dtype.js';
import { packSubByte, unpackSubByte } from '../../src/ir/packing.js';

describe('dtype conversions', () => {
  it('float16 round-trips representable values and rounds to nearest even', () => {
    for (const x of [0, 1, -2.5, 65504, 6.103515625e-5, 5.960464477539063e-8]) expect(float16ToFloat(floatToFloat16(x))).toBe(x);
    expect(float16ToFloat(floatToFloat16(1 + 2 ** -11))).toBe(1); // tie -> even
    expect(float16ToFloat(floatToFloat16(1e6))).toBe(Infinity);
    expect(Number.isNaN(float16ToFloat(floatToFloat16(NaN)))).toBe(true);
  });
  it('bfloat16 keeps float32 range', () => {
    expect(Math.abs(bfloat16ToFloat(floatToBfloat16(3.0e38)) / 3.0e38 - 1)).toBeLessThan(1 / 128); // 8-bit mantissa
    expect(bfloat16ToFloat(floatToBfloat16(1.00390625))).toBe(1); // tie -> even
  });
  it('float8 e4m3fn saturates and has no infinity', () => {
    expect(miniFloatToFloat('float8e4m3fn', floatToMiniFloat('float8e4m3fn', 1000))).toBe(448);
    expect(Number.isNaN(miniFloatToFloat('float8e4m3fn', floatToMiniFloat('float8e4m3fn', 1000, false)))).toBe(true);
    expect(miniFloatToFloat('float8e5m2', floatToMiniFloat('float8e5m2', Infinity, false))).toBe(Infinity);
    expect(miniFloatToFloat('float4e2m1', floatToMiniFloat('float4e2m1', 5))).toBe(4); // tie -> even mantissa
  });
  it('packs sub-byte types low bits first', () => {
    const packed = packSubByte('int4', [1, -1, 7]);
    expect(Array.from(packed)).toEqual([0xf1, 0x07]);
    expect(Array.from(unpackSubByte('int4', packed, 3) as Int8Array)).toEqual([1, -1, 7]);
    expect(Array.from(unpackSubByte('uint2', new Uint8Array([0b11100100]), 4) as Uint8Array)).toEqual([0, 1, 2, 3]);
  });
});

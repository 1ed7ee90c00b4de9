// kiln:QAttention's GPU kernel (codegen/attention.ts with `quantized`): the fused attention storing its output as
// 8-bit, heads after positions ([B, S, H, D], what the output projection reads) or in place. What the source must say
// (byte stores at the transposed offsets, QuantizeLinear's rounding of the fp16-rounded value), what it refuses, that
// the float kernel's text is untouched by the option, and (where nvcc is on the PATH) a clean sm_90 compile. The bytes
// are checked on a GPU by bench/quant/qattn-check.ts (against the float kernel + the QTranspose kernel).
import { describe, expect, it } from 'vitest';
import { expectCleanCompile, hasNvcc } from '../../helpers/nvcc.js';
import { fusedAttention, type FusedAttentionArgs } from '../../../src/backends/cuda/codegen/attention.js';
import { storeExpr } from '../../../src/backends/cuda/codegen/quant.js';

const bert: FusedAttentionArgs = { lead: [8, 12], S: 128, L: 128, D: 64, Dv: 64, dtype: 'float16', kTransposed: false, scale: 0.125, mask: { dtype: 'float32', dims: [8, 1, 1, 128] } };
const q8 = { headsLast: true, dtype: 'int8' as const, scale: 0.0173, zeroPoint: 0 };
const CASES: Record<string, FusedAttentionArgs> = {
  bert_int8: { ...bert, quantized: q8 },
  bert_int8_4x2: { ...bert, quantized: q8, warps: 4, split: 2 },
  bert_int8_kt_2x1: { ...bert, kTransposed: true, quantized: q8, warps: 2, split: 1 },
  bert_uint8_1x4: { ...bert, quantized: { ...q8, dtype: 'uint8', zeroPoint: 113 }, warps: 1, split: 4 },
  odd_in_place_uint8: { lead: [3, 5], S: 37, L: 45, D: 80, Dv: 80, dtype: 'float16', kTransposed: false, scale: 0.11, mask: { dtype: 'float16', dims: [37, 45] }, quantized: { headsLast: false, dtype: 'uint8', scale: 0.02, zeroPoint: 7 } },
  odd_heads_last_d32: { lead: [2, 3], S: 19, L: 53, D: 32, Dv: 32, dtype: 'float16', kTransposed: true, scale: 0.1, quantized: { ...q8, zeroPoint: -5 } },
};
const rendered = Object.entries(CASES).map(([k, a]) => [k, a, fusedAttention(a)] as const);

describe('cuda fused attention with a quantized store (kiln:QAttention)', () => {
  it('names the kernel by its store type and takes an 8-bit output pointer', () => {
    for (const [, a, k] of rendered) {
      expect(k.name).toMatch(new RegExp(`^kiln_qattn_${a.quantized!.dtype}_`));
      expect(k.source).toMatch(/unsigned char\* __restrict__ o\)/);
      expect(k.params.at(-1)).toEqual({ kind: 'out', index: 0 });
    }
  });

  it('writes heads after positions: row stride H * Dv, head offset (bh % H) * Dv', () => {
    const k = fusedAttention(CASES.bert_int8);
    expect(k.source).toContain('unsigned char* og = o + (bh / 12) * 98304 + (bh % 12) * 64;');
    expect(k.source).toMatch(/og \+ \(int\)r0 \* 768 \+ c\) = b;/);
    const inPlace = fusedAttention(CASES.odd_in_place_uint8);
    expect(inPlace.source).toContain('unsigned char* og = o + bh * 2960;');
    expect(inPlace.source).toMatch(/og \+ \(int\)r1 \* 80 \+ c\) = b;/);
  });

  it('quantizes the fp16-rounded value with QuantizeLinear\'s expression (what the QTranspose kernel computes)', () => {
    const k = fusedAttention(CASES.bert_uint8_1x4);
    expect(k.source).toContain('const unsigned h = pack2(acc[j][0] * i0, acc[j][1] * i0);');
    expect(k.source).toContain(storeExpr('uint8', 'h2f((unsigned short)(h & 0xffffu))', 0.0173, 113));
    expect(k.source).toContain(storeExpr('uint8', 'h2f((unsigned short)(h >> 16))', 0.0173, 113));
    expect(k.source).toContain('__device__ __forceinline__ int kq_q8(');
  });

  it('leaves the float kernel as it was: the option changes only the quantized kernels', () => {
    const plain = fusedAttention(bert), again = fusedAttention({ ...bert, quantized: undefined });
    expect(again.name).toBe(plain.name);
    expect(plain.source).not.toContain('kq_q8');
    expect(plain.name).toMatch(/^kiln_attn_fused_/);
  });

  it('refuses bf16 and a heads-last store without [B, H] leading dims', () => {
    expect(() => fusedAttention({ ...bert, dtype: 'bfloat16', quantized: q8 })).toThrow(/quantized output from bfloat16/);
    expect(() => fusedAttention({ ...bert, lead: [96], quantized: q8 })).toThrow(/heads-last output with 1 leading dims/);
  });
});

if (!hasNvcc) console.warn('cuda quantized attention: nvcc is not on the PATH; the sm_90 compile test is skipped');

describe.skipIf(!hasNvcc)('cuda quantized attention compiles with nvcc for sm_90', () => {
  it('compiles without errors, warnings, spills or local memory', () => {
    expectCleanCompile(rendered.map(([key, , k]) => [key, k.source] as [string, string]));
  }, 120_000);
});

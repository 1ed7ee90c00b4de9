// The fused attention kernel's generator (codegen/attention.ts): which shapes it takes (the rest keep the three-kernel
// plan), launch shapes and shared memory, the mask and layout variants in the source, and (where nvcc is on the PATH)
// that every shape class compiles for sm_90 with no spills and no local memory. Its results are checked on a GPU by
// bench/gpu/check.ts (fused vs unfused vs the CPU reference).
import { describe, expect, it } from 'vitest';
import { expectCleanCompile, hasNvcc } from '../../helpers/nvcc.js';
import {
  ATTN_BN, fusedAttention, fusedAttentionShape, fusedAttentionSmem, fusedAttentionUnsupported, type FusedAttentionArgs,
} from '../../../src/backends/cuda/codegen/attention.js';

const bert: FusedAttentionArgs = { lead: [8, 12], S: 128, L: 128, D: 64, Dv: 64, dtype: 'float16', kTransposed: true, scale: 0.125, mask: { dtype: 'float32', dims: [8, 1, 1, 128] } };
const CASES: Record<string, FusedAttentionArgs> = {
  bert_kt_f16: bert,
  bert_k_f16: { ...bert, kTransposed: false },
  bf16_d128_bool_full_mask: { ...bert, dtype: 'bfloat16', D: 128, Dv: 128, mask: { dtype: 'bool', dims: [8, 12, 128, 128] } },
  odd_s_l_d80_mask_row: { lead: [3, 5], S: 37, L: 45, D: 80, Dv: 80, dtype: 'float16', kTransposed: false, scale: 0.11, mask: { dtype: 'float16', dims: [37, 45] } },
  odd_l_kt_unaligned_d96: { lead: [2, 4], S: 19, L: 53, D: 96, Dv: 96, dtype: 'float16', kTransposed: true, scale: 0.1, mask: { dtype: 'float32', dims: [2, 1, 19, 1] } },
  d32_dv64_no_mask: { lead: [4], S: 200, L: 300, D: 32, Dv: 64, dtype: 'bfloat16', kTransposed: false, scale: 0.17 },
  rank2_one_warp: { lead: [], S: 16, L: 8, D: 16, Dv: 16, dtype: 'float16', kTransposed: true, scale: 1 },
  bert_4x2: { ...bert, warps: 4, split: 2 },
  bert_1x4_k: { ...bert, kTransposed: false, warps: 1, split: 4 },
  d128_2x4_odd: { lead: [3, 2], S: 50, L: 200, D: 128, Dv: 128, dtype: 'float16', kTransposed: false, scale: 0.09, mask: { dtype: 'float32', dims: [3, 2, 50, 200] }, warps: 2, split: 4 },
  d80_2x2_kt_tail: { lead: [3, 2], S: 70, L: 130, D: 80, Dv: 80, dtype: 'bfloat16', kTransposed: true, scale: 0.1, mask: { dtype: 'bool', dims: [3, 1, 1, 130] }, warps: 2, split: 2 },
};
const rendered = Object.entries(CASES).map(([k, a]) => [k, a, fusedAttention(a)] as const);

describe('cuda fused attention: routing', () => {
  it('takes fp16/bf16 with head sizes that are multiples of 16 up to 128', () => {
    const base = { S: 128, L: 128, D: 64, Dv: 64, batch: 96 };
    for (const D of [16, 32, 64, 80, 96, 128]) expect(fusedAttentionUnsupported({ ...base, D, Dv: D, dtype: 'float16' })).toBeUndefined();
    expect(fusedAttentionUnsupported({ ...base, dtype: 'bfloat16' })).toBeUndefined();
  });

  it('names why it leaves a shape to the unfused plan', () => {
    const base = { S: 128, L: 128, D: 64, Dv: 64, batch: 96, dtype: 'float16' as const };
    expect(fusedAttentionUnsupported({ ...base, dtype: 'float32' as never })).toMatch(/dtype float32/);
    expect(fusedAttentionUnsupported({ ...base, D: 40 })).toMatch(/head size 40/);
    expect(fusedAttentionUnsupported({ ...base, D: 256 })).toMatch(/head size 256/);
    expect(fusedAttentionUnsupported({ ...base, Dv: 72 })).toMatch(/value head size 72/);
    expect(fusedAttentionUnsupported({ ...base, batch: 70000 })).toMatch(/70000 heads/);
    expect(fusedAttentionUnsupported({ ...base, mask: { dtype: 'int64' as never, dims: [1] } })).toMatch(/mask dtype int64/);
    expect(() => fusedAttention({ ...bert, D: 40 })).toThrow(/head size 40/);
  });

  it('uses fewer row groups per block only when 4 would leave the device short of blocks, and splits keys past one tile', () => {
    expect(fusedAttentionShape(128, 128, 96)).toEqual({ warps: 2, split: 2 }); // 2 x 96 blocks of 4 row groups < 264
    expect(fusedAttentionShape(512, 512, 96)).toEqual({ warps: 4, split: 2 });
    expect(fusedAttentionShape(16, 64, 4)).toEqual({ warps: 1, split: 1 });
  });

  it('refuses block shapes it has no layout for', () => {
    expect(() => fusedAttention({ ...bert, warps: 3 })).toThrow(/3 row groups/);
    expect(() => fusedAttention({ ...bert, warps: 8, split: 4 })).toThrow(/at most 16 warps/);
  });
});

describe('cuda fused attention: sources and launch shapes', () => {
  it.each(rendered)('%s', (_, a, k) => {
    expect(k.name).toMatch(/^kiln_attn_fused_[0-9a-f]{16}$/);
    expect(k.source).not.toMatch(/#include/);
    expect(k.source.match(/__global__/g)).toHaveLength(1);
    const sig = new RegExp(`${k.name}\\(([^)]*)\\)`).exec(k.source)![1].split(',');
    expect(sig).toHaveLength(k.params.length);
    expect(k.params.map((p) => `${p.kind}${'index' in p ? p.index : ''}`)).toEqual(['in0', 'in1', 'in2', ...(a.mask ? ['in3'] : []), 'out0']);
    const shape = { ...fusedAttentionShape(a.S, a.L, k.grid[1]), ...(a.warps ? { warps: a.warps } : {}), ...(a.split ? { split: a.split } : {}) };
    expect(k.block[0]).toBe(32 * shape.warps * shape.split);
    const rows = 16 * shape.warps;
    expect(k.grid[0] * rows).toBeGreaterThanOrEqual(a.S);
    expect((k.grid[0] - 1) * rows).toBeLessThan(a.S);
    expect(k.grid[1]).toBe(a.lead.reduce((x, y) => x * y, 1));
    expect(k.sharedBytes).toBe(fusedAttentionSmem(a.D, a.Dv, a.kTransposed, shape.warps, shape.split));
    expect(k.sharedBytes).toBeLessThanOrEqual(227 * 1024);
    // split warps merge their partial softmax states through shared memory; unsplit ones store directly
    expect(k.source.includes('if (ks > 0) return;')).toBe(shape.split > 1);
    expect(k.source).toContain(`f32.${a.dtype === 'bfloat16' ? 'bf16.bf16' : 'f16.f16'}.f32`);
    // key tiles: every key is covered, the last tile's tail masked
    expect(k.source).toContain(`tile < ${Math.ceil(a.L / ATTN_BN)}`);
  });

  it('reads K as stored: ldmatrix without .trans for [L, D], with .trans for [D, L]', () => {
    const [kn, kt] = [fusedAttention({ ...bert, kTransposed: false }), fusedAttention(bert)];
    expect(kn.source).toMatch(/ldsm4\(sk \+/);
    expect(kt.source).toMatch(/ldsm4t\(sk \+/);
    // [D, L] rows are copied 16 bytes at a time only when they are 16-byte aligned (L % 8 == 0)
    expect(fusedAttention({ ...bert, L: 53, mask: undefined }).source).toContain('skp[r * ');
    expect(kt.source).not.toContain('skp[r * ');
  });

  it('addresses the mask through its broadcast strides', () => {
    // [B, 1, 1, L]: the head and query row do not move it, so each key tile's row is staged in shared memory
    const b11l = fusedAttention(bert).source;
    expect(b11l).toMatch(/smask\[stage \* 64 \+ i\] = key < 128 \? h?\(?mask\[mo \+ 0 \+ \(int\)\(key\) \* 1\]/);
    expect(b11l).toMatch(/mo \+= .* \* 128;/);
    expect(b11l).toContain('+ sm[kb + j * 8 + t4 * 2 + e]');
    // [S, L]: the leading index does not move it, the query row does: read per score, rows past S clamped
    const sl = fusedAttention(CASES.odd_s_l_d80_mask_row).source;
    expect(sl).toMatch(/int mo = 0;/);
    expect(sl).toMatch(/mask\[mo \+ \(int\)\(min\(q0 \+ g, 36\)\) \* 45 \+ \(int\)\(key\) \* 1\]/);
    expect(sl).toContain('smask[stage * 64 + i] = key < 45 ? 0.0f : -K_INF'); // the tail of the last key tile
    expect(fusedAttention(CASES.bf16_d128_bool_full_mask).source).toMatch(/\? s\[j\]\[e\] \* [0-9.e-]+f : -K_INF\)/);
    const none = fusedAttention({ ...bert, mask: undefined }).source;
    expect(none).not.toContain('mask[');
    expect(none).not.toContain('sm[kb'); // no mask and L a multiple of the key tile: nothing added to the scores
  });

  it('refuses a mask that does not broadcast to the scores', () => {
    expect(() => fusedAttention({ ...bert, mask: { dtype: 'float32', dims: [8, 1, 1, 127] } })).toThrow(/cannot be broadcast/);
  });
});

if (!hasNvcc) console.warn('cuda fused attention: nvcc is not on the PATH; the sm_90 compile test is skipped');

describe.skipIf(!hasNvcc)('cuda fused attention compiles with nvcc for sm_90', () => {
  it('compiles without errors, warnings, spills or local memory', () => {
    expectCleanCompile(rendered.map(([key, , k]) => [key, k.source] as [string, string]));
  }, 120_000);
});

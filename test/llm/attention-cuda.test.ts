// The paged-attention kernels' generator (src/backends/cuda/codegen/attention-paged.ts): shapes it accepts, launch
// configs, and (where nvcc is installed) that every variant compiles for sm_90. The kernels' results
// are checked on the GPU machine by bench/llm/check-gpu.ts against the TypeScript kernel.
import { describe, expect, it } from 'vitest';
import { compileSm90, hasNvcc } from '../helpers/nvcc.js';
import { pagedAttentionKernels, type PagedAttentionShape } from '../../src/backends/cuda/codegen/attention-paged.js';

const base: PagedAttentionShape = { numHeads: 32, numKvHeads: 8, headDim: 64, blockSize: 16, scale: 0.125, cacheDtype: 'float16' };
const variants: PagedAttentionShape[] = [
  base,
  { ...base, headDim: 16, numHeads: 4, numKvHeads: 2, cacheDtype: 'float32' },
  { ...base, headDim: 128, numKvHeads: 32, cacheDtype: 'bfloat16' },
  { ...base, headDim: 80, blockSize: 32 },
  { ...base, rowDtype: 'float16' },
  { ...base, cacheDtype: 'bfloat16', rowDtype: 'bfloat16' },
];

describe('paged attention kernels', () => {
  it('renders write/decode/prefill with one head per grid row and the GQA group baked in', () => {
    const k = pagedAttentionKernels(base);
    expect(k.decode.grid[1]).toBe(32);
    expect(k.prefill.block[0]).toBe(k.queryTile * 32);
    expect(k.decode.source).toContain('GROUP = 4');
    expect(k.write.source).toContain('unsigned short* kc');
    expect(new Set([k.write.name, k.decode.name, k.prefill.name]).size).toBe(3);
    // rows in the engine's own type: fp16 q/k/v in, fp16 attention out, no fp32 row pointers left
    const h = pagedAttentionKernels({ ...base, rowDtype: 'float16' });
    expect(h.decode.source).toContain('const unsigned short* q');
    expect(h.prefill.source).not.toContain('float* out');
    expect(() => pagedAttentionKernels({ ...base, rowDtype: 'int32' })).toThrow(/row type int32/);
    // 16-byte rows per lane group where the head size allows (64 = 8 lanes of 8 halves), the scalar kernel otherwise
    expect(k.decode.name).toMatch(/^kiln_paged_decode_v_/);
    expect(k.decode.source).toContain('uint4');
    expect(pagedAttentionKernels({ ...base, headDim: 80 }).decode.name).toMatch(/^kiln_paged_decode_[0-9a-f]/);
  });

  it('rejects head sizes and head counts it cannot serve, with a hint', () => {
    expect(() => pagedAttentionKernels({ ...base, headDim: 256 })).toThrow(/head size 256/);
    expect(() => pagedAttentionKernels({ ...base, numKvHeads: 5 })).toThrow(/not a multiple/);
  });

  it.skipIf(!hasNvcc)('compiles for sm_90 without warnings (nvcc)', () => {
    const ks = variants.flatMap((v) => { const k = pagedAttentionKernels(v); return [k.write, k.decode, k.prefill]; });
    const { status, output } = compileSm90(ks.map((k, i) => [`v${i}`, k.source]));
    expect(status, output).toBe(0);
    expect(output).not.toMatch(/warning/i);
  }, 120_000);
});

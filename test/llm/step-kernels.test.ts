// The LLM GPU step's kernels (src/llm/step-kernels.ts): launch shapes, and (where nvcc is installed) that they
// compile for sm_90 without warnings. Their results are checked on the GPU machine by bench/llm/check-gpu.ts
// (greedy tokens of the cuda provider against transformers, batched and chunked).
import { describe, expect, it } from 'vitest';
import { compileSm90, hasNvcc } from '../helpers/nvcc.js';
import { argmaxKernel, gatherKernel, idsKernel } from '../../src/llm/step-kernels.js';

describe('LLM step kernels', () => {
  it('are single kernels with distinct names, the argmax a 1024-thread block per row', () => {
    expect(argmaxKernel.block[0]).toBe(1024);
    expect(argmaxKernel.name).not.toBe(gatherKernel.name);
    for (const k of [argmaxKernel, gatherKernel, idsKernel]) expect(k.source.match(/__global__/g)).toHaveLength(1);
  });

  it.skipIf(!hasNvcc)('compile for sm_90 without warnings (nvcc)', () => {
    const { status, output } = compileSm90([argmaxKernel, gatherKernel, idsKernel].map((k, i) => [`v${i}`, k.source]));
    expect(status, output).toBe(0);
    expect(output).not.toMatch(/warning/i);
  }, 120_000);
});

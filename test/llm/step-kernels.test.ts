// The LLM GPU step's kernels (src/llm/step-kernels.ts): launch shapes, and (where nvcc is installed) that they
// compile for sm_90 without warnings. Their results are checked on the GPU machine by bench/llm/check-gpu.ts
// (greedy tokens of the cuda provider against transformers, batched and chunked).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { argmaxKernel, gatherKernel, idsKernel } from '../../src/llm/step-kernels.js';

describe('LLM step kernels', () => {
  it('are single kernels with distinct names, the argmax a 1024-thread block per row', () => {
    expect(argmaxKernel.block[0]).toBe(1024);
    expect(argmaxKernel.name).not.toBe(gatherKernel.name);
    for (const k of [argmaxKernel, gatherKernel, idsKernel]) expect(k.source.match(/__global__/g)).toHaveLength(1);
  });

  const nvcc = spawnSync('nvcc', ['--version'], { encoding: 'utf8' }).status === 0;
  it.skipIf(!nvcc)('compile for sm_90 without warnings (nvcc)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-step-'));
    try {
      writeFileSync(join(dir, 'all.cu'), [argmaxKernel, gatherKernel, idsKernel].map((k, i) => `namespace v${i} {\n${k.source}\n}\n`).join('\n'));
      const res = spawnSync('nvcc', ['-cubin', '-arch=sm_90', '-Xptxas', '-v', '-o', join(dir, 'all.cubin'), join(dir, 'all.cu')], { encoding: 'utf8' });
      const text = `${res.stdout}${res.stderr}`;
      expect(res.status, text).toBe(0);
      expect(text).not.toMatch(/warning/i);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

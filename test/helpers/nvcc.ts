// nvcc for the CUDA codegen tests: whether it is on the PATH, and one nvcc run over many generated kernels (each in its
// own namespace, one translation unit) for sm_90 with ptxas' resource report, so a test can check warnings and spills.
import { spawnSync } from 'node:child_process';
import { expect } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const hasNvcc = spawnSync('nvcc', ['--version'], { encoding: 'utf8' }).status === 0;

/** Compiles `[namespace, source]` pairs to one sm_90 cubin (sm_90a: wgmma and the other arch-specific instructions);
 * returns nvcc's exit status and its whole output. */
export function compileSm90(units: [string, string][], arch: 'sm_90' | 'sm_90a' = 'sm_90'): { status: number | null; output: string } {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-nvcc-'));
  try {
    writeFileSync(join(dir, 'all.cu'), units.map(([ns, src]) => `namespace ${ns} {\n${src}\n}\n`).join('\n'));
    const target = arch === 'sm_90a' ? '-gencode=arch=compute_90a,code=sm_90a' : '-arch=sm_90';
    const res = spawnSync('nvcc', ['-cubin', target, '-Xptxas', '-v', '-o', join(dir, 'all.cubin'), join(dir, 'all.cu')], { encoding: 'utf8' });
    return { status: res.status, output: `${res.stdout}${res.stderr}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** ptxas' per-kernel report: [entry name, stack frame bytes, spill store bytes, spill load bytes]. */
export function kernelResources(output: string): [string, string, string, string][] {
  return [...output.matchAll(/Compiling entry function '(\w+)'[\s\S]*?(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/g)].map((m) => [m[1], m[2], m[3], m[4]]);
}

/** Compiles the units (compileSm90) and asserts a clean build: exit 0, no warning, one ptxas report per unit, each with no
 * stack frame and no spills. */
export function expectCleanCompile(units: [string, string][], arch: 'sm_90' | 'sm_90a' = 'sm_90'): void {
  const { status, output } = compileSm90(units, arch);
  expect(status, output).toBe(0);
  expect(output).not.toMatch(/warning/i);
  const fns = kernelResources(output);
  expect(fns).toHaveLength(units.length);
  for (const m of fns) expect(m).toEqual([m[0], '0', '0', '0']);
}

// The wgmma kernel's L2 prefetch of the residual tile (QGemmArgs.residualPrefetch, ResNet's bottleneck conv3s): one
// bulk prefetch per tile row of the right byte count (clamped at a ragged right edge), only where a residual is read
// by an unsplit, non-persistent kernel, kernels without it keep their text (cubin caches and saved tactic timings stay
// valid), and (where nvcc is on the PATH) it compiles for sm_90a with no spills or local memory. The prefetch is a
// hint: bench/gpu/quant-check.ts holds the whole models' outputs to the CPU reference on a GPU.
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectCleanCompile, hasNvcc } from '../../helpers/nvcc.js';
import { qgemm, type QGemmArgs } from '../../../src/backends/cuda/codegen/quant.js';

// layer1 conv3 of ResNet-50 at batch 32: 1x1, 64 -> 256 channels, fp16 residual, fp16 out plus its int8 copy
const conv3: QGemmArgs = {
  M: 32 * 56 * 56, N: 256, K: 64, a: 'int8', activation: 'Relu', params: [], out: 'float16', residual: 'float16',
  out2: { store: 'int8', yScale: 0.05, yZeroPoint: 0 }, wgmma: true, staged: true, tile: { BM: 64, BN: 64 }, stages: 2, drain: true, occupancy: 5,
  conv: { H: 56, W: 56, C: 64, OH: 56, OW: 56, KH: 1, KW: 1, strides: [1, 1], pads: [0, 0, 0, 0], dilations: [1, 1] },
};
const PF = /cp\.async\.bulk\.prefetch\.L2\.global/g;
const src = (g: QGemmArgs) => qgemm(g).source;

describe('wgmma residual prefetch', () => {
  // at K <= 64 the default copies an fp16 residual tile into shared memory instead (quant-wgmma.ts, hres; tested in
  // test/quant/staged-epilogue-codegen.test.ts): these kernels are the ones without it, KILN_QEPI=qepi2
  beforeAll(() => { process.env.KILN_QEPI = 'qepi2'; });
  afterAll(() => { delete process.env.KILN_QEPI; });

  it('prefetches each row of the residual tile once, before the main loop', () => {
    const s = src({ ...conv3, residualPrefetch: true });
    expect(s.match(PF)).toHaveLength(1);
    expect(s).toMatch(/if \(tid < 64 && m0 \+ tid < 100352\) \{\s+const unsigned bytes = 128u;/);
    expect(s).toMatch(/"l"\(res \+ \(\w+\)\(m0 \+ tid\) \* 256 \+ n0\)/);
    expect(s.indexOf('prefetch.L2')).toBeLessThan(s.indexOf('wgmma.mma_async'));
    // fp32 residual, 128-row tile, N not a multiple of the tile: 4-byte elements, the last tile's row clamped
    const f = src({ ...conv3, N: 200, residual: 'float32', out: 'float32', out2: undefined, tile: { BM: 128, BN: 64 }, occupancy: 2, residualPrefetch: true });
    expect(f).toMatch(/if \(tid < 128 && m0 \+ tid < 100352\) \{\s+const unsigned bytes = \(unsigned\)min\(64, 200 - n0\) \* 4u;/);
  });

  it('leaves kernels without a residual, split-K and persistent grids and the option unset as they were', () => {
    const { residual: _r, out2: _o, ...plain } = conv3;
    expect(src({ ...plain, out: 'int8', residualPrefetch: true })).toBe(src({ ...plain, out: 'int8' }));
    expect(src({ ...conv3, residualPrefetch: false })).not.toMatch(PF);
    expect(src(conv3)).not.toMatch(PF);
    expect(src({ ...conv3, K: 576, splitK: 2, stages: undefined, drain: undefined, residualPrefetch: true })).not.toMatch(PF);
    expect(src({ ...conv3, stages: undefined, drain: undefined, persistent: 132, residualPrefetch: true })).not.toMatch(PF);
    // otherwise the text differs only by the prefetch block
    const named = (s: string) => s.replace(/kiln_qwgmma_int8_[0-9a-f]+/g, 'K'); // the kernel's name hashes its text
    const on = src({ ...conv3, residualPrefetch: true }), off = src(conv3);
    expect(named(on.replace(/\n {2}if \(tid < 64 && m0 \+ tid < \d+\) \{[\s\S]*?\n {2}\}/, ''))).toBe(named(off));
  });

  it.skipIf(!hasNvcc || spawnSync('nvcc', ['--list-gpu-arch'], { encoding: 'utf8' }).stdout?.includes('compute_90') === false)('compiles for sm_90a with no warnings, spills or stack', () => {
    expectCleanCompile([
      ['pf_conv3', src({ ...conv3, residualPrefetch: true })],
      ['pf_ragged_fp32', src({ ...conv3, N: 200, residual: 'float32', out: 'float32', out2: undefined, tile: { BM: 128, BN: 64 }, occupancy: 2, residualPrefetch: true })],
      ['pf_128x128', src({ ...conv3, M: 6272, N: 1024, K: 256, tile: { BM: 128, BN: 128 }, stages: 3, drain: undefined, occupancy: 2, residualPrefetch: true })],
    ], 'sm_90a');
  });
});

// The quantized GEMM's 8-bit residual epilogue (QGemmArgs.qresidual: a residual Add quantized on both inputs, folded
// into the conv before it): every epilogue form reads the residual as 8-bit values and computes, per channel,
// (c_q - c_zp) * c_scale + (r_q - r_zp) * r_scale with each product and the sum rounded on its own (no FMA contraction),
// the layer's sum first rounded to its own scale; the kernel takes the residual as input 3. nvcc (where on the PATH):
// every form compiles for sm_90a with no spills or local memory. The bytes are held to the CPU reference on a GPU by
// bench/gpu/quant-check.ts.
import { describe, expect, it } from 'vitest';
import { expectCleanCompile, hasNvcc } from '../helpers/nvcc.js';
import { qgemm, type QGemmArgs } from '../../src/backends/cuda/codegen/quant.js';

const conv = { H: 28, W: 28, C: 128, OH: 28, OW: 28, KH: 1, KW: 1, strides: [1, 1], pads: [0, 0, 0, 0], dilations: [1, 1] };
const base: QGemmArgs = {
  M: 2 * 784, N: 512, K: 128, a: 'int8', conv, activation: 'Relu', params: [], out: 'int8', yScale: 0.041, yZeroPoint: 0,
  qresidual: { a: 'int8', scale: 0.037, zeroPoint: 0, c: 'int8', cScale: 0.029, cZeroPoint: 0 },
};
const uint8: QGemmArgs = { ...base, a: 'uint8', yZeroPoint: 3, out: 'uint8', qresidual: { a: 'uint8', scale: 0.021, zeroPoint: 128, c: 'uint8', cScale: 0.013, cZeroPoint: 128 } };
const FORMS: Record<string, Partial<QGemmArgs>> = {
  staged128x64: { wgmma: true, tile: { BM: 128, BN: 64 }, staged: true, occupancy: 3 },
  staged64x64prefetch: { wgmma: true, tile: { BM: 64, BN: 64 }, staged: true, residualPrefetch: true, stages: 2, drain: true },
  stagedSplitK: { wgmma: true, tile: { BM: 64, BN: 64 }, staged: true, splitK: 2, K: 256 },
  stagedPersistent: { wgmma: true, tile: { BM: 128, BN: 64 }, staged: true, persistent: 132 },
  directWgmma: { wgmma: true, tile: { BM: 128, BN: 64 } },
  pairedMma: { tile: { BM: 128, BN: 128 } },
  // odd N: the one-value-per-iteration epilogue of the mma.sync kernel
  scalarMma: { tile: { BM: 64, BN: 64 }, N: 510 },
};
const rendered = Object.entries(FORMS).flatMap(([f, more]) => [['i8', base], ['u8', uint8]].map(([t, g]) => {
  const args = { ...(g as QGemmArgs), ...more, ...(more.N ? { out: 'float32' as const } : {}) };
  return [`${f}_${t}`, args, qgemm(args)] as const;
}));

describe('8-bit residual epilogue', () => {
  it.each(rendered)('%s: residual as input 3 of 8-bit type, rounded twice, no contraction', (_, g, k) => {
    const sig = new RegExp(`${k.name}\\(([^)]*)\\)`).exec(k.source)![1];
    expect(sig.split(',')).toHaveLength(k.params.length);
    expect(sig).toMatch(new RegExp(`const ${g.qresidual!.a === 'int8' ? 'signed' : 'unsigned'} char\\* __restrict__ res`));
    expect(k.params[3]).toEqual({ kind: 'in', index: 3 });
    // the sum rounded to c's scale (kq_q8 with c's reciprocal and scale), then the two dequantized terms
    const q = g.qresidual!, cs = `${Math.fround(q.cScale).toPrecision(9)}f`, rs = `${Math.fround(q.scale).toPrecision(9)}f`;
    if (g.staged && g.N % 8 === 0) {
      // 8 channels at a time: one rounding call with one slow-path branch, residual bytes permuted into floats
      expect(k.source).toContain('const uint2 rq = *(const uint2*)(res + o);');
      // (kq_c8n: the narrow slow-path window, KQ8N_HELPERS; kq_c8 under KILN_QEPI=qepi)
      expect(k.source).toMatch(/kq_c8n\(vv, [0-9.e+-]+f, [0-9.e+-]+f, -?\d+\.0f, \d+\.0f, cq\);/);
      expect(k.source).toContain(`vv[j] = __fadd_rn(__fmul_rn(cq[j], ${cs}), __fmul_rn(rv, ${rs}));`);
      expect(k.source).toContain(q.a === 'int8' ? 'rq.x ^ 0x80808080u' : '{ rq.x, rq.y }');
    } else {
      expect(k.source).toContain(`__fadd_rn(__fmul_rn(kq_i2f22(kq_q8(`);
      expect(k.source).toContain(`${cs})`);
      expect(k.source).toMatch(new RegExp(`kq_i2f22\\(\\(int\\)\\([^;]*\\) - ${q.zeroPoint}\\), ${rs}\\)\\)`));
    }
    expect(k.source).not.toMatch(/h2f\(res|\+= r/);
    if (g.residualPrefetch) expect(k.source).toMatch(/cp\.async\.bulk\.prefetch\.L2\.global[\s\S]*"r"\(bytes\)/);
    if (g.residualPrefetch) expect(k.source).toContain(`${64}u;`); // 64 one-byte channels per tile row
  });

  it('the first arithmetic (v1Epilogue) rounds with rintf of the quotient, clamped to c\'s range less its zero point', () => {
    const k = qgemm({ ...uint8, wgmma: true, tile: { BM: 128, BN: 64 }, staged: true, v1Epilogue: true });
    expect(k.source).toMatch(/fminf\(fmaxf\(rintf\(\(vv\[j\]\) \/ 0\.0130000003f\), -128\.0f\), 127\.0f\)/);
  });

  it('a residual byte permuted into 1.5 * 2^23\'s mantissa, less the bias, is exactly r - zero point (int8 and uint8)', () => {
    const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
    // __byte_perm(x, 0x4B400000, 0x7640 | j): byte j of x, then 0x00, 0x40, 0x4B
    const perm = (x: number, j: number) => (((x >>> (8 * j)) & 0xff) | 0x4B400000) >>> 0;
    for (const [a, zps] of [['int8', [0, -3, 17]], ['uint8', [0, 128, 200]]] as const) {
      for (const zp of zps) {
        const bias = a === 'int8' ? 128 : 0, sub = Math.fround(12582912 + bias + zp);
        for (let r = a === 'int8' ? -128 : 0; r < (a === 'int8' ? 128 : 256); r++) {
          const byte = r & 0xff, word = ((byte << 16) ^ (bias ? 0x80808080 : 0)) >>> 0; // the byte at position 2
          u32[0] = perm(word, 2);
          expect(Math.fround(f32[0] - sub)).toBe(r - zp);
        }
      }
    }
  });

  it('kernels without one keep their text (no residual: no res parameter)', () => {
    const { qresidual: _, ...plain } = base;
    const k = qgemm({ ...plain, wgmma: true, tile: { BM: 128, BN: 64 }, staged: true });
    expect(k.source).not.toMatch(/__restrict__ res|__fadd_rn/);
    expect(k.params.some((p) => p.kind === 'in' && p.index === 3)).toBe(false);
  });
});

describe.skipIf(!hasNvcc)('8-bit residual epilogue compiles with nvcc for sm_90a', () => {
  it('every form compiles without errors, spills or local memory', () => {
    expectCleanCompile(rendered.map(([ns, , k]) => [ns, k.source] as [string, string]), 'sm_90a');
  }, 300_000);
});

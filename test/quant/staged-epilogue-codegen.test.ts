// The wgmma kernel's staged epilogue options for 8-bit-residual kernels (quant-wgmma.ts stagedEpilogueOptions):
// the float tile's split layout (pass 1 and pass 2 agree on every channel's slot, and touch each shared-memory bank
// once per access phase, where the plain layout has 2-way conflicts), the residual tile copied into shared memory
// where the reduction is one 64-byte k-step, and the kernels each option leaves alone (their text, and so their cached
// cubins). KILN_QEPI switches them for A/B runs. The bytes are held to KILN_QEPI=0 on a GPU by
// bench/quant/gpu-layers.js qepi.
import { afterEach, describe, expect, it } from 'vitest';
import { expectCleanCompile, hasNvcc } from '../helpers/nvcc.js';
import { qgemm, type QGemmArgs } from '../../src/backends/cuda/codegen/quant.js';

const qr = { a: 'int8', scale: 0.037, zeroPoint: 0, c: 'int8', cScale: 0.029, cZeroPoint: 0 } as const;
const k64: QGemmArgs = {
  M: 100352, N: 256, K: 64, a: 'int8', activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 0,
  wgmma: true, staged: true, qresidual: qr, residualPrefetch: true,
};
const tile = (BM: number, BN: number, occupancy?: number): Partial<QGemmArgs> => ({ tile: { BM, BN }, occupancy });
const withEnv = (mode: string | undefined, g: QGemmArgs) => {
  if (mode === undefined) delete process.env.KILN_QEPI;
  else process.env.KILN_QEPI = mode;
  try {
    return qgemm(g);
  } finally {
    delete process.env.KILN_QEPI;
  }
};
afterEach(() => { delete process.env.KILN_QEPI; });

/** Pass 1's float2 slot and pass 2's two float4 slots, read off the kernel text: [pitch, H] of the split layout. */
function splitLayout(src: string): { FP: number; H: number } {
  const w = /\* (\d+) \+ b \* 4 \+ \(tig & 1\) \* 2 \+ \(tig >> 1\) \* (\d+)\) = make_float2/.exec(src);
  const r = /sf \+ r \* (\d+) \+ q8 \/ 2\), p1 = \*\(const float4\*\)\(sf \+ r \* (\d+) \+ q8 \/ 2 \+ (\d+)\);/.exec(src);
  expect(w, 'pass 1 split store').not.toBeNull();
  expect(r, 'pass 2 split reads').not.toBeNull();
  expect([Number(r![1]), Number(r![2]), Number(r![3])]).toEqual([Number(w![1]), Number(w![1]), Number(w![2])]);
  return { FP: Number(w![1]), H: Number(w![2]) };
}

/** Largest number of distinct 4-byte words that one access phase puts in one bank. */
function conflictDegree(words: number[]): number {
  const byBank = new Map<number, Set<number>>();
  for (const wd of words) {
    const set = byBank.get(wd % 32) ?? new Set<number>();
    set.add(wd);
    byBank.set(wd % 32, set);
  }
  return Math.max(...[...byBank.values()].map((s) => s.size));
}

/**
 * Pass 1 (a warp's float2 stores of one accumulator block: lane = grp * 4 + tig, two channels at b * 8 + tig * 2 of
 * rows grp and grp + 8; 8-byte accesses go in half-warps) and pass 2 (thread id reads 8 channels q8 = (id % CPR) * 8 of
 * row id / CPR as two float4; 16-byte accesses go in quarter-warps), with `slot` the word of channel c in its row.
 */
function phases(BN: number, FP: number, slotW: (b: number, tig: number) => number, slotR: (q8: number, half: number) => number) {
  let p1 = 0, p2 = 0;
  for (let b = 0; b < BN / 8; b++) {
    for (let half = 0; half < 2; half++) {
      const words: number[] = [];
      for (let l = half * 16; l < half * 16 + 16; l++) {
        const a = (l >> 2) * FP + slotW(b, l & 3);
        words.push(a, a + 1);
      }
      p1 = Math.max(p1, conflictDegree(words));
    }
  }
  const CPR = BN / 8;
  for (let base = 0; base < 256; base += 8) {
    for (const half of [0, 1]) {
      const words: number[] = [];
      for (let id = base; id < base + 8; id++) {
        const a = Math.floor(id / CPR) * FP + slotR((id % CPR) * 8, half);
        words.push(a, a + 1, a + 2, a + 3);
      }
      p2 = Math.max(p2, conflictDegree(words));
    }
  }
  return { p1, p2 };
}

describe('staged epilogue: the split float tile', () => {
  it.each([[128, 64, 3], [64, 64, 4], [128, 128, undefined]] as const)('%ix%i: pass 2 reads every channel where pass 1 wrote it, one word per bank per phase', (BM, BN, occ) => {
    const { FP, H } = splitLayout(qgemm({ ...k64, ...tile(BM, BN, occ) }).source);
    expect(FP).toBe(BN + 8);
    // pass 1: channel b * 8 + tig * 2 (+1) at b * 4 + (tig & 1) * 2 + (tig >> 1) * H (+1)
    const written = new Map<number, number>();
    for (let b = 0; b < BN / 8; b++) {
      for (let tig = 0; tig < 4; tig++) {
        const at = b * 4 + (tig & 1) * 2 + (tig >> 1) * H;
        written.set(b * 8 + tig * 2, at);
        written.set(b * 8 + tig * 2 + 1, at + 1);
      }
    }
    // pass 2: channels q8 .. q8 + 3 from q8 / 2, q8 + 4 .. q8 + 7 from q8 / 2 + H
    for (let q8 = 0; q8 < BN; q8 += 8) for (let j = 0; j < 8; j++) expect(written.get(q8 + j)).toBe(Math.trunc(q8 / 2) + (j < 4 ? j : H + j - 4));
    const slots = [...written.values()];
    expect(new Set(slots).size).toBe(BN);
    expect(Math.max(...slots)).toBeLessThan(FP);
    expect(phases(BN, FP, (b, tig) => b * 4 + (tig & 1) * 2 + (tig >> 1) * H, (q8, half) => q8 / 2 + half * H)).toEqual({ p1: 1, p2: 1 });
  });

  it('the plain layout (pitch BN + 4, 8 consecutive floats per thread) has 2-way conflicts in both passes', () => {
    const src = withEnv('0', { ...k64, ...tile(128, 128) }).source;
    expect(src).toContain('* 132 + col) = make_float2');
    expect(src).toContain('p0 = *(const float4*)(sf + r * 132 + q8), p1 = *(const float4*)(sf + r * 132 + q8 + 4);');
    for (const BN of [64, 128]) expect(phases(BN, BN + 4, (b, tig) => b * 8 + tig * 2, (q8, half) => q8 + half * 4)).toEqual({ p1: 2, p2: 2 });
  });

  it('BN = 32 tiles keep the plain layout (already conflict-free in pass 2)', () => {
    const src = qgemm({ ...k64, ...tile(64, 32, 4) }).source;
    expect(src).toContain('* 36 + col) = make_float2');
  });
});

describe('staged epilogue: the residual tile in shared memory', () => {
  it.each([[128, 64, 3], [64, 32, 4], [128, 128, undefined]] as const)('%ix%i, K = 64: residual bytes by cp.async with the k-step, pass 2 reads them from shared memory', (BM, BN, occ) => {
    const k = qgemm({ ...k64, ...tile(BM, BN, occ) }), src = k.source;
    const load = /cp16\(sbase \+ (\d+) \+ id \* 16, res \+ \(int\)m \* 256 \+ n, true\);/.exec(src);
    expect(load).not.toBeNull();
    const rOff = Number(load![1]);
    // after the pipeline stages and the float tile, inside the block's shared memory
    const FP = BN >= 64 ? BN + 8 : BN + 4, stages = 3 * (BM + BN) * 64;
    expect(rOff).toBe(Math.max(stages, BM * FP * 4));
    expect(k.sharedBytes).toBe(rOff + BM * BN + 1024);
    expect(src).toContain(`const uint2 rq = *(const uint2*)(smem + (sbase - (unsigned)__cvta_generic_to_shared(smem)) + ${rOff} + r * ${BN} + q8);`);
    // issued before the first k-step's commit (so its wait covers them), and no L2 prefetch of the same bytes
    expect(src.indexOf('cp16(sbase + ')).toBeLessThan(src.indexOf('cp.async.commit_group'));
    expect(src).not.toContain('cp.async.bulk.prefetch');
    // id -> (row id / CPR, 16-byte chunk id % CPR): every chunk of the tile once, at id * 16 = row * BN + chunk * 16
    expect(src).toContain(`m = m0 + id / ${BN / 16}, n = n0 + id % ${BN / 16} * 16;`);
    expect(src).toContain(`for (int i = 0; i < ${(BM * BN) / 16 / (2 * BM)}; i++)`);
  });

  it('ragged tiles zero-fill the chunks outside the tensor', () => {
    const src = qgemm({ ...k64, M: 1000, N: 208, ...tile(128, 64, 3) }).source;
    expect(src).toMatch(/const bool ok = m < 1000 && n < 208;\s*cp16\(sbase \+ \d+ \+ id \* 16, ok \? res \+ \(int\)m \* 208 \+ n : res, ok\);/);
  });

  it('longer reductions, persistent and split-K grids and N % 16 != 0 keep the global residual read (split layout only)', () => {
    const cases: QGemmArgs[] = [
      { ...k64, K: 128, ...tile(128, 64, 3) }, { ...k64, K: 256, ...tile(128, 128) },
      { ...k64, persistent: 132, ...tile(128, 64, 3) }, { ...k64, M: 1024, K: 2048, splitK: 2, ...tile(64, 64, 4) },
      { ...k64, N: 200, ...tile(128, 64, 3) },
    ];
    for (const g of cases) {
      const src = qgemm(g).source;
      expect(src).toContain('const uint2 rq = *(const uint2*)(res + o);');
      expect(src).not.toMatch(/cp16\(sbase \+ \d+ \+ id \* 16/);
      splitLayout(src);
    }
  });
});

describe('staged epilogue options: scope and the KILN_QEPI switch', () => {
  const { qresidual: _, residualPrefetch: __, ...plainArgs } = k64;
  const plain = { ...plainArgs, ...tile(128, 64, 3) } as QGemmArgs, res = { ...k64, ...tile(128, 64, 3) };

  it('kernels without an 8-bit residual keep their text under the earlier modes; the default splits their float tile too', () => {
    const src = withEnv('qepi', plain).source;
    expect(src).toContain('* 68 + col) = make_float2');
    for (const mode of ['0', 'res', 'banks']) expect(withEnv(mode, plain).source).toBe(src);
    for (const mode of ['all', undefined]) {
      const s = withEnv(mode, plain).source;
      expect(s).not.toBe(src);
      expect(splitLayout(s)).toEqual({ FP: 72, H: 36 });
    }
  });

  it('the default adds the narrow slow-path window and the fixed pass-2 rows; qepi is the kernel before them', () => {
    const has = (src: string) => ({ narrow: /kq_q8x8n\(vv, /.test(src) && /kq_c8n\(vv, /.test(src) && src.includes('0.49993896484375f'), loop: src.includes('const int r0 = tid / 8, q8 = (tid % 8) * 8, n = n0 + q8;') });
    expect(has(withEnv(undefined, res).source)).toEqual({ narrow: true, loop: true });
    expect(has(withEnv('qepi', res).source)).toEqual({ narrow: false, loop: false });
    expect(has(withEnv('qepi,narrow', res).source)).toEqual({ narrow: true, loop: false });
    expect(has(withEnv('qepi,loop', res).source)).toEqual({ narrow: false, loop: true });
    // the rows of the fixed loop: row r0 + i * (TH / CPR) = (tid + i * TH) / CPR, channels (tid % CPR) * 8 = ((tid + i * TH) % CPR) * 8
    expect(withEnv(undefined, res).source).toMatch(/for \(int i = 0; i < 4; i\+\+\) \{\s+const int r = r0 \+ i \* 32, m = m0 \+ r;/);
    expect(withEnv(undefined, { ...k64, ...tile(128, 128) }).source).toMatch(/#pragma unroll 4\s+for \(int i = 0; i < 8; i\+\+\) \{\s+const int r = r0 \+ i \* 16, m = m0 \+ r;/);
    for (const [BM, BN, TH] of [[128, 64, 256], [64, 64, 128], [64, 32, 128], [128, 128, 256]]) {
      const CPR = BN / 8, old = new Set<string>(), fixed = new Set<string>();
      for (let tid = 0; tid < TH; tid++) {
        for (let id = tid; id < BM * CPR; id += TH) old.add(`${tid} ${Math.floor(id / CPR)} ${(id % CPR) * 8}`);
        for (let i = 0; i < (BM * CPR) / TH; i++) fixed.add(`${tid} ${Math.floor(tid / CPR) + i * (TH / CPR)} ${(tid % CPR) * 8}`);
      }
      expect(fixed).toEqual(old);
    }
  });

  it('each mode turns on its own option', () => {
    const has = (src: string) => ({ tile: /cp16\(sbase \+ \d+ \+ id \* 16/.test(src), split: src.includes('(tig >> 1) * 36) = make_float2') });
    expect(has(withEnv(undefined, res).source)).toEqual({ tile: true, split: true });
    expect(has(withEnv('all', res).source)).toEqual({ tile: true, split: true });
    expect(has(withEnv('qepi', res).source)).toEqual({ tile: true, split: true });
    expect(has(withEnv('res', res).source)).toEqual({ tile: true, split: false });
    expect(has(withEnv('banks', res).source)).toEqual({ tile: false, split: true });
    const old = withEnv('0', res);
    expect(has(old.source)).toEqual({ tile: false, split: false });
    expect(old.source).toContain('cp.async.bulk.prefetch.L2.global');
    expect(old.name).not.toBe(withEnv(undefined, res).name);
  });
});

describe('staged epilogue: the fp16 residual tile in shared memory (hres)', () => {
  const { qresidual: _, ...noQ } = k64;
  const f16 = { ...noQ, residual: 'float16', out: 'float16', out2: { store: 'int8', yScale: 0.03, yZeroPoint: 0 } } as QGemmArgs;

  it.each([[128, 64, 3], [64, 64, 4], [64, 32, 4], [128, 128, undefined]] as const)('%ix%i, K = 64: 2 bytes per channel by cp.async with the k-step, pass 2 reads its 16 bytes from shared memory', (BM, BN, occ) => {
    const k = withEnv(undefined, { ...f16, ...tile(BM, BN, occ) }), src = k.source;
    const load = /cp16\(sbase \+ (\d+) \+ id \* 16, res \+ \(int\)m \* 256 \+ n, true\);/.exec(src);
    expect(load).not.toBeNull();
    const rOff = Number(load![1]), CPR = (BN * 2) / 16;
    const FP = BN >= 64 ? BN + 8 : BN + 4, stages = 3 * (BM + BN) * 64;
    expect(rOff).toBe(Math.max(stages, BM * FP * 4));
    expect(k.sharedBytes).toBe(rOff + BM * BN * 2 + 1024);
    expect(src).toContain(`m = m0 + id / ${CPR}, n = n0 + id % ${CPR} * 8;`);
    expect(src).toContain(`for (int i = 0; i < ${(BM * CPR) / (2 * BM)}; i++)`);
    expect(src).toContain(`const uint4 rr = *(const uint4*)(smem + (sbase - (unsigned)__cvta_generic_to_shared(smem)) + ${rOff} + r * ${BN * 2} + q8 * 2);`);
    expect(src.indexOf('cp16(sbase + ')).toBeLessThan(src.indexOf('cp.async.commit_group'));
    expect(src).not.toContain('cp.async.bulk.prefetch');
    // the load puts element (row, n) at rOff + row * BN * 2 + (n - n0) * 2, where pass 2 reads it: every chunk once
    const put = new Map<number, string>();
    for (let id = 0; id < BM * CPR; id++) {
      const row = Math.floor(id / CPR), n = (id % CPR) * 8;
      for (let e = 0; e < 8; e++) put.set(id * 16 + e * 2, `${row} ${n + e}`);
    }
    expect(put.size).toBe(BM * BN);
    for (let r = 0; r < BM; r++) for (let q8 = 0; q8 < BN; q8 += 8) for (let e = 0; e < 8; e++) expect(put.get(r * BN * 2 + q8 * 2 + e * 2)).toBe(`${r} ${q8 + e}`);
  });

  it('KILN_QEPI=qepi2 (and the earlier modes) keep the global read and the L2 prefetch; other kernels keep their text', () => {
    for (const mode of ['qepi2', 'qepi', '0', 'res,split,narrow,loop']) {
      const src = withEnv(mode, { ...f16, ...tile(128, 64, 3) }).source;
      expect(src).toContain('const uint4 rr = *(const uint4*)(res + o);');
      expect(src).toContain('cp.async.bulk.prefetch.L2.global');
      expect(src).not.toMatch(/cp16\(sbase \+ \d+ \+ id \* 16/);
    }
    expect(withEnv('qepi2,hres', { ...f16, ...tile(128, 64, 3) }).source).toBe(withEnv(undefined, { ...f16, ...tile(128, 64, 3) }).source);
    const same: QGemmArgs[] = [
      { ...f16, K: 128, ...tile(128, 64, 3) }, { ...f16, persistent: 132, ...tile(128, 64, 3) }, { ...f16, N: 200, ...tile(128, 64, 3) },
      { ...f16, residual: 'float32', out: 'float32', out2: undefined, ...tile(128, 64, 3) }, { ...noQ, ...tile(128, 64, 3) } as QGemmArgs,
      { ...k64, ...tile(128, 64, 3) }, { ...f16, staged: false, ...tile(128, 64) },
    ];
    for (const g of same) expect(withEnv(undefined, g).source).toBe(withEnv('qepi2', g).source);
  });

  it('ragged tiles zero-fill the chunks outside the tensor', () => {
    const src = withEnv(undefined, { ...f16, M: 1000, N: 208, ...tile(64, 64, 4) }).source;
    expect(src).toMatch(/const bool ok = m < 1000 && n < 208;\s*cp16\(sbase \+ \d+ \+ id \* 16, ok \? res \+ \(int\)m \* 208 \+ n : res, ok\);/);
  });
});

/** A float32 (as a number) as m * 2^e, m an integer. */
function exact(x: number): [bigint, number] {
  if (x === 0) return [0n, 0];
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, x);
  const hi = dv.getUint32(0), lo = dv.getUint32(4), be = (hi >>> 20) & 0x7ff;
  const m = ((BigInt(hi & 0xfffff) | (be ? 0x100000n : 0n)) << 32n) | BigInt(lo);
  return [x < 0 ? -m : m, (be || 1) - 1075];
}
/** |a - b * c| of float values, exactly, as m * 2^e. */
function absDiff(a: number, b: number, c: number): [bigint, number] {
  const [ma, ea] = exact(a), [mb, eb] = exact(b), [mc, ec] = exact(c), e = Math.min(ea, eb + ec);
  const d = (ma << BigInt(ea - e)) - ((mb * mc) << BigInt(eb + ec - e));
  return [d < 0n ? -d : d, e];
}
const lessThan = ([m1, e1]: [bigint, number], [m2, e2]: [bigint, number]) => { const e = Math.min(e1, e2); return m1 << BigInt(e1 - e) < m2 << BigInt(e2 - e); };
const f32 = Math.fround, M = 12582912;
const ulpStep = (x: number, dir: 1 | -1) => { const b = new Float32Array([x]), u = new Int32Array(b.buffer); u[0] += (x >= 0 ? dir : -dir); return b[0]; };
/** v / y rounded to float32, exactly (the nearest of three candidates by exact remainders; ties to the even one). */
function div32(v: number, y: number): number {
  const c = f32(v / y);
  let best = c, bd = absDiff(v, c, y);
  for (const n of [ulpStep(c, 1), ulpStep(c, -1)]) {
    const d = absDiff(v, n, y);
    if (lessThan(d, bd) || (!lessThan(bd, d) && (new Int32Array(new Float32Array([n]).buffer)[0] & 1) === 0)) { best = n; bd = d; }
  }
  return best;
}
const rintEven = (x: number) => { const f = Math.floor(x), d = x - f; return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1; };

describe('the narrow slow-path window (KQ8N_HELPERS)', () => {
  it('outside 2^-14 of a half-integer v * r rounds as the true division does (float32 emulated, exact quotients)', () => {
    let s = 12345;
    const rnd = () => { s = (s * 1103515245 + 12345) >>> 0; return s / 2 ** 32; };
    const thrOld = f32(0.499755859), thrNew = 0.49993896484375;
    let n = 0, slowOld = 0, slowNew = 0, between = 0;
    for (const [lo, hi] of [[-128, 127], [-128, 127 - 3], [-3, 252], [0, 127]]) {
      for (let i = 0; i < 6000; i++) {
        const y = f32(i % 3 === 0 ? [0.05, 0.029, 0.037, 0.013][i % 4] : 2 ** (-12 + 12 * rnd()));
        const r = f32(1 / y);
        const k = Math.floor(rnd() * 560) - 280;
        // near a half-integer (|d| up to 2^-10, many between 2^-14 and 2^-12), or anywhere in range
        const d = i % 2 ? (rnd() - 0.5) * 2 ** -9 : rnd();
        const v = f32((k + (i % 2 ? 0.5 : 0) + d) * y);
        const p = f32(v * r), q = Math.min(Math.max(p, lo), hi), t = f32(q + M), off = Math.abs(q - (t - M));
        const ref = rintEven(Math.min(Math.max(div32(v, y), lo), hi));
        n++;
        if (off >= thrOld) slowOld++;
        if (off >= thrNew) slowNew++;
        else expect([v, y, t - M]).toEqual([v, y, ref]);
        if (off >= thrOld && off < thrNew) between++;
        if (q > lo && q < hi) expect(Math.abs(p - div32(v, y))).toBeLessThan(1.26 * 2 ** -15);
      }
    }
    // the old window flags 4x as many; every output that leaves the slow path was checked above
    expect(between).toBeGreaterThan(500);
    expect(slowNew).toBeLessThan(slowOld);
    expect(n).toBe(24000);
  });
});

describe.skipIf(!hasNvcc)('staged epilogue options compile with nvcc for sm_90a', () => {
  it('residual tile and split layout variants: no warnings, spills or local memory', () => {
    const u8 = { a: 'uint8', scale: 0.021, zeroPoint: 128, c: 'uint8', cScale: 0.013, cZeroPoint: 128 } as const;
    const units: [string, QGemmArgs][] = [
      ['t128x64', { ...k64, ...tile(128, 64, 3) }], ['t64x32', { ...k64, ...tile(64, 32, 4) }], ['t128x128', { ...k64, ...tile(128, 128) }],
      ['t64x64d', { ...k64, ...tile(64, 64, 5), stages: 2, drain: true }],
      ['u8', { ...k64, a: 'uint8', out: 'uint8', yZeroPoint: 3, qresidual: u8, ...tile(128, 64, 3) }],
      ['ragged', { ...k64, M: 1000, N: 208, ...tile(128, 64, 3) }], ['fp16out', { ...k64, M: 1568, N: 2048, K: 512, out: 'float16', ...tile(128, 128), stages: 3 }],
    ];
    // the fp16 residual tile (hres): fp16 out + int8 second output, and int8 out
    const { qresidual: _, ...noQ } = k64;
    const f16 = { ...noQ, residual: 'float16', out: 'float16', out2: { store: 'int8', yScale: 0.03, yZeroPoint: 0 } } as QGemmArgs;
    for (const [n, BM, BN, occ] of [['h128x64', 128, 64, 3], ['h64x64', 64, 64, 4], ['h64x32', 64, 32, 4], ['h128x128', 128, 128, undefined]] as const) units.push([n, { ...f16, ...tile(BM, BN, occ) }]);
    units.push(['h8', { ...f16, out: 'int8', out2: undefined, ...tile(64, 64, 5), stages: 2, drain: true }], ['hragged', { ...f16, M: 1000, N: 208, ...tile(64, 64, 4) }]);
    expectCleanCompile(units.map(([n, g]) => [n, qgemm(g).source] as [string, string]), 'sm_90a');
  }, 300_000);
});

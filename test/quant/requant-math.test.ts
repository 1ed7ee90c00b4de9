// The GPU epilogue's FMA-pipe arithmetic (KQ_HELPERS in src/backends/cuda/codegen/quant.ts) replayed in float32 on
// the CPU: kq_i2f22 must equal (float)int exactly, and kq_q8's fast path (v * (1/y) clamped, rounded by the 1.5 * 2^23
// add) must equal rintf(clamp(v / y)) whenever it does not defer to the true division, on random operands and on
// quotients next to half-integers (the only place the two can differ). Float32 steps are emulated with Math.fround: each product of two
// floats is exact in a double, and the sums here are exact in a double wherever float rounding could hit a tie.
import { describe, expect, it } from 'vitest';
import { qgemm, quantizeKernel, type QGemmArgs } from '../../src/backends/cuda/codegen/quant.js';

const f = Math.fround;
const M = 12582912; // 1.5 * 2^23
const bits = new Float32Array(1), ibits = new Int32Array(bits.buffer);
const asInt = (x: number) => { bits[0] = x; return ibits[0]; };
const asFloat = (i: number) => { ibits[0] = i | 0; return bits[0]; };
const next = (x: number, dir: 1 | -1) => asFloat(asInt(x) + (x >= 0 ? dir : -dir));
/** rintf: round half to even. */
function rint(x: number): number {
  const fl = Math.floor(x), d = x - fl;
  return d > 0.5 ? fl + 1 : d < 0.5 ? fl : fl % 2 === 0 ? fl : fl + 1;
}
const clamp = (x: number, lo: number, hi: number) => Math.min(Math.max(x, lo), hi);

/** kq_q8's fast path: the integer and whether the kernel defers to v / y instead. */
function fastRint(v: number, y: number, lo: number, hi: number): { i: number; defer: boolean } {
  const r = f(1 / f(y));
  const q = clamp(f(v * r), lo, hi), t = f(q + M);
  const d = f(q - f(t - M));
  return { i: asInt(t) - 0x4b400000, defer: Math.abs(d) >= f(0.499755859) };
}
const exact = (v: number, y: number, lo: number, hi: number) => rint(clamp(f(f(v) / f(y)), lo, hi));
// the 8-bit stores' bounds less the zero point: int8 zp 0, uint8 zp 0, uint8 zp 255, int8 zp -128
const BOUNDS = [[-128, 127], [0, 255], [-255, 0], [0, 255 - 128 + 128]];

function rng(seed: number) {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
}

describe('quantized epilogue arithmetic on the FMA pipe', () => {
  it('kq_i2f22 converts int32 below 2^22 exactly', () => {
    const rand = rng(1);
    const ints = [0, 1, -1, 2 ** 22 - 1, -(2 ** 22), 12345, -4095];
    for (let k = 0; k < 200000; k++) ints.push(Math.floor((rand() - 0.5) * 2 ** (1 + Math.floor(rand() * 23))));
    for (const a of ints) expect(f(asFloat(0x4b400000 + a) - M)).toBe(a);
  });

  it('kq_rint equals rintf(v / y) wherever it does not defer to the division', () => {
    const rand = rng(7);
    let checked = 0, randomDeferred = 0, randomChecked = 0;
    const probe = (v: number, y: number, random = false) => {
      for (const [lo, hi] of BOUNDS) {
        const { i, defer } = fastRint(v, y, lo, hi);
        if (random) { randomDeferred += +defer; randomChecked += +!defer; }
        if (defer) continue;
        checked++;
        if (i !== exact(v, y, lo, hi)) expect({ v, y, lo, hi, i, ref: exact(v, y, lo, hi) }).toBeUndefined();
      }
    };
    for (let k = 0; k < 3000; k++) {
      const y = f(10 ** (-4 + 5 * rand()));
      // quotients next to half-integers: the 25 floats around (n + 0.5) * y (the inner ones defer, the outer ones not)
      for (let j = 0; j < 40; j++) {
        const n = Math.floor((rand() - 0.5) * 600) + 0.5;
        let v = f(n * y);
        for (let s = 0; s < 12; s++) v = next(v, -1);
        for (let s = 0; s < 25; s++, v = next(v, 1)) probe(v, y);
      }
      for (let j = 0; j < 100; j++) probe(f((rand() - 0.5) * 700 * y), y, true);
      probe(f(5000 * y), y); probe(f(-1e30), y); probe(0, y); probe(-0, y); probe(f(1e-40), y);
    }
    expect(checked).toBeGreaterThan(1000000);
    // the true division runs for quotients within 2^-12 of a half-integer only: rare on ordinary values
    expect(randomDeferred).toBeLessThan(randomChecked / 200);
  });

  it('8-bit stores use kq_q8 and the FMA-pipe conversion unless the first arithmetic is asked for', () => {
    const g: QGemmArgs = { M: 256, N: 64, K: 64, a: 'int8', activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 3 };
    const now = qgemm({ ...g, wgmma: true, tile: { BM: 128, BN: 64 } }).source;
    expect(now).toMatch(/\(signed char\)\(kq_q8\(v0, 20\.0000000f, 0\.0500000007f, -131\.0f, 124\.0f\) \+ 3\)/);
    expect(now).toMatch(/kq_i2f22\(accum/);
    expect(now).not.toMatch(/rintf\(/);
    // staged: 8 channels at once, the Relu folded into the lower bound
    const staged = qgemm({ ...g, wgmma: true, tile: { BM: 128, BN: 64 }, staged: true }).source;
    expect(staged).toMatch(/= kq_q8x8n\(vv, 20\.0000000f, 0\.0500000007f, 0\.0f, 124\.0f, 3\)/);
    expect(staged).not.toMatch(/k_relu\(v\)/);
    expect(qgemm({ ...g, K: 768, wgmma: true }).source).toMatch(/\(float\)\(accum/); // past 2^22: I2F
    const v1 = qgemm({ ...g, wgmma: true, tile: { BM: 128, BN: 64 }, v1Epilogue: true }).source;
    expect(v1).toMatch(/rintf\(\(v0\) \/ 0\.0500000007f\) \+ 3\.0f/);
    expect(v1).toMatch(/\(float\)\(accum/);
    // a scale whose reciprocal is not a normal float keeps the division
    expect(quantizeKernel({ n: 16, from: 'float32', to: 'uint8', scale: 2 ** 127, zeroPoint: 0 }).source).toMatch(/rintf\(/);
  });
});

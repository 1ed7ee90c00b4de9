// The quantized GEMM variants of two ResNet-50 layers, each launched once, for Nsight Compute (which replays each
// launch per counter pass): `ncu --clock-control none --kernel-name regex:kiln_q node bench/quant/gpu-ncu.js run`.
// Layers: the 1x1 56px 64->256 convolution (M 100352, N 256, K 64: one k-step per tile, the epilogue is most of the
// work), the 1x1 28px 128->512 one (M 25088, N 512, K 128) and the 3x3 14px 256->256 one (implicit im2col). `dump <dir>` writes each kernel's CUDA source and
// a name list instead (no device), for nvcc's resource report and SASS.
// c3res: ResNet-50 layer 1's conv3 (the k64 shape with an int8 residual, as the --quantize-residual model runs it);
// c3f16: the same conv3 in the default file (fp16 residual, fp16 out + int8 second output). `_q2` variants: KILN_QEPI=qepi2.
// A variant named `..._old` is made with KILN_QEPI=0 (the staged epilogue before quant-wgmma.ts stagedEpilogueOptions).
// Usage: [NCU_LAYERS=k64,c3] [NCU_SC=real] node bench/quant/gpu-ncu.js run|dump <dir> [variant,...]
// Per-instruction counts (helper qepi2): ncu --section SourceCounters --page source --print-source sass --csv ...
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qgemm, type QGemmArgs } from '../../src/backends/cuda/codegen/quant.js';

const SMS = 132;
const c3 = { H: 14, W: 14, C: 256, OH: 14, OW: 14, KH: 3, KW: 3, strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1] };
const layers: Record<string, QGemmArgs> = {
  k64: { M: 100352, N: 256, K: 64, a: 'int8', activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 0 },
  k128: { M: 25088, N: 512, K: 128, a: 'int8', activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 0 },
  // 3x3 14px 256->256 (M 6272, K 2304): implicit im2col, the main loop's share is larger
  c3: { M: 6272, N: 256, K: 2304, a: 'int8', conv: c3, activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 0 },
  c3res: {
    M: 100352, N: 256, K: 64, a: 'int8', activation: 'Relu', params: [], out: 'int8', yScale: 0.05, yZeroPoint: 0, residualPrefetch: true,
    qresidual: { a: 'int8', scale: 0.037, zeroPoint: 0, c: 'int8', cScale: 0.029, cZeroPoint: 0 },
  },
  // c3f16: the same conv3 as the default file runs it (fp16 residual, fp16 out and the int8 second output)
  c3f16: {
    M: 100352, N: 256, K: 64, a: 'int8', activation: 'Relu', params: [], out: 'float16', yScale: 0.05, yZeroPoint: 0, residualPrefetch: true,
    residual: 'float16', out2: { store: 'int8', yScale: 0.03, yZeroPoint: 0 },
  },
};
export const NCU_VARIANTS: Record<string, Partial<QGemmArgs>> = {
  ld_v1: { v1Epilogue: true },
  wg64_v1: { wgmma: true, tile: { BM: 128, BN: 64 }, v1Epilogue: true },
  wg64: { wgmma: true, tile: { BM: 128, BN: 64 } },
  wg64s_v1: { wgmma: true, tile: { BM: 128, BN: 64 }, staged: true, occupancy: 3, v1Epilogue: true },
  wg64s: { wgmma: true, tile: { BM: 128, BN: 64 }, staged: true, occupancy: 3 },
  wg64s4: { wgmma: true, tile: { BM: 128, BN: 64 }, staged: true, occupancy: 4 },
  wg64x64s: { wgmma: true, tile: { BM: 64, BN: 64 }, staged: true, occupancy: 4 },
  wg64x64s_v1: { wgmma: true, tile: { BM: 64, BN: 64 }, staged: true, occupancy: 4, v1Epilogue: true },
  wgp64s: { wgmma: true, tile: { BM: 128, BN: 64 }, staged: true, occupancy: 3, persistent: SMS },
  // the tactic's choice for c3res in the model (ops-quant.ts layerGemm wgs[3]), before and after the epilogue options
  wg128s: { wgmma: true, tile: { BM: 128, BN: 128 }, staged: true },
  wg128s_old: { wgmma: true, tile: { BM: 128, BN: 128 }, staged: true },
  // the model's other c3res picks (layerGemm wgs[4] and wgs[8])
  wg128s3: { wgmma: true, tile: { BM: 128, BN: 128 }, staged: true, occupancy: 2, stages: 3 },
  wg64d5: { wgmma: true, tile: { BM: 64, BN: 64 }, staged: true, occupancy: 5, stages: 2, drain: true },
  // `_q2`: KILN_QEPI=qepi2, before helper qepi3's fp16 residual tile (c3f16's model picks: layerGemm wgs[1] and wgs[7])
  wg64x64s_q2: { wgmma: true, tile: { BM: 64, BN: 64 }, staged: true, occupancy: 4 },
  wg64d5_q2: { wgmma: true, tile: { BM: 64, BN: 64 }, staged: true, occupancy: 5, stages: 2, drain: true },
};
const make = (g: QGemmArgs, v: string) => {
  if (v.endsWith('_old')) process.env.KILN_QEPI = '0';
  if (v.endsWith('_q2')) process.env.KILN_QEPI = 'qepi2';
  try { return qgemm({ ...g, ...NCU_VARIANTS[v] }); } finally { delete process.env.KILN_QEPI; }
};
const [mode, dir, pick] = process.argv.slice(2);
const names = pick ? pick.split(',') : Object.keys(NCU_VARIANTS);
const only = process.env.NCU_LAYERS?.split(',');
const kernels = Object.entries(layers).filter(([l]) => !only || only.includes(l)).flatMap(([l, g]) => names.map((v) => [`${l}_${v}`, g, make(g, v)] as const));

if (mode === 'dump') {
  mkdirSync(dir, { recursive: true });
  for (const [n, , k] of kernels) writeFileSync(join(dir, `${n}.cu`), k.source);
  writeFileSync(join(dir, 'names.txt'), kernels.map(([n, , k]) => `${n} ${k.name} grid ${k.grid.join('x')} block ${k.block[0]} smem ${k.sharedBytes}`).join('\n') + '\n');
} else {
  const { getDevice } = await import('../../src/backends/cuda/device.js');
  const dev = getDevice(0);
  const rand = (bytes: number, seed: number, mask = 0xff) => {
    const a = new Uint8Array(bytes);
    let s = seed;
    for (let i = 0; i < bytes; i++) { s = (s * 1103515245 + 12345) >>> 0; a[i] = (s >>> 16) & mask; }
    const p = dev.alloc(bytes, true);
    dev.upload(p, a, null);
    return p;
  };
  for (const [n, g, k] of kernels) {
    const ob = g.out === 'float16' ? 2 : 1, o2 = g.out2 ? g.M * g.N : 0;
    const x = rand(g.conv ? 32 * g.conv.H * g.conv.W * g.conv.C : g.M * g.K, 1), w = rand(g.N * g.K, 2), sc = dev.alloc(8 * g.N, true), out = dev.alloc(g.M * g.N * ob + o2, true);
    const res = g.qresidual ? rand(g.M * g.N, 3) : g.residual === 'float16' ? rand(g.M * g.N * 2, 3, 0x3f) : 0; // fp16: finite halves in [0, 2)
    // NCU_SC=real: gpu-layers.js qepi's scales (sums of a few units: most outputs inside the 8-bit range, as in a
    // calibrated model) instead of 1e-4 (most clamped)
    const scale = (i: number) => (process.env.NCU_SC === 'real' ? (1.6e-4 / Math.sqrt(g.K)) * (1 + (i % 3)) : 1e-4);
    const offset = (i: number) => 0.01 * (i % 7) - (process.env.NCU_SC === 'real' ? 0.03 : 0);
    dev.upload(sc, new Float32Array(2 * g.N).map((_, i) => (i < g.N ? scale(i) : offset(i))), null);
    dev.kernel(k);
    dev.launch(k, [x, w, sc, ...(res ? [res] : []), out, ...(o2 ? [out + g.M * g.N * ob] : [])], null);
    dev.sync(null);
    console.log(`${n}: ${k.name} grid ${k.grid.join('x')} block ${k.block[0]} smem ${k.sharedBytes}`);
    for (const p of [x, w, sc, out, ...(res ? [res] : [])]) dev.release(p);
  }
}
process.exit(0);

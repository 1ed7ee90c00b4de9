// GPU check of the quantized engines (issue 8): each small zoo model quantized by Kiln (int8 and fp8), built for
// cuda and for the reference CPU executor, run on the same seeded inputs; PASS when every quantized layer ran on the
// GPU and the outputs agree within one LSB of the output scale (float outputs: |diff| <= 1 LSB of amax/127 for int8,
// relative 2e-2 for fp8). Also runs the QMatMul of BERT-small through cuBLASLt (KILN_QGEMM=cublaslt) as a second path,
// the wgmma kernel (KILN_QGEMM=wgmma, =wgmma-staged, =wgmma64; Hopper), and fp16 builds (the speed configuration: fp16 residuals and float outputs around the quantized layers) against the
// CPU engine built at fp16 too.
// Usage (GPU machine): node bench/gpu/quant-check.js (QCHECK=residual: the --quantize-residual rows only; QCHECK=fp8:
// the fp8 rows only)
import { resnet50, RESNET_SMALL, bertBase, BERT_SMALL, tinyCnn } from '../models/zoo.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import type { Model } from '../../src/ir/graph.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import { TensorData } from '../../src/ir/tensor.js';
import type { CudaRunner } from '../../src/backends/cuda/runner.js';
import { quantizedRoutes } from '../quant/feeds.js';
import { gemmChoices } from '../../src/backends/cuda/ffi/cublaslt.js';

let failures = 0;
// QCHECK=residual: only the --quantize-residual rows (a quick rerun after a change to that epilogue alone); QCHECK=fp8:
// only the fp8 rows
const only = process.env.QCHECK === 'residual', onlyFp8 = process.env.QCHECK === 'fp8';
const report = (ok: boolean, what: string) => {
  if (!ok) failures++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
};

async function check(name: string, make: () => Model, mode: 'int8' | 'fp8', batch: number, env?: string, precision: 'fp32' | 'fp16' = 'fp32', activationType?: 'uint8', quantizeResidual = false) {
  if ((only && !quantizeResidual) || (onlyFp8 && mode !== 'fp8')) return;
  const m = make();
  const data = randomCalibrationData(m.graph, batch, { seed: 9 });
  const shapes = Object.fromEntries([...data].map(([k, t]) => [k, [...t.dims]]));
  const { model: q } = quantizeModel(m, { mode, activationType, quantizeResidual, calibrationData: randomCalibrationData(m.graph, 4, { seed: 1 }), evalData: randomCalibrationData(m.graph, 1, { seed: 2 }), batchSize: 4 });
  const label = `${name} ${mode}${activationType ? ` (${activationType} activations)` : ''}${quantizeResidual ? ' --quantize-residual' : ''}`;
  if (env) process.env.KILN_QGEMM = env;
  try {
    const gpu = await Engine.load(await build(q, { device: 'cuda', precision, shapes }));
    // QCHECK_CHOICES=1: the tactic picks (choice key -> candidate index) the build made, for a failure's diagnosis
    if (process.env.QCHECK_CHOICES) console.log(JSON.stringify([...gemmChoices].filter(([k]) => k.startsWith('qgemm'))));
    // an fp16 build is compared with the CPU engine built the same way (fp16 residuals and float outputs, NHWC)
    const cpu = await Engine.load(await build(q, { device: 'cpu', shapes, ...(precision === 'fp16' ? { precision, layout: 'NHWC' as const } : {}) }));
    const feeds: Record<string, Tensor> = {};
    for (const [k, t] of data) feeds[k] = new Tensor(t.dtype as 'float32', t.data as Float32Array, [...t.dims]);
    const [a, b] = [await gpu.createContext().run(feeds), await cpu.createContext().run(feeds)];
    await gpu.createContext().run(feeds); // second run: the captured CUDA graph must agree too
    const c = await gpu.createContext().run(feeds);
    const runner = (gpu as unknown as { runner: CudaRunner }).runner;
    // --quantize-residual: the GPU build folds each residual Add into the conv before it (8-bit residual)
    // (a layer's inputs in the header leave out its constants: the residual follows the activation)
    const folded = (gpu.header.layers as { opType?: string; inputs?: { dtype?: string }[] }[]).filter((l) => l.opType === 'QConv' && (l.inputs ?? []).slice(1).some((i) => i.dtype === 'int8' || i.dtype === 'uint8')).length;
    if (quantizeResidual) report(folded > 0, `${label}${env ? ` (${env})` : ''}${precision === 'fp16' ? ' [fp16 build]' : ''}: ${folded} convs with an 8-bit residual`);
    const qOnCpu = [...runner.cpuLayers].filter((l) => q.graph.nodes.some((n) => n.name === l));
    for (const out of Object.keys(b)) {
      const x = (a[out] as Tensor).data as Float32Array, y = (b[out] as Tensor).data as Float32Array, z = (c[out] as Tensor).data as Float32Array;
      let amax = 0, maxDiff = 0, replayDiff = 0, dot = 0, nx = 0, ny = 0;
      for (let i = 0; i < y.length; i++) {
        amax = Math.max(amax, Math.abs(y[i]));
        maxDiff = Math.max(maxDiff, Math.abs(x[i] - y[i]));
        replayDiff = Math.max(replayDiff, Math.abs(z[i] - x[i]));
        dot += x[i] * y[i]; nx += x[i] * x[i]; ny += y[i] * y[i];
      }
      const cos = dot / Math.sqrt(nx * ny);
      const lsb = mode === 'int8' ? amax / 127 : amax * 2e-2;
      report(maxDiff <= lsb && replayDiff === 0, `${label}${env ? ` (${env})` : ''}${precision === 'fp16' ? ' [fp16 build]' : ''} ${out}: max |gpu-ref| ${maxDiff.toExponential(2)} = ${(maxDiff / (amax / 127)).toFixed(3)} LSB, cosine ${cos.toFixed(5)}, replay diff ${replayDiff}`);
    }
    const gpuLayers = (gpu.header.layers as { opType?: string; name: string }[]).length;
    // every layer on the GPU (a CPU layer inside the engine costs a round trip and keeps the run out of a CUDA graph)
    report(qOnCpu.length === 0 && runner.cpuLayers.size === 0, `${label}${precision === 'fp16' ? ' [fp16 build]' : ''}: ${gpuLayers} layers, on the CPU: ${JSON.stringify([...runner.cpuLayers])} ${JSON.stringify([...runner.fallbackReasons].slice(0, 3))}`);
    gpu.dispose();
  } catch (e) {
    report(false, `${label}: ${(e as Error).stack?.split('\n').slice(0, 4).join(' | ')}`);
  } finally {
    delete process.env.KILN_QGEMM;
  }
}

await check('tiny-cnn', () => tinyCnn(), 'int8', 3);
await check('resnet50-small', () => resnet50(RESNET_SMALL), 'int8', 2);
await check('resnet50-small', () => resnet50(RESNET_SMALL), 'fp8', 2);
// two blocks per stage: the residual stream between blocks is quantized inside the NHWC region
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1] }), 'int8', 2);
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1] }), 'int8', 2, undefined, 'fp16');
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1] }), 'fp8', 2, undefined, 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2);
await check('bert-small', () => bertBase(BERT_SMALL), 'fp8', 2);
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, undefined, 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'fp8', 2, undefined, 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, 'cublaslt');
await check('bert-small', () => bertBase(BERT_SMALL), 'fp8', 2, 'cublaslt');
// Hopper: every int8 GEMM forced onto the wgmma kernel (the timed tactic picks it only where it is fastest; fp8 wgmma
// is not a candidate: its accumulation is less precise, see src/backends/cuda/codegen/quant.ts)
// uint8 activations (onnxruntime's format: zero point 0 on non-negative tensors, 128 on signed ones) on the GPU path
for (const precision of ['fp32', 'fp16'] as const) {
  await check('tiny-cnn', () => tinyCnn(), 'int8', 3, undefined, precision, 'uint8');
  await check('resnet50-small', () => resnet50(RESNET_SMALL), 'int8', 2, undefined, precision, 'uint8');
}
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16 }), 'int8', 2, 'wgmma');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, 'wgmma');
// the staged-epilogue wgmma variants, in fp16 builds too (fp16 outputs, fp16 residuals, int8 second outputs)
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16 }), 'int8', 2, 'wgmma-staged');
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16 }), 'int8', 2, 'wgmma-staged', 'fp16');
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16 }), 'int8', 2, 'wgmma64', 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, 'wgmma-staged', 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, 'wgmma64');
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16 }), 'int8', 2, 'wgmma-persistent-staged', 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, 'wgmma-persistent-staged', 'fp16');
// kiln:QLayerNormalization (the GPU's 'quantize in layer norms' stage) against the unfused pair on the GPU, byte for
// byte: x -> MatMul (fp16 in an fp16 build) -> LayerNormalization -> QuantizeLinear. A QuantizeLinear whose output is a
// graph output is not fused, so the same graph with the quantized tensor as an output (not through DequantizeLinear)
// runs the standalone QuantizeLinear kernel on the same fp16 norm output.
async function lnCheck(rows: number, n: number, dtype: 'int8' | 'uint8', zp: number, precision: 'fp32' | 'fp16') {
  if (only || onlyFp8) return;
  const r = seededRandom(n + rows);
  const make = (fused: boolean) => {
    const b = new GraphBuilder('ln_q');
    const x = b.input('x', 'float32', [rows, 64]);
    const h = b.op('MatMul', [x, b.initializer('w', randomTensor(seededRandom(1), [64, n], 0.5))]);
    const y = b.op('LayerNormalization', [h, b.initializer('g', randomTensor(seededRandom(2), [n], 1)), b.initializer('b', randomTensor(seededRandom(3), [n], 0.5))]);
    const s = b.initializer('s', TensorData.scalar('float32', 0.019)), z = b.initializer('z', TensorData.scalar(dtype, zp));
    const q = b.op('QuantizeLinear', [y, s, z]);
    b.output(y, { kind: 'tensor', dtype: 'float32', shape: [rows, n] });
    if (fused) b.output(b.op('Cast', [b.op('DequantizeLinear', [q, s, z])], { to: 1 }), { kind: 'tensor', dtype: 'float32', shape: [rows, n] });
    else b.output(q, { kind: 'tensor', dtype, shape: [rows, n] });
    return b.model(17);
  };
  const feeds = { x: new Tensor('float32', Float32Array.from({ length: rows * 64 }, () => r() * 2 - 1), [rows, 64]) };
  const what = `layernorm+quantize ${rows}x${n} ${dtype} zp ${zp} [${precision}]`;
  try {
    const [fused, plain] = [await Engine.load(await build(make(true), { device: 'cuda', precision })), await Engine.load(await build(make(false), { device: 'cuda', precision }))];
    const ops = (e: Engine) => (e.header.layers as { opType?: string }[]).map((l) => l.opType);
    const [a, b] = [await fused.createContext().run(feeds), await plain.createContext().run(feeds)];
    const names = Object.keys(a);
    const deq = (a[names[1]] as Tensor).data as Float32Array, qv = (b[Object.keys(b)[1]] as Tensor).data as Int8Array | Uint8Array;
    let bad = 0;
    for (let i = 0; i < qv.length; i++) if (deq[i] !== Math.fround((qv[i] - zp) * Math.fround(0.019))) bad++;
    const ya = (a[names[0]] as Tensor).data as Float32Array, yb = (b[Object.keys(b)[0]] as Tensor).data as Float32Array;
    const ySame = ya.every((v, i) => v === yb[i]);
    report(bad === 0 && ySame && ops(fused).includes('QLayerNormalization') && !ops(plain).includes('QLayerNormalization'),
      `${what}: fused ${JSON.stringify(ops(fused))} vs unfused: ${bad} quantized values differ, norm output ${ySame ? 'identical' : 'DIFFERS'}`);
    fused.dispose(); plain.dispose();
  } catch (e) {
    report(false, `${what}: ${(e as Error).stack?.split('\n').slice(0, 4).join(' | ')}`);
  }
}
// kiln:QMatMul with `heads` (BERT's Q/K/V written head-split by the staged wgmma epilogue) against the same model with
// the direct wgmma route forced, which writes the plain [M, N] result and splits it with headSplitKernel: both are
// exact integer GEMMs with the same epilogue arithmetic, so every output must be bit-identical.
async function headsCheck() {
  if (only || onlyFp8) return;
  const m = bertBase(BERT_SMALL);
  const data = randomCalibrationData(m.graph, 2, { seed: 9 });
  const shapes = Object.fromEntries([...data].map(([k, t]) => [k, [...t.dims]]));
  const { model: q } = quantizeModel(m, { mode: 'int8', calibrationData: randomCalibrationData(m.graph, 4, { seed: 1 }), batchSize: 4 });
  const feeds: Record<string, Tensor> = {};
  for (const [k, t] of data) feeds[k] = new Tensor(t.dtype as 'float32', t.data as Float32Array, [...t.dims]);
  const run = async (env?: string) => {
    if (env) process.env.KILN_QGEMM = env;
    try {
      const e = await Engine.load(await build(q, { device: 'cuda', precision: 'fp16', shapes }));
      const heads = (e.header.layers as { opType?: string; outputs?: unknown[] }[]).filter((l) => l.opType === 'QMatMul' && (l.outputs?.length ?? 0) === 3).length;
      const out = await e.createContext().run(feeds);
      e.dispose();
      return { heads, out: Object.values(out).map((t) => (t as Tensor).data as Float32Array) };
    } finally {
      delete process.env.KILN_QGEMM;
    }
  };
  try {
    const [a, b] = [await run(), await run('wgmma')];
    let diff = 0;
    a.out.forEach((x, i) => x.forEach((v, k) => { if (v !== b.out[i][k]) diff++; }));
    report(a.heads > 0 && a.heads === b.heads && diff === 0, `bert-small int8 [fp16 build] head-split QMatMuls (${a.heads}): staged epilogue vs wgmma + headSplitKernel: ${diff} output values differ`);
  } catch (e) {
    report(false, `bert-small head split: ${(e as Error).stack?.split('\n').slice(0, 4).join(' | ')}`);
  }
}
await headsCheck();

// kiln:QTranspose (attention's output back to [B, S, H * D], quantized as it moves) against Transpose + QuantizeLinear
// on the GPU, byte for byte (a QuantizeLinear whose output is a graph output is not fused): x -> MatMul ->
// Reshape [B, S, H, D] -> Transpose (0,2,1,3) -> Reshape [B, S, H * D] -> QuantizeLinear.
async function qtCheck(B: number, S: number, H: number, D: number, dtype: 'int8' | 'uint8', zp: number, precision: 'fp32' | 'fp16') {
  if (only || onlyFp8) return;
  const r = seededRandom(B * S + D);
  const make = (fused: boolean) => {
    const b = new GraphBuilder('qt');
    const x = b.input('x', 'float32', [B, S, 64]);
    const h = b.op('Reshape', [b.op('MatMul', [x, b.initializer('w', randomTensor(seededRandom(4), [64, S * H * D / S], 0.5))]), b.initializer('s4', TensorData.fromBigInts('int64', [4], [B, S, H, D].map(BigInt)))]);
    const t = b.op('Reshape', [b.op('Transpose', [h], { perm: [0, 2, 1, 3] }), b.initializer('s3', TensorData.fromBigInts('int64', [3], [B, H, S * D].map(BigInt)))]);
    const s = b.initializer('s', TensorData.scalar('float32', 0.017)), z = b.initializer('z', TensorData.scalar(dtype, zp));
    const q = b.op('QuantizeLinear', [t, s, z]);
    if (fused) b.output(b.op('DequantizeLinear', [q, s, z]), { kind: 'tensor', dtype: 'float32', shape: [B, H, S * D] });
    else b.output(q, { kind: 'tensor', dtype, shape: [B, H, S * D] });
    return b.model(17);
  };
  const feeds = { x: new Tensor('float32', Float32Array.from({ length: B * S * 64 }, () => r() * 2 - 1), [B, S, 64]) };
  const what = `transpose+quantize [${B},${H},${S},${D}] (0,2,1,3) ${dtype} zp ${zp} [${precision}]`;
  try {
    const [fused, plain] = [await Engine.load(await build(make(true), { device: 'cuda', precision })), await Engine.load(await build(make(false), { device: 'cuda', precision }))];
    const ops = (e: Engine) => (e.header.layers as { opType?: string }[]).map((l) => l.opType);
    const [a, b] = [await fused.createContext().run(feeds), await plain.createContext().run(feeds)];
    const deq = (Object.values(a)[0] as Tensor).data as Float32Array, qv = (Object.values(b)[0] as Tensor).data as Int8Array | Uint8Array;
    let bad = 0;
    for (let i = 0; i < qv.length; i++) if (deq[i] !== Math.fround((qv[i] - zp) * Math.fround(0.017))) bad++;
    report(bad === 0 && ops(fused).includes('QTranspose') && !ops(plain).includes('QTranspose'), `${what}: fused ${JSON.stringify(ops(fused))} vs unfused: ${bad} of ${qv.length} quantized values differ`);
    fused.dispose(); plain.dispose();
  } catch (e) {
    report(false, `${what}: ${(e as Error).stack?.split('\n').slice(0, 4).join(' | ')}`);
  }
}
for (const precision of ['fp16', 'fp32'] as const) {
  await qtCheck(8, 128, 12, 64, 'int8', 0, precision);
  await qtCheck(2, 5, 3, 6, 'uint8', 113, precision);
}
for (const precision of ['fp16', 'fp32'] as const) {
  await lnCheck(1024, 768, 'int8', 0, precision);
  await lnCheck(37, 100, 'uint8', 117, precision);
  await lnCheck(16, 3072, 'int8', -5, precision);
}
// split-K (KILN_QGEMM=wgmma-splitk: 64x64 staged, reduction split in two on every layer with K > 128) against the same
// tile unsplit (=wgmma64), whole models byte for byte: int32 partial sums add exactly, so no output may differ. Also
// against the CPU reference like the other routes. bert-mid: hidden 256, FFN 1024 (BERT-small's K are all <= 128).
const BERT_MID = { ...BERT_SMALL, hidden: 256, heads: 4, intermediate: 1024 };
const SMALL2 = { ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16 };
async function splitCheck(name: string, make: () => Model, precision: 'fp32' | 'fp16') {
  if (only || onlyFp8) return;
  const run = quantizedRoutes(make, precision);
  try {
    const [a, b] = [await run({ KILN_QGEMM: 'wgmma64' }), await run({ KILN_QGEMM: 'wgmma-splitk' })];
    let diff = 0, n = 0;
    a.forEach((x, i) => x.forEach((v, k) => { n++; if (v !== b[i][k]) diff++; }));
    report(diff === 0 && n > 0, `${name} int8${precision === 'fp16' ? ' [fp16 build]' : ''}: split-K (wgmma-splitk) vs unsplit 64x64 (wgmma64), run + replay: ${diff} of ${n} output values differ`);
  } catch (e) {
    report(false, `${name} split-K: ${(e as Error).stack?.split('\n').slice(0, 4).join(' | ')}`);
  }
}
await check('resnet50-small2', () => resnet50(SMALL2), 'int8', 2, 'wgmma-splitk', 'fp16');
await check('bert-mid', () => bertBase(BERT_MID), 'int8', 2, 'wgmma-splitk', 'fp16');
await check('bert-mid', () => bertBase(BERT_MID), 'int8', 2, 'wgmma-splitk');
for (const precision of ['fp16', 'fp32'] as const) {
  await splitCheck('resnet50-small2', () => resnet50(SMALL2), precision);
  await splitCheck('bert-mid', () => bertBase(BERT_MID), precision);
}
// --quantize-residual (Q/DQ on both inputs of each residual Add): the GPU build folds the Adds into the conv before
// them (8-bit residual, int8 out), the CPU reference runs the unfolded nodes (fp16 rows: the NHWC CPU build folds too,
// on the reference kernel); every route of the epilogue: timed tactic, staged wgmma, direct wgmma, mma.sync
for (const precision of ['fp32', 'fp16'] as const) {
  await check('resnet50-small', () => resnet50(RESNET_SMALL), 'int8', 2, undefined, precision, undefined, true);
  await check('resnet50-small2', () => resnet50(SMALL2), 'int8', 2, undefined, precision, undefined, true);
  await check('resnet50-small2', () => resnet50(SMALL2), 'int8', 2, undefined, precision, 'uint8', true);
}
for (const env of ['wgmma64', 'wgmma', 'fused', 'wgmma-splitk']) await check('resnet50-small2', () => resnet50(SMALL2), 'int8', 2, env, 'fp32', undefined, true);
console.log(`quant checks: ${failures} failure(s)`);
process.exit(failures ? 1 : 0);

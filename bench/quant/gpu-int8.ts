// Quantized engines on the GPU (issue 8): ResNet-50 and BERT-base from the zoo (random weights), quantized by Kiln's
// quantizer on seeded random calibration data (accuracy is not what these rows measure), built for cuda and timed in
// one process against Kiln fp16 on the same models: CUDA-event median of the replayed graph (50 runs after 20
// warm-ups), throughput = batch / median. Also large-batch ResNet-50 int8 images/s against MLPerf v4.0's H100 figure.
// Usage (GPU machine, from the packed build): node bench/quant/gpu-int8.js [quick|bert|resnet|large] [res]
// (res: also the --quantize-residual file, int8 residual stream; replaces the fp8 row)
import { resnet50, bertBase } from '../models/zoo.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { feedsFor, median } from './feeds.js';
import { Tensor } from '../../src/runtime/tensor.js';
import type { Model } from '../../src/ir/graph.js';
import type { Precision } from '../../src/passes/precision.js';
import type { CudaRunner } from '../../src/backends/cuda/runner.js';

const MLPERF_H100_RESNET50 = 88714; // MLPerf Inference v4.0, offline, one H100 (samples/s)
const rows: Record<string, unknown>[] = [];

/** Build, warm up, time; returns the median device ms and the first output (for agreement checks). */
async function time(label: string, m: Model, precision: Precision, shapes: Record<string, number[]>) {
  const t0 = performance.now();
  const engine = await Engine.load(await build(m, { device: 'cuda', precision, shapes }));
  const buildS = (performance.now() - t0) / 1000;
  const ctx = engine.createContext();
  const feeds = feedsFor(shapes);
  const first = await ctx.run(feeds);
  for (let i = 0; i < 20; i++) await ctx.run(feeds);
  let compute = 0;
  const hooks = { onPhase: (phase: string, s: number, e: number) => { if (phase === 'compute') compute = e - s; } };
  const dev: number[] = [];
  for (let i = 0; i < 50; i++) {
    await ctx.run(feeds, undefined, hooks);
    dev.push(compute);
  }
  const runner = (engine as unknown as { runner: CudaRunner }).runner;
  const batch = Object.values(shapes)[0][0];
  const ms = median(dev);
  const row = { label, precision, shapes: JSON.stringify(shapes), buildS: +buildS.toFixed(2), deviceMs: +ms.toFixed(3), perSecond: Math.round(batch / (ms / 1000)), cpuLayers: [...runner.cpuLayers].length, raw: dev.map((x) => +x.toFixed(3)) };
  console.log(JSON.stringify({ ...row, raw: undefined }));
  rows.push(row);
  const out = Object.values(first)[0] as Tensor;
  engine.dispose();
  return { ms, out: Float32Array.from(out.data as Float32Array) };
}

function cosine(a: Float32Array, b: Float32Array): number {
  let d = 0, x = 0, y = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; x += a[i] * a[i]; y += b[i] * b[i]; }
  return d / Math.sqrt(x * y);
}

function quantize(m: Model, mode: 'int8' | 'fp8', quantizeResidual = false): Model {
  const t = performance.now();
  const { model, report } = quantizeModel(m, { mode, quantizeResidual, calibrationData: randomCalibrationData(m.graph, 1, { seed: 1 }), evalData: randomCalibrationData(m.graph, 2, { seed: 2 }), batchSize: 1 });
  const o = report.outputs[0];
  console.log(`quantized ${m.graph.name || 'model'} ${mode}${quantizeResidual ? ' --quantize-residual' : ''} in ${((performance.now() - t) / 1000).toFixed(1)} s; vs fp32 on 2 held-out random inputs: cosine ${o.cosine.toFixed(5)}, top-1 ${o.top1 === undefined ? '-' : (o.top1 * 100).toFixed(0) + '%'}`);
  return model;
}

const quick = ['quick', 'bert', 'resnet'].includes(process.argv[2]);
// `res`: also ResNet-50 quantized with --quantize-residual (int8 residual stream), in place of the fp8 row
const res = process.argv.includes('res');
const large = process.argv[2] === 'large';
const resnetRows = process.argv[2] !== 'bert' && !large;
const bertRows = process.argv[2] !== 'resnet' && !large;
const summary: string[] = [];
if (large) {
  // ResNet-50 bs128: more work per GEMM (4x the rows) for the same weights, fp16 and int8 in the same process
  const m = resnet50();
  const q = quantize(m, 'int8');
  const s = { input: [128, 3, 224, 224] };
  const fp16 = await time('resnet50 fp16', m, 'fp16', s);
  const int8 = await time('resnet50 int8', q, 'fp16', s);
  if (res) {
    const qr = await time('resnet50 int8 --quantize-residual', quantize(m, 'int8', true), 'fp16', s);
    summary.push(`resnet50 bs128: int8 --quantize-residual ${qr.ms.toFixed(3)} ms = ${(fp16.ms / qr.ms).toFixed(2)}x fp16; ${Math.round(128 / (qr.ms / 1000))} images/s = ${(128 / (qr.ms / 1000) / MLPERF_H100_RESNET50).toFixed(3)} of MLPerf v4.0 H100`);
  }
  summary.push(`resnet50 bs128: int8 ${int8.ms.toFixed(3)} ms vs fp16 ${fp16.ms.toFixed(3)} ms = ${(fp16.ms / int8.ms).toFixed(2)}x; int8 ${Math.round(128 / (int8.ms / 1000))} images/s = ${(128 / (int8.ms / 1000) / MLPERF_H100_RESNET50).toFixed(3)} of MLPerf v4.0 H100`);
}
if (resnetRows) {
  const m = resnet50();
  const q = quantize(m, 'int8');
  const s32 = { input: [32, 3, 224, 224] };
  // quantized engines are built at fp16: residual streams, float outputs and pooling run fp16 around the 8-bit layers
  const fp16 = await time('resnet50 fp16', m, 'fp16', s32);
  const int8 = await time('resnet50 int8', q, 'fp16', s32);
  if (res) {
    const qr = await time('resnet50 int8 --quantize-residual', quantize(m, 'int8', true), 'fp16', s32);
    summary.push(`resnet50 bs32: int8 --quantize-residual ${qr.ms.toFixed(3)} ms vs fp16 ${fp16.ms.toFixed(3)} ms = ${(fp16.ms / qr.ms).toFixed(2)}x (target 1.6x); default int8 ${int8.ms.toFixed(3)} ms = ${(fp16.ms / int8.ms).toFixed(2)}x; output cosine: vs fp16 ${cosine(qr.out, fp16.out).toFixed(4)} (default int8 ${cosine(int8.out, fp16.out).toFixed(4)}), vs default int8 ${cosine(qr.out, int8.out).toFixed(4)}`);
  }
  if (!res) {
    const fp8 = await time('resnet50 fp8', quantize(m, 'fp8'), 'fp16', s32);
    summary.push(`resnet50 bs32: int8 ${int8.ms.toFixed(3)} ms vs fp16 ${fp16.ms.toFixed(3)} ms = ${(fp16.ms / int8.ms).toFixed(2)}x; fp8 ${fp8.ms.toFixed(3)} ms = ${(fp16.ms / fp8.ms).toFixed(2)}x (target 1.6x); output cosine vs fp16: int8 ${cosine(int8.out, fp16.out).toFixed(4)}, fp8 ${cosine(fp8.out, fp16.out).toFixed(4)}`);
  }
  if (!quick) {
    for (const bs of [128, 256]) {
      const r = await time('resnet50 int8', q, 'fp16', { input: [bs, 3, 224, 224] });
      const ips = bs / (r.ms / 1000);
      summary.push(`resnet50 int8 bs${bs}: ${Math.round(ips)} images/s = ${(ips / MLPERF_H100_RESNET50).toFixed(3)} of MLPerf v4.0 H100 (${MLPERF_H100_RESNET50})`);
    }
  }
}
if (bertRows) {
  const m = bertBase();
  const q8 = quantize(m, 'int8');
  const f8 = quantize(m, 'fp8');
  for (const bs of quick ? [8] : [8, 32]) {
    const s = { input_ids: [bs, 128], attention_mask: [bs, 128] };
    const fp16 = await time('bert-base fp16', m, 'fp16', s);
    const int8 = await time('bert-base int8', q8, 'fp16', s);
    const fp8 = await time('bert-base fp8', f8, 'fp16', s);
    summary.push(`bert-base bs${bs}x128: fp16 ${fp16.ms.toFixed(3)} ms; int8 ${int8.ms.toFixed(3)} ms = ${(fp16.ms / int8.ms).toFixed(2)}x; fp8 ${fp8.ms.toFixed(3)} ms = ${(fp16.ms / fp8.ms).toFixed(2)}x (target 1.4x); cosine vs fp16: int8 ${cosine(int8.out, fp16.out).toFixed(4)}, fp8 ${cosine(fp8.out, fp16.out).toFixed(4)}`);
  }
}
console.log('RAW ' + JSON.stringify(rows));
for (const s of summary) console.log(s);
process.exit(0);

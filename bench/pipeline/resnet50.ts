// End-to-end ResNet-50 classification from a folder of JPEGs on the CPU: Kiln's pipeline + Kiln's CPU engine vs a
// plain sequential sharp + onnxruntime-node loop, same run, same thread count. Also the pipeline alone (decode +
// preprocess images/s) against the plain loop's preprocessing, and Kiln's pipeline feeding onnxruntime-node (the
// pipeline's gain with the engine held equal). Random weights; the figures are about speed only.
// --int8: both sides run the same int8 Q/DQ file (kiln quantize --activation-type uint8, calibrated on 16 images through
// the pipeline): Kiln builds it into its int8 engine, onnxruntime-node runs the file with its own QDQ fusion.
// --bf16: Kiln's engine built with precision bf16 (the CPU's bf16 math mode: fp32 tensors, convolutions multiplying in
// bf16), onnxruntime-node in fp32: not the same arithmetic on both sides, labelled so in the output.
// --plan=file: Kiln's plan read from the file where it exists, else built and saved there (the build, minutes at
// batch 8, can then run outside a benchmark lock: `... 0 0 2 8 --plan=file` only builds).
// Usage: npx tsx bench/pipeline/resnet50.ts [images=64] [reps=2] [threads=2] [batch=8] [--int8 | --bf16] [--plan=file]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import sharp from 'sharp';
import { resnet50 } from '../models/zoo.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Pipeline, type PipelineSpec } from '../../src/pipeline/index.js';
import { seededRandom } from '../../src/ir/builder.js';
import { TensorData } from '../../src/ir/tensor.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { imageCalibrationSet } from '../../src/quant/data.js';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');
const INT8 = process.argv.includes('--int8');
const BF16 = process.argv.includes('--bf16');
const PLAN = process.argv.find((a) => a.startsWith('--plan='))?.slice(7);
const [N, REPS, THREADS, BATCH] = [64, 2, 2, 8].map((d, i) => Number(process.argv.filter((a) => !a.startsWith('--'))[2 + i] ?? d));
const MEAN = [0.485, 0.456, 0.406], STD = [0.229, 0.224, 0.225];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-pipe-bench-'));
const imgDir = path.join(work, 'images');

/** Photo-like test images: smooth colour fields plus texture and noise, ~500×375 (some portrait), JPEG q90. */
async function makeImages() {
  fs.mkdirSync(imgDir);
  const r = seededRandom(3);
  for (let i = 0; i < N; i++) {
    const [w, h] = i % 4 === 3 ? [375, 500] : [500 + (i % 3) * 7, 375 - (i % 5) * 3];
    const px = Buffer.alloc(w * h * 3);
    const f = [r() * 0.05, r() * 0.05, r() * 0.05], ph = [r() * 6, r() * 6, r() * 6];
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        for (let c = 0; c < 3; c++) px[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, 128 + 90 * Math.sin(f[c] * x + ph[c]) * Math.cos(f[(c + 1) % 3] * y) + (r() - 0.5) * 40));
      }
    }
    await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toFile(path.join(imgDir, `img${String(i).padStart(3, '0')}.jpg`));
  }
}

const spec: PipelineSpec = { resize: { size: 256 }, crop: { size: 224 }, normalize: { mean: MEAN, std: STD }, layout: 'NCHW', dtype: 'float32', batch: { size: BATCH } };

/** What a user writes without a pipeline: sharp resize + center crop, then a JS loop to normalized CHW floats. */
async function plainPreprocess(file: string): Promise<Float32Array> {
  const { data, info } = await sharp(file).autoOrient().removeAlpha().resize({ width: 256, height: 256, fit: 'outside', kernel: 'linear' }).raw().toBuffer({ resolveWithObject: true });
  const x0 = Math.round((info.width - 224) / 2), y0 = Math.round((info.height - 224) / 2);
  const out = new Float32Array(3 * 224 * 224);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < 224; y++) {
      for (let x = 0; x < 224; x++) out[c * 224 * 224 + y * 224 + x] = (data[((y0 + y) * info.width + x0 + x) * 3 + c] / 255 - MEAN[c]) / STD[c];
    }
  }
  return out;
}

async function timed(label: string, images: () => Promise<number>): Promise<number> {
  const t0 = performance.now();
  const n = await images();
  const s = (performance.now() - t0) / 1000;
  const ips = n / s;
  console.log(JSON.stringify({ label, images: n, seconds: +s.toFixed(3), imagesPerS: +ips.toFixed(2) }));
  return ips;
}

async function main() {
  console.log(`# ${new Date().toISOString()} ${os.cpus()[0].model} x${os.availableParallelism()}, node ${process.version}, ${N} images, threads ${THREADS}, batch ${BATCH}${INT8 ? ', int8 Q/DQ model on both sides' : ''}${BF16 ? ', Kiln bf16 math mode vs onnxruntime fp32' : ''}`);
  await makeImages();
  const files = fs.readdirSync(imgDir).sort().map((f) => path.join(imgDir, f));
  let model = resnet50();
  if (INT8) {
    const t = performance.now();
    const calib = await Pipeline.create({ ...spec, batch: { size: 16 } }, { workers: THREADS });
    const imgs = (await calib.process(files.slice(0, 16))).tensor!;
    await calib.close();
    const set = imageCalibrationSet(new TensorData('float32', [...imgs.dims], imgs.data as Float32Array), model.graph, 'bench images');
    model = quantizeModel(model, { mode: 'int8', activationType: 'uint8', calibrationData: set, batchSize: 4 }).model;
    console.log(`# quantized (16 images through the pipeline) in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const onnxPath = path.join(work, 'resnet50.onnx');
  fs.writeFileSync(onnxPath, serializeOnnx(model));
  let plan: Uint8Array;
  if (PLAN && fs.existsSync(PLAN)) plan = fs.readFileSync(PLAN);
  else {
    const t0 = performance.now();
    plan = (await build(model, { profiles: [{ input: { min: [1, 3, 224, 224], opt: [BATCH, 3, 224, 224], max: [BATCH, 3, 224, 224] } }], ...(BF16 ? { precision: 'bf16' as const } : {}) })).bytes;
    console.log(`# Kiln build ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    if (PLAN) fs.writeFileSync(PLAN, plan);
  }
  if (!N) return fs.rmSync(work, { recursive: true, force: true });
  const engine = await Engine.load(plan, { intraOpNumThreads: THREADS });
  const ctx = engine.createContext();
  const sess = await ort.InferenceSession.create(onnxPath, { intraOpNumThreads: THREADS, interOpNumThreads: 1, executionMode: 'sequential' });
  const pipe = await Pipeline.create(spec, { workers: THREADS, prefetch: 2 });
  const pipe0 = await Pipeline.create(spec, { workers: THREADS, prefetch: 0 });
  // warm everything once
  const warm = await pipe.process(files.slice(0, BATCH));
  await ctx.run({ input: warm.tensor! });
  await sess.run({ input: new ort.Tensor('float32', warm.tensor!.data, warm.tensor!.dims) });
  await plainPreprocess(files[0]);

  const runs: Record<string, number[]> = {};
  const add = (k: string, v: number) => (runs[k] ??= []).push(v);
  const kilnBatches = async (p: Pipeline, infer?: (t: import('../../src/runtime/tensor.js').Tensor) => Promise<unknown>) => {
    let n = 0;
    for await (const b of p.batches(files)) { if (infer) await infer(b.tensor!); n += b.tensor!.dims[0]; }
    return n;
  };
  for (let rep = 0; rep < REPS; rep++) {
    add('plain preprocess (sequential sharp + JS loop)', await timed('plain-preprocess', async () => { for (const f of files) await plainPreprocess(f); return files.length; }));
    add('Kiln pipeline preprocess', await timed('kiln-preprocess', () => kilnBatches(pipe)));
    add('plain loop: sharp + ORT, batch 1', await timed('plain-e2e-ort', async () => {
      for (const f of files) await sess.run({ input: new ort.Tensor('float32', await plainPreprocess(f), [1, 3, 224, 224]) });
      return files.length;
    }));
    add(`Kiln pipeline + Kiln CPU engine${BF16 ? ' (bf16 math)' : ''}, batch ${BATCH}, overlapped`, await timed('kiln-e2e-kiln', () => kilnBatches(pipe, (t) => ctx.run({ input: t }))));
    add(`Kiln pipeline + Kiln CPU engine${BF16 ? ' (bf16 math)' : ''}, batch ${BATCH}, no overlap (prefetch 0)`, await timed('kiln-e2e-kiln-seq', () => kilnBatches(pipe0, (t) => ctx.run({ input: t }))));
    add(`Kiln pipeline + ORT, batch ${BATCH}, overlapped`, await timed('kiln-e2e-ort', () => kilnBatches(pipe, (t) => sess.run({ input: new ort.Tensor('float32', t.data, t.dims) }))));
  }
  console.log('\n| run | images/s (each rep) | best |\n| --- | --- | --- |');
  for (const [k, v] of Object.entries(runs)) console.log(`| ${k} | ${v.map((x) => x.toFixed(2)).join(', ')} | ${Math.max(...v).toFixed(2)} |`);
  await pipe.close();
  await pipe0.close();
  await sess.release();
  engine.dispose();
  fs.rmSync(work, { recursive: true, force: true });
}

await main();

// GPU pipeline checks (on the GPU machine): the cuda executor against the CPU executor on the same files, per image,
// in 8-bit pixel levels; then normalize, float16 and layouts against the GPU's own uint8 output; then error handling.
// Prints one PASS/FAIL line per check and a JSON line of measured differences per image.
// Usage: node bench/pipeline/check-gpu.js CHECK_DIR   (images from bench/pipeline/make-images.py)
// KILN_CHECK_DEVICE=cpu runs the script against the CPU path itself (a dry run of the script where there is no GPU).
import fs from 'node:fs';
import path from 'node:path';
import { Pipeline, hostTensor, type PipelineSpec } from '../../src/pipeline/index.js';
import { float16ToFloat } from '../../src/ir/dtype.js';
import type { Tensor } from '../../src/runtime/tensor.js';

const dir = process.argv[2];
const files = fs.readdirSync(dir).sort().map((f) => path.join(dir, f));
const MEAN = [0.485, 0.456, 0.406], STD = [0.229, 0.224, 0.225];
const GPU = process.env.KILN_CHECK_DEVICE ?? 'cuda';
let failures = 0;
const verdict = (ok: boolean, what: string) => {
  if (!ok) failures++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
};

async function run(spec: PipelineSpec, device: string, inputs: string[]) {
  const p = await Pipeline.create(spec, { device, workers: 0, prefetch: 0 });
  try {
    const b = await p.process(inputs);
    if (device !== 'cpu') console.log(JSON.stringify({ decoder: p.gpuInfo }));
    return { t: (await hostTensor(b))!, names: b.names, errors: b.errors };
  } finally {
    await p.close();
  }
}

const data = (t: Tensor) => (t.type === 'float16' ? Float32Array.from(t.data as Uint16Array, float16ToFloat) : Float32Array.from(t.data as ArrayLike<number>));

/** Per image: max, mean and 99.9th percentile of |a - b| in pixel levels. */
function diffs(a: Tensor, b: Tensor, names: string[]) {
  const x = data(a), y = data(b), n = x.length / names.length;
  return names.map((name, i) => {
    const d = Array.from({ length: n }, (_, k) => Math.abs(x[i * n + k] - y[i * n + k])).sort((p, q) => p - q);
    return { name: path.basename(name), max: d[n - 1], mean: +(d.reduce((s, v) => s + v, 0) / n).toFixed(3), p999: d[Math.floor(n * 0.999)] };
  });
}

async function compare(label: string, spec: PipelineSpec, inputs: string[], limits: (name: string) => { mean: number; p999: number; max: number }) {
  const [cpu, gpu] = [await run(spec, 'cpu', inputs), await run(spec, GPU, inputs)];
  verdict(cpu.names.join() === gpu.names.join(), `${label}: same items decoded (cpu ${cpu.names.length}, gpu ${gpu.names.length}; gpu errors: ${gpu.errors.map((e) => e.message).join(' | ') || 'none'})`);
  if (cpu.names.join() !== gpu.names.join()) return;
  verdict(cpu.t.dims.join() === gpu.t.dims.join(), `${label}: shape [${gpu.t.dims.join(', ')}]`);
  for (const d of diffs(cpu.t, gpu.t, gpu.names)) {
    const lim = limits(d.name);
    console.log(JSON.stringify({ check: label, ...d, limits: lim }));
    verdict(d.mean <= lim.mean && d.p999 <= lim.p999 && d.max <= lim.max, `${label} ${d.name}: mean ${d.mean}, p99.9 ${d.p999}, max ${d.max} levels`);
  }
}

async function main() {
  const images = files.filter((f) => !f.includes('corrupt'));
  const pngs = images.filter((f) => f.endsWith('.png'));
  // JPEG: nvJPEG vs libjpeg-turbo (chroma upsampling, IDCT) plus the resize filters; PNG: the resize filters alone
  const bilinearLimits = (n: string) => (n.endsWith('.png') ? { mean: 0.75, p999: 3, max: 6 } : { mean: 2, p999: 12, max: 40 });
  const u8: PipelineSpec = { resize: { size: 256 }, crop: { size: 224 }, dtype: 'uint8', layout: 'NHWC' };
  await compare('bilinear 256 + crop 224', u8, images, bilinearLimits);
  await compare('area exact 96x80', { resize: { mode: 'exact', width: 96, height: 80, interpolation: 'area' }, dtype: 'uint8', layout: 'NHWC' }, pngs, () => ({ mean: 0.05, p999: 1, max: 1 }));
  await compare('bilinear exact 200x120 (mixed scales)', { resize: { mode: 'exact', width: 200, height: 120 }, dtype: 'uint8', layout: 'NHWC' }, images, bilinearLimits);
  await compare('RGBA bilinear 160 + crop 128 (premultiplied)', { decode: { channels: 4 }, resize: { size: 160 }, crop: { size: 128 }, dtype: 'uint8', layout: 'NHWC' }, pngs, bilinearLimits);
  await compare('random crop + flips', { resize: { size: 160 }, crop: { mode: 'random', size: 128 }, flip: { horizontal: 'random', vertical: 'random' }, seed: 7, dtype: 'uint8', layout: 'NHWC' }, images, bilinearLimits);
  await compare('no resize, crop 200', { crop: { size: 200 }, dtype: 'uint8', layout: 'NCHW' }, images, bilinearLimits);

  // normalize + layout + dtype on the GPU against its own uint8 pixels, normalized here
  const base = await run(u8, GPU, images);
  const px = base.t.data as Uint8Array, [n, h, w] = base.t.dims;
  const want = new Float32Array(n * 3 * h * w);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) for (let p = 0; p < h * w; p++) want[(i * 3 + c) * h * w + p] = (px[(i * h * w + p) * 3 + c] / 255 - MEAN[c]) / STD[c];
  for (const dtype of ['float32', 'float16'] as const) {
    const g = await run({ ...u8, normalize: { mean: MEAN, std: STD }, dtype, layout: 'NCHW' }, GPU, images);
    const got = data(g.t);
    let worst = 0;
    for (let k = 0; k < want.length; k++) worst = Math.max(worst, Math.abs(got[k] - want[k]) / (dtype === 'float16' ? 1e-3 + 1e-3 * Math.abs(want[k]) : 1e-5 + 1e-6 * Math.abs(want[k])));
    verdict(worst <= 1, `normalize ${dtype} NCHW matches the uint8 output normalized on the host (worst error ${worst.toFixed(3)} of the tolerance)`);
  }

  // a corrupt file fails alone; the rest of the batch goes on
  const withBad = await run(u8, GPU, files);
  const bad = withBad.errors.map((e) => path.basename(e.name));
  verdict(bad.length === 1 && bad[0] === 'zcorrupt.jpg' && withBad.names.length === images.length, `corrupt file reported alone (errors: ${withBad.errors.map((e) => e.message).join(' | ') || 'none'})`);
  console.log(failures ? `${failures} check(s) FAILED` : 'all GPU pipeline checks PASS');
  process.exitCode = failures ? 1 : 0;
}

await main();

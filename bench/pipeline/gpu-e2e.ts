// End-to-end ResNet-50 classification from a folder of JPEGs on the GPU: Kiln's cuda pipeline (nvJPEG + one fused
// kernel into a GpuTensor) feeding a Kiln cuda fp16 engine, per batch size; class ids come back to the host. Also
// the pipeline alone. The peer is torchvision-peer.py in the same run. Prints one JSON line per batch size.
// Usage (GPU machine): node bench/pipeline/gpu-e2e.js RESNET50.onnx IMAGE_DIR [batches=32,64,128] [reps=3]
import fs from 'node:fs';
import path from 'node:path';
import { loadOnnx } from '../../src/onnx/reader.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import type { Tensor } from '../../src/runtime/tensor.js';
import { Pipeline, type PipelineSpec } from '../../src/pipeline/index.js';

const [modelFile, dir, batchArg = '32,64,128', repArg = '3'] = process.argv.slice(2);
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.jpg')).sort().map((f) => path.join(dir, f));
const MEAN = [0.485, 0.456, 0.406], STD = [0.229, 0.224, 0.225];
const model = await loadOnnx(modelFile);

async function pass(p: Pipeline, infer?: (t: NonNullable<Awaited<ReturnType<Pipeline['process']>>['gpu']>) => Promise<void>): Promise<number> {
  const t0 = performance.now();
  let n = 0;
  for await (const b of p.batches(files)) {
    if (b.errors.length) throw new Error(b.errors[0].message);
    if (infer) await infer(b.gpu!);
    await b.gpu!.dispose();
    n += b.names.length;
  }
  return n / ((performance.now() - t0) / 1000);
}

for (const B of batchArg.split(',').map(Number)) {
  const t0 = performance.now();
  const plan = await build(model, { device: 'cuda', precision: 'fp16', shapes: { input: [B, 3, 224, 224] } });
  const buildS = (performance.now() - t0) / 1000;
  const engine = await Engine.load(plan);
  const ctx = engine.createContext();
  const spec: PipelineSpec = { resize: { size: 256 }, crop: { size: 224 }, normalize: { mean: MEAN, std: STD }, layout: 'NCHW', dtype: 'float32', batch: { size: B } };
  const p = await Pipeline.create(spec, { device: 'cuda', prefetch: 2 });
  const classes: number[] = [];
  const classify = async (x: Parameters<typeof ctx.run>[0]['input']) => {
    const logits = (await ctx.run({ input: x })).out as Tensor;
    const d = logits.data as Float32Array, k = logits.dims[1];
    for (let r = 0; r < logits.dims[0]; r++) {
      let best = 0;
      for (let j = 1; j < k; j++) if (d[r * k + j] > d[r * k + best]) best = j;
      classes.push(best);
    }
  };
  await pass(p, classify); // warm: kernels, engine graph capture, page cache
  const e2e: number[] = [], pre: number[] = [];
  for (let r = 0; r < Number(repArg); r++) {
    pre.push(await pass(p));
    classes.length = 0;
    e2e.push(await pass(p, classify));
  }
  console.log(JSON.stringify({
    kiln: 'pipeline(cuda) + engine(cuda fp16)', batch: B, images: files.length, decoder: p.gpuInfo, buildS: +buildS.toFixed(2),
    e2eImagesPerS: e2e.map((v) => +v.toFixed(1)), bestE2e: +Math.max(...e2e).toFixed(1), pipelineImagesPerS: pre.map((v) => +v.toFixed(1)), classified: classes.length,
  }));
  await p.close();
  ctx.dispose();
  engine.dispose();
}
process.exit(0);

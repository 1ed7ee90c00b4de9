// The cuda pipeline alone (nvJPEG decode + the fused resize/crop/normalize kernel into a GpuTensor): images/s over a
// folder of JPEGs, per batch size, best of `reps` after one warm pass. No engine, so no model file is needed.
// Usage (GPU machine): node bench/pipeline/gpu-pre.js IMAGE_DIR [batches=32,128] [reps=3]
import fs from 'node:fs';
import path from 'node:path';
import { Pipeline, type PipelineSpec } from '../../src/pipeline/index.js';

const [dir, batchArg = '32,128', repArg = '3'] = process.argv.slice(2);
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.jpg')).sort().map((f) => path.join(dir, f));
const MEAN = [0.485, 0.456, 0.406], STD = [0.229, 0.224, 0.225];

for (const B of batchArg.split(',').map(Number)) {
  const spec: PipelineSpec = { resize: { size: 256 }, crop: { size: 224 }, normalize: { mean: MEAN, std: STD }, layout: 'NCHW', dtype: 'float32', batch: { size: B } };
  const p = await Pipeline.create(spec, { device: 'cuda', prefetch: 2 });
  const rates: number[] = [];
  for (let r = 0; r <= Number(repArg); r++) {
    const t0 = performance.now();
    let n = 0;
    for await (const b of p.batches(files)) {
      if (b.errors.length) throw new Error(b.errors[0].message);
      await b.gpu!.dispose();
      n += b.names.length;
    }
    if (r > 0) rates.push(n / ((performance.now() - t0) / 1000)); // the first pass warms kernels and the page cache
  }
  console.log(JSON.stringify({ batch: B, images: files.length, decoder: p.gpuInfo?.jpeg, imagesPerS: rates.map((v) => +v.toFixed(1)), best: +Math.max(...rates).toFixed(1) }));
  await p.close();
}
process.exit(0);

// Cold and warm GPU build times (issue 8: NVRTC compiles on worker threads, cubin cache on disk). One build per
// process, so nothing carries over in memory: a "cold" build runs with an empty KILN_CACHE_DIR, a "warm" one with the
// folder a previous process filled. Quantized models are made once (`prepare`) and read back, so quantization time
// is not counted; the build is timed alone (`build()`), then the engine is loaded and run once as a sanity check.
// Usage (GPU machine, from the packed build):
//   node bench/quant/build-time.js prepare DIR             resnet50-int8.onnx and bert-int8.onnx into DIR
//   node bench/quant/build-time.js build FILE SHAPES LABEL  e.g. DIR/bert-int8.onnx input_ids:8x128,attention_mask:8x128 cold
import fs from 'node:fs';
import path from 'node:path';
import { resnet50, bertBase } from '../models/zoo.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { parseOnnx } from '../../src/onnx/reader.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { feedsFor } from './feeds.js';
import type { Tensor } from '../../src/runtime/tensor.js';

const [cmd, a, b, label] = process.argv.slice(2);
if (cmd === 'prepare') {
  fs.mkdirSync(a, { recursive: true });
  for (const [name, m] of [['resnet50', resnet50()], ['bert', bertBase()]] as const) {
    const t = performance.now();
    const { model } = quantizeModel(m, { mode: 'int8', calibrationData: randomCalibrationData(m.graph, 1, { seed: 1 }), batchSize: 1 });
    fs.writeFileSync(path.join(a, `${name}-int8.onnx`), serializeOnnx(model));
    console.log(`quantized ${name} int8 in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
} else if (cmd === 'build') {
  const shapes = Object.fromEntries(b.split(',').map((s) => { const [n, d] = s.split(':'); return [n, d.split('x').map(Number)]; }));
  const model = parseOnnx(fs.readFileSync(a));
  const cacheDir = process.env.KILN_CACHE_DIR ? path.join(process.env.KILN_CACHE_DIR, 'cubins') : undefined;
  const entries = () => (cacheDir && fs.existsSync(cacheDir) ? fs.readdirSync(cacheDir).filter((f) => f.endsWith('.cubin')).length : 0);
  const before = entries();
  const t0 = performance.now();
  const plan = await build(model, { device: 'cuda', precision: 'fp16', shapes });
  const buildS = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  const engine = await Engine.load(plan);
  const loadS = (performance.now() - t1) / 1000;
  const out = Object.values(await engine.createContext().run(feedsFor(shapes)))[0] as Tensor;
  const data = out.data as Float32Array;
  let sum = 0, finite = true;
  for (const v of data) { sum += v; finite &&= Number.isFinite(v); }
  // the pool's counters where this build has one (the HEAD baseline does not)
  const nv = (await import('../../src/backends/cuda/ffi/nvrtc.js')) as { cubinPool?: () => { compiled: number } | undefined };
  console.log(JSON.stringify({
    label, model: path.basename(a), shapes: b, buildS: +buildS.toFixed(2), loadS: +loadS.toFixed(2), workerCompiles: nv.cubinPool?.()?.compiled ?? null,
    cacheEntriesBefore: before, cacheEntriesAfter: entries(), outputFinite: finite, outputMean: +(sum / data.length).toFixed(5),
  }));
  engine.dispose();
} else {
  console.error('usage: build-time.js prepare DIR | build FILE SHAPES LABEL');
  process.exit(2);
}
process.exit(0);

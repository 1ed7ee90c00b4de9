// Kiln side of the GPU benchmark: builds each exported ONNX model in fp16 for the cuda provider and times it.
// Usage (on the GPU machine): node bench/gpu/bench.js MODEL.onnx name input:1x3x224x224[,mask:..] ...
// Prints one JSON line per run: build time, host latency median, device time median (CUDA events), memory.
import fs from 'node:fs';
import { loadOnnx } from '../../src/onnx/reader.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { parseShapes } from '../../src/tools/inputs.js';
import { getDevice } from '../../src/backends/cuda/device.js';
import type { CudaRunner } from '../../src/backends/cuda/runner.js';

const [file, name, ...specs] = process.argv.slice(2);
const model = await loadOnnx(file);
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
for (const spec of specs) {
  const shapes = Object.fromEntries(parseShapes(spec));
  const t0 = performance.now();
  const plan = await build(model, { device: 'cuda', precision: (process.env.KILN_PRECISION as 'fp16') ?? 'fp16', shapes });
  const buildS = (performance.now() - t0) / 1000;
  const engine = await Engine.load(plan);
  const ctx = engine.createContext();
  const feeds: Record<string, Tensor> = {};
  for (const i of engine.header.inputs) {
    const dims = shapes[i.name];
    const n = dims.reduce((a, b) => a * b, 1);
    feeds[i.name] = i.dtype === 'int64' ? new Tensor('int64', BigInt64Array.from({ length: n }, (_, k) => (i.name.includes('mask') ? 1n : BigInt((k * 31) % 1000))), dims)
      : new Tensor('float32', Float32Array.from({ length: n }, (_, k) => Math.sin(k)), dims);
  }
  const runner = (engine as unknown as { runner: CudaRunner }).runner;
  for (let i = 0; i < 20; i++) await ctx.run(feeds);
  const host: number[] = [], dev: number[] = [];
  let compute = 0;
  const hooks = { onPhase: (phase: string, start: number, end: number) => { if (phase === 'compute') compute = end - start; } };
  for (let i = 0; i < 50; i++) {
    const s = performance.now();
    await ctx.run(feeds, undefined, hooks); // compute phase = CUDA-event time of the replayed graph
    host.push(performance.now() - s);
    dev.push(compute);
  }
  const mem = getDevice(0).memInfo();
  console.log(JSON.stringify({
    name, shapes: spec, buildS: +buildS.toFixed(2), hostMs: +median(host).toFixed(3), deviceMs: +median(dev).toFixed(3),
    cpuLayers: [...runner.cpuLayers], weightsMiB: +(runner.weightBytes() / 2 ** 20).toFixed(1), usedMiB: +((mem.total - mem.free) / 2 ** 20).toFixed(0),
  }));
  engine.dispose();
}
if (fs.existsSync('/dev/null')) process.exit(0);

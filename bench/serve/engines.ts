// In-process cost of the load test's models at the batch sizes a dynamic batcher forms: Kiln (built in memory, as
// `kiln serve` does, at the kernel threads each of its instances gets) against onnxruntime-node with default
// options (what the baseline server uses). Median wall ms per run and per row.
// Usage: npx tsx bench/serve/engines.ts [batches] [runs]   (batches: comma list, default 1,8,32,64)
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { InferenceSession, serializeOnnx, Tensor } from '../../src/index.js';
import { tinyCnn } from '../models/zoo.js';
import { mlp } from './models.js';

const batches = (process.argv[2] ?? '1,8,32,64').split(',').map(Number);
const runs = Number(process.argv[3] ?? 50);
const kilnThreads = Math.max(1, Math.floor(os.availableParallelism() / 2)); // 2 instances share the cores

async function median(f: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 5; i++) await f();
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const s = performance.now();
    await f();
    t.push(performance.now() - s);
  }
  return t.sort((a, b) => a - b)[t.length >> 1];
}

console.log(`| model | batch | kiln ms (${kilnThreads} thread/instance) | kiln ms/row | ORT ms (default options) | ORT ms/row |`);
console.log('| --- | --- | --- | --- | --- | --- |');
for (const [name, model, row] of [['tiny-cnn', tinyCnn(), [3, 32, 32]], ['mlp', mlp(), [512]]] as const) {
  const bytes = await serializeOnnx(model);
  const kiln = await InferenceSession.create(bytes, { intraOpNumThreads: kilnThreads });
  const sess = await ort.InferenceSession.create(bytes);
  for (const n of batches) {
    const data = Float32Array.from({ length: n * row.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i));
    const k = await median(() => kiln.run({ input: new Tensor('float32', data, [n, ...row]) }));
    const o = await median(() => sess.run({ input: new ort.Tensor('float32', data, [n, ...row]) }));
    console.log(`| ${name} | ${n} | ${k.toFixed(3)} | ${(k / n).toFixed(3)} | ${o.toFixed(3)} | ${(o / n).toFixed(3)} |`);
  }
  await kiln.release();
  await sess.release();
}

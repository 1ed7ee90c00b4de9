// Small-model latency: the bundled tiny CNN (examples/tiny-cnn.onnx, dynamic batch) through Kiln's
// InferenceSession (built in memory with the default profile, as `kiln serve` does) vs onnxruntime-node, at several
// batch sizes and 1 and 2 threads. Median wall time of `runs` after warm-ups (plus mean CPU time per run), both
// engines in the same process.
// Usage: npx tsx bench/cpu/tiny.ts [batches] [runs] [model.onnx]   (batches: comma list, default 1,64)
import os from 'node:os';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { InferenceSession } from '../../src/runtime/session.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { seededRandom } from '../../src/ir/builder.js';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');
const batches = (process.argv[2] ?? '1,64').split(',').map(Number);
const runs = Number(process.argv[3] ?? 200);
const file = process.argv[4] ?? new URL('../../examples/tiny-cnn.onnx', import.meta.url).pathname;
const bytes = fs.readFileSync(file);

/** Median wall time, and the process's mean CPU time per run (user + system, all threads): on a shared machine the
 * CPU time is less disturbed by other jobs than the wall time. */
async function median(f: () => Promise<unknown>): Promise<[number, number]> {
  for (let i = 0; i < Math.max(5, runs / 10); i++) await f();
  const t: number[] = [];
  const c0 = process.cpuUsage();
  for (let i = 0; i < runs; i++) {
    const s = performance.now();
    await f();
    t.push(performance.now() - s);
  }
  const c = process.cpuUsage(c0);
  t.sort((a, b) => a - b);
  return [t[t.length >> 1], (c.user + c.system) / 1000 / runs];
}

const rows: string[] = [];
for (const threads of [1, 2]) {
  const kiln = await InferenceSession.create(bytes, { intraOpNumThreads: threads });
  const sess = await ort.InferenceSession.create(bytes, { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential' });
  const name = kiln.inputNames[0];
  for (const n of batches) {
    const r = seededRandom(n);
    const data = Float32Array.from({ length: n * 3 * 32 * 32 }, () => r() * 2 - 1);
    const k = await median(() => kiln.run({ [name]: new Tensor('float32', data, [n, 3, 32, 32]) }));
    const o = await median(() => sess.run({ [name]: new ort.Tensor('float32', data, [n, 3, 32, 32]) }));
    const row = `| tiny-cnn | ${n} | ${threads} | ${k[0].toFixed(3)} | ${o[0].toFixed(3)} | ${(k[0] / o[0]).toFixed(2)}x | ${k[1].toFixed(3)} | ${o[1].toFixed(3)} |`;
    console.log(row);
    rows.push(row);
  }
  await kiln.release();
  await sess.release();
}
console.log(`\n${new Date().toISOString().slice(0, 10)}, ${os.cpus()[0]?.model?.trim()} (${os.cpus().length} cores), Node ${process.version}, runs=${runs}`);
console.log('| model | batch | threads | Kiln ms | onnxruntime-node ms | Kiln / ORT | Kiln CPU ms/run | ORT CPU ms/run |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);

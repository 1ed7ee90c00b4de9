// The CPU's bf16 math mode end to end: one model built twice (fp32 and --bf16), both plans and onnxruntime-node (fp32)
// run interleaved, round by round, on the same inputs (the Kiln plans' order alternating): median wall per engine, the
// paired ratios, how many layers chose a bf16 variant, and the bf16 outputs against the fp32 plan's (max abs error,
// that over the largest |output|, and the share of rows whose argmax agrees: top-1 agreement for a classifier).
// Usage: npx tsx bench/cpu/bf16-e2e.ts <model|real:name> [threads] [runs] [--batch=N] [--plans=prefix]
//   --plans: the two plans saved as prefix-fp32.plan / prefix-bf16.plan, or loaded from there when they exist (build
//   once without the benchmark lock, then time under it; runs 0 only builds them)
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { ZOO } from '../models/zoo.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { parsePlan } from '../../src/build/plan.js';
import { asTensors, batchArg, zooInputs } from './inputs.js';
import { loadReal } from '../real/models.js';

const require = createRequire(import.meta.url);
const argv = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const batch = batchArg();
const [name = 'resnet50', threadsArg = '1', runsArg = '20'] = argv;
const threads = Number(threadsArg), runs = Number(runsArg);
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const { shapes, feeds } = zooInputs(m, batch);
const prefix = process.argv.find((a) => a.startsWith('--plans='))?.slice(8);
const planOf = async (precision: 'fp32' | 'bf16') => {
  const file = prefix && `${prefix}-${precision}.plan`;
  if (file && fs.existsSync(file)) return new Uint8Array(fs.readFileSync(file));
  const { bytes } = await build(m, { shapes, precision });
  if (file) fs.writeFileSync(file, bytes);
  return bytes;
};
const [p32, p16] = [await planOf('fp32'), await planOf('bf16')];
const layers = parsePlan(p16).header.layers, bf16Layers = layers.filter((l) => l.precision === 'bf16').length;
if (!runs) process.exit(0);
const kFeeds = asTensors(feeds);
const ort = require('onnxruntime-node');
const sess = await ort.InferenceSession.create(serializeOnnx(m), { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential' });
const oFeeds = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new ort.Tensor(v.dtype, v.data, v.dims)]));
const [e32, e16] = [await Engine.load(p32, { intraOpNumThreads: threads }), await Engine.load(p16, { intraOpNumThreads: threads })];
const [c32, c16] = [e32.createContext(), e16.createContext()];
const wall = async (f: () => Promise<unknown>) => { const s = performance.now(); await f(); return performance.now() - s; };
const t: number[][] = [[], [], []];
// the two Kiln plans take turns right after onnxruntime, whose pool spins for a while after a run and takes a core
// from whatever runs next (at 2 threads): the penalty falls on both alike, not always on the fp32 plan
for (let i = 0; i < runs + 3; i++) {
  const r = [0, 0, 0];
  if (i % 2) { r[1] = await wall(() => c16.run(kFeeds)); r[0] = await wall(() => c32.run(kFeeds)); }
  else { r[0] = await wall(() => c32.run(kFeeds)); r[1] = await wall(() => c16.run(kFeeds)); }
  r[2] = await wall(() => sess.run(oFeeds));
  if (i >= 3) r.forEach((v, j) => t[j].push(v));
}
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
const ratio = (a: number, b: number) => med(t[a].map((v, i) => v / t[b][i])).toFixed(3);
const [o32, o16] = [Object.values(await c32.run(kFeeds))[0], Object.values(await c16.run(kFeeds))[0]] as unknown as { data: Float32Array; dims: number[] }[];
let err = 0, scale = 0, agree = 0;
const rows = o32.dims[0], cols = o32.data.length / rows;
const argmax = (a: Float32Array, r: number) => { let b = 0; for (let j = 1; j < cols; j++) if (a[r * cols + j] > a[r * cols + b]) b = j; return b; };
for (let i = 0; i < o32.data.length; i++) { err = Math.max(err, Math.abs(o32.data[i] - o16.data[i])); scale = Math.max(scale, Math.abs(o32.data[i])); }
for (let r = 0; r < rows; r++) if (argmax(o32.data, r) === argmax(o16.data, r)) agree++;
console.log(`${name}, batch ${batch}, ${threads} thread(s), ${runs} interleaved rounds; bf16 plan: ${bf16Layers} of ${layers.length} layers chose bf16`);
console.log(`  Kiln fp32: ${med(t[0]).toFixed(2)} ms   Kiln bf16: ${med(t[1]).toFixed(2)} ms   ORT fp32: ${med(t[2]).toFixed(2)} ms`);
console.log(`  bf16 / fp32 (Kiln): ${ratio(1, 0)}x   Kiln fp32 / ORT: ${ratio(0, 2)}x   Kiln bf16 / ORT: ${ratio(1, 2)}x`);
console.log(`  bf16 vs fp32 output: max abs ${err.toExponential(2)}, over max |out| ${(err / scale).toExponential(2)}, argmax agrees ${agree}/${rows}`);
console.log(`  load average: ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
e32.dispose(); e16.dispose();
await sess.release();

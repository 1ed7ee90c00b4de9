// Kiln vs onnxruntime-node on one zoo model, interleaved run by run (so load from other processes hits both alike):
// median wall time and CPU time per run. Usage: npx tsx bench/cpu/e2e.ts <model> [threads] [runs]
import { createRequire } from 'node:module';
import { ZOO } from '../models/zoo.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { seededRandom } from '../../src/ir/builder.js';

const require = createRequire(import.meta.url);
const name = process.argv[2] ?? 'mobilenet-v2';
const threads = Number(process.argv[3] ?? 1);
const runs = Number(process.argv[4] ?? 30);
const m = ZOO.find((z) => z.name === name)!.full();
const r = seededRandom(5);
const shapes: Record<string, number[]> = {};
const feeds: Record<string, { dtype: string; dims: number[]; data: Float32Array | BigInt64Array }> = {};
for (const i of m.graph.inputs) {
  if (m.graph.initializers.has(i.name) || i.type.kind !== 'tensor') continue;
  const dims = (i.type.shape ?? []).map((d) => (typeof d === 'number' ? d : /seq|len/.test(String(d)) ? 128 : 1));
  const n = dims.reduce((a, b) => a * b, 1);
  shapes[i.name] = dims;
  feeds[i.name] = i.type.dtype === 'float32' ? { dtype: 'float32', dims, data: Float32Array.from({ length: n }, () => r() * 2 - 1) }
    : { dtype: 'int64', dims, data: BigInt64Array.from({ length: n }, () => (i.name.includes('mask') ? 1n : BigInt(Math.floor(r() * 1000)))) };
}
const onnx = serializeOnnx(m);
const plan = await build(m, { shapes });
const engine = await Engine.load(plan, { intraOpNumThreads: threads });
const ctx = engine.createContext();
const kFeeds = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new Tensor(v.dtype as 'float32', v.data as Float32Array, v.dims)]));
const ort = require('onnxruntime-node');
const sess = await ort.InferenceSession.create(onnx, { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential' });
const oFeeds = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new ort.Tensor(v.dtype, v.data, v.dims)]));
const time = async (f: () => Promise<unknown>) => {
  const c = process.cpuUsage(), s = performance.now();
  await f();
  const u = process.cpuUsage(c);
  return [performance.now() - s, (u.user + u.system) / 1000];
};
const k: number[][] = [], o: number[][] = [];
for (let i = 0; i < runs + 3; i++) {
  const a = await time(() => ctx.run(kFeeds)), b = await time(() => sess.run(oFeeds));
  if (i >= 3) { k.push(a); o.push(b); }
}
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
const fmt = (x: number[][]) => `wall ${med(x.map((v) => v[0])).toFixed(2)} ms (min ${Math.min(...x.map((v) => v[0])).toFixed(2)}), cpu ${med(x.map((v) => v[1])).toFixed(2)} ms`;
console.log(`${name}, ${threads} thread(s), ${runs} interleaved runs`);
console.log(`  Kiln: ${fmt(k)}`);
console.log(`  ORT:  ${fmt(o)}`);
console.log(`  Kiln / ORT (median wall): ${(med(k.map((v) => v[0])) / med(o.map((v) => v[0]))).toFixed(2)}x`);
engine.dispose();
await sess.release();

// onnxruntime-node's own per-node profile of a zoo model (the `enableProfiling` session option): median time per
// node over the runs, summed per op type, and the slowest nodes, to set against bench/cpu/layers.ts for Kiln.
// Usage: npx tsx bench/cpu/ort-layers.ts <model> [threads] [runs] [top] [--batch=N]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { batchArg, zooInputs } from './inputs.js';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');
const [name = 'resnet50', threadsArg = '1', runsArg = '10', topArg = '25'] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
// real:<name>: a real exported graph from bench/real/models (random weights), else a zoo model
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const { feeds } = zooInputs(m, batchArg());
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ort-prof-'));
const sess = await ort.InferenceSession.create(serializeOnnx(m), {
  intraOpNumThreads: Number(threadsArg), interOpNumThreads: 1, executionMode: 'sequential',
  enableProfiling: true, profileFilePrefix: path.join(dir, 'p'),
});
const oFeeds = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new ort.Tensor(v.dtype, v.data, v.dims)]));
for (let i = 0; i < 3; i++) await sess.run(oFeeds);
const runs = Number(runsArg);
const walls: number[] = [];
for (let i = 0; i < runs; i++) { const s = performance.now(); await sess.run(oFeeds); walls.push(performance.now() - s); }
const file = sess.endProfiling?.() ?? fs.readdirSync(dir).map((f) => path.join(dir, f))[0];
await sess.release();
const events = JSON.parse(fs.readFileSync(fs.existsSync(file) ? file : path.join(dir, fs.readdirSync(dir)[0]), 'utf8')) as
  { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
const per = new Map<string, { op: string; d: number[] }>();
for (const e of events) {
  if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
  const n = e.name.slice(0, -'_kernel_time'.length);
  const r = per.get(n) ?? { op: e.args?.op_name ?? '?', d: [] };
  r.d.push(e.dur / 1000);
  per.set(n, r);
}
const med = (x: number[]) => [...x].sort((a, b) => a - b)[x.length >> 1];
const rows = [...per].map(([n, r]) => ({ n, op: r.op, ms: med(r.d.slice(3)) ?? med(r.d) }));
const byOp = new Map<string, [number, number]>();
for (const r of rows) { const v = byOp.get(r.op) ?? [0, 0]; byOp.set(r.op, [v[0] + r.ms, v[1] + 1]); }
console.log(`${name}, ORT ${threadsArg} thread(s): wall median ${med(walls).toFixed(2)} ms, node sum ${rows.reduce((s, r) => s + r.ms, 0).toFixed(2)} ms`);
for (const [op, [ms, n]] of [...byOp].sort((a, b) => b[1][0] - a[1][0])) console.log(`  ${ms.toFixed(2).padStart(8)} ms ${String(n).padStart(4)}x  ${op}`);
for (const r of rows.sort((a, b) => b.ms - a.ms).slice(0, Number(topArg))) console.log(`  ${r.ms.toFixed(3).padStart(8)} ms  ${r.op}  ${r.n}`);
fs.rmSync(dir, { recursive: true, force: true });

// One piece of a real or zoo model (the subgraph from some tensors to others, as `kiln surgeon extract` cuts it), Kiln
// against onnxruntime-node: per-op speed without onnxruntime's profiler, whose per-node timings run well above its
// unprofiled wall time. Each round: `runs` Kiln runs, then `runs` onnxruntime runs (each engine alone, as e2e.ts
// --blocks); median wall per engine over all rounds, and the ratio. Names may end in a '*' (the first tensor whose name
// starts with the rest). Usage:
//   npx tsx bench/cpu/sub-ort.ts <model|real:name> <inputs,comma> <outputs,comma> [threads] [runs] [rounds]
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { extractSubgraph } from '../../src/tools/surgeon.js';
import { build } from '../../src/build/builder.js';
import { parsePlan } from '../../src/build/plan.js';
import { Engine } from '../../src/runtime/engine.js';
import { asTensors, zooInputs } from './inputs.js';

const require = createRequire(import.meta.url);
const [name, insArg, outsArg, threadsArg = '1', runsArg = '50', roundsArg = '3'] = process.argv.slice(2);
if (!name || !insArg || !outsArg) throw new Error('usage: sub-ort.ts <model|real:name> <inputs> <outputs> [threads] [runs] [rounds]');
const full = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const tensors = full.graph.nodes.flatMap((n) => n.outputs);
const resolve = (s: string) => (s.endsWith('*') ? tensors.find((t) => t.startsWith(s.slice(0, -1))) ?? s : s);
const { model } = extractSubgraph(full, { inputs: insArg.split(',').map(resolve), outputs: outsArg.split(',').map(resolve) });
const { shapes, feeds } = zooInputs(model);
const plan = (await build(model, { shapes })).bytes;
for (const l of parsePlan(plan).header.layers) console.log(`  ${l.name}\t${l.tactic}`);
const ort = require('onnxruntime-node');
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
const runs = Number(runsArg), rounds = Number(roundsArg);
for (const threads of threadsArg.split(',').map(Number)) {
  const engine = await Engine.load(plan, { intraOpNumThreads: threads });
  const ctx = engine.createContext();
  const kFeeds = asTensors(feeds);
  const sess = await ort.InferenceSession.create(serializeOnnx(model), { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential' });
  const oFeeds = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new ort.Tensor(v.dtype, v.data, v.dims)]));
  const k: number[] = [], o: number[] = [];
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < runs + 3; i++) { const s = performance.now(); await ctx.run(kFeeds); if (i >= 3) k.push(performance.now() - s); }
    for (let i = 0; i < runs + 3; i++) { const s = performance.now(); await sess.run(oFeeds); if (i >= 3) o.push(performance.now() - s); }
  }
  engine.dispose();
  await sess.release();
  console.log(`${threads}T: Kiln ${(med(k) * 1000).toFixed(1)} us (min ${(Math.min(...k) * 1000).toFixed(1)}), ORT ${(med(o) * 1000).toFixed(1)} us ` +
    `(min ${(Math.min(...o) * 1000).toFixed(1)}): ${(med(k) / med(o)).toFixed(3)}x; load ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
}

// Two saved plans of one zoo model (e.g. built by two trees, see chain-prof.ts --plan) run alternately in one process,
// run by run, so that load from other processes hits both alike; then onnxruntime-node alone. Prints each engine's
// median wall ms, the median of the per-pair ratios B / A, and ORT's median; "sleeps": the process's voluntary context
// switches per run (median; a thread of the pool, the libuv worker or the main thread blocking: each a wake-up later,
// which cost 10-80 us on the Zen 5 VM). Usage:
//   npx tsx bench/cpu/ab-plans.ts <model|real:name> <planA> <planB> [threads, e.g. 1,2] [pairs] [--batch=N]
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { Engine } from '../../src/runtime/engine.js';
import { asTensors, batchArg, zooInputs } from './inputs.js';

const require = createRequire(import.meta.url);
const [name = 'mobilenet-v2', fileA, fileB, threadsArg = '1,2', pairsArg = '40'] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
if (!fileA || !fileB) throw new Error('usage: ab-plans.ts <model> <planA> <planB> [threads] [pairs]');
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const { feeds } = zooInputs(m, batchArg());
const kFeeds = asTensors(feeds);
const pairs = Number(pairsArg);
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
const ort = require('onnxruntime-node');
for (const threads of threadsArg.split(',').map(Number)) {
  const engines = await Promise.all([fileA, fileB].map((f) => Engine.load(fs.readFileSync(f), { intraOpNumThreads: threads })));
  const ctxs = engines.map((e) => e.createContext());
  const t: number[][] = [[], []], sw: number[][] = [[], []];
  for (let i = 0; i < pairs + 3; i++) {
    // alternate which goes first, so neither always follows the other
    for (const k of i % 2 ? [1, 0] : [0, 1]) {
      const s = performance.now(), v = process.resourceUsage().voluntaryContextSwitches;
      await ctxs[k].run(kFeeds);
      if (i >= 3) {
        t[k].push(performance.now() - s);
        sw[k].push(process.resourceUsage().voluntaryContextSwitches - v);
      }
    }
  }
  engines.forEach((e) => e.dispose());
  const sess = await ort.InferenceSession.create(serializeOnnx(m), { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential' });
  const oFeeds = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new ort.Tensor(v.dtype, v.data, v.dims)]));
  const o: number[] = [], so: number[] = [];
  for (let i = 0; i < pairs + 3; i++) {
    const s = performance.now(), v = process.resourceUsage().voluntaryContextSwitches;
    await sess.run(oFeeds);
    if (i >= 3) {
      o.push(performance.now() - s);
      so.push(process.resourceUsage().voluntaryContextSwitches - v);
    }
  }
  await sess.release();
  const ratio = med(t[1].map((b, i) => b / t[0][i]));
  const [a, b, r] = [med(t[0]), med(t[1]), med(o)];
  console.log(`${name}, ${threads} thread(s), ${pairs} pairs: A ${a.toFixed(2)} ms (min ${Math.min(...t[0]).toFixed(2)}), B ${b.toFixed(2)} ms (min ${Math.min(...t[1]).toFixed(2)}), ` +
    `B/A paired ${ratio.toFixed(3)}; sleeps/run A ${med(sw[0])} B ${med(sw[1])} ORT ${med(so)}; ORT ${r.toFixed(2)} ms (min ${Math.min(...o).toFixed(2)}): A/ORT ${(a / r).toFixed(2)}x, B/ORT ${(b / r).toFixed(2)}x; ` +
    `load ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
}

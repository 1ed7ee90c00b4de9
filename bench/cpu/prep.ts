// The JavaScript time per run of a zoo model around its native work: each run's wall time minus the time spent
// inside the library's calls (chains and single layers), median over many runs. What the runner and executor cost
// per request (issue 6). Also split: until the first native call starts (the executor and the first chain's
// preparation) and after the last one returns (resolving it, the outputs). Usage: npx tsx bench/cpu/prep.ts <model> [threads] [runs]
import { ZOO } from '../models/zoo.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { NativeLibrary } from '../../src/backends/cpu/native.js';
import { asTensors, zooInputs } from './inputs.js';

const name = process.argv[2] ?? 'mobilenet-v2';
const threads = Number(process.argv[3] ?? 1);
const runs = Number(process.argv[4] ?? 200);
const m = ZOO.find((z) => z.name === name)!.full();
const { shapes, feeds: raw } = zooInputs(m);
const feeds = asTensors(raw);
let native = 0, first = -1, last = 0;
// distinct chain programs over the timed runs (the runner reuses a chain's program when its buffers are the same)
const progs = new Set<unknown>();
const P = NativeLibrary.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
for (const k of ['runChain', 'callSync', 'callAsync']) {
  const f = P[k];
  P[k] = function (this: unknown, ...a: unknown[]) {
    const t = performance.now();
    if (first < 0) first = t;
    if (k === 'runChain') progs.add(a[0]);
    const r = f.apply(this, a);
    if (r instanceof Promise) return r.then((v) => ((last = performance.now()), (native += last - t), v));
    last = performance.now();
    native += last - t;
    return r;
  };
}
const engine = await Engine.load(await build(m, { shapes }), { intraOpNumThreads: threads });
const ctx = engine.createContext();
for (let i = 0; i < 20; i++) await ctx.run(feeds);
progs.clear();
const walls: number[] = [], js: number[] = [], before: number[] = [], after: number[] = [];
for (let i = 0; i < runs; i++) {
  native = 0;
  first = -1;
  const t = performance.now();
  await ctx.run(feeds);
  const e = performance.now(), w = e - t;
  walls.push(w);
  js.push(w - native);
  before.push(first - t);
  after.push(e - last);
}
const med = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1];
const q1 = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 2];
console.log(`${name}, ${threads} thread(s), ${runs} runs: wall median ${med(walls).toFixed(3)} ms, outside native calls median ${med(js).toFixed(3)} ms`
  + ` (before the first: ${med(before).toFixed(3)}, after the last: ${med(after).toFixed(3)}),`
  + ` lower quartile ${q1(js).toFixed(3)} ms; ${progs.size} distinct chain programs`);
engine.dispose();

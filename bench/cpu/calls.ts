// Counts the foreign calls one run of a zoo model makes (chains, single layers) and the time spent in them against
// the run's wall time: what the JS executor costs around the native work. Usage: npx tsx bench/cpu/calls.ts <model> [threads]
import { ZOO } from '../models/zoo.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { NativeLibrary } from '../../src/backends/cpu/native.js';
import { asTensors, zooInputs } from './inputs.js';

const name = process.argv[2] ?? 'bert-base';
const threads = Number(process.argv[3] ?? 1);
const m = ZOO.find((z) => z.name === name)!.full();
const { shapes, feeds: raw } = zooInputs(m);
const feeds = asTensors(raw);
const stats = { chain: 0, sync: 0, async: 0, ms: 0 };
const P = NativeLibrary.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
for (const [k, key] of [['runChain', 'chain'], ['callSync', 'sync'], ['callAsync', 'async']] as const) {
  const f = P[k];
  P[k] = function (this: unknown, ...a: unknown[]) {
    stats[key]++;
    const t = performance.now();
    const r = f.apply(this, a);
    if (r instanceof Promise) return r.then((v) => ((stats.ms += performance.now() - t), v));
    stats.ms += performance.now() - t;
    return r;
  };
}
const engine = await Engine.load(await build(m, { shapes }), { intraOpNumThreads: threads });
const ctx = engine.createContext();
for (let i = 0; i < 3; i++) await ctx.run(feeds);
const walls: number[] = [];
for (let i = 0; i < 10; i++) {
  Object.assign(stats, { chain: 0, sync: 0, async: 0, ms: 0 });
  const t = performance.now();
  await ctx.run(feeds);
  walls.push(performance.now() - t);
}
console.log(`${name}, ${threads} thread(s), last run: ${JSON.stringify(stats)}, wall median ${[...walls].sort((a, b) => a - b)[5].toFixed(2)} ms`);
engine.dispose();

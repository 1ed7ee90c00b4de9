// In-model vs warm per-call time: every chain record of a saved plan replayed on its own in chain order (as
// chain-prof.ts), then at once a second time. The first call meets the caches the model leaves (its output region last
// written a run ago, its weights evicted); the second finds its data where the first left it. A large gap points at
// cold data, not at the kernel. Usage: npx tsx bench/cpu/chain-twice.ts <model|real:name> <plan> [threads] [runs]
import fs from 'node:fs';
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { Engine } from '../../src/runtime/engine.js';
import { NativeLibrary } from '../../src/backends/cpu/native.js';
import { asTensors, zooInputs } from './inputs.js';
import { chainNames, kernelsMeta, recordSymbols } from './native-names.js';

const [name = 'mobilenet-v2', file, threadsArg = '1', runsArg = '30'] = process.argv.slice(2);
if (!file) throw new Error('usage: chain-twice.ts <model> <plan> [threads] [runs]');
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const feeds = asTensors(zooInputs(m).feeds);
const bytes = fs.readFileSync(file);
const meta = kernelsMeta(bytes);
const byFn = new Map(meta.layers.map((l) => [l.fn, l]));
const P = NativeLibrary.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
recordSymbols();
let on = false;
const rec = new Map<string, [number[], number[]]>();
const runChain = P.runChain;
P.runChain = function (this: NativeLibrary, prog: unknown, n: unknown, sync: unknown) {
  const p = prog as BigInt64Array, count = n as number;
  if (on) {
    const fns = chainNames(this, p, count);
    for (let i = 0; i < count; i++) {
      const fn = fns[i];
      const l = byFn.get(fn);
      const key = l ? `${l.node} ${l.tactic.replace(/native-\w+?-/, '')}` : `${fn} pair`;
      const r = rec.get(key) ?? rec.set(key, [[], []]).get(key)!;
      for (const k of [0, 1]) {
        const t = performance.now();
        runChain.call(this, p.subarray(i * 10, i * 10 + 10), 1, true);
        r[k].push((performance.now() - t) * 1000);
      }
    }
  }
  return runChain.call(this, prog, n, sync);
};
const med = (x: number[]) => [...x].sort((a, b) => a - b)[x.length >> 1];
const engine = await Engine.load(bytes, { intraOpNumThreads: Number(threadsArg) });
const ctx = engine.createContext();
for (let i = 0; i < 3; i++) await ctx.run(feeds);
on = true;
for (let r = 0; r < Number(runsArg); r++) await ctx.run(feeds);
on = false;
engine.dispose();
console.log(`${name} ${threadsArg}T, ${runsArg} runs; load ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
let s0 = 0, s1 = 0;
for (const [k, [a, b]] of rec) {
  s0 += med(a); s1 += med(b);
  console.log(`${k.padEnd(60)} ${med(a).toFixed(1).padStart(8)} ${med(b).toFixed(1).padStart(8)} ${(med(a) / med(b)).toFixed(2).padStart(6)}`);
}
console.log(`${'sum'.padEnd(60)} ${s0.toFixed(1).padStart(8)} ${s1.toFixed(1).padStart(8)}`);

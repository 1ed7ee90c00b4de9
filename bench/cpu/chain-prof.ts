// Every call of a zoo model's native chains timed on its own, in chain order, at each thread count: during a normal
// run the chain program is replayed record by record (synchronous one-record chains, so each layer meets the caches
// its predecessor left, as in the real chain), N passes, median per call. Shows which layers scale badly with threads.
// Usage: npx tsx bench/cpu/chain-prof.ts <model> [threads, e.g. 1,2] [passes] [--plan=file] (build once, saved/reused)
//   [--top=N] [--json=file] (per-call medians for comparing trees) [--hot] (each call's passes back to back)
//   [--batch=N] (the input's batch size, default 1)
import fs from 'node:fs';
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { NativeLibrary } from '../../src/backends/cpu/native.js';
import { asTensors, batchArg, zooInputs } from './inputs.js';
import { chainNames, kernelsMeta, recordSymbols } from './native-names.js';

const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
const argv = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const flag = (k: string) => flags.find((f) => f.startsWith(`--${k}=`))?.slice(k.length + 3);
const name = argv[0] ?? 'mobilenet-v2';
const threadList = (argv[1] ?? '1,2').split(',').map(Number);
const passes = Number(argv[2] ?? 100);
// real:<name>: a real exported graph from bench/real/models (random weights), else a zoo model
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const { shapes, feeds: raw } = zooInputs(m, batchArg());
const feeds = asTensors(raw);
const planFile = flag('plan');
const hot = flags.includes('--hot');
let bytes: Uint8Array;
if (planFile && fs.existsSync(planFile)) bytes = fs.readFileSync(planFile);
else {
  bytes = (await build(m, { shapes })).bytes;
  if (planFile) fs.writeFileSync(planFile, bytes);
}
const meta = kernelsMeta(bytes);
const byFn = new Map(meta.layers.map((l) => [l.fn, l]));

// function addresses -> names, as the runner resolves them
recordSymbols();
const P = NativeLibrary.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
let profile: Map<number, number[]> | undefined;
const chainFns: string[][] = [];
const runChain = P.runChain;
P.runChain = function (this: NativeLibrary, prog: unknown, n: unknown, sync: unknown) {
  const p = prog as BigInt64Array, count = n as number;
  if (profile) {
    chainFns.push(chainNames(this, p, count));
    // --hot: each record's passes back to back (its own output and weights left in cache), not in chain order
    for (let k = 0; k < passes * count; k++) {
      const i = hot ? Math.floor(k / passes) : k % count;
      const t = performance.now();
      runChain.call(this, p.subarray(i * 10, i * 10 + 10), 1, true);
      const key = (chainFns.length - 1) * 1000 + i;
      const xs = profile.get(key) ?? [];
      xs.push((performance.now() - t) * 1000);
      profile.set(key, xs);
    }
  }
  return runChain.call(this, prog, n, sync);
};

const med = (x: number[]) => [...x].sort((a, b) => a - b)[x.length >> 1];
const results = new Map<number, Map<string, number>>();
let order: string[] = [];
for (const threads of threadList) {
  const engine = await Engine.load(bytes, { intraOpNumThreads: threads });
  const ctx = engine.createContext();
  for (let i = 0; i < 3; i++) await ctx.run(feeds);
  profile = new Map();
  chainFns.length = 0;
  await ctx.run(feeds);
  const per = new Map<string, number>();
  order = [];
  for (const [key, xs] of [...profile].sort((a, b) => a[0] - b[0])) {
    const fn = chainFns[Math.floor(key / 1000)][key % 1000];
    const label = `${byFn.get(fn)?.node ?? fn} (${fn})`;
    order.push(label);
    per.set(label, med(xs));
  }
  profile = undefined;
  results.set(threads, per);
  engine.dispose();
}
const top = Number(flag('top') ?? 100);
const ts = threadList;
console.log(`${name}: us per chain call, median of ${passes} passes; load ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
console.log(`${'layer (function)'.padEnd(58)} ${ts.map((t) => `${t}T`.padStart(8)).join(' ')}${ts.length > 1 ? '  speedup' : ''}`);
const rows = order.map((l) => ({ l, t: ts.map((t) => results.get(t)!.get(l) ?? NaN) }));
for (const r of rows.slice(0, top)) {
  const tactic = byFn.get(/\((.*)\)$/.exec(r.l)![1])?.tactic.replace(/native-\w+?-/, '') ?? 'pair';
  console.log(`${`${r.l.replace(/ \(.*/, '')} ${tactic}`.padEnd(58)} ${r.t.map((v) => v.toFixed(1).padStart(8)).join(' ')}${ts.length > 1 ? `  ${(r.t[0] / r.t[r.t.length - 1]).toFixed(2)}x` : ''}`);
}
const sums = ts.map((_, i) => rows.reduce((a, r) => a + r.t[i], 0));
console.log(`${'sum'.padEnd(58)} ${sums.map((v) => v.toFixed(1).padStart(8)).join(' ')}${ts.length > 1 ? `  ${(sums[0] / sums[sums.length - 1]).toFixed(2)}x` : ''}`);
const json = flag('json');
if (json) fs.writeFileSync(json, JSON.stringify(Object.fromEntries(ts.map((t) => [t, Object.fromEntries(results.get(t)!)]))));

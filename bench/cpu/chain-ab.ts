// Per-call A/B of two saved plans of one zoo model in one process (chain-prof.ts's per-call timing, paired like
// ab-plans.ts): runs alternate A, B, A, B ...; in each run every chain record is replayed once on its own, in chain
// order, timed, before the real chain runs. Load from other processes (cache and memory contention included) hits
// both plans alike, which separate chain-prof runs minutes apart do not. Layers are matched by node name.
// Usage: npx tsx bench/cpu/chain-ab.ts <model|real:name> <planA> <planB> [threads] [runs] [--min] [--batch=N]
//   --min: each call's fastest run instead of its median (on a machine other jobs load, a call's undisturbed time)
import fs from 'node:fs';
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { Engine } from '../../src/runtime/engine.js';
import { NativeLibrary } from '../../src/backends/cpu/native.js';
import type { KernelsMeta } from '../../src/backends/cpu/build.js';
import { asTensors, batchArg, zooInputs } from './inputs.js';
import { chainNames, kernelsMeta, recordSymbols } from './native-names.js';

const [name = 'mobilenet-v2', fileA, fileB, threadsArg = '1', runsArg = '60'] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
if (!fileA || !fileB) throw new Error('usage: chain-ab.ts <model> <planA> <planB> [threads] [runs]');
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const feeds = asTensors(zooInputs(m, batchArg()).feeds);
const plans = [fileA, fileB].map((f) => fs.readFileSync(f));
const metas = plans.map(kernelsMeta);

recordSymbols();
const P = NativeLibrary.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
let sink: Map<string, number[]> | undefined, meta: KernelsMeta | undefined;
const runChain = P.runChain;
P.runChain = function (this: NativeLibrary, prog: unknown, n: unknown, sync: unknown) {
  const p = prog as BigInt64Array, count = n as number;
  if (sink) {
    const byFn = new Map(meta!.layers.map((l) => [l.fn, l])), fns = chainNames(this, p, count);
    for (let i = 0; i < count; i++) {
      const fn = fns[i];
      const t = performance.now();
      runChain.call(this, p.subarray(i * 10, i * 10 + 10), 1, true);
      const us = (performance.now() - t) * 1000;
      const l = byFn.get(fn);
      const key = l ? `${l.node} ${l.tactic.replace(/native-\w+?-/, '')}` : `${fn} pair`;
      const label = l ? l.node : fn;
      (sink.get(`${label}\t${key}`) ?? sink.set(`${label}\t${key}`, []).get(`${label}\t${key}`)!).push(us);
    }
  }
  return runChain.call(this, prog, n, sync);
};
const med = process.argv.includes('--min') ? (x: number[]) => Math.min(...x) : (x: number[]) => [...x].sort((a, b) => a - b)[x.length >> 1];
const threads = Number(threadsArg), runs = Number(runsArg);
const engines = await Promise.all(plans.map((b) => Engine.load(b, { intraOpNumThreads: threads })));
const ctxs = engines.map((e) => e.createContext());
for (const c of ctxs) for (let i = 0; i < 3; i++) await c.run(feeds);
const rec = [new Map<string, number[]>(), new Map<string, number[]>()];
for (let r = 0; r < runs; r++) {
  for (const i of r % 2 ? [1, 0] : [0, 1]) {
    sink = rec[i]; meta = metas[i];
    await ctxs[i].run(feeds);
    sink = undefined;
  }
}
for (const e of engines) e.dispose();
// rows in A's order, matched to B's by node (pairs by function name)
const rowsA = [...rec[0]].map(([k, v]) => ({ node: k.split('\t')[0], a: k.split('\t')[1], am: med(v) }));
const bBy = new Map([...rec[1]].map(([k, v]) => [k.split('\t')[0], { b: k.split('\t')[1], bm: med(v) }]));
console.log(`${name} ${threads}T, ${runs} runs each, alternating, ${process.argv.includes('--min') ? 'fastest' : 'median'} per call; load ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
console.log(`${'A layer tactic'.padEnd(44)} ${'A us'.padStart(8)} ${'B tactic'.padEnd(20)} ${'B us'.padStart(8)} ${'B-A'.padStart(7)}`);
let sa = 0, sb = 0;
for (const r of rowsA) {
  const b = bBy.get(r.node);
  sa += r.am; sb += b?.bm ?? 0;
  console.log(`${r.a.padEnd(44)} ${r.am.toFixed(1).padStart(8)} ${(b?.b.replace(r.node, '').trim() ?? '-').padEnd(20)} ${(b?.bm.toFixed(1) ?? '-').padStart(8)} ${b ? (b.bm - r.am).toFixed(1).padStart(7) : ''}`);
}
const unmatched = [...bBy.keys()].filter((k) => !rowsA.some((r) => r.node === k));
for (const k of unmatched) { const b = bBy.get(k)!; sb += b.bm; console.log(`${'-'.padEnd(44)} ${''.padStart(8)} ${b.b.padEnd(20)} ${b.bm.toFixed(1).padStart(8)}`); }
console.log(`${'sum'.padEnd(44)} ${sa.toFixed(1).padStart(8)} ${''.padEnd(20)} ${sb.toFixed(1).padStart(8)} ${(sb - sa).toFixed(1).padStart(7)}`);

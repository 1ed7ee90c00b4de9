// Where a run's wall time goes, layer by layer, as the run really runs (replayed: one foreign call, the pool as in
// production): the library's chain runner stamps the clock after every layer (kiln_trace), so a layer's time is the
// gap since the one before it, with none of the per-layer profile's calls and thread handoffs around it. Prints per
// layer the median over runs at each thread count, and the speed-up from the first count to the last.
// Usage: npx tsx bench/cpu/trace.ts <model|real:name> [threads, e.g. 1,2] [runs] [top] [--batch=N] [--plan=file]
import fs from 'node:fs';
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { parsePlan } from '../../src/build/plan.js';
import { KERNELS_BLOB, META_BLOB } from '../../src/backends/cpu/build.js';
import { NativeLibrary, readTrace } from '../../src/backends/cpu/native.js';
import { asTensors, batchArg, zooInputs } from './inputs.js';

const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const name = args[0] ?? 'resnet50';
const threadList = (args[1] ?? '1,2').split(',').map(Number);
const runs = Number(args[2] ?? 50);
const top = Number(args[3] ?? 25);
const planFile = process.argv.find((a) => a.startsWith('--plan='))?.slice(7);
const batch = batchArg();
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const { shapes, feeds: raw } = zooInputs(m, batch);
const feeds = asTensors(raw);
const plan = planFile ? new Uint8Array(fs.readFileSync(planFile)) : (await build(m, { shapes })).bytes;
const parsed = parsePlan(plan);
const meta = JSON.parse(new TextDecoder().decode(parsed.blobs.get(META_BLOB)!)) as { layers: { node: string; fn: string; tactic: string }[] };

// the engine's library: the same file, so the same loaded library and trace buffer (see NativeLibrary)
const lib = new NativeLibrary(parsed.blobs.get(KERNELS_BLOB)!);
const names = new Map<bigint, string>();
for (const l of meta.layers) {
  const a = lib.symbol(l.fn);
  if (a !== undefined) names.set(a, l.node);
}

const buf = new BigInt64Array(1 << 20);
const START = '(start: call to first layer)', END = '(end: last layer to await)';
void buf.buffer;
const perThreads: Map<string, number[]>[] = [];
const handoffLines: string[] = [];
const walls: number[] = [], faults: number[] = [], sleeps: number[] = [];
for (const threads of threadList) {
  const engine = await Engine.load(plan, { intraOpNumThreads: threads });
  const ctx = engine.createContext();
  for (let i = 0; i < 5; i++) await ctx.run(feeds);
  const sleepsAt = new Map<string, number>();
  const times = new Map<string, number[]>(), handoffs = new Map<string, number[]>();
  const wall: number[] = [];
  const ru0 = process.resourceUsage();
  for (let r = 0; r < runs; r++) {
    lib.trace(buf);
    const t0 = performance.now(), h0 = process.hrtime.bigint();
    await ctx.run(feeds);
    const h1 = process.hrtime.bigint();
    wall.push(performance.now() - t0);
    const seen = new Map<string, number>();
    let lastKey = '(start)';
    const ends = readTrace(buf, lib.trace(null), (fn, ms) => {
      // a layer that runs more than once a run (a fn shared by equal layers) adds up under its first node's name
      const key = names.get(fn) ?? `0x${fn.toString(16)}`;
      seen.set(key, (seen.get(key) ?? 0) + ms);
      lastKey = key;
    }, (worker) => {
      const key = `${worker ? 'worker' : 'caller'} sleeps in/after ${lastKey}`;
      sleepsAt.set(key, (sleepsAt.get(key) ?? 0) + 1);
    });
    // the clock the library stamps with is the one process.hrtime reads (CLOCK_MONOTONIC): the handoffs at both ends
    if (ends) {
      (handoffs.get(START) ?? handoffs.set(START, []).get(START)!).push(Number(ends.start - h0) / 1e6);
      (handoffs.get(END) ?? handoffs.set(END, []).get(END)!).push(Number(h1 - ends.end) / 1e6);
    }
    for (const [key, ms] of seen) (times.get(key) ?? times.set(key, []).get(key)!).push(ms);
  }
  const ru1 = process.resourceUsage();
  for (const [k2, c] of [...sleepsAt].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`  ${(c / runs).toFixed(2)}/run ${k2}`);
  handoffLines.push([...handoffs].map(([k, v]) => `${k} ${median(v).toFixed(3)} ms`).join(', '));
  faults.push((ru1.minorPageFault - ru0.minorPageFault) / runs);
  sleeps.push((ru1.voluntaryContextSwitches - ru0.voluntaryContextSwitches) / runs);
  engine.dispose();
  perThreads.push(times);
  walls.push(median(wall));
}
function median(x: number[]): number {
  const s = [...x].sort((a, b) => a - b);
  return s[s.length >> 1];
}
const tactic = new Map(meta.layers.map((l) => [l.node, l.tactic.replace(/^native-\w+-/, '')]));
const medians = perThreads.map((t) => new Map([...t].map(([k, v]) => [k, median(v)])));
const sums = medians.map((t) => [...t.values()].reduce((a, b) => a + b, 0));
console.log(`${name} (batch ${batch}), ${runs} runs per count; wall median ${walls.map((w, i) => `${threadList[i]}T ${w.toFixed(3)}`).join(', ')} ms; sum of layer medians ${sums.map((s, i) => `${threadList[i]}T ${s.toFixed(3)}`).join(', ')} ms`);
handoffLines.forEach((l, i) => console.log(`  ${threadList[i]}T: ${l}`));
console.log(`  per run: minor page faults ${faults.map((f) => f.toFixed(1)).join(', ')}; voluntary context switches ${sleeps.map((f) => f.toFixed(1)).join(', ')}`);
const first = medians[0], last = medians[medians.length - 1];
// by op kind (the tactic's family)
const byKind = new Map<string, number[]>();
for (const [k] of first) {
  const kind = (tactic.get(k) ?? 'other').replace(/-\d+x\d+$/, '');
  const e = byKind.get(kind) ?? byKind.set(kind, medians.map(() => 0)).get(kind)!;
  medians.forEach((t, i) => (e[i] += t.get(k) ?? 0));
}
for (const [kind, v] of [...byKind].sort((a, b) => b[1][0] - a[1][0])) {
  console.log(`  ${v.map((x) => x.toFixed(3).padStart(8)).join(' ')} ms  x${(v[0] / v[v.length - 1]).toFixed(2)}  ${kind}`);
}
console.log(`slowest layers (ms at ${threadList.join(', ')} threads, speed-up ${threadList[0]} -> ${threadList[threadList.length - 1]}):`);
for (const [k, v] of [...first].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`  ${medians.map((t) => (t.get(k) ?? NaN).toFixed(3).padStart(8)).join(' ')}  x${(v / (last.get(k) ?? NaN)).toFixed(2)}  ${(tactic.get(k) ?? '').padEnd(22)} ${k}`);
}
// --json=file: per layer, its tactic and median ms at each thread count (for comparing plans layer by layer)
const jsonOut = process.argv.find((a) => a.startsWith('--json='))?.slice(7);
if (jsonOut) {
  const rows = Object.fromEntries([...first.keys()].map((k) => [k, { tactic: meta.layers.find((l) => l.node === k)?.tactic, ms: medians.map((t) => t.get(k)) }]));
  fs.writeFileSync(jsonOut, JSON.stringify({ threads: threadList, walls, layers: rows }, null, 1));
}

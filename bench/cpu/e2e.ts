// Kiln vs onnxruntime-node on one zoo model, interleaved run by run (so load from other processes hits both alike):
// median wall time and CPU time per run. Usage: npx tsx bench/cpu/e2e.ts <model|real:name> [threads] [runs]
//   threads: a count or a comma list (one build, then each count in turn); --blocks: all Kiln runs, then all ORT
//   runs, each engine alone (onnxruntime's pool spins for a while after each run, which takes a core from whatever
//   runs next); --batch=N: the batch size (default 1); --bf16: Kiln built with precision bf16 (the CPU's bf16 math
//   mode), onnxruntime in fp32 as always; --rounds=R: both engines loaded, R rounds of runs/R runs each, the engines'
//   blocks alternating in order with a 50 ms pause before each (the other engine's pool settles), the ratio the median
//   of per-round ratios: a disturbed stretch of the machine hits one round of both engines, not one engine's block;
//   --caller: Kiln runs on the calling thread (runOnCallingThread), blocking the event loop as onnxruntime-node's run
//   does, so neither pays a thread handoff per run (default: Kiln on a worker thread, the event loop free)
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { ZOO } from '../models/zoo.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { asTensors, batchArg, zooInputs } from './inputs.js';
import { loadReal } from '../real/models.js';
import { coresLine } from './cores.js';

const require = createRequire(import.meta.url);
const argv = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const blocks = process.argv.includes('--blocks');
const bf16 = process.argv.includes('--bf16');
const onCaller = process.argv.includes('--caller');
const rounds = Number(process.argv.find((a) => a.startsWith('--rounds='))?.slice(9) ?? 0);
const batch = batchArg();
const name = argv[0] ?? 'mobilenet-v2';
const threadList = (argv[1] ?? '1').split(',').map(Number);
const runs = Number(argv[2] ?? 30);
// real:<name>: a real exported graph from bench/real/models (random weights), else a zoo model
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const { shapes, feeds } = zooInputs(m, batch);
const onnx = serializeOnnx(m);
const plan = await build(m, { shapes, ...(bf16 ? { precision: 'bf16' as const } : {}) });
const kFeeds = asTensors(feeds);
const ort = require('onnxruntime-node');
const time = async (f: () => Promise<unknown>) => {
  const c = process.cpuUsage(), s = performance.now();
  await f();
  const u = process.cpuUsage(c);
  return [performance.now() - s, (u.user + u.system) / 1000];
};
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
for (const threads of threadList) {
  const coresBefore = threads > 1 ? await coresLine() : '';
  const engine = await Engine.load(plan, { intraOpNumThreads: threads, runOnCallingThread: onCaller });
  const ctx = engine.createContext();
  const session = () => ort.InferenceSession.create(onnx, { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential' });
  const oFeeds = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new ort.Tensor(v.dtype, v.data, v.dims)]));
  const k: number[][] = [], o: number[][] = [];
  const kiln = () => time(() => ctx.run(kFeeds));
  let sess: { run: (f: unknown) => Promise<unknown>; release: () => Promise<void> };
  const ratios: number[] = [];
  if (rounds) {
    sess = await session();
    const ort1 = () => time(() => sess.run(oFeeds));
    for (let i = 0; i < 3; i++) {
      await kiln();
      await ort1();
    }
    const per = Math.ceil(runs / rounds);
    for (let r = 0; r < rounds; r++) {
      const kr: number[][] = [], or: number[][] = [];
      for (const [f, into] of (r % 2 ? [[ort1, or], [kiln, kr]] : [[kiln, kr], [ort1, or]]) as [() => Promise<number[]>, number[][]][]) {
        await new Promise((res) => setTimeout(res, 50));
        for (let i = 0; i < per; i++) into.push(await f());
      }
      ratios.push(med(kr.map((v) => v[0])) / med(or.map((v) => v[0])));
      k.push(...kr);
      o.push(...or);
    }
    engine.dispose();
  } else if (blocks) {
    // each engine alone: onnxruntime's session (and its threads) only exists once Kiln's runs are done
    for (let i = 0; i < runs + 3; i++) { const a = await kiln(); if (i >= 3) k.push(a); }
    engine.dispose();
    sess = await session();
    for (let i = 0; i < runs + 3; i++) { const a = await time(() => sess.run(oFeeds)); if (i >= 3) o.push(a); }
  } else {
    sess = await session();
    for (let i = 0; i < runs + 3; i++) {
      const a = await kiln(), b = await time(() => sess.run(oFeeds));
      if (i >= 3) { k.push(a); o.push(b); }
    }
    engine.dispose();
  }
  const fmt = (x: number[][]) => `wall ${med(x.map((v) => v[0])).toFixed(2)} ms (min ${Math.min(...x.map((v) => v[0])).toFixed(2)}), cpu ${med(x.map((v) => v[1])).toFixed(2)} ms`;
  console.log(`${name}, ${threads} thread(s), ${runs} ${rounds ? `runs each in ${rounds} rounds` : blocks ? 'runs each, in blocks' : 'interleaved runs'}${batch > 1 ? `, batch ${batch}` : ''}${bf16 ? ', Kiln bf16 math vs ORT fp32' : ''}`);
  console.log(`  Kiln: ${fmt(k)}`);
  console.log(`  ORT:  ${fmt(o)}`);
  console.log(`  Kiln / ORT (median wall): ${(med(k.map((v) => v[0])) / med(o.map((v) => v[0]))).toFixed(2)}x`);
  if (rounds) console.log(`  Kiln / ORT per round: median ${med(ratios).toFixed(2)}x (${ratios.map((r) => r.toFixed(2)).join(' ')})`);
  console.log(`  load average: ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
  if (threads > 1) console.log(`  before: ${coresBefore}\n  after:  ${await coresLine()}`);
  await sess.release();
}

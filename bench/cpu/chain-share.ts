// How much of a zoo model's run is its native chain calls: wall time of ctx.run against the time spent inside the
// chain foreign calls (sync or async) in the same runs, at each thread count. The rest is the runner's JavaScript,
// reference kernels and the hand-off to and from the library's thread.
// Usage: npx tsx bench/cpu/chain-share.ts <model> [threads, e.g. 1,2] [runs] [--plan=file] (reused when present)
import fs from 'node:fs';
import { ZOO } from '../models/zoo.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { NativeLibrary } from '../../src/backends/cpu/native.js';
import { asTensors, zooInputs } from './inputs.js';

const argv = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const planFile = process.argv.find((a) => a.startsWith('--plan='))?.slice(7);
const name = argv[0] ?? 'mobilenet-v2';
const threadList = (argv[1] ?? '1,2').split(',').map(Number);
const runs = Number(argv[2] ?? 50);
const m = ZOO.find((z) => z.name === name)!.full();
const { shapes, feeds: raw } = zooInputs(m);
const feeds = asTensors(raw);
let bytes: Uint8Array;
if (planFile && fs.existsSync(planFile)) bytes = fs.readFileSync(planFile);
else {
  bytes = (await build(m, { shapes })).bytes;
  if (planFile) fs.writeFileSync(planFile, bytes);
}
const P = NativeLibrary.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
const runChain = P.runChain;
let inChain = 0, calls = 0;
P.runChain = function (this: NativeLibrary, ...a: unknown[]) {
  const t = performance.now();
  calls++;
  const r = runChain.apply(this, a);
  if (r instanceof Promise) return r.then(() => void (inChain += performance.now() - t));
  inChain += performance.now() - t;
  return r;
};
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
for (const threads of threadList) {
  const engine = await Engine.load(bytes, { intraOpNumThreads: threads });
  const ctx = engine.createContext();
  for (let i = 0; i < 5; i++) await ctx.run(feeds);
  const wall: number[] = [], chain: number[] = [];
  for (let i = 0; i < runs; i++) {
    inChain = 0; calls = 0;
    const t = performance.now();
    await ctx.run(feeds);
    wall.push(performance.now() - t);
    chain.push(inChain);
  }
  console.log(`${name} ${threads}T: run ${med(wall).toFixed(2)} ms (min ${Math.min(...wall).toFixed(2)}), in chain calls ${med(chain).toFixed(2)} ms (${calls} calls/run), rest ${(med(wall) - med(chain)).toFixed(2)} ms; load ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
  engine.dispose();
}

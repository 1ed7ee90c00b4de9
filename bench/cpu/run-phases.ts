// Where a replayed run's main-thread time goes, outside the native call: from ctx.run to the foreign call ("pre"),
// the koffi async call itself ("call": until it returns), and from the library's completion callback to the caller
// resuming after `await ctx.run` ("post"); next to the foreign call's own span (call start to callback, "native").
// Usage: npx tsx bench/cpu/run-phases.ts <plan> [threads, e.g. 1,2] [runs] [--fine] (zoo mobilenet-v2 feeds unless
// --model=)
import fs from 'node:fs';
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { Engine } from '../../src/runtime/engine.js';
import { NativeLibrary } from '../../src/backends/cpu/native.js';
import { Replay } from '../../src/backends/cpu/replay.js';
import { asTensors, zooInputs } from './inputs.js';

const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
const [planFile, threadsArg = '1,2', runsArg = '200'] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const name = flags.find((f) => f.startsWith('--model='))?.slice(8) ?? 'mobilenet-v2';
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const feeds = asTensors(zooInputs(m).feeds);
let tCall = 0, tRet = 0, tCb = 0, tMatch = 0, tBind = 0, tBound = 0;
let last: { lib: unknown; prog: unknown; n: unknown; threads: unknown } | undefined;
// --fine: where "pre" goes (the engine's checks and feeds until the replay's own check; the check; the binding)
if (flags.includes('--fine')) {
  const R = Replay.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const { matches, bind } = R;
  R.matches = function (this: unknown, ...a: unknown[]) { tMatch = performance.now(); return matches.apply(this, a); };
  R.bind = function (this: unknown, ...a: unknown[]) { tBind = performance.now(); const r = bind.apply(this, a); tBound = performance.now(); return r; };
}
const P = NativeLibrary.prototype as unknown as { runReplay: (...a: unknown[]) => unknown };
const orig = P.runReplay;
P.runReplay = function (this: { replayFn?: { async: (...a: unknown[]) => void } }, prog: unknown, n: unknown, threads: unknown, sync: unknown) {
  tCall = performance.now();
  last = { lib: this, prog, n, threads };
  if (sync || !this.replayFn) return orig.call(this, prog, n, threads, sync);
  const f = this.replayFn;
  const p = new Promise((resolve, reject) => {
    f.async(prog, n, threads, (err: unknown, code: unknown) => {
      tCb = performance.now();
      return err ? reject(err) : resolve(Number(code));
    });
  });
  tRet = performance.now();
  return p;
};
const med = (x: number[]) => [...x].sort((a, b) => a - b)[x.length >> 1];
for (const threads of threadsArg.split(',').map(Number)) {
  const engine = await Engine.load(fs.readFileSync(planFile), { intraOpNumThreads: threads });
  const ctx = engine.createContext();
  for (let i = 0; i < 20; i++) await ctx.run(feeds);
  const ph = { engine: [] as number[], check: [] as number[], bind: [] as number[], pre: [] as number[], call: [] as number[], native: [] as number[], post: [] as number[], whole: [] as number[] };
  // "bare": the recorded program alone through the same foreign call, alternating with the runs
  const bare = { native: [] as number[], whole: [] as number[] };
  for (let i = 0; i < Number(runsArg); i++) {
    const b0 = performance.now();
    await P.runReplay.call(last!.lib, last!.prog, last!.n, last!.threads, false);
    const b1 = performance.now();
    bare.native.push(tCb - b0); bare.whole.push(b1 - b0);
    const s = performance.now();
    await ctx.run(feeds);
    const e = performance.now();
    ph.engine.push(tMatch - s); ph.check.push(tBind - tMatch); ph.bind.push(tBound - tBind); ph.pre.push(tCall - s); ph.call.push(tRet - tCall); ph.native.push(tCb - tCall); ph.post.push(e - tCb); ph.whole.push(e - s);
  }
  engine.dispose();
  console.log(`${name} ${threads}T median ms: ${Object.entries(ph).map(([k, v]) => `${k} ${med(v).toFixed(3)}`).join(', ')}; ` +
    `bare program: native ${med(bare.native).toFixed(3)}, whole ${med(bare.whole).toFixed(3)}; load ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`);
}

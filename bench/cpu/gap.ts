// Where a run's wall time goes beyond its layers. Each round: a run of a zoo model (after warm-up runs it is a replay:
// one chain program), then that program at once on a worker thread (as the run calls it, minus the binding), then
// synchronously on the main thread, then record by record (one-record chains, as chain-prof.ts), the order rotating
// from round to round. run - async = binding and outputs; async - sync = the worker-thread handoff (and whatever the
// calling thread being a libuv worker costs); sync - records = what one call over all records saves or costs.
// Usage: npx tsx bench/cpu/gap.ts <model|real:name> [threads, e.g. 1,2] [rounds] [--plan=file]
import fs from 'node:fs';
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { NativeLibrary } from '../../src/backends/cpu/native.js';
import { asTensors, zooInputs } from './inputs.js';

const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
const argv = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const name = argv[0] ?? 'mobilenet-v2';
const threadList = (argv[1] ?? '1,2').split(',').map(Number);
const rounds = Number(argv[2] ?? 40);
const planFile = flags.find((f) => f.startsWith('--plan='))?.slice(7);
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const { shapes, feeds: raw } = zooInputs(m);
const feeds = asTensors(raw);
const bytes = planFile && fs.existsSync(planFile) ? fs.readFileSync(planFile) : (await build(m, { shapes })).bytes;

// a replay's program is seen where the runner hands it to the library (runReplay; before it had one, runChain): the
// hook must not replace runChain itself, which sends replays down the three-call path (see NativeLibrary.runReplay)
const P = NativeLibrary.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
const runChain = P.runChain, entry = P.runReplay ? 'runReplay' : 'runChain', seen = P[entry];
let last: { lib: NativeLibrary; prog: BigInt64Array; n: number } | undefined;
P[entry] = function (this: NativeLibrary, prog: unknown, n: unknown, ...rest: unknown[]) {
  last = { lib: this, prog: prog as BigInt64Array, n: n as number };
  return seen.call(this, prog, n, ...rest);
};
const med = (x: number[]) => [...x].sort((a, b) => a - b)[x.length >> 1];
for (const threads of threadList) {
  const engine = await Engine.load(bytes, { intraOpNumThreads: threads });
  const ctx = engine.createContext();
  for (let i = 0; i < 3; i++) await ctx.run(feeds);
  const { lib, prog, n } = last!;
  // the last run's outputs stay referenced: the program writes into them until the next run binds fresh ones
  let keep: unknown;
  const ways: Record<string, () => Promise<unknown> | unknown> = {
    run: async () => { keep = await ctx.run(feeds); },
    async: () => runChain.call(lib, prog, n, false),
    sync: () => runChain.call(lib, prog, n, true),
    records: () => { for (let r = 0; r < n; r++) runChain.call(lib, prog.subarray(r * 10, r * 10 + 10), 1, true); },
  };
  const keys = Object.keys(ways);
  const t = Object.fromEntries(keys.map((k) => [k, [] as number[]]));
  for (let i = 0; i < rounds; i++) {
    for (let j = 0; j < keys.length; j++) {
      const k = keys[(i + j) % keys.length];
      const s = performance.now();
      await ways[k]();
      t[k].push(performance.now() - s);
    }
  }
  engine.dispose();
  void keep;
  console.log(`${name} ${threads}T (${n} records, ${rounds} rounds), median ms: ${keys.map((k) => `${k} ${med(t[k]).toFixed(3)}`).join(', ')}; ` +
    `load ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
}

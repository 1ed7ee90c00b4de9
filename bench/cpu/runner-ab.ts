// Two source trees' run paths on one saved plan, in one process, run by run (for runner / engine changes, which
// ab-plans.ts cannot compare: it loads both plans with this tree's code). Tree A is another checkout (e.g. `git
// archive HEAD` unpacked, node_modules linked), tree B this one; each loads the plan with its own Engine and feeds its
// own Tensors. Prints each side's median wall ms and the median of the per-pair ratios B / A.
// Usage: npx tsx bench/cpu/runner-ab.ts <model|real:name> <plan> <treeA> [threads, e.g. 1,2] [pairs]
import fs from 'node:fs';
import path from 'node:path';
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { zooInputs } from './inputs.js';

const [name = 'mobilenet-v2', planFile, treeA, threadsArg = '1,2', pairsArg = '200'] = process.argv.slice(2);
if (!planFile || !treeA) throw new Error('usage: runner-ab.ts <model> <plan> <treeA> [threads] [pairs]');
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const { feeds } = zooInputs(m);
const bytes = fs.readFileSync(planFile);
const pairs = Number(pairsArg);
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
type Ctx = { run(f: unknown): Promise<unknown> };
type Mod = { Engine: { load(b: Uint8Array, o: object): Promise<{ createContext(): Ctx; dispose(): void }> } };
const trees = [path.resolve(treeA), path.resolve(import.meta.dirname, '../..')];
const sides = await Promise.all(trees.map(async (t) => {
  const { Engine } = (await import(path.join(t, 'src/runtime/engine.ts'))) as Mod;
  const { Tensor } = (await import(path.join(t, 'src/runtime/tensor.ts'))) as { Tensor: new (type: string, data: unknown, dims: readonly number[]) => unknown };
  return { Engine, feeds: Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new Tensor(v.dtype, v.data, v.dims)])) };
}));
for (const threads of threadsArg.split(',').map(Number)) {
  const engines = await Promise.all(sides.map((s) => s.Engine.load(bytes, { intraOpNumThreads: threads })));
  const ctxs = engines.map((e) => e.createContext());
  const t: number[][] = [[], []];
  const load0 = fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
  for (let i = 0; i < pairs + 5; i++) {
    for (const k of i % 2 ? [1, 0] : [0, 1]) {
      const s = performance.now();
      await ctxs[k].run(sides[k].feeds);
      if (i >= 5) t[k].push(performance.now() - s);
    }
  }
  engines.forEach((e) => e.dispose());
  const ratio = med(t[1].map((b, i) => b / t[0][i]));
  console.log(`${name} ${threads}T, ${pairs} pairs: A ${med(t[0]).toFixed(3)} ms, B ${med(t[1]).toFixed(3)} ms, B/A ${ratio.toFixed(3)} (B - A ${(med(t[1]) - med(t[0])).toFixed(3)} ms); load ${load0} -> ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`);
}

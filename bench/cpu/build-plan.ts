// Build one model's plan and save it (for ab-plans.ts / chain-ab.ts), printing the build time and each native layer's
// tactic with its timed ms, so two builds (two trees, or two timing modes) can be diffed line by line.
// Usage: npx tsx bench/cpu/build-plan.ts <model|real:name> <out.plan> [--tactics] [--cache=file] [--bf16] [--batch=N]
//   --cache: a timing cache shared by the builds of two trees, so both plans pick the same tactics (an A/B then
//   compares the code alone, not the builder's timing noise); --bf16: precision bf16 (the CPU's bf16 math mode)
import fs from 'node:fs';
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { build } from '../../src/build/builder.js';
import { parsePlan } from '../../src/build/plan.js';
import { batchArg, zooInputs } from './inputs.js';

const argv = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const [name, out] = argv;
if (!name || !out) throw new Error('usage: build-plan.ts <model|real:name> <out.plan> [--tactics]');
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const { shapes } = zooInputs(m, batchArg());
const t0 = performance.now();
const timingCache = process.argv.find((a) => a.startsWith('--cache='))?.slice(8);
const { bytes } = await build(m, { shapes, ...(timingCache ? { timingCache } : {}), ...(process.argv.includes('--bf16') ? { precision: 'bf16' as const } : {}) });
const s = (performance.now() - t0) / 1000;
fs.writeFileSync(out, bytes);
console.log(`${name}: built in ${s.toFixed(1)} s -> ${out}`);
if (process.argv.includes('--tactics')) {
  for (const l of parsePlan(bytes).header.layers) if (l.tactic.startsWith('native')) console.log(`  ${l.name}\t${l.tactic}\t${l.timeMs?.toFixed(4) ?? ''}`);
}

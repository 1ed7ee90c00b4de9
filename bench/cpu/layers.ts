// Where a zoo model's CPU time goes: builds the full-size model, runs a per-layer profile (wall time per layer,
// koffi call included) at the given thread count, and prints time per op kind and the slowest layers with their
// FLOP rate. Usage: npx tsx bench/cpu/layers.ts <model|real:name> [threads] [top] [--batch=N]
//   --batch sets every symbolic dimension that is not a sequence length (default 1; sequence lengths are 128)
import { ZOO } from '../models/zoo.js';
import { loadReal } from '../real/models.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { profileLayers } from '../../src/tools/bench-layers.js';
import type { LayerInfo } from '../../src/build/plan.js';
import { asTensors, batchArg, zooInputs } from './inputs.js';

const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const name = args[0] ?? 'resnet50';
const threads = Number(args[1] ?? 1);
const top = Number(args[2] ?? 15);
const batch = batchArg();
// real:<name>: a real exported graph from bench/real/models (random weights), else a zoo model
const m = name.startsWith('real:') ? loadReal(name.slice(5)) : ZOO.find((z) => z.name === name)!.full();
const { shapes, feeds: raw } = zooInputs(m, batch);
const feeds = asTensors(raw);
const plan = await build(m, { shapes });
const engine = await Engine.load(plan, { intraOpNumThreads: threads });
const prof = await profileLayers(engine, feeds, { iterations: 10 });
engine.dispose();
const info = new Map<string, LayerInfo>(plan.header.layers.map((l) => [l.name, l]));
const num = (s: (number | string | null)[]) => s.reduce<number>((a, b) => a * (typeof b === 'number' ? b : 1), 1);
/** multiply-adds x 2 for convolutions and matmuls, from the output shape and the weight size (bias included, so
 * slightly high) */
function flops(l: LayerInfo): number {
  const os = l.outputs[0]?.shape ?? [], out = num(os), w = l.weightBytes / 4;
  if (l.opType === 'FusedConv') return 2 * out * w / (os[1] as number);
  if (l.opType === 'FusedMatMul') return 2 * out * w / (os[os.length - 1] as number);
  return 0;
}
const byOp = new Map<string, [number, number, number]>();
let total = 0;
for (const l of prof.layers) {
  const i = info.get(l.name)!;
  total += l.medianMs;
  const k = `${l.opType} ${l.tactic.replace(/native-\w+-/, '')}`;
  const e = byOp.get(k) ?? [0, 0, 0];
  byOp.set(k, [e[0] + l.medianMs, e[1] + 1, e[2] + flops(i)]);
}
console.log(`${name} (batch ${batch}), ${threads} thread(s): ${prof.layers.length} layers, sum of per-layer medians ${total.toFixed(2)} ms`);
for (const [k, [t, n, f]] of [...byOp].sort((a, b) => b[1][0] - a[1][0])) {
  console.log(`  ${t.toFixed(2).padStart(8)} ms  ${String(n).padStart(3)}x  ${f ? `${(f / t / 1e6).toFixed(1).padStart(6)} GFLOP/s` : ' '.repeat(14)}  ${k}`);
}
console.log('slowest layers:');
for (const l of [...prof.layers].sort((a, b) => b.medianMs - a.medianMs).slice(0, top)) {
  const i = info.get(l.name)!;
  const f = flops(i);
  console.log(`  ${l.medianMs.toFixed(3).padStart(8)} ms ${f ? `${(f / l.medianMs / 1e6).toFixed(1).padStart(6)} GF/s` : ' '.repeat(11)} ${l.tactic.padEnd(26)} ${l.name}  ${i.inputs.slice(0, 2).map((x) => `[${x.shape.join(',')}]`).join(' ')} -> [${i.outputs[0]?.shape.join(',')}]`);
}

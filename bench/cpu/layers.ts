// Where a zoo model's CPU time goes: builds the full-size model and prints the builder's tactic timing per layer
// (one thread during the build's timing), grouped by op, plus the slowest layers and their FLOP rate.
// Usage: npx tsx bench/cpu/layers.ts <model> [top]
import { ZOO } from '../models/zoo.js';
import { build } from '../../src/build/builder.js';

const name = process.argv[2] ?? 'resnet50';
const top = Number(process.argv[3] ?? 15);
const m = ZOO.find((z) => z.name === name)!.full();
const shapes: Record<string, number[]> = {};
for (const i of m.graph.inputs) {
  if (m.graph.initializers.has(i.name) || i.type.kind !== 'tensor') continue;
  shapes[i.name] = (i.type.shape ?? []).map((d) => (typeof d === 'number' ? d : /seq|len/.test(String(d)) ? 128 : 1));
}
const plan = await build(m, { shapes });
const layers = plan.header.layers;
const byOp = new Map<string, [number, number]>();
let total = 0;
for (const l of layers) {
  const t = l.timeMs ?? 0;
  total += t;
  const k = `${l.opType} ${l.tactic.replace(/native-\w+-/, '')}`;
  const e = byOp.get(k) ?? [0, 0];
  byOp.set(k, [e[0] + t, e[1] + 1]);
}
console.log(`${name}: ${layers.length} layers, sum of timed layers ${total.toFixed(2)} ms`);
for (const [k, [t, n]] of [...byOp].sort((a, b) => b[1][0] - a[1][0])) console.log(`  ${t.toFixed(2).padStart(8)} ms  ${String(n).padStart(3)}x  ${k}`);
console.log('slowest layers:');
for (const l of [...layers].sort((a, b) => (b.timeMs ?? 0) - (a.timeMs ?? 0)).slice(0, top)) {
  console.log(`  ${(l.timeMs ?? 0).toFixed(3).padStart(8)} ms  ${l.tactic.padEnd(28)} ${l.name}  ${l.inputs.map((i) => `[${i.shape.join(',')}]`).join(' ')} -> [${l.outputs[0]?.shape.join(',')}]`);
}

// Build every full-size zoo model for the CPU and report what the builder did: node counts before/after, arena vs
// its lower bound, build time and plan size. Run: npx tsx bench/build.ts [regex]
import os from 'node:os';
import { resnet50, mobilenetV2, bertBase, gpt2 } from './models/zoo.js';
import { build } from '../src/build/builder.js';
import type { Model } from '../src/ir/graph.js';

const MiB = (n: number) => (n / 2 ** 20).toFixed(2);
const models: [string, () => Model, Record<string, number[]>][] = [
  ['ResNet-50 bs1', () => resnet50(), { input: [1, 3, 224, 224] }],
  ['ResNet-50 bs32', () => resnet50(), { input: [32, 3, 224, 224] }],
  ['MobileNetV2 bs1', () => mobilenetV2(), { input: [1, 3, 224, 224] }],
  ['BERT-base bs1 seq128', () => bertBase(), { input_ids: [1, 128], attention_mask: [1, 128] }],
  ['GPT-2 small bs1 seq128', () => gpt2(), { input_ids: [1, 128] }],
];
const filter = new RegExp(process.argv[2] ?? '.', 'i');
console.log(`date ${new Date().toISOString()}, ${os.cpus()[0].model}, ${os.cpus().length} cores, node ${process.version}`);
console.log('| model | nodes before | layers after | arena (MiB) | lower bound (MiB) | arena / bound | weights (MiB) | build (s) | plan (MiB) |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const [name, make, shapes] of models) {
  if (!filter.test(name)) continue;
  const m = make();
  const t0 = performance.now();
  const plan = await build(m, { shapes });
  const s = (performance.now() - t0) / 1000;
  const mem = plan.header.memory;
  console.log(`| ${name} | ${m.graph.nodes.length} | ${plan.header.layers.length} | ${MiB(mem.arenaBytes)} | ${MiB(mem.lowerBound)} | ${(mem.arenaBytes / mem.lowerBound).toFixed(3)} | ${MiB(mem.weightBytes)} | ${s.toFixed(2)} | ${MiB(plan.bytes.length)} |`);
}

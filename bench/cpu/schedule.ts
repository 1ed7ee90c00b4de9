// Prints a built plan's schedule, marking the native layers (N), to see where chains of native calls break.
// Usage: npx tsx bench/cpu/schedule.ts <zoo model>
import { ZOO } from '../models/zoo.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { topoSort } from '../../src/ops/execute.js';
import { zooInputs } from './inputs.js';
import { kernelsMeta } from './native-names.js';

const name = process.argv[2] ?? 'bert-base';
const m = ZOO.find((z) => z.name === name)!.full();
const { shapes } = zooInputs(m);
const plan = await build(m, { shapes });
const meta = kernelsMeta(plan.bytes);
const native = new Set(meta.layers.map((l) => l.node));
const engine = await Engine.load(plan, { intraOpNumThreads: 1 });
for (const n of topoSort(engine.model.graph, () => true)) {
  console.log(native.has(n.name) ? 'N' : '.', `${n.domain}:${n.opType}`, n.name, n.inputs.join(','), '->', n.outputs.join(','));
}
engine.dispose();

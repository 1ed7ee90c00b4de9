// How much the per-layer profile (`kiln bench --dump-profile`) adds to a run: the profiled pass's total (the sum of its
// layer timers) against the un-profiled latency, interleaved ABBA so load changes on the machine hit both alike.
// Usage: npx tsx bench/cpu/profile-overhead.ts [batch=64] [seconds=5]
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { benchInputs, engineInputs, stats, timedRun } from '../../src/tools/bench.js';
import { profileLayers } from '../../src/tools/bench-layers.js';
import { tinyCnn } from '../models/zoo.js';

const batch = Number(process.argv[2] ?? 64), seconds = Number(process.argv[3] ?? 5);
const engine = await Engine.load(await build(tinyCnn(), { shapes: { input: [batch, 3, 32, 32] } }));
const x = benchInputs(engineInputs(engine));
const ctx = engine.createContext();
await profileLayers(engine, x, { iterations: 3, context: ctx });
const plain: number[] = [], profiled: number[] = [];
const t0 = performance.now();
while (performance.now() - t0 < seconds * 1000) {
  for (const p of [false, true, true, false]) {
    if (p) profiled.push((await profileLayers(engine, x, { iterations: 1, warmUpRuns: 0, context: ctx })).totalMedianMs);
    else plain.push((await timedRun(ctx, x)).latencyMs);
  }
}
const a = stats(plain).median, b = stats(profiled).median;
console.log(`tiny-cnn batch ${batch}, ${plain.length} + ${profiled.length} runs: un-profiled median ${a.toFixed(3)} ms, profiled layer sum median ${b.toFixed(3)} ms, ratio ${(b / a).toFixed(3)}`);
engine.dispose();

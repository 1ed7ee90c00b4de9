import { tinyCnn, resnet50, RESNET_SMALL } from './models/zoo.js';
import { build } from '../src/build/builder.js';
import { Engine } from '../src/runtime/engine.js';
import { benchInputs, engineInputs, stats, timedRun } from '../src/tools/bench.js';
import { profileLayers } from '../src/tools/bench-layers.js';
for (const [name, m, b] of [['tiny', tinyCnn(), 8], ['tiny', tinyCnn(), 32], ['tiny', tinyCnn(), 64], ['rsmall', resnet50(RESNET_SMALL), 8], ['rsmall', resnet50(RESNET_SMALL), 32]] as const) {
const tb = performance.now();
const big = await Engine.load(await build(m, { shapes: { input: [b, 3, 32, 32] } }));
const buildMs = performance.now() - tb;
const x = benchInputs(engineInputs(big));
const ctx = big.createContext();
for (let i = 0; i < 3; i++) await ctx.run(x);
const lat: number[] = [], comp: number[] = [], r1: number[] = [], r2: number[] = [];
const t0 = performance.now();
for (let i = 0; i < 20; i++) {
  const t = await timedRun(ctx, x);
  lat.push(t.latencyMs); comp.push(t.computeMs);
  const p = (await profileLayers(big, x, { iterations: 1, warmUpRuns: 0 })).totalMedianMs;
  r1.push(p / t.latencyMs); r2.push(p / t.computeMs);
}
console.log(name, b, 'build', buildMs.toFixed(0), 'lat', stats(lat).median.toFixed(2), 'comp', stats(comp).median.toFixed(2), 'ratio lat', stats(r1).median.toFixed(3), 'ratio comp', stats(r2).median.toFixed(3), 'ms', (performance.now() - t0).toFixed(0), big.header.layers.map(l=>l.tactic).join(','));
}

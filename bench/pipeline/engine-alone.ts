// Kiln's CPU engine alone on the pipeline benchmark's model and batch (no decoding): the ceiling that inference puts
// on bench/pipeline/resnet50.ts's images/s, and its arithmetic rate against the cores' fp32 FMA peak
// (bench/cpu/fma-peak.c). Usage: npx tsx bench/pipeline/engine-alone.ts [batch=8] [threads=2] [--int8-plan=file]
import { resnet50 } from '../models/zoo.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';

const [B, T] = [8, 2].map((d, i) => Number(process.argv.filter((a) => !a.startsWith('--'))[2 + i] ?? d));
const plan = await build(resnet50(), { profiles: [{ input: { min: [1, 3, 224, 224], opt: [B, 3, 224, 224], max: [B, 3, 224, 224] } }] });
const engine = await Engine.load(plan, { intraOpNumThreads: T });
const ctx = engine.createContext();
const x = new Tensor('float32', new Float32Array(B * 3 * 224 * 224).map(() => Math.random()), [B, 3, 224, 224]);
for (let i = 0; i < 3; i++) await ctx.run({ input: x });
const ts: number[] = [];
for (let i = 0; i < 12; i++) {
  const t = performance.now();
  await ctx.run({ input: x });
  ts.push(performance.now() - t);
}
ts.sort((a, b) => a - b);
const med = ts[ts.length >> 1];
// ResNet-50 at 224: 4.09 G multiply-adds per image as direct convolution; 2.97 G with the 3x3 stride-1 layers at
// Winograd F(4,3)'s 36 products per 16 outputs (the fewest any of Kiln's tactics needs)
const direct = 8.18 * B, minimal = 5.93 * B;
console.log(JSON.stringify({ batch: B, threads: T, medianMs: +med.toFixed(1), minMs: +ts[0].toFixed(1), imagesPerS: +((B / med) * 1000).toFixed(2),
  gflopsDirectEquivalent: +(direct / med * 1000).toFixed(1), gflopsWinogradMinimal: +(minimal / med * 1000).toFixed(1) }));
engine.dispose();

// GPU lifecycle checks: 1000 engine create/run/dispose cycles with device memory watched, and several contexts
// of one engine running at once. Run on the GPU machine: node bench/gpu/lifecycle.js
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { getDevice } from '../../src/backends/cuda/device.js';
import { tinyCnn } from '../models/zoo.js';

const plan = await build(tinyCnn(), { device: 'cuda', shapes: { input: [2, 3, 32, 32] } });
const x = { input: new Tensor('float32', new Float32Array(2 * 3 * 32 * 32).fill(0.5), [2, 3, 32, 32]) };
const dev = getDevice(0);
const used = () => { const m = dev.memInfo(); return (m.total - m.free) / 2 ** 20; };
let after10 = 0;
for (let i = 0; i < 1000; i++) {
  const e = await Engine.load(plan);
  const c = e.createContext();
  await c.run(x);
  await c.run(x);
  e.dispose();
  if (i === 9) after10 = used();
}
const after1000 = used();
console.log(`${after1000 - after10 <= 64 ? 'PASS' : 'FAIL'} create/dispose x1000: device memory in use ${after10.toFixed(0)} MiB after 10 cycles, ${after1000.toFixed(0)} MiB after 1000`);
const e = await Engine.load(plan);
const ctxs = [0, 1, 2, 3].map(() => e.createContext());
const outs = await Promise.all(ctxs.map((c) => c.run(x)));
const same = outs.every((o) => JSON.stringify(Array.from((o.probabilities as Tensor).data as Float32Array)) === JSON.stringify(Array.from((outs[0].probabilities as Tensor).data as Float32Array)));
console.log(`${same ? 'PASS' : 'FAIL'} 4 contexts of one engine at once give the same outputs`);

// enqueue does not block the event loop: a 1 ms timer keeps firing while ResNet-50 bs32 runs 30 times
{
  const { resnet50 } = await import('../models/zoo.js');
  const big = await Engine.load(await build(resnet50(), { device: 'cuda', precision: 'fp16', shapes: { input: [32, 3, 224, 224] } }));
  const ctx = big.createContext();
  const input = { input: new Tensor('float32', Float32Array.from({ length: 32 * 3 * 224 * 224 }, (_, i) => Math.sin(i)), [32, 3, 224, 224]) };
  await ctx.run(input);
  await ctx.run(input); // captured
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const t0 = performance.now();
  for (let i = 0; i < 30; i++) await ctx.run(input);
  const ms = performance.now() - t0;
  clearInterval(timer);
  console.log(`${ticks > 5 ? 'PASS' : 'FAIL'} event loop stays responsive during GPU runs: ${ticks} timer ticks in ${ms.toFixed(1)} ms of inference`);
  big.dispose();
}

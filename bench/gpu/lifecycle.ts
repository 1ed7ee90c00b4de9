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

// contexts of one engine on their own streams: distinct inputs, runs interleaved, each output equal to the same
// input's output from a lone context; then throughput of 4 concurrent contexts vs 1 (ResNet-50 bs1 fp16)
{
  const { resnet50 } = await import('../models/zoo.js');
  const eng = await Engine.load(await build(resnet50(), { device: 'cuda', precision: 'fp16', shapes: { input: [2, 3, 224, 224] } }));
  const inputs = [0, 1, 2, 3].map((s) => ({ input: new Tensor('float32', Float32Array.from({ length: 2 * 3 * 224 * 224 }, (_, i) => Math.sin(i * (s + 1) * 0.001)), [2, 3, 224, 224]) }));
  const lone = eng.createContext();
  const expected: Float32Array[] = [];
  for (const x of inputs) expected.push(Float32Array.from(((await lone.run(x)).logits as Tensor).data as Float32Array));
  const ctxs4 = inputs.map(() => eng.createContext());
  let bad = 0;
  for (let round = 0; round < 10; round++) {
    const outs = await Promise.all(ctxs4.map((c, k) => c.run(inputs[k])));
    outs.forEach((o, k) => { const d = (o.logits as Tensor).data as Float32Array; if (d.some((v, j) => v !== expected[k][j])) bad++; });
  }
  console.log(`${bad === 0 ? 'PASS' : 'FAIL'} 4 contexts with different inputs, 10 concurrent rounds (eager, capture, replay): ${bad} mismatching outputs`);
  const time = async (cs: typeof ctxs4, n: number) => {
    const t0 = performance.now();
    await Promise.all(cs.map(async (c, k) => { for (let i = 0; i < n; i++) await c.run(inputs[k]); }));
    return performance.now() - t0;
  };
  const one = await time([lone], 200), four = await time(ctxs4, 50);
  console.log(`INFO ResNet-50 bs2 fp16: 200 runs on 1 context ${one.toFixed(1)} ms, 4x50 runs on 4 contexts ${four.toFixed(1)} ms (${(one / four).toFixed(2)}x throughput)`);
  for (const c of [lone, ...ctxs4]) c.dispose();
  eng.dispose();
}

// memory: a ResNet-50 bs32 fp16 engine holds no more than weights + planned arena + 64 MiB (Kiln's pool, which holds
// weights, activations, CUDA-graph buffers and the cuBLASLt workspace; the CUDA context and library handles aside)
{
  const { resnet50 } = await import('../models/zoo.js');
  dev.trim();
  const before = dev.allocatedBytes;
  const plan32 = await build(resnet50(), { device: 'cuda', precision: 'fp16', shapes: { input: [32, 3, 224, 224] } });
  dev.trim();
  const base = dev.allocatedBytes;
  const eng = await Engine.load(plan32);
  const ctx = eng.createContext();
  const input = { input: new Tensor('float32', new Float32Array(32 * 3 * 224 * 224).fill(0.1), [32, 3, 224, 224]) };
  for (let i = 0; i < 4; i++) await ctx.run(input);
  dev.trim(); // cached free blocks are not the engine's
  const held = (dev.allocatedBytes - base) / 2 ** 20;
  const weights = plan32.header.memory.weightBytes / 2 ** 20, arena = plan32.header.memory.arenaBytes / 2 ** 20;
  // the build's arena excludes graph inputs/outputs (they are the bindings: user buffers in TensorRT's terms)
  const io = (32 * 3 * 224 * 224 * 4 + 32 * 1000 * 4) / 2 ** 20;
  console.log(`${held - io <= weights + arena + 64 ? 'PASS' : 'FAIL'} ResNet-50 bs32 fp16 engine holds ${held.toFixed(1)} MiB on the device, ${(held - io).toFixed(1)} MiB without its I/O bindings (${io.toFixed(1)} MiB); weights ${weights.toFixed(1)} + arena ${arena.toFixed(1)} + 64 = ${(weights + arena + 64).toFixed(1)} MiB (pool before build ${(before / 2 ** 20).toFixed(1)} MiB; cuBLASLt workspace 32 MiB per context included)`);
  eng.dispose();
}

// GpuTensors: inputs read in place, outputs left on the device (eager, capture, replays), equal to host I/O
{
  const { GpuTensor } = await import('../../src/runtime/gpu-tensor.js');
  const eng = await Engine.load(plan);
  const expected = Array.from(((await eng.createContext().run(x)).probabilities as Tensor).data as Float32Array);
  const ctx = eng.createContext();
  const g = await GpuTensor.fromTensor(x.input);
  let bad = 0;
  for (let i = 0; i < 4; i++) {
    const h = await ctx.run({ input: g });
    if (JSON.stringify(Array.from((h.probabilities as Tensor).data as Float32Array)) !== JSON.stringify(expected)) bad++;
    const d = await ctx.runToDevice({ input: g });
    if (JSON.stringify(Array.from((await d.probabilities.toTensor()).data as Float32Array)) !== JSON.stringify(expected)) bad++;
    await d.probabilities.dispose();
  }
  await g.dispose();
  ctx.dispose();
  eng.dispose();
  console.log(`${bad === 0 ? 'PASS' : 'FAIL'} GpuTensor inputs and device outputs over 4 runs (eager, capture, replay): ${bad} mismatches`);
}

// Where a quantized engine's time goes (issue 8): per-layer times of ResNet-50 bs32 and BERT-base 8x128 engines,
// int8 / fp8 (built at fp16 around the quantized layers) next to Kiln fp16, from eager runs with a device sync after
// each layer (`onLayer` hooks: host time of launch + kernel + sync, median of 15 runs after warm-up). A layer's time
// here carries a fixed launch-and-sync cost (measured: the median of the cheapest layers), so the table is read
// for shares and outliers; the replayed graph's device time (CUDA events) is printed beside it as the real total.
// Also prints the route each quantized GEMM's timed tactic chose. Usage: node bench/quant/gpu-profile.js [resnet|bert]...
import { resnet50, bertBase } from '../models/zoo.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { feedsFor, median } from './feeds.js';
import type { Model, Node } from '../../src/ir/graph.js';
import { gemmChoices } from '../../src/backends/cuda/ffi/cublaslt.js';


async function profile(label: string, m: Model, shapes: Record<string, number[]>) {
  gemmChoices.clear();
  const engine = await Engine.load(await build(m, { device: 'cuda', precision: 'fp16', shapes }));
  const ctx = engine.createContext();
  const feeds = feedsFor(shapes);
  for (let i = 0; i < 10; i++) await ctx.run(feeds);
  let compute = 0;
  const dev: number[] = [];
  for (let i = 0; i < 30; i++) {
    await ctx.run(feeds, undefined, { onPhase: (p: string, s: number, e: number) => { if (p === 'compute') compute = e - s; } });
    dev.push(compute);
  }
  const per = new Map<string, { node: Node; ms: number[] }>();
  for (let r = 0; r < 15; r++) {
    await ctx.run(feeds, undefined, {
      onLayer: (node: Node, _o: unknown, ms: number) => {
        const k = node.name || node.opType;
        if (!per.has(k)) per.set(k, { node, ms: [] });
        per.get(k)!.ms.push(ms);
      },
    });
  }
  const info = new Map(engine.header.layers.map((l) => [l.name, l]));
  const rows = [...per.entries()].map(([name, { node, ms }]) => {
    const l = info.get(name);
    return { name, op: node.opType, ms: median(ms), out: l?.outputs?.map((o) => `${o.dtype}[${o.shape.join('x')}]`).join(' ') ?? '', tactic: l?.tactic ?? '' };
  });
  const floor = median([...rows].sort((a, b) => a.ms - b.ms).slice(0, 8).map((r) => r.ms));
  const total = rows.reduce((a, r) => a + r.ms, 0);
  const byOp = new Map<string, { n: number; ms: number; net: number }>();
  for (const r of rows) {
    const o = byOp.get(r.op) ?? { n: 0, ms: 0, net: 0 };
    o.n++; o.ms += r.ms; o.net += Math.max(0, r.ms - floor);
    byOp.set(r.op, o);
  }
  console.log(`\n== ${label}: replayed graph ${median(dev).toFixed(3)} ms (device); ${rows.length} layers, synced sum ${total.toFixed(3)} ms, per-layer floor ${(floor * 1000).toFixed(0)} us`);
  console.log('by op type (count, synced ms, ms above the floor):');
  for (const [op, o] of [...byOp].sort((a, b) => b[1].net - a[1].net)) console.log(`  ${op.padEnd(22)} ${String(o.n).padStart(3)} ${o.ms.toFixed(3).padStart(8)} ${o.net.toFixed(3).padStart(8)}`);
  console.log('layers, slowest first (us above the floor):');
  for (const r of [...rows].sort((a, b) => b.ms - a.ms).slice(0, 25)) console.log(`  ${((r.ms - floor) * 1000).toFixed(0).padStart(6)}  ${r.op.padEnd(16)} ${r.name.slice(0, 48).padEnd(48)} ${r.out}`);
  const routes = [...gemmChoices].filter(([k]) => k.startsWith('qgemm|'));
  if (routes.length) console.log(`quantized GEMM routes (layer shape dtype -> candidate index in ops-quant.ts layerGemm's list): ${JSON.stringify(Object.fromEntries(routes.map(([k, v]) => [k.split('|').slice(2, 5).join(' '), v])))}`);
  console.log(`PROFILE ${JSON.stringify({ label, replayMs: +median(dev).toFixed(3), rows: rows.map((r) => [r.name, r.op, +(r.ms * 1000).toFixed(1)]) })}`);
  engine.dispose();
}

function quantize(m: Model, mode: 'int8' | 'fp8'): Model {
  return quantizeModel(m, { mode, calibrationData: randomCalibrationData(m.graph, 1, { seed: 1 }), batchSize: 1 }).model;
}

const which = process.argv.slice(2);
if (!which.length || which.includes('resnet')) {
  const m = resnet50(), s = { input: [32, 3, 224, 224] };
  await profile('resnet50 bs32 int8', quantize(m, 'int8'), s);
  await profile('resnet50 bs32 fp16', m, s);
}
if (!which.length || which.includes('bert')) {
  const m = bertBase(), s = { input_ids: [8, 128], attention_mask: [8, 128] };
  await profile('bert-base 8x128 int8', quantize(m, 'int8'), s);
  await profile('bert-base 8x128 fp16', m, s);
}
process.exit(0);

// Per-layer DEVICE times of whole engines (issue 8): each model is built at fp16 and as int8 (and fp8 with `fp8`),
// its CUDA graph is captured with an event after every layer (CudaRunner.layerTiming) and replayed; a layer's time is
// the median over the replays of the time between its event and the one before. No host sits between the layers, so
// unlike gpu-profile.ts (host-synced) these add up to the replayed graph's time (plus a little per event node, shown
// as the difference between the replay with and without events). Layers are compared by role: the layer name with
// block indices and the optimizer's `__kN` suffixes removed, GEMM op types merged (FusedMatMul/QMatMul -> GEMM).
// Usage (GPU machine, from the packed build): node bench/quant/gpu-layer-times.js [bert|resnet]... [fp8] [prev] [nopf] [res] [--json FILE]
// (prev: also int8 with the timed tactic's previous candidate set, KILN_QTACTIC=c5; nopf: also int8 without the residual
// L2 prefetch, KILN_QRESPF=0; res: also int8 from kiln quantize --quantize-residual, the residual Adds folded into conv3;
// before: also each int8 build without helper qconv's candidates, KILN_QSTEM=0 KILN_QCONVX=0 KILN_QTMACONV=0
// KILN_QTMA1X1=0: the stem on the explicit im2col route, no 64-byte k-step tiles, no TMA kernel on convolutions; epi0 with res: also the
// --quantize-residual build with the staged epilogue before helper qepi's options, KILN_QEPI=0; epiall: also each int8 build
// with the float tile's split layout in every staged kernel, KILN_QEPI=all; epihead: also each int8 build with the staged
// epilogue before helper qepi2's options, KILN_QEPI=qepi; epi2: also each int8 build with the staged epilogue before helper
// qepi3's fp16 residual tile, KILN_QEPI=qepi2)
import { writeFileSync } from 'node:fs';
import { resnet50, bertBase } from '../models/zoo.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { feedsFor, median } from './feeds.js';
import type { Model } from '../../src/ir/graph.js';
import type { CudaRunner } from '../../src/backends/cuda/runner.js';
import { gemmChoices } from '../../src/backends/cuda/ffi/cublaslt.js';

interface Layer { name: string; op: string; us: number }
interface Profile { label: string; replayMs: number; markedMs: number; layers: Layer[] }

const REPS = 40;

async function profile(label: string, m: Model, shapes: Record<string, number[]>): Promise<Profile> {
  gemmChoices.clear();
  const engine = await Engine.load(await build(m, { device: 'cuda', precision: 'fp16', shapes }));
  const runner = (engine as unknown as { runner: CudaRunner }).runner;
  const feeds = feedsFor(shapes);
  const replay = async (ctx: ReturnType<Engine['createContext']>, each?: () => void) => {
    let compute = 0;
    const hooks = { onPhase: (p: string, s: number, e: number) => { if (p === 'compute') compute = e - s; } };
    for (let i = 0; i < 10; i++) await ctx.run(feeds, undefined, hooks);
    const dev: number[] = [];
    for (let i = 0; i < REPS; i++) {
      await ctx.run(feeds, undefined, hooks);
      dev.push(compute);
      each?.();
    }
    return median(dev);
  };
  const replayMs = await replay(engine.createContext());
  runner.layerTiming = true; // graphs captured from now on carry the layer events
  const per = new Map<string, { op: string; ms: number[] }>();
  const markedMs = await replay(engine.createContext(), () => {
    for (const { node, ms } of runner.lastLayerTimes) {
      const k = node.name || `${node.opType}@${node.outputs[0]}`;
      if (!per.has(k)) per.set(k, { op: node.opType, ms: [] });
      per.get(k)!.ms.push(ms);
    }
  });
  runner.layerTiming = false;
  engine.dispose();
  const layers = [...per].map(([name, { op, ms }]) => ({ name, op, us: median(ms) * 1000 }));
  const p = { label, replayMs, markedMs, layers };
  const sum = layers.reduce((a, l) => a + l.us, 0);
  const routes = [...gemmChoices].filter(([k]) => k.startsWith('qgemm|')).map(([k, v]) => `${k.split('|').slice(3).join(' ')}:${v}`);
  if (routes.length) console.log(`quantized GEMM choices (shape ... -> index in ops-quant.ts layerGemm's candidates; KILN_QGEMM=${process.env.KILN_QGEMM ?? ''}): ${[...new Set(routes)].join(', ')}`);
  console.log(`\n== ${label}: replay ${replayMs.toFixed(3)} ms; with layer events ${markedMs.toFixed(3)} ms; ${layers.length} layers, sum of medians ${(sum / 1000).toFixed(3)} ms`);
  return p;
}

const GEMM = new Set(['FusedMatMul', 'QMatMul', 'MatMul', 'Gemm']);
const CONV = new Set(['FusedConv', 'QConv', 'Conv']);
const opClass = (op: string) => (GEMM.has(op) ? 'GEMM' : CONV.has(op) ? 'CONV' : op);
const role = (l: Layer) => `${opClass(l.op)} ${l.name.replace(/__k\d+/g, '').replace(/\.qkv|\.split/g, '').replace(/\.\d+\./g, '.*.').replace(/\d+$/, '*')}`;

function byKey(p: Profile, key: (l: Layer) => string) {
  const m = new Map<string, { n: number; us: number }>();
  for (const l of p.layers) {
    const o = m.get(key(l)) ?? { n: 0, us: 0 };
    o.n++; o.us += l.us;
    m.set(key(l), o);
  }
  return m;
}

/** Side by side: per op type, then per role, the reference profile (fp16) against each other one. */
function compare(ref: Profile, others: Profile[], key: (l: Layer) => string, title: string, limit = 40) {
  const maps = [ref, ...others].map((p) => byKey(p, key));
  const keys = [...new Set(maps.flatMap((m) => [...m.keys()]))];
  const delta = (k: string) => Math.max(...maps.slice(1).map((m) => Math.abs((m.get(k)?.us ?? 0) - (maps[0].get(k)?.us ?? 0))));
  keys.sort((a, b) => delta(b) - delta(a));
  console.log(`\n${title} (us, sum of per-layer medians; count in brackets; sorted by largest difference to ${ref.label})`);
  console.log(`  ${'key'.padEnd(64)} ${[ref, ...others].map((p) => p.label.padStart(22)).join(' ')}`);
  for (const k of keys.slice(0, limit)) {
    console.log(`  ${k.slice(0, 64).padEnd(64)} ${maps.map((m) => { const o = m.get(k); return (o ? `${o.us.toFixed(1)} [${o.n}]` : '-').padStart(22); }).join(' ')}`);
  }
  console.log(`  ${'TOTAL'.padEnd(64)} ${[ref, ...others].map((p) => `${(p.layers.reduce((a, l) => a + l.us, 0)).toFixed(1)}`.padStart(22)).join(' ')}`);
}

function quantize(m: Model, mode: 'int8' | 'fp8', quantizeResidual = false): Model {
  return quantizeModel(m, { mode, quantizeResidual, calibrationData: randomCalibrationData(m.graph, 1, { seed: 1 }), batchSize: 1 }).model;
}

const args = process.argv.slice(2);
const jsonAt = args.indexOf('--json');
const jsonFile = jsonAt >= 0 ? args[jsonAt + 1] : undefined;
const which = args.filter((a, i) => !a.startsWith('--') && (jsonAt < 0 || i !== jsonAt + 1));
const fp8 = which.includes('fp8'), prev = which.includes('prev'), nopf = which.includes('nopf'), res = which.includes('res'), before = which.includes('before');
const all: Profile[] = [];
for (const model of ['bert', 'resnet'].filter((x) => which.includes(x) || !which.some((w) => w === 'bert' || w === 'resnet'))) {
  const m = model === 'bert' ? bertBase() : resnet50();
  const s: Record<string, number[]> = model === 'bert' ? { input_ids: [8, 128], attention_mask: [8, 128] } : { input: [32, 3, 224, 224] };
  const ps = [await profile(`${model} fp16`, m, s), await profile(`${model} int8`, quantize(m, 'int8'), s)];
  if (prev) { // the timed tactic's previous candidate set (ops-quant.ts layerGemm), same process
    process.env.KILN_QTACTIC = 'c5';
    ps.push(await profile(`${model} int8 c5`, quantize(m, 'int8'), s));
    delete process.env.KILN_QTACTIC;
  }
  if (nopf) { // int8 without the residual tile's L2 prefetch (QGemmArgs.residualPrefetch), same process
    process.env.KILN_QRESPF = '0';
    ps.push(await profile(`${model} int8 no-prefetch`, quantize(m, 'int8'), s));
    delete process.env.KILN_QRESPF;
  }
  if (fp8) ps.push(await profile(`${model} fp8`, quantize(m, 'fp8'), s));
  if (res) ps.push(await profile(`${model} int8 res`, quantize(m, 'int8', true), s)); // --quantize-residual: int8 residual stream
  if (res && which.includes('epi0')) { // the staged epilogue before helper qepi's options (KILN_QEPI=0), same process
    process.env.KILN_QEPI = '0';
    ps.push(await profile(`${model} int8 res epi0`, quantize(m, 'int8', true), s));
    delete process.env.KILN_QEPI;
  }
  if (which.includes('epihead')) { // the staged epilogue before helper qepi2 (KILN_QEPI=qepi), same process
    process.env.KILN_QEPI = 'qepi';
    ps.push(await profile(`${model} int8 qepi`, quantize(m, 'int8'), s));
    if (res) ps.push(await profile(`${model} int8 res qepi`, quantize(m, 'int8', true), s));
    delete process.env.KILN_QEPI;
  }
  if (which.includes('epi2')) { // the staged epilogue before helper qepi3's fp16 residual tile (KILN_QEPI=qepi2), same process
    process.env.KILN_QEPI = 'qepi2';
    ps.push(await profile(`${model} int8 qepi2`, quantize(m, 'int8'), s));
    if (res) ps.push(await profile(`${model} int8 res qepi2`, quantize(m, 'int8', true), s));
    delete process.env.KILN_QEPI;
  }
  if (which.includes('epiall')) { // the float tile's split layout in every staged kernel (KILN_QEPI=all), same process
    process.env.KILN_QEPI = 'all';
    ps.push(await profile(`${model} int8 epiall`, quantize(m, 'int8'), s));
    if (res) ps.push(await profile(`${model} int8 res epiall`, quantize(m, 'int8', true), s));
    delete process.env.KILN_QEPI;
  }
  if (before) { // the candidate sets before helper qconv (the stem's explicit im2col route), same process
    Object.assign(process.env, { KILN_QSTEM: '0', KILN_QCONVX: '0', KILN_QTMACONV: '0', KILN_QTMA1X1: '0' });
    ps.push(await profile(`${model} int8 before`, quantize(m, 'int8'), s));
    if (res) ps.push(await profile(`${model} int8 res before`, quantize(m, 'int8', true), s));
    for (const k of ['KILN_QSTEM', 'KILN_QCONVX', 'KILN_QTMACONV', 'KILN_QTMA1X1']) delete process.env[k];
  }
  compare(ps[0], ps.slice(1), (l) => opClass(l.op), `${model}: by op type`);
  compare(ps[0], ps.slice(1), role, `${model}: by role`, model === 'bert' ? 40 : 30);
  all.push(...ps);
}
if (jsonFile) writeFileSync(jsonFile, JSON.stringify(all));
console.log('\nSUMMARY ' + all.map((p) => `${p.label}: replay ${p.replayMs.toFixed(3)} ms, marked ${p.markedMs.toFixed(3)} ms, layers ${(p.layers.reduce((a, l) => a + l.us, 0) / 1000).toFixed(3)} ms`).join('; '));
process.exit(0);

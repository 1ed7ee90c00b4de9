// Kiln's CPU backend vs onnxruntime-node (and onnxruntime-web's wasm) on the zoo's full-size models: median latency
// at 1 and 2 threads, plus Kiln's build time. Usage: npx tsx bench/cpu/compare.ts [models] [runs]
//   models: comma list of resnet50, mobilenet-v2, bert-base (default all); runs: timed runs per setting (default 20)
import os from 'node:os';
import { createRequire } from 'node:module';
import { ZOO } from '../models/zoo.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { asTensors, zooInputs } from './inputs.js';

const require = createRequire(import.meta.url);
const models = (process.argv[2] ?? 'resnet50,mobilenet-v2,bert-base').split(',');
const runs = Number(process.argv[3] ?? 20);


async function median(f: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 3; i++) await f();
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const s = performance.now();
    await f();
    t.push(performance.now() - s);
  }
  t.sort((a, b) => a - b);
  return t[t.length >> 1];
}

const rows: string[] = [];
for (const name of models) {
  const m = ZOO.find((z) => z.name === name)!.full();
  const { shapes, feeds } = zooInputs(m);
  const t0 = performance.now();
  const plan = await build(m, { shapes });
  const buildMs = performance.now() - t0;
  const native = plan.header.layers.filter((l) => l.tactic !== 'reference').length;
  const onnx = serializeOnnx(m);
  for (const threads of [1, 2]) {
    const engine = await Engine.load(plan, { intraOpNumThreads: threads });
    const ctx = engine.createContext();
    const kFeeds = asTensors(feeds);
    const kiln = await median(() => ctx.run(kFeeds));
    engine.dispose();
    const ortNode = require('onnxruntime-node');
    const sess = await ortNode.InferenceSession.create(onnx, { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential' });
    const oFeeds = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new ortNode.Tensor(v.dtype, v.data, v.dims)]));
    const ort = await median(() => sess.run(oFeeds));
    await sess.release();
    let web = NaN;
    if (process.env.KILN_BENCH_WEB !== '0') {
      const ortWeb = require('onnxruntime-web');
      ortWeb.env.wasm.numThreads = threads;
      const ws = await ortWeb.InferenceSession.create(onnx, { executionProviders: ['wasm'] });
      const wFeeds = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new ortWeb.Tensor(v.dtype, v.data, v.dims)]));
      web = await median(() => ws.run(wFeeds));
      await ws.release();
    }
    const row = `| ${name} | ${threads} | ${kiln.toFixed(1)} | ${ort.toFixed(1)} | ${(kiln / ort).toFixed(2)}x | ${Number.isNaN(web) ? '-' : web.toFixed(1)} | ${native}/${plan.header.layers.length} | ${(buildMs / 1000).toFixed(1)} s |`;
    console.log(row);
    rows.push(row);
  }
}
console.log(`\n${new Date().toISOString().slice(0, 10)}, ${os.cpus()[0]?.model?.trim()} (${os.cpus().length} cores), Node ${process.version}, runs=${runs}`);
console.log('| model | threads | Kiln ms | onnxruntime-node ms | Kiln / ORT | onnxruntime-web wasm ms | native layers | Kiln build |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);

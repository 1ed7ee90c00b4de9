// BERT-base 8x128 (issue 8): where the int8 engine's graph time goes, and what programmatic dependent launch (PDL,
// codegen/pdl.ts) does to it. The models are gpu-int8.ts' (zoo BERT-base, random weights, int8 by Kiln's quantizer
// on seeded random calibration data), built at fp16; kinds fp16, int8, fp8, and rn-fp16 / rn-int8 for ResNet-50 bs32.
// - `ncu fp16|int8`: build, warm up (the graph is captured), then one graph replay between cuProfilerStart/Stop, for
//   `ncu --profile-from-start off --metrics gpu__time_duration.sum --csv`: every kernel of one inference, serialized.
// - `ab [fp16|int8...]`: per engine, one context of one build per KILN_PDL mode (KILN_PDL_AB, default 0,entry,wait,late:
//   off and device.ts' three modes); their replays alternate (rounds of 25, CUDA-event medians), and every replay's
//   outputs must equal the first PDL-off replay's byte for byte (a missing wait would show as a moving difference).
// - `edges`: whether a stream capture of PDL launches makes programmatic graph edges (three dependent kernels per mode).
// Usage (GPU machine, from the packed build): node bench/quant/bert-ncu.js ncu int8 | ab [fp16] [int8] [fp8] [rn-fp16] [rn-int8] | edges
import { bertBase, resnet50 } from '../models/zoo.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { feedsFor, median } from './feeds.js';
import { cu } from '../../src/backends/cuda/ffi/driver.js';
import type { Model } from '../../src/ir/graph.js';

const bertShapes = { input_ids: [8, 128], attention_mask: [8, 128] }, rnShapes = { input: [32, 3, 224, 224] };
let shapes: Record<string, number[]> = bertShapes;
let feeds = feedsFor(shapes);

/** The model of `kind` (and the shapes and feeds of its runs from now on). */
function model(kind: string): Model {
  const rn = kind.startsWith('rn-');
  shapes = rn ? rnShapes : bertShapes;
  feeds = feedsFor(shapes);
  const m = rn ? resnet50() : bertBase();
  if (kind.endsWith('fp16')) return m;
  const mode = kind === 'fp8' ? 'fp8' : 'int8';
  return quantizeModel(m, { mode, calibrationData: randomCalibrationData(m.graph, 1, { seed: 1 }), evalData: randomCalibrationData(m.graph, 2, { seed: 2 }), batchSize: 1 }).model;
}

type Ctx = ReturnType<Engine['createContext']>;
async function timed(ctx: Ctx): Promise<{ ms: number; out: Uint8Array[] }> {
  let ms = 0;
  const out = await ctx.run(feeds, undefined, { onPhase: (p: string, s: number, e: number) => { if (p === 'compute') ms = e - s; } });
  return { ms, out: Object.values(out).map((t) => { const d = (t as Tensor).data as unknown as ArrayBufferView; return new Uint8Array(d.buffer, d.byteOffset, d.byteLength).slice(); }) };
}

/** A context whose graph is captured with KILN_PDL=`pdl` (0: off; entry, wait, late: device.ts' modes), read at each launch. */
async function context(e: Engine, pdl: string): Promise<Ctx> {
  const before = process.env.KILN_PDL;
  process.env.KILN_PDL = pdl;
  const ctx = e.createContext();
  for (let i = 0; i < 3; i++) await ctx.run(feeds); // eager, capture, replay
  if (before === undefined) delete process.env.KILN_PDL;
  else process.env.KILN_PDL = before;
  return ctx;
}

const [mode, ...kinds] = process.argv.slice(2);
if (mode === 'ncu') {
  const m = model(kinds[0] ?? 'int8');
  const e = await Engine.load(await build(m, { device: 'cuda', precision: 'fp16', shapes }));
  const ctx = await context(e, process.env.KILN_PDL ?? 'late');
  for (let i = 0; i < 5; i++) await ctx.run(feeds);
  cu('cuProfilerStart');
  await ctx.run(feeds);
  cu('cuProfilerStop');
  console.log(`profiled one ${kinds[0] ?? 'int8'} replay`);
} else if (mode === 'edges') {
  // does a stream capture of PDL launches make programmatic edges? three dependent element-wise kernels per mode
  const { getDevice } = await import('../../src/backends/cuda/device.js');
  const { elementwise } = await import('../../src/backends/cuda/codegen/elementwise.js');
  const dev = getDevice(0);
  const k = elementwise({ expr: '(add $0 $1)', inputs: [{ dtype: 'float32', dims: [4096] }, { dtype: 'float32', dims: [4096] }], out: { dtype: 'float32', dims: [4096] } });
  const [a, b, c] = [0, 1, 2].map(() => dev.alloc(16384, true));
  const s = dev.createStream();
  for (const m of ['0', 'wait', 'entry', 'early']) {
    process.env.KILN_PDL = m;
    dev.launch(k, [a, b, c], s);
    dev.sync(s);
    cu('cuStreamBeginCapture_v2', s, 2);
    dev.launch(k, [a, b, c], s);
    dev.launch(k, [c, b, a], s);
    dev.launch(k, [a, b, c], s);
    const g = [null];
    cu('cuStreamEndCapture', s, g);
    const n: (number | bigint)[] = [0];
    cu('cuGraphGetEdges_v2', g[0], null, null, null, n);
    const count = Number(n[0]);
    const from = new BigUint64Array(count), to = new BigUint64Array(count), data = Buffer.alloc(8 * count);
    cu('cuGraphGetEdges_v2', g[0], from, to, data, n);
    const edges = [...Array(count).keys()].map((i) => `port ${data[8 * i]}->${data[8 * i + 1]} type ${data[8 * i + 2]}`);
    const exec = [null];
    cu('cuGraphInstantiateWithFlags', exec, g[0], 0);
    cu('cuGraphLaunch', exec[0], s);
    dev.sync(s);
    console.log(`EDGES KILN_PDL=${m}: ${count} edges: ${edges.join('; ')} (type 1 = programmatic; graph launched fine)`);
  }
} else if (mode === 'ab') {
  const summary: string[] = [];
  // a mode named twice gets a second context (labelled with a '): the spread between a mode's two contexts (their
  // own arenas, tensor maps) is the noise floor of the comparison
  const modes = (process.env.KILN_PDL_AB ?? '0,entry,wait,late').split(',').map((m, i, a) => (a.indexOf(m) < i ? `${m}'` : m));
  const res: Record<string, Record<string, number>> = {};
  for (const kind of kinds.length ? kinds : ['fp16', 'int8']) {
    const m = model(kind);
    const e = await Engine.load(await build(m, { device: 'cuda', precision: 'fp16', shapes }));
    const ctxs: [string, Ctx][] = [];
    for (const m of modes) ctxs.push([m, await context(e, m.replace("'", ''))]);
    const ref = (await timed(ctxs[0][1])).out;
    const t = new Map<string, number[]>(modes.map((m) => [m, []]));
    let differ = 0;
    for (let round = 0; round < 6; round++) {
      for (const [m, ctx] of ctxs) {
        for (let i = 0; i < 25; i++) {
          const r = await timed(ctx);
          t.get(m)!.push(r.ms);
          if (r.out.some((o, j) => Buffer.compare(Buffer.from(o), Buffer.from(ref[j])) !== 0)) differ++;
        }
      }
    }
    e.dispose();
    res[kind] = Object.fromEntries(modes.map((m) => [m, median(t.get(m)!)]));
    console.log(JSON.stringify({ kind, ms: res[kind], replays: modes.length * 150, differ }));
    summary.push(`${kind}: ${modes.map((m) => `KILN_PDL=${m} ${res[kind][m].toFixed(3)} ms`).join(', ')}; outputs ${differ ? `DIFFER in ${differ} replays` : 'identical in every replay'}`);
  }
  for (const k of Object.keys(res)) {
    const ref = res[k.startsWith('rn-') ? 'rn-fp16' : 'fp16'];
    if (ref && !k.endsWith('fp16')) summary.push(`${k} / fp16: ${modes.map((m) => `${m} ${(ref[m] / res[k][m]).toFixed(3)}x`).join(', ')}`);
  }
  for (const s of summary) console.log('AB ' + s);
} else {
  console.error('usage: node bench/quant/bert-ncu.js ncu fp16|int8|fp8 | ab [fp16] [int8] [fp8]');
  process.exit(2);
}
process.exit(0);

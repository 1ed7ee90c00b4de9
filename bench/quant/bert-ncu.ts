// BERT-base 8x128 (issue 8): where the int8 engine's graph time goes, and what programmatic dependent launch (PDL,
// codegen/pdl.ts) does to it. The models are gpu-int8.ts' (zoo BERT-base, random weights, int8 by Kiln's quantizer
// on seeded random calibration data), built at fp16; kinds fp16, int8, fp8, and rn-fp16 / rn-int8 for ResNet-50 bs32.
// - `ncu fp16|int8`: build, warm up (the graph is captured), then one graph replay between cuProfilerStart/Stop, for
//   `ncu --profile-from-start off --metrics gpu__time_duration.sum --csv`: every kernel of one inference, serialized.
// - `ab [fp16|int8...]`: per engine, one context of one build per KILN_PDL mode (KILN_PDL_AB, default 0,entry,wait,late:
//   off and device.ts' three modes); their replays alternate (rounds of 25, CUDA-event medians), and every replay's
//   outputs must equal the first PDL-off replay's byte for byte (a missing wait would show as a moving difference).
// - `edges`: whether a stream capture of PDL launches makes programmatic graph edges (three dependent kernels per mode).
// - `variants`: builds under build-time switches (KILN_VARIANTS, see there), timed against each other in one process.
// - `qcheck`: kiln:QAttention's store byte for byte against the float attention kernel + the QTranspose kernel.
// - `search`: each shape group's candidates timed in the replayed graph (greedy), against the build's isolated picks.
// - `pair`: fp16 then int8 as gpu-int8.js times them (one engine alive at a time), twice.
// Usage (GPU machine, from the packed build): node bench/quant/bert-ncu.js ncu int8 | ab [fp16] [int8] [fp8] [rn-fp16] [rn-int8] | edges
//   | variants | qcheck | search | pair
import { bertBase, resnet50 } from '../models/zoo.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { feedsFor, median } from './feeds.js';
import { cu } from '../../src/backends/cuda/ffi/driver.js';
import { gemmChoices } from '../../src/backends/cuda/ffi/cublaslt.js';
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
} else if (mode === 'variants') {
  // builds of one engine under build-time switches, timed against each other in one process: each variant is built
  // (and its graph captured) with its env set, then all replay alternately, rounds of 25, CUDA-event medians.
  // Default set: fp16; int8 as now (QAttention, pooled picks); `split` (KILN_QATTN=split: the float attention kernel
  // + the QTranspose kernel, as before QAttention); `perlayer` (KILN_POOL_CHOICES=0: each layer's own pick); `head`
  // (both: HEAD's engine); and `now2`, a second build as now (the build-to-build spread).
  const spec = process.env.KILN_VARIANTS ?? 'fp16=fp16;now=int8;split=int8:KILN_QATTN=split;perlayer=int8:KILN_POOL_CHOICES=0;head=int8:KILN_QATTN=split,KILN_POOL_CHOICES=0;now2=int8';
  const models = new Map<string, Model>();
  const ctxs: [string, Ctx, Engine][] = [];
  for (const v of spec.split(';')) {
    const [label, rest] = v.split('=', 2).length === 2 ? [v.slice(0, v.indexOf('=')), v.slice(v.indexOf('=') + 1)] : [v, v];
    const [kind, envs = ''] = rest.split(':');
    if (!models.has(kind)) models.set(kind, model(kind));
    const env = Object.fromEntries(envs.split(',').filter(Boolean).map((e) => e.split('=') as [string, string]));
    for (const [k, x] of Object.entries(env)) process.env[k] = x;
    gemmChoices.clear(); // else the build reuses the choices an earlier build of the same layers left in this process
    const t0 = performance.now();
    const e = await Engine.load(await build(models.get(kind)!, { device: 'cuda', precision: 'fp16', shapes }));
    const ctx = e.createContext();
    for (let i = 0; i < 3; i++) await ctx.run(feeds); // eager, capture, replay: the factories read the env here
    for (const k of Object.keys(env)) delete process.env[k];
    const ops = (e.header.layers as { opType?: string }[]).map((l) => l.opType);
    console.log(`built ${label} (${kind} ${envs || 'default'}) in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${ops.length} layers, ${ops.filter((o) => o === 'QAttention').length} QAttention, ${ops.filter((o) => o === 'QTranspose').length} QTranspose`);
    ctxs.push([label, ctx, e]);
  }
  const t = new Map<string, number[]>(ctxs.map(([l]) => [l, []]));
  const outs = new Map<string, Uint8Array[]>();
  for (let round = 0; round < 6; round++) {
    for (const [l, ctx] of ctxs) {
      for (let i = 0; i < 25; i++) {
        const r = await timed(ctx);
        t.get(l)!.push(r.ms);
        if (!outs.has(l)) outs.set(l, r.out);
      }
    }
  }
  const ms = Object.fromEntries(ctxs.map(([l]) => [l, median(t.get(l)!)]));
  const fp16 = ctxs.find(([l]) => l === 'fp16') ? ms.fp16 : undefined;
  console.log(JSON.stringify({ ms, perRound: Object.fromEntries(ctxs.map(([l]) => [l, [0, 1, 2, 3, 4, 5].map((r) => +median(t.get(l)!.slice(r * 25, r * 25 + 25)).toFixed(4))])) }));
  const f32 = (o: Uint8Array[]) => new Float32Array(o[0].buffer, o[0].byteOffset, o[0].byteLength / 4);
  for (const [l] of ctxs) {
    const same = ctxs.filter(([k]) => k !== l && k !== 'fp16' && l !== 'fp16' && outs.get(k)!.every((o, j) => Buffer.compare(Buffer.from(o), Buffer.from(outs.get(l)![j])) === 0)).map(([k]) => k);
    const cos = fp16 !== undefined && l !== 'fp16' ? (() => { const a = f32(outs.get(l)!), b = f32(outs.get('fp16')!); let d = 0, x = 0, y = 0; for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; x += a[i] * a[i]; y += b[i] * b[i]; } return d / Math.sqrt(x * y); })() : undefined;
    console.log(`VARIANT ${l}: ${ms[l].toFixed(4)} ms${fp16 !== undefined && l !== 'fp16' ? ` = ${(fp16 / ms[l]).toFixed(3)}x fp16, output cosine vs fp16 ${cos!.toFixed(5)}` : ''}; outputs byte-identical to: ${same.join(', ') || '-'}`);
  }
  for (const [, , e] of ctxs) e.dispose();
} else if (mode === 'qcheck') {
  // kiln:QAttention's quantized store against the float kernel + the QTranspose kernel (KILN_QATTN=split), one forced
  // attention shape at a time (KILN_ATTN=fused:WxK: the shape sets the float sums' order): every output byte equal
  const m = model('int8');
  let bad = 0;
  for (const shape of (process.env.KILN_QCHECK_SHAPES ?? 'fused:2x2,fused:4x1,fused:1x4,fused:4x2').split(',')) {
    const run = async (split: boolean) => {
      process.env.KILN_ATTN = shape;
      if (split) process.env.KILN_QATTN = 'split';
      const e = await Engine.load(await build(m, { device: 'cuda', precision: 'fp16', shapes }));
      const ctx = e.createContext();
      const a = await timed(ctx), b = await timed(ctx), c = await timed(ctx); // eager, capture, replay
      delete process.env.KILN_ATTN; delete process.env.KILN_QATTN;
      const q = (e.header.layers as { opType?: string }[]).filter((l) => l.opType === 'QAttention').length;
      e.dispose();
      return { q, runs: [a.out, b.out, c.out] };
    };
    const [x, y] = [await run(false), await run(true)];
    let differ = 0, n = 0;
    for (const r of [0, 1, 2]) x.runs[r].forEach((o, j) => { const p = y.runs[r][j]; n += o.length; for (let i = 0; i < o.length; i++) if (o[i] !== p[i]) differ++; });
    const ok = differ === 0 && x.q > 0 && x.q === y.q;
    if (!ok) bad++;
    console.log(`${ok ? 'PASS' : 'FAIL'} bert-base int8 [fp16 build] KILN_ATTN=${shape}: QAttention store (${x.q} layers) vs float kernel + QTranspose kernel, eager + capture + replay: ${differ} of ${n} output bytes differ`);
  }
  console.log(`qcheck: ${bad} failure(s)`);
} else if (mode === 'search') {
  // Which candidate of each shape group (layers whose choice keys differ only in the layer name: QKV, out-proj, FFN1,
  // FFN2, attention) is fastest in the replayed graph, against what the build's isolated timing picked: one int8
  // build, then, group by group (largest summed isolated time first), every candidate set for all the group's layers
  // (the plan's choices blob rewritten, the engine loaded again), 30 replays each; the best is kept (greedy). Last, the
  // build's choices, the searched ones and fp16 replay alternately (6 rounds of 25).
  const { parsePlan, serializePlan } = await import('../../src/build/plan.js');
  const { choiceTimes } = await import('../../src/backends/cuda/ffi/cublaslt.js');
  const q = model('int8');
  const plan = await build(q, { device: 'cuda', precision: 'fp16', shapes });
  const isolated = new Map(choiceTimes);
  const data = parsePlan(plan.bytes);
  const NAME = 'cuda.gemm-algos.json';
  const built = JSON.parse(new TextDecoder().decode(data.blobs.get(NAME))) as Record<string, number>;
  const { blobs: _, ...header } = data.header;
  const planWith = (algos: Record<string, number>) => serializePlan(header, new Map([...data.blobs, [NAME, new TextEncoder().encode(JSON.stringify(algos))]]));
  const graphMs = async (algos: Record<string, number>, reps = 30) => {
    const e = await Engine.load(planWith(algos));
    const ctx = e.createContext();
    for (let i = 0; i < 3; i++) await ctx.run(feeds);
    const t: number[] = [];
    for (let i = 0; i < reps; i++) t.push((await timed(ctx)).ms);
    e.dispose();
    return median(t);
  };
  const groups = new Map<string, string[]>();
  for (const k of Object.keys(built)) {
    const f = k.split('|');
    const g = [...f.slice(0, 2), ...f.slice(3)].join('|');
    groups.set(g, [...(groups.get(g) ?? []), k]);
  }
  const sumIso = (keys: string[], c: number) => keys.reduce((a, k) => a + (isolated.get(k)?.[c] ?? Infinity), 0);
  const order = [...groups].sort((a, b) => sumIso(b[1], built[b[1][0]]) - sumIso(a[1], built[a[1][0]]));
  const best = { ...built };
  const t0 = performance.now();
  for (const [g, keys] of order) {
    const n = isolated.get(keys[0])?.length ?? 0;
    const rows: string[] = [];
    let win = best[keys[0]], winMs = Infinity;
    for (let c = 0; c < n; c++) {
      const iso = sumIso(keys, c);
      if (!Number.isFinite(iso)) continue;
      const algos = { ...best };
      for (const k of keys) algos[k] = c;
      let ms: number;
      try { ms = await graphMs(algos); } catch (err) { rows.push(`c${c} failed: ${(err as Error).message.split('\n')[0]}`); continue; }
      rows.push(`c${c} ${ms.toFixed(4)} (iso ${(iso * 1000).toFixed(1)} us)`);
      if (ms < winMs) { winMs = ms; win = c; }
    }
    const was = keys.map((k) => built[k]);
    for (const k of keys) best[k] = win;
    console.log(`SEARCH ${g} (${keys.length} layers; built ${[...new Set(was)].join('/')}, graph pick c${win}): ${rows.join('; ')}`);
  }
  console.log(`searched in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const fe = await Engine.load(await build(model('fp16'), { device: 'cuda', precision: 'fp16', shapes }));
  const engines: [string, Engine][] = [['fp16', fe], ['built', await Engine.load(planWith(built))], ['searched', await Engine.load(planWith(best))]];
  const ctxs: [string, Ctx][] = [];
  for (const [l, e] of engines) { const c = e.createContext(); for (let i = 0; i < 3; i++) await c.run(feeds); ctxs.push([l, c]); }
  const t = new Map<string, number[]>(ctxs.map(([l]) => [l, []]));
  for (let round = 0; round < 6; round++) for (const [l, c] of ctxs) for (let i = 0; i < 25; i++) t.get(l)!.push((await timed(c)).ms);
  const ms = Object.fromEntries(ctxs.map(([l]) => [l, median(t.get(l)!)]));
  console.log(`SEARCHED fp16 ${ms.fp16.toFixed(4)} ms; int8 as built ${ms.built.toFixed(4)} ms = ${(ms.fp16 / ms.built).toFixed(3)}x; int8 searched ${ms.searched.toFixed(4)} ms = ${(ms.fp16 / ms.searched).toFixed(3)}x; choices ${JSON.stringify(Object.fromEntries(order.map(([g, k]) => [g, best[k[0]]])))}`);
  for (const [, e] of engines) e.dispose();
} else if (mode === 'pair') {
  // gpu-int8.js' protocol without the fp8 row, twice in one process: build, 20 warm-ups, 50 timed replays, dispose;
  // fp16 then int8, one engine alive at a time (run it in several processes: the spread is mostly between processes)
  const q = model('int8'), f = model('fp16');
  const one = async (m: Model) => {
    gemmChoices.clear(); // each build times its own candidates
    const e = await Engine.load(await build(m, { device: 'cuda', precision: 'fp16', shapes }));
    const ctx = e.createContext();
    for (let i = 0; i < 20; i++) await ctx.run(feeds);
    const t: number[] = [];
    for (let i = 0; i < 50; i++) t.push((await timed(ctx)).ms);
    e.dispose();
    return median(t);
  };
  for (let r = 0; r < 2; r++) {
    const a = await one(f), b = await one(q);
    console.log(`PAIR ${r}: fp16 ${a.toFixed(4)} ms, int8 ${b.toFixed(4)} ms = ${(a / b).toFixed(3)}x`);
  }
} else {
  console.error('usage: node bench/quant/bert-ncu.js ncu fp16|int8|fp8 | ab [fp16] [int8] [fp8] | variants | qcheck | search | pair');
  process.exit(2);
}
process.exit(0);

// ResNet-50 int8 on the CPU: Kiln's folded int8 engine vs Kiln fp32 and vs onnxruntime-node running the same Q/DQ
// file, batch 1, one thread, timed in the same run in interleaved rounds (median per engine). Also reports the int8
// engine's agreement with the fp32 engine (cosine, top-1) and with onnxruntime on the Q/DQ file (max error in LSBs).
// --uint8: activations as uint8 (kiln quantize --activation-type uint8: zero point 0 after ReLUs, which onnxruntime
// folds into integer QLinearConv layers), else int8 symmetric.
// Usage: npx tsx bench/quant/resnet50-int8.ts [rounds] [image] [--uint8]   (defaults 15, 224; the zoo's random weights)
import { createRequire } from 'node:module';
import { resnet50 } from '../models/zoo.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');
const argv = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const rounds = Number(argv[0] ?? 15);
const image = Number(argv[1] ?? 224);
const activationType = process.argv.includes('--uint8') ? 'uint8' : 'int8';
const shapes = { input: [1, 3, image, image] };

const m = resnet50({ image });
let t = performance.now();
// calibration on seeded random images: the scales only matter for accuracy, which is measured against fp32 below
const { model: q } = quantizeModel(m, { mode: 'int8', calibrationData: randomCalibrationData(m.graph, 4, { seed: 1 }), evalData: randomCalibrationData(m.graph, 1, { seed: 2 }), batchSize: 1, activationType });
console.log(`${activationType} activations; quantized in ${((performance.now() - t) / 1000).toFixed(1)} s`);
t = performance.now();
const fp32Plan = await build(m, { shapes });
const int8Plan = await build(q, { shapes });
console.log(`built both in ${((performance.now() - t) / 1000).toFixed(1)} s; int8 layers: ${int8Plan.header.layers.map((l) => l.tactic).filter((x) => x.includes('int8')).length}/${int8Plan.header.layers.length}`);

const fp32 = (await Engine.load(fp32Plan, { intraOpNumThreads: 1 })).createContext();
const int8 = (await Engine.load(int8Plan, { intraOpNumThreads: 1 })).createContext();
const sess = await ort.InferenceSession.create(serializeOnnx(q), { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential' });

const samples = randomCalibrationData(m.graph, 8, { seed: 7 });
const x = samples.get('input')!;
const per = x.size / 8;
const feedAt = (i: number) => (x.data as Float32Array).slice(i * per, (i + 1) * per);

// accuracy: int8 vs fp32 (cosine, top-1) and int8 vs onnxruntime on the Q/DQ file (max |diff| in output LSBs)
let dot = 0, na = 0, nb = 0, top1 = 0, maxDiff = 0, amax = 0;
const argmax = (v: Float32Array) => v.reduce((b, y, i) => (y > v[b] ? i : b), 0);
for (let i = 0; i < 8; i++) {
  const d = feedAt(i);
  const a = ((await fp32.run({ input: new Tensor('float32', d, shapes.input) })).logits as Tensor).data as Float32Array;
  const b = ((await int8.run({ input: new Tensor('float32', d, shapes.input) })).logits as Tensor).data as Float32Array;
  const o = (await sess.run({ input: new ort.Tensor('float32', d, shapes.input) })).logits.data as Float32Array;
  for (let k = 0; k < a.length; k++) {
    dot += a[k] * b[k]; na += a[k] * a[k]; nb += b[k] * b[k];
    maxDiff = Math.max(maxDiff, Math.abs(b[k] - o[k]));
    amax = Math.max(amax, Math.abs(a[k]));
  }
  if (argmax(a) === argmax(b)) top1++;
}
console.log(`int8 vs fp32: cosine ${(dot / Math.sqrt(na * nb)).toFixed(5)}, top-1 ${top1}/8; int8 vs onnxruntime Q/DQ: max |diff| ${maxDiff.toExponential(2)} = ${(maxDiff / (amax / 127)).toFixed(3)} LSB of amax/127`);

const feed = feedAt(0);
const engines: [string, () => Promise<unknown>][] = [
  ['kiln fp32', () => fp32.run({ input: new Tensor('float32', feed, shapes.input) })],
  ['kiln int8', () => int8.run({ input: new Tensor('float32', feed, shapes.input) })],
  ['onnxruntime-node Q/DQ', () => sess.run({ input: new ort.Tensor('float32', feed, shapes.input) })],
];
const times = new Map<string, number[]>(engines.map(([n]) => [n, []]));
for (const [, f] of engines) for (let i = 0; i < 3; i++) await f();
for (let r = 0; r < rounds; r++) {
  for (const [n, f] of engines) {
    const s = performance.now();
    await f();
    times.get(n)!.push(performance.now() - s);
  }
}
const med = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1];
const mins = (v: number[]) => Math.min(...v);
const k32 = med(times.get('kiln fp32')!), k8 = med(times.get('kiln int8')!), o8 = med(times.get('onnxruntime-node Q/DQ')!);
console.log(`| engine | median ms | min ms |`);
for (const [n] of engines) console.log(`| ${n} | ${med(times.get(n)!).toFixed(1)} | ${mins(times.get(n)!).toFixed(1)} |`);
console.log(`int8 speedup over Kiln fp32: ${(k32 / k8).toFixed(2)}x; Kiln int8 / onnxruntime Q/DQ latency: ${(k8 / o8).toFixed(2)}x`);
console.log(`raw ms: ${JSON.stringify(Object.fromEntries([...times].map(([k, v]) => [k, v.map((y) => +y.toFixed(1))])))}`);

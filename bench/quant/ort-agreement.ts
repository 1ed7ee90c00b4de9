// How far Kiln's int8 CPU engine and onnxruntime-node are from each other, and each from the Q/DQ graph's own
// semantics (the reference executor: DequantizeLinear -> float layer -> QuantizeLinear, as the file says), on many
// held-out inputs. A rounding step that lands on the other side of a .5 in one engine (summation order) moves the next
// layer's input by one step, and deep networks compound such flips; comparing both engines with the reference shows
// whether a gap between them is one engine's error or both drifting. Units: LSBs of the reference output
// (amax / 127 over all inputs), max over elements, and the share of elements more than one LSB off.
// Usage: npx tsx bench/quant/ort-agreement.ts [inputs=64] [--uint8] [--blocks=3,4,6,3] [--width=8] [--image=32]
import { createRequire } from 'node:module';
import { resnet50, RESNET_SMALL } from '../models/zoo.js';
import { serializeOnnx } from '../../src/onnx/writer.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import { TensorData } from '../../src/ir/tensor.js';
import { executeGraph } from '../../src/ops/execute.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');
const arg = (k: string) => process.argv.find((a) => a.startsWith(`--${k}=`))?.split('=')[1];
const N = Number(process.argv.slice(2).find((a) => !a.startsWith('--')) ?? 64);
const blocks = (arg('blocks') ?? '3,4,6,3').split(',').map(Number) as [number, number, number, number];
const opts = { ...RESNET_SMALL, blocks, width: Number(arg('width') ?? 8), image: Number(arg('image') ?? 32) };
const activationType = process.argv.includes('--uint8') ? 'uint8' as const : 'int8' as const;

const m = resnet50(opts);
const q = quantizeModel(m, { mode: 'int8', activationType, calibrationData: randomCalibrationData(m.graph, 32, { seed: 1 }), batchSize: 8 }).model;
const held = randomCalibrationData(m.graph, N, { seed: 77 }).get('input')!;
const dims = [1, ...held.dims.slice(1)], per = held.size / N;
const plan = await build(q, { device: 'cpu', shapes: { input: dims } });
const engine = await Engine.load(plan.bytes, { intraOpNumThreads: 2 });
const ctx = engine.createContext();
const sess = await ort.InferenceSession.create(serializeOnnx(q));
const outs: Record<'kiln' | 'ort' | 'ref', number[]> = { kiln: [], ort: [], ref: [] };
for (let i = 0; i < N; i++) {
  const x = (held.data as Float32Array).slice(i * per, (i + 1) * per);
  outs.kiln.push(...((await ctx.run({ input: new Tensor('float32', x, dims) })).logits as Tensor).data as Float32Array);
  outs.ort.push(...(await sess.run({ input: new ort.Tensor('float32', x, dims) })).logits.data as Float32Array);
  outs.ref.push(...(executeGraph(q.graph, new Map([['input', new TensorData('float32', dims, x)]]), { opsets: q.opsets }).get('logits') as TensorData).toFloat64());
}
const lsb = outs.ref.reduce((a, v) => Math.max(a, Math.abs(v)), 0) / 127;
const cmp = (a: number[], b: number[]) => {
  let worst = 0, over = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]) / lsb;
    worst = Math.max(worst, d);
    if (d > 1) over++;
  }
  return `max ${worst.toFixed(2)} LSB, ${(100 * over / a.length).toFixed(2)}% of ${a.length} logits > 1 LSB`;
};
console.log(`resnet-small ${blocks.join(',')} width ${opts.width} image ${opts.image}, ${activationType} activations, ${N} held-out inputs, ${plan.header.layers.filter((l) => l.tactic.includes('int8')).length} int8 layers`);
console.log(`Kiln vs reference: ${cmp(outs.kiln, outs.ref)}`);
console.log(`ORT  vs reference: ${cmp(outs.ort, outs.ref)}`);
console.log(`Kiln vs ORT:       ${cmp(outs.kiln, outs.ort)}`);
engine.dispose();

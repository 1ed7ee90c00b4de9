// Issue 8, ResNet's residual stream: may the GPU carry it as int8? Only where the Q/DQ graph says the Add reads a
// quantized value. `kiln quantize` quantizes the inputs of Conv/MatMul/Gemm only, so every residual Add reads float:
// an identity skip reads the previous block's float Relu output (its int8 copy goes only to the next convolutions) and
// a projection skip reads the downsample convolution's float output, for which the file has no scale at all. This
// script lists the Adds and measures what reading each identity skip through its int8 copy (DequantizeLinear of the
// existing QuantizeLinear) would change on the reference executor: logits vs the file's graph, in LSB of amax / 127
// (bench/gpu/quant-check.ts allows 1).
// Usage: npx tsx bench/quant/residual-probe.ts [width] [image]
import type { Graph, Node } from '../../src/ir/graph.js';
import type { Value } from '../../src/ir/tensor.js';
import { resnet50 } from '../models/zoo.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { executeGraph } from '../../src/ops/execute.js';

const width = Number(process.argv[2] ?? 32), image = Number(process.argv[3] ?? 32);
const m = resnet50({ blocks: [3, 4, 6, 3], width, classes: 1000, image });
const { model: q } = quantizeModel(m, { mode: 'int8', calibrationData: randomCalibrationData(m.graph, 8, { seed: 1 }), batchSize: 8 });
const g = q.graph;
const producer = new Map<string, Node>();
for (const n of g.nodes) for (const o of n.outputs) producer.set(o, n);
const nodes = [...g.nodes];
let identity = 0;
for (const add of g.nodes.filter((n) => n.opType === 'Add')) {
  const skip = add.inputs.find((i) => producer.get(i)?.opType === 'Relu');
  const ql = skip && g.nodes.find((n) => n.opType === 'QuantizeLinear' && n.inputs[0] === skip);
  const quantizedInputs = add.inputs.filter((i) => producer.get(i)?.opType === 'DequantizeLinear').length;
  console.log(`${add.name}: ${add.inputs.map((i) => producer.get(i)?.opType).join(' + ')}; inputs through DequantizeLinear: ${quantizedInputs}${ql ? '; skip has an int8 copy (for the convolutions)' : '; no scale for either input in the file'}`);
  if (!skip || !ql) continue;
  identity++;
  const dq: Node = { name: `${add.name}_skip_dq`, opType: 'DequantizeLinear', domain: '', inputs: [ql.outputs[0], ...ql.inputs.slice(1)], outputs: [`${add.name}_skip_dq`], attrs: {} };
  const at = nodes.indexOf(add);
  nodes.splice(at, 1, dq, { ...add, inputs: add.inputs.map((x) => (x === skip ? dq.outputs[0] : x)) });
}
const feeds = randomCalibrationData(m.graph, 4, { seed: 9 }) as Map<string, Value>;
const opts = { opsets: q.opsets };
const ref = executeGraph(g, feeds, opts), probe = executeGraph({ ...g, nodes } as Graph, feeds, opts);
for (const [name, v] of ref) {
  const x = (v as { data: Float32Array }).data, y = (probe.get(name) as { data: Float32Array }).data;
  let amax = 0, diff = 0, dot = 0, nx = 0, ny = 0;
  for (let i = 0; i < x.length; i++) {
    amax = Math.max(amax, Math.abs(x[i]));
    diff = Math.max(diff, Math.abs(x[i] - y[i]));
    dot += x[i] * y[i]; nx += x[i] * x[i]; ny += y[i] * y[i];
  }
  console.log(`ResNet-50 width ${width}, ${image}px: ${identity} identity skips read as int8; ${name}: max |diff| ${(diff / (amax / 127)).toFixed(2)} LSB of amax/127, cosine ${(dot / Math.sqrt(nx * ny)).toFixed(5)}`);
}

// The ONNX backend conformance suite on the cuda provider (run on the GPU machine with the data carried along:
// KILN_ONNX_BACKEND_DATA=.gpu/onnx-backend node bench/gpu/conformance.js). Every case the reference kernels pass is
// built for cuda (static shapes from its test data), run twice (eager, then captured into a CUDA graph where every
// layer runs on the GPU), and compared as the CPU suite compares. Prints failures and the counts.
import fs from 'node:fs';
import path from 'node:path';
import { listCases, compareValues } from '../../test/conformance/cases.js';
import { skipReason } from '../../test/conformance/skip.js';
import { loadOnnx } from '../../src/onnx/reader.js';
import { decodeOptional, decodeSequence, decodeTensor } from '../../src/onnx/tensor.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { fromValue, toValue, type OnnxValue } from '../../src/runtime/tensor.js';
import { TensorData, type Value } from '../../src/ir/tensor.js';
import type { CudaRunner } from '../../src/backends/cuda/runner.js';

const read = (file: string, kind: string): Value => {
  const b = fs.readFileSync(file);
  return kind === 'sequence' ? decodeSequence(b) : kind === 'optional' ? decodeOptional(b) : decodeTensor(b);
};
let pass = 0, fail = 0, onGpu = 0;
const failures: string[] = [];
for (const c of listCases()) {
  if (skipReason(c)) continue;
  try {
    const model = await loadOnnx(path.join(c.dir, 'model.onnx'));
    const dir = path.join(c.dir, 'test_data_set_0');
    const feeds: Record<string, OnnxValue> = {};
    const shapes: Record<string, number[]> = {};
    model.graph.inputs.forEach((inp, i) => {
      const f = path.join(dir, `input_${i}.pb`);
      if (!fs.existsSync(f)) return;
      const v = read(f, inp.type.kind);
      feeds[inp.name] = fromValue(v);
      if (v instanceof TensorData) shapes[inp.name] = [...v.dims];
    });
    const engine = await Engine.load(await build(model, { device: 'cuda', shapes }));
    const ctx = engine.createContext();
    await ctx.run(feeds);
    const out = await ctx.run(feeds);
    const msgs: string[] = [];
    model.graph.outputs.forEach((o, j) => {
      const f = path.join(dir, `output_${j}.pb`);
      if (!fs.existsSync(f)) return;
      const m = compareValues(toValue(out[o.name] ?? null), read(f, o.type.kind));
      if (m) msgs.push(`${o.name}: ${m}`);
    });
    if ((engine as unknown as { runner: CudaRunner }).runner.cpuLayers.size === 0) onGpu++;
    engine.dispose();
    if (msgs.length) throw new Error(msgs.join('; '));
    pass++;
  } catch (e) {
    fail++;
    failures.push(`${c.name} [${c.testedOp}]: ${(e as Error).message.split('\n')[0].slice(0, 200)}`);
  }
}
for (const f of failures) console.log(`FAIL ${f}`);
console.log(`\ncuda conformance: ${pass} passed, ${fail} failed; ${onGpu} cases ran every layer on the GPU`);

// The ONNX backend conformance suite on the cuda provider (run on the GPU machine with the data carried along:
// KILN_ONNX_BACKEND_DATA=.gpu/onnx-backend node bench/gpu/conformance.js). Every case the reference kernels pass is
// built for cuda (static shapes from its test data), run twice (eager, then captured into a CUDA graph where every
// layer runs on the GPU), and compared as the CPU suite compares. Prints failures and the counts.
import { listCases, loadCase, checkOutputs } from '../../test/conformance/cases.js';
import { skipReason } from '../../test/conformance/skip.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { fromValue, toValue } from '../../src/runtime/tensor.js';
import type { CudaRunner } from '../../src/backends/cuda/runner.js';

let pass = 0, fail = 0, onGpu = 0;
const failures: string[] = [];
for (const c of listCases()) {
  if (skipReason(c)) continue;
  try {
    const { model, feeds: values, shapes, expected } = await loadCase(c);
    const feeds = Object.fromEntries([...values].map(([k, v]) => [k, fromValue(v)]));
    const engine = await Engine.load(await build(model, { device: 'cuda', shapes }));
    const ctx = engine.createContext();
    await ctx.run(feeds);
    const out = await ctx.run(feeds);
    const msgs = checkOutputs(expected, (n) => toValue(out[n] ?? null));
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

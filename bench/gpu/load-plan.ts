// Proves a CUDA plan runs from its stored cubins alone: NVRTC is disabled before loading. Run after check.ts has
// written /tmp/kiln-check.plan: node bench/gpu/load-plan.js
import { disableNvrtc } from '../../src/backends/cuda/ffi/nvrtc.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';

disableNvrtc();
const engine = await Engine.load('/tmp/kiln-check.plan');
const out = await engine.createContext().run({ input: new Tensor('float32', new Float32Array(2 * 3 * 32 * 32).fill(0.5), [2, 3, 32, 32]) });
const p = out[engine.outputNames[0]] as Tensor<'float32'>;
const sum = Array.from(p.data.slice(0, 10)).reduce((a, b) => a + b, 0);
console.log(`${Math.abs(sum - 1) < 1e-3 ? 'PASS' : 'FAIL'} plan ran without NVRTC (first row sums to ${sum.toFixed(5)})`);
engine.dispose();

// Models for the serving load test. The tiny CNN (bench/models/zoo.ts) is overhead-bound: one request computes in
// ~0.1 ms, so a dynamic batcher has nothing to amortize and the test measures HTTP plumbing. The MLP here is the
// other end: a recommendation-style tower of fully connected layers (6.4 M fp32 weights, 24.5 MiB) whose batch-1 run
// is a matrix-vector product bound by streaming those weights, so a batch of 64 costs ~10x a batch of 1, not 64x
// (bench/serve/engines.ts measures both engines) — the case dynamic batching exists for. Random weights, fixed seed.
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import type { Model } from '../../src/ir/graph.js';

export interface MlpOptions {
  inputs: number;
  hidden: number;
  layers: number;
  outputs: number;
}

/** 512 -> 2048 -> 2048 -> 512 -> 64, ReLU between: 6.4 M weights (24.5 MiB fp32). */
export const MLP_DEFAULT: MlpOptions = { inputs: 512, hidden: 2048, layers: 3, outputs: 64 };

export function mlp(o: MlpOptions = MLP_DEFAULT, seed = 7): Model {
  const r = seededRandom(seed);
  const b = new GraphBuilder('mlp');
  let h = b.input('input', 'float32', ['n', o.inputs]);
  const widths = [o.inputs, ...Array.from({ length: o.layers - 1 }, () => o.hidden), o.inputs, o.outputs];
  for (let i = 0; i + 1 < widths.length; i++) {
    const [cin, cout] = [widths[i], widths[i + 1]];
    const w = b.initializer(`fc${i}.weight`, randomTensor(r, [cout, cin], Math.sqrt(2 / cin)));
    const bias = b.initializer(`fc${i}.bias`, randomTensor(r, [cout], 0.01));
    h = b.op('Gemm', [h, w, bias], { transB: 1 }, `fc${i}`);
    if (i + 2 < widths.length) h = b.op('Relu', [h], {}, `fc${i}.relu`);
  }
  const [y] = b.node('Identity', [h], {}, { name: 'out', outputs: ['scores'] });
  b.output(y, { kind: 'tensor', dtype: 'float32', shape: ['n', o.outputs] });
  return b.model(17, { docString: 'Kiln serving-bench MLP (random weights, for benchmarking only).' });
}

// Shared by the quantized-rewrite tests (layernorm-q, qkv-heads, maxpool-q): a model's outputs on feeds through the
// reference executor, and the largest difference between two models' outputs.
import { expect } from 'vitest';
import type { Model } from '../../src/ir/graph.js';
import type { TensorData } from '../../src/ir/tensor.js';
import type { Feeds } from '../../src/quant/data.js';
import { executeGraph } from '../../src/ops/execute.js';

/** Every graph output of \`m\` on \`feeds\`, in the graph's output order. */
export function outputsOf(m: Model, feeds: Feeds): Float64Array[] {
  const r = executeGraph(m.graph, feeds as Map<string, TensorData>, { opsets: m.opsets });
  return m.graph.outputs.map((o) => (r.get(o.name) as TensorData).toFloat64());
}

/** Largest |a - b| over every graph output of two models on the same feeds (outputs of equal lengths). */
export function maxDiff(a: Model, b: Model, feeds: Feeds): number {
  const [x, y] = [outputsOf(a, feeds), outputsOf(b, feeds)];
  let worst = 0;
  x.forEach((u, j) => {
    expect(y[j].length).toBe(u.length);
    for (let i = 0; i < u.length; i++) worst = Math.max(worst, Math.abs(u[i] - y[j][i]));
  });
  return worst;
}

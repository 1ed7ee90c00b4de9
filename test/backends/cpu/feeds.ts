// Shared by the CPU runner tests: seeded feeds for a model's inputs, and a run's worst difference to the reference
// executor on them.
import { expect } from 'vitest';
import type { Model } from '../../../src/ir/graph.js';
import { TensorData } from '../../../src/ir/tensor.js';
import { seededRandom } from '../../../src/ir/builder.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { Tensor } from '../../../src/runtime/tensor.js';

/** Floats in [-1, 1), int64 token ids in [0, 20) and masks of ones with every fifth position zero; symbolic dims named
 * like a sequence get \`seq\`, the others the batch. \`at\`: where in a larger array each feed's data starts (a view,
 * as a caller's pooled buffers would be). */
export function modelFeeds(m: Model, o: { batch: number; seq?: number; seed?: number; at?: number }): Record<string, Tensor> {
  const { batch, seq = 32, seed = batch, at = 0 } = o;
  const r = seededRandom(seed);
  const feeds: Record<string, Tensor> = {};
  for (const i of m.graph.inputs) {
    if (m.graph.initializers.has(i.name) || i.type.kind !== 'tensor') continue;
    const dims = (i.type.shape ?? []).map((d) => (typeof d === 'number' ? d : /seq|len/.test(String(d)) ? seq : batch));
    const n = dims.reduce((a, b) => a * b, 1);
    if (i.type.dtype === 'int64') {
      const ids = new BigInt64Array(at + n + 7).map((_, k) => BigInt(i.name.includes('mask') ? Number(k % 5 !== 4) : Math.floor(r() * 20)));
      feeds[i.name] = new Tensor('int64', ids.subarray(at, at + n), dims);
    } else feeds[i.name] = new Tensor('float32', new Float32Array(at + n + 7).map(() => r() * 2 - 1).subarray(at, at + n), dims);
  }
  return feeds;
}

/** Worst |a - b| / (1e-4 + |b|) of a run's outputs against the reference executor on the same feeds (dims and lengths
 * must agree). */
export function worstDiff(m: Model, feeds: Record<string, Tensor>, out: Record<string, unknown>): number {
  const ref = executeGraph(m.graph, new Map(Object.entries(feeds).map(([k, v]) => [k, new TensorData(v.type as 'float32', v.dims, v.data as Float32Array)])), { opsets: m.opsets });
  let worst = 0;
  for (const [k, v] of Object.entries(out)) {
    const t = v as Tensor, b = ref.get(k) as TensorData;
    expect(t.dims).toEqual(b.dims);
    const a = t.data as Float32Array, w = b.data as Float32Array;
    expect(a.length).toBe(w.length);
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - w[i]) / (1e-4 + Math.abs(w[i])));
  }
  return worst;
}

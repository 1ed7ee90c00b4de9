// Shared by the pair tests (depthwise.test.ts, dwpw.test.ts): run a model whose layers pair up at 1 and 2 threads,
// a few runs each, against the reference executor, and report which library functions the runner looked up (a pair's
// function shows that the pair ran as one call).
import { expect, vi } from 'vitest';
import type { Model } from '../../../src/ir/graph.js';
import { TensorData } from '../../../src/ir/tensor.js';
import { randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { NativeLibrary } from '../../../src/backends/cpu/native.js';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { Tensor } from '../../../src/runtime/tensor.js';

/** Every output of \`runs\` runs at 1 and 2 threads within 1e-3 of the reference (relative to each value, floored at
 * 1e-3 of the largest: float32 sums in another order); returns the symbols the runner asked the library for. */
export async function pairRunsMatchReference(m: Model, X: number[], seed: number, runs: number): Promise<string[]> {
  const data = randomTensor(seededRandom(seed), X, 1);
  const plan = await build(m, { shapes: { x: X } });
  const ref = executeGraph(m.graph, new Map([['x', data]]), { opsets: m.opsets });
  const asked: string[] = [];
  const original = NativeLibrary.prototype.symbol;
  const symbol = vi.spyOn(NativeLibrary.prototype, 'symbol').mockImplementation(function (this: NativeLibrary, name: string) {
    asked.push(name);
    return original.call(this, name);
  });
  try {
    for (const threads of [1, 2]) {
      const engine = await Engine.load(plan, { intraOpNumThreads: threads });
      const ctx = engine.createContext();
      for (let run = 0; run < runs; run++) {
        const out = await ctx.run({ x: new Tensor('float32', data.data as Float32Array, X) });
        for (const [k, v] of Object.entries(out)) {
          const a = (v as Tensor).data as Float32Array, w = (ref.get(k) as TensorData).data as Float32Array;
          const atol = 1e-3 * w.reduce((q, x) => Math.max(q, Math.abs(x)), 0);
          let worst = 0;
          for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - w[i]) / (atol + Math.abs(w[i])));
          expect(worst, `${k}, ${threads} thread(s), run ${run}`).toBeLessThan(1e-3);
        }
      }
      engine.dispose();
    }
  } finally {
    symbol.mockRestore();
  }
  return asked;
}

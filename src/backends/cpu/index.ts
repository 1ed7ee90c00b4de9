// The CPU backend. For now it runs the reference kernels through the reference executor; the fast compiled
// kernels of issue 6 plug in here as tactics.
import type { Backend, Runner } from '../backend.js';
import type { Model } from '../../ir/graph.js';
import { executeGraph } from '../../ops/execute.js';
import type { Value } from '../../ir/tensor.js';

export const cpuBackend: Backend = {
  name: 'cpu',
  availability: () => ({ ok: true }),
  async createRunner(model: Model): Promise<Runner> {
    return {
      async run(feeds: Map<string, Value>, fetches: string[]) {
        const all = executeGraph(model.graph, feeds, { opsets: model.opsets });
        return new Map(fetches.map((f) => [f, all.get(f) as Value]));
      },
      release() {},
    };
  },
};

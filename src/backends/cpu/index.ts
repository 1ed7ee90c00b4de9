// The CPU backend. Today every layer runs its reference kernel (the "reference" tactic) through the reference
// executor; the compiled native kernels of the fast-CPU work plug in here as further tactics.
import os from 'node:os';
import type { Backend, Runner, Tactic } from '../backend.js';
import type { Model } from '../../ir/graph.js';
import { executeGraph } from '../../ops/execute.js';
import { resolveOp, parseAttrs, type KernelContext } from '../../ir/schema.js';
import { makeContext } from '../../ops/execute.js';
import type { Value } from '../../ir/tensor.js';
import type { DeviceSignature } from '../../build/plan.js';

const reference: Tactic = {
  name: 'reference',
  run(node, inputs, opsets) {
    const { def, opset } = resolveOp(node, opsets);
    return def.run(makeContext(node, opset, parseAttrs(def, node), inputs) as KernelContext<never>);
  },
};

export const cpuBackend: Backend = {
  name: 'cpu',
  availability: () => ({ ok: true }),
  signature(): DeviceSignature {
    return { backend: 'cpu', arch: process.arch, platform: process.platform, name: os.cpus()[0]?.model?.trim() ?? 'unknown CPU', features: {} };
  },
  tactics: () => [reference],
  serializeKernels: () => [],
  async createRunner(model: Model): Promise<Runner> {
    return {
      async run(feeds, fetches, hooks) {
        const all = executeGraph(model.graph, feeds, { opsets: model.opsets, onNode: hooks?.onLayer, keepAll: hooks?.keepAll });
        if (hooks?.keepAll) return all;
        return new Map(fetches.map((f) => [f, all.get(f) as Value]));
      },
      release() {},
    };
  },
};

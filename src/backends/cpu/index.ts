// The CPU backend: reference kernels for every op, plus compiled native kernels (C generated per layer with shapes
// baked in, built with the system compiler) for the hot layers when a compiler is present at build time. The
// builder times the native variants; the plan stores the library; the runner calls it through koffi.
import os from 'node:os';
import type { Backend, Runner, Tactic } from '../backend.js';
import type { Model, Node } from '../../ir/graph.js';
import { executeGraphAsync } from '../../ops/execute.js';
import { resolveOp, parseAttrs, type KernelContext } from '../../ir/schema.js';
import { makeContext } from '../../ops/execute.js';
import type { Value } from '../../ir/tensor.js';
import type { DeviceSignature } from '../../build/plan.js';
import { hostIsa } from './compiler.js';
import { defaultThreads, nativeBuildFor, serializeNative } from './build.js';
import { loadNativeKernels } from './runner.js';

// Test-only fault injection: tests of `kiln compare --mark-all` and `kiln debug reduce` need a backend that runs one
// op wrong on purpose. Not exported from the public API and not reachable from the CLI.
const faultyKernels = new Map<string, (node: Node, inputs: (Value | undefined)[]) => Value[]>();

/** TEST ONLY: make the CPU backend run every node of `opType` with `kernel` (omit it to restore the real kernel). */
export function overrideCpuKernelForTesting(opType: string, kernel?: (node: Node, inputs: (Value | undefined)[]) => Value[]): void {
  if (kernel) faultyKernels.set(opType, kernel);
  else faultyKernels.delete(opType);
}

const kernelOverride = (n: Node) => {
  const k = faultyKernels.get(n.opType);
  return k && ((inputs: (Value | undefined)[]) => k(n, inputs));
};

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
    // the vector ISA the compiled kernels use: a plan with AVX-512 code refuses to load where there is none
    return { backend: 'cpu', arch: process.arch, platform: process.platform, name: os.cpus()[0]?.model?.trim() ?? 'unknown CPU', features: { isa: hostIsa() } };
  },
  // bf16: a math mode (bf16.ts), the convolutions also offer variants that multiply in bf16
  fpmath: ['bf16'],
  tactics(node, model, typeOf, precision) {
    const native = typeOf ? nativeBuildFor(model, typeOf, precision === 'bf16')?.tactics(node) : undefined;
    // the reference kernel is not timed against native ones: it is orders of magnitude slower on these layers
    return native?.length ? native : [reference];
  },
  serializeKernels: serializeNative,
  async createRunner(model: Model, opts): Promise<Runner> {
    const threads = Math.max(1, opts.intraOpNumThreads ?? defaultThreads());
    const native = loadNativeKernels(model, opts.kernels, threads, (n, inputs) => reference.run(n, inputs, model.opsets) as Value[], !!opts.runOnCallingThread);
    const runSlow: Runner['run'] = async (feeds, fetches, hooks) => {
      const t0 = performance.now();
      const values = feeds as Map<string, Value>;
      // intermediate buffers are reused only where no caller can keep an intermediate value
      const pooled = !hooks?.keepAll && !hooks?.retainOutputs, plain = !faultyKernels.size && pooled && !hooks?.onLayer;
      // a profile's times (onLayerTime) come from the traced replay where there is one, else from timing layer by layer
      const replayed = plain ? native?.replay(values, fetches, (o) => o, hooks?.onLayerTime) : undefined;
      if (replayed) {
        const out = await replayed;
        hooks?.onPhase?.('compute', t0, performance.now());
        return out;
      }
      const onLayerTime = hooks?.onLayerTime;
      const onNode = hooks?.onLayer ?? (onLayerTime ? (n: Node, _o: Value[], ms: number) => onLayerTime(n, ms) : undefined);
      const run = faultyKernels.size ? undefined : native?.begin(pooled, !onNode, plain ? values : undefined);
      const all = await executeGraphAsync(model.graph, values, { opsets: model.opsets, onNode, keepAll: hooks?.keepAll,
        kernelOverride: faultyKernels.size ? kernelOverride : undefined, kernelFor: run?.kernelFor });
      run?.end(plain ? all : undefined);
      hooks?.onPhase?.('compute', t0, performance.now());
      if (hooks?.keepAll) return all;
      return new Map(fetches.map((f) => [f, all.get(f) as Value]));
    };
    return {
      tracesLayers: !!native,
      // a replay without hooks goes straight to the library: no async function (a promise and a hop more) around it
      run: (feeds, fetches, hooks) => (!hooks && !faultyKernels.size ? native?.replay(feeds as Map<string, Value>, fetches, (o) => o) : undefined) ?? runSlow(feeds, fetches, hooks),
      runReplayed: (feeds, fetches, wrap) => (faultyKernels.size ? undefined : native?.replay(feeds, fetches, wrap)),
      release() {
        native?.release();
      },
    };
  },
};

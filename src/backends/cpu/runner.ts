// Run-time side of the native CPU kernels: load the plan's library, pack each native layer's weights once, and
// give the executor an async kernel per native layer (koffi runs it on a worker thread, off the event loop).
import type { Model, Node } from '../../ir/graph.js';
import { TensorData, type Value } from '../../ir/tensor.js';
import { KilnError } from '../../ir/errors.js';
import type { NodeKernel } from '../../ops/execute.js';
import { NativeLibrary, type Ptr } from './native.js';
import { KERNELS_BLOB, META_BLOB, dimsMatch, layerArgs, type KernelsMeta, type LayerMeta } from './build.js';

export interface NativeKernels {
  kernelFor(node: Node): NodeKernel | undefined;
  release(): void;
}

/** The plan's native layers ready to run, or undefined when the plan has none. */
export function loadNativeKernels(model: Model, blobs: Map<string, Uint8Array> | undefined, threads: number,
  fallback: (node: Node, inputs: (Value | undefined)[]) => Value[]): NativeKernels | undefined {
  const bytes = blobs?.get(KERNELS_BLOB), metaBytes = blobs?.get(META_BLOB);
  if (!bytes || !metaBytes) return undefined;
  let lib: NativeLibrary;
  try {
    lib = new NativeLibrary(bytes);
  } catch (e) {
    throw new KilnError(`the plan's compiled CPU kernels cannot load here: ${(e as Error).message}`, {
      hint: 'Rebuild the plan on this machine (kiln build), or with KILN_CC=none for reference kernels only.',
    });
  }
  const meta = JSON.parse(new TextDecoder().decode(metaBytes)) as KernelsMeta;
  const byName = new Map(model.graph.nodes.map((n) => [n.name, n]));
  const packed: Ptr[] = [];
  const kernels = new Map<Node, NodeKernel>();
  for (const l of meta.layers) {
    const node = byName.get(l.node);
    if (!node) throw new KilnError(`plan kernels name layer '${l.node}', which the plan's graph does not have.`, { hint: 'The plan is inconsistent; rebuild it.' });
    const p = packWeights(lib, model, node, l);
    if (p !== null) packed.push(p);
    kernels.set(node, layerKernel(lib, node, l, p, threads, fallback));
  }
  return {
    kernelFor: (n) => kernels.get(n),
    release: () => {
      for (const p of packed.splice(0)) lib.free(p);
      kernels.clear();
    },
  };
}

function packWeights(lib: NativeLibrary, model: Model, node: Node, l: LayerMeta): Ptr {
  if (!l.pack) return null;
  const data = l.pack.inputs.map((i) => {
    const t = model.graph.initializers.get(node.inputs[i]);
    if (!t || t.dtype !== 'float32') throw new KilnError(`layer '${l.node}': its packed input '${node.inputs[i]}' is not a float32 constant in the plan.`, { hint: 'Rebuild the plan.' });
    return t.data;
  });
  return lib.pack(l.pack.fn, data);
}

function layerKernel(lib: NativeLibrary, node: Node, l: LayerMeta, packed: Ptr, threads: number,
  fallback: (node: Node, inputs: (Value | undefined)[]) => Value[]): NodeKernel {
  const size = l.outDims.reduce((a, b) => a * b, 1);
  return async (inputs) => {
    // the code is specialized to the profile's opt shapes; other shapes run the reference kernel
    if (!dimsMatch(l, inputs)) return fallback(node, inputs);
    const out = new Float32Array(size);
    lib.threads(threads);
    await lib.callAsync(l.fn, layerArgs(l.args, inputs, packed, out));
    return [new TensorData('float32', l.outDims, out)];
  };
}

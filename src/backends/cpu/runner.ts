// Run-time side of the native CPU kernels: load the plan's library, pack each native layer's weights once, and
// give the executor an async kernel per native layer (koffi runs it on a worker thread, off the event loop).
// Output buffers of intermediate values are reused across layers and runs: fresh multi-megabyte arrays cost page
// faults and zeroing on every run (measured: ResNet-50 120 -> 73 ms at one thread).
import type { Model, Node } from '../../ir/graph.js';
import { topoSort } from '../../ops/execute.js';
import { TensorData, type Value } from '../../ir/tensor.js';
import { KILN_DOMAIN } from '../../ops/fused.js';
import { KilnError } from '../../ir/errors.js';
import type { NodeKernel } from '../../ops/execute.js';
import { NativeLibrary, chainRecord, type Ptr } from './native.js';
import { outValue, outWords } from './int8.js';
import { KERNELS_BLOB, META_BLOB, layerArgs, outDimsAt, runBatch, type KernelsMeta, type LayerMeta } from './build.js';

export interface NativeKernels {
  /** The kernels for one run; `pool` lets intermediate outputs reuse buffers of values that are dead by then (off
   * when a caller holds on to intermediate values: keepAll, or onLayer with retainOutputs); \`chain\` (default on)
   * runs consecutive native layers in one foreign call (off where per-layer timings are wanted). */
  begin(pool: boolean, chain?: boolean): { kernelFor: (node: Node) => NodeKernel | undefined; end: () => void };
  release(): void;
}

type LayerKernel = ((inputs: (Value | undefined)[], out: (n: number) => Float32Array) => Promise<Value[]> | Value[]) & {
  prepare: (inputs: (Value | undefined)[], out: (n: number) => Float32Array) => Prepared;
};

/** Layers with less work than this (multiply-adds or elements, at the run's batch) are called synchronously: a
 * worker-thread handoff and promise cost tens of microseconds, more than such a layer computes. */
const SYNC_WORK = 1e7;

/** Free buffers by size class, shared by the runs of one runner (a buffer is only here while no value uses it).
 * Classes are powers of two and a request gets a view of the first n words: keyed by exact length, a server's
 * dynamic batches (every size from 1 to max_batch_size) kept one set of buffers per batch size seen, and a worker's
 * memory grew for minutes (tiny CNN, 240 runs of random sizes 1..64: +180 MiB of buffers per engine; now +8 MiB). */
class BufferPool {
  private free = new Map<number, Float32Array[]>();
  take(n: number): Float32Array {
    const cap = n <= 1 ? n : 2 ** Math.ceil(Math.log2(n));
    const b = this.free.get(cap)?.pop() ?? new Float32Array(cap);
    return b.length === n ? b : b.subarray(0, n);
  }
  give(view: Float32Array): void {
    const b = view.byteOffset === 0 && view.byteLength === view.buffer.byteLength ? view : new Float32Array(view.buffer);
    const l = this.free.get(b.length);
    if (l) l.push(b);
    else this.free.set(b.length, [b]);
  }
  clear(): void {
    this.free.clear();
  }
}

/**
 * For each output of the native layers and of the pooled Splits, by value name: the schedule index after which no
 * node can read its buffer, or Infinity. A native consumer only reads it; any other consumer may return a view of it
 * (Reshape, Identity), so the buffer lives as long as that consumer's outputs do. Graph outputs live on. Null when
 * the graph has subgraphs (their captured reads are not tracked here).
 */
function deadAfter(order: Node[], native: Set<Node>, splits: Node[], graphOutputs: Set<string>): Map<string, number> | null {
  if (order.some((n) => Object.values(n.attrs).some((a) => a.type === 'graph' || a.type === 'graphs'))) return null;
  const index = new Map(order.map((n, i) => [n, i]));
  const consumers = new Map<string, Node[]>();
  for (const n of order) for (const x of n.inputs) if (x) consumers.set(x, [...(consumers.get(x) ?? []), n]);
  const memo = new Map<string, number>();
  const lifeOf = (value: string, producer: Node): number => {
    if (graphOutputs.has(value)) return Infinity;
    const m = memo.get(value);
    if (m !== undefined) return m;
    memo.set(value, Infinity); // guards cycles (none in a sorted graph)
    let last = index.get(producer)!;
    for (const c of consumers.get(value) ?? []) {
      last = Math.max(last, index.get(c)!);
      if (!native.has(c)) for (const o of c.outputs) if (o) last = Math.max(last, lifeOf(o, c));
    }
    memo.set(value, last);
    return last;
  };
  const values = [...[...native].map((n) => [n.outputs[0], n] as const), ...splits.flatMap((n) => n.outputs.filter(Boolean).map((o) => [o, n] as const))];
  return new Map(values.map(([v, n]) => [v, lifeOf(v, n)]));
}

/** Whether a node is a Split the runner runs itself (see \`splitPooled\`). */
const isSplit = (n: Node) => n.opType === 'Split' && (n.domain === '' || n.domain === KILN_DOMAIN);

/**
 * Split of float32 data into buffers from the run's pool: a transformer's Splits are most of what its run would
 * otherwise allocate (BERT-base: 14 MB of fresh arrays per run, and with them a major GC per run, ~10 ms of the main
 * thread). Sizes as ONNX defines them (the split input or attribute, else equal parts); anything else returns
 * undefined and the reference kernel runs.
 */
function splitPooled(n: Node, inputs: (Value | undefined)[], alloc: (value: string) => (len: number) => Float32Array): Value[] | undefined {
  const x = inputs[0];
  if (!(x instanceof TensorData) || x.dtype !== 'float32' || !x.dims.length) return undefined;
  const outs = n.outputs;
  if (outs.some((o) => !o)) return undefined;
  const rank = x.dims.length, a0 = (n.attrs.axis?.value as number | undefined) ?? 0, axis = a0 < 0 ? a0 + rank : a0;
  if (axis < 0 || axis >= rank) return undefined;
  const d = x.dims[axis];
  const given = inputs[1] instanceof TensorData ? Array.from(inputs[1].data as BigInt64Array, Number) : (n.attrs.split?.value as number[] | undefined);
  const sizes = given ?? (d % outs.length === 0 ? new Array<number>(outs.length).fill(d / outs.length) : undefined);
  if (!sizes || sizes.length !== outs.length || sizes.some((v) => !(v >= 0)) || sizes.reduce((p, q) => p + q, 0) !== d) return undefined;
  const outer = x.dims.slice(0, axis).reduce((p, q) => p * q, 1), inner = x.dims.slice(axis + 1).reduce((p, q) => p * q, 1);
  const src = x.data as Float32Array;
  let at = 0;
  return sizes.map((len, k) => {
    const run = len * inner, y = alloc(outs[k])(outer * run);
    for (let o = 0; o < outer; o++) y.set(src.subarray((o * d + at) * inner, (o * d + at) * inner + run), o * run);
    at += len;
    return new TensorData('float32', x.dims.map((v, i) => (i === axis ? len : v)), y);
  });
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
  const kernels = new Map<Node, LayerKernel>();
  for (const l of meta.layers) {
    const node = byName.get(l.node);
    if (!node) throw new KilnError(`plan kernels name layer '${l.node}', which the plan's graph does not have.`, { hint: 'The plan is inconsistent; rebuild it.' });
    const p = packWeights(lib, model, node, l);
    if (p !== null) packed.push(p);
    kernels.set(node, layerKernel(lib, node, l, p, threads, fallback));
  }
  const order = topoSort(model.graph, () => true);
  const index = new Map(order.map((n, i) => [n, i]));
  const splits = new Set(order.filter(isSplit));
  const life = deadAfter(order, new Set(kernels.keys()), [...splits], new Set(model.graph.outputs.map((o) => o.name)));
  const chains = chainsOf(order, kernels, model);
  const metaOf = new Map(meta.layers.map((l) => [byName.get(l.node)!, l]));
  const addr = new Map<string, bigint | undefined>();
  const symbol = (fn: string) => (addr.has(fn) ? addr.get(fn) : addr.set(fn, lib.symbol(fn)).get(fn));
  const pool = new BufferPool();
  return {
    begin(usePool, chain = true) {
      const pooled = usePool && !!life;
      // buffers this run took, with the schedule index after which they are dead
      const held: { until: number; buf: Float32Array }[] = [];
      const releaseBefore = (i: number) => {
        for (let h = held.length - 1; h >= 0; h--) if (held[h].until < i) pool.give(held.splice(h, 1)[0].buf);
      };
      const allocFor = (value: string) => (len: number) => {
        const until = pooled ? life!.get(value)! : Infinity;
        const buf = until === Infinity ? new Float32Array(len) : pool.take(len);
        if (until !== Infinity) held.push({ until, buf });
        return buf;
      };
      // outputs of this run's native layers (inputs of later chain members), and outputs a chain computed ahead
      const produced = new Map<string, Value>();
      const pending = new Map<Node, Value[]>();
      const record = (n: Node, out: Value[]) => {
        n.outputs.forEach((o, k) => o && produced.set(o, out[k]));
        return out;
      };
      const single = async (n: Node, inputs: (Value | undefined)[]) => {
        releaseBefore(index.get(n)!);
        return record(n, await kernels.get(n)!(inputs, allocFor(n.outputs[0])));
      };
      /** Runs the chain's members (as far as their inputs fit their code) in one foreign call; the head's outputs
       * are returned, the others wait in \`pending\` for the executor to reach them. */
      const runChain = async (nodes: Node[], headInputs: (Value | undefined)[]): Promise<Value[]> => {
        const given = new Map(nodes[0].inputs.map((x, i) => [x, headInputs[i]]));
        const inits = model.graph.initializers;
        const calls: Call[] = [];
        const results: Value[][] = [];
        for (const [j, n] of nodes.entries()) {
          const inputs = j === 0 ? headInputs : n.inputs.map((x) => (x ? inits.get(x) ?? produced.get(x) ?? given.get(x) : undefined));
          if (inputs.some((v, q) => n.inputs[q] && v === undefined) || runBatch(metaOf.get(n)!, inputs) === undefined) break;
          if (symbol(metaOf.get(n)!.fn) === undefined) break;
          releaseBefore(index.get(n)!);
          const p = kernels.get(n)!.prepare(inputs, allocFor(n.outputs[0]));
          const out = 'done' in p ? p.done : p.call.result;
          if ('call' in p) calls.push(p.call);
          results.push(record(n, out));
        }
        if (!results.length) return single(nodes[0], headInputs);
        const prog = new BigInt64Array(calls.length * 10);
        void prog.buffer; // off V8's heap, where the GC could move it while the worker thread reads it
        calls.forEach((c, i) => chainRecord(prog, i, symbol(c.fn)!, c.args, c.nb));
        lib.threads(threads);
        if (calls.length) await lib.runChain(prog, calls.length, calls.reduce((a, c) => a + c.work, 0) < SYNC_WORK);
        for (let j = 1; j < results.length; j++) pending.set(nodes[j], results[j]);
        return results[0];
      };
      const kernelFor = (n: Node): NodeKernel | undefined => {
        if (splits.has(n)) {
          return (inputs) => {
            releaseBefore(index.get(n)!);
            return record(n, splitPooled(n, inputs, allocFor) ?? fallback(n, inputs));
          };
        }
        if (!kernels.has(n)) return undefined;
        const ready = pending.get(n);
        if (ready) {
          pending.delete(n);
          return () => ready;
        }
        const c = chain ? chains.get(n) : undefined;
        return c ? (inputs) => runChain(c, inputs) : (inputs) => single(n, inputs);
      };
      // once the run has returned its outputs, every buffer it still holds is dead
      const end = () => {
        pending.clear();
        produced.clear();
        for (const h of held.splice(0)) pool.give(h.buf);
      };
      return { kernelFor, end };
    },
    release: () => {
      for (const p of packed.splice(0)) lib.free(p);
      kernels.clear();
      pool.clear();
    },
  };
}

/**
 * Runs of consecutive native layers (in schedule order) that can go to the library in one call, by their first
 * layer: every input of a later member is a constant, an output of a native layer, or an input of the first
 * (values the runner holds when the chain starts). Runs of one layer are left out.
 */
function chainsOf(order: Node[], kernels: Map<Node, unknown>, model: Model): Map<Node, Node[]> {
  const chains = new Map<Node, Node[]>();
  const nativeOut = new Set([...kernels.keys()].flatMap((n) => n.outputs.filter(Boolean)));
  const inits = model.graph.initializers;
  let cur: Node[] = [];
  const close = () => {
    if (cur.length > 1) chains.set(cur[0], cur);
    cur = [];
  };
  for (const n of order) {
    if (!kernels.has(n)) { close(); continue; }
    const head = cur[0];
    if (head && !n.inputs.every((x) => !x || inits.has(x) || nativeOut.has(x) || head.inputs.includes(x))) close();
    cur.push(n);
  }
  close();
  return chains;
}

function packWeights(lib: NativeLibrary, model: Model, node: Node, l: LayerMeta): Ptr {
  if (!l.pack) return null;
  const data = l.pack.inputs.map((i) => {
    const t = model.graph.initializers.get(node.inputs[i]);
    if (!t || (t.dtype !== 'float32' && t.dtype !== 'int8')) throw new KilnError(`layer '${l.node}': its packed input '${node.inputs[i]}' is not a float32 constant in the plan.`, { hint: 'Rebuild the plan.' });
    return t.data;
  });
  return lib.pack(l.pack.fn, data);
}

/** One native call ready to go: the function, its arguments and batch, the outputs it fills, its work. */
interface Call { fn: string; args: Ptr[]; nb: number; result: Value[]; work: number }

/** A layer's call on these inputs, or its outputs from the reference kernel where the inputs differ from the shapes
 * the code was generated for (any leading dim where the layer is batch-generic). */
type Prepared = { call: Call } | { done: Value[] };

function layerKernel(lib: NativeLibrary, node: Node, l: LayerMeta, packed: Ptr, threads: number,
  fallback: (node: Node, inputs: (Value | undefined)[]) => Value[]): LayerKernel {
  const b0 = l.outDims[0] || 1, work = l.work ?? Infinity;
  const prepare = (inputs: (Value | undefined)[], alloc: (n: number) => Float32Array): Prepared => {
    const nb = runBatch(l, inputs);
    // other shapes run the reference kernel (its outputs are fresh arrays, so buffer reuse stays safe)
    if (nb === undefined) return { done: fallback(node, inputs).map((v) => (sharesInput(v, inputs) ? copy(v) : v)) };
    const dims = outDimsAt(l, nb);
    const out = alloc(outWords(dims, l.outDtype));
    const result = [outValue(out, dims, l.outDtype)];
    if (!out.length) return { done: result };
    return { call: { fn: l.fn, args: layerArgs(l.args, inputs, packed, out), nb, result, work: work * (nb / b0) } };
  };
  const kernel = (inputs: (Value | undefined)[], alloc: (n: number) => Float32Array) => {
    const p = prepare(inputs, alloc);
    if ('done' in p) return p.done;
    const { call } = p;
    lib.threads(threads);
    if (call.work < SYNC_WORK) {
      lib.callSync(call.fn, call.args, call.nb);
      return call.result;
    }
    return lib.callAsync(call.fn, call.args, call.nb).then(() => call.result);
  };
  return Object.assign(kernel, { prepare });
}

function sharesInput(v: Value, inputs: (Value | undefined)[]): boolean {
  if (!(v instanceof TensorData)) return false;
  const buf = (v.data as { buffer?: ArrayBufferLike }).buffer;
  return inputs.some((x) => x instanceof TensorData && (x.data as { buffer?: ArrayBufferLike }).buffer === buf);
}

const copy = (v: Value): Value => {
  const t = v as TensorData;
  return new TensorData(t.dtype, t.dims, (t.data as Float32Array).slice());
};

// Run-time side of the native CPU kernels: load the plan's library, pack each native layer's weights once, and
// give the executor an async kernel per native layer (koffi runs it on a worker thread, off the event loop).
// Output buffers of intermediate values are reused across layers and runs: fresh multi-megabyte arrays cost page
// faults and zeroing on every run (measured: ResNet-50 120 -> 73 ms at one thread).
import type { Model, Node } from '../../ir/graph.js';
import { topoSort } from '../../ops/execute.js';
import { TensorData, sameDims, type Value } from '../../ir/tensor.js';
import { ExecutionError, KilnError } from '../../ir/errors.js';
import type { NodeKernel } from '../../ops/execute.js';
import type { RunHooks } from '../backend.js';
import { NativeLibrary, chainRecord, readTrace, type Ptr } from './native.js';
import { Replay, newRecording, shapeKey, type Recording } from './replay.js';
import { outValue, outWords } from './int8.js';
import { errorCodeOf } from './movement.js';
import { attentionGroups, chainsOf, concatsInPlace, deadAfter, isSplit, isView, splitGeometry, viewOf, type AttentionGroup, type ConcatPart, type View } from './schedule.js';
import { COPY_ROWS, KERNELS_BLOB, META_BLOB, layerArgs, outDimsAt, runBatch, type KernelsMeta, type LayerMeta } from './build.js';
import { hostBf16 } from './bf16.js';

export interface NativeKernels {
  /** The kernels for one run; `pool` lets intermediate outputs reuse buffers of values that are dead by then (off
   * when a caller holds on to intermediate values: keepAll, or onLayer with retainOutputs); \`chain\` (default on)
   * runs consecutive native layers in one foreign call (off where per-layer timings are wanted). Given the run's
   * \`feeds\`, a pooled chained run may be recorded for \`replay\`: pass the run's results to \`end\`. */
  begin(pool: boolean, chain?: boolean, feeds?: Map<string, Value>): { kernelFor: (node: Node) => NodeKernel | undefined; end: (results?: Map<string, Value>) => void };
  /** The fetched outputs of a run replayed from a recorded one (see replay.ts) with these feeds' names, types and
   * dims, as \`wrap\` makes them into a result; undefined where there is no such recording (or it is in use), and the
   * run goes through \`begin\`. */
  replay<R>(feeds: Map<string, Value>, fetches: readonly string[], wrap: (outputs: Map<string, Value>) => R, onLayerTime?: RunHooks['onLayerTime']): Promise<R> | undefined;
  release(): void;
}

/** \`nb\`: the batch from \`runBatch\` on these inputs where the caller has it already. */
type LayerKernel = { prepare: (inputs: (Value | undefined)[], out: (n: number) => Float32Array, nb?: number) => Prepared };

/** Layers with less work than this (multiply-adds or elements, at the run's batch) are called synchronously: a
 * worker-thread handoff and promise cost tens of microseconds, more than such a layer computes. */
const SYNC_WORK = 1e7;
/** ...but only until the run has held the calling thread this long (ms) since it last let the event loop in: a
 * mid-size model made of small layers (3.5 ms at batch 1) would otherwise keep a server's event loop waiting for the
 * whole run. Models quicker than this stay fully synchronous. */
const SYNC_MS = 0.5;

/** Free buffers by size class, shared by the runs of one runner (a buffer is only here while no value uses it).
 * Classes are powers of two and a request gets a view of the first n words: keyed by exact length, a server's
 * dynamic batches (every size from 1 to max_batch_size) kept one set of buffers per batch size seen, and a worker's
 * memory grew for minutes (tiny CNN, 240 runs of random sizes 1..64: +180 MiB of buffers per engine; now +8 MiB). */
class BufferPool {
  private free = new Map<number, Float32Array[]>();
  /** \`parent\`: where this pool takes buffers it has none of (a recorded run's pool takes the shared one's). */
  constructor(private parent?: BufferPool) {}
  /** A buffer of n words, from this pool, else from \`shared\`, else new. */
  take(n: number, shared?: BufferPool): Float32Array {
    const cap = n <= 1 ? n : 2 ** Math.ceil(Math.log2(n));
    const b = this.pop(cap) ?? shared?.pop(cap) ?? new Float32Array(cap);
    return b.length === n ? b : b.subarray(0, n);
  }
  private pop(cap: number): Float32Array | undefined {
    return this.free.get(cap)?.pop() ?? this.parent?.pop(cap);
  }
  give(view: Float32Array): void {
    const b = view.byteOffset === 0 && view.byteLength === view.buffer.byteLength ? view : new Float32Array(view.buffer);
    const l = this.free.get(b.length);
    if (l) l.push(b);
    else this.free.set(b.length, [b]);
  }
  moveTo(other: BufferPool): void {
    for (const l of this.free.values()) for (const b of l) other.give(b);
    this.free.clear();
  }
  clear(): void {
    this.free.clear();
  }
}

/**
 * Split of float32 data into buffers from the run's pool: a transformer's Splits are most of what its run would
 * otherwise allocate (BERT-base: 14 MB of fresh arrays per run, and with them a major GC per run, ~10 ms of the main
 * thread). Sizes as ONNX defines them (the split input or attribute, else equal parts); anything else returns
 * undefined and the reference kernel runs.
 */
function splitPooled(n: Node, inputs: (Value | undefined)[], alloc: (value: string) => (len: number) => Float32Array): Value[] | undefined {
  const g = splitGeometry(n, inputs);
  if (!g) return undefined;
  const src = g.x.data as Float32Array;
  return g.parts.map((p, k) => {
    const y = alloc(n.outputs[k])(g.outer * p.run);
    for (let o = 0; o < g.outer; o++) y.set(src.subarray(o * g.stride + p.offset, o * g.stride + p.offset + p.run), o * p.run);
    return new TensorData('float32', p.dims, y);
  });
}

/** The plan's native layers ready to run, or undefined when the plan has none. */
export function loadNativeKernels(model: Model, blobs: Map<string, Uint8Array> | undefined, threads: number,
  fallback: (node: Node, inputs: (Value | undefined)[]) => Value[], onCaller = false): NativeKernels | undefined {
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
  if (meta.bf16 && !hostBf16()) {
    throw new KilnError('the plan\'s CPU kernels multiply in bf16 (a --bf16 build), which needs AVX-512 BF16; this CPU has none.', {
      hint: 'Rebuild the plan on this machine (kiln build); without --bf16 for fp32 kernels.',
    });
  }
  const byName = new Map(model.graph.nodes.map((n) => [n.name, n]));
  const packed: Ptr[] = [];
  const kernels = new Map<Node, LayerKernel>();
  for (const l of meta.layers) {
    const node = byName.get(l.node);
    if (!node) throw new KilnError(`plan kernels name layer '${l.node}', which the plan's graph does not have.`, { hint: 'The plan is inconsistent; rebuild it.' });
    const p = packWeights(lib, model, node, l);
    if (p !== null) packed.push(p);
    kernels.set(node, layerKernel(node, l, p, fallback));
  }
  const order = topoSort(model.graph, () => true);
  const index = new Map(order.map((n, i) => [n, i]));
  const splits = new Set(order.filter(isSplit));
  const life = deadAfter(order, new Set(kernels.keys()), [...splits], new Set(model.graph.outputs.map((o) => o.name)));
  const chains = chainsOf(order, kernels, model);
  const metaOf = new Map(meta.layers.map((l) => [byName.get(l.node)!, l]));
  const inPlace = concatsInPlace(order, chains, metaOf, new Set(model.graph.outputs.map((o) => o.name)));
  const groups = attentionGroups(order, kernels, model);
  // placeholder storage for the values a fused attention group leaves unwritten (never read; see attentionGroups)
  let unwritten = new Float32Array(0);
  const addr = new Map<string, bigint | undefined>();
  const symbol = (fn: string) => (addr.has(fn) ? addr.get(fn) : addr.set(fn, lib.symbol(fn)).get(fn));
  // the output dims of each view op in a chain, for the input dims and other inputs it last saw (see chainView)
  const viewDims = new Map<Node, { dims: readonly number[]; rest: (Value | undefined)[]; out: readonly number[] }>();
  // the pool the runs share (a run takes its own pool from this one while it is being recorded)
  const shared = new BufferPool();
  // the recorded run (see replay.ts) with its own buffers, and the shape key of the latest run: a run is recorded
  // when its shapes are those of the run before it (a benchmark's or a server's steady state, not one-off shapes)
  let recorded: { replay: Replay; pool: BufferPool } | undefined;
  let lastKey: string | undefined, unreplayable: string | undefined;
  // KILN_REPLAY=0: every run goes through the executor (for comparing, or ruling the replay out when debugging)
  const replays = process.env.KILN_REPLAY !== '0';
  const drop = () => {
    recorded?.pool.moveTo(shared);
    recorded = undefined;
  };
  // the layers that can meet bad run-time data, by the code they record (kiln_set_error: layer number + 1)
  const erring = new Map(meta.layers.flatMap((l) => {
    const code = errorCodeOf(l.fn);
    return code ? [[code, l] as const] : [];
  }));
  /** Raises what a layer of the last foreign call recorded (see kiln_set_error). */
  const checkError = () => raise(lib.takeError());
  /** Raises the error of a layer that recorded \`code\` (0: none). */
  const raise = (code: number) => {
    if (!code) return;
    const l = erring.get(code), n = l && byName.get(l.node);
    const where = n ? `${n.opType} '${n.name}'` : `layer ${code - 1}`;
    const axis = n ? (n.attrs.axis?.value as number | undefined) ?? 0 : 0, dims = l?.inputDims[0];
    throw new ExecutionError(`${where}: an index in '${n?.inputs[1] ?? 'indices'}' is out of range${dims ? ` for axis ${axis} of [${dims.join(', ')}] (valid: -${dims.at(axis)} to ${(dims.at(axis) ?? 0) - 1})` : ''}; the output rows it picks were zeroed.`, {
      hint: 'Check the input ids against the table size (a tokenizer for another vocabulary?).',
    });
  };
  /**
   * A replayed run with the library's trace on (kiln_trace: a clock stamp after each record), each record's time
   * reported for its node: a profile of the run as it really runs, one foreign call and the pool as in production,
   * where timing layer by layer (a call and a handoff each) added 90 us a layer to SqueezeNet's 40 (8.0 ms summed for
   * a 4.5 ms run). The trace buffer is the library's: traced runs of one plan do not overlap (profiles run one at a time).
   */
  const traced = async <R>(r: Replay, feeds: Map<string, Value>, fetches: readonly string[], wrap: (o: Map<string, Value>) => R, onLayerTime: NonNullable<RunHooks['onLayerTime']>): Promise<R> => {
    const { prog, n } = r.program;
    // {function, clock} per record, the chain's start, and room for the pool's sleep marks
    const buf = new BigInt64Array(2 * n + 4096);
    void buf.buffer;
    try {
      const out = r.bind(feeds, fetches);
      lib.trace(buf);
      let code = 0, words = 0;
      try {
        code = await (lib.runReplay(prog, n, threads, false) as Promise<number>);
      } finally {
        words = lib.trace(null);
      }
      raise(code);
      let k = 0;
      readTrace(buf, words, (_fn, ms) => {
        const node = r.nodes[k++];
        if (node) onLayerTime(node, ms);
      });
      return wrap(out);
    } finally {
      r.busy = false;
    }
  };
  return {
    // The steady state of a benchmark or a server: one foreign call (kiln_run_replay: threads, chain, error word) and
    // one promise, with nothing else on the main thread around it but the feeds' check and the outputs' binding;
    // every step here runs on caches the previous run flushed (each costs several times its warm time).
    replay(feeds, fetches, wrap, onLayerTime) {
      const r = recorded?.replay;
      if (!r || r.busy || !r.matches(feeds, fetches)) return undefined;
      r.busy = true;
      const { prog, n } = r.program;
      if (onLayerTime) return traced(r, feeds, fetches, wrap, onLayerTime);
      if (onCaller || r.work < SYNC_WORK) {
        try {
          const out = r.bind(feeds, fetches);
          raise(lib.runReplay(prog, n, threads, true) as number);
          return Promise.resolve(wrap(out));
        } catch (e) {
          return Promise.reject(e);
        } finally {
          r.busy = false;
        }
      }
      const out = r.bind(feeds, fetches);
      // nothing runs on the main thread while the library computes: making the result (or the next run's outputs)
      // meanwhile measured 1-2 % slower at 2 threads on 2 cores (a pool thread preempted mid-task holds up its layer)
      // and no quicker at 1 thread (paired, MobileNetV2)
      return (lib.runReplay(prog, n, threads, false) as Promise<number>).then((code) => {
        r.busy = false;
        raise(code);
        return wrap(out);
      }, (e: unknown) => {
        r.busy = false;
        throw e;
      });
    },
    begin(usePool, chain = true, feeds) {
      const pooled = usePool && !!life;
      const key = replays && pooled && chain && feeds ? shapeKey(feeds) : undefined;
      const rec: Recording | undefined = key !== undefined && key === lastKey && key !== unreplayable && recorded?.replay.key !== key && !recorded?.replay.busy
        ? newRecording() : undefined;
      if (key !== undefined) lastKey = key;
      // a recorded run keeps the buffers it used, so it takes them from a pool of its own
      const pool = rec ? new BufferPool(shared) : shared;
      // buffers this run took, with the schedule index after which they are dead
      const held: { until: number; buf: Float32Array }[] = [];
      // buffers freed while a chain is prepared: its calls have not run yet, so only its own later calls (which run in
      // order) may reuse them; they go back to the pool the runs share once the chain has run (another run of this
      // runner could otherwise write into a buffer an earlier call of the chain still reads)
      const chainFreed = new BufferPool();
      let preparing = false;
      const releaseBefore = (i: number) => {
        for (let h = held.length - 1; h >= 0; h--) if (held[h].until < i) (preparing ? chainFreed : pool).give(held.splice(h, 1)[0].buf);
      };
      const allocFor = (value: string) => (len: number) => {
        const until = pooled ? life!.get(value)! : Infinity;
        const buf = until === Infinity ? new Float32Array(len) : preparing ? chainFreed.take(len, pool) : pool.take(len);
        if (until !== Infinity) held.push({ until, buf });
        else rec?.fresh.push(buf);
        return buf;
      };
      /** A layer's output buffer: its residual input's own buffer where the layer can add to it (Variant.accumulate)
       * and nothing reads the residual after this layer, else a buffer from the pool. */
      const outFor = (n: Node, inputs: (Value | undefined)[]) => {
        const m = metaOf.get(n)!, res = inputs[3], x = inputs[0];
        const until = pooled && m.accumulate && !m.pair ? life!.get(n.outputs[0]) : undefined;
        const h = until !== undefined && until !== Infinity && res instanceof TensorData && res.dtype === 'float32' && life!.get(n.inputs[3]) === index.get(n)
          && x instanceof TensorData && (x.data as Float32Array).buffer !== (res.data as Float32Array).buffer ? held.find((e) => e.buf === res.data) : undefined;
        const fresh = allocFor(n.outputs[0]);
        return (len: number) => {
          if (!h || len !== h.buf.length) return fresh(len);
          h.until = until!;
          return h.buf;
        };
      };
      // the output buffers of the Concats whose inputs are written in place (see concatsInPlace), taken when the first
      // of those inputs is
      const concatOut = new Map<Node, Float32Array>();
      /** An input of such a Concat: its part of the Concat's output, where the size is the planned one. */
      const partOf = (part: ConcatPart, other: (len: number) => Float32Array) => (len: number) => {
        if (len !== part.len) return other(len);
        let y = concatOut.get(part.concat);
        if (!y) concatOut.set(part.concat, y = allocFor(part.concat.outputs[0])(part.total));
        return y.subarray(part.offset, part.offset + len);
      };
      /** A Concat's output where every input is in place (nothing to copy), else undefined. */
      const concatDone = (n: Node, inputs: (Value | undefined)[], nb: number): Value[] | undefined => {
        const y = concatOut.get(n), dims = outDimsAt(metaOf.get(n)!, nb);
        if (!y || dims.reduce((a, b) => a * b, 1) !== y.length) return undefined;
        const ok = inputs.every((x, k) => {
          const part = inPlace.get(n.inputs[k]), d = x instanceof TensorData ? x.data : undefined;
          return part && d instanceof Float32Array && d.buffer === y.buffer && d.byteOffset === y.byteOffset + 4 * part.offset && d.length === part.len;
        });
        return ok ? [new TensorData('float32', dims, y)] : undefined;
      };
      // outputs of this run's native layers (inputs of later chain members), and outputs a chain computed ahead
      const produced = new Map<string, Value>();
      const keepParams: BigInt64Array[] = [];
      const pending = new Map<Node, Value[]>();
      const record = (n: Node, out: Value[]) => {
        n.outputs.forEach((o, k) => o && produced.set(o, out[k]));
        return out;
      };
      // when this run last let the event loop in (see SYNC_MS)
      let yielded = performance.now();
      /** Runs native work on the calling thread when it is small and the run has not held the thread for long, else
       * on a worker thread (the event loop runs meanwhile). */
      const invoke = async (work: number, sync: () => void, async: () => Promise<void>) => {
        lib.threads(threads);
        if (work < SYNC_WORK && performance.now() - yielded < SYNC_MS) return sync();
        await async();
        yielded = performance.now();
      };
      const single = async (n: Node, inputs: (Value | undefined)[]) => {
        if (rec) rec.ok = false;
        releaseBefore(index.get(n)!);
        const p = kernels.get(n)!.prepare(inputs, outFor(n, inputs));
        if ('done' in p) return record(n, p.done);
        const { fn, args, nb, result, work } = p.call;
        await invoke(work, () => lib.callSync(fn, args, nb), () => lib.callAsync(fn, args, nb));
        checkError();
        return record(n, result);
      };
      /** A Split inside a chain: its outputs from the pool, filled by strided copies in the library. */
      const chainSplit = (n: Node, inputs: (Value | undefined)[], calls: Call[]): Value[] | undefined => {
        const g = splitGeometry(n, inputs);
        if (!g || symbol(COPY_ROWS) === undefined) return undefined;
        releaseBefore(index.get(n)!);
        return g.parts.map((p, k) => {
          const y = allocFor(n.outputs[k])(g.outer * p.run);
          const params = BigInt64Array.of(BigInt(g.outer), BigInt(p.run), BigInt(g.stride), BigInt(p.offset));
          // off V8's heap (see offHeap in build.ts): the library reads them on a worker thread
          const src = g.x.data as Float32Array;
          for (const a of [params, y, src]) void a.buffer;
          // a chain program holds bare addresses, and nothing else references the parameters: the run keeps them
          // (a local of runChain may be collected during its await while the library still reads them)
          keepParams.push(params);
          if (y.length) calls.push({ fn: COPY_ROWS, args: [src, y, params], nb: 1, result: [], work: y.length });
          return new TensorData('float32', p.dims, y);
        });
      };
      /** A view op inside a chain: the reference kernel only relabels dims, so it can run before the data is there
       * (undefined where its output would not share the input's buffer). */
      const chainView = (n: Node, inputs: (Value | undefined)[]): Value[] | undefined => {
        const x = inputs[0];
        if (!(x instanceof TensorData)) return undefined;
        // the same dims and the same other inputs (constant shapes: the same objects) give the same output dims, which
        // saves running the reference kernel on every run
        const seen = viewDims.get(n);
        if (seen && sameDims(seen.dims, x.dims) && seen.rest.length === inputs.length - 1 && seen.rest.every((v, i) => v === inputs[i + 1])) {
          return [new TensorData(x.dtype, seen.out, x.data)];
        }
        let out: Value[];
        try {
          out = fallback(n, inputs);
        } catch {
          return undefined;
        }
        if (!(out.length === 1 && out[0] instanceof TensorData && out[0].data === x.data)) return undefined;
        viewDims.set(n, { dims: x.dims, rest: inputs.slice(1), out: out[0].dims });
        return out;
      };
      /** One strided attention call for a whole group (see attentionGroups) in place of its Split copies, Transposes
       * and attention: the outputs of every member (placeholders for the unwritten ones, the real output of the final
       * Transpose), or undefined where the views or shapes do not fit (the members then run one by one). The call
       * goes into the chain's \`calls\`. */
      const fuseAttention = (g: AttentionGroup, valueOf: (x: string) => Value | undefined, calls: Call[]): Map<Node, Value[]> | undefined => {
        const outs = new Map<Node, Value[]>();
        const views = new Map<string, View>();
        for (const m of g.members) {
          if (m === g.attn || m === g.out) continue;
          const ins = m.inputs.map((x) => (x ? views.get(x) ?? valueOf(x) : undefined));
          const made = viewOf(m, ins, (n, x) => fallback(n, [placeholder(x.dims), ...x.rest]));
          if (!made) return undefined;
          made.forEach((v, k) => views.set(m.outputs[k], v));
          outs.set(m, made.map((v) => placeholder(v.dims)));
        }
        const [q, k, v] = g.attn.inputs.slice(0, 3).map((x) => views.get(x));
        const mask = g.attn.inputs[3] ? valueOf(g.attn.inputs[3]) : undefined;
        const am = metaOf.get(g.attn)!;
        if (!q || !k || !v || (g.attn.inputs[3] && !(mask instanceof TensorData)) || symbol(am.fn) === undefined) return undefined;
        const nb = runBatch(am, [placeholder(q.dims), placeholder(k.dims), placeholder(v.dims), mask]);
        if (nb === undefined || ![q, k, v].every((w) => w.dims.length === 4) || q.strides[3] !== 1 || v.strides[3] !== 1) return undefined;
        const [B, H, S] = q.dims, DV = v.dims[3];
        // K's strides along L and along D (k_transposed: K is [B, H, D, L])
        const [kl, kd] = g.attn.attrs.k_transposed?.value ? [k.strides[3], k.strides[2]] : [k.strides[2], k.strides[3]];
        releaseBefore(index.get(g.members[0])!);
        const y = allocFor(g.out.outputs[0])(B * S * H * DV);
        const params = BigInt64Array.from([q.offset, ...q.strides.slice(0, 3), k.offset, k.strides[0], k.strides[1], kl, v.offset, ...v.strides.slice(0, 3),
          0, S * H * DV, DV, H * DV, kd], BigInt);
        for (const a of [params, y, q.base, k.base, v.base, (mask as TensorData | undefined)?.data]) if (a) void (a as Float32Array).buffer;
        keepParams.push(params);
        calls.push({ fn: am.fn, args: [q.base, k.base, v.base, (mask as TensorData | undefined)?.data ?? null, y, params], nb, result: [], work: (am.work ?? 0) * (nb / (am.outDims[0] || 1)) });
        outs.set(g.attn, [placeholder([B, H, S, DV])]);
        outs.set(g.out, [new TensorData('float32', [B, S, H, DV], y)]);
        return outs;
      };
      const placeholder = (dims: number[]) => {
        const n = dims.reduce((a, b) => a * b, 1);
        if (unwritten.length < n) unwritten = new Float32Array(n);
        return new TensorData('float32', dims, unwritten.subarray(0, n));
      };
      /** A layer with a pair function (LayerMeta.pair) right after its producer's call: the two become one call in
       * place of the producer's, whose output is left unwritten (only this layer reads it, and with the pool on no
       * caller sees it). Not where this layer's output took the buffer of the producer's input, which the pair reads. */
      const pairUp = (n: Node, inputs: (Value | undefined)[], call: Call, calls: Call[]): boolean => {
        const pair = metaOf.get(n)!.pair, prev = calls[calls.length - 1], pw = pair && byName.get(pair.producer);
        const w1 = pw && model.graph.initializers.get(pw.inputs[1])?.data;
        if (!pair || !prev || !pw || !(w1 instanceof Float32Array) || prev.fn !== metaOf.get(pw)?.fn || prev.result[0] !== inputs[0] || prev.nb !== call.nb) return false;
        const x = prev.args[0] as Float32Array, y = call.args[4] as Float32Array;
        if (x.buffer === y.buffer || symbol(pair.fn) === undefined) return false;
        void w1.buffer;
        calls[calls.length - 1] = { fn: pair.fn, args: [x, w1, prev.args[2], ...call.args.slice(1, 5)], nb: call.nb, result: call.result, work: prev.work + call.work, node: n };
        return true;
      };
      /** Runs the chain's members (as far as their inputs fit their code) in one foreign call; the head's outputs
       * are returned, the others wait in \`pending\` for the executor to reach them. */
      const runChain = async (nodes: Node[], headInputs: (Value | undefined)[]): Promise<Value[]> => {
        const head = nodes[0].inputs;
        const inits = model.graph.initializers;
        const calls: Call[] = [];
        const results: Value[][] = [];
        const valueOf = (x: string) => {
          const v = inits.get(x) ?? produced.get(x) ?? feeds?.get(x);
          if (v !== undefined) return v;
          const q = head.indexOf(x);
          return q < 0 ? undefined : headInputs[q];
        };
        const fusedOut = new Map<Node, Value[]>();
        // the calls a node added (a layer, a Split's copies, an attention group's) are its own in a traced profile
        const own = (node: Node | undefined) => {
          for (let c = calls.length - 1; c >= 0 && !calls[c].node; c--) calls[c].node = node;
        };
        preparing = true;
        for (let j = 0; j < nodes.length; j++) {
          const n = nodes[j];
          own(nodes[j - 1]);
          const ready = fusedOut.get(n);
          if (ready) {
            results.push(record(n, ready));
            continue;
          }
          const group = j > 0 && pooled ? groups.get(n) : undefined;
          if (group && nodes.slice(j, j + group.members.length).every((m, i) => m === group.members[i])) {
            const fused = fuseAttention(group, valueOf, calls);
            if (fused) {
              for (const [m, out] of fused) fusedOut.set(m, out);
              results.push(record(n, fusedOut.get(n)!));
              continue;
            }
          }
          let inputs = headInputs;
          if (j > 0) {
            inputs = new Array<Value | undefined>(n.inputs.length);
            let q = 0;
            for (; q < inputs.length; q++) if (n.inputs[q] && (inputs[q] = valueOf(n.inputs[q])) === undefined) break;
            if (q < inputs.length) break;
          }
          const kernel = kernels.get(n);
          if (!kernel) {
            const out = isSplit(n) ? chainSplit(n, inputs, calls) : chainView(n, inputs);
            if (!out) break;
            results.push(record(n, out));
            continue;
          }
          const meta = metaOf.get(n)!;
          const nb = runBatch(meta, inputs);
          if (nb === undefined || symbol(meta.fn) === undefined) break;
          const joined = pooled ? concatDone(n, inputs, nb) : undefined;
          if (joined) {
            results.push(record(n, joined));
            continue;
          }
          // a layer that may pair with its producer keeps the producer's inputs (which the pair reads) one node longer
          releaseBefore(index.get(n)! - (pooled && meta.pair ? 1 : 0));
          const part = pooled ? inPlace.get(n.outputs[0]) : undefined;
          const p = kernel.prepare(inputs, part ? partOf(part, outFor(n, inputs)) : outFor(n, inputs), nb);
          const out = 'done' in p ? p.done : p.call.result;
          if ('call' in p && !(pooled && pairUp(n, inputs, p.call, calls))) calls.push(p.call);
          results.push(record(n, out));
        }
        preparing = false;
        own(nodes[results.length - 1]);
        if (!results.length) {
          chainFreed.moveTo(pool);
          return single(nodes[0], headInputs);
        }
        if (calls.length) {
          const prog = new BigInt64Array(calls.length * 10);
          void prog.buffer; // off V8's heap, where the GC could move it while the worker thread reads it
          calls.forEach((c, i) => chainRecord(prog, i, symbol(c.fn)!, c.args, c.nb));
          keepParams.push(prog); // the library reads it by address (see NativeLibrary.runChain): held until the run ends
          const work = calls.reduce((a, c) => a + c.work, 0);
          if (rec) {
            rec.progs.push({ prog, n: calls.length, work, nodes: calls.map((c) => c.node) });
            rec.keep.push(calls);
          }
          await invoke(work, () => void lib.runChain(prog, calls.length, true),
            () => lib.runChain(prog, calls.length, false) as Promise<void>);
          checkError();
        }
        chainFreed.moveTo(pool);
        for (let j = 1; j < results.length; j++) pending.set(nodes[j], results[j]);
        return results[0];
      };
      const kernelFor = (n: Node): NodeKernel | undefined => {
        const ready = pending.get(n);
        if (ready) {
          pending.delete(n);
          return () => ready;
        }
        if (rec && isView(n) && !kernels.has(n)) {
          // a view outside chains (an attention mask's Unsqueeze on a feed) relabels dims only: the recorded calls read
          // its input's buffer, which the replay patches like any feed's
          return (inputs) => {
            const out = fallback(n, inputs);
            const x = inputs[0];
            if (!(x instanceof TensorData && out.length === 1 && out[0] instanceof TensorData && out[0].data === x.data)) rec.ok = false;
            return record(n, out);
          };
        }
        if (rec && !(chain && chains.has(n))) rec.ok = false;
        if (splits.has(n)) {
          return (inputs) => {
            releaseBefore(index.get(n)!);
            return record(n, splitPooled(n, inputs, allocFor) ?? fallback(n, inputs));
          };
        }
        if (!kernels.has(n)) return undefined;
        const c = chain ? chains.get(n) : undefined;
        return c ? (inputs) => runChain(c, inputs) : (inputs) => single(n, inputs);
      };
      // once the run has returned its outputs, every buffer it still holds is dead
      const end = (results?: Map<string, Value>) => {
        pending.clear();
        produced.clear();
        // a recording keeps the run's parameters and programs: its replays read them by address
        const params = keepParams.splice(0);
        for (const h of held.splice(0)) pool.give(h.buf);
        if (!rec) return;
        rec.keep.push(params);
        const r = results && !recorded?.replay.busy ? Replay.of(key!, rec, feeds!, results) : undefined;
        if (!r) {
          if (!rec.ok) unreplayable = key;
          return pool.moveTo(shared);
        }
        drop();
        recorded = { replay: r, pool };
      };
      return { kernelFor, end };
    },
    release: () => {
      for (const p of packed.splice(0)) lib.free(p);
      kernels.clear();
      drop();
      shared.clear();
    },
  };
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
/** One foreign call of a chain; \`node\`: the graph node it computes (for a pair, the consumer), for traced profiles. */
interface Call { fn: string; args: Ptr[]; nb: number; result: Value[]; work: number; node?: Node }

/** A layer's call on these inputs, or its outputs from the reference kernel where the inputs differ from the shapes
 * the code was generated for (any leading dim where the layer is batch-generic). */
type Prepared = { call: Call } | { done: Value[] };

function layerKernel(node: Node, l: LayerMeta, packed: Ptr,
  fallback: (node: Node, inputs: (Value | undefined)[]) => Value[]): LayerKernel {
  const b0 = l.outDims[0] || 1, work = l.work ?? Infinity;
  // the output dims and size at the last batch seen: a server runs one batch size after another, a benchmark one
  let at = { nb: -1, dims: l.outDims, words: 0 };
  const prepare = (inputs: (Value | undefined)[], alloc: (n: number) => Float32Array, nb = runBatch(l, inputs)): Prepared => {
    // other shapes run the reference kernel (its outputs are fresh arrays, so buffer reuse stays safe)
    if (nb === undefined) return { done: fallback(node, inputs).map((v) => (sharesInput(v, inputs) ? copy(v) : v)) };
    if (at.nb !== nb) {
      const d = outDimsAt(l, nb);
      at = { nb, dims: d, words: outWords(d, l.outDtype) };
    }
    const { dims } = at;
    const out = alloc(at.words);
    const result = [outValue(out, dims, l.outDtype)];
    if (!out.length) return { done: result };
    return { call: { fn: l.fn, args: layerArgs(l.args, inputs, packed, out), nb, result, work: work * (nb / b0) } };
  };
  return { prepare };
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

// Replaying a run. When every node of a run went into native chains (no layer ran in JavaScript), the run is its
// chain programs: the same calls on the same buffers for the same input shapes, with only the feeds' and the
// outputs' addresses changing from run to run. Such a run, recorded once, is replayed as one foreign call with
// those addresses patched in: the executor's walk over the graph and every layer's preparation (about 0.5 ms of the
// main thread per MobileNetV2 run, 6 % of it at one thread) are skipped, and the chains of a run become one thread
// handoff. This is what CUDA graphs are for the GPU runner.
import { TensorData, sameDims, type Value } from '../../ir/tensor.js';
import { addressOf } from './native.js';
import type { Node } from '../../ir/graph.js';

/** A feed's or a fresh array's byte range at recording time, for classifying the addresses in the programs. */
interface Range { lo: bigint; hi: bigint }
/** A program word holding an address inside feed \`k\` (or fresh array \`k\`), \`off\` bytes from its start. */
interface Slot { word: number; feed: boolean; k: number; off: bigint }
interface OutputView { dtype: TensorData['dtype']; dims: readonly number[]; k: number; byteOffset: number; length: number; ctor: TypedCtor }
type TypedCtor = new (buffer: ArrayBufferLike, byteOffset: number, length: number) => ArrayLike<number>;

/** What a run does, gathered while it runs (see NativeKernels.begin). */
export interface Recording {
  /** Whether every node ran inside a chain: a JavaScript layer or a lone native call makes the run unreplayable. */
  ok: boolean;
  /** The chain programs in the order they ran, with their work and the node each record computes. */
  progs: { prog: BigInt64Array; n: number; work: number; nodes: (Node | undefined)[] }[];
  /** The arrays the run allocated afresh (graph outputs: the caller keeps them), in allocation order. */
  fresh: Float32Array[];
  /** Whatever the programs address besides feeds and fresh arrays (buffers, parameters): held while the replay lives. */
  keep: unknown[];
}

export const newRecording = (): Recording => ({ ok: true, progs: [], fresh: [], keep: [] });

/** A key for the feeds' names, types and dims; undefined where a feed is not a plain tensor. */
export function shapeKey(feeds: Map<string, Value>): string | undefined {
  let key = '';
  for (const [name, v] of feeds) {
    if (!(v instanceof TensorData)) return undefined;
    key += `${name}:${v.dtype}[${v.dims.join(',')}];`;
  }
  return key;
}

const rangeOf = (a: ArrayBufferView): Range => {
  const lo = addressOf(a);
  return { lo, hi: lo + BigInt(a.byteLength) };
};

export class Replay {
  private prog: BigInt64Array;
  private n: number;
  readonly work: number;
  private slots: Slot[] = [];
  private feedNames: string[];
  private feedTypes: TensorData['dtype'][];
  private feedDims: (readonly number[])[];
  /** The last \`fetches\` seen covered (a caller passes the same array, or equal ones, run after run). */
  private covered: readonly string[] = [];
  /** The feeds' arrays of the last bind and their addresses: a caller that feeds the same arrays again (a benchmark,
   * a buffer reused per request) skips the koffi call per feed. Off V8's heap, an array's address never changes. */
  private lastFeeds: (ArrayBufferView | undefined)[] = [];
  private lastAddr: bigint[] = [];
  private freshLengths: number[];
  private outputs = new Map<string, OutputView>();
  /** What the program addresses besides feeds and fresh arrays (see Recording.keep): held, never read. */
  private keep: unknown[];
  busy = false;
  /** The node each record of the program computes (a traced profile's rows). */
  readonly nodes: (Node | undefined)[];

  private constructor(readonly key: string, rec: Recording, feeds: Map<string, Value>, results: Map<string, Value>) {
    this.n = rec.progs.reduce((a, p) => a + p.n, 0);
    this.work = rec.progs.reduce((a, p) => a + p.work, 0);
    // the programs of the run back to back: they ran in this order with nothing between them
    this.prog = new BigInt64Array(this.n * 10);
    void this.prog.buffer; // off V8's heap: the library reads it on a worker thread
    let at = 0;
    for (const p of rec.progs) {
      this.prog.set(p.prog.subarray(0, p.n * 10), at);
      at += p.n * 10;
    }
    this.nodes = rec.progs.flatMap((p) => p.nodes);
    this.feedNames = [...feeds.keys()];
    this.feedTypes = this.feedNames.map((k) => (feeds.get(k) as TensorData).dtype);
    this.feedDims = this.feedNames.map((k) => (feeds.get(k) as TensorData).dims);
    const feedRanges = this.feedNames.map((k) => rangeOf((feeds.get(k) as TensorData).data as ArrayBufferView));
    const freshRanges = rec.fresh.map(rangeOf);
    this.freshLengths = rec.fresh.map((f) => f.length);
    const find = (rs: Range[], a: bigint) => rs.findIndex((r) => a >= r.lo && a < r.hi);
    for (let r = 0; r < this.n; r++) {
      for (let w = r * 10 + 1; w < r * 10 + 9; w++) {
        const a = this.prog[w];
        if (!a) continue;
        const f = find(feedRanges, a);
        if (f >= 0) this.slots.push({ word: w, feed: true, k: f, off: a - feedRanges[f].lo });
        else {
          const k = find(freshRanges, a);
          if (k >= 0) this.slots.push({ word: w, feed: false, k, off: a - freshRanges[k].lo });
        }
      }
    }
    for (const [name, v] of results) {
      const data = v instanceof TensorData ? (v.data as ArrayBufferView) : undefined;
      const k = data ? rec.fresh.findIndex((f) => f.buffer === data.buffer) : -1;
      if (k < 0) continue; // not a fresh array of the run (a feed passed through, a constant): not replayable
      const t = v as TensorData;
      this.outputs.set(name, { dtype: t.dtype, dims: t.dims, k, byteOffset: data!.byteOffset - rec.fresh[k].byteOffset,
        length: (data as unknown as ArrayLike<number>).length, ctor: data!.constructor as TypedCtor });
    }
    this.keep = rec.keep;
  }

  /** The replay of a recorded run, or undefined where it cannot stand for the run (see Recording.ok). */
  static of(key: string, rec: Recording, feeds: Map<string, Value>, results: Map<string, Value>): Replay | undefined {
    if (!rec.ok || !rec.progs.length) return undefined;
    for (const v of feeds.values()) if (!(v instanceof TensorData) || !ArrayBuffer.isView(v.data)) return undefined;
    return new Replay(key, rec, feeds, results);
  }

  /** Whether every value in \`fetches\` is an output this replay makes. */
  covers(fetches: readonly string[]): boolean {
    return fetches.every((f) => this.outputs.has(f));
  }

  /** Whether this replay stands for a run on these feeds (the recorded names, types and dims: what \`key\` says, in
   * one pass without building the key) and fetches. */
  matches(feeds: Map<string, Value>, fetches: readonly string[]): boolean {
    const names = this.feedNames;
    if (feeds.size !== names.length) return false;
    for (let i = 0; i < names.length; i++) {
      const v = feeds.get(names[i]);
      if (!(v instanceof TensorData) || v.dtype !== this.feedTypes[i] || !sameDims(v.dims, this.feedDims[i]) || !ArrayBuffer.isView(v.data)) return false;
    }
    if (fetches === this.covered) return true;
    if (!this.covers(fetches)) return false;
    this.covered = fetches;
    return true;
  }

  /** Points the program at these feeds and at fresh output arrays; returns the outputs it will fill. */
  bind(feeds: Map<string, Value>, fetches: readonly string[]): Map<string, Value> {
    const names = this.feedNames, feedAddr = this.lastAddr, last = this.lastFeeds;
    for (let i = 0; i < names.length; i++) {
      const d = (feeds.get(names[i]) as TensorData).data as ArrayBufferView;
      if (d === last[i]) continue;
      void d.buffer; // off V8's heap, where the GC could move it while the library reads it
      feedAddr[i] = addressOf(d);
      last[i] = d;
    }
    const lengths = this.freshLengths, fresh: Float32Array[] = new Array(lengths.length), freshAddr: bigint[] = new Array(lengths.length);
    for (let i = 0; i < lengths.length; i++) {
      const f = (fresh[i] = new Float32Array(lengths[i]));
      void f.buffer; // a small one starts on V8's heap too
      freshAddr[i] = addressOf(f);
    }
    const prog = this.prog, slots = this.slots;
    for (let i = 0; i < slots.length; i++) {
      const s = slots[i];
      prog[s.word] = (s.feed ? feedAddr[s.k] : freshAddr[s.k]) + s.off;
    }
    const out = new Map<string, Value>();
    for (const name of fetches) {
      const v = this.outputs.get(name)!, b = fresh[v.k];
      const data = v.ctor === Float32Array && v.byteOffset === 0 && v.length === b.length ? b : new v.ctor(b.buffer, b.byteOffset + v.byteOffset, v.length);
      out.set(name, new TensorData(v.dtype, v.dims, data as TensorData['data']));
    }
    return out;
  }

  get program(): { prog: BigInt64Array; n: number } {
    return { prog: this.prog, n: this.n };
  }
}

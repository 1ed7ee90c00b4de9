// Request decoding off the server's thread. A 60 KB JSON infer body costs ~0.1 ms through json-infer.ts's fast path
// (~0.25 ms of JSON.parse plus the typed-array conversion without it; 1–2 ms under load); on the event loop that caps
// the whole server at one core's worth of parsing. On hosts with cores to spare, decoding moves here. The HTTP route hands the raw body (moved, not copied) to the least busy decode thread, which
// answers with the input tensors ready for the batcher (moved back) or the same 4xx error the inline path gives.
// Large JSON responses are serialized there too. Small bodies stay on the event loop: a thread hop costs more.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { ServeError } from './batcher.js';
import type { ModelConfig } from './config.js';
import { decodeHttp, encodeHttp, fromWire, fromWireError, jsonElements, movable, toWire, type EncodedResponse, type HttpBody, type HttpDecoded, type ResponseHead, type ResponseSpec, type WireDecoded, type WireError } from './decode.js';
import type { DecodeJob } from './decode-worker.js';
import type { InferOutput } from './infer.js';
import { workerSource } from './instances.js';

export interface DecodeOptions {
  /** Decode threads; 0 decodes everything on the server's thread. Default: the cores, at most 4. */
  threads?: number;
  /** Bodies with less JSON than this (bytes; the binary header only, for binary-extension bodies) are decoded on the
   *  server's thread (default 8 KiB): parsing them costs less than the thread hop. Compressed bodies always move. */
  minBytes?: number;
  /** JSON responses with at least this many values are serialized on a decode thread (default 2048). */
  minEncodeValues?: number;
}

type Reply = { id: number; decoded?: WireDecoded; encoded?: EncodedResponse; error?: WireError; ready?: true };

interface Slot {
  worker: Worker;
  waiting: Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>;
  configs: Set<number>;
  ready: boolean;
  dead: boolean;
}

export class DecodePool {
  private slots: Slot[] = [];
  private next = 0;
  private jobs = 0;
  private closing = false;
  private cfgIds = new WeakMap<ModelConfig, number>();
  private cfgCount = 0;
  /** Bodies decoded and responses encoded on a decode thread and inline, since start. */
  readonly counts = { decodedOffThread: 0, decodedInline: 0, encodedOffThread: 0, encodedInline: 0 };
  private readonly minBytes: number;
  private readonly minEncodeValues: number;
  private readonly threadCount: number;
  private started: Promise<void> | undefined;

  constructor(opts: DecodeOptions = {}, private log?: (msg: string, fields: Record<string, unknown>) => void) {
    this.minBytes = opts.minBytes ?? 8 * 1024;
    this.minEncodeValues = opts.minEncodeValues ?? 2048;
    // on two cores or fewer the instance workers already take every core: decode inline there (measured: decode
    // threads lowered JSON throughput in two of three load runs on a 2-core machine, bench/RESULTS.md)
    const cores = availableParallelism();
    this.threadCount = opts.threads ?? (cores <= 2 ? 0 : Math.min(4, cores - 1));
  }

  /** Start the threads; until one is ready, bodies are decoded inline. Resolves when every thread has started (or
   *  failed to: its share is then decoded inline too). */
  start(): Promise<void> {
    this.started ??= Promise.all(Array.from({ length: this.threadCount }, () => this.spawn())).then(() => {});
    return this.started;
  }

  /** Threads taking work now. */
  get threads(): number {
    return this.slots.filter((s) => s.ready && !s.dead).length;
  }

  async decode(cfg: ModelConfig, b: HttpBody): Promise<HttpDecoded> {
    const slot = this.parseCost(b) >= this.minBytes ? this.pick() : undefined;
    if (!slot) {
      this.counts.decodedInline++;
      return decodeHttp(cfg, b);
    }
    this.counts.decodedOffThread++;
    let cfgId = this.cfgIds.get(cfg);
    if (cfgId === undefined) this.cfgIds.set(cfg, (cfgId = this.cfgCount++));
    const body = movable([b.body]).length ? b.body : new Uint8Array(b.body); // a slice of a shared pool must not be moved
    const job: DecodeJob = { id: 0, kind: 'decode', cfgId, cfg: slot.configs.has(cfgId) ? undefined : cfg, body: { ...b, body } };
    slot.configs.add(cfgId);
    const r = await this.send(slot, job, [body.buffer as ArrayBuffer]);
    const d = r.decoded!;
    const feeds: HttpDecoded['feeds'] = {};
    for (const [k, t] of Object.entries(d.feeds)) feeds[k] = fromWire(t);
    return { ...d, feeds };
  }

  async encode(head: ResponseHead, outputs: InferOutput[], spec: ResponseSpec): Promise<EncodedResponse> {
    const values = jsonElements(outputs, spec);
    const slot = values > 0 && values >= this.minEncodeValues ? this.pick() : undefined;
    if (!slot) {
      this.counts.encodedInline++;
      return encodeHttp(head, outputs, spec);
    }
    this.counts.encodedOffThread++;
    // copied, not moved: an output may be a view of an engine's buffer
    const job: DecodeJob = { id: 0, kind: 'encode', head, spec, outputs: outputs.map((o) => ({ name: o.name, datatype: o.datatype, shape: o.shape, tensor: toWire(o.tensor) })) };
    return (await this.send(slot, job, [])).encoded!;
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  /** Bytes of JSON to parse; raw tensor bytes after a binary header cost one copy, compressed bodies inflate. */
  private parseCost(b: HttpBody): number {
    if (b.encoding && b.encoding !== 'identity') return Infinity;
    const n = Number(b.headerLength);
    return b.headerLength !== undefined && Number.isInteger(n) && n >= 0 ? Math.min(n, b.body.byteLength) : b.body.byteLength;
  }

  private pick(): Slot | undefined {
    let best: Slot | undefined;
    for (let i = 0; i < this.slots.length; i++) {
      const s = this.slots[(this.next + i) % this.slots.length];
      if (s.ready && !s.dead && (!best || s.waiting.size < best.waiting.size)) best = s;
    }
    this.next++;
    return best;
  }

  private send(slot: Slot, job: DecodeJob, transfer: ArrayBuffer[]): Promise<Reply> {
    const id = this.jobs++;
    return new Promise((resolve, reject) => {
      slot.waiting.set(id, { resolve, reject });
      slot.worker.postMessage({ ...job, id }, transfer);
    });
  }

  private spawn(): Promise<void> {
    const [src, how] = workerSource('decode-worker');
    const slot: Slot = { worker: new Worker(src, how), waiting: new Map(), configs: new Set(), ready: false, dead: false };
    this.slots.push(slot);
    const fail = (e: Error) => {
      slot.dead = true;
      for (const p of slot.waiting.values()) p.reject(new ServeError(`a request decode thread failed: ${e.message}`, 500, 'OTHER'));
      slot.waiting.clear();
      if (!this.closing) this.log?.('decode thread stopped', { error: e.message });
    };
    return new Promise<void>((resolve) => {
      slot.worker.on('error', (e: Error) => {
        fail(e);
        resolve();
      });
      slot.worker.on('exit', (code) => {
        if (!slot.dead) fail(new Error(`exited with code ${code}`));
        resolve();
      });
      slot.worker.on('message', (m: Reply) => {
        if (m.ready) {
          slot.ready = true;
          return resolve();
        }
        const p = slot.waiting.get(m.id);
        if (!p) return;
        slot.waiting.delete(m.id);
        if (m.error) p.reject(fromWireError(m.error));
        else p.resolve(m);
      });
    });
  }
}

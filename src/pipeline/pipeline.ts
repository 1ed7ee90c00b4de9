// The pipeline: items from a source go to an executor, come back preprocessed and are gathered into batches in
// source order. Prefetching keeps up to `prefetch` batches in flight ahead of the consumer; nothing more is
// dispatched until the consumer asks for the next batch (back-pressure). A failed item is reported in its batch's
// `errors` and left out of its tensor; the rest of the batch goes on.
import { InputError } from '../ir/errors.js';
import { Tensor } from '../runtime/tensor.js';
import type { GpuTensor } from '../runtime/gpu-tensor.js';
import type { ItemResult, PipelineItem } from './decode.js';
import { inlineExecutor, WorkerPool, type Executor } from './pool.js';
import { sourceItems, type PipelineSource } from './source.js';
import { loadPipelineSpec, resolveSpec, type PipelineSpec, type ResolvedSpec } from './spec.js';
import type { GpuDecodeInfo, GpuExecutor } from './gpu.js';

export interface PipelineOptions {
  /** Worker threads; 0 runs items in the calling thread (default: one per core, at most 4). */
  workers?: number;
  /** Batches kept in flight ahead of the consumer (default 2; 0: none, each batch starts when asked for). */
  prefetch?: number;
  /** 'skip' (default): a failed item is reported in `errors`; 'throw': the batch rejects with the item's error. */
  onError?: 'skip' | 'throw';
  /**
   * 'cpu' (default) or 'cuda' / 'cuda:N': nvJPEG decode and one fused kernel per batch, which arrives as
   * `batch.gpu` (a GpuTensor an engine reads in place; dispose it when done) instead of `batch.tensor`.
   */
  device?: string;
}

export interface ItemError {
  /** The item's file name (or 'item N' for buffers). */
  name: string;
  /** Index of the item in the source. */
  index: number;
  message: string;
}

export interface PipelineBatch {
  /** The items that succeeded, stacked as the spec's layout and dtype. Absent when every item failed (or on cuda). */
  tensor?: Tensor;
  /** The same on the GPU, for device 'cuda': the caller owns it (dispose() returns its memory to Kiln's pool). */
  gpu?: GpuTensor;
  names: string[];
  indices: number[];
  errors: ItemError[];
}

export interface PipelineStats {
  /** Items handed to the executor so far. */
  dispatched: number;
  /** Items whose batch the consumer has received. */
  delivered: number;
  failed: number;
}

const TENSOR_TYPE = { float32: 'float32', float16: 'float16', uint8: 'uint8' } as const;

export class Pipeline {
  readonly stats: PipelineStats = { dispatched: 0, delivered: 0, failed: 0 };

  private constructor(readonly spec: ResolvedSpec, private executor: Executor | GpuExecutor, private opts: Required<Omit<PipelineOptions, 'workers' | 'device'>>) {}

  /** A pipeline from a spec object, or the path of a JSON spec. */
  static async create(spec: PipelineSpec | string, opts: PipelineOptions = {}): Promise<Pipeline> {
    const resolved = typeof spec === 'string' ? loadPipelineSpec(spec) : resolveSpec(spec);
    const prefetch = opts.prefetch ?? 2;
    if (!Number.isSafeInteger(prefetch) || prefetch < 0) throw new InputError(`pipeline prefetch must be a non-negative integer, got ${prefetch}.`);
    const exec = opts.device && opts.device !== 'cpu' ? await gpuExecutor(resolved, opts.device)
      : opts.workers === 0 ? inlineExecutor(resolved) : await WorkerPool.create(resolved, opts.workers);
    return new Pipeline(resolved, exec, { prefetch, onError: opts.onError ?? 'skip' });
  }

  /** Worker threads, when the pipeline has them (for monitoring and tests). */
  get workers(): WorkerPool | undefined {
    return this.executor instanceof WorkerPool ? this.executor : undefined;
  }

  /** For device 'cuda': the GPU and how JPEGs decode there (nvJPEG's hardware engine, nvJPEG, or the CPU and why). */
  get gpuInfo(): GpuDecodeInfo | undefined {
    return 'runBatch' in this.executor ? this.executor.info : undefined;
  }

  /** Batches of `spec.batch.size` items from the source (default: the spec's own source). */
  async *batches(source?: PipelineSource): AsyncGenerator<PipelineBatch> {
    const src = source ?? this.spec.source;
    if (src === undefined) throw new InputError('the pipeline has no source.', { hint: 'Pass one (a folder, glob, files or buffers), or give the spec a "source".' });
    const items = sourceItems(src);
    const size = this.spec.batch.size;
    const inFlight: { promise: Promise<PipelineBatch>; count: number }[] = [];
    let next = 0;
    let exhausted = false;
    const fill = async (limit: number) => {
      while (!exhausted && inFlight.length < limit) {
        const group: PipelineItem[] = [];
        while (group.length < size) {
          const r = await items.next();
          if (r.done) { exhausted = true; break; }
          group.push(r.value);
        }
        if (!group.length || (exhausted && group.length < size && this.spec.batch.dropLast)) break;
        const promise = this.runBatch(group, next);
        // a rejection is the consumer's to see when it reaches this batch, not an unhandled one before that
        promise.catch(() => {});
        inFlight.push({ promise, count: group.length });
        next += group.length;
      }
    };
    while (true) {
      if (!inFlight.length) await fill(1);
      const head = inFlight.shift();
      if (!head) return;
      // keep `prefetch` batches going while the consumer works on this one
      await fill(this.opts.prefetch);
      const b = await head.promise;
      this.stats.delivered += head.count;
      yield b;
    }
  }

  /** All given items as one batch (whatever spec.batch.size says): the request path of a served pipeline. */
  async process(inputs: readonly (Uint8Array | PipelineItem | string)[], firstIndex = 0): Promise<PipelineBatch> {
    const items: PipelineItem[] = [];
    for await (const it of sourceItems(inputs)) items.push(it);
    const b = await this.runBatch(items, firstIndex);
    this.stats.delivered += items.length;
    return b;
  }

  private async runBatch(items: PipelineItem[], first: number): Promise<PipelineBatch> {
    this.stats.dispatched += items.length;
    if ('runBatch' in this.executor) return this.runGpuBatch(this.executor, items, first);
    const exec = this.executor;
    const settled = await Promise.allSettled(items.map((it, k) => exec.run(it, first + k)));
    const ok: { r: ItemResult; k: number }[] = [];
    const errors: ItemError[] = [];
    settled.forEach((s, k) => {
      if (s.status === 'fulfilled') ok.push({ r: s.value, k });
      else errors.push({ name: items[k].name, index: first + k, message: (s.reason as Error).message });
    });
    this.stats.failed += errors.length;
    if (errors.length && this.opts.onError === 'throw') throw new InputError(errors[0].message);
    return { tensor: ok.length ? this.stack(ok.map((o) => o.r)) : undefined, names: ok.map((o) => items[o.k].name), indices: ok.map((o) => first + o.k), errors };
  }

  private async runGpuBatch(exec: GpuExecutor, items: PipelineItem[], first: number): Promise<PipelineBatch> {
    const r = await exec.runBatch(items, first);
    const errors = r.errors.map((e) => ({ name: items[e.k].name, index: first + e.k, message: e.message }));
    this.stats.failed += errors.length;
    if (errors.length && this.opts.onError === 'throw') {
      await r.tensor?.dispose();
      throw new InputError(errors[0].message);
    }
    return { gpu: r.tensor, names: r.ok.map((k) => items[k].name), indices: r.ok.map((k) => first + k), errors };
  }

  private stack(rs: ItemResult[]): Tensor {
    const type = TENSOR_TYPE[this.spec.dtype];
    const unbatched = this.spec.layout === 'CHW' || this.spec.layout === 'HWC';
    if (unbatched && rs.length === 1) return new Tensor(type, rs[0].data as never, rs[0].dims);
    const dims = rs[0].dims;
    const bad = rs.find((r) => r.dims.join() !== dims.join());
    if (bad) throw new InputError(`pipeline batch: items came out as [${dims.join(', ')}] and [${bad.dims.join(', ')}]; a batch needs one shape.`, { hint: 'Add a crop or an exact resize.' });
    const n = rs[0].data.length;
    const out = new (rs[0].data.constructor as new (n: number) => Float32Array | Uint16Array | Uint8Array)(n * rs.length);
    rs.forEach((r, i) => out.set(r.data, i * n));
    return new Tensor(type, out as never, [rs.length, ...dims]);
  }

  async close(): Promise<void> {
    await this.executor.close();
  }
}

async function gpuExecutor(spec: ResolvedSpec, device: string): Promise<GpuExecutor> {
  const m = /^cuda(?::(\d+))?$/.exec(device);
  if (!m) throw new InputError(`pipeline device '${device}' is not one of cpu, cuda, cuda:N.`);
  const { GpuExecutor } = await import('./gpu.js'); // loads CUDA only when asked for
  return GpuExecutor.create(spec, Number(m[1] ?? 0));
}

/** The batch's tensor on the host (copied from the GPU, and the GPU copy freed, for device 'cuda'). */
export async function hostTensor(b: PipelineBatch): Promise<Tensor | undefined> {
  if (!b.gpu) return b.tensor;
  try {
    return await b.gpu.toTensor();
  } finally {
    await b.gpu.dispose();
  }
}

/** Shorthand for Pipeline.create. */
export const createPipeline = (spec: PipelineSpec | string, opts?: PipelineOptions) => Pipeline.create(spec, opts);

/** Every image of a source through the pipeline, stacked into one tensor (e.g. calibration data); failures listed. */
export async function preprocessAll(spec: PipelineSpec | string, source: PipelineSource | undefined, opts: PipelineOptions = {}): Promise<{ tensor: Tensor; names: string[]; errors: ItemError[] }> {
  const p = await Pipeline.create(spec, opts);
  try {
    if (p.spec.layout === 'CHW' || p.spec.layout === 'HWC') throw new InputError(`stacking images needs layout NCHW or NHWC, not ${p.spec.layout}.`);
    const parts: Tensor[] = [];
    const names: string[] = [], errors: ItemError[] = [];
    for await (const b of p.batches(source)) {
      const t = await hostTensor(b);
      if (t) parts.push(t);
      names.push(...b.names);
      errors.push(...b.errors);
    }
    if (!parts.length) throw new InputError(`no image could be read through the pipeline${errors.length ? `; the first error: ${errors[0].message}` : ''}.`);
    const row = parts[0].size / parts[0].dims[0];
    const out = new (parts[0].data.constructor as new (n: number) => Float32Array)(row * names.length);
    let off = 0;
    for (const t of parts) { out.set(t.data as Float32Array, off); off += t.size; }
    return { tensor: new Tensor(parts[0].type, out as never, [names.length, ...parts[0].dims.slice(1)]), names, errors };
  } finally {
    await p.close();
  }
}

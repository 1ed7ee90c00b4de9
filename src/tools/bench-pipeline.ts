// `kiln bench --pipeline`: end-to-end images/s from encoded images — decode and preprocess through a pipeline, then
// (optionally) the engine. The pipeline prefetches while the engine computes, so decode overlaps inference; with
// prefetch 0 the two take turns, which is the figure to compare an overlapped run with.
import type { Engine } from '../runtime/engine.js';
import { InputError } from '../ir/errors.js';
import type { Pipeline, ItemError } from '../pipeline/pipeline.js';
import { sourceItems, type PipelineSource } from '../pipeline/source.js';
import { stats, type Stats } from './bench.js';

export interface PipelineBenchOptions {
  /** Engine to run every batch through; without one, the pipeline alone is timed. */
  engine?: Engine;
  /** The engine input fed with the batch (default: its only input, or the first). */
  inputName?: string;
  /** Passes over the source (default 1). */
  epochs?: number;
  /** Run one batch through everything before timing (default true). */
  warmUp?: boolean;
  onProgress?: (images: number) => void;
}

export interface PipelineBenchResult {
  images: number;
  failed: number;
  batches: number;
  wallS: number;
  imagesPerS: number;
  /** Time the consumer spent waiting for the pipeline's next batch. */
  pipelineWaitS: number;
  /** Per-batch inference times (absent without an engine). */
  inference?: Stats;
  inferenceS: number;
  /** The first few item errors. */
  errors: ItemError[];
}

function engineInput(engine: Engine, name?: string): string {
  if (name !== undefined) {
    if (!engine.inputNames.includes(name)) throw new InputError(`the engine has no input '${name}'; inputs: ${engine.inputNames.join(', ')}.`);
    return name;
  }
  return engine.inputNames[0];
}

export async function benchPipeline(pipeline: Pipeline, source: PipelineSource | undefined, o: PipelineBenchOptions = {}): Promise<PipelineBenchResult> {
  const epochs = o.epochs ?? 1;
  if (!Number.isSafeInteger(epochs) || epochs < 1) throw new InputError(`bench: epochs must be a positive integer, got ${epochs}.`);
  const ctx = o.engine?.createContext();
  const input = o.engine ? engineInput(o.engine, o.inputName) : '';
  if (o.warmUp !== false) {
    const first = [];
    for await (const it of sourceItems(source ?? pipeline.spec.source ?? [])) if (first.push(it) >= pipeline.spec.batch.size) break;
    const b = await pipeline.process(first);
    if (ctx && b.tensor) await ctx.run({ [input]: b.tensor });
  }
  let images = 0, failed = 0, batches = 0, waitMs = 0;
  const infer: number[] = [];
  const errors: ItemError[] = [];
  const t0 = performance.now();
  for (let e = 0; e < epochs; e++) {
    const it = pipeline.batches(source);
    while (true) {
      const w0 = performance.now();
      const r = await it.next();
      waitMs += performance.now() - w0;
      if (r.done) break;
      const b = r.value;
      batches++;
      failed += b.errors.length;
      if (errors.length < 5) errors.push(...b.errors.slice(0, 5 - errors.length));
      if (!b.tensor) continue;
      if (ctx) {
        const i0 = performance.now();
        await ctx.run({ [input]: b.tensor });
        infer.push(performance.now() - i0);
      }
      images += b.tensor.dims[0];
      o.onProgress?.(images);
    }
  }
  const wallMs = performance.now() - t0;
  return {
    images, failed, batches, wallS: wallMs / 1000, imagesPerS: images / (wallMs / 1000), pipelineWaitS: waitMs / 1000,
    ...(infer.length ? { inference: stats(infer) } : {}), inferenceS: infer.reduce((a, b) => a + b, 0) / 1000, errors,
  };
}

export function formatPipelineBench(r: PipelineBenchResult, label: string): string {
  const lines = [
    `=== Pipeline (${label}) ===`,
    `Images: ${r.images} in ${r.batches} batches (${r.failed} failed), ${r.wallS.toFixed(3)} s`,
    `Throughput: ${r.imagesPerS.toFixed(2)} images/s`,
    `Waiting for the pipeline: ${r.pipelineWaitS.toFixed(3)} s`,
  ];
  if (r.inference) {
    const s = r.inference;
    lines.push(`Inference: ${r.inferenceS.toFixed(3)} s total; per batch min = ${s.min.toFixed(2)} ms, mean = ${s.mean.toFixed(2)} ms, median = ${s.median.toFixed(2)} ms, max = ${s.max.toFixed(2)} ms`);
  }
  for (const e of r.errors) lines.push(`failed: ${e.message.split('\n')[0]}`);
  return lines.join('\n');
}

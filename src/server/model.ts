// What the server can run besides ONNX/plan engines, and the tensors that flow between models.
//
// A ServedModel is the small contract a non-ONNX model implements to be served: an image pipeline, a tokenizer, any
// async function of named tensors. The server checks requests against `inputs`/`outputs` (Triton config style:
// data_type TYPE_*, dims without the batch dim when the model's config has max_batch_size > 0), queues them on the
// model's own dynamic batcher and calls `infer` with the concatenated batch. Such a model can stand alone or be any
// step of an ensemble, e.g. the first step taking raw image BYTES and producing the classifier's FP32 input.
//
// To serve one from a model repository, register a factory under a backend name and put that name in the model's
// config (`backend: "image_pipeline"`); the folder then needs a config and a numeric version folder (its contents
// are the factory's business), e.g.
//
//   registerModelBackend('image_pipeline', ({ config, versionDir }) => new ImagePipelineModel(config, versionDir));
//
// BYTES (TYPE_STRING) tensors reach `infer` as BytesTensor: one Uint8Array per element, so image files pass through
// untouched. Numeric tensors are Kiln Tensors.
import { Tensor } from '../index.js';
import type { ModelConfig, TensorConfig } from './config.js';

/** A BYTES tensor: each element an arbitrary byte string (KServe BYTES, Triton TYPE_STRING). */
export class BytesTensor {
  readonly type = 'bytes' as const;
  constructor(readonly data: Uint8Array[], readonly dims: number[]) {}
  get size(): number {
    return this.data.length;
  }
  static fromStrings(values: string[], dims: number[]): BytesTensor {
    const enc = new TextEncoder();
    return new BytesTensor(values.map((v) => enc.encode(v)), dims);
  }
  strings(): string[] {
    const dec = new TextDecoder();
    return this.data.map((b) => dec.decode(b));
  }
}

export type ServeTensor = Tensor | BytesTensor;

export interface ServedModel {
  readonly name: string;
  /** Triton-style tensor metadata; dims exclude the batch dim when the model's config has max_batch_size > 0. */
  readonly inputs: TensorConfig[];
  readonly outputs: TensorConfig[];
  /** Run one (possibly batched) request. `outputs` lists the outputs wanted; returning more is fine. */
  infer(feeds: Record<string, ServeTensor>, outputs: string[]): Promise<Record<string, ServeTensor>>;
  /** Free resources when the model is unloaded. */
  close?(): Promise<void> | void;
}

export interface ModelFactoryContext {
  name: string;
  /** The model folder and the chosen version's folder. */
  dir: string;
  versionDir: string;
  version: number;
  config: ModelConfig;
  /** Instance index (the factory is called once per instance of the model's instance groups). */
  instance: number;
  /** The GPU this instance was placed on (KIND_GPU groups); absent on the CPU. */
  deviceId?: number;
}

export type ModelFactory = (ctx: ModelFactoryContext) => ServedModel | Promise<ServedModel>;

const BACKENDS = new Map<string, ModelFactory>();

/** Make `backend: "<name>"` in a model's config load through `factory`. */
export function registerModelBackend(name: string, factory: ModelFactory): void {
  BACKENDS.set(name, factory);
}

export function modelBackend(name: string): ModelFactory | undefined {
  return BACKENDS.get(name);
}

// Image pipelines (src/pipeline/served.ts): raw image BYTES in, the preprocessed batch out; loaded on first use.
registerModelBackend('kiln_pipeline', async (ctx) => (await import('../pipeline/served.js')).servedPipeline(ctx));

export function isBytes(t: unknown): t is BytesTensor {
  return t instanceof BytesTensor;
}

/** Engines see BYTES as ONNX string tensors (UTF-8); the server sees string outputs as BYTES. */
export function toEngineFeeds(feeds: Record<string, ServeTensor>): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(feeds)) out[k] = isBytes(t) ? new Tensor('string', t.strings(), t.dims) : t;
  return out;
}

export function fromEngineOutput(t: Tensor): ServeTensor {
  return t.type === 'string' ? BytesTensor.fromStrings(t.data as string[], [...t.dims]) : t;
}

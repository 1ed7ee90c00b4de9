// A pipeline as a model: BYTES in (one encoded image per element), a preprocessed tensor out. This is the shape a
// `kiln serve` ensemble step needs to run the pipeline before an engine on KServe v2 BYTES inputs.
import { InputError } from '../ir/errors.js';
import type { Tensor, TensorType } from '../runtime/tensor.js';
import { hostTensor, Pipeline, type PipelineOptions } from './pipeline.js';
import { outputShape, type PipelineSpec } from './spec.js';

export interface PipelineTensorInfo {
  name: string;
  /** KServe v2 datatype: BYTES for the input; FP32, FP16 or UINT8 for the output. */
  datatype: string;
  /** Kiln tensor type ('string' stands for BYTES). */
  type: TensorType;
  /** -1 for the batch dimension and for sizes that vary per image. */
  shape: number[];
  /** Triton config spelling (TYPE_STRING, TYPE_FP32, ...) and dims without the batch dimension, as served models list them. */
  data_type: string;
  dims: number[];
}

export interface PipelineModel {
  readonly name: string;
  readonly inputs: PipelineTensorInfo[];
  readonly outputs: PipelineTensorInfo[];
  readonly pipeline: Pipeline;
  /**
   * `{ [input]: encoded images }` → `{ [output]: batch tensor }`, one row per image in order; a bad image fails the
   * request. The images come as an array of bytes or as a BYTES tensor (`{ data: Uint8Array[] }`, as the server has).
   */
  infer(inputs: Record<string, readonly Uint8Array[] | { data: readonly Uint8Array[] }>, outputs?: string[]): Promise<Record<string, Tensor>>;
  close(): Promise<void>;
}

export interface PipelineModelOptions extends Omit<PipelineOptions, 'onError' | 'prefetch'> {
  name?: string;
  inputName?: string;
  outputName?: string;
}

const KSERVE = { float32: 'FP32', float16: 'FP16', uint8: 'UINT8' } as const;

const info = (name: string, datatype: string, type: TensorType, shape: number[]): PipelineTensorInfo =>
  ({ name, datatype, type, shape, data_type: datatype === 'BYTES' ? 'TYPE_STRING' : `TYPE_${datatype}`, dims: shape.slice(1) });

export async function pipelineModel(spec: PipelineSpec | string, opts: PipelineModelOptions = {}): Promise<PipelineModel> {
  const pipeline = await Pipeline.create(spec, { workers: opts.workers, device: opts.device, prefetch: 0, onError: 'throw' });
  const s = pipeline.spec;
  if (s.layout === 'CHW' || s.layout === 'HWC') {
    await pipeline.close();
    throw new InputError(`a pipeline model batches its inputs, so its layout must be NCHW or NHWC, not ${s.layout}.`);
  }
  const input = opts.inputName ?? 'INPUT';
  const output = opts.outputName ?? 'OUTPUT';
  const name = opts.name ?? 'pipeline';
  return {
    name,
    inputs: [info(input, 'BYTES', 'string', [-1, 1])],
    outputs: [info(output, KSERVE[s.dtype], s.dtype, outputShape(s, -1))],
    pipeline,
    async infer(feeds) {
      const given = feeds[input];
      const images = given && !Array.isArray(given) && 'data' in given ? given.data : given;
      if (!Array.isArray(images) || !images.every((b) => b instanceof Uint8Array)) {
        throw new InputError(`pipeline model '${name}': input '${input}' must be an array of encoded images (Uint8Array), found ${images === undefined ? 'nothing' : typeof images}.`,
          { hint: `Inputs: ${input} (BYTES).` });
      }
      if (!images.length) throw new InputError(`pipeline model '${name}': input '${input}' holds no images.`);
      const b = await pipeline.process(images);
      return { [output]: (await hostTensor(b))! };
    },
    close: () => pipeline.close(),
  };
}

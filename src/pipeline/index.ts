// Data pipelines: image decode, resize, crop, flip, normalize, layout, dtype and batching (CPU and CUDA executors).
export { Pipeline, createPipeline, preprocessAll, hostTensor, type PipelineOptions, type PipelineBatch, type ItemError, type PipelineStats } from './pipeline.js';
export { resolveSpec, loadPipelineSpec, outputShape, fixedSize, type PipelineSpec, type ResolvedSpec } from './spec.js';
export { pipelineModel, type PipelineModel, type PipelineModelOptions, type PipelineTensorInfo } from './model.js';
export { listFiles, sourceItems, type PipelineSource } from './source.js';
export type { PipelineItem } from './decode.js';
export type { GpuDecodeInfo } from './gpu.js';

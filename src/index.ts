// Kiln's public API. The familiar level mirrors onnxruntime's JavaScript API (InferenceSession, Tensor); the
// explicit level exposes the phases (loadOnnx, ...).
export { InferenceSession, type SessionOptions, type ValueMetadata } from './runtime/session.js';
export { Tensor, type TensorType, type OnnxValue, type DataTypeMap } from './runtime/tensor.js';
export { loadOnnx, parseOnnx } from './onnx/reader.js';
export { build, Plan, type BuildOptions } from './build/builder.js';
export { Engine, ExecutionContext, type EngineLoadOptions } from './runtime/engine.js';
export { GpuTensor } from './runtime/gpu-tensor.js';
export type { PlanHeader, LayerInfo, ShapeProfile } from './build/plan.js';
export { serializeOnnx, saveOnnx } from './onnx/writer.js';
export { KilnError, ModelError, InputError, ExecutionError } from './ir/errors.js';
export type { Model, Graph, Node, ValueType, ValueInfo } from './ir/graph.js';
export { GraphBuilder } from './ir/builder.js';
export { inspectModel, formatSummary } from './tools/inspect.js';
export { encodeNpy, decodeNpy, encodeNpz, decodeNpz } from './tools/npy.js';
export { allOps } from './ir/schema.js';
export { profiler, Profiler, type TraceSpan } from './runtime/profiler.js';
export { compareModel, formatCompareReport, compareTensors, type CompareOptions, type CompareReport } from './tools/compare.js';
export { createRunner, listRunners, type ModelRunner } from './tools/runners.js';
export { extractSubgraph, sanitizeModel, insertNode, pruneNodes } from './tools/surgeon.js';
export { debugPrecision, debugReduce } from './tools/debug.js';
export { Pipeline, createPipeline, pipelineModel, preprocessAll, loadPipelineSpec, type PipelineSpec, type PipelineBatch, type PipelineModel } from './pipeline/index.js';

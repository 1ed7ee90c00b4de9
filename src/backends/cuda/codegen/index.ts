// CUDA C generators for Kiln's layers: each renders one self-contained kernel (shapes baked in) for NVRTC.
export * from './types.js';
export { elementwise, epilogue, activationExpr, cast, where, type ElementwiseArgs, type EpilogueArgs } from './elementwise.js';
export { layerNorm, type LayerNormArgs } from './norm.js';
export { softmax, attentionSoftmax, type SoftmaxArgs, type AttentionSoftmaxArgs } from './softmax.js';
export { maxPool, maxPoolNHWC, averagePool, globalAveragePool, globalMaxPool, poolOutputDims, poolOutputShape, type PoolArgs } from './pool.js';
export { im2col, im2colLayout, im2colIndex, depthwiseConv2d, type ConvGeometry, type Im2colArgs, type Im2colLayout, type DepthwiseArgs } from './conv.js';
export { transpose, copyStrided, gather, widenCopy, type CopyStridedArgs, type GatherArgs } from './movement.js';

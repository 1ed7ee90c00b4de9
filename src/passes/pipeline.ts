// The optimizer: one readable list of named stages. Each stage is a rewrite run to a fixed point; the IR verifier
// can run between stages (tests do), and `dumpAfter` writes the graph after a named stage.
import type { Dim, Model } from '../ir/graph.js';
import { verifyGraph } from './verify.js';
import { GraphView } from './view.js';
import { inferShapes } from './infer.js';
import { foldConstants } from './fold.js';
import { eliminateCommonSubexpressions, eliminateDeadCode, removeNoOps } from './cleanup.js';
import {
  absorbActivation, absorbBias, absorbResidual, foldBatchNorm, fuseAttention, fuseElementwise, fuseLayerNorm, fuseRmsNorm,
  fuseSoftmax, mergeParallelMatMuls, nameActivations, toFusedLayers,
} from './fuse.js';
import { convsToNHWC, poolsToNHWC } from './layout.js';
import { boolMasksAsNumbers } from './masks.js';
import {
  foldFp8Layers, foldQuantizedLayers, foldQuantizedResiduals, mergeParallelQMatMuls, quantizeBeforeMaxPool, quantizeBeforeTranspose, quantizeInEpilogue, quantizeLayerNormOutputs, requantizeFp8Outputs,
  quantizeAttentionOutputs, quantizeTransposes, requantizeOutputs, splitHeadsInQMatMul,
} from './quantized.js';

export interface Stage {
  name: string;
  run: (v: GraphView) => number;
}

const reinfer = (inputShapes?: Map<string, Dim[]>) => (v: GraphView) => (inferShapes(v.graph, v.opsets, { inputShapes }), 0);

export function stages(inputShapes?: Map<string, Dim[]>, layout?: 'NCHW' | 'NHWC'): Stage[] {
  return [
    { name: 'infer shapes', run: reinfer(inputShapes) },
    // Q/DQ around Conv/MatMul/Gemm -> int8 layers, before constant folding turns the int8 weights back into floats
    { name: 'quantized layers', run: foldQuantizedLayers },
    { name: 'fp8 quantized layers', run: foldFp8Layers },
    // **** simplify: constants, shape arithmetic, no-ops
    // shapes are re-inferred each round: folding one shape computation can make the next one static
    { name: 'fold constants', run: (v) => (reinfer(inputShapes)(v), foldConstants(v)) },
    { name: 'remove no-ops', run: removeNoOps },
    { name: 'eliminate common subexpressions', run: eliminateCommonSubexpressions },
    { name: 'eliminate dead code', run: eliminateDeadCode },
    { name: 'infer shapes again', run: reinfer(inputShapes) },
    // **** pattern fusions on ONNX ops
    { name: 'fold batch norm', run: foldBatchNorm },
    { name: 'fuse layer norm', run: fuseLayerNorm },
    { name: 'fuse rms norm', run: fuseRmsNorm },
    { name: 'fuse softmax', run: fuseSoftmax },
    { name: 'fuse attention', run: fuseAttention },
    // after attention fusion, which takes a Where on scores as a bool mask itself
    { name: 'bool masks as numbers', run: boolMasksAsNumbers },
    // **** layers with epilogues
    { name: 'fused layers', run: toFusedLayers },
    { name: 'absorb bias', run: absorbBias },
    { name: 'merge parallel matmuls', run: mergeParallelMatMuls },
    { name: 'merge parallel quantized matmuls', run: mergeParallelQMatMuls },
    // GPU builds: residual Adds quantized on both inputs -> an 8-bit residual in the layer before (CPU: see quantized.ts)
    ...(layout === 'NHWC' ? [{ name: 'quantized residuals', run: foldQuantizedResiduals }] : []),
    { name: 'absorb residual', run: absorbResidual },
    { name: 'absorb activation', run: absorbActivation },
    { name: 'fuse elementwise', run: fuseElementwise },
    { name: 'absorb fused activation', run: absorbActivation },
    { name: 'requantize layer outputs', run: requantizeOutputs },
    { name: 'requantize fp8 layer outputs', run: requantizeFp8Outputs },
    { name: 'name activations', run: nameActivations },
    // **** layout: the backend's preferred convolution layout, transposes cancelled between layers
    ...(layout === 'NHWC' ? [
      { name: 'layout NHWC', run: convsToNHWC },
      { name: 'layout NHWC pools', run: poolsToNHWC },
      // one stage, so a quantization crosses a pool's layout Transpose and then the pool
      { name: 'quantize before max pools and transposes', run: (v: GraphView) => quantizeBeforeMaxPool(v) + quantizeBeforeTranspose(v) + eliminateDeadCode(v) },
      { name: 'eliminate common subexpressions (layout)', run: eliminateCommonSubexpressions },
      { name: 'cancel transposes', run: removeNoOps },
      // a quantization moved before a pool or a transpose may now be a layer's only reader
      { name: 'requantize layer outputs (layout)', run: (v: GraphView) => eliminateDeadCode(v) + requantizeOutputs(v) },
      { name: 'quantize in layer epilogues', run: quantizeInEpilogue },
      { name: 'quantize in layer norms', run: quantizeLayerNormOutputs },
      { name: 'split heads in quantized matmuls', run: splitHeadsInQMatMul },
      { name: 'quantize in transposes', run: quantizeTransposes },
      { name: 'quantize attention outputs', run: quantizeAttentionOutputs },
    ] : [
      // NCHW (the CPU): an 8-bit max pool moves a quarter of the bytes, and the layer before it then requantizes in its
      // epilogue (ResNet's stem: conv + Relu -> MaxPool -> QuantizeLinear becomes a uint8 conv, then a uint8 pool)
      { name: 'quantize before max pools', run: (v: GraphView) => quantizeBeforeMaxPool(v) + eliminateDeadCode(v) },
      { name: 'requantize layer outputs (pools)', run: (v: GraphView) => eliminateDeadCode(v) + requantizeOutputs(v) },
    ]),
    { name: 'eliminate dead code (final)', run: eliminateDeadCode },
    { name: 'infer shapes (final)', run: reinfer(inputShapes) },
  ];
}

export interface OptimizeOptions {
  /** Shapes to optimize for (a profile's opt shapes, or --shapes). */
  inputShapes?: Map<string, Dim[]>;
  /** Verify the graph after each stage (tests). */
  verify?: boolean;
  /** Called after each stage (for --dump-ir and reports). */
  onStage?: (name: string, model: Model, changes: number) => void | Promise<void>;
  /** Stop after this stage. */
  stopAfter?: string;
  /** The backend's preferred convolution layout (NHWC adds the layout stages). */
  layout?: 'NCHW' | 'NHWC';
}

export interface OptimizeReport {
  stages: { name: string; changes: number; nodes: number }[];
  nodesBefore: number;
  nodesAfter: number;
}

/** Optimize a model in place (clone it first to keep the original). */
export async function optimize(model: Model, opts: OptimizeOptions = {}): Promise<OptimizeReport> {
  const v = new GraphView(model.graph, model.opsets);
  if (!model.opsets.has('kiln')) model.opsets.set('kiln', 1);
  const report: OptimizeReport = { stages: [], nodesBefore: model.graph.nodes.length, nodesAfter: 0 };
  const list = stages(opts.inputShapes, opts.layout);
  if (opts.stopAfter && !list.some((s) => s.name === opts.stopAfter)) {
    throw new Error(`unknown optimizer stage '${opts.stopAfter}'. Stages: ${list.map((s) => s.name).join(', ')}`);
  }
  for (const s of list) {
    let changes = 0;
    for (let round = 0; round < 20; round++) {
      const c = s.run(v);
      changes += c;
      if (!c || s.name.startsWith('infer')) break;
    }
    if (opts.verify) verifyGraph(model.graph, model.opsets, `after stage '${s.name}'`);
    report.stages.push({ name: s.name, changes, nodes: model.graph.nodes.length });
    await opts.onStage?.(s.name, model, changes);
    if (s.name === opts.stopAfter) break;
  }
  report.nodesAfter = model.graph.nodes.length;
  return report;
}

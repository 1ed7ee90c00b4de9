// Generator calls covering every CUDA codegen generator over a few shapes and dtypes; shared by the codegen test
// and by on-device checks.
import '../../../src/ops/index.js';
import { EXPR_OPS } from '../../../src/ir/expr.js';
import { ACTIVATIONS } from '../../../src/ops/fused.js';
import {
  attentionSoftmax, averagePool, cast, copyStrided, depthwiseConv2d, elementwise, epilogue, gather, globalAveragePool,
  globalMaxPool, im2col, layerNorm, maxPool, softmax, transpose, where, type KernelSource,
} from '../../../src/backends/cuda/codegen/index.js';

export const f32 = 'float32' as const, f16 = 'float16' as const, bf16 = 'bfloat16' as const;

/** A full expression using every op of the expression language once. */
function everyOpExpr(): string {
  let e = '$0';
  for (const [op, arity] of Object.entries(EXPR_OPS)) {
    const rest = ['$1', '0.25', '-1', '2'].slice(0, arity - 1);
    e = `(${op} ${[e, ...rest].join(' ')})`;
  }
  return e;
}

export const CASES: Record<string, () => KernelSource> = {
  ewBiasRow: () => elementwise({ expr: '(mul (add $0 $1) 0.5)', inputs: [{ dtype: f32, dims: [4, 8, 16] }, { dtype: f32, dims: [16] }], out: { dtype: f32, dims: [4, 8, 16] } }),
  ewDenseF16: () => elementwise({ expr: '(sigmoid (max $0 $1))', inputs: [{ dtype: f16, dims: [1000, 3] }, { dtype: f16, dims: [1000, 3] }], out: { dtype: f16, dims: [1000, 3] } }),
  ewScalarBf16: () => elementwise({ expr: '(div $0 $1)', inputs: [{ dtype: bf16, dims: [64, 768] }, { dtype: bf16, dims: [] }], out: { dtype: bf16, dims: [64, 768] } }),
  ewOuterInt64: () => elementwise({ expr: '(add $0 $1)', inputs: [{ dtype: 'int64', dims: [3, 1] }, { dtype: 'int64', dims: [1, 5] }], out: { dtype: 'int64', dims: [3, 5] } }),
  ewEveryOp: () => elementwise({ expr: everyOpExpr(), inputs: [{ dtype: f32, dims: [2, 3, 5] }, { dtype: f32, dims: [3, 1] }], out: { dtype: f32, dims: [2, 3, 5] } }),
  ewInfLiteral: () => elementwise({ expr: '(min $0 Infinity)', inputs: [{ dtype: 'uint8', dims: [17] }], out: { dtype: f32, dims: [17] } }),
  ewHuge: () => elementwise({ expr: '(relu $0)', inputs: [{ dtype: f16, dims: [3, 1 << 30] }], out: { dtype: f16, dims: [3, 1 << 30] } }),
  ...Object.fromEntries(Object.keys(ACTIVATIONS).map((act) => [`epi${act}`, () => epilogue({
    y: { dtype: f32, dims: [2, 64, 7, 7] }, bias: { dtype: f32 }, activation: act, params: [0.1, 0.9], out: { dtype: f32 }, biasAxis: 1,
  })])),
  epiMatmulResidualF16: () => epilogue({ y: { dtype: f16, dims: [128, 3072] }, bias: { dtype: f16 }, residual: { dtype: f16, dims: [128, 3072] }, activation: 'Gelu', params: [], out: { dtype: f16 }, biasAxis: 'last' }),
  epiResidualOnly: () => epilogue({ y: { dtype: bf16, dims: [2, 8, 5, 5] }, residual: { dtype: bf16, dims: [2, 8, 5, 5] }, activation: 'Relu', params: [], out: { dtype: bf16 }, biasAxis: 1 }),
  castF32Bool: () => cast({ from: f32, to: 'bool', n: 1001 }),
  castI64F16: () => cast({ from: 'int64', to: f16, n: 4096 }),
  castBf16I32: () => cast({ from: bf16, to: 'int32', n: 77 }),
  castI8F32: () => cast({ from: 'int8', to: f32, n: 1 << 20 }),
  whereBcast: () => where({ cond: [1, 8], x: { dtype: 'uint8', dims: [4, 8] }, y: { dtype: 'uint8', dims: [] } }),
  whereF16: () => where({ cond: [64, 64], x: { dtype: f16, dims: [64, 64] }, y: { dtype: f16, dims: [64, 64] } }),
  im2col2d: () => im2col({ x: [2, 3, 32, 32], kernel: [7, 7], pads: [3, 3, 3, 3], strides: [2, 2], dtype: f32 }),
  im2col1dGroups: () => im2col({ x: [1, 8, 50], kernel: [3], pads: [1, 1], dilations: [2], group: 4, dtype: f16 }),
  im2col3d: () => im2col({ x: [1, 4, 6, 6, 6], kernel: [3, 3, 3], pads: [1, 1, 1, 1, 1, 1], dtype: bf16 }),
  dw3x3: () => depthwiseConv2d({ x: [1, 32, 112, 112], kernel: [3, 3], pads: [1, 1, 1, 1], dtype: f32, hasBias: true, activation: 'Clip', params: [0, 6] }),
  dw5x5s2F16: () => depthwiseConv2d({ x: [4, 96, 28, 28], kernel: [5, 5], pads: [2, 2, 2, 2], strides: [2, 2], dtype: f16, hasBias: false }),
  lnBert: () => layerNorm({ x: { dtype: f32, dims: [2, 128, 768] }, epsilon: 1e-12, scale: { dtype: f32, dims: [768] }, bias: { dtype: f32, dims: [768] }, rms: false }),
  lnStatsF16: () => layerNorm({ x: { dtype: f16, dims: [64, 100] }, epsilon: 1e-5, scale: { dtype: f16, dims: [100] }, rms: false, stats: true }),
  lnWideBlock: () => layerNorm({ x: { dtype: bf16, dims: [8, 4096] }, epsilon: 1e-5, scale: { dtype: bf16, dims: [4096] }, bias: { dtype: bf16, dims: [4096] }, rms: false }),
  lnStreamed: () => layerNorm({ x: { dtype: f32, dims: [4, 65536] }, epsilon: 1e-5, scale: { dtype: f32, dims: [65536] }, rms: false }),
  lnAxis1Bcast: () => layerNorm({ x: { dtype: f32, dims: [2, 4, 6, 6] }, axis: 1, epsilon: 1e-5, scale: { dtype: f32, dims: [4, 1, 1] }, bias: { dtype: f32, dims: [4, 1, 1] }, rms: false }),
  rms: () => layerNorm({ x: { dtype: f16, dims: [16, 2048] }, epsilon: 1e-6, scale: { dtype: f16, dims: [2048] }, rms: true }),
  rmsOdd: () => layerNorm({ x: { dtype: f32, dims: [3, 999] }, epsilon: 1e-6, scale: { dtype: f32, dims: [999] }, rms: true }),
  softmaxSmall: () => softmax({ dims: [8, 10], dtype: f32 }),
  softmaxF16: () => softmax({ dims: [12, 128, 128], dtype: f16 }),
  logSoftmax: () => softmax({ dims: [4, 50257], dtype: f32, log: true }),
  softmaxBlock: () => softmax({ dims: [3, 2000], dtype: bf16, outDtype: f32 }),
  attnNoMask: () => attentionSoftmax({ scores: [2, 12, 128, 128], dtype: f16, scale: 0.125 }),
  attnBoolMask: () => attentionSoftmax({ scores: [2, 12, 128, 128], dtype: f32, scale: 0.125, mask: { dtype: 'bool', dims: [2, 1, 1, 128] } }),
  attnFloatMask: () => attentionSoftmax({ scores: [1, 4, 64, 3000], dtype: f16, scale: 0.1, mask: { dtype: f16, dims: [64, 3000] } }),
  maxPool3x3s2: () => maxPool({ x: { dtype: f32, dims: [2, 64, 112, 112] }, kernel: [3, 3], pads: [1, 1, 1, 1], strides: [2, 2] }),
  maxPoolIndicesCeil: () => maxPool({ x: { dtype: f16, dims: [1, 3, 9, 9] }, kernel: [2, 2], strides: [2, 2], ceilMode: true, indices: true, storageOrder: 1 }),
  maxPool1dDil: () => maxPool({ x: { dtype: 'int8', dims: [1, 2, 20] }, kernel: [3], dilations: [2], indices: true }),
  avgPoolPad: () => averagePool({ x: { dtype: f32, dims: [1, 8, 14, 14] }, kernel: [3, 3], pads: [1, 1, 1, 1], countIncludePad: true }),
  avgPool3d: () => averagePool({ x: { dtype: bf16, dims: [1, 2, 5, 6, 7] }, kernel: [2, 2, 2], strides: [2, 2, 2], ceilMode: true }),
  gap: () => globalAveragePool({ x: { dtype: f32, dims: [32, 2048, 7, 7] } }),
  gapLarge: () => globalAveragePool({ x: { dtype: f16, dims: [1, 4, 64, 64] } }),
  gmp: () => globalMaxPool({ x: { dtype: bf16, dims: [2, 16, 3, 3] } }),
  transposeTiled: () => transpose({ dims: [2, 64, 100], perm: [0, 2, 1], dtype: f32 }),
  transposeNchwNhwc: () => transpose({ dims: [8, 3, 224, 224], perm: [0, 2, 3, 1], dtype: f16 }),
  transposeHeads: () => transpose({ dims: [2, 128, 12, 64], perm: [0, 2, 1, 3], dtype: f16 }),
  transposeInt64: () => transpose({ dims: [5, 7], perm: [1, 0], dtype: 'int64' }),
  copySlice: () => copyStrided({ dtype: f32, inDims: [4, 10], outDims: [4, 3], region: [4, 3], inStart: [0, 9], inSteps: [1, -3] }),
  copyConcatPart: () => copyStrided({ dtype: f16, inDims: [2, 64, 56, 56], outDims: [2, 192, 56, 56], region: [2, 64, 56, 56], outStart: [0, 128, 0, 0] }),
  copySplitBool: () => copyStrided({ dtype: 'bool', inDims: [6, 5], outDims: [2, 5], region: [2, 5], inStart: [4, 0] }),
  gatherEmbed: () => gather({ data: { dtype: f32, dims: [30522, 768] }, indices: { dtype: 'int64', dims: [2, 128] }, axis: 0 }),
  gatherAxis1I32: () => gather({ data: { dtype: f16, dims: [4, 10, 3] }, indices: { dtype: 'int32', dims: [5] }, axis: 1 }),
  gatherScalarIdx: () => gather({ data: { dtype: 'int64', dims: [7, 2] }, indices: { dtype: 'int64', dims: [] }, axis: -1 }),
};


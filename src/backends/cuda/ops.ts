// CUDA implementations of layers, one entry per op: given the layer's input types and shapes (and constant values
// where the shape depends on them), return an implementation that launches its kernels on a stream, or throw /
// return undefined when these shapes or types are not handled (the runner then runs the layer on the CPU).
import type { AttrValue, Node } from '../../ir/graph.js';
import type { DType } from '../../ir/dtype.js';
import type { TensorData } from '../../ir/tensor.js';
import { resolveOp, parseAttrs } from '../../ir/schema.js';
import type { CudaDevice } from './device.js';
import { prepareGemm, timeOnStream, timedChoice, type PreparedGemm } from './ffi/cublaslt.js';
import { cudnnAvailable, prepareConv } from './ffi/cudnn.js';
import {
  elementwise, epilogue, cast, where, layerNorm, softmax, attentionSoftmax, maxPool, maxPoolNHWC, averagePool, globalAveragePool, globalMaxPool,
  im2col, im2colLayout, depthwiseConv2d, transpose, copyStrided, gather,
} from './codegen/index.js';
import { ctype, finish, indexType, launch1d, lit, type DevDType, type KernelSource } from './codegen/types.js';
import { quantOps } from './ops-quant.js';
import { fusedAttention, fusedAttentionShape, fusedAttentionUnsupported } from './codegen/attention.js';
import { quantizeTransposeKernel } from './codegen/quant.js';

export interface DeviceTensor {
  ptr: number;
  dtype: DType;
  dims: number[];
  bytes: number;
  /** allocated for this run (freed after its last use); false for weights and views */
  owned: boolean;
}

export interface InputInfo {
  dtype: DType;
  dims: number[];
  /** the value when it is known on the host (weights, small shape tensors) */
  constant?: TensorData;
}

export interface ImplContext {
  node: Node;
  /** fp32 GEMMs may use TF32 tensor cores (a --tf32 build) */
  tf32?: boolean;
  opset: number;
  attrs: unknown;
  dev: CudaDevice;
  inputs: (InputInfo | undefined)[];
}

export interface GpuImpl {
  run(inputs: (DeviceTensor | undefined)[], stream: unknown): DeviceTensor[];
  /** frees host-side library objects (cuBLASLt descriptors) */
  destroy?(): void;
}

type Factory = (c: ImplContext) => GpuImpl | undefined;

const SIZE: Partial<Record<DType, number>> = { float32: 4, float16: 2, bfloat16: 2, int32: 4, int64: 8, uint8: 1, bool: 1, int8: 1, float8e4m3fn: 1 };
const FLOATS = new Set<DType>(['float32', 'float16', 'bfloat16']);
const bytes = (dtype: DType, dims: readonly number[]) => dims.reduce((a, b) => a * b, 1) * (SIZE[dtype] ?? NaN);
const devType = (d: DType): DevDType => {
  if (!(d in SIZE)) throw new Error(`no device type for ${d}`);
  return d as DevDType;
};

/** Output shapes and types from the op's own inference, with concrete input shapes and known constants. */
function inferOutputs(c: ImplContext): { dtype: DType; dims: number[] }[] {
  const { def, opset } = resolveOp(c.node, new Map([[c.node.domain, c.opset]]));
  if (!def.infer) throw new Error('no shape inference');
  const outs = def.infer({
    node: c.node, opset, attrs: parseAttrs(def, c.node) as never, numOutputs: c.node.outputs.length,
    inputTypes: c.inputs.map((i) => (i ? { kind: 'tensor', dtype: i.dtype, shape: i.dims } : undefined)),
    constant: (i) => c.inputs[i]?.constant,
  });
  return outs.map((t) => {
    if (t.kind !== 'tensor' || !t.shape || t.shape.some((d) => typeof d !== 'number')) throw new Error('output shape unknown before running');
    return { dtype: t.dtype, dims: t.shape as number[] };
  });
}

function alloc(dev: CudaDevice, dtype: DType, dims: number[]): DeviceTensor {
  const b = bytes(dtype, dims);
  return { ptr: dev.alloc(Math.max(b, 1)), dtype, dims, bytes: b, owned: true };
}

/** Launch a generated kernel binding its params to inputs / outputs / a workspace. */
function launch(dev: CudaDevice, k: KernelSource, ins: (DeviceTensor | undefined)[], outs: DeviceTensor[], stream: unknown, ws?: number): void {
  const ptrs = k.params.map((p) => (p.kind === 'in' ? ins[p.index]!.ptr : p.kind === 'out' ? outs[p.index].ptr : ws!));
  dev.launch(k, ptrs, stream);
}

/** One kernel, outputs allocated per run. */
function single(c: ImplContext, k: KernelSource, outs = inferOutputs(c)): GpuImpl {
  c.dev.kernel(k); // compile (or load) now, not inside the timed run
  return {
    run(ins, stream) {
      const o = outs.map((t) => alloc(c.dev, t.dtype, t.dims));
      launch(c.dev, k, ins, o, stream);
      return o;
    },
  };
}

/** Ops whose output is a view of their input's bytes. */
const view: Factory = (c) => {
  const [out] = inferOutputs(c);
  return { run: (ins) => [{ ...ins[0]!, dims: out.dims, owned: false }] };
};

const ELEMENTWISE_EXPR: Record<string, string> = {
  Add: '(add $0 $1)', Sub: '(sub $0 $1)', Mul: '(mul $0 $1)', Div: '(div $0 $1)', Pow: '(pow $0 $1)',
  Neg: '(neg $0)', Abs: '(abs $0)', Exp: '(exp $0)', Log: '(log $0)', Sqrt: '(sqrt $0)', Reciprocal: '(recip $0)', Tanh: '(tanh $0)',
  Erf: '(erf $0)', Sigmoid: '(sigmoid $0)', Relu: '(relu $0)', Floor: '(floor $0)', Ceil: '(ceil $0)', Sin: '(sin $0)', Cos: '(cos $0)',
  Softplus: '(softplus $0)',
};

function exprOp(expr: (c: ImplContext) => string): Factory {
  return (c) => {
    const ins = c.inputs.map((i) => i!);
    if (!ins.every((i) => FLOATS.has(i.dtype) && i.dtype === ins[0].dtype)) return undefined;
    const [out] = inferOutputs(c);
    return single(c, elementwise({ expr: expr(c), inputs: ins.map((i) => ({ dtype: devType(i.dtype), dims: i.dims })), out: { dtype: devType(out.dtype), dims: out.dims } }), [out]);
  };
}

const attr = (c: ImplContext) => c.attrs as Record<string, unknown>;

/**
 * MatMul / Gemm (+ bias, residual, activation) through cuBLASLt. A [.., M, K] @ B [K, N] with a 2-D B runs as one
 * GEMM over all leading rows; equal batch dims run as a strided batched GEMM. Bias + ReLU/GELU fuse into cuBLASLt's
 * epilogue; a residual or another activation runs as one elementwise epilogue kernel after it.
 */
const fusedMatMul: Factory = (c) => {
  const a = attr(c) as { transA?: number; transB?: number; alpha?: number; gemm?: number; activation?: string; activation_params?: number[] };
  const [A, B, bias, res] = c.inputs;
  if (!A || !B || !FLOATS.has(A.dtype) || A.dtype !== B.dtype) return undefined;
  const [out] = inferOutputs(c);
  const dtype = A.dtype as 'float32' | 'float16' | 'bfloat16';
  let M: number, N: number, K: number, batch = 1, strideA = 0, strideB = 0, strideC = 0;
  const tA = !!a.transA, tB = !!a.transB;
  if (a.gemm || (A.dims.length === 2 && B.dims.length === 2)) {
    M = tA ? A.dims[1] : A.dims[0]; K = tA ? A.dims[0] : A.dims[1]; N = tB ? B.dims[0] : B.dims[1];
  } else if (B.dims.length === 2 && A.dims.length >= 2) {
    K = A.dims[A.dims.length - 1]; N = B.dims[1]; M = A.dims.slice(0, -1).reduce((x, y) => x * y, 1);
  } else if (A.dims.length >= 3 && A.dims.length === B.dims.length && A.dims.slice(0, -2).every((d, i) => d === B.dims[i])) {
    M = A.dims[A.dims.length - 2]; K = A.dims[A.dims.length - 1]; N = B.dims[B.dims.length - 1];
    batch = A.dims.slice(0, -2).reduce((x, y) => x * y, 1);
    strideA = M * K; strideB = K * N; strideC = M * N;
  } else return undefined;
  const act = a.activation ?? '';
  const biasOk = !!bias && bias.dims.reduce((x, y) => x * y, 1) === N && batch === 1 && bias.dims[bias.dims.length - 1] === N;
  if (bias && !biasOk && res) return undefined; // two broadcast addends: the CPU runs this layer
  // cuBLASLt's GELU epilogue is the tanh approximation, so only ReLU is fused there; other activations use our kernel
  const ltEpi = !biasOk && !act ? 'none' : biasOk && !act ? 'bias' : biasOk && act === 'Relu' ? 'reluBias' : !bias && act === 'Relu' ? 'relu' : undefined;
  const resSame = !!res && res.dims.length === out.dims.length && res.dims.every((d, i) => d === out.dims[i]) && res.dtype === dtype;
  // residual through cuBLASLt's C input (D = AB + C, then bias) when no activation must follow the sum
  const useC = resSame && !act;
  const epi: 'none' | 'bias' | 'reluBias' | 'geluBias' | 'relu' = useC ? (biasOk ? 'bias' : 'none') : (ltEpi ?? (biasOk ? 'bias' : 'none'));
  const gemm: PreparedGemm = prepareGemm({ tf32: c.tf32, M, N, K, batch, transA: tA, transB: tB, dtype, strideA, strideB, strideC, epilogue: epi, alpha: a.alpha ?? 1, beta: useC ? 1 : 0 }, `layer '${c.node.name}'`);
  const needEpilogue = (!useC && !!res) || (!!act && (ltEpi === undefined || useC)) || (!!bias && !biasOk);
  // a bias that is not one value per column (Gemm's C as a matrix or scalar) is added like a residual, broadcast
  const addend = res && !useC ? res : bias && !biasOk ? bias : undefined;
  const epiKernel = needEpilogue ? epilogue({
    y: { dtype: devType(dtype), dims: out.dims },
    residual: addend ? { dtype: devType(addend.dtype), dims: addend.dims } : undefined,
    activation: ltEpi === undefined || useC ? act : '', params: a.activation_params ?? [], out: { dtype: devType(dtype) }, biasAxis: 'last',
  }) : undefined;
  if (epiKernel) c.dev.kernel(epiKernel);
  return {
    run(ins, stream) {
      const o = alloc(c.dev, out.dtype, out.dims);
      gemm.run(ins[0]!.ptr, ins[1]!.ptr, o.ptr, biasOk ? ins[2]!.ptr : 0, stream, undefined, useC ? ins[3]!.ptr : undefined);
      if (epiKernel) launch(c.dev, epiKernel, [o, undefined, res && !useC ? ins[3] : ins[2]], [o], stream);
      return [o];
    },
    destroy: () => gemm.destroy(),
  };
};

const castOp: Factory = (c) => {
  const [x] = c.inputs;
  const [out] = inferOutputs(c);
  return single(c, cast({ from: devType(x!.dtype), to: devType(out.dtype), n: x!.dims.reduce((a, b) => a * b, 1) }), [out]);
};

const whereOp: Factory = (c) => {
  const [cond, x, y] = c.inputs;
  if (cond!.dtype !== 'bool') return undefined;
  const [out] = inferOutputs(c);
  return single(c, where({ cond: cond!.dims, x: { dtype: devType(x!.dtype), dims: x!.dims }, y: { dtype: devType(y!.dtype), dims: y!.dims }, out: out.dims }), [out]);
};

/** A tensor `elems` elements into another (per-image views for im2col and the conv GEMMs). */
const offsetBy = (t: DeviceTensor, elems: number): DeviceTensor => ({ ...t, ptr: t.ptr + elems * (SIZE[t.dtype] ?? 0), owned: false });

/** Explicit begin/end pads from ONNX conv/pool attributes (auto_pad resolved against the input). */
function resolvePads(spatial: number[], kernel: number[], a: { auto_pad?: string; pads?: number[]; strides?: number[]; dilations?: number[] }): number[] {
  const r = spatial.length;
  const strides = a.strides ?? new Array<number>(r).fill(1), dil = a.dilations ?? new Array<number>(r).fill(1);
  if (!a.auto_pad || a.auto_pad === 'NOTSET') return a.pads ?? new Array<number>(2 * r).fill(0);
  if (a.auto_pad === 'VALID') return new Array<number>(2 * r).fill(0);
  const pads = new Array<number>(2 * r).fill(0);
  for (let d = 0; d < r; d++) {
    const out = Math.ceil(spatial[d] / strides[d]);
    const total = Math.max(0, (out - 1) * strides[d] + (kernel[d] - 1) * dil[d] + 1 - spatial[d]);
    const small = Math.floor(total / 2);
    pads[d] = a.auto_pad === 'SAME_UPPER' ? small : total - small;
    pads[d + r] = total - pads[d];
  }
  return pads;
}

/**
 * FusedConv: depthwise 2-D convolutions run one direct kernel; 1x1 stride-1 convolutions are one batched GEMM over
 * the images; others go through im2col per image plus a GEMM. Bias, residual and activation run in one epilogue.
 */
/** Column buffer for an NHWC convolution: col[(n, oh, ow)][(kh, kw, c)], so Y[NHW, M] = col @ W[M, kh*kw*C]^T. */
function im2colNHWC(x: readonly number[], kernel: number[], pads: number[], strides: number[], dil: number[], out: number[], dtype: DevDType): KernelSource {
  const [N, H, W, C] = x, [KH, KW] = kernel, [OH, OW] = out;
  const total = N * OH * OW * KH * KW * C;
  const it = indexType(Math.max(total, N * H * W * C));
  const T = ctype(dtype);
  const body = `
extern "C" __global__ void __launch_bounds__(256) KNAME(const ${T}* __restrict__ x, ${T}* __restrict__ col) {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(total)}; i += (${it})gridDim.x * blockDim.x) {
    ${it} t = i;
    const int c = (int)(t % ${C}); t /= ${C};
    const int kw = (int)(t % ${KW}); t /= ${KW};
    const int kh = (int)(t % ${KH}); t /= ${KH};
    const int ow = (int)(t % ${OW}); t /= ${OW};
    const int oh = (int)(t % ${OH}); t /= ${OH};
    const int ih = oh * ${strides[0]} - ${pads[0]} + kh * ${dil[0]}, iw = ow * ${strides[1]} - ${pads[1]} + kw * ${dil[1]};
    col[i] = ((unsigned)ih < ${H}u && (unsigned)iw < ${W}u) ? x[((t * ${H} + ih) * ${W} + iw) * ${lit(C)} + c] : (${T})0;
  }
}`;
  return finish('kiln_im2col_nhwc', body, { ...launch1d(Math.max(1, total)), sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
}

/**
 * NHWC FusedConv (after the layout pass): one GEMM Y[N*OH*OW, M] = X'[N*OH*OW, K] @ W[M, K]^T with bias and ReLU in
 * cuBLASLt's epilogue and a residual as its C input; X' is X itself for 1x1 stride-1 convolutions, else an im2col.
 */
const fusedConvNHWC: Factory = (c) => {
  const a = attr(c) as { auto_pad?: string; pads?: number[]; strides?: number[]; dilations?: number[]; activation?: string; activation_params?: number[] };
  const [X, Wt, B, R] = c.inputs;
  if (!X || !Wt || !FLOATS.has(X.dtype) || X.dtype !== Wt.dtype || X.dims.length !== 4) return undefined;
  const [out] = inferOutputs(c);
  const [N, H, W, C] = X.dims;
  const M = Wt.dims[0], kernel = [Wt.dims[1], Wt.dims[2]];
  const strides = a.strides ?? [1, 1], dil = a.dilations ?? [1, 1];
  const pads = resolvePads([H, W], kernel, a);
  const [, OH, OW] = out.dims;
  const rows = N * OH * OW, K = kernel[0] * kernel[1] * C;
  const direct = kernel.every((k) => k === 1) && strides.every((s) => s === 1) && pads.every((p) => p === 0);
  if (!direct && !cudnnAvailable()) {
    try {
      return cudnnConvNHWC(c, { N, H, W, C, M, kernel, pads, strides, dil, OH, OW, out });
    } catch {
      // a shape cuDNN refuses: im2col + GEMM below
    }
  }
  const col = direct ? undefined : im2colNHWC(X.dims, kernel, pads, strides, dil, [OH, OW], devType(X.dtype));
  const act = a.activation ?? '';
  const biasOk = !!B && B.dims.reduce((x, y) => x * y, 1) === M;
  const useC = !!R && !act && R.dims.every((d, i) => d === out.dims[i]) && R.dtype === X.dtype;
  const ltEpi = !biasOk ? (act === 'Relu' && !R ? 'relu' : 'none') : act === 'Relu' && !R ? 'reluBias' : 'bias';
  const gemm = prepareGemm({ tf32: c.tf32, M: rows, N: M, K, batch: 1, transA: false, transB: true, dtype: X.dtype as 'float32', strideA: 0, strideB: 0, strideC: 0, epilogue: ltEpi, beta: useC ? 1 : 0 }, `layer '${c.node.name}'`);
  const fusedAct = ltEpi === 'relu' || ltEpi === 'reluBias';
  const epi = (act && !fusedAct) || (R && !useC) ? epilogue({
    y: { dtype: devType(X.dtype), dims: out.dims }, residual: R && !useC ? { dtype: devType(R.dtype), dims: R.dims } : undefined,
    activation: fusedAct ? '' : act, params: a.activation_params ?? [], out: { dtype: devType(X.dtype) }, biasAxis: 'last',
  }) : undefined;
  if (col) c.dev.kernel(col);
  if (epi) c.dev.kernel(epi);
  return {
    run(ins, stream) {
      const o = alloc(c.dev, out.dtype, out.dims);
      let src = ins[0]!.ptr, ws: DeviceTensor | undefined;
      if (col) {
        ws = alloc(c.dev, X.dtype, [rows * K]);
        launch(c.dev, col, ins, [ws], stream);
        src = ws.ptr;
      }
      gemm.run(src, ins[1]!.ptr, o.ptr, biasOk ? ins[2]!.ptr : 0, stream, undefined, useC ? ins[3]!.ptr : undefined);
      if (epi) launch(c.dev, epi, [o, undefined, ins[3]], [o], stream);
      if (ws) c.dev.release(ws.ptr); // reuse is ordered on the stream
      return [o];
    },
    destroy: () => gemm.destroy(),
  };
};

/** Non-1x1 NHWC convolutions through cuDNN (tensor cores, no im2col buffer), then one epilogue kernel. */
function cudnnConvNHWC(c: ImplContext, g: { N: number; H: number; W: number; C: number; M: number; kernel: number[]; pads: number[]; strides: number[]; dil: number[]; OH: number; OW: number; out: { dtype: DType; dims: number[] } }): GpuImpl {
  const a = attr(c) as { activation?: string; activation_params?: number[] };
  const [X, , B, R] = c.inputs;
  const dtype = X!.dtype as 'float32' | 'float16' | 'bfloat16';
  const conv = prepareConv({ n: g.N, c: g.C, h: g.H, w: g.W, m: g.M, kh: g.kernel[0], kw: g.kernel[1], oh: g.OH, ow: g.OW, pads: g.pads, strides: g.strides, dilations: g.dil, dtype }, `layer '${c.node.name}'`);
  const act = a.activation ?? '';
  const epi = B || R || act ? epilogue({
    y: { dtype: devType(dtype), dims: g.out.dims }, bias: B ? { dtype: devType(B.dtype) } : undefined,
    residual: R ? { dtype: devType(R.dtype), dims: R.dims } : undefined, activation: act, params: a.activation_params ?? [], out: { dtype: devType(dtype) }, biasAxis: 'last',
  }) : undefined;
  if (epi) c.dev.kernel(epi);
  return {
    run(ins, stream) {
      const o = alloc(c.dev, g.out.dtype, g.out.dims);
      const ws = conv.workspaceBytes ? c.dev.alloc(conv.workspaceBytes) : 0;
      conv.run(ins[0]!.ptr, ins[1]!.ptr, o.ptr, ws, stream);
      if (ws) c.dev.release(ws); // reuse is ordered on the stream
      if (epi) launch(c.dev, epi, [o, ins[2], ins[3]], [o], stream);
      return [o];
    },
    destroy: () => conv.destroy(),
  };
}

const fusedConv: Factory = (c) => {
  if ((attr(c).layout as string | undefined) === 'NHWC') return fusedConvNHWC(c);
  const a = attr(c) as { auto_pad?: string; pads?: number[]; strides?: number[]; dilations?: number[]; group: number; activation?: string; activation_params?: number[] };
  const [X, W, B, R] = c.inputs;
  if (!X || !W || !FLOATS.has(X.dtype) || X.dtype !== W.dtype) return undefined;
  const [out] = inferOutputs(c);
  const [N, C, ...spatial] = X.dims;
  const M = W.dims[0], kernel = W.dims.slice(2), group = a.group ?? 1;
  const pads = resolvePads(spatial, kernel, a);
  const dtype = devType(X.dtype);
  const act = a.activation ?? '', params = a.activation_params ?? [];
  const P = out.dims.slice(2).reduce((x, y) => x * y, 1);
  if (group === C && C === M && spatial.length === 2 && W.dims[1] === 1) {
    const dw = depthwiseConv2d({ x: X.dims, kernel: [kernel[0], kernel[1]], pads, strides: a.strides, dilations: a.dilations, dtype, hasBias: !!B, activation: R ? '' : act, params });
    const epi = R ? epilogue({ y: { dtype, dims: out.dims }, residual: { dtype: devType(R.dtype), dims: R.dims }, activation: act, params, out: { dtype }, biasAxis: 1 }) : undefined;
    c.dev.kernel(dw);
    if (epi) c.dev.kernel(epi);
    return {
      run(ins, stream) {
        const o = alloc(c.dev, out.dtype, out.dims);
        launch(c.dev, dw, ins, [o], stream);
        if (epi) launch(c.dev, epi, [o, undefined, ins[3]], [o], stream);
        return [o];
      },
    };
  }
  if (group !== 1) return undefined;
  const K = W.dims.slice(1).reduce((x, y) => x * y, 1);
  const pointwise = kernel.every((k) => k === 1) && (a.strides ?? []).every((s) => s === 1) && pads.every((p) => p === 0);
  const layout = pointwise ? undefined : im2colLayout({ x: [1, C, ...spatial], kernel, pads, strides: a.strides, dilations: a.dilations, group: 1 });
  const col = layout ? im2col({ x: [1, C, ...spatial], kernel, pads, strides: a.strides, dilations: a.dilations, group: 1, dtype }) : undefined;
  // pointwise: Y[n] = W[M, C] @ X[n][C, P] for all n at once; im2col: per image, Y[n] = W[M, K] @ col[K, P]
  const gemm = prepareGemm({ tf32: c.tf32, M, N: P, K, batch: pointwise ? N : 1, transA: false, transB: false, dtype: X.dtype as 'float32', strideA: 0, strideB: K * P, strideC: M * P, epilogue: 'none' }, `layer '${c.node.name}'`);
  const epi = B || R || act ? epilogue({ y: { dtype, dims: out.dims }, bias: B ? { dtype: devType(B.dtype) } : undefined, residual: R ? { dtype: devType(R.dtype), dims: R.dims } : undefined, activation: act, params, out: { dtype }, biasAxis: 1 }) : undefined;
  if (col) c.dev.kernel(col);
  if (epi) c.dev.kernel(epi);
  const xPer = C * spatial.reduce((x, y) => x * y, 1), yPer = M * P;
  // all images at once when the column buffer stays small enough, one image at a time otherwise
  const whole = !pointwise && layout!.elements * N * (SIZE[X.dtype] ?? 4) <= 1 << 30;
  const colAll = whole ? im2col({ x: X.dims, kernel, pads, strides: a.strides, dilations: a.dilations, group: 1, dtype }) : undefined;
  const gemmAll = whole ? prepareGemm({ tf32: c.tf32, M, N: P, K, batch: N, transA: false, transB: false, dtype: X.dtype as 'float32', strideA: 0, strideB: K * P, strideC: M * P, epilogue: 'none' }, `layer '${c.node.name}'`) : undefined;
  if (colAll) c.dev.kernel(colAll);
  return {
    run(ins, stream) {
      const o = alloc(c.dev, out.dtype, out.dims);
      if (pointwise) gemm.run(ins[1]!.ptr, ins[0]!.ptr, o.ptr, 0, stream);
      else if (whole) {
        const ws = alloc(c.dev, X.dtype, [layout!.elements * N]);
        launch(c.dev, colAll!, ins, [ws], stream);
        gemmAll!.run(ins[1]!.ptr, ws.ptr, o.ptr, 0, stream);
        c.dev.release(ws.ptr);
      } else {
        const ws = alloc(c.dev, X.dtype, [layout!.elements]);
        for (let n = 0; n < N; n++) {
          launch(c.dev, col!, [offsetBy(ins[0]!, n * xPer)], [ws], stream);
          gemm.run(ins[1]!.ptr, ws.ptr, offsetBy(o, n * yPer).ptr, 0, stream);
        }
        c.dev.release(ws.ptr); // reuse is ordered on the stream
      }
      if (epi) launch(c.dev, epi, [o, ins[2], ins[3]], [o], stream);
      return [o];
    },
    destroy: () => { gemm.destroy(); gemmAll?.destroy(); },
  };
};

/**
 * kiln:Attention. fp16/bf16 with head sizes the fused kernel takes (codegen/attention.ts): one flash-style kernel,
 * the scores never stored. Else, and as the other tactic, GEMM (Q @ Kt) -> scale + mask + softmax in place -> GEMM
 * (P @ V), batched over leading dims. The build's device run (`tuning.on`) times the candidates per layer and the
 * plan keeps the fastest; without a timed choice the fused kernel runs in the shape its heuristic picks.
 */
const attention: Factory = (c) => {
  const a = attr(c) as { scale: number; k_transposed: number; perm?: number[]; y_scale?: number; y_zero_point?: number };
  const [Q, Kt, V, mask] = c.inputs;
  if (!Q || !Kt || !V || !FLOATS.has(Q.dtype) || Q.dtype !== Kt.dtype || Q.dtype !== V.dtype) return undefined;
  // kiln:QAttention: the output transposed by `perm` and quantized; the fused kernel stores it so when the perm keeps
  // it [...lead, S, Dv] or swaps heads and positions of a [B, H, S, Dv] output, else the float output goes through the
  // QTranspose kernel
  const quantized = c.node.opType === 'QAttention';
  const qOut = quantized ? inferOutputs(c)[0] : undefined;
  if (qOut && ((qOut.dtype !== 'int8' && qOut.dtype !== 'uint8') || Q.dtype === 'bfloat16')) return undefined;
  const r = Q.dims.length;
  const lead = Q.dims.slice(0, -2), batch = lead.reduce((x, y) => x * y, 1);
  if (Kt.dims.length !== r || V.dims.length !== r || Kt.dims.slice(0, -2).some((d, i) => d !== lead[i]) || V.dims.slice(0, -2).some((d, i) => d !== lead[i])) return undefined;
  const S = Q.dims[r - 2], D = Q.dims[r - 1];
  const L = a.k_transposed ? Kt.dims[r - 1] : Kt.dims[r - 2], Dv = V.dims[r - 1];
  const dtype = Q.dtype as 'float32';
  const outDims = [...lead, S, Dv];
  type Route = { ready(): void; run(ins: (DeviceTensor | undefined)[], o: DeviceTensor, stream: unknown): void; destroy(): void };
  const unfusedFloat = (): Route => {
    const g1 = prepareGemm({ tf32: c.tf32, M: S, N: L, K: D, batch, transA: false, transB: !a.k_transposed, dtype, strideA: S * D, strideB: D * L, strideC: S * L, epilogue: 'none' }, `layer '${c.node.name}' (scores)`);
    const g2 = prepareGemm({ tf32: c.tf32, M: S, N: Dv, K: L, batch, transA: false, transB: false, dtype, strideA: S * L, strideB: L * Dv, strideC: S * Dv, epilogue: 'none' }, `layer '${c.node.name}' (context)`);
    const sm = attentionSoftmax({ scores: [...lead, S, L], dtype: devType(dtype), scale: a.scale, mask: mask ? { dtype: devType(mask.dtype), dims: mask.dims } : undefined });
    return {
      ready: () => { c.dev.kernel(sm); },
      run(ins, o, stream) {
        const scores = alloc(c.dev, dtype, [...lead, S, L]);
        g1.run(ins[0]!.ptr, ins[1]!.ptr, scores.ptr, 0, stream);
        launch(c.dev, sm, [scores, ins[3]], [scores], stream);
        g2.run(scores.ptr, ins[2]!.ptr, o.ptr, 0, stream);
        c.dev.release(scores.ptr); // reuse is ordered on the stream
      },
      destroy: () => { g1.destroy(); g2.destroy(); },
    };
  };
  const perm = quantized ? (a.perm?.length ? a.perm : outDims.map((_, i) => r - 1 - i)) : [];
  const permKey = perm.join('');
  const headsLast = r === 4 && permKey === '0213';
  const qArgs = qOut && { headsLast, dtype: qOut.dtype as 'int8', scale: a.y_scale ?? 1, zeroPoint: a.y_zero_point ?? 0 };
  const fusedArgs = { lead, S, L, D, Dv, dtype: dtype as string as 'float16', kTransposed: !!a.k_transposed, scale: a.scale, mask: mask ? { dtype: devType(mask.dtype), dims: mask.dims } : undefined, quantized: qArgs };
  const fusedOk = !fusedAttentionUnsupported({ ...fusedArgs, batch }) && (!mask || mask.dims.length <= r)
    && (!quantized || (Q.dtype === 'float16' && (headsLast || perm.every((p, i) => p === i))));
  // the unfused plan's (or the float kernel's) output, then the QTranspose kernel
  const qt = qOut && quantizeTransposeKernel({ dims: outDims, perm, from: Q.dtype as 'float32' | 'float16', to: qOut.dtype as 'int8', scale: a.y_scale ?? 1, zeroPoint: a.y_zero_point ?? 0 });
  /** A float route whose output goes through the QTranspose kernel `q` into the quantized output. */
  const thenQuantize = (f: Route, q: KernelSource): Route => ({
    ready: () => { f.ready(); c.dev.kernel(q); },
    run(ins, o, stream) {
      const t = alloc(c.dev, dtype, outDims);
      f.run(ins, t, stream);
      launch(c.dev, q, [t], [o], stream);
      c.dev.release(t.ptr); // reuse is ordered on the stream
    },
    destroy: () => f.destroy(),
  });
  const unfused = (): Route => (qt ? thenQuantize(unfusedFloat(), qt) : unfusedFloat());
  // kernel sources rendered on first need: a plan that saved its choice renders one shape, not all of them
  const rendered = new Map<string, KernelSource>();
  const kernelOf = (warps: number, split: number) => {
    let k = rendered.get(`${warps}x${split}`);
    if (!k) rendered.set(`${warps}x${split}`, k = fusedAttention({ ...fusedArgs, warps, split }));
    return k;
  };
  const kernelRoute = (k: KernelSource): Route => ({ ready: () => { c.dev.kernel(k); }, run: (ins, o, stream) => launch(c.dev, k, ins, [o], stream), destroy: () => undefined });
  // KILN_QATTN=split (a check of the quantized store): kiln:QAttention runs the float kernel of the same shape, then the
  // QTranspose kernel, which must give the same bytes
  const splitQ = process.env.KILN_QATTN === 'split' ? qt : undefined;
  const fused = (warps: number, split: number) => (): Route => (splitQ
    ? thenQuantize(kernelRoute(fusedAttention({ ...fusedArgs, quantized: undefined, warps, split })), splitQ)
    : kernelRoute(kernelOf(warps, split)));
  // candidates: the fused kernel in the shape its heuristic picks (row groups x key split), then in the others, then
  // the unfused plan; KILN_ATTN=unfused, =fused or =fused:<row groups>x<split> forces one
  const force = process.env.KILN_ATTN;
  const d = fusedAttentionShape(S, L, batch, c.dev.info.smCount);
  const shapes = fusedOk ? [[d.warps, d.split], [2, 1], [4, 1], [2, 2], [4, 2]]
    .filter(([w, k], i, all) => (w - 1) * 16 < S && all.findIndex(([w2, k2]) => w2 === w && k2 === k) === i) : [];
  const forced = /^fused:(\d+)x(\d+)$/.exec(force ?? '');
  const fusedAll = shapes.map(([w, k]) => fused(w, k));
  const makers: (() => Route)[] = !fusedOk || force === 'unfused' ? [unfused]
    : force === 'fused' ? [fusedAll[0]]
      : forced ? [fused(Number(forced[1]), Number(forced[2]))]
        : [...fusedAll, unfused];
  const key = `attn|a4|${c.node.name}|${lead.join('x')}|${S}x${L}x${D}x${Dv}|${dtype}|${a.k_transposed ? 'T' : 'N'}${qOut ? `|q${permKey}` : ''}`;
  const set = `${force ?? ''}|${shapes.map(([w, k]) => `${w}x${k}`).join(',')}|${makers.length}`; // the list's make-up (poolChoices)
  const tactic = timedChoice(key, makers, () => c.dev.prefetch(shapes.map(([w, k]) => kernelOf(w, k))), set); // compiled concurrently, readied when timed
  return {
    run(ins, stream) {
      const o = qOut ? alloc(c.dev, qOut.dtype, qOut.dims) : alloc(c.dev, dtype, outDims);
      tactic.pick((m) => timeOnStream(() => m.run(ins, o, stream), stream, 5)).run(ins, o, stream);
      return [o];
    },
    destroy: () => tactic.destroy(),
  };
};

const norm = (rms: boolean): Factory => (c) => {
  const a = attr(c) as { axis?: number; epsilon: number; y2_scale?: number; y2_zero_point?: number };
  const [X, scale, B] = c.inputs;
  // kiln:QLayerNormalization: its second output is the first, quantized in the same pass
  const quantizes = c.node.opType === 'QLayerNormalization';
  if (!X || !scale || !FLOATS.has(X.dtype) || (!quantizes && c.node.outputs.slice(1).some(Boolean))) return undefined;
  const outs = inferOutputs(c);
  const q8 = outs[1]?.dtype;
  if (quantizes && q8 !== 'int8' && q8 !== 'uint8') return undefined;
  return single(c, layerNorm({
    x: { dtype: devType(X.dtype), dims: X.dims }, axis: a.axis ?? -1, epsilon: a.epsilon ?? 1e-5, scale: { dtype: devType(scale.dtype), dims: scale.dims },
    bias: B && !rms ? { dtype: devType(B.dtype), dims: B.dims } : undefined, rms, outDtype: devType(outs[0].dtype),
    quantized: quantizes ? { dtype: q8 as 'int8' | 'uint8', scale: a.y2_scale ?? 1, zeroPoint: a.y2_zero_point ?? 0 } : undefined,
  }), quantizes ? outs : [outs[0]]);
};

const softmaxOp = (log: boolean): Factory => (c) => {
  const [X] = c.inputs;
  if (!X || !FLOATS.has(X.dtype)) return undefined;
  const axis = (attr(c).axis as number | undefined) ?? (c.opset < 13 ? 1 : -1);
  if (axis !== -1 && axis !== X.dims.length - 1) return undefined;
  return single(c, softmax({ dims: X.dims, dtype: devType(X.dtype), log }));
};

const pool = (kind: 'max' | 'avg' | 'gavg' | 'gmax'): Factory => (c) => {
  const a = attr(c) as { kernel_shape: number[]; auto_pad?: string; pads?: number[]; strides?: number[]; dilations?: number[]; ceil_mode?: number; count_include_pad?: number };
  const [X] = c.inputs;
  // MaxPool also pools stored int8/uint8 values (the 'quantize before max pools' stage puts it after the quantization)
  const ints = kind === 'max' && (X?.dtype === 'int8' || X?.dtype === 'uint8');
  if (!X || (!FLOATS.has(X.dtype) && !ints) || c.node.outputs.slice(1).some(Boolean)) return undefined;
  const x = { dtype: devType(X.dtype), dims: X.dims };
  if (kind === 'gavg') return single(c, globalAveragePool({ x }));
  if (kind === 'gmax') return single(c, globalMaxPool({ x }));
  const pads = resolvePads(X.dims.slice(2), a.kernel_shape, a);
  const args = { x, kernel: a.kernel_shape, pads, strides: a.strides, dilations: a.dilations, ceilMode: !!a.ceil_mode, countIncludePad: !!a.count_include_pad };
  return single(c, kind === 'max' ? maxPool(args) : averagePool(args));
};

/** kiln:MaxPoolNHWC (the layout pass's channels-last MaxPool): float or stored int8/uint8 values. */
const maxPoolNHWCOp: Factory = (c) => {
  const a = attr(c) as { kernel_shape: number[]; auto_pad?: string; pads?: number[]; strides?: number[]; dilations?: number[]; ceil_mode?: number };
  const [X] = c.inputs;
  if (!X || X.dims.length !== 4 || (!FLOATS.has(X.dtype) && X.dtype !== 'int8' && X.dtype !== 'uint8')) return undefined;
  const pads = resolvePads(X.dims.slice(1, 3), a.kernel_shape, a);
  return single(c, maxPoolNHWC({ x: { dtype: devType(X.dtype), dims: X.dims }, kernel: a.kernel_shape, pads, strides: a.strides, dilations: a.dilations, ceilMode: !!a.ceil_mode }));
};

const transposeOp: Factory = (c) => {
  const [X] = c.inputs;
  const perm = (attr(c).perm as number[] | undefined) ?? X!.dims.map((_, i) => X!.dims.length - 1 - i);
  // a permutation only moves bytes: fp8 tensors (quantized activations) move as uint8
  return single(c, transpose({ dims: X!.dims, perm, dtype: X!.dtype === 'float8e4m3fn' ? 'uint8' : devType(X!.dtype) }));
};

const gatherOp: Factory = (c) => {
  const [data, idx] = c.inputs;
  if (!data || !idx || (idx.dtype !== 'int64' && idx.dtype !== 'int32')) return undefined;
  return single(c, gather({ data: { dtype: devType(data.dtype), dims: data.dims }, indices: { dtype: idx.dtype, dims: idx.dims }, axis: (attr(c).axis as number | undefined) ?? 0 }));
};

/** Split: one strided copy per output. */
const splitOp: Factory = (c) => {
  const [X] = c.inputs;
  const outs = inferOutputs(c);
  const r = X!.dims.length, axis = ((attr(c).axis as number | undefined) ?? 0) < 0 ? ((attr(c).axis as number) + r) : ((attr(c).axis as number | undefined) ?? 0);
  let off = 0;
  const ks = outs.map((o) => {
    const k = copyStrided({ dtype: devType(X!.dtype), inDims: X!.dims, outDims: o.dims, region: o.dims, inStart: o.dims.map((_, d) => (d === axis ? off : 0)) });
    off += o.dims[axis];
    c.dev.kernel(k);
    return k;
  });
  return {
    run(ins, stream) {
      return outs.map((o, i) => {
        const t = alloc(c.dev, o.dtype, o.dims);
        launch(c.dev, ks[i], ins, [t], stream);
        return t;
      });
    },
  };
};

/** Concat: one strided copy per input into the output. */
const concatOp: Factory = (c) => {
  const [out] = inferOutputs(c);
  const r = out.dims.length, ax = (attr(c).axis as number) < 0 ? (attr(c).axis as number) + r : (attr(c).axis as number);
  let off = 0;
  const ks = c.inputs.map((x) => {
    const k = copyStrided({ dtype: devType(x!.dtype), inDims: x!.dims, outDims: out.dims, region: x!.dims, outStart: x!.dims.map((_, d) => (d === ax ? off : 0)) });
    off += x!.dims[ax];
    c.dev.kernel(k);
    return k;
  });
  return {
    run(ins, stream) {
      const t = alloc(c.dev, out.dtype, out.dims);
      ks.forEach((k, i) => launch(c.dev, k, [ins[i]], [t], stream));
      return [t];
    },
  };
};

/** Logical ops on bool tensors as elementwise expressions over 0/1 values. */
const boolOp = (expr: string): Factory => (c) => {
  const ins = c.inputs.map((i) => i!);
  if (!ins.every((i) => i.dtype === 'bool')) return undefined;
  const [out] = inferOutputs(c);
  return single(c, elementwise({ expr, inputs: ins.map((i) => ({ dtype: 'bool', dims: i.dims })), out: { dtype: 'bool', dims: out.dims } }), [out]);
};

export const GPU_OPS: Record<string, Factory> = {
  And: boolOp('(mul $0 $1)'), Or: boolOp('(max $0 $1)'), Not: boolOp('(sub 1 $0)'),
  'kiln:FusedConv': fusedConv,
  'kiln:Attention': attention, 'kiln:QAttention': attention,
  LayerNormalization: norm(false), 'kiln:LayerNormalization': norm(false), 'kiln:QLayerNormalization': norm(false),
  RMSNormalization: norm(true), 'kiln:RMSNormalization': norm(true),
  Softmax: softmaxOp(false), 'kiln:Softmax': softmaxOp(false), LogSoftmax: softmaxOp(true),
  MaxPool: pool('max'), 'kiln:MaxPoolNHWC': maxPoolNHWCOp, AveragePool: pool('avg'), GlobalAveragePool: pool('gavg'), GlobalMaxPool: pool('gmax'),
  Transpose: transposeOp, Gather: gatherOp, Split: splitOp, 'kiln:Split': splitOp, Concat: concatOp,
  'kiln:FusedMatMul': fusedMatMul,
  MatMul: fusedMatMul,
  'kiln:Elementwise': exprOp((c) => (attr(c).expr as string)),
  ...Object.fromEntries(Object.entries(ELEMENTWISE_EXPR).map(([op, e]) => [op, exprOp(() => e)])),
  // variadic Max/Min: a left fold over every input
  Max: exprOp((c) => c.inputs.slice(1).reduce((acc, _, i) => `(max ${acc} $${i + 1})`, '$0')),
  Min: exprOp((c) => c.inputs.slice(1).reduce((acc, _, i) => `(min ${acc} $${i + 1})`, '$0')),
  Reshape: view, Flatten: view, Squeeze: view, Unsqueeze: view, Identity: view,
  Cast: castOp,
  Where: whereOp,
  // quantized layers and Q/DQ (ops-quant.ts)
  ...quantOps({ alloc, inferOutputs, resolvePads }),
};

export type { AttrValue };

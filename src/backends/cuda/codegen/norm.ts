// LayerNormalization and RMSNormalization (ONNX semantics) over the trailing axes, float32 statistics.
import { rowEach, rowHelpers, rowLoad, rowLoop, rowReduce, rowWrite, planRows, type RowSecond } from './rows.js';
import { KQ_HELPERS, storeExpr } from './quant.js';
import {
  broadcastDims, broadcastStrides, checkDType, ctype, finish, load, offsetCode, prod, unsupported,
  type DevDType, type KernelSource, type TensorSpec,
} from './types.js';

export interface LayerNormArgs {
  x: TensorSpec;
  /** First normalized axis (ONNX `axis`, default -1): rows are dims[..axis), a row is dims[axis..] flattened. */
  axis?: number;
  epsilon: number;
  /** Broadcastable to dims[axis..]. */
  scale: TensorSpec;
  /** LayerNormalization's B, broadcastable to dims[axis..] (never for RMS). */
  bias?: TensorSpec;
  /** Output dtype (default x's). */
  outDtype?: DevDType;
  /** RMSNormalization: y = x / sqrt(mean(x^2) + eps) * scale. */
  rms: boolean;
  /** Also write LayerNormalization's Mean and InvStdDev outputs (float32, one per row). */
  stats?: boolean;
  /**
   * kiln:QLayerNormalization: also write Y as stored, quantized per tensor (saturating, round half to even), as out 1:
   * what a QuantizeLinear reading Y would write, without a second pass over Y.
   */
  quantized?: { dtype: 'int8' | 'uint8'; scale: number; zeroPoint: number };
}

/**
 * Params: in 0 X, in 1 scale, in 2 B (when given), out 0 Y, then (stats) out 1 Mean and out 2 InvStdDev as float32
 * [rows]. LayerNorm: y = (x - mean) / sqrt(var + eps) * scale + B with var = mean((x - mean)^2).
 */
export function layerNorm(a: LayerNormArgs): KernelSource {
  const where = a.rms ? 'rmsNorm' : 'layerNorm';
  const r = a.x.dims.length;
  const axis = (a.axis ?? -1) < 0 ? (a.axis ?? -1) + r : a.axis!;
  if (!(axis >= 0 && axis < r)) unsupported(where, `axis ${a.axis} is out of range for rank ${r}`, 'use an axis in [-rank, rank)');
  if (a.rms && (a.bias || a.stats)) unsupported(where, 'RMSNormalization has no bias and no statistics outputs');
  if (a.quantized && a.stats) unsupported(where, 'a quantized second output and the statistics outputs together');
  const outD = a.outDtype ?? a.x.dtype;
  for (const [t, w] of [[a.x, 'X'], [a.scale, 'scale'], ...(a.bias ? [[a.bias, 'B']] : [])] as [TensorSpec, string][]) checkDType(t.dtype, `${where} ${w}`);
  const region = a.x.dims.slice(axis);
  const n = prod(region), rows = prod(a.x.dims.slice(0, axis));
  const q = a.quantized;
  const p = planRows(rows, n, [a.x.dtype, outD, ...(q ? [q.dtype] : [])]);
  const second: RowSecond | undefined = q && { d: q.dtype, out: 'yq', value: (v) => storeExpr(q.dtype, v, q.scale, q.zeroPoint) };

  const param = (t: TensorSpec, name: string) => {
    const dims = broadcastDims([t.dims, region], `${where} ${name}`);
    if (dims.length > region.length) unsupported(where, `${name} of shape [${t.dims.join(',')}] has more axes than the normalized dims [${region.join(',')}]`);
    const st = broadcastStrides(t.dims, region);
    if (prod(t.dims) === n) return { pre: '', value: load(t.dtype, `${name}[col]`) };
    const off = offsetCode('col', region, [`o_${name}`], [st], 'int', `r_${name}`);
    return { pre: off, value: load(t.dtype, `${name}[o_${name}]`) };
  };
  const sc = param(a.scale, 'scale');
  const bi = a.bias ? param(a.bias, 'bias') : undefined;
  const reduce = (v: string, op: 'sum' | 'max') => rowReduce(p, v, op);
  const norm = a.rms ? `v * rstd * ${sc.value}` : `(v - mean) * rstd * ${sc.value}${bi ? ` + ${bi.value}` : ''}`;
  const valueBlock = (sc.pre || bi?.pre) ? `[&]() { ${sc.pre} ${bi?.pre ?? ''} return ${norm}; }()` : norm;

  const stats = a.rms
    ? `float ss = 0.0f;
    ${rowEach(p, a.x.dtype, 'x', 'ss += v * v;')}
    const float rstd = 1.0f / sqrtf(${reduce('ss', 'sum')} / ${n}.0f + ${a.epsilon}f);`
    : `float s = 0.0f;
    ${rowEach(p, a.x.dtype, 'x', 's += v;')}
    const float mean = ${reduce('s', 'sum')} / ${n}.0f;
    float ss = 0.0f;
    ${rowEach(p, a.x.dtype, 'x', 'const float d = v - mean; ss += d * d;')}
    const float rstd = 1.0f / sqrtf(${reduce('ss', 'sum')} / ${n}.0f + ${a.epsilon}f);`;
  const outs = [`${ctype(outD)}* __restrict__ y`, ...(a.stats ? ['float* __restrict__ mean_out', 'float* __restrict__ rstd_out'] : []), ...(q ? [`${ctype(q.dtype)}* __restrict__ yq`] : [])];
  const ins = [`const ${ctype(a.x.dtype)}* __restrict__ x`, `const ${ctype(a.scale.dtype)}* __restrict__ scale`, ...(a.bias ? [`const ${ctype(a.bias.dtype)}* __restrict__ bias`] : [])];
  const body = `${q ? KQ_HELPERS : ''}
${rowHelpers(p)}
extern "C" __global__ void __launch_bounds__(${p.launch.block[0]}) KNAME(${[...ins, ...outs].join(', ')}) {
  ${rowLoop(p, `${p.cached ? rowLoad(p, a.x.dtype, 'x', '0.0f') : ''}
    ${stats}
    ${a.stats ? 'if (lane == 0) { mean_out[row] = mean; rstd_out[row] = rstd; }' : ''}
    ${rowWrite(p, a.x.dtype, 'x', outD, 'y', valueBlock, undefined, second)}`)}
}`;
  const params: KernelSource['params'] = [
    { kind: 'in', index: 0 }, { kind: 'in', index: 1 }, ...(a.bias ? [{ kind: 'in' as const, index: 2 }] : []),
    { kind: 'out', index: 0 }, ...(a.stats ? [{ kind: 'out' as const, index: 1 }, { kind: 'out' as const, index: 2 }] : []),
    ...(q ? [{ kind: 'out' as const, index: 1 }] : []),
  ];
  return finish(a.rms ? 'kiln_rmsnorm' : 'kiln_layernorm', body, { ...p.launch, sharedBytes: 0, params });
}

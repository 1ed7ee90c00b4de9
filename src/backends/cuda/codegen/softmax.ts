// Softmax / LogSoftmax over the last axis, and the attention softmax (scale + mask + softmax, in place) that sits
// between the two GEMMs of attention. Max subtraction, float32 math.
import { rowEach, rowHelpers, rowLoad, rowLoop, rowReduce, rowWrite, planRows } from './rows.js';
import {
  broadcastDims, broadcastStrides, checkDType, ctype, finish, load, offsetCode, prod, unsupported, type DevDType, type KernelSource,
} from './types.js';

export interface SoftmaxArgs {
  dims: readonly number[];
  /** Only the last axis (-1 or rank-1); transpose first for another axis. */
  axis?: number;
  dtype: DevDType;
  /** Output dtype (default `dtype`). */
  outDtype?: DevDType;
  /** LogSoftmax. */
  log?: boolean;
}

function rowSoftmax(
  rows: number, n: number, inD: DevDType, outD: DevDType, log: boolean, extraParams: string[],
  xf: (v: string, c: string) => string, rowPre: string,
): string {
  const p = planRows(rows, n, [inD, outD]);
  const cachedExp = p.cached && !log;
  const value = log ? 'v - m - lse' : cachedExp ? 'v * inv' : 'expf(v - m) * inv';
  const body = `${rowHelpers(p)}
extern "C" __global__ void __launch_bounds__(${p.launch.block[0]}) KNAME(const ${ctype(inD)}* x, ${extraParams.join('')}${ctype(outD)}* y) {
  ${rowLoop(p, `${rowPre}
    ${p.cached ? rowLoad(p, inD, 'x', '-K_INF', xf) : ''}
    float mx = -K_INF;
    ${rowEach(p, inD, 'x', 'mx = fmaxf(mx, v);', xf)}
    const float m = ${rowReduce(p, 'mx', 'max')};
    float s = 0.0f;
    ${rowEach(p, inD, 'x', cachedExp ? 'const float e = expf(v - m); xv[c][k] = e; s += e;' : 's += expf(v - m);', xf)}
    const float tot = ${rowReduce(p, 's', 'sum')};
    const float inv = 1.0f / tot; const float lse = logf(tot); (void)inv; (void)lse;
    ${rowWrite(p, inD, 'x', outD, 'y', value, xf)}`)}
}`;
  return body;
}

/**
 * Softmax (or LogSoftmax) over the last axis. Params: in 0 X, out 0 Y (Y may be X: in place). A row whose values
 * are all -inf gives NaN, as the reference does.
 */
export function softmax(a: SoftmaxArgs): KernelSource {
  checkDType(a.dtype, 'softmax');
  const r = a.dims.length;
  if (a.axis !== undefined && a.axis !== -1 && a.axis !== r - 1) unsupported('softmax', `axis ${a.axis} is not the last axis of rank ${r}`, 'transpose the axis last, or run on the cpu backend');
  const n = r ? a.dims[r - 1] : 1, rows = prod(a.dims) / Math.max(n, 1);
  const p = planRows(rows, n, [a.dtype, a.outDtype ?? a.dtype]);
  const body = rowSoftmax(rows, n, a.dtype, a.outDtype ?? a.dtype, !!a.log, [], (v) => v, '');
  return finish(a.log ? 'kiln_logsoftmax' : 'kiln_softmax', body, { ...p.launch, sharedBytes: 0, params: [{ kind: 'in', index: 0 }, { kind: 'out', index: 0 }] });
}

export interface AttentionSoftmaxArgs {
  /** Scores [B, H, S, L] (any leading dims; the last is L). */
  scores: readonly number[];
  dtype: DevDType;
  scale: number;
  /** Boolean (true = keep) or additive float mask, broadcastable to the scores. */
  mask?: { dtype: DevDType; dims: readonly number[] };
}

/**
 * In place over L: p = softmax(scores * scale [+ mask | masked to -inf]). Params: in 0 scores, in 1 mask (when
 * given), out 0 probabilities (pass the scores buffer again to run in place, as the attention plan does).
 */
export function attentionSoftmax(a: AttentionSoftmaxArgs): KernelSource {
  checkDType(a.dtype, 'attentionSoftmax');
  const dims = a.scores, r = dims.length;
  if (r < 1) unsupported('attentionSoftmax', 'scores must have at least one axis');
  const n = dims[r - 1], rows = prod(dims) / Math.max(n, 1);
  let rowPre = '';
  let xf = (v: string) => `(${v} * ${a.scale}f)`;
  const extra: string[] = [];
  if (a.mask) {
    checkDType(a.mask.dtype, 'attentionSoftmax mask');
    const md = a.mask.dtype;
    broadcastDims([a.mask.dims, dims], 'attentionSoftmax mask');
    if (a.mask.dims.length > r) unsupported('attentionSoftmax', `mask of rank ${a.mask.dims.length} is larger than the scores' rank ${r}`);
    const st = broadcastStrides(a.mask.dims, dims);
    const colStride = st[r - 1];
    rowPre = `${offsetCode('row', dims.slice(0, -1), ['mo'], [st.slice(0, -1)], prod(a.mask.dims) < 2 ** 31 ? 'int' : 'long long', 'mr')}`;
    extra.push(`const ${ctype(md)}* mask, `);
    const mv = (c: string) => `mask[mo + ${colStride === 0 ? '0' : c}]`;
    xf = md === 'bool'
      ? (v: string, c?: string) => `(${mv(c!)} ? ${v} * ${a.scale}f : -K_INF)`
      : (v: string, c?: string) => `(${v} * ${a.scale}f + ${load(md, mv(c!))})`;
  }
  const p = planRows(rows, n, [a.dtype]);
  const body = rowSoftmax(rows, n, a.dtype, a.dtype, false, extra, xf as (v: string, c: string) => string, rowPre);
  const params: KernelSource['params'] = [{ kind: 'in', index: 0 }, ...(a.mask ? [{ kind: 'in' as const, index: 1 }] : []), { kind: 'out', index: 0 }];
  return finish('kiln_attn_softmax', body, { ...p.launch, sharedBytes: 0, params });
}

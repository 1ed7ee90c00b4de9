// Attention-family operators: Attention (scaled dot-product, MHA/GQA/MQA, KV cache), RotaryEmbedding and
// LinearAttention (recurrent linear / gated / delta / gated-delta attention).
import { defineOp, attr, type OpDef, type AttrsOf, type KernelContext, type InferContext } from '../ir/schema.js';
import { TensorData } from '../ir/tensor.js';
import type { Dim, ValueType } from '../ir/graph.js';
import type { DType } from '../ir/dtype.js';
import { tensorTypeOf } from './util.js';

type Floats = Float32Array | Float64Array;

/** Element values of a float tensor: the Float32Array itself for float32 (no copy), else decoded float64s. */
function valuesOf(t: TensorData, what: string): Floats {
  if (t.dtype === 'float32') return t.data as Float32Array;
  if (t.dtype === 'float64' || t.dtype === 'float16' || t.dtype === 'bfloat16') return t.toFloat64();
  throw new Error(`${what} must be a float tensor, got ${t.dtype}`);
}

/** A working buffer matching the precision we compute in for `dtype`. */
function buffer(dtype: DType, n: number): Floats {
  if (n > 2 ** 31 - 1) throw new Error(`refusing to allocate ${n} elements`);
  return dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
}

/** Wrap a working buffer as a tensor of `dtype` (rounding once for float16/bfloat16). */
function toTensor(dtype: DType, dims: number[], data: Floats): TensorData {
  if (dtype === 'float32' && data instanceof Float32Array) return new TensorData(dtype, dims, data);
  return TensorData.fromNumbers(dtype, dims, data);
}

function positiveInt(v: number | undefined, what: string): number {
  if (v === undefined || !Number.isInteger(v) || v <= 0) throw new Error(`${what} must be a positive integer, got ${v}`);
  return v;
}

function divide(total: number, parts: number, what: string): number {
  if (total % parts !== 0) throw new Error(`${what}: ${total} is not divisible by ${parts}`);
  return total / parts;
}

// ---------------------------------------------------------------------------------------------------------------
// Attention

interface Layout {
  B: number; heads: number; seq: number; dim: number;
  /** offset of element (b, h, s, 0); the last axis is contiguous. */
  at(b: number, h: number, s: number): number;
}

/** View a 3-D [B, S, H*D] or 4-D [B, H, S, D] tensor as (b, h, s, d). */
function layoutOf(t: TensorData, heads: number | undefined, what: string): Layout {
  if (t.rank === 4) {
    const [B, H, S, D] = t.dims;
    return { B, heads: H, seq: S, dim: D, at: (b, h, s) => ((b * H + h) * S + s) * D };
  }
  if (t.rank === 3) {
    const H = positiveInt(heads, `the number of heads for 3-D ${what}`);
    const [B, S, hidden] = t.dims;
    const D = divide(hidden, H, `${what} hidden size over ${H} heads`);
    return { B, heads: H, seq: S, dim: D, at: (b, h, s) => (b * S + s) * hidden + h * D };
  }
  throw new Error(`${what} must be 3-D or 4-D, got shape [${t.dims.join(', ')}]`);
}

/** Concatenate past (4-D [B, H, P, D]) and current (layout) along the sequence axis into a [B, H, P+L, D] buffer. */
function concatKV(past: TensorData | undefined, cur: Layout, curData: Floats, dtype: DType, what: string): { data: Floats; T: number; P: number } {
  const { B, heads: H, seq: L, dim: D } = cur;
  let P = 0;
  let pastData: Floats | undefined;
  if (past) {
    if (past.rank !== 4 || past.dims[0] !== B || past.dims[1] !== H || past.dims[3] !== D) {
      throw new Error(`past ${what} must have shape [${B}, ${H}, past_length, ${D}], got [${past.dims.join(', ')}]`);
    }
    P = past.dims[2];
    pastData = valuesOf(past, `past ${what}`);
  }
  const T = P + L;
  const out = buffer(dtype, B * H * T * D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = (b * H + h) * T * D;
      if (pastData) out.set(pastData.subarray((b * H + h) * P * D, (b * H + h + 1) * P * D), base);
      for (let s = 0; s < L; s++) {
        const o = cur.at(b, h, s);
        out.set(curData.subarray(o, o + D), base + (P + s) * D);
      }
    }
  }
  return { data: out, T, P };
}

interface MaskView {
  values: Float64Array;
  strides: [number, number, number];
  /** length of the mask's last axis; keys beyond it are masked out (padding with -inf). */
  width: number;
  jStride: number;
}

/** The attention mask as additive bias broadcast to [B, H, S, T] (bool: false -> -inf). */
function maskView(m: TensorData, dims: [number, number, number, number], padShort: boolean): MaskView {
  if (m.rank < 1 || m.rank > 4) throw new Error(`attn_mask must have rank 1 to 4, got shape [${m.dims.join(', ')}]`);
  const md = [...new Array<number>(4 - m.rank).fill(1), ...m.dims];
  const values = new Float64Array(m.size);
  if (m.dtype === 'bool') {
    const d = m.data as Uint8Array;
    for (let i = 0; i < values.length; i++) values[i] = d[i] ? 0 : -Infinity;
  } else values.set(m.toFloat64());
  const st = [md[1] * md[2] * md[3], md[2] * md[3], md[3]];
  const strides = [0, 1, 2].map((k) => {
    if (md[k] === dims[k]) return st[k];
    if (md[k] === 1) return 0;
    throw new Error(`attn_mask shape [${m.dims.join(', ')}] does not broadcast to [${dims.join(', ')}]`);
  }) as [number, number, number];
  const T = dims[3];
  const last = md[3];
  if (last > T) throw new Error(`attn_mask's last dimension ${last} exceeds the total sequence length ${T}`);
  if (last === T) return { values, strides, width: T, jStride: 1 };
  if (last === 1 && !padShort) return { values, strides, width: T, jStride: 0 };
  return { values, strides, width: last, jStride: 1 };
}

const attentionAttrs = {
  is_causal: attr.int(0), kv_num_heads: attr.int(), q_num_heads: attr.int(), qk_matmul_output_mode: attr.int(0),
  scale: attr.float(), softcap: attr.float(0), softmax_precision: attr.int(),
};

type AttentionAttrs = AttrsOf<typeof attentionAttrs>;

function runAttention(ctx: KernelContext<AttentionAttrs>): (TensorData | null)[] {
  const Q = ctx.tensor(0), K = ctx.tensor(1), V = ctx.tensor(2);
  const mask = ctx.optionalTensor(3), pastK = ctx.optionalTensor(4), pastV = ctx.optionalTensor(5);
  const nonpad = ctx.opset >= 24 ? ctx.optionalTensor(6) : undefined;
  const a = ctx.attrs;
  if (Q.rank !== K.rank || Q.rank !== V.rank) {
    throw new Error(`Q, K and V must all be 3-D or all 4-D, got ranks ${Q.rank}, ${K.rank} and ${V.rank}`);
  }
  if (!!pastK !== !!pastV) throw new Error('past_key and past_value must be given together');
  const dtype = Q.dtype;
  const q = layoutOf(Q, a.q_num_heads, 'Q');
  const k = layoutOf(K, a.kv_num_heads, 'K');
  const v = layoutOf(V, a.kv_num_heads, 'V');
  const { B, heads: qH, seq: S, dim: D } = q;
  const kvH = k.heads;
  if (k.B !== B || v.B !== B) throw new Error(`batch sizes differ: Q ${B}, K ${k.B}, V ${v.B}`);
  if (k.dim !== D) throw new Error(`Q and K head sizes differ: ${D} and ${k.dim}`);
  if (v.heads !== kvH || v.seq !== k.seq) throw new Error(`K and V disagree: ${kvH} vs ${v.heads} heads, ${k.seq} vs ${v.seq} positions`);
  if (qH % kvH !== 0) throw new Error(`q_num_heads ${qH} must be a multiple of kv_num_heads ${kvH}`);
  const G = qH / kvH;
  const Dv = v.dim;

  const qd = valuesOf(Q, 'Q');
  const kc = concatKV(pastK, k, valuesOf(K, 'K'), dtype, 'key');
  const vc = concatKV(pastV, v, valuesOf(V, 'V'), dtype, 'value');
  const T = kc.T, P = kc.P;
  const kd = kc.data, vd = vc.data;

  const scale = a.scale ?? 1 / Math.sqrt(D);
  const softcap = a.softcap ?? 0;
  const causal = a.is_causal !== 0;
  const mode = a.qk_matmul_output_mode;
  if (mode < 0 || mode > 3) throw new Error(`qk_matmul_output_mode must be 0..3, got ${mode}`);
  const mv = mask ? maskView(mask, [B, qH, S, T], ctx.opset >= 24) : undefined;
  let valid: number[] | undefined;
  if (nonpad) {
    if (nonpad.size !== B) throw new Error(`nonpad_kv_seqlen must have ${B} entries (one per batch), got ${nonpad.size}`);
    if (pastK) throw new Error('nonpad_kv_seqlen cannot be combined with past_key/past_value');
    valid = nonpad.toNumberArray();
  }

  const wantQK = ctx.wantsOutput(3);
  const qk = wantQK ? buffer(dtype, B * qH * S * T) : undefined;
  const y = buffer(dtype, B * qH * S * Dv);
  const yAt = Q.rank === 3 ? (b: number, h: number, s: number) => (b * S + s) * qH * Dv + h * Dv : (b: number, h: number, s: number) => ((b * qH + h) * S + s) * Dv;
  const row = new Float64Array(T);
  const acc = new Float64Array(Dv);

  for (let b = 0; b < B; b++) {
    const limit = valid ? valid[b] : T;
    for (let h = 0; h < qH; h++) {
      const kh = Math.floor(h / G);
      const kBase = (b * kvH + kh) * T * D, vBase = (b * kvH + kh) * T * Dv;
      for (let s = 0; s < S; s++) {
        const qo = q.at(b, h, s);
        const qkOff = ((b * qH + h) * S + s) * T;
        // scores
        for (let j = 0; j < T; j++) {
          let dot = 0;
          const ko = kBase + j * D;
          for (let d = 0; d < D; d++) dot += qd[qo + d] * kd[ko + d];
          row[j] = dot * scale;
        }
        if (qk && mode === 0) qk.set(row, qkOff);
        if (softcap > 0) for (let j = 0; j < T; j++) row[j] = softcap * Math.tanh(row[j] / softcap);
        if (qk && mode === 1) qk.set(row, qkOff);
        if (mv) {
          const mo = b * mv.strides[0] + h * mv.strides[1] + s * mv.strides[2];
          for (let j = 0; j < T; j++) row[j] += j < mv.width ? mv.values[mo + j * mv.jStride] : -Infinity;
        }
        if (causal) for (let j = s + P + 1; j < T; j++) row[j] = -Infinity;
        for (let j = limit; j < T; j++) row[j] = -Infinity;
        if (qk && mode === 2) qk.set(row, qkOff);
        // softmax in one pass for the max, one for the exponentials
        let max = -Infinity;
        for (let j = 0; j < T; j++) if (row[j] > max) max = row[j];
        let sum = 0;
        for (let j = 0; j < T; j++) {
          const e = Math.exp(row[j] - max);
          row[j] = e;
          sum += e;
        }
        for (let j = 0; j < T; j++) row[j] /= sum;
        if (qk && mode === 3) qk.set(row, qkOff);
        acc.fill(0);
        for (let j = 0; j < T; j++) {
          const p = row[j];
          if (p === 0) continue;
          const vo = vBase + j * Dv;
          for (let d = 0; d < Dv; d++) acc[d] += p * vd[vo + d];
        }
        // a fully masked row has no finite score: the softmax is NaN, as in the ONNX function body
        if (!(sum > 0) || !Number.isFinite(sum)) acc.fill(NaN);
        y.set(acc, yAt(b, h, s));
      }
    }
  }

  const yDims = Q.rank === 3 ? [B, S, qH * Dv] : [B, qH, S, Dv];
  const outs: (TensorData | null)[] = [toTensor(dtype, yDims, y)];
  if (ctx.numOutputs > 1) outs.push(ctx.wantsOutput(1) ? toTensor(dtype, [B, kvH, T, D], kd) : null);
  if (ctx.numOutputs > 2) outs.push(ctx.wantsOutput(2) ? toTensor(dtype, [B, kvH, T, Dv], vd) : null);
  if (ctx.numOutputs > 3) outs.push(qk ? toTensor(dtype, [B, qH, S, T], qk) : null);
  return outs;
}

const dimDiv = (d: Dim, n: number | undefined): Dim => (typeof d === 'number' && n ? d / n : undefined);
const dimMul = (d: Dim, n: number | undefined): Dim => (typeof d === 'number' && n !== undefined ? d * n : undefined);
const dimAdd = (x: Dim, y: Dim): Dim => (typeof x === 'number' && typeof y === 'number' ? x + y : undefined);

function inferAttention(ctx: InferContext<AttentionAttrs>): ValueType[] {
  const [q, k, v, , pk] = [0, 1, 2, 3, 4].map((i) => tensorTypeOf(ctx.inputTypes[i]));
  if (!q) return [{ kind: 'unknown' }, { kind: 'unknown' }, { kind: 'unknown' }, { kind: 'unknown' }];
  const dtype = q.dtype;
  const t = (shape?: Dim[]): ValueType => ({ kind: 'tensor', dtype, shape });
  const qs = q.shape, ks = k?.shape, vs = v?.shape;
  let y: Dim[] | undefined, pkey: Dim[] | undefined, pval: Dim[] | undefined, qk: Dim[] | undefined;
  const qH = qs?.length === 4 ? qs[1] : ctx.attrs.q_num_heads;
  const kvH = ks?.length === 4 ? ks[1] : ctx.attrs.kv_num_heads;
  const past = pk?.shape ? pk.shape[2] : ctx.inputTypes[4] ? undefined : 0;
  const L = ks ? (ks.length === 4 ? ks[2] : ks[1]) : undefined;
  const T = dimAdd(past, L);
  const B = qs?.[0];
  if (qs && vs && qs.length === 4 && vs.length === 4) {
    y = [B, qs[1], qs[2], vs[3]];
    pkey = ks ? [B, kvH, T, ks[3]] : undefined;
    pval = [B, kvH, T, vs[3]];
    qk = [B, qH, qs[2], T];
  } else if (qs && vs && qs.length === 3 && vs.length === 3) {
    const Dv = dimDiv(vs[2], ctx.attrs.kv_num_heads);
    y = [B, qs[1], dimMul(Dv, ctx.attrs.q_num_heads)];
    pkey = ks ? [B, kvH, T, dimDiv(ks[2], ctx.attrs.kv_num_heads)] : undefined;
    pval = [B, kvH, T, Dv];
    qk = [B, qH, qs[1], T];
  }
  return [t(y), t(pkey), t(pval), t(qk)];
}

const Attention = defineOp({
  name: 'Attention', versions: [23, 24], attrs: attentionAttrs, inputs: [3, 7], outputs: [1, 4],
  doc: 'Scaled dot-product attention (MHA/GQA/MQA) with mask, causal masking, softcap and a KV cache.',
  infer: (ctx) => inferAttention(ctx),
  run: (ctx) => runAttention(ctx),
});

// ---------------------------------------------------------------------------------------------------------------
// RotaryEmbedding

const RotaryEmbedding = defineOp({
  name: 'RotaryEmbedding', versions: [23],
  attrs: { interleaved: attr.int(0), num_heads: attr.int(0), rotary_embedding_dim: attr.int(0) },
  inputs: [3, 4], outputs: [1, 1],
  doc: 'Rotary positional embedding of [B, H, S, D] or [B, S, H*D] inputs from cos/sin caches.',
  infer: (ctx) => [ctx.inputTypes[0] ?? { kind: 'unknown' }],
  run: (ctx) => {
    const X = ctx.tensor(0), cosT = ctx.tensor(1), sinT = ctx.tensor(2), pos = ctx.optionalTensor(3);
    const a = ctx.attrs;
    let x: Layout;
    if (X.rank === 4) x = layoutOf(X, undefined, 'X');
    else if (X.rank === 3) x = layoutOf(X, a.num_heads || undefined, 'X');
    else throw new Error(`X must be 3-D or 4-D, got shape [${X.dims.join(', ')}]`);
    const { B, heads: H, seq: S, dim: D } = x;
    const rd = a.rotary_embedding_dim || D;
    if (rd % 2 !== 0 || rd > D) throw new Error(`rotary_embedding_dim must be even and at most the head size ${D}, got ${rd}`);
    const half = rd / 2;
    if (cosT.dims.join() !== sinT.dims.join()) throw new Error(`cos_cache [${cosT.dims}] and sin_cache [${sinT.dims}] must have the same shape`);
    const C = cosT.dims[cosT.rank - 1];
    if (C < half) throw new Error(`the caches' last dimension ${C} is smaller than rotary_embedding_dim / 2 = ${half}`);
    let rowOf: (b: number, s: number) => number;
    if (pos) {
      if (cosT.rank !== 2 || pos.rank !== 2 || pos.dims[0] !== B || pos.dims[1] !== S) {
        throw new Error(`with position_ids [B, S] = [${B}, ${S}] the caches must be 2-D; got position_ids [${pos.dims}] and cache [${cosT.dims}]`);
      }
      const p = pos.toNumberArray();
      const maxPos = cosT.dims[0];
      rowOf = (b, s) => {
        const r = p[b * S + s];
        if (!(r >= 0 && r < maxPos)) throw new Error(`position id ${r} is outside the cache of ${maxPos} positions`);
        return r * C;
      };
    } else {
      if (cosT.rank !== 3 || cosT.dims[0] !== B || cosT.dims[1] !== S) {
        throw new Error(`without position_ids the caches must have shape [${B}, ${S}, ${half}], got [${cosT.dims.join(', ')}]`);
      }
      rowOf = (b, s) => (b * S + s) * C;
    }
    const xd = valuesOf(X, 'X'), cd = valuesOf(cosT, 'cos_cache'), sd = valuesOf(sinT, 'sin_cache');
    const out = buffer(X.dtype, X.size);
    out.set(xd);
    const inter = a.interleaved !== 0;
    for (let b = 0; b < B; b++) {
      for (let s = 0; s < S; s++) {
        const r = rowOf(b, s);
        for (let h = 0; h < H; h++) {
          const o = x.at(b, h, s);
          for (let i = 0; i < half; i++) {
            const c = cd[r + i], sn = sd[r + i];
            const i1 = inter ? o + 2 * i : o + i, i2 = inter ? i1 + 1 : i1 + half;
            const x1 = xd[i1], x2 = xd[i2];
            out[i1] = c * x1 - sn * x2;
            out[i2] = sn * x1 + c * x2;
          }
        }
      }
    }
    return [toTensor(X.dtype, [...X.dims], out)];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// LinearAttention

const UPDATE_RULES = ['linear', 'gated', 'delta', 'gated_delta'] as const;

const LinearAttention = defineOp({
  name: 'LinearAttention', versions: [27],
  attrs: { q_num_heads: attr.int(), kv_num_heads: attr.int(), update_rule: attr.string('gated_delta'), scale: attr.float(), chunk_size: attr.int() },
  inputs: [3, 6], outputs: [1, 2],
  doc: 'Recurrent linear attention (linear, gated, delta, gated_delta update rules) over packed [B, T, H*D] inputs.',
  infer: (ctx) => {
    const q = tensorTypeOf(ctx.inputTypes[0]), v = tensorTypeOf(ctx.inputTypes[2]);
    if (!q) return [{ kind: 'unknown' }, { kind: 'unknown' }];
    const { q_num_heads: qH, kv_num_heads: kvH } = ctx.attrs;
    const qs = q.shape, vs = v?.shape;
    const dk = qs ? dimDiv(qs[2], qH) : undefined;
    const dv = vs ? dimDiv(vs[2], kvH) : undefined;
    return [
      { kind: 'tensor', dtype: q.dtype, shape: qs ? [qs[0], qs[1], dimMul(dv, qH)] : undefined },
      { kind: 'tensor', dtype: q.dtype, shape: qs ? [qs[0], kvH, dk, dv] : undefined },
    ];
  },
  run: (ctx) => {
    const Qt = ctx.tensor(0), Kt = ctx.tensor(1), Vt = ctx.tensor(2);
    const past = ctx.optionalTensor(3), decay = ctx.optionalTensor(4), beta = ctx.optionalTensor(5);
    const a = ctx.attrs;
    const rule = a.update_rule as (typeof UPDATE_RULES)[number];
    if (!UPDATE_RULES.includes(rule)) throw new Error(`update_rule must be one of ${UPDATE_RULES.join(', ')}, got '${a.update_rule}'`);
    const qH = positiveInt(a.q_num_heads, 'q_num_heads'), kvH = positiveInt(a.kv_num_heads, 'kv_num_heads');
    if (qH % kvH !== 0) throw new Error(`q_num_heads ${qH} must be a multiple of kv_num_heads ${kvH}`);
    for (const [t, n] of [[Qt, 'query'], [Kt, 'key'], [Vt, 'value']] as const) {
      if (t.rank !== 3) throw new Error(`${n} must be 3-D [B, T, H*D], got shape [${t.dims.join(', ')}]`);
    }
    const [B, T] = Qt.dims;
    if (Kt.dims[0] !== B || Kt.dims[1] !== T || Vt.dims[0] !== B || Vt.dims[1] !== T) {
      throw new Error(`query [${Qt.dims}], key [${Kt.dims}] and value [${Vt.dims}] must share batch and sequence dimensions`);
    }
    const dk = divide(Qt.dims[2], qH, 'query hidden size over q_num_heads');
    if (Kt.dims[2] !== kvH * dk) throw new Error(`key hidden size must be kv_num_heads * d_k = ${kvH * dk}, got ${Kt.dims[2]}`);
    const dv = divide(Vt.dims[2], kvH, 'value hidden size over kv_num_heads');
    const gated = rule === 'gated' || rule === 'gated_delta', delta = rule === 'delta' || rule === 'gated_delta';
    if (gated && !decay) throw new Error(`update_rule '${rule}' needs the decay input`);
    if (delta && !beta) throw new Error(`update_rule '${rule}' needs the beta input`);
    // decay per key dimension [B, T, H_kv*d_k] or per head [B, T, H_kv]; beta per head [B, T, H_kv] or shared [B, T, 1]
    const gPer = decay ? divide(decay.dims[2] ?? 0, kvH, 'decay last dimension over kv_num_heads') : 0;
    if (decay && (decay.rank !== 3 || decay.dims[0] !== B || decay.dims[1] !== T || (gPer !== dk && gPer !== 1))) {
      throw new Error(`decay must have shape [${B}, ${T}, ${kvH * dk}] or [${B}, ${T}, ${kvH}], got [${decay.dims.join(', ')}]`);
    }
    const bW = beta ? beta.dims[2] : 0;
    if (beta && (beta.rank !== 3 || beta.dims[0] !== B || beta.dims[1] !== T || (bW !== kvH && bW !== 1))) {
      throw new Error(`beta must have shape [${B}, ${T}, ${kvH}] or [${B}, ${T}, 1], got [${beta.dims.join(', ')}]`);
    }
    const stateSize = B * kvH * dk * dv;
    // the ONNX function keeps the state and does the arithmetic in float32
    const state = new Float32Array(stateSize);
    if (past) {
      if (past.rank !== 4 || past.dims.join() !== [B, kvH, dk, dv].join()) {
        throw new Error(`past_state must have shape [${B}, ${kvH}, ${dk}, ${dv}], got [${past.dims.join(', ')}]`);
      }
      state.set(valuesOf(past, 'past_state'));
    }
    const qd = valuesOf(Qt, 'query'), kd = valuesOf(Kt, 'key'), vd = valuesOf(Vt, 'value');
    const gd = decay ? valuesOf(decay, 'decay') : undefined, bd = beta ? valuesOf(beta, 'beta') : undefined;
    const scale = a.scale ?? 1 / Math.sqrt(dk);
    const G = qH / kvH;
    const out = buffer(Qt.dtype, B * T * qH * dv);
    const retrieved = new Float64Array(dv);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        const bt = b * T + t;
        for (let h = 0; h < kvH; h++) {
          const S0 = (b * kvH + h) * dk * dv;
          const ko = bt * kvH * dk + h * dk, vo = bt * kvH * dv + h * dv;
          if (gd) {
            const go = bt * kvH * gPer + h * gPer;
            for (let i = 0; i < dk; i++) {
              const f = Math.exp(gd[go + (gPer === 1 ? 0 : i)]);
              for (let j = 0; j < dv; j++) state[S0 + i * dv + j] *= f;
            }
          }
          if (delta) {
            const bv = bd![bt * bW + (bW === 1 ? 0 : h)];
            retrieved.fill(0);
            for (let i = 0; i < dk; i++) {
              const kv = kd[ko + i];
              for (let j = 0; j < dv; j++) retrieved[j] += state[S0 + i * dv + j] * kv;
            }
            for (let j = 0; j < dv; j++) retrieved[j] = bv * (vd[vo + j] - retrieved[j]);
            for (let i = 0; i < dk; i++) {
              const kv = kd[ko + i];
              for (let j = 0; j < dv; j++) state[S0 + i * dv + j] += kv * retrieved[j];
            }
          } else {
            for (let i = 0; i < dk; i++) {
              const kv = kd[ko + i];
              for (let j = 0; j < dv; j++) state[S0 + i * dv + j] += kv * vd[vo + j];
            }
          }
          // every query head of this KV group reads the updated state
          for (let g = 0; g < G; g++) {
            const qh = h * G + g;
            const qo = bt * qH * dk + qh * dk, oo = bt * qH * dv + qh * dv;
            for (let j = 0; j < dv; j++) {
              let sum = 0;
              for (let i = 0; i < dk; i++) sum += qd[qo + i] * state[S0 + i * dv + j];
              out[oo + j] = scale * sum;
            }
          }
        }
      }
    }
    const outs: (TensorData | null)[] = [toTensor(Qt.dtype, [B, T, qH * dv], out)];
    if (ctx.numOutputs > 1) outs.push(ctx.wantsOutput(1) ? toTensor(Qt.dtype, [B, kvH, dk, dv], Qt.dtype === 'float32' ? state : Float64Array.from(state)) : null);
    return outs;
  },
});

const ops: OpDef<any>[] = [Attention, RotaryEmbedding, LinearAttention];
export default ops;

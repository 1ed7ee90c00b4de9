// Code generation for the CPU backend: which layers get native kernels, and their C source with shapes baked in.
// Each layer becomes one exported function per variant (register tile) plus, for layers with constant weights, a
// packing function run once at load. Only float32 layers with fully known shapes and enough work are offered;
// everything else keeps its reference kernel.
import type { Model, Node, ValueType } from '../../ir/graph.js';
import { parseExpr } from '../../ir/expr.js';
import { sameDims } from '../../ir/tensor.js';
import { KILN_DOMAIN } from '../../ops/fused.js';
import { BINARY, UNARY } from '../../passes/fuse.js';
import type { Isa } from './compiler.js';
import { renderC, renderActivation, renderActivation512, cFloat } from './expr-c.js';
import { LAYER_ARGS } from './native.js';
import { int8LayerKernel, isInt8Op, type QuantOut } from './int8.js';
import { fusedConv } from './conv.js';
import { bf16MatMulVariants } from './bf16.js';
import { pool, globalPool, reduceTrailing } from './pool.js';
import { transpose, concat, slice, gather, cast } from './movement.js';

/** Where a layer function's pointer argument comes from. */
export type Arg = { in: number } | { packed: true } | { out: true } | { none: true };

export interface Variant {
  tactic: string;
  fn: string;
  /** Packing function for the constant operand and which node inputs it reads. */
  pack?: { fn: string; inputs: number[] };
  /** The function also runs with its residual input's buffer as its output (a3 == a4): it adds its product to the
   * residual there, and its epilogue leaves the residual term out (the runner passes it so when the residual dies
   * at this layer: one output stream less than reading the residual and writing a fresh buffer). */
  accumulate?: boolean;
}

export interface LayerKernel {
  node: string;
  variants: Variant[];
  args: Arg[];
  /** Input dims the code was generated for (null for absent inputs), checked before each call. */
  inputDims: (number[] | null)[];
  outDims: number[];
  source: string;
  /** Present when the code takes the leading (batch) dim at run time: per input, whether it carries that dim (the
   * others must match `inputDims` exactly). The output's leading dim is the run-time batch. */
  batch?: boolean[];
  /** Rough work at the generated shapes (multiply-adds or elements), to pick a synchronous call for small layers. */
  work: number;
  /** int8/uint8 output of a quantized layer (see int8.ts; absent: float32). */
  outDtype?: QuantOut;
  /** A function computing this layer together with the layer producing its first input (\`producer\`, whose output
   * nothing else reads), for chains where the two run back to back. Its arguments: the producer's input, raw weights
   * and bias, then this layer's arguments after its first input (see depthwise). \`tactics\`: where the function reads
   * this layer's packed weights, the variants whose packing it knows (the pair is used only after one of them). */
  pair?: { producer: string; fn: string; tactics?: string[] };
}

/** Below this much work (multiply-adds, or output elements) a layer keeps its reference kernel. A synchronous
 * native call costs about a microsecond, far less than the reference kernels at any size, so only empty layers stay
 * there; whether a model is worth compiling at all is `MIN_MODEL_WORK`. */
export const MIN_GEMM_WORK = 1;
export const MIN_ELEMENTS = 1;
/** A model gets compiled kernels only when one of its layers has at least this much work: compiling costs a fraction
 * of a second, which one-op models (the conformance cases) never earn back. */
export const MIN_MODEL_WORK = 16384;

/** Register tiles offered per ISA: [rows, vectors of columns]. */
export const TILES: Record<Isa, [number, number][]> = { avx512: [[6, 2], [8, 2]], avx2: [[6, 2], [4, 3]], portable: [[6, 2], [4, 3]] };
export const VW: Record<Isa, number> = { avx512: 16, avx2: 8, portable: 4 };

export const tilesOf = (isa: Isa) => TILES[isa];
export interface Ctx {
  model: Model;
  typeOf: (name: string) => ValueType | undefined;
  isa: Isa;
  id: string;
  /** Per input, whether it carries the output's leading dim when the batch changes (set only where every input
   * either carries it or keeps its shape): a generator that honours it reads the batch from \`nb\`. */
  batch?: boolean[];
  /** The bf16 math mode (bf16.ts): convolutions and MatMuls also offer variants that multiply in bf16. */
  bf16?: boolean;
}

export const prod = (a: readonly number[]) => a.reduce((x, y) => x * y, 1);
export const attrOf = <T>(n: Node, k: string, d: T): T => (n.attrs[k]?.value as T | undefined) ?? d;

/** A value's dtype and static dims (initializers included); undefined when its shape is not fully known. */
export function typeOfName(c: Pick<Ctx, 'model' | 'typeOf'>, name: string): { dtype: string; dims: number[] } | undefined {
  const init = c.model.graph.initializers.get(name);
  if (init) return { dtype: init.dtype, dims: [...init.dims] };
  const t = c.typeOf(name);
  if (t?.kind !== 'tensor' || !t.shape || t.shape.some((d) => typeof d !== 'number')) return undefined;
  return { dtype: t.dtype, dims: t.shape as number[] };
}

export const isConst = (c: Ctx, name: string) => c.model.graph.initializers.has(name);

/** The native kernel for a node, or undefined when the node keeps its reference kernel. */
export function layerKernel(node: Node, model: Model, typeOf: Ctx['typeOf'], isa: Isa, id: string, batch?: boolean[], bf16?: boolean): LayerKernel | undefined {
  const c: Ctx = { model, typeOf, isa, id, batch, ...(bf16 ? { bf16 } : {}) };
  if (isInt8Op(node, typeOf)) return int8LayerKernel(node, model, typeOf, isa, id);
  const outs = node.outputs.filter(Boolean);
  if (outs.length !== 1 || node.outputs[0] !== outs[0]) return undefined;
  const key = `${node.domain === KILN_DOMAIN ? 'kiln' : node.domain || ''}:${node.opType}`;
  const outT = typeOfName(c, outs[0]);
  if (outT?.dtype !== 'float32') return undefined;
  const out = outT.dims;
  const types = node.inputs.map((x) => (x ? typeOfName(c, x) ?? null : null));
  // float32 throughout; attention masks may also be bool, Slice's starts/ends/axes/steps are integer constants,
  // Gather's indices integers, and Cast reads integers or bool
  const int = (t: { dtype: string }) => t.dtype === 'int64' || t.dtype === 'int32';
  const dtypeOk = (t: { dtype: string }, i: number) => t.dtype === 'float32' || (key === 'kiln:Attention' && i === 3 && t.dtype === 'bool')
    || (key === ':Slice' && i >= 1 && int(t) && isConst(c, node.inputs[i])) || (key === ':Gather' && i === 1 && int(t))
    || (key === ':Cast' && ['int64', 'int32', 'bool', 'uint8', 'int8'].includes(t.dtype))
    || ((key === ':ReduceMean' || key === ':ReduceMax') && i === 1 && t.dtype === 'int64' && isConst(c, node.inputs[i]));
  if (node.inputs.some((x, i) => x && (!types[i] || !dtypeOk(types[i]!, i)))) return undefined;
  const ins = types.map((t) => t?.dims ?? null);
  const gen = GENERATORS[key];
  const k = gen?.(c, node, ins, out);
  if (!k) return undefined;
  const { batched, work, ...rest } = k;
  return { node: node.name, inputDims: ins, outDims: out, ...rest, work: work ?? prod(out), ...(batched && batch ? { batch } : {}) };
}

export type GenResult = Omit<LayerKernel, 'node' | 'inputDims' | 'outDims' | 'batch' | 'work'> & { batched?: boolean; work?: number };
export type Gen = (c: Ctx, n: Node, ins: (number[] | null)[], out: number[]) => GenResult | undefined;

/** The batch expression for generated code: the run-time \`nb\` where the layer is batch-generic, else the constant. */
export const nbOr = (c: Ctx, b0: number) => (c.batch ? 'nb' : String(b0));

const params = `${Array.from({ length: LAYER_ARGS }, (_, i) => `void *a${i}`).join(', ')}, int nb`;
export const exported = (fn: string, body: string) => `KEXPORT void ${fn}(${params}) {\n  (void)nb;\n${body}\n}\n`;

/** Epilogue over one C tile: alpha scaling, bias, residual, activation. `bias` and `res` render element reads. */
export function epilogue(fn: string, alpha: number, bias: string | undefined, res: string | undefined, act: string): string | undefined {
  if (alpha === 1 && !bias && !res && act === 'v') return undefined;
  const terms = [alpha === 1 ? 'c[r * ldc + j]' : `c[r * ldc + j] * ${cFloat(alpha)}`, bias, res].filter(Boolean).join(' + ');
  return `static void ${fn}(const void *ctx, float *restrict c, int ldc, int i0, int mi, int j0, int nj) {
  const float *const *p = ctx; (void)p;
  for (int r = 0; r < mi; r++) {
    #pragma GCC ivdep
    for (int j = 0; j < nj; j++) { float v = ${terms}; c[r * ldc + j] = ${act}; }
  }
}\n`;
}

/** The accumulate mode's epilogue (no residual term; may be none) and the statement that switches a layer function's
 * gemm_t / tconv_t \`g\` to it when the runner passes the residual's buffer as the output. */
export function accumulateEpilogue(id: string, epi: string | undefined): { src: string; set: string } {
  return { src: epi ?? '', set: `  if (a3 && a3 == a4) { g.accumulate = 1; g.epi = ${epi ? `e${id}i` : 'NULL'}; }\n` };
}

/** The statement that gives a gemm_t / pw_t \`g\` the epilogue its tiles apply in their stores (kfuse_t in
 * kernels/tiles.c.ts: per-row bias, then ReLU, Clip or HardSwish) in place of the generic pass, or undefined where the
 * layer's activation is another one. \`bias\`: the C pointer to the bias (or NULL). With a residual (\`res\`) only the
 * accumulate mode takes it (the residual is then in C already): elsewhere the generic epilogue adds the residual.
 * KILN_FUSE_EPI=0 at build leaves every layer to the generic epilogue (for A/B runs). */
export function fusedEpilogue(n: Node, bias: string, res: boolean, indent = '  '): string | undefined {
  if (process.env.KILN_FUSE_EPI === '0') return undefined;
  const name = attrOf<string>(n, 'activation', ''), p = attrOf<number[]>(n, 'activation_params', []);
  const act = ({ '': 'KFUSE_NONE', Relu: 'KFUSE_RELU', Clip: 'KFUSE_CLIP', HardSwish: 'KFUSE_HARDSWISH' } as Record<string, string>)[name];
  if (!act || (name === 'Clip' && p.length < 2) || (name === '' && bias === 'NULL')) return undefined;
  const fu = `${indent}const kfuse_t fu = { ${bias}, ${act}, ${name === 'Clip' ? `${cFloat(p[0])}, ${cFloat(p[1])}` : '0, 0'} };\n`;
  return fu + (res ? `${indent}if (a3 && a3 == a4) { g.accumulate = 1; g.epi = NULL; g.fuse = &fu; }\n` : `${indent}g.epi = NULL; g.fuse = &fu;\n`);
}

export function activation(n: Node): string | undefined {
  return renderActivation(attrOf(n, 'activation', ''), attrOf<number[]>(n, 'activation_params', []), 'v');
}

/** The layer's activation over an AVX-512 vector variable \`x\` (renderActivation512), or undefined. */
export function activation512(n: Node, x = 'v'): string | undefined {
  return renderActivation512(attrOf(n, 'activation', ''), attrOf<number[]>(n, 'activation_params', []), x);
}

/** kiln:FusedMatMul with a constant 2-D B: row-major A packed per task, B packed once into panels. */
const fusedMatMul: Gen = (c, n, ins, out) => {
  const [a, b, bias, res] = ins;
  const gemm = attrOf(n, 'gemm', 0), transA = attrOf(n, 'transA', 0), transB = attrOf(n, 'transB', 0), alpha = attrOf(n, 'alpha', 1);
  if (!a || !b || transA || b.length !== 2 || !isConst(c, n.inputs[1]) || a.length < 2) return undefined;
  if (gemm && a.length !== 2) return undefined;
  const K = a[a.length - 1], N = out[out.length - 1], M = prod(a.slice(0, -1));
  if ((transB ? b[1] : b[0]) !== K || (transB ? b[0] : b[1]) !== N || prod(out) !== M * N || M * N * K < MIN_GEMM_WORK) return undefined;
  const biasRead = !bias ? undefined : prod(bias) === 1 ? 'p[0][0]' : prod(bias) === N && bias[bias.length - 1] === N ? 'p[0][j0 + j]'
    : sameDims(bias, out) ? 'p[0][(size_t)(i0 + r) * N_ + j0 + j]' : null;
  if (biasRead === null || (res && !sameDims(res, out))) return undefined;
  const act = activation(n);
  if (act === undefined) return undefined;
  // batch-generic: M scales with A's leading dim; a full-size bias or the residual must scale with it
  const bt = c.batch, fullBias = !!biasRead?.includes('N_');
  const batched = !!bt && bt[0] && (!fullBias || bt[2]) && (!res || bt[3]);
  const Mexpr = batched ? `nb * ${M / a[0]}` : String(M);
  const id = c.id;
  const epi = epilogue(`e${id}`, alpha, biasRead, res ? 'p[1][(size_t)(i0 + r) * N_ + j0 + j]' : undefined, act);
  // accumulating onto the residual: C = res + A B, then alpha must be 1 (it would scale the residual too)
  const acc = res && alpha === 1 ? accumulateEpilogue(id, epilogue(`e${id}i`, 1, biasRead, undefined, act)) : undefined;
  const variants: Variant[] = [];
  let src = `#define N_ ${N}\n${epi ?? ''}${acc?.src ?? ''}`;
  for (const [mr, nv] of TILES[c.isa]) {
    const tile = `${mr}x${nv}`, nr = nv * VW[c.isa];
    const fn = `L${id}_${tile}`, pack = `P${id}_${tile}`;
    src += `KEXPORT void *${pack}(void *w, void *unused) {
  float *o = kiln_alloc((size_t)${Math.ceil(N / nr)} * ${nr} * ${K});
  kiln_pack_b(w, ${transB ? `1, ${K}` : `${N}, 1`}, ${K}, ${N}, ${nr}, o);
  return o;
}\n`;
    src += exported(fn, `  const float *p[2] = { a2, a3 };
  gemm_t g = { ${Mexpr}, ${N}, ${K}, NULL, a0, ${K}, a1, NULL, ${epi ? `e${id}` : 'NULL'}, p, a4, ${N} };
${acc?.set ?? ''}  kiln_gemm_${tile}(&g);`);
    variants.push({ tactic: `native-${c.isa}-gemm-${mr}x${nr}`, fn, pack: { fn: pack, inputs: [1] }, ...(acc ? { accumulate: true } : {}) });
  }
  if (c.bf16) src += bf16MatMulVariants(c, Mexpr, N, K, !!transB, epi ? `e${id}` : 'NULL', variants, acc?.set);
  return { variants, args: [{ in: 0 }, { packed: true }, { in: 2 }, { in: 3 }, { out: true }], source: `${src}#undef N_\n`, batched, work: M * N * K };
};

/** kiln:Elementwise over float32 inputs: an outer loop over rows (each input's offset from baked strides) and a
 * vectorizable inner loop over the last dimension. */
const elementwise: Gen = (c, n, ins, out) => {
  if (ins.length > LAYER_ARGS - 1 || prod(out) < MIN_ELEMENTS || ins.some((d) => !d)) return undefined;
  let expr;
  try {
    expr = parseExpr(attrOf(n, 'expr', ''));
  } catch {
    return undefined;
  }
  // batch-generic: strides come from a stand-in batch of 2 (so carried leading dims get a stride and the others
  // broadcast); the code reads the batch from nb
  const bt = c.batch && out.length >= 2 && ins.every((d, i) => !c.batch![i] || d!.length === out.length) ? c.batch : undefined;
  const vOut = bt ? [2, ...out.slice(1)] : out;
  const vIns = ins.map((d, i) => (bt?.[i] ? [2, ...d!.slice(1)] : d!));
  const r = out.length, per = prod(out.slice(1));
  // strides of each input over the output's dims (0 where broadcast)
  const strides = vIns.map((dd) => {
    const off = r - dd.length;
    if (off < 0) return undefined;
    const st: number[] = new Array(r).fill(0);
    let acc = 1;
    for (let i = dd.length - 1; i >= 0; i--) {
      if (dd[i] !== 1 && dd[i] !== vOut[off + i]) return undefined;
      st[off + i] = dd[i] === 1 ? 0 : acc;
      acc *= dd[i];
    }
    return st;
  });
  if (strides.some((s) => !s)) return undefined;
  const id = c.id;
  const scalar = (i: number) => prod(vIns[i]) === 1;
  const flat = vIns.every((d, k) => scalar(k) || sameDims(d, vOut));
  // adjacent dims every input reads alike (contiguous, or both broadcast) become one, so the inner loop runs over
  // whole planes: a squeeze-excite Mul [C, H, W] x [C, 1, 1] is C rows of H * W, not C * H rows of W (RegNetY's 7-wide
  // rows ran scalar). A batch-generic leading dim stays apart. \`md\`: the merged dims (the leading one as in \`out\`).
  const md = [out[r - 1] ?? 1], ms = strides.map((q) => [q![r - 1]]);
  for (let a = r - 2; a >= 0; a--) {
    if ((!bt || a > 0) && strides.every((q, i) => q![a] === ms[i][0] * md[0])) md[0] *= out[a];
    else { md.unshift(out[a]); ms.forEach((q, i) => q.unshift(strides[i]![a])); }
  }
  const inner = md[md.length - 1];
  const read = (i: number) => (scalar(i) ? `x${i}[0]` : flat ? `x${i}[i]` : ms[i][md.length - 1] ? `x${i}[o${i} + i]` : `x${i}[o${i}]`);
  const decl = ins.map((_, i) => `const float *restrict x${i} = ((void **)ctx)[${i}];`).join(' ');
  const offsets = flat ? '' : ins.map((_, i) => {
    const st = ms[i];
    // row / (rows per leading index) is below the leading dim already: no modulus there
    const terms = md.slice(0, -1).map((_, a) => (st[a] ? `(${a ? `(row / ${prod(md.slice(a + 1, -1))}) % ${md[a]}` : `row / ${prod(md.slice(1, -1))}`}) * ${st[a]}` : '')).filter(Boolean);
    return `long o${i} = ${terms.length ? terms.join(' + ') : '0'};`;
  }).join(' ');
  const body = renderC(expr, read);
  const chunk = flat ? 16384 : Math.max(1, Math.floor(16384 / inner));
  // elements (flat) or rows, as a C expression of nb where batch-generic
  const total = bt ? `(long)nb * ${flat ? per : per / inner}` : `${flat ? prod(out) : prod(out) / inner}L`;
  const src = `static void t${id}(void *ctx, int t) {
  ${decl}
  float *restrict y = ((void **)ctx)[${LAYER_ARGS - 1}];
  long total = (long)(intptr_t)((void **)ctx)[${LAYER_ARGS}];
  long lo = (long)t * ${chunk}, hi = KMIN(total, lo + ${chunk});
  ${flat ? `#pragma GCC ivdep
  for (long i = lo; i < hi; i++) y[i] = ${body};` : `for (long row = lo; row < hi; row++) {
    ${offsets}
    float *yr = y + row * ${inner};
    #pragma GCC ivdep
    for (int i = 0; i < ${inner}; i++) yr[i] = ${body};
  }`}
}
${exported(`L${id}_ew`, `  long total = ${total};
  void *ctx[${LAYER_ARGS + 1}] = { ${Array.from({ length: LAYER_ARGS - 1 }, (_, i) => `a${i}`).join(', ')}, a${ins.length}, (void *)(intptr_t)total };
  kiln_pool_run(t${id}, ctx, (int)((total + ${chunk - 1}) / ${chunk}));`)}`;
  return { variants: [{ tactic: `native-${c.isa}-elementwise`, fn: `L${id}_ew` }], args: [...ins.map((_, i) => ({ in: i })), { out: true }], source: src,
    batched: !!bt };
};

const lastAxis = (n: Node, rank: number, d: number) => {
  const a = attrOf(n, 'axis', d);
  return (a < 0 ? a + rank : a) === rank - 1;
};

const softmax: Gen = (c, n, ins, out) => {
  const [x] = ins;
  const defaultAxis = n.domain === KILN_DOMAIN || (c.model.opsets.get('') ?? 13) >= 13 ? -1 : 1;
  if (!x || !lastAxis(n, x.length, defaultAxis) || prod(out) < MIN_ELEMENTS || !sameDims(x, out)) return undefined;
  const cols = x[x.length - 1];
  const fn = `L${c.id}_sm`, bt = !!c.batch?.[0] && x.length >= 2;
  return { variants: [{ tactic: `native-${c.isa}-softmax`, fn }], args: [{ in: 0 }, { out: true }], batched: bt,
    source: exported(fn, `  kiln_softmax_rows(a0, a1, ${bt ? `nb * ${prod(x.slice(1)) / cols}` : prod(x) / cols}, ${cols});`) };
};

const layerNorm: Gen = (c, n, ins, out) => {
  const [x, g, b] = ins;
  if (!x || !g || !lastAxis(n, x.length, -1) || prod(out) < MIN_ELEMENTS || !sameDims(x, out)) return undefined;
  const D = x[x.length - 1];
  if (prod(g) !== D || (b && prod(b) !== D) || attrOf(n, 'stash_type', 1) !== 1) return undefined;
  const fn = `L${c.id}_ln`, bt = !!c.batch?.[0] && x.length >= 2;
  return { variants: [{ tactic: `native-${c.isa}-layernorm`, fn }], args: [{ in: 0 }, { in: 1 }, { in: 2 }, { out: true }], batched: bt,
    source: exported(fn, `  kiln_layernorm_rows(a0, a1, a2, a3, ${bt ? `nb * ${prod(x.slice(1)) / D}` : prod(x) / D}, ${D}, ${cFloat(attrOf(n, 'epsilon', 1e-5))});`) };
};

/** kiln:Attention over [B, H, S, D] (or [B, S, D]) with an optional float32 or bool mask. Per (batch, head) task, in
 * blocks of 6 query rows: scores against K^T (packed once per task, the scale folded in), softmax, and P V while the
 * block's scores are still in L1. Q, K, V and the output are read and written through row, head and batch strides:
 * the default ones of the dense tensors, or (argument a5, int64 [17]: offset and batch, head, row strides in floats
 * of q, k, v, y, then K's stride along D) views the runner passes in place of BERT's Split and Transposes around
 * attention (runner.ts, attentionGroups). */
const attention: Gen = (c, n, ins, out) => {
  const [q, k, v] = ins;
  const maskName = n.inputs[3];
  if (!q || !k || !v || q.length < 3 || q.length > 4 || k.length !== q.length || v.length !== q.length) return undefined;
  const r = q.length, kt = attrOf(n, 'k_transposed', 0);
  const lead = q.slice(0, -2);
  if (!sameDims(k.slice(0, -2), lead) || !sameDims(v.slice(0, -2), lead)) return undefined;
  const S = q[r - 2], D = q[r - 1], L = kt ? k[r - 1] : k[r - 2], DV = v[r - 1];
  if ((kt ? k[r - 2] : k[r - 1]) !== D || v[r - 2] !== L || prod(out) < MIN_ELEMENTS) return undefined;
  const B = lead[0], H = r === 4 ? lead[1] : 1;
  // batch-generic: q, k, v carry the batch; mask strides come from a stand-in batch of 2
  const bt = !!c.batch && c.batch[0] && c.batch[1] && c.batch[2] && (!maskName || !c.batch[3] || typeOfName(c, maskName)!.dims.length === r);
  const mq = [0, 0, 0, 0];
  let maskBool = false;
  if (maskName) {
    const md = typeOfName(c, maskName)!.dims, full = [bt ? 2 : B, H, S, L];
    if (md.length > r) return undefined;
    const m4 = bt && c.batch![3] ? [2, ...(r === 4 ? md.slice(1) : [1, ...md.slice(1)])] : [...Array(4 - md.length).fill(1), ...md];
    let acc = 1;
    for (let i = 3; i >= 0; i--) {
      if (m4[i] !== 1 && m4[i] !== full[i]) return undefined;
      mq[i] = m4[i] === 1 ? 0 : acc;
      acc *= m4[i];
    }
    maskBool = typeOfName(c, maskName)!.dtype === 'bool';
  }
  const id = c.id, fn = `L${id}_attn`, vw = VW[c.isa], LP = Math.ceil(L / vw) * vw;
  const scale = cFloat(attrOf(n, 'scale', 1));
  // scores of a block's rows (already scaled) plus the mask, padded columns at -inf
  const maskRow = !maskName ? '' : maskBool
    ? `const uint8_t *m = (const uint8_t *)mask + mo + (long)(s0 + r) * ${mq[2]};
      for (int l = 0; l < ${L}; l++) if (!m[(long)l * ${mq[3]}]) row[l] = -INFINITY;`
    : `const float *m = (const float *)mask + mo + (long)(s0 + r) * ${mq[2]};
      #pragma GCC ivdep
      for (int l = 0; l < ${L}; l++) row[l] += m[(long)l * ${mq[3]}];`;
  // offset and batch, head, row strides of q, k (rows along L), v, y; then k's stride along D
  const defaults = [0, H * S * D, S * D, D, 0, H * L * D, L * D, kt ? 1 : D, 0, H * L * DV, L * DV, DV, 0, H * S * DV, S * DV, DV, kt ? L : 1];
  const src = `typedef int32_t vi${id} __attribute__((vector_size(VW * 4)));
static inline __attribute__((always_inline)) void ab${id}(const int R, int s0, const float *restrict q, long qs, const float *restrict kt,
    const float *restrict v, long vs, float *restrict y, long ys, float *restrict sc, const void *mask, long mo) {
  (void)mask; (void)mo;
  for (int l0 = 0; l0 < ${LP}; l0 += 4 * VW) {
    if (l0 + 4 * VW <= ${LP}) {
      vf acc[R][4];
      for (int i = 0; i < R; i++) for (int j = 0; j < 4; j++) acc[i][j] = (vf){0};
      for (int d = 0; d < ${D}; d++) {
        const float *kr = kt + (size_t)d * ${LP} + l0;
        vf kv[4];
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) kv[j] = *(const vfu *)(kr + j * VW);
        _Pragma("GCC unroll 8") for (int i = 0; i < R; i++) {
          float a = q[(size_t)i * qs + d];
          _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) acc[i][j] += a * kv[j];
        }
      }
      for (int i = 0; i < R; i++) for (int j = 0; j < 4; j++) *(vfu *)(sc + (size_t)i * ${LP} + l0 + j * VW) = acc[i][j];
    } else for (int l1 = l0; l1 < ${LP}; l1 += VW) {
      vf acc[R];
      for (int i = 0; i < R; i++) acc[i] = (vf){0};
      for (int d = 0; d < ${D}; d++) {
        vf kv = *(const vfu *)(kt + (size_t)d * ${LP} + l1);
        for (int i = 0; i < R; i++) acc[i] += q[(size_t)i * qs + d] * kv;
      }
      for (int i = 0; i < R; i++) *(vfu *)(sc + (size_t)i * ${LP} + l1) = acc[i];
    }
  }
  float inv[R];
  for (int r = 0; r < R; r++) {
    float *row = sc + (size_t)r * ${LP};
    ${maskRow}
    for (int l = ${L}; l < ${LP}; l++) row[l] = -INFINITY;
    vf mv = *(const vfu *)row;
    for (int l = VW; l < ${LP}; l += VW) {
      vf x = *(const vfu *)(row + l);
      vi${id} gt = x > mv;
      mv = (vf)(((vi${id})x & gt) | ((vi${id})mv & ~gt));
    }
    float mx = mv[0];
    for (int i = 1; i < VW; i++) mx = mv[i] > mx ? mv[i] : mx;
    #pragma GCC ivdep
    for (int l = 0; l < ${LP}; l++) row[l] = kexp(row[l] - mx);
    vf sv = (vf){0};
    for (int l = 0; l < ${LP}; l += VW) sv += *(const vfu *)(row + l);
    float sum = 0;
    for (int i = 0; i < VW; i++) sum += sv[i];
    inv[r] = 1.0f / sum;
  }
  int j0 = 0;
  for (; j0 + 4 * VW <= ${DV}; j0 += 4 * VW) {
    vf acc[R][4];
    for (int i = 0; i < R; i++) for (int j = 0; j < 4; j++) acc[i][j] = (vf){0};
    for (int l = 0; l < ${L}; l++) {
      const float *vr = v + (size_t)l * vs + j0;
      vf vv[4];
      _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) vv[j] = *(const vfu *)(vr + j * VW);
      _Pragma("GCC unroll 8") for (int i = 0; i < R; i++) {
        float p = sc[(size_t)i * ${LP} + l];
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) acc[i][j] += p * vv[j];
      }
    }
    for (int i = 0; i < R; i++) for (int j = 0; j < 4; j++) *(vfu *)(y + (size_t)i * ys + j0 + j * VW) = acc[i][j] * inv[i];
  }
  for (; j0 + VW <= ${DV}; j0 += VW) {
    vf acc[R];
    for (int i = 0; i < R; i++) acc[i] = (vf){0};
    for (int l = 0; l < ${L}; l++) {
      vf vv = *(const vfu *)(v + (size_t)l * vs + j0);
      for (int i = 0; i < R; i++) acc[i] += sc[(size_t)i * ${LP} + l] * vv;
    }
    for (int i = 0; i < R; i++) *(vfu *)(y + (size_t)i * ys + j0) = acc[i] * inv[i];
  }
  for (; j0 < ${DV}; j0++) for (int i = 0; i < R; i++) {
    float a = 0;
    for (int l = 0; l < ${L}; l++) a += sc[(size_t)i * ${LP} + l] * v[(size_t)l * vs + j0];
    y[(size_t)i * ys + j0] = a * inv[i];
  }
}
static void at${id}(void *ctx, int t) {
  void *const *a = ctx;
  const int64_t *st = a[5];
  int b = t / ${H}, h = t % ${H};
  const float *q = (const float *)a[0] + st[0] + b * st[1] + h * st[2];
  const float *k = (const float *)a[1] + st[4] + b * st[5] + h * st[6];
  const float *v = (const float *)a[2] + st[8] + b * st[9] + h * st[10];
  float *y = (float *)a[4] + st[12] + b * st[13] + h * st[14];
  long qs = st[3], kl = st[7], kd = st[16], vs = st[11], ys = st[15];
  float *kt = kiln_scratch(0, (size_t)${D * LP} + ${6 * LP});
  float *sc = kt + ${D * LP};
  /* K^T (times the scale), zero padded to whole vectors */
  for (int d = 0; d < ${D}; d++) for (int l = ${L}; l < ${LP}; l++) kt[d * ${LP} + l] = 0;
  if (kd == 1) for (int l = 0; l < ${L}; l++) for (int d = 0; d < ${D}; d++) kt[d * ${LP} + l] = k[(size_t)l * kl + d] * ${scale};
  else for (int d = 0; d < ${D}; d++) for (int l = 0; l < ${L}; l++) kt[d * ${LP} + l] = k[(size_t)d * kd + (size_t)l * kl] * ${scale};
  long mo = (long)b * ${mq[0]} + (long)h * ${mq[1]}; (void)mo;
  int s0 = 0;
  for (; s0 + 6 <= ${S}; s0 += 6) ab${id}(6, s0, q + (size_t)s0 * qs, qs, kt, v, vs, y + (size_t)s0 * ys, ys, sc, a[3], mo);
  for (; s0 < ${S}; s0++) ab${id}(1, s0, q + (size_t)s0 * qs, qs, kt, v, vs, y + (size_t)s0 * ys, ys, sc, a[3], mo);
}
${exported(fn, `  static const int64_t dflt[17] = { ${defaults.join(', ')} };
  void *c[6] = { a0, a1, a2, a3, a4, a5 ? a5 : (void *)dflt };
  kiln_pool_run(at${id}, c, ${bt ? 'nb' : B} * ${H});`)}`;
  return { variants: [{ tactic: `native-${c.isa}-attention`, fn }], args: [{ in: 0 }, { in: 1 }, { in: 2 }, { in: 3 }, { out: true }], source: src,
    batched: bt, work: prod(lead) * S * L * (D + DV) };
};

/** A lone ONNX elementwise op (one the optimizer found no chain for: a squeeze-excite block's broadcast Mul, a
 * residual Add between layers it could not absorb) runs as the one-op expression of the elementwise kernel. */
const singleOp = (op: string, arity: number): Gen => (c, n, ins, out) => (n.inputs.length !== arity || n.inputs.some((x) => !x) ? undefined
  : elementwise(c, { ...n, attrs: { ...n.attrs, expr: { type: 'string', value: `(${op} ${ins.map((_, i) => `$${i}`).join(' ')})` } } }, ins, out));

const GENERATORS: Record<string, Gen> = {
  ':Concat': concat,
  ':Slice': slice,
  ':Gather': gather,
  ':Cast': cast,
  ...Object.fromEntries(Object.entries(UNARY).map(([k, op]) => [`:${k}`, singleOp(op, 1)])),
  ...Object.fromEntries(Object.entries(BINARY).map(([k, op]) => [`:${k}`, singleOp(op, 2)])),
  ':Transpose': transpose,
  'kiln:FusedMatMul': fusedMatMul,
  'kiln:FusedConv': fusedConv,
  'kiln:Elementwise': elementwise,
  'kiln:Softmax': softmax,
  ':Softmax': softmax,
  'kiln:LayerNormalization': layerNorm,
  ':LayerNormalization': layerNorm,
  'kiln:Attention': attention,
  ':MaxPool': pool(true),
  ':AveragePool': pool(false),
  ':GlobalAveragePool': globalPool(false),
  ':GlobalMaxPool': globalPool(true),
  ':ReduceMean': reduceTrailing(false),
  ':ReduceMax': reduceTrailing(true),
};

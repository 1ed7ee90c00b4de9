// Native kernels for quantized layers (kiln:QConv, kiln:QMatMul), per-tensor QuantizeLinear / DequantizeLinear and
// max pooling over quantized tensors: C with shapes and scales baked in, calling the int8 runtime (kernels/int8.c.ts). Weights are
// packed once at load with their zero-point compensation; outputs are float32, or int8/uint8 when the layer
// requantizes.
import type { Model, Node, ValueType } from '../../ir/graph.js';
import { TensorData, sameDims } from '../../ir/tensor.js';
import { KILN_DOMAIN } from '../../ops/fused.js';
import type { Isa } from './compiler.js';
import { cFloat } from './expr-c.js';
import { LAYER_ARGS } from './native.js';
import { QTILES } from './kernels/int8.c.js';
import { attrOf, prod, typeOfName, type LayerKernel, type Variant } from './codegen.js';
import { convPads, windowPads } from './conv.js';

export type QuantOut = 'int8' | 'uint8';

/** What the int8 generators produce: a LayerKernel (codegen.ts) without the run-time batch. */
type Int8Kernel = Omit<LayerKernel, 'batch'>;

// the trailing int matches the float kernels' calling convention (run-time batch); these kernels do not read it
const params = `${Array.from({ length: LAYER_ARGS }, (_, i) => `void *a${i}`).join(', ')}, int nb`;
const exported = (fn: string, body: string) => `KEXPORT void ${fn}(${params}) {\n  (void)nb;\n${body}\n}\n`;
const floatArray = (name: string, v: number[]) => `static const float ${name}[${v.length}] = { ${v.map(cFloat).join(', ')} };\n`;

/** Float32 words to allocate for an output (int8 outputs live in a Float32Array's bytes, so buffer pools stay one type). */
export function outWords(dims: readonly number[], dtype?: QuantOut): number {
  return dtype ? Math.ceil(prod(dims) / 4) : prod(dims);
}

/** The output value over a buffer from `outWords`. */
export function outValue(buf: Float32Array, dims: readonly number[], dtype?: QuantOut): TensorData {
  if (!dtype) return new TensorData('float32', dims, buf);
  const n = prod(dims);
  return new TensorData(dtype, dims, dtype === 'int8' ? new Int8Array(buf.buffer, buf.byteOffset, n) : new Uint8Array(buf.buffer, buf.byteOffset, n));
}

interface Ctx { model: Model; typeOf: (name: string) => ValueType | undefined; isa: Isa; id: string }

/** The epilogue fields of qgemm_t after `res`: activation, output kind and requantization. */
function epilogueFields(n: Node): string | undefined {
  const act = attrOf(n, 'activation', ''), p = attrOf<number[]>(n, 'activation_params', []);
  const a = act === '' ? '0, 0.0f, 0.0f' : act === 'Relu' ? '1, 0.0f, 0.0f' : act === 'Clip' ? `2, ${cFloat(p[0])}, ${cFloat(p[1])}` : undefined;
  if (!a) return undefined;
  const y = attrOf<string>(n, 'y_dtype', '');
  return `${a}, ${y === 'int8' ? 1 : y === 'uint8' ? 2 : 0}, ${cFloat(attrOf(n, 'y_scale', 1))}, ${attrOf(n, 'y_zero_point', 0)}`;
}

/** x_scale * w_scale per output channel, and the compensation factor for the activation's zero point. */
function scalesOf(n: Node, channels: number, xDtype: string): { scales: number[]; zsum: number; xr: number; pad: number } | undefined {
  const ws = attrOf<number[]>(n, 'w_scales', []), xs = attrOf(n, 'x_scale', 1), zx = attrOf(n, 'x_zero_point', 0);
  if (ws.length !== 1 && ws.length !== channels) return undefined;
  const scales = Array.from({ length: channels }, (_, i) => Math.fround(xs * (ws.length === 1 ? ws[0] : ws[i])));
  const signed = xDtype === 'int8';
  return { scales, zsum: (signed ? 128 : 0) + zx, xr: signed ? 0x80 : 0, pad: zx & 0xff };
}

const TACTIC = (c: Ctx, kind: string, [mr, nv]: [number, number]) => `native-${c.isa}-int8-${kind}-${mr}x${nv * 16}`;

function qconv(c: Ctx, n: Node, ins: (number[] | null)[], out: number[], outDtype?: QuantOut): Omit<Int8Kernel, 'node' | 'inputDims' | 'outDims' | 'outDtype'> | undefined {
  const [x, w, bias, res] = ins;
  if (!x || !w || x.length !== 4 || w.length !== 4 || out.length !== 4 || attrOf(n, 'group', 1) !== 1 || attrOf(n, 'layout', '')) return undefined;
  // an 8-bit residual (the GPU builds' folded residual Add, c_* attributes): the reference kernel runs it
  if (attrOf(n, 'c_dtype', '')) return undefined;
  if (!c.model.graph.initializers.has(n.inputs[1]) || (bias && (prod(bias) !== w[0] || !c.model.graph.initializers.has(n.inputs[2]))) || (res && !sameDims(res, out))) return undefined;
  const [B, C, H, W] = x, [M, , kh, kw] = w, [, , OH, OW] = out;
  if (w[1] !== C || out[1] !== M) return undefined;
  const s = attrOf(n, 'strides', [1, 1]), d = attrOf(n, 'dilations', [1, 1]);
  const p = convPads(n, x, out, [kh, kw], s, d);
  if (!p) return undefined;
  const xDtype = typeOfName(c, n.inputs[0])!.dtype;
  const q = scalesOf(n, M, xDtype), epi = epilogueFields(n);
  if (!q || !epi) return undefined;
  const K = C * kh * kw, N = OH * OW, id = c.id, esz = outDtype ? 1 : 4;
  let src = floatArray(`S${id}`, q.scales);
  const variants: Variant[] = [];
  // KILN_INT8_FORCE (build time, tests compare the forms): 'im2col' keeps the per-row im2col packing only, 'px' the
  // pixel-rows variant alone where it is offered
  const force = process.env.KILN_INT8_FORCE;
  const pointwise = kh === 1 && kw === 1 && s[0] === 1 && s[1] === 1 && !p.some((v) => v);
  // the grid form (kiln_qconv_grid) for every dilation-1 layer but the 1x1 stride-1 unpadded ones, whose im2col rows
  // are already slices of the input
  const grid = d[0] === 1 && d[1] === 1 && !pointwise && force !== 'im2col';
  const convOf = (nr: number) => `qconv_t cv = { (const uint8_t *)a0 + (size_t)b * ${C * H * W}, ${C}, ${H}, ${W}, ${OH}, ${OW}, ${kh}, ${kw}, ${s[0]}, ${s[1]}, ${d[0]}, ${d[1]}, ${p[0]}, ${p[1]}, ${K}, ${q.pad}, ${q.xr}, ${nr} };`;
  QTILES.forEach(([mr, nv], v) => {
    const head = Math.ceil((Math.ceil(M / mr) * mr * 4) / 64) * 64;
    const fn = `L${id}_q${v}`, pack = `P${id}_q${v}`;
    src += `KEXPORT void *${pack}(void *w, void *unused) { (void)unused; return kiln_qpack_weights(w, ${M}, ${K}, ${K}, 1, ${mr}, 1, ${q.zsum}); }\n`;
    src += exported(fn, `  const uint8_t *packed = a1;
  for (int b = 0; b < ${B}; b++) {
    ${convOf(nv * 16)}
    qgemm_t g = { ${M}, ${grid ? 'kiln_qconv_grid(&cv)' : N}, ${K}, 1, (const int8_t *)(packed + ${head}), NULL, ${grid ? 'kiln_qconv_packb_grid' : 'kiln_qconv_packb'}, &cv, (const int32_t *)packed, S${id}, a2,
      a3 ? (const float *)a3 + (size_t)b * ${M * N} : NULL, ${epi}, (char *)a4 + (size_t)b * ${M * N * esz} };${grid ? `\n    g.gw = cv.wq; g.ow = ${OW};` : ''}
    kiln_qgemm(&g, ${v});
  }`);
    variants.push({ tactic: TACTIC(c, grid ? 'conv-grid' : 'conv', [mr, nv]), fn, pack: { fn: pack, inputs: [1] } });
  });
  // pixels as rows (kiln_qconv_px) for small images whose output rows split in sevens: no columns lost to vectors of 16
  if (OW % 7 === 0 && N <= 1024 && (grid || pointwise) && force !== 'im2col') {
    const head = Math.ceil((Math.ceil(M / 64) * 64 * 4) / 64) * 64;
    const fn = `L${id}_qp`, pack = `P${id}_qp`;
    src += `KEXPORT void *${pack}(void *w, void *unused) { (void)unused; return kiln_qpack_weights(w, ${M}, ${K}, ${K}, 1, 64, 0, ${q.zsum}); }\n`;
    src += exported(fn, `  const uint8_t *packed = a1;
  for (int b = 0; b < ${B}; b++) {
    ${convOf(0)}
    qgemm_t g = { ${M}, 0, ${K}, 1, NULL, (const int8_t *)(packed + ${head}), NULL, NULL, (const int32_t *)packed, S${id}, a2,
      a3 ? (const float *)a3 + (size_t)b * ${M * N} : NULL, ${epi}, (char *)a4 + (size_t)b * ${M * N * esz} };
    kiln_qconv_px(&g, &cv, ${grid ? 1 : 0});
  }`);
    variants.push({ tactic: `native-${c.isa}-int8-conv-px${grid ? '-grid' : ''}-7x64`, fn, pack: { fn: pack, inputs: [1] } });
    if (force === 'px') variants.splice(0, variants.length - 1);
  }
  return { variants, args: [{ in: 0 }, { packed: true }, { in: 2 }, { in: 3 }, { out: true }], source: src, work: B * M * N * K };
}

function qmatmul(c: Ctx, n: Node, ins: (number[] | null)[], out: number[]): Omit<Int8Kernel, 'node' | 'inputDims' | 'outDims' | 'outDtype'> | undefined {
  const [a, w, bias, res] = ins;
  const transB = attrOf(n, 'transB', 0);
  if (!a || !w || a.length < 2 || w.length !== 2 || !c.model.graph.initializers.has(n.inputs[1])) return undefined;
  const K = a[a.length - 1], N = transB ? w[0] : w[1], M = prod(a.slice(0, -1));
  if ((transB ? w[1] : w[0]) !== K || prod(out) !== M * N || out[out.length - 1] !== N) return undefined;
  if ((bias && (prod(bias) !== N || !c.model.graph.initializers.has(n.inputs[2]))) || (res && !sameDims(res, out))) return undefined;
  const q = scalesOf(n, N, typeOfName(c, n.inputs[0])!.dtype), epi = epilogueFields(n);
  if (!q || !epi) return undefined;
  const id = c.id, kq = Math.ceil(K / 4);
  let src = floatArray(`S${id}`, q.scales);
  const variants: Variant[] = [];
  QTILES.forEach(([mr, nv], v) => {
    const nr = nv * 16, head = Math.ceil((Math.ceil(N / nr) * nr * 4) / 64) * 64;
    const fn = `L${id}_q${v}`, pack = `P${id}_q${v}`;
    const [rs, cs] = transB ? [K, 1] : [1, N];
    src += `KEXPORT void *${pack}(void *w, void *unused) { (void)unused; return kiln_qpack_weights(w, ${N}, ${K}, ${rs}, ${cs}, ${nr}, 0, ${q.zsum}); }\n`;
    src += exported(fn, `  const uint8_t *packed = a1;
  uint8_t *ap = (uint8_t *)kiln_scratch(1, ${Math.ceil((Math.ceil(M / mr) * mr * kq * 4) / 4)});
  kiln_qpack_rows(a0, ${M}, ${K}, ${q.xr}, ${mr}, ap);
  qgemm_t g = { ${M}, ${N}, ${K}, 0, (const int8_t *)ap, (const int8_t *)(packed + ${head}), NULL, NULL, (const int32_t *)packed, S${id}, a2, a3, ${epi}, a4 };
  kiln_qgemm(&g, ${v});`);
    variants.push({ tactic: TACTIC(c, 'gemm', [mr, nv]), fn, pack: { fn: pack, inputs: [1] } });
  });
  return { variants, args: [{ in: 0 }, { packed: true }, { in: 2 }, { in: 3 }, { out: true }], source: src, work: M * N * K };
}

/** A Quantize/DequantizeLinear's constant per-tensor float32 scale and zero point (0 when absent), or undefined. */
function perTensor(c: Ctx, n: Node): { scale: number; zp: number } | undefined {
  const g = c.model.graph.initializers;
  const s = g.get(n.inputs[1]), z = n.inputs[2] ? g.get(n.inputs[2]) : undefined;
  if (!s || s.size !== 1 || s.dtype !== 'float32' || (n.inputs[2] && (!z || z.size !== 1))) return undefined;
  return { scale: s.get(0), zp: z ? z.get(0) : 0 };
}

/** Per-tensor QuantizeLinear of a float32 tensor to int8/uint8. */
function quantize(c: Ctx, n: Node, ins: (number[] | null)[], out: number[], outDtype?: QuantOut): Omit<Int8Kernel, 'node' | 'inputDims' | 'outDims' | 'outDtype'> | undefined {
  const q = perTensor(c, n);
  if (!ins[0] || typeOfName(c, n.inputs[0])?.dtype !== 'float32' || !q || attrOf(n, 'saturate', 1) !== 1 || !outDtype) return undefined;
  const fn = `L${c.id}_quant`;
  return {
    variants: [{ tactic: `native-${c.isa}-quantize`, fn }], args: [{ in: 0 }, { out: true }], work: prod(out),
    source: exported(fn, `  kiln_quantize_f32(a0, a1, ${prod(out)}L, ${cFloat(q.scale)}, ${q.zp}, ${outDtype === 'uint8' ? 1 : 0});`),
  };
}

/** Per-tensor DequantizeLinear of an int8/uint8 tensor to float32 (scale and zero point constant). */
function dequantize(c: Ctx, n: Node, ins: (number[] | null)[], out: number[], outDtype?: QuantOut): Omit<Int8Kernel, 'node' | 'inputDims' | 'outDims' | 'outDtype'> | undefined {
  const q = perTensor(c, n), x = typeOfName(c, n.inputs[0])?.dtype;
  if (!ins[0] || outDtype || (x !== 'int8' && x !== 'uint8') || !q) return undefined;
  const fn = `L${c.id}_dequant`;
  return {
    variants: [{ tactic: `native-${c.isa}-dequantize`, fn }], args: [{ in: 0 }, { out: true }], work: prod(out),
    source: exported(fn, `  kiln_dequantize_q(a0, a1, ${prod(out)}L, ${cFloat(q.scale)}, ${q.zp}, ${x === 'uint8' ? 1 : 0});`),
  };
}

/** 2-D MaxPool (no Indices) over an int8/uint8 NCHW tensor (a QuantizeLinear moved before it by the optimizer). */
function maxpool(c: Ctx, n: Node, ins: (number[] | null)[], out: number[], outDtype?: QuantOut): Omit<Int8Kernel, 'node' | 'inputDims' | 'outDims' | 'outDtype'> | undefined {
  const [x] = ins;
  const k = attrOf<number[]>(n, 'kernel_shape', []);
  if (!x || x.length !== 4 || out.length !== 4 || !outDtype || k.length !== 2 || attrOf(n, 'storage_order', 0)) return undefined;
  const s = attrOf(n, 'strides', [1, 1]), d = attrOf(n, 'dilations', [1, 1]), p = windowPads(n, x, out, k, s, d);
  const [N, C, H, W] = x, [, , OH, OW] = out, fn = `L${c.id}_qmaxpool`;
  return {
    variants: [{ tactic: `native-${c.isa}-maxpool-${outDtype}`, fn }], args: [{ in: 0 }, { out: true }], work: prod(out) * k[0] * k[1],
    source: exported(fn, `  kiln_maxpool_q(a0, a1, ${N * C}, ${H}, ${W}, ${OH}, ${OW}, ${k[0]}, ${k[1]}, ${s[0]}, ${s[1]}, ${d[0]}, ${d[1]}, ${p[0]}, ${p[1]}, ${outDtype === 'int8' ? 1 : 0});`),
  };
}

const GENERATORS: Record<string, typeof qconv> = { 'kiln:QConv': qconv, 'kiln:QMatMul': qmatmul, ':QuantizeLinear': quantize, ':DequantizeLinear': dequantize, ':MaxPool': maxpool };
const key = (node: Node) => `${node.domain === KILN_DOMAIN ? 'kiln' : node.domain}:${node.opType}`;

/**
 * Whether `node` is one of the ops this file generates kernels for (those skip the float32-only checks): a MaxPool or
 * a DequantizeLinear only when it reads an 8-bit tensor (a float pool is the float generators').
 */
export const isInt8Op = (node: Node, typeOf: Ctx['typeOf']): boolean => {
  if (!GENERATORS[key(node)]) return false;
  if (node.opType !== 'MaxPool' && node.opType !== 'DequantizeLinear') return true;
  const t = typeOf(node.inputs[0]);
  return t?.kind === 'tensor' && (t.dtype === 'int8' || t.dtype === 'uint8');
};

/** The native kernel for a quantized layer or QuantizeLinear, or undefined (the node keeps its reference kernel). */
export function int8LayerKernel(node: Node, model: Model, typeOf: Ctx['typeOf'], isa: Isa, id: string): Int8Kernel | undefined {
  const gen = GENERATORS[key(node)];
  if (!gen || node.outputs.length !== 1 || !node.outputs[0]) return undefined;
  const c: Ctx = { model, typeOf, isa, id };
  const outT = typeOfName(c, node.outputs[0]);
  const types = node.inputs.map((x) => (x ? typeOfName(c, x) ?? null : null));
  if (!outT || node.inputs.some((x, i) => x && !types[i])) return undefined;
  const outDtype = outT.dtype === 'int8' || outT.dtype === 'uint8' ? outT.dtype : undefined;
  if (!outDtype && outT.dtype !== 'float32') return undefined;
  // quantized layers: int8/uint8 activation, int8 weight, float32 bias and residual; an 8-bit pool keeps its type
  if (node.opType === 'MaxPool') {
    if (types[0]?.dtype !== outT.dtype || node.inputs.length !== 1) return undefined;
  } else if (node.opType !== 'QuantizeLinear' && node.opType !== 'DequantizeLinear') {
    const want = (i: number, t: string) => (i === 0 ? t === 'int8' || t === 'uint8' : i === 1 ? t === 'int8' : t === 'float32');
    if (types.some((t, i) => t && !want(i, t.dtype))) return undefined;
  }
  const ins = types.map((t) => t?.dims ?? null);
  const k = gen(c, node, ins, outT.dims, outDtype);
  return k && { node: node.name, inputDims: ins, outDims: outT.dims, ...k, ...(outDtype ? { outDtype } : {}) };
}

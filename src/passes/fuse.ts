// Fusion rules. Each rule finds one pattern, rewrites it in place and returns how many times it fired.
import type { AttrValue, Node } from '../ir/graph.js';
import { TensorData } from '../ir/tensor.js';
import { isFloat, type DType } from '../ir/dtype.js';
import { parseExpr, printExpr, renderJs, JS_HELPERS, type Expr } from '../ir/expr.js';
import { ACTIVATIONS, KILN_DOMAIN } from '../ops/fused.js';
import type { GraphView } from './view.js';

const int = (value: number): AttrValue => ({ type: 'int', value });
const float = (value: number): AttrValue => ({ type: 'float', value });
const str = (value: string): AttrValue => ({ type: 'string', value });

function op(v: GraphView, name: string, ...types: string[]): Node | undefined {
  const p = name ? v.producer(name) : undefined;
  return p && p.domain === '' && types.includes(p.opType) ? p : undefined;
}
/** Scalar value of a constant input (size 1), or undefined. */
function scalar(v: GraphView, name: string): number | undefined {
  const c = v.constant(name);
  return c && c.size === 1 && c.dtype !== 'string' ? c.get(0) : undefined;
}
function newNode(v: GraphView, opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue>, like: Node, domain = KILN_DOMAIN): Node {
  return { name: v.fresh(like.name || opType), opType, domain, inputs, outputs, attrs };
}
/** Replace `oldNodes` by `node`, which writes `output` (the old pattern's final output). */
function replacePattern(v: GraphView, oldNodes: Node[], node: Node): void {
  const anchor = oldNodes[oldNodes.length - 1];
  v.insertNode(node, anchor);
  v.removeNodes(oldNodes);
}
/** Axes of a Reduce* node (attribute before opset 18, input after). */
function reduceAxes(v: GraphView, n: Node): number[] | undefined {
  if (n.attrs.axes) return n.attrs.axes.value as number[];
  const c = n.inputs[1] ? v.constant(n.inputs[1]) : undefined;
  return c?.toNumberArray();
}
function isLastAxis(v: GraphView, n: Node, x: string): boolean {
  const axes = reduceAxes(v, n);
  const rank = v.staticShape(x)?.length ?? (v.type(x)?.kind === 'tensor' ? (v.type(x) as { shape?: unknown[] }).shape?.length : undefined);
  return !!axes && axes.length === 1 && (axes[0] === -1 || (rank !== undefined && axes[0] === rank - 1)) && (n.attrs.keepdims?.value ?? 1) === 1;
}
const onlyConsumers = (v: GraphView, name: string, allowed: Node[]) => !v.isGraphOutput(name) && v.consumers(name).every((c) => allowed.includes(c));

// ---------------------------------------------------------------------------------------------------------------
// BatchNormalization folded into the preceding Conv / Gemm

export function foldBatchNorm(v: GraphView): number {
  let n = 0;
  for (const bn of v.graph.nodes.filter((x) => x.opType === 'BatchNormalization' && x.domain === '')) {
    if (bn.outputs.slice(1).some((o) => o && v.consumers(o).length)) continue; // training outputs used
    const [scale, bias, mean, vari] = bn.inputs.slice(1, 5).map((i) => v.constant(i));
    if (!scale || !bias || !mean || !vari) continue;
    const prod = op(v, bn.inputs[0], 'Conv', 'Gemm');
    if (!prod || !v.singleUse(bn.inputs[0])) continue;
    const w = v.constant(prod.inputs[1]);
    if (!w || !isFloat(w.dtype)) continue;
    const eps = (bn.attrs.epsilon?.value as number | undefined) ?? 1e-5;
    const s = scale.toFloat64(), b = bias.toFloat64(), m = mean.toFloat64(), va = vari.toFloat64();
    const C = s.length;
    const k = new Float64Array(C);
    for (let c = 0; c < C; c++) k[c] = s[c] / Math.sqrt(va[c] + eps);
    let wOut: Float64Array;
    if (prod.opType === 'Conv') {
      if (w.dims[0] !== C) continue;
      wOut = w.toFloat64().slice();
      const per = w.size / C;
      for (let c = 0; c < C; c++) for (let i = 0; i < per; i++) wOut[c * per + i] *= k[c];
    } else {
      const transB = (prod.attrs.transB?.value ?? 0) === 1;
      const alpha = (prod.attrs.alpha?.value as number | undefined) ?? 1, beta = (prod.attrs.beta?.value as number | undefined) ?? 1;
      if (w.rank !== 2 || (transB ? w.dims[0] : w.dims[1]) !== C || alpha !== 1 || beta !== 1) continue;
      wOut = w.toFloat64().slice();
      for (let r = 0; r < w.dims[0]; r++) for (let c = 0; c < w.dims[1]; c++) wOut[r * w.dims[1] + c] *= k[transB ? r : c];
    }
    const oldBias = prod.inputs[2] ? v.constant(prod.inputs[2]) : undefined;
    if (prod.inputs[2] && (!oldBias || oldBias.size !== C)) continue;
    const ob = oldBias?.toFloat64();
    const newBias = new Float64Array(C);
    for (let c = 0; c < C; c++) newBias[c] = ((ob ? ob[c] : 0) - m[c]) * k[c] + b[c];
    prod.inputs = [prod.inputs[0], v.addConstant(`${prod.name}.weight`, TensorData.fromNumbers(w.dtype, w.dims, wOut)),
      v.addConstant(`${prod.name}.bias`, TensorData.fromNumbers(w.dtype, [C], newBias))];
    v.removeNodes([bn]);
    v.replaceUses(bn.outputs[0], prod.outputs[0]);
    n++;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// Normalization, softmax and attention patterns

/** x - mean(x) / sqrt(mean((x - mean(x))^2) + eps) * gamma + beta  ->  LayerNormalization */
export function fuseLayerNorm(v: GraphView): number {
  let n = 0;
  for (const div of v.graph.nodes.filter((x) => x.opType === 'Div' && x.domain === '')) {
    const sub = op(v, div.inputs[0], 'Sub');
    const sqrt = op(v, div.inputs[1], 'Sqrt');
    if (!sub || !sqrt) continue;
    const x = sub.inputs[0];
    const mean = op(v, sub.inputs[1], 'ReduceMean');
    if (!mean || mean.inputs[0] !== x || !isLastAxis(v, mean, x)) continue;
    const addEps = op(v, sqrt.inputs[0], 'Add');
    if (!addEps) continue;
    const eps = scalar(v, addEps.inputs[1]) ?? scalar(v, addEps.inputs[0]);
    const varNode = op(v, v.constant(addEps.inputs[1]) ? addEps.inputs[0] : addEps.inputs[1], 'ReduceMean');
    if (eps === undefined || !varNode || !isLastAxis(v, varNode, varNode.inputs[0])) continue;
    const sq = op(v, varNode.inputs[0], 'Pow', 'Mul');
    if (!sq || sq.inputs[0] !== sub.outputs[0] || (sq.opType === 'Pow' ? scalar(v, sq.inputs[1]) !== 2 : sq.inputs[1] !== sub.outputs[0])) continue;
    const pattern = [mean, sub, sq, varNode, addEps, sqrt, div];
    if (!onlyConsumers(v, sub.outputs[0], [sq, div]) || ![mean, sq, varNode, addEps, sqrt].every((p) => v.singleUse(p.outputs[0]))) continue;
    const last = v.shape(x)?.at(-1);
    const D = typeof last === 'number' ? last : undefined;
    // optional affine tail: Mul(gamma) then Add(beta)
    let out = div.outputs[0];
    let gamma: string | undefined, beta: string | undefined;
    const mul = v.singleUse(out) ? v.consumers(out)[0] : undefined;
    if (mul && mul.opType === 'Mul' && mul.domain === '') {
      const g = mul.inputs[0] === out ? mul.inputs[1] : mul.inputs[0];
      const gc = v.constant(g);
      if (gc && gc.rank <= 1) {
        gamma = g;
        pattern.push(mul);
        out = mul.outputs[0];
        const add = v.singleUse(out) ? v.consumers(out)[0] : undefined;
        if (add && add.opType === 'Add' && add.domain === '') {
          const bt = add.inputs[0] === out ? add.inputs[1] : add.inputs[0];
          const bc = v.constant(bt);
          if (bc && bc.rank <= 1) {
            beta = bt;
            pattern.push(add);
            out = add.outputs[0];
          }
        }
      }
    }
    if (!gamma) {
      if (D === undefined) continue;
      const dt = (v.type(x) as { dtype?: 'float32' } | undefined)?.dtype ?? 'float32';
      gamma = v.addConstant('ln_gamma', TensorData.fromNumbers(dt, [D], new Array(D).fill(1)));
    }
    const ln = newNode(v, 'LayerNormalization', [x, gamma, ...(beta ? [beta] : [])], [out], { axis: int(-1), epsilon: float(eps) }, div);
    replacePattern(v, pattern, ln);
    n++;
  }
  return n;
}

/** x / sqrt(mean(x^2) + eps) * gamma  ->  RMSNormalization */
export function fuseRmsNorm(v: GraphView): number {
  let n = 0;
  for (const div of v.graph.nodes.filter((x) => x.opType === 'Div' && x.domain === '')) {
    const x = div.inputs[0];
    const sqrt = op(v, div.inputs[1], 'Sqrt');
    const addEps = sqrt && op(v, sqrt.inputs[0], 'Add');
    if (!sqrt || !addEps) continue;
    const eps = scalar(v, addEps.inputs[1]) ?? scalar(v, addEps.inputs[0]);
    const mean = op(v, v.constant(addEps.inputs[1]) ? addEps.inputs[0] : addEps.inputs[1], 'ReduceMean');
    const sq = mean && op(v, mean.inputs[0], 'Pow', 'Mul');
    if (eps === undefined || !mean || !sq || !isLastAxis(v, mean, mean.inputs[0])) continue;
    if (sq.inputs[0] !== x || (sq.opType === 'Pow' ? scalar(v, sq.inputs[1]) !== 2 : sq.inputs[1] !== x)) continue;
    if (![sq, mean, addEps, sqrt].every((p) => v.singleUse(p.outputs[0]))) continue;
    const mul = v.singleUse(div.outputs[0]) ? v.consumers(div.outputs[0])[0] : undefined;
    const g = mul && mul.opType === 'Mul' ? (mul.inputs[0] === div.outputs[0] ? mul.inputs[1] : mul.inputs[0]) : undefined;
    if (!mul || !g || !v.constant(g) || v.constant(g)!.rank > 1) continue;
    replacePattern(v, [sq, mean, addEps, sqrt, div, mul], newNode(v, 'RMSNormalization', [x, g], [mul.outputs[0]], { axis: int(-1), epsilon: float(eps) }, div));
    n++;
  }
  return n;
}

/** exp(x - max(x)) / sum(exp(...))  ->  Softmax over the last axis */
export function fuseSoftmax(v: GraphView): number {
  let n = 0;
  for (const div of v.graph.nodes.filter((x) => x.opType === 'Div' && x.domain === '')) {
    const exp = op(v, div.inputs[0], 'Exp');
    const sum = op(v, div.inputs[1], 'ReduceSum');
    if (!exp || !sum || sum.inputs[0] !== exp.outputs[0] || !isLastAxis(v, sum, exp.outputs[0])) continue;
    if (!onlyConsumers(v, exp.outputs[0], [sum, div]) || !v.singleUse(sum.outputs[0])) continue;
    let x = exp.inputs[0];
    const pattern = [exp, sum, div];
    const sub = op(v, x, 'Sub');
    const max = sub && op(v, sub.inputs[1], 'ReduceMax');
    if (sub && max && max.inputs[0] === sub.inputs[0] && v.singleUse(sub.outputs[0]) && v.singleUse(max.outputs[0]) && isLastAxis(v, max, sub.inputs[0])) {
      x = sub.inputs[0];
      pattern.unshift(max, sub);
    }
    replacePattern(v, pattern, newNode(v, 'Softmax', [x], [div.outputs[0]], { axis: int(-1) }, div));
    n++;
  }
  return n;
}

/** MatMul(Q, Kt) [* or / scale] [+ mask] -> Softmax(last) -> MatMul(., V)  ->  kiln:Attention */
export function fuseAttention(v: GraphView): number {
  let n = 0;
  for (const pv of v.graph.nodes.filter((x) => x.opType === 'MatMul' && x.domain === '')) {
    const sm = v.producer(pv.inputs[0]);
    if (!sm || sm.opType !== 'Softmax' || !v.singleUse(sm.outputs[0])) continue;
    const rank = v.shape(sm.inputs[0])?.length;
    const axis = (sm.attrs.axis?.value as number | undefined) ?? (sm.domain === KILN_DOMAIN ? -1 : undefined);
    if (rank === undefined || rank < 3 || (axis !== -1 && axis !== rank - 1)) continue;
    const pattern: Node[] = [sm, pv];
    let cur = sm.inputs[0];
    let mask: string | undefined;
    let scale = 1;
    const where = op(v, cur, 'Where');
    const fill = where && scalar(v, where.inputs[2]);
    if (where && v.singleUse(cur) && fill !== undefined && fill <= -1e4 && op(v, where.inputs[1], 'MatMul', 'Div', 'Mul')) {
      // Where(keep, scores, -big): a boolean mask (true = attend)
      mask = where.inputs[0];
      pattern.unshift(where);
      cur = where.inputs[1];
    }
    const add = mask ? undefined : op(v, cur, 'Add');
    if (add && v.singleUse(cur)) {
      const qk = [add.inputs[0], add.inputs[1]].find((i) => op(v, i, 'MatMul', 'Div', 'Mul'));
      if (qk) {
        mask = add.inputs[0] === qk ? add.inputs[1] : add.inputs[0];
        pattern.unshift(add);
        cur = qk;
      }
    }
    const sc = op(v, cur, 'Div', 'Mul');
    if (sc && v.singleUse(cur)) {
      const c = scalar(v, sc.inputs[1]);
      if (c !== undefined && op(v, sc.inputs[0], 'MatMul')) {
        scale = sc.opType === 'Div' ? 1 / c : c;
        pattern.unshift(sc);
        cur = sc.inputs[0];
      }
    }
    const qk = op(v, cur, 'MatMul');
    if (!qk || !v.singleUse(cur)) continue;
    pattern.unshift(qk);
    const node = newNode(v, 'Attention', [qk.inputs[0], qk.inputs[1], pv.inputs[1], ...(mask ? [mask] : [])], [pv.outputs[0]],
      { scale: float(scale), k_transposed: int(1) }, pv);
    replacePattern(v, pattern, node);
    n++;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// Conv / MatMul / Gemm layers with bias, residual and activation epilogues

/** Conv -> kiln:FusedConv, MatMul/Gemm -> kiln:FusedMatMul (constant Gemm C becomes the bias). */
export function toFusedLayers(v: GraphView): number {
  let n = 0;
  for (const node of [...v.graph.nodes]) {
    if (node.domain !== '') continue;
    if (node.opType === 'Conv') {
      node.domain = KILN_DOMAIN;
      node.opType = 'FusedConv';
      n++;
    } else if (node.opType === 'MatMul' && isFloat((v.type(node.inputs[0]) as { dtype?: 'float32' })?.dtype ?? 'int8')) {
      node.domain = KILN_DOMAIN;
      node.opType = 'FusedMatMul';
      n++;
    } else if (node.opType === 'Gemm') {
      const beta = (node.attrs.beta?.value as number | undefined) ?? 1;
      let bias = node.inputs[2] ?? '';
      if (bias && beta !== 1) {
        const c = v.constant(bias);
        if (!c) continue;
        const d = c.toFloat64().map((x) => x * beta);
        bias = v.addConstant(`${node.name}.bias`, TensorData.fromNumbers(c.dtype, c.dims, d));
      }
      node.attrs = { transA: int((node.attrs.transA?.value as number) ?? 0), transB: int((node.attrs.transB?.value as number) ?? 0), alpha: float((node.attrs.alpha?.value as number) ?? 1), gemm: int(1) };
      node.inputs = [node.inputs[0], node.inputs[1], ...(bias ? [bias] : [])];
      node.domain = KILN_DOMAIN;
      node.opType = 'FusedMatMul';
      n++;
    }
  }
  if (n) v.reindex();
  return n;
}

const isFusedLayer = (p: Node | undefined): p is Node => !!p && p.domain === KILN_DOMAIN && ['FusedConv', 'FusedMatMul', 'QConv', 'QMatMul'].includes(p.opType) && !p.attrs.y_dtype;

/** Add(layer, constant bias) -> bias input of the layer. */
export function absorbBias(v: GraphView): number {
  let n = 0;
  for (const add of v.graph.nodes.filter((x) => x.opType === 'Add' && x.domain === '')) {
    for (const side of [0, 1]) {
      const layer = v.producer(add.inputs[side]);
      const b = v.constant(add.inputs[1 - side]);
      if (!isFusedLayer(layer) || !b || !v.singleUse(add.inputs[side]) || layer.inputs[3] || (layer.attrs.activation?.value as string | undefined)) continue;
      const outShape = v.shape(layer.outputs[0]);
      let vec: Float64Array | undefined;
      if (layer.opType === 'FusedConv') {
        const C = v.constant(layer.inputs[1])?.dims[0];
        const rank = outShape?.length;
        // bias shaped [C,1,1] or [1,C,1,1]: one value per output channel
        if (C !== undefined && rank !== undefined && b.size === C && b.rank <= rank && b.dims[b.rank - rank + 1] === C) vec = b.toFloat64();
      } else {
        const N = outShape?.at(-1);
        if (typeof N === 'number' && b.size === N && (b.rank === 0 || b.dims[b.rank - 1] === N) && b.rank <= (outShape?.length ?? 0)) vec = b.toFloat64();
      }
      if (!vec) continue;
      const old = layer.inputs[2] ? v.constant(layer.inputs[2]) : undefined;
      if (layer.inputs[2] && !old) continue;
      if (old) vec = vec.map((x, i) => x + old.get(i));
      layer.inputs = [layer.inputs[0], layer.inputs[1], v.addConstant(`${layer.name}.bias`, TensorData.fromNumbers(b.dtype, [vec.length], vec))];
      v.removeNodes([add]);
      v.replaceUses(add.outputs[0], layer.outputs[0]);
      n++;
      break;
    }
  }
  return n;
}

/** Add(layer, other) -> residual input of the layer (the activation, if any, must come after). */
export function absorbResidual(v: GraphView): number {
  let n = 0;
  for (const add of v.graph.nodes.filter((x) => x.opType === 'Add' && x.domain === '')) {
    for (const side of [0, 1]) {
      const layer = v.producer(add.inputs[side]);
      const other = add.inputs[1 - side];
      if (!isFusedLayer(layer) || v.constant(other) || !v.singleUse(add.inputs[side]) || (layer.attrs.activation?.value as string | undefined)) continue;
      if (layer.inputs[3]) continue;
      // the residual must be computed before the layer runs: it may not depend on the layer's own output
      if (dependsOn(v, other, layer)) continue;
      layer.inputs = [layer.inputs[0], layer.inputs[1], layer.inputs[2] ?? '', other];
      v.removeNodes([add]);
      v.replaceUses(add.outputs[0], layer.outputs[0]);
      n++;
      break;
    }
  }
  return n;
}

function dependsOn(v: GraphView, value: string, node: Node): boolean {
  const seen = new Set<string>();
  const stack = [value];
  while (stack.length) {
    const x = stack.pop()!;
    if (seen.has(x)) continue;
    seen.add(x);
    const p = v.producer(x);
    if (!p) continue;
    if (p === node) return true;
    stack.push(...p.inputs.filter(Boolean));
  }
  return false;
}

/** An activation node after a layer -> the layer's epilogue. */
export function absorbActivation(v: GraphView): number {
  let n = 0;
  for (const act of [...v.graph.nodes]) {
    const layer = v.producer(act.inputs[0]);
    if (!isFusedLayer(layer) || !v.singleUse(act.inputs[0]) || (layer.attrs.activation?.value as string | undefined)) continue;
    const spec = activationOf(v, act);
    if (!spec) continue;
    layer.attrs = { ...layer.attrs, activation: str(spec.name), activation_params: { type: 'floats', value: spec.params } };
    v.removeNodes([act]);
    v.replaceUses(act.outputs[0], layer.outputs[0]);
    n++;
  }
  return n;
}

function activationOf(v: GraphView, n: Node): { name: string; params: number[] } | undefined {
  const a = (k: string, d: number) => (n.attrs[k]?.value as number | undefined) ?? d;
  if (n.domain === '') {
    switch (n.opType) {
      case 'Relu': case 'Sigmoid': case 'Tanh': case 'HardSwish': case 'Mish': return { name: n.opType, params: [] };
      case 'LeakyRelu': return { name: 'LeakyRelu', params: [a('alpha', 0.01)] };
      case 'HardSigmoid': return { name: 'HardSigmoid', params: [a('alpha', 0.2), a('beta', 0.5)] };
      case 'Gelu': return { name: (n.attrs.approximate?.value as string) === 'tanh' ? 'GeluTanh' : 'Gelu', params: [] };
      case 'Clip': {
        if (n.attrs.min || n.attrs.max) return { name: 'Clip', params: [a('min', -3.4028234663852886e38), a('max', 3.4028234663852886e38)] };
        const lo = n.inputs[1] ? scalar(v, n.inputs[1]) : -Infinity, hi = n.inputs[2] ? scalar(v, n.inputs[2]) : Infinity;
        return lo === undefined || hi === undefined ? undefined : { name: 'Clip', params: [lo, hi] };
      }
      default: return undefined;
    }
  }
  if (n.domain === KILN_DOMAIN && n.opType === 'Gelu') return { name: (n.attrs.approximate?.value as string) === 'tanh' ? 'GeluTanh' : 'Gelu', params: [] };
  if (n.domain === KILN_DOMAIN && n.opType === 'Elementwise' && n.inputs.length === 1) {
    const name = recognizeActivation(n.attrs.expr.value as string);
    return name ? { name, params: [] } : undefined;
  }
  return undefined;
}

const PROBES = [-4, -2.5, -1.3, -0.7, -0.2, 0, 0.1, 0.4, 0.9, 1.7, 3.2, 5];
const recognized = new Map<string, string | undefined>();

/** Which known activation a one-input expression computes, found by evaluating both at probe points. */
export function recognizeActivation(expr: string): string | undefined {
  if (recognized.has(expr)) return recognized.get(expr);
  let found: string | undefined;
  try {
    const f = new Function('F', 'x', `return ${renderJs(parseExpr(expr), () => 'x')};`) as (F: typeof JS_HELPERS, x: number) => number;
    for (const name of ['Gelu', 'GeluTanh', 'Silu', 'Mish', 'HardSwish', 'Sigmoid', 'Tanh', 'Relu']) {
      const g = ACTIVATIONS[name];
      if (PROBES.every((x) => Math.abs(f(JS_HELPERS, x) - g(x, [])) <= 1e-6 * (1 + Math.abs(g(x, []))))) {
        found = name;
        break;
      }
    }
  } catch {
    found = undefined;
  }
  recognized.set(expr, found);
  return found;
}

// ---------------------------------------------------------------------------------------------------------------
// Elementwise chains

/** ONNX elementwise ops and their expression ops (also the CPU backend's single-op native kernels). */
export const UNARY: Record<string, string> = {
  Neg: 'neg', Abs: 'abs', Exp: 'exp', Log: 'log', Sqrt: 'sqrt', Reciprocal: 'recip', Tanh: 'tanh', Erf: 'erf',
  Sigmoid: 'sigmoid', Relu: 'relu', Floor: 'floor', Ceil: 'ceil', Sin: 'sin', Cos: 'cos', Softplus: 'softplus',
};
export const BINARY: Record<string, string> = { Add: 'add', Sub: 'sub', Mul: 'mul', Div: 'div', Pow: 'pow', Max: 'max', Min: 'min' };

function outDtype(v: GraphView, name: string): DType | undefined {
  const t = v.type(name);
  return t?.kind === 'tensor' ? t.dtype : undefined;
}

/** Can node `n` be part of an elementwise chain, and what is its expression over its inputs? */
function elementwiseExpr(v: GraphView, n: Node): ((args: Expr[]) => Expr) | undefined {
  if (n.domain === KILN_DOMAIN && n.opType === 'Elementwise') {
    const e = parseExpr(n.attrs.expr.value as string);
    return (args) => substitute(e, args);
  }
  if (n.domain !== '') return undefined;
  const dt = outDtype(v, n.outputs[0]);
  if (!dt || !isFloat(dt) || dt.startsWith('float8') || dt === 'float4e2m1' || dt === 'float8e8m0') return undefined;
  if (n.inputs.some((i) => i && outDtype(v, i) !== dt)) return undefined;
  if (UNARY[n.opType] && n.inputs.length === 1) return ([a]) => ({ op: UNARY[n.opType], args: [a] });
  if (BINARY[n.opType] && n.inputs.length === 2) return ([a, b]) => ({ op: BINARY[n.opType], args: [a, b] });
  if (n.opType === 'LeakyRelu') return ([a]) => ({ op: 'leaky', args: [a, { lit: (n.attrs.alpha?.value as number | undefined) ?? 0.01 }] });
  return undefined;
}

function substitute(e: Expr, args: Expr[]): Expr {
  if ('input' in e) return args[e.input];
  if ('lit' in e) return e;
  return { op: e.op, args: e.args.map((a) => substitute(a, args)) };
}

/** Fuse chains of at least two elementwise ops (intermediates used once) into one kiln:Elementwise node. */
export function fuseElementwise(v: GraphView): number {
  let n = 0;
  const order = [...v.graph.nodes].reverse(); // consumers before producers: grow each chain from its root
  const absorbed = new Set<Node>();
  for (const root of order) {
    if (absorbed.has(root) || !elementwiseExpr(v, root)) continue;
    const outRank = v.shape(root.outputs[0])?.length;
    const leaves: string[] = [];
    const members: Node[] = [];
    const build = (name: string, isRoot: boolean): Expr => {
      const p = v.producer(name);
      if (!isRoot) {
        const c = v.constant(name);
        if (c && c.size === 1 && outRank !== undefined && c.rank <= outRank && isFloat(c.dtype)) return { lit: c.get(0) };
        if (!p || absorbed.has(p) || !v.singleUse(name) || !elementwiseExpr(v, p)) {
          let k = leaves.indexOf(name);
          if (k < 0) k = leaves.push(name) - 1;
          return { input: k };
        }
      }
      const node = isRoot ? root : p!;
      members.push(node);
      return elementwiseExpr(v, node)!(node.inputs.map((i) => build(i, false)));
    };
    const expr = build(root.outputs[0], true);
    if (members.length < 2 || leaves.length === 0) continue;
    members.forEach((m) => absorbed.add(m));
    const fused = newNode(v, 'Elementwise', leaves, [root.outputs[0]], { expr: str(printExpr(expr)) }, root);
    replacePattern(v, members.reverse(), fused);
    n++;
  }
  return n;
}

/** Elementwise nodes that compute a known activation on their own become that op (kiln:Gelu, ...). */
export function nameActivations(v: GraphView): number {
  let n = 0;
  for (const e of v.graph.nodes.filter((x) => x.domain === KILN_DOMAIN && x.opType === 'Elementwise' && x.inputs.length === 1)) {
    const name = recognizeActivation(e.attrs.expr.value as string);
    if (name === 'Gelu' || name === 'GeluTanh') {
      e.opType = 'Gelu';
      e.attrs = { approximate: str(name === 'Gelu' ? 'none' : 'tanh') };
      n++;
    }
  }
  if (n) v.reindex();
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// QKV projections merged into one GEMM

/** Several FusedMatMuls reading the same input with constant [K, N_i] weights -> one MatMul + Split. */
export function mergeParallelMatMuls(v: GraphView): number {
  let n = 0;
  const groups = new Map<string, Node[]>();
  for (const m of v.graph.nodes) {
    if (m.domain !== KILN_DOMAIN || m.opType !== 'FusedMatMul' || m.attrs.gemm?.value || m.attrs.transA?.value || m.attrs.transB?.value) continue;
    if (m.inputs[3] || (m.attrs.activation?.value as string | undefined)) continue;
    const w = v.constant(m.inputs[1]);
    if (!w || w.rank !== 2 || !isFloat(w.dtype)) continue;
    const key = `${m.inputs[0]}|${w.dims[0]}|${w.dtype}|${m.inputs[2] ? 'b' : ''}`;
    groups.set(key, [...(groups.get(key) ?? []), m]);
  }
  for (const ms of groups.values()) {
    if (ms.length < 2 || ms.some((m) => m.inputs[2] && !v.constant(m.inputs[2]))) continue;
    const ws = ms.map((m) => v.constant(m.inputs[1])!);
    const K = ws[0].dims[0];
    const Ns = ws.map((w) => w.dims[1]);
    const total = Ns.reduce((a, b) => a + b, 0);
    const W = new Float64Array(K * total);
    let off = 0;
    ws.forEach((w, j) => {
      const d = w.toFloat64();
      for (let k = 0; k < K; k++) for (let c = 0; c < Ns[j]; c++) W[k * total + off + c] = d[k * Ns[j] + c];
      off += Ns[j];
    });
    const inputs = [ms[0].inputs[0], v.addConstant('qkv.weight', TensorData.fromNumbers(ws[0].dtype, [K, total], W))];
    if (ms[0].inputs[2]) {
      const bs = ms.map((m) => v.constant(m.inputs[2])!.toFloat64());
      if (bs.some((b, j) => b.length !== Ns[j])) continue;
      inputs.push(v.addConstant('qkv.bias', TensorData.fromNumbers(ws[0].dtype, [total], bs.flatMap((b) => Array.from(b)))));
    }
    const merged = v.fresh('qkv');
    const first = v.graph.nodes.find((x) => ms.includes(x))!;
    const mm = newNode(v, 'FusedMatMul', inputs, [merged], {}, first);
    const split = newNode(v, 'Split', [merged, v.addConstant('qkv.split', TensorData.fromBigInts('int64', [Ns.length], Ns.map(BigInt)))], ms.map((m) => m.outputs[0]), { axis: int(-1) }, first, '');
    split.domain = KILN_DOMAIN;
    v.insertNode(mm, first);
    v.insertNode(split, first);
    v.removeNodes(ms);
    n++;
  }
  return n;
}

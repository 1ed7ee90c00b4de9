// Elementwise kernels: kiln:Elementwise expressions, conv/matmul epilogues (bias + residual + activation), Cast and
// Where. All share one "map" skeleton: out[i] = f(in0[off0(i)], in1[off1(i)], ...) with numpy broadcasting through
// baked strides; when every input is either dense over the output or a scalar, it takes a vectorized path (16-byte
// accesses of the narrowest operand, several elements per thread, a scalar tail).
import { parseExpr, renderCuda, type Expr } from '../../../ir/expr.js';
import {
  broadcastDims, broadcastStrides, checkDType, collapseDims, contiguousStrides, ctype, finish, indexType, launch1d, lit, load,
  offsetCode, prod, sizeOf, store, unsupported, wordType, type DevDType, type KernelSource, type TensorSpec,
} from './types.js';

interface MapArgs {
  prefix: string;
  where: string;
  inputs: TensorSpec[];
  out: TensorSpec;
  /** The stored output value from the inputs' raw storage values (C expressions `a0`, `a1`, ...). */
  body: (raw: string[]) => string;
  /** Kernel parameter for each input (defaults to input i). */
  inParams?: KernelSource['params'];
  /** Device functions the body calls, placed before the kernel. */
  helpers?: string;
}

/** Elements per thread on the vectorized path: 16 bytes of the narrowest dense operand (at most 8). */
function vectorWidth(dtypes: DevDType[]): number {
  return Math.min(8, 16 / Math.min(...dtypes.map(sizeOf)));
}

/** A union viewing VEC elements of `d` as 16-byte (or narrower, for short vectors) words. */
function vecUnion(d: DevDType, vec: number, name: string): { decl: string; words: number } {
  const bytes = vec * sizeOf(d), w = Math.min(16, bytes);
  return { decl: `union { ${wordType(w)} w[${bytes / w}]; ${ctype(d)} e[${vec}]; } ${name};`, words: bytes / w };
}

/** C statements loading VEC consecutive elements of `ptr` from element `base` into the union `dst` (word loads). */
function vecLoad(d: DevDType, vec: number, dst: string, ptr: string, base: string): string {
  const u = vecUnion(d, vec, dst);
  const w = wordType(Math.min(16, vec * sizeOf(d)));
  return `${u.decl}\n    #pragma unroll\n    for (int k = 0; k < ${u.words}; k++) ${dst}.w[k] = reinterpret_cast<const ${w}*>(${ptr} + ${base})[k];`;
}

function vecStore(d: DevDType, vec: number, src: string, ptr: string, base: string): string {
  const w = wordType(Math.min(16, vec * sizeOf(d)));
  return `#pragma unroll\n    for (int k = 0; k < ${vecUnion(d, vec, src).words}; k++) reinterpret_cast<${w}*>(${ptr} + ${base})[k] = ${src}.w[k];`;
}

function renderMap(a: MapArgs): KernelSource {
  a.inputs.forEach((t, i) => checkDType(t.dtype, `${a.where} input ${i}`));
  checkDType(a.out.dtype, `${a.where} output`);
  const dims = broadcastDims([...a.inputs.map((t) => t.dims), a.out.dims], a.where);
  if (dims.length !== a.out.dims.length || dims.some((d, i) => d !== a.out.dims[i])) {
    unsupported(a.where, `inputs broadcast to [${dims.join(',')}], not to the output shape [${a.out.dims.join(',')}]`);
  }
  const n = prod(dims);
  const it = indexType(n);
  const inStrides = a.inputs.map((t) => broadcastStrides(t.dims, dims));
  const c = collapseDims(dims, [contiguousStrides(dims), ...inStrides]);
  const dense = c.strides.slice(1).map((s) => c.dims.length === 1 && s[0] === 1);
  const scalar = c.strides.slice(1).map((s) => s.every((x) => x === 0));
  const ins = a.inputs.map((t, i) => `const ${ctype(t.dtype)}* __restrict__ in${i}`);
  const sig = `extern "C" __global__ void __launch_bounds__(256) KNAME(${[...ins, `${ctype(a.out.dtype)}* __restrict__ out`].join(', ')})`;
  const params: KernelSource['params'] = [...(a.inParams ?? a.inputs.map((_, i) => ({ kind: 'in' as const, index: i }))), { kind: 'out', index: 0 }];
  const raw = (i: number, idx: string) => (scalar[i] ? `in${i}[0]` : `in${i}[${idx}]`);
  const n0 = n === 0 ? 1 : n;
  if (dense.every((d, i) => d || scalar[i])) {
    const vec = vectorWidth([a.out.dtype, ...a.inputs.filter((_, i) => dense[i]).map((t) => t.dtype)]);
    const groups = Math.floor(n / vec);
    const loads = a.inputs.map((t, i) => (dense[i] ? vecLoad(t.dtype, vec, `v${i}`, `in${i}`, 'b') : `const ${ctype(t.dtype)} s${i} = in${i}[0];`));
    const vecBody = a.body(a.inputs.map((_, i) => (dense[i] ? `v${i}.e[k]` : `s${i}`)));
    const outDecl = vecUnion(a.out.dtype, vec, 'r').decl;
    const body = `${a.helpers ?? ''}
${sig} {
  const ${it} stride = (${it})gridDim.x * blockDim.x;
  for (${it} g = (${it})blockIdx.x * blockDim.x + threadIdx.x; g < ${lit(groups)}; g += stride) {
    const ${it} b = g * ${vec};
    ${loads.join('\n    ')}
    ${outDecl}
    #pragma unroll
    for (int k = 0; k < ${vec}; k++) r.e[k] = ${vecBody};
    ${vecStore(a.out.dtype, vec, 'r', 'out', 'b')}
  }
  for (${it} i = ${lit(groups * vec)} + (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(n)}; i += stride) {
    out[i] = ${a.body(a.inputs.map((_, i) => raw(i, 'i')))};
  }
}`;
    return finish(a.prefix, body, { ...launch1d(Math.max(1, Math.ceil(n0 / vec))), sharedBytes: 0, params });
  }
  const same = c.strides.slice(1).map((s) => s.every((x, d) => x === c.strides[0][d]));
  const walk = a.inputs.map((_, i) => i).filter((i) => !same[i] && !scalar[i]);
  const offs = offsetCode('i', c.dims, walk.map((i) => `o${i}`), walk.map((i) => c.strides[i + 1]), it);
  const body = `${a.helpers ?? ''}
${sig} {
  for (${it} i = (${it})blockIdx.x * blockDim.x + threadIdx.x; i < ${lit(n)}; i += (${it})gridDim.x * blockDim.x) {
    ${offs}
    out[i] = ${a.body(a.inputs.map((_, i) => (same[i] ? `in${i}[i]` : raw(i, `o${i}`))))};
  }
}`;
  return finish(a.prefix, body, { ...launch1d(n0), sharedBytes: 0, params });
}

/** Compute type of an expression kernel: float, or double when integers are involved (exact up to 2^53). */
const computeType = (ds: DevDType[]): 'float' | 'double' => (ds.some((d) => d === 'int32' || d === 'int64') ? 'double' : 'float');

export interface ElementwiseArgs {
  /** A `kiln:Elementwise` expression over $0..$n-1 (string or parsed). */
  expr: string | Expr;
  inputs: TensorSpec[];
  /** The broadcast shape of the inputs, and the stored dtype. */
  out: TensorSpec;
}

/**
 * `out = expr($0, $1, ...)` with numpy broadcasting. Params: inputs 0..n-1, then output 0. Math in float32 (double if
 * any operand is int32/int64); the result is stored with a C cast (truncation) for integer outputs. `out` may alias an
 * input of the output's shape (each element is read before it is written by the same thread).
 */
export function elementwise(args: ElementwiseArgs): KernelSource {
  const e = typeof args.expr === 'string' ? parseExpr(args.expr) : args.expr;
  const t = computeType([...args.inputs.map((x) => x.dtype), args.out.dtype]);
  const value = renderCuda(e, (i) => {
    if (i >= args.inputs.length) unsupported('elementwise', `expression uses $${i} but only ${args.inputs.length} inputs were given`);
    return `x${i}`;
  }, t);
  const helpers = `__device__ __forceinline__ ${t} k_f(${args.inputs.map((_, i) => `${t} x${i}`).join(', ')}) { return ${value}; }`;
  const body = (raw: string[]) => store(args.out.dtype, `k_f(${raw.map((r, i) => load(args.inputs[i].dtype, r, t)).join(', ')})`);
  return renderMap({ prefix: 'kiln_ew', where: 'elementwise', inputs: args.inputs, out: args.out, body, helpers });
}

/** Activations of kiln:FusedConv / kiln:FusedMatMul as expressions over $0, exactly as `ACTIVATIONS` in ops/fused.ts. */
export function activationExpr(name: string, p: readonly number[], x: Expr = { input: 0 }): Expr {
  const L = (v: number): Expr => ({ lit: v });
  const op = (o: string, ...args: Expr[]): Expr => ({ op: o, args });
  const need = (k: number) => {
    if (p.length < k) unsupported('epilogue', `activation ${name} needs ${k} parameters, got ${p.length}`, 'pass activation_params');
  };
  switch (name) {
    case '': return x;
    case 'Relu': return op('relu', x);
    case 'Clip': need(2); return op('clip', x, L(p[0]), L(p[1]));
    case 'LeakyRelu': need(1); return op('leaky', x, L(p[0]));
    case 'Sigmoid': return op('sigmoid', x);
    case 'HardSigmoid': need(2); return op('max', L(0), op('min', L(1), op('add', op('mul', L(p[0]), x), L(p[1]))));
    case 'HardSwish': return op('mul', x, op('max', L(0), op('min', L(1), op('add', op('div', x, L(6)), L(0.5)))));
    case 'Tanh': return op('tanh', x);
    case 'Gelu': return op('mul', op('mul', L(0.5), x), op('add', L(1), op('erf', op('div', x, L(Math.SQRT2)))));
    case 'GeluTanh': {
      const inner = op('mul', L(Math.sqrt(2 / Math.PI)), op('add', x, op('mul', L(0.044715), op('mul', op('mul', x, x), x))));
      return op('mul', op('mul', L(0.5), x), op('add', L(1), op('tanh', inner)));
    }
    case 'Silu': return op('div', x, op('add', L(1), op('exp', op('neg', x))));
    case 'Mish': return op('mul', x, op('tanh', op('softplus', x)));
    default: return unsupported('epilogue', `unknown activation '${name}'`, 'known: Relu, Clip, LeakyRelu, Sigmoid, HardSigmoid, HardSwish, Tanh, Gelu, GeluTanh, Silu, Mish');
  }
}

export interface EpilogueArgs {
  /** The GEMM/conv result. */
  y: TensorSpec;
  /** Per-channel bias: a 1-D tensor of y.dims[1] (biasAxis 1, NCHW) or y.dims[last] (biasAxis 'last') elements. */
  bias?: { dtype: DevDType };
  /** Added after the bias; broadcastable to y. */
  residual?: TensorSpec;
  /** A key of ACTIVATIONS ('' for none). */
  activation: string;
  params: readonly number[];
  /** Output dtype (shape is y's). */
  out: { dtype: DevDType };
  biasAxis: 1 | 'last';
}

/**
 * `out = act(y + bias[channel] + residual)`. Params: in 0 = y, in 1 = bias (when given), in 2 = residual (when given;
 * its index is 2 even without a bias, matching FusedConv/FusedMatMul input positions), out 0. Run in place by
 * passing the same buffer as y and out.
 */
export function epilogue(args: EpilogueArgs): KernelSource {
  const { y } = args;
  const inputs: TensorSpec[] = [y];
  const inParams: KernelSource['params'] = [{ kind: 'in', index: 0 }];
  let x: Expr = { input: 0 };
  if (args.bias) {
    const axis = args.biasAxis === 'last' ? y.dims.length - 1 : 1;
    if (axis < 0 || axis >= y.dims.length) unsupported('epilogue', `bias axis ${args.biasAxis} does not exist in y of rank ${y.dims.length}`);
    inputs.push({ dtype: args.bias.dtype, dims: [y.dims[axis], ...new Array<number>(y.dims.length - 1 - axis).fill(1)] });
    inParams.push({ kind: 'in', index: 1 });
    x = { op: 'add', args: [x, { input: 1 }] };
  }
  if (args.residual) {
    inputs.push(args.residual);
    inParams.push({ kind: 'in', index: 2 });
    x = { op: 'add', args: [x, { input: inputs.length - 1 }] };
  }
  const act = renderCuda(activationExpr(args.activation, args.params), () => 'x');
  const helpers = `__device__ __forceinline__ float k_act(float x) { return ${act}; }`;
  const body = (raw: string[]) => store(args.out.dtype, `k_act(${renderCuda(x, (i) => load(inputs[i].dtype, raw[i]))})`);
  return renderMap({ prefix: 'kiln_epi', where: 'epilogue', inputs, out: { dtype: args.out.dtype, dims: y.dims }, body, inParams, helpers });
}

/** ONNX Cast of `n` elements, dense. Params: in 0, out 0. Float to integer truncates; to bool is `!= 0`. */
export function cast(args: { from: DevDType; to: DevDType; n: number }): KernelSource {
  const { from, to } = args;
  const body = ([v]: string[]) => {
    if (from === to) return v;
    if (to === 'bool') return from === 'float16' || from === 'bfloat16' ? `(unsigned char)(${load(from, v)} != 0.0f)` : `(unsigned char)(${v} != 0)`;
    if (from === 'float16' || from === 'bfloat16') return store(to, load(from, v));
    if (to === 'float16' || to === 'bfloat16') return store(to, `(float)(${v})`);
    return `(${ctype(to)})(${v})`;
  };
  return renderMap({ prefix: 'kiln_cast', where: 'cast', inputs: [{ dtype: from, dims: [args.n] }], out: { dtype: to, dims: [args.n] }, body });
}

/** ONNX Where: out = cond ? x : y with numpy broadcasting (raw copies, any dtype). Params: in 0 cond, 1 x, 2 y, out 0. */
export function where(args: { cond: readonly number[]; x: TensorSpec; y: TensorSpec; out?: readonly number[] }): KernelSource {
  if (args.x.dtype !== args.y.dtype) unsupported('where', `x is ${args.x.dtype} but y is ${args.y.dtype}`, 'cast them to one dtype');
  const dims = args.out ?? broadcastDims([args.cond, args.x.dims, args.y.dims], 'where');
  const inputs: TensorSpec[] = [{ dtype: 'bool', dims: args.cond }, args.x, args.y];
  return renderMap({
    prefix: 'kiln_where', where: 'where', inputs, out: { dtype: args.x.dtype, dims }, body: ([c, x, y]) => `(${c} ? ${x} : ${y})`,
  });
}

// The contract between the CUDA C generators and the runtime, and the pieces every generator shares: storage types,
// the prelude (fp16/bf16 converters, math helpers), launch sizing, index types and kernel naming.
//
// Conventions that hold for every generator in this folder:
// - Tensors are dense, row-major (C order), at offset 0 of their device buffer; a buffer is at least 16-byte aligned
//   (kernels that vectorize rely on it; the memory planner aligns to 256 bytes).
// - float16 and bfloat16 are stored as `unsigned short`, bool as `unsigned char` (0 or 1); math is float32 (double
//   for integer tensors in `elementwise`), reductions accumulate in float32.
// - Shapes, strides and attributes are literals in the source; a kernel serves exactly the shapes it was rendered for.
// - Launch with `grid`, `block`, `sharedBytes` as given; the kernel's parameters are device pointers in `params` order.
import { KilnError } from '../../../ir/errors.js';

export type DevDType = 'float32' | 'float16' | 'bfloat16' | 'int32' | 'int64' | 'uint8' | 'bool' | 'int8';

/** One rendered kernel, ready for NVRTC and a launch. */
export interface KernelSource {
  /** The extern "C" __global__ function's name: a generator prefix plus a hash of the source, so unique per kernel. */
  name: string;
  /** Complete CUDA C with no #include (NVRTC compiles it without headers); one extern "C" __global__ function. */
  source: string;
  grid: [number, number, number];
  block: [number, number, number];
  /** Dynamic shared memory in bytes (static shared memory is declared in the source). */
  sharedBytes: number;
  /**
   * Kernel parameters in order, all device pointers: the node's input `index`, output `index`, or a workspace buffer
   * (`ws`, sized as the generator documents).
   */
  params: ({ kind: 'in'; index: number } | { kind: 'out'; index: number } | { kind: 'ws' })[];
  /** Compile for this architecture instead of the device's plain one ('sm_90a': Hopper's wgmma, setmaxnreg). */
  arch?: 'sm_90a';
}

/** A tensor as a generator sees it: element type and static dims. */
export interface TensorSpec {
  dtype: DevDType;
  dims: readonly number[];
}

/** Streaming multiprocessors of the target (H100 SXM: 132); grids of grid-stride kernels are sized to fill them. */
export const SM_COUNT = 132;
/** Threads per block of the 1-D kernels. */
export const BLOCK = 256;
/** Resident 256-thread blocks per SM we aim for (Hopper: 2048 threads per SM) times a few waves. */
const BLOCKS_PER_SM = 8 * 4;

const STORAGE: Record<DevDType, string> = {
  float32: 'float', float16: 'unsigned short', bfloat16: 'unsigned short', int32: 'int', int64: 'long long',
  uint8: 'unsigned char', bool: 'unsigned char', int8: 'signed char',
};
const SIZE: Record<DevDType, number> = { float32: 4, float16: 2, bfloat16: 2, int32: 4, int64: 8, uint8: 1, bool: 1, int8: 1 };

export const ctype = (d: DevDType): string => STORAGE[d];
export const sizeOf = (d: DevDType): number => SIZE[d];
export const isFloat = (d: DevDType): boolean => d === 'float32' || d === 'float16' || d === 'bfloat16';
export const prod = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

/** Throw if `d` is not a dtype the CUDA generators handle. */
export function checkDType(d: string, where: string): asserts d is DevDType {
  if (!(d in STORAGE)) {
    throw new KilnError(`${where}: dtype '${d}' is not supported by the CUDA code generator (supported: ${Object.keys(STORAGE).join(', ')})`, {
      hint: 'run this node on the cpu backend, or cast it to a supported type first',
    });
  }
}

/** A storage value (C expression) as a compute value of type `t`. */
export function load(d: DevDType, v: string, t: 'float' | 'double' = 'float'): string {
  if (d === 'float16') return t === 'float' ? `h2f(${v})` : `(double)h2f(${v})`;
  if (d === 'bfloat16') return t === 'float' ? `bf2f(${v})` : `(double)bf2f(${v})`;
  if (d === 'bool') return `(${t})((${v}) != 0)`;
  return d === 'float32' && t === 'float' ? `(${v})` : `(${t})(${v})`;
}

/** A compute value (C expression) as the storage value of `d` (fp16/bf16 round to nearest even). */
export function store(d: DevDType, v: string): string {
  if (d === 'float16') return `f2h((float)(${v}))`;
  if (d === 'bfloat16') return `f2bf((float)(${v}))`;
  if (d === 'bool') return `(unsigned char)((${v}) != 0)`;
  return `(${STORAGE[d]})(${v})`;
}

/** Index type for a kernel touching at most `maxElems` elements per tensor: 32-bit when it fits, else 64-bit. */
export const indexType = (maxElems: number): string => (maxElems < 2 ** 31 - 1 ? 'int' : 'long long');

/** An integer literal that is safe in either index type. */
export const lit = (n: number): string => (Math.abs(n) < 2 ** 31 ? String(n) : `${n}LL`);

/** Row-major strides of `dims`. */
export function contiguousStrides(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  for (let i = dims.length - 1, acc = 1; i >= 0; i--) {
    s[i] = acc;
    acc *= dims[i];
  }
  return s;
}

/** Numpy broadcast of several shapes; throws a KilnError naming `where` when they do not broadcast. */
export function broadcastDims(shapes: (readonly number[])[], where: string): number[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i;
      if (s[i] === out[o] || s[i] === 1) continue;
      if (out[o] !== 1) {
        throw new KilnError(`${where}: shapes ${shapes.map((x) => `[${x.join(',')}]`).join(' and ')} cannot be broadcast together`);
      }
      out[o] = s[i];
    }
  }
  return out;
}

/** Strides (in elements) to read a row-major tensor of `shape` as if broadcast to `out`: 0 along broadcast axes. */
export function broadcastStrides(shape: readonly number[], out: readonly number[]): number[] {
  const st = contiguousStrides(shape);
  const r = new Array<number>(out.length).fill(0);
  for (let i = 0; i < shape.length; i++) {
    const o = out.length - shape.length + i;
    r[o] = shape[i] === 1 && out[o] !== 1 ? 0 : st[i];
  }
  return r;
}

/**
 * Merge adjacent axes that every operand walks contiguously (stride[d] == stride[d+1] * dims[d+1] for all, or both
 * zero), and drop axes of size 1. Returns the shorter dims and each operand's strides over them (at least rank 1).
 */
export function collapseDims(dims: readonly number[], strides: (readonly number[])[]): { dims: number[]; strides: number[][] } {
  const keep = dims.map((_, i) => i).filter((i) => dims[i] !== 1);
  const outDims: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (const i of keep) {
    const last = outDims.length - 1;
    const mergeable = last >= 0 && strides.every((s, k) => outStrides[k][last] === s[i] * dims[i]);
    if (mergeable) {
      outDims[last] *= dims[i];
      strides.forEach((s, k) => (outStrides[k][last] = s[i]));
    } else {
      outDims.push(dims[i]);
      strides.forEach((s, k) => outStrides[k].push(s[i]));
    }
  }
  if (outDims.length === 0) return { dims: [1], strides: strides.map(() => [0]) };
  return { dims: outDims, strides: outStrides };
}

/**
 * C statements that decompose the flat row-major index `flat` over `dims` and add `coord * stride` to each offset
 * variable (`offs[k]` with `strides[k]`). Axes whose strides are all 0 cost nothing but their division.
 */
export function offsetCode(flat: string, dims: readonly number[], offs: string[], strides: (readonly number[])[], it: string, tag = 'r'): string {
  const lines = offs.map((o) => `${it} ${o} = 0;`);
  if (strides.every((s) => s.every((x) => x === 0))) return lines.join('\n    ');
  lines.unshift(`${it} ${tag} = ${flat};`);
  for (let d = dims.length - 1; d >= 0; d--) {
    const used = strides.map((s, k) => [s[d], offs[k]] as const).filter(([s]) => s !== 0);
    if (d === 0) {
      for (const [s, o] of used) lines.push(`${o} += ${tag} * ${lit(s)};`);
      break;
    }
    if (used.length === 0) lines.push(`${tag} /= ${lit(dims[d])};`);
    else lines.push(`{ ${it} qd = ${tag} / ${lit(dims[d])}; ${it} cd = ${tag} - qd * ${lit(dims[d])}; ${used.map(([s, o]) => `${o} += cd * ${lit(s)};`).join(' ')} ${tag} = qd; }`);
  }
  return lines.join('\n    ');
}

/** A 1-D grid for `work` independent items, one per thread, grid-stride beyond what fills the device. */
export function launch1d(work: number, block = BLOCK): { grid: [number, number, number]; block: [number, number, number] } {
  const blocks = Math.max(1, Math.min(Math.ceil(work / block), SM_COUNT * BLOCKS_PER_SM));
  return { grid: [blocks, 1, 1], block: [block, 1, 1] };
}

/** Unsigned word type of `bytes` (1, 2, 4, 8 or 16) for moving raw data. */
export function wordType(bytes: number): string {
  const t: Record<number, string> = { 1: 'unsigned char', 2: 'unsigned short', 4: 'unsigned int', 8: 'unsigned long long', 16: 'kv4' };
  return t[bytes];
}

/**
 * Shared by every kernel: 16-byte vector word, fp16/bf16 converters (inline PTX for fp16; bf16 by bit shifting with
 * round-to-nearest-even), warp reductions, and the `k_*` math helpers used by `renderCuda` (float and double).
 */
export const PRELUDE = String.raw`struct alignas(16) kv4 { unsigned int x, y, z, w; };
#define K_INF __int_as_float(0x7f800000)
#define K_NAN __int_as_float(0x7fffffff)
__device__ __forceinline__ float h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float bf2f(unsigned short b) { return __uint_as_float(((unsigned int)b) << 16); }
__device__ __forceinline__ unsigned short f2bf(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float k_max(float a, float b) { return (a != a || b != b) ? K_NAN : (a > b ? a : b); }
__device__ __forceinline__ double k_max(double a, double b) { return (a != a || b != b) ? (double)K_NAN : (a > b ? a : b); }
__device__ __forceinline__ float k_min(float a, float b) { return (a != a || b != b) ? K_NAN : (a < b ? a : b); }
__device__ __forceinline__ double k_min(double a, double b) { return (a != a || b != b) ? (double)K_NAN : (a < b ? a : b); }
__device__ __forceinline__ float k_pow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double k_pow(double a, double b) { return pow(a, b); }
__device__ __forceinline__ float k_abs(float a) { return fabsf(a); }
__device__ __forceinline__ double k_abs(double a) { return fabs(a); }
__device__ __forceinline__ float k_exp(float a) { return expf(a); }
__device__ __forceinline__ double k_exp(double a) { return exp(a); }
__device__ __forceinline__ float k_log(float a) { return logf(a); }
__device__ __forceinline__ double k_log(double a) { return log(a); }
__device__ __forceinline__ float k_sqrt(float a) { return sqrtf(a); }
__device__ __forceinline__ double k_sqrt(double a) { return sqrt(a); }
__device__ __forceinline__ float k_tanh(float a) { return tanhf(a); }
__device__ __forceinline__ double k_tanh(double a) { return tanh(a); }
__device__ __forceinline__ float k_erf(float a) { return erff(a); }
__device__ __forceinline__ double k_erf(double a) { return erf(a); }
__device__ __forceinline__ float k_floor(float a) { return floorf(a); }
__device__ __forceinline__ double k_floor(double a) { return floor(a); }
__device__ __forceinline__ float k_ceil(float a) { return ceilf(a); }
__device__ __forceinline__ double k_ceil(double a) { return ceil(a); }
__device__ __forceinline__ float k_sin(float a) { return sinf(a); }
__device__ __forceinline__ double k_sin(double a) { return sin(a); }
__device__ __forceinline__ float k_cos(float a) { return cosf(a); }
__device__ __forceinline__ double k_cos(double a) { return cos(a); }
__device__ __forceinline__ float k_sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }
__device__ __forceinline__ double k_sigmoid(double a) { return 1.0 / (1.0 + exp(-a)); }
__device__ __forceinline__ float k_relu(float a) { return a > 0.0f ? a : 0.0f; }
__device__ __forceinline__ double k_relu(double a) { return a > 0.0 ? a : 0.0; }
__device__ __forceinline__ float k_softplus(float a) { return a > 20.0f ? a : log1pf(expf(a)); }
__device__ __forceinline__ double k_softplus(double a) { return a > 20.0 ? a : log1p(exp(a)); }
__device__ __forceinline__ float k_clip(float a, float lo, float hi) { return a < lo ? lo : (a > hi ? hi : a); }
__device__ __forceinline__ double k_clip(double a, double lo, double hi) { return a < lo ? lo : (a > hi ? hi : a); }
__device__ __forceinline__ float k_leaky(float a, float s) { return a < 0.0f ? a * s : a; }
__device__ __forceinline__ double k_leaky(double a, double s) { return a < 0.0 ? a * s : a; }
`;

/** FNV-1a over the source, 64 bits as two 32-bit halves, in hex: stable across runs and platforms. */
export function sourceHash(s: string): string {
  let h1 = 0x811c9dc5, h2 = 0x01000193 ^ s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995) ^ (h2 >>> 15);
  }
  return (h1 >>> 0).toString(16).padStart(8, '0') + (h2 >>> 0).toString(16).padStart(8, '0');
}

/**
 * Assemble a kernel: `body` is everything after the prelude and uses `KNAME` as the function's name, which becomes
 * `<prefix>_<hash of the source>`.
 */
export function finish(prefix: string, body: string, launch: Omit<KernelSource, 'name' | 'source'>): KernelSource {
  const text = `${PRELUDE}\n${body.trim()}\n`;
  const name = `${prefix}_${sourceHash(text)}`;
  const check = (v: number[], what: string, max: number[]) => v.forEach((x, i) => {
    if (!(Number.isInteger(x) && x >= 1 && x <= max[i])) throw new KilnError(`${name}: ${what}[${i}] = ${x} is outside [1, ${max[i]}]`);
  });
  check(launch.grid, 'grid', [2 ** 31 - 1, 65535, 65535]);
  check(launch.block, 'block', [1024, 1024, 64]);
  return { name, source: text.replace(/\bKNAME\b/g, name), ...launch };
}

/** Throw a KilnError about an unsupported configuration of a generator. */
export function unsupported(where: string, what: string, hint?: string): never {
  throw new KilnError(`${where}: ${what}`, { hint: hint ?? 'run this node on the cpu backend' });
}

// The row skeleton shared by normalization and softmax: R independent contiguous rows of N elements, one warp per
// row (N <= 1024, eight rows per 256-thread block) or one block per row, 16-byte loads when the row length allows,
// the row kept in registers when it fits (at most 32 values per thread), else re-read from memory on each pass.
import { ctype, indexType, lit, load, sizeOf, SM_COUNT, store, wordType, type DevDType, type KernelSource } from './types.js';

export interface RowPlan {
  rows: number;
  n: number;
  /** Threads per row (32 = one warp per row). */
  threads: number;
  /** Elements per vector access. */
  vec: number;
  /** Vector chunks per thread. */
  chunks: number;
  /** Row held in registers. */
  cached: boolean;
  it: string;
  launch: Pick<KernelSource, 'grid' | 'block'>;
}

export function planRows(rows: number, n: number, dtypes: DevDType[]): RowPlan {
  let vec = 16 / Math.max(...dtypes.map(sizeOf));
  while (vec > 1 && n % vec !== 0) vec /= 2;
  const threads = n <= 1024 ? 32 : n <= 8192 ? 256 : n <= 16384 ? 512 : 1024;
  const chunks = Math.ceil(n / (threads * vec));
  const perBlock = threads === 32 ? 8 : 1;
  const blocks = Math.max(1, Math.min(Math.ceil(rows / perBlock), SM_COUNT * 32));
  const launch = threads === 32 ? { grid: [blocks, 1, 1], block: [256, 1, 1] } : { grid: [blocks, 1, 1], block: [threads, 1, 1] };
  return {
    rows, n, threads, vec, chunks, cached: chunks * vec <= 32, it: indexType(rows * n),
    launch: launch as RowPlan['launch'],
  };
}

/** The loop over this thread's rows, with `lane`, `row` and the row base offset `rb` defined. */
export function rowLoop(p: RowPlan, body: string): string {
  const head = p.threads === 32
    ? `const int lane = threadIdx.x & 31;
  for (${p.it} row = (${p.it})blockIdx.x * 8 + (threadIdx.x >> 5); row < ${lit(p.rows)}; row += (${p.it})gridDim.x * 8) {`
    : `const int lane = threadIdx.x;
  for (${p.it} row = blockIdx.x; row < ${lit(p.rows)}; row += gridDim.x) {`;
  return `${head}
    const ${p.it} rb = row * ${lit(p.n)};
    ${body}
  }`;
}

/** A reduction across the row's threads (warp shuffles, plus shared memory when a block owns the row). */
export function rowReduce(p: RowPlan, v: string, op: 'sum' | 'max'): string {
  if (p.threads === 32) return `warp_${op}(${v})`;
  return `block_${op}(${v})`;
}

/** Block reductions for block-per-row plans (empty for warp plans). */
export function rowHelpers(p: RowPlan): string {
  if (p.threads === 32) return '';
  const nw = p.threads / 32;
  const f = (op: 'sum' | 'max') => `__device__ __forceinline__ float block_${op}(float v) {
  __shared__ float sh[${nw}];
  v = warp_${op}(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  float t = sh[0];
  #pragma unroll
  for (int w = 1; w < ${nw}; w++) t = ${op === 'sum' ? 't + sh[w]' : 'fmaxf(t, sh[w])'};
  return t;
}`;
  return `${f('sum')}\n${f('max')}`;
}

const col = (p: RowPlan, c: string) => `((${c}) * ${p.threads} + lane) * ${p.vec}`;
const needsGuard = (p: RowPlan) => p.n % (p.threads * p.vec) !== 0;

function vload(p: RowPlan, d: DevDType, ptr: string, base: string, dst: string): string {
  if (p.vec === 1) return `${ctype(d)} ${dst}[1] = { ${ptr}[${base}] };`;
  const bytes = p.vec * sizeOf(d), w = Math.min(16, bytes);
  return `union { ${wordType(w)} w[${bytes / w}]; ${ctype(d)} e[${p.vec}]; } u_${dst};
      #pragma unroll
      for (int qq = 0; qq < ${bytes / w}; qq++) u_${dst}.w[qq] = reinterpret_cast<const ${wordType(w)}*>(${ptr} + ${base})[qq];
      const ${ctype(d)}* ${dst} = u_${dst}.e;`;
}

/**
 * Load this thread's part of the row of `ptr` (dtype `d`) into registers `xv[chunks][vec]` as float, with `xf(v, c)`
 * transforming each value (`c` is the column); cached plans only. Out-of-row slots get `fill`.
 */
export function rowLoad(p: RowPlan, d: DevDType, ptr: string, fill: string, xf = (v: string, _c: string) => v): string {
  const guard = needsGuard(p);
  return `float xv[${p.chunks}][${p.vec}];
    #pragma unroll
    for (int c = 0; c < ${p.chunks}; c++) {
      const int b = ${col(p, 'c')};
      ${guard ? `if (b >= ${p.n}) { for (int k = 0; k < ${p.vec}; k++) xv[c][k] = ${fill}; continue; }` : ''}
      ${vload(p, d, ptr, 'rb + b', 'e')}
      #pragma unroll
      for (int k = 0; k < ${p.vec}; k++) { const int col = b + k; (void)col; xv[c][k] = ${xf(load(d, 'e[k]'), 'col')}; }
    }`;
}

/**
 * Run `stmt` for each of this thread's row elements with `float v` (after `xf`) and `int col` defined: from
 * registers (cached plans; `stmt` may assign `xv[c][k]`) or re-read from `ptr` (streamed plans).
 */
export function rowEach(p: RowPlan, d: DevDType, ptr: string, stmt: string, xf = (v: string, _c: string) => v): string {
  const guard = needsGuard(p);
  if (p.cached) {
    return `#pragma unroll
    for (int c = 0; c < ${p.chunks}; c++) {
      #pragma unroll
      for (int k = 0; k < ${p.vec}; k++) {
        const int col = ${col(p, 'c')} + k; (void)col;
        ${guard ? `if (col >= ${p.n}) continue;` : ''}
        float v = xv[c][k]; (void)v;
        ${stmt}
      }
    }`;
  }
  return `#pragma unroll 2
    for (int c = 0; c < ${p.chunks}; c++) {
      const int b = ${col(p, 'c')};
      ${guard ? `if (b >= ${p.n}) break;` : ''}
      ${vload(p, d, ptr, 'rb + b', 'e')}
      #pragma unroll
      for (int k = 0; k < ${p.vec}; k++) {
        const int col = b + k; (void)col;
        float v = ${xf(load(d, 'e[k]'), 'col')}; (void)v;
        ${stmt}
      }
    }`;
}

/** A second row output written from the first as stored (a quantized copy): `value` maps the stored float to `d`. */
export interface RowSecond {
  d: DevDType;
  out: string;
  value: (stored: string) => string;
}

/**
 * Write the row of `out` (dtype `d`): `value` is a float expression of `v` (the element, after `xf`) and `col`. With
 * `second`, the same pass also writes `second.out` from each element as stored in `out`.
 */
export function rowWrite(p: RowPlan, inD: DevDType, inPtr: string, d: DevDType, out: string, value: string, xf = (v: string, _c: string) => v, second?: RowSecond): string {
  const guard = needsGuard(p);
  const src = p.cached ? 'xv[c][k]' : xf(load(inD, 'e[k]'), 'col');
  const buffer = (t: DevDType, u: string, r: string, dst: string) => {
    const bytes = p.vec * sizeOf(t), w = Math.min(16, bytes);
    return {
      decl: p.vec === 1 ? `${ctype(t)} ${r}[1];` : `union { ${wordType(w)} w[${bytes / w}]; ${ctype(t)} e[${p.vec}]; } ${u}; ${ctype(t)}* ${r} = ${u}.e;`,
      st: p.vec === 1 ? `${dst}[rb + b] = ${r}[0];`
        : `#pragma unroll
      for (int qq = 0; qq < ${bytes / w}; qq++) reinterpret_cast<${wordType(w)}*>(${dst} + rb + b)[qq] = ${u}.w[qq];`,
    };
  };
  const one = buffer(d, 'ur', 'r', out);
  const two = second && buffer(second.d, 'ur2', 'r2', second.out);
  const decl = `${one.decl}${two ? ` ${two.decl}` : ''}`;
  const st = `${one.st}${two ? `\n      ${two.st}` : ''}`;
  const set2 = second ? `\n        r2[k] = ${second.value(load(d, 'r[k]'))};` : '';
  return `${p.cached ? '#pragma unroll' : '#pragma unroll 2'}
    for (int c = 0; c < ${p.chunks}; c++) {
      const int b = ${col(p, 'c')};
      ${guard ? `if (b >= ${p.n}) break;` : ''}
      ${p.cached ? '' : vload(p, inD, inPtr, 'rb + b', 'e')}
      ${decl}
      #pragma unroll
      for (int k = 0; k < ${p.vec}; k++) {
        const int col = b + k; (void)col;
        float v = ${src}; (void)v;
        r[k] = ${store(d, value)};${set2}
      }
      ${st}
    }`;
}


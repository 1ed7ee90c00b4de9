// cuBLASLt: GEMMs with fused bias/activation epilogues, batched and strided forms, algorithms from its heuristic.
// Kiln's tensors are row-major; cuBLASLt is column-major. Row-major C[M,N] = A[M,K] @ B[K,N] is computed as the
// column-major C^T[N,M] = B^T[N,K] @ A^T[K,M], so "A" for cuBLASLt is our B and vice versa.
import { KilnError } from '../../../ir/errors.js';
import { loadLibrary } from './libs.js';
import { current, cu } from './driver.js';

type Fn = (...args: any[]) => any;
let api: Record<string, Fn> | undefined;

function load(): Record<string, Fn> {
  if (api) return api;
  const lib = loadLibrary('cuBLASLt', ['libcublasLt.so.13', 'libcublasLt.so.12', 'libcublasLt.so', 'libcublasLt.so.*']);
  api = {
    create: lib.func('int cublasLtCreate(_Out_ void **handle)'),
    descCreate: lib.func('int cublasLtMatmulDescCreate(_Out_ void **desc, int computeType, int scaleType)'),
    descDestroy: lib.func('int cublasLtMatmulDescDestroy(void *desc)'),
    descSet: lib.func('int cublasLtMatmulDescSetAttribute(void *desc, int attr, const void *buf, size_t size)'),
    layoutCreate: lib.func('int cublasLtMatrixLayoutCreate(_Out_ void **layout, int type, uint64_t rows, uint64_t cols, int64_t ld)'),
    layoutDestroy: lib.func('int cublasLtMatrixLayoutDestroy(void *layout)'),
    layoutSet: lib.func('int cublasLtMatrixLayoutSetAttribute(void *layout, int attr, const void *buf, size_t size)'),
    prefCreate: lib.func('int cublasLtMatmulPreferenceCreate(_Out_ void **pref)'),
    prefSet: lib.func('int cublasLtMatmulPreferenceSetAttribute(void *pref, int attr, const void *buf, size_t size)'),
    heuristic: lib.func('int cublasLtMatmulAlgoGetHeuristic(void *h, void *desc, void *a, void *b, void *c, void *d, void *pref, int requested, _Out_ uint8_t *results, _Out_ int *returned)'),
    matmul: lib.func('int cublasLtMatmul(void *h, void *desc, const void *alpha, uint64_t A, void *Adesc, uint64_t B, void *Bdesc, const void *beta, uint64_t C, void *Cdesc, uint64_t D, void *Ddesc, const void *algo, uint64_t ws, size_t wsSize, void *stream)'),
  };
  return api;
}

function check(st: number, call: string, what: string): void {
  if (st !== 0) throw new KilnError(`cuBLASLt ${call} failed with status ${st} while ${what}.`);
}

// enum values from cublasLt.h / library_types.h
export const CUDA_R = { float32: 0, float16: 2, bfloat16: 14, int8: 3, int32: 10, fp8e4m3: 28 } as const;
const COMPUTE = { f32: 68, f32fastTf32: 77, f32fast16f: 74, f32fast16bf: 75, i32: 72 } as const;
const DESC = { transa: 3, transb: 4, epilogue: 7, biasPointer: 8, biasDataType: 26 } as const;
const LAYOUT = { batchCount: 5, stridedBatchOffset: 6 } as const;
export const EPILOGUE = { none: 1, relu: 2, bias: 4, reluBias: 6, gelu: 32, geluBias: 36 } as const;
const HEURISTIC_RESULT_BYTES = 96; // cublasLtMatmulAlgo_t (64) + workspaceSize + state + wavesCount + reserved[4]
export const WORKSPACE_BYTES = 32 << 20;

const handles = new Map<number, unknown>(); // per device ordinal: a handle belongs to the device current at creation
function lt(): unknown {
  let h = handles.get(current.ordinal);
  if (!h) {
    const out = [null];
    check(load().create(out), 'cublasLtCreate', 'initializing cuBLASLt');
    handles.set(current.ordinal, h = out[0]);
  }
  return h;
}

export interface GemmSpec {
  /** row-major shapes: C[M,N] = op(A)[M,K] @ op(B)[K,N], batched `batch` times with the given element strides */
  M: number; N: number; K: number; batch: number;
  transA: boolean; transB: boolean;
  dtype: 'float32' | 'float16' | 'bfloat16';
  strideA: number; strideB: number; strideC: number;
  /** fused epilogue: bias along N (length N), optional ReLU or GELU */
  epilogue: keyof typeof EPILOGUE;
  tf32?: boolean;
  alpha?: number;
  /** C input accumulated with beta (residual), same layout as the output */
  beta?: number;
}

/** A prepared GEMM: descriptors plus the candidate algorithms from cuBLASLt's heuristic (best first). */
export interface PreparedGemm {
  spec: GemmSpec;
  /** `algo` indexes the heuristic's candidates; default: the one timed fastest (or the heuristic's first) */
  run(A: number, B: number, D: number, bias: number, stream: unknown, algo?: number, C?: number): void;
  algos: number;
  destroy(): void;
}

/**
 * GEMM algorithm tactics. While `tuning.on` (the build's run on the device), each GEMM's first call times the
 * heuristic's candidates on its real operands and keeps the fastest; the choices, keyed by layer and shape, go into
 * the plan and are set again when it loads, so loading never times anything.
 */
export const tuning = { on: false };
export const gemmChoices = new Map<string, number>();
/** each timed candidate list's times (ms, Infinity: not a candidate) by choice key, from the build's device run */
export const choiceTimes = new Map<string, number[]>();
/** what each timed list's candidates are (the caller's description), by choice key: poolChoices pools like lists only */
export const choiceSets = new Map<string, string>();
/** keys of the choices GEMMs ran with since the last clear (what a plan must carry) */
export const usedChoices = new Set<string>();

function gemmKey(spec: GemmSpec, what: string): string {
  return `${what}|${spec.M}x${spec.N}x${spec.K}x${spec.batch}|${spec.transA ? 'T' : 'N'}${spec.transB ? 'T' : 'N'}|${spec.dtype}|${spec.epilogue}${spec.tf32 ? '|tf32' : ''}`;
}

const holds = new Map<number, (stream: unknown) => void>();
/** The device's hold for timeOnStream: a kernel that keeps `stream` busy a while (the device registers it). */
export function setTimingHold(ordinal: number, f: (stream: unknown) => void): void {
  holds.set(ordinal, f);
}

/**
 * Median time of `f` on `stream` over `reps` runs after 2 warm-ups (CUDA events), ms. Each timed run is queued behind a
 * hold (a kernel spinning ~0.3 ms): the host enqueues the events and `f`'s launches meanwhile, so the events time the
 * kernels back to back. Without it a 10-15 us kernel launched through koffi can wait on the host between launches, and
 * the candidate timed while the host was slow (JIT warm-up, GC, compiles on other threads) lost: BERT-base int8
 * builds picked kernels whose replayed graph took 0.662 to 0.805 ms from process to process. KILN_TIMING_HOLD=0: none.
 */
export function timeOnStream(f: () => void, stream: unknown, reps: number): number {
  const ev = [0, 1].map(() => { const e = [null]; cu('cuEventCreate', e, 0); return e[0]; });
  const hold = process.env.KILN_TIMING_HOLD === '0' ? undefined : holds.get(current.ordinal);
  try {
    f(); f();
    const times: number[] = [];
    for (let r = 0; r < reps; r++) {
      hold?.(stream);
      cu('cuEventRecord', ev[0], stream);
      f();
      cu('cuEventRecord', ev[1], stream);
      cu('cuEventSynchronize', ev[1]);
      const ms = [0];
      cu('cuEventElapsedTime', ms, ev[0], ev[1]);
      times.push(ms[0]);
    }
    return times.sort((a, b) => a - b)[times.length >> 1];
  } finally {
    for (const e of ev) cu('cuEventDestroy_v2', e);
  }
}

/**
 * One layer's choice among candidate implementations, timed on the build's device run like cuBLASLt's algorithms: the
 * index of the fastest goes to \`gemmChoices\` under \`key\` (saved in the plan; a saved index past the list falls back
 * to the first). Candidates are made on first use and readied once; \`prefetch\` may start compiling them while a
 * timing build waits for the first run.
 */
export function timedChoice<C extends { ready(): void; destroy(): void }>(key: string, makers: (() => C)[], prefetch?: (made: Map<number, C>) => void, set?: string) {
  const made = new Map<number, C>(), readied = new Set<number>();
  const get = (i: number): C => {
    let m = made.get(i);
    if (!m) made.set(i, m = makers[i]());
    if (!readied.has(i)) {
      m.ready();
      readied.add(i);
    }
    return m;
  };
  const saved = makers.length > 1 ? gemmChoices.get(key) : 0;
  let choice = saved !== undefined && saved < makers.length ? saved : tuning.on ? -1 : 0;
  if (choice >= 0) get(choice);
  else prefetch?.(made);
  return {
    /** The chosen candidate; a timing build's first call times each with \`time\` (throwing: not a candidate). */
    pick(time: (m: C) => number): C {
      if (choice < 0) {
        const times = makers.map((_, i) => {
          try {
            return time(get(i));
          } catch {
            return Infinity; // e.g. cuBLASLt has no algorithm for this shape
          }
        });
        choice = times.indexOf(Math.min(...times));
        gemmChoices.set(key, choice);
        choiceTimes.set(key, times);
        if (set !== undefined) choiceSets.set(key, set);
      }
      if (makers.length > 1 && gemmChoices.get(key) === choice) usedChoices.add(key);
      return get(choice);
    },
    destroy(): void {
      for (const m of made.values()) m.destroy();
    },
  };
}

/**
 * Layers of one shape take one candidate: the one with the least time summed over all of them (one that fails on any
 * is out). A layer's own pick rests on 5 timed repetitions of 1-2 us differences, and identical layers picked
 * different kernels (BERT-base int8: FFN1 a 64x64 cp.async kernel in one layer, a 64x128 TMA one in the next). On
 * BERT-base int8 8x128 (H100) the replayed graph did not move (0.6749 pooled vs 0.6742 ms per layer), and a search of
 * every candidate per shape in the replayed graph (bench/quant/bert-ncu.js search) found nothing 2 us faster than the
 * pooled picks: what pooling buys is one kernel per shape, whatever the build. Keys are
 * `<kind>|<revision>|<layer name>|<shape ...>`: a shape is the key without its third field, and layers pool only where
 * their candidate lists are described alike (timedChoice's `set`). KILN_POOL_CHOICES=0
 * keeps each layer's own pick. Returns the choices changed.
 */
export function poolChoices(): number {
  if (process.env.KILN_POOL_CHOICES === '0') return 0;
  const groups = new Map<string, string[]>();
  for (const key of choiceTimes.keys()) {
    const f = key.split('|');
    if (f.length < 4) continue;
    // with the candidate list's description: two layers of one shape can be offered different lists (an int8 second
    // output rules cuBLASLt out, a conv's channel count adds the 64-byte k-step kernels), and an index means a kernel
    // only within its list
    const shape = `${[...f.slice(0, 2), ...f.slice(3)].join('|')}#${choiceSets.get(key) ?? ''}`;
    const g = groups.get(shape);
    if (g) g.push(key);
    else groups.set(shape, [key]);
  }
  let changed = 0;
  for (const keys of groups.values()) {
    const n = choiceTimes.get(keys[0])!.length;
    if (keys.length < 2 || keys.some((k) => choiceTimes.get(k)!.length !== n)) continue;
    const sum = Array.from({ length: n }, (_, i) => keys.reduce((acc, k) => acc + choiceTimes.get(k)![i], 0));
    const best = sum.indexOf(Math.min(...sum));
    if (!Number.isFinite(sum[best])) continue;
    for (const k of keys) {
      if (gemmChoices.get(k) !== best) changed++;
      gemmChoices.set(k, best);
    }
  }
  return changed;
}

export function prepareGemm(spec: GemmSpec, what: string, maxAlgos = 4): PreparedGemm {
  const n = load();
  const type = CUDA_R[spec.dtype];
  const compute = spec.dtype === 'float32' ? (spec.tf32 ? COMPUTE.f32fastTf32 : COMPUTE.f32) : COMPUTE.f32;
  const desc = [null];
  check(n.descCreate(desc, compute, CUDA_R.float32), 'cublasLtMatmulDescCreate', what);
  const i32 = (v: number) => { const b = Buffer.alloc(4); b.writeInt32LE(v); return b; };
  // swap roles (see the header comment): cuBLAS "A" = our B, "B" = our A
  check(n.descSet(desc[0], DESC.transa, i32(spec.transB ? 1 : 0), 4), 'cublasLtMatmulDescSetAttribute(TRANSA)', what);
  check(n.descSet(desc[0], DESC.transb, i32(spec.transA ? 1 : 0), 4), 'cublasLtMatmulDescSetAttribute(TRANSB)', what);
  check(n.descSet(desc[0], DESC.epilogue, i32(EPILOGUE[spec.epilogue]), 4), 'cublasLtMatmulDescSetAttribute(EPILOGUE)', what);
  const layout = (rows: number, cols: number, ld: number, stride: number) => {
    const l = [null];
    check(n.layoutCreate(l, type, rows, cols, ld), 'cublasLtMatrixLayoutCreate', what);
    if (spec.batch > 1) {
      check(n.layoutSet(l[0], LAYOUT.batchCount, i32(spec.batch), 4), 'cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)', what);
      const s = Buffer.alloc(8);
      s.writeBigInt64LE(BigInt(stride));
      check(n.layoutSet(l[0], LAYOUT.stridedBatchOffset, s, 8), 'cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)', what);
    }
    return l[0];
  };
  const { M, N, K } = spec;
  // column-major views of our row-major matrices
  const la = spec.transB ? layout(K, N, K, spec.strideB) : layout(N, K, N, spec.strideB); // our B (as cuBLAS A)
  const lb = spec.transA ? layout(M, K, M, spec.strideA) : layout(K, M, K, spec.strideA); // our A (as cuBLAS B)
  const lc = layout(N, M, N, spec.strideC);
  const pref = [null];
  check(n.prefCreate(pref), 'cublasLtMatmulPreferenceCreate', what);
  const ws = Buffer.alloc(8);
  ws.writeBigUInt64LE(BigInt(WORKSPACE_BYTES));
  check(n.prefSet(pref[0], 1, ws, 8), 'cublasLtMatmulPreferenceSetAttribute', what);
  const results = Buffer.alloc(HEURISTIC_RESULT_BYTES * maxAlgos);
  const count = [0];
  check(n.heuristic(lt(), desc[0], la, lb, lc, lc, pref[0], maxAlgos, results, count), 'cublasLtMatmulAlgoGetHeuristic', what);
  if (!count[0]) throw new KilnError(`cuBLASLt has no algorithm for ${what} (M=${M} N=${N} K=${K} batch=${spec.batch} ${spec.dtype}).`);
  const alpha = Buffer.alloc(4), beta = Buffer.alloc(4);
  alpha.writeFloatLE(spec.alpha ?? 1);
  beta.writeFloatLE(spec.beta ?? 0);
  const biasBuf = Buffer.alloc(8);
  const key = gemmKey(spec, what);
  const g: PreparedGemm = {
    spec,
    algos: count[0],
    run(A, B, D, bias, stream, algo, C) {
      if (algo === undefined) {
        let chosen = gemmChoices.get(key);
        if (chosen === undefined && tuning.on && count[0] > 1 && C !== D) {
          // time the candidates on the real operands (D is overwritten by the final call below)
          const times = Array.from({ length: count[0] }, (_, k) => timeOnStream(() => g.run(A, B, D, bias, stream, k, C), stream, 5));
          chosen = times.indexOf(Math.min(...times));
          gemmChoices.set(key, chosen);
        }
        algo = chosen !== undefined && chosen < count[0] ? chosen : 0;
        if (chosen !== undefined) usedChoices.add(key);
      }
      if (spec.epilogue !== 'none' && spec.epilogue !== 'relu' && spec.epilogue !== 'gelu') {
        biasBuf.writeBigUInt64LE(BigInt(bias));
        check(n.descSet(desc[0], DESC.biasPointer, biasBuf, 8), 'cublasLtMatmulDescSetAttribute(BIAS_POINTER)', what);
      }
      const algoPtr = results.subarray(HEURISTIC_RESULT_BYTES * algo, HEURISTIC_RESULT_BYTES * algo + 64);
      check(n.matmul(lt(), desc[0], alpha, B, la, A, lb, beta, C ?? D, lc, D, lc, algoPtr, workspace(stream), WORKSPACE_BYTES, stream), 'cublasLtMatmul', what);
    },
    destroy() {
      n.layoutDestroy(la); n.layoutDestroy(lb); n.layoutDestroy(lc); n.descDestroy(desc[0]);
    },
  };
  return g;
}

// one workspace per stream: contexts run concurrently on their own streams and must not share scratch memory
const workspaces = new Map<unknown, number>();
const allocators = new Map<number, () => number>();
/** Each device provides its workspace allocator. */
export function setWorkspaceAllocator(ordinal: number, f: () => number): void {
  allocators.set(ordinal, f);
}
function workspace(stream: unknown): number {
  let ws = workspaces.get(stream);
  if (!ws) workspaces.set(stream, ws = allocators.get(current.ordinal)!());
  return ws;
}
/** Forget a stream's workspace (its owner is destroying the stream) and return the pointer to free. */
export function dropWorkspace(stream: unknown): number | undefined {
  const ws = workspaces.get(stream);
  workspaces.delete(stream);
  return ws;
}

export function cublasLtAvailable(): string | undefined {
  try {
    load();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** An 8-bit GEMM for quantized layers: D[M,N] = X[M,K] @ W[N,K]^T, int8 -> int32 or fp8 e4m3 -> float32. */
export interface QuantGemmSpec {
  M: number; N: number; K: number;
  kind: 'int8' | 'fp8';
}

/**
 * cuBLASLt's 8-bit GEMMs in the "TN" form its integer and fp8 kernels require: W row-major [N, K] is the transposed
 * column-major A, X row-major [M, K] the plain column-major B, D row-major [M, N] (int32 for int8 with
 * CUBLAS_COMPUTE_32I, float32 for fp8 with CUBLAS_COMPUTE_32F; operand scales stay 1: Kiln's epilogue applies the
 * per-channel scales). `run(W, X, D, stream)`.
 */
export function prepareQuantGemm(spec: QuantGemmSpec, what: string): { run(W: number, X: number, D: number, stream: unknown): void; destroy(): void } {
  const n = load();
  const int = spec.kind === 'int8';
  const ab = int ? CUDA_R.int8 : CUDA_R.fp8e4m3, cd = int ? CUDA_R.int32 : CUDA_R.float32;
  const desc = [null];
  check(n.descCreate(desc, int ? COMPUTE.i32 : COMPUTE.f32, int ? CUDA_R.int32 : CUDA_R.float32), 'cublasLtMatmulDescCreate', what);
  const i32 = (v: number) => { const b = Buffer.alloc(4); b.writeInt32LE(v); return b; };
  check(n.descSet(desc[0], DESC.transa, i32(1), 4), 'cublasLtMatmulDescSetAttribute(TRANSA)', what);
  check(n.descSet(desc[0], DESC.transb, i32(0), 4), 'cublasLtMatmulDescSetAttribute(TRANSB)', what);
  const layout = (type: number, rows: number, cols: number, ld: number) => {
    const l = [null];
    check(n.layoutCreate(l, type, rows, cols, ld), 'cublasLtMatrixLayoutCreate', what);
    return l[0];
  };
  const { M, N, K } = spec;
  const la = layout(ab, K, N, K), lb = layout(ab, K, M, K), lc = layout(cd, N, M, N);
  const pref = [null];
  check(n.prefCreate(pref), 'cublasLtMatmulPreferenceCreate', what);
  const ws = Buffer.alloc(8);
  ws.writeBigUInt64LE(BigInt(WORKSPACE_BYTES));
  check(n.prefSet(pref[0], 1, ws, 8), 'cublasLtMatmulPreferenceSetAttribute', what);
  const results = Buffer.alloc(HEURISTIC_RESULT_BYTES);
  const count = [0];
  check(n.heuristic(lt(), desc[0], la, lb, lc, lc, pref[0], 1, results, count), 'cublasLtMatmulAlgoGetHeuristic', what);
  if (!count[0]) throw new KilnError(`cuBLASLt has no ${spec.kind} algorithm for ${what} (M=${M} N=${N} K=${K}).`, { hint: 'int8/fp8 GEMMs need K and N multiples of 16' });
  const alpha = Buffer.alloc(4), beta = Buffer.alloc(4);
  if (int) alpha.writeInt32LE(1);
  else alpha.writeFloatLE(1);
  return {
    run(W, X, D, stream) {
      check(n.matmul(lt(), desc[0], alpha, W, la, X, lb, beta, D, lc, D, lc, results.subarray(0, 64), workspace(stream), WORKSPACE_BYTES, stream), 'cublasLtMatmul', what);
    },
    destroy() {
      n.layoutDestroy(la); n.layoutDestroy(lb); n.layoutDestroy(lc); n.descDestroy(desc[0]);
    },
  };
}

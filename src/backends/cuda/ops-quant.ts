// CUDA implementations of the quantized layers (kiln:QConv in NHWC, kiln:QMatMul) and of per-tensor QuantizeLinear /
// DequantizeLinear. A layer is one fused kernel (codegen/quant.ts): 8-bit tensor-core GEMM with the epilogue
// (per-channel scale, bias and zero-point compensation, residual, activation, requantization) after its last k-step.
// Constants each layer needs beyond its inputs (scale/offset per channel; weights transposed or padded to [N, Kp])
// are computed once on the host and uploaded when the layer's implementation is made.
// Route and tile are a tactic per layer, timed on the build's device run (like cuBLASLt's algorithms: the choice goes
// into the plan): the fused kernel with each tile of QGEMM_TILES, the first version of its main loop (faster on some
// small-channel convolutions), or, for QMatMul and 1x1 stride-1 QConv (a plain GEMM in NHWC) with signed operands,
// cuBLASLt's int8/fp8 GEMM into int32/float32 plus the epilogue as a second kernel; on Hopper, in place of the
// mma.sync tiles, the fused kernel on warpgroup MMA (wgmma, sm_90a) with its epilogue staged through shared memory
// (coalesced 16-byte accesses; direct when N is not a multiple of 8). KILN_QGEMM=cublaslt, =fused, =wgmma, =wgmma-staged, =wgmma64 (64-row staged tile) or
// =wgmma-persistent-staged or =wgmma-splitk (=wgmma64 with the reduction split in two where K > 128) forces a route;
// KILN_QSTAGE=1 stages every fused kernel's epilogue stores through shared memory (checks and benchmarks).
import type { DType } from '../../ir/dtype.js';
import type { TensorData } from '../../ir/tensor.js';
import type { CudaDevice } from './device.js';
import type { DeviceTensor, GpuImpl, ImplContext } from './ops.js';
import { prepareQuantGemm, timeOnStream, timedChoice } from './ffi/cublaslt.js';
import { splitKWorkspace } from './codegen/quant-wgmma.js';
import { TMA_CANDIDATES, tmaCandidates } from './ops-quant-tma.js';
import { qconvStem, stemUnsupported, stemWeights } from './codegen/quant-stem.js';
import { tmaConvCandidates } from './ops-quant-tma-conv.js';
import { dequantizeKernel, headSplitKernel, qepilogue, qgemm, qgemmTile, qim2col, quantizeKernel, quantizeTransposeKernel, QGEMM_TILES, type QGemmArgs, type QOperand, type QStore } from './codegen/quant.js';
import type { KernelSource } from './codegen/types.js';

type Factory = (c: ImplContext) => GpuImpl | undefined;

/** What ops.ts lends this file (kept there: shared with the float layers). */
export interface QuantHelpers {
  alloc(dev: CudaDevice, dtype: DType, dims: number[]): DeviceTensor;
  inferOutputs(c: ImplContext): { dtype: DType; dims: number[] }[];
  resolvePads(spatial: number[], kernel: number[], a: { auto_pad?: string; pads?: number[]; strides?: number[]; dilations?: number[] }): number[];
}

interface QAttrs {
  x_scale: number; x_zero_point: number; w_scales: number[]; y_dtype: string; y_scale: number; y_zero_point: number;
  y2_scale: number; y2_zero_point: number;
  /** an 8-bit residual (passes/quantized.ts foldQuantizedResiduals) */
  r_scale?: number; r_zero_point?: number; c_dtype?: string; c_scale?: number; c_zero_point?: number;
  activation?: string; activation_params?: number[];
}

const OPERAND: Partial<Record<DType, QOperand>> = { int8: 'int8', uint8: 'uint8', float8e4m3fn: 'fp8' };
const STORE: Partial<Record<DType, QStore>> = { float32: 'float32', float16: 'float16', int8: 'int8', uint8: 'uint8', float8e4m3fn: 'fp8' };
const prod = (d: readonly number[]) => d.reduce((a, b) => a * b, 1);
const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
// L2 prefetch of the residual tile (QGemmArgs.residualPrefetch) for reductions of one 64-byte k-step (ResNet's layer1
// conv3s: the epilogue's bytes dominate, 69/66 vs 76/72 us on an H100); with longer ones it competed with the operand
// loads (layer3 conv3s 20.4 -> 22.1 us, layer2 even). KILN_QRESPF=0: never, =1: always (same-process before/after)
const residualPrefetch = (K: number) => process.env.KILN_QRESPF === '1' || (process.env.KILN_QRESPF !== '0' && K <= 64);

/** Weight bytes of an 8-bit constant (int8 or fp8 bit patterns). */
function weightBytes(t: TensorData): Uint8Array {
  const d = t.data as Int8Array | Uint8Array;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

/** Per-channel scale (x_scale * w_scale) and offset (bias minus the activation zero point times the weight row sum). */
function scaleOffset(a: QAttrs, N: number, K: number, w: Uint8Array, bias?: TensorData): Float32Array {
  const sc = new Float32Array(2 * N);
  const b = bias?.toFloat64();
  for (let n = 0; n < N; n++) {
    const s = Math.fround(a.x_scale * (a.w_scales.length === 1 ? a.w_scales[0] : a.w_scales[n]));
    let wsum = 0;
    // the weights are int8 whatever the activations are (uint8 activations run u8 x s8): their sum is a signed one
    if (a.x_zero_point) for (let k = 0; k < K; k++) wsum += (w[n * K + k] << 24) >> 24;
    sc[n] = s;
    sc[N + n] = (b ? b[n] : 0) - s * a.x_zero_point * wsum;
  }
  return sc;
}

/** Device copy of host data that lives as long as the layer (uploaded and complete before any run reads it). */
function upload(dev: CudaDevice, data: ArrayBufferView): number {
  const ptr = dev.alloc(Math.max(data.byteLength, 1), true);
  dev.upload(ptr, data, null);
  dev.sync(null);
  return ptr;
}

function outStore(c: ImplContext, dtype: DType): QStore {
  const s = STORE[dtype];
  if (!s) throw new Error(`${c.node.opType} '${c.node.name}': output type ${dtype} has no CUDA kernel`);
  return s;
}

/** The pointer list of a quantized kernel: activation, weight, scale/offset, residual, output(s), split-K's counters and partials. */
const ptrsFor = (k: KernelSource, x: number, w: number, sc: number, res: number, out: number, out2: number, out3 = 0, cnt = 0, part = 0) =>
  k.params.map((p) => (p.kind === 'ws' ? sc : p.kind === 'out' ? [out, out2, out3][p.index] : [x, w, res, res, cnt, part][p.index]));

/** kiln:QConv in NHWC (after the layout pass): implicit-im2col GEMM, or an explicit im2col for odd channel counts. */
const qconv = (h: QuantHelpers): Factory => (c) => {
  const a = c.attrs as QAttrs & { layout?: string; group?: number; auto_pad?: string; pads?: number[]; strides?: number[]; dilations?: number[] };
  const [X, Wt, B, R] = c.inputs;
  if (a.layout !== 'NHWC' || (a.group ?? 1) !== 1 || !X || !Wt?.constant || X.dims.length !== 4 || Wt.dims.length !== 4) return undefined;
  const op = OPERAND[X.dtype];
  if (!op || Wt.dtype !== (op === 'fp8' ? 'float8e4m3fn' : 'int8')) return undefined;
  const [out, out2] = h.inferOutputs(c);
  const [Nb, H, W, C] = X.dims, [M, KH, KW] = Wt.dims;
  const pads = h.resolvePads([H, W], [KH, KW], a), strides = a.strides ?? [1, 1], dilations = a.dilations ?? [1, 1];
  const [, OH, OW] = out.dims;
  const K = KH * KW * C, rows = Nb * OH * OW;
  const geo = { H, W, C, OH, OW, KH, KW, strides, pads, dilations };
  const zp = op === 'fp8' ? 0 : a.x_zero_point;
  const implicit = C % 16 === 0 && (zp === 0 || pads.every((p) => p === 0));
  const Kp = implicit ? K : Math.ceil(K / 16) * 16;
  const wq = weightBytes(Wt.constant);
  let wpad: Uint8Array | undefined;
  if (Kp !== K) {
    wpad = new Uint8Array(M * Kp);
    for (let m = 0; m < M; m++) wpad.set(wq.subarray(m * K, (m + 1) * K), m * Kp);
  }
  const residual = R ? (R.dtype === 'float32' || R.dtype === 'float16') && same(R.dims, out.dims) ? R.dtype : undefined : undefined;
  const rq = R && (R.dtype === 'int8' || R.dtype === 'uint8') && (a.c_dtype === 'int8' || a.c_dtype === 'uint8') && same(R.dims, out.dims) ? R.dtype : undefined;
  if (R && !residual && !rq) return undefined;
  const qresidual = rq && { a: rq, scale: a.r_scale ?? 1, zeroPoint: a.r_zero_point ?? 0, c: a.c_dtype as 'int8' | 'uint8', cScale: a.c_scale ?? 1, cZeroPoint: a.c_zero_point ?? 0 };
  if (B && (prod(B.dims) !== M || !B.constant)) return undefined;
  const args: QGemmArgs = {
    M: rows, N: M, K: Kp, a: op, conv: implicit ? geo : undefined, residual, qresidual: qresidual || undefined, activation: a.activation ?? '', params: a.activation_params ?? [],
    out: outStore(c, out.dtype), yScale: a.y_scale, yZeroPoint: a.y_zero_point, staged: process.env.KILN_QSTAGE === '1',
    residualPrefetch: residualPrefetch(Kp),
  };
  if (out2) {
    const store = OPERAND[out2.dtype];
    if (!store || (out.dtype !== 'float32' && out.dtype !== 'float16')) return undefined;
    args.out2 = { store, yScale: a.y2_scale, yZeroPoint: a.y2_zero_point };
  }
  const col = implicit ? undefined : qim2col({ ...geo, N: Nb, Kp, pad: zp });
  if (col) c.dev.kernel(col);
  const sc = upload(c.dev, scaleOffset(a, M, K, wq, B?.constant));
  const wptr = wpad ? upload(c.dev, wpad) : 0;
  const plain = KH === 1 && KW === 1 && strides.every((s) => s === 1) && pads.every((p) => p === 0) && implicit;
  // few input channels (the stem): the explicit im2col runs inside each GEMM candidate, and the gathered kernel
  // (codegen/quant-stem.ts, no im2col) is timed against them
  const stem = col && gatheredConv(c, { ...args, conv: geo }, Nb, zp, wq, sc);
  const explicit = col && { wrap: withIm2col(c, col, rows * Kp), extra: stem?.candidates ?? [] };
  const gemm = layerGemm(c, args, sc, plain ? { ...args, conv: undefined } : undefined, explicit || undefined);
  return {
    run(ins, stream) {
      const o = h.alloc(c.dev, out.dtype, out.dims), o2 = out2 ? h.alloc(c.dev, out2.dtype, out2.dims) : undefined;
      gemm.run(ins[0]!.ptr, wptr || ins[1]!.ptr, ins[3]?.ptr ?? 0, o.ptr, stream, o2?.ptr ?? 0);
      return o2 ? [o, o2] : [o];
    },
    destroy() {
      gemm.destroy();
      c.dev.release(sc);
      if (wptr) c.dev.release(wptr);
      if (stem) c.dev.release(stem.w);
    },
  };
};

/** A GEMM candidate run on the explicit im2col of its input (`bytes`: the [rows, Kp] matrix, from the pool per run). */
const withIm2col = (c: ImplContext, col: KernelSource, bytes: number) => (cand: Candidate): Candidate => ({
  ...cand,
  run: (x, w, res, out, stream, out2, out3) => {
    const ws = c.dev.alloc(bytes);
    c.dev.launch(col, [x, ws], stream);
    cand.run(ws, w, res, out, stream, out2, out3);
    c.dev.release(ws); // reuse is ordered on the stream
  },
});

/**
 * Tiles of the gathered small-channel convolution offered to the tactic after the im2col routes (saved choices keep
 * their indices): [BM, blocks per SM] for BN = 64 (N <= 64) and for BN = 128 (twice the accumulators: fewer blocks,
 * so that ptxas spills nothing). KILN_QGEMM=stem forces the first, KILN_QSTEM=0 leaves them out (same-run before /
 * after).
 */
export const STEM_CANDIDATES = { 64: [[128, 2], [64, 4], [64, 3]], 128: [[128, 1], [64, 3], [64, 2]] } as const;

/** The gathered kernel's candidates for an explicit-im2col QConv on Hopper, with its reordered weights, or undefined. */
function gatheredConv(c: ImplContext, g: QGemmArgs, batch: number, zp: number, wq: Uint8Array, sc: number): { candidates: (() => Candidate)[]; w: number } | undefined {
  const geo = g.conv!;
  if (c.dev.info.sm !== 90 || process.env.KILN_QSTEM === '0' || stemUnsupported(geo, batch, g)) return undefined;
  const w = upload(c.dev, stemWeights(wq, geo, g.N)), BN = g.N <= 64 ? 64 : 128;
  const candidates = STEM_CANDIDATES[BN].map(([BM, occupancy]) => (): Candidate => {
    const k = qconvStem({ ...g, tile: { BM, BN } }, { sms: c.dev.info.smCount, occupancy, pad: zp, batch });
    return {
      kernels: [k],
      ready: () => { c.dev.kernel(k); },
      run: (x, _w, res, out, stream, out2 = 0) => c.dev.launch(k, ptrsFor(k, x, w, sc, res, out, out2), stream),
      destroy: () => undefined,
    };
  });
  return { candidates, w };
}

interface LayerGemm {
  /** out2: the second output, or with a head split the second and third (out3) column groups' outputs */
  run(x: number, w: number, res: number, out: number, stream: unknown, out2?: number, out3?: number): void;
  destroy(): void;
}
type Candidate = LayerGemm & { ready(): void; kernels: KernelSource[] };

/**
 * The GEMM of one quantized layer as a timed tactic: candidates are the fused kernel with each tile, its first version,
 * and, when `lt` (a dense GEMM with signed 8-bit operands) is given, cuBLASLt plus the epilogue kernel. The build's device run
 * (`tuning.on`) times them on the layer's real operands and keeps the fastest in `gemmChoices` (saved in the plan);
 * without a choice the default tile runs.
 */
function layerGemm(c: ImplContext, args: QGemmArgs, sc: number, lt?: QGemmArgs, pre?: { wrap: (cand: Candidate) => Candidate; extra: (() => Candidate)[] }): LayerGemm {
  const force = process.env.KILN_QGEMM;
  const { M, N, K } = args;
  const def = qgemmTile(M, N);
  const tiles = [def, ...QGEMM_TILES.filter((t) => t.BM !== def.BM || t.BN !== def.BN)];
  const fused = (tile: { BM: number; BN: number }, legacy = false, wgmma = false, more: Partial<QGemmArgs> = {}): Candidate => {
    const g = { ...args, tile, legacy, wgmma, ...more }, k = qgemm(g);
    // split-K: partials from the pool per run; tile counters zeroed once per stream (each launch leaves them zero;
    // contexts run concurrently on their own streams, so they must not share counters). A context's first run is
    // eager (graphs are captured from its second), so the synchronous upload never lands inside a capture.
    const ws = (g.splitK ?? 1) > 1 ? splitKWorkspace(g) : undefined;
    const counters = new Map<unknown, number>();
    return {
      kernels: [k],
      ready: () => { c.dev.kernel(k); },
      run: (x: number, w: number, res: number, out: number, stream: unknown, out2 = 0, out3 = 0) => {
        let cnt = 0, part = 0;
        if (ws) {
          cnt = counters.get(stream) ?? 0;
          if (!cnt) counters.set(stream, cnt = upload(c.dev, new Int32Array(ws.counters)));
          part = c.dev.alloc(ws.bytes);
        }
        c.dev.launch(k, ptrsFor(k, x, w, sc, res, out, out2, out3, cnt, part), stream);
        if (part) c.dev.release(part); // reuse is ordered on the stream
      },
      destroy: () => { for (const p of counters.values()) c.dev.release(p); },
    };
  };
  const lib = (): Candidate => {
    const gemm = prepareQuantGemm({ M, N, K, kind: args.a === 'fp8' ? 'fp8' : 'int8' }, `layer '${c.node.name}'`);
    const ek = qepilogue({ ...lt!, acc: args.a === 'fp8' ? 'float32' : 'int32' });
    return {
      kernels: [ek],
      ready: () => { c.dev.kernel(ek); },
      run: (x: number, w: number, res: number, out: number, stream: unknown) => {
        const acc = c.dev.alloc(M * N * 4);
        gemm.run(w, x, acc, stream);
        c.dev.launch(ek, ek.params.map((p) => (p.kind === 'ws' ? sc : p.kind === 'out' ? out : p.index === 0 ? acc : res)), stream);
        c.dev.release(acc); // reuse is ordered on the stream
      },
      destroy: () => gemm.destroy(),
    };
  };
  // fp8: cuBLASLt only when forced (KILN_QGEMM=cublaslt). Its Hopper kernels accumulate fp8 products otherwise than
  // mma.sync (as fp8 wgmma does, below), and once the tactic timing hid host launch costs (timeOnStream's hold) it won
  // small ResNet layers: one accumulation-order difference flips an fp8 activation's rounding (an eighth of its value),
  // which compounds layer by layer (bench/gpu/quant-check.js resnet50-small fp8: 6.4 LSB against the CPU reference,
  // 0.000 with the mma.sync picks). The timed tactic must choose between kernels that give the reference's bytes.
  const libOk = !!lt && !args.out2 && !args.heads && !args.qresidual && args.a !== 'uint8' && (args.a !== 'fp8' || force === 'cublaslt') && N % 16 === 0 && K % 16 === 0;
  // Hopper's warpgroup MMA (sm_90a): integer operands only unless forced (its fp8 accumulation is less precise than
  // mma.sync's, codegen/quant-wgmma.ts). With the staged epilogue (N % 8 == 0) the candidates are the staged tiles 128x64,
  // 64x64 and 64x32 (short M: more blocks) and 128x128, and cuBLASLt: since the epilogue left the conversion pipes
  // (pass 5) the mma.sync tiles, the direct epilogue and the persistent grid won on no ResNet-50 or BERT shape or by
  // under 2 us (bench/quant/gpu-layers.ts), and each candidate is another NVRTC compile per layer at build time. Else
  // (odd N) the mma.sync tiles and the direct wgmma.
  const wgOk = c.dev.info.sm === 90 && N % 2 === 0 && (args.a !== 'fp8' || force === 'wgmma');
  const stagedOk = wgOk && N % 8 === 0, sms = c.dev.info.smCount;
  const wgDirect = (BN: number) => () => fused({ BM: 128, BN }, false, true);
  const staged = (BM: number, BN: number, occupancy?: number, more: Partial<QGemmArgs> = {}) => () => fused({ BM, BN }, false, true, { staged: true, occupancy, ...more });
  const wgs = [staged(128, 64, 3), staged(64, 64, 4), staged(64, 32, 4), staged(128, 128)];
  // Pipeline depth (bench/quant/gpu-layers.js main): the loops are bound by L2-to-SM traffic and load latency, not by
  // the tensor cores, so the candidates trade k-steps in flight (stages; drain: no MMA group kept in flight, one more
  // k-step of loads) against blocks per SM (shared memory). KILN_QTACTIC=c5 keeps the previous candidate set.
  const KT = Math.ceil(K / 128), prev = process.env.KILN_QTACTIC === 'c5';
  const split = (BM: number, BN: number, splitK: number, occupancy?: number) => () => fused({ BM, BN }, false, true, { staged: true, occupancy, splitK });
  if (stagedOk && !prev) {
    wgs.push(staged(128, 128, 2, { stages: 3 }), staged(128, 64, 1, { stages: 5 }), staged(64, 64, 2, { stages: 6 }), staged(64, 64, 3, { drain: true }));
    // 1-2 k-steps (ResNet's 1x1 convs reading 64-256 channels): load, MMA and epilogue of one tile run back to back, so
    // what overlaps them is other blocks on the SM: two stages, as many blocks as shared memory allows
    if (KT <= 2) wgs.push(staged(64, 64, 5, { stages: 2, drain: true }), staged(64, 32, 8, { stages: 2, drain: true }), staged(128, 64, 3, { stages: 2, drain: true }));
    // split-K (exact: int32 partials) where even 64x64 tiles leave most SMs idle and the reduction is long (small
    // batches: BERT at batch 1); at batch 8-32 its partial-sum traffic lost on every shape
    if (args.a !== 'fp8' && KT >= 8 && Math.ceil(M / 64) * Math.ceil(N / 64) * 2 <= sms) wgs.push(split(64, 64, Math.min(4, KT >> 2), 4), split(128, 128, 2));
  }
  const libs = libOk ? [lib] : [];
  // a head split is written by the staged epilogue only (qmatmul routes other cases through headSplitKernel)
  if (args.heads && !stagedOk) throw new Error(`layer '${c.node.name}': a head split needs the staged wgmma epilogue`);
  // the TMA-fed kernel (plain GEMMs: ops-quant-tma.ts) after the others, so that saved choices keep their indices;
  // KILN_QGEMM=tma / =tma-cluster force its first tile without / with a 2-block cluster; KILN_QTMA=0 leaves it out
  // (a 1x1 stride-1 QConv, `lt` without its geometry, is that plain GEMM over the NHWC input: it was left out while its
  // args kept the geometry; KILN_QTMA1X1=0 leaves it out again)
  const plainArgs = lt && args.conv && process.env.KILN_QTMA1X1 !== '0' ? { ...args, conv: undefined } : args;
  const tma = stagedOk && !prev && process.env.KILN_QTMA !== '0' ? tmaCandidates(c.dev, plainArgs, sc) : [];
  // implicit-im2col convolutions with C % 128 == 64 (ResNet's 56 px 3x3s), appended (saved choices keep their
  // indices; KILN_QCONVX=0 leaves them out): 64-byte k-steps, one tap each, where a 128-byte k-step spans two taps and
  // the load loop divides out each chunk's tap and channel (bench/quant/gpu-layers.js convx, H100: 26.3 -> 22.6 us;
  // split-K lost on every 3x3 shape, 64x64 and 128x128 tiles by 3-6 us)
  const convx: (() => Candidate)[] = [];
  if (stagedOk && !prev && args.conv && args.a !== 'fp8' && args.conv.C % 128 === 64 && K > 64 && process.env.KILN_QCONVX !== '0') {
    convx.push(staged(128, 64, 3, { kStep: 64 }), staged(128, 64, 2, { kStep: 64, stages: 6 }));
  }
  // the TMA-fed kernel over implicit-im2col convolutions with C % 128 == 0 (ops-quant-tma-conv.ts; KILN_QTMACONV=0
  // leaves it out), after the above
  const tmaConv = stagedOk && !prev && args.conv && !lt ? tmaConvCandidates(c.dev, args, sc) : [];
  const timed = stagedOk ? [...wgs, ...libs, ...tma, ...convx, ...tmaConv]
    : [...tiles.map((t) => () => fused(t)), () => fused(def, true), ...libs, ...(wgOk ? [wgDirect(64), wgDirect(128)] : [])];
  const forced: Record<string, (() => Candidate) | false> = {
    cublaslt: libOk && lib, fused: !args.heads && (() => fused(def)), wgmma: !args.heads && wgOk && wgDirect(N > 64 ? 128 : 64),
    'wgmma-staged': stagedOk && (N > 64 ? wgs[3] : wgs[0]), wgmma64: stagedOk && wgs[1],
    'wgmma-persistent-staged': stagedOk && (() => fused({ BM: 128, BN: 64 }, false, true, { persistent: sms, staged: true, occupancy: 3 })),
    'wgmma-splitk': stagedOk && (args.a !== 'fp8' && K > 128 ? split(64, 64, 2, 4) : wgs[1]),
    tma: tma.length > 0 && tma[0], 'tma-cluster': tma.length > 0 && tma[TMA_CANDIDATES.findIndex((t) => t[3] > 1)],
    'tma-conv': tmaConv.length > 0 && tmaConv[0],
  };
  // an explicit im2col: every GEMM candidate runs on it, then the gathered kernel's tiles (no im2col), appended
  const wrapped = (mk: () => Candidate) => (pre ? () => pre.wrap(mk()) : mk);
  const all = [...timed.map(wrapped), ...(pre?.extra ?? [])];
  const makers = force === 'stem' && pre?.extra.length ? [pre.extra[0]] : force && forced[force] ? [wrapped(forced[force] as () => Candidate)] : all;
  // choices are indices into \`makers\`: the candidate set's revision is part of the key, so a plan saved with another
  // set falls back to the default candidate instead of running whichever kernel now has its index
  const key = `qgemm|${prev ? 'c5' : 'c7'}|${c.node.name}|${M}x${N}x${K}|${args.a}|${args.out}${args.conv ? '|conv' : ''}${args.heads ? '|heads' : ''}${args.qresidual ? '|qres' : ''}`;
  // the list's make-up, for pooling picks across layers of one shape (cublaslt.ts poolChoices)
  const set = makers === all ? [stagedOk ? 'staged' : 'fused', timed.length, wgs.length, libs.length, tma.length, convx.length, tmaConv.length, pre?.extra.length ?? '-'].join(',') : `forced:${force}`;
  const tactic = timedChoice(key, makers, (made) => c.dev.prefetch(makers.flatMap((mk, i) => {
    try {
      made.set(i, mk());
      return made.get(i)!.kernels;
    } catch {
      return [];
    }
  })), set); // compiled concurrently, readied when timed
  return {
    run(x, w, res, out, stream, out2, out3) {
      // 8 launches back to back, as in the replayed graph: one launch between two events also times the host's launch
      // latency, the same for every candidate but noisier than the 1-2 us that tell these kernels apart
      tactic.pick((m) => timeOnStream(() => { for (let r = 0; r < 8; r++) m.run(x, w, res, out, stream, out2, out3); }, stream, 5) / 8)
        .run(x, w, res, out, stream, out2, out3);
    },
    destroy: () => tactic.destroy(),
  };
}

/**
 * kiln:QMatMul: X[.., K] @ W (constant [K, N], or [N, K] with transB), one GEMM over all leading rows. With `heads`
 * (X [B, S, K]; Q, K and V of attention), the staged wgmma epilogue writes each column group as [B, H, S, D]; where
 * that epilogue is not the route (other GPUs, odd shapes, forced tactics) the plain result goes through headSplitKernel.
 */
const qmatmul = (h: QuantHelpers): Factory => (c) => {
  const a = c.attrs as QAttrs & { transB?: number; heads?: number };
  const [X, Wt, B, R] = c.inputs;
  if (!X || !Wt?.constant || Wt.dims.length !== 2 || X.dims.length < 2) return undefined;
  const op = OPERAND[X.dtype];
  if (!op || Wt.dtype !== (op === 'fp8' ? 'float8e4m3fn' : 'int8')) return undefined;
  const outs = h.inferOutputs(c), [out] = outs;
  if (a.heads) return headSplit(c, h, a, outs);
  const K = X.dims[X.dims.length - 1], rows = prod(X.dims.slice(0, -1));
  const N = a.transB ? Wt.dims[0] : Wt.dims[1];
  if ((a.transB ? Wt.dims[1] : Wt.dims[0]) !== K || K % 16 !== 0) throw new Error(`${c.node.name}: QMatMul on the GPU needs K % 16 == 0 (K = ${K})`);
  if (B && (prod(B.dims) !== N || !B.constant)) return undefined;
  const residual = R ? (R.dtype === 'float32' || R.dtype === 'float16') && same(R.dims, out.dims) ? R.dtype : undefined : undefined;
  if (R && !residual) return undefined;
  const src = weightBytes(Wt.constant);
  let wt = src;
  if (!a.transB) {
    wt = new Uint8Array(N * K);
    for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) wt[n * K + k] = src[k * N + n];
  }
  const args: QGemmArgs = {
    M: rows, N, K, a: op, activation: a.activation ?? '', params: a.activation_params ?? [], out: outStore(c, out.dtype),
    yScale: a.y_scale, yZeroPoint: a.y_zero_point, residual, staged: process.env.KILN_QSTAGE === '1', residualPrefetch: residualPrefetch(K),
  };
  const sc = upload(c.dev, scaleOffset(a, N, K, wt, B?.constant));
  const wptr = a.transB ? 0 : upload(c.dev, wt);
  const gemm = layerGemm(c, args, sc, args);
  return {
    run(ins, stream) {
      const o = h.alloc(c.dev, out.dtype, out.dims);
      gemm.run(ins[0]!.ptr, wptr || ins[1]!.ptr, ins[3]?.ptr ?? 0, o.ptr, stream);
      return [o];
    },
    destroy() {
      gemm.destroy();
      c.dev.release(sc);
      if (wptr) c.dev.release(wptr);
    },
  };
};

/** kiln:QMatMul with `heads`: the head-split outputs from the staged epilogue, or the plain GEMM + headSplitKernel. */
function headSplit(c: ImplContext, h: QuantHelpers, a: QAttrs & { transB?: number; heads?: number }, outs: { dtype: DType; dims: number[] }[]): GpuImpl | undefined {
  const [X, Wt, B] = c.inputs;
  const [Bn, H, S, D] = outs[0].dims, parts = outs.length;
  const store = outs[0].dtype;
  if (X!.dims.length !== 3 || (store !== 'float16' && store !== 'float32') || c.inputs[3] || a.y_dtype) return undefined;
  const K = X!.dims[2], M = Bn * S, N = parts * H * D;
  if ((a.transB ? Wt!.dims[1] : Wt!.dims[0]) !== K || K % 16 !== 0 || (B && (prod(B.dims) !== N || !B.constant))) return undefined;
  const src = weightBytes(Wt!.constant!);
  let wt = src;
  if (!a.transB) {
    wt = new Uint8Array(N * K);
    for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) wt[n * K + k] = src[k * N + n];
  }
  const op = OPERAND[X!.dtype]!;
  const force = process.env.KILN_QGEMM;
  const inEpilogue = c.dev.info.sm === 90 && op !== 'fp8' && N % 8 === 0 && D % 8 === 0 && (!force || force.endsWith('staged') || force === 'wgmma64' || force === 'wgmma-splitk');
  const heads = { S, H, D, parts };
  const args: QGemmArgs = { M, N, K, a: op, activation: a.activation ?? '', params: a.activation_params ?? [], out: store, ...(inEpilogue ? { heads } : {}) };
  const sc = upload(c.dev, scaleOffset(a, N, K, wt, B?.constant));
  const wptr = upload(c.dev, wt);
  const gemm = layerGemm(c, args, sc, inEpilogue ? undefined : args);
  const split = inEpilogue ? undefined : headSplitKernel({ M, ...heads, dtype: store });
  if (split) c.dev.kernel(split);
  return {
    run(ins, stream) {
      const o = outs.map((t) => h.alloc(c.dev, t.dtype, t.dims));
      if (!split) {
        gemm.run(ins[0]!.ptr, wptr, 0, o[0].ptr, stream, o[1]?.ptr ?? 0, o[2]?.ptr ?? 0);
        return o;
      }
      const y = h.alloc(c.dev, store, [M, N]);
      gemm.run(ins[0]!.ptr, wptr, 0, y.ptr, stream);
      c.dev.launch(split, [y.ptr, ...o.map((t) => t.ptr)], stream);
      c.dev.release(y.ptr); // reuse is ordered on the stream
      return o;
    },
    destroy() {
      gemm.destroy();
      c.dev.release(sc);
      c.dev.release(wptr);
    },
  };
}

/** The per-tensor (scale, zero point) of a Q/DQ node, when both are constant scalars. */
function perTensor(c: ImplContext): { scale: number; zp: number } | undefined {
  const [, s, z] = c.inputs;
  if (!s?.constant || s.constant.size !== 1 || (z && (!z.constant || z.constant.size !== 1))) return undefined;
  const zp = z?.constant ? z.constant.toFloat64()[0] : 0;
  return { scale: s.constant.toFloat64()[0], zp: z?.dtype === 'float8e4m3fn' ? 0 : zp };
}

const quantizeLinear = (h: QuantHelpers): Factory => (c) => {
  const [X] = c.inputs;
  const p = perTensor(c);
  const [out] = h.inferOutputs(c);
  const to = OPERAND[out.dtype];
  if (!X || !p || !to || (X.dtype !== 'float32' && X.dtype !== 'float16') || ((c.attrs as { saturate?: number }).saturate ?? 1) !== 1) return undefined;
  const k = quantizeKernel({ n: prod(X.dims), from: X.dtype, to, scale: p.scale, zeroPoint: p.zp });
  c.dev.kernel(k);
  return { run(ins, stream) { const o = h.alloc(c.dev, out.dtype, out.dims); c.dev.launch(k, [ins[0]!.ptr, o.ptr], stream); return [o]; } };
};

const dequantizeLinear = (h: QuantHelpers): Factory => (c) => {
  const [X] = c.inputs;
  const p = perTensor(c);
  const [out] = h.inferOutputs(c);
  const from = X && OPERAND[X.dtype];
  if (!X || !p || !from || (out.dtype !== 'float32' && out.dtype !== 'float16')) return undefined;
  const k = dequantizeKernel({ n: prod(X.dims), from, to: out.dtype, scale: p.scale, zeroPoint: p.zp });
  c.dev.kernel(k);
  return { run(ins, stream) { const o = h.alloc(c.dev, out.dtype, out.dims); c.dev.launch(k, [ins[0]!.ptr, o.ptr], stream); return [o]; } };
};

/** kiln:QTranspose: the permutation and the per-tensor quantization in one kernel. */
const qtranspose = (h: QuantHelpers): Factory => (c) => {
  const [X] = c.inputs;
  const a = c.attrs as { perm?: number[]; y_scale: number; y_zero_point: number };
  const [out] = h.inferOutputs(c);
  if (!X || (X.dtype !== 'float32' && X.dtype !== 'float16') || (out.dtype !== 'int8' && out.dtype !== 'uint8')) return undefined;
  const perm = a.perm?.length ? a.perm : X.dims.map((_, i) => X.dims.length - 1 - i);
  const k = quantizeTransposeKernel({ dims: X.dims, perm, from: X.dtype, to: out.dtype, scale: a.y_scale, zeroPoint: a.y_zero_point });
  c.dev.kernel(k);
  return { run(ins, stream) { const o = h.alloc(c.dev, out.dtype, out.dims); c.dev.launch(k, [ins[0]!.ptr, o.ptr], stream); return [o]; } };
};

/** The quantized entries of GPU_OPS (ops.ts spreads these into its table). */
export function quantOps(h: QuantHelpers): Record<string, Factory> {
  return {
    'kiln:QConv': qconv(h), 'kiln:QMatMul': qmatmul(h), 'kiln:QTranspose': qtranspose(h), QuantizeLinear: quantizeLinear(h), DequantizeLinear: dequantizeLinear(h),
  };
}

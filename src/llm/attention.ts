// Attention over the paged KV cache, a runtime kernel behind a small interface so a device implementation (the CUDA
// paged-attention kernel) can replace the CPU one. The kernel owns the cache storage; the KvCache (kv-cache.ts) only
// hands out block ids. Token t of a sequence lives in slot blockTable[t / blockSize] * blockSize + t % blockSize.

/** One sequence's part of a step: its rows in q/k/v/out and where its tokens sit in the cache. */
export interface AttentionSeq {
  /** First row of this sequence in the step's q/k/v/out. */
  rowStart: number;
  /** New tokens of this sequence in the step (1 for decode, a chunk for prefill). */
  numTokens: number;
  /** Tokens already in the cache before this step (the new ones get positions contextLen..contextLen+numTokens-1). */
  contextLen: number;
  blockTable: readonly number[];
}

/** One layer of one step. Rows are [numHeads * headDim] for q/out and [numKvHeads * headDim] for k/v. */
export interface AttentionStep {
  layer: number;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  out: Float32Array;
  seqs: AttentionSeq[];
}

export interface AttentionShape {
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  numBlocks: number;
  blockSize: number;
  /** Softmax scale (1/sqrt(headDim) for GPT-2 and Llama). */
  scale: number;
}

export interface PagedAttention {
  /** Write the sequences' new k/v into the cache, then causal attention of each new token over its sequence so far. */
  prefill(step: AttentionStep): void;
  /** Same for sequences with exactly one new token each (the decode phase). */
  decode(step: AttentionStep): void;
  /** Copy whole blocks (copy-on-write of shared blocks). */
  copyBlocks(pairs: [src: number, dst: number][]): void;
  release(): void;
}

/**
 * A kernel whose cache lives in GPU memory and which also runs on device pointers, so q/k/v/out stay on the device
 * between a step's layer engines (src/llm/attention-cuda.ts). Rows are fp32, or the engine's fp16/bf16.
 */
export interface DevicePagedAttention extends PagedAttention {
  readonly deviceId: number;
  /** Upload the step's sequence metadata (rows, context lengths, block tables) once for all its layers. */
  beginStep(seqs: readonly AttentionSeq[], decode: readonly boolean[], rows: number): void;
  /** The attention output buffer of this step, [rows, numHeads * headDim] fp32, valid until the next step. */
  readonly outPtr: number;
  /** One layer of the step begun last: new k/v into the cache, then attention into `outPtr`; complete on return. */
  runLayer(layer: number, q: number, k: number, v: number): void;
  /** Grow the step buffers for steps of up to `rows` rows over `seqs` sequences now, not mid-serving. */
  reserve(rows: number, seqs: number): void;
  /** The stream the kernels run on: callers that chain their own work there need no host sync between layers. */
  readonly stream: unknown;
  /**
   * As runLayer, into `out` ([rows, numHeads * headDim] in the rows' type), queued on `stream` and not waited for;
   * the device's context must be current (beginStep makes it so).
   */
  enqueueLayer(layer: number, q: number, k: number, v: number, out: number): void;
}

export function isDeviceAttention(a: PagedAttention): a is DevicePagedAttention {
  return typeof (a as Partial<DevicePagedAttention>).runLayer === 'function';
}

/** The TypeScript kernel: fp32 cache, fp64 accumulation, one pass per (sequence, token, head). */
export class CpuPagedAttention implements PagedAttention {
  private readonly kCache: Float32Array[];
  private readonly vCache: Float32Array[];
  private readonly slotWidth: number;
  private scores = new Float64Array(256);

  constructor(readonly shape: AttentionShape) {
    this.slotWidth = shape.numKvHeads * shape.headDim;
    const n = shape.numBlocks * shape.blockSize * this.slotWidth;
    this.kCache = Array.from({ length: shape.numLayers }, () => new Float32Array(n));
    this.vCache = Array.from({ length: shape.numLayers }, () => new Float32Array(n));
  }

  prefill(step: AttentionStep): void {
    this.run(step);
  }

  decode(step: AttentionStep): void {
    this.run(step);
  }

  copyBlocks(pairs: [number, number][]): void {
    const w = this.shape.blockSize * this.slotWidth;
    for (const [src, dst] of pairs) {
      for (const c of [...this.kCache, ...this.vCache]) c.copyWithin(dst * w, src * w, src * w + w);
    }
  }

  release(): void {
    this.kCache.length = 0;
    this.vCache.length = 0;
  }

  private slot(table: readonly number[], pos: number): number {
    const bs = this.shape.blockSize;
    const block = table[Math.floor(pos / bs)];
    if (block === undefined) throw new Error(`paged attention: position ${pos} has no block (block table has ${table.length} blocks of ${bs})`);
    return block * bs + (pos % bs);
  }

  private run(step: AttentionStep): void {
    const { numHeads, numKvHeads, headDim, scale } = this.shape;
    const kc = this.kCache[step.layer], vc = this.vCache[step.layer];
    const w = this.slotWidth, qw = numHeads * headDim, group = numHeads / numKvHeads;
    for (const s of step.seqs) {
      for (let i = 0; i < s.numTokens; i++) {
        const off = this.slot(s.blockTable, s.contextLen + i) * w, row = (s.rowStart + i) * w;
        kc.set(step.k.subarray(row, row + w), off);
        vc.set(step.v.subarray(row, row + w), off);
      }
      const total = s.contextLen + s.numTokens;
      if (this.scores.length < total) this.scores = new Float64Array(total * 2);
      const slots = Array.from({ length: total }, (_, p) => this.slot(s.blockTable, p) * w);
      const sc = this.scores;
      for (let i = 0; i < s.numTokens; i++) {
        const len = s.contextLen + i + 1;
        const qRow = (s.rowStart + i) * qw;
        for (let h = 0; h < numHeads; h++) {
          const q = qRow + h * headDim, kvOff = Math.floor(h / group) * headDim;
          let max = -Infinity;
          for (let p = 0; p < len; p++) {
            const k = slots[p] + kvOff;
            let dot = 0;
            for (let d = 0; d < headDim; d++) dot += step.q[q + d] * kc[k + d];
            sc[p] = dot * scale;
            if (sc[p] > max) max = sc[p];
          }
          let sum = 0;
          for (let p = 0; p < len; p++) sum += (sc[p] = Math.exp(sc[p] - max));
          for (let d = 0; d < headDim; d++) {
            let acc = 0;
            for (let p = 0; p < len; p++) acc += sc[p] * vc[slots[p] + kvOff + d];
            step.out[q + d] = acc / sum;
          }
        }
      }
    }
  }
}

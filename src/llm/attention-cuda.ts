// Paged attention on the GPU: the KV cache of every layer in device memory (fp16/bf16, or fp32 for checks), the
// kernels of codegen/attention-paged.ts launched on a stream of our own. A step's metadata (rows, context lengths,
// block tables, the slot of each new row, the decode sequences and the prefill query tiles) goes up once per step in
// one int32 buffer that every layer reuses; the buffers grow when a step needs more and are otherwise reused.
import { getDevice, type CudaDevice } from '../backends/cuda/device.js';
import { loadDriver } from '../backends/cuda/ffi/driver.js';
import { pagedAttentionKernels, type PagedKernels } from '../backends/cuda/codegen/attention-paged.js';
import { SM_COUNT } from '../backends/cuda/codegen/types.js';
import type { AttentionSeq, AttentionShape, AttentionStep, DevicePagedAttention } from './attention.js';

export type CacheDtype = 'float32' | 'float16' | 'bfloat16';

/** A device buffer that grows (never shrinks) to the largest size asked for. */
class Scratch {
  ptr = 0;
  bytes = 0;
  constructor(private readonly dev: CudaDevice) {}
  need(bytes: number): number {
    if (bytes <= this.bytes) return this.ptr;
    if (this.ptr) this.dev.release(this.ptr);
    this.bytes = Math.max(bytes, this.bytes * 2, 4096);
    this.ptr = this.dev.alloc(this.bytes, true);
    this.dev.memset(this.ptr, this.bytes, null); // padded rows of a step read it: never NaN garbage
    this.dev.sync(null);
    return this.ptr;
  }
  free(): void {
    if (this.ptr) this.dev.release(this.ptr);
    this.ptr = this.bytes = 0;
  }
}

export class CudaPagedAttention implements DevicePagedAttention {
  readonly deviceId: number;
  private readonly dev: CudaDevice;
  readonly stream: unknown;
  private readonly k: PagedKernels;
  private readonly kCache: number[] = [];
  private readonly vCache: number[] = [];
  private readonly blockBytes: number;
  private readonly meta: Scratch;
  private readonly out: Scratch;
  private readonly hostIo: Scratch;
  private metaHost = new Int32Array(1024);
  private step?: { rows: number; nSeq: number; seqOff: number; tabOff: number; slotOff: number; decOff: number; nDec: number; tileOff: number; nTiles: number };
  private released = false;

  /**
   * `rowDtype`: the element type of the q/k/v rows the layer engines hand over and of the output rows (the engine's
   * own type, so its graphs need no casts at their edges); the host entry points (prefill/decode) need float32.
   */
  constructor(readonly shape: AttentionShape, readonly cacheDtype: CacheDtype = 'float16', deviceId = 0, readonly rowDtype: CacheDtype = 'float32') {
    this.deviceId = deviceId;
    this.dev = getDevice(deviceId);
    this.stream = this.dev.createStream();
    this.k = pagedAttentionKernels({ ...shape, cacheDtype, rowDtype });
    const elt = cacheDtype === 'float32' ? 4 : 2;
    this.blockBytes = shape.blockSize * shape.numKvHeads * shape.headDim * elt;
    for (let l = 0; l < shape.numLayers; l++) {
      this.kCache.push(this.dev.alloc(shape.numBlocks * this.blockBytes, true));
      this.vCache.push(this.dev.alloc(shape.numBlocks * this.blockBytes, true));
    }
    this.meta = new Scratch(this.dev);
    this.out = new Scratch(this.dev);
    this.hostIo = new Scratch(this.dev);
  }

  /** Bytes of one block of one layer's K (or V) cache. */
  static blockBytes(shape: Pick<AttentionShape, 'blockSize' | 'numKvHeads' | 'headDim'>, dtype: CacheDtype): number {
    return shape.blockSize * shape.numKvHeads * shape.headDim * (dtype === 'float32' ? 4 : 2);
  }

  get outPtr(): number {
    return this.out.ptr;
  }

  beginStep(seqs: readonly AttentionSeq[], decode: readonly boolean[], rows: number): void {
    this.check();
    const bs = this.shape.blockSize, qt = this.k.queryTile;
    const tabLen = seqs.reduce((a, s) => a + s.blockTable.length, 0);
    const nDec = decode.filter(Boolean).length;
    const nTiles = seqs.reduce((a, s, i) => a + (decode[i] ? 0 : Math.ceil(s.numTokens / qt)), 0);
    const seqOff = 0, tabOff = 4 * seqs.length, slotOff = tabOff + tabLen, decOff = slotOff + rows, tileOff = decOff + nDec;
    const total = tileOff + 2 * nTiles;
    if (this.metaHost.length < total) this.metaHost = new Int32Array(Math.max(total, this.metaHost.length * 2));
    const m = this.metaHost;
    let tab = 0, dec = decOff, tile = tileOff;
    m.fill(-1, slotOff, slotOff + rows);
    seqs.forEach((s, i) => {
      if (decode[i] && s.numTokens !== 1) throw new Error(`paged attention: decode sequence ${i} has ${s.numTokens} new tokens (expected 1)`);
      m.set([s.rowStart, s.numTokens, s.contextLen, tab], seqOff + 4 * i);
      m.set(s.blockTable, tabOff + tab);
      for (let t = 0; t < s.numTokens; t++) {
        const pos = s.contextLen + t, block = s.blockTable[Math.floor(pos / bs)];
        if (block === undefined) throw new Error(`paged attention: position ${pos} has no block (block table has ${s.blockTable.length} blocks of ${bs})`);
        m[slotOff + s.rowStart + t] = block * bs + (pos % bs);
      }
      tab += s.blockTable.length;
      if (decode[i]) m[dec++] = i;
      else for (let t = 0; t < s.numTokens; t += qt) { m[tile++] = i; m[tile++] = t; }
    });
    this.dev.makeCurrent();
    const ptr = this.meta.need(total * 4);
    this.dev.upload(ptr, m.subarray(0, total), this.stream);
    this.out.need(rows * this.shape.numHeads * this.shape.headDim * this.rowBytes);
    this.step = { rows, nSeq: seqs.length, seqOff, tabOff, slotOff, decOff, nDec, tileOff, nTiles };
  }

  /** Grow the step buffers now for steps of up to `rows` rows over `seqs` sequences (no allocation mid-serving). */
  reserve(rows: number, seqs: number): void {
    this.check();
    this.dev.makeCurrent();
    // block tables of all sequences together rarely exceed the pool (prefix sharing aside; beginStep grows if so)
    const tab = this.shape.numBlocks, tiles = Math.ceil(rows / this.k.queryTile) + seqs;
    this.meta.need((4 * seqs + tab + rows + seqs + 2 * tiles) * 4);
    this.out.need(rows * this.shape.numHeads * this.shape.headDim * this.rowBytes);
    for (const k of [this.k.write, this.k.decode, this.k.prefill]) this.dev.kernel(k); // compiled now, not on a request
  }

  private get rowBytes(): number {
    return this.rowDtype === 'float32' ? 4 : 2;
  }

  runLayer(layer: number, q: number, k: number, v: number): void {
    this.dev.makeCurrent();
    this.enqueueLayer(layer, q, k, v, this.out.ptr);
    this.dev.sync(this.stream);
  }

  enqueueLayer(layer: number, q: number, k: number, v: number, out: number): void {
    const s = this.step;
    if (!s) throw new Error('paged attention: runLayer before beginStep');
    const kc = this.kCache[layer], vc = this.vCache[layer], meta = this.meta.ptr;
    const kw = this.shape.numKvHeads * this.shape.headDim;
    // a step of decodes only: the decode kernel writes the new keys and values itself (one launch a layer, not two)
    const decodeWrites = this.k.decodeWrites && !s.nTiles;
    if (!decodeWrites) {
      const blocks = Math.max(1, Math.min(Math.ceil((s.rows * kw) / 256), SM_COUNT * 8));
      this.dev.launch({ ...this.k.write, grid: [blocks, 1, 1] }, [k, v, kc, vc, meta, s.slotOff, s.rows], this.stream);
    }
    if (s.nTiles) this.dev.launch({ ...this.k.prefill, grid: [s.nTiles, this.shape.numHeads, 1] }, [q, kc, vc, out, meta, s.seqOff, s.tabOff, s.tileOff], this.stream);
    if (s.nDec) {
      const params = this.k.decodeWrites ? [q, k, v, kc, vc, out, meta, s.seqOff, s.tabOff, s.decOff, s.slotOff, decodeWrites ? 1 : 0] : [q, kc, vc, out, meta, s.seqOff, s.tabOff, s.decOff];
      this.dev.launch({ ...this.k.decode, grid: [s.nDec, this.shape.numHeads, 1] }, params, this.stream);
    }
  }

  /** The host-memory entry points (checks, and callers without device tensors): copies in and out around runLayer. */
  prefill(step: AttentionStep): void {
    this.hostStep(step, false);
  }

  decode(step: AttentionStep): void {
    this.hostStep(step, true);
  }

  private hostStep(step: AttentionStep, decode: boolean): void {
    if (this.rowDtype !== 'float32') throw new Error(`paged attention: the host entry points take float32 rows; this instance was made for ${this.rowDtype} rows`);
    const qw = this.shape.numHeads * this.shape.headDim, kw = this.shape.numKvHeads * this.shape.headDim;
    const rows = step.q.length / qw;
    this.beginStep(step.seqs, step.seqs.map(() => decode), rows);
    const base = this.hostIo.need(rows * (qw + 2 * kw) * 4);
    const q = base, k = q + rows * qw * 4, v = k + rows * kw * 4;
    this.dev.upload(q, step.q, this.stream);
    this.dev.upload(k, step.k, this.stream);
    this.dev.upload(v, step.v, this.stream);
    this.runLayer(step.layer, q, k, v);
    // rows of sequences not in this call keep what the caller had in `out`
    const res = new Float32Array(rows * qw);
    this.dev.download(this.out.ptr, res, this.stream);
    for (const s of step.seqs) step.out.set(res.subarray(s.rowStart * qw, (s.rowStart + s.numTokens) * qw), s.rowStart * qw);
  }

  copyBlocks(pairs: [number, number][]): void {
    this.check();
    this.dev.makeCurrent();
    for (const [src, dst] of pairs) {
      for (const c of [...this.kCache, ...this.vCache]) this.dev.copy(c + dst * this.blockBytes, c + src * this.blockBytes, this.blockBytes, this.stream);
    }
    this.dev.sync(this.stream);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.dev.makeCurrent();
    this.dev.sync(this.stream);
    for (const p of [...this.kCache, ...this.vCache]) this.dev.release(p);
    this.kCache.length = this.vCache.length = 0;
    this.meta.free();
    this.out.free();
    this.hostIo.free();
    loadDriver().cuStreamDestroy_v2(this.stream);
  }

  private check(): void {
    if (this.released) throw new Error('paged attention: used after release()');
  }
}

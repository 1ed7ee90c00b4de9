// The paged KV cache's bookkeeping: a pool of fixed-size blocks, a block table per sequence, reference counts so
// sequences can share blocks (copy-on-write when a shared block must change), and prefix caching: every full block
// of token ids is keyed by a hash chained over all blocks before it, so a new prompt with the same prefix reuses the
// computed blocks. Freed blocks keep their key until the pool needs them again (least recently freed goes first).
// The storage itself belongs to the attention kernel (attention.ts); this class only hands out block ids.
import crypto from 'node:crypto';

export interface KvCacheStats {
  blocksTotal: number;
  /** Blocks referenced by at least one sequence. */
  blocksUsed: number;
  /** Free blocks that still hold a cached prefix. */
  blocksCached: number;
  prefixHits: number;
  prefixHitTokens: number;
}

interface SeqState {
  table: number[];
  /** Chain hashes of the sequence's leading full blocks registered so far. */
  hashes: string[];
}

export class KvCache {
  private readonly refs: Int32Array;
  private readonly blockHash: (string | undefined)[];
  /** Blocks with no references, oldest first (a Set keeps insertion order). */
  private readonly free = new Set<number>();
  private readonly byHash = new Map<string, number>();
  private readonly seqs = new Map<number, SeqState>();
  private hits = 0;
  private hitTokens = 0;

  constructor(readonly numBlocks: number, readonly blockSize: number, readonly prefixCaching = true) {
    this.refs = new Int32Array(numBlocks);
    this.blockHash = new Array(numBlocks);
    for (let b = 0; b < numBlocks; b++) this.free.add(b);
  }

  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  get freeBlocks(): number {
    return this.free.size;
  }

  stats(): KvCacheStats {
    let cached = 0;
    for (const b of this.free) if (this.blockHash[b] !== undefined) cached++;
    return { blocksTotal: this.numBlocks, blocksUsed: this.numBlocks - this.free.size, blocksCached: cached, prefixHits: this.hits, prefixHitTokens: this.hitTokens };
  }

  table(seq: number): readonly number[] {
    const s = this.seqs.get(seq);
    if (!s) throw new Error(`kv cache: unknown sequence ${seq}`);
    return s.table;
  }

  refCount(block: number): number {
    return this.refs[block];
  }

  /**
   * Give sequence `seq` blocks for `capacity` tokens, reusing cached blocks for the leading full blocks of `tokens`
   * (never all of `tokens`: the last one must be computed to get its logits). Returns how many tokens are already
   * in the cache, or undefined when the pool is short (nothing is taken then).
   */
  allocate(seq: number, tokens: readonly number[], capacity: number): number | undefined {
    if (this.seqs.has(seq)) throw new Error(`kv cache: sequence ${seq} already has blocks`);
    const bs = this.blockSize;
    const shared: number[] = [], hashes: string[] = [];
    if (this.prefixCaching) {
      let parent = '';
      for (let i = 0; (i + 1) * bs < tokens.length; i++) {
        const h = chainHash(parent, tokens.slice(i * bs, (i + 1) * bs));
        const b = this.byHash.get(h);
        if (b === undefined) break;
        shared.push(b);
        hashes.push(h);
        parent = h;
      }
    }
    const fresh = this.blocksFor(capacity) - shared.length;
    const sharedFree = shared.filter((b) => this.refs[b] === 0).length;
    if (fresh > this.free.size - sharedFree) return undefined;
    for (const b of shared) this.take(b);
    const table = [...shared];
    for (let i = 0; i < fresh; i++) table.push(this.takeFresh());
    this.seqs.set(seq, { table, hashes });
    if (shared.length) {
      this.hits++;
      this.hitTokens += shared.length * bs;
    }
    return shared.length * bs;
  }

  /** Register the sequence's full blocks among its first `computed` tokens for prefix reuse. */
  commit(seq: number, tokens: readonly number[], computed: number): void {
    const s = this.seqs.get(seq);
    if (!s || !this.prefixCaching) return;
    const bs = this.blockSize;
    for (let i = s.hashes.length; (i + 1) * bs <= computed; i++) {
      const h = chainHash(s.hashes[i - 1] ?? '', tokens.slice(i * bs, (i + 1) * bs));
      s.hashes.push(h);
      const b = s.table[i];
      if (!this.byHash.has(h) && this.blockHash[b] === undefined) {
        this.byHash.set(h, b);
        this.blockHash[b] = h;
      }
    }
  }

  /** Share every block of `parent` with a new sequence `child` (both then copy on write). */
  fork(parent: number, child: number): void {
    const p = this.seqs.get(parent);
    if (!p) throw new Error(`kv cache: unknown sequence ${parent}`);
    for (const b of p.table) this.refs[b]++;
    this.seqs.set(child, { table: [...p.table], hashes: [...p.hashes] });
  }

  /**
   * Make the block holding token position `pos` of `seq` private before it is written: a block shared with others
   * is replaced by a fresh copy. Returns the [src, dst] copy the attention kernel must make, if any, or throws when
   * the pool has no block left.
   */
  ensureWritable(seq: number, pos: number): [number, number] | undefined {
    const s = this.seqs.get(seq);
    if (!s) throw new Error(`kv cache: unknown sequence ${seq}`);
    const i = Math.floor(pos / this.blockSize);
    const b = s.table[i];
    if (b === undefined) throw new Error(`kv cache: position ${pos} of sequence ${seq} is past its ${s.table.length} blocks`);
    if (this.refs[b] <= 1 && this.blockHash[b] === undefined) return undefined;
    if (this.refs[b] <= 1) {
      // sole owner of a block others could still match by hash: drop the key rather than copy
      this.forget(b);
      s.hashes.length = Math.min(s.hashes.length, i);
      return undefined;
    }
    if (!this.free.size) throw new Error('kv cache: no free block for copy-on-write');
    const dst = this.takeFresh();
    this.refs[b]--;
    s.table[i] = dst;
    s.hashes.length = Math.min(s.hashes.length, i);
    return [b, dst];
  }

  /** Drop a sequence; its blocks go back to the pool (keeping their prefix keys until reused). */
  release(seq: number): void {
    const s = this.seqs.get(seq);
    if (!s) return;
    this.seqs.delete(seq);
    for (const b of s.table) {
      if (--this.refs[b] === 0) this.free.add(b);
    }
  }

  private take(b: number): void {
    if (this.refs[b]++ === 0) this.free.delete(b);
  }

  private takeFresh(): number {
    const b = this.free.values().next().value as number;
    this.free.delete(b);
    this.forget(b);
    this.refs[b] = 1;
    return b;
  }

  private forget(b: number): void {
    const h = this.blockHash[b];
    if (h !== undefined && this.byHash.get(h) === b) this.byHash.delete(h);
    this.blockHash[b] = undefined;
  }
}

function chainHash(parent: string, ids: readonly number[]): string {
  return crypto.createHash('sha256').update(parent).update(Int32Array.from(ids)).digest('hex');
}

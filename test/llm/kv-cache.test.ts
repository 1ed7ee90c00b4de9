import { describe, expect, it } from 'vitest';
import { KvCache } from '../../src/llm/kv-cache.js';

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

describe('KvCache', () => {
  it('allocates whole blocks per sequence and returns them on release', () => {
    const kv = new KvCache(8, 4);
    expect(kv.allocate(1, range(5), 9)).toBe(0);
    expect(kv.table(1)).toHaveLength(3);
    expect(kv.stats().blocksUsed).toBe(3);
    kv.release(1);
    expect(kv.stats().blocksUsed).toBe(0);
  });

  it('refuses an allocation it cannot satisfy without taking anything', () => {
    const kv = new KvCache(4, 4);
    expect(kv.allocate(1, range(4), 12)).toBe(0);
    expect(kv.allocate(2, range(4), 8)).toBeUndefined();
    expect(kv.stats().blocksUsed).toBe(3);
  });

  it('reuses committed full blocks of the same prefix, never the last token', () => {
    const kv = new KvCache(16, 4);
    const prompt = range(10);
    kv.allocate(1, prompt, 12);
    kv.commit(1, prompt, 10);
    // blocks [0..3] and [4..7] are full; a second identical prompt reuses both (its token 9 is still computed)
    expect(kv.allocate(2, prompt, 12)).toBe(8);
    expect(kv.table(2).slice(0, 2)).toEqual(kv.table(1).slice(0, 2));
    expect(kv.refCount(kv.table(1)[0])).toBe(2);
    // a prompt of exactly 8 tokens may share only the first block: its last token must produce logits
    expect(kv.allocate(3, range(8), 9)).toBe(4);
    // a different second block stops the match after the first
    expect(kv.allocate(4, [...range(4), 99, 98, 97, 96, 1], 9)).toBe(4);
    expect(kv.stats().prefixHits).toBe(3);
  });

  it('keeps freed prefix blocks cached until the pool needs them', () => {
    const kv = new KvCache(4, 2);
    kv.allocate(1, [1, 2, 3], 3);
    kv.commit(1, [1, 2, 3], 3);
    kv.release(1);
    expect(kv.stats()).toMatchObject({ blocksUsed: 0, blocksCached: 1 });
    expect(kv.allocate(2, [1, 2, 3], 4)).toBe(2);
    kv.release(2);
    // taking every block evicts the cached one
    expect(kv.allocate(3, [7, 7, 7], 8)).toBe(0);
    kv.release(3);
    expect(kv.allocate(4, [1, 2, 3], 4)).toBe(0);
  });

  it('copies a shared block on write (fork)', () => {
    const kv = new KvCache(8, 4);
    kv.allocate(1, range(6), 8);
    kv.fork(1, 2);
    const shared = kv.table(1)[1];
    expect(kv.refCount(shared)).toBe(2);
    const copy = kv.ensureWritable(2, 6);
    expect(copy).toEqual([shared, kv.table(2)[1]]);
    expect(kv.table(2)[1]).not.toBe(shared);
    expect(kv.refCount(shared)).toBe(1);
    // the other sharer is now sole owner: no copy
    expect(kv.ensureWritable(1, 6)).toBeUndefined();
    expect(kv.table(1)[0]).toBe(kv.table(2)[0]);
  });
});

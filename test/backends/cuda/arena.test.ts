// The arena planner for captured CUDA runs (pure: runs without a GPU).
import { describe, it, expect } from 'vitest';
import { planArena, type AllocationRecord } from '../../../src/backends/cuda/device.js';
import { seededRandom } from '../../../src/ir/builder.js';

/** No two allocations that are live at the same time overlap in the arena. */
function overlaps(r: AllocationRecord, offsets: number[]): string[] {
  const bad: string[] = [];
  for (let i = 0; i < r.sizes.length; i++) {
    for (let j = i + 1; j < r.sizes.length; j++) {
      const timeOverlap = r.start[i] < r.end[j] && r.start[j] < r.end[i];
      const spaceOverlap = offsets[i] < offsets[j] + r.sizes[j] && offsets[j] < offsets[i] + r.sizes[i];
      if (timeOverlap && spaceOverlap) bad.push(`${i}/${j}`);
    }
  }
  return bad;
}

describe('context arena plan', () => {
  it('reuses memory of allocations whose lifetimes do not overlap', () => {
    // a chain: each buffer lives from its allocation until the next one is freed
    const r: AllocationRecord = { sizes: [1024, 2048, 1024, 2048], start: [0, 1, 3, 5], end: [2, 4, 6, Infinity] };
    const { offsets, total } = planArena(r);
    expect(overlaps(r, offsets)).toEqual([]);
    expect(total).toBe(3072); // the peak of live bytes, not the 6144 a pool of distinct blocks would hold
  });

  it('never overlaps live allocations on random sequences, and stays within the sum of sizes', () => {
    const rand = seededRandom(3);
    for (let trial = 0; trial < 50; trial++) {
      const n = 5 + Math.floor(rand() * 60);
      const r: AllocationRecord = { sizes: [], start: [], end: [] };
      let t = 0;
      const live: number[] = [];
      for (let i = 0; i < n; i++) {
        if (live.length && rand() < 0.5) r.end[live.splice(Math.floor(rand() * live.length), 1)[0]] = t++;
        r.sizes.push(256 * (1 + Math.floor(rand() * 64)));
        r.start.push(t++);
        r.end.push(Infinity);
        live.push(i);
      }
      const { offsets, total } = planArena(r);
      expect(overlaps(r, offsets)).toEqual([]);
      let peak = 0;
      for (let k = 0; k < t; k++) peak = Math.max(peak, r.sizes.reduce((s, sz, i) => s + (r.start[i] <= k && k < r.end[i] ? sz : 0), 0));
      expect(total).toBeGreaterThanOrEqual(peak);
      expect(total).toBeLessThanOrEqual(r.sizes.reduce((a, b) => a + b, 0));
    }
  });
});

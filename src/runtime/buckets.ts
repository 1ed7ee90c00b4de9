// Padded sizes for engines that replay one captured CUDA graph per input shape (the LLM step's token rows, GPU models
// behind the server's dynamic batcher): a dynamic dim is rounded up to a power of two, capped at its maximum, so a
// handful of shapes cover every size and all of them can be captured at load. Padded rows are computed and dropped.

/** The next power of two at or above n, at most `max`. */
export function bucket(n: number, max: number): number {
  return Math.min(max, 2 ** Math.ceil(Math.log2(Math.max(1, n))));
}

/** Every size `bucket` can return up to `max`: the powers of two below it, then `max` (1, 2, 4, 8, 16, 24 for 24). */
export function buckets(max: number): number[] {
  const out: number[] = [];
  for (let n = 1; n < max; n *= 2) out.push(n);
  return [...out, max];
}

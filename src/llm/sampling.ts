// Next-token choice from one row of logits, in Hugging Face's order: repetition penalty, then temperature, top-k and
// top-p; temperature 0 is greedy (first maximum, as torch.argmax).
import { seededRandom } from '../ir/builder.js';

export interface SamplingParams {
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty: number;
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** A per-request random source; without a seed, a random one. */
export function makeRng(seed?: number): () => number {
  return seededRandom(seed ?? Math.floor(Math.random() * 2 ** 31));
}

/** Pick a token. `logits` is modified when a penalty applies; `seen` holds the prompt and output ids so far. */
export function sampleToken(logits: Float32Array, p: SamplingParams, seen: Iterable<number>, rng: () => number): number {
  if (p.repetitionPenalty !== 1) {
    for (const id of new Set(seen)) {
      const v = logits[id];
      if (v !== undefined) logits[id] = v > 0 ? v / p.repetitionPenalty : v * p.repetitionPenalty;
    }
  }
  if (p.temperature <= 0) return argmax(logits);
  let cand = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
  if (p.topK > 0 && p.topK < cand.length) cand = cand.slice(0, p.topK);
  const max = logits[cand[0]];
  let probs = cand.map((i) => Math.exp((logits[i] - max) / p.temperature));
  let sum = probs.reduce((a, b) => a + b, 0);
  if (p.topP < 1) {
    // keep the smallest set of most likely tokens whose probability reaches topP
    let acc = 0, keep = 0;
    while (keep < cand.length && acc < p.topP * sum) acc += probs[keep++];
    cand = cand.slice(0, Math.max(1, keep));
    probs = probs.slice(0, cand.length);
    sum = probs.reduce((a, b) => a + b, 0);
  }
  let r = rng() * sum;
  for (let i = 0; i < cand.length; i++) {
    r -= probs[i];
    if (r <= 0) return cand[i];
  }
  return cand[cand.length - 1];
}

// `kiln bench --llm`: serving load on an LLM engine. At each concurrency level, `requests` requests with a fixed prompt
// length and a fixed output length (end-of-sequence ignored) run with at most `concurrency` in flight; we report
// output tokens/s over the level's wall time, and per-request time to first token (TTFT), inter-token latency (ITL,
// every gap between consecutive tokens of a request) and end-to-end latency percentiles.
import { InputError } from '../ir/errors.js';
import type { LlmEngine } from '../llm/engine.js';

export interface LlmBenchOptions {
  /** Concurrency levels (default 1, 8, 32, 64). */
  concurrency?: number[];
  promptLen?: number;
  outputLen?: number;
  /** Requests per level (default: 2 x concurrency, at least 4). */
  requests?: number;
  seed?: number;
  onLevel?: (concurrency: number) => void;
}

export interface Percentiles {
  mean: number;
  p50: number;
  p90: number;
  p99: number;
}

export interface LlmBenchLevel {
  concurrency: number;
  requests: number;
  durationS: number;
  outputTokens: number;
  /** Generated tokens per second over the level's wall time. */
  tokensPerS: number;
  requestsPerS: number;
  ttftMs: Percentiles;
  itlMs: Percentiles;
  e2eMs: Percentiles;
}

export interface LlmBenchResult {
  promptLen: number;
  outputLen: number;
  levels: LlmBenchLevel[];
}

export function parseConcurrency(spec: string): number[] {
  const list = spec.split(',').map((s) => Number(s.trim()));
  if (list.length === 0 || list.some((n) => !Number.isSafeInteger(n) || n < 1)) {
    throw new InputError(`--concurrency: expected positive integers separated by commas (e.g. 1,8,32,64), got '${spec}'.`);
  }
  return list;
}

/** Prompts of exactly `len` token ids, different per request (so prefix caching cannot skip their prefill). */
export function benchPrompts(engine: Pick<LlmEngine, 'tokenizer'>, count: number, len: number, seed = 1): number[][] {
  const pool = [...new Set(engine.tokenizer.encode('Kiln compiles ONNX models into engines and serves large language models with a paged KV cache, '
    + 'in-flight batching and streaming; the quick brown fox jumps over the lazy dog 0123456789.'))];
  if (pool.length === 0) throw new InputError('the tokenizer encodes the benchmark text to no tokens; cannot make prompts.');
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  return Array.from({ length: count }, () => Array.from({ length: len }, () => pool[Math.floor(next() * pool.length)]));
}

export function percentiles(values: number[]): Percentiles {
  if (values.length === 0) return { mean: 0, p50: 0, p90: 0, p99: 0 };
  const v = [...values].sort((a, b) => a - b);
  const at = (p: number) => v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))];
  return { mean: v.reduce((a, b) => a + b, 0) / v.length, p50: at(50), p90: at(90), p99: at(99) };
}

export async function benchLlm(engine: LlmEngine, opts: LlmBenchOptions = {}): Promise<LlmBenchResult> {
  const levels = opts.concurrency ?? [1, 8, 32, 64];
  const promptLen = opts.promptLen ?? 128;
  const outputLen = opts.outputLen ?? 128;
  // warm-up: first-call costs (kernel compilation, allocation) stay out of the first level
  for await (const ev of engine.generate({ prompt: benchPrompts(engine, 1, promptLen, 7)[0], maxTokens: Math.min(outputLen, 4), ignoreEos: true })) void ev;
  const out: LlmBenchLevel[] = [];
  for (const concurrency of levels) {
    opts.onLevel?.(concurrency);
    out.push(await runLevel(engine, concurrency, opts.requests ?? Math.max(4, 2 * concurrency), promptLen, outputLen, (opts.seed ?? 1) + concurrency));
  }
  return { promptLen, outputLen, levels: out };
}

async function runLevel(engine: LlmEngine, concurrency: number, requests: number, promptLen: number, outputLen: number, seed: number): Promise<LlmBenchLevel> {
  const prompts = benchPrompts(engine, requests, promptLen, seed);
  const ttft: number[] = [];
  const itl: number[] = [];
  const e2e: number[] = [];
  let tokens = 0;
  let next = 0;
  const one = async (prompt: number[]) => {
    const t0 = performance.now();
    let last = t0;
    let n = 0;
    for await (const ev of engine.generate({ prompt, maxTokens: outputLen, ignoreEos: true, temperature: 0 })) {
      void ev;
      const now = performance.now();
      if (n++ === 0) ttft.push(now - t0);
      else itl.push(now - last);
      last = now;
    }
    tokens += n;
    e2e.push(last - t0);
  };
  const worker = async () => {
    while (next < requests) await one(prompts[next++]);
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, requests) }, worker));
  const durationS = (performance.now() - t0) / 1000;
  return {
    concurrency, requests, durationS, outputTokens: tokens, tokensPerS: tokens / durationS, requestsPerS: requests / durationS,
    ttftMs: percentiles(ttft), itlMs: percentiles(itl), e2eMs: percentiles(e2e),
  };
}

export function formatLlmBench(r: LlmBenchResult): string {
  const f = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const head = ['concurrency', 'requests', 'tokens/s', 'req/s', 'TTFT p50', 'p90', 'p99', 'ITL p50', 'p90', 'p99', 'e2e p50'];
  const rows = r.levels.map((l) => [
    String(l.concurrency), String(l.requests), f(l.tokensPerS), f(l.requestsPerS),
    f(l.ttftMs.p50), f(l.ttftMs.p90), f(l.ttftMs.p99), f(l.itlMs.p50), f(l.itlMs.p90), f(l.itlMs.p99), f(l.e2eMs.p50),
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(w[i])).join('  ');
  return [`prompt ${r.promptLen} tokens, output ${r.outputLen} tokens; latencies in ms`, line(head), ...rows.map(line)].join('\n');
}

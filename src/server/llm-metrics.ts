// Prometheus metrics of the LLM endpoints (label `model`), on the server's registry. Latencies in seconds like vLLM's;
// Triton's first-response histogram (milliseconds) too, so Triton dashboards show time to first token.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { LlmStats } from '../llm/engine.js';

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error';

/** The metric names, for the README and for tests. */
export const LLM_METRICS = {
  ttft: 'kiln_llm_time_to_first_token_seconds',
  itl: 'kiln_llm_inter_token_latency_seconds',
  e2e: 'kiln_llm_request_duration_seconds',
  promptTokens: 'kiln_llm_prompt_tokens_total',
  generatedTokens: 'kiln_llm_generation_tokens_total',
  requests: 'kiln_llm_requests_total',
  running: 'kiln_llm_requests_running',
  waiting: 'kiln_llm_requests_waiting',
  kvUsage: 'kiln_llm_kv_cache_usage_ratio',
  kvBlocks: 'kiln_llm_kv_cache_blocks',
  firstResponse: 'nv_inference_first_response_histogram_ms',
} as const;

const LATENCY_S = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40];

export class LlmMetrics {
  readonly ttft: Histogram<'model'>;
  readonly itl: Histogram<'model'>;
  readonly e2e: Histogram<'model'>;
  readonly promptTokens: Counter<'model'>;
  readonly generatedTokens: Counter<'model'>;
  readonly requests: Counter<'model' | 'finish_reason'>;
  readonly firstResponseMs: Histogram<'model' | 'version'>;

  /** `engines` lists the loaded models' engines; the gauges read their stats at scrape time. */
  constructor(registry: Registry, engines: () => { model: string; stats(): LlmStats }[]) {
    const registers = [registry];
    const hist = (name: string, help: string) => new Histogram({ name, help, labelNames: ['model'], buckets: LATENCY_S, registers });
    this.ttft = hist(LLM_METRICS.ttft, 'Time from request arrival to the first generated token, in seconds');
    this.itl = hist(LLM_METRICS.itl, 'Time between consecutive generated tokens of a request, in seconds');
    this.e2e = hist(LLM_METRICS.e2e, 'Time from request arrival to its last token, in seconds');
    this.promptTokens = new Counter({ name: LLM_METRICS.promptTokens, help: 'Prompt tokens prefilled', labelNames: ['model'], registers });
    this.generatedTokens = new Counter({ name: LLM_METRICS.generatedTokens, help: 'Tokens generated (rate() of it is tokens/s)', labelNames: ['model'], registers });
    this.requests = new Counter({ name: LLM_METRICS.requests, help: 'Finished generation requests by finish reason', labelNames: ['model', 'finish_reason'], registers });
    this.firstResponseMs = new Histogram({
      name: LLM_METRICS.firstResponse, help: 'Duration from request to first response sent, in milliseconds (Triton name; LLM models)',
      labelNames: ['model', 'version'], buckets: LATENCY_S.map((s) => s * 1000), registers,
    });
    const gauge = (name: string, help: string, read: (s: LlmStats) => number) =>
      new Gauge({
        name, help, labelNames: ['model'], registers,
        collect() {
          this.reset();
          for (const e of engines()) this.set({ model: e.model }, read(e.stats()));
        },
      });
    gauge(LLM_METRICS.running, 'Requests in the running batch', (s) => s.running);
    gauge(LLM_METRICS.waiting, 'Requests waiting to be scheduled', (s) => s.waiting);
    gauge(LLM_METRICS.kvUsage, 'Fraction of KV-cache blocks in use (0..1)', (s) => (s.kvBlocksTotal > 0 ? s.kvBlocksUsed / s.kvBlocksTotal : 0));
    new Gauge({
      name: LLM_METRICS.kvBlocks, help: 'KV-cache blocks, used and total', labelNames: ['model', 'state'], registers,
      collect() {
        this.reset();
        for (const e of engines()) {
          const s = e.stats();
          this.set({ model: e.model, state: 'used' }, s.kvBlocksUsed);
          this.set({ model: e.model, state: 'total' }, s.kvBlocksTotal);
        }
      },
    });
  }
}

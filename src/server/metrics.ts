// Prometheus metrics with Triton's names (labels model, version), plus per-version statistics for the stats
// endpoints. Each server has its own registry so several can run in one process.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface Duration {
  count: number;
  ns: number;
}

export interface VersionStats {
  last_inference: number;
  inference_count: number;
  execution_count: number;
  success: Duration;
  fail: Duration;
  queue: Duration;
  compute_input: Duration;
  compute_infer: Duration;
  compute_output: Duration;
}

export function emptyStats(): VersionStats {
  const d = () => ({ count: 0, ns: 0 });
  return { last_inference: 0, inference_count: 0, execution_count: 0, success: d(), fail: d(), queue: d(), compute_input: d(), compute_infer: d(), compute_output: d() };
}

export interface Timings {
  requestNs: number;
  queueNs: number;
  computeInputNs: number;
  computeInferNs: number;
  computeOutputNs: number;
}

export class Metrics {
  readonly registry = new Registry();
  private c = (name: string, help: string, labels = ['model', 'version']) => new Counter({ name, help, labelNames: labels, registers: [this.registry] });
  readonly success = this.c('nv_inference_request_success', 'Number of successful inference requests, all batch sizes');
  readonly failure = this.c('nv_inference_request_failure', 'Number of failed inference requests, all batch sizes', ['model', 'version', 'reason']);
  readonly count = this.c('nv_inference_count', 'Number of inferences performed (a batch of n counts n)');
  readonly execCount = this.c('nv_inference_exec_count', 'Number of model executions performed (a batch counts once)');
  readonly requestUs = this.c('nv_inference_request_duration_us', 'Cumulative inference request duration in microseconds');
  readonly queueUs = this.c('nv_inference_queue_duration_us', 'Cumulative inference queuing duration in microseconds');
  readonly inputUs = this.c('nv_inference_compute_input_duration_us', 'Cumulative compute input duration in microseconds');
  readonly inferUs = this.c('nv_inference_compute_infer_duration_us', 'Cumulative compute inference duration in microseconds');
  readonly outputUs = this.c('nv_inference_compute_output_duration_us', 'Cumulative compute output duration in microseconds');
  readonly pendingGauge = new Gauge({ name: 'nv_inference_pending_request_count', help: 'Instantaneous number of pending requests awaiting execution', labelNames: ['model', 'version'], registers: [this.registry] });
  readonly batchSize = new Histogram({
    name: 'kiln_inference_batch_size',
    help: 'Rows per model execution formed by the dynamic batcher (Kiln extension)',
    labelNames: ['model', 'version'],
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [this.registry],
  });

  recordSuccess(model: string, version: string, stats: VersionStats, t: Timings): void {
    const l = { model, version };
    this.success.inc(l);
    this.requestUs.inc(l, t.requestNs / 1000);
    this.queueUs.inc(l, t.queueNs / 1000);
    this.inputUs.inc(l, t.computeInputNs / 1000);
    this.inferUs.inc(l, t.computeInferNs / 1000);
    this.outputUs.inc(l, t.computeOutputNs / 1000);
    stats.last_inference = Date.now();
    add(stats.success, t.requestNs);
    add(stats.queue, t.queueNs);
    add(stats.compute_input, t.computeInputNs);
    add(stats.compute_infer, t.computeInferNs);
    add(stats.compute_output, t.computeOutputNs);
  }

  recordFailure(model: string, version: string, stats: VersionStats | undefined, reason: string, requestNs: number): void {
    this.failure.inc({ model, version, reason });
    if (stats) add(stats.fail, requestNs);
  }

  recordExec(model: string, version: string, stats: VersionStats, rows: number): void {
    const l = { model, version };
    this.count.inc(l, rows);
    this.execCount.inc(l);
    this.batchSize.observe(l, rows);
    stats.inference_count += rows;
    stats.execution_count += 1;
  }
}

function add(d: Duration, ns: number): void {
  d.count += 1;
  d.ns += ns;
}

// Prometheus metrics with Triton's names (labels model, version), plus per-version statistics for the stats
// endpoints. Each server has its own registry so several can run in one process.
import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DeviceProvider } from './devices.js';
import type { Instance } from './instances.js';

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

  readonly deviceExec = this.c('kiln_inference_exec_count_per_device', 'Model executions per device (cpu, gpu0, gpu1, ...): shows batches spread over GPUs (Kiln extension)', ['model', 'version', 'device']);
  private g = (name: string, help: string) => new Gauge({ name, help, labelNames: ['gpu_uuid', 'gpu'], registers: [this.registry] });
  readonly gpuUtil = this.g('nv_gpu_utilization', 'GPU utilization rate [0.0 - 1.0)');
  readonly gpuMemUsed = this.g('nv_gpu_memory_used_bytes', 'GPU used memory, in bytes');
  readonly gpuMemTotal = this.g('nv_gpu_memory_total_bytes', 'GPU total memory, in bytes');

  readonly threadMemory = new Gauge({
    name: 'kiln_thread_memory_bytes',
    help: 'Memory by thread: thread="main" is the server (area rss: the whole process), "<model>/<version>/<i>" an instance on its own thread (Kiln extension)',
    labelNames: ['thread', 'area'],
    registers: [this.registry],
  });

  readonly eventLoop = new Gauge({
    name: 'kiln_event_loop_utilization',
    help: "Fraction of time the server's main thread was busy since the previous scrape (Kiln extension)",
    registers: [this.registry],
  });
  private lastElu = performance.eventLoopUtilization();

  /** Refresh the memory and event-loop gauges (at scrape time) from this thread and each instance on its own. */
  async collectMemory(instances: { thread: string; instance: Instance }[]): Promise<void> {
    const elu = performance.eventLoopUtilization();
    this.eventLoop.set(performance.eventLoopUtilization(elu, this.lastElu).utilization);
    this.lastElu = elu;
    const m = process.memoryUsage();
    const set = (thread: string, areas: Record<string, number>) => {
      for (const [area, v] of Object.entries(areas)) this.threadMemory.set({ thread, area }, v);
    };
    this.threadMemory.reset(); // threads of unloaded models drop out
    set('main', { rss: m.rss, heap_used: m.heapUsed, external: m.external, array_buffers: m.arrayBuffers });
    await Promise.all(instances.map(async ({ thread, instance }) => {
      const t = await instance.memory?.().catch(() => undefined);
      if (t) set(thread, { heap_used: t.heapUsed, external: t.external, array_buffers: t.arrayBuffers });
    }));
  }

  /** Refresh the per-GPU gauges (at scrape time), labelled by gpu_uuid as Triton does, plus the index. */
  async collectGpus(provider: DeviceProvider | undefined): Promise<void> {
    const stats = (await provider?.stats?.()) ?? [];
    for (const s of stats) {
      const l = { gpu_uuid: s.uuid, gpu: String(s.index) };
      this.gpuUtil.set(l, s.utilization);
      this.gpuMemUsed.set(l, s.memoryUsedBytes);
      this.gpuMemTotal.set(l, s.memoryTotalBytes);
    }
  }

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

  recordExec(model: string, version: string, stats: VersionStats, rows: number, device = 'cpu'): void {
    const l = { model, version };
    this.deviceExec.inc({ ...l, device });
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

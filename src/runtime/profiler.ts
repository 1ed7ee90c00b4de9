// Trace capture and user ranges: Kiln's NVTX. `profiler.range('preprocess', fn)` records a span while a trace is
// being captured (`kiln profile`, `traceInference`) and otherwise only calls fn, so ranges can stay in production
// code. Spans use performance.now() milliseconds; tools turn them into Chrome-trace JSON.
import { InputError } from '../ir/errors.js';

export interface TraceSpan {
  name: string;
  /** The track it is drawn on: 'host', 'device' or 'user'. */
  track: string;
  /** performance.now() milliseconds */
  startMs: number;
  durMs: number;
  /** Category shown in trace viewers (e.g. 'layer', 'phase', 'range'). */
  cat?: string;
  args?: Record<string, unknown>;
}

export class Profiler {
  private spans: TraceSpan[] | undefined;

  /** True while a trace is being captured. */
  get capturing(): boolean {
    return this.spans !== undefined;
  }

  /** Run fn; while capturing, record its duration (until its promise settles, for async fns) as a user range. */
  range<T>(name: string, fn: () => T, args?: Record<string, unknown>): T {
    const spans = this.spans;
    if (!spans) return fn();
    const t0 = performance.now();
    const done = () => spans.push({ name, track: 'user', cat: 'range', startMs: t0, durMs: performance.now() - t0, ...(args ? { args } : {}) });
    let r: T;
    try {
      r = fn();
    } catch (e) {
      done();
      throw e;
    }
    if (r instanceof Promise) return r.finally(done) as T;
    done();
    return r;
  }

  /** Start capturing; every range and tool span until stop() is recorded. */
  start(): void {
    if (this.spans) throw new InputError('a trace is already being captured; call profiler.stop() first.');
    this.spans = [];
  }

  /** Stop capturing and return the recorded spans (in the order they ended). */
  stop(): TraceSpan[] {
    const s = this.spans ?? [];
    this.spans = undefined;
    return s;
  }

  /** Capture everything fn does (it may be async). */
  async capture<T>(fn: () => T | Promise<T>): Promise<{ result: T; spans: TraceSpan[] }> {
    this.start();
    try {
      const result = await fn();
      return { result, spans: this.stop() };
    } finally {
      if (this.spans) this.stop();
    }
  }

  /** Add a span recorded by a tool (host phases, device layers); ignored when not capturing. */
  record(span: TraceSpan): void {
    this.spans?.push(span);
  }
}

/** The process-wide profiler. */
export const profiler = new Profiler();

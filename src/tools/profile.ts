// `kiln profile`: a timeline of one inference (after warm-up) in the Chrome Trace Event Format, which Perfetto and
// chrome://tracing open. Host-side phases go on a 'host' track, every layer on a 'device' track (with its op types,
// shapes, precision and tactic), and the user's profiler.range() spans on a 'user ranges' track.
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import { profiler, type TraceSpan } from '../runtime/profiler.js';
import type { LayerInfo } from '../build/plan.js';
import { TensorData, SequenceValue, type Value } from '../ir/tensor.js';
import { KILN_VERSION } from '../build/plan.js';
import { timedRun } from './bench.js';

/** One event of the Trace Event Format: 'X' complete events (ts/dur in µs) and 'M' metadata events. */
export interface TraceEvent {
  name: string;
  ph: 'X' | 'M';
  pid: number;
  tid: number;
  ts?: number;
  dur?: number;
  cat?: string;
  args?: Record<string, unknown>;
}

export interface ChromeTrace {
  traceEvents: TraceEvent[];
  displayTimeUnit: 'ms';
  otherData: Record<string, unknown>;
}

export interface TraceOptions {
  /** Inferences before the captured one (default 3). */
  warmUpRuns?: number;
  /**
   * User code run inside the capture just before the inference (e.g. preprocessing wrapped in profiler.range);
   * when it returns inputs, they are the ones used.
   */
  prepare?: () => Record<string, Tensor> | void | Promise<Record<string, Tensor> | void>;
  /** The model's name in the trace (default: the engine's source). */
  model?: string;
}

const TRACKS = [
  { track: 'host', tid: 1, name: 'host' },
  { track: 'user', tid: 2, name: 'user ranges' },
  { track: 'device', tid: 3, name: 'device' },
];
const PID = 1;

const dimsOf = (v: Value): string => (v instanceof TensorData ? `${v.dtype}[${v.dims.join('x')}]` : v instanceof SequenceValue ? `seq(${v.items.length})` : 'none');

/** Capture one inference of `engine` (after warm-up) as a Chrome trace. */
export async function traceInference(engine: Engine, feeds: Record<string, Tensor>, o: TraceOptions = {}): Promise<ChromeTrace> {
  const ctx = engine.createContext();
  for (let i = 0; i < (o.warmUpRuns ?? 3); i++) await ctx.run(feeds);
  const info = new Map<string, LayerInfo>(engine.header.layers.map((l) => [l.name, l]));
  const t0 = performance.now();
  const { spans } = await profiler.capture(async () => {
    const prepared = o.prepare ? await o.prepare() : undefined;
    const t = await timedRun(ctx, prepared || feeds, {
      onLayer(node, outputs, ms, startMs) {
        const l = info.get(node.name);
        profiler.record({
          name: node.name || node.opType, track: 'device', cat: 'layer', startMs: startMs ?? performance.now() - ms, durMs: ms,
          args: { opType: l?.opType ?? node.opType, ops: l?.fused ?? [node.opType], inputs: l?.inputs.map((i) => `${i.dtype}[${i.shape.map((d) => d ?? '?').join('x')}]`) ?? [],
            outputs: outputs.map(dimsOf), precision: l?.precision ?? '?', tactic: l?.tactic ?? '?' },
        });
      },
    });
    const host = (name: string, s: number, e: number, args?: Record<string, unknown>) =>
      profiler.record({ name, track: 'host', cat: 'phase', startMs: s, durMs: Math.max(0, e - s), ...(args ? { args } : {}) });
    host('inference', t.startEnqMs, t.endD2hMs, { latencyMs: t.latencyMs });
    host('enqueue / run', t.startEnqMs, t.endEnqMs, { note: 'the call to ExecutionContext.run until it returned its promise' });
    host('input conversion (H2D)', t.startH2dMs, t.endH2dMs);
    // a backend that computes on the calling thread (cpu) does so inside enqueue: show it there
    if (t.endComputeMs <= t.endEnqMs) host('compute', t.startComputeMs, t.endComputeMs, { note: 'on the calling thread' });
    host('synchronization', t.endEnqMs, t.endD2hMs, { note: 'awaiting the outputs' });
    host('output conversion (D2H)', t.startD2hMs, t.endD2hMs);
  });
  const d = engine.header.device;
  const model = o.model ?? engine.source;
  return toChromeTrace(spans, t0, `kiln: ${model} (${d.backend})`, {
    kilnVersion: KILN_VERSION, backend: d.backend, device: d.name, model, captured: new Date().toISOString(),
  });
}

/** Turn recorded spans into a Chrome trace; times become µs since `originMs`. */
export function toChromeTrace(spans: TraceSpan[], originMs: number, processName: string, otherData: Record<string, unknown> = {}): ChromeTrace {
  const us = (ms: number) => Math.round(ms * 1000 * 1000) / 1000;
  const meta: TraceEvent[] = [
    { name: 'process_name', ph: 'M', pid: PID, tid: 0, args: { name: processName } },
    ...TRACKS.flatMap((t, i): TraceEvent[] => [
      { name: 'thread_name', ph: 'M', pid: PID, tid: t.tid, args: { name: t.name } },
      { name: 'thread_sort_index', ph: 'M', pid: PID, tid: t.tid, args: { sort_index: i } },
    ]),
  ];
  const tid = (track: string) => TRACKS.find((t) => t.track === track)?.tid ?? 1;
  const events: TraceEvent[] = spans.map((s) => ({
    name: s.name, cat: s.cat ?? s.track, ph: 'X', pid: PID, tid: tid(s.track), ts: us(s.startMs - originMs), dur: us(s.durMs), ...(s.args ? { args: s.args } : {}),
  }));
  // parents before children: by start, then longest first
  events.sort((a, b) => a.tid - b.tid || a.ts! - b.ts! || b.dur! - a.dur!);
  return { traceEvents: [...meta, ...events], displayTimeUnit: 'ms', otherData };
}

/** Problems that would stop a viewer from showing the trace (empty when it is valid). */
export function checkTrace(t: unknown): string[] {
  const errs: string[] = [];
  const events = (t as ChromeTrace)?.traceEvents;
  if (!Array.isArray(events)) return ['no traceEvents array'];
  const named = new Set<number>();
  events.forEach((e, i) => {
    const at = `event ${i} (${JSON.stringify(e?.name)})`;
    if (typeof e?.name !== 'string') errs.push(`${at}: name must be a string`);
    if (!Number.isInteger(e?.pid) || !Number.isInteger(e?.tid)) errs.push(`${at}: pid and tid must be integers`);
    if (e?.ph === 'M') {
      if (e.name === 'thread_name') named.add(e.tid);
      if (typeof e.args !== 'object') errs.push(`${at}: metadata needs args`);
    } else if (e?.ph === 'X') {
      if (!(typeof e.ts === 'number' && Number.isFinite(e.ts) && e.ts >= 0)) errs.push(`${at}: ts must be a non-negative number (µs)`);
      if (!(typeof e.dur === 'number' && Number.isFinite(e.dur) && e.dur >= 0)) errs.push(`${at}: dur must be a non-negative number (µs)`);
    } else errs.push(`${at}: unexpected phase ${JSON.stringify(e?.ph)}`);
  });
  for (const e of events) if (e.ph === 'X' && !named.has(e.tid)) errs.push(`tid ${e.tid} has no thread_name metadata`);
  return [...new Set(errs)];
}

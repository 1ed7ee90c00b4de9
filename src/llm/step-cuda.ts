// The GPU step of a decoder model: every layer engine's run is a CUDA graph captured once per padded step size (at
// load: `warmup`), and a step queues them all on the attention kernels' stream — graph i, then layer i's attention
// writing straight into graph i+1's input buffer, a device copy of the residual stream, graph i+1, ... — so a step
// costs one host wait instead of two per layer. The last engine (final layer's MLP, norm, LM head) runs only on the
// rows that need logits, gathered on the device, so its graphs depend on the number of sampled rows alone; greedy
// steps pick their tokens on the device (first maximum, as torch.argmax) and copy back one int32 per sequence. A
// step is queued whole before `run` awaits anything, so the engine can queue the next decode step behind it (ids
// from its tokens on the device) and the GPU does not idle while the host streams tokens and schedules.
import type { Engine } from '../runtime/engine.js';
import type { RunnerContext } from '../backends/backend.js';
import type { CapturedRun } from '../backends/cuda/runner.js';
import type { DeviceTensor } from '../backends/cuda/ops.js';
import { getDevice, type CudaDevice, type PinnedBuffer } from '../backends/cuda/device.js';
import { cu, loadDriver } from '../backends/cuda/ffi/driver.js';
import { argmaxKernel, gatherKernel, idsKernel } from './step-kernels.js';
import { TensorData, type Value } from '../ir/tensor.js';
import type { ModelConfig } from './config.js';
import type { GraphDtype } from './model.js';
import type { AttentionSeq, DevicePagedAttention } from './attention.js';

/** What the CUDA runner offers for chaining graphs (src/backends/cuda/runner.ts). */
interface GraphRunner {
  createContext(): RunnerContext;
  prepareGraph(feeds: Map<string, Value>, fetches: string[], context: RunnerContext): Promise<CapturedRun>;
  launchGraph(g: CapturedRun, stream: unknown): void;
}

function graphRunner(e: Engine): GraphRunner {
  const r = e.backendRunner as Partial<GraphRunner>;
  if (typeof r.prepareGraph !== 'function' || typeof r.createContext !== 'function') throw new Error('LLM GPU step: the engine\'s runner cannot hand out CUDA graphs');
  return r as GraphRunner;
}

/** Per-step host inputs of the first engine, already padded to the step's row count. */
export interface StepFeeds {
  ids: BigInt64Array;
  /** GPT-2: absolute positions. */
  pos?: BigInt64Array;
  /** Llama: RoPE tables [rows, headDim], in the graphs' type (fp16/bf16 as bit patterns). */
  cos?: Float32Array | Uint16Array;
  sin?: Float32Array | Uint16Array;
  /**
   * Rows whose id is the greedy token of the step queued just before this one (still on the device): for each row,
   * the index among that step's sampled rows, or -1 for the id in `ids`.
   */
  idsFromPrevious?: Int32Array;
}

export interface DeviceStepResult {
  /** Greedy token of each sampled row (when asked for). */
  tokens?: Int32Array;
  /** Logits [sampled rows, vocab] (when asked for). */
  logits?: Float32Array;
}

/** Host and device time of the steps so far (KILN_LLM_PROFILE=1 prints them at release). */
interface StepProfile {
  steps: number;
  queueMs: number;
  waitMs: number;
  deviceMs: number;
  /** host time of the queueing by part */
  parts: Map<string, number>;
  byRows: Map<number, { n: number; deviceMs: number }>;
}

export class CudaDecoderStep {
  private readonly dev: CudaDevice;
  private readonly runners: GraphRunner[];
  private readonly contexts: RunnerContext[];
  /** layer graphs by `${engine}:${rows}` */
  private readonly graphs = new Map<string, CapturedRun>();
  /** sel, then two token slots (a step and the one queued behind it), then the id map of a chained step */
  private readonly small: number;
  private readonly tokPinned: PinnedBuffer[] = [];
  private logitsPinned?: PinnedBuffer;
  /** start and end events of each of the two slots */
  private readonly events: unknown[][];
  private slot = 0;
  private readonly profile?: StepProfile;
  private attnScratch = 0;
  private attnBytes = 0;

  private readonly elt: number;

  constructor(private readonly cfg: ModelConfig, private readonly engines: Engine[], private readonly att: DevicePagedAttention,
    private readonly limits: { maxTokens: number; maxSeqs: number }, private readonly dtype: GraphDtype) {
    this.elt = dtype === 'float32' ? 4 : 2;
    this.dev = getDevice(att.deviceId);
    this.dev.makeCurrent();
    this.runners = engines.map(graphRunner);
    this.contexts = this.runners.map((r) => r.createContext());
    this.small = this.dev.alloc(this.smallOffset(3) + 4 * limits.maxTokens, true);
    this.events = [0, 1].map(() => [0, 1].map(() => { const e = [null]; cu('cuEventCreate', e, 0); return e[0]; }));
    if (process.env.KILN_LLM_PROFILE) this.profile = { steps: 0, queueMs: 0, waitMs: 0, deviceMs: 0, parts: new Map(), byRows: new Map() };
  }

  /** Byte offset of part `i` of the small buffer: 0 sel, 1 and 2 token slots, 3 the id map. */
  private smallOffset(i: number): number {
    return i * (4 * this.limits.maxSeqs + 256);
  }

  /** Capture every padded step size now, so no request meets a first-time (eager, then capture) run. */
  async warmup(rowBuckets: number[], selBuckets: number[]): Promise<void> {
    const t0 = performance.now();
    for (const T of rowBuckets) for (let i = 0; i < this.cfg.numLayers; i++) await this.layerGraph(i, T);
    for (const S of selBuckets) await this.layerGraph(this.cfg.numLayers, S);
    this.att.reserve(this.limits.maxTokens, this.limits.maxSeqs);
    this.scratch(this.limits.maxTokens);
    for (const k of [gatherKernel, argmaxKernel, idsKernel]) this.dev.kernel(k); // compiled now, not on the first request
    for (let i = 0; i < 2; i++) this.tokPinned.push(this.dev.allocPinned(4 * this.limits.maxSeqs));
    if (this.profile) console.error(`LLM GPU warm-up: ${this.graphs.size} graphs (step sizes ${rowBuckets.join(',')}; sampled rows ${selBuckets.join(',')}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }

  private async layerGraph(i: number, rows: number): Promise<CapturedRun> {
    const key = `${i}:${rows}`;
    let g = this.graphs.get(key);
    if (g) return g;
    const cfg = this.cfg, C = cfg.hiddenSize, HW = cfg.numHeads * cfg.headDim, L = cfg.numLayers;
    const f32 = (dims: number[]) => TensorData.zeros(this.dtype, dims);
    const feeds = new Map<string, Value>();
    if (i === 0) {
      feeds.set('ids', new TensorData('int64', [rows], new BigInt64Array(rows)));
      if (cfg.family === 'gpt2') feeds.set('pos', new TensorData('int64', [rows], new BigInt64Array(rows)));
    } else {
      feeds.set('x', f32([rows, C]));
      feeds.set('attn', f32([rows, HW]));
    }
    if (cfg.family !== 'gpt2' && i < L) for (const n of ['cos', 'sin']) feeds.set(n, f32([rows, cfg.headDim]));
    g = await this.runners[i].prepareGraph(feeds, i === L ? ['logits'] : ['x_out', 'q', 'k', 'v'], this.contexts[i]);
    this.graphs.set(key, g);
    return g;
  }

  /**
   * One step over `rows` padded rows: `sel` are the rows that need logits (padded to a captured count by repeating
   * the last); returns greedy tokens and/or logits of those rows. Once warmed up, the whole step is queued before
   * this returns its promise, so a caller may queue the next step (`idsFromPrevious`) before awaiting this one.
   */
  async run(seqs: readonly AttentionSeq[], decode: readonly boolean[], rows: number, feeds: StepFeeds, sel: number[], want: { tokens: boolean; logits: boolean }): Promise<DeviceStepResult> {
    const t0 = performance.now();
    const prof = this.profile;
    let tm = t0;
    const mark = prof ? (part: string) => {
      const now = performance.now();
      prof.parts.set(part, (prof.parts.get(part) ?? 0) + now - tm);
      tm = now;
    } : undefined;
    const cfg = this.cfg, L = cfg.numLayers, dev = this.dev, s = this.att.stream;
    const layers: CapturedRun[] = [];
    // (no await once warmed up: the step is queued synchronously)
    for (let i = 0; i < L; i++) layers.push(this.graphs.get(`${i}:${rows}`) ?? await this.layerGraph(i, rows));
    const last = sel.length ? this.graphs.get(`${L}:${sel.length}`) ?? await this.layerGraph(L, sel.length) : undefined;
    const slot = this.slot, prevTok = this.small + this.smallOffset(2 - slot), tokPtr = this.small + this.smallOffset(1 + slot);
    this.slot ^= 1;
    const [start, end] = this.events[slot];
    dev.makeCurrent();
    cu('cuEventRecord', start, s);
    mark?.('graph lookup');
    this.att.beginStep(seqs, decode, rows);
    mark?.('attention metadata');
    const input = (g: CapturedRun, name: string): DeviceTensor => {
      const d = g.inputs.get(name);
      if (!d) throw new Error(`LLM GPU step: the captured graph has no input '${name}'`);
      return d;
    };
    const g0 = layers[0];
    const ids = input(g0, 'ids').ptr;
    dev.upload(ids, feeds.ids, s);
    if (feeds.idsFromPrevious) {
      const map = this.small + this.smallOffset(3);
      dev.upload(map, feeds.idsFromPrevious, s);
      dev.launch({ ...idsKernel, grid: [Math.ceil(rows / 256), 1, 1] }, [prevTok, map, ids, rows], s);
    }
    if (feeds.pos) dev.upload(input(g0, 'pos').ptr, feeds.pos, s);
    const rope = cfg.family !== 'gpt2' ? (['cos', 'sin'] as const) : [];
    for (const n of rope) if (g0.inputs.has(n)) dev.upload(input(g0, n).ptr, feeds[n]!, s);
    this.scratch(rows);
    mark?.('inputs');
    const out = (g: CapturedRun, name: string) => g.outputs.get(name)!;
    for (let i = 0; i < L; i++) {
      const g = layers[i];
      mark?.('layer loop');
      if (i > 0) {
        const x = out(layers[i - 1], 'x_out'), xi = input(g, 'x');
        dev.copy(xi.ptr, x.ptr, x.bytes, s);
        for (const n of rope) {
          const src = g0.inputs.get(n), dst = g.inputs.get(n);
          if (src && dst) dev.copy(dst.ptr, src.ptr, src.bytes, s);
        }
      }
      mark?.('residual copies');
      this.runners[i].launchGraph(g, s);
      mark?.('graph launches');
      const target = i + 1 < L ? input(layers[i + 1], 'attn').ptr : this.attnScratch;
      this.att.enqueueLayer(i, out(g, 'q').ptr, out(g, 'k').ptr, out(g, 'v').ptr, target);
      mark?.('attention launches');
    }
    const res: DeviceStepResult = {};
    const S = sel.length;
    let tokPin: PinnedBuffer | undefined, logPin: PinnedBuffer | undefined;
    if (last) {
      const selPtr = this.small;
      dev.upload(selPtr, Int32Array.from(sel), s);
      const xs = out(layers[L - 1], 'x_out');
      // rows copied as 4-byte words (fp16/bf16 widths are even)
      const gather = (src: number, dst: number, width: number) => dev.launch({ ...gatherKernel, grid: [S, 1, 1] }, [src, dst, selPtr, (width * this.elt) / 4], s);
      gather(xs.ptr, input(last, 'x').ptr, cfg.hiddenSize);
      gather(this.attnScratch, input(last, 'attn').ptr, cfg.numHeads * cfg.headDim);
      this.runners[L].launchGraph(last, s);
      const logits = out(last, 'logits');
      if (want.tokens) {
        dev.launch({ ...argmaxKernel, grid: [S, 1, 1] }, [logits.ptr, tokPtr, cfg.vocabSize], s);
        tokPin = this.tokPinned[slot] ??= dev.allocPinned(4 * this.limits.maxSeqs);
        cu('cuMemcpyDtoHAsync_v2', tokPin.ptr, tokPtr, 4 * S, s);
      }
      if (want.logits) {
        logPin = this.logitsPinned ??= dev.allocPinned(4 * this.limits.maxSeqs * cfg.vocabSize);
        cu('cuMemcpyDtoHAsync_v2', logPin.ptr, logits.ptr, logits.bytes, s);
      }
    }
    cu('cuEventRecord', end, s);
    mark?.('LM head, argmax, copies');
    const t1 = performance.now();
    await waitFor(end);
    const t2 = performance.now();
    if (tokPin) res.tokens = new Int32Array(tokPin.view.buffer.slice(tokPin.view.byteOffset, tokPin.view.byteOffset + 4 * S));
    if (logPin) res.logits = new Float32Array(logPin.view.buffer.slice(logPin.view.byteOffset, logPin.view.byteOffset + 4 * S * cfg.vocabSize));
    if (this.profile) {
      const p = this.profile, ms = [0];
      cu('cuEventElapsedTime', ms, start, end);
      p.steps++;
      p.queueMs += t1 - t0;
      p.waitMs += t2 - t1;
      p.deviceMs += ms[0];
      const r = p.byRows.get(rows) ?? { n: 0, deviceMs: 0 };
      r.n++;
      r.deviceMs += ms[0];
      p.byRows.set(rows, r);
    }
    return res;
  }

  /** The last layer's attention output, [rows, numHeads * headDim] in the graphs' type. */
  private scratch(rows: number): void {
    const bytes = rows * this.cfg.numHeads * this.cfg.headDim * this.elt;
    if (this.attnBytes >= bytes) return;
    if (this.attnScratch) this.dev.release(this.attnScratch);
    this.attnScratch = this.dev.alloc(bytes, true);
    this.attnBytes = bytes;
  }

  /** One line per padded size: steps, mean device ms; and host queueing / waiting totals. */
  profileReport(): string | undefined {
    const p = this.profile;
    if (!p || !p.steps) return undefined;
    const rows = [...p.byRows].sort((a, b) => a[0] - b[0]).map(([r, v]) => `${r} rows: ${v.n} steps, ${(v.deviceMs / v.n).toFixed(3)} ms device`);
    const parts = [...p.parts].map(([k, v]) => `${k} ${(v / p.steps).toFixed(3)}`).join(', ');
    // a chained step's device time runs from its queueing, so it includes the end of the step ahead of it
    return `LLM GPU steps: ${p.steps}, mean host queueing ${(p.queueMs / p.steps).toFixed(3)} ms (${parts}), mean wait ${(p.waitMs / p.steps).toFixed(3)} ms, `
      + `mean device (queued to done) ${(p.deviceMs / p.steps).toFixed(3)} ms\n  ${rows.join('\n  ')}`;
  }

  release(): void {
    const report = this.profileReport();
    if (report) console.error(report);
    this.dev.makeCurrent();
    this.dev.sync(this.att.stream);
    for (const c of this.contexts) c.release();
    this.dev.release(this.small);
    if (this.attnScratch) this.dev.release(this.attnScratch);
    for (const b of [...this.tokPinned, this.logitsPinned]) if (b) this.dev.freePinned(b);
    for (const e of this.events.flat()) loadDriver().cuEventDestroy_v2(e);
  }
}

/** Resolve once `event` has completed, polling between event-loop turns so streaming and new requests go on. */
async function waitFor(event: unknown): Promise<void> {
  const d = loadDriver();
  for (;;) {
    const st = d.cuEventQuery(event);
    if (st === 0) return;
    if (st !== 600) cu('cuEventQuery', event); // 600 = CUDA_ERROR_NOT_READY; anything else throws
    await new Promise((r) => setImmediate(r));
  }
}

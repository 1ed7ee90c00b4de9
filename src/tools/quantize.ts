// `kiln quantize`: post-training quantization of an ONNX model to explicit Q/DQ (ModelOpt's ONNX PTQ modes):
//   int8  W8A8, symmetric, weights per channel (or per tensor), activations per tensor; optional SmoothQuant;
//         activations int8 (symmetric) or uint8 (onnxruntime's default: zero point 0 on non-negative tensors)
//   fp8   W8A8 in float8e4m3fn with scales amax/448
//   int4  weight-only, blocks along the reduction axis, round-to-nearest after an AWQ-style scale search
// Calibration runs the reference executor on the calibration data; the report compares the quantized model with the
// fp32 one, layer by layer and on the outputs, on held-out inputs.
import type { Model, Node } from '../ir/graph.js';
import { TensorData, type Value } from '../ir/tensor.js';
import { InputError } from '../ir/errors.js';
import { executeGraph, topoSort } from '../ops/execute.js';
import { GraphView } from '../passes/view.js';
import { foldBatchNorm } from '../passes/fuse.js';
import {
  type Feeds, checkCalibrationSet, loadCalibrationData, randomCalibrationData, samplesIn, sliceFeeds, dataInputs,
} from '../quant/data.js';
import { AbsHistogram, type CalibratorKind, absMax, pickThreshold } from '../quant/calibrate.js';
import {
  type QuantTarget, cloneModel, dropUnusedInitializers, insertActivationQdq, insertBiasDq, insertInputScale, insertWeightDq, Namer,
  raiseOpset, selectResidualAdds, selectTargets,
} from '../quant/qdq.js';
import {
  type QuantDType, type QuantizedWeight, QMAX, awqSearch, quantizeWeight, quantizeWeightInt4, scaleInputChannels,
  smoothScales,
} from '../quant/weights.js';

export type QuantMode = 'int8' | 'fp8' | 'int4';

export interface QuantizeOptions {
  mode?: QuantMode;
  /** Calibration inputs: a .npz/.npy file or folder, or feeds already loaded (samples stacked on axis 0). */
  calibrationData?: string | Feeds;
  /** Use this many seeded random samples instead of data (a warning is reported: scales from random data are poor). */
  calibrationRandom?: number;
  /** Inputs for the accuracy report; default: the last fifth of the calibration data when it has 10+ samples. */
  evalData?: string | Feeds;
  /** Default 'max'. */
  calibrator?: CalibratorKind;
  /** For the percentile calibrator; default 99.99. */
  percentile?: number;
  /** Weights per channel (default) or per tensor. */
  perChannel?: boolean;
  /** int4 block size along the reduction axis; default 128. */
  blockSize?: number;
  /** int4: search AWQ scales (default true); false is plain round-to-nearest. */
  awq?: boolean;
  /**
   * int8 mode: activations as int8, symmetric (default: what the GPU's int8 kernels take), or uint8: zero point 0 on
   * tensors calibration saw non-negative (a ReLU's output: all 256 levels cover [0, threshold], one bit more than
   * int8, and integer runtimes fold the ReLU into the Q/DQ pair, so onnxruntime runs such layers as integer
   * QLinearConv instead of in float), zero point 128 on the others.
   */
  activationType?: 'int8' | 'uint8';
  /** SmoothQuant migration strength for MatMul/Gemm in int8/fp8; undefined = off. */
  smoothAlpha?: number;
  /**
   * Default: Conv, MatMul, Gemm (int4: MatMul, Gemm). 'Add' (int8, fp8): Q/DQ on both inputs of each residual Add
   * (two activations, one from a quantized layer; bias Adds and Adds no quantized layer feeds stay float), TensorRT's
   * placement, which lets an integer engine fold the Add into the layer before it (Kiln's GPU build: int8 residual stream)
   */
  opTypesToQuantize?: string[];
  /** Add 'Add' to the op types (default or given): `--quantize-residual`. */
  quantizeResidual?: boolean;
  nodesToExclude?: string[];
  excludePatterns?: string[];
  /** Samples per executor run; default 32. */
  batchSize?: number;
  seed?: number;
}

export interface ActivationReport { tensor: string; amax: number; threshold: number; scale: number; zeroPoint: number; clipped: number }

export interface LayerReport {
  node: string;
  opType: string;
  /** '' for an Add (no weight) */
  weightDtype: string;
  weightScale?: { min: number; max: number; count: number };
  /** Activation input: observed max |x|, chosen threshold, scale and zero point, and fraction of calibration values clipped. */
  activation?: ActivationReport;
  /** An Add's second input, quantized like the first. */
  activation2?: ActivationReport;
  smoothAlpha?: number;
  awqAlpha?: number;
  /** This layer's output vs fp32 on the eval inputs (errors accumulated from earlier layers included). */
  cosine: number;
  relativeError: number;
}

export interface OutputReport {
  name: string;
  cosine: number;
  maxAbsError: number;
  /** One LSB of an int8 scale for this output (amax/127 on the eval inputs). */
  lsb: number;
  /** Argmax agreement over the last axis, for rank-2 outputs. */
  top1?: number;
}

export interface QuantizeReport {
  mode: QuantMode;
  calibrator: CalibratorKind;
  opset: number;
  calibrationSamples: number;
  evalSamples: number;
  evalSource: string;
  layers: LayerReport[];
  skipped: { node: string; reason: string }[];
  /** BatchNormalization nodes folded into the Conv/Gemm before them ahead of quantization. */
  batchNormsFolded: number;
  outputs: OutputReport[];
  warnings: string[];
}

const DTYPE_OF: Record<QuantMode, QuantDType> = { int8: 'int8', fp8: 'float8e4m3fn', int4: 'int4' };
const MIN_OPSET: Record<QuantMode, number> = { int8: 13, fp8: 19, int4: 21 };

/** Run `model` over `feeds` in batches, handing each watched value (node output or graph input) to `see`. */
function watch(model: Model, feeds: Feeds, names: Set<string>, batch: number, see: (name: string, t: TensorData, batchIndex: number) => void): void {
  const n = samplesIn(feeds);
  for (let start = 0, b = 0; start < n; start += batch, b++) {
    const part = sliceFeeds(feeds, start, Math.min(n, start + batch));
    for (const [k, t] of part) if (names.has(k)) see(k, t, b);
    executeGraph(model.graph, part as Map<string, Value>, {
      opsets: model.opsets,
      onNode: (node, outs) => node.outputs.forEach((o, i) => {
        const t = outs[i];
        if (names.has(o) && t instanceof TensorData) see(o, t, b);
      }),
    });
  }
}

function batchSizeFor(model: Model, requested: number): number {
  const fixed = dataInputs(model.graph).map((i) => (i.type.kind === 'tensor' ? i.type.shape?.[0] : undefined)).find((d) => typeof d === 'number');
  return typeof fixed === 'number' ? fixed : requested;
}

function resolveFeeds(model: Model, data: string | Feeds): Feeds {
  return typeof data === 'string' ? loadCalibrationData(data, model.graph) : checkCalibrationSet(Object.fromEntries(data), model.graph, 'calibration data');
}

/** Calibration and evaluation inputs, and where the evaluation ones came from. */
function splitData(model: Model, o: QuantizeOptions, warnings: string[]): { calib: Feeds; evalFeeds: Feeds; evalSource: string } {
  if (o.calibrationData === undefined && !o.calibrationRandom) {
    throw new InputError('quantization needs calibration data.', { hint: 'Pass --calibration-data <file.npz|folder>, or --calibration-random to use random inputs (poor scales; for smoke tests only).' });
  }
  let calib: Feeds;
  if (o.calibrationData !== undefined) calib = resolveFeeds(model, o.calibrationData);
  else {
    warnings.push(`calibrating on ${o.calibrationRandom} random samples: activation ranges will not match real data; pass --calibration-data for a usable model.`);
    calib = randomCalibrationData(model.graph, o.calibrationRandom as number, { seed: o.seed ?? 1 });
  }
  const n = samplesIn(calib);
  if (!n) throw new InputError('the calibration data holds no samples (axis 0 has size 0).');
  if (o.evalData !== undefined) return { calib, evalFeeds: resolveFeeds(model, o.evalData), evalSource: 'eval data' };
  if (o.calibrationData === undefined) {
    return { calib, evalFeeds: randomCalibrationData(model.graph, Math.max(8, Math.min(64, n)), { seed: (o.seed ?? 1) + 1 }), evalSource: 'fresh random samples' };
  }
  const batch = batchSizeFor(model, 1);
  const hold = n >= 10 ? Math.max(batch, Math.floor(n / 5 / batch) * batch) : 0;
  if (!hold) {
    warnings.push(`only ${n} calibration samples: the accuracy report uses the calibration data itself (pass eval data for a held-out figure).`);
    return { calib, evalFeeds: calib, evalSource: 'calibration data (too few samples to hold out)' };
  }
  return { calib: sliceFeeds(calib, 0, n - hold), evalFeeds: sliceFeeds(calib, n - hold, n), evalSource: `last ${hold} calibration samples (held out)` };
}

/** Per-input-channel statistics of each target's activation (last axis = channels): max |x|, mean |x| and sample rows. */
interface ChannelStats { amax: Float64Array; sumAbs: Float64Array; count: number; rows: number[][] }

function channelStats(model: Model, targets: QuantTarget[], feeds: Feeds, batch: number, maxRows = 128): Map<string, ChannelStats> {
  const stats = new Map<string, ChannelStats>();
  const names = new Set(targets.map((t) => t.node.inputs[0]));
  watch(model, feeds, names, batch, (name, t) => {
    const k = t.dims[t.rank - 1];
    let s = stats.get(name);
    if (!s) stats.set(name, (s = { amax: new Float64Array(k), sumAbs: new Float64Array(k), count: 0, rows: [] }));
    const v = t.toFloat64();
    const rows = v.length / k;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < k; c++) {
        const a = Math.abs(v[r * k + c]);
        if (a > s.amax[c]) s.amax[c] = a;
        s.sumAbs[c] += a;
      }
      // keep an evenly spread sample of rows for the AWQ error measure
      if (s.rows.length < maxRows && (r % Math.max(1, Math.floor(rows / 16)) === 0)) s.rows.push(Array.from(v.subarray(r * k, (r + 1) * k)));
    }
    s.count += rows;
  });
  return stats;
}

interface WeightPlan { target: QuantTarget; qw: QuantizedWeight; smoothAlpha?: number; awqAlpha?: number; inputScale?: Float64Array }

function planWeights(model: Model, targets: QuantTarget[], calib: Feeds, o: QuantizeOptions, batch: number): WeightPlan[] {
  const mode = o.mode ?? 'int8';
  const g = model.graph;
  const needStats = (mode === 'int4' && o.awq !== false) || (mode !== 'int4' && o.smoothAlpha !== undefined);
  const stats = needStats ? channelStats(model, targets.filter((t) => t.kAxis !== undefined), calib, batch) : new Map<string, ChannelStats>();
  return targets.map((target) => {
    const w = g.initializers.get(target.weightName) as TensorData;
    const s = target.kAxis !== undefined ? stats.get(target.node.inputs[0]) : undefined;
    const view = { w, kAxis: target.kAxis as 0 | 1 };
    if (mode === 'int4') {
      const kAxis = target.kAxis ?? (target.node.opType === 'MatMul' ? w.rank - 2 : 1 - target.channelAxis);
      if (!s || s.amax.length !== w.dims[kAxis]) return { target, qw: quantizeWeightInt4(w, kAxis, o.blockSize ?? 128) };
      const x = Float64Array.from(s.rows.flat());
      const mean = s.sumAbs.map((v) => v / s.count);
      const r = awqSearch(view, x, s.rows.length, mean, o.blockSize ?? 128);
      return { target, qw: r.weight, awqAlpha: r.alpha, inputScale: r.scales };
    }
    const dtype = DTYPE_OF[mode] as 'int8' | 'float8e4m3fn';
    const axis = o.perChannel === false ? undefined : target.channelAxis;
    if (o.smoothAlpha !== undefined && s && s.amax.length === w.dims[view.kAxis]) {
      const scales = smoothScales(s.amax, view, o.smoothAlpha);
      return { target, qw: quantizeWeight(scaleInputChannels(view, scales), dtype, axis), smoothAlpha: o.smoothAlpha, inputScale: scales };
    }
    return { target, qw: quantizeWeight(w, dtype, axis) };
  });
}

interface ActStat { amax: number; hist?: AbsHistogram; threshold: number; scale: number; dtype: QuantDType | 'uint8'; zeroPoint: number; float: boolean }

function calibrateActivations(model: Model, names: Set<string>, calib: Feeds, o: QuantizeOptions, batch: number): Map<string, ActStat> {
  const amax = new Map<string, number>(), signed = new Set<string>(), nonFloat = new Set<string>();
  watch(model, calib, names, batch, (n, t) => {
    if (t.dtype !== 'float32') nonFloat.add(n);
    const r = absMax(t);
    amax.set(n, Math.max(amax.get(n) ?? 0, r.amax));
    if (r.negative) signed.add(n);
  });
  const kind = o.calibrator ?? 'max';
  const hists = new Map<string, AbsHistogram>();
  if (kind !== 'max') {
    for (const [n, m] of amax) hists.set(n, new AbsHistogram(m));
    watch(model, calib, names, batch, (n, t) => hists.get(n)?.add(t));
  }
  const dtype = DTYPE_OF[o.mode ?? 'int8'];
  const out = new Map<string, ActStat>();
  for (const [n, m] of amax) {
    const hist = hists.get(n);
    const threshold = pickThreshold(m, hist, { kind, percentile: o.percentile });
    // uint8: [0, threshold] in 255 steps where the tensor is non-negative, else [-threshold, threshold] around 128
    const [t, qmax, zeroPoint]: [QuantDType | 'uint8', number, number] = o.activationType !== 'uint8' ? [dtype, QMAX[dtype], 0] : signed.has(n) ? ['uint8', 127, 128] : ['uint8', 255, 0];
    out.set(n, { amax: m, hist, threshold, scale: threshold > 0 ? Math.fround(threshold / qmax) : 1, dtype: t, zeroPoint, float: !nonFloat.has(n) });
  }
  return out;
}

function checkOptions(o: QuantizeOptions): void {
  const mode = o.mode ?? 'int8';
  if (!['int8', 'fp8', 'int4'].includes(mode)) throw new InputError(`unknown quantization mode '${mode}'.`, { hint: 'Use int8, fp8 or int4.' });
  if (o.calibrator && !['max', 'entropy', 'percentile'].includes(o.calibrator)) {
    throw new InputError(`unknown calibrator '${o.calibrator}'.`, { hint: 'Use max, entropy or percentile.' });
  }
  if (o.percentile !== undefined && !(o.percentile > 0 && o.percentile <= 100)) throw new InputError(`--percentile must be in (0, 100], got ${o.percentile}.`);
  if (o.blockSize !== undefined && !(Number.isInteger(o.blockSize) && o.blockSize >= 2)) throw new InputError(`--block-size must be an integer >= 2, got ${o.blockSize}.`);
  if (o.smoothAlpha !== undefined && !(o.smoothAlpha >= 0 && o.smoothAlpha <= 1)) throw new InputError(`--smooth-alpha must be in [0, 1], got ${o.smoothAlpha}.`);
  if (o.activationType !== undefined && !['int8', 'uint8'].includes(o.activationType)) {
    throw new InputError(`unknown activation type '${o.activationType}'.`, { hint: 'Use int8 (symmetric) or uint8 (zero point 0 on non-negative tensors).' });
  }
  if ((o.quantizeResidual || o.opTypesToQuantize?.includes('Add')) && mode === 'int4') {
    throw new InputError('quantizing Add inputs (--quantize-residual, or Add in --op-types-to-quantize) needs quantized activations: --mode int8 or fp8, not int4 (weight-only).');
  }
  if (o.activationType === 'uint8' && mode !== 'int8') throw new InputError(`--activation-type uint8 is for --mode int8 (got ${mode}).`);
}

function compileRegexes(patterns: string[] | undefined): RegExp[] {
  return (patterns ?? []).map((p) => {
    try {
      return new RegExp(p);
    } catch (e) {
      throw new InputError(`--exclude-patterns: '${p}' is not a valid regular expression (${(e as Error).message}).`);
    }
  });
}

/** Quantize `model` (left unchanged) to an explicit Q/DQ model; returns it with the accuracy report. */
export function quantizeModel(model: Model, o: QuantizeOptions = {}): { model: Model; report: QuantizeReport } {
  checkOptions(o);
  const mode = o.mode ?? 'int8';
  const warnings: string[] = [];
  const { calib, evalFeeds, evalSource } = splitData(model, o, warnings);
  const batch = batchSizeFor(model, o.batchSize ?? 32);
  const baseTypes = o.opTypesToQuantize ?? (mode === 'int4' ? ['MatMul', 'Gemm'] : ['Conv', 'MatMul', 'Gemm']);
  const opTypes = o.quantizeResidual && !baseTypes.includes('Add') ? [...baseTypes, 'Add'] : baseTypes;
  const out = cloneModel(model);
  const g = out.graph;
  // BatchNormalization after a Conv/Gemm folds into its weights and bias first (as exporters in eval mode and other
  // quantizers' pre-processing do): the weights are quantized as they will run, and the layer keeps the DQ -> Conv ->
  // Q form with an int32 bias that integer runtimes fuse (with BN in between, onnxruntime runs the layer in float)
  const batchNormsFolded = foldBatchNorm(new GraphView(g, out.opsets));
  const selection = { opTypes, nodesToExclude: o.nodesToExclude, excludePatterns: compileRegexes(o.excludePatterns) };
  const { targets, skipped } = selectTargets(g, selection);
  const residual = selectResidualAdds(g, selection, targets.map((t) => t.node));
  skipped.push(...residual.skipped);
  if (!targets.length && !residual.adds.length) warnings.push(`no layer to quantize (op types ${opTypes.join(', ')}); the model is written unchanged apart from its opset.`);
  // (a shallow copy of the graph to run: the executor caches its schedule per graph object, and g changes below)
  const plans = planWeights({ ...out, graph: { ...g } }, targets, calib, o, batch);
  const namer = new Namer(g);
  // activation-side scales first, so calibration sees the smoothed activations
  for (const p of plans) if (p.inputScale) insertInputScale(g, namer, p.target.node, 0, p.inputScale.map((s) => 1 / s));
  const actNames = new Set([...targets.map((t) => t.node.inputs[0]), ...residual.adds.flatMap((a) => a.inputs)]);
  const acts = mode === 'int4' ? new Map<string, ActStat>() : calibrateActivations(out, actNames, calib, o, batch);
  const cache = new Map<string, string>();
  const layers: LayerReport[] = [];
  const actReportOf = (name: string, act: ActStat): ActivationReport => ({ tensor: name, amax: act.amax, threshold: act.threshold, scale: act.scale, zeroPoint: act.zeroPoint, clipped: act.hist?.fractionAbove(act.threshold) ?? 0 });
  for (const p of plans) {
    const node = p.target.node;
    const act = acts.get(node.inputs[0]);
    const actReport = act && actReportOf(node.inputs[0], act);
    if (act) insertActivationQdq(g, namer, node, 0, act.scale, act.dtype, cache, act.zeroPoint);
    insertWeightDq(g, namer, node, 1, p.qw);
    // int8 layers carry their bias as int32 (see insertBiasDq); a Gemm only with alpha = beta = 1, where the bias is
    // added at the product's scale
    const unitGemm = node.opType !== 'Gemm' || ((node.attrs.alpha?.value ?? 1) === 1 && (node.attrs.beta?.value ?? 1) === 1);
    if (act && mode === 'int8' && unitGemm && (node.opType === 'Conv' || node.opType === 'Gemm')) insertBiasDq(g, namer, node, 2, act.scale, p.qw);
    const sc = p.qw.scale.toFloat64();
    layers.push({
      node: node.name, opType: node.opType, weightDtype: p.qw.q.dtype,
      weightScale: { min: Math.min(...sc), max: Math.max(...sc), count: sc.length },
      activation: actReport, smoothAlpha: p.smoothAlpha, awqAlpha: p.awqAlpha, cosine: NaN, relativeError: NaN,
    });
  }
  // residual Adds: both inputs through Q/DQ (an input the layers above already quantize shares their Q: same tensor,
  // same scale), calibrated like any activation
  const addNodes: Node[] = [];
  for (const add of residual.adds) {
    const [a, b] = add.inputs.map((i) => acts.get(i));
    if (!a || !b || !a.float || !b.float) {
      skipped.push({ node: add.name, reason: 'input not float32 (integer arithmetic)' });
      continue;
    }
    const names = [...add.inputs];
    insertActivationQdq(g, namer, add, 0, a.scale, a.dtype, cache, a.zeroPoint);
    insertActivationQdq(g, namer, add, 1, b.scale, b.dtype, cache, b.zeroPoint);
    addNodes.push(add);
    layers.push({
      node: add.name, opType: 'Add', weightDtype: '', activation: actReportOf(names[0], a), activation2: actReportOf(names[1], b), cosine: NaN, relativeError: NaN,
    });
  }
  // a Q an Add shares may sit before a layer that runs after the Add: files must list nodes in topological order
  if (addNodes.length) g.nodes = topoSort(g, () => true);
  dropUnusedInitializers(g);
  raiseOpset(out, MIN_OPSET[mode]);
  // the executor caches its schedule per graph object: hand on a fresh one now that the nodes changed
  out.graph = { ...g };
  out.opsets = new Map(out.opsets);
  const outputs = evaluate(model, out, [...plans.map((p) => p.target.node), ...addNodes], evalFeeds, batch, layers);
  return {
    model: out,
    report: { mode, calibrator: o.calibrator ?? 'max', opset: out.opsets.get('') ?? 0, calibrationSamples: samplesIn(calib), evalSamples: samplesIn(evalFeeds), evalSource, layers, skipped, batchNormsFolded, outputs, warnings },
  };
}

/** Running sums for cosine similarity, relative error and max abs error between a reference and a test tensor. */
class Agreement {
  dot = 0; ra = 0; rb = 0; err = 0; maxAbs = 0; amax = 0; top1 = 0; rows = 0;
  add(a: TensorData, b: TensorData): void {
    const x = a.toFloat64(), y = b.toFloat64();
    for (let i = 0; i < x.length; i++) {
      this.dot += x[i] * y[i]; this.ra += x[i] * x[i]; this.rb += y[i] * y[i];
      const d = Math.abs(x[i] - y[i]);
      this.err += d * d;
      if (d > this.maxAbs) this.maxAbs = d;
      if (Math.abs(x[i]) > this.amax) this.amax = Math.abs(x[i]);
    }
    if (a.rank === 2 && a.dims[1] > 1) {
      const c = a.dims[1];
      for (let r = 0; r < a.dims[0]; r++) {
        this.rows++;
        if (argmax(x, r * c, c) === argmax(y, r * c, c)) this.top1++;
      }
    }
  }

  get cosine(): number {
    return this.ra === 0 && this.rb === 0 ? 1 : this.dot / Math.sqrt(this.ra * this.rb || 1e-300);
  }

  get relative(): number {
    return Math.sqrt(this.err / (this.ra || 1e-300));
  }
}

function argmax(v: Float64Array, off: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (v[off + i] > v[off + best]) best = i;
  return best;
}

function evaluate(ref: Model, quant: Model, nodes: Node[], feeds: Feeds, batch: number, layers: LayerReport[]): OutputReport[] {
  const names = new Set([...nodes.map((n) => n.outputs[0]), ...ref.graph.outputs.map((x) => x.name)]);
  const agreements = new Map<string, Agreement>([...names].map((n) => [n, new Agreement()]));
  const refValues = new Map<string, TensorData>();
  const n = samplesIn(feeds);
  for (let start = 0; start < n; start += batch) {
    const part = sliceFeeds(feeds, start, Math.min(n, start + batch));
    refValues.clear();
    watch(ref, part, names, batch, (name, t) => refValues.set(name, t));
    watch(quant, part, names, batch, (name, t) => {
      const r = refValues.get(name);
      if (r && r.size === t.size) agreements.get(name)?.add(r, t);
    });
  }
  nodes.forEach((node, i) => {
    const a = agreements.get(node.outputs[0]) as Agreement;
    layers[i].cosine = a.cosine;
    layers[i].relativeError = a.relative;
  });
  return ref.graph.outputs.map((o) => {
    const a = agreements.get(o.name) as Agreement;
    return { name: o.name, cosine: a.cosine, maxAbsError: a.maxAbs, lsb: a.amax / 127, top1: a.rows ? a.top1 / a.rows : undefined };
  });
}

const fmt = (x: number, d = 4) => (Number.isFinite(x) ? (Math.abs(x) >= 1e-3 || x === 0 ? x.toFixed(d) : x.toExponential(2)) : String(x));

/** The report as text: one line per quantized layer, then the outputs. */
export function formatQuantizeReport(r: QuantizeReport): string {
  const lines = [
    `Quantized ${r.layers.length} layer${r.layers.length === 1 ? '' : 's'} to ${r.mode} (calibrator ${r.mode === 'int4' ? 'none (weight-only)' : r.calibrator}, opset ${r.opset}); ` +
      `calibration ${r.calibrationSamples} samples, evaluation on ${r.evalSamples} (${r.evalSource})`,
    '',
    'layer                                    op      w.scale min..max          act.amax   threshold  act.scale  clipped   cos(out)  rel.err',
  ];
  for (const l of r.layers) {
    const a = l.activation;
    const a2 = l.activation2;
    const extra = l.smoothAlpha !== undefined ? `  smooth α=${l.smoothAlpha}` : l.awqAlpha !== undefined ? `  awq α=${l.awqAlpha}`
      : a2 ? `  input 2: amax ${fmt(a2.amax)}, scale ${fmt(a2.scale, 5)}, clipped ${(a2.clipped * 100).toFixed(3)}%` : '';
    const ws = l.weightScale ? `${fmt(l.weightScale.min, 5)}..${fmt(l.weightScale.max, 5)}` : '-';
    lines.push(`${l.node.padEnd(40).slice(0, 40)} ${l.opType.padEnd(7)} ${ws.padEnd(25)} ` +
      `${(a ? fmt(a.amax) : '-').padStart(9)}  ${(a ? fmt(a.threshold) : '-').padStart(9)}  ${(a ? fmt(a.scale, 5) : '-').padStart(9)}  ` +
      `${(a ? `${(a.clipped * 100).toFixed(3)}%` : '-').padStart(7)}  ${fmt(l.cosine).padStart(8)}  ${fmt(l.relativeError).padStart(7)}${extra}`);
  }
  if (r.skipped.length) lines.push('', `not quantized: ${r.skipped.map((s) => `${s.node} (${s.reason})`).join(', ')}`);
  if (r.batchNormsFolded) lines.push('', `folded ${r.batchNormsFolded} BatchNormalization node${r.batchNormsFolded === 1 ? '' : 's'} into the layers before them`);
  lines.push('', 'output                         cosine     max|err|   int8 LSB   top-1');
  for (const o of r.outputs) {
    lines.push(`${o.name.padEnd(30).slice(0, 30)} ${fmt(o.cosine, 5).padStart(8)}  ${fmt(o.maxAbsError).padStart(9)}  ${fmt(o.lsb).padStart(9)}  ${o.top1 === undefined ? '-' : `${(o.top1 * 100).toFixed(1)}%`}`);
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

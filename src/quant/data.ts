// Calibration data: .npz/.npy files keyed by input name (or a folder of them), checked against the model's inputs,
// split into batches along axis 0; or seeded random data when the user asks for it.
import fs from 'node:fs';
import path from 'node:path';
import type { Graph, ValueInfo } from '../ir/graph.js';
import { seededRandom } from '../ir/builder.js';
import { isFloat } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { InputError } from '../ir/errors.js';
import { readTensorFile } from '../tools/npy.js';

/** One batch of model inputs, keyed by input name. */
export type Feeds = Map<string, TensorData>;

/** The graph inputs that need data (initializers listed as inputs have defaults). */
export function dataInputs(g: Graph): ValueInfo[] {
  return g.inputs.filter((i) => !g.initializers.has(i.name));
}

/** Read calibration arrays from a .npz, a .npy (single-input models or a file named after the input) or a folder. */
export function readCalibrationFiles(source: string, g: Graph): Record<string, TensorData>[] {
  if (!fs.existsSync(source)) {
    throw new InputError(`calibration data '${source}' does not exist.`, { hint: 'Pass a .npz/.npy file or a folder of them with --calibration-data.' });
  }
  const inputs = dataInputs(g);
  const oneFile = (file: string): Record<string, TensorData> => {
    if (file.endsWith('.npz')) return readTensorFile(file);
    const stem = path.basename(file, '.npy');
    const name = inputs.some((i) => i.name === stem) ? stem : inputs.length === 1 ? inputs[0].name : stem;
    return readTensorFile(file, name);
  };
  if (!fs.statSync(source).isDirectory()) return [oneFile(source)];
  const files = fs.readdirSync(source).filter((f) => f.endsWith('.npz') || f.endsWith('.npy')).sort();
  if (!files.length) throw new InputError(`calibration folder '${source}' holds no .npz or .npy files.`);
  const sets: Record<string, TensorData>[] = [];
  const merged: Record<string, TensorData> = {};
  for (const f of files) {
    const r = oneFile(path.join(source, f));
    // .npy files named after inputs form one set together; anything else is a set of its own
    if (f.endsWith('.npy') && inputs.length > 1) Object.assign(merged, r);
    else sets.push(r);
  }
  if (Object.keys(merged).length) sets.push(merged);
  return sets;
}

/** Check one set of arrays against the model inputs: every input present, dtype and fixed dims as declared. */
export function checkCalibrationSet(set: Record<string, TensorData>, g: Graph, where: string): Feeds {
  const feeds: Feeds = new Map();
  const missing = dataInputs(g).filter((i) => !(i.name in set)).map((i) => i.name);
  if (missing.length) {
    throw new InputError(`${where}: no data for model input${missing.length > 1 ? 's' : ''} ${missing.map((m) => `'${m}'`).join(', ')} (found: ${Object.keys(set).map((k) => `'${k}'`).join(', ') || 'nothing'}).`,
      { hint: 'Save the arrays keyed by input name, e.g. np.savez("calib.npz", **{"input": x}).' });
  }
  for (const info of dataInputs(g)) {
    const t = set[info.name];
    if (info.type.kind !== 'tensor') continue;
    if (t.dtype !== info.type.dtype) {
      throw new InputError(`${where}: input '${info.name}' is ${t.dtype}, but the model expects ${info.type.dtype}.`, { hint: `Convert the array with .astype before saving.` });
    }
    const shape = info.type.shape;
    // a fixed batch dim accepts any multiple of it: samples are run that many at a time
    const bad = shape && (shape.length !== t.rank || shape.some((d, k) => typeof d === 'number' && (k === 0 ? d <= 0 || t.dims[0] % d !== 0 : d !== t.dims[k])));
    if (bad) {
      throw new InputError(`${where}: input '${info.name}' has shape [${t.dims.join(', ')}], but the model expects [${shape.map((d) => d ?? '?').join(', ')}].`,
        { hint: 'Calibration arrays stack samples along axis 0 and must match every fixed dimension of the input.' });
    }
    feeds.set(info.name, t);
  }
  const n = [...feeds.values()].map((t) => t.dims[0]);
  if (n.some((x) => x !== n[0])) throw new InputError(`${where}: inputs hold different numbers of samples along axis 0 (${n.join(', ')}).`);
  return feeds;
}

/** Number of samples (axis 0) in a set of feeds. */
export const samplesIn = (f: Feeds): number => [...f.values()][0]?.dims[0] ?? 0;

/** Rows [start, end) of every input along axis 0. */
export function sliceFeeds(f: Feeds, start: number, end: number): Feeds {
  const out: Feeds = new Map();
  for (const [k, t] of f) {
    const row = t.size / (t.dims[0] || 1);
    const data = (t.data as Float32Array).slice(start * row, end * row);
    out.set(k, new TensorData(t.dtype, [end - start, ...t.dims.slice(1)], data));
  }
  return out;
}

/** Concatenate sets of feeds along axis 0. */
export function concatFeeds(sets: Feeds[]): Feeds {
  if (sets.length === 1) return sets[0];
  const out: Feeds = new Map();
  for (const k of sets[0].keys()) {
    const parts = sets.map((s) => s.get(k) as TensorData);
    const tail = parts[0].dims.slice(1);
    if (parts.some((p) => p.dims.slice(1).join() !== tail.join())) {
      throw new InputError(`calibration sets disagree on the shape of '${k}' beyond axis 0: ${parts.map((p) => `[${p.dims.join(', ')}]`).join(' vs ')}.`);
    }
    const n = parts.reduce((a, p) => a + p.dims[0], 0);
    const data = TensorData.zeros(parts[0].dtype, [n, ...tail]).data as Float32Array;
    let off = 0;
    for (const p of parts) { data.set(p.data as Float32Array, off); off += p.size; }
    out.set(k, new TensorData(parts[0].dtype, [n, ...tail], data));
  }
  return out;
}

/** Load, check and stack calibration data from a file or folder. */
export function loadCalibrationData(source: string, g: Graph): Feeds {
  return concatFeeds(readCalibrationFiles(source, g).map((s, i) => checkCalibrationSet(s, g, `${source}${i ? ` (set ${i + 1})` : ''}`)));
}

/** Images already preprocessed (e.g. by `--preprocess spec.json`) and stacked on axis 0: the model's one data input. */
export function imageCalibrationSet(images: TensorData, g: Graph, where: string): Feeds {
  const inputs = dataInputs(g);
  if (inputs.length !== 1) {
    throw new InputError(`${where}: preprocessed images feed a single input, but the model has ${inputs.length} (${inputs.map((i) => `'${i.name}'`).join(', ')}).`,
      { hint: 'For models with several inputs, save calibration arrays keyed by input name in a .npz instead.' });
  }
  try {
    return checkCalibrationSet({ [inputs[0].name]: images }, g, where);
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    throw new InputError(`${e.message.split('\nNote:')[0]}`, { hint: 'Make the pipeline spec produce what the model takes: resize/crop to its height and width, layout NCHW or NHWC, dtype as the input.' });
  }
}

/** Seeded random samples: floats in [-1, 1) (normal-ish), integers in [0, intHigh); symbolic dims other than axis 0 from `dims`. */
export function randomCalibrationData(g: Graph, samples: number, opts: { seed?: number; intHigh?: number; dims?: Record<string, number> } = {}): Feeds {
  const r = seededRandom(opts.seed ?? 1);
  const feeds: Feeds = new Map();
  for (const info of dataInputs(g)) {
    if (info.type.kind !== 'tensor' || !info.type.shape) throw new InputError(`input '${info.name}' has no tensor shape; random calibration data needs one.`);
    const { dtype, shape } = info.type;
    const dims = shape.map((d, k) => (k === 0 ? samples : typeof d === 'number' ? d : (opts.dims?.[String(d)] ?? 8)));
    const n = dims.reduce((a, b) => a * b, 1);
    const v = new Float64Array(n);
    // attention masks take 0/1; other integer inputs (token ids) small non-negative values
    const high = /mask/i.test(info.name) ? 2 : (opts.intHigh ?? 10);
    for (let i = 0; i < n; i++) v[i] = isFloat(dtype) ? (r() + r() + r() - 1.5) * 1.15 : dtype === 'bool' ? (r() < 0.5 ? 0 : 1) : Math.floor(r() * high);
    feeds.set(info.name, TensorData.fromNumbers(dtype, dims, v));
  }
  return feeds;
}

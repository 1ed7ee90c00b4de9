// Input data for run/bench/compare: from .npy/.npz files, or seeded random values shaped by the model's inputs
// (symbolic dims taken from --shapes, else 1).
import { seededRandom } from '../ir/builder.js';
import type { DType } from '../ir/dtype.js';
import { isFloat } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { InputError } from '../ir/errors.js';
import type { ValueMetadata } from '../runtime/session.js';
import { Tensor, fromTensorData } from '../runtime/tensor.js';
import { readTensorFile } from './npy.js';

/** Parse `name:1x3x224x224,other:4x128` into a map. */
export function parseShapes(spec: string | undefined): Map<string, number[]> {
  const out = new Map<string, number[]>();
  if (!spec) return out;
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const i = part.lastIndexOf(':');
    if (i <= 0) throw new InputError(`bad shape spec '${part}': expected name:DxDxD, e.g. input:1x3x224x224`);
    const dims = part.slice(i + 1).split('x').map(Number);
    if (dims.some((d) => !Number.isSafeInteger(d) || d < 0)) throw new InputError(`bad dimensions in '${part}': use non-negative integers separated by x`);
    out.set(part.slice(0, i), dims);
  }
  return out;
}

export function resolveShape(meta: ValueMetadata, shapes: Map<string, number[]>): number[] {
  const given = shapes.get(meta.name);
  if (given) {
    if (meta.shape.length && given.length !== meta.shape.length) {
      throw new InputError(`--shapes gives ${meta.name} rank ${given.length}, but the model declares [${meta.shape.join(', ')}]`);
    }
    meta.shape.forEach((d, i) => {
      if (typeof d === 'number' && d >= 0 && d !== given[i]) throw new InputError(`--shapes gives ${meta.name} dim ${i} = ${given[i]}, but the model fixes it to ${d}`);
    });
    return given;
  }
  return meta.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : 1));
}

export function randomTensor(dtype: DType, dims: number[], rand: () => number, range: [number, number] = [0, 1]): Tensor {
  const n = dims.reduce((a, b) => a * b, 1);
  const vals = new Float64Array(n);
  const [lo, hi] = range;
  for (let i = 0; i < n; i++) {
    const u = rand();
    vals[i] = dtype === 'bool' ? (u < 0.5 ? 0 : 1) : isFloat(dtype) ? lo + u * (hi - lo) : Math.floor(lo + u * Math.max(1, hi - lo));
  }
  if (dtype === 'string') return new Tensor('string', Array.from(vals, (v) => String(v)), dims);
  return fromTensorData(TensorData.fromNumbers(dtype, dims, vals));
}

export interface InputOptions {
  /** name=file.npy pairs, or a single .npz holding every input */
  files?: string[];
  random?: boolean;
  seed?: number;
  shapes?: string;
  /** Value range for random data; integers default to [0, 10). */
  range?: [number, number];
}

export function makeInputs(inputs: readonly ValueMetadata[], opts: InputOptions): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const f of opts.files ?? []) {
    const eq = f.indexOf('=');
    const loaded = eq > 0 ? readTensorFile(f.slice(eq + 1), f.slice(0, eq)) : readTensorFile(f, inputs[0]?.name);
    for (const [k, t] of Object.entries(loaded)) feeds[k] = fromTensorData(t);
  }
  const shapes = parseShapes(opts.shapes);
  const rand = seededRandom(opts.seed ?? 1);
  const missing = inputs.filter((i) => !(i.name in feeds));
  if (missing.length && !opts.random) {
    throw new InputError(`no data for input${missing.length > 1 ? 's' : ''} ${missing.map((m) => `'${m.name}'`).join(', ')}.`, {
      hint: 'Pass --input name=file.npy (or a .npz with all inputs), or --random for seeded random data.',
    });
  }
  for (const m of missing) {
    if (!m.isTensor) throw new InputError(`input '${m.name}' is ${m.type}; random data can only be made for tensors.`);
    const dtype = m.type as DType;
    const range = opts.range ?? (isFloat(dtype) ? [0, 1] : [0, 10]);
    feeds[m.name] = randomTensor(dtype, resolveShape(m, shapes), rand, range);
  }
  return feeds;
}

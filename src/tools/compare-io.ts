// Tensor files for compare/debug/inspect data: .npy (one tensor), .npz (many) and JSON
// ({ "name": { "dtype": "float32", "shape": [2, 3], "data": [...] } } or { "name": nested number arrays }).
import fs from 'node:fs';
import path from 'node:path';
import type { DType } from '../ir/dtype.js';
import { DTYPES } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { InputError } from '../ir/errors.js';
import { encodeNpz, readFile, readTensorFile } from './npy.js';

function nestedShape(v: unknown): number[] {
  const dims: number[] = [];
  let x = v;
  while (Array.isArray(x)) {
    dims.push(x.length);
    x = x[0];
  }
  return dims;
}

function fromJson(name: string, v: unknown, file: string): TensorData {
  const where = `${file}: tensor '${name}'`;
  if (typeof v === 'number') return TensorData.fromNumbers('float32', [], [v]);
  if (Array.isArray(v)) {
    const dims = nestedShape(v);
    const flat = (v as unknown[]).flat(Infinity);
    if (flat.some((x) => typeof x !== 'number') || flat.length !== dims.reduce((a, b) => a * b, 1)) {
      throw new InputError(`${where}: nested arrays must be rectangular and hold numbers.`);
    }
    return TensorData.fromNumbers('float32', dims, flat as number[]);
  }
  if (v && typeof v === 'object' && 'data' in v) {
    const o = v as { dtype?: string; shape?: number[]; dims?: number[]; data: unknown };
    const dtype = (o.dtype ?? 'float32') as DType;
    if (!(DTYPES as readonly string[]).includes(dtype)) throw new InputError(`${where}: unknown dtype '${o.dtype}'.`);
    const data = Array.isArray(o.data) ? (o.data as unknown[]).flat(Infinity) : [o.data];
    const dims = o.shape ?? o.dims ?? nestedShape(o.data);
    if (dtype === 'string') return TensorData.strings(dims, data.map(String));
    if (dtype === 'int64' || dtype === 'uint64') return TensorData.fromBigInts(dtype, dims, data.map((x) => BigInt(x as number | string)));
    return TensorData.fromNumbers(dtype, dims, data.map(Number));
  }
  throw new InputError(`${where}: expected a number, nested arrays, or { dtype, shape, data }.`);
}

/** Read every tensor in a .npy (named `name`), .npz or .json file. */
export function readTensors(file: string, name = 'x'): Record<string, TensorData> {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.npz' || ext === '.npy') return readTensorFile(file, name);
  if (ext === '.json') {
    const text = readFile(file).toString('utf8');
    let j: unknown;
    try {
      j = JSON.parse(text);
    } catch (e) {
      throw new InputError(`${file}: not valid JSON (${(e as Error).message}).`);
    }
    if (!j || typeof j !== 'object' || Array.isArray(j)) throw new InputError(`${file}: expected an object mapping tensor names to tensors.`);
    return Object.fromEntries(Object.entries(j).map(([k, v]) => [k, fromJson(k, v, file)]));
  }
  throw new InputError(`'${file}': unknown tensor file type '${ext}'.`, { hint: 'Use .npy, .npz or .json.' });
}

/** Write tensors as .npz (or .json when the file name ends in .json). */
export function writeTensors(file: string, tensors: Record<string, TensorData>): void {
  if (file.toLowerCase().endsWith('.json')) {
    const j = Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, {
      dtype: t.dtype, shape: t.dims, data: t.dtype === 'string' ? t.data : t.dtype === 'int64' || t.dtype === 'uint64' ? t.toBigInts().map(String) : Array.from(t.toFloat64()),
    }]));
    fs.writeFileSync(file, JSON.stringify(j));
    return;
  }
  fs.writeFileSync(file, encodeNpz(tensors));
}

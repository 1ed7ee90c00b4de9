// NumPy .npy / .npz reading and writing, so tensors move between Kiln and Python tooling unchanged.
// .npz is a zip of .npy files; fflate does the zip container (small, dependency-free, synchronous).
import fs from 'node:fs';
import { unzipSync, zipSync } from 'fflate';
import type { DType } from '../ir/dtype.js';
import { storageCtor } from '../ir/dtype.js';
import { TensorData, sizeOf } from '../ir/tensor.js';
import { InputError } from '../ir/errors.js';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

const DESCR: Partial<Record<DType, string>> = {
  float32: '<f4', float64: '<f8', float16: '<f2', int8: '|i1', uint8: '|u1', int16: '<i2', uint16: '<u2',
  int32: '<i4', uint32: '<u4', int64: '<i8', uint64: '<u8', bool: '|b1',
};
const FROM_DESCR: Record<string, DType> = Object.fromEntries(
  Object.entries(DESCR).flatMap(([d, s]) => [[s, d as DType], [s.replace('<', '='), d as DType], [s.replace('|', '<'), d as DType], [s.replace('|', '='), d as DType]]),
);

/** Types numpy has no dtype for are stored as their bit patterns (bfloat16 -> <u2, float8 -> |u1). */
export function npyDescrFor(t: DType): { descr: string; note?: string } {
  const d = DESCR[t];
  if (d) return { descr: d };
  if (t === 'bfloat16') return { descr: '<u2', note: 'bfloat16 saved as uint16 bit patterns' };
  if (t.startsWith('float8') || t === 'float4e2m1') return { descr: '|u1', note: `${t} saved as uint8 bit patterns` };
  if (t === 'int4' || t === 'int2') return { descr: '|i1', note: `${t} saved unpacked as int8` };
  if (t === 'uint4' || t === 'uint2') return { descr: '|u1', note: `${t} saved unpacked as uint8` };
  throw new InputError(`cannot save a ${t} tensor as .npy`);
}

export function encodeNpy(t: TensorData): Uint8Array {
  let descr: string;
  let body: Uint8Array;
  if (t.dtype === 'string') {
    const strs = t.data as string[];
    const width = Math.max(1, ...strs.map((s) => [...s].length));
    descr = `<U${width}`;
    const u32 = new Uint32Array(strs.length * width);
    strs.forEach((s, i) => [...s].forEach((ch, k) => (u32[i * width + k] = ch.codePointAt(0)!)));
    body = new Uint8Array(u32.buffer);
  } else {
    descr = npyDescrFor(t.dtype).descr;
    const a = t.data as ArrayBufferView;
    body = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  }
  const shape = t.dims.length === 1 ? `(${t.dims[0]},)` : `(${t.dims.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const out = new Uint8Array(10 + header.length + body.length);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(body, 10 + header.length);
  return out;
}

export function decodeNpy(bytes: Uint8Array, where = '.npy data'): TensorData {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) throw new InputError(`${where}: not a .npy file (bad magic).`);
  const major = bytes[6];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const hstart = major === 1 ? 10 : 12;
  if (hstart + hlen > bytes.length) throw new InputError(`${where}: truncated .npy header.`);
  const header = new TextDecoder().decode(bytes.subarray(hstart, hstart + hlen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || shapeText === undefined) throw new InputError(`${where}: cannot parse .npy header ${header.trim()}`);
  if (fortran) throw new InputError(`${where}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray.`);
  const dims = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (dims.some((d) => !Number.isSafeInteger(d) || d < 0)) throw new InputError(`${where}: invalid shape (${shapeText}).`);
  const n = sizeOf(dims);
  const body = bytes.subarray(hstart + hlen);
  const str = /^[<|=]U(\d+)$/.exec(descr);
  if (str) {
    const w = Number(str[1]);
    if (body.length < n * w * 4) throw new InputError(`${where}: truncated data.`);
    const copy = new Uint32Array(new Uint8Array(body.subarray(0, n * w * 4)).buffer);
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      let s = '';
      for (let k = 0; k < w && copy[i * w + k]; k++) s += String.fromCodePoint(copy[i * w + k]);
      out.push(s);
    }
    return new TensorData('string', dims, out);
  }
  const dtype = FROM_DESCR[descr];
  if (!dtype) throw new InputError(`${where}: numpy dtype '${descr}' is not supported (supported: ${Object.values(DESCR).join(', ')}, <U strings).`);
  const Ctor = storageCtor(dtype) as unknown as { new (b: ArrayBuffer): ArrayBufferView & ArrayLike<number>; BYTES_PER_ELEMENT: number };
  const need = n * Ctor.BYTES_PER_ELEMENT;
  if (body.length < need) throw new InputError(`${where}: has ${body.length} bytes of data, shape (${dims.join(', ')}) of ${descr} needs ${need}.`);
  const copy = new Uint8Array(body.subarray(0, need)); // aligned copy
  return new TensorData(dtype, dims, new Ctor(copy.buffer) as unknown as TensorData['data']);
}

export function encodeNpz(tensors: Record<string, TensorData>): Uint8Array {
  const files: Record<string, Uint8Array> = {};
  for (const [k, t] of Object.entries(tensors)) files[`${k}.npy`] = encodeNpy(t);
  return zipSync(files, { level: 0 });
}

export function decodeNpz(bytes: Uint8Array, where = '.npz data'): Record<string, TensorData> {
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(bytes);
  } catch (e) {
    throw new InputError(`${where}: not a valid .npz (zip) file: ${(e as Error).message}`);
  }
  const out: Record<string, TensorData> = {};
  for (const [name, data] of Object.entries(files)) out[name.replace(/\.npy$/, '')] = decodeNpy(data, `${where}:${name}`);
  return out;
}

/** A file's bytes, with an InputError naming the file when it cannot be read. */
export function readFile(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new InputError(`cannot read '${file}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Read .npy (one tensor, named by `name`) or .npz (all arrays). */
export function readTensorFile(path: string, name = 'x'): Record<string, TensorData> {
  const bytes = readFile(path);
  if (path.toLowerCase().endsWith('.npz')) return decodeNpz(bytes, path);
  return { [name]: decodeNpy(bytes, path) };
}

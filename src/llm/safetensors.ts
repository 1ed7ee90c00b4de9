// Our own safetensors reader: 8-byte little-endian header length, a JSON header {name: {dtype, shape,
// data_offsets}}, then the raw little-endian data. Sharded checkpoints list their files in *.safetensors.index.json.
import fs from 'node:fs';
import path from 'node:path';
import { ModelError } from '../ir/errors.js';
import { bfloat16ToFloat, float16ToFloat } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';

const BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };

/** Every tensor of one .safetensors file, converted to float32. */
export function readSafetensors(file: string): Map<string, TensorData> {
  const buf = fs.readFileSync(file);
  if (buf.length < 8) throw new ModelError(`${file}: too short for a safetensors file (${buf.length} bytes).`);
  const headerLen = Number(buf.readBigUInt64LE(0));
  if (headerLen > buf.length - 8) throw new ModelError(`${file}: header length ${headerLen} runs past the end of the file (${buf.length} bytes).`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8'));
  } catch (e) {
    throw new ModelError(`${file}: the safetensors header is not valid JSON.`, { cause: e });
  }
  const base = 8 + headerLen;
  const out = new Map<string, TensorData>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const width = BYTES[info.dtype];
    if (!width) throw new ModelError(`${file}: tensor '${name}' has dtype ${info.dtype}; Kiln reads F32, F16 and BF16.`);
    const [start, end] = info.data_offsets;
    const n = info.shape.reduce((a, b) => a * b, 1);
    if (end - start !== n * width || base + end > buf.length) {
      throw new ModelError(`${file}: tensor '${name}' ${info.dtype}[${info.shape.join(', ')}] needs ${n * width} bytes, its offsets give ${end - start} (file ${buf.length} bytes).`);
    }
    out.set(name, new TensorData('float32', info.shape, decode(buf, base + start, n, info.dtype)));
  }
  return out;
}

function decode(buf: Buffer, offset: number, n: number, dtype: string): Float32Array {
  const v = new Float32Array(n);
  if (dtype === 'F32') {
    for (let i = 0; i < n; i++) v[i] = buf.readFloatLE(offset + 4 * i);
    return v;
  }
  const f = dtype === 'F16' ? float16ToFloat : bfloat16ToFloat;
  for (let i = 0; i < n; i++) v[i] = f(buf.readUInt16LE(offset + 2 * i));
  return v;
}

/** All weights of a model folder: model.safetensors, or the shards its index names, or every *.safetensors. */
export function loadWeights(dir: string): Map<string, TensorData> {
  const index = path.join(dir, 'model.safetensors.index.json');
  let files: string[];
  if (fs.existsSync(index)) {
    const map = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map ?? {};
    files = [...new Set(Object.values(map))].map((f) => path.join(dir, f));
  } else {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort().map((f) => path.join(dir, f));
  }
  if (!files.length) throw new ModelError(`${dir}: no *.safetensors weights.`, { hint: 'Save the model with save_pretrained(..., safe_serialization=True).' });
  const all = new Map<string, TensorData>();
  for (const f of files) for (const [k, t] of readSafetensors(f)) all.set(k, t);
  return all;
}

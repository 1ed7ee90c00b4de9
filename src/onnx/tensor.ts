// TensorProto <-> TensorData, including external data and the typed payload fields.
import fs from 'node:fs';
import path from 'node:path';
import {
  type DType, type TypedArray, dtypeFromOnnx, onnxTypeCode, allocStorage, storageCtor, isSubByte, dtypeKind,
} from '../ir/dtype.js';
import { elementLimitNow, SequenceValue, TensorData, type Value } from '../ir/tensor.js';
import { packSubByte, packedByteLength, unpackSubByte } from '../ir/packing.js';
import { ModelError } from '../ir/errors.js';
import { DATA_KIND, pb, toBig, toNum } from './schema.js';

export type PbTensor = any;

export interface ExternalDataOptions {
  /** Folder that external data locations are resolved in, and confined to. */
  baseDir?: string;
  /** Model file, for error messages. */
  modelPath?: string;
}

const utf8 = new TextDecoder();
const utf8enc = new TextEncoder();

function checkedDims(t: PbTensor, where: string): number[] {
  const dims = (t.dims ?? []).map(toNum);
  let n = 1;
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw new ModelError(`${where}: tensor '${t.name ?? ''}' has invalid dimension ${d}.`);
    n *= d;
  }
  const limit = elementLimitNow();
  if (n > limit) throw new ModelError(`${where}: tensor '${t.name ?? ''}' declares ${n} elements, over Kiln's limit of ${limit}.`);
  return dims;
}

/** Decode a TensorProto. `where` names the place (file, initializer, attribute) for error messages. */
export function tensorFromProto(t: PbTensor, where: string, ext: ExternalDataOptions = {}): TensorData {
  const code = t.data_type ?? 0;
  if (!code) throw new ModelError(`${where}: tensor '${t.name ?? ''}' has no element type (data_type is 0).`);
  let dtype: DType;
  try {
    dtype = dtypeFromOnnx(code);
  } catch (e) {
    throw new ModelError(`${where}: tensor '${t.name ?? ''}': ${(e as Error).message}`);
  }
  const dims = checkedDims(t, where);
  const n = dims.reduce((a, b) => a * b, 1);
  if (t.segment) throw new ModelError(`${where}: tensor '${t.name ?? ''}' is segmented; segmented tensors are not supported.`);

  if (toNum(t.data_location) === 1) {
    const bytes = readExternal(t, where, ext, dtype, n);
    return new TensorData(dtype, dims, bytesToStorage(dtype, bytes, n, where, t.name));
  }
  if (dtype === 'string') {
    const s: Uint8Array[] = t.string_data ?? [];
    if (s.length !== n) throw new ModelError(`${where}: string tensor '${t.name ?? ''}' has ${s.length} values for ${n} elements.`);
    return new TensorData('string', dims, s.map((b) => utf8.decode(b)));
  }
  const raw: Uint8Array | undefined = t.raw_data;
  if (raw && raw.length > 0) return new TensorData(dtype, dims, bytesToStorage(dtype, raw, n, where, t.name));
  return new TensorData(dtype, dims, typedFieldsToStorage(t, dtype, n, where));
}

function bytesToStorage(dtype: DType, bytes: Uint8Array, n: number, where: string, name?: string) {
  const kind = dtypeKind(dtype);
  const expected = isSubByte(dtype) ? packedByteLength(dtype, n) : (n * (kind === 'complex' ? 2 : 1) * (storageCtor(dtype) as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT);
  if (bytes.length !== expected) {
    throw new ModelError(`${where}: tensor '${name ?? ''}' of type ${dtype} with ${n} elements needs ${expected} bytes of data, found ${bytes.length}.`);
  }
  if (isSubByte(dtype)) return unpackSubByte(dtype, bytes, n);
  const Ctor = storageCtor(dtype) as { new (b: ArrayBufferLike, o: number, l: number): TypedArray; BYTES_PER_ELEMENT: number; new (n: number): TypedArray };
  const len = kind === 'complex' ? 2 * n : n;
  if (bytes.byteOffset % Ctor.BYTES_PER_ELEMENT === 0) return new Ctor(bytes.buffer, bytes.byteOffset, len); // zero-copy view
  const copy = new Uint8Array(bytes); // unaligned: one copy into a fresh buffer
  return new Ctor(copy.buffer, 0, len);
}

function typedFieldsToStorage(t: PbTensor, dtype: DType, n: number, where: string) {
  const out = allocStorage(dtype, n) as TypedArray;
  const want = dtypeKind(dtype) === 'complex' ? 2 * n : n;
  const fill = (src: ArrayLike<unknown> | undefined, conv: (v: any) => any, field: string, per = 1) => {
    const got = (src?.length ?? 0) * per;
    if (got < want || got - want >= per) {
      throw new ModelError(`${where}: tensor '${t.name ?? ''}' of type ${dtype} has ${src?.length ?? 0} values in ${field} for ${n} elements.`);
    }
    for (let i = 0; i < want; i++) (out as any)[i] = conv(src![i]);
  };
  switch (dtype) {
    case 'float32': case 'complex64': fill(t.float_data, Number, 'float_data'); break;
    case 'float64': case 'complex128': fill(t.double_data, Number, 'double_data'); break;
    case 'int64': fill(t.int64_data, (v) => toBig(v), 'int64_data'); break;
    case 'uint64': fill(t.uint64_data, (v) => toBig(v, true), 'uint64_data'); break;
    case 'uint32': fill(t.uint64_data, toNum, 'uint64_data'); break;
    case 'int4': case 'uint4': case 'float4e2m1': case 'int2': case 'uint2': {
      const words: number[] = (t.int32_data ?? []).map(toNum);
      const bytes = Uint8Array.from(words.map((w) => w & 0xff));
      if (bytes.length !== packedByteLength(dtype, n)) {
        throw new ModelError(`${where}: tensor '${t.name ?? ''}' of type ${dtype} has ${bytes.length} packed values in int32_data for ${n} elements.`);
      }
      return unpackSubByte(dtype, bytes, n);
    }
    default: fill(t.int32_data, (v) => toNum(v), 'int32_data'); // int8..int32, uint8/16, bool, float16/bf16/float8 bits
  }
  return out;
}

function readExternal(t: PbTensor, where: string, ext: ExternalDataOptions, dtype: DType, n: number): Uint8Array {
  const info: Record<string, string> = {};
  for (const e of t.external_data ?? []) info[e.key] = e.value;
  const loc = info.location;
  const name = t.name ?? '';
  if (!loc) throw new ModelError(`${where}: tensor '${name}' is stored externally but has no 'location'.`);
  if (!ext.baseDir) {
    throw new ModelError(`${where}: tensor '${name}' refers to external file '${loc}', but the model was loaded from bytes.`, {
      hint: 'Load the model from its file path so external data can be found next to it.',
    });
  }
  if (path.isAbsolute(loc) || loc.split(/[\\/]/).includes('..')) {
    throw new ModelError(`${where}: tensor '${name}' has external data location '${loc}', which points outside the model's folder ${ext.baseDir}.`, {
      hint: 'External data must be a relative path inside the model folder; refusing to read it.',
    });
  }
  const base = fs.realpathSync(ext.baseDir);
  const file = path.resolve(base, loc);
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch {
    throw new ModelError(`${where}: external data file '${loc}' for tensor '${name}' was not found in ${base}.`);
  }
  if (!real.startsWith(base + path.sep)) {
    throw new ModelError(`${where}: external data '${loc}' for tensor '${name}' resolves outside the model folder (${real}).`);
  }
  const offset = info.offset ? Number(info.offset) : 0;
  const size = fs.statSync(real).size;
  const need = isSubByte(dtype) ? packedByteLength(dtype, n) : n * (dtypeKind(dtype) === 'complex' ? 2 : 1) * ((storageCtor(dtype) as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1);
  const length = info.length ? Number(info.length) : size - offset;
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || offset + length > size) {
    throw new ModelError(`${where}: external data for tensor '${name}' asks for bytes ${offset}..${offset + length} of '${loc}', which has ${size} bytes.`);
  }
  if (length !== need) throw new ModelError(`${where}: external data for tensor '${name}' has ${length} bytes; type ${dtype} with ${n} elements needs ${need}.`);
  // Read straight into an 8-byte-aligned buffer so the typed-array view needs no second copy.
  const buf = new Uint8Array(new ArrayBuffer(Math.ceil(length / 8) * 8), 0, length);
  const fd = fs.openSync(real, 'r');
  try {
    let done = 0;
    while (done < length) {
      const r = fs.readSync(fd, buf, done, length - done, offset + done);
      if (r <= 0) throw new ModelError(`${where}: external data file '${loc}' ended early.`);
      done += r;
    }
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

/** Encode a TensorData as a TensorProto object (raw_data for everything but strings). */
export function tensorToProto(t: TensorData, name = ''): PbTensor {
  const msg: PbTensor = { name, data_type: onnxTypeCode(t.dtype), dims: [...t.dims] };
  if (t.dtype === 'string') msg.string_data = (t.data as string[]).map((s) => utf8enc.encode(s));
  else if (isSubByte(t.dtype)) msg.raw_data = packSubByte(t.dtype, t.data as ArrayLike<number>);
  else {
    const a = t.data as TypedArray;
    msg.raw_data = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  }
  return msg;
}

export function encodeTensor(t: TensorData, name = ''): Uint8Array {
  return pb.TensorProto.encode(pb.TensorProto.fromObject(tensorToProto(t, name))).finish();
}

/** Decode a serialized TensorProto (.pb file). */
export function decodeTensor(bytes: Uint8Array, where = 'tensor'): TensorData {
  return tensorFromProto(decodeMessage(pb.TensorProto, bytes, where), where);
}

function decodeMessage(type: typeof pb.TensorProto, bytes: Uint8Array, where: string): any {
  try {
    return type.decode(bytes);
  } catch (e) {
    throw new ModelError(`${where}: not a valid ${type.name} (${(e as Error).message}).`);
  }
}

/** Decode a SequenceProto / OptionalProto into a Kiln Value. */
export function decodeSequence(bytes: Uint8Array, where = 'sequence'): Value {
  return sequenceFromProto(decodeMessage(pb.SequenceProto, bytes, where), where);
}

export function decodeOptional(bytes: Uint8Array, where = 'optional'): Value {
  return optionalFromProto(decodeMessage(pb.OptionalProto, bytes, where), where);
}

function sequenceFromProto(s: any, where: string): SequenceValue {
  const kind = toNum(s.elem_type);
  if (kind === DATA_KIND.tensor || (s.tensor_values?.length ?? 0) > 0) {
    const items = (s.tensor_values ?? []).map((t: PbTensor, i: number) => tensorFromProto(t, `${where}[${i}]`));
    return new SequenceValue(items, items[0]?.dtype);
  }
  if (kind === DATA_KIND.undefined) return new SequenceValue([]);
  throw new ModelError(`${where}: sequences of ${kind === DATA_KIND.sequence ? 'sequences' : 'maps/sparse tensors'} are not supported.`);
}

function optionalFromProto(o: any, where: string): Value {
  const kind = toNum(o.elem_type);
  if (kind === DATA_KIND.tensor && o.tensor_value) return tensorFromProto(o.tensor_value, where);
  if (kind === DATA_KIND.sequence && o.sequence_value) return sequenceFromProto(o.sequence_value, where);
  if (kind === DATA_KIND.optional && o.optional_value) return optionalFromProto(o.optional_value, where);
  return null;
}

export function encodeSequence(v: SequenceValue, name = ''): Uint8Array {
  const msg = { name, elem_type: DATA_KIND.tensor, tensor_values: v.items.map((t) => tensorToProto(t)) };
  return pb.SequenceProto.encode(pb.SequenceProto.fromObject(msg)).finish();
}

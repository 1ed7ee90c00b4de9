// The public Tensor: onnxruntime's JavaScript Tensor surface (type, data, dims, size), plus the newer ONNX types.
import { type DType, DTYPES, isSubByte, storageCtor } from '../ir/dtype.js';
import { TensorData, SequenceValue, type Value, sizeOf } from '../ir/tensor.js';
import { packSubByte, packedByteLength, unpackSubByte } from '../ir/packing.js';
import { InputError } from '../ir/errors.js';

export type TensorType = Exclude<DType, 'complex64' | 'complex128'>;

/** The data array of each tensor type, as onnxruntime-web/node use them (sub-byte types packed, low bits first). */
export interface DataTypeMap {
  float32: Float32Array; float64: Float64Array; float16: Uint16Array; bfloat16: Uint16Array;
  int8: Int8Array; uint8: Uint8Array; int16: Int16Array; uint16: Uint16Array; int32: Int32Array; uint32: Uint32Array;
  int64: BigInt64Array; uint64: BigUint64Array; bool: Uint8Array; string: string[];
  float8e4m3fn: Uint8Array; float8e4m3fnuz: Uint8Array; float8e5m2: Uint8Array; float8e5m2fnuz: Uint8Array;
  float8e8m0: Uint8Array; float4e2m1: Uint8Array; int4: Uint8Array; uint4: Uint8Array; int2: Uint8Array; uint2: Uint8Array;
}
export type TensorDataOf<T extends TensorType> = DataTypeMap[T];

const TYPED_TO_TYPE: [new (...a: never[]) => unknown, TensorType][] = [
  [Float32Array, 'float32'], [Float64Array, 'float64'], [Int8Array, 'int8'], [Uint8Array, 'uint8'],
  [Int16Array, 'int16'], [Uint16Array, 'uint16'], [Int32Array, 'int32'], [Uint32Array, 'uint32'],
  [BigInt64Array, 'int64'], [BigUint64Array, 'uint64'],
];

export class Tensor<T extends TensorType = TensorType> {
  readonly type: T;
  readonly data: DataTypeMap[T];
  readonly dims: readonly number[];
  readonly size: number;

  /**
   * `new Tensor('float32', data, [1, 3, 224, 224])`, or `new Tensor(float32Array, dims)` with the type taken from
   * the array. `data` may also be a plain number/bigint/boolean array, converted to the type's array.
   */
  constructor(type: T, data: DataTypeMap[T] | readonly number[] | readonly bigint[] | readonly boolean[], dims?: readonly number[]);
  constructor(data: DataTypeMap[T], dims?: readonly number[]);
  constructor(a: unknown, b?: unknown, c?: unknown) {
    let type: TensorType, data: unknown, dims: readonly number[] | undefined;
    if (typeof a === 'string') {
      type = a as TensorType;
      data = b;
      dims = c as readonly number[] | undefined;
    } else {
      data = a;
      dims = b as readonly number[] | undefined;
      if (Array.isArray(a) && a.every((x) => typeof x === 'string')) type = 'string';
      else {
        const hit = TYPED_TO_TYPE.find(([C]) => a instanceof C);
        if (!hit) throw new InputError('new Tensor(data, dims): cannot tell the element type of data; pass the type first, e.g. new Tensor(\'float32\', data, dims).');
        type = hit[1];
      }
    }
    if (!(DTYPES as readonly string[]).includes(type) || (type as string).startsWith('complex')) {
      throw new InputError(`new Tensor: unknown type '${type}'. Known types: ${DTYPES.filter((d) => !d.startsWith('complex')).join(', ')}.`);
    }
    const arr = coerceData(type, data);
    const n = isSubByte(type) ? undefined : arr.length;
    dims ??= [n ?? arr.length * (8 / (type.endsWith('2') ? 2 : 4))];
    for (const d of dims) {
      if (!Number.isSafeInteger(d) || d < 0) throw new InputError(`new Tensor: invalid dimension ${d} in [${dims.join(', ')}]; dims must be non-negative integers.`);
    }
    const size = sizeOf(dims);
    const expectLen = isSubByte(type) ? packedByteLength(type, size) : size;
    if (arr.length !== expectLen) {
      throw new InputError(`new Tensor: a ${type} tensor of shape [${dims.join(', ')}] needs ${expectLen} ${isSubByte(type) ? 'packed bytes' : 'elements'}, but data has ${arr.length}.`);
    }
    this.type = type as T;
    this.data = arr as DataTypeMap[T];
    this.dims = Object.freeze([...dims]);
    this.size = size;
  }

  /** A tensor with new dims and the same data. */
  reshape(dims: readonly number[]): Tensor<T> {
    return new Tensor(this.type, this.data, dims);
  }

  /** Data as a plain array of numbers (decoding nothing: float16 stays bit patterns). */
  getData(): DataTypeMap[T] {
    return this.data;
  }

  dispose(): void {}

  toString(): string {
    return `Tensor<${this.type}>[${this.dims.join(',')}]`;
  }
}

function coerceData(type: TensorType, data: unknown): ArrayLike<unknown> {
  if (type === 'string') {
    if (!Array.isArray(data) || !data.every((x) => typeof x === 'string')) throw new InputError('new Tensor: a string tensor needs a string[] as data.');
    return data;
  }
  const want = isSubByte(type) ? Uint8Array : (storageCtor(type) as unknown as new (x: ArrayLike<unknown>) => ArrayLike<unknown>);
  if (data instanceof (want as unknown as typeof Uint8Array)) return data as ArrayLike<unknown>;
  if (Array.isArray(data)) {
    if (type === 'int64' || type === 'uint64') return new (want as typeof BigInt64Array)(data.map((x) => BigInt(x)));
    return new (want as typeof Float32Array)(data.map((x) => Number(x)));
  }
  throw new InputError(`new Tensor: data for type '${type}' must be a ${(want as { name: string }).name} (or a plain array), got ${Object.prototype.toString.call(data).slice(8, -1)}.`);
}

/** Public Tensor -> internal TensorData (unpacks sub-byte types; shares the buffer otherwise). */
export function toTensorData(t: Tensor): TensorData {
  if (isSubByte(t.type)) return new TensorData(t.type, t.dims, unpackSubByte(t.type, t.data as Uint8Array, t.size));
  return new TensorData(t.type, t.dims, t.data as TensorData['data']);
}

/** Internal TensorData -> public Tensor. */
export function fromTensorData(t: TensorData): Tensor {
  if (t.dtype === 'complex64' || t.dtype === 'complex128') throw new InputError(`complex tensors cannot be returned through the Tensor API`);
  if (isSubByte(t.dtype)) return new Tensor(t.dtype, packSubByte(t.dtype, t.data as ArrayLike<number>) as never, t.dims);
  return new Tensor(t.dtype as TensorType, t.data as never, t.dims);
}

/** A value in the public API: a Tensor, a sequence (array of Tensors), or null for an empty optional. */
export type OnnxValue = Tensor | Tensor[] | null;

export function toValue(v: OnnxValue): Value {
  if (v === null) return null;
  if (Array.isArray(v)) return new SequenceValue(v.map(toTensorData), v[0]?.type);
  return toTensorData(v);
}

export function fromValue(v: Value): OnnxValue {
  if (v === null) return null;
  if (v instanceof SequenceValue) return v.items.map(fromTensorData);
  return fromTensorData(v);
}

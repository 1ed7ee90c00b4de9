import {
  type DType, type TensorStorage, type TypedArray, allocStorage, decodeElement, encodeElement, isBig,
  isEncodedFloat, dtypeKind,
} from './dtype.js';

/** Upper bound on elements of one tensor Kiln will allocate (guards against absurd shapes in hostile models). */
export const MAX_ELEMENTS = 2 ** 31 - 1;
let elementLimit = MAX_ELEMENTS;

/** Lower the per-tensor allocation limit (e.g. a server protecting its memory, or the fuzz test). */
export function setElementLimit(n: number): void {
  elementLimit = Math.min(n, MAX_ELEMENTS);
}
export function elementLimitNow(): number {
  return elementLimit;
}

export function sizeOf(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`invalid dimension ${d} in shape [${dims.join(', ')}]`);
    n *= d;
  }
  return n;
}

/** Whether two shapes are the same (false where either is missing). */
export function sameDims(a: readonly number[] | null | undefined, b: readonly number[] | null | undefined): boolean {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function stridesOf(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  let acc = 1;
  for (let i = dims.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= dims[i];
  }
  return s;
}

/**
 * A dense tensor: element type, shape and one storage slot per element (see dtype.ts for the storage of each
 * type). Immutable by convention: kernels create new tensors instead of writing into their inputs.
 */
export class TensorData {
  readonly size: number;
  constructor(readonly dtype: DType, readonly dims: readonly number[], readonly data: TensorStorage) {
    this.size = sizeOf(dims);
    const expect = dtypeKind(dtype) === 'complex' ? this.size * 2 : this.size;
    if (data.length !== expect) {
      throw new Error(`tensor of type ${dtype} and shape [${dims.join(', ')}] needs ${expect} elements, got ${data.length}`);
    }
  }

  get rank() {
    return this.dims.length;
  }

  static zeros(dtype: DType, dims: readonly number[]): TensorData {
    const n = sizeOf(dims);
    if (n > elementLimit) throw new Error(`refusing to allocate ${n} elements for shape [${dims.join(', ')}] (limit ${elementLimit})`);
    return new TensorData(dtype, dims, allocStorage(dtype, n));
  }

  /** Build from JS numbers, converting each to `dtype` (rounding/wrapping like a C cast). */
  static fromNumbers(dtype: DType, dims: readonly number[], values: ArrayLike<number>): TensorData {
    const t = TensorData.zeros(dtype, dims);
    if (values.length !== t.size) throw new Error(`fromNumbers: ${values.length} values for shape [${dims.join(', ')}]`);
    const d = t.data as TypedArray;
    if (dtype === 'float32' || dtype === 'float64') (d as Float32Array).set(values);
    else for (let i = 0; i < values.length; i++) (d as unknown as (number | bigint)[])[i] = encodeElement(dtype, values[i]);
    return t;
  }

  static fromBigInts(dtype: 'int64' | 'uint64', dims: readonly number[], values: ArrayLike<bigint>): TensorData {
    const t = TensorData.zeros(dtype, dims);
    (t.data as BigInt64Array).set(Array.from(values).map((v) => (dtype === 'int64' ? BigInt.asIntN(64, v) : BigInt.asUintN(64, v))));
    return t;
  }

  static scalar(dtype: DType, value: number): TensorData {
    return TensorData.fromNumbers(dtype, [], [value]);
  }

  static strings(dims: readonly number[], values: string[]): TensorData {
    return new TensorData('string', dims, values);
  }

  /** Element i as a JS number (float16 etc. decoded, int64 converted). */
  get(i: number): number {
    return decodeElement(this.dtype, this.data, i);
  }

  /** All elements as float64 numbers; a zero-copy view is returned for float64 tensors. */
  toFloat64(): Float64Array {
    if (this.dtype === 'float64') return this.data as Float64Array;
    const out = new Float64Array(this.size);
    if (this.dtype === 'string') throw new Error('cannot convert a string tensor to numbers');
    if (!isEncodedFloat(this.dtype) && !isBig(this.dtype)) {
      out.set(this.data as ArrayLike<number>);
      return out;
    }
    for (let i = 0; i < out.length; i++) out[i] = decodeElement(this.dtype, this.data, i);
    return out;
  }

  /** Elements as plain numbers (for small index/shape tensors such as Reshape's shape input). */
  toNumberArray(): number[] {
    return Array.from(this.toFloat64());
  }

  /** Elements as bigints (exact for int64/uint64). */
  toBigInts(): bigint[] {
    if (isBig(this.dtype)) return Array.from(this.data as BigInt64Array);
    return this.toNumberArray().map((x) => BigInt(Math.trunc(x)));
  }

  reshape(dims: readonly number[]): TensorData {
    return new TensorData(this.dtype, dims, this.data);
  }

  toString(): string {
    return `Tensor<${this.dtype}>[${this.dims.join(',')}]`;
  }
}

/** A sequence value (ONNX seq(tensor)): a list of tensors of one element type. */
export class SequenceValue {
  constructor(readonly items: TensorData[], readonly elemType?: DType) {}
}

/**
 * Any value that flows along a graph edge: a tensor, a sequence, or `null` for an empty optional. A present
 * optional is represented by the value it holds.
 */
export type Value = TensorData | SequenceValue | null;

export function describeValue(v: Value | undefined): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'an empty optional';
  if (v instanceof SequenceValue) return `a sequence of ${v.items.length} tensors`;
  return `a ${v.dtype} tensor of shape [${v.dims.join(', ')}]`;
}

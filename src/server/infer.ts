// The protocol-neutral inference path shared by HTTP and gRPC: check a KServe v2 request against the model's
// config, turn it into Tensors, queue it on the batcher, and record metrics and statistics.
import { Tensor, type TensorType } from '../index.js';
import { ServeError, type SubmitOptions } from './batcher.js';
import { BytesTensor, type ServeTensor } from './model.js';
import { kilnFromKserve, kserveFromConfigType, type ModelConfig } from './config.js';
import type { Metrics } from './metrics.js';
import type { ModelRepository } from './repository.js';

export interface InferInput {
  name: string;
  datatype: string;
  shape: number[];
  /** JSON data (flat or nested) or typed contents. */
  data?: unknown;
  /** Raw little-endian bytes (binary extension or gRPC raw_input_contents); BYTES: 4-byte length + bytes each. */
  raw?: Uint8Array;
}

export interface InferRequest {
  id?: string;
  parameters?: Record<string, unknown>;
  inputs: InferInput[];
  outputs?: { name: string; parameters?: Record<string, unknown> }[];
}

export interface InferOutput {
  name: string;
  datatype: string;
  shape: number[];
  tensor: ServeTensor;
}

export interface InferResponse {
  model_name: string;
  model_version: string;
  id?: string;
  outputs: InferOutput[];
}

const BYTES_PER: Record<string, number> = { BOOL: 1, UINT8: 1, INT8: 1, UINT16: 2, INT16: 2, FP16: 2, BF16: 2, UINT32: 4, INT32: 4, FP32: 4, UINT64: 8, INT64: 8, FP64: 8 };

/** A request checked against its model's config: the tensors to queue, the outputs wanted, scheduling options. */
export interface DecodedRequest {
  id?: string;
  feeds: Record<string, ServeTensor>;
  batch: number;
  outputs: string[];
  submit: SubmitOptions;
}

/** Check a request against the model's config and turn its inputs into tensors (400 ServeErrors say what is wrong). */
export function decodeRequest(cfg: ModelConfig, req: InferRequest): DecodedRequest {
  const { feeds, batch } = toFeeds(cfg, req);
  const outputs = requestedOutputs(cfg, req);
  return { ...(req.id !== undefined ? { id: req.id } : {}), feeds, batch, outputs, submit: submitOptions(req.parameters) };
}

export function infer(repo: ModelRepository, metrics: Metrics, modelName: string, version: string | undefined, req: InferRequest): Promise<InferResponse> {
  return inferWith(repo, metrics, modelName, version, (cfg) => decodeRequest(cfg, req));
}

/** Run a request whose decoding (maybe on another thread) needs the model's config first; failures are recorded. */
export async function inferWith(
  repo: ModelRepository, metrics: Metrics, modelName: string, version: string | undefined,
  decode: (cfg: ModelConfig) => DecodedRequest | Promise<DecodedRequest>,
): Promise<InferResponse> {
  const t0 = performance.now();
  let label = version ?? '';
  let stats;
  try {
    const { model, v } = repo.get(modelName, version);
    label = String(v.version);
    stats = v.stats;
    const cfg = model.config!;
    const d = await decode(cfg);
    const r = await v.run(d.feeds, d.outputs, d.batch, d.submit);
    metrics.recordSuccess(modelName, label, v.stats, { requestNs: Math.round((performance.now() - t0) * 1e6), ...r });
    return {
      model_name: modelName,
      model_version: label,
      ...(d.id !== undefined ? { id: d.id } : {}),
      outputs: d.outputs.map((n) => {
        const t = r.outputs[n];
        return { name: n, datatype: kserveFromConfigType(cfg.output.find((o) => o.name === n)!.data_type), shape: [...t.dims], tensor: t };
      }),
    };
  } catch (e) {
    const reason = e instanceof ServeError ? e.reason : 'BACKEND';
    metrics.recordFailure(modelName, label, stats, reason, Math.round((performance.now() - t0) * 1e6));
    throw e;
  }
}

/** Triton's request parameters `priority` (level, 1 = highest) and `timeout` (microseconds). */
function submitOptions(p: Record<string, unknown> | undefined): SubmitOptions {
  const int = (name: string): number | undefined => {
    const v = p?.[name];
    if (v === undefined || v === null) return undefined;
    const n = typeof v === 'string' && /^[0-9]+$/.test(v) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) throw new ServeError(`request parameter '${name}' must be a non-negative integer, got ${JSON.stringify(v)}.`, 400);
    return n;
  };
  return { priority: int('priority'), timeoutUs: int('timeout') };
}

function requestedOutputs(cfg: ModelConfig, req: InferRequest): string[] {
  if (!req.outputs || req.outputs.length === 0) return cfg.output.map((o) => o.name);
  for (const o of req.outputs) {
    if (!cfg.output.some((c) => c.name === o.name)) {
      throw new ServeError(`unknown output '${o.name}' for model '${cfg.name}'; outputs: ${cfg.output.map((c) => c.name).join(', ')}.`, 400);
    }
  }
  return req.outputs.map((o) => o.name);
}

function toFeeds(cfg: ModelConfig, req: InferRequest): { feeds: Record<string, ServeTensor>; batch: number } {
  if (!Array.isArray(req.inputs)) throw new ServeError(`the request needs an 'inputs' array.`, 400);
  const feeds: Record<string, ServeTensor> = {};
  let batch = 1;
  for (const inp of req.inputs) {
    const c = cfg.input.find((x) => x.name === inp.name);
    if (!c) throw new ServeError(`unknown input '${inp.name}' for model '${cfg.name}'; inputs: ${cfg.input.map((x) => x.name).join(', ')}.`, 400);
    if (feeds[inp.name]) throw new ServeError(`input '${inp.name}' is given twice.`, 400);
    const want = kserveFromConfigType(c.data_type);
    if (inp.datatype !== want) throw new ServeError(`input '${inp.name}' has datatype ${inp.datatype}, but model '${cfg.name}' expects ${want}.`, 400);
    const shape = checkShape(cfg, inp, c.dims);
    if (cfg.max_batch_size > 0) batch = shape[0];
    feeds[inp.name] = toTensor(inp, shape);
  }
  const missing = cfg.input.filter((c) => !feeds[c.name]).map((c) => c.name);
  if (missing.length) throw new ServeError(`missing input(s) ${missing.join(', ')} for model '${cfg.name}'.`, 400);
  if (cfg.max_batch_size > 0 && new Set(Object.values(feeds).map((t) => t.dims[0])).size > 1) {
    throw new ServeError(`inputs of model '${cfg.name}' disagree on the batch size (dim 0).`, 400);
  }
  return { feeds, batch };
}

function checkShape(cfg: ModelConfig, inp: InferInput, dims: number[]): number[] {
  const shape = inp.shape;
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new ServeError(`input '${inp.name}' needs a 'shape' of non-negative integers, got ${JSON.stringify(shape)}.`, 400);
  }
  const full = cfg.max_batch_size > 0 ? [-1, ...dims] : dims;
  const fmt = full.map((d) => (d < 0 ? '-1' : d)).join(',');
  const ok = shape.length === full.length && full.every((d, i) => d < 0 || d === shape[i]);
  if (!ok) throw new ServeError(`input '${inp.name}' has shape [${shape.join(',')}], but model '${cfg.name}' expects [${fmt}]${cfg.max_batch_size > 0 ? ' (first dim = batch)' : ''}.`, 400);
  if (cfg.max_batch_size > 0 && (shape[0] < 1 || shape[0] > cfg.max_batch_size)) {
    throw new ServeError(`input '${inp.name}' has batch size ${shape[0]}; model '${cfg.name}' accepts 1..${cfg.max_batch_size}.`, 400);
  }
  return shape;
}

function toTensor(inp: InferInput, shape: number[]): ServeTensor {
  const type = kilnFromKserve(inp.datatype);
  const size = shape.reduce((a, b) => a * b, 1);
  if (type === 'string') return toBytes(inp, shape, size);
  if (!type) throw new ServeError(`input '${inp.name}': datatype ${inp.datatype} is not supported by this server.`, 400);
  if (inp.raw) {
    const want = size * BYTES_PER[inp.datatype];
    if (inp.raw.byteLength !== want) {
      throw new ServeError(`input '${inp.name}' has ${inp.raw.byteLength} bytes of binary data; shape [${shape.join(',')}] of ${inp.datatype} needs ${want}.`, 400);
    }
    return new Tensor(type, fromBytes(type, inp.raw) as never, shape);
  }
  const fast = Array.isArray(inp.data) ? fillTyped(type, inp.data, size) : alreadyTyped(type, inp.data, size);
  if (fast) return new Tensor(type, fast as never, shape);
  const flat = flatten(inp.data, inp.name);
  if (flat.length !== size) throw new ServeError(`input '${inp.name}' has ${flat.length} values; shape [${shape.join(',')}] needs ${size}.`, 400);
  try {
    if (type === 'int64' || type === 'uint64') return new Tensor(type, flat.map((x) => BigInt(x as number)) as never, shape);
    if (type === 'bool') return new Tensor(type, flat.map((x) => (x ? 1 : 0)) as never, shape);
    if (flat.some((x) => typeof x !== 'number')) throw new Error('values must be numbers');
    return new Tensor(type, flat as number[], shape);
  } catch (e) {
    throw new ServeError(`input '${inp.name}': bad ${inp.datatype} data: ${(e as Error).message}.`, 400);
  }
}

const TYPED: Partial<Record<TensorType, new (n: number) => ArrayLike<number> & { [i: number]: number }>> = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, int16: Int16Array, int32: Int32Array, uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array,
};

/** The common case in one pass: a flat JSON array of numbers straight into its typed array (undefined = take the general path). */
function fillTyped(type: TensorType, data: unknown[], size: number): ArrayLike<number> | undefined {
  const Ctor = TYPED[type];
  if (!Ctor || data.length !== size) return undefined;
  const out = new Ctor(size);
  for (let i = 0; i < size; i++) {
    const v = data[i];
    if (typeof v !== 'number') return undefined;
    out[i] = v;
  }
  return out;
}

/** Data already in this type's typed array (json-infer.ts reads JSON numbers straight into one); other sizes and
 *  types take the general path, which gives the usual errors. */
function alreadyTyped(type: TensorType, data: unknown, size: number): ArrayLike<number> | undefined {
  const Ctor = TYPED[type];
  return Ctor && data instanceof Ctor && (data as ArrayLike<number>).length === size ? (data as ArrayLike<number>) : undefined;
}

/** BYTES: JSON strings (UTF-8), gRPC bytes_contents, or raw elements of a 4-byte little-endian length + bytes. */
function toBytes(inp: InferInput, shape: number[], size: number): BytesTensor {
  let items: Uint8Array[];
  if (inp.raw) items = splitBytes(inp.raw, inp.name);
  else {
    const enc = new TextEncoder();
    items = flatten(inp.data, inp.name).map((x) => {
      if (typeof x === 'string') return enc.encode(x);
      if (x instanceof Uint8Array) return x;
      throw new ServeError(`input '${inp.name}': BYTES elements must be strings in JSON, found ${typeof x}.`, 400);
    });
  }
  if (items.length !== size) throw new ServeError(`input '${inp.name}' has ${items.length} BYTES elements; shape [${shape.join(',')}] needs ${size}.`, 400);
  return new BytesTensor(items, shape);
}

function splitBytes(raw: Uint8Array, name: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  for (let off = 0; off < raw.byteLength;) {
    if (off + 4 > raw.byteLength) throw new ServeError(`input '${name}': BYTES data is truncated at byte ${off} (each element needs a 4-byte length first).`, 400);
    const n = view.getUint32(off, true);
    if (off + 4 + n > raw.byteLength) throw new ServeError(`input '${name}': BYTES element at byte ${off} claims ${n} bytes, only ${raw.byteLength - off - 4} remain.`, 400);
    out.push(raw.slice(off + 4, off + 4 + n));
    off += 4 + n;
  }
  return out;
}

function flatten(data: unknown, name: string): unknown[] {
  if (data === undefined) throw new ServeError(`input '${name}' has no 'data' (and no binary_data_size).`, 400);
  if (!Array.isArray(data)) {
    if (ArrayBuffer.isView(data)) return Array.from(data as unknown as ArrayLike<unknown>);
    throw new ServeError(`input '${name}': 'data' must be an array.`, 400);
  }
  // already flat (the common case, and the large one): skip the copy that flat() makes
  return data.every((x) => !Array.isArray(x)) ? data : data.flat(Infinity);
}

type ViewCtor = { new (b: ArrayBufferLike, offset: number, length: number): ArrayLike<unknown>; BYTES_PER_ELEMENT: number };
const VIEWS: Partial<Record<TensorType, ViewCtor>> = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, int16: Int16Array, int32: Int32Array, int64: BigInt64Array,
  uint16: Uint16Array, float16: Uint16Array, bfloat16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array,
};

/** The raw bytes as a typed array: a view of the request body where the data is aligned (no copy: the batcher
 * copies each request into its batch anyway, and nothing writes to inputs), else an aligned copy. */
function fromBytes(type: TensorType, b: Uint8Array): ArrayLike<unknown> {
  const View = VIEWS[type];
  if (!View) return new Uint8Array(b.buffer, b.byteOffset, b.byteLength); // uint8, bool: any offset is aligned
  const at = b.byteOffset % View.BYTES_PER_ELEMENT === 0 ? b : new Uint8Array(b);
  return new View(at.buffer, at.byteOffset, at.byteLength / View.BYTES_PER_ELEMENT);
}

/** Raw little-endian bytes of a tensor (binary extension, gRPC raw contents); BYTES elements length-prefixed. */
export function tensorBytes(t: ServeTensor): Uint8Array {
  if (t instanceof BytesTensor) {
    const out = new Uint8Array(t.data.reduce((s, b) => s + 4 + b.byteLength, 0));
    const view = new DataView(out.buffer);
    let off = 0;
    for (const b of t.data) {
      view.setUint32(off, b.byteLength, true);
      out.set(b, off + 4);
      off += 4 + b.byteLength;
    }
    return out;
  }
  const d = t.data as unknown as ArrayBufferView;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

/** JSON-safe values of a tensor (64-bit integers as numbers, bools as booleans, BYTES as UTF-8 strings). */
export function tensorJson(t: ServeTensor): unknown[] {
  if (t instanceof BytesTensor) return t.strings();
  if (t.type === 'bool') return Array.from(t.data as Uint8Array, (x) => x !== 0);
  if (t.type === 'int64' || t.type === 'uint64') return Array.from(t.data as BigInt64Array, (x) => Number(x));
  return Array.from(t.data as ArrayLike<number>);
}

// KServe v2 HTTP bodies in and out: the raw request body (maybe compressed, maybe with binary tensor data after a
// JSON header) to a decoded request, and a result to a ready-to-send response body. Pure functions of bytes, so the
// same code runs on the server's thread (small bodies) and on the decode pool's threads (decode-pool.ts).
import zlib from 'node:zlib';
import { InputError, Tensor, type TensorType } from '../index.js';
import { ServeError, type SubmitOptions } from './batcher.js';
import type { ModelConfig } from './config.js';
import { decodeRequest, tensorBytes, tensorJson, type DecodedRequest, type InferOutput, type InferRequest, type InferResponse } from './infer.js';
import { parseInferJson } from './json-infer.js';
import { BytesTensor, type ServeTensor } from './model.js';

/** What the HTTP route knows of an infer request before decoding: the raw body and the headers that shape it. */
export interface HttpBody {
  body: Uint8Array;
  /** Content-Encoding. */
  encoding?: string;
  /** Inference-Header-Content-Length, as sent. */
  headerLength?: string;
  /** Largest body after decompression. */
  limit: number;
}

/** Which outputs go back as binary data: `binary_data_output` for all, an output's own `binary_data` overriding it. */
export interface ResponseSpec {
  all: boolean;
  perOutput: Record<string, boolean>;
}

export interface HttpDecoded extends DecodedRequest {
  response: ResponseSpec;
}

export interface EncodedResponse {
  body: Uint8Array;
  contentType: string;
  /** Inference-Header-Content-Length when binary outputs follow the JSON header. */
  headerLength?: number;
}

export type ResponseHead = Omit<InferResponse, 'outputs'>;

export function decodeHttp(cfg: ModelConfig, b: HttpBody): HttpDecoded {
  const req = parseHttpBody(b);
  return { ...decodeRequest(cfg, req), response: responseSpec(req) };
}

export function parseHttpBody(b: HttpBody): InferRequest {
  const buf = decompress(b);
  let json = buf;
  let binary = buf.subarray(0, 0);
  if (b.headerLength !== undefined) {
    const n = Number(b.headerLength);
    if (!Number.isInteger(n) || n < 0 || n > buf.length) throw new ServeError(`Inference-Header-Content-Length ${b.headerLength} does not fit a body of ${buf.length} bytes.`, 400);
    json = buf.subarray(0, n);
    binary = buf.subarray(n);
  }
  const r = (parseInferJson(json) ?? parseJsonObject(json)) as unknown as InferRequest;
  if (!Array.isArray(r.inputs)) throw new ServeError(`the request needs an 'inputs' array.`, 400);
  let off = 0;
  for (const inp of r.inputs as (InferRequest['inputs'][number] & { parameters?: Record<string, unknown> })[]) {
    const size = inp.parameters?.binary_data_size;
    if (size === undefined) continue;
    if (!Number.isInteger(size) || (size as number) < 0) throw new ServeError(`input '${inp.name}': binary_data_size must be a non-negative integer.`, 400);
    if (off + (size as number) > binary.length) {
      throw new ServeError(`binary data is truncated: input '${inp.name}' needs bytes ${off}..${off + (size as number)}, the body has ${binary.length} after the JSON header.`, 400);
    }
    inp.raw = binary.subarray(off, off + (size as number));
    off += size as number;
  }
  if (off !== binary.length) throw new ServeError(`the body has ${binary.length - off} bytes of binary data that no input claims (binary_data_size).`, 400);
  return r;
}

function decompress(b: HttpBody): Buffer {
  const raw = Buffer.from(b.body.buffer, b.body.byteOffset, b.body.byteLength);
  const enc = b.encoding;
  if (!enc || enc === 'identity') return raw;
  try {
    if (enc === 'gzip') return zlib.gunzipSync(raw, { maxOutputLength: b.limit });
    if (enc === 'deflate') return zlib.inflateSync(raw, { maxOutputLength: b.limit });
  } catch (e) {
    throw new ServeError(`cannot decompress the ${enc} request body (or it expands past ${b.limit} bytes): ${(e as Error).message}`, 400);
  }
  throw new ServeError(`unsupported Content-Encoding '${enc}'; use gzip, deflate or none.`, 415);
}

/** A JSON object body ({} when empty), or a 400 saying why not. */
export function parseJsonObject(buf: Buffer | undefined): Record<string, unknown> {
  if (!buf || buf.length === 0) return {};
  try {
    const v = JSON.parse(buf.toString('utf8')) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('the body must be a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new ServeError(`malformed JSON request body: ${(e as Error).message}.`, 400);
  }
}

function responseSpec(req: InferRequest): ResponseSpec {
  const perOutput: Record<string, boolean> = {};
  for (const o of Array.isArray(req.outputs) ? req.outputs : []) {
    const b = o?.parameters?.binary_data;
    if (b !== undefined) perOutput[o.name] = b === true;
  }
  return { all: req.parameters?.binary_data_output === true, perOutput };
}

export function encodeHttp(head: ResponseHead, outputs: InferOutput[], spec: ResponseSpec): EncodedResponse {
  const blobs: Uint8Array[] = [];
  const out = outputs.map((o) => {
    if (!(spec.perOutput[o.name] ?? spec.all)) return { name: o.name, datatype: o.datatype, shape: o.shape, data: tensorJson(o.tensor) };
    const b = tensorBytes(o.tensor);
    blobs.push(b);
    return { name: o.name, datatype: o.datatype, shape: o.shape, parameters: { binary_data_size: b.byteLength } };
  });
  const h = Buffer.from(JSON.stringify({ ...head, outputs: out }));
  if (blobs.length === 0) return { body: h, contentType: 'application/json; charset=utf-8' };
  return { body: Buffer.concat([h, ...blobs]), contentType: 'application/octet-stream', headerLength: h.length };
}

/** JSON values a response would carry: above a few thousand, serializing is worth another thread. */
export function jsonElements(outputs: InferOutput[], spec: ResponseSpec): number {
  return outputs.reduce((s, o) => s + ((spec.perOutput[o.name] ?? spec.all) ? 0 : o.tensor.size), 0);
}

// ---- crossing threads: tensors as plain data, errors as message + status ----

export interface WireTensor {
  type: string;
  data: ArrayBufferView | Uint8Array[];
  dims: number[];
}

export interface WireError {
  message: string;
  status: number;
  reason: string;
}

export function toWire(t: ServeTensor): WireTensor {
  return { type: t.type, data: t.data as ArrayBufferView | Uint8Array[], dims: [...t.dims] };
}

export function fromWire(t: WireTensor): ServeTensor {
  return t.type === 'bytes' ? new BytesTensor(t.data as Uint8Array[], t.dims) : new Tensor(t.type as TensorType, t.data as never, t.dims);
}

/** Buffers a message may move instead of copy: whole, unshared ArrayBuffers only (never a pool slice). */
export function movable(views: Iterable<unknown>): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  for (const v of views) {
    if (ArrayBuffer.isView(v) && v.buffer instanceof ArrayBuffer && v.byteOffset === 0 && v.byteLength === v.buffer.byteLength) out.add(v.buffer);
  }
  return [...out];
}

export function toWireError(e: unknown): WireError {
  const err = e as Error;
  if (e instanceof ServeError) return { message: e.message, status: e.status, reason: e.reason };
  return { message: err?.message ?? String(e), status: e instanceof InputError ? 400 : 500, reason: 'OTHER' };
}

export function fromWireError(w: WireError): ServeError {
  return new ServeError(w.message, w.status, w.reason);
}

export interface WireDecoded {
  id?: string;
  batch: number;
  outputs: string[];
  submit: SubmitOptions;
  response: ResponseSpec;
  feeds: Record<string, WireTensor>;
}

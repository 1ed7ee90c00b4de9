// A decode thread: JSON.parse, binary-extension splitting and typed-array conversion of infer requests, and JSON
// serialization of large responses, so the server's event loop only routes. See decode-pool.ts.
import { parentPort } from 'node:worker_threads';
import type { ModelConfig } from './config.js';
import { decodeHttp, encodeHttp, fromWire, movable, toWire, toWireError, type HttpBody, type ResponseHead, type ResponseSpec, type WireDecoded, type WireTensor } from './decode.js';

export type DecodeJob =
  | { id: number; kind: 'decode'; cfgId: number; cfg?: ModelConfig; body: HttpBody }
  | { id: number; kind: 'encode'; head: ResponseHead; outputs: { name: string; datatype: string; shape: number[]; tensor: WireTensor }[]; spec: ResponseSpec };

const configs = new Map<number, ModelConfig>();

function decode(job: Extract<DecodeJob, { kind: 'decode' }>): void {
  if (job.cfg) configs.set(job.cfgId, job.cfg);
  const d = decodeHttp(configs.get(job.cfgId)!, job.body);
  const feeds: Record<string, WireTensor> = {};
  for (const [k, t] of Object.entries(d.feeds)) feeds[k] = toWire(t);
  const decoded: WireDecoded = { ...d, feeds };
  parentPort!.postMessage({ id: job.id, decoded }, movable(Object.values(feeds).map((t) => t.data)));
}

function encode(job: Extract<DecodeJob, { kind: 'encode' }>): void {
  const r = encodeHttp(job.head, job.outputs.map((o) => ({ ...o, tensor: fromWire(o.tensor) })), job.spec);
  parentPort!.postMessage({ id: job.id, encoded: r }, movable([r.body]));
}

parentPort!.on('message', (job: DecodeJob) => {
  try {
    if (job.kind === 'decode') decode(job);
    else encode(job);
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: toWireError(e) });
  }
});
parentPort!.postMessage({ ready: true });

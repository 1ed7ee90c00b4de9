// A pipeline worker thread: decodes and preprocesses the items it is sent and transfers each result back.
import { parentPort, workerData } from 'node:worker_threads';
import { processItem, type PipelineItem } from './decode.js';
import { lookupTable } from './pack.js';
import type { ResolvedSpec } from './spec.js';

export interface WorkerTask {
  id: number;
  index: number;
  item: PipelineItem;
}

export type WorkerReply = { id: number; data: Float32Array | Uint16Array | Uint8Array; dims: number[] } | { id: number; error: string };

const spec = workerData.spec as ResolvedSpec;
const lut = lookupTable(spec);

parentPort!.on('message', (t: WorkerTask) => {
  processItem(t.item, spec, lut, t.index).then(
    (r) => parentPort!.postMessage({ id: t.id, data: r.data, dims: r.dims } satisfies WorkerReply, [r.data.buffer as ArrayBuffer]),
    (e: Error) => parentPort!.postMessage({ id: t.id, error: e.message } satisfies WorkerReply),
  );
});
parentPort!.postMessage('ready');

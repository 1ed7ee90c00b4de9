// One instance of a model on its own thread: the engine's compute then never blocks the server's event loop, and
// instances run in parallel on several cores.
import { parentPort, workerData } from 'node:worker_threads';
import { Engine, Tensor, type TensorType } from '../index.js';

export interface WireTensor {
  type: string;
  data: ArrayBufferView | string[];
  dims: number[];
}

const engine = await Engine.load(new Uint8Array(workerData.plan as ArrayBuffer), {
  deviceId: workerData.deviceId as number | undefined,
  intraOpNumThreads: workerData.intraOpNumThreads as number | undefined,
});
const ctx = engine.createContext();

/** This thread's own memory (rss is the whole process's, so it is left out). */
export interface ThreadMemory {
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

function threadMemory(): ThreadMemory {
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
}

parentPort!.on('message', (m: { id: number; feeds: Record<string, WireTensor>; fetches: string[]; memory?: true }) => {
  if (m.memory) return parentPort!.postMessage({ id: m.id, memory: threadMemory() });
  const feeds: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(m.feeds)) feeds[k] = new Tensor(t.type as TensorType, t.data as never, t.dims);
  ctx.run(feeds, m.fetches).then(
    (out) => {
      const outputs: Record<string, WireTensor> = {};
      const transfer: ArrayBuffer[] = [];
      for (const [k, v] of Object.entries(out)) {
        if (!(v instanceof Tensor)) continue;
        outputs[k] = { type: v.type, data: v.data as ArrayBufferView, dims: [...v.dims] };
        if (ArrayBuffer.isView(v.data) && v.data.buffer instanceof ArrayBuffer) transfer.push(v.data.buffer);
      }
      parentPort!.postMessage({ id: m.id, outputs }, [...new Set(transfer)]);
    },
    (e: Error) => parentPort!.postMessage({ id: m.id, error: e.message }),
  );
});
parentPort!.postMessage({ ready: true });

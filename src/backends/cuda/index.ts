// The CUDA backend: the driver API, NVRTC and cuBLASLt through koffi (no native addon). Nothing here loads a CUDA
// library until the backend is asked whether it is available.
import type { Backend, Runner, RunnerOptions, Tactic } from '../backend.js';
import type { Model, Node } from '../../ir/graph.js';
import { TensorData, type Value } from '../../ir/tensor.js';
import type { DeviceSignature } from '../../build/plan.js';
import { cpuBackend } from '../cpu/index.js';
import { GPU_OPS } from './ops.js';
import { getDevice } from './device.js';
import { CudaRunner } from './runner.js';
import { nvrtcAvailable } from './ffi/nvrtc.js';
import { choiceSets, choiceTimes, cublasLtAvailable, gemmChoices, poolChoices, tuning, usedChoices } from './ffi/cublaslt.js';

let availability: { ok: boolean; reason?: string } | undefined;
let info: { name: string; sm: number; driverVersion: number } | undefined;

/** Loads the driver, NVRTC and cuBLASLt and opens device 0, once; says why not when it cannot. */
function probe(): { ok: boolean; reason?: string } {
  if (availability) return availability;
  try {
    const dev = getDevice(0);
    info = dev.info;
    const missing = nvrtcAvailable() ?? cublasLtAvailable();
    availability = missing ? { ok: false, reason: missing } : { ok: true };
  } catch (e) {
    availability = { ok: false, reason: (e as Error).message.split('\n')[0] };
  }
  return availability;
}

const gpuTactic: Tactic = {
  name: 'cuda',
  run: () => {
    throw new Error('CUDA tactics are timed inside the CUDA runner');
  },
};

export const cudaBackend: Backend = {
  name: 'cuda',
  availability: () => probe(),
  preferredLayout: 'NHWC',
  signature(): DeviceSignature {
    return {
      backend: 'cuda', arch: process.arch, platform: process.platform, name: info?.name ?? 'unknown GPU',
      features: { sm: info?.sm ?? 0 },
    };
  },
  tactics(node: Node): Tactic[] {
    const key = node.domain === 'kiln' ? `kiln:${node.opType}` : node.opType;
    return GPU_OPS[key] ? [gpuTactic] : [{ ...cpuBackend.tactics(node, {} as Model)[0], name: 'cpu-fallback' }];
  },
  serializeKernels: () => [],
  async compileForPlan(model: Model, inputShapes: Record<string, number[]>, deviceId = 0): Promise<[string, Uint8Array][]> {
    const dev = getDevice(deviceId);
    const runner = new CudaRunner(model, dev);
    dev.used.clear();
    usedChoices.clear();
    choiceTimes.clear();
    choiceSets.clear();
    tuning.on = true; // GEMMs time cuBLASLt's candidate algorithms on this run
    const feeds = new Map<string, Value>();
    for (const i of model.graph.inputs) {
      const dims = inputShapes[i.name];
      if (!dims || i.type.kind !== 'tensor') continue;
      feeds.set(i.name, TensorData.zeros(i.type.dtype, dims)); // values do not matter: this run only generates kernels
    }
    try {
      await runner.run(feeds, model.graph.outputs.map((o) => o.name));
    } catch {
      return []; // data-dependent shapes: kernels are compiled when the plan first runs instead
    } finally {
      tuning.on = false;
      runner.release();
    }
    poolChoices(); // one candidate per shape (cublaslt.ts), what the plan saves
    const cubins = new Map([...dev.used].filter((n) => dev.cubins.has(n)).map((n) => [n, dev.cubins.get(n)!]));
    const algos = Object.fromEntries([...usedChoices].map((k) => [k, gemmChoices.get(k)!]));
    const blobs: [string, Uint8Array][] = [];
    if (cubins.size) blobs.push(['cuda.cubins', encodeCubins(cubins)]);
    if (usedChoices.size) blobs.push(['cuda.gemm-algos.json', new TextEncoder().encode(JSON.stringify(algos))]);
    return blobs;
  },
  async createRunner(model: Model, options: RunnerOptions): Promise<Runner> {
    const dev = getDevice(options.deviceId ?? 0);
    if (options.kernels) {
      const blob = options.kernels.get('cuda.cubins');
      if (blob) for (const [name, bytes] of decodeCubins(blob)) dev.cubins.set(name, bytes);
      const algos = options.kernels.get('cuda.gemm-algos.json');
      if (algos) for (const [k, v] of Object.entries(JSON.parse(new TextDecoder().decode(algos)) as Record<string, number>)) gemmChoices.set(k, v);
    }
    const runner = new CudaRunner(model, dev);
    runner.useGraphs = options.cudaGraph ?? true;
    runner.tf32 = options.precision === 'tf32';
    return runner;
  },
};

/** cubins blob: [u32 count] then per kernel [u32 nameLen][name][u32 size][bytes]. */
export function encodeCubins(cubins: Map<string, Uint8Array>): Uint8Array {
  const parts: Buffer[] = [];
  const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
  parts.push(u32(cubins.size));
  for (const [name, c] of cubins) parts.push(u32(name.length), Buffer.from(name), u32(c.length), Buffer.from(c));
  return Buffer.concat(parts);
}

export function decodeCubins(b: Uint8Array): Map<string, Uint8Array> {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const out = new Map<string, Uint8Array>();
  let o = 0;
  const n = buf.readUInt32LE(o); o += 4;
  for (let i = 0; i < n; i++) {
    const l = buf.readUInt32LE(o); o += 4;
    const name = buf.toString('utf8', o, o + l); o += l;
    const s = buf.readUInt32LE(o); o += 4;
    out.set(name, new Uint8Array(buf.subarray(o, o + s))); o += s;
  }
  return out;
}

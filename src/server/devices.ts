// Where a model's instances run: Triton's instance_group rule over the GPUs of this host, and the GPUs' own
// figures for the per-GPU metrics. The GPU list is injectable so placement can be tested without GPUs.
import { execFile, spawnSync } from 'node:child_process';
import { ServeError } from './batcher.js';
import type { InstanceGroup } from './config.js';

export interface GpuInfo {
  index: number;
  uuid?: string;
  name?: string;
}

export interface GpuStats {
  index: number;
  uuid: string;
  memoryUsedBytes: number;
  memoryTotalBytes: number;
  /** 0..1 */
  utilization: number;
}

export interface DeviceProvider {
  /** GPUs visible to this process. */
  list(): GpuInfo[];
  /** Current memory and utilization per GPU (for /metrics); absent = no GPU metrics. */
  stats?(): Promise<GpuStats[]> | GpuStats[];
  /** Backend that GPU instances are built for and loaded on (default 'cuda'; tests use 'cpu' to simulate GPUs). */
  backend?: string;
}

export interface Placement {
  kind: 'cpu' | 'gpu';
  /** GPU index for kind 'gpu'. */
  deviceId?: number;
  /** Which instance_group entry it came from. */
  group: number;
}

export const deviceLabel = (p: Placement) => (p.kind === 'gpu' ? `gpu${p.deviceId}` : 'cpu');

/**
 * Triton's rule: KIND_GPU puts `count` instances on each GPU in `gpus` (all GPUs when empty); KIND_CPU and
 * KIND_MODEL put `count` on the CPU; KIND_AUTO is KIND_GPU when every listed GPU (or any GPU, when none is listed)
 * is present, KIND_CPU otherwise.
 */
export function placeInstances(groups: InstanceGroup[], gpus: GpuInfo[], model: string): Placement[] {
  const present = new Set(gpus.map((g) => g.index));
  const out: Placement[] = [];
  groups.forEach((g, group) => {
    const listed = g.gpus?.length ? g.gpus : [...present].sort((a, b) => a - b);
    let kind = g.kind;
    if (kind === 'KIND_AUTO') kind = listed.length > 0 && listed.every((i) => present.has(i)) ? 'KIND_GPU' : 'KIND_CPU';
    if (kind !== 'KIND_GPU') {
      for (let i = 0; i < g.count; i++) out.push({ kind: 'cpu', group });
      return;
    }
    if (listed.length === 0) throw new ServeError(`model '${model}': instance_group ${group} is KIND_GPU, but this host has no GPU; use KIND_CPU or KIND_AUTO.`, 400);
    const missing = listed.filter((i) => !present.has(i));
    if (missing.length) {
      throw new ServeError(`model '${model}': instance_group ${group} lists GPU ${missing.join(', ')}, but this host has ${present.size ? `GPU ${[...present].join(', ')}` : 'no GPU'}.`, 400);
    }
    for (const d of listed) for (let i = 0; i < g.count; i++) out.push({ kind: 'gpu', deviceId: d, group });
  });
  return out;
}

const SMI_FIELDS = 'index,uuid,name,memory.used,memory.total,utilization.gpu';

const SMI_ARGS = [`--query-gpu=${SMI_FIELDS}`, '--format=csv,noheader,nounits'];
const rows = (text: string) => text.trim().split('\n').filter(Boolean).map((l) => l.split(',').map((x) => x.trim()));

function smiSync(): string[][] {
  try {
    const r = spawnSync('nvidia-smi', SMI_ARGS, { encoding: 'utf8', timeout: 5000 });
    return r.status === 0 && r.stdout ? rows(r.stdout) : [];
  } catch {
    return [];
  }
}

/** Asynchronous, so a metrics scrape never blocks request handling. */
function smi(): Promise<string[][]> {
  return new Promise((resolve) => execFile('nvidia-smi', SMI_ARGS, { timeout: 5000 }, (e, out) => resolve(e ? [] : rows(out))));
}

/** The default provider: nvidia-smi when present (no GPUs otherwise). The list is read once. */
export function nvidiaSmiProvider(): DeviceProvider {
  let cached: GpuInfo[] | undefined;
  return {
    list: () => (cached ??= smiSync().map((f) => ({ index: Number(f[0]), uuid: f[1], name: f[2] }))),
    stats: async () =>
      (await smi()).map((f) => ({
        index: Number(f[0]),
        uuid: f[1],
        memoryUsedBytes: Number(f[3]) * 1024 * 1024,
        memoryTotalBytes: Number(f[4]) * 1024 * 1024,
        utilization: Number(f[5]) / 100,
      })),
  };
}

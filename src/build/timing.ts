// Tactic timing and the timing cache. A node's signature is everything that changes which tactic wins (op, attrs,
// input types and shapes, which inputs are constants); the cache maps device signature + node signature to the
// winning tactic, so a rebuild with a warm cache times nothing it has timed before.
import fs from 'node:fs';
import crypto from 'node:crypto';
import type { Model, Node, ValueType } from '../ir/graph.js';
import { TensorData, type Value } from '../ir/tensor.js';
import type { Tactic } from '../backends/backend.js';
import type { DeviceSignature } from './plan.js';
import { seededRandom } from '../ir/builder.js';
import { isFloat } from '../ir/dtype.js';

export function nodeSignature(n: Node, typeOf: (name: string) => ValueType | undefined, isConst: (name: string) => boolean): string {
  const attrs = Object.keys(n.attrs).sort().map((k) => {
    const a = n.attrs[k];
    return `${k}=${a.type === 'tensor' ? `tensor${a.value.dtype}[${a.value.dims}]` : a.type === 'graph' || a.type === 'graphs' ? 'graph' : JSON.stringify(a.value)}`;
  });
  const ins = n.inputs.map((i) => {
    if (!i) return '-';
    const t = typeOf(i);
    const s = t?.kind === 'tensor' ? `${t.dtype}[${(t.shape ?? []).map((d) => d ?? '?').join('x')}]` : '?';
    return `${isConst(i) ? 'c' : 'v'}:${s}`;
  });
  return `${n.domain}:${n.opType}(${ins.join(',')}){${attrs.join(';')}}`;
}

const deviceKey = (d: DeviceSignature) => crypto.createHash('sha1').update(JSON.stringify(d)).digest('hex').slice(0, 16);

interface CacheFile {
  version: 1;
  entries: Record<string, Record<string, { tactic: string; ms: number }>>;
}

export class TimingCache {
  private data: CacheFile = { version: 1, entries: {} };
  private dirty = false;
  hits = 0;
  misses = 0;

  constructor(private file?: string) {
    if (file && fs.existsSync(file)) {
      try {
        const d = JSON.parse(fs.readFileSync(file, 'utf8')) as CacheFile;
        if (d.version === 1 && d.entries) this.data = d;
      } catch {
        // a corrupt cache is rebuilt from scratch
      }
    }
  }

  lookup(dev: DeviceSignature, sig: string): { tactic: string; ms: number } | undefined {
    const e = this.data.entries[deviceKey(dev)]?.[sig];
    if (e) this.hits++;
    else this.misses++;
    return e;
  }

  record(dev: DeviceSignature, sig: string, tactic: string, ms: number): void {
    (this.data.entries[deviceKey(dev)] ??= {})[sig] = { tactic, ms };
    this.dirty = true;
  }

  save(): void {
    if (this.file && this.dirty) fs.writeFileSync(this.file, JSON.stringify(this.data));
  }
}

/** Median time (ms) of `t` on random inputs shaped like the node's inputs at the profile's opt shapes. */
export async function timeTactic(t: Tactic, n: Node, m: Model, typeOf: (name: string) => ValueType | undefined, runs = 5): Promise<number | undefined> {
  const rand = seededRandom(7);
  const inputs: (Value | undefined)[] = [];
  for (const name of n.inputs) {
    if (!name) { inputs.push(undefined); continue; }
    const c = m.graph.initializers.get(name);
    if (c) { inputs.push(c); continue; }
    const ty = typeOf(name);
    if (ty?.kind !== 'tensor' || !ty.shape || ty.shape.some((d) => typeof d !== 'number')) return undefined;
    const dims = ty.shape as number[];
    const count = dims.reduce((a, b) => a * b, 1);
    inputs.push(TensorData.fromNumbers(ty.dtype, dims, Array.from({ length: count }, () => (isFloat(ty.dtype) ? rand() : 0))));
  }
  const once = async () => {
    const s = performance.now();
    await t.run(n, inputs, m.opsets);
    return performance.now() - s;
  };
  try {
    if (t.time) return t.time(n, inputs, n.inputs.map((x) => !!x && m.graph.initializers.has(x)));
    await once(); // warm-up
    const times: number[] = [];
    for (let i = 0; i < runs; i++) times.push(await once());
    times.sort((a, b) => a - b);
    return times[runs >> 1];
  } catch {
    return undefined; // a tactic that cannot run this node is not a candidate
  }
}

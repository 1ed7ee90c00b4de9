// Scheduling: request priorities and timeouts in the dynamic batcher, and instance placement over (simulated) GPUs
// with batches spread over them and per-GPU metrics.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tensor } from '../../src/index.js';
import { Batcher, ServeError, type BatcherOptions } from '../../src/server/batcher.js';
import { buckets } from '../../src/runtime/buckets.js';
import { parseConfigText } from '../../src/server/config.js';
import { placeInstances, type DeviceProvider } from '../../src/server/devices.js';
import type { Instance } from '../../src/server/instances.js';
import type { ServeTensor } from '../../src/server/model.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { cnnInput, makeRepository, metricValue } from './repo.js';

/** An instance that records what it ran and finishes only when the test releases it. */
function gate(device = 'cpu') {
  const ran: number[] = [];
  const waiting: (() => void)[] = [];
  const inst: Instance = {
    device,
    run: (feeds: Record<string, ServeTensor>) => {
      ran.push(...Array.from((feeds.x as Tensor).data as Float32Array));
      return new Promise((r) => waiting.push(() => r({ y: feeds.x })));
    },
    close: async () => {},
  };
  const release = () => waiting.splice(0).forEach((w) => w());
  return { inst, ran, release, get busy() { return waiting.length; } };
}

const opts = (o: Partial<BatcherOptions> = {}): BatcherOptions => ({ maxBatchSize: 0, dynamic: false, preferred: [], maxQueueDelayUs: 0, maxQueueSize: 100, defaultTimeoutUs: 0, ...o });
const x = (v: number, rows = 1) => ({ x: new Tensor('float32', new Float32Array(rows).fill(v), [rows]) });
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

describe('batcher priorities and timeouts', () => {
  it('runs waiting requests by priority level (1 first), first come first served within a level', async () => {
    const g = gate();
    const b = new Batcher([g.inst], opts({ priorityLevels: 3, defaultPriority: 2 }));
    const done = [b.submit(x(0), ['y'], 1)];
    await tick();
    done.push(b.submit(x(1), ['y'], 1, { priority: 3 }), b.submit(x(2), ['y'], 1, { priority: 1 }), b.submit(x(3), ['y'], 1), b.submit(x(4), ['y'], 1, { priority: 1 }), b.submit(x(5), ['y'], 1, { priority: 0 }));
    for (let i = 0; i < 6; i++) {
      g.release();
      await tick();
    }
    await Promise.all(done);
    expect(g.ran).toEqual([0, 2, 4, 3, 5, 1]);
    await expect(b.submit(x(9), ['y'], 1, { priority: 4 })).rejects.toThrow(/priority 4 is outside 1\.\.3/);
  });

  it('rejects a request whose timeout passes in the queue, on its own timer, and keeps the others', async () => {
    const g = gate();
    const b = new Batcher([g.inst], opts());
    const first = b.submit(x(0), ['y'], 1);
    await tick();
    const late = b.submit(x(1), ['y'], 1, { timeoutUs: 5000 }).catch((e: ServeError) => e);
    const patient = b.submit(x(2), ['y'], 1);
    const err = await late; // resolves while the instance is still busy with the first request
    expect(err).toBeInstanceOf(ServeError);
    expect((err as ServeError).status).toBe(504);
    expect(g.busy).toBe(1);
    g.release();
    await tick();
    g.release();
    await Promise.all([first, patient]);
    expect(g.ran).toEqual([0, 2]);
  });

  it("DELAY puts a timed-out request behind every request still in time; the model's default timeout bounds overrides", async () => {
    const g = gate();
    const b = new Batcher([g.inst], opts({ timeoutAction: 'DELAY', defaultTimeoutUs: 60_000_000, allowTimeoutOverride: true, priorityLevels: 2, defaultPriority: 2 }));
    const all = [b.submit(x(0), ['y'], 1)];
    await tick();
    all.push(b.submit(x(1), ['y'], 1, { priority: 1, timeoutUs: 2000 }));
    await tick(20);
    all.push(b.submit(x(2), ['y'], 1), b.submit(x(3), ['y'], 1));
    for (let i = 0; i < 4; i++) {
      g.release();
      await tick();
    }
    await Promise.all(all);
    expect(g.ran).toEqual([0, 2, 3, 1]);
  });

  it('reads priority_levels, default_priority_level and the queue policy from config, and checks them', () => {
    const cfg = parseConfigText(`dynamic_batching { priority_levels: 3 default_priority_level: 2
      default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 1000 allow_timeout_override: true max_queue_size: 7 } }`, 'm', 'm/config.pbtxt');
    expect(cfg.dynamic_batching).toMatchObject({ priority_levels: 3, default_priority_level: 2, default_queue_policy: { timeout_action: 'DELAY', default_timeout_microseconds: 1000, allow_timeout_override: true, max_queue_size: 7 } });
    expect(() => parseConfigText('dynamic_batching { priority_levels: 2 default_priority_level: 3 }', 'm', 'm/config.pbtxt')).toThrow(/default_priority_level 3 is outside 1\.\.2/);
    expect(() => parseConfigText('dynamic_batching { default_queue_policy { timeout_action: DROP } }', 'm', 'm/config.pbtxt')).toThrow(/REJECT or DELAY/);
  });
});

describe('batch padding (GPU engines replay one graph per shape)', () => {
  it('pads a batch with zero rows up to the next bucket and hands each request only its own rows', async () => {
    const g = gate('gpu0');
    const b = new Batcher([g.inst], opts({ maxBatchSize: 8, dynamic: true, maxQueueDelayUs: 20_000, padBatches: true }));
    const done = [b.submit(x(1), ['y'], 1), b.submit(x(2, 2), ['y'], 2)];
    await tick(40);
    g.release();
    const [a, c] = await Promise.all(done);
    expect(g.ran).toEqual([1, 2, 2, 0]); // 3 rows formed, run as 4
    expect(Array.from((a.outputs.y as Tensor).data as Float32Array)).toEqual([1]);
    expect((c.outputs.y as Tensor).dims).toEqual([2]);
    expect(Array.from((c.outputs.y as Tensor).data as Float32Array)).toEqual([2, 2]);
  });

  it('buckets are the powers of two below max_batch_size, then max_batch_size', () => {
    expect(buckets(1)).toEqual([1]);
    expect(buckets(8)).toEqual([1, 2, 4, 8]);
    expect(buckets(24)).toEqual([1, 2, 4, 8, 16, 24]);
  });
});

describe('instance placement over GPUs', () => {
  const two = [{ index: 0 }, { index: 1 }];
  it("follows Triton's rule: count instances per listed GPU, all GPUs when none are listed, KIND_AUTO falls back to CPU", () => {
    const where = (groups: object[], gpus = two) => placeInstances(groups as never, gpus, 'm').map((p) => (p.kind === 'gpu' ? `gpu${p.deviceId}` : 'cpu'));
    expect(where([{ count: 2, kind: 'KIND_GPU', gpus: [0, 1] }])).toEqual(['gpu0', 'gpu0', 'gpu1', 'gpu1']);
    expect(where([{ count: 1, kind: 'KIND_GPU' }])).toEqual(['gpu0', 'gpu1']);
    expect(where([{ count: 1, kind: 'KIND_GPU', gpus: [1] }, { count: 2, kind: 'KIND_CPU' }])).toEqual(['gpu1', 'cpu', 'cpu']);
    expect(where([{ count: 2, kind: 'KIND_AUTO' }], [])).toEqual(['cpu', 'cpu']);
    expect(where([{ count: 1, kind: 'KIND_AUTO', gpus: [0, 3] }])).toEqual(['cpu']);
    expect(where([{ count: 1, kind: 'KIND_AUTO' }])).toEqual(['gpu0', 'gpu1']);
    expect(() => where([{ count: 1, kind: 'KIND_GPU', gpus: [0, 2] }])).toThrow(/lists GPU 2, but this host has GPU 0, 1/);
    expect(() => where([{ count: 1, kind: 'KIND_GPU' }], [])).toThrow(/KIND_GPU, but this host has no GPU/);
    expect(() => parseConfigText('instance_group [ { kind: KIND_CPU gpus: [0] } ]', 'm', 'm/config.pbtxt')).toThrow(/KIND_CPU cannot list gpus/);
  });

  it('spreads concurrent batches over the instances of both GPUs', async () => {
    const gs = [gate('gpu0'), gate('gpu0'), gate('gpu1'), gate('gpu1')];
    const b = new Batcher(gs.map((g) => g.inst), opts());
    const all = [b.submit(x(0), ['y'], 1), b.submit(x(1), ['y'], 1)];
    await tick();
    expect(gs.map((g) => g.busy)).toEqual([1, 0, 1, 0]); // one per GPU before a second on either
    for (let i = 2; i < 8; i++) all.push(b.submit(x(i), ['y'], 1));
    while (gs.some((g) => g.busy)) {
      gs.forEach((g) => g.release());
      await tick();
    }
    await Promise.all(all);
    expect(gs[0].ran.length + gs[1].ran.length).toBe(4);
    expect(gs[2].ran.length + gs[3].ran.length).toBe(4);
  });
});

describe('kiln serve on two (simulated) GPUs', () => {
  let root: string;
  let server: RunningServer;
  const devices: DeviceProvider = {
    backend: 'cpu', // simulated GPUs: the CPU backend, which ignores deviceId
    list: () => [{ index: 0, uuid: 'GPU-aaaa' }, { index: 1, uuid: 'GPU-bbbb' }],
    stats: () => [0, 1].map((i) => ({ index: i, uuid: i ? 'GPU-bbbb' : 'GPU-aaaa', memoryUsedBytes: (i + 1) * 1e9, memoryTotalBytes: 80e9, utilization: 0.25 * (i + 1) })),
  };
  beforeAll(async () => {
    root = await makeRepository();
    fs.rmSync(path.join(root, 'broken'), { recursive: true });
    fs.cpSync(path.join(root, 'cnn'), path.join(root, 'multi'), { recursive: true });
    fs.writeFileSync(path.join(root, 'multi', 'config.pbtxt'), `max_batch_size: 4
dynamic_batching { max_queue_delay_microseconds: 1000 priority_levels: 2 default_priority_level: 2 }
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] } ]`);
    fs.rmSync(path.join(root, 'multi', 'config.json'));
    fs.cpSync(path.join(root, 'cnn'), path.join(root, 'nogpu'), { recursive: true });
    fs.writeFileSync(path.join(root, 'nogpu', 'config.json'), JSON.stringify({ instance_group: [{ count: 1, kind: 'KIND_GPU', gpus: [3] }] }));
    server = await startServer({ repository: root, httpPort: 0, grpcPort: -1, metricsPort: 0, workers: false, devices, log: () => {} });
  });
  afterAll(async () => {
    await server?.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('places count instances on each listed GPU, lands batches on both, and reports per-GPU metrics', async () => {
    expect(server.core.repo.entry('multi')!.versions.get(1)!.devices).toEqual(['gpu0', 'gpu0', 'gpu1', 'gpu1']);
    const body = (i: number, extra = {}) => JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: Array.from(cnnInput(1, i)) }], ...extra });
    const rs = await Promise.all(Array.from({ length: 24 }, (_, i) => fetch(`${server.httpUrl}/v2/models/multi/infer`, { method: 'POST', body: body(i, i % 3 ? {} : { parameters: { priority: 1 } }) })));
    expect(rs.map((r) => r.status)).toEqual(Array(24).fill(200));
    const m = server.metricsUrl!;
    const per = async (d: string) => metricValue(m, 'kiln_inference_exec_count_per_device', `model="multi",version="1",device="${d}"`);
    expect(await per('gpu0')).toBeGreaterThan(0);
    expect(await per('gpu1')).toBeGreaterThan(0);
    expect(await metricValue(m, 'nv_gpu_memory_used_bytes', 'gpu_uuid="GPU-bbbb"')).toBe(2e9);
    expect(await metricValue(m, 'nv_gpu_utilization', 'gpu_uuid="GPU-aaaa"')).toBe(0.25);
    const bad = await fetch(`${server.httpUrl}/v2/models/multi/infer`, { method: 'POST', body: body(0, { parameters: { priority: 5 } }) });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toMatch(/priority 5 is outside 1\.\.2/);
    const index = (await (await fetch(`${server.httpUrl}/v2/repository/index`, { method: 'POST' })).json()) as { name: string; reason: string }[];
    expect(index.find((e) => e.name === 'nogpu')!.reason).toMatch(/lists GPU 3, but this host has GPU 0, 1/);
  });
});

// Operations: back-pressure, timeouts, API key, poll mode, graceful shutdown, config parsing.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, InferenceSession, Tensor } from '../../src/index.js';
import { findCompiler } from '../../src/backends/cpu/compiler.js';
import { nativeUnavailable } from '../../src/backends/cpu/native.js';
import { parseConfigText, parsePbtxt, selectVersions } from '../../src/server/config.js';
import { offLoopEngine } from '../../src/server/repository.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { cnnInput, makeRepository } from './repo.js';

let root: string;
const servers: RunningServer[] = [];
const body = (rows = 1, extra: object = {}) => JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [rows, 3, 32, 32], data: Array.from(cnnInput(rows)) }], ...extra });
const infer = (url: string, model: string, extra: object = {}, headers: Record<string, string> = {}) => fetch(`${url}/v2/models/${model}/infer`, { method: 'POST', body: body(1, extra), headers });

beforeAll(async () => {
  root = await makeRepository();
  fs.rmSync(path.join(root, 'broken'), { recursive: true });
  // 'slow': one instance that holds every request for 300 ms (the queue delay) and queues at most one
  fs.cpSync(path.join(root, 'cnn'), path.join(root, 'slow'), { recursive: true });
  fs.writeFileSync(path.join(root, 'slow', 'config.json'), JSON.stringify({
    max_batch_size: 8, dynamic_batching: { max_queue_delay_microseconds: 300000, default_queue_policy: { max_queue_size: 1 } },
  }));
});
afterAll(async () => {
  for (const s of servers) await s.close().catch(() => {});
  fs.rmSync(root, { recursive: true, force: true });
});

async function start(opts: object = {}): Promise<RunningServer> {
  const s = await startServer({ repository: root, httpPort: 0, grpcPort: -1, metricsPort: -1, workers: false, log: () => {}, ...opts });
  servers.push(s);
  return s;
}

describe('kiln serve operations', () => {
  it('answers 429 when a model queue is full and 504 when a request times out in the queue', async () => {
    const s = await start();
    const [first, second] = await Promise.all([infer(s.httpUrl!, 'slow'), new Promise((r) => setTimeout(r, 50)).then(() => infer(s.httpUrl!, 'slow'))]);
    expect(first.status).toBe(200);
    expect(second.status).toBe(429);
    expect((await second.json()).error).toMatch(/queue is full/);
    const late = await infer(s.httpUrl!, 'slow', { parameters: { timeout: 1000 } });
    expect(late.status).toBe(504);
    expect((await late.json()).error).toMatch(/timed out/);
    expect((await infer(s.httpUrl!, 'cnn')).status).toBe(200);
  });

  it('requires the API key when one is set, except for health probes', async () => {
    const s = await start({ apiKey: 'sekret' });
    expect((await fetch(`${s.httpUrl}/v2/health/ready`)).status).toBe(200);
    const no = await infer(s.httpUrl!, 'cnn');
    expect(no.status).toBe(401);
    expect((await no.json()).error).toMatch(/API key/);
    expect((await infer(s.httpUrl!, 'cnn', {}, { authorization: 'Bearer sekret' })).status).toBe(200);
  });

  it('poll mode loads new model folders and unloads removed ones', async () => {
    const s = await start({ modelControlMode: 'poll', pollSeconds: 3600 });
    fs.cpSync(path.join(root, 'cnn'), path.join(root, 'added'), { recursive: true });
    await s.core.repo.poll();
    expect((await fetch(`${s.httpUrl}/v2/models/added/ready`)).status).toBe(200);
    fs.rmSync(path.join(root, 'added'), { recursive: true });
    await s.core.repo.poll();
    expect((await fetch(`${s.httpUrl}/v2/models/added/ready`)).status).toBe(400);
    const load = await fetch(`${s.httpUrl}/v2/repository/models/cnn/load`, { method: 'POST' });
    expect((await load.json()).error).toMatch(/not allowed in model control mode 'poll'/);
  });

  it('shuts down gracefully: requests in flight complete, then the port closes', async () => {
    const s = await start();
    const inflight = [infer(s.httpUrl!, 'cnn'), infer(s.httpUrl!, 'slow')];
    await new Promise((r) => setTimeout(r, 50));
    await s.close();
    expect((await Promise.all(inflight)).map((r) => r.status)).toEqual([200, 200]);
    await expect(fetch(`${s.httpUrl}/v2/health/live`)).rejects.toThrow();
  });
});

describe('kiln serve instances on worker threads', () => {
  it('runs each instance on its own thread and returns the same outputs as the in-thread instances', async () => {
    const inThread = await start({ modelControlMode: 'explicit', loadModels: ['cnn'] });
    const threaded = await start({ modelControlMode: 'explicit', loadModels: ['cnn'], workers: true });
    const run = async (s: RunningServer) => (await (await fetch(`${s.httpUrl}/v2/models/cnn/infer`, { method: 'POST', body: body(4) })).json()).outputs[0].data as number[];
    const [a, b] = await Promise.all([run(inThread), Promise.all([run(threaded), run(threaded)])]);
    expect(b[0]).toEqual(a);
    expect(b[1]).toEqual(a);
    await threaded.close();
  });

  it('by default serves a CPU model from the server\'s thread when every compute layer is native, else from workers', async () => {
    const s = await start({ modelControlMode: 'explicit', loadModels: ['cnn'], workers: undefined });
    const engine = await Engine.load(new Uint8Array(fs.readFileSync(path.join(root, 'cnn', '1', 'model.cpu.kiln.plan'))));
    const native = offLoopEngine(engine);
    // where native kernels can be built and loaded, the tiny CNN's compute layers all have them (Flatten is a view)
    if (nativeUnavailable() === '' && findCompiler()) expect(native, engine.header.layers.map((l) => `${l.opType}:${l.tactic}`).join(' ')).toBe(true);
    engine.dispose();
    const { v } = s.core.repo.get('cnn');
    // instances on workers report their thread's memory; contexts on the server's thread have none of their own
    expect(v.instances.map((i) => i.memory === undefined)).toEqual(v.instances.map(() => native));
    const r = await fetch(`${s.httpUrl}/v2/models/cnn/infer`, { method: 'POST', body: body(4) });
    expect(r.status).toBe(200);
    await s.close();
  });

  it('answers concurrent requests batched over two in-thread contexts, each with its own input\'s result', async () => {
    const s = await start({ modelControlMode: 'explicit', loadModels: ['cnn'], workers: false });
    const session = await InferenceSession.create(path.join(root, 'cnn', '1', 'model.onnx'));
    const seeds = Array.from({ length: 24 }, (_, i) => i + 1);
    const answers = await Promise.all(seeds.map(async (seed) => {
      const r = await fetch(`${s.httpUrl}/v2/models/cnn/infer`, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: Array.from(cnnInput(1, seed)) }] }) });
      expect(r.status).toBe(200);
      return (await r.json()).outputs[0].data as number[];
    }));
    const executions = s.core.repo.get('cnn').v.stats.execution_count;
    expect(executions).toBeLessThan(seeds.length); // some requests shared a batch
    for (const [i, seed] of seeds.entries()) {
      const want = ((await session.run({ input: new Tensor('float32', cnnInput(1, seed), [1, 3, 32, 32]) })).probabilities as Tensor).data as Float32Array;
      answers[i].forEach((v, k) => expect(v, `seed ${seed}`).toBeCloseTo(want[k], 5));
    }
    await session.release();
    await s.close();
  });

  it('keeps plans whose compute layers run reference (JavaScript) kernels off the event loop', () => {
    const layer = (opType: string, tactic: string) => ({ opType, tactic });
    const engine = (layers: { opType: string; tactic: string }[]) => ({ header: { layers } }) as unknown as Engine;
    expect(offLoopEngine(engine([layer('FusedConv', 'native-avx512-tconv'), layer('Flatten', 'reference'), layer('Softmax', 'native-avx512-softmax')]))).toBe(true);
    expect(offLoopEngine(engine([layer('FusedConv', 'native-avx512-tconv'), layer('LayerNormalization', 'reference')]))).toBe(false);
    expect(offLoopEngine(engine([layer('Conv', 'reference')]))).toBe(false);
  });
});

describe('model config', () => {
  it('reads Triton text-format configs with nested messages, lists, enums and comments', () => {
    const raw = parsePbtxt(`name: "m" # comment
max_batch_size: 16
input { name: "a" data_type: TYPE_INT64 dims: [ 4 ] }
input { name: "b", data_type: TYPE_FP16, dims: 2 dims: 3 }
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
instance_group [ { count: 2, kind: KIND_CPU } ]
version_policy: { specific: { versions: [1, 3] } }`);
    const cfg = parseConfigText(JSON.stringify(raw), 'm', 'm/config.json');
    expect(cfg.input).toEqual([{ name: 'a', data_type: 'TYPE_INT64', dims: [4] }, { name: 'b', data_type: 'TYPE_FP16', dims: [2, 3] }]);
    expect(cfg.dynamic_batching).toMatchObject({ preferred_batch_size: [4, 8], max_queue_delay_microseconds: 100 });
    expect(cfg.instance_group).toEqual([{ count: 2, kind: 'KIND_CPU' }]);
    expect(selectVersions(cfg, [1, 2, 3, 4])).toEqual([1, 3]);
    expect(selectVersions(parseConfigText('{}', 'm', 'x.json'), [1, 2, 3])).toEqual([3]);
    expect(selectVersions(parseConfigText('version_policy: { latest: { num_versions: 2 } }', 'm', 'x.pbtxt'), [1, 2, 3])).toEqual([2, 3]);
  });

  it('rejects bad configs with the file and field in the message', () => {
    expect(() => parseConfigText('{"max_batch_size": "many"}', 'm', 'm/config.json')).toThrow(/m\/config.json: 'max_batch_size' must be an integer/);
    expect(() => parseConfigText('input { name: "a" data_type: TYPE_FLOAT }', 'm', 'm/config.pbtxt')).toThrow(/unknown data_type 'TYPE_FLOAT'/);
    expect(() => parseConfigText('name: "other"', 'm', 'm/config.pbtxt')).toThrow(/does not match the model folder 'm'/);
    expect(() => parseConfigText('input { name: "a" ', 'm', 'm/config.pbtxt')).toThrow(/expected '}'/);
    expect(() => parseConfigText('{', 'm', 'm/config.json')).toThrow(/not valid JSON/);
  });
});

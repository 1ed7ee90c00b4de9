// The HTTP/REST endpoints of `kiln serve`, against the real server on loopback.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceSession, Tensor } from '../../src/index.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { cnnInput, makeRepository, metricValue } from './repo.js';

let root: string;
let server: RunningServer;
let url: string;
let expected: Float32Array; // the tiny CNN's own output for cnnInput(3)

const post = (p: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url + p, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' || body instanceof Uint8Array ? (body as BodyInit) : JSON.stringify(body) });
const fp32 = (rows: number, data: Float32Array | number[] = cnnInput(rows)) => ({ inputs: [{ name: 'input', datatype: 'FP32', shape: [rows, 3, 32, 32], data: Array.from(data) }] });

beforeAll(async () => {
  root = await makeRepository();
  server = await startServer({ repository: root, httpPort: 0, grpcPort: -1, metricsPort: 0, maxRequestBytes: 4 * 1024 * 1024, workers: false, log: () => {} });
  url = server.httpUrl!;
  const s = await InferenceSession.create(path.join(root, 'cnn', '1', 'model.onnx'));
  expected = ((await s.run({ input: new Tensor('float32', cnnInput(3), [3, 3, 32, 32]) })).probabilities as Tensor).data as Float32Array;
});
afterAll(async () => {
  await server?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('kiln serve over HTTP', () => {
  it('answers health, server metadata and the repository index, reporting the broken model with its error', async () => {
    expect((await fetch(`${url}/v2/health/live`)).status).toBe(200);
    expect((await fetch(`${url}/v2/health/ready`)).status).toBe(200);
    const meta = await (await fetch(`${url}/v2`)).json();
    expect(meta.name).toBe('kiln');
    expect(meta.extensions).toContain('binary_tensor_data');
    const index = (await (await post('/v2/repository/index', {})).json()) as { name: string; version?: string; state: string; reason: string }[];
    expect(index.filter((m) => m.state === 'READY').map((m) => `${m.name}/${m.version}`)).toEqual(['cnn/1', 'cnn_pb/1', 'cnn_pb/2']);
    const broken = index.find((m) => m.name === 'broken')!;
    expect(broken.state).toBe('UNAVAILABLE');
    expect(broken.reason.length).toBeGreaterThan(0);
    expect((await fetch(`${url}/v2/models/broken/ready`)).status).toBe(400);
  });

  it('serves model metadata, config (from config.json and config.pbtxt) and readiness per version', async () => {
    const m = await (await fetch(`${url}/v2/models/cnn`)).json();
    expect(m).toMatchObject({ name: 'cnn', versions: ['1'], inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 3, 32, 32] }], outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, 10] }] });
    const pb = await (await fetch(`${url}/v2/models/cnn_pb/config`)).json();
    expect(pb).toMatchObject({ name: 'cnn_pb', platform: 'onnxruntime_onnx', max_batch_size: 0, version_policy: { all: {} }, input: [{ name: 'input', data_type: 'TYPE_FP32', dims: [-1, 3, 32, 32] }] });
    const cfg = await (await fetch(`${url}/v2/models/cnn/config`)).json();
    expect(cfg.dynamic_batching.preferred_batch_size).toEqual([4, 8]);
    expect((await fetch(`${url}/v2/models/cnn_pb/versions/2/ready`)).status).toBe(200);
    expect((await fetch(`${url}/v2/models/cnn_pb/versions/3/ready`)).status).toBe(400);
    expect((await fetch(`${url}/v2/models/cnn_pb/versions/2`)).status).toBe(200);
  });

  it('infers with JSON tensors and matches the model run directly', async () => {
    const r = await post('/v2/models/cnn/infer', { id: 'req-7', ...fp32(3) });
    expect(r.status).toBe(200);
    const body = await r.json();
    expect(body).toMatchObject({ model_name: 'cnn', model_version: '1', id: 'req-7', outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [3, 10] }] });
    body.outputs[0].data.forEach((v: number, i: number) => expect(v).toBeCloseTo(expected[i], 5));
    const nested = await post('/v2/models/cnn_pb/versions/2/infer', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: [[[...Array(3)].map((_, c) => [...Array(32)].map((_, y) => Array.from(cnnInput(1).subarray(c * 1024 + y * 32, c * 1024 + y * 32 + 32))))]] }] });
    expect(nested.status).toBe(200);
    expect((await nested.json()).model_version).toBe('2');
  });

  it('speaks the binary tensor extension both ways', async () => {
    const head = Buffer.from(JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [3, 3, 32, 32], parameters: { binary_data_size: 3 * 3072 * 4 } }], parameters: { binary_data_output: true } }));
    const r = await post('/v2/models/cnn/infer', Buffer.concat([head, Buffer.from(cnnInput(3).buffer)]), { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length) });
    expect(r.status, r.status === 200 ? '' : await r.clone().text()).toBe(200);
    const n = Number(r.headers.get('inference-header-content-length'));
    const buf = Buffer.from(await r.arrayBuffer());
    const json = JSON.parse(buf.subarray(0, n).toString());
    expect(json.outputs[0].parameters.binary_data_size).toBe(3 * 10 * 4);
    const out = new Float32Array(buf.buffer.slice(buf.byteOffset + n, buf.byteOffset + buf.length));
    out.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 5));
  });

  it('reads binary tensor data at any byte offset of the body (views where aligned, copies where not)', async () => {
    const input = cnnInput(3);
    for (const pad of [0, 1, 2, 3]) {
      // JSON whitespace shifts where the tensor bytes start: 4-byte aligned for one of the four pads
      const head = Buffer.from(JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [3, 3, 32, 32], parameters: { binary_data_size: 3 * 3072 * 4 } }] }) + ' '.repeat(pad));
      const r = await post('/v2/models/cnn/infer', Buffer.concat([head, Buffer.from(input.buffer)]), { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length) });
      expect(r.status, `pad ${pad}: ${r.status === 200 ? '' : await r.clone().text()}`).toBe(200);
      const data = (await r.json()).outputs[0].data as number[];
      data.forEach((v, i) => expect(v, `pad ${pad}`).toBeCloseTo(expected[i], 5));
    }
  });

  it('accepts gzip request bodies and compresses responses when asked', async () => {
    const r = await post('/v2/models/cnn/infer', zlib.gzipSync(JSON.stringify(fp32(8))), { 'content-encoding': 'gzip', 'accept-encoding': 'gzip' });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-encoding')).toBe('gzip'); // fetch decompresses the body itself
    const body = await r.json();
    expect(body.outputs[0].data[0]).toBeCloseTo(expected[0], 5);
  });

  it('answers bad requests with 4xx and a clear message, and keeps serving', async () => {
    const cases: [string, unknown, number, RegExp, Record<string, string>?][] = [
      ['/v2/models/cnn/infer', '{"inputs": [', 400, /malformed JSON/],
      ['/v2/models/cnn/infer', { inputs: [{ name: 'image', datatype: 'FP32', shape: [1, 3, 32, 32], data: [] }] }, 400, /unknown input 'image'.*inputs: input/],
      ['/v2/models/cnn/infer', { inputs: [{ name: 'input', datatype: 'INT32', shape: [1, 3, 32, 32], data: [] }] }, 400, /datatype INT32.*expects FP32/],
      ['/v2/models/cnn/infer', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 16, 16], data: [] }] }, 400, /shape \[1,3,16,16\].*expects \[-1,3,32,32\]/],
      ['/v2/models/cnn/infer', { inputs: [{ name: 'input', datatype: 'FP32', shape: [9, 3, 32, 32], data: [] }] }, 400, /batch size 9.*1\.\.8/],
      ['/v2/models/cnn/infer', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: [1, 2] }] }, 400, /2 values.*needs 3072/],
      ['/v2/models/cnn/infer', { ...fp32(1), outputs: [{ name: 'logits' }] }, 400, /unknown output 'logits'/],
      ['/v2/models/nope/infer', fp32(1), 404, /unknown model 'nope'/],
      ['/v2/models/cnn/versions/5/infer', fp32(1), 404, /no ready version 5/],
      ['/v2/models/..%2F..%2Fetc/infer', fp32(1), 400, /invalid model name/],
      ['/v2/repository/models/cnn/unload', {}, 400, /not allowed in model control mode 'none'/],
    ];
    for (const [p, body, status, msg] of cases) {
      const r = await post(p, body as never);
      expect(r.status, p).toBe(status);
      expect((await r.json()).error, p).toMatch(msg);
    }
    const head = Buffer.from(JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], parameters: { binary_data_size: 3072 * 4 } }] }));
    const truncated = await post('/v2/models/cnn/infer', Buffer.concat([head, Buffer.alloc(100)]), { 'inference-header-content-length': String(head.length) });
    expect(truncated.status).toBe(400);
    expect((await truncated.json()).error).toMatch(/truncated/);
    const big = await post('/v2/models/cnn/infer', Buffer.alloc(5 * 1024 * 1024, 32));
    expect(big.status).toBe(413);
    expect((await big.json()).error).toMatch(/larger than the limit/);
    expect((await post('/v2/models/cnn/infer', fp32(3))).status).toBe(200);
  });

  it('batches concurrent requests (exec count < inference count) and reports Triton metrics and statistics', async () => {
    const labels = 'model="cnn",version="1"';
    const before = { count: await metricValue(server.metricsUrl!, 'nv_inference_count', labels), exec: await metricValue(server.metricsUrl!, 'nv_inference_exec_count', labels) };
    const rs = await Promise.all(Array.from({ length: 16 }, (_, i) => post('/v2/models/cnn/infer', fp32(1, cnnInput(1, i)))));
    expect(rs.map((r) => r.status)).toEqual(Array(16).fill(200));
    const bodies = await Promise.all(rs.map((r) => r.json()));
    // each request gets its own row back: inputs differ, so outputs differ
    expect(new Set(bodies.map((b) => b.outputs[0].data[0])).size).toBe(16);
    const count = (await metricValue(server.metricsUrl!, 'nv_inference_count', labels)) - before.count;
    const exec = (await metricValue(server.metricsUrl!, 'nv_inference_exec_count', labels)) - before.exec;
    expect(count).toBe(16);
    expect(exec).toBeLessThan(16);
    const text = await (await fetch(server.metricsUrl!)).text();
    for (const name of ['nv_inference_request_success', 'nv_inference_request_failure', 'nv_inference_request_duration_us', 'nv_inference_queue_duration_us',
      'nv_inference_compute_input_duration_us', 'nv_inference_compute_infer_duration_us', 'nv_inference_compute_output_duration_us', 'kiln_inference_batch_size_bucket']) {
      expect(text, name).toContain(name);
    }
    const stats = await (await fetch(`${url}/v2/models/cnn/stats`)).json();
    expect(stats.model_stats[0]).toMatchObject({ name: 'cnn', version: '1' });
    expect(stats.model_stats[0].execution_count).toBeLessThan(stats.model_stats[0].inference_count);
    expect(stats.model_stats[0].inference_stats.fail.count).toBeGreaterThan(0);
  });
});

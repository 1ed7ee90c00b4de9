// The gRPC GRPCInferenceService of `kiln serve`, through a @grpc/grpc-js client built from the same proto.
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadService } from '../../src/server/grpc.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { cnnInput, makeRepository } from './repo.js';

let root: string;
let server: RunningServer;
let client: grpc.Client & Record<string, (req: unknown, cb: (e: grpc.ServiceError | null, r: Record<string, unknown>) => void) => void>;

const call = (method: string, req: unknown = {}) =>
  new Promise<Record<string, any>>((res, rej) => client[method](req, (e, r) => (e ? rej(e) : res(r))));
const fail = (method: string, req: unknown) => call(method, req).then(() => { throw new Error(`${method} should have failed`); }, (e: grpc.ServiceError) => e);
const inferReq = (rows: number, seed = 1) => ({ model_name: 'cnn', inputs: [{ name: 'input', datatype: 'FP32', shape: [rows, 3, 32, 32] }], raw_input_contents: [Buffer.from(cnnInput(rows, seed).buffer)] });

beforeAll(async () => {
  root = await makeRepository();
  server = await startServer({ repository: root, httpPort: 0, grpcPort: 0, metricsPort: -1, modelControlMode: 'explicit', loadModels: ['cnn', 'cnn_pb'], workers: false, log: () => {} });
  const Svc = (loadService().inference as grpc.GrpcObject).GRPCInferenceService as grpc.ServiceClientConstructor;
  client = new Svc(server.grpcAddress!, grpc.credentials.createInsecure()) as never;
});
afterAll(async () => {
  client?.close();
  await server?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('kiln serve over gRPC', () => {
  it('answers liveness, readiness and metadata', async () => {
    expect((await call('ServerLive')).live).toBe(true);
    expect((await call('ServerReady')).ready).toBe(true);
    expect((await call('ServerMetadata')).name).toBe('kiln');
    expect((await call('ModelReady', { name: 'cnn' })).ready).toBe(true);
    expect((await call('ModelReady', { name: 'broken' })).ready).toBe(false);
    const m = await call('ModelMetadata', { name: 'cnn_pb', version: '2' });
    expect(m).toMatchObject({ name: 'cnn_pb', versions: ['1', '2'], inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 3, 32, 32] }] });
    const c = await call('ModelConfig', { name: 'cnn' });
    expect(c.config).toMatchObject({ name: 'cnn', max_batch_size: 8, dynamic_batching: { preferred_batch_size: [4, 8] }, input: [{ data_type: 'TYPE_FP32', dims: [3, 32, 32] }] });
  });

  it('infers with raw contents and with typed contents, and agrees with HTTP', async () => {
    const r = await call('ModelInfer', { ...inferReq(2), id: 'g1' });
    expect(r).toMatchObject({ model_name: 'cnn', model_version: '1', id: 'g1', outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [2, 10] }] });
    const raw = r.raw_output_contents[0] as Buffer;
    const out = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
    const typed = await call('ModelInfer', { model_name: 'cnn', inputs: [{ name: 'input', datatype: 'FP32', shape: [2, 3, 32, 32], contents: { fp32_contents: Array.from(cnnInput(2)) } }] });
    const raw2 = typed.raw_output_contents[0] as Buffer;
    expect(Array.from(new Float32Array(raw2.buffer.slice(raw2.byteOffset, raw2.byteOffset + raw2.length)))).toEqual(Array.from(out));
    const http = await (await fetch(`${server.httpUrl}/v2/models/cnn/infer`, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [2, 3, 32, 32], data: Array.from(cnnInput(2)) }] }) })).json();
    http.outputs[0].data.forEach((v: number, i: number) => expect(v).toBeCloseTo(out[i], 6));
    expect(out.slice(0, 10).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5); // softmax rows sum to 1
  });

  it('maps bad requests to gRPC status codes with clear messages', async () => {
    const unknown = await fail('ModelInfer', { ...inferReq(1), model_name: 'nope' });
    expect(unknown.code).toBe(grpc.status.NOT_FOUND);
    expect(unknown.details).toMatch(/unknown model 'nope'/);
    const shape = await fail('ModelInfer', { ...inferReq(1), inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 8, 8] }] });
    expect(shape.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(shape.details).toMatch(/expects \[-1,3,32,32\]/);
    const truncated = await fail('ModelInfer', { ...inferReq(1), raw_input_contents: [Buffer.alloc(10)] });
    expect(truncated.details).toMatch(/10 bytes of binary data.*needs 12288/);
    const version = await fail('ModelMetadata', { name: 'cnn', version: '9' });
    expect(version.code).toBe(grpc.status.NOT_FOUND);
    expect((await call('ModelInfer', inferReq(1))).outputs).toHaveLength(1);
  });

  it('streams inferences with ModelStreamInfer', async () => {
    const stream = (client as unknown as { ModelStreamInfer(): grpc.ClientDuplexStream<unknown, Record<string, any>> }).ModelStreamInfer();
    const got: Record<string, any>[] = [];
    const done = new Promise<void>((r) => stream.on('end', r));
    stream.on('data', (d) => got.push(d));
    stream.write({ ...inferReq(1), id: 'a' });
    stream.write({ ...inferReq(1), id: 'b', model_name: 'nope' });
    stream.end();
    await done;
    expect(got.find((g) => g.infer_response?.id === 'a')).toBeTruthy();
    expect(got.find((g) => /unknown model/.test(g.error_message))).toBeTruthy();
  });

  it('loads, unloads and indexes models in explicit mode; unload with requests in flight completes or cleanly fails each', async () => {
    let index = (await call('RepositoryIndex', {})).models as { name: string; state: string }[];
    expect(index.find((m) => m.name === 'broken')!.state).toBe(''); // not loaded in explicit mode
    const bad = await fail('RepositoryModelLoad', { model_name: 'broken' });
    expect(bad.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(bad.details).toMatch(/failed to load 'broken'/);
    const traversal = await fail('RepositoryModelLoad', { model_name: '../etc' });
    expect(traversal.details).toMatch(/invalid model name/);

    const inflight = Array.from({ length: 12 }, (_, i) => call('ModelInfer', inferReq(1, i)).then(() => 'ok', (e: grpc.ServiceError) => e.code));
    await call('RepositoryModelUnload', { model_name: 'cnn' });
    const outcomes = await Promise.all(inflight);
    for (const o of outcomes) expect(['ok', grpc.status.UNAVAILABLE, grpc.status.INVALID_ARGUMENT]).toContain(o);
    expect((await call('ModelReady', { name: 'cnn' })).ready).toBe(false);
    index = (await call('RepositoryIndex', { ready: true })).models;
    expect(index.map((m) => m.name)).toEqual(['cnn_pb', 'cnn_pb']);
    await call('RepositoryModelLoad', { model_name: 'cnn' });
    expect((await call('ModelInfer', inferReq(1))).model_name).toBe('cnn');
    const stats = await call('ModelStatistics', { name: 'cnn' });
    expect(stats.model_stats[0].inference_count).toBe(1); // a reload starts fresh statistics
  });
});

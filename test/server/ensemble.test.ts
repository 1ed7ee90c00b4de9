// Ensembles: preprocessing -> classifier -> postprocessing declared in config, run by the server over HTTP and gRPC,
// and a non-ONNX first step (a ServedModel taking raw image BYTES), against the real server on loopback.
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder, InferenceSession, Tensor, saveOnnx } from '../../src/index.js';
import { TensorData } from '../../src/ir/tensor.js';
import { loadService } from '../../src/server/grpc.js';
import { registerModelBackend, type BytesTensor, type ServedModel } from '../../src/server/model.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { tensorBytes } from '../../src/server/infer.js';
import { cnnInput, makeRepository } from './repo.js';

let root: string;
let server: RunningServer;
let client: grpc.Client & Record<string, (req: unknown, cb: (e: grpc.ServiceError | null, r: Record<string, any>) => void) => void>;
let cnn: InferenceSession;

const batched = (extra: object) => ({ max_batch_size: 8, dynamic_batching: { max_queue_delay_microseconds: 20000 }, ...extra });
const write = (name: string, config: object | string) => {
  fs.mkdirSync(path.join(root, name, '1'), { recursive: true });
  if (typeof config === 'string') fs.writeFileSync(path.join(root, name, 'config.pbtxt'), config);
  else fs.writeFileSync(path.join(root, name, 'config.json'), JSON.stringify(config));
};

/** x * (1/255) - 0.5: the "preprocessing" model. */
async function preModel(file: string): Promise<void> {
  const b = new GraphBuilder('pre');
  b.input('pixels', 'float32', ['n', 3, 32, 32]);
  const scaled = b.op('Mul', ['pixels', b.initializer('scale', new TensorData('float32', [], new Float32Array([1 / 255])))]);
  b.node('Sub', [scaled, b.initializer('mean', new TensorData('float32', [], new Float32Array([0.5])))], {}, { outputs: ['normalized'] });
  b.output('normalized', { kind: 'tensor', dtype: 'float32', shape: ['n', 3, 32, 32] });
  await saveOnnx(b.model(17), file);
}

/** argmax and max of the probabilities: the "postprocessing" model. */
async function postModel(file: string): Promise<void> {
  const b = new GraphBuilder('post');
  b.input('probs', 'float32', ['n', 10]);
  b.node('ArgMax', ['probs'], { axis: 1, keepdims: 1 }, { outputs: ['label'] });
  b.node('ReduceMax', ['probs'], { axes: [1], keepdims: 1 }, { outputs: ['score'] });
  b.output('label', { kind: 'tensor', dtype: 'int64', shape: ['n', 1] });
  b.output('score', { kind: 'tensor', dtype: 'float32', shape: ['n', 1] });
  await saveOnnx(b.model(17), file);
}

/** A non-ONNX model: raw 3x32x32 uint8 images (BYTES, one per row) to FP32 pixels, as an image pipeline would. */
class DecodeBytes implements ServedModel {
  readonly name = 'decode';
  readonly inputs = [{ name: 'image', data_type: 'TYPE_STRING', dims: [1] }];
  readonly outputs = [{ name: 'pixels', data_type: 'TYPE_FP32', dims: [3, 32, 32] }];
  calls = 0;
  async infer(feeds: Record<string, Tensor | BytesTensor>): Promise<Record<string, Tensor>> {
    this.calls++;
    const imgs = (feeds.image as BytesTensor).data;
    const out = new Float32Array(imgs.length * 3072);
    imgs.forEach((b, i) => {
      if (b.length !== 3072) throw new Error(`image ${i} has ${b.length} bytes, expected 3072`);
      out.set(b, i * 3072);
    });
    return { pixels: new Tensor('float32', out, [imgs.length, 3, 32, 32]) };
  }
}
const decoders: DecodeBytes[] = [];
registerModelBackend('test_decode_bytes', () => {
  const d = new DecodeBytes();
  decoders.push(d);
  return d;
});

const ENSEMBLE_PBTXT = `name: "classify"
platform: "ensemble"
max_batch_size: 8
input [ { name: "IMAGE" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] } ]
output [
  { name: "LABEL" data_type: TYPE_INT64 dims: [ 1 ] },
  { name: "SCORE" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "PROBS" data_type: TYPE_FP32 dims: [ 10 ] }
]
ensemble_scheduling {
  step [
    { model_name: "pre" model_version: -1 input_map { key: "pixels" value: "IMAGE" } output_map { key: "normalized" value: "norm" } },
    { model_name: "cnn" model_version: 1 input_map { key: "input" value: "norm" } output_map { key: "probabilities" value: "PROBS" } },
    { model_name: "post" input_map { key: "probs" value: "PROBS" } output_map [ { key: "label" value: "LABEL" }, { key: "score" value: "SCORE" } ] }
  ]
}
`;

/** Pixel values 0..255 for `rows` images. */
const pixels = (rows: number, seed = 1) => Float32Array.from(cnnInput(rows, seed), (v) => Math.round((v + 1) * 127.5));

async function expected(px: Float32Array, rows: number) {
  const norm = px.map((v) => v * Math.fround(1 / 255) - 0.5);
  const probs = ((await cnn.run({ input: new Tensor('float32', norm, [rows, 3, 32, 32]) })).probabilities as Tensor).data as Float32Array;
  const labels = Array.from({ length: rows }, (_, r) => {
    const row = Array.from(probs.subarray(r * 10, r * 10 + 10));
    return row.indexOf(Math.max(...row));
  });
  return { probs, labels };
}

const post = (p: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(server.httpUrl + p, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: body instanceof Uint8Array ? (body as BodyInit) : JSON.stringify(body) });
const call = (method: string, req: unknown) => new Promise<Record<string, any>>((res, rej) => client[method](req, (e, r) => (e ? rej(e) : res(r))));

beforeAll(async () => {
  root = await makeRepository();
  fs.rmSync(path.join(root, 'broken'), { recursive: true });
  write('pre', batched({}));
  await preModel(path.join(root, 'pre', '1', 'model.onnx'));
  write('post', batched({}));
  await postModel(path.join(root, 'post', '1', 'model.onnx'));
  write('classify', ENSEMBLE_PBTXT);
  write('decode', batched({ backend: 'test_decode_bytes', instance_group: [{ count: 2, kind: 'KIND_CPU' }] }));
  write('classify_bytes', {
    platform: 'ensemble', max_batch_size: 8,
    input: [{ name: 'JPEG', data_type: 'TYPE_STRING', dims: [1] }],
    output: [{ name: 'LABEL', data_type: 'TYPE_INT64', dims: [1] }],
    ensemble_scheduling: { step: [
      { model_name: 'decode', input_map: { image: 'JPEG' }, output_map: { pixels: 'px' } },
      { model_name: 'classify', input_map: { IMAGE: 'px' }, output_map: { LABEL: 'LABEL' } },
    ] },
  });
  // broken ensembles: each must load as UNAVAILABLE with its reason, and not stop the others
  const bad = (name: string, steps: object[], out = 'LABEL') =>
    write(name, { platform: 'ensemble', max_batch_size: 8, input: [{ name: 'IMAGE', data_type: 'TYPE_FP32', dims: [3, 32, 32] }], output: [{ name: out, data_type: 'TYPE_INT64', dims: [1] }], ensemble_scheduling: { step: steps } });
  bad('bad_missing', [{ model_name: 'nowhere', input_map: { x: 'IMAGE' }, output_map: { y: 'LABEL' } }]);
  bad('bad_type', [{ model_name: 'post', input_map: { probs: 'IMAGE' }, output_map: { label: 'LABEL' } }]);
  bad('bad_unproduced', [{ model_name: 'pre', input_map: { pixels: 'IMAGE' }, output_map: { normalized: 'norm' } }]);
  bad('bad_cycle', [
    { model_name: 'pre', input_map: { pixels: 'b' }, output_map: { normalized: 'a' } },
    { model_name: 'cnn', input_map: { input: 'a' }, output_map: { probabilities: 'b' } },
    { model_name: 'post', input_map: { probs: 'b' }, output_map: { label: 'LABEL' } },
  ]);
  server = await startServer({ repository: root, httpPort: 0, grpcPort: 0, metricsPort: 0, workers: false, log: () => {} });
  const Svc = (loadService().inference as grpc.GrpcObject).GRPCInferenceService as grpc.ServiceClientConstructor;
  client = new Svc(server.grpcAddress!, grpc.credentials.createInsecure()) as never;
  cnn = await InferenceSession.create(path.join(root, 'cnn', '1', 'model.onnx'));
});
afterAll(async () => {
  client?.close();
  await server?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('ensembles', () => {
  it('runs preprocessing -> classifier -> postprocessing over HTTP and matches the models run one by one', async () => {
    const px = pixels(3);
    const r = await post('/v2/models/classify/infer', { id: 'e1', inputs: [{ name: 'IMAGE', datatype: 'FP32', shape: [3, 3, 32, 32], data: Array.from(px) }] });
    expect(r.status, await r.clone().text()).toBe(200);
    const body = await r.json();
    expect(body).toMatchObject({ model_name: 'classify', model_version: '1', id: 'e1' });
    const out = Object.fromEntries(body.outputs.map((o: { name: string }) => [o.name, o]));
    expect(out.LABEL).toMatchObject({ datatype: 'INT64', shape: [3, 1] });
    const want = await expected(px, 3);
    expect(out.LABEL.data).toEqual(want.labels);
    out.PROBS.data.forEach((v: number, i: number) => expect(v).toBeCloseTo(want.probs[i], 5));
    out.SCORE.data.forEach((v: number, r: number) => expect(v).toBeCloseTo(Math.max(...want.probs.subarray(r * 10, r * 10 + 10)), 5));
    const only = await (await post('/v2/models/classify/infer', { inputs: [{ name: 'IMAGE', datatype: 'FP32', shape: [1, 3, 32, 32], data: Array.from(pixels(1)) }], outputs: [{ name: 'LABEL' }] })).json();
    expect(only.outputs.map((o: { name: string }) => o.name)).toEqual(['LABEL']);
  });

  it('batches the steps of concurrent ensemble requests in each model\'s own batcher and counts them in its statistics', async () => {
    const before = (await (await fetch(`${server.httpUrl}/v2/models/cnn/stats`)).json()).model_stats[0];
    const rs = await Promise.all(Array.from({ length: 8 }, (_, i) => post('/v2/models/classify/infer', { inputs: [{ name: 'IMAGE', datatype: 'FP32', shape: [1, 3, 32, 32], data: Array.from(pixels(1, i + 10)) }] })));
    const bodies = await Promise.all(rs.map((r) => r.json()));
    for (const [i, b] of bodies.entries()) {
      const label = b.outputs.find((o: { name: string }) => o.name === 'LABEL').data;
      expect(label).toEqual((await expected(pixels(1, i + 10), 1)).labels);
    }
    const after = (await (await fetch(`${server.httpUrl}/v2/models/cnn/stats`)).json()).model_stats[0];
    expect(after.inference_count - before.inference_count).toBe(8);
    expect(after.execution_count - before.execution_count).toBeLessThan(8);
    const ens = (await (await fetch(`${server.httpUrl}/v2/models/classify/stats`)).json()).model_stats[0];
    expect(ens.inference_stats.success.count).toBeGreaterThanOrEqual(9);
  });

  it('runs over gRPC and reports the ensemble config with its steps', async () => {
    const px = pixels(2, 5);
    const r = await call('ModelInfer', { model_name: 'classify', inputs: [{ name: 'IMAGE', datatype: 'FP32', shape: [2, 3, 32, 32] }], outputs: [{ name: 'LABEL' }], raw_input_contents: [Buffer.from(px.buffer)] });
    const raw = r.raw_output_contents[0] as Buffer;
    expect(Array.from(new BigInt64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length)), Number)).toEqual((await expected(px, 2)).labels);
    const c = (await call('ModelConfig', { name: 'classify' })).config;
    expect(c.platform).toBe('ensemble');
    expect(c.ensemble_scheduling.step.map((s: { model_name: string }) => s.model_name)).toEqual(['pre', 'cnn', 'post']);
    expect(c.ensemble_scheduling.step[0]).toMatchObject({ model_version: -1, input_map: { pixels: 'IMAGE' }, output_map: { normalized: 'norm' } });
  });

  it('takes raw image BYTES through a non-ONNX first step (binary extension and gRPC bytes_contents)', async () => {
    const imgs = [pixels(1, 21), pixels(1, 22)].map((p) => Uint8Array.from(p));
    const want = [(await expected(Float32Array.from(imgs[0]), 1)).labels[0], (await expected(Float32Array.from(imgs[1]), 1)).labels[0]];
    const { BytesTensor } = await import('../../src/server/model.js');
    const blob = tensorBytes(new BytesTensor(imgs, [2, 1]));
    const head = Buffer.from(JSON.stringify({ inputs: [{ name: 'JPEG', datatype: 'BYTES', shape: [2, 1], parameters: { binary_data_size: blob.length } }] }));
    const r = await post('/v2/models/classify_bytes/infer', Buffer.concat([head, blob]), { 'inference-header-content-length': String(head.length) });
    expect(r.status, await r.clone().text()).toBe(200);
    expect((await r.json()).outputs[0].data).toEqual(want);
    const g = await call('ModelInfer', { model_name: 'classify_bytes', inputs: [{ name: 'JPEG', datatype: 'BYTES', shape: [1, 1], contents: { bytes_contents: [Buffer.from(imgs[1])] } }] });
    const raw = g.raw_output_contents[0] as Buffer;
    expect(Number(raw.readBigInt64LE(0))).toBe(want[1]);
    expect(decoders.reduce((s, d) => s + d.calls, 0)).toBeGreaterThanOrEqual(2);
    const meta = await (await fetch(`${server.httpUrl}/v2/models/decode`)).json();
    expect(meta.inputs).toEqual([{ name: 'image', datatype: 'BYTES', shape: [-1, 1] }]);
    const short = await call('ModelInfer', { model_name: 'classify_bytes', inputs: [{ name: 'JPEG', datatype: 'BYTES', shape: [1, 1], contents: { bytes_contents: [Buffer.alloc(5)] } }] }).catch((e: grpc.ServiceError) => e);
    expect((short as grpc.ServiceError).details).toMatch(/ensemble 'classify_bytes' step 0 \(model 'decode'\).*5 bytes/);
  });

  it('reports broken ensembles with the reason and keeps serving the rest', async () => {
    const index = (await (await post('/v2/repository/index', {})).json()) as { name: string; state: string; reason: string }[];
    const reason = (n: string) => index.find((m) => m.name === n)!;
    expect(reason('bad_missing')).toMatchObject({ state: 'UNAVAILABLE' });
    expect(reason('bad_missing').reason).toMatch(/step model 'nowhere' is not available/);
    expect(reason('bad_type').reason).toMatch(/step 0 \(model 'post'\): tensor 'IMAGE' has dims \[3,32,32\].*input 'probs' expects \[10\]/);
    expect(reason('bad_unproduced').reason).toMatch(/output 'LABEL' is not produced/);
    expect(reason('bad_cycle').reason).toMatch(/steps 0, 1, 2 wait on each other \(a cycle\)/);
    expect(reason('classify').state).toBe('READY');
    const r = await post('/v2/models/classify/infer', { inputs: [{ name: 'IMAGE', datatype: 'FP32', shape: [1, 3, 16, 16], data: [] }] });
    expect(r.status).toBe(400);
    expect((await r.json()).error).toMatch(/expects \[-1,3,32,32\]/);
  });
});

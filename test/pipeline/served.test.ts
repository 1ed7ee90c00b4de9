// The pipeline as a served model (backend "kiln_pipeline"): an ensemble of pipeline -> tiny CNN taking real PNG and
// JPEG bytes over HTTP (KServe binary extension), against the pipeline and the CNN run directly.
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceSession, Tensor } from '../../src/index.js';
import { Pipeline, type PipelineSpec } from '../../src/pipeline/index.js';
import { BytesTensor } from '../../src/server/model.js';
import { tensorBytes } from '../../src/server/infer.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { makeRepository } from '../server/repo.js';

const SPEC: PipelineSpec = { resize: { size: 36 }, crop: { size: 32 }, normalize: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] }, layout: 'NCHW' };
let root: string;
let server: RunningServer;
let images: Uint8Array[];

const write = (name: string, config: object) => {
  fs.mkdirSync(path.join(root, name, '1'), { recursive: true });
  fs.writeFileSync(path.join(root, name, 'config.json'), JSON.stringify(config));
};

function picture(w: number, h: number, salt: number): Buffer {
  const b = Buffer.alloc(w * h * 3);
  for (let i = 0; i < b.length; i++) b[i] = (i * 5 + salt * 31 + ((i / (3 * w)) | 0) * 3) & 255;
  return b;
}

beforeAll(async () => {
  const raw = (w: number, h: number, s: number) => sharp(picture(w, h, s), { raw: { width: w, height: h, channels: 3 } });
  images = [await raw(50, 40, 1).png().toBuffer(), await raw(45, 60, 2).jpeg({ quality: 90 }).toBuffer(), await raw(64, 48, 3).png().toBuffer()];
  root = await makeRepository();
  fs.rmSync(path.join(root, 'broken'), { recursive: true });
  write('prep', {
    backend: 'kiln_pipeline', max_batch_size: 8, dynamic_batching: { max_queue_delay_microseconds: 20000 },
    input: [{ name: 'IMAGE', data_type: 'TYPE_STRING', dims: [1] }], output: [{ name: 'PIXELS', data_type: 'TYPE_FP32', dims: [3, 32, 32] }],
    parameters: { spec: { string_value: JSON.stringify(SPEC) }, workers: { string_value: '1' } },
  });
  write('prep_bad', { backend: 'kiln_pipeline', max_batch_size: 8, parameters: { spec: { string_value: '{"resize": {"size": 0}}' } } });
  write('classify_images', {
    platform: 'ensemble', max_batch_size: 8,
    input: [{ name: 'IMAGE', data_type: 'TYPE_STRING', dims: [1] }],
    output: [{ name: 'PROBS', data_type: 'TYPE_FP32', dims: [10] }],
    ensemble_scheduling: { step: [
      { model_name: 'prep', input_map: { IMAGE: 'IMAGE' }, output_map: { PIXELS: 'px' } },
      { model_name: 'cnn', input_map: { input: 'px' }, output_map: { probabilities: 'PROBS' } },
    ] },
  });
  server = await startServer({ repository: root, httpPort: 0, grpcPort: 0, metricsPort: 0, workers: false, log: () => {} });
});
afterAll(async () => {
  await server?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

async function inferBytes(model: string, imgs: Uint8Array[]) {
  const blob = tensorBytes(new BytesTensor(imgs, [imgs.length, 1]));
  const head = Buffer.from(JSON.stringify({ inputs: [{ name: 'IMAGE', datatype: 'BYTES', shape: [imgs.length, 1], parameters: { binary_data_size: blob.length } }] }));
  return fetch(`${server.httpUrl}/v2/models/${model}/infer`, {
    method: 'POST', headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length) }, body: Buffer.concat([head, blob]),
  });
}

describe('kiln_pipeline served model', () => {
  it('classifies PNG and JPEG bytes through an ensemble and matches the pipeline + CNN run directly', async () => {
    const r = await inferBytes('classify_images', images);
    expect(r.status, await r.clone().text()).toBe(200);
    const out = (await r.json()).outputs[0];
    expect(out).toMatchObject({ name: 'PROBS', datatype: 'FP32', shape: [3, 10] });
    const p = await Pipeline.create(SPEC, { workers: 0 });
    const px = (await p.process(images)).tensor!;
    await p.close();
    const cnn = await InferenceSession.create(path.join(root, 'cnn', '1', 'model.onnx'));
    const want = ((await cnn.run({ input: px })).probabilities as Tensor).data as Float32Array;
    out.data.forEach((v: number, i: number) => expect(v).toBeCloseTo(want[i], 5));
  });

  it('serves the pipeline alone with its tensor metadata, and rejects a bad image with the item named', async () => {
    const meta = await (await fetch(`${server.httpUrl}/v2/models/prep`)).json();
    expect(meta.inputs).toEqual([expect.objectContaining({ name: 'IMAGE', datatype: 'BYTES' })]);
    expect(meta.outputs).toEqual([expect.objectContaining({ name: 'PIXELS', datatype: 'FP32', shape: [-1, 3, 32, 32] })]);
    const ok = await inferBytes('prep', [images[1]]);
    expect(ok.status, await ok.clone().text()).toBe(200);
    expect((await ok.json()).outputs[0].shape).toEqual([1, 3, 32, 32]);
    const bad = await inferBytes('prep', [images[0], Buffer.from('not an image')]);
    expect(bad.status).toBe(400);
    expect(await bad.text()).toMatch(/item 1: cannot decode the image/);
  });

  it('reports a model with a bad spec as unavailable, with the spec error', async () => {
    const idx = await (await fetch(`${server.httpUrl}/v2/repository/index`, { method: 'POST', body: '{}' })).json();
    const bad = idx.find((m: { name: string }) => m.name === 'prep_bad');
    expect(bad.state).toBe('UNAVAILABLE');
    expect(bad.reason).toMatch(/resize\.size/);
  });
});

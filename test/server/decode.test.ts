// Infer bodies decoded on the decode threads (and large JSON answers serialized there) give the same answers, the
// same statuses and the same error messages as decoding on the event loop, and batching still works across requests.
import fs from 'node:fs';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { cnnInput, makeRepository, metricValue } from './repo.js';

let root: string;
let pooled: RunningServer; // every body and every JSON answer through a decode thread
let inline: RunningServer; // no decode threads: the event loop decodes

type Body = string | Uint8Array | object;
const post = (s: RunningServer, p: string, body: Body, headers: Record<string, string> = {}) =>
  fetch(s.httpUrl + p, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' || body instanceof Uint8Array ? (body as BodyInit) : JSON.stringify(body),
  });
const fp32 = (rows: number, seed = 1) => ({ inputs: [{ name: 'input', datatype: 'FP32', shape: [rows, 3, 32, 32], data: Array.from(cnnInput(rows, seed)) }] });
const binaryBody = (rows: number, bytes: number, extra: object = {}) => {
  const head = Buffer.from(JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [rows, 3, 32, 32], parameters: { binary_data_size: rows * 3072 * 4 } }], ...extra }));
  const data = Buffer.from(cnnInput(rows).buffer).subarray(0, bytes);
  return { body: Buffer.concat([head, data, Buffer.alloc(Math.max(0, bytes - rows * 3072 * 4))]), headers: { 'inference-header-content-length': String(head.length) } };
};

beforeAll(async () => {
  root = await makeRepository();
  const common = { repository: root, httpPort: 0, grpcPort: -1, metricsPort: 0, maxRequestBytes: 1024 * 1024, workers: false, log: () => {} };
  pooled = await startServer({ ...common, decode: { threads: 2, minBytes: 0, minEncodeValues: 0 } });
  inline = await startServer({ ...common, decode: { threads: 0 } });
  await pooled.core.decoder.start();
});
afterAll(async () => {
  await Promise.all([pooled?.close(), inline?.close()]);
  fs.rmSync(root, { recursive: true, force: true });
});

describe('kiln serve: request decoding off the event loop', () => {
  it('answers JSON and binary requests exactly as the inline decoder does', async () => {
    expect(pooled.core.decoder.threads).toBe(2);
    const before = { ...pooled.core.decoder.counts };
    const bin = binaryBody(2, 2 * 3072 * 4, { parameters: { binary_data_output: true } });
    const asks: [Body, Record<string, string>?][] = [
      [{ id: 'a', ...fp32(3) }],
      [zlib.gzipSync(JSON.stringify(fp32(2))), { 'content-encoding': 'gzip' }],
      [bin.body, bin.headers],
    ];
    for (const [body, headers] of asks) {
      const [a, b] = [await post(pooled, '/v2/models/cnn/infer', body, headers), await post(inline, '/v2/models/cnn/infer', body, headers)];
      expect(a.status, await a.clone().text()).toBe(200);
      expect(a.headers.get('content-type')).toBe(b.headers.get('content-type'));
      expect(a.headers.get('inference-header-content-length')).toBe(b.headers.get('inference-header-content-length'));
      expect(Buffer.from(await a.arrayBuffer()).equals(Buffer.from(await b.arrayBuffer()))).toBe(true);
    }
    const c = pooled.core.decoder.counts;
    expect(c.decodedOffThread - before.decodedOffThread).toBe(3);
    expect(c.encodedOffThread - before.encodedOffThread).toBe(2); // the binary answer has no JSON values to serialize
    expect(c.decodedInline - before.decodedInline).toBe(0);
  });

  it('gives malformed JSON, truncated binary data, bad compression and oversized bodies the same 4xx and message', async () => {
    const head = (n: number) => ({ 'inference-header-content-length': String(n) });
    const cases: [string, Body, number, RegExp, Record<string, string>?][] = [
      ['malformed JSON', '{"inputs": [', 400, /malformed JSON/],
      ['not an object', '[1, 2]', 400, /malformed JSON.*must be a JSON object/],
      ['no inputs', '{"outputs": []}', 400, /needs an 'inputs' array/],
      ['truncated binary', binaryBody(1, 100).body, 400, /binary data is truncated.*needs bytes 0\.\.12288.*has 100/, binaryBody(1, 100).headers],
      ['unclaimed binary', binaryBody(1, 3072 * 4 + 8).body, 400, /8 bytes of binary data that no input claims/, binaryBody(1, 3072 * 4 + 8).headers],
      ['header past the body', '{"inputs": []}', 400, /Inference-Header-Content-Length 999 does not fit a body of 14 bytes/, head(999)],
      ['bad header length', '{"inputs": []}', 400, /Inference-Header-Content-Length -3/, head(-3)],
      ['bad gzip', Buffer.from('not gzip at all'), 400, /cannot decompress the gzip request body/, { 'content-encoding': 'gzip' }],
      ['gzip bomb', zlib.gzipSync(Buffer.alloc(2 * 1024 * 1024, 32)), 400, /expands past 1048576 bytes/, { 'content-encoding': 'gzip' }],
      ['unknown encoding', JSON.stringify(fp32(1)), 415, /unsupported Content-Encoding 'br'/, { 'content-encoding': 'br' }],
      ['wrong value count', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: [1, 2] }] }, 400, /2 values.*needs 3072/],
      ['non-number values', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: Array(3072).fill('x') }] }, 400, /bad FP32 data: values must be numbers/],
      ['bad priority', { ...fp32(1), parameters: { priority: -1 } }, 400, /request parameter 'priority' must be a non-negative integer/],
      ['oversized body', Buffer.alloc(2 * 1024 * 1024, 32), 413, /larger than the limit of 1048576 bytes/],
      ['unknown model', fp32(1), 404, /unknown model 'nope'/],
    ];
    for (const [what, body, status, msg, headers] of cases) {
      const path = what === 'unknown model' ? '/v2/models/nope/infer' : '/v2/models/cnn/infer';
      const [a, b] = [await post(pooled, path, body, headers), await post(inline, path, body, headers)];
      expect(a.status, what).toBe(status);
      expect(b.status, what).toBe(status);
      const [ea, eb] = [(await a.json()).error, (await b.json()).error];
      expect(ea, what).toMatch(msg);
      expect(ea, what).toBe(eb);
    }
    expect((await post(pooled, '/v2/models/cnn/infer', fp32(1))).status).toBe(200);
  });

  it('batches concurrent requests decoded on different threads; one bad request fails alone', async () => {
    const labels = 'model="cnn",version="1"';
    const metric = (n: string) => metricValue(pooled.metricsUrl!, n, labels);
    const before = { count: await metric('nv_inference_count'), exec: await metric('nv_inference_exec_count') };
    const bad = { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: Array(3071).fill(0) }] };
    const bodies: Body[] = Array.from({ length: 8 }, (_, i) => (i === 3 ? bad : i === 5 ? '{"inputs": [{' : fp32(1, i)));
    const rs = await Promise.all(bodies.map((b) => post(pooled, '/v2/models/cnn/infer', b)));
    expect(rs.map((r) => r.status)).toEqual([200, 200, 200, 400, 200, 400, 200, 200]);
    const answers = await Promise.all(rs.map((r) => r.json()));
    expect(answers[3].error).toMatch(/3071 values.*needs 3072/);
    expect(answers[5].error).toMatch(/malformed JSON/);
    // each good request gets its own row: compare with the same request sent alone to the inline server
    for (const i of [0, 1, 2, 4, 6, 7]) {
      const alone = await (await post(inline, '/v2/models/cnn/infer', bodies[i])).json();
      answers[i].outputs[0].data.forEach((v: number, k: number) => expect(v).toBeCloseTo(alone.outputs[0].data[k], 5));
    }
    expect((await metric('nv_inference_count')) - before.count).toBe(6);
    expect((await metric('nv_inference_exec_count')) - before.exec).toBeLessThan(6);
  });
});

// Micro-benchmark of the event loop's per-request decode of a KServe v2 JSON infer body (issue 9): JSON.parse + copy
// into a Float32Array (the general path) against json-infer.ts's fast path, on the load test's own body shape.
// Usage: tsx bench/serve/json-decode.ts [--values 3072] [--iters 3000]
import { parseInferJson } from '../../src/server/json-infer.js';
import { encodeHttp } from '../../src/server/decode.js';
import { Tensor } from '../../src/index.js';

const arg = (n: string, d: number) => {
  const i = process.argv.indexOf(`--${n}`);
  return i >= 0 ? Number(process.argv[i + 1]) : d;
};
const values = arg('values', 3072);
const iters = arg('iters', 3000);
let seed = 1;
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
const data = Float32Array.from({ length: values }, rand);
const body = Buffer.from(JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, values], data: Array.from(data) }] }));

function general(): Float32Array {
  const r = JSON.parse(body.toString('utf8')) as { inputs: { data: number[] }[] };
  const d = r.inputs[0].data;
  const out = new Float32Array(d.length);
  for (let i = 0; i < d.length; i++) out[i] = d[i];
  return out;
}
function fast(): Float32Array {
  return (parseInferJson(body) as { inputs: { data: Float32Array }[] }).inputs[0].data;
}
const a = general(), b = fast();
if (a.length !== b.length || a.some((x, i) => !Object.is(x, b[i]))) throw new Error('fast path disagrees with JSON.parse');

function time(name: string, f: () => unknown): number {
  for (let i = 0; i < 200; i++) f();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iters; i++) f();
  const ms = Number(process.hrtime.bigint() - t0) / 1e6 / iters;
  console.log(`${name.padEnd(34)} ${(ms * 1000).toFixed(1)} µs/request`);
  return ms;
}
console.log(`body: ${body.length} bytes, ${values} FP32 values`);
const g = time('JSON.parse + Float32Array copy', general);
const f = time('json-infer fast path', fast);
console.log(`speed-up ${(g / f).toFixed(2)}x`);
const out = [{ name: 'output', datatype: 'FP32', shape: [1, 10], tensor: new Tensor('float32', data.slice(0, 10), [1, 10]) }];
time('encode 10-value JSON response', () => encodeHttp({ model_name: 'm', model_version: '1' }, out, { all: false, perOutput: {} }));

// The server a Node user writes today: fastify + onnxruntime-node, one session.run per request, KServe-shaped JSON.
// For the binary rows of the load test it also takes the KServe binary tensor extension (a JSON header of
// Inference-Header-Content-Length bytes, then raw little-endian tensors) and answers in kind when
// binary_data_output is set: the equivalent fast path, so both servers are compared on the same wire format.
// Default session options (what such a server has); an optional third argument sets intraOpNumThreads, to show a
// tuned variant next to it (concurrent runs each with all cores' threads oversubscribe a small machine).
// Usage: tsx bench/serve/ort-baseline.ts <model.onnx> <port> [intraOpNumThreads]
import Fastify from 'fastify';
import * as ort from 'onnxruntime-node';

const [file, port, threads] = process.argv.slice(2);
const session = await ort.InferenceSession.create(file, threads ? { intraOpNumThreads: Number(threads) } : {});
const app = Fastify({ bodyLimit: 64 * 1024 * 1024 });
app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

interface Input {
  name: string;
  shape: number[];
  data?: number[];
  parameters?: { binary_data_size?: number };
}
interface Body {
  inputs: Input[];
  parameters?: { binary_data_output?: boolean };
}

app.post('/v2/models/:model/infer', async (req, reply) => {
  const hdr = req.headers['inference-header-content-length'];
  const raw = req.body as Buffer;
  const body: Body = hdr === undefined ? (req.body as Body) : JSON.parse(raw.subarray(0, Number(hdr)).toString('utf8'));
  const feeds: Record<string, ort.Tensor> = {};
  let off = Number(hdr ?? 0);
  for (const i of body.inputs) {
    const n = i.parameters?.binary_data_size;
    const data = n === undefined ? Float32Array.from(i.data!) : new Float32Array(raw.buffer.slice(raw.byteOffset + off, raw.byteOffset + off + n));
    off += n ?? 0;
    feeds[i.name] = new ort.Tensor('float32', data, i.shape);
  }
  const out = await session.run(feeds);
  if (!body.parameters?.binary_data_output) {
    return { outputs: Object.entries(out).map(([name, t]) => ({ name, datatype: 'FP32', shape: t.dims, data: Array.from(t.data as Float32Array) })) };
  }
  const blobs = Object.values(out).map((t) => Buffer.from((t.data as Float32Array).buffer, (t.data as Float32Array).byteOffset, (t.data as Float32Array).byteLength));
  const outputs = Object.entries(out).map(([name, t], k) => ({ name, datatype: 'FP32', shape: t.dims, parameters: { binary_data_size: blobs[k].length } }));
  const head = Buffer.from(JSON.stringify({ outputs }));
  return reply.header('Content-Type', 'application/octet-stream').header('Inference-Header-Content-Length', String(head.length)).send(Buffer.concat([head, ...blobs]));
});
app.get('/v2/health/ready', async () => ({}));
await app.listen({ host: '127.0.0.1', port: Number(port) });
console.log(`ort baseline on ${port}`);

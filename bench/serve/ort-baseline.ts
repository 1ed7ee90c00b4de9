// The server a Node user writes today: fastify + onnxruntime-node, one session.run per request, KServe-shaped JSON.
// Usage: tsx bench/serve/ort-baseline.ts <model.onnx> <port>
import Fastify from 'fastify';
import * as ort from 'onnxruntime-node';

const [file, port] = process.argv.slice(2);
const session = await ort.InferenceSession.create(file);
const app = Fastify({ bodyLimit: 64 * 1024 * 1024 });

interface Body {
  inputs: { name: string; shape: number[]; data: number[] }[];
}

app.post('/v2/models/:model/infer', async (req) => {
  const feeds: Record<string, ort.Tensor> = {};
  for (const i of (req.body as Body).inputs) feeds[i.name] = new ort.Tensor('float32', Float32Array.from(i.data), i.shape);
  const out = await session.run(feeds);
  return { outputs: Object.entries(out).map(([name, t]) => ({ name, datatype: 'FP32', shape: t.dims, data: Array.from(t.data as Float32Array) })) };
});
app.get('/v2/health/ready', async () => ({}));
await app.listen({ host: '127.0.0.1', port: Number(port) });
console.log(`ort baseline on ${port}`);

// KServe v2 over HTTP/REST (fastify), with Triton's extensions: model configuration, statistics, model repository,
// binary tensor data; gzip/deflate request and response bodies.
import zlib from 'node:zlib';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { InputError } from '../index.js';
import { ServeError } from './batcher.js';
import { infer, tensorBytes, tensorJson, type InferRequest, type InferResponse } from './infer.js';
import type { ServerCore } from './server.js';

type Params = { model?: string; version?: string };

/** A group of HTTP routes on the server's fastify app; the KServe v2 protocol is one, other protocols add theirs. */
export interface HttpPlugin {
  name: string;
  register(app: FastifyInstance, core: ServerCore): void | Promise<void>;
}

export const kserveRoutes: HttpPlugin = { name: 'kserve-v2', register: registerKserve };

export async function createHttpApp(core: ServerCore, plugins: HttpPlugin[] = []): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, bodyLimit: core.options.maxRequestBytes, forceCloseConnections: 'idle' });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.addHook('onRequest', async (req) => {
    if (!core.options.apiKey || req.url.startsWith('/v2/health')) return;
    const auth = req.headers.authorization ?? '';
    const key = auth.startsWith('Bearer ') ? auth.slice(7) : req.headers['x-api-key'];
    if (key !== core.options.apiKey) throw new ServeError('missing or wrong API key; send "Authorization: Bearer <key>".', 401);
  });
  app.addHook('onSend', async (req, reply, payload) => {
    if (core.draining) reply.header('Connection', 'close'); // keep-alive sockets would hold shutdown open
    return compressReply(req, reply, payload);
  });
  app.setErrorHandler((err: Error & { statusCode?: number }, _req, reply) => {
    const status = err instanceof ServeError ? err.status : err instanceof InputError ? 400 : (err.statusCode ?? 500);
    if (status >= 500) core.log('error', 'request failed', { error: err.message });
    void reply.code(status).send({ error: status === 413 ? `request body is larger than the limit of ${core.options.maxRequestBytes} bytes.` : err.message });
  });
  app.setNotFoundHandler((req, reply) => void reply.code(404).send({ error: `no route ${req.method} ${req.url.split('?')[0]}.` }));
  for (const p of [kserveRoutes, ...plugins]) await p.register(app, core);
  return app;
}

function registerKserve(app: FastifyInstance, core: ServerCore): void {
  app.get('/v2', async () => core.serverMetadata());
  app.get('/v2/health/live', async (_req, reply) => reply.code(core.live ? 200 : 503).send());
  app.get('/v2/health/ready', async (_req, reply) => reply.code(core.ready() ? 200 : 503).send());

  for (const base of ['/v2/models/:model', '/v2/models/:model/versions/:version']) {
    app.get(base, async (req) => core.modelMetadata(p(req).model!, p(req).version));
    app.get(`${base}/ready`, async (req, reply) => reply.code(core.modelReady(p(req).model!, p(req).version) ? 200 : 400).send());
    app.get(`${base}/config`, async (req) => core.repo.get(p(req).model!, p(req).version).model.config);
    app.get(`${base}/stats`, async (req) => core.statistics(p(req).model, p(req).version));
    app.post(`${base}/infer`, async (req, reply) => inferRoute(core, req, reply));
  }
  app.get('/v2/models/stats', async () => core.statistics());
  app.post('/v2/repository/index', async (req) => core.repositoryIndex(jsonBody(req).ready === true));
  app.post('/v2/repository/models/:model/load', async (req) => core.loadModel(p(req).model!).then(() => ({})));
  app.post('/v2/repository/models/:model/unload', async (req) => core.unloadModel(p(req).model!).then(() => ({})));
}

const p = (req: FastifyRequest) => req.params as Params;

function body(req: FastifyRequest, limit: number): Buffer {
  const raw = (req.body as Buffer | undefined) ?? Buffer.alloc(0);
  const enc = req.headers['content-encoding'];
  if (!enc || enc === 'identity') return raw;
  try {
    if (enc === 'gzip') return zlib.gunzipSync(raw, { maxOutputLength: limit });
    if (enc === 'deflate') return zlib.inflateSync(raw, { maxOutputLength: limit });
  } catch (e) {
    throw new ServeError(`cannot decompress the ${enc} request body (or it expands past ${limit} bytes): ${(e as Error).message}`, 400);
  }
  throw new ServeError(`unsupported Content-Encoding '${enc}'; use gzip, deflate or none.`, 415);
}

function jsonBody(req: FastifyRequest, b?: Buffer): Record<string, unknown> {
  const buf = b ?? (req.body as Buffer | undefined);
  if (!buf || buf.length === 0) return {};
  try {
    const v = JSON.parse(buf.toString('utf8')) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('the body must be a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new ServeError(`malformed JSON request body: ${(e as Error).message}.`, 400);
  }
}

async function inferRoute(core: ServerCore, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const buf = body(req, core.options.maxRequestBytes);
  const hdr = req.headers['inference-header-content-length'];
  let json: Buffer<ArrayBufferLike> = buf;
  let binary: Buffer<ArrayBufferLike> = Buffer.alloc(0);
  if (hdr !== undefined) {
    const n = Number(hdr);
    if (!Number.isInteger(n) || n < 0 || n > buf.length) throw new ServeError(`Inference-Header-Content-Length ${String(hdr)} does not fit a body of ${buf.length} bytes.`, 400);
    json = buf.subarray(0, n);
    binary = buf.subarray(n);
  }
  const r = jsonBody(req, json) as unknown as InferRequest;
  if (!Array.isArray(r.inputs)) throw new ServeError(`the request needs an 'inputs' array.`, 400);
  let off = 0;
  for (const inp of r.inputs as (InferRequest['inputs'][number] & { parameters?: Record<string, unknown> })[]) {
    const size = inp.parameters?.binary_data_size;
    if (size === undefined) continue;
    if (!Number.isInteger(size) || (size as number) < 0) throw new ServeError(`input '${inp.name}': binary_data_size must be a non-negative integer.`, 400);
    if (off + (size as number) > binary.length) {
      throw new ServeError(`binary data is truncated: input '${inp.name}' needs bytes ${off}..${off + (size as number)}, the body has ${binary.length} after the JSON header.`, 400);
    }
    inp.raw = binary.subarray(off, off + (size as number));
    off += size as number;
  }
  if (off !== binary.length) throw new ServeError(`the body has ${binary.length - off} bytes of binary data that no input claims (binary_data_size).`, 400);
  const res = await infer(core.repo, core.metrics, p(req).model!, p(req).version, r);
  return sendInfer(r, res, reply);
}

function sendInfer(req: InferRequest, res: InferResponse, reply: FastifyReply): unknown {
  const all = req.parameters?.binary_data_output === true;
  const wantsBinary = (name: string) => {
    const o = req.outputs?.find((x) => x.name === name);
    const b = o?.parameters?.binary_data;
    return b === undefined ? all : b === true;
  };
  const blobs: Uint8Array[] = [];
  const outputs = res.outputs.map((o) => {
    if (!wantsBinary(o.name)) return { name: o.name, datatype: o.datatype, shape: o.shape, data: tensorJson(o.tensor) };
    const b = tensorBytes(o.tensor);
    blobs.push(b);
    return { name: o.name, datatype: o.datatype, shape: o.shape, parameters: { binary_data_size: b.byteLength } };
  });
  const head = { model_name: res.model_name, model_version: res.model_version, ...(res.id !== undefined ? { id: res.id } : {}), outputs };
  if (blobs.length === 0) return reply.send(head);
  const h = Buffer.from(JSON.stringify(head));
  return reply
    .header('Content-Type', 'application/octet-stream')
    .header('Inference-Header-Content-Length', String(h.length))
    .send(Buffer.concat([h, ...blobs]));
}

function compressReply(req: FastifyRequest, reply: FastifyReply, payload: unknown): unknown {
  const accept = String(req.headers['accept-encoding'] ?? '');
  if (reply.getHeader('content-encoding')) return payload;
  const buf = typeof payload === 'string' ? Buffer.from(payload) : Buffer.isBuffer(payload) ? payload : null;
  if (!buf || buf.length < 1024) return payload;
  const enc = /\bgzip\b/.test(accept) ? 'gzip' : /\bdeflate\b/.test(accept) ? 'deflate' : undefined;
  if (!enc) return payload;
  reply.header('Content-Encoding', enc).removeHeader('content-length');
  return enc === 'gzip' ? zlib.gzipSync(buf) : zlib.deflateSync(buf);
}

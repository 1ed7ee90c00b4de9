// KServe v2 over HTTP/REST (fastify), with Triton's extensions: model configuration, statistics, model repository,
// binary tensor data; gzip/deflate request and response bodies.
import zlib from 'node:zlib';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { InputError } from '../index.js';
import { ServeError } from './batcher.js';
import { parseJsonObject, type HttpBody, type ResponseSpec } from './decode.js';
import { inferWith } from './infer.js';
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

  // hooks in callback style: an async hook costs a promise and a microtask turn per request, on the one thread
  // that parses every request (issue 9's load test is bound by this thread)
  if (core.options.apiKey) {
    app.addHook('onRequest', (req, _reply, done) => {
      if (req.url.startsWith('/v2/health')) return done();
      const auth = req.headers.authorization ?? '';
      const key = auth.startsWith('Bearer ') ? auth.slice(7) : req.headers['x-api-key'];
      done(key === core.options.apiKey ? undefined : new ServeError('missing or wrong API key; send "Authorization: Bearer <key>".', 401));
    });
  }
  app.addHook('onSend', (req, reply, payload, done) => {
    if (core.draining) reply.header('Connection', 'close'); // keep-alive sockets would hold shutdown open
    try {
      done(null, compressReply(req, reply, payload));
    } catch (e) {
      done(e as Error);
    }
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

function jsonBody(req: FastifyRequest): Record<string, unknown> {
  return parseJsonObject(req.body as Buffer | undefined);
}

/** The event loop only routes: the body is decoded, and a large JSON answer serialized, on a decode thread. */
async function inferRoute(core: ServerCore, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const enc = req.headers['content-encoding'];
  const hdr = req.headers['inference-header-content-length'];
  const b: HttpBody = {
    body: (req.body as Buffer | undefined) ?? Buffer.alloc(0),
    encoding: enc === undefined ? undefined : String(enc),
    headerLength: hdr === undefined ? undefined : String(hdr),
    limit: core.options.maxRequestBytes,
  };
  let spec: ResponseSpec = { all: false, perOutput: {} };
  const res = await inferWith(core.repo, core.metrics, p(req).model!, p(req).version, async (cfg) => {
    const d = await core.decoder.decode(cfg, b);
    spec = d.response;
    return d;
  });
  const { outputs, ...head } = res;
  const out = await core.decoder.encode(head, outputs, spec);
  reply.header('Content-Type', out.contentType);
  if (out.headerLength !== undefined) reply.header('Inference-Header-Content-Length', String(out.headerLength));
  return reply.send(Buffer.from(out.body.buffer, out.body.byteOffset, out.body.byteLength));
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

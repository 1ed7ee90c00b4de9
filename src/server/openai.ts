// The LLM routes of `kiln serve`: OpenAI-compatible /v1/completions, /v1/chat/completions and /v1/models (with
// server-sent-event streaming and OpenAI-style error bodies), and KServe's generate / generate_stream extension.
import crypto from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { GenerateEvent } from '../llm/engine.js';
import { ServeError } from './batcher.js';
import type { HttpPlugin } from './http.js';
import { samplingFrom, type LlmModels, type Sampling } from './llm.js';

type Body = Record<string, unknown>;
type Usage = { promptTokens: number; completionTokens: number };

/** The routes as a plugin of the server's HTTP app; each group in its own fastify context (own error format). */
export const llmRoutes: HttpPlugin = {
  name: 'llm',
  async register(app, core) {
    await app.register(async (v1) => openaiRoutes(v1, core.llm));
    await app.register(async (v2) => generateRoutes(v2, core.llm));
  },
};

// ---- OpenAI

async function openaiRoutes(app: FastifyInstance, llm: LlmModels): Promise<void> {
  app.setErrorHandler((err: Error & { statusCode?: number }, _req, reply) => {
    const status = err instanceof ServeError ? err.status : (err.statusCode ?? 500);
    void reply.code(status).send(openaiError(err.message, status));
  });
  app.get('/v1/models', async () => ({
    object: 'list',
    data: llm.ready().map((m) => ({ id: m.name, object: 'model', created: m.created, owned_by: 'kiln', root: m.dir })),
  }));
  app.get('/v1/models/:model', async (req) => {
    const m = llm.get((req.params as { model: string }).model);
    return { id: m.name, object: 'model', created: m.created, owned_by: 'kiln', root: m.dir };
  });
  app.post('/v1/completions', async (req, reply) => {
    const b = jsonBody(req);
    const prompt = completionPrompt(b.prompt);
    return openaiGenerate(llm, req, reply, b, prompt, 'text_completion');
  });
  app.post('/v1/chat/completions', async (req, reply) => {
    const b = jsonBody(req);
    const model = llm.get(modelName(b));
    const prompt = model.engine.applyChatTemplate(chatMessages(b.messages), true);
    return openaiGenerate(llm, req, reply, b, prompt, 'chat.completion');
  });
}

function openaiError(message: string, status: number) {
  const type = status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : status === 401 ? 'authentication_error' : 'invalid_request_error';
  const code = status === 404 ? 'model_not_found' : status === 429 ? 'rate_limit_exceeded' : status === 401 ? 'invalid_api_key' : null;
  return { error: { message, type, param: null, code } };
}

function modelName(b: Body): string {
  if (typeof b.model !== 'string' || b.model === '') throw new ServeError(`'model' is required: the name of a loaded LLM model (see GET /v1/models).`, 400);
  return b.model;
}

function completionPrompt(p: unknown): string | number[] {
  if (typeof p === 'string') return p;
  if (Array.isArray(p) && p.length > 0 && p.every((x) => Number.isInteger(x) && x >= 0)) return p as number[];
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) return completionPrompt(p[0]);
  if (Array.isArray(p) && p.length > 1) throw new ServeError(`'prompt' holds ${p.length} prompts; Kiln takes one prompt per request (send several requests, they are batched).`, 400);
  throw new ServeError(`'prompt' must be a string or an array of token ids, got ${JSON.stringify(p)?.slice(0, 80)}.`, 400);
}

function chatMessages(v: unknown): { role: string; content: string }[] {
  if (!Array.isArray(v) || v.length === 0) throw new ServeError(`'messages' must be a non-empty array of {role, content}.`, 400);
  return v.map((m: { role?: unknown; content?: unknown }, i) => {
    if (typeof m?.role !== 'string') throw new ServeError(`messages[${i}].role must be a string (system, user, assistant).`, 400);
    if (typeof m.content === 'string') return { role: m.role, content: m.content };
    if (Array.isArray(m.content)) {
      const parts = m.content.map((part: { type?: unknown; text?: unknown }, j) => {
        if (part?.type !== 'text' || typeof part.text !== 'string') throw new ServeError(`messages[${i}].content[${j}]: only text parts are supported, got type ${JSON.stringify(part?.type)}.`, 400);
        return part.text;
      });
      return { role: m.role, content: parts.join('') };
    }
    throw new ServeError(`messages[${i}].content must be a string or an array of text parts.`, 400);
  });
}

/** OpenAI parameters Kiln does not implement are refused rather than silently ignored. */
function openaiSampling(b: Body): Sampling {
  if (b.n !== undefined && b.n !== null && b.n !== 1) throw new ServeError(`'n' must be 1: Kiln returns one choice per request (send n requests instead), got ${JSON.stringify(b.n)}.`, 400);
  if (b.best_of !== undefined && b.best_of !== null && b.best_of !== 1) throw new ServeError(`'best_of' must be 1, got ${JSON.stringify(b.best_of)}.`, 400);
  if (b.echo === true) throw new ServeError(`'echo' is not supported.`, 400);
  if (b.logprobs !== undefined && b.logprobs !== null && b.logprobs !== false) throw new ServeError(`'logprobs' is not supported.`, 400);
  for (const k of ['presence_penalty', 'frequency_penalty']) {
    if (b[k] !== undefined && b[k] !== null && b[k] !== 0) throw new ServeError(`'${k}' is not supported; use 'repetition_penalty' (e.g. 1.1).`, 400);
  }
  if (b.stream !== undefined && typeof b.stream !== 'boolean') throw new ServeError(`'stream' must be a boolean.`, 400);
  return samplingFrom(b);
}

async function openaiGenerate(llm: LlmModels, req: FastifyRequest, reply: FastifyReply, b: Body, prompt: string | number[], object: 'text_completion' | 'chat.completion'): Promise<unknown> {
  const model = modelName(b);
  const sampling = openaiSampling(b);
  if (sampling.maxTokens === undefined) {
    // OpenAI's defaults: 16 for completions; for chat, as long as the context allows
    sampling.maxTokens = object === 'text_completion' ? 16 : llm.roomAfter(model, typeof prompt === 'string' ? llm.get(model).engine.tokenizer.encode(prompt).length : prompt.length);
  }
  const chat = object === 'chat.completion';
  const id = `${chat ? 'chatcmpl' : 'cmpl'}-${crypto.randomUUID().replace(/-/g, '')}`;
  const created = Math.floor(Date.now() / 1000);
  const usage: Usage = { promptTokens: 0, completionTokens: 0 };
  const abort = abortOnDisconnect(reply);
  const events = llm.generate(model, prompt, sampling, abort.signal, usage);
  const usageJson = () => ({ prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens, total_tokens: usage.promptTokens + usage.completionTokens });

  if (b.stream !== true) {
    const { text, finish } = await collect(events);
    if (abort.signal.aborted) return gone(reply);
    const choice = chat ? { index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finish ?? 'stop' } : { index: 0, text, logprobs: null, finish_reason: finish ?? 'stop' };
    return reply.send({ id, object, created, model, choices: [choice], usage: usageJson() });
  }

  const includeUsage = (b.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
  const chunkObject = chat ? 'chat.completion.chunk' : 'text_completion';
  const chunk = (choice: Record<string, unknown> | null) => ({ id, object: chunkObject, created, model, choices: choice ? [choice] : [], ...(includeUsage ? { usage: null } : {}) });
  const choiceOf = (text: string, finish: string | null, role?: string) =>
    chat ? { index: 0, delta: role ? { role, content: text } : finish && !text ? {} : { content: text }, logprobs: null, finish_reason: finish } : { index: 0, text, logprobs: null, finish_reason: finish };
  await sse(reply, events, abort, {
    first: chat ? chunk(choiceOf('', null, 'assistant')) : undefined,
    event: (ev) => chunk(choiceOf(ev.text, ev.finishReason ?? null)),
    last: (finish) => [...(finish ? [] : [chunk(choiceOf('', 'stop'))]), ...(includeUsage ? [{ ...chunk(null), usage: usageJson() }] : [])],
    error: (e) => openaiError(e.message, e instanceof ServeError ? e.status : 500),
    done: true,
  });
  return reply;
}

// ---- KServe generate extension

async function generateRoutes(app: FastifyInstance, llm: LlmModels): Promise<void> {
  for (const base of ['/v2/models/:model', '/v2/models/:model/versions/:version']) {
    app.post(`${base}/generate`, async (req, reply) => kserveGenerate(llm, req, reply, false));
    app.post(`${base}/generate_stream`, async (req, reply) => kserveGenerate(llm, req, reply, true));
  }
}

async function kserveGenerate(llm: LlmModels, req: FastifyRequest, reply: FastifyReply, stream: boolean): Promise<unknown> {
  const { model, version } = req.params as { model: string; version?: string };
  if (version !== undefined && version !== '1') throw new ServeError(`LLM model '${model}' has one version, 1; got '${version}'.`, 404);
  const b = jsonBody(req);
  const text = b.text_input;
  if (typeof text !== 'string') throw new ServeError(`the request needs 'text_input' (a string), got ${JSON.stringify(text)?.slice(0, 80)}.`, 400);
  const params = b.parameters ?? {};
  if (typeof params !== 'object' || Array.isArray(params)) throw new ServeError(`'parameters' must be an object.`, 400);
  const sampling = samplingFrom(params as Body, 'parameters.');
  const abort = abortOnDisconnect(reply);
  const usage: Usage = { promptTokens: 0, completionTokens: 0 };
  const events = llm.generate(model, text, sampling, abort.signal, usage);
  const head = { model_name: model, model_version: '1', ...(b.id !== undefined ? { id: b.id } : {}) };
  if (!stream) {
    const { text: out, finish } = await collect(events);
    if (abort.signal.aborted) return gone(reply);
    return reply.send({ ...head, text_output: out, finish_reason: finish ?? 'stop', usage: { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens } });
  }
  await sse(reply, events, abort, {
    event: (ev) => ({ ...head, text_output: ev.text, ...(ev.finishReason ? { finish_reason: ev.finishReason } : {}) }),
    last: () => [],
    error: (e) => ({ error: e.message }),
    done: false,
  });
  return reply;
}

// ---- shared plumbing

function jsonBody(req: FastifyRequest): Body {
  const buf = req.body as Buffer | undefined;
  if (!buf || buf.length === 0) throw new ServeError('the request needs a JSON body.', 400);
  if (req.headers['content-encoding'] && req.headers['content-encoding'] !== 'identity') throw new ServeError(`Content-Encoding '${req.headers['content-encoding']}' is not supported on the LLM routes; send plain JSON.`, 415);
  let v: unknown;
  try {
    v = JSON.parse(buf.toString('utf8'));
  } catch (e) {
    throw new ServeError(`malformed JSON request body: ${(e as Error).message}.`, 400);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ServeError('the body must be a JSON object.', 400);
  return v as Body;
}

/** The client left before the answer was ready: nothing to send. */
/** A non-streamed answer: the whole text and the last finish reason. */
async function collect(events: AsyncGenerator<GenerateEvent>): Promise<{ text: string; finish?: string }> {
  let text = '';
  let finish: string | undefined;
  for await (const ev of events) {
    text += ev.text;
    finish = ev.finishReason ?? finish;
  }
  return { text, finish };
}

function gone(reply: FastifyReply): FastifyReply {
  reply.hijack();
  reply.raw.destroy();
  return reply;
}

/** Aborts generation when the client goes away before the answer is complete. */
function abortOnDisconnect(reply: FastifyReply): AbortController {
  const abort = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) abort.abort();
  });
  return abort;
}

interface SseShape {
  first?: unknown;
  event: (ev: GenerateEvent) => unknown;
  last: (finished: boolean) => unknown[];
  error: (e: Error) => unknown;
  /** End with OpenAI's `data: [DONE]`. */
  done: boolean;
}

/**
 * Stream events as server-sent events. The first event is awaited before the headers go out, so a request the
 * engine refuses still gets a proper 4xx status and body.
 */
async function sse(reply: FastifyReply, events: AsyncGenerator<GenerateEvent>, abort: AbortController, shape: SseShape): Promise<void> {
  const first = await events.next();
  if (abort.signal.aborted) {
    await events.return(undefined);
    return;
  }
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
  const send = (obj: unknown) => res.write(`data: ${JSON.stringify(obj)}\n\n`);
  let finished = false;
  try {
    if (shape.first) send(shape.first);
    let r = first;
    while (!r.done) {
      if (abort.signal.aborted) break;
      send(shape.event(r.value));
      if (r.value.finishReason && r.value.finishReason !== 'cancelled') finished = true;
      r = await events.next();
    }
    if (!abort.signal.aborted) for (const x of shape.last(finished)) send(x);
  } catch (e) {
    if (!abort.signal.aborted) send(shape.error(e as Error));
  } finally {
    await events.return(undefined);
  }
  if (!abort.signal.aborted && shape.done) res.write('data: [DONE]\n\n');
  res.end();
}

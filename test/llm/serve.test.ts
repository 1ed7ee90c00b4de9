// The LLM endpoints of `kiln serve` (OpenAI-compatible and KServe generate), against the real server on loopback with
// the tiny GPT-2 and Llama fixtures, next to an ONNX model in the same repository.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder, saveOnnx } from '../../src/index.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { LLM_METRICS } from '../../src/server/llm-metrics.js';
import { metricValue } from '../server/repo.js';
import { Tokenizer } from '../../src/llm/tokenizer.js';

const FIX = path.resolve('test/fixtures/llm');
const expected = (m: string) => JSON.parse(fs.readFileSync(path.join(FIX, m, 'expected.json'), 'utf8'));
const gpt2 = expected('gpt2-tiny');
const llama = expected('llama-tiny');
/** What a stream of the reference output reads as: its text in the context of the prompt (a leading space kept). */
function streamedText(m: string, ref: { prompt_ids: number[]; output_ids: number[] }): string {
  const tok = Tokenizer.fromDir(path.join(FIX, m));
  const opts = { skipSpecialTokens: true };
  return tok.decode([...ref.prompt_ids, ...ref.output_ids], opts).slice(tok.decode(ref.prompt_ids, opts).length);
}

let root: string;
let server: RunningServer;
let url: string;

const post = (p: string, body: unknown, init: RequestInit = {}) =>
  fetch(url + p, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body), ...init });
const json = async (p: string, body: unknown) => {
  const r = await post(p, body);
  return { status: r.status, body: await r.json() };
};

/** Server-sent events of a response: the `data:` payloads in order (JSON-parsed except `[DONE]`). */
async function sseEvents(r: Response): Promise<unknown[]> {
  expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const text = await r.text();
  return text
    .split('\n\n')
    .filter((block) => block.trim() !== '')
    .map((block) => {
      expect(block.startsWith('data: ')).toBe(true);
      const data = block.slice('data: '.length);
      return data === '[DONE]' ? data : JSON.parse(data);
    });
}

async function until(cond: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-llm-serve-'));
  fs.symlinkSync(path.join(FIX, 'gpt2-tiny'), path.join(root, 'gpt2')); // a plain Hugging Face folder
  fs.mkdirSync(path.join(root, 'llama'));
  fs.writeFileSync(path.join(root, 'llama', 'config.json'), JSON.stringify({ backend: 'kiln_llm', parameters: { max_batch: { string_value: '4' } } }));
  fs.symlinkSync(path.join(FIX, 'llama-tiny'), path.join(root, 'llama', '1'));
  fs.mkdirSync(path.join(root, 'relu', '1'), { recursive: true }); // an ONNX model served next to them
  const b = new GraphBuilder('relu');
  b.input('x', 'float32', [2]);
  b.node('Relu', ['x'], {}, { outputs: ['y'] });
  b.output('y', { kind: 'tensor', dtype: 'float32', shape: [2] });
  await saveOnnx(b.model(17), path.join(root, 'relu', '1', 'model.onnx'));
  server = await startServer({ repository: root, httpPort: 0, grpcPort: -1, metricsPort: 0, workers: false, maxQueueSize: 2, log: () => {} });
  url = server.httpUrl!;
}, 60_000);
afterAll(async () => {
  await server?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('LLM models in the model repository', () => {
  it('detects LLM folders next to ONNX models: /v1/models, the KServe index, metadata and readiness', async () => {
    const models = await (await fetch(`${url}/v1/models`)).json();
    expect(models.object).toBe('list');
    expect(models.data.map((m: { id: string }) => m.id)).toEqual(['gpt2', 'llama']);
    const index = (await json('/v2/repository/index', {})).body as { name: string; state: string }[];
    expect(index.map((m) => `${m.name}:${m.state}`)).toEqual(['gpt2:READY', 'llama:READY', 'relu:READY']);
    const meta = await (await fetch(`${url}/v2/models/llama`)).json();
    expect(meta).toMatchObject({ name: 'llama', platform: 'kiln_llm', inputs: [{ name: 'text_input', datatype: 'BYTES' }], outputs: [{ name: 'text_output' }] });
    expect((await fetch(`${url}/v2/models/gpt2/ready`)).status).toBe(200);
    const infer = await json('/v2/models/relu/infer', { inputs: [{ name: 'x', datatype: 'FP32', shape: [2], data: [-1, 2] }] });
    expect(infer.body.outputs[0].data).toEqual([0, 2]);
    expect((await fetch(`${url}/v2/health/ready`)).status).toBe(200);
  });
});

describe('OpenAI-compatible API', () => {
  it('completes greedily with the reference tokens of the GPT-2 and Llama fixtures, with usage counts', async () => {
    for (const [model, dir, ref] of [['gpt2', 'gpt2-tiny', gpt2.greedy[0]], ['llama', 'llama-tiny', llama.greedy[3]]] as const) {
      const { status, body } = await json('/v1/completions', { model, prompt: ref.prompt, max_tokens: ref.output_ids.length, temperature: 0 });
      expect(status).toBe(200);
      expect(body).toMatchObject({ object: 'text_completion', model, choices: [{ index: 0, finish_reason: 'length' }] });
      expect(body.id).toMatch(/^cmpl-/);
      expect(body.choices[0].text).toBe(streamedText(dir, ref));
      expect(body.usage).toEqual({ prompt_tokens: ref.prompt_ids.length, completion_tokens: ref.output_ids.length, total_tokens: ref.prompt_ids.length + ref.output_ids.length });
    }
  });

  it('accepts a prompt as token ids', async () => {
    const ref = gpt2.greedy[0];
    const { body } = await json('/v1/completions', { model: 'gpt2', prompt: ref.prompt_ids, max_tokens: 8, temperature: 0 });
    const byText = (await json('/v1/completions', { model: 'gpt2', prompt: ref.prompt, max_tokens: 8, temperature: 0 })).body;
    expect(body.choices[0].text).toBe(byText.choices[0].text);
    expect(body.usage.prompt_tokens).toBe(ref.prompt_ids.length);
  });

  it('streams server-sent events whose text adds up to the non-streamed answer, ending with usage and [DONE]', async () => {
    const req = { model: 'gpt2', prompt: gpt2.greedy[0].prompt, max_tokens: 12, temperature: 0 };
    const whole = (await json('/v1/completions', req)).body;
    const events = await sseEvents(await post('/v1/completions', { ...req, stream: true, stream_options: { include_usage: true } }));
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1) as { object: string; choices: { text: string; finish_reason: string | null }[]; usage: unknown }[];
    expect(chunks.every((c) => c.object === 'text_completion')).toBe(true);
    const withChoice = chunks.filter((c) => c.choices.length > 0);
    expect(withChoice.length).toBe(12);
    expect(withChoice.map((c) => c.choices[0].text).join('')).toBe(whole.choices[0].text);
    expect(withChoice.at(-1)!.choices[0].finish_reason).toBe('length');
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { completion_tokens: 12, prompt_tokens: whole.usage.prompt_tokens } });
  });

  it('chat: applies the model chat template, answers as the assistant, and streams deltas', async () => {
    const messages = llama.chat.messages;
    const viaTemplate = (await json('/v1/completions', { model: 'llama', prompt: llama.chat.text, max_tokens: 10, temperature: 0 })).body;
    const { status, body } = await json('/v1/chat/completions', { model: 'llama', messages, max_tokens: 10, temperature: 0 });
    expect(status).toBe(200);
    expect(body).toMatchObject({ object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant' }, finish_reason: 'length' }] });
    expect(body.id).toMatch(/^chatcmpl-/);
    expect(body.choices[0].message.content).toBe(viaTemplate.choices[0].text);
    expect(body.usage.prompt_tokens).toBe(viaTemplate.usage.prompt_tokens);
    const events = await sseEvents(await post('/v1/chat/completions', { model: 'llama', messages, max_tokens: 10, temperature: 0, stream: true }));
    const chunks = events.slice(0, -1) as { object: string; choices: { delta: { role?: string; content?: string } }[] }[];
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(chunks.every((c) => c.object === 'chat.completion.chunk')).toBe(true);
    expect(chunks.map((c) => c.choices[0].delta.content ?? '').join('')).toBe(body.choices[0].message.content);
  });

  it('samples reproducibly with a seed, and stops at a stop sequence', async () => {
    const req = { model: 'gpt2', prompt: 'Hello', max_tokens: 16, temperature: 1, top_k: 50, top_p: 0.9, seed: 1234 };
    const a = (await json('/v1/completions', req)).body.choices[0].text;
    const b = (await json('/v1/completions', req)).body.choices[0].text;
    expect(a).toBe(b);
    const ref = llama.greedy[2]; // "Hello, world! How" -> "3 Numberkeys an Number..."
    const full = streamedText('llama-tiny', ref);
    const stop = full.slice(5, 11);
    const { body } = await json('/v1/completions', { model: 'llama', prompt: ref.prompt, max_tokens: 24, temperature: 0, stop });
    expect(body.choices[0].finish_reason).toBe('stop');
    expect(body.choices[0].text).toBe(full.slice(0, full.indexOf(stop)));
  });

  it('answers bad requests with OpenAI-style errors: 400 for bad parameters, 404 for an unknown model', async () => {
    const bad = async (body: unknown, status: number, pattern: RegExp, p = '/v1/completions') => {
      const r = await json(p, body);
      expect(r.status).toBe(status);
      expect(r.body.error.message).toMatch(pattern);
      expect(typeof r.body.error.type).toBe('string');
    };
    await bad({ model: 'gpt2', prompt: 'x', n: 2 }, 400, /'n' must be 1/);
    await bad({ model: 'gpt2', prompt: 'x', temperature: -1 }, 400, /'temperature' must be a number in \[0, 2\]/);
    await bad({ model: 'gpt2', prompt: 'x', max_tokens: 'ten' }, 400, /'max_tokens' must be an integer/);
    await bad({ model: 'gpt2', prompt: ['a', 'b'] }, 400, /2 prompts/);
    await bad({ model: 'gpt2' }, 400, /'prompt' must be a string/);
    await bad({ prompt: 'x' }, 400, /'model' is required/);
    await bad({ model: 'nope', prompt: 'x' }, 404, /unknown model 'nope'/);
    await bad({ model: 'llama', messages: [] }, 400, /'messages' must be a non-empty array/, '/v1/chat/completions');
    await bad({ model: 'llama', messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }, 400, /only text parts/, '/v1/chat/completions');
    await bad('{"model": ', 400, /malformed JSON/);
    const nf = await json('/v1/completions', { model: 'nope', prompt: 'x' });
    expect(nf.body.error.code).toBe('model_not_found');
  });

  it('cancels generation when the client disconnects mid-stream', async () => {
    const cancelled = () => metricValue(server.metricsUrl!, LLM_METRICS.requests, 'finish_reason="cancelled"');
    const before = await cancelled();
    const tokens = () => metricValue(server.metricsUrl!, LLM_METRICS.generatedTokens, 'model="gpt2"');
    const tokensBefore = await tokens();
    const abort = new AbortController();
    const r = await post('/v1/completions', { model: 'gpt2', prompt: 'The', max_tokens: 240, ignore_eos: true, stream: true }, { signal: abort.signal });
    const reader = r.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first.startsWith('data: {')).toBe(true);
    abort.abort();
    await until(async () => (await cancelled()) === before + 1, 'the cancelled request to be counted');
    await until(async () => (await metricValue(server.metricsUrl!, LLM_METRICS.running, 'model="gpt2"')) === 0, 'no running requests');
    expect((await tokens()) - tokensBefore).toBeLessThan(240); // it stopped early
    // the server keeps serving
    expect((await json('/v1/completions', { model: 'gpt2', prompt: 'The', max_tokens: 2 })).status).toBe(200);
  });

  it('refuses requests beyond the in-flight bound with 429', async () => {
    const aborts = [new AbortController(), new AbortController()];
    const streams = await Promise.all(aborts.map((a) => post('/v1/completions', { model: 'gpt2', prompt: 'The', max_tokens: 240, ignore_eos: true, stream: true }, { signal: a.signal })));
    for (const s of streams) await s.body!.getReader().read(); // both are generating
    const r = await json('/v1/completions', { model: 'gpt2', prompt: 'x', max_tokens: 2 });
    expect(r.status).toBe(429);
    expect(r.body.error.type).toBe('rate_limit_error');
    for (const a of aborts) a.abort();
    await until(async () => (await json('/v1/completions', { model: 'gpt2', prompt: 'x', max_tokens: 1 })).status === 200, 'capacity to come back');
  });
});

describe('KServe generate extension', () => {
  it('generate returns text_output equal to the OpenAI completion; generate_stream streams it', async () => {
    const params = { max_tokens: 10, temperature: 0 };
    const openai = (await json('/v1/completions', { model: 'llama', prompt: 'Kiln compiles', ...params })).body.choices[0].text;
    const { status, body } = await json('/v2/models/llama/generate', { id: 'g1', text_input: 'Kiln compiles', parameters: params });
    expect(status).toBe(200);
    expect(body).toMatchObject({ id: 'g1', model_name: 'llama', model_version: '1', text_output: openai });
    const events = (await sseEvents(await post('/v2/models/llama/versions/1/generate_stream', { text_input: 'Kiln compiles', parameters: params }))) as { text_output: string }[];
    expect(events.length).toBe(10);
    expect(events.map((e) => e.text_output).join('')).toBe(openai);
  });

  it('answers bad generate requests with KServe errors', async () => {
    const r = await json('/v2/models/llama/generate', { parameters: {} });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/text_input/);
    const u = await json('/v2/models/nope/generate', { text_input: 'x' });
    expect(u.status).toBe(404);
    expect((await json('/v2/models/llama/generate', { text_input: 'x', parameters: { top_p: 2 } })).status).toBe(400);
  });
});

describe('LLM metrics', () => {
  it('exports TTFT, inter-token latency, token counters and KV-cache gauges', async () => {
    const text = await (await fetch(server.metricsUrl!)).text();
    for (const name of Object.values(LLM_METRICS)) expect(text).toContain(`# TYPE ${name}`);
    expect(await metricValue(server.metricsUrl!, `${LLM_METRICS.ttft}_count`, 'model="gpt2"')).toBeGreaterThan(0);
    expect(await metricValue(server.metricsUrl!, `${LLM_METRICS.itl}_count`, 'model="llama"')).toBeGreaterThan(0);
    expect(await metricValue(server.metricsUrl!, LLM_METRICS.generatedTokens, 'model="gpt2"')).toBeGreaterThan(24);
    expect(await metricValue(server.metricsUrl!, LLM_METRICS.kvBlocks, 'state="total"')).toBeGreaterThan(0);
  });
});

describe('model control', () => {
  it('loads and unloads an LLM model through the KServe repository API in explicit mode', async () => {
    const s = await startServer({ repository: root, httpPort: 0, grpcPort: -1, metricsPort: -1, workers: false, modelControlMode: 'explicit', log: () => {} });
    try {
      const models = async () => ((await (await fetch(`${s.httpUrl}/v1/models`)).json()).data as { id: string }[]).map((m) => m.id);
      expect(await models()).toEqual([]);
      expect((await fetch(`${s.httpUrl}/v2/repository/models/gpt2/load`, { method: 'POST' })).status).toBe(200);
      expect(await models()).toEqual(['gpt2']);
      expect((await fetch(`${s.httpUrl}/v2/models/gpt2/ready`)).status).toBe(200);
      expect((await fetch(`${s.httpUrl}/v2/repository/models/gpt2/unload`, { method: 'POST' })).status).toBe(200);
      expect(await models()).toEqual([]);
      expect((await fetch(`${s.httpUrl}/v2/models/gpt2/ready`)).status).toBe(400);
      const r = await fetch(`${s.httpUrl}/v1/completions`, { method: 'POST', body: JSON.stringify({ model: 'gpt2', prompt: 'x' }) });
      expect(r.status).toBe(400);
      expect((await r.json()).error.message).toMatch(/not ready \(UNAVAILABLE: unloaded\)/);
    } finally {
      await s.close();
    }
  });
});

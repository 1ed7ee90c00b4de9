// `kiln generate` and `kiln bench --llm` through the CLI, on the tiny GPT-2 and Llama fixtures; the bench report's
// pure parts in-process.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { kiln } from '../helpers/cli.js';
import { formatLlmBench, parseConcurrency, percentiles, type LlmBenchLevel } from '../../src/tools/bench-llm.js';

const FIX = 'test/fixtures/llm';
const expected = (m: string) => JSON.parse(fs.readFileSync(path.join(FIX, m, 'expected.json'), 'utf8'));

describe('kiln generate', () => {
  it('streams the greedy continuation to stdout, token-identical to the reference', async () => {
    const ref = expected('gpt2-tiny').greedy[0];
    const r = await kiln('generate', '--model', `${FIX}/gpt2-tiny`, '--prompt', ref.prompt, '--max-tokens', String(ref.output_ids.length), '--stats');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(ref.text + '\n');
    expect(r.stderr).toMatch(new RegExp(`prompt: ${ref.prompt_ids.length} tokens; generated: ${ref.output_ids.length} tokens \\(finish: length\\)`));
    expect(r.stderr).toMatch(/time to first token: [0-9.]+ ms/);
  }, 60_000);

  it('--chat wraps the prompt (and --system) in the model chat template', async () => {
    const chat = expected('llama-tiny').chat;
    const [sys, user] = chat.messages.map((m: { content: string }) => m.content);
    const [viaChat, viaText] = await Promise.all([
      kiln('generate', '--model', `${FIX}/llama-tiny`, '--chat', '--system', sys, '--prompt', user, '--max-tokens', '6'),
      kiln('generate', '--model', `${FIX}/llama-tiny`, '--prompt', chat.text, '--max-tokens', '6'),
    ]);
    expect(viaChat.code).toBe(0);
    expect(viaChat.stdout.length).toBeGreaterThan(1);
    expect(viaChat.stdout).toBe(viaText.stdout);
  }, 60_000);

  it('fails with a clear message for a missing model', async () => {
    const missing = await kiln('generate', '--model', `${FIX}/no-such-model`, '--prompt', 'x');
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/no-such-model/);
  }, 60_000);
});

describe('kiln bench --llm', () => {
  it('reports throughput, TTFT and inter-token latency per concurrency level as JSON', async () => {
    const r = await kiln('bench', '--llm', `${FIX}/gpt2-tiny`, '--concurrency', '1,4', '--prompt-len', '8', '--output-len', '6', '--requests', '4', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ promptLen: 8, outputLen: 6 });
    expect(out.levels.map((l: { concurrency: number }) => l.concurrency)).toEqual([1, 4]);
    for (const l of out.levels) {
      expect(l.requests).toBe(4);
      expect(l.outputTokens).toBe(24);
      expect(l.tokensPerS).toBeGreaterThan(0);
      expect(l.ttftMs.p50).toBeGreaterThan(0);
      expect(l.ttftMs.p99).toBeGreaterThanOrEqual(l.ttftMs.p50);
      expect(l.itlMs.p90).toBeGreaterThanOrEqual(l.itlMs.p50);
    }
  }, 60_000);

  it('formats a table, takes percentiles by nearest rank, and rejects a malformed --concurrency list', () => {
    expect(percentiles([5, 1, 4, 2, 3])).toEqual({ mean: 3, p50: 3, p90: 5, p99: 5 });
    expect(percentiles(Array.from({ length: 100 }, (_, i) => i + 1))).toMatchObject({ p50: 50, p90: 90, p99: 99 });
    const p = percentiles([1, 2]);
    const level: LlmBenchLevel = { concurrency: 8, requests: 16, durationS: 2, outputTokens: 2048, tokensPerS: 1024, requestsPerS: 8, ttftMs: p, itlMs: p, e2eMs: p };
    const table = formatLlmBench({ promptLen: 128, outputLen: 128, levels: [level] }).split('\n');
    expect(table[0]).toBe('prompt 128 tokens, output 128 tokens; latencies in ms');
    expect(table[1]).toMatch(/^concurrency\s+requests\s+tokens\/s\s+req\/s\s+TTFT p50/);
    expect(table[2].trim().split(/\s+/).slice(0, 4)).toEqual(['8', '16', '1024', '8.00']);
    expect(parseConcurrency('1, 8,32')).toEqual([1, 8, 32]);
    expect(() => parseConcurrency('1,x')).toThrow(/--concurrency: expected positive integers/);
  });
});

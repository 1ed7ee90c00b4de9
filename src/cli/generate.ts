// `kiln generate`: run a decoder model on one prompt and stream the text to stdout; and the flags of `kiln bench --llm`.
import fs from 'node:fs';
import { Command, Option } from 'commander';
import { InputError } from '../ir/errors.js';
import { LlmEngine } from '../llm/engine.js';
import { benchLlm, formatLlmBench, parseConcurrency } from '../tools/bench-llm.js';

const int = (flag: string, min: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new InputError(`${flag} needs an integer >= ${min}, got '${v}'.`);
  return n;
};
const real = (flag: string, min: number, max: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new InputError(`${flag} needs a number in [${min}, ${max}], got '${v}'.`);
  return n;
};
const collect = (v: string, prev: string[]) => [...prev, v];

export function generateCommand(): Command {
  return new Command('generate')
    .description('generate text with a decoder model (Hugging Face folder: config.json, *.safetensors, tokenizer.json), streaming to stdout')
    .requiredOption('--model <dir>', 'model folder')
    .requiredOption('--prompt <text>', "the prompt ('-' reads it from stdin)")
    .option('--max-tokens <n>', 'tokens to generate at most', int('--max-tokens', 1), 64)
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', real('--temperature', 0, 100), 0)
    .option('--top-k <n>', 'sample among the k most likely tokens (0 = all)', int('--top-k', 0))
    .option('--top-p <p>', 'nucleus sampling: smallest set of tokens with this much probability', real('--top-p', 0, 1))
    .option('--repetition-penalty <r>', 'divide the logits of tokens already seen (1 = off)', real('--repetition-penalty', 0, 10))
    .option('--seed <n>', 'sampling seed', int('--seed', 0))
    .option('--stop <text>', 'stop when this text is generated (repeatable)', collect, [])
    .option('--ignore-eos', 'keep generating past the end-of-sequence token')
    .option('--chat', "wrap the prompt as a user message in the model's chat template")
    .option('--system <text>', 'with --chat: a system message first')
    .addOption(new Option('--provider <p>', 'where to run').choices(['cpu', 'cuda']).default('cpu'))
    .addOption(new Option('--dtype <t>', 'weights and activations type').choices(['float32', 'float16', 'bfloat16']))
    .option('--stats', 'print token counts, time to first token and tokens/s on stderr')
    .action(async (o) => {
      const engine = await LlmEngine.load(o.model, { provider: o.provider, dtype: o.dtype, maxBatch: 1 });
      try {
        await generateToStdout(engine, o);
      } finally {
        await engine.close();
      }
    });
}

async function generateToStdout(engine: LlmEngine, o: Record<string, any>): Promise<void> {
  let prompt = o.prompt === '-' ? fs.readFileSync(0, 'utf8') : String(o.prompt);
  if (o.system && !o.chat) throw new InputError('--system needs --chat.');
  if (o.chat) prompt = engine.applyChatTemplate([...(o.system ? [{ role: 'system', content: String(o.system) }] : []), { role: 'user', content: prompt }], true);
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once('SIGINT', onSigint);
  const t0 = performance.now();
  let first = 0;
  let n = 0;
  let finish = '';
  try {
    const events = engine.generate({
      prompt, maxTokens: o.maxTokens, temperature: o.temperature, topK: o.topK || undefined, topP: o.topP, repetitionPenalty: o.repetitionPenalty,
      seed: o.seed, stop: o.stop.length ? o.stop : undefined, ignoreEos: !!o.ignoreEos, signal: abort.signal,
    });
    for await (const ev of events) {
      if (n++ === 0) first = performance.now();
      if (ev.text) process.stdout.write(ev.text);
      if (ev.finishReason) finish = ev.finishReason;
    }
  } finally {
    process.off('SIGINT', onSigint);
  }
  process.stdout.write('\n');
  if (o.stats) {
    const t = performance.now();
    const decodeS = (t - first) / 1000;
    process.stderr.write(`prompt: ${engine.tokenizer.encode(prompt).length} tokens; generated: ${n} tokens (finish: ${finish || 'stop'}); `
      + `time to first token: ${(first - t0).toFixed(1)} ms; ${n > 1 && decodeS > 0 ? ((n - 1) / decodeS).toFixed(1) : '-'} tokens/s after it\n`);
  }
}

/** `kiln bench --llm DIR` flags, added to `kiln bench`. */
export function addLlmBenchOptions(cmd: Command): Command {
  return cmd
    .option('--llm <dir>', 'benchmark a decoder model folder (serving load: concurrency levels, tokens/s, TTFT, inter-token latency)')
    .option('--concurrency <list>', 'with --llm: concurrent requests per level', '1,8,32,64')
    .option('--prompt-len <n>', 'with --llm: prompt tokens per request', int('--prompt-len', 1), 128)
    .option('--output-len <n>', 'with --llm: generated tokens per request (end-of-sequence ignored)', int('--output-len', 1), 128)
    .option('--requests <n>', 'with --llm: requests per level (default: 2 x concurrency, at least 4)', int('--requests', 1))
    .option('--max-batch <n>', 'with --llm: engine batch limit (default: the largest concurrency)', int('--max-batch', 1))
    .option('--kv-blocks <n>', 'with --llm: KV-cache blocks', int('--kv-blocks', 1))
    .addOption(new Option('--dtype <t>', 'with --llm: weights and activations type').choices(['float32', 'float16', 'bfloat16']));
}

/** The `kiln bench --llm` action. */
export async function llmBenchAction(o: Record<string, any>): Promise<void> {
  const concurrency = parseConcurrency(String(o.concurrency));
  const device = String(o.device ?? 'cpu');
  const provider = device.startsWith('cuda') ? 'cuda' : 'cpu';
  const engine = await LlmEngine.load(o.llm, { provider, dtype: o.dtype, maxBatch: o.maxBatch ?? Math.max(...concurrency), kvBlocks: o.kvBlocks });
  try {
    const result = await benchLlm(engine, {
      concurrency, promptLen: o.promptLen, outputLen: o.outputLen, requests: o.requests, seed: o.seed,
      onLevel: o.json ? undefined : (c) => process.stderr.write(`concurrency ${c}...\n`),
    });
    if (o.json) console.log(JSON.stringify({ model: o.llm, device: provider, ...result }, null, 2));
    else console.log(`Model: ${o.llm} (${engine.name}, ${provider})\n` + formatLlmBench(result));
  } finally {
    await engine.close();
  }
}

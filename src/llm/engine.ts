// LlmEngine: a decoder model served with a paged KV cache and in-flight batching. Every step the scheduler admits
// waiting requests (FIFO) while their whole KV budget (prompt + maxTokens) fits, so a running request never runs out
// of blocks mid-generation (TensorRT-LLM's "guaranteed no evict" policy); decodes of running requests go first, then
// prompt chunks fill the step's token budget (chunked prefill), and finished or cancelled requests leave at once.
// When the next step can only continue this one (every running request decoding greedily, nobody waiting), it is
// queued before this one finishes, its ids taken from this step's tokens on the device (`chain`).
import path from 'node:path';
import { InputError, KilnError } from '../ir/errors.js';
import { loadModelConfig, type ModelConfig } from './config.js';
import { Tokenizer } from './tokenizer.js';
import { loadWeights } from './safetensors.js';
import { CpuPagedAttention, type PagedAttention } from './attention.js';
import { KvCache } from './kv-cache.js';
import { DecoderModel, type StepBatch, type StepOutput } from './model.js';
import { makeRng, sampleToken, type SamplingParams } from './sampling.js';
import { ChatTemplate, type ChatMessage } from './chat.js';

export type { ModelConfig } from './config.js';
export type { Tokenizer } from './tokenizer.js';

export interface GenerateRequest {
  /** Text (tokenized with the model's tokenizer, special tokens such as BOS added) or token ids. */
  prompt: string | number[];
  /** Default 16. */
  maxTokens?: number;
  /** 0 = greedy (default). */
  temperature?: number;
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
  seed?: number;
  /** Stop sequences (not included in the output). */
  stop?: string[];
  ignoreEos?: boolean;
  signal?: AbortSignal;
}

/** One per generated token; the last has finishReason. A cancelled request ends with tokenId -1 and text ''. */
export interface GenerateEvent {
  tokenId: number;
  /** The newly decodable text (UTF-8 safe: partial characters and possible stop-sequence starts are held back). */
  text: string;
  index: number;
  finishReason?: 'stop' | 'length' | 'cancelled';
}

export interface LlmStats {
  running: number;
  waiting: number;
  kvBlocksUsed: number;
  kvBlocksTotal: number;
  promptTokens: number;
  generatedTokens: number;
}

export interface LlmLoadOptions {
  provider?: 'cpu' | 'cuda';
  /** Most sequences in flight (default 16). */
  maxBatch?: number;
  /** Tokens per KV block (default 16). */
  blockSize?: number;
  /** KV blocks in the pool (default: maxBatch full-length sequences, at most 1 GiB of cache). */
  kvBlocks?: number;
  /** Longest prompt + output (default: the model's max positions, at most 2048). */
  maxSeqLen?: number;
  dtype?: 'float32' | 'float16' | 'bfloat16';
  /** Most tokens one step computes (default 256 on the CPU, 4096 on the GPU): longer prompts are prefilled in chunks of what is left. */
  maxStepTokens?: number;
  /** Reuse cached blocks of identical prompt prefixes (default true). */
  prefixCaching?: boolean;
  /**
   * Queue the next decode step before the current one finishes when it can only continue it (default: on the GPU,
   * where it keeps the device busy while tokens stream; on the CPU it gains nothing and is for tests).
   */
  chainSteps?: boolean;
}

type Finish = NonNullable<GenerateEvent['finishReason']>;

/** A queued step: its batch, its requests in row order, and its result to come. */
interface InFlight {
  batch: StepBatch;
  reqs: Request[];
  /** every sampled request decodes greedily (tokens picked on the device) */
  greedy: boolean;
  /** queued before the step ahead of it finished, ids taken from that step's tokens on the device */
  chained: boolean;
  out: Promise<StepOutput>;
}

const isGreedy = (r: { params: SamplingParams }) => r.params.temperature <= 0 && r.params.repetitionPenalty === 1;

interface Pending {
  resolve: (e: GenerateEvent | undefined) => void;
  reject: (e: unknown) => void;
}

class Request {
  readonly output: number[] = [];
  /** Tokens in the KV cache. */
  computed = 0;
  done = false;
  cancelled = false;
  readonly events: GenerateEvent[] = [];
  error?: unknown;
  waiter?: Pending;
  text = '';
  emitted = 0;
  prefixOffset: number;
  readOffset: number;
  constructor(readonly id: number, readonly prompt: number[], readonly maxTokens: number, readonly params: SamplingParams,
    readonly rng: () => number, readonly stop: string[], readonly eos: Set<number>) {
    // decode with a few prompt tokens as context so the first output token's leading space survives
    this.prefixOffset = Math.max(0, prompt.length - 5);
    this.readOffset = prompt.length;
  }
  get tokens(): number[] {
    return this.output.length ? [...this.prompt, ...this.output] : this.prompt;
  }
  push(e: GenerateEvent): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(e);
    } else this.events.push(e);
  }
  fail(err: unknown): void {
    this.error = err;
    this.done = true;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.reject(err);
    }
  }
  next(): Promise<GenerateEvent | undefined> {
    if (this.events.length) return Promise.resolve(this.events.shift());
    if (this.error) return Promise.reject(this.error);
    if (this.done) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }
}

export class LlmEngine {
  private readonly waiting: Request[] = [];
  private readonly running: Request[] = [];
  private nextId = 1;
  private loop?: Promise<void>;
  private closed = false;
  private promptTokens = 0;
  private generatedTokens = 0;
  private readonly eos: Set<number>;
  /** a step queued behind the one in flight (see chain) */
  private ahead?: InFlight;

  private constructor(readonly name: string, readonly tokenizer: Tokenizer, readonly config: ModelConfig, private readonly model: DecoderModel,
    private readonly kv: KvCache, private readonly chat: ChatTemplate | undefined, readonly limits: Required<Pick<LlmLoadOptions, 'maxBatch' | 'maxSeqLen' | 'maxStepTokens' | 'blockSize' | 'chainSteps'>>) {
    this.eos = new Set([...config.eosTokenIds, ...(tokenizer.eosTokenId !== undefined ? [tokenizer.eosTokenId] : [])]);
  }

  /** Load a Hugging Face model folder (config.json, *.safetensors, tokenizer.json) and build its engines. */
  static async load(dir: string, options: LlmLoadOptions = {}): Promise<LlmEngine> {
    const provider = options.provider ?? 'cpu';
    const dtype = options.dtype ?? 'float32';
    if (provider === 'cpu' && dtype !== 'float32') {
      throw new InputError(`LlmEngine.load: dtype '${dtype}' is not available on the CPU provider, which computes in float32.`, { hint: "Use dtype 'float32', or provider 'cuda'." });
    }
    const config = loadModelConfig(dir);
    const tokenizer = Tokenizer.fromDir(dir);
    const maxBatch = positive('maxBatch', options.maxBatch ?? 16);
    const blockSize = positive('blockSize', options.blockSize ?? 16);
    const maxSeqLen = positive('maxSeqLen', options.maxSeqLen ?? Math.min(config.maxPositions, 2048));
    if (maxSeqLen > config.maxPositions) throw new InputError(`LlmEngine.load: maxSeqLen ${maxSeqLen} exceeds the model's ${config.maxPositions} positions.`);
    // tokens per step (chunked prefill budget): a GPU prefills a batch of prompts in one or two steps; a CPU in small
    // chunks so running decodes keep their pace
    const maxStepTokens = Math.max(maxBatch, positive('maxStepTokens', options.maxStepTokens ?? (provider === 'cuda' ? 4096 : 256)));
    // the GPU cache holds the engine's dtype (fp16/bf16, fp32 for checks); the CPU one is fp32
    const bytesPerBlock = 2 * config.numLayers * blockSize * config.numKvHeads * config.headDim * (dtype === 'float32' ? 4 : 2);
    const kvBlocks = positive('kvBlocks', options.kvBlocks ?? Math.max(Math.ceil(maxSeqLen / blockSize),
      Math.min(maxBatch * Math.ceil(maxSeqLen / blockSize), Math.floor(2 ** 30 / bytesPerBlock))));
    const shape = { numLayers: config.numLayers, numHeads: config.numHeads, numKvHeads: config.numKvHeads,
      headDim: config.headDim, numBlocks: kvBlocks, blockSize, scale: 1 / Math.sqrt(config.headDim) };
    const attention: PagedAttention = provider === 'cuda'
      ? new (await import('./attention-cuda.js')).CudaPagedAttention(shape, dtype, 0, dtype) // loads CUDA only for the GPU provider
      : new CpuPagedAttention(shape);
    let model: DecoderModel;
    try {
      model = await DecoderModel.build(config, loadWeights(dir), dir, attention, { provider, maxTokens: maxStepTokens, maxSeqs: maxBatch,
        precision: dtype === 'float16' ? 'fp16' : dtype === 'bfloat16' ? 'bf16' : 'fp32' });
    } catch (e) {
      attention.release();
      throw e;
    }
    const kv = new KvCache(kvBlocks, blockSize, options.prefixCaching !== false);
    return new LlmEngine(path.basename(path.resolve(dir)), tokenizer, config, model, kv, ChatTemplate.fromDir(dir), { maxBatch, maxSeqLen, maxStepTokens, blockSize, chainSteps: options.chainSteps ?? provider === 'cuda' });
  }

  /** Stream the tokens of one request; it joins the in-flight batch at the next step. */
  async *generate(req: GenerateRequest): AsyncIterable<GenerateEvent> {
    const r = this.submit(req);
    try {
      for (;;) {
        const e = await r.next();
        if (!e) return;
        yield e;
        if (e.finishReason) return;
      }
    } finally {
      // the consumer stopped early (break / return): free the request's blocks
      if (!r.done) r.cancelled = true;
    }
  }

  applyChatTemplate(messages: ChatMessage[], addGenerationPrompt = true): string {
    if (!this.chat) throw new InputError(`model '${this.name}' has no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json).`, { hint: 'Send a plain completion prompt instead.' });
    return this.chat.render(messages, addGenerationPrompt);
  }

  stats(): LlmStats {
    const s = this.kv.stats();
    return { running: this.running.length, waiting: this.waiting.length, kvBlocksUsed: s.blocksUsed, kvBlocksTotal: s.blocksTotal,
      promptTokens: this.promptTokens, generatedTokens: this.generatedTokens };
  }

  /** Prefix-cache counters and cached blocks, beyond stats(). */
  kvStats() {
    return this.kv.stats();
  }

  /** Stops after the current step; requests still in flight end as cancelled. */
  async close(): Promise<void> {
    this.closed = true;
    for (const r of [...this.waiting, ...this.running]) r.cancelled = true;
    this.kick();
    await this.loop;
    this.model.release();
  }

  private submit(req: GenerateRequest): Request {
    if (this.closed) throw new InputError('LlmEngine: the engine is closed.');
    const prompt = typeof req.prompt === 'string' ? this.tokenizer.encode(req.prompt) : [...req.prompt];
    if (!prompt.length) throw new InputError('generate: the prompt is empty (no tokens).');
    const bad = prompt.find((t) => !Number.isInteger(t) || t < 0 || t >= this.config.vocabSize);
    if (bad !== undefined) throw new InputError(`generate: prompt token id ${bad} is outside the vocabulary (0..${this.config.vocabSize - 1}).`);
    const maxTokens = req.maxTokens ?? 16;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new InputError(`generate: maxTokens must be a positive integer, got ${maxTokens}.`);
    const need = prompt.length + maxTokens;
    if (need > this.limits.maxSeqLen) {
      throw new InputError(`generate: prompt (${prompt.length} tokens) + maxTokens (${maxTokens}) = ${need} exceeds the engine's maxSeqLen ${this.limits.maxSeqLen}.`, {
        hint: 'Shorten the prompt, lower maxTokens, or load the engine with a larger maxSeqLen.' });
    }
    if (this.kv.blocksFor(need) > this.kv.numBlocks) {
      throw new InputError(`generate: the request needs ${this.kv.blocksFor(need)} KV blocks (${need} tokens), more than the engine's whole cache (${this.kv.numBlocks} blocks of ${this.kv.blockSize}); it could never run.`, {
        hint: 'Load the engine with more kvBlocks, or lower maxTokens.' });
    }
    const temperature = req.temperature ?? 0;
    const topP = req.topP ?? 1, topK = req.topK ?? 0, repetitionPenalty = req.repetitionPenalty ?? 1;
    if (!(temperature >= 0) || !(topP > 0 && topP <= 1) || !(topK >= 0) || !(repetitionPenalty > 0)) {
      throw new InputError(`generate: invalid sampling parameters (temperature ${temperature} >= 0, 0 < topP ${topP} <= 1, topK ${topK} >= 0, repetitionPenalty ${repetitionPenalty} > 0).`);
    }
    const r = new Request(this.nextId++, prompt, maxTokens, { temperature, topK, topP, repetitionPenalty }, makeRng(req.seed), (typeof req.stop === 'string' ? [req.stop] : (req.stop ?? [])).filter(Boolean),
      req.ignoreEos ? new Set() : this.eos);
    if (req.signal) {
      if (req.signal.aborted) r.cancelled = true;
      else req.signal.addEventListener('abort', () => (r.cancelled = true), { once: true });
    }
    this.waiting.push(r);
    this.kick();
    return r;
  }

  private kick(): void {
    if (this.loop) return;
    this.loop = this.run().finally(() => (this.loop = undefined));
  }

  private async run(): Promise<void> {
    while (this.waiting.length || this.running.length || this.ahead) {
      try {
        await this.step();
      } catch (e) {
        // a failed step leaves the cache contents of the batch undefined: fail every request in flight
        for (const r of this.running.splice(0)) {
          this.kv.release(r.id);
          r.fail(e instanceof KilnError ? e : new KilnError(`LLM step failed: ${(e as Error).message}`, { cause: e }));
        }
      }
      await new Promise((res) => setImmediate(res));
    }
  }

  private finish(r: Request, reason: Finish, tokenId = -1, text = ''): void {
    r.done = true;
    r.push({ tokenId, text, index: r.output.length - (tokenId < 0 ? 0 : 1), finishReason: reason });
    this.kv.release(r.id);
  }

  private async step(): Promise<void> {
    let cur = this.ahead;
    this.ahead = undefined;
    if (!cur) {
      this.admit();
      if (!this.running.length) return;
      cur = this.schedule();
    }
    // when the next step can only be this one's continuation, queue it now (ids from this step's tokens on the
    // device), so the GPU does not idle while this step's tokens are streamed and the next one is scheduled
    this.ahead = this.chain(cur);
    let out: StepOutput;
    try {
      out = await cur.out;
    } catch (e) {
      await this.ahead?.out.catch(() => undefined);
      this.ahead = undefined;
      throw e;
    }
    this.complete(cur, out);
  }

  /** Drop cancelled requests; admit waiting ones (FIFO) while their whole KV budget fits. */
  private admit(): void {
    for (const list of [this.waiting, this.running]) {
      for (const r of list.filter((x) => x.cancelled)) {
        list.splice(list.indexOf(r), 1);
        this.finish(r, 'cancelled');
      }
    }
    while (this.waiting.length && this.running.length < this.limits.maxBatch) {
      const r = this.waiting[0];
      const cached = this.kv.allocate(r.id, r.prompt, r.prompt.length + r.maxTokens);
      if (cached === undefined) break;
      r.computed = cached;
      this.promptTokens += r.prompt.length;
      this.running.push(this.waiting.shift()!);
    }
  }

  /** Decodes of running requests first, then prompt chunks within the step's token budget; queued at once. */
  private schedule(): InFlight {
    const batch: StepBatch = { tokens: [], positions: [], seqs: [], sample: [], decode: [] };
    const reqs: Request[] = [];
    let budget = this.limits.maxStepTokens;
    const add = (r: Request, n: number) => {
      const all = r.tokens;
      batch.seqs.push({ rowStart: batch.tokens.length, numTokens: n, contextLen: r.computed, blockTable: this.kv.table(r.id) });
      for (let i = 0; i < n; i++) {
        batch.tokens.push(all[r.computed + i]);
        batch.positions.push(r.computed + i);
      }
      batch.sample.push(r.computed + n === all.length);
      batch.decode.push(r.output.length > 0);
      reqs.push(r);
      budget -= n;
    };
    for (const r of this.running) if (r.output.length) add(r, 1);
    for (const r of this.running) {
      if (r.output.length || budget <= 0) continue;
      add(r, Math.min(budget, r.prompt.length - r.computed));
    }
    // greedy requests only: the GPU picks the tokens itself and sends back one id per sequence instead of logits
    const greedy = reqs.every((r, i) => !batch.sample[i] || isGreedy(r));
    return { batch, reqs, greedy, chained: false, out: this.model.forward(batch, greedy) };
  }

  /**
   * The step after `cur`, queued before `cur` finishes, when nothing else could be scheduled next: no request waits,
   * and every running request is sampled greedily by `cur` and will still need a token after it. Its ids come from
   * `cur`'s tokens on the device; rows of requests that `cur` finishes (end of sequence, stop text) are dropped when
   * it completes (their cache write lands in a block no prefix key covers, inside their own allocation).
   */
  private chain(cur: InFlight): InFlight | undefined {
    if (!this.limits.chainSteps || !cur.greedy || this.waiting.length || !this.running.length) return undefined;
    const sampledAt = new Map<Request, { row: number; n: number }>();
    let row = 0;
    cur.reqs.forEach((r, i) => cur.batch.sample[i] && sampledAt.set(r, { row: row++, n: cur.batch.seqs[i].numTokens }));
    if (!this.running.every((r) => sampledAt.has(r) && !r.cancelled && r.output.length + 1 < r.maxTokens)) return undefined;
    const batch: StepBatch = { tokens: [], positions: [], seqs: [], sample: [], decode: [] };
    const from: number[] = [];
    for (const r of this.running) {
      const { row: src, n } = sampledAt.get(r)!;
      const pos = r.computed + n;
      batch.seqs.push({ rowStart: batch.tokens.length, numTokens: 1, contextLen: pos, blockTable: this.kv.table(r.id) });
      batch.tokens.push(0); // the device fills it in
      batch.positions.push(pos);
      batch.sample.push(true);
      batch.decode.push(true);
      from.push(src);
    }
    const out = this.model.forward(batch, true, Int32Array.from(from));
    out.catch(() => undefined); // a failure surfaces where it is awaited (step), not as an unhandled rejection meanwhile
    return { batch, reqs: [...this.running], greedy: true, chained: true, out };
  }

  /** Apply a finished step: cache bookkeeping, then each sampled request's token. */
  private complete(cur: InFlight, { tokens, logits }: StepOutput): void {
    const { batch, reqs } = cur;
    const V = this.config.vocabSize;
    let row = 0;
    reqs.forEach((r, i) => {
      const at = batch.sample[i] ? row++ : -1;
      if (cur.chained && r.done) return; // finished by the step this one was chained to
      r.computed += batch.seqs[i].numTokens;
      this.kv.commit(r.id, r.tokens, r.computed);
      if (at < 0 || r.cancelled) return;
      let tok: number;
      if (tokens) tok = tokens[at];
      else {
        const l = logits!.subarray(at * V, (at + 1) * V);
        tok = sampleToken(r.params.repetitionPenalty !== 1 ? l.slice() : l, r.params, r.tokens, r.rng);
      }
      this.accept(r, tok);
    });
    for (let i = this.running.length - 1; i >= 0; i--) if (this.running[i].done) this.running.splice(i, 1);
  }

  /** Record a sampled token, stream its text and decide whether the request is finished. */
  private accept(r: Request, tok: number): void {
    r.output.push(tok);
    this.generatedTokens++;
    const index = r.output.length - 1;
    const eos = r.eos.has(tok), last = eos || r.output.length >= r.maxTokens;
    // the EOS token's own text is not part of the output; at the end, incomplete characters come out as U+FFFD
    if (eos) r.output.pop();
    this.appendText(r, last);
    if (eos) r.output.push(tok);
    const stopAt = firstStop(r.text, r.stop);
    if (stopAt >= 0) return this.finish(r, 'stop', tok, this.flush(r, stopAt));
    if (last) return this.finish(r, eos ? 'stop' : 'length', tok, this.flush(r, r.text.length));
    const safe = r.text.length - heldBack(r.text, r.stop);
    r.push({ tokenId: tok, text: this.flush(r, safe), index });
  }

  /** Incremental detokenization (as Hugging Face's streamers): only text that no later token can change. */
  private appendText(r: Request, final: boolean): void {
    const all = r.tokens;
    const prev = this.tokenizer.decode(all.slice(r.prefixOffset, r.readOffset), { skipSpecialTokens: true });
    const cur = this.tokenizer.decode(all.slice(r.prefixOffset), { skipSpecialTokens: true });
    if (cur.length > prev.length && (final || !cur.endsWith('\uFFFD'))) {
      r.text += cur.slice(prev.length);
      r.prefixOffset = r.readOffset;
      r.readOffset = all.length;
    }
  }

  private flush(r: Request, upTo: number): string {
    const t = r.text.slice(r.emitted, Math.max(r.emitted, upTo));
    r.emitted = Math.max(r.emitted, upTo);
    return t;
  }
}

function positive(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new InputError(`LlmEngine.load: ${name} must be a positive integer, got ${v}.`);
  return v;
}

function firstStop(text: string, stops: string[]): number {
  let at = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (at < 0 || i < at)) at = i;
  }
  return at;
}

/** Characters at the end of `text` that could start a stop sequence, so they are not streamed yet. */
function heldBack(text: string, stops: string[]): number {
  let keep = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > keep; n--) {
      if (text.endsWith(s.slice(0, n))) {
        keep = n;
        break;
      }
    }
  }
  return keep;
}

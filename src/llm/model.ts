// A decoder model as Kiln engines: the dense part of each layer (norms, QKV projection, output projection, MLP, the
// final norm and LM head) is a Kiln IR graph built with build() for the provider, with a dynamic token dimension so
// prefill chunks and decode batches share the engines. The graphs are cut at attention, which runs over the paged KV
// cache as a runtime kernel (attention.ts): graph 0 = embeddings + layer 0 up to q/k/v; graph i = layer i-1 after
// attention + layer i up to q/k/v; graph L = layer L-1 after attention + final norm + LM head, fed only the rows that
// need logits (the rest of the model is row-wise). GPU fp16/bf16 builds write the graphs in that type end to end
// (weights, inputs, outputs), so no Casts sit between layers; on the GPU a step runs through step-cuda.ts.
import { GraphBuilder, float } from '../ir/builder.js';
import { TensorData } from '../ir/tensor.js';
import type { Model, ValueType } from '../ir/graph.js';
import { ModelError } from '../ir/errors.js';
import { build } from '../build/builder.js';
import { Engine, type ExecutionContext } from '../runtime/engine.js';
import { Tensor } from '../runtime/tensor.js';
import type { ModelConfig } from './config.js';
import { isDeviceAttention, type AttentionSeq, type PagedAttention } from './attention.js';
import type { CudaDecoderStep } from './step-cuda.js';
import { argmax } from './sampling.js';
import { bucket, buckets } from '../runtime/buckets.js';

const OPSET = 17;

export interface ModelBuildOptions {
  provider: 'cpu' | 'cuda';
  /** Most tokens in one step (the token dimension's profile max). */
  maxTokens: number;
  /** Most sequences sampled in one step (rows of the LM head). */
  maxSeqs: number;
  /** Build precision (fp32 on the CPU). */
  precision?: 'fp32' | 'fp16' | 'bf16';
  /** GPU: capture every padded step size at load (default true), so no request meets a first-time run. */
  warmup?: boolean;
}

/** One step's output for the sampled rows, in order: greedy tokens (argmax; the GPU sends back only these) and/or logits [rows, vocab]. */
export interface StepOutput {
  tokens?: Int32Array;
  logits?: Float32Array;
}

/** One step's batch: the new tokens of every scheduled sequence, concatenated. */
export interface StepBatch {
  tokens: number[];
  positions: number[];
  seqs: AttentionSeq[];
  /** Whether this step's last token of each sequence needs logits; the rest are prefill chunks. */
  sample: boolean[];
  /** Sequences with exactly one new token run through attention's decode entry point. */
  decode: boolean[];
}

type Weights = Map<string, TensorData>;

class WeightSource {
  constructor(private readonly w: Weights, private readonly dir: string) {}
  get(name: string): TensorData {
    const t = this.w.get(name);
    if (!t) throw new ModelError(`${this.dir}: weight '${name}' is missing from the safetensors files.`, { hint: 'Check that the checkpoint matches config.json (model_type, layer count).' });
    return t;
  }
  has(name: string): boolean {
    return this.w.has(name);
  }
}

/** [out, in] (torch Linear) -> [in, out] for MatMul. */
function transpose(t: TensorData): TensorData {
  const [r, c] = t.dims;
  const src = t.data as Float32Array, dst = new Float32Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) dst[j * r + i] = src[i * c + j];
  return new TensorData('float32', [c, r], dst);
}

/** Concatenate [in, a], [in, b], ... along columns. */
function concatCols(ts: TensorData[]): TensorData {
  const rows = ts[0].dims[0], cols = ts.reduce((a, t) => a + t.dims[1], 0);
  const dst = new Float32Array(rows * cols);
  let off = 0;
  for (const t of ts) {
    const c = t.dims[1], src = t.data as Float32Array;
    for (let i = 0; i < rows; i++) dst.set(src.subarray(i * c, i * c + c), i * cols + off);
    off += c;
  }
  return new TensorData('float32', [rows, cols], dst);
}

function concat1d(ts: TensorData[]): TensorData {
  const out = new Float32Array(ts.reduce((a, t) => a + t.size, 0));
  let off = 0;
  for (const t of ts) {
    out.set(t.data as Float32Array, off);
    off += t.size;
  }
  return new TensorData('float32', [out.length], out);
}

/** The element type a model's graphs are written in: fp16/bf16 GPU builds are native end to end (no casts). */
export type GraphDtype = 'float32' | 'float16' | 'bfloat16';
const tensorType = (dtype: GraphDtype, shape: (number | string)[]): ValueType => ({ kind: 'tensor', dtype, shape });
const i64 = (vals: number[]) => new TensorData('int64', [vals.length], BigInt64Array.from(vals.map(BigInt)));
const f32 = (v: number) => new TensorData('float32', [], Float32Array.of(v));

/** Graph-building helpers over one GraphBuilder; every weight becomes an initializer. */
class LayerGraph {
  readonly b: GraphBuilder;
  private n = 0;
  constructor(name: string, private readonly cfg: ModelConfig, readonly dtype: GraphDtype) {
    this.b = new GraphBuilder(name);
  }
  /** A weight or constant; float ones in the graph's type. */
  init(t: TensorData, name = `w${this.n++}`): string {
    return this.b.initializer(name, t.dtype === 'float32' && this.dtype !== 'float32' ? TensorData.fromNumbers(this.dtype, t.dims, t.data as Float32Array) : t);
  }
  linear(x: string, w: TensorData, bias?: TensorData): string {
    const y = this.b.op('MatMul', [x, this.init(w)]);
    return bias ? this.b.op('Add', [y, this.init(bias)]) : y;
  }
  layerNorm(x: string, g: TensorData, beta: TensorData): string {
    return this.b.op('LayerNormalization', [x, this.init(g), this.init(beta)], { axis: -1, epsilon: float(this.cfg.normEps) });
  }
  /** x / sqrt(mean(x^2) + eps) * g, written out so the optimizer's RMSNorm fusion recognizes it. */
  rmsNorm(x: string, g: TensorData): string {
    const b = this.b;
    const mean = b.op('ReduceMean', [b.op('Pow', [x, this.init(f32(2))])], { axes: [-1], keepdims: 1 });
    const div = b.op('Div', [x, b.op('Sqrt', [b.op('Add', [mean, this.init(f32(this.cfg.normEps))])])]);
    return b.op('Mul', [div, this.init(g)]);
  }
  /**
   * HF's gelu_new, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as one kiln Gelu node (ONNX opset-20 semantics):
   * the optimizer folds it into the MLP's first GEMM as its epilogue, where the op-by-op chain stayed 8 kernels.
   */
  geluTanh(x: string): string {
    return this.b.node('Gelu', [x], { approximate: 'tanh' }, { domain: 'kiln' })[0];
  }
  silu(x: string): string {
    return this.b.op('Mul', [x, this.b.op('Sigmoid', [x])]);
  }
  /**
   * Rotate-half RoPE on [T, heads*headDim] rows with cos/sin [T, headDim]: x cos + rotate_half(x) sin, the rotation
   * as a product with a signed permutation matrix (exact: one nonzero term per output), which the GPU runs as one
   * GEMM where slicing the halves would not stay on the device.
   */
  rope(x: string, heads: number, cos: string, sin: string): string {
    const b = this.b, hd = this.cfg.headDim, half = hd / 2;
    const x3 = b.op('Reshape', [x, this.init(i64([-1, heads, hd]))]);
    const axes = this.init(i64([1]));
    const c = b.op('Unsqueeze', [cos, axes]), s = b.op('Unsqueeze', [sin, axes]);
    const r = new Float32Array(hd * hd);
    for (let j = 0; j < half; j++) {
      r[(j + half) * hd + j] = -1; // out[j] = -x[j + half]
      r[j * hd + j + half] = 1; // out[j + half] = x[j]
    }
    const rot2 = b.op('MatMul', [b.op('Reshape', [x, this.init(i64([-1, hd]))]), this.init(new TensorData('float32', [hd, hd], r))]);
    const rot = b.op('Reshape', [rot2, this.init(i64([-1, heads, hd]))]);
    const y = b.op('Add', [b.op('Mul', [x3, c]), b.op('Mul', [rot, s])]);
    return b.op('Reshape', [y, this.init(i64([-1, heads * hd]))]);
  }
}

export class DecoderModel {
  private constructor(
    readonly config: ModelConfig,
    private readonly engines: Engine[],
    private readonly contexts: ExecutionContext[],
    readonly attention: PagedAttention,
    private readonly limits: { maxTokens: number; maxSeqs: number },
    private readonly gpu?: CudaDecoderStep,
    private readonly gpuDtype: GraphDtype = 'float32',
  ) {}

  static async build(cfg: ModelConfig, weights: Weights, dir: string, attention: PagedAttention, opts: ModelBuildOptions): Promise<DecoderModel> {
    const dtype = graphDtype(opts);
    const graphs = layerModels(cfg, weights, dir, dtype);
    const engines: Engine[] = [];
    for (const [i, model] of graphs.entries()) {
      // the last engine sees only the sampled rows
      const max = i === cfg.numLayers ? opts.maxSeqs : opts.maxTokens;
      const profile: Record<string, { min: number[]; opt: number[]; max: number[] }> = {};
      for (const inp of model.graph.inputs) {
        const t = inp.type as { shape?: (number | string)[] };
        const rest = (t.shape ?? []).slice(1) as number[];
        profile[inp.name] = { min: [1, ...rest], opt: [Math.min(max, 8), ...rest], max: [max, ...rest] };
      }
      const plan = await build(model, { device: opts.provider, precision: opts.precision ?? 'fp32', profiles: [profile], buildCommand: `LlmEngine.load('${dir}')` });
      engines.push(await Engine.load(plan));
    }
    const limits = { maxTokens: opts.maxTokens, maxSeqs: opts.maxSeqs };
    let gpu: CudaDecoderStep | undefined;
    if (isDeviceAttention(attention) && engines[0].header.device.backend === 'cuda') {
      gpu = new (await import('./step-cuda.js')).CudaDecoderStep(cfg, engines, attention, limits, dtype); // CUDA loads only here
      if (opts.warmup !== false) await gpu.warmup(buckets(opts.maxTokens), buckets(opts.maxSeqs));
    }
    return new DecoderModel(cfg, engines, engines.map((e) => e.createContext()), attention, limits, gpu, dtype);
  }

  /** The step queued last (a chained step's ids come from its tokens). */
  private previous?: Promise<StepOutput>;

  /**
   * Run one step over the sequences whose `sample` flag is set, in order: with `greedy` (every sampled sequence
   * decodes greedily) their argmax tokens (the GPU sends back nothing else), otherwise their logits. A step may be
   * queued before the previous one finished (`idsFromPrevious`: for each row, the index of the previous step's
   * sampled row whose greedy token is this row's id, or -1): on the GPU it goes into the stream behind it and takes
   * the ids on the device; on the CPU it waits for it.
   */
  forward(batch: StepBatch, greedy = false, idsFromPrevious?: Int32Array): Promise<StepOutput> {
    const prev = this.previous;
    const out = this.gpu ? this.forwardGpu(batch, greedy, idsFromPrevious) : this.forwardCpu(batch, greedy, idsFromPrevious && prev ? { map: idsFromPrevious, prev } : undefined);
    this.previous = out;
    return out;
  }

  private async forwardGpu(batch: StepBatch, greedy: boolean, idsFromPrevious?: Int32Array): Promise<StepOutput> {
    const gpu = this.gpu!;
    // a few padded shapes, each captured at load as CUDA graphs and replayed
    const rows = bucket(batch.tokens.length, this.limits.maxTokens);
    const pad = rows - batch.tokens.length;
    const padded = { ...batch, tokens: [...batch.tokens, ...new Array<number>(pad).fill(0)], positions: [...batch.positions, ...new Array<number>(pad).fill(0)] };
    const sel = sampledRows(batch);
    const n = sel.length;
    if (n) sel.push(...new Array<number>(bucket(n, this.limits.maxSeqs) - n).fill(sel[n - 1]));
    const cfg = this.config;
    const feeds = { ids: BigInt64Array.from(padded.tokens.map(BigInt)), ...(cfg.family === 'gpt2'
      ? { pos: BigInt64Array.from(padded.positions.map(BigInt)) }
      : ropeIn(ropeArrays(padded.positions, cfg.headDim, cfg.ropeTheta), this.gpuDtype)) };
    if (idsFromPrevious) {
      const map = new Int32Array(rows).fill(-1);
      map.set(idsFromPrevious);
      Object.assign(feeds, { idsFromPrevious: map });
    }
    const out = await gpu.run(batch.seqs, batch.decode, rows, feeds, sel, { tokens: greedy, logits: !greedy });
    return { tokens: out.tokens?.subarray(0, n), logits: out.logits?.subarray(0, n * cfg.vocabSize) };
  }

  private async forwardCpu(batch: StepBatch, greedy: boolean, chained?: { map: Int32Array; prev: Promise<StepOutput> }): Promise<StepOutput> {
    if (chained) {
      const { tokens } = await chained.prev;
      if (!tokens) throw new Error('DecoderModel.forward: a chained step needs the greedy tokens of the step before it');
      batch = { ...batch, tokens: batch.tokens.map((t, i) => (i < chained.map.length && chained.map[i] >= 0 ? tokens[chained.map[i]] : t)) };
    }
    const { feeds, rope, sel } = this.stepInputs(batch);
    const cfg = this.config, T = batch.tokens.length;
    let x: Tensor | undefined, attn: Tensor | undefined;
    for (let i = 0; i <= cfg.numLayers; i++) {
      const f: Record<string, Tensor> = i === 0 ? { ...feeds, ...rope } : { x: x!, attn: attn!, ...(i < cfg.numLayers ? rope : {}) };
      if (i === cfg.numLayers) {
        // a step of prompt chunks only fills the cache: the last layer's MLP and the LM head have nothing to do
        if (!sel.length) return { logits: new Float32Array(0), tokens: greedy ? new Int32Array(0) : undefined };
        const out = await this.contexts[i].run({ x: rowsOf(x!, sel), attn: rowsOf(attn!, sel) }, ['logits']);
        const logits = (out.logits as Tensor<'float32'>).data, V = cfg.vocabSize;
        return { logits, tokens: greedy ? Int32Array.from(sel, (_, r) => argmax(logits.subarray(r * V, (r + 1) * V))) : undefined };
      }
      const out = await this.contexts[i].run(f, ['x_out', 'q', 'k', 'v']);
      x = out.x_out as Tensor;
      attn = new Tensor('float32', new Float32Array(T * cfg.numHeads * cfg.headDim), [T, cfg.numHeads * cfg.headDim]);
      this.attend(i, out.q as Tensor<'float32'>, out.k as Tensor<'float32'>, out.v as Tensor<'float32'>, attn as Tensor<'float32'>, batch);
    }
    throw new Error('unreachable');
  }

  private stepInputs(batch: StepBatch): { feeds: Record<string, Tensor>; rope: Record<string, Tensor>; sel: number[] } {
    const cfg = this.config, T = batch.tokens.length;
    const feeds: Record<string, Tensor> = { ids: new Tensor('int64', BigInt64Array.from(batch.tokens.map(BigInt)), [T]) };
    let rope: Record<string, Tensor> = {};
    if (cfg.family === 'gpt2') feeds.pos = new Tensor('int64', BigInt64Array.from(batch.positions.map(BigInt)), [T]);
    else rope = ropeTables(batch.positions, cfg.headDim, cfg.ropeTheta);
    return { feeds, rope, sel: sampledRows(batch) };
  }

  private attend(layer: number, q: Tensor<'float32'>, k: Tensor<'float32'>, v: Tensor<'float32'>, out: Tensor<'float32'>, batch: StepBatch): void {
    const step = (decode: boolean) => ({ layer, q: q.data, k: k.data, v: v.data, out: out.data, seqs: batch.seqs.filter((_, i) => batch.decode[i] === decode) });
    const pre = step(false), dec = step(true);
    if (pre.seqs.length) this.attention.prefill(pre);
    if (dec.seqs.length) this.attention.decode(dec);
  }

  release(): void {
    this.gpu?.release();
    for (const e of this.engines) e.dispose();
    this.attention.release();
  }
}

/** The model's L + 1 graphs (see the file comment), in `dtype`. */
export function layerModels(cfg: ModelConfig, weights: Weights, dir: string, dtype: GraphDtype): Model[] {
  const w = new WeightSource(weights, dir);
  return Array.from({ length: cfg.numLayers + 1 }, (_, i) => layerGraph(cfg, w, i, dtype).model(OPSET));
}

/** GPU fp16/bf16 builds write the graphs in that type (weights converted once, here); everything else is fp32. */
export function graphDtype(opts: Pick<ModelBuildOptions, 'provider' | 'precision'>): GraphDtype {
  if (opts.provider !== 'cuda') return 'float32';
  return opts.precision === 'fp16' ? 'float16' : opts.precision === 'bf16' ? 'bfloat16' : 'float32';
}

/** The last row of each sequence that needs logits, in order. */
function sampledRows(batch: StepBatch): number[] {
  const sel: number[] = [];
  batch.seqs.forEach((s, i) => batch.sample[i] && sel.push(s.rowStart + s.numTokens - 1));
  return sel;
}

/** RoPE tables in the graphs' type (fp16/bf16 as bit patterns). */
function ropeIn(t: { cos: Float32Array; sin: Float32Array }, dtype: GraphDtype): { cos: Float32Array | Uint16Array; sin: Float32Array | Uint16Array } {
  if (dtype === 'float32') return t;
  const conv = (a: Float32Array) => TensorData.fromNumbers(dtype, [a.length], a).data as Uint16Array;
  return { cos: conv(t.cos), sin: conv(t.sin) };
}

/** Rows `sel` of a [T, width] fp32 tensor. */
function rowsOf(t: Tensor, sel: number[]): Tensor {
  const [, w] = t.dims, src = (t as Tensor<'float32'>).data, dst = new Float32Array(sel.length * w);
  sel.forEach((r, i) => dst.set(src.subarray(r * w, (r + 1) * w), i * w));
  return new Tensor('float32', dst, [sel.length, w]);
}

/** HF's default RoPE tables in fp32: inv_freq = theta^(-2i/d), angle = pos * inv_freq, emb = [angle, angle]. */
function ropeTables(positions: number[], hd: number, theta: number): Record<string, Tensor> {
  const { cos, sin } = ropeArrays(positions, hd, theta), T = positions.length;
  return { cos: new Tensor('float32', cos, [T, hd]), sin: new Tensor('float32', sin, [T, hd]) };
}

function ropeArrays(positions: number[], hd: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const half = hd / 2, T = positions.length;
  const inv = Array.from({ length: half }, (_, i) => Math.fround(1 / Math.pow(theta, Math.fround((2 * i) / hd))));
  const cos = new Float32Array(T * hd), sin = new Float32Array(T * hd);
  positions.forEach((p, t) => {
    for (let i = 0; i < half; i++) {
      const a = Math.fround(p * inv[i]);
      cos[t * hd + i] = cos[t * hd + half + i] = Math.cos(a);
      sin[t * hd + i] = sin[t * hd + half + i] = Math.sin(a);
    }
  });
  return { cos, sin };
}

/** Graph i of the model (see the file comment). */
function layerGraph(cfg: ModelConfig, w: WeightSource, i: number, dtype: GraphDtype): GraphBuilder {
  const g = new LayerGraph(`layer${i}`, cfg, dtype);
  const b = g.b, C = cfg.hiddenSize, hd = cfg.headDim;
  const gpt2 = cfg.family === 'gpt2';
  const p = gpt2 ? 'transformer.h.' : 'model.layers.';
  let x: string;
  if (i === 0) {
    const ids = b.input('ids', 'int64', ['T']);
    if (gpt2) {
      const pos = b.input('pos', 'int64', ['T']);
      x = b.op('Add', [b.op('Gather', [g.init(w.get('transformer.wte.weight')), ids]), b.op('Gather', [g.init(w.get('transformer.wpe.weight')), pos])]);
    } else {
      x = b.op('Gather', [g.init(w.get('model.embed_tokens.weight')), ids]);
    }
  } else {
    // the last graph gets only the rows that need logits (S of them): the rest of the model is row-wise
    const rows = i === cfg.numLayers ? 'S' : 'T';
    const xin = b.input('x', dtype, [rows, C]);
    const attn = b.input('attn', dtype, [rows, cfg.numHeads * hd]);
    x = postAttention(g, cfg, w, `${p}${i - 1}.`, xin, attn);
  }
  if (i === cfg.numLayers) {
    const normed = gpt2 ? g.layerNorm(x, w.get('transformer.ln_f.weight'), w.get('transformer.ln_f.bias')) : g.rmsNorm(x, w.get('model.norm.weight'));
    const head = cfg.tieWordEmbeddings || !w.has('lm_head.weight') ? w.get(gpt2 ? 'transformer.wte.weight' : 'model.embed_tokens.weight') : w.get('lm_head.weight');
    if (dtype === 'float32') b.node('MatMul', [normed, g.init(transpose(head))], {}, { outputs: ['logits'] });
    else b.node('Cast', [b.op('MatMul', [normed, g.init(transpose(head))])], { to: 1 /* float32 */ }, { outputs: ['logits'] });
    b.output('logits', tensorType('float32', ['S', cfg.vocabSize]));
    return b;
  }
  b.node('Identity', [x], {}, { outputs: ['x_out'] });
  b.output('x_out', tensorType(dtype, ['T', C]));
  const l = `${p}${i}.`;
  const H = cfg.numHeads * hd, K = cfg.numKvHeads * hd;
  let q: string, k: string, v: string;
  if (gpt2) {
    const h = g.layerNorm(x, w.get(`${l}ln_1.weight`), w.get(`${l}ln_1.bias`));
    const qkv = g.linear(h, w.get(`${l}attn.c_attn.weight`), w.get(`${l}attn.c_attn.bias`));
    [q, k, v] = b.node('Split', [qkv, g.init(i64([H, K, K]))], { axis: -1 }, { outputs: 3 });
  } else {
    const h = g.rmsNorm(x, w.get(`${l}input_layernorm.weight`));
    const names = ['q', 'k', 'v'].map((n) => `${l}self_attn.${n}_proj`);
    const bias = cfg.attentionBias ? concat1d(names.map((n) => w.get(`${n}.bias`))) : undefined;
    const qkv = g.linear(h, concatCols(names.map((n) => transpose(w.get(`${n}.weight`)))), bias);
    [q, k, v] = b.node('Split', [qkv, g.init(i64([H, K, K]))], { axis: -1 }, { outputs: 3 });
    const cos = b.input('cos', dtype, ['T', hd]), sin = b.input('sin', dtype, ['T', hd]);
    q = g.rope(q, cfg.numHeads, cos, sin);
    k = g.rope(k, cfg.numKvHeads, cos, sin);
  }
  b.node('Identity', [q], {}, { outputs: ['q'] });
  b.node('Identity', [k], {}, { outputs: ['k'] });
  b.node('Identity', [v], {}, { outputs: ['v'] });
  b.output('q', tensorType(dtype, ['T', H]));
  b.output('k', tensorType(dtype, ['T', K]));
  b.output('v', tensorType(dtype, ['T', K]));
  return b;
}

/** Output projection + residual, then the MLP block + residual. */
function postAttention(g: LayerGraph, cfg: ModelConfig, w: WeightSource, l: string, x: string, attn: string): string {
  const b = g.b;
  if (cfg.family === 'gpt2') {
    const h = b.op('Add', [x, g.linear(attn, w.get(`${l}attn.c_proj.weight`), w.get(`${l}attn.c_proj.bias`))]);
    const n = g.layerNorm(h, w.get(`${l}ln_2.weight`), w.get(`${l}ln_2.bias`));
    const m = g.linear(g.geluTanh(g.linear(n, w.get(`${l}mlp.c_fc.weight`), w.get(`${l}mlp.c_fc.bias`))), w.get(`${l}mlp.c_proj.weight`), w.get(`${l}mlp.c_proj.bias`));
    return b.op('Add', [h, m]);
  }
  const bias = (n: string, on: boolean) => (on ? w.get(`${n}.bias`) : undefined);
  const o = `${l}self_attn.o_proj`;
  const h = b.op('Add', [x, g.linear(attn, transpose(w.get(`${o}.weight`)), bias(o, cfg.attentionBias))]);
  const n = g.rmsNorm(h, w.get(`${l}post_attention_layernorm.weight`));
  const [gp, up, dp] = ['gate_proj', 'up_proj', 'down_proj'].map((s) => `${l}mlp.${s}`);
  const gate = g.silu(g.linear(n, transpose(w.get(`${gp}.weight`)), bias(gp, cfg.mlpBias)));
  const act = b.op('Mul', [gate, g.linear(n, transpose(w.get(`${up}.weight`)), bias(up, cfg.mlpBias))]);
  return b.op('Add', [h, g.linear(act, transpose(w.get(`${dp}.weight`)), bias(dp, cfg.mlpBias))]);
}

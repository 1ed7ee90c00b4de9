// A decoder model as Kiln engines: the dense part of each layer (norms, QKV projection, output projection, MLP, the
// final norm and LM head) is a Kiln IR graph built with build() for the provider, with a dynamic token dimension so
// prefill chunks and decode batches share the engines. The graphs are cut at attention, which runs over the paged KV
// cache as a runtime kernel (attention.ts): graph 0 = embeddings + layer 0 up to q/k/v; graph i = layer i-1 after
// attention + layer i up to q/k/v; graph L = layer L-1 after attention + final norm + LM head on the sampled rows.
import { GraphBuilder, float } from '../ir/builder.js';
import { TensorData } from '../ir/tensor.js';
import type { ValueType } from '../ir/graph.js';
import { ModelError } from '../ir/errors.js';
import { build } from '../build/builder.js';
import { Engine, type ExecutionContext } from '../runtime/engine.js';
import { Tensor } from '../runtime/tensor.js';
import type { ModelConfig } from './config.js';
import { GpuTensor } from '../runtime/gpu-tensor.js';
import { isDeviceAttention, type AttentionSeq, type DevicePagedAttention, type PagedAttention } from './attention.js';

const OPSET = 17;

export interface ModelBuildOptions {
  provider: 'cpu' | 'cuda';
  /** Most tokens in one step (the token dimension's profile max). */
  maxTokens: number;
  /** Most sequences sampled in one step (rows of the LM head). */
  maxSeqs: number;
  /** Build precision (fp32 on the CPU). */
  precision?: 'fp32' | 'fp16' | 'bf16';
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

const f32Type = (shape: (number | string)[]): ValueType => ({ kind: 'tensor', dtype: 'float32', shape });
const i64 = (vals: number[]) => new TensorData('int64', [vals.length], BigInt64Array.from(vals.map(BigInt)));
const f32 = (v: number) => new TensorData('float32', [], Float32Array.of(v));

/** Graph-building helpers over one GraphBuilder; every weight becomes an initializer. */
class LayerGraph {
  readonly b: GraphBuilder;
  private n = 0;
  constructor(name: string, private readonly cfg: ModelConfig) {
    this.b = new GraphBuilder(name);
  }
  init(t: TensorData, name = `w${this.n++}`): string {
    return this.b.initializer(name, t);
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
  /** HF's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
  geluTanh(x: string): string {
    const b = this.b;
    const cube = b.op('Mul', [b.op('Pow', [x, this.init(f32(3))]), this.init(f32(0.044715))]);
    const t = b.op('Tanh', [b.op('Mul', [b.op('Add', [x, cube]), this.init(f32(Math.sqrt(2 / Math.PI)))])]);
    return b.op('Mul', [b.op('Mul', [x, this.init(f32(0.5))]), b.op('Add', [t, this.init(f32(1))])]);
  }
  silu(x: string): string {
    return this.b.op('Mul', [x, this.b.op('Sigmoid', [x])]);
  }
  /** Rotate-half RoPE on [T, heads*headDim] rows with cos/sin [T, headDim]. */
  rope(x: string, heads: number, cos: string, sin: string): string {
    const b = this.b, hd = this.cfg.headDim, half = hd / 2;
    const x3 = b.op('Reshape', [x, this.init(i64([-1, heads, hd]))]);
    const axes = this.init(i64([1]));
    const c = b.op('Unsqueeze', [cos, axes]), s = b.op('Unsqueeze', [sin, axes]);
    const sl = (start: number, end: number) => b.op('Slice', [x3, this.init(i64([start])), this.init(i64([end])), this.init(i64([-1]))]);
    const rot = b.op('Concat', [b.op('Neg', [sl(half, hd)]), sl(0, half)], { axis: -1 });
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
  ) {}

  static async build(cfg: ModelConfig, weights: Weights, dir: string, attention: PagedAttention, opts: ModelBuildOptions): Promise<DecoderModel> {
    const w = new WeightSource(weights, dir);
    const graphs: GraphBuilder[] = [];
    for (let i = 0; i <= cfg.numLayers; i++) graphs.push(layerGraph(cfg, w, i));
    const engines: Engine[] = [];
    for (const g of graphs) {
      const model = g.model(OPSET);
      const dyn = (inp: string, dims: number[]) => ({ min: [1, ...dims], opt: [Math.min(opts.maxTokens, 8), ...dims], max: [opts.maxTokens, ...dims] });
      const profile: Record<string, { min: number[]; opt: number[]; max: number[] }> = {};
      for (const inp of model.graph.inputs) {
        const t = inp.type as { shape?: (number | string)[] };
        const rest = (t.shape ?? []).slice(1) as number[];
        profile[inp.name] = inp.name === 'sel'
          ? { min: [1], opt: [1], max: [opts.maxSeqs] }
          : dyn(inp.name, rest);
      }
      const plan = await build(model, { device: opts.provider, precision: opts.precision ?? 'fp32', profiles: [profile], buildCommand: `LlmEngine.load('${dir}')` });
      engines.push(await Engine.load(plan));
    }
    return new DecoderModel(cfg, engines, engines.map((e) => e.createContext()), attention, { maxTokens: opts.maxTokens, maxSeqs: opts.maxSeqs });
  }

  /** Run one step; returns the logits [numSampled, vocab] of the sequences whose `sample` flag is set, in order. */
  async forward(batch: StepBatch): Promise<Float32Array> {
    if (isDeviceAttention(this.attention) && this.engines[0].header.device.backend === 'cuda') {
      // a few padded shapes, so the engines' runs are captured once per shape as CUDA graphs and replayed
      const rows = bucket(batch.tokens.length, this.limits.maxTokens);
      const pad = rows - batch.tokens.length;
      const { feeds, rope, sel } = this.stepInputs({ ...batch, tokens: [...batch.tokens, ...new Array<number>(pad).fill(0)], positions: [...batch.positions, ...new Array<number>(pad).fill(0)] });
      const n = sel.length;
      if (n) sel.push(...new Array<number>(bucket(n, this.limits.maxSeqs) - n).fill(sel[n - 1]));
      const logits = await this.forwardDevice(batch, this.attention, feeds, rope, sel, rows);
      return logits.subarray(0, n * this.config.vocabSize);
    }
    const { feeds, rope, sel } = this.stepInputs(batch);
    const cfg = this.config, T = batch.tokens.length;
    let x: Tensor | undefined, attn: Tensor | undefined;
    for (let i = 0; i <= cfg.numLayers; i++) {
      const f: Record<string, Tensor> = i === 0 ? { ...feeds, ...rope } : { x: x!, attn: attn!, ...(i < cfg.numLayers ? rope : {}) };
      if (i === cfg.numLayers) {
        // a step of prompt chunks only fills the cache: the last layer's MLP and the LM head have nothing to do
        if (!sel.length) return new Float32Array(0);
        f.sel = new Tensor('int64', BigInt64Array.from(sel.map(BigInt)), [sel.length]);
        const out = await this.contexts[i].run(f, ['logits']);
        return (out.logits as Tensor<'float32'>).data;
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
    const sel: number[] = [];
    batch.seqs.forEach((s, i) => batch.sample[i] && sel.push(s.rowStart + s.numTokens - 1));
    return { feeds, rope, sel };
  }

  /**
   * The GPU step: every layer engine leaves x/q/k/v on the device (runToDevice), the attention kernel reads them in
   * place and writes its own output buffer, which the next engine reads in place; only the logits come back.
   */
  private async forwardDevice(batch: StepBatch, att: DevicePagedAttention, feeds: Record<string, Tensor>, rope: Record<string, Tensor>, sel: number[], T: number): Promise<Float32Array> {
    const cfg = this.config, L = cfg.numLayers;
    att.beginStep(batch.seqs, batch.decode, T);
    const width = cfg.numHeads * cfg.headDim;
    const attn = GpuTensor.adopt({ kind: 'device', dtype: 'float32', dims: [T, width], deviceId: att.deviceId, ptr: att.outPtr, bytes: T * width * 4 });
    let x: GpuTensor | undefined;
    try {
      for (let i = 0; i < L; i++) {
        const f: Record<string, Tensor | GpuTensor> = i === 0 ? { ...feeds, ...rope } : { x: x!, attn, ...rope };
        const out = await this.contexts[i].runToDevice(f, ['x_out', 'q', 'k', 'v']);
        await x?.dispose();
        x = out.x_out;
        try {
          att.runLayer(i, out.q.ptr, out.k.ptr, out.v.ptr);
        } finally {
          for (const n of ['q', 'k', 'v']) await out[n].dispose();
        }
      }
      // a step of prompt chunks only fills the cache: the last layer's MLP and the LM head have nothing to do
      if (!sel.length) return new Float32Array(0);
      const out = await this.contexts[L].run({ x: x!, attn, sel: new Tensor('int64', BigInt64Array.from(sel.map(BigInt)), [sel.length]) }, ['logits']);
      return (out.logits as Tensor<'float32'>).data;
    } finally {
      await x?.dispose();
    }
  }

  private attend(layer: number, q: Tensor<'float32'>, k: Tensor<'float32'>, v: Tensor<'float32'>, out: Tensor<'float32'>, batch: StepBatch): void {
    const step = (decode: boolean) => ({ layer, q: q.data, k: k.data, v: v.data, out: out.data, seqs: batch.seqs.filter((_, i) => batch.decode[i] === decode) });
    const pre = step(false), dec = step(true);
    if (pre.seqs.length) this.attention.prefill(pre);
    if (dec.seqs.length) this.attention.decode(dec);
  }

  release(): void {
    for (const e of this.engines) e.dispose();
    this.attention.release();
  }
}

/** The next power of two at or above n, at most `max` (padded rows are computed and ignored). */
function bucket(n: number, max: number): number {
  return Math.min(max, 2 ** Math.ceil(Math.log2(Math.max(1, n))));
}

/** HF's default RoPE tables in fp32: inv_freq = theta^(-2i/d), angle = pos * inv_freq, emb = [angle, angle]. */
function ropeTables(positions: number[], hd: number, theta: number): Record<string, Tensor> {
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
  return { cos: new Tensor('float32', cos, [T, hd]), sin: new Tensor('float32', sin, [T, hd]) };
}

/** Graph i of the model (see the file comment). */
function layerGraph(cfg: ModelConfig, w: WeightSource, i: number): GraphBuilder {
  const g = new LayerGraph(`layer${i}`, cfg);
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
    const xin = b.input('x', 'float32', ['T', C]);
    const attn = b.input('attn', 'float32', ['T', cfg.numHeads * hd]);
    x = postAttention(g, cfg, w, `${p}${i - 1}.`, xin, attn);
  }
  if (i === cfg.numLayers) {
    const sel = b.input('sel', 'int64', ['S']);
    const rows = b.op('Gather', [x, sel], { axis: 0 });
    const normed = gpt2 ? g.layerNorm(rows, w.get('transformer.ln_f.weight'), w.get('transformer.ln_f.bias')) : g.rmsNorm(rows, w.get('model.norm.weight'));
    const head = cfg.tieWordEmbeddings || !w.has('lm_head.weight') ? w.get(gpt2 ? 'transformer.wte.weight' : 'model.embed_tokens.weight') : w.get('lm_head.weight');
    b.node('MatMul', [normed, g.init(transpose(head))], {}, { outputs: ['logits'] });
    b.output('logits', f32Type(['S', cfg.vocabSize]));
    return b;
  }
  b.node('Identity', [x], {}, { outputs: ['x_out'] });
  // declared fp32, so fp16/bf16 builds cast at the boundary and the next engine's fp32 inputs match
  b.output('x_out', f32Type(['T', C]));
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
    const cos = b.input('cos', 'float32', ['T', hd]), sin = b.input('sin', 'float32', ['T', hd]);
    q = g.rope(q, cfg.numHeads, cos, sin);
    k = g.rope(k, cfg.numKvHeads, cos, sin);
  }
  b.node('Identity', [q], {}, { outputs: ['q'] });
  b.node('Identity', [k], {}, { outputs: ['k'] });
  b.node('Identity', [v], {}, { outputs: ['v'] });
  b.output('q', f32Type(['T', H]));
  b.output('k', f32Type(['T', K]));
  b.output('v', f32Type(['T', K]));
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

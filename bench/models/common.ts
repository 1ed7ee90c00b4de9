// Shared pieces of the zoo generators: fast seeded weights, Constant nodes, torch-style shape chains, parameter counts.
import { GraphBuilder } from '../../src/ir/builder.js';
import type { Model } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';

/** The opset torch.onnx.export uses for the zoo models. */
export const ZOO_OPSET = 17;

/** torch.finfo(torch.float32).min: what HF models add or select for masked attention positions. */
export const FLOAT32_MIN = -3.4028234663852886e38;

/**
 * Seeded weight factory. Every tensor gets its own stream (derived from the model seed and a counter), so adding a
 * tensor does not shift the values of the others, and the fill is a tight mulberry32 loop with no allocation per
 * element: a 124M-parameter model fills in well under a second.
 */
export class Weights {
  private count = 0;
  /** `fill` false allocates zero tensors without touching their pages: structure/parameter checks of full models. */
  constructor(
    private readonly seed: number,
    private readonly fill = true,
  ) {}

  private nextSeed(): number {
    this.count++;
    return (Math.imul(this.seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(this.count, 0x85ebca6b)) | 0;
  }

  /** Uniformly distributed values with the given mean and standard deviation (uniform on mean ± std·√3). */
  random(dims: number[], std: number, mean = 0): TensorData {
    const n = dims.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    if (!this.fill) return new TensorData('float32', dims, out);
    const scale = (std * Math.sqrt(12)) / 4294967296;
    let s = this.nextSeed();
    for (let i = 0; i < n; i++) {
      s = (s + 0x6d2b79f5) | 0;
      let t = Math.imul(s ^ (s >>> 15), s | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      out[i] = (((t ^ (t >>> 14)) >>> 0) - 2147483648) * scale + mean;
    }
    return new TensorData('float32', dims, out);
  }

  /** Positive values in [lo, hi) (BatchNorm running variances). */
  positive(dims: number[], lo: number, hi: number): TensorData {
    return this.random(dims, (hi - lo) / Math.sqrt(12), (lo + hi) / 2);
  }
}

/** Options every zoo generator takes. */
export interface ZooOptions {
  /** Seed of the random weights (each model has its own default). */
  seed?: number;
  /** 'random' (default), or 'zeros' for a fast structure-only build (no weight fill): node and parameter counts. */
  weights?: 'random' | 'zeros';
}

/** The docString phrase stating where the weights come from. */
export const weightsDoc = (o: ZooOptions, seed: number) =>
  o.weights === 'zeros' ? 'ZERO weights (structure-only build)' : `RANDOM weights (seed ${seed})`;

export const weightsFor = (o: ZooOptions, defaultSeed: number) =>
  new Weights(o.seed ?? defaultSeed, o.weights !== 'zeros');

export const f32 = (dims: number[], values: number[]) => new TensorData('float32', dims, Float32Array.from(values));
export const i64 = (dims: number[], values: number[]) =>
  new TensorData('int64', dims, BigInt64Array.from(values.map((v) => BigInt(v))));

/** A Constant node (torch exports scalars and small shape vectors this way, not as initializers). */
export function constant(b: GraphBuilder, name: string, value: TensorData): string {
  return b.node('Constant', [], { value }, { name, outputs: [name] })[0];
}

export const scalarF = (b: GraphBuilder, name: string, v: number) => constant(b, name, f32([], [v]));
export const scalarI = (b: GraphBuilder, name: string, v: number) => constant(b, name, i64([], [v]));
export const vectorI = (b: GraphBuilder, name: string, v: number[]) => constant(b, name, i64([v.length], v));

/** Dim `axis` of `x` as a 1-element int64 tensor: Shape -> Gather -> Unsqueeze, as torch exports x.size(axis). */
export function dimOf(b: GraphBuilder, x: string, axis: number, name: string): string {
  const shape = b.op('Shape', [x], {}, `${name}.shape`);
  const d = b.op('Gather', [shape, scalarI(b, `${name}.idx`, axis)], { axis: 0 }, `${name}.gather`);
  return b.op('Unsqueeze', [d, vectorI(b, `${name}.axes`, [0])], {}, `${name}.unsqueeze`);
}

/** Dim `axis` of `x` as an int64 scalar (Shape -> Gather), for Range. */
export function scalarDimOf(b: GraphBuilder, x: string, axis: number, name: string): string {
  const shape = b.op('Shape', [x], {}, `${name}.shape`);
  return b.op('Gather', [shape, scalarI(b, `${name}.idx`, axis)], { axis: 0 }, `${name}.gather`);
}

/**
 * A Reshape target [n, seq, ...tail] for a [n, seq, ...] tensor `like`: either a torch-style chain
 * (Shape/Gather/Unsqueeze on both dynamic dims, Concat with the constant tail) or one constant using 0 = copy dim.
 */
export function seqShape(b: GraphBuilder, like: string, tail: number[], mode: ShapeOps, name: string): string {
  if (mode === 'constant') return vectorI(b, `${name}.const`, [0, 0, ...tail]);
  const n = dimOf(b, like, 0, `${name}.n`);
  const s = dimOf(b, like, 1, `${name}.seq`);
  return b.op('Concat', [n, s, vectorI(b, `${name}.tail`, tail)], { axis: 0 }, `${name}.concat`);
}

export type ShapeOps = 'dynamic' | 'constant';

/** Initializer name suffixes that are buffers (running statistics, position ids, masks), not trained parameters. */
const BUFFER_SUFFIXES = ['running_mean', 'running_var', 'position_ids', 'causal_mask', 'causal_bias'];

/** Trainable parameter count, as torch counts it: float initializers that are not buffers. */
export function countParams(m: Model): number {
  let n = 0;
  for (const [name, t] of m.graph.initializers) {
    if (t.dtype !== 'float32' || BUFFER_SUFFIXES.some((s) => name.endsWith(s))) continue;
    n += t.size;
  }
  return n;
}

/** Total elements over all initializers (parameters and buffers). */
export function countInitializerElements(m: Model): number {
  let n = 0;
  for (const t of m.graph.initializers.values()) n += t.size;
  return n;
}

/** Node count per op type, for reports and structure checks. */
export function opHistogram(m: Model): Map<string, number> {
  const h = new Map<string, number>();
  for (const node of m.graph.nodes) h.set(node.opType, (h.get(node.opType) ?? 0) + 1);
  return h;
}

/** LayerNormalization over the last axis, fused (opset 17 op) or as the ReduceMean/Sub/Pow/... chain. */
export function layerNorm(
  b: GraphBuilder,
  x: string,
  gamma: string,
  beta: string,
  eps: number,
  fused: boolean,
  name: string,
): string {
  if (fused) return b.op('LayerNormalization', [x, gamma, beta], { axis: -1, epsilon: eps }, name);
  const mean = b.op('ReduceMean', [x], { axes: [-1], keepdims: 1 }, `${name}.mean`);
  const d = b.op('Sub', [x, mean], {}, `${name}.sub`);
  const sq = b.op('Pow', [d, scalarF(b, `${name}.two`, 2)], {}, `${name}.pow`);
  const v = b.op('ReduceMean', [sq], { axes: [-1], keepdims: 1 }, `${name}.var`);
  const ve = b.op('Add', [v, scalarF(b, `${name}.eps`, eps)], {}, `${name}.add_eps`);
  const sd = b.op('Sqrt', [ve], {}, `${name}.sqrt`);
  const norm = b.op('Div', [d, sd], {}, `${name}.div`);
  const scaled = b.op('Mul', [norm, gamma], {}, `${name}.mul`);
  return b.op('Add', [scaled, beta], {}, `${name}.add`);
}

/** A torch Linear on a 3-D input: MatMul with the [in, out] weight, then Add bias. */
export function linear(
  b: GraphBuilder,
  w: Weights,
  x: string,
  inF: number,
  outF: number,
  name: string,
  std = 0.02,
): string {
  const weight = b.initializer(`${name}.weight`, w.random([inF, outF], std));
  const bias = b.initializer(`${name}.bias`, w.random([outF], std));
  const mm = b.op('MatMul', [x, weight], {}, `${name}.matmul`);
  return b.op('Add', [mm, bias], {}, `${name}.add`);
}

/** Rename a value (e.g. the last node's output to the graph output name) everywhere it appears. */
export function renameValue(b: GraphBuilder, from: string, to: string): string {
  for (const n of b.graph.nodes) {
    n.inputs = n.inputs.map((v) => (v === from ? to : v));
    n.outputs = n.outputs.map((v) => (v === from ? to : v));
  }
  return to;
}

export { GraphBuilder };

// A GPT-2-style decoder (HF GPT2LMHeadModel as torch.onnx.export writes it, no KV cache), with random weights.
import type { Model } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import {
  FLOAT32_MIN,
  GraphBuilder,
  type ShapeOps,
  type ZooOptions,
  ZOO_OPSET,
  dimOf,
  layerNorm,
  linear,
  scalarDimOf,
  scalarF,
  scalarI,
  seqShape,
  vectorI,
  weightsDoc,
  weightsFor,
} from './common.js';

export interface Gpt2Options extends ZooOptions {
  layers?: number;
  hidden?: number;
  heads?: number;
  /** MLP width (4 * hidden). */
  intermediate?: number;
  vocab?: number;
  maxPositions?: number;
  /** 'where': Where(bool triangle, scores, float32 min) as HF does; 'additive': Add a 0/min float triangle. */
  causalMask?: 'where' | 'additive';
  shapeOps?: ShapeOps;
  eps?: number;
}

/** Small variant for tests. */
export const GPT2_SMALL: Gpt2Options = { layers: 2, hidden: 32, heads: 4, vocab: 100, maxPositions: 32 };

export function gpt2(opts: Gpt2Options = {}): Model {
  const {
    layers = 12,
    hidden = 768,
    heads = 12,
    vocab = 50257,
    maxPositions = 1024,
    causalMask = 'where',
    shapeOps = 'dynamic',
    eps = 1e-5,
  } = opts;
  const intermediate = opts.intermediate ?? 4 * hidden;
  if (hidden % heads !== 0) throw new Error(`gpt2: hidden (${hidden}) must be a multiple of heads (${heads})`);
  const dh = hidden / heads;
  const seed = opts.seed ?? 124;
  const w = weightsFor(opts, seed);
  const b = new GraphBuilder('gpt2');
  const ids = b.input('input_ids', 'int64', ['n', 'seq']);
  const ln = (x: string, name: string) =>
    layerNorm(
      b,
      x,
      b.initializer(`${name}.weight`, w.random([hidden], 0.05, 1)),
      b.initializer(`${name}.bias`, w.random([hidden], 0.05)),
      eps,
      true,
      name,
    );

  // Token embeddings + position embeddings of arange(seq).
  const wte = b.initializer('transformer.wte.weight', w.random([vocab, hidden], 0.02));
  const wpe = b.initializer('transformer.wpe.weight', w.random([maxPositions, hidden], 0.01));
  const seqScalar = scalarDimOf(b, ids, 1, 'transformer.seq');
  const positions = b.op(
    'Range',
    [scalarI(b, 'transformer.pos.start', 0), seqScalar, scalarI(b, 'transformer.pos.delta', 1)],
    {},
    'transformer.pos.range',
  );
  const posIds = b.op(
    'Unsqueeze',
    [positions, vectorI(b, 'transformer.pos.axes', [0])],
    {},
    'transformer.pos.unsqueeze',
  );
  const tok = b.op('Gather', [wte, ids], { axis: 0 }, 'transformer.wte');
  const pos = b.op('Gather', [wpe, posIds], { axis: 0 }, 'transformer.wpe');
  let h = b.op('Add', [tok, pos], {}, 'transformer.embed');

  // The causal triangle buffer [1, 1, max, max], sliced to [1, 1, seq, seq] once and shared by all layers.
  const seq1 = dimOf(b, ids, 1, 'transformer.mask.seq');
  const tri = (on: number, off: number) => {
    const t = new Uint8Array(maxPositions * maxPositions);
    for (let i = 0; i < maxPositions; i++) t.fill(1, i * maxPositions, i * maxPositions + i + 1);
    if (on === 1 && off === 0) return new TensorData('bool', [1, 1, maxPositions, maxPositions], t);
    return new TensorData(
      'float32',
      [1, 1, maxPositions, maxPositions],
      Float32Array.from(t, (v) => (v ? on : off)),
    );
  };
  const triName = causalMask === 'where' ? 'transformer.attn.causal_mask' : 'transformer.attn.causal_bias';
  const triInit = b.initializer(triName, causalMask === 'where' ? tri(1, 0) : tri(0, FLOAT32_MIN));
  const ends = b.op('Concat', [seq1, seq1], { axis: 0 }, 'transformer.mask.ends');
  const maskSlice = b.op(
    'Slice',
    [triInit, vectorI(b, 'transformer.mask.starts', [0, 0]), ends, vectorI(b, 'transformer.mask.axes', [2, 3])],
    {},
    'transformer.mask.slice',
  );
  const minValue = causalMask === 'where' ? scalarF(b, 'transformer.mask.min', FLOAT32_MIN) : '';

  for (let l = 0; l < layers; l++) {
    const p = `transformer.h.${l}`;
    const x = ln(h, `${p}.ln_1`);
    const qkv = linear(b, w, x, hidden, 3 * hidden, `${p}.attn.c_attn`);
    const [q0, k0, v0] = b.node(
      'Split',
      [qkv, vectorI(b, `${p}.attn.split_sizes`, [hidden, hidden, hidden])],
      { axis: 2 },
      { name: `${p}.attn.split`, outputs: 3 },
    );
    const headShape = seqShape(b, x, [heads, dh], shapeOps, `${p}.attn.head_shape`);
    const heads4 = (y: string, name: string, perm: number[]) =>
      b.op(
        'Transpose',
        [b.op('Reshape', [y, headShape], {}, `${p}.attn.${name}.reshape`)],
        { perm },
        `${p}.attn.${name}.transpose`,
      );
    const q = heads4(q0, 'q', [0, 2, 1, 3]);
    const kT = heads4(k0, 'k', [0, 2, 3, 1]);
    const v = heads4(v0, 'v', [0, 2, 1, 3]);
    let s = b.op('MatMul', [q, kT], {}, `${p}.attn.scores`);
    s = b.op('Div', [s, scalarF(b, `${p}.attn.scale`, Math.sqrt(dh))], {}, `${p}.attn.div`);
    s =
      causalMask === 'where'
        ? b.op('Where', [maskSlice, s, minValue], {}, `${p}.attn.mask`)
        : b.op('Add', [s, maskSlice], {}, `${p}.attn.mask`);
    const probs = b.op('Softmax', [s], { axis: -1 }, `${p}.attn.softmax`);
    const ctx = b.op('MatMul', [probs, v], {}, `${p}.attn.context`);
    const ctxT = b.op('Transpose', [ctx], { perm: [0, 2, 1, 3] }, `${p}.attn.context.transpose`);
    const merged = b.op(
      'Reshape',
      [ctxT, seqShape(b, ctxT, [hidden], shapeOps, `${p}.attn.merge_shape`)],
      {},
      `${p}.attn.context.reshape`,
    );
    const attnOut = linear(b, w, merged, hidden, hidden, `${p}.attn.c_proj`);
    h = b.op('Add', [h, attnOut], {}, `${p}.attn.residual`);

    const y = ln(h, `${p}.ln_2`);
    const f = linear(b, w, y, hidden, intermediate, `${p}.mlp.c_fc`);
    const g = geluTanh(b, f, `${p}.mlp.gelu`);
    const f2 = linear(b, w, g, intermediate, hidden, `${p}.mlp.c_proj`);
    h = b.op('Add', [h, f2], {}, `${p}.mlp.residual`);
  }
  h = ln(h, 'transformer.ln_f');
  // The LM head is tied to wte: MatMul with its transpose (an optimizer can fold the Transpose into an initializer).
  const wteT = b.op('Transpose', [wte], { perm: [1, 0] }, 'lm_head.transpose');
  b.node('MatMul', [h, wteT], {}, { name: 'lm_head', outputs: ['logits'] });
  b.output('logits', { kind: 'tensor', dtype: 'float32', shape: ['n', 'seq', vocab] });
  return b.model(ZOO_OPSET, {
    docString:
      `Kiln model zoo: GPT-2-style decoder in torch.onnx.export form (${layers} pre-LN layers, hidden ${hidden}, ${heads} heads, ` +
      `MLP ${intermediate}, vocab ${vocab}, ${maxPositions} positions, causal mask ${causalMask}, tied LM head). ${weightsDoc(opts, seed)}:` +
      ` for benchmarks and parity tests only, not a trained language model.`,
  });
}

/** HF's NewGELUActivation: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))). */
function geluTanh(b: GraphBuilder, x: string, name: string): string {
  const half = b.op('Mul', [x, scalarF(b, `${name}.half`, 0.5)], {}, `${name}.mul_half`);
  const cube = b.op('Pow', [x, scalarF(b, `${name}.three`, 3)], {}, `${name}.pow`);
  const c = b.op('Mul', [cube, scalarF(b, `${name}.coef`, 0.044715)], {}, `${name}.mul_coef`);
  const inner = b.op('Add', [x, c], {}, `${name}.add_inner`);
  const scaled = b.op('Mul', [inner, scalarF(b, `${name}.sqrt_2_pi`, Math.sqrt(2 / Math.PI))], {}, `${name}.mul_scale`);
  const t = b.op('Tanh', [scaled], {}, `${name}.tanh`);
  const one = b.op('Add', [t, scalarF(b, `${name}.one`, 1)], {}, `${name}.add_one`);
  return b.op('Mul', [half, one], {}, `${name}.mul`);
}

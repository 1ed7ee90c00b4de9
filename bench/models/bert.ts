// A BERT encoder as torch.onnx.export (opset 17, eager attention) writes HF BertModel, with random weights.
import { float } from '../../src/ir/builder.js';
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
  renameValue,
  scalarF,
  scalarI,
  seqShape,
  vectorI,
  weightsDoc,
  weightsFor,
} from './common.js';

export interface BertOptions extends ZooOptions {
  layers?: number;
  hidden?: number;
  heads?: number;
  intermediate?: number;
  vocab?: number;
  maxPositions?: number;
  typeVocab?: number;
  /** 'fused': LayerNormalization nodes; 'decomposed': the ReduceMean/Sub/Pow/... chain older exporters emit. */
  layerNorm?: 'fused' | 'decomposed';
  /** 'dynamic': Reshape targets from Shape/Gather/Unsqueeze/Concat chains (torch's form); 'constant': [0, 0, ...]. */
  shapeOps?: ShapeOps;
  /** Added to masked attention scores: torch.finfo(float32).min (current HF) or -10000 (older HF). */
  maskValue?: number;
  /** Also output 'pooler_output' (tanh(Gemm) of the first token), as BertModel does. Included in the 110M. */
  pooler?: boolean;
  eps?: number;
}

/** Small variant for tests. */
export const BERT_SMALL: BertOptions = {
  layers: 2,
  hidden: 32,
  heads: 4,
  intermediate: 64,
  vocab: 100,
  maxPositions: 64,
};

export function bertBase(opts: BertOptions = {}): Model {
  const {
    layers = 12,
    hidden = 768,
    heads = 12,
    intermediate = 3072,
    vocab = 30522,
    maxPositions = 512,
    typeVocab = 2,
    layerNorm: lnMode = 'fused',
    shapeOps = 'dynamic',
    maskValue = FLOAT32_MIN,
    pooler = true,
    eps = 1e-12,
  } = opts;
  if (hidden % heads !== 0) throw new Error(`bertBase: hidden (${hidden}) must be a multiple of heads (${heads})`);
  const dh = hidden / heads;
  const seed = opts.seed ?? 110;
  const w = weightsFor(opts, seed);
  const b = new GraphBuilder('bert');
  const ids = b.input('input_ids', 'int64', ['n', 'seq']);
  const mask = b.input('attention_mask', 'int64', ['n', 'seq']);
  const ln = (x: string, name: string) =>
    layerNorm(
      b,
      x,
      b.initializer(`${name}.weight`, w.random([hidden], 0.05, 1)),
      b.initializer(`${name}.bias`, w.random([hidden], 0.05)),
      eps,
      lnMode === 'fused',
      name,
    );

  // Embeddings: word + position (a position_ids buffer sliced to seq) + token type 0, then LayerNorm.
  const wordE = b.initializer('embeddings.word_embeddings.weight', w.random([vocab, hidden], 0.02));
  const posE = b.initializer('embeddings.position_embeddings.weight', w.random([maxPositions, hidden], 0.02));
  const typeE = b.initializer('embeddings.token_type_embeddings.weight', w.random([typeVocab, hidden], 0.02));
  const posIds = b.initializer(
    'embeddings.position_ids',
    new TensorData(
      'int64',
      [1, maxPositions],
      BigInt64Array.from({ length: maxPositions }, (_, i) => BigInt(i)),
    ),
  );
  const seq = dimOf(b, ids, 1, 'embeddings.seq');
  const posSlice = b.op(
    'Slice',
    [posIds, vectorI(b, 'embeddings.pos.starts', [0]), seq, vectorI(b, 'embeddings.pos.axes', [1])],
    {},
    'embeddings.pos.slice',
  );
  const words = b.op('Gather', [wordE, ids], { axis: 0 }, 'embeddings.word');
  const pos = b.op('Gather', [posE, posSlice], { axis: 0 }, 'embeddings.pos');
  const type0 = b.op('Gather', [typeE, scalarI(b, 'embeddings.type.idx', 0)], { axis: 0 }, 'embeddings.type');
  let h = b.op('Add', [b.op('Add', [words, type0], {}, 'embeddings.add_type'), pos], {}, 'embeddings.add_pos');
  h = ln(h, 'embeddings.LayerNorm');

  // Extended attention mask: (1 - mask[:, None, None, :].float()) * maskValue.
  const m4 = b.op('Unsqueeze', [mask, vectorI(b, 'mask.axes', [1, 2])], {}, 'mask.unsqueeze');
  const mf = b.op('Cast', [m4], { to: 1 }, 'mask.cast');
  const inv = b.op('Sub', [scalarF(b, 'mask.one', 1), mf], {}, 'mask.sub');
  const ext = b.op('Mul', [inv, scalarF(b, 'mask.value', maskValue)], {}, 'mask.mul');

  for (let l = 0; l < layers; l++) {
    const p = `encoder.layer.${l}`;
    const a = `${p}.attention.self`;
    const headShape = seqShape(b, h, [heads, dh], shapeOps, `${a}.head_shape`);
    const heads4 = (name: string, perm: number[]) => {
      const y = linear(b, w, h, hidden, hidden, `${a}.${name}`);
      const r = b.op('Reshape', [y, headShape], {}, `${a}.${name}.reshape`);
      return b.op('Transpose', [r], { perm }, `${a}.${name}.transpose`);
    };
    const q = heads4('query', [0, 2, 1, 3]);
    const kT = heads4('key', [0, 2, 3, 1]);
    const v = heads4('value', [0, 2, 1, 3]);
    let s = b.op('MatMul', [q, kT], {}, `${a}.scores`);
    s = b.op('Div', [s, scalarF(b, `${a}.scale`, Math.sqrt(dh))], {}, `${a}.div`);
    s = b.op('Add', [s, ext], {}, `${a}.add_mask`);
    const probs = b.op('Softmax', [s], { axis: -1 }, `${a}.softmax`);
    const ctx = b.op('MatMul', [probs, v], {}, `${a}.context`);
    const ctxT = b.op('Transpose', [ctx], { perm: [0, 2, 1, 3] }, `${a}.context.transpose`);
    const merged = b.op(
      'Reshape',
      [ctxT, seqShape(b, ctxT, [hidden], shapeOps, `${a}.merge_shape`)],
      {},
      `${a}.context.reshape`,
    );
    const attnOut = linear(b, w, merged, hidden, hidden, `${p}.attention.output.dense`);
    const h1 = ln(b.op('Add', [attnOut, h], {}, `${p}.attention.output.residual`), `${p}.attention.output.LayerNorm`);

    const f = linear(b, w, h1, hidden, intermediate, `${p}.intermediate.dense`);
    const g = geluErf(b, f, `${p}.intermediate.gelu`);
    const f2 = linear(b, w, g, intermediate, hidden, `${p}.output.dense`);
    h = ln(b.op('Add', [f2, h1], {}, `${p}.output.residual`), `${p}.output.LayerNorm`);
  }
  h = renameValue(b, h, 'last_hidden_state');
  b.output('last_hidden_state', { kind: 'tensor', dtype: 'float32', shape: ['n', 'seq', hidden] });
  if (pooler) {
    const first = b.op('Gather', [h, scalarI(b, 'pooler.idx', 0)], { axis: 1 }, 'pooler.first');
    const pw = b.initializer('pooler.dense.weight', w.random([hidden, hidden], 0.02));
    const pb = b.initializer('pooler.dense.bias', w.random([hidden], 0.02));
    const d = b.op('Gemm', [first, pw, pb], { alpha: float(1), beta: float(1), transB: 1 }, 'pooler.dense');
    b.node('Tanh', [d], {}, { name: 'pooler.tanh', outputs: ['pooler_output'] });
    b.output('pooler_output', { kind: 'tensor', dtype: 'float32', shape: ['n', hidden] });
  }
  return b.model(ZOO_OPSET, {
    docString:
      `Kiln model zoo: BERT encoder in torch.onnx.export form (${layers} layers, hidden ${hidden}, ${heads} heads, ` +
      `FFN ${intermediate}, vocab ${vocab}, LayerNorm ${lnMode}, shape ops ${shapeOps}). ${weightsDoc(opts, seed)}: ` +
      'for benchmarks and parity tests only, not a trained language model.',
  });
}

/** GELU in erf form, as torch exports nn.GELU(): x * 0.5 * (1 + erf(x / sqrt(2))). */
function geluErf(b: GraphBuilder, x: string, name: string): string {
  const d = b.op('Div', [x, scalarF(b, `${name}.sqrt2`, Math.SQRT2)], {}, `${name}.div`);
  const e = b.op('Erf', [d], {}, `${name}.erf`);
  const a = b.op('Add', [e, scalarF(b, `${name}.one`, 1)], {}, `${name}.add`);
  const m = b.op('Mul', [x, a], {}, `${name}.mul`);
  return b.op('Mul', [m, scalarF(b, `${name}.half`, 0.5)], {}, `${name}.mul_half`);
}

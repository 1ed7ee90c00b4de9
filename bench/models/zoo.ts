// The model zoo: generators for test and benchmark models, written with Kiln's own ONNX writer and a fixed seed.
// All weights are random (stated in each model's doc string); the models are for speed and parity, not accuracy.
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import type { Model } from '../../src/ir/graph.js';
import { TensorData } from '../../src/ir/tensor.js';
import { resnet50, RESNET_SMALL } from './resnet.js';
import { mobilenetV2, MOBILENET_SMALL } from './mobilenet.js';
import { bertBase, BERT_SMALL } from './bert.js';
import { gpt2, GPT2_SMALL } from './gpt2.js';

/** A small image classifier (conv-bn-relu x2, pool, fc, softmax) on 1x3x32x32: the bundled `npm start` example. */
export function tinyCnn(seed = 1): Model {
  const r = seededRandom(seed);
  const b = new GraphBuilder('tiny_cnn');
  const x = b.input('input', 'float32', ['n', 3, 32, 32]);
  const convBnRelu = (inp: string, cin: number, cout: number, name: string, stride = 1) => {
    const w = b.initializer(`${name}.weight`, randomTensor(r, [cout, cin, 3, 3], Math.sqrt(2 / (cin * 9))));
    const c = b.op('Conv', [inp, w], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [stride, stride] }, name);
    const ones = (v: number) => new TensorData('float32', [cout], new Float32Array(cout).fill(v));
    const bn = b.op('BatchNormalization', [c, b.initializer(`${name}.bn.scale`, ones(1)), b.initializer(`${name}.bn.bias`, randomTensor(r, [cout], 0.1)),
      b.initializer(`${name}.bn.mean`, randomTensor(r, [cout], 0.1)), b.initializer(`${name}.bn.var`, ones(1))], { epsilon: 1e-5 }, `${name}.bn`);
    return b.op('Relu', [bn], {}, `${name}.relu`);
  };
  let h = convBnRelu(x, 3, 16, 'conv1');
  h = b.op('MaxPool', [h], { kernel_shape: [2, 2], strides: [2, 2] }, 'pool1');
  h = convBnRelu(h, 16, 32, 'conv2');
  h = b.op('GlobalAveragePool', [h], {}, 'gap');
  h = b.op('Flatten', [h], { axis: 1 }, 'flatten');
  h = b.op('Gemm', [h, b.initializer('fc.weight', randomTensor(r, [10, 32], 0.2)), b.initializer('fc.bias', randomTensor(r, [10], 0.1))], { transB: 1 }, 'fc');
  const [y] = b.node('Softmax', [h], { axis: 1 }, { name: 'softmax', outputs: ['probabilities'] });
  b.output(y, { kind: 'tensor', dtype: 'float32', shape: ['n', 10] });
  return b.model(17, { docString: 'Kiln tiny CNN example (random weights, for demonstration and benchmarking only).' });
}

export { resnet50, RESNET_SMALL, type ResNetOptions } from './resnet.js';
export { mobilenetV2, MOBILENET_SMALL, type MobileNetV2Options } from './mobilenet.js';
export { bertBase, BERT_SMALL, type BertOptions } from './bert.js';
export { gpt2, GPT2_SMALL, type Gpt2Options } from './gpt2.js';
export { countParams, countInitializerElements, opHistogram } from './common.js';

/** One zoo entry: a full-size build and (where the architecture has one) a small test-size build. */
export interface ZooEntry {
  name: string;
  full: () => Model;
  small?: () => Model;
}

export const ZOO: ZooEntry[] = [
  { name: 'tiny-cnn', full: () => tinyCnn() },
  { name: 'resnet50', full: () => resnet50(), small: () => resnet50(RESNET_SMALL) },
  { name: 'mobilenet-v2', full: () => mobilenetV2(), small: () => mobilenetV2(MOBILENET_SMALL) },
  { name: 'bert-base', full: () => bertBase(), small: () => bertBase(BERT_SMALL) },
  { name: 'bert-base-decomposed', full: () => bertBase({ layerNorm: 'decomposed', shapeOps: 'constant' }),
    small: () => bertBase({ ...BERT_SMALL, layerNorm: 'decomposed', shapeOps: 'constant' }) },
  { name: 'gpt2', full: () => gpt2(), small: () => gpt2(GPT2_SMALL) },
  { name: 'gpt2-additive-mask', full: () => gpt2({ causalMask: 'additive', shapeOps: 'constant' }),
    small: () => gpt2({ ...GPT2_SMALL, causalMask: 'additive', shapeOps: 'constant' }) },
];

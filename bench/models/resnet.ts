// ResNet-50 v1.5 (torchvision layout) with random weights, as torch.onnx.export writes it without BN folding.
import type { Model } from '../../src/ir/graph.js';
import { float } from '../../src/ir/builder.js';
import { GraphBuilder, type ZooOptions, ZOO_OPSET, weightsFor, weightsDoc } from './common.js';

export interface ResNetOptions extends ZooOptions {
  /** Bottleneck blocks per layer (ResNet-50: [3, 4, 6, 3]). */
  blocks?: number[];
  /** Stem width and the first layer's bottleneck width (64); later layers double it. */
  width?: number;
  classes?: number;
  /** Input height and width (224). */
  image?: number;
}

/** Small variant for tests: one block per layer, width 8, 10 classes, 32x32 images. */
export const RESNET_SMALL: ResNetOptions = { blocks: [1, 1, 1, 1], width: 8, classes: 10, image: 32 };

const EXPANSION = 4;

export function resnet50(opts: ResNetOptions = {}): Model {
  const { blocks = [3, 4, 6, 3], width = 64, classes = 1000, image = 224 } = opts;
  const seed = opts.seed ?? 50;
  const w = weightsFor(opts, seed);
  const b = new GraphBuilder('resnet50');
  const x = b.input('input', 'float32', ['n', 3, image, image]);

  const conv = (inp: string, cin: number, cout: number, k: number, stride: number, name: string) => {
    const weight = b.initializer(`${name}.weight`, w.random([cout, cin, k, k], Math.sqrt(2 / (cin * k * k))));
    const p = (k - 1) >> 1;
    return b.op(
      'Conv',
      [inp, weight],
      { dilations: [1, 1], group: 1, kernel_shape: [k, k], pads: [p, p, p, p], strides: [stride, stride] },
      name,
    );
  };
  // gamma scales each block's last BN down so the residual stream grows slowly with depth (random weights otherwise
  // double its variance per block).
  const bn = (inp: string, c: number, name: string, gamma = 1) => {
    const ins = [
      b.initializer(`${name}.weight`, w.random([c], 0.1 * gamma, gamma)),
      b.initializer(`${name}.bias`, w.random([c], 0.1)),
      b.initializer(`${name}.running_mean`, w.random([c], 0.1)),
      b.initializer(`${name}.running_var`, w.positive([c], 0.5, 1.5)),
    ];
    return b.op('BatchNormalization', [inp, ...ins], { epsilon: 1e-5, momentum: 0.9 }, name);
  };
  const relu = (inp: string, name: string) => b.op('Relu', [inp], {}, name);

  let h = relu(bn(conv(x, 3, width, 7, 2, 'conv1'), width, 'bn1'), 'relu');
  h = b.op(
    'MaxPool',
    [h],
    { ceil_mode: 0, dilations: [1, 1], kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [2, 2] },
    'maxpool',
  );
  let cin = width;
  blocks.forEach((count, li) => {
    const planes = width << li;
    for (let bi = 0; bi < count; bi++) {
      const name = `layer${li + 1}.${bi}`;
      const stride = bi === 0 && li > 0 ? 2 : 1;
      const cout = planes * EXPANSION;
      let y = relu(bn(conv(h, cin, planes, 1, 1, `${name}.conv1`), planes, `${name}.bn1`), `${name}.relu1`);
      y = relu(bn(conv(y, planes, planes, 3, stride, `${name}.conv2`), planes, `${name}.bn2`), `${name}.relu2`);
      y = bn(conv(y, planes, cout, 1, 1, `${name}.conv3`), cout, `${name}.bn3`, 0.5);
      const identity =
        stride !== 1 || cin !== cout
          ? bn(conv(h, cin, cout, 1, stride, `${name}.downsample.0`), cout, `${name}.downsample.1`)
          : h;
      h = relu(b.op('Add', [y, identity], {}, `${name}.add`), `${name}.relu3`);
      cin = cout;
    }
  });
  h = b.op('GlobalAveragePool', [h], {}, 'avgpool');
  h = b.op('Flatten', [h], { axis: 1 }, 'flatten');
  const bound = 1 / Math.sqrt(cin);
  const fcW = b.initializer('fc.weight', w.random([classes, cin], bound / Math.sqrt(3)));
  const fcB = b.initializer('fc.bias', w.random([classes], bound / Math.sqrt(3)));
  b.node('Gemm', [h, fcW, fcB], { alpha: float(1), beta: float(1), transB: 1 }, { name: 'fc', outputs: ['logits'] });
  b.output('logits', { kind: 'tensor', dtype: 'float32', shape: ['n', classes] });
  return b.model(ZOO_OPSET, {
    docString:
      `Kiln model zoo: ResNet-50 v1.5 structure (torchvision layout, blocks [${blocks}], width ${width}, ${classes} classes, ` +
      `${image}x${image} input). ${weightsDoc(opts, seed)}: for benchmarks and parity tests only, not a trained classifier.`,
  });
}

// MobileNetV2 (torchvision layout) with random weights: inverted residuals, depthwise convs, ReLU6 as Clip(0, 6).
import { float } from '../../src/ir/builder.js';
import type { Model } from '../../src/ir/graph.js';
import { GraphBuilder, type ZooOptions, ZOO_OPSET, weightsFor, weightsDoc, scalarF } from './common.js';

export interface MobileNetV2Options extends ZooOptions {
  /** Channel multiplier (1.0); channel counts are rounded to multiples of 8 like torchvision's _make_divisible. */
  widthMult?: number;
  /** Blocks per stage, overriding the n column of the 7 stages ([1, 2, 3, 4, 3, 3, 1]). */
  repeats?: number[];
  /** Channels of the last 1x1 conv (1280, or more when widthMult > 1). */
  lastChannel?: number;
  classes?: number;
  image?: number;
}

/** Small variant for tests: width 0.25, one block per stage, 64 last channels, 10 classes, 32x32 images. */
export const MOBILENET_SMALL: MobileNetV2Options = {
  widthMult: 0.25,
  repeats: [1, 1, 1, 1, 1, 1, 1],
  lastChannel: 64,
  classes: 10,
  image: 32,
};

/** Inverted residual settings t (expansion), c (channels), n (blocks), s (first block's stride). */
const SETTINGS = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];

function makeDivisible(v: number, divisor = 8): number {
  let r = Math.max(divisor, Math.floor((v + divisor / 2) / divisor) * divisor);
  if (r < 0.9 * v) r += divisor;
  return r;
}

export function mobilenetV2(opts: MobileNetV2Options = {}): Model {
  const { widthMult = 1, classes = 1000, image = 224 } = opts;
  const repeats = opts.repeats ?? SETTINGS.map((s) => s[2]);
  if (repeats.length !== SETTINGS.length)
    throw new Error(`mobilenetV2: repeats needs ${SETTINGS.length} entries, got ${repeats.length}`);
  const lastChannel = opts.lastChannel ?? makeDivisible(1280 * Math.max(1, widthMult));
  const seed = opts.seed ?? 2;
  const w = weightsFor(opts, seed);
  const b = new GraphBuilder('mobilenet_v2');
  const x = b.input('input', 'float32', ['n', 3, image, image]);
  const clipMin = scalarF(b, 'relu6.min', 0);
  const clipMax = scalarF(b, 'relu6.max', 6);

  // Conv (no bias) + BatchNormalization (+ ReLU6), named like torchvision's Conv2dNormActivation children.
  const convBn = (
    inp: string,
    cin: number,
    cout: number,
    k: number,
    stride: number,
    groups: number,
    name: string,
    act: boolean,
  ) => {
    const fanIn = (cin / groups) * k * k;
    const weight = b.initializer(`${name}.0.weight`, w.random([cout, cin / groups, k, k], Math.sqrt(2 / fanIn)));
    const p = (k - 1) >> 1;
    const c = b.op(
      'Conv',
      [inp, weight],
      { dilations: [1, 1], group: groups, kernel_shape: [k, k], pads: [p, p, p, p], strides: [stride, stride] },
      `${name}.0`,
    );
    const bnName = `${name}.1`;
    const y = b.op(
      'BatchNormalization',
      [
        c,
        b.initializer(`${bnName}.weight`, w.random([cout], 0.1, act ? 1 : 0.5)),
        b.initializer(`${bnName}.bias`, w.random([cout], 0.1)),
        b.initializer(`${bnName}.running_mean`, w.random([cout], 0.1)),
        b.initializer(`${bnName}.running_var`, w.positive([cout], 0.5, 1.5)),
      ],
      { epsilon: 1e-5, momentum: 0.9 },
      bnName,
    );
    return act ? b.op('Clip', [y, clipMin, clipMax], {}, `${name}.2`) : y;
  };

  let cin = makeDivisible(32 * widthMult);
  let h = convBn(x, 3, cin, 3, 2, 1, 'features.0', true);
  let idx = 1;
  SETTINGS.forEach(([t, c], si) => {
    const cout = makeDivisible(c * widthMult);
    for (let i = 0; i < repeats[si]; i++) {
      const stride = i === 0 ? SETTINGS[si][3] : 1;
      const name = `features.${idx++}.conv`;
      const hidden = Math.round(cin * t);
      let y = h;
      let k = 0;
      if (t !== 1) y = convBn(y, cin, hidden, 1, 1, 1, `${name}.${k++}`, true);
      y = convBn(y, hidden, hidden, 3, stride, hidden, `${name}.${k++}`, true);
      // Linear bottleneck: the projection has no activation (torchvision names it conv.k / conv.k+1; we nest it).
      y = convBn(y, hidden, cout, 1, 1, 1, `${name}.${k}`, false);
      h = stride === 1 && cin === cout ? b.op('Add', [h, y], {}, `${name}.add`) : y;
      cin = cout;
    }
  });
  h = convBn(h, cin, lastChannel, 1, 1, 1, `features.${idx}`, true);
  h = b.op('GlobalAveragePool', [h], {}, 'avgpool');
  h = b.op('Flatten', [h], { axis: 1 }, 'flatten');
  const std = 0.01;
  const fcW = b.initializer('classifier.1.weight', w.random([classes, lastChannel], std));
  const fcB = b.initializer('classifier.1.bias', w.random([classes], std));
  b.node(
    'Gemm',
    [h, fcW, fcB],
    { alpha: float(1), beta: float(1), transB: 1 },
    { name: 'classifier.1', outputs: ['logits'] },
  );
  b.output('logits', { kind: 'tensor', dtype: 'float32', shape: ['n', classes] });
  return b.model(ZOO_OPSET, {
    docString:
      `Kiln model zoo: MobileNetV2 structure (torchvision layout, width ${widthMult}, repeats [${repeats}], last ${lastChannel}, ` +
      `${classes} classes, ${image}x${image} input). ${weightsDoc(opts, seed)}: for benchmarks and parity tests only.`,
  });
}

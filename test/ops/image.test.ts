// Image, signal and random operators: behaviour the ONNX conformance cases cover thinly (symbolic shape inference,
// non-power-of-two FFTs, decoders, random-op ranges, bad inputs).
import { describe, it, expect } from 'vitest';
import { deflateSync } from 'node:zlib';
import { parseAttrs, type InferContext, type OpDef } from '../../src/ir/schema.js';
import type { AttrValue, Graph, Node, ValueType } from '../../src/ir/graph.js';
import { TensorData, type Value } from '../../src/ir/tensor.js';
import { executeGraph } from '../../src/ops/execute.js';
import imageOps from '../../src/ops/image.js';
import signalOps from '../../src/ops/signal.js';
import randomOps from '../../src/ops/random.js';
import { fftPlan } from '../../src/ops/signal-fft.js';

const byName = new Map([...imageOps, ...signalOps, ...randomOps].map((d) => [d.name, d as OpDef]));

function node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue>): Node {
  return { name: '', opType, domain: '', inputs, outputs, attrs };
}

/** Run one node through the executor (so random ops get their seeded generator). */
function run1(opType: string, inputs: (Value | undefined)[], attrs: Record<string, AttrValue> = {}, opset = 22): TensorData {
  const names = inputs.map((v, i) => (v === undefined ? '' : `i${i}`));
  const g: Graph = {
    name: 'g', nodes: [node(opType, names, ['o'], attrs)], initializers: new Map(), valueInfo: new Map(),
    inputs: names.filter(Boolean).map((name) => ({ name, type: { kind: 'unknown' } })), outputs: [{ name: 'o', type: { kind: 'unknown' } }],
  };
  const feeds = new Map<string, Value>();
  inputs.forEach((v, i) => { if (v !== undefined) feeds.set(`i${i}`, v); });
  return executeGraph(g, feeds, { opsets: new Map([['', opset]]) }).get('o') as TensorData;
}

function infer(opType: string, types: (ValueType | undefined)[], attrs: Record<string, AttrValue> = {}, opset = 22,
  constants: (TensorData | undefined)[] = []): ValueType {
  const def = byName.get(opType)!;
  const n = node(opType, types.map((_, i) => `i${i}`), ['o'], attrs);
  const ctx: InferContext<unknown> = { node: n, opset, attrs: parseAttrs(def, n), inputTypes: types, constant: (i) => constants[i], numOutputs: 1 };
  return def.infer!(ctx as InferContext<never>)[0];
}

const f32 = (dims: number[], v: number[]) => TensorData.fromNumbers('float32', dims, v);
const i64 = (dims: number[], v: number[]) => TensorData.fromNumbers('int64', dims, v);
const tt = (dtype: 'float32' | 'int64', shape?: (number | string | undefined)[]): ValueType => ({ kind: 'tensor', dtype, shape });
const str = (value: string): AttrValue => ({ type: 'string', value });
const int = (value: number): AttrValue => ({ type: 'int', value });
const ints = (value: number[]): AttrValue => ({ type: 'ints', value });

describe('Resize', () => {
  it('infers symbolic batch dims through scales and sizes', () => {
    const scales = f32([4], [1, 1, 2, 0.5]);
    expect(infer('Resize', [tt('float32', ['N', 3, 8, 8]), undefined, tt('float32', [4])], {}, 19, [undefined, undefined, scales]))
      .toEqual(tt('float32', ['N', 3, 16, 4]));
    const sizes = i64([2], [5, 7]);
    expect(infer('Resize', [tt('float32', ['N', 3, 'H', 'W']), undefined, undefined, tt('int64', [2])], { axes: ints([2, 3]) }, 19,
      [undefined, undefined, undefined, sizes])).toEqual(tt('float32', ['N', 3, 5, 7]));
    // unknown scales: rank known, dims unknown
    expect(infer('Resize', [tt('float32', ['N', 3, 8, 8]), undefined, tt('float32', [4])], {}, 19))
      .toEqual(tt('float32', [undefined, undefined, undefined, undefined]));
  });

  it('opset 10 reads scales from input 1 and uses asymmetric coordinates', () => {
    const y = run1('Resize', [f32([1, 2], [1, 2]), f32([2], [1, 2])], { mode: str('linear') }, 10);
    expect(Array.from(y.data as Float32Array)).toEqual([1, 1.5, 2, 2]);
  });

  it('rounds and saturates integer outputs', () => {
    const x = TensorData.fromNumbers('uint8', [1, 2], [0, 255]);
    const y = run1('Resize', [x, undefined, undefined, i64([2], [1, 3])], { mode: str('linear'), coordinate_transformation_mode: str('align_corners') }, 19);
    expect(Array.from(y.data as Uint8Array)).toEqual([0, 128, 255]);
  });

  it('rejects scales of the wrong length', () => {
    expect(() => run1('Resize', [f32([1, 2], [1, 2]), undefined, f32([3], [1, 1, 1])], {}, 19)).toThrow(/scales has 3 values, expected 2/);
  });
});

describe('GridSample / AffineGrid / RoiAlign / NonMaxSuppression', () => {
  it('an identity affine grid reproduces the input (align_corners)', () => {
    const theta = f32([1, 2, 3], [1, 0, 0, 0, 1, 0]);
    const grid = run1('AffineGrid', [theta, i64([4], [1, 1, 3, 4])], { align_corners: int(1) }, 20);
    expect(grid.dims).toEqual([1, 3, 4, 2]);
    const x = f32([1, 1, 3, 4], Array.from({ length: 12 }, (_, i) => i));
    const y = run1('GridSample', [x, grid], { align_corners: int(1) }, 22);
    Array.from(y.data as Float32Array).forEach((v, i) => expect(v).toBeCloseTo(i, 5));
  });

  it('infers GridSample output from the grid shape', () => {
    expect(infer('GridSample', [tt('float32', ['N', 3, 10, 10]), tt('float32', ['N', 5, 6, 2])])).toEqual(tt('float32', ['N', 3, 5, 6]));
  });

  it('RoiAlign averages a constant image to the constant', () => {
    const x = f32([1, 1, 4, 4], new Array(16).fill(2));
    const y = run1('RoiAlign', [x, f32([1, 4], [0, 0, 3, 3]), i64([1], [0])], { output_height: int(2), output_width: int(2) });
    expect(Array.from(y.data as Float32Array)).toEqual([2, 2, 2, 2]);
    expect(() => run1('RoiAlign', [x, f32([1, 4], [0, 0, 3, 3]), i64([1], [3])])).toThrow(/batch index 3/);
  });

  it('NonMaxSuppression selects nothing when max_output_boxes_per_class is omitted', () => {
    const y = run1('NonMaxSuppression', [f32([1, 1, 4], [0, 0, 1, 1]), f32([1, 1, 1], [0.9])], {}, 11);
    expect(y.dims).toEqual([0, 3]);
    expect(() => run1('NonMaxSuppression', [f32([1, 4], [0, 0, 1, 1]), f32([1, 1, 1], [0.9])], {}, 11)).toThrow(/boxes must have shape/);
  });
});

describe('ImageDecoder', () => {
  const u8 = (b: number[] | Uint8Array) => TensorData.fromNumbers('uint8', [b.length], Array.from(b));

  function png(width: number, height: number, colorType: number, rows: number[][], extra: [string, number[]][] = []): Uint8Array {
    const chunk = (type: string, body: Uint8Array) => {
      const b = new Uint8Array(12 + body.length);
      new DataView(b.buffer).setUint32(0, body.length);
      b.set([...type].map((c) => c.charCodeAt(0)), 4);
      b.set(body, 8);
      return b; // CRC left as zero: the decoder does not check it
    };
    const ihdr = new Uint8Array(13);
    new DataView(ihdr.buffer).setUint32(0, width);
    new DataView(ihdr.buffer).setUint32(4, height);
    ihdr.set([8, colorType, 0, 0, 0], 8);
    const parts = [Uint8Array.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
      ...extra.map(([t, b]) => chunk(t, Uint8Array.from(b))), chunk('IDAT', deflateSync(Uint8Array.from(rows.flat()))), chunk('IEND', new Uint8Array())];
    return Uint8Array.from(parts.flatMap((p) => Array.from(p)));
  }

  it('decodes PNG with Sub/Up/Paeth filters and palettes', () => {
    // 2x2 RGB: row 0 Sub-filtered, row 1 Up-filtered
    const rgb = png(2, 2, 2, [[1, 10, 20, 30, 5, 5, 5], [2, 1, 1, 1, 1, 1, 1]]);
    expect(Array.from(run1('ImageDecoder', [u8(rgb)], {}, 20).data as Uint8Array)).toEqual([10, 20, 30, 15, 25, 35, 11, 21, 31, 16, 26, 36]);
    const pal = png(2, 1, 3, [[4, 1, 0]], [['PLTE', [1, 2, 3, 4, 5, 6]]]);
    expect(Array.from(run1('ImageDecoder', [u8(pal)], { pixel_format: str('BGR') }, 20).data as Uint8Array)).toEqual([6, 5, 4, 6, 5, 4]);
  });

  it('decodes ASCII PNM with comments, and converts to grayscale', () => {
    const ppm = new TextEncoder().encode('P3\n# c\n2 1\n255\n255 0 0  0 0 255\n');
    const y = run1('ImageDecoder', [u8(ppm)], { pixel_format: str('Grayscale') }, 20);
    expect(y.dims).toEqual([1, 2, 1]);
    expect(Array.from(y.data as Uint8Array)).toEqual([76, 29]);
  });

  it('names the unsupported format', () => {
    expect(() => run1('ImageDecoder', [u8([0xff, 0xd8, 0xff, 0xe0, 0, 0, 0, 0])], {}, 20)).toThrow(/cannot decode JPEG/);
  });
});

describe('DFT / STFT / windows', () => {
  function naive(re: number[], im: number[], inverse: boolean): [number[], number[]] {
    const n = re.length, s = inverse ? 1 : -1;
    const R: number[] = [], I: number[] = [];
    for (let k = 0; k < n; k++) {
      let a = 0, b = 0;
      for (let j = 0; j < n; j++) {
        const t = (s * 2 * Math.PI * j * k) / n;
        a += re[j] * Math.cos(t) - im[j] * Math.sin(t);
        b += re[j] * Math.sin(t) + im[j] * Math.cos(t);
      }
      R.push(a); I.push(b);
    }
    return [R, I];
  }

  it('the FFT matches a direct DFT for power-of-two and other lengths', () => {
    for (const n of [1, 2, 3, 5, 7, 8, 12, 31, 64, 100]) {
      const re = Array.from({ length: n }, (_, i) => Math.sin(i * 1.3) + i / n), im = Array.from({ length: n }, (_, i) => Math.cos(i * 0.7));
      for (const inverse of [false, true]) {
        const [R, I] = naive(re, im, inverse);
        const a = Float64Array.from(re), b = Float64Array.from(im);
        fftPlan(n).run(a, b, inverse);
        for (let k = 0; k < n; k++) { expect(a[k]).toBeCloseTo(R[k], 9); expect(b[k]).toBeCloseTo(I[k], 9); }
      }
    }
  });

  it('rfft then irfft restores an odd-length signal with dft_length', () => {
    const x = f32([1, 7, 1], [3, 1, 4, 1, 5, 9, 2]);
    const spec = run1('DFT', [x, undefined, i64([], [1])], { onesided: int(1) }, 20);
    expect(spec.dims).toEqual([1, 4, 2]);
    const back = run1('DFT', [spec, i64([], [7]), i64([], [1])], { onesided: int(1), inverse: int(1) }, 20);
    expect(back.dims).toEqual([1, 7, 1]);
    Array.from(back.data as Float32Array).forEach((v, i) => expect(v).toBeCloseTo([3, 1, 4, 1, 5, 9, 2][i], 4));
  });

  it('zero-pads to dft_length and infers the shape', () => {
    const y = run1('DFT', [f32([1, 3, 1], [1, 1, 1]), i64([], [4]), i64([], [1])], {}, 20);
    expect(Array.from(y.data as Float32Array).map((v) => Math.round(v * 1e6) / 1e6 + 0)).toEqual([3, 0, 0, -1, 1, 0, 0, 1]);
    expect(infer('DFT', [tt('float32', ['B', 16, 1]), undefined, tt('int64', [])], { onesided: int(1) }, 20, [undefined, undefined, i64([], [-2])]))
      .toEqual(tt('float32', ['B', 9, 2]));
    expect(infer('DFT', [tt('float32', ['B', 'T', 2])], { axis: int(1) }, 17)).toEqual(tt('float32', ['B', 'T', 2]));
    expect(() => run1('DFT', [f32([1, 3, 3], new Array(9).fill(0))], {}, 17)).toThrow(/end in a dim of 1/);
  });

  it('windows honour periodic and output_datatype', () => {
    const y = run1('HannWindow', [TensorData.fromNumbers('int32', [], [4])], { output_datatype: int(11), periodic: int(0) }, 17);
    expect(y.dtype).toBe('float64');
    Array.from(y.data as Float64Array).forEach((v, i) => expect(v).toBeCloseTo([0, 0.75, 0.75, 0][i], 12));
    expect(infer('BlackmanWindow', [tt('int64', [])], {}, 17, [i64([], [10])])).toEqual(tt('float32', [10]));
  });

  it('STFT requires a window or a frame length', () => {
    expect(() => run1('STFT', [f32([1, 8, 1], new Array(8).fill(0)), i64([], [2])], {}, 17)).toThrow(/window or a frame_length/);
  });
});

describe('random ops', () => {
  it('RandomUniform respects shape, dtype and range, and is reproducible with a seed', () => {
    const attrs = { shape: ints([3, 50]), low: { type: 'float', value: -2 } as AttrValue, high: { type: 'float', value: 3 } as AttrValue, seed: { type: 'float', value: 7 } as AttrValue };
    const a = run1('RandomUniform', [], attrs), b = run1('RandomUniform', [], attrs);
    expect(a.dims).toEqual([3, 50]);
    expect(a.dtype).toBe('float32');
    expect(Array.from(a.data as Float32Array).every((v) => v >= -2 && v < 3)).toBe(true);
    expect(Array.from(a.data as Float32Array)).toEqual(Array.from(b.data as Float32Array));
  });

  it('RandomNormalLike takes the shape and type of its input; mean and scale move the samples', () => {
    const y = run1('RandomNormalLike', [TensorData.zeros('float64', [2000])], { mean: { type: 'float', value: 10 }, scale: { type: 'float', value: 0.5 } });
    expect(y.dtype).toBe('float64');
    const v = Array.from(y.data as Float64Array), mean = v.reduce((s, x) => s + x, 0) / v.length;
    expect(Math.abs(mean - 10)).toBeLessThan(0.1);
    expect(infer('RandomUniformLike', [tt('float32', ['N', 4])], { dtype: int(11) })).toEqual({ kind: 'tensor', dtype: 'float64', shape: ['N', 4] });
  });

  it('Bernoulli is deterministic for p in {0, 1}; Multinomial follows a dominant class', () => {
    const y = run1('Bernoulli', [f32([6], [0, 1, 0, 1, 1, 0])], { dtype: int(9) });
    expect(y.dtype).toBe('bool');
    expect(Array.from(y.data as Uint8Array)).toEqual([0, 1, 0, 1, 1, 0]);
    const m = run1('Multinomial', [f32([2, 3], [0, 50, 0, -50, -50, 0])], { sample_size: int(4), dtype: int(7) });
    expect(m.dims).toEqual([2, 4]);
    expect(Array.from(m.data as BigInt64Array)).toEqual([1n, 1n, 1n, 1n, 2n, 2n, 2n, 2n]);
  });
});

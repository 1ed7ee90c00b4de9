// Cast/quantize/string/attention families: behaviour the conformance cases cover poorly (string casts, int64
// exactness, rounding modes, inference on symbolic shapes, error messages on bad input).
import { describe, it, expect } from 'vitest';
import { parseAttrs, type InferContext, type KernelContext, type OpDef } from '../../src/ir/schema.js';
import type { AttrValue, Dim, Node, ValueType } from '../../src/ir/graph.js';
import { TensorData, type Value } from '../../src/ir/tensor.js';
import { floatToMiniFloat, miniFloatToFloat, type DType } from '../../src/ir/dtype.js';
import castOps, { castTensor, formatFloat, parseNumber } from '../../src/ops/cast.js';
import quantOps, { roundHalfEven } from '../../src/ops/quantize.js';
import stringOps, { compileFullMatch } from '../../src/ops/string.js';
import attentionOps from '../../src/ops/attention.js';

const defs = new Map([...castOps, ...quantOps, ...stringOps, ...attentionOps].map((d) => [d.name, d as OpDef]));

const int = (value: number): AttrValue => ({ type: 'int', value });
const float = (value: number): AttrValue => ({ type: 'float', value });
const str = (value: string): AttrValue => ({ type: 'string', value });
const f32 = (dims: number[], v: number[]) => TensorData.fromNumbers('float32', dims, v);
const tt = (dtype: DType, shape?: Dim[]): ValueType => ({ kind: 'tensor', dtype, shape });

function node(opType: string, nIn: number, nOut: number, attrs: Record<string, AttrValue>): Node {
  const r = (p: string, n: number) => Array.from({ length: n }, (_, i) => `${p}${i}`);
  return { name: '', opType, domain: '', inputs: r('i', nIn), outputs: r('o', nOut), attrs };
}

/** Run one op's kernel directly (no registry) on the given inputs. */
function run(opType: string, inputs: (TensorData | undefined)[], attrs: Record<string, AttrValue> = {}, nOut = 1, opset = 25): Value[] {
  const def = defs.get(opType)!;
  const n = node(opType, inputs.length, nOut, attrs);
  inputs.forEach((v, i) => { if (v === undefined) n.inputs[i] = ''; });
  const ctx: KernelContext<unknown> = {
    node: n, opset, attrs: parseAttrs(def, n), inputs, numOutputs: nOut, wantsOutput: (i) => i < nOut,
    tensor: (i) => inputs[i]!, optionalTensor: (i) => inputs[i], runSubgraph: () => [], random: () => 0,
  };
  return def.run(ctx as never);
}
const run1 = (...a: Parameters<typeof run>) => run(...a)[0] as TensorData;

function infer(opType: string, types: (ValueType | undefined)[], attrs: Record<string, AttrValue> = {}, nOut = 1, opset = 25): ValueType[] {
  const def = defs.get(opType)!;
  const n = node(opType, types.length, nOut, attrs);
  const ctx: InferContext<unknown> = { node: n, opset, attrs: parseAttrs(def, n), inputTypes: types, constant: () => undefined, numOutputs: nOut };
  return def.infer!(ctx as never);
}

describe('Cast', () => {
  it('formats numbers like numpy (shortest round-trip of the source precision)', () => {
    const s = castTensor(f32([7], [0.1, 1e-5, 1e16, 100, -2.5, NaN, -Infinity]), 'string');
    expect(s.data).toEqual(['0.1', '1e-05', '1e+16', '100.0', '-2.5', 'nan', '-inf']);
    expect(formatFloat(123456789, 'double')).toBe('123456789.0');
    expect(castTensor(TensorData.fromNumbers('bool', [2], [1, 0]), 'string').data).toEqual(['True', 'False']);
    expect(castTensor(TensorData.fromBigInts('int64', [1], [-(2n ** 63n)]), 'string').data).toEqual(['-9223372036854775808']);
  });

  it('parses plain, scientific and special-value strings, exactly for int64', () => {
    const t = TensorData.strings([5], ['3.14', '1E8', ' -1e-5 ', '+INF', 'NaN']);
    expect(Array.from(castTensor(t, 'float64').data as Float64Array)).toEqual([3.14, 1e8, -1e-5, Infinity, NaN]);
    const big = castTensor(TensorData.strings([1], ['9007199254740993']), 'int64');
    expect(big.data[0]).toBe(9007199254740993n);
    expect(() => parseNumber('Hello World!')).toThrow(/cannot convert the string 'Hello World!'/);
  });

  it('keeps int64 -> int exact and wraps like C', () => {
    const t = TensorData.fromBigInts('int64', [2], [2n ** 53n + 1n, -1n]);
    expect(castTensor(t, 'uint64').data[1]).toBe(2n ** 64n - 1n);
    expect(Array.from(castTensor(t, 'int32').data as Int32Array)).toEqual([1, -1]);
    expect(Array.from(castTensor(t, 'uint8').data as Uint8Array)).toEqual([1, 255]);
  });

  it('applies saturate to float8 and round_mode to float8e8m0', () => {
    const x = f32([3], [1e6, -Infinity, 3]);
    const sat = run1('Cast', [x], { to: int(17) });
    expect(Array.from(sat.data as Uint8Array).map((c) => miniFloatToFloat('float8e4m3fn', c))).toEqual([448, -448, 3]);
    const nosat = run1('Cast', [x], { to: int(17), saturate: int(0) });
    expect(Number.isNaN(miniFloatToFloat('float8e4m3fn', (nosat.data as Uint8Array)[0]))).toBe(true);
    const e = f32([1], [3]);
    const val = (mode: string) => miniFloatToFloat('float8e8m0', (run1('Cast', [e], { to: int(24), round_mode: str(mode) }).data as Uint8Array)[0]);
    expect([val('up'), val('down'), val('nearest')]).toEqual([4, 2, 4]);
    expect(floatToMiniFloat('float8e8m0', Infinity, true)).toBe(0xfe);
    expect(() => run1('Cast', [e], { to: int(24), round_mode: str('sideways') })).toThrow(/round_mode/);
  });

  it('BitCast reinterprets bits and checks the widths', () => {
    const y = run1('BitCast', [f32([1], [1])], { to: int(6) }, 1, 26);
    expect(y.dtype).toBe('int32');
    expect(y.data[0]).toBe(0x3f800000);
    expect(run1('BitCast', [TensorData.fromNumbers('uint4', [2], [15, 8])], { to: int(22) }, 1, 26).data).toEqual(new Int8Array([-1, -8]));
    expect(() => run1('BitCast', [f32([1], [1])], { to: int(7) }, 1, 26)).toThrow(/same bit width/);
  });

  it('infers the target type and keeps symbolic shapes', () => {
    expect(infer('Cast', [tt('float32', ['n', 3])], { to: int(10) })).toEqual([tt('float16', ['n', 3])]);
    expect(infer('CastLike', [tt('float32', ['n']), tt('int8', [0])])).toEqual([tt('int8', ['n'])]);
  });
});

describe('Quantize family', () => {
  it('rounds half to even and saturates', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2]);
    const y = run1('QuantizeLinear', [f32([4], [1, 3, 1000, -1000]), f32([], [2]), TensorData.fromNumbers('int8', [], [1])]);
    expect(Array.from(y.data as Int8Array)).toEqual([1, 3, 127, -128]);
  });

  it('uses output_dtype without a zero point and rejects a mismatching one', () => {
    const y = run1('QuantizeLinear', [f32([2], [7, -20]), f32([], [1])], { output_dtype: int(21) });
    expect(y.dtype).toBe('uint4');
    expect(Array.from(y.data as Uint8Array)).toEqual([7, 0]);
    expect(() => run1('QuantizeLinear', [f32([1], [1]), f32([], [1]), TensorData.fromNumbers('int8', [], [0])], { output_dtype: int(2) }))
      .toThrow(/output_dtype uint8 does not match the zero point type int8/);
  });

  it('checks blocked scale shapes', () => {
    const x = TensorData.fromNumbers('int8', [2, 4], [1, 2, 3, 4, 5, 6, 7, 8]);
    const y = run1('DequantizeLinear', [x, f32([2, 2], [1, 2, 3, 4])], { axis: int(1), block_size: int(2) });
    expect(Array.from(y.data as Float32Array)).toEqual([1, 2, 6, 8, 15, 18, 28, 32]);
    expect(() => run1('DequantizeLinear', [x, f32([2, 3], [1, 1, 1, 1, 1, 1])], { axis: int(1), block_size: int(2) })).toThrow(/blocked scale must have shape \[2, 2\]/);
  });

  it('DynamicQuantizeLinear handles an all-zero input', () => {
    const [y, s, z] = run('DynamicQuantizeLinear', [f32([3], [0, 0, 0])], {}, 3, 11) as TensorData[];
    expect([Array.from(y.data as Uint8Array), s.data[0], z.data[0]]).toEqual([[0, 0, 0], 0, 0]);
  });

  it('infers output types', () => {
    expect(infer('QuantizeLinear', [tt('float32', ['b', 4]), tt('float32', []), undefined])).toEqual([tt('uint8', ['b', 4])]);
    expect(infer('DequantizeLinear', [tt('int4', ['b']), tt('float16', [])])).toEqual([tt('float16', ['b'])]);
  });
});

describe('String family', () => {
  it('splits like Python str.split, with maxsplit remainders', () => {
    const [parts, n] = run('StringSplit', [TensorData.strings([2], ['  a b  c ', 'x'])], { maxsplit: int(1) }, 2, 20) as TensorData[];
    expect(parts.dims).toEqual([2, 2]);
    expect(parts.data).toEqual(['a', 'b  c ', 'x', '']);
    expect(n.data).toEqual(new BigInt64Array([2n, 1n]));
  });

  it('translates RE2-only syntax for RegexFullMatch', () => {
    expect(compileFullMatch('(?i)ab(?P<x>c)').test('ABC')).toBe(true);
    expect(compileFullMatch('a\\_b').test('a_b')).toBe(true);
    expect(() => compileFullMatch('(')).toThrow(/invalid regular expression/);
  });

  it('StringNormalizer rejects inputs other than [C] or [1, C]', () => {
    expect(() => run1('StringNormalizer', [TensorData.strings([2, 2], ['a', 'b', 'c', 'd'])], {}, 1, 10)).toThrow(/\[C\] or \[1, C\]/);
  });

  it('TfIdfVectorizer weights IDF/TFIDF by pool position', () => {
    const attrs = {
      mode: str('TFIDF'), min_gram_length: int(1), max_gram_length: int(1), max_skip_count: int(0),
      ngram_counts: { type: 'ints', value: [0] } as AttrValue, ngram_indexes: { type: 'ints', value: [1, 0] } as AttrValue,
      pool_strings: { type: 'strings', value: ['a', 'b'] } as AttrValue, weights: { type: 'floats', value: [2, 3] } as AttrValue,
    };
    const y = run1('TfIdfVectorizer', [TensorData.strings([3], ['a', 'a', 'b'])], attrs, 1, 9);
    expect(Array.from(y.data as Float32Array)).toEqual([3, 4]);
    expect(infer('TfIdfVectorizer', [tt('string', ['n', 'len'])], attrs, 1, 9)).toEqual([tt('float32', ['n', 2])]);
  });
});

describe('Attention family', () => {
  it('infers 3-D output shapes from the head attributes, with symbolic batch', () => {
    const r = infer('Attention', [tt('float32', ['b', 4, 24]), tt('float32', ['b', 6, 12]), tt('float32', ['b', 6, 15])],
      { q_num_heads: int(6), kv_num_heads: int(3) }, 4, 23);
    expect(r.map((t) => (t.kind === 'tensor' ? t.shape : undefined))).toEqual([['b', 4, 30], ['b', 3, 6, 4], ['b', 3, 6, 5], ['b', 6, 4, 6]]);
  });

  it('matches a hand-computed softmax(QK^T)V with a causal mask', () => {
    const q = f32([1, 1, 2, 1], [1, 1]), k = f32([1, 1, 2, 1], [0, 1]), v = f32([1, 1, 2, 1], [10, 20]);
    const y = run1('Attention', [q, k, v], { is_causal: int(1), scale: float(1) }, 1, 23);
    const p = Math.exp(1) / (1 + Math.exp(1));
    expect(y.data[0]).toBeCloseTo(10, 5);
    expect(y.data[1]).toBeCloseTo(10 * (1 - p) + 20 * p, 4);
  });

  it('reports head-count mismatches', () => {
    const q = f32([1, 1, 3 * 2], new Array(6).fill(0)), k = f32([1, 1, 2 * 2], [0, 0, 0, 0]);
    expect(() => run1('Attention', [q, k, k], { q_num_heads: int(3), kv_num_heads: int(2) }, 1, 23)).toThrow(/multiple of kv_num_heads/);
  });

  it('LinearAttention requires decay for gated rules', () => {
    const x = f32([1, 1, 2], [1, 0]);
    expect(() => run1('LinearAttention', [x, x, x], { q_num_heads: int(1), kv_num_heads: int(1), update_rule: str('gated') }, 1, 27))
      .toThrow(/needs the decay input/);
  });
});

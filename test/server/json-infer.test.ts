// json-infer.ts's fast path against its definition: JSON.parse of the body, then each input's (flattened) data
// converted into the datatype's typed array. Either it declines (undefined) or it gives exactly that.
import { describe, expect, it } from 'vitest';
import { parseInferJson } from '../../src/server/json-infer.js';

const TYPED: Record<string, new (n: number) => ArrayLike<number> & { [i: number]: number }> = {
  FP32: Float32Array,
  FP64: Float64Array,
  INT8: Int8Array,
  INT16: Int16Array,
  INT32: Int32Array,
  UINT8: Uint8Array,
  UINT16: Uint16Array,
  UINT32: Uint32Array,
};

/** What the JSON.parse path would hand the decoder, data converted as the fast path converts it. */
function reference(text: string): Record<string, unknown> {
  const r = JSON.parse(text) as { inputs: Record<string, unknown>[] };
  for (const inp of r.inputs) {
    if (!Array.isArray(inp.data)) continue;
    const flat = (inp.data as unknown[]).flat(Infinity) as number[];
    const out = new TYPED[inp.datatype as string](flat.length);
    for (let i = 0; i < flat.length; i++) out[i] = flat[i];
    inp.data = out;
  }
  return r;
}

function same(text: string): void {
  const got = parseInferJson(Buffer.from(text));
  expect(got, text.slice(0, 200)).toBeDefined();
  const want = reference(text);
  expect(got).toStrictEqual(want);
  // toStrictEqual treats -0 and 0 alike in typed arrays: compare element by element with Object.is
  const gi = (got as typeof want & { inputs: { data: unknown }[] }).inputs;
  (want as { inputs: { data: unknown }[] }).inputs.forEach((w, i) => {
    if (!ArrayBuffer.isView(w.data)) return;
    const a = w.data as unknown as ArrayLike<number>,
      b = gi[i].data as ArrayLike<number>;
    expect(b.constructor).toBe(a.constructor);
    for (let k = 0; k < a.length; k++) if (!Object.is(a[k], b[k])) expect([k, b[k]]).toEqual([k, a[k]]);
  });
}

const declines = (text: string) => expect(parseInferJson(Buffer.from(text)), text).toBeUndefined();
const body = (data: string, datatype = 'FP32', extra = '') =>
  `{"inputs":[{"name":"x","datatype":"${datatype}","shape":[1],"data":${data}}]${extra}}`;

/** A seeded generator (mulberry32) so failures reproduce. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const finite = (x: number) => (Number.isFinite(x) ? String(x) : '3.5e38'); // JSON has no Infinity

/** Number text in every JSON form: integers, fractions, exponents (e/E, signs), long mantissas, tiny and huge. */
function numberText(r: () => number): string {
  const digits = (n: number, lead = true) =>
    Array.from({ length: n }, (_, i) => String(i === 0 && lead ? 1 + Math.floor(r() * 9) : Math.floor(r() * 10))).join(
      '',
    );
  const sign = r() < 0.3 ? '-' : '';
  const t = text();
  return t.startsWith('-') ? t : sign + t;
  function text(): string {
    switch (Math.floor(r() * 9)) {
      case 0:
        return String(Math.fround(r() * 2 - 1)); // float32 printed as a double (17 digits)
      case 1:
        return finite(Math.fround((r() - 0.5) * 10 ** Math.floor(r() * 80 - 40)));
      case 2:
        return String(Math.floor(r() * 2 ** 33) - 2 ** 32); // integers past int32, both signs
      case 3:
        return (
          (r() < 0.2 ? '0' : digits(1 + Math.floor(r() * 22))) +
          (r() < 0.7 ? '.' + digits(1 + Math.floor(r() * 25), false) : '')
        );
      case 4:
        return (
          digits(1 + Math.floor(r() * 20)) +
          '.' +
          digits(1 + Math.floor(r() * 20), false) +
          (r() < 0.5 ? 'e' : 'E') +
          ['', '+', '-'][Math.floor(r() * 3)] +
          String(Math.floor(r() * 60))
        );
      case 5:
        return '0.' + '0'.repeat(Math.floor(r() * 45)) + digits(1 + Math.floor(r() * 18));
      case 6:
        return finite(r() * 1e-30 * 10 ** Math.floor(r() * 70)); // doubles, any exponent
      case 7:
        return [
          '0',
          '0.0',
          '0e5',
          '1E+5',
          '-1.5e-3',
          '3.4028235e38',
          '3.4028236e38',
          '1e39',
          '1e-46',
          '1.401298464324817e-45',
          '7e-46',
          '1e400',
          '1e-400',
          '123456789012345678901234567890',
        ][Math.floor(r() * 14)];
      default:
        return String(Math.fround(r() * 256));
    }
  }
}

describe('json-infer: KServe JSON data read straight into typed arrays', () => {
  it('matches JSON.parse + typed-array conversion on generated bodies (seeded)', () => {
    const r = rng(20261124);
    const ws = () => [' ', '', '\n', '\t', '\r\n', ''][Math.floor(r() * 6)];
    for (let iter = 0; iter < 400; iter++) {
      const inputs: string[] = [];
      for (let k = 0, nIn = 1 + Math.floor(r() * 3); k < nIn; k++) {
        const datatype = Object.keys(TYPED)[Math.floor(r() * 8)];
        const n = Math.floor(r() * 60);
        const nums = Array.from({ length: n }, () => numberText(r));
        let data: string;
        if (r() < 0.3 && n >= 4) {
          // nested rows (row-major), sometimes with an empty row
          const rows: string[] = [];
          for (let i = 0; i < n; i += 4) rows.push(`[${ws()}${nums.slice(i, i + 4).join(`${ws()},${ws()}`)}${ws()}]`);
          if (r() < 0.3) rows.push('[]');
          data = `[${rows.join(',' + ws())}]`;
        } else data = `[${ws()}${nums.join(`${ws()},${ws()}`)}${ws()}]`;
        const fields = [
          `"name"${ws()}:${ws()}"in\\"put\\u00e9${k}"`,
          `"datatype":"${datatype}"`,
          `"shape":[${n}]`,
          `"data"${ws()}:${ws()}${data}`,
          `"parameters":{"data":[1,"x"],"inputs":{"a":null}}`,
        ];
        fields.sort(() => r() - 0.5);
        inputs.push(`{${ws()}${fields.join(`,${ws()}`)}${ws()}}`);
      }
      const text = `${ws()}{"id":"r\\u0041${iter}",${ws()}"inputs"${ws()}:${ws()}[${inputs.join(',')}],"outputs":[{"name":"y","parameters":{"binary_data":true}}],"parameters":{"priority":1}}${ws()}`;
      same(text);
    }
  });

  it('matches on edge-case numbers, one by one, for float and integer types', () => {
    const cases = [
      '0',
      '-0',
      '-0.0',
      '1',
      '-1',
      '1.5',
      '-1.5e-3',
      '1E+5',
      '1e5',
      '2e-1',
      '0.1',
      '0.30000001192092896',
      '3.4028234663852886e38',
      '3.4028235677973366e38',
      '1.1754943508222875e-38',
      '1.401298464324817e-45',
      '7.006492321624085e-46',
      '7.006492321624087e-46',
      '9007199254740993',
      '9007199254740992.5',
      '18446744073709551615',
      '4294967296',
      '-2147483649',
      '2147483648',
      '255.9',
      '-128.5',
      '65535',
      '1e22',
      '1e23',
      '1e-22',
      '1e-23',
      '123456789012345678',
      '0.000000000000000000000000000001',
      '5e-324',
      '1.7976931348623157e308',
      '1e309',
      '16777217',
      '16777217.000000001',
      '0.1000000000000000055511151231257827',
      '33554431e-25',
      '1.00000005960464477539062500001',
      '1.000000059604644775390625',
    ];
    for (const dt of Object.keys(TYPED)) for (const c of cases) same(body(`[${c}]`, dt));
    same(body(`[${cases.join(',')}]`, 'FP32'));
    same(body(`[${cases.join(',')}]`, 'FP64'));
  });

  it('rounds like Math.fround(Number(s)) next to float32 rounding midpoints (double rounding traps)', () => {
    const r = rng(7);
    const nums: string[] = [];
    const f = new Float32Array(2);
    const u = new Uint32Array(f.buffer);
    for (let i = 0; i < 3000; i++) {
      u[0] = Math.floor(r() * 0x7f000000);
      u[1] = u[0] + 1;
      const mid = (f[0] + f[1]) / 2; // exact in a double: 25 significant bits
      const near = [mid, mid * (1 + 2 ** -52), mid * (1 - 2 ** -52), mid * (1 + 2 ** -40)];
      for (const x of near) for (const p of [9, 16, 17, 19, 21]) nums.push(x.toPrecision(p));
    }
    same(body(`[${nums.join(',')}]`, 'FP32'));
  });

  it('keeps shapes of nesting and emptiness', () => {
    for (const d of ['[]', '[[]]', '[[],[]]', '[ [ 1 , 2 ] , [ 3 , 4 ] ]', '[[[1]],[[2],[3,4]]]', '[1,[2,[3,[4]]]]'])
      same(body(d));
  });

  it('declines what the JSON.parse path must judge, never guessing', () => {
    for (const bad of [
      '[1,]',
      '[,1]',
      '[1 2]',
      '[01]',
      '[1.]',
      '[.5]',
      '[+1]',
      '[1e]',
      '[-]',
      '[1',
      '[[1]',
      '[1]]',
      '[NaN]',
      '[Infinity]',
      '[0x10]',
      '[1,,2]',
      '[ ,]',
    ])
      declines(body(bad));
    for (const other of ['[1,"2"]', '[true]', '[null]', '[{"a":1}]', '["x"]']) declines(body(other)); // not numbers
    for (const dt of ['BYTES', 'BOOL', 'INT64', 'UINT64', 'FP16', 'BF16', 'NOPE']) declines(body('[1,2]', dt));
    declines(`{"inputs":[{"name":"x","datatype":"FP32","data":[1],"data":[2]}]}`); // duplicate key: JSON.parse keeps the last
    declines(`{"inputs":[{"name":"x","datatype":"FP32","data":[1],"d\\u0061ta":[2]}]}`); // an escaped alias of it
    declines(`{"inputs":[{"name":"x","datatype":"FP32","data":[1]}],"inputs":[]}`);
    declines(`{"inputs":[{"name":"x","datatype":"FP32","data":[1]}],"\\u0069nputs":[]}`);
    declines(`{"inputs":[{"name":"x","datatype":"FP32","data":[1]}],}`); // rest of the body invalid
    declines(`{"inputs":[{"name":"x","datatype":"FP32","data":[1]},]}`);
    declines(`{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]} x`);
    declines(`\ufeff{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}`); // a BOM: JSON.parse rejects it
    declines(`{"inputs":[{"name":"x","datatype":"FP32","data":[1]}\ufeff]}`);
    declines(`[{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}]`);
    declines(`{"inputs":[{"name":"x","datatype":"FP32","data":"[1]"}]}`); // nothing to cut: the general path
    declines(`{"inputs":[{"name":"x","datatype":"FP32"}]}`);
    declines(`{"inputs":[{"name":"x","datatype":"FP32","data":[1]}`);
    declines('');
  });

  it('cuts only inputs[i].data, leaving look-alikes in strings and nested objects to JSON.parse', () => {
    same(
      `{"id":"\\"data\\":[1,2]","parameters":{"inputs":[{"data":[9]}]},"inputs":[{"name":"a\\\\","datatype":"INT32","shape":[2],"parameters":{"data":[7,8]},"data":[3,4]}]}`,
    );
    same(`{"inputs":[1,"s",{"name":"b","datatype":"UINT8","data":[300,-1,2.7]},[{"data":[5]}]]}`);
    same(`{"inputs":[{"name":"é✓","datatype":"FP64","data":[0.1,0.30000001192092896,1e-300]}]}`);
  });
});

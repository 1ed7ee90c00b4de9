// A fast path for the common KServe v2 JSON infer body: each input's `data` array of numbers is read straight from the
// bytes into its typed array, and only the small rest of the body (the data arrays cut out) goes through JSON.parse.
// JSON.parse of a 60 KB body of 3072 numbers builds a JS array that the decoder then copies into a Float32Array; on a
// 2-core server that parse is most of the event loop's time per request (issue 9).
//
// Contract: for any body this returns either undefined (the caller takes the JSON.parse path, so every 4xx message
// stays as it was) or exactly what JSON.parse + typed-array conversion gives. It declines anything unusual: a data
// array holding anything but numbers and nested arrays, a datatype with no plain typed array (BYTES, BOOL, INT64,
// FP16, ...), duplicate or escaped keys where it looks for `inputs`/`data`, and any body JSON.parse would reject.
//
// Why cutting the arrays out is safe: the scanner lexes strings exactly as JSON does, and cuts only a strictly valid
// array that follows `"data":` (always a value position), replacing it with `0`. Swapping one valid value for another
// keeps the body valid or invalid alike, and JSON.parse validates everything else.

/** KServe datatypes whose JSON numbers go straight into a typed array (the rest take the JSON.parse path). */
const TYPED: Record<string, new (n: number) => Float32Array | Float64Array | Int8Array | Int16Array | Int32Array | Uint8Array | Uint16Array | Uint32Array> = {
  FP32: Float32Array, FP64: Float64Array, INT8: Int8Array, INT16: Int16Array, INT32: Int32Array, UINT8: Uint8Array, UINT16: Uint16Array, UINT32: Uint32Array,
};

/** Exact powers of ten as doubles (10^22 is the last one a double holds exactly). */
const POW10: number[] = Array.from({ length: 23 }, (_, i) => Number(`1e${i}`));

const WS_SP = 0x20, WS_TAB = 0x09, WS_LF = 0x0a, WS_CR = 0x0d;
const QUOTE = 0x22, BACKSLASH = 0x5c, COMMA = 0x2c, COLON = 0x3a, MINUS = 0x2d, PLUS = 0x2b, DOT = 0x2e;
const LBRACK = 0x5b, RBRACK = 0x5d, LBRACE = 0x7b, RBRACE = 0x7d, ZERO = 0x30, NINE = 0x39;

let shared = new Float64Array(4096);

class Decline extends Error {}
const DECLINE = new Decline('not the fast path');

interface Span {
  /** Index of the input (element of the root `inputs` array). */
  input: number;
  start: number;
  end: number;
  /** Numbers in scratch[at .. at + count). */
  at: number;
  count: number;
  /** Some values were certified only to float32 precision (fine for FP32, re-read exactly for other types). */
  f32Only: boolean;
}

/** Parse a KServe v2 JSON request whose input data are numbers; undefined = take the JSON.parse path. */
export function parseInferJson(buf: Uint8Array): Record<string, unknown> | undefined {
  const s = new Scanner(buf);
  try {
    s.root();
  } catch (e) {
    if (e instanceof Decline) return undefined;
    throw e;
  }
  if (s.spans.length === 0) return undefined; // nothing to gain
  // Buffer's UTF-8 decoding, as the JSON.parse path uses (TextDecoder would drop a BOM); cuts fall between ASCII bytes
  const text = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  let head = '';
  let prev = 0;
  for (const sp of s.spans) {
    head += text.toString('utf8', prev, sp.start) + '0';
    prev = sp.end;
  }
  head += text.toString('utf8', prev);
  let r: unknown;
  try {
    r = JSON.parse(head);
  } catch {
    return undefined;
  }
  if (typeof r !== 'object' || r === null || Array.isArray(r)) return undefined;
  const inputs = (r as { inputs?: unknown }).inputs;
  if (!Array.isArray(inputs)) return undefined;
  const filled: [Record<string, unknown>, ArrayLike<number>][] = [];
  for (const sp of s.spans) {
    const inp = inputs[sp.input] as Record<string, unknown> | undefined;
    if (typeof inp !== 'object' || inp === null || inp.data !== 0) return undefined;
    const Ctor = typeof inp.datatype === 'string' && Object.hasOwn(TYPED, inp.datatype) ? TYPED[inp.datatype] : undefined;
    if (!Ctor) return undefined;
    const out = new Ctor(sp.count);
    if (sp.f32Only && Ctor !== Float32Array) {
      const exact = new Scanner(buf, true);
      exact.pos = sp.start;
      exact.dataArray();
      out.set(exact.scratch.subarray(0, sp.count));
    } else {
      out.set(s.scratch.subarray(sp.at, sp.at + sp.count));
    }
    filled.push([inp, out]);
  }
  for (const [inp, out] of filled) inp.data = out;
  return r as Record<string, unknown>;
}

class Scanner {
  pos = 0;
  readonly spans: Span[] = [];
  /** Parsed values; one array kept across requests (sync use only), a fresh one for a re-read. */
  scratch: Float64Array;
  private n = 0;
  private f32Only = false;

  /** exact: every value is the double JSON.parse gives (else FP32-bound values may be certified to float32 only). */
  constructor(private readonly b: Uint8Array, private readonly exact = false) {
    this.scratch = exact ? new Float64Array(4096) : shared;
  }

  root(): void {
    this.ws();
    this.expect(LBRACE);
    let sawInputs = false;
    this.members(() => {
      if (this.keyIs('inputs')) {
        if (sawInputs) throw DECLINE;
        sawInputs = true;
        this.colon();
        if (this.b[this.pos] === LBRACK) this.inputs();
        else this.skipValue();
      } else {
        this.skipString();
        this.colon();
        this.skipValue();
      }
    });
    this.ws();
    if (this.pos !== this.b.length) throw DECLINE;
  }

  private inputs(): void {
    this.pos++; // [
    this.ws();
    if (this.b[this.pos] === RBRACK) {
      this.pos++;
      return;
    }
    for (let i = 0; ; i++) {
      this.ws();
      if (this.b[this.pos] === LBRACE) this.input(i);
      else this.skipValue();
      this.ws();
      const c = this.b[this.pos++];
      if (c === RBRACK) return;
      if (c !== COMMA) throw DECLINE;
    }
  }

  private input(index: number): void {
    this.pos++; // {
    let sawData = false;
    this.members(() => {
      if (this.keyIs('data')) {
        if (sawData) throw DECLINE; // JSON.parse keeps the last: leave duplicates to it
        sawData = true;
        this.colon();
        if (this.b[this.pos] !== LBRACK) {
          this.skipValue();
          return;
        }
        const start = this.pos;
        const at = this.n;
        this.f32Only = false;
        this.dataArray();
        this.spans.push({ input: index, start, end: this.pos, at, count: this.n - at, f32Only: this.f32Only });
      } else {
        this.skipString();
        this.colon();
        this.skipValue();
      }
    });
  }

  /** `{` already consumed: members until `}`, each handled by `member` starting at its key's quote. */
  private members(member: () => void): void {
    this.ws();
    if (this.b[this.pos] === RBRACE) {
      this.pos++;
      return;
    }
    for (;;) {
      this.ws();
      if (this.b[this.pos] !== QUOTE) throw DECLINE;
      member();
      this.ws();
      const c = this.b[this.pos++];
      if (c === RBRACE) return;
      if (c !== COMMA) throw DECLINE;
    }
  }

  /** The key at pos is exactly `"name"` (no escapes: an escaped key could alias it, so any escape declines). */
  private keyIs(name: string): boolean {
    const b = this.b;
    let p = this.pos + 1;
    for (let i = 0; i < name.length; i++, p++) if (b[p] !== name.charCodeAt(i)) return false;
    if (b[p] !== QUOTE) return false;
    this.pos = p + 1;
    return true;
  }

  private colon(): void {
    this.ws();
    this.expect(COLON);
    this.ws();
  }

  private expect(c: number): void {
    if (this.b[this.pos] !== c) throw DECLINE;
    this.pos++;
  }

  private ws(): void {
    const b = this.b;
    let p = this.pos;
    for (let c = b[p]; c === WS_SP || c === WS_LF || c === WS_CR || c === WS_TAB; c = b[++p]);
    this.pos = p;
  }

  /** A string at pos (JSON.parse checks its contents later); keys with escapes decline, see keyIs. */
  private skipString(key = true): void {
    const b = this.b;
    let p = this.pos + 1;
    for (;;) {
      const c = b[p++];
      if (c === QUOTE) break;
      if (c === undefined) throw DECLINE;
      if (c === BACKSLASH) {
        if (key) throw DECLINE;
        p++;
      }
    }
    this.pos = p;
  }

  /** Any value, by bracket matching outside strings; JSON.parse validates it later. */
  private skipValue(): void {
    const b = this.b;
    let depth = 0;
    for (;;) {
      const c = b[this.pos];
      if (c === undefined) throw DECLINE;
      if (c === QUOTE) {
        this.skipString(false);
        if (depth === 0) return;
        continue;
      }
      if (c === LBRACK || c === LBRACE) depth++;
      else if (c === RBRACK || c === RBRACE) {
        if (depth === 0) return; // the end of the enclosing container: a scalar just ended
        depth--;
        this.pos++;
        if (depth === 0) return;
        continue;
      } else if (c === COMMA && depth === 0) return;
      this.pos++;
    }
  }

  /** A strictly valid array of numbers and nested arrays at pos, values appended row-major to scratch. One tight
   *  loop with everything in locals: this is the per-byte cost of the whole fast path. */
  dataArray(): void {
    const b = this.b;
    const len = b.length;
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const exact = this.exact;
    let scratch = this.scratch;
    let n = this.n;
    let p = this.pos + 1; // past [
    let depth = 1;
    let c: number;
    let open = true; // right after `[`, where `]` may follow
    for (;;) {
      // a value (or `]` right after `[`)
      for (c = b[p]; c === WS_SP || c === WS_LF || c === WS_CR || c === WS_TAB; c = b[++p]);
      while (c === LBRACK) {
        depth++;
        open = true;
        for (c = b[++p]; c === WS_SP || c === WS_LF || c === WS_CR || c === WS_TAB; c = b[++p]);
      }
      if (c === RBRACK) {
        if (!open) throw DECLINE; // `[1,]`
        p++;
        depth--;
      } else {
        const start = p;
        const neg = c === MINUS;
        if (neg) c = b[++p];
        // all digits into m: exact while below 2^53; past it ≤ 2 roundings a step (one or four digits), ≤ 4 steps
        // (m < 1e19)
        let m = 0;
        let frac = 0;
        if (c === ZERO) c = b[++p];
        else if (c > ZERO && c <= NINE) {
          m = m * 10 + (c - ZERO);
          for (c = b[++p]; c >= ZERO && c <= NINE; c = b[++p]) {
            const four = p + 4 <= len ? fourDigits(dv.getUint32(p, true)) : -1;
            if (four >= 0) {
              m = m * 1e4 + four;
              p += 3;
              continue;
            }
            m = m * 10 + (c - ZERO);
          }
        } else throw DECLINE;
        if (c === DOT) {
          const f0 = p + 1;
          c = b[++p];
          if (!(c >= ZERO && c <= NINE)) throw DECLINE;
          m = m * 10 + (c - ZERO);
          for (c = b[++p]; c >= ZERO && c <= NINE; c = b[++p]) {
            const four = p + 4 <= len ? fourDigits(dv.getUint32(p, true)) : -1;
            if (four >= 0) {
              m = m * 1e4 + four;
              p += 3;
              continue;
            }
            m = m * 10 + (c - ZERO);
          }
          frac = p - f0;
        }
        let slow = m >= 1e19;
        let e10 = -frac;
        if (frac > 40) slow = true;
        if (c === 0x65 || c === 0x45) {
          c = b[++p];
          let eneg = false;
          if (c === PLUS || c === MINUS) {
            eneg = c === MINUS;
            c = b[++p];
          }
          if (!(c >= ZERO && c <= NINE)) throw DECLINE;
          let exp = 0;
          const e0 = p;
          do {
            exp = exp * 10 + (c - ZERO);
            c = b[++p];
          } while (c >= ZERO && c <= NINE);
          if (p - e0 > 5) slow = true;
          e10 += eneg ? -exp : exp;
        }
        let v: number;
        if (slow) v = this.slow(start, p);
        else if (m < 2 ** 53 && e10 >= -22 && e10 <= 22) {
          // both operands exact, one correctly rounded operation: the double Number() gives (Clinger's fast path)
          v = e10 < 0 ? m / POW10[-e10] : m * POW10[e10];
          if (neg) v = -v;
        } else if (exact) v = this.slow(start, p);
        else v = this.f32(neg ? -m : m, e10, start, p);
        if (n === scratch.length) {
          const grown = new Float64Array(n * 2);
          grown.set(scratch);
          scratch = this.scratch = grown;
          if (!exact) shared = grown;
        }
        scratch[n++] = v;
      }
      // after a value: `,` then another value, or `]`s closing levels
      for (;;) {
        if (depth === 0) {
          this.pos = p;
          this.n = n;
          return;
        }
        for (c = b[p]; c === WS_SP || c === WS_LF || c === WS_CR || c === WS_TAB; c = b[++p]);
        p++;
        if (c === COMMA) {
          open = false;
          break;
        }
        if (c !== RBRACK) throw DECLINE;
        depth--;
      }
    }
  }

  /** m·10^e10 within a few double ulps of the exact value (≤ 8 roundings forming m, ≤ 2 scaling): if the whole error interval rounds to one float32, that is the float32 of Number(s) too (fround
   *  is monotonic and Number(s) lies in the interval); else Number(). */
  private f32(m: number, e10: number, start: number, end: number): number {
    if (e10 < -44 || e10 > 44) return this.slow(start, end);
    if (e10 < -22) m = m / POW10[22] / POW10[-e10 - 22];
    else if (e10 < 0) m = m / POW10[-e10];
    else if (e10 > 22) m = m * POW10[22] * POW10[e10 - 22];
    else m = m * POW10[e10];
    const f = Math.fround(m);
    const tol = Math.abs(m) * 2 ** -48; // 32 half-ulps; the error above is ≤ 10
    if (Math.fround(m - tol) !== f || Math.fround(m + tol) !== f) return this.slow(start, end);
    this.f32Only = true;
    return f;
  }

  private slow(start: number, end: number): number {
    let s = '';
    for (let i = start; i < end; i++) s += String.fromCharCode(this.b[i]);
    return Number(s);
  }
}

/**
 * The value of four ASCII digits read as a little-endian word, or -1 when any byte is not a digit. Reading four digits
 * at once (SWAR) takes three quarters of the dependent double multiply-adds out of the digit loop, which bounds it.
 */
function fourDigits(x: number): number {
  if ((x & 0xf0f0f0f0) !== 0x30303030 || ((x + 0x06060606) & 0xf0f0f0f0) !== 0x30303030) return -1;
  let v = x & 0x0f0f0f0f;
  v = (v * 10 + (v >>> 8)) & 0x00ff00ff;
  return (v * 100 + (v >>> 16)) & 0xffff;
}

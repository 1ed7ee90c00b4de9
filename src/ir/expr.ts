// Elementwise expressions carried by fused `kiln:Elementwise` nodes: a tiny S-expression language over the node's
// inputs ($0, $1, ...) and numeric literals, e.g. "(mul (add $0 $1) 0.5)". The optimizer builds them from chains of
// elementwise ONNX ops; each backend renders them (JavaScript here, C and CUDA C in the native backends) from the
// same per-op table, so an op is described once per language.

export type Expr = { op: string; args: Expr[] } | { input: number } | { lit: number };

/** Arity of each expression op. */
export const EXPR_OPS: Record<string, number> = {
  add: 2, sub: 2, mul: 2, div: 2, pow: 2, max: 2, min: 2,
  neg: 1, abs: 1, exp: 1, log: 1, sqrt: 1, recip: 1, tanh: 1, erf: 1, sigmoid: 1, relu: 1, floor: 1, ceil: 1,
  sin: 1, cos: 1, softplus: 1, clip: 3, leaky: 2, where_pos: 3,
};

export function parseExpr(src: string): Expr {
  const tokens = src.replace(/\(/g, ' ( ').replace(/\)/g, ' ) ').trim().split(/\s+/);
  let i = 0;
  const next = (): Expr => {
    const t = tokens[i++];
    if (t === undefined) throw new Error(`expression '${src}' ends early`);
    if (t === '(') {
      const op = tokens[i++];
      if (!(op in EXPR_OPS)) throw new Error(`expression '${src}': unknown op '${op}'`);
      const args: Expr[] = [];
      while (tokens[i] !== ')') {
        if (i >= tokens.length) throw new Error(`expression '${src}': missing ')'`);
        args.push(next());
      }
      i++;
      if (args.length !== EXPR_OPS[op]) throw new Error(`expression '${src}': ${op} takes ${EXPR_OPS[op]} arguments, got ${args.length}`);
      return { op, args };
    }
    if (t.startsWith('$')) return { input: Number(t.slice(1)) };
    const lit = Number(t);
    if (Number.isNaN(lit) && t !== 'NaN') throw new Error(`expression '${src}': bad token '${t}'`);
    return { lit };
  };
  const e = next();
  if (i !== tokens.length) throw new Error(`expression '${src}': trailing tokens`);
  return e;
}

export function printExpr(e: Expr): string {
  if ('input' in e) return `$${e.input}`;
  if ('lit' in e) return Object.is(e.lit, -0) ? '-0' : String(e.lit);
  return `(${e.op} ${e.args.map(printExpr).join(' ')})`;
}

export function exprInputs(e: Expr, acc = new Set<number>()): Set<number> {
  if ('input' in e) acc.add(e.input);
  else if ('op' in e) e.args.forEach((a) => exprInputs(a, acc));
  return acc;
}

/** JavaScript rendering of each op (operands already rendered). */
const JS: Record<string, (a: string[]) => string> = {
  add: ([a, b]) => `(${a} + ${b})`, sub: ([a, b]) => `(${a} - ${b})`, mul: ([a, b]) => `(${a} * ${b})`,
  div: ([a, b]) => `(${a} / ${b})`, pow: ([a, b]) => `Math.pow(${a}, ${b})`, max: ([a, b]) => `F.max(${a}, ${b})`,
  min: ([a, b]) => `F.min(${a}, ${b})`, neg: ([a]) => `(-${a})`, abs: ([a]) => `Math.abs(${a})`, exp: ([a]) => `Math.exp(${a})`,
  log: ([a]) => `Math.log(${a})`, sqrt: ([a]) => `Math.sqrt(${a})`, recip: ([a]) => `(1 / ${a})`, tanh: ([a]) => `Math.tanh(${a})`,
  erf: ([a]) => `F.erf(${a})`, sigmoid: ([a]) => `F.sigmoid(${a})`, relu: ([a]) => `F.relu(${a})`, floor: ([a]) => `Math.floor(${a})`,
  ceil: ([a]) => `Math.ceil(${a})`, sin: ([a]) => `Math.sin(${a})`, cos: ([a]) => `Math.cos(${a})`, softplus: ([a]) => `F.softplus(${a})`,
  clip: ([a, lo, hi]) => `F.clip(${a}, ${lo}, ${hi})`, leaky: ([a, s]) => `F.leaky(${a}, ${s})`,
  where_pos: ([c, a, b]) => `(${c} > 0 ? ${a} : ${b})`,
};

/** `round` wraps every op's result (Math.fround for float32: the fused chain then rounds exactly as the unfused ops do). */
export function renderJs(e: Expr, input: (i: number) => string, round?: (s: string) => string): string {
  if ('input' in e) return input(e.input);
  if ('lit' in e) return Number.isFinite(e.lit) ? `(${e.lit})` : e.lit > 0 ? 'Infinity' : e.lit < 0 ? '-Infinity' : 'NaN';
  const s = JS[e.op](e.args.map((a) => renderJs(a, input, round)));
  return round ? round(s) : s;
}

/** erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), enough for float32 results. */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
    + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? 1 - r : r - 1;
}

/** Helpers the rendered JavaScript calls (NaN-propagating max/min as ONNX Max/Min do). */
export const JS_HELPERS = {
  max: (a: number, b: number) => (a !== a || b !== b ? NaN : a > b ? a : b),
  min: (a: number, b: number) => (a !== a || b !== b ? NaN : a < b ? a : b),
  erf,
  sigmoid: (x: number) => 1 / (1 + Math.exp(-x)),
  relu: (x: number) => (x > 0 ? x : 0),
  softplus: (x: number) => (x > 20 ? x : Math.log1p(Math.exp(x))),
  clip: (x: number, lo: number, hi: number) => (x < lo ? lo : x > hi ? hi : x),
  leaky: (x: number, s: number) => (x < 0 ? x * s : x),
};

/**
 * CUDA C rendering of each op (operands already rendered), for a compute type of `float` or `double`. The `k_*`
 * helpers are overloaded for both types in the CUDA backend's prelude (`src/backends/cuda/codegen/types.ts`), so
 * one table serves both; max/min/relu/clip keep the NaN behaviour of the JavaScript helpers above.
 */
const CUDA: Record<string, (a: string[], t: 'float' | 'double') => string> = {
  add: ([a, b]) => `(${a} + ${b})`, sub: ([a, b]) => `(${a} - ${b})`, mul: ([a, b]) => `(${a} * ${b})`,
  div: ([a, b]) => `(${a} / ${b})`, pow: ([a, b]) => `k_pow(${a}, ${b})`, max: ([a, b]) => `k_max(${a}, ${b})`,
  min: ([a, b]) => `k_min(${a}, ${b})`, neg: ([a]) => `(-${a})`, abs: ([a]) => `k_abs(${a})`, exp: ([a]) => `k_exp(${a})`,
  log: ([a]) => `k_log(${a})`, sqrt: ([a]) => `k_sqrt(${a})`, recip: ([a], t) => `(${t}(1) / ${a})`, tanh: ([a]) => `k_tanh(${a})`,
  erf: ([a]) => `k_erf(${a})`, sigmoid: ([a]) => `k_sigmoid(${a})`, relu: ([a]) => `k_relu(${a})`, floor: ([a]) => `k_floor(${a})`,
  ceil: ([a]) => `k_ceil(${a})`, sin: ([a]) => `k_sin(${a})`, cos: ([a]) => `k_cos(${a})`, softplus: ([a]) => `k_softplus(${a})`,
  clip: ([a, lo, hi]) => `k_clip(${a}, ${lo}, ${hi})`, leaky: ([a, s]) => `k_leaky(${a}, ${s})`,
  where_pos: ([c, a, b]) => `(${c} > 0 ? ${a} : ${b})`,
};

/** CUDA C for `e` computed in `type`; `input(i)` renders input i already converted to `type`. */
export function renderCuda(e: Expr, input: (i: number) => string, type: 'float' | 'double' = 'float'): string {
  if ('input' in e) return input(e.input);
  if ('lit' in e) {
    if (Number.isFinite(e.lit)) return Object.is(e.lit, -0) ? `${type}(-0.0)` : `${type}(${e.lit})`;
    return e.lit > 0 ? `${type}(K_INF)` : e.lit < 0 ? `${type}(-K_INF)` : `${type}(K_NAN)`;
  }
  return CUDA[e.op](e.args.map((a) => renderCuda(a, input, type)), type);
}

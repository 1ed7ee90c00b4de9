// Terminal formatting shared by commands.
import { Tensor, toTensorData, type OnnxValue } from '../runtime/tensor.js';

export function table(rows: string[][], header?: string[]): string {
  const all = header ? [header, ...rows] : rows;
  const widths = all[0]?.map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length))) ?? [];
  const fmt = (r: string[]) => r.map((v, c) => (c === r.length - 1 ? v : v.padEnd(widths[c]))).join('  ');
  const lines = all.map(fmt);
  if (header) lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return lines.join('\n');
}

function numbers(t: Tensor): number[] | undefined {
  if (t.type === 'string') return undefined;
  // decode bit-pattern and packed types through the internal representation
  return Array.from(toTensorData(t).toFloat64());
}

/** One row per output: name, type, shape, min/max/mean and the first values. */
export function summarizeOutputs(outputs: Record<string, OnnxValue>): string {
  const rows = Object.entries(outputs).map(([name, v]) => {
    if (v === null) return [name, 'optional', '-', '(empty)'];
    if (Array.isArray(v)) return [name, 'sequence', `${v.length} items`, ''];
    const t = v as Tensor;
    const nums = numbers(t);
    let stats = '';
    if (nums && nums.length) {
      let min = Infinity, max = -Infinity, sum = 0;
      for (const x of nums) { if (x < min) min = x; if (x > max) max = x; sum += x; }
      stats = `min ${fmt(min)}  max ${fmt(max)}  mean ${fmt(sum / nums.length)}`;
    }
    const head = nums ? nums.slice(0, 6).map(fmt).join(', ') : t.type === 'string' ? (t.data as string[]).slice(0, 4).map((s) => JSON.stringify(s)).join(', ') : '';
    return [name, t.type, `[${t.dims.join(',')}]`, `${stats}${stats ? '  ' : ''}[${head}${t.size > 6 ? ', ...' : ''}]`];
  });
  return table(rows, ['output', 'type', 'shape', 'values']);
}

export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e5)) return x.toExponential(3);
  return Number(x.toPrecision(5)).toString();
}

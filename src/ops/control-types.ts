// Static-type helpers for ops with subgraphs and for sequence/optional types.
import type { Dim, ValueType } from '../ir/graph.js';

export const UNKNOWN: ValueType = { kind: 'unknown' };

/**
 * The type a subgraph declares for one of its outputs, as seen from the enclosing graph: symbolic dims belong to
 * the subgraph's scope, so they become unknown; the element shapes of sequences are dropped because exporters
 * commonly declare them loosely (e.g. `seq(float[])` for items of any shape).
 */
export function outerType(t: ValueType | undefined): ValueType {
  if (!t) return UNKNOWN;
  switch (t.kind) {
    case 'tensor':
      return { kind: 'tensor', dtype: t.dtype, shape: t.shape?.map((d) => (typeof d === 'number' ? d : undefined)) };
    case 'sequence': {
      const e = t.elem;
      return { kind: 'sequence', elem: e.kind === 'tensor' ? { kind: 'tensor', dtype: e.dtype } : outerType(e) };
    }
    case 'optional':
      return { kind: 'optional', elem: outerType(t.elem) };
    default:
      return t;
  }
}

/** Dims that agree in both shapes; anything that differs becomes unknown (rank mismatch: unknown rank). */
export function mergeShapes(a: Dim[] | undefined, b: Dim[] | undefined): Dim[] | undefined {
  if (!a || !b || a.length !== b.length) return undefined;
  return a.map((d, i) => (d === b[i] ? d : undefined));
}

/** The union of two possible types of one value (e.g. the two branches of If). */
export function mergeTypes(a: ValueType | undefined, b: ValueType | undefined): ValueType {
  if (!a || a.kind === 'unknown') return b ?? UNKNOWN;
  if (!b || b.kind === 'unknown') return a;
  if (a.kind === 'tensor' && b.kind === 'tensor') {
    return a.dtype === b.dtype ? { kind: 'tensor', dtype: a.dtype, shape: mergeShapes(a.shape, b.shape) } : UNKNOWN;
  }
  if (a.kind === 'sequence' && b.kind === 'sequence') return { kind: 'sequence', elem: mergeTypes(a.elem, b.elem) };
  if (a.kind === 'optional' && b.kind === 'optional') return { kind: 'optional', elem: mergeTypes(a.elem, b.elem) };
  // one side optional, the other its element: the value may be either
  if (a.kind === 'optional') return { kind: 'optional', elem: mergeTypes(a.elem, b) };
  if (b.kind === 'optional') return { kind: 'optional', elem: mergeTypes(a, b.elem) };
  return UNKNOWN;
}

/** Element type of a sequence type, or unknown. */
export function seqElem(t: ValueType | undefined): ValueType {
  return t && t.kind === 'sequence' ? t.elem : UNKNOWN;
}

// Model configuration: the fields of Triton's ModelConfig that Kiln acts on, read from config.json or config.pbtxt.
import { InputError } from '../index.js';
import type { TensorType } from '../index.js';

export interface TensorConfig {
  name: string;
  data_type: string; // TYPE_FP32, ...
  dims: number[]; // without the batch dim when max_batch_size > 0; -1 = any
}

export interface ModelConfig {
  name: string;
  platform: string;
  backend: string;
  max_batch_size: number;
  input: TensorConfig[];
  output: TensorConfig[];
  dynamic_batching?: {
    preferred_batch_size: number[];
    max_queue_delay_microseconds: number;
    /** Levels 1 (highest) .. priority_levels; 0 = priorities off (requests' `priority` is ignored). */
    priority_levels: number;
    default_priority_level: number;
    default_queue_policy?: QueuePolicy;
  };
  instance_group: InstanceGroup[];
  /** platform "ensemble": a DAG of other models, run by the server. */
  ensemble_scheduling?: { step: EnsembleStep[] };
  version_policy: { latest?: { num_versions: number }; all?: object; specific?: { versions: number[] } };
  /** Kiln extension: build precision for ONNX models (fp32 default). */
  precision?: string;
}

export interface QueuePolicy {
  max_queue_size?: number;
  default_timeout_microseconds?: number;
  /** Triton's rule: a request's `timeout` may only shorten the default, and only when this is true. */
  allow_timeout_override?: boolean;
  /** REJECT (default): a timed-out request fails with 504; DELAY: it waits behind every request still in time. */
  timeout_action?: 'REJECT' | 'DELAY';
}

export interface InstanceGroup {
  count: number;
  kind: string;
  /** GPUs for KIND_GPU/KIND_AUTO; `count` instances go on each; empty = every GPU present. */
  gpus?: number[];
}

export interface EnsembleStep {
  model_name: string;
  /** -1 = the latest ready version. */
  model_version: number;
  /** step model's input name -> ensemble tensor name */
  input_map: Record<string, string>;
  /** step model's output name -> ensemble tensor name */
  output_map: Record<string, string>;
}

// KServe datatype <-> Triton config type <-> Kiln tensor type.
const TYPES: [string, string, TensorType][] = [
  ['BOOL', 'TYPE_BOOL', 'bool'], ['UINT8', 'TYPE_UINT8', 'uint8'], ['UINT16', 'TYPE_UINT16', 'uint16'],
  ['UINT32', 'TYPE_UINT32', 'uint32'], ['UINT64', 'TYPE_UINT64', 'uint64'], ['INT8', 'TYPE_INT8', 'int8'],
  ['INT16', 'TYPE_INT16', 'int16'], ['INT32', 'TYPE_INT32', 'int32'], ['INT64', 'TYPE_INT64', 'int64'],
  ['FP16', 'TYPE_FP16', 'float16'], ['FP32', 'TYPE_FP32', 'float32'], ['FP64', 'TYPE_FP64', 'float64'],
  ['BYTES', 'TYPE_STRING', 'string'], ['BF16', 'TYPE_BF16', 'bfloat16'],
];
export const KSERVE_TYPES = TYPES.map((t) => t[0]);

export function kserveFromConfigType(t: string): string {
  const e = TYPES.find((x) => x[1] === t);
  if (!e) throw new InputError(`unknown data_type '${t}'; expected one of ${TYPES.map((x) => x[1]).join(', ')}.`);
  return e[0];
}
export function configTypeFromKiln(t: string): string {
  const e = TYPES.find((x) => x[2] === t);
  if (!e) throw new InputError(`tensor type '${t}' cannot be served; supported: ${TYPES.map((x) => x[2]).join(', ')}.`);
  return e[1];
}
export function kilnFromKserve(t: string): TensorType | undefined {
  return TYPES.find((x) => x[0] === t)?.[2];
}
export function kserveFromKiln(t: string): string {
  return kserveFromConfigType(configTypeFromKiln(t));
}

// ---- config.pbtxt: protobuf text format, parsed into plain objects (repeated fields collect into arrays) ----

type PbValue = string | number | boolean | PbObject | PbValue[];
interface PbObject {
  [k: string]: PbValue;
}

function tokenize(src: string, file: string): string[] {
  const re = /\s+|#[^\n]*|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([{}[\]:,;<>])|([A-Za-z0-9_.+-]+)/gy;
  const out: string[] = [];
  let m: RegExpExecArray | null;
  while (re.lastIndex < src.length) {
    const at = re.lastIndex;
    m = re.exec(src);
    if (!m || re.lastIndex === at) throw new InputError(`${file}: cannot parse text near '${src.slice(at, at + 20)}'.`);
    const tok = m[1] ?? m[2] ?? m[3];
    if (tok !== undefined) out.push(tok);
  }
  return out;
}

export function parsePbtxt(src: string, file = 'config.pbtxt'): PbObject {
  const toks = tokenize(src, file);
  let i = 0;
  const fail = (what: string): never => {
    throw new InputError(`${file}: expected ${what} at token ${i} ('${toks[i] ?? 'end of file'}').`);
  };
  const scalar = (t: string): PbValue => {
    if (/^["']/.test(t)) return t.slice(1, -1).replace(/\\(.)/g, '$1');
    if (t === 'true' || t === 'false') return t === 'true';
    const n = Number(t);
    return Number.isNaN(n) ? t : n;
  };
  const value = (): PbValue => {
    const t = toks[i++];
    if (t === undefined) return fail('a value');
    if (t === '{' || t === '<') return message(t === '{' ? '}' : '>');
    if (t === '[') {
      const arr: PbValue[] = [];
      while (toks[i] !== ']') {
        arr.push(value());
        if (toks[i] === ',') i++;
        else if (toks[i] !== ']') fail("',' or ']'");
      }
      i++;
      return arr;
    }
    return scalar(t);
  };
  const message = (end: string | undefined): PbObject => {
    const obj: PbObject = {};
    while (i < toks.length && toks[i] !== end) {
      const key = toks[i++];
      if (!/^[A-Za-z_]/.test(key)) fail('a field name');
      if (toks[i] === ':') i++;
      const v = value();
      const prev = obj[key];
      if (prev === undefined) obj[key] = v;
      else obj[key] = Array.isArray(prev) ? [...prev, ...(Array.isArray(v) ? v : [v])] : [prev, ...(Array.isArray(v) ? v : [v])];
      if (toks[i] === ',' || toks[i] === ';') i++;
    }
    if (end !== undefined) {
      if (toks[i] !== end) fail(`'${end}'`);
      i++;
    }
    return obj;
  };
  return message(undefined);
}

// ---- normalization: one shape for configs from either file, checked with messages that name the field ----

const arr = <T>(v: unknown): T[] => (v === undefined ? [] : Array.isArray(v) ? (v as T[]) : [v as T]);

function num(v: unknown, field: string, file: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new InputError(`${file}: '${field}' must be an integer, found ${JSON.stringify(v)}.`);
  return n;
}

function tensorConfig(v: unknown, field: string, file: string): TensorConfig {
  const o = (v ?? {}) as Record<string, unknown>;
  if (typeof o.name !== 'string' || !o.name) throw new InputError(`${file}: every '${field}' entry needs a 'name'.`);
  const dt = String(o.data_type ?? '');
  kserveFromConfigType(dt.startsWith('TYPE_') ? dt : `TYPE_${dt}`);
  const dims = arr<unknown>(o.dims).map((d) => num(d, `${field}.dims`, file, 0));
  return { name: o.name, data_type: dt.startsWith('TYPE_') ? dt : `TYPE_${dt}`, dims };
}

/** A protobuf map from JSON ({k: v}) or from text format (repeated { key: k value: v }). */
function strMap(v: unknown, field: string, file: string): Record<string, string> {
  if (v === undefined) return {};
  const out: Record<string, string> = {};
  if (!Array.isArray(v) && typeof v === 'object' && v !== null && !('key' in v)) {
    for (const [k, x] of Object.entries(v)) out[k] = String(x);
    return out;
  }
  for (const e of arr<Record<string, unknown>>(v)) {
    if (typeof e?.key !== 'string' || typeof e.value !== 'string') throw new InputError(`${file}: '${field}' entries need a string key and value, found ${JSON.stringify(e)}.`);
    out[e.key] = e.value;
  }
  return out;
}

function queuePolicy(q: Record<string, unknown> | undefined, file: string): QueuePolicy | undefined {
  if (!q) return undefined;
  const action = q.timeout_action === undefined ? undefined : String(q.timeout_action);
  if (action !== undefined && action !== 'REJECT' && action !== 'DELAY') throw new InputError(`${file}: timeout_action must be REJECT or DELAY, found '${action}'.`);
  return {
    max_queue_size: q.max_queue_size === undefined ? undefined : num(q.max_queue_size, 'max_queue_size', file, 0),
    default_timeout_microseconds: q.default_timeout_microseconds === undefined ? undefined : num(q.default_timeout_microseconds, 'default_timeout_microseconds', file, 0),
    allow_timeout_override: q.allow_timeout_override === undefined ? undefined : q.allow_timeout_override === true || q.allow_timeout_override === 'true',
    timeout_action: action as QueuePolicy['timeout_action'],
  };
}

function ensembleSteps(raw: unknown, file: string): EnsembleStep[] {
  const es = (raw ?? {}) as Record<string, unknown>;
  return arr<Record<string, unknown>>(es.step).map((st, i) => {
    if (typeof st?.model_name !== 'string' || !st.model_name) throw new InputError(`${file}: ensemble_scheduling.step[${i}] needs a 'model_name'.`);
    return {
      model_name: st.model_name,
      model_version: num(st.model_version, `ensemble_scheduling.step[${i}].model_version`, file, -1),
      input_map: strMap(st.input_map, `step[${i}].input_map`, file),
      output_map: strMap(st.output_map, `step[${i}].output_map`, file),
    };
  });
}

/** Normalize a raw config (from JSON or text proto) for the model folder `name`. */
export function normalizeConfig(raw: Record<string, unknown>, name: string, file: string): ModelConfig {
  if (raw.name !== undefined && raw.name !== name) {
    throw new InputError(`${file}: name '${String(raw.name)}' does not match the model folder '${name}'.`, { hint: 'Make them equal, or leave name out.' });
  }
  const db = raw.dynamic_batching as Record<string, unknown> | undefined;
  const dqp = db?.default_queue_policy as Record<string, unknown> | undefined;
  const vp = (raw.version_policy ?? { latest: { num_versions: 1 } }) as ModelConfig['version_policy'];
  const cfg: ModelConfig = {
    name,
    platform: String(raw.platform ?? ''),
    backend: String(raw.backend ?? ''),
    max_batch_size: num(raw.max_batch_size, 'max_batch_size', file, 0),
    input: arr(raw.input).map((x) => tensorConfig(x, 'input', file)),
    output: arr(raw.output).map((x) => tensorConfig(x, 'output', file)),
    instance_group: arr<Record<string, unknown>>(raw.instance_group).map((g) => ({
      count: num(g.count, 'instance_group.count', file, 1),
      kind: String(g.kind ?? 'KIND_CPU'),
      ...(g.gpus !== undefined ? { gpus: arr(g.gpus).map((v) => num(v, 'instance_group.gpus', file, 0)) } : {}),
    })),
    version_policy: {
      ...(vp.latest ? { latest: { num_versions: num((vp.latest as Record<string, unknown>).num_versions, 'version_policy.latest.num_versions', file, 1) } } : {}),
      ...(vp.all ? { all: {} } : {}),
      ...(vp.specific ? { specific: { versions: arr(vp.specific.versions).map((v) => num(v, 'version_policy.specific.versions', file, 0)) } } : {}),
    },
    precision: raw.precision === undefined ? undefined : String(raw.precision),
  };
  if (db) {
    cfg.dynamic_batching = {
      preferred_batch_size: arr(db.preferred_batch_size).map((v) => num(v, 'dynamic_batching.preferred_batch_size', file, 0)),
      max_queue_delay_microseconds: num(db.max_queue_delay_microseconds, 'dynamic_batching.max_queue_delay_microseconds', file, 0),
      priority_levels: num(db.priority_levels, 'dynamic_batching.priority_levels', file, 0),
      default_priority_level: num(db.default_priority_level, 'dynamic_batching.default_priority_level', file, 0),
      default_queue_policy: queuePolicy(dqp, file),
    };
    const d = cfg.dynamic_batching;
    if (d.priority_levels < 0) throw new InputError(`${file}: dynamic_batching.priority_levels must be >= 0, found ${d.priority_levels}.`);
    if (d.priority_levels > 0 && d.default_priority_level === 0) d.default_priority_level = 1;
    if (d.priority_levels > 0 && (d.default_priority_level < 1 || d.default_priority_level > d.priority_levels)) {
      throw new InputError(`${file}: dynamic_batching.default_priority_level ${d.default_priority_level} is outside 1..${d.priority_levels} (priority_levels).`);
    }
  }
  if (raw.ensemble_scheduling !== undefined || cfg.platform === 'ensemble') {
    const step = ensembleSteps(raw.ensemble_scheduling, file);
    if (cfg.platform !== 'ensemble') throw new InputError(`${file}: ensemble_scheduling needs platform "ensemble", found '${cfg.platform}'.`);
    if (step.length === 0) throw new InputError(`${file}: an ensemble needs ensemble_scheduling { step [ ... ] } with at least one step.`);
    if (cfg.input.length === 0 || cfg.output.length === 0) throw new InputError(`${file}: an ensemble must declare its input and output tensors (name, data_type, dims).`);
    cfg.ensemble_scheduling = { step };
  }
  if (cfg.max_batch_size < 0) throw new InputError(`${file}: max_batch_size must be >= 0, found ${cfg.max_batch_size}.`);
  for (const g of cfg.instance_group) {
    if (g.count < 1) throw new InputError(`${file}: instance_group count must be >= 1, found ${g.count}.`);
    if (!['KIND_CPU', 'KIND_GPU', 'KIND_AUTO', 'KIND_MODEL'].includes(g.kind)) throw new InputError(`${file}: unknown instance_group kind '${g.kind}'; expected KIND_CPU, KIND_GPU or KIND_AUTO.`);
    if (g.gpus?.length && (g.kind === 'KIND_CPU' || g.kind === 'KIND_MODEL')) throw new InputError(`${file}: instance_group kind ${g.kind} cannot list gpus; use KIND_GPU.`);
  }
  if (cfg.instance_group.length === 0) cfg.instance_group.push({ count: 1, kind: 'KIND_CPU' });
  return cfg;
}

/** Parse a config file's text (JSON when `file` ends in .json, text proto otherwise). */
export function parseConfigText(text: string, name: string, file: string): ModelConfig {
  let raw: Record<string, unknown>;
  if (file.endsWith('.json')) {
    try {
      raw = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw new InputError(`${file}: not valid JSON: ${(e as Error).message}`);
    }
  } else raw = parsePbtxt(text, file) as Record<string, unknown>;
  return normalizeConfig(raw, name, file);
}

/** Which versions of those present the policy selects. */
export function selectVersions(cfg: ModelConfig, present: number[]): number[] {
  const sorted = [...present].sort((a, b) => b - a);
  if (cfg.version_policy.all) return sorted.reverse();
  if (cfg.version_policy.specific) return sorted.filter((v) => cfg.version_policy.specific!.versions.includes(v)).reverse();
  return sorted.slice(0, cfg.version_policy.latest?.num_versions ?? 1).reverse();
}

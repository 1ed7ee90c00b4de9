// The plan file: a versioned binary container.
//
//   "KILNPLAN" | u32 format version | u32 header length | header JSON | padding to 64 | blobs (64-aligned) | sha256
//
// The header holds the Kiln version, backend, device signature, bindings, shape profiles, per-layer tactic and
// precision, the memory plan, and the blob table. Blobs hold the optimized graph with its weights (ONNX bytes) and
// compiled kernels. The trailing SHA-256 covers everything before it.
import fs from 'node:fs';
import crypto from 'node:crypto';
import { KilnError } from '../ir/errors.js';
import type { MemoryPlan } from './memory.js';

export const PLAN_MAGIC = 'KILNPLAN';
export const PLAN_FORMAT_VERSION = 1;
export const KILN_VERSION = '0.1.0';
const ALIGN = 64;

export interface DeviceSignature {
  backend: string;
  arch: string;
  platform: string;
  /** e.g. CPU model or GPU name */
  name: string;
  /** features that compiled code depends on (CPU flags, SM version, driver/CUDA version) */
  features: Record<string, string | number | boolean>;
}

export interface ShapeProfile {
  /** input name -> min/opt/max dims */
  [input: string]: { min: number[]; opt: number[]; max: number[] };
}

export interface LayerInfo {
  name: string;
  opType: string;
  /** ops fused into this layer */
  fused: string[];
  tactic: string;
  precision: string;
  inputs: { name: string; dtype: string; shape: (number | string | null)[] }[];
  outputs: { name: string; dtype: string; shape: (number | string | null)[] }[];
  weightBytes: number;
  workspaceBytes: number;
  /** median time of the chosen tactic when it was timed (ms) */
  timeMs?: number;
}

export interface PlanHeader {
  kilnVersion: string;
  formatVersion: number;
  created: string;
  device: DeviceSignature;
  /** how to rebuild this plan (for mismatch errors) */
  buildCommand: string;
  precision: string;
  inputs: { name: string; dtype: string; shape: (number | string | null)[] }[];
  outputs: { name: string; dtype: string; shape: (number | string | null)[] }[];
  profiles: ShapeProfile[];
  layers: LayerInfo[];
  memory: Omit<MemoryPlan, 'slots'> & { slots: number; dynamic: number };
  optimizer: { nodesBefore: number; nodesAfter: number; stages: { name: string; changes: number }[] };
  buildMs: number;
  /** layers timed in this build, and layers whose tactic came from the timing cache */
  timing: { timed: number; cached: number };
  blobs: { name: string; offset: number; length: number }[];
}

export interface PlanData {
  header: PlanHeader;
  blobs: Map<string, Uint8Array>;
}

const pad = (n: number) => (ALIGN - (n % ALIGN)) % ALIGN;

export function serializePlan(header: Omit<PlanHeader, 'blobs'>, blobs: Map<string, Uint8Array>): Uint8Array {
  // blob offsets are relative to the start of the blob section
  const table: PlanHeader['blobs'] = [];
  let off = 0;
  for (const [name, b] of blobs) {
    table.push({ name, offset: off, length: b.length });
    off += b.length + pad(b.length);
  }
  const json = new TextEncoder().encode(JSON.stringify({ ...header, blobs: table }));
  const headStart = 16;
  const blobStart = headStart + json.length + pad(headStart + json.length);
  const total = blobStart + off + 32;
  const out = new Uint8Array(total);
  out.set(new TextEncoder().encode(PLAN_MAGIC), 0);
  const dv = new DataView(out.buffer);
  dv.setUint32(8, PLAN_FORMAT_VERSION, true);
  dv.setUint32(12, json.length, true);
  out.set(json, headStart);
  for (const t of table) out.set(blobs.get(t.name)!, blobStart + t.offset);
  out.set(crypto.createHash('sha256').update(out.subarray(0, total - 32)).digest(), total - 32);
  return out;
}

/** Parse and verify a plan (magic, version, checksum). Device compatibility is checked by the engine. */
export function parsePlan(bytes: Uint8Array, where = 'plan'): PlanData {
  const rebuild = 'Rebuild it with `kiln build --onnx MODEL.onnx --save-engine MODEL.plan`.';
  if (bytes.length < 48 || new TextDecoder().decode(bytes.subarray(0, 8)) !== PLAN_MAGIC) {
    throw new KilnError(`${where}: not a Kiln plan file (bad magic).`, { hint: rebuild });
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== PLAN_FORMAT_VERSION) {
    throw new KilnError(`${where}: plan format version ${version}, but this Kiln (${KILN_VERSION}) reads version ${PLAN_FORMAT_VERSION}.`, { hint: rebuild });
  }
  const sum = crypto.createHash('sha256').update(bytes.subarray(0, bytes.length - 32)).digest();
  if (!Buffer.from(bytes.subarray(bytes.length - 32)).equals(sum)) {
    throw new KilnError(`${where}: the plan file is corrupted (checksum mismatch).`, { hint: rebuild });
  }
  const hlen = dv.getUint32(12, true);
  if (16 + hlen > bytes.length - 32) throw new KilnError(`${where}: truncated plan header.`, { hint: rebuild });
  let header: PlanHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + hlen)));
  } catch (e) {
    throw new KilnError(`${where}: unreadable plan header (${(e as Error).message}).`, { hint: rebuild });
  }
  const blobStart = 16 + hlen + pad(16 + hlen);
  const blobs = new Map<string, Uint8Array>();
  for (const b of header.blobs) {
    if (blobStart + b.offset + b.length > bytes.length - 32) throw new KilnError(`${where}: blob '${b.name}' lies outside the file.`, { hint: rebuild });
    blobs.set(b.name, bytes.subarray(blobStart + b.offset, blobStart + b.offset + b.length));
  }
  return { header, blobs };
}

export async function readPlanFile(path: string): Promise<PlanData> {
  let bytes: Buffer;
  try {
    bytes = await fs.promises.readFile(path);
  } catch (e) {
    throw new KilnError(`cannot read plan file '${path}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}.`);
  }
  return parsePlan(bytes, path);
}

/** Explain how a plan's device differs from this one, or '' when it can run here. */
export function deviceMismatch(plan: DeviceSignature, here: DeviceSignature): string {
  const diffs: string[] = [];
  if (plan.backend !== here.backend) diffs.push(`backend ${plan.backend} vs ${here.backend}`);
  if (plan.arch !== here.arch) diffs.push(`architecture ${plan.arch} vs ${here.arch}`);
  if (plan.platform !== here.platform) diffs.push(`platform ${plan.platform} vs ${here.platform}`);
  for (const [k, v] of Object.entries(plan.features)) if (here.features[k] !== v) diffs.push(`${k} ${String(v)} vs ${String(here.features[k])}`);
  return diffs.join(', ');
}

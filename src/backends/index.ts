// Backend registry, in priority order. A backend that cannot run here says why; InferenceSession reports every
// requested backend's reason when none can be used.
import type { Backend } from './backend.js';
import { InputError } from '../ir/errors.js';
import { cpuBackend } from './cpu/index.js';

import { cudaBackend } from './cuda/index.js';

export const BACKENDS: Backend[] = [cudaBackend, cpuBackend];

export function findBackend(name: string): Backend | undefined {
  return BACKENDS.find((b) => b.name === name);
}

/**
 * A device as users write it: a backend name, optionally with a device index (`cuda:1`). The index picks one of
 * several GPUs of a host; plans are not tied to it (an engine built on one GPU loads on another of the same kind).
 */
export function parseDevice(spec: string): { name: string; deviceId: number } {
  const m = /^([a-z][a-z0-9_-]*)(?::(\d+))?$/i.exec(spec.trim());
  if (!m) throw new InputError(`device '${spec}' is not understood.`, { hint: `Write a backend name with an optional index: ${BACKENDS.map((b) => b.name).join(', ')}, cuda:1.` });
  return { name: m[1].toLowerCase(), deviceId: m[2] === undefined ? 0 : Number(m[2]) };
}

// Finding and loading NVIDIA's shared libraries through koffi. Search order: KILN_CUDA_PATH, the loader path
// (LD_LIBRARY_PATH and the system's default search), the CUDA toolkit folders, and pip's nvidia-* packages. When a
// library is missing, the error lists every place that was searched.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { KilnError } from '../../../ir/errors.js';

const require = createRequire(import.meta.url);
// koffi is loaded lazily: importing Kiln never loads it (or CUDA) unless the cuda backend is asked for.
export type Koffi = typeof import('koffi');
let koffiMod: Koffi | undefined;
export function koffi(): Koffi {
  koffiMod ??= require('koffi') as Koffi;
  return koffiMod;
}

function globDirs(pattern: RegExp, parent: string): string[] {
  try {
    return fs.readdirSync(parent).filter((d) => pattern.test(d)).map((d) => path.join(parent, d));
  } catch {
    return [];
  }
}

/** Folders to search, in order, with why each is searched. */
export function searchDirs(env: NodeJS.ProcessEnv = process.env): { dir: string; why: string }[] {
  const out: { dir: string; why: string }[] = [];
  for (const d of (env.KILN_CUDA_PATH ?? '').split(path.delimiter).filter(Boolean)) {
    out.push({ dir: d, why: 'KILN_CUDA_PATH' }, { dir: path.join(d, 'lib64'), why: 'KILN_CUDA_PATH' }, { dir: path.join(d, 'lib'), why: 'KILN_CUDA_PATH' });
  }
  for (const d of (env.LD_LIBRARY_PATH ?? '').split(path.delimiter).filter(Boolean)) out.push({ dir: d, why: 'LD_LIBRARY_PATH' });
  for (const d of ['/usr/local/cuda', ...globDirs(/^cuda-[\d.]+$/, '/usr/local')]) {
    out.push({ dir: path.join(d, 'lib64'), why: 'CUDA toolkit' }, { dir: path.join(d, 'targets/x86_64-linux/lib'), why: 'CUDA toolkit' });
  }
  out.push({ dir: '/usr/lib/x86_64-linux-gnu', why: 'system' }, { dir: '/lib/x86_64-linux-gnu', why: 'system' }, { dir: '/usr/lib64', why: 'system' });
  const sites = [
    ...globDirs(/^python3/, '/usr/local/lib').flatMap((d) => [path.join(d, 'dist-packages'), path.join(d, 'site-packages')]),
    ...globDirs(/^python3/, '/usr/lib').flatMap((d) => [path.join(d, 'dist-packages'), path.join(d, 'site-packages')]),
    ...(env.VIRTUAL_ENV ? globDirs(/^python3/, path.join(env.VIRTUAL_ENV, 'lib')).map((d) => path.join(d, 'site-packages')) : []),
  ];
  for (const site of sites) {
    for (const pkg of globDirs(/./, path.join(site, 'nvidia'))) out.push({ dir: path.join(pkg, 'lib'), why: `pip package ${path.basename(pkg)}` });
  }
  return out;
}

/** Load the first library matching one of `names` (sonames or glob-like prefixes ending in '*'). */
export function loadLibrary(label: string, names: string[]): ReturnType<Koffi['load']> {
  const k = koffi();
  const tried: string[] = [];
  for (const { dir, why } of searchDirs()) {
    let files: string[];
    try {
      files = fs.readdirSync(dir);
    } catch {
      tried.push(`${dir} (${why}; not found)`);
      continue;
    }
    for (const n of names) {
      const hit = n.endsWith('*') ? files.filter((f) => f.startsWith(n.slice(0, -1))).sort().reverse()[0] : files.includes(n) ? n : undefined;
      if (!hit) continue;
      try {
        return k.load(path.join(dir, hit));
      } catch (e) {
        tried.push(`${path.join(dir, hit)} (${why}; failed to load: ${(e as Error).message})`);
      }
    }
    tried.push(`${dir} (${why}; no ${names.join(' / ')})`);
  }
  for (const n of names.filter((x) => !x.endsWith('*'))) {
    try {
      return k.load(n); // the dynamic loader's own search (ld.so.cache)
    } catch {
      tried.push(`${n} through the dynamic loader's default search`);
    }
  }
  throw new KilnError(`cannot find ${label} (${names.join(', ')}). Searched:\n  ${tried.join('\n  ')}`, {
    hint: 'Install the NVIDIA driver and CUDA 12/13 libraries, or set KILN_CUDA_PATH to the folder that holds them.',
  });
}

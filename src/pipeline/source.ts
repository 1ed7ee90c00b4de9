// Pipeline sources: files, a folder, a glob, or bytes already in memory (e.g. HTTP request bodies).
import fs from 'node:fs';
import path from 'node:path';
import { InputError } from '../ir/errors.js';
import type { PipelineItem } from './decode.js';
import type { SourceSpec } from './spec.js';

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp'];

/** What a pipeline reads: a folder or glob, file paths, byte buffers, items, or an (async) iterable of those. */
export type PipelineSource = string | SourceSpec | readonly (string | Uint8Array | PipelineItem)[] | AsyncIterable<string | Uint8Array | PipelineItem>;

/** A glob as a regular expression over '/'-separated relative paths: `*`, `?`, `**`, `{a,b}`. */
export function globRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === '*' && glob[i + 1] === '*') {
      const slash = glob[i + 2] === '/';
      re += slash ? '(?:.*/)?' : '.*';
      i += slash ? 2 : 1;
    } else if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else if (ch === '{') {
      const end = glob.indexOf('}', i);
      if (end < 0) throw new InputError(`glob '${glob}': '{' at ${i} has no closing '}'.`);
      re += '(?:' + glob.slice(i + 1, end).split(',').map((p) => p.replace(/[.+^$()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')).join('|') + ')';
      i = end;
    } else re += ch.replace(/[.+^$()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 'i');
}

function walk(root: string, recursive: boolean, out: string[] = [], rel = ''): string[] {
  for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) { if (recursive) walk(root, true, out, p); } else out.push(p);
  }
  return out;
}

/** The files a source spec names, sorted within each folder; a folder alone lists its images. */
export function listFiles(src: SourceSpec): string[] {
  const files = [...(src.files ?? [])];
  if (src.dir !== undefined || src.glob !== undefined) {
    const root = src.dir ?? '.';
    if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new InputError(`image folder '${root}' does not exist or is not a folder.`);
    const re = src.glob ? globRegExp(src.glob) : undefined;
    const rel = walk(root, !!src.glob?.includes('/') || !!src.glob?.includes('**'));
    const hits = rel.filter((p) => (re ? re.test(p) : IMAGE_EXTENSIONS.includes(path.extname(p).toLowerCase())));
    if (!hits.length) {
      throw new InputError(`no images in '${root}'${src.glob ? ` matching '${src.glob}'` : ''}.`, { hint: src.glob ? 'Check the glob (relative to dir).' : `Images are files ending in ${IMAGE_EXTENSIONS.join(', ')}.` });
    }
    files.push(...hits.map((p) => path.join(root, p)));
  }
  return files;
}

/** A string source: a folder, a glob (with a folder part before the first wildcard), or one file. */
export function sourceFromString(s: string): SourceSpec {
  const wild = s.search(/[*?{]/);
  if (wild < 0) return fs.existsSync(s) && fs.statSync(s).isDirectory() ? { dir: s } : { files: [s] };
  const cut = s.lastIndexOf('/', wild);
  return cut < 0 ? { glob: s } : { dir: s.slice(0, cut) || '/', glob: s.slice(cut + 1) };
}

function toItem(x: string | Uint8Array | PipelineItem, i: number): PipelineItem {
  if (typeof x === 'string') return { name: x, path: x };
  if (x instanceof Uint8Array) return { name: `item ${i}`, bytes: x };
  if (x && typeof x === 'object' && typeof x.name === 'string' && (x.path !== undefined || x.bytes instanceof Uint8Array)) return x;
  throw new InputError(`pipeline source item ${i}: expected a file path, a Uint8Array/Buffer or { name, path | bytes }, found ${typeof x}.`);
}

/** The items of a source, in order. */
export async function* sourceItems(src: PipelineSource): AsyncGenerator<PipelineItem> {
  let i = 0;
  if (typeof src === 'string') src = sourceFromString(src);
  if (Symbol.asyncIterator in src) {
    for await (const x of src as AsyncIterable<string | Uint8Array | PipelineItem>) yield toItem(x, i++);
    return;
  }
  if (Array.isArray(src)) {
    for (const x of src) yield toItem(x, i++);
    return;
  }
  for (const f of listFiles(src as SourceSpec)) yield toItem(f, i++);
}

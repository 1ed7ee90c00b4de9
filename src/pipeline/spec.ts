// The pipeline spec: one declarative description of image preprocessing, written as a TypeScript object or the same
// thing as JSON. Its steps run in a fixed order — decode → resize → crop → flip → normalize → layout → dtype →
// batch — so that any executor can implement them: the CPU executor here (sharp/libvips for decode and resize, our
// own fused pass for the rest) and a GPU executor (nvJPEG decode, then resize + crop + flip + normalize + layout +
// dtype as one NVRTC kernel writing into the engine's input binding). Both take a ResolvedSpec; nothing in it
// depends on how a step is carried out.
import fs from 'node:fs';
import { InputError } from '../ir/errors.js';

export type Interpolation = 'bilinear' | 'area';
export type Layout = 'NCHW' | 'NHWC' | 'CHW' | 'HWC';
export type PipelineDType = 'float32' | 'float16' | 'uint8';
export type FlipSetting = boolean | 'random';

export interface SourceSpec {
  /** A folder: every .jpg/.jpeg/.png/.webp in it (not recursive unless `glob` says so). */
  dir?: string;
  /** Glob over file paths (`*`, `?`, `**`, `{a,b}`), relative to `dir` when given, else to the working folder. */
  glob?: string;
  /** Explicit file paths. */
  files?: string[];
}

export interface DecodeSpec {
  /** Output channels: 1 (greyscale), 3 (RGB; default) or 4 (RGBA). Greyscale input is expanded to RGB for 3 and 4. */
  channels?: 1 | 3 | 4;
  /** With channels 1 or 3: drop an alpha channel (default) or flatten the image onto `background`. */
  alpha?: 'drop' | 'flatten';
  /** Background for alpha 'flatten', RGB 0–255 (default white). */
  background?: [number, number, number];
  /** Apply the EXIF orientation (default true). */
  autoOrient?: boolean;
}

export interface ResizeSpec {
  /** 'shorter': scale so the shorter side is `size` (aspect kept); 'exact': scale to width × height. */
  mode?: 'shorter' | 'exact';
  size?: number;
  width?: number;
  height?: number;
  /**
   * 'bilinear' (libvips' linear resize, as sharp does it: when shrinking, an integer box shrink then a triangle filter
   * widened by the rest of the factor, antialiased; when enlarging, bilinear) or 'area' (pixel-area average).
   */
  interpolation?: Interpolation;
}

export interface CropSpec {
  mode?: 'center' | 'random';
  /** Square crop; or width and height. */
  size?: number;
  width?: number;
  height?: number;
}

export interface FlipSpec {
  horizontal?: FlipSetting;
  vertical?: FlipSetting;
}

export interface NormalizeSpec {
  /** One value per output channel, or one for all. */
  mean: number[] | number;
  std: number[] | number;
  /** Units of mean and std: '0-1' (pixels divided by 255 first; torchvision's convention) or '0-255'. */
  units?: '0-1' | '0-255';
}

export interface PipelineSpec {
  source?: SourceSpec;
  decode?: DecodeSpec;
  resize?: ResizeSpec;
  crop?: CropSpec;
  flip?: FlipSpec;
  normalize?: NormalizeSpec;
  /** NCHW (default) or NHWC for batches; CHW or HWC for single images without a batch dimension. */
  layout?: Layout;
  dtype?: PipelineDType;
  batch?: { size?: number; dropLast?: boolean };
  /** Seed for random crop and flip; each item's draw depends only on the seed and the item's index. */
  seed?: number;
}

/** A checked spec with every default filled in: what executors consume. */
export interface ResolvedSpec {
  source?: SourceSpec;
  decode: { channels: 1 | 3 | 4; alpha: 'drop' | 'flatten'; background: [number, number, number]; autoOrient: boolean };
  resize?: { mode: 'shorter'; size: number; interpolation: Interpolation } | { mode: 'exact'; width: number; height: number; interpolation: Interpolation };
  crop?: { mode: 'center' | 'random'; width: number; height: number };
  flip: { horizontal: FlipSetting; vertical: FlipSetting };
  /** Per output channel: value = pixel(0–255) * scale[c] + shift[c]; absent: value = pixel. */
  normalize?: { scale: number[]; shift: number[] };
  layout: Layout;
  dtype: PipelineDType;
  batch: { size: number; dropLast: boolean };
  seed: number;
}

const SPEC_KEYS = ['source', 'decode', 'resize', 'crop', 'flip', 'normalize', 'layout', 'dtype', 'batch', 'seed'];

class SpecReader {
  constructor(readonly where: string) {}

  fail(field: string, expected: string, found: unknown, hint?: string): never {
    throw new InputError(`${this.where}: '${field}' must be ${expected}, found ${show(found)}.`, { hint });
  }

  object(v: unknown, field: string, keys: string[]): Record<string, unknown> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, 'an object', v);
    const unknown = Object.keys(v).filter((k) => !keys.includes(k));
    if (unknown.length) {
      throw new InputError(`${this.where}: unknown field${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `'${field ? `${field}.` : ''}${k}'`).join(', ')}.`,
        { hint: `Fields allowed${field ? ` in '${field}'` : ''}: ${keys.join(', ')}.` });
    }
    return v as Record<string, unknown>;
  }

  int(v: unknown, field: string, min = 1, max = 1 << 16): number {
    if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) this.fail(field, `an integer in [${min}, ${max}]`, v);
    return v as number;
  }

  oneOf<T>(v: unknown, field: string, options: readonly T[], dflt: T): T {
    if (v === undefined) return dflt;
    if (!options.includes(v as T)) this.fail(field, `one of ${options.map(show).join(', ')}`, v);
    return v as T;
  }

  numbers(v: unknown, field: string, n: number): number[] {
    const arr = typeof v === 'number' ? new Array<number>(n).fill(v) : v;
    if (!Array.isArray(arr) || !arr.every((x) => typeof x === 'number' && Number.isFinite(x))) this.fail(field, `a number or an array of ${n} numbers`, v);
    if (arr.length !== n) this.fail(field, `${n} values (one per output channel; decode.channels is ${n})`, v);
    return arr;
  }

  /** width/height from `size` or the pair; exactly one way. */
  dims(o: Record<string, unknown>, field: string): { width: number; height: number } {
    if (o.size !== undefined) {
      if (o.width !== undefined || o.height !== undefined) this.fail(`${field}.size`, 'given alone (or use width and height instead)', o);
      const s = this.int(o.size, `${field}.size`);
      return { width: s, height: s };
    }
    if (o.width === undefined || o.height === undefined) this.fail(field, 'given a size or both width and height', o);
    return { width: this.int(o.width, `${field}.width`), height: this.int(o.height, `${field}.height`) };
  }
}

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? s.slice(0, 77) + '...' : s;
}

function resolveSource(r: SpecReader, v: unknown): SourceSpec | undefined {
  if (v === undefined) return undefined;
  const o = r.object(v, 'source', ['dir', 'glob', 'files']);
  for (const k of ['dir', 'glob'] as const) if (o[k] !== undefined && typeof o[k] !== 'string') r.fail(`source.${k}`, 'a string', o[k]);
  if (o.files !== undefined && !(Array.isArray(o.files) && o.files.every((f) => typeof f === 'string'))) r.fail('source.files', 'an array of file paths', o.files);
  if (o.dir === undefined && o.glob === undefined && o.files === undefined) r.fail('source', 'given a dir, a glob or files', o);
  return o as SourceSpec;
}

function resolveDecode(r: SpecReader, v: unknown): ResolvedSpec['decode'] {
  const o = r.object(v ?? {}, 'decode', ['channels', 'alpha', 'background', 'autoOrient']);
  const channels = r.oneOf(o.channels, 'decode.channels', [1, 3, 4] as const, 3);
  const alpha = r.oneOf(o.alpha, 'decode.alpha', ['drop', 'flatten'] as const, 'drop');
  const background = o.background === undefined ? [255, 255, 255] : r.numbers(o.background, 'decode.background', 3);
  if (background.some((b) => b < 0 || b > 255)) r.fail('decode.background', 'three values in [0, 255]', o.background);
  if (o.autoOrient !== undefined && typeof o.autoOrient !== 'boolean') r.fail('decode.autoOrient', 'true or false', o.autoOrient);
  return { channels, alpha, background: background as [number, number, number], autoOrient: o.autoOrient !== false };
}

function resolveResize(r: SpecReader, v: unknown): ResolvedSpec['resize'] {
  if (v === undefined) return undefined;
  const o = r.object(v, 'resize', ['mode', 'size', 'width', 'height', 'interpolation']);
  const interpolation = r.oneOf(o.interpolation, 'resize.interpolation', ['bilinear', 'area'] as const, 'bilinear');
  const mode = r.oneOf(o.mode, 'resize.mode', ['shorter', 'exact'] as const, o.size !== undefined && o.width === undefined ? 'shorter' : 'exact');
  if (mode === 'shorter') {
    if (o.width !== undefined || o.height !== undefined) r.fail('resize', 'a size (the shorter side) for mode \'shorter\', not width/height', o, 'Use mode \'exact\' for width × height.');
    return { mode, size: r.int(o.size, 'resize.size'), interpolation };
  }
  return { mode, ...r.dims(o, 'resize'), interpolation };
}

function resolveCrop(r: SpecReader, v: unknown): ResolvedSpec['crop'] {
  if (v === undefined) return undefined;
  const o = r.object(v, 'crop', ['mode', 'size', 'width', 'height']);
  return { mode: r.oneOf(o.mode, 'crop.mode', ['center', 'random'] as const, 'center'), ...r.dims(o, 'crop') };
}

function resolveFlip(r: SpecReader, v: unknown): ResolvedSpec['flip'] {
  const o = r.object(v ?? {}, 'flip', ['horizontal', 'vertical']);
  const flip = (k: 'horizontal' | 'vertical') => r.oneOf<FlipSetting>(o[k], `flip.${k}`, [true, false, 'random'], false);
  return { horizontal: flip('horizontal'), vertical: flip('vertical') };
}

function resolveNormalize(r: SpecReader, v: unknown, channels: number): ResolvedSpec['normalize'] {
  if (v === undefined) return undefined;
  const o = r.object(v, 'normalize', ['mean', 'std', 'units']);
  const mean = r.numbers(o.mean, 'normalize.mean', channels);
  const std = r.numbers(o.std, 'normalize.std', channels);
  if (std.some((s) => !(s > 0))) r.fail('normalize.std', 'positive numbers', o.std);
  const units = r.oneOf(o.units, 'normalize.units', ['0-1', '0-255'] as const, '0-1');
  const unit = units === '0-1' ? 255 : 1;
  return { scale: std.map((s) => 1 / (unit * s)), shift: mean.map((m, c) => -m / std[c]) };
}

/** Check a spec (object or parsed JSON) and fill in defaults; errors name the field, what was expected and found. */
export function resolveSpec(spec: unknown, where = 'pipeline spec'): ResolvedSpec {
  const r = new SpecReader(where);
  const o = r.object(spec, '', SPEC_KEYS);
  const decode = resolveDecode(r, o.decode);
  const layout = r.oneOf(o.layout, 'layout', ['NCHW', 'NHWC', 'CHW', 'HWC'] as const, 'NCHW');
  const dtype = r.oneOf(o.dtype, 'dtype', ['float32', 'float16', 'uint8'] as const, 'float32');
  const b = r.object(o.batch ?? {}, 'batch', ['size', 'dropLast']);
  const batch = { size: b.size === undefined ? 1 : r.int(b.size, 'batch.size', 1, 4096), dropLast: b.dropLast === true };
  const resolved: ResolvedSpec = {
    source: resolveSource(r, o.source), decode, resize: resolveResize(r, o.resize), crop: resolveCrop(r, o.crop), flip: resolveFlip(r, o.flip),
    normalize: resolveNormalize(r, o.normalize, decode.channels), layout, dtype, batch, seed: o.seed === undefined ? 0 : r.int(o.seed, 'seed', 0, 2 ** 31 - 1),
  };
  if (dtype === 'uint8' && resolved.normalize) r.fail('dtype', '\'float32\' or \'float16\' when normalize is given', dtype, 'uint8 output holds raw 0–255 pixels; drop normalize or pick a float dtype.');
  if ((layout === 'CHW' || layout === 'HWC') && batch.size !== 1) r.fail('layout', '\'NCHW\' or \'NHWC\' with batch.size > 1 (CHW/HWC have no batch dimension)', layout);
  if (batch.size > 1 && !fixedSize(resolved)) {
    r.fail('batch.size', '1 unless every image comes out the same size', batch.size, 'Add a crop, or resize with mode \'exact\', so items of a batch share one shape.');
  }
  return resolved;
}

/** Read and check a spec from a JSON file. */
export function loadPipelineSpec(file: string): ResolvedSpec {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(`cannot read pipeline spec '${file}': ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new InputError(`pipeline spec '${file}' is not valid JSON: ${(e as Error).message}`);
  }
  return resolveSpec(json, `pipeline spec '${file}'`);
}

/** The [height, width] every item comes out at, when the spec fixes it. */
export function fixedSize(s: ResolvedSpec): [number, number] | undefined {
  if (s.crop) return [s.crop.height, s.crop.width];
  if (s.resize?.mode === 'exact') return [s.resize.height, s.resize.width];
  return undefined;
}

/** Shape of one batch of n items (-1 for sizes that vary per image). */
export function outputShape(s: ResolvedSpec, n = s.batch.size): number[] {
  const [h, w] = fixedSize(s) ?? [-1, -1];
  const c = s.decode.channels;
  switch (s.layout) {
    case 'NCHW': return [n, c, h, w];
    case 'NHWC': return [n, h, w, c];
    case 'CHW': return [c, h, w];
    case 'HWC': return [h, w, c];
  }
}

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadPipelineSpec, outputShape, resolveSpec } from '../../src/pipeline/spec.js';
import { globRegExp, listFiles, sourceFromString } from '../../src/pipeline/source.js';

const bad = (spec: unknown) => () => resolveSpec(spec);

describe('pipeline spec', () => {
  it('fills defaults and folds normalize into one scale and shift per channel', () => {
    const s = resolveSpec({ resize: { size: 256 }, crop: { size: 224 }, normalize: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }, batch: { size: 8 } });
    expect(s.decode).toEqual({ channels: 3, alpha: 'drop', background: [255, 255, 255], autoOrient: true });
    expect(s.resize).toEqual({ mode: 'shorter', size: 256, interpolation: 'bilinear' });
    expect(s.crop).toEqual({ mode: 'center', width: 224, height: 224 });
    expect(s.layout).toBe('NCHW');
    expect(s.dtype).toBe('float32');
    expect(outputShape(s)).toEqual([8, 3, 224, 224]);
    // (v / 255 - mean) / std == v * scale + shift
    expect(200 * s.normalize!.scale[1] + s.normalize!.shift[1]).toBeCloseTo((200 / 255 - 0.456) / 0.224, 6);
    const u = resolveSpec({ normalize: { mean: 127.5, std: 127.5, units: '0-255' }, layout: 'NHWC', resize: { width: 5, height: 7 } });
    expect(u.normalize).toEqual({ scale: [1 / 127.5, 1 / 127.5, 1 / 127.5], shift: [-1, -1, -1] });
    expect(outputShape(u)).toEqual([1, 7, 5, 3]);
    expect(u.resize).toEqual({ mode: 'exact', width: 5, height: 7, interpolation: 'bilinear' });
  });

  it('names the field, what was expected and what was found', () => {
    expect(bad({ resise: {} })).toThrow(/unknown field 'resise'[\s\S]*Fields allowed: source, decode, resize/);
    expect(bad({ resize: { size: 0 } })).toThrow(/'resize.size' must be an integer in \[1, 65536\], found 0/);
    expect(bad({ resize: { size: 10, interpolation: 'cubic' } })).toThrow(/'resize.interpolation' must be one of "bilinear", "area", found "cubic"/);
    expect(bad({ resize: { mode: 'shorter', width: 4, height: 4 } })).toThrow(/'resize' must be a size \(the shorter side\)/);
    expect(bad({ crop: { width: 4 } })).toThrow(/'crop' must be given a size or both width and height/);
    expect(bad({ decode: { channels: 2 } })).toThrow(/'decode.channels' must be one of 1, 3, 4, found 2/);
    expect(bad({ normalize: { mean: [0.5, 0.5], std: 0.5 } })).toThrow(/'normalize.mean' must be 3 values \(one per output channel; decode.channels is 3\), found \[0.5,0.5\]/);
    expect(bad({ normalize: { mean: 0, std: [1, 0, 1] } })).toThrow(/'normalize.std' must be positive numbers/);
    expect(bad({ dtype: 'uint8', normalize: { mean: 0, std: 1 } })).toThrow(/'dtype' must be 'float32' or 'float16' when normalize is given/);
    expect(bad({ batch: { size: 4 } })).toThrow(/'batch.size' must be 1 unless every image comes out the same size[\s\S]*Add a crop/);
    expect(bad({ layout: 'CHW', crop: { size: 4 }, batch: { size: 2 } })).toThrow(/'layout' must be 'NCHW' or 'NHWC' with batch.size > 1/);
    expect(bad({ flip: { horizontal: 'sometimes' } })).toThrow(/'flip.horizontal' must be one of true, false, "random"/);
    expect(bad({ source: {} })).toThrow(/'source' must be given a dir, a glob or files/);
    expect(bad([1])).toThrow(/must be an object, found \[1\]/);
  });

  it('reads JSON files and reports bad JSON with the file name', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-spec-'));
    fs.writeFileSync(path.join(dir, 'ok.json'), JSON.stringify({ crop: { size: 8 }, dtype: 'float16' }));
    fs.writeFileSync(path.join(dir, 'bad.json'), '{ "crop": ');
    fs.writeFileSync(path.join(dir, 'wrong.json'), JSON.stringify({ layout: 'CWH' }));
    expect(loadPipelineSpec(path.join(dir, 'ok.json')).dtype).toBe('float16');
    expect(() => loadPipelineSpec(path.join(dir, 'bad.json'))).toThrow(/bad.json' is not valid JSON/);
    expect(() => loadPipelineSpec(path.join(dir, 'wrong.json'))).toThrow(/pipeline spec '.*wrong.json': 'layout' must be one of/);
    expect(() => loadPipelineSpec(path.join(dir, 'none.json'))).toThrow(/cannot read pipeline spec/);
  });
});

describe('pipeline sources', () => {
  it('matches globs and lists folders in order', () => {
    expect(globRegExp('*.jpg').test('a.JPG')).toBe(true);
    expect(globRegExp('*.jpg').test('sub/a.jpg')).toBe(false);
    expect(globRegExp('**/*.{jpg,png}').test('sub/deep/a.png')).toBe(true);
    expect(globRegExp('**/*.{jpg,png}').test('a.jpg')).toBe(true);
    expect(globRegExp('img?.webp').test('img1.webp')).toBe(true);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-src-'));
    fs.mkdirSync(path.join(dir, 'sub'));
    for (const f of ['b.jpg', 'a.png', 'notes.txt', 'sub/c.webp']) fs.writeFileSync(path.join(dir, f), '');
    expect(listFiles({ dir }).map((f) => path.relative(dir, f))).toEqual(['a.png', 'b.jpg']);
    expect(listFiles({ dir, glob: '**/*.webp' }).map((f) => path.relative(dir, f))).toEqual(['sub/c.webp']);
    expect(() => listFiles({ dir, glob: '*.gif' })).toThrow(/no images in .* matching '\*\.gif'/);
    expect(() => listFiles({ dir: path.join(dir, 'nope') })).toThrow(/does not exist/);
    expect(sourceFromString(`${dir}/**/*.jpg`)).toEqual({ dir, glob: '**/*.jpg' });
    expect(sourceFromString(dir)).toEqual({ dir });
  });
});

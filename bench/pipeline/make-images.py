# Test images for the GPU pipeline runs (the GPU machine has PIL, not sharp): photo-like ~500x375 JPEGs for the
# benchmark, and a small set of odd cases for check-gpu (progressive, 4:4:4, greyscale, EXIF orientations, PNG with
# alpha, a corrupt file). Usage: python3 make-images.py OUT_DIR [count=512]
import os, sys
import numpy as np
from PIL import Image

out = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 512
rng = np.random.default_rng(3)

def photo(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    f, ph = rng.uniform(0.005, 0.05, 6), rng.uniform(0, 6, 3)
    chans = [128 + 90 * np.sin(f[c] * x + ph[c]) * np.cos(f[c + 3] * y) for c in range(3)]
    img = np.stack(chans, -1) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))

bench = os.path.join(out, 'bench')
os.makedirs(bench, exist_ok=True)
for i in range(count):
    w, h = (375, 500) if i % 4 == 3 else (500 + (i % 3) * 7, 375 - (i % 5) * 3)
    photo(w, h).save(os.path.join(bench, f'img{i:04d}.jpg'), quality=90)

check = os.path.join(out, 'check')
os.makedirs(check, exist_ok=True)
photo(333, 251).save(os.path.join(check, 'baseline420.jpg'), quality=90)
photo(301, 405).save(os.path.join(check, 'progressive.jpg'), quality=90, progressive=True)
photo(280, 260).save(os.path.join(check, 'full444.jpg'), quality=95, subsampling=0)
photo(290, 270).convert('L').save(os.path.join(check, 'grey.jpg'), quality=90)
for o in (3, 6, 8):
    ex = Image.Exif()
    ex[0x0112] = o
    photo(320, 256).save(os.path.join(check, f'orient{o}.jpg'), quality=92, exif=ex.tobytes())
rgba = photo(260, 300).convert('RGBA')
rgba.putalpha(200)
rgba.save(os.path.join(check, 'alpha.png'))
photo(300, 240).save(os.path.join(check, 'plain.png'))
# large ones: libvips' box shrink before its linear reduce (PNG), and JPEG shrink-on-load (1/2 here) on the CPU path
photo(1203, 905).save(os.path.join(check, 'large.png'))
photo(1800, 1352).save(os.path.join(check, 'large.jpg'), quality=90)
good = open(os.path.join(check, 'baseline420.jpg'), 'rb').read()
open(os.path.join(check, 'zcorrupt.jpg'), 'wb').write(good[:600] + b'garbage' * 50)
print(f'{count} benchmark images in {bench}, {len(os.listdir(check))} check images in {check}', flush=True)

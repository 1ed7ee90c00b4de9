# The peer of gpu-e2e.ts: torchvision's GPU JPEG decode (decode_jpeg(device='cuda'), batched nvJPEG) + resize 256
# (antialiased bilinear) + center crop 224 + normalize on the GPU, into a torch.compile'd ResNet-50 in fp16
# (channels_last, mode reduce-overhead), class ids back to the host. Also exports the same ResNet-50 (random weights)
# to ONNX for Kiln. Prints one JSON line per batch size.
# Usage: python3 torchvision-peer.py IMAGE_DIR OUT.onnx [batches=32,64,128] [reps=3]
import json, os, sys, time
import torch, torchvision
from torchvision.io import decode_jpeg, read_file
from torchvision.transforms.v2 import functional as F

img_dir, onnx_out = sys.argv[1], sys.argv[2]
batches = [int(b) for b in (sys.argv[3] if len(sys.argv) > 3 else '32,64,128').split(',')]
reps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
files = sorted(os.path.join(img_dir, f) for f in os.listdir(img_dir) if f.endswith('.jpg'))
torch.manual_seed(0)
model = torchvision.models.resnet50().eval()
torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), onnx_out, input_names=['input'], output_names=['out'],
                  dynamic_axes={'input': {0: 'n'}, 'out': {0: 'n'}}, opset_version=17, dynamo=False)
net = model.cuda().half().to(memory_format=torch.channels_last)
mean = torch.tensor([0.485, 0.456, 0.406], device='cuda').view(1, 3, 1, 1) * 255
std = torch.tensor([0.229, 0.224, 0.225], device='cuda').view(1, 3, 1, 1) * 255

def preprocess(chunk):
    imgs = decode_jpeg([read_file(f) for f in chunk], device='cuda')
    x = torch.stack([F.center_crop(F.resize(i, 256, antialias=True), 224) for i in imgs]).float()
    return ((x - mean) / std).half().contiguous(memory_format=torch.channels_last)

def run(b, fn=None):
    torch.cuda.synchronize(); t0 = time.perf_counter(); n = 0
    for i in range(0, len(files), b):
        x = preprocess(files[i:i + b])
        if fn is not None: fn(x).argmax(1).cpu()
        else: torch.cuda.synchronize()
        n += x.shape[0]
    return n / (time.perf_counter() - t0)

with torch.no_grad():
    for b in batches:
        c = torch.compile(net, mode='reduce-overhead')
        t0 = time.time(); run(b, c); run(b, c); cs = time.time() - t0
        pre = [run(b) for _ in range(reps)]
        e2e = [run(b, c) for _ in range(reps)]
        print(json.dumps({'torchvision': 'decode_jpeg(cuda) + v2 transforms + torch.compile fp16', 'batch': b, 'images': len(files),
                          'e2eImagesPerS': [round(v, 1) for v in e2e], 'bestE2e': round(max(e2e), 1),
                          'pipelineImagesPerS': [round(v, 1) for v in pre], 'compileAndWarmS': round(cs, 1)}), flush=True)

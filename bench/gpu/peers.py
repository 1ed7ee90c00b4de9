# Peer side of the GPU benchmark: exports ResNet-50 (torchvision) and BERT-base (transformers, from config, random
# weights) to ONNX, and times PyTorch eager and torch.compile(mode="reduce-overhead") in fp16 with CUDA events
# (median after warm-up, data on the GPU). Prints one JSON line per row.
import json, sys, time, torch, torchvision
from transformers import BertConfig, BertModel

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/kiln-models"
import os; os.makedirs(out, exist_ok=True)
torch.manual_seed(0)

def timed(fn, x, warm=20, reps=100):
    for _ in range(warm): fn(*x)
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(*x); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    ts.sort(); return ts[len(ts) // 2]

resnet = torchvision.models.resnet50().eval()
torch.onnx.export(resnet, (torch.randn(1, 3, 224, 224),), f"{out}/resnet50.onnx", input_names=["input"], output_names=["out"],
                  dynamic_axes={"input": {0: "n"}, "out": {0: "n"}}, opset_version=17, dynamo=False)
class Bert(torch.nn.Module):
    def __init__(self):
        super().__init__(); cfg = BertConfig(); cfg._attn_implementation = "eager"; self.m = BertModel(cfg)
    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
bert = Bert().eval()
ids = torch.randint(0, 1000, (1, 128)); mask = torch.ones(1, 128, dtype=torch.long)
torch.onnx.export(bert, (ids, mask), f"{out}/bert.onnx", input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                  dynamic_axes={"input_ids": {0: "n"}, "attention_mask": {0: "n"}, "last_hidden_state": {0: "n"}}, opset_version=17, dynamo=False)
print(json.dumps({"exported": out}), flush=True)

with torch.no_grad():
    r = resnet.cuda().half().to(memory_format=torch.channels_last)
    for bs in [1, 4, 32]:
        x = torch.randn(bs, 3, 224, 224, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
        eager = timed(r, (x,))
        c = torch.compile(r, mode="reduce-overhead"); t0 = time.time(); c(x); c(x); ct = time.time() - t0
        print(json.dumps({"model": "resnet50", "bs": bs, "eager_ms": eager, "compile_ms": timed(c, (x,)), "compile_s": ct}), flush=True)
    b = bert.cuda().half()
    for bs in [1, 8]:
        ids = torch.randint(0, 1000, (bs, 128), device="cuda"); mask = torch.ones(bs, 128, dtype=torch.long, device="cuda")
        eager = timed(b, (ids, mask))
        c = torch.compile(b, mode="reduce-overhead"); t0 = time.time(); c(ids, mask); c(ids, mask); ct = time.time() - t0
        print(json.dumps({"model": "bert-base", "bs": bs, "eager_ms": eager, "compile_ms": timed(c, (ids, mask)), "compile_s": ct}), flush=True)

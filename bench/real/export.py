# Exports real model graphs with torch on the GPU machine (random weights) and ships them back small: every float
# initializer of 256 elements or more is replaced by an empty placeholder and its dims are listed in the model's
# metadata ('kiln.random_initializers', JSON); bench/real/models.ts refills them with seeded random values here.
# The graph (ops, attributes, shapes, the small constants) is exactly what the exporter wrote.
# Usage: python3 bench/real/export.py OUT_DIR
import json, os, sys, warnings
import torch, torchvision, onnx
from onnx import numpy_helper

warnings.filterwarnings('ignore')
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)

def strip(path):
    m = onnx.load(path)
    dims = {}
    for t in m.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) and int(torch.tensor(list(t.dims)).prod()) >= 256:
            dims[t.name] = list(t.dims)
            t.ClearField('raw_data'); t.ClearField('float_data')
            del t.dims[:]
            t.dims.append(0)
    p = m.metadata_props.add(); p.key = 'kiln.random_initializers'; p.value = json.dumps(dims)
    onnx.save(m, path)
    print(f'{os.path.basename(path)}: {len(m.graph.node)} nodes, {len(dims)} initializers stripped, {os.path.getsize(path)} bytes', flush=True)

def vision(name, ctor, size=224):
    p = os.path.join(out, f'{name}.onnx')
    torch.onnx.export(ctor().eval(), (torch.randn(1, 3, size, size),), p, input_names=['input'], output_names=['logits'],
                      dynamic_axes={'input': {0: 'n'}, 'logits': {0: 'n'}}, opset_version=17, dynamo=False)
    strip(p)

for name, ctor in [('resnet50', torchvision.models.resnet50), ('mobilenet_v2', torchvision.models.mobilenet_v2),
                   ('mobilenet_v3_large', torchvision.models.mobilenet_v3_large), ('efficientnet_b0', torchvision.models.efficientnet_b0),
                   ('convnext_tiny', torchvision.models.convnext_tiny), ('resnet18', torchvision.models.resnet18),
                   ('squeezenet1_1', torchvision.models.squeezenet1_1), ('shufflenet_v2_x1_0', torchvision.models.shufflenet_v2_x1_0),
                   ('vit_b_16', torchvision.models.vit_b_16), ('regnet_y_800mf', torchvision.models.regnet_y_800mf)]:
    try:
        vision(name, ctor)
    except Exception as e:
        print(f'{name}: export failed: {e}', flush=True)

from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel
class Wrap(torch.nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
for name, model in [('bert_base', lambda: BertModel(BertConfig())), ('distilbert', lambda: DistilBertModel(DistilBertConfig()))]:
    try:
        m = model()
        m.config._attn_implementation = 'eager'
        ids = torch.randint(0, 1000, (1, 128)); mask = torch.ones(1, 128, dtype=torch.int64)
        p = os.path.join(out, f'{name}.onnx')
        torch.onnx.export(Wrap(m).eval(), (ids, mask), p, input_names=['input_ids', 'attention_mask'], output_names=['last_hidden_state'],
                          dynamic_axes={'input_ids': {0: 'n', 1: 'seq'}, 'attention_mask': {0: 'n', 1: 'seq'}, 'last_hidden_state': {0: 'n', 1: 'seq'}},
                          opset_version=17, dynamo=False)
        strip(p)
    except Exception as e:
        print(f'{name}: export failed: {e}', flush=True)

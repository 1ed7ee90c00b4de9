# Exports torchvision ResNet-50 (random weights) to ONNX for `kiln bench --device cuda` runs.
import sys, torch, torchvision
torch.onnx.export(torchvision.models.resnet50().eval(), (torch.randn(1, 3, 224, 224),), sys.argv[1], input_names=["input"],
                  output_names=["out"], dynamic_axes={"input": {0: "n"}, "out": {0: "n"}}, opset_version=17, dynamo=False)

"""ViT-B-32's image tower through ONNX Runtime, fp32 and dynamic int8 (issue #27, groundwork):
exported with torch.onnx (the TorchScript exporter), quantised with onnxruntime.quantization,
against torch fp32 in the same run. Needs onnxruntime and onnx, e.g. installed with
`pip install --target /tmp/ortpkgs onnxruntime onnx` (appended to sys.path, so the venv's
numpy wins). Not part of mdclust; figures in docs/benchmarks.md ("A cheaper CPU forward").

    .venv/bin/python benchmarks/explore/precision_onnxruntime.py [/tmp/ortpkgs]
"""

import sys
import time

import numpy as np
import open_clip
import torch


def main() -> None:
    sys.path.append(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ortpkgs")
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    vis = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)[0].eval().visual
    x = torch.randn(64, 3, 224, 224)
    with torch.inference_mode():
        vis(x[:8])
        t = time.perf_counter()
        ref = vis(x)
        t32 = time.perf_counter() - t
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    print(f"torch fp32 {t32:.2f} s", flush=True)
    torch.onnx.export(vis, (x[:2],), "/tmp/vis.onnx", input_names=["x"], output_names=["f"],
                      dynamic_axes={"x": {0: "n"}, "f": {0: "n"}}, opset_version=17,
                      dynamo=False)
    quantize_dynamic("/tmp/vis.onnx", "/tmp/vis8.onnx", weight_type=QuantType.QInt8)
    for name, path in (("ort fp32", "/tmp/vis.onnx"), ("ort int8", "/tmp/vis8.onnx")):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        session.run(None, {"x": xn[:8]})
        t = time.perf_counter()
        f = session.run(None, {"x": xn})[0]
        dt = time.perf_counter() - t
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        print(f"{name} {dt:.2f} s ({t32 / dt:.2f}x torch fp32), min cosine "
              f"{(f * ref).sum(1).min():.4f}", flush=True)


if __name__ == "__main__":
    main()

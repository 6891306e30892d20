"""The models tests/test_onnx_export.py runs with onnxruntime, and the script that exports them.

Exporting (torch.export with symbolic sizes) is slow and mostly single-threaded: conftest.py starts
this script in a background process as soon as the ONNX tests are collected, so the exports use
the core the rest of the suite leaves idle; the tests wait for the files they need.

    python tests/onnx_cases.py OUT_DIR   ->  OUT_DIR/<case>.safetensors, <case>.onnx, <case>.json,
                                             and cli.onnx, cli.json (``fcnfast export default``)
"""
import json
import os
import sys
import time
import traceback

NARROW = dict(widths=(8, 8, 16, 16, 16), fc_width=32)
CLASSES = 5

# case -> (arch, model kwargs, export_onnx kwargs)
CASES = {
    "fcn32s": ("fcn32s", NARROW, {}),
    "fcn16s": ("fcn16s", NARROW, {}),
    "fcn8s": ("fcn8s", NARROW, {}),
    "fcn8s_atonce": ("fcn8s_atonce", NARROW, {}),
    "fcn_alexnet": ("fcn_alexnet", {}, {}),
    "fcn_resnet50": ("fcn_resnet50", {}, {}),
    "siftflow_fcn8s": ("siftflow_fcn8s", dict(NARROW, num_classes=33), {}),
    "nyud_fcn32s_color_hha": ("nyud_fcn32s_color_hha", NARROW, {}),
    "fcn8s_float_scores": ("fcn8s", NARROW, dict(input="float", output="scores")),
    "fcn8s_float16": ("fcn8s", NARROW, dict(dtype="float16")),
    "fcn8s_static": ("fcn8s", NARROW, dict(dynamic=False, size=(97, 131), batch_size=2)),
}


def build(case: str):
    """The case's reference model: default trunk initialisation, random score layers (FCN's
    start at zero, which would make every label 0), bilinear deconvolutions as released."""
    import torch
    from torch import nn

    from fcnfast.models import build_model

    arch, kwargs, _ = CASES[case]
    kwargs = dict(kwargs)
    classes = kwargs.pop("num_classes", CLASSES)
    torch.manual_seed(0)
    model = build_model(arch, classes, **kwargs).eval()
    g = torch.Generator().manual_seed(1)
    counts = set(model.head_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.out_channels in counts:
                m.weight.normal_(0, 0.05, generator=g)
                if m.bias is not None:
                    m.bias.normal_(0, 0.05, generator=g)
    return model


def export(case: str, out_dir: str) -> dict:
    import torch

    import fcnfast

    _, _, options = CASES[case]
    options = dict(options)
    if "dtype" in options:
        options["dtype"] = getattr(torch, options["dtype"])
    model = build(case)
    fcnfast.save(model, os.path.join(out_dir, f"{case}.safetensors"))
    # The exporter works on a copy: a model in training mode stays so, its weights untouched.
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = time.perf_counter()
    result = fcnfast.export_onnx(model, os.path.join(out_dir, f"{case}.onnx"), verify=False, **options)
    seconds = time.perf_counter() - t
    untouched = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return {"inputs": list(result.inputs), "outputs": list(result.outputs), "seconds": seconds,
            "model_left_alone": untouched and all(m.training for m in model.modules())}


def main(out_dir: str) -> int:
    import torch

    torch.set_num_threads(1)  # the suite's tests have the other core
    os.makedirs(out_dir, exist_ok=True)
    for case in CASES:
        try:
            info = export(case, out_dir)
        except Exception:  # noqa: BLE001 - reported to the test that needs this case
            info = {"error": traceback.format_exc()}
        tmp = os.path.join(out_dir, f"{case}.json.tmp")
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, os.path.join(out_dir, f"{case}.json"))
    # The command as a user runs it: the built-in model, checked with onnxruntime after export.
    import subprocess

    run = subprocess.run([sys.executable, "-m", "fcnfast", "export", "default",
                          os.path.join(out_dir, "cli.onnx")], capture_output=True, text=True)
    with open(os.path.join(out_dir, "cli.json.tmp"), "w") as f:
        json.dump({"returncode": run.returncode, "stdout": run.stdout, "stderr": run.stderr}, f)
    os.replace(os.path.join(out_dir, "cli.json.tmp"), os.path.join(out_dir, "cli.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

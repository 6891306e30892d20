"""Data-parallel training under torchrun: 2 gloo processes on the CPU stay in lockstep.

torchrun and its two workers are mostly interpreter start-up: conftest.py starts the run
(``python tests/test_ddp.py OUT_DIR``) in the background as soon as the test is collected, and the
test checks what it left.
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import torch

WORKER = textwrap.dedent("""
    import os, sys
    import torch
    torch.set_num_threads(1)
    from fcnfast.data.synthetic import SyntheticScenes
    from fcnfast.training import TrainConfig, fit, initial_model

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    torch.manual_seed(rank)  # different starts: DDP must broadcast rank 0's weights
    model = initial_model("fcn16s", 6, widths=(2, 4, 4, 8, 8), fc_width=8)
    config = TrainConfig(iterations=3, lr=1e-2, momentum=0.9, flip=True, progress=False,
                         log_every=1, val_every=3)
    data = SyntheticScenes(4, size=(24, 24), seed=0)
    result = fit(model, data, SyntheticScenes(1, size=(24, 24), seed=9), config,
                 out_dir=os.path.join(out, f"run{rank}"))
    torch.save(model.state_dict(), os.path.join(out, f"weights{rank}.pt"))
    assert (result.scores is None) == (rank != 0), "only rank 0 validates"
""")


def run_ranks(out: str) -> None:
    """torchrun with 2 gloo workers into ``out``; its exit status and output to out/result.json."""
    script = os.path.join(out, "worker.py")
    with open(script, "w") as f:
        f.write(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           script, out]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"returncode": proc.returncode, "output": proc.stdout[-3000:] + proc.stderr[-3000:]}, f)


def test_two_gloo_ranks_hold_identical_weights(ddp_case):
    out = pathlib.Path(ddp_case)
    with open(out / "result.json") as f:
        result = json.load(f)
    assert result["returncode"] == 0, result["output"]
    w0 = torch.load(out / "weights0.pt", weights_only=True)
    w1 = torch.load(out / "weights1.pt", weights_only=True)
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=key)
    # Trained: score_fr starts at zero and must have moved.
    assert w0["score_fr.weight"].abs().sum() > 0
    # Rank 0 alone wrote the checkpoint, the logs and the weights.
    run0 = out / "run0"
    for name in ("checkpoint.pt", "model.safetensors", "train_log.csv", "val_log.csv", "log.json"):
        assert (run0 / name).exists(), name
    assert not (out / "run1").exists()


if __name__ == "__main__":
    run_ranks(sys.argv[1])

"""Data-parallel training under torchrun: 2 gloo processes on the CPU stay in lockstep."""
import os
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


def test_two_gloo_ranks_hold_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "weights0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights1.pt", weights_only=True)
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=key)
    # Trained: score_fr starts at zero and must have moved.
    assert w0["score_fr.weight"].abs().sum() > 0
    # Rank 0 alone wrote the checkpoint, the logs and the weights.
    run0 = tmp_path / "run0"
    for name in ("checkpoint.pt", "model.safetensors", "train_log.csv", "val_log.csv", "log.json"):
        assert (run0 / name).exists(), name
    assert not (tmp_path / "run1").exists()

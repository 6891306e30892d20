"""What importing fcnfast sets for the process (fcnfast/process.py): oneDNN's kernel cache large
enough for a folder of photos whose sizes recur, the user's own setting left alone."""
import os
import subprocess
import sys

import pytest

from fcnfast.process import PRIMITIVE_CACHE_CAPACITY

# 1200 convolutions of distinct shapes (more than oneDNN's default 1024 kernels), then the first
# shape again: the line oneDNN logs for it says whether its kernel was still cached.
SCRIPT = """
import torch
import fcnfast
from fcnfast.engine.layers import PackedConv2d
conv = PackedConv2d(torch.nn.Conv2d(4, 4, 1), relu=False)
with torch.no_grad():
    for w in list(range(1, 1201)) + [1]:
        conv(torch.zeros(1, 4, 1, w).contiguous(memory_format=torch.channels_last))
import os
print("capacity", os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"))
"""


def run(**env):
    clean = {k: v for k, v in os.environ.items() if "PRIMITIVE_CACHE_CAPACITY" not in k}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                         env={**clean, "ONEDNN_VERBOSE": "profile_create", **env})
    assert out.returncode == 0, out.stderr[-2000:]
    creates = [line for line in out.stdout.splitlines() if ",primitive,create:" in line]
    capacity = [line for line in out.stdout.splitlines() if line.startswith("capacity")]
    if len(creates) < 1201:
        pytest.skip("oneDNN on this build does not log kernel creation")
    return creates[-1], capacity[0].split()[1]


def test_kernels_of_sizes_met_before_stay_cached():
    last, capacity = run()
    assert capacity == str(PRIMITIVE_CACHE_CAPACITY)
    assert "create:cache_hit" in last


@pytest.mark.parametrize("name", ["ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY"])
def test_the_users_own_capacity_wins(name):
    last, capacity = run(**{name: "1024"})
    assert capacity == ("1024" if name.startswith("ONEDNN") else "None")
    assert "create:cache_miss" in last  # evicted: oneDNN kept the user's 1024

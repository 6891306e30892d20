"""A background scenario for tests/test_distributed.py: `fcnfast segment-dataset` on its own local
Ray, one of its workers killed (SIGKILL) mid-job, then the same command rerun.

The scenario is subprocesses and waiting; conftest.py starts it as soon as the test is collected,
so it runs on the core the rest of the suite leaves idle, and the test checks what it left.

    python tests/ray_kill_case.py OUT_DIR  ->  OUT_DIR/src (images), OUT_DIR/out (outputs),
                                               OUT_DIR/result.json (what each run returned)
"""
import json
import os
import signal
import subprocess
import sys
import time

COUNT, SIZE = 24, (150, 200)


def make_source(src: str) -> None:
    from PIL import Image

    from fcnfast.data.synthetic import synthetic_scene

    os.makedirs(src)
    for i in range(COUNT):
        Image.fromarray(synthetic_scene(i, *SIZE)[0]).save(os.path.join(src, f"frame{i:03d}.png"))
    with open(os.path.join(src, "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)


def descendants(root: int) -> dict:
    """{pid: command line} of every process below ``root``."""
    parents, cmds = {}, {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmds[int(pid)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    below, frontier = {}, {root}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier and p not in below}
        below.update({p: cmds.get(p, "") for p in frontier})
    return below


def main(out_dir: str) -> int:
    src, dest = os.path.join(out_dir, "src"), os.path.join(out_dir, "out")
    make_source(src)
    cmd = [sys.executable, "-m", "fcnfast", "segment-dataset", src, dest, "--batch", "1", "-q"]
    result = {"killed": None, "outputs_when_killed": None}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        done = [f for f in os.listdir(dest) if f.endswith(".png")] if os.path.isdir(dest) else []
        workers = [p for p, c in descendants(first.pid).items() if "SegmentWorker" in c]
        if len(done) >= 3 and workers:
            os.kill(workers[0], signal.SIGKILL)
            result.update(killed=workers[0], outputs_when_killed=len(done))
            break
        time.sleep(0.05)
    out, err = first.communicate(timeout=600)
    result["first"] = {"returncode": first.returncode, "stdout": out, "stderr": err}
    # what a kill left behind, before the rerun cleans up: every finished name a whole PNG
    from PIL import Image

    result["after_kill"] = sorted(os.listdir(dest)) if os.path.isdir(dest) else []
    result["unreadable_after_kill"] = []
    for f in result["after_kill"]:
        if f.endswith(".png"):
            try:
                with Image.open(os.path.join(dest, f)) as im:
                    im.load()
            except Exception as e:  # noqa: BLE001 - recorded for the test
                result["unreadable_after_kill"].append(f"{f}: {e}")
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    result["second"] = {"returncode": second.returncode, "stdout": second.stdout,
                        "stderr": second.stderr}
    tmp = os.path.join(out_dir, "result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(out_dir, "result.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

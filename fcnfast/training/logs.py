"""Training logs: train_log.csv (loss per logged iteration), val_log.csv (the four scores per
validation) and log.json (config, every validation, the final result), written by rank 0 only."""
from __future__ import annotations

import csv
import json
import os
from typing import Optional

TRAIN_FIELDS = ("iteration", "loss", "lr", "seconds")
VAL_FIELDS = ("iteration", "pixel_acc", "mean_acc", "mean_iu", "fwavacc", "seconds")


class TrainLog:
    def __init__(self, out_dir: Optional[str], stage: str, config: dict, enabled: bool = True,
                 start_iteration: int = 0):
        self.out_dir = out_dir if enabled else None
        self.record = {"stage": stage, "config": config, "validations": [], "final": None}
        if self.out_dir is None:
            return
        os.makedirs(self.out_dir, exist_ok=True)
        previous = self._path("log.json")
        if start_iteration and os.path.exists(previous):  # resuming: keep the earlier history
            with open(previous) as f:
                old = json.load(f)
            self.record["validations"] = [v for v in old.get("validations", [])
                                          if v["iteration"] <= start_iteration]
        for name, fields in (("train_log.csv", TRAIN_FIELDS), ("val_log.csv", VAL_FIELDS)):
            self._drop_rows_after(name, fields, start_iteration)

    def _path(self, name):
        return os.path.join(self.out_dir, name)

    def _drop_rows_after(self, name, fields, start_iteration):
        """A fresh file with its header, or (resuming) the rows up to ``start_iteration``."""
        path, rows = self._path(name), []
        if start_iteration and os.path.exists(path):
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= start_iteration]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    def _append(self, name, fields, row):
        if self.out_dir is None:
            return
        with open(self._path(name), "a", newline="") as f:
            csv.DictWriter(f, fieldnames=fields, extrasaction="ignore").writerow(row)

    def train(self, iteration: int, loss: float, lr: float, seconds: float):
        self._append("train_log.csv", TRAIN_FIELDS,
                     {"iteration": iteration, "loss": f"{loss:.6g}", "lr": f"{lr:.6g}",
                      "seconds": f"{seconds:.3f}"})

    def val(self, iteration: int, scores: dict, seconds: float):
        row = {"iteration": iteration, "seconds": round(seconds, 3),
               **{k: scores[k] for k in VAL_FIELDS if k in scores}}
        self.record["validations"].append({**row, "per_class_iu": scores.get("per_class_iu")})
        self._append("val_log.csv", VAL_FIELDS, row)
        self._write_json()

    def final(self, summary: dict):
        self.record["final"] = summary
        self._write_json()

    def _write_json(self):
        if self.out_dir is None:
            return
        tmp = self._path("log.json.partial")
        with open(tmp, "w") as f:
            json.dump(self.record, f, indent=1, default=_plain)
        os.replace(tmp, self._path("log.json"))


def _plain(value):
    """JSON for numpy scalars/arrays (per-class IU) and anything else with a list form."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)

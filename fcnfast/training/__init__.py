"""The paper's training side on the reference models: staged 32s → 16s → 8s, at-once, DDP."""
from __future__ import annotations

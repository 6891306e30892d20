"""``Segmenter.check``: run the engine and the float32 reference on one image and say how far
apart they are — the user's evidence that the fast path gives the reference's answer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

import torch


# Firm pixels: the reference's top-2 margin exceeds this fraction of the image's score range. The
# low-precision figures allow for rounding accumulated over a deep trunk (bfloat16 keeps 8 bits).
FIRM_MARGIN = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}


@dataclass
class CheckReport:
    size: tuple  # (H, W)
    dtype: torch.dtype  # the engine's compute dtype
    pixels: int
    firm_pixels: int
    firm_agreement: float  # fraction of firm pixels whose labels equal the reference's
    agreement: float  # over all pixels
    max_score_error: float  # |engine's winning score − reference score of that class|, max
    score_range: float  # reference max − min over the image, for scale
    op_backends: Dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.firm_agreement >= 0.999

    def __str__(self) -> str:
        dt = str(self.dtype).replace("torch.", "")
        ops = ", ".join(f"{op}={b}" for op, b in self.op_backends.items())
        return (f"engine ({dt}) vs float32 reference on {self.size[0]}×{self.size[1]}: labels agree on "
                f"{100 * self.firm_agreement:.3f}% of {self.firm_pixels} firm pixels "
                f"({100 * self.agreement:.3f}% of all {self.pixels}); max score error "
                f"{self.max_score_error:.3g} (score range {self.score_range:.3g}); ops: {ops}; "
                f"{'OK' if self.ok else 'MISMATCH'}")


def firm_pixels(ref: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, H, W) mask of the pixels whose label a ``dtype`` computation must reproduce: the
    reference scores' (N, C, H, W) top-2 margin exceeds ``FIRM_MARGIN[dtype]`` of their range."""
    ref = ref.float()
    top2 = ref.topk(min(2, ref.shape[1]), dim=1).values
    margin = (top2[:, 0] - top2[:, -1]) if ref.shape[1] > 1 else torch.full_like(top2[:, 0], float("inf"))
    return margin > FIRM_MARGIN[dtype] * _score_range(ref)


def _score_range(ref: torch.Tensor) -> float:
    return float(ref.max() - ref.min()) or 1.0


def _head_agreement(labels, scores, ref, dtype):
    """(pixels, firm pixels, firm agreeing, agreeing, max score error, score range) of one head."""
    ref = ref.float()
    score_range = _score_range(ref)
    firm = firm_pixels(ref, dtype)
    same = labels.long() == ref.argmax(1)
    picked = ref.gather(1, labels.long()[:, None])[:, 0]
    return (same.numel(), int(firm.sum()), int(same[firm].sum()), int(same.sum()),
            float((scores.float() - picked).abs().max()), score_range)


@torch.inference_mode()
def compare(engine, pixels: torch.Tensor) -> CheckReport:
    """Engine vs reference on one batch of pixels (on the engine's device); a model's several
    heads count together."""
    labels, scores = engine.run(pixels, return_scores=True)
    ref = engine.reference_scores(pixels)
    if isinstance(ref, dict):
        heads = [_head_agreement(labels[:, k], scores[:, k], ref[h], engine.dtype)
                 for k, h in enumerate(engine.reference.heads)]
    else:
        heads = [_head_agreement(labels, scores, ref, engine.dtype)]
    n, n_firm, n_firm_same, n_same = (sum(v[i] for v in heads) for i in range(4))
    return CheckReport(
        size=tuple(labels.shape[-2:]), dtype=engine.dtype, pixels=n, firm_pixels=n_firm,
        firm_agreement=n_firm_same / n_firm if n_firm else 1.0, agreement=n_same / n,
        max_score_error=max(v[4] for v in heads), score_range=max(v[5] for v in heads),
        op_backends=dict(engine.op_backends))

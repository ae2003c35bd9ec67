"""Stage-2 (slide-level) distillation terms, each a pure function on one bag.

The teacher sees the 20x patches, the student their 5x parents; `children` [N5, 16] links each
parent to its 16 child rows in the teacher's bag (-1 where the child is background), which is
how the teacher's attention is moved onto the student's patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lrmil.mil.attention import ABMIL, ABMILOutput
from lrmil.mil.config import DistillConfig

EPS = 1e-8


def parent_attention(child_attention: torch.Tensor, children: torch.Tensor) -> torch.Tensor:
    """Sum each parent's non-background children's attention; renormalised to sum to 1.

    Teacher patches with no parent in the student's bag drop out, hence the renormalisation.
    """
    valid = children >= 0
    gathered = child_attention[children.clamp(min=0)] * valid
    summed = gathered.sum(dim=1)
    return summed / summed.sum().clamp(min=EPS)


def logit_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's KL(teacher || student) on temperature-softened bag probabilities, times T^2."""
    t = F.log_softmax(teacher_logits / temperature, dim=-1)
    s = F.log_softmax(student_logits / temperature, dim=-1)
    return (t.exp() * (t - s)).sum() * temperature**2


def attention_kd(student_attention: torch.Tensor, teacher_parent_attention: torch.Tensor) -> torch.Tensor:
    """KL(student attention || teacher attention aggregated to parents), both over the N5 patches."""
    s = student_attention.clamp(min=EPS)
    t = teacher_parent_attention.clamp(min=EPS)
    return (s * (s.log() - t.log())).sum()


def topk_instance(model: ABMIL, out: ABMILOutput, label: torch.Tensor, ranking: torch.Tensor, k: int) -> torch.Tensor:
    """CE of the k highest-ranked instances, classified by the bag head, to the slide label."""
    top = ranking.topk(min(k, ranking.numel())).indices
    logits = model.forward_head(out.instances[top])
    return F.cross_entropy(logits, label.expand(len(top)))


def stage2_loss(model: ABMIL, out: ABMILOutput, label: torch.Tensor, teacher_logits: torch.Tensor,
                teacher_parent_attention: torch.Tensor, cfg: DistillConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the switched-on terms, plus each term's value for logging."""
    terms: dict[str, torch.Tensor] = {}
    if cfg.w_ce:
        terms["ce"] = cfg.w_ce * F.cross_entropy(out.logits[None], label[None])
    if cfg.w_logits:
        terms["logits"] = cfg.w_logits * logit_kd(out.logits, teacher_logits, cfg.temperature)
    if cfg.w_attention:
        terms["attention"] = cfg.w_attention * attention_kd(out.attention, teacher_parent_attention)
    if cfg.w_topk:
        terms["topk"] = cfg.w_topk * topk_instance(model, out, label, teacher_parent_attention, cfg.topk)
    if not terms:
        raise ValueError("every stage-2 loss term is switched off (all weights are 0)")
    total = torch.stack(list(terms.values())).sum()
    return total, {name: float(value.detach()) for name, value in terms.items()}

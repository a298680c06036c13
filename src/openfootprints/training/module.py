"""The Lightning module: a U-Net trained with BCE plus soft Dice on building masks."""

from __future__ import annotations

import math
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                  dice_weight: float = 1.0) -> torch.Tensor:
    """Per-pixel weighted BCE averaged over valid pixels, plus ``dice_weight`` × (1 − soft Dice) over the batch.

    All tensors are (N, 1, H, W); ``weight`` is 0 in nodata and ≥ 1 elsewhere (1, or more in the gaps
    between buildings); ``target`` may be soft (mixup).
    """
    valid = (weight > 0).to(logits.dtype)
    n_valid = valid.sum().clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / n_valid
    prob = torch.sigmoid(logits) * valid
    inter = (prob * target).sum()
    dice = (2 * inter + 1.0) / (prob.sum() + (target * valid).sum() + 1.0)
    return bce + dice_weight * (1 - dice)


def mixup(image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, lam: float,
          perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix each sample with sample ``perm[i]``: images and soft per-pixel targets by the same ``lam``.

    The weight is mixed too, and is 0 wherever either sample has no data.
    """
    both_valid = (weight > 0) & (weight[perm] > 0)
    mixed_weight = (lam * weight + (1 - lam) * weight[perm]) * both_valid
    return lam * image + (1 - lam) * image[perm], lam * target + (1 - lam) * target[perm], mixed_weight


def rdrop_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """R-Drop term: symmetric Bernoulli KL between two passes' per-pixel probabilities, mean over valid pixels.

    ½ (KL(p‖q) + KL(q‖p)) for Bernoulli p = σ(a), q = σ(b) simplifies to ½ (p − q)(a − b): exact and stable
    for any logits. Zero when the passes agree, positive otherwise. Tensors are (N, 1, H, W).
    """
    valid = (weight > 0).to(logits_a.dtype)
    per_pixel = 0.5 * (torch.sigmoid(logits_a) - torch.sigmoid(logits_b)) * (logits_a - logits_b)
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)


def pixel_iou_counts(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                     threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union pixel counts of thresholded predictions against the target."""
    pred = (torch.sigmoid(logits) >= threshold) & (valid > 0)
    truth = (target > 0.5) & (valid > 0)
    return (pred & truth).sum(), (pred | truth).sum()


def schedule_factor(progress: float, warmup: float = 0.05) -> float:
    """Learning-rate factor for training progress in [0, 1]: linear warm-up, then cosine decay to 1 %."""
    if progress < warmup:
        return 0.01 + 0.99 * progress / warmup
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


class SegmentationModule(L.LightningModule):
    """Trains ``net`` with AdamW; logs loss and pixel IoU per epoch. With ``mixup_prob`` > 0, that share of
    training batches is mixed up (λ ~ Beta(``mixup_alpha``, ``mixup_alpha``)). With ``rdrop_alpha`` > 0,
    each batch goes through the network twice (different dropout masks) and ``rdrop_alpha`` × :func:`rdrop_kl`
    is added to the mean of the two losses (R-Drop; needs dropout or drop path in the network).

    The learning rate follows :func:`schedule_factor` of whichever is further along: steps out of
    ``total_steps`` or wall-clock seconds out of ``budget_s``, so a run cut by its time budget still
    ends with an annealed model. With ``freeze_encoder``, only the decoder learns: the encoder's weights and its
    batch-norm statistics stay as they were (fine-tuning on few labels). With ``anchor_decay`` > 0 the weights
    decay towards where they started (a parent's weights when fine-tuning) instead of towards zero: after each
    step, ``w -= lr · anchor_decay · (w - w_start)`` (L2-SP, Li et al. 2018, decoupled from Adam's update as
    AdamW's weight decay is), which replaces ``weight_decay``. With ``ema_decay`` > 0, an exponential moving average
    of the weights and batch-norm statistics is kept after every step (``averaged``; torch's ``AveragedModel``):
    validation scores it, and ``net`` holds it when training ends (weight averaging along one run, as a soup
    averages runs; Polyak averaging).
    """

    def __init__(self, net: torch.nn.Module, lr: float = 1e-3, weight_decay: float = 1e-4,
                 dice_weight: float = 1.0, total_steps: int = 1000, budget_s: float | None = None,
                 mixup_prob: float = 0.0, mixup_alpha: float = 0.4, rdrop_alpha: float = 0.0,
                 freeze_encoder: bool = False, anchor_decay: float = 0.0, ema_decay: float = 0.0):
        super().__init__()
        self.mixup_prob, self.mixup_alpha, self.rdrop_alpha = mixup_prob, mixup_alpha, rdrop_alpha
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            net.encoder.requires_grad_(False)
        self.net = net
        self.anchor_decay = anchor_decay
        self._anchor = ([(p, p.detach().clone()) for p in net.parameters() if p.requires_grad]
                        if anchor_decay > 0 else [])
        self.averaged = (AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
                         if ema_decay > 0 else None)
        if self.averaged is not None:
            self.averaged.requires_grad_(False)
        self.lr, self.weight_decay, self.dice_weight = lr, weight_decay, dice_weight
        self.total_steps, self.budget_s = total_steps, budget_s
        self._inter = self._union = 0
        self._start = None

    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        by_steps = self.global_step / max(self.total_steps, 1)
        by_time = (time.monotonic() - self._start) / self.budget_s if self.budget_s and self._start else 0.0
        return min(1.0, max(by_steps, by_time))

    def on_train_start(self):
        self._start = time.monotonic()
        self._anchor = [(weight, start.to(weight.device)) for weight, start in self._anchor]

    def on_train_batch_start(self, batch, batch_idx):
        if self.freeze_encoder:
            self.net.encoder.eval()  # at every batch, whatever mode validation left the module in
        factor = schedule_factor(self.progress())
        for group in self.optimizers().param_groups:
            group["lr"] = self.lr * factor

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self._anchor:
            shrink = self.optimizers().param_groups[0]["lr"] * self.anchor_decay
            with torch.no_grad():
                for weight, start in self._anchor:
                    weight.sub_(shrink * (weight - start))
        if self.averaged is not None:
            self.averaged.update_parameters(self.net)

    def final_network(self) -> torch.nn.Module:
        """The network training ends with: the moving average with ``ema_decay``, else the trained one."""
        return self.net if self.averaged is None else self.averaged.module

    def on_train_end(self):
        if self.averaged is not None:  # float weights and statistics; batch counts (integers) stay the net's own
            averaged = self.averaged.module.state_dict()
            self.net.load_state_dict({k: averaged[k] if v.is_floating_point() else v
                                      for k, v in self.net.state_dict().items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        image, mask, weight = batch
        if self.mixup_prob > 0 and float(torch.rand(())) < self.mixup_prob:
            lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
            image, mask, weight = mixup(image, mask, weight, lam, torch.randperm(image.shape[0]))
        logits = self(image)
        loss = bce_dice_loss(logits, mask, weight, self.dice_weight)
        if self.rdrop_alpha > 0:
            second = self(image)
            kl = rdrop_kl(logits, second, weight)
            loss = 0.5 * (loss + bce_dice_loss(second, mask, weight, self.dice_weight)) + self.rdrop_alpha * kl
            self.log("train_rdrop_kl", kl, on_step=False, on_epoch=True, batch_size=image.shape[0])
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=image.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        image, mask, valid = batch
        logits = self.final_network()(image)
        self.log("val_loss", bce_dice_loss(logits, mask, valid, self.dice_weight), prog_bar=True,
                 on_epoch=True, batch_size=image.shape[0])
        inter, union = pixel_iou_counts(logits, mask, valid)
        self._inter += int(inter)
        self._union += int(union)

    def on_validation_epoch_end(self):
        self.log("val_pixel_iou", self._inter / max(self._union, 1), prog_bar=True)
        self._inter = self._union = 0

    def configure_optimizers(self):
        learning = [p for p in self.net.parameters() if p.requires_grad]
        decay = 0.0 if self.anchor_decay > 0 else self.weight_decay  # the anchor is the decay
        return torch.optim.AdamW(learning, lr=self.lr, weight_decay=decay)


class Deadline(L.Callback):
    """Stops training so that it ends by ``deadline`` (a ``clock()`` time, seconds): after a step, training stops
    when another step and a validation pass (each as long as the last one seen) would end past it."""

    def __init__(self, deadline: float, clock=time.monotonic):
        self.deadline, self.clock = deadline, clock
        self.step_s = self.val_s = 0.0
        self._t = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = self.clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = self.clock()
        self.step_s = now - self._t
        if now + self.step_s + self.val_s >= self.deadline:
            trainer.should_stop = True

    def on_validation_start(self, trainer, pl_module):
        self._t = self.clock()

    def on_validation_end(self, trainer, pl_module):
        self.val_s = self.clock() - self._t

"""Language modeling with truncated BPTT: the recurrent state is carried from batch to batch.

Batches ``(x, y)`` are contiguous streams (row ``b`` of batch ``i`` continues row ``b`` of batch ``i-1``),
so the state after batch ``i`` (detached) starts batch ``i+1``. Checkpoints keep it (``epoch_carry``): a run
resumed in the middle of an epoch starts its next batch from the same state as an uninterrupted one.
Carrying state across ``training_step`` calls needs manual optimization in Lightning 2, so this task steps
the optimizer itself and clips the gradient norm itself (``gradient_clip_val``): do NOT set
``Trainer(gradient_clip_val=...)`` with it (Lightning refuses that under manual optimization).
It steps its scheduler itself too, as Lightning would: every ``frequency`` batches or epochs of its
``interval``; a ``ReduceLROnPlateau`` once per ``frequency`` epochs, on its ``monitor`` (default the task's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics.text import Perplexity

from seqforge.layers.recurrent import detach_state
from seqforge.tasks.base import SequenceTask, datamodule_attr, unpack_batch

if TYPE_CHECKING:
    from seqforge.models.lm import LanguageModel


class LanguageModelTask(SequenceTask):
    """Truncated-BPTT language modeling with a :class:`seqforge.models.LanguageModel`.

    Args:
        gradient_clip_val: max gradient norm, applied in the module (``None``: no clipping).
        carry_state: carry the state across batches (reset each epoch and when the batch size changes).
        num_samples, sample_len: sequences generated from the first validation batch each epoch and logged
            as text to the loggers (``0`` turns this off).

    Logs ``<stage>/loss`` (nats per token), ``<stage>/ppl`` (perplexity), ``val/bpc`` and ``test/bpc``
    (bits per token: per character for a character model) and ``val/ppl_best``.
    """

    monitor = "val/ppl"
    monitor_mode = "min"
    net: LanguageModel

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | Mapping[str, Any] | None = None,
        gradient_clip_val: float | None = None,
        carry_state: bool = True,
        num_samples: int = 2,
        sample_len: int = 64,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        if gradient_clip_val is not None and gradient_clip_val <= 0:
            raise ValueError(f"LanguageModelTask: gradient_clip_val must be > 0 or None, got {gradient_clip_val}")
        self.automatic_optimization = False
        self.setup_metrics(lambda: {"ppl": Perplexity()})
        self.states: dict[str, Any] = {}
        self._plateau_monitor: tuple[str, bool] | None = None  # a ReduceLROnPlateau's (monitor, strict)

    def _state(self, key: str, batch_size: int) -> Any:
        state = self.states.get(key) if self.hparams.carry_state else None
        h = state[0] if isinstance(state, tuple) else state
        return state if h is not None and h.shape[1] == batch_size else None

    def model_step(self, batch: Any) -> dict[str, Any]:
        x, y = unpack_batch(type(self).__name__, batch, ("x", "y"))
        if x.shape != y.shape:
            raise ValueError(f"LanguageModelTask: x {tuple(x.shape)} and y {tuple(y.shape)} must have the same shape")
        key = "train" if self.training else "eval"
        logits, state = self.net(x, self._state(key, x.shape[0]))  # (B, T, V)
        self.states[key] = detach_state(state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        return {"loss": loss, "preds": logits.detach().float(), "target": y, "batch_size": x.numel()}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        # the one optimizer, wrapped in a LightningOptimizer (an instance of the wrapped optimizer's class too)
        optimizer = cast(torch.optim.Optimizer, self.optimizers())
        loss = self._step(batch, "train")["loss"]
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.hparams.gradient_clip_val is not None:
            clip = self.hparams.gradient_clip_val
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        optimizer.step()
        self._step_scheduler("step", batch_idx + 1)
        return loss

    def configure_optimizers(self) -> Any:
        """The base's; a scheduler dict's ``monitor`` and ``strict`` are kept by the task (Lightning ignores
        them, with a warning, under manual optimization).

        Raises:
            ValueError: a ``ReduceLROnPlateau`` with ``interval="step"`` (it is stepped at epoch ends only).
        """
        config = super().configure_optimizers()
        if not isinstance(config, dict):
            return config
        scheduler = config["lr_scheduler"]
        monitor, strict = scheduler.pop("monitor"), scheduler.pop("strict", True)
        self._plateau_monitor = None
        if isinstance(scheduler["scheduler"], ReduceLROnPlateau):
            if scheduler["interval"] != "epoch":
                raise ValueError(
                    f"{type(self).__name__}: a ReduceLROnPlateau scheduler is stepped on its monitor {monitor!r} "
                    f"at the end of epochs; set its interval to 'epoch', got {scheduler['interval']!r}"
                )
            self._plateau_monitor = (monitor, bool(strict))
        return config

    def _step_scheduler(self, interval: str, count: int) -> None:
        """Step the scheduler if its ``interval`` is this one and ``count`` (1-based batch of the epoch, or
        epoch) is a multiple of its ``frequency``; a plateau scheduler with its monitor's latest value."""
        configs = self.trainer.lr_scheduler_configs  # at most one scheduler
        if not configs or configs[0].interval != interval or count % configs[0].frequency:
            return
        scheduler = configs[0].scheduler
        if not isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step()
            return
        assert self._plateau_monitor is not None  # set with the scheduler by configure_optimizers
        monitor, strict = self._plateau_monitor
        value = self.trainer.callback_metrics.get(monitor)
        if value is not None:
            scheduler.step(value)
            return
        logged = sorted(self.trainer.callback_metrics)
        message = (f"{type(self).__name__}: the ReduceLROnPlateau scheduler monitors {monitor!r}, which is not "
                   f"logged by the end of epoch {self.current_epoch} (logged: {logged}); does a validation run "
                   "every epoch?")
        if strict:
            raise ValueError(message)
        rank_zero_warn(f"{message} The learning rate is not updated (strict=False).", category=RuntimeWarning)

    def epoch_carry(self) -> dict[str, Any]:
        """The base's (train metrics) and ``"state"``: the recurrent state the next training batch starts
        from (``None`` with ``carry_state=False`` or at an epoch's start)."""
        return {**super().epoch_carry(), "state": self.states.get("train")}

    def load_epoch_carry(self, carry: dict[str, Any]) -> None:
        super().load_epoch_carry(carry)
        state = carry["state"]
        if state is None:
            self.states.pop("train", None)
        else:
            self.states["train"] = tuple(s.to(self.device) for s in state) if isinstance(state, tuple | list) \
                else state.to(self.device)

    def on_train_epoch_start(self) -> None:
        self.states.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self.states.pop("eval", None)

    def on_test_epoch_start(self) -> None:
        self.states.pop("eval", None)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self._step_scheduler("epoch", self.current_epoch + 1)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.log("val/bpc", math.log2(float(self.val_metrics["ppl"].compute())))
        super().on_validation_epoch_end()

    def on_test_epoch_end(self) -> None:
        self.log("test/bpc", math.log2(float(self.test_metrics["ppl"].compute())))

    def keep_examples(self, batch: Any, out: dict[str, Any]) -> None:
        n = self.hparams.num_samples
        self.examples = batch[0][:n, :8] if n > 0 else None

    def log_pictures(self, writer: Any, prompts: torch.Tensor) -> None:
        tokens, _ = self.net.generate(prompts, max_new_tokens=self.hparams.sample_len, strategy="sample", top_k=5)
        itos = getattr(datamodule_attr(self, "vocab"), "itos", None)
        show = (lambda ids: "".join(itos[i] for i in ids)) if itos else (lambda ids: " ".join(map(str, ids)))
        lines = [f"{show(p.tolist())} | {show(t.tolist())}" for p, t in zip(prompts.cpu(), tokens.cpu())]
        writer.add_text("val/samples", "  \n".join(f"`{line}`" for line in lines), global_step=self.global_step)

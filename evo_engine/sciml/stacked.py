"""K models of one architecture held as one stack, trained by one Adam step on one device.

The parameters of K identically shaped models live in a single flat ``[K, P]`` float tensor (a
complex parameter as its real and imaginary parts, the layout ``torch.optim.Adam`` itself uses
for complex parameters); the models' buffers (BatchNorm running statistics) are stacked per
name as ``[K, ...]``. :func:`torch.func.functional_call` under :func:`torch.func.vmap` runs all
K members in one call on per-member parameters, buffers and inputs, so every member keeps its
own BatchNorm statistics and its own data.

Adam with per-member learning rate and weight decay is written out on the flat tensor in
``torch.optim.Adam``'s own order of operations (L2 weight decay added to the gradient, ``lerp``
for the first moment, bias corrections in double precision), so a member's update equals the
one its single training would make up to rounding. Dropping members (diverged or pruned) keeps
the remaining rows, their moments and their buffers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass(frozen=True)
class _Slot:
    name: str
    shape: tuple[int, ...]
    complex_: bool
    length: int  # floats used, padded to an even count so complex views stay aligned

    @property
    def used(self) -> int:
        n = math.prod(self.shape)
        return 2 * n if self.complex_ else n


class StackedModels:
    """Parameters, buffers and Adam state of K models built from one architecture."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        if not models:
            raise ValueError("need at least one model to stack")
        first = models[0]
        self.template = copy.deepcopy(first).to("meta")
        self.slots: list[_Slot] = []
        for name, p in first.named_parameters():
            used = 2 * p.numel() if p.is_complex() else p.numel()
            self.slots.append(_Slot(name, tuple(p.shape), p.is_complex(), used + used % 2))
        rows = [self._flatten(m) for m in models]
        self.flat = torch.stack(rows).requires_grad_(True)
        self.buffers = {
            name: torch.stack([dict(m.named_buffers())[name].detach() for m in models])
            for name, _ in first.named_buffers()
        }
        self.exp_avg = torch.zeros_like(self.flat, requires_grad=False)
        self.exp_avg_sq = torch.zeros_like(self.flat, requires_grad=False)
        self.steps = 0
        self.n_params = sum(p.numel() for p in first.parameters())

    def _flatten(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        pieces = []
        for slot in self.slots:
            p = params[slot.name].detach()
            flat = (torch.view_as_real(p) if slot.complex_ else p).reshape(-1)
            pieces.append(flat)
            if slot.length > slot.used:
                pieces.append(flat.new_zeros(slot.length - slot.used))
        return torch.cat(pieces)

    @property
    def size(self) -> int:
        """The number of members in the stack."""
        return self.flat.shape[0]

    def parameters(self) -> dict[str, torch.Tensor]:
        """Views ``[K, *shape]`` of the flat tensor, one per parameter name (autograd-tracked).

        A complex parameter comes as its real view ``[K, *shape, 2]``: the functions from
        :meth:`forward_fn` turn it into a complex tensor per member (``torch.compile`` cannot
        take a complex view of a real tensor as an input).
        """
        k = self.size
        out: dict[str, torch.Tensor] = {}
        for slot, piece in zip(self.slots, self.flat.split([s.length for s in self.slots], 1),
                               strict=True):
            piece = piece[:, : slot.used] if slot.length > slot.used else piece
            out[slot.name] = piece.reshape(k, *slot.shape, *((2,) if slot.complex_ else ()))
        return out

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s ``state_dict`` (copies), loadable into one model of the architecture."""
        complex_ = {slot.name for slot in self.slots if slot.complex_}
        with torch.no_grad():
            state = {
                name: torch.view_as_complex(t[k].clone()) if name in complex_ else t[k].clone()
                for name, t in self.parameters().items()
            }
        state.update({name: t[k].clone() for name, t in self.buffers.items()})
        return state

    def member_model(self, k: int, state: dict[str, torch.Tensor] | None, device: str) -> nn.Module:
        """One ordinary model holding member ``k``'s weights (or the given ``state``)."""
        model = copy.deepcopy(self.template).to_empty(device=device)
        model.load_state_dict(state if state is not None else self.member_state(k))
        return model

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only the members at ``rows`` (in that order), with their Adam state and buffers."""
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.flat.device)
        self.flat = self.flat.detach()[index].requires_grad_(True)
        self.exp_avg = self.exp_avg[index]
        self.exp_avg_sq = self.exp_avg_sq[index]
        self.buffers = {name: t[index] for name, t in self.buffers.items()}

    def forward_fn(self, in_dims: tuple) -> Callable[..., torch.Tensor]:
        """``f(params, buffers, *inputs)`` mapped over the members (``vmap`` of the template)."""
        template = self.template
        complex_ = frozenset(slot.name for slot in self.slots if slot.complex_)

        def one(params: dict, buffers: dict, *inputs: torch.Tensor) -> torch.Tensor:
            params = {
                name: torch.view_as_complex(t) if name in complex_ else t
                for name, t in params.items()
            }
            return functional_call(template, (params, buffers), inputs)

        return vmap(one, in_dims=(0, 0, *in_dims))

    def train(self, mode: bool = True) -> None:
        """Switch the template (and so every member's BatchNorm) between train and eval mode."""
        self.template.train(mode)

    @torch.no_grad()
    def adam_step(self, lrs: Sequence[float], weight_decays: Sequence[float]) -> None:
        """One Adam step of every member with its own learning rate and L2 weight decay."""
        grad = self.flat.grad
        if grad is None:
            raise RuntimeError("adam_step before backward")
        self.steps += 1
        beta1, beta2 = BETAS
        device, dtype = self.flat.device, self.flat.dtype
        if any(wd != 0 for wd in weight_decays):
            wd = torch.tensor(weight_decays, dtype=dtype, device=device).unsqueeze(1)
            grad = grad + wd * self.flat
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = (1 - beta2**self.steps) ** 0.5
        step_size = torch.tensor([-lr / bias_correction1 for lr in lrs], dtype=dtype,
                                 device=device).unsqueeze(1)
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(EPS)
        self.flat.add_(step_size * self.exp_avg / denom)
        self.flat.grad = None

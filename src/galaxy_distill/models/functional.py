"""A network's parameters as one flat vector, for the differentiable inner loop of trajectory matching.

Trajectory matching trains a student from an expert checkpoint by SGD on synthetic images
and differentiates the result with respect to those images, so the student's weights must
be plain tensors in the autograd graph rather than module state. `FlatParams` keeps the
module as a stateless template and runs it with `torch.func.functional_call` on views into
one 1-D vector (`flat - lr * grad` is then a single fused update, and expert checkpoints are
rows of one matrix).

Only buffer-free modules are supported: batch-norm running statistics would be state that
the functional call silently updates or ignores. The matching engine therefore uses
"instancenorm" (GroupNorm(C, C)) or "none"; batch-norm models are for ordinary training.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from galaxy_distill.errors import GalaxyDistillError

# Module types whose default initialisation `init_flat` reproduces: weights and biases
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the layers PyTorch initialises with
# kaiming_uniform_(a=sqrt(5)), unit scale and zero shift for the normalisations.
UNIFORM_FAN_IN_LAYERS = (nn.Conv2d, nn.Linear)
NORM_LAYERS = (nn.GroupNorm, nn.BatchNorm2d)


class FlatParams:
    """The functional view of `module`: its parameters (in `named_parameters` order) as one vector.

    The module itself is never modified; it only serves as the computation template.
    """

    def __init__(self, module: nn.Module) -> None:
        buffer_names = [name for name, _ in module.named_buffers()]
        if buffer_names:
            raise GalaxyDistillError(
                f"the functional (trajectory-matching) view needs a model without buffers, but {type(module).__name__} "
                f"has {', '.join(buffer_names[:3])}{'...' if len(buffer_names) > 3 else ''}: "
                "build it with norm 'instancenorm' or 'none' instead of 'batchnorm'"
            )
        parameters = dict(module.named_parameters())
        dtypes = {p.dtype for p in parameters.values()}
        if len(dtypes) != 1:
            raise GalaxyDistillError(f"the functional view needs one parameter dtype, got {sorted(map(str, dtypes))}")
        self.module = module
        self.names: tuple[str, ...] = tuple(parameters)
        self.shapes: tuple[torch.Size, ...] = tuple(p.shape for p in parameters.values())
        self.numels: tuple[int, ...] = tuple(p.numel() for p in parameters.values())
        self.total: int = sum(self.numels)
        self._init_spread, self._init_centre = _default_init_ranges(module, self.names)

    @property
    def device(self) -> torch.device:
        return self._init_centre.device

    @property
    def dtype(self) -> torch.dtype:
        return self._init_centre.dtype

    def flatten(self, params: nn.Module | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The parameters of a module of the same architecture, or a name -> tensor mapping, as one 1-D vector."""
        named = dict(params.named_parameters()) if isinstance(params, nn.Module) else params
        missing = [name for name in self.names if name not in named]
        if missing:
            raise GalaxyDistillError(f"parameters do not fit this architecture: missing {', '.join(missing[:3])}")
        return torch.cat([named[name].reshape(-1) for name in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Differentiable views of `flat` shaped as the module's parameters (leading batch dims are kept)."""
        if flat.shape[-1] != self.total:
            raise GalaxyDistillError(f"flat parameter vector has {flat.shape[-1]} values, the model needs {self.total}")
        lead = flat.shape[:-1]
        chunks = flat.split(self.numels, dim=-1)
        return {name: chunk.view(*lead, *shape) for name, chunk, shape in zip(self.names, chunks, self.shapes, strict=True)}

    def forward(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits of the network with parameters `flat` (1-D) on images `x` [B, C, H, W]."""
        return functional_call(self.module, self.unflatten(flat), (x,))

    def init_flat(self, generator: torch.Generator) -> torch.Tensor:
        """A fresh parameter vector drawn like the modules' default initialisation, on the module's device.

        Deterministic for the generator's state; one random draw on the generator's device.
        """
        uniform = torch.rand(self.total, generator=generator, device=generator.device, dtype=self.dtype)
        uniform = uniform.to(self.device, non_blocking=True)
        return torch.addcmul(self._init_centre, self._init_spread, uniform * 2 - 1)


def _default_init_ranges(module: nn.Module, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-value half-width and centre of the default initialisation, aligned with the flat vector."""
    owner_of: dict[str, nn.Module] = {}
    for module_name, submodule in module.named_modules():
        for param_name, _ in submodule.named_parameters(recurse=False):
            owner_of.setdefault(f"{module_name}.{param_name}" if module_name else param_name, submodule)
    parameters = dict(module.named_parameters())
    spreads, centres = [], []
    for name in names:
        owner, parameter = owner_of[name], parameters[name]
        if isinstance(owner, UNIFORM_FAN_IN_LAYERS):
            fan_in = owner.weight[0].numel()
            spreads.append(torch.full_like(parameter, fan_in**-0.5).reshape(-1))
            centres.append(torch.zeros_like(parameter).reshape(-1))
        elif isinstance(owner, NORM_LAYERS):
            spreads.append(torch.zeros_like(parameter).reshape(-1))
            centre = 1.0 if name.endswith("weight") else 0.0
            centres.append(torch.full_like(parameter, centre).reshape(-1))
        else:
            raise GalaxyDistillError(f"the functional view cannot initialise parameter {name!r} of a {type(owner).__name__}")
    return torch.cat(spreads), torch.cat(centres)

"""`galaxy-distill` with TF32 left off (PyTorch's default for matmuls, as the reference runs): the TF32 arm of the bisection."""
import torch

import galaxy_distill.distill.run as run
from galaxy_distill.cli import main


def _fp32_backends(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True


run.configure_backends = _fp32_backends
main()

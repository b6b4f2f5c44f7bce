"""Reports: a self-contained HTML page showing what the network sees in a distillation run."""

from galaxy_distill.report.build import write_report

__all__ = ["write_report"]

"""probeable: layer-wise generalization measures from a network's weights.

>>> import probe, torch
>>> report = probe.measure(torch.nn.Linear(8, 4))
>>> sorted(report.network)[:2]
['E_L2_AE', 'E_L2_BE']

The names below are imported on first use (PEP 562): ``import probe`` (and the ``probe``
command's ``--help``) does not import torch.
"""

from __future__ import annotations

from probe._lazy import lazy_exports

_MODULE_OF = {"measure": "api", "MeasureOptions": "options", "Report": "report", "LayerResult": "report",
              "Unfolding": "report", "HEADLINE_NAMES": "aggregate"}

__all__ = ["HEADLINE_NAMES", "LayerResult", "MeasureOptions", "Report", "Unfolding", "measure"]
__version__ = "0.1.0"


__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF)

"""probeable: layer-wise generalization measures from a network's weights.

>>> import probe, torch
>>> report = probe.measure(torch.nn.Linear(8, 4))
>>> sorted(report.network)[:2]
['E_L2_AE', 'E_L2_BE']
"""

from probe.aggregate import HEADLINE_NAMES
from probe.api import measure
from probe.options import MeasureOptions
from probe.report import LayerResult, Report, Unfolding

__all__ = ["measure", "MeasureOptions", "Report", "LayerResult", "Unfolding", "HEADLINE_NAMES"]
__version__ = "0.1.0"

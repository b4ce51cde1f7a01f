import pytest
import torch

import probe
from integrations.lightning import ProbeCallback
from integrations.loop import ProbeHook
from probe.options import MeasureOptions


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "lapack"}, r"method must be one of \('auto', 'gram64', 'svd'\), got 'lapack'"),
        ({"layers": "convs"}, r"layers must be one of \('auto', 'genprob'\)"),
        ({"nonfinite": "skip"}, r"nonfinite must be one of"),
        ({"evbmf_xatol": 0.0}, r"evbmf_xatol must be a positive number or None, got 0.0"),
        ({"device": "gpu7"}, r"device must be a torch device"),
    ],
)
def test_bad_settings_fail_at_construction_in_every_front_end(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MeasureOptions(**kwargs)
    with pytest.raises(ValueError, match=message):
        probe.measure(torch.nn.Linear(3, 2), **kwargs)
    front_end_kwargs = {k: v for k, v in kwargs.items() if k != "evbmf_xatol"}
    if front_end_kwargs:
        with pytest.raises(ValueError, match=message):
            ProbeHook(torch.nn.Linear(3, 2), log_dir=tmp_path, **front_end_kwargs)
        with pytest.raises(ValueError, match=message):
            ProbeCallback(**front_end_kwargs)
        assert list(tmp_path.iterdir()) == []  # the hook failed before creating an event file


def test_options_are_the_keyword_arguments_of_measure():
    options = MeasureOptions(method="svd", nonfinite="nan")
    assert options.kwargs() == {"layers": "auto", "method": "svd", "evbmf_xatol": None, "nonfinite": "nan", "device": None}
    with pytest.raises(TypeError, match="layers must be a preset name"):
        MeasureOptions(layers=3)  # type: ignore[arg-type]

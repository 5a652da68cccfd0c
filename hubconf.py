"""torch.hub entry points for the RedNets, from a local checkout and a local official checkpoint:

    model = torch.hub.load("path/to/involution", "rednet50", source="local", checkpoint="rednet50.pth")

Nothing is downloaded: pass the path of an official (OpenMMLab-format) checkpoint you have, or none for
random weights. Keyword arguments go to ``involution.models.build_model``.
"""

from involution.checkpoint import load_official
from involution.models import build_model

dependencies = ["torch", "fvcore"]


def _entry_point(name: str):
    def build(checkpoint=None, **kwargs):
        model = build_model(name, **kwargs)
        if checkpoint is not None:
            load_official(model, checkpoint)
        return model

    build.__name__ = name
    build.__doc__ = f"{name}, the official architecture; checkpoint: path to an official checkpoint (optional)."
    return build


rednet26, rednet38, rednet50, rednet101, rednet152 = (
    _entry_point(f"rednet{depth}") for depth in (26, 38, 50, 101, 152)
)

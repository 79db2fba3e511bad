"""Model families, each registered once by its own module: a model is a name plus kwargs.

A ``ModelFamily`` says everything the rest of revmed needs to know of a family: its name (the
preset's ``model.kind``), its ``[model]`` keys (a ``ModelSection`` subclass), how to turn its
``[model]`` and ``[data]`` sections into its constructor's kwargs, the checks of its keys, and
what the memory planner (``revmed.planning``) needs to know of it: which key sets the
reversible depth and its least value, what sizes its inputs run at unpadded, and the smallest
patch its training can run at. Each model module calls ``register`` at import;
``revmed.models`` imports them all. Adding a family is one new module (and its import in
``revmed/models/__init__.py``).

A checkpoint stores ``(kind, kwargs)``, so ``build_model(kind, **kwargs)`` rebuilds its network
without the preset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from revmed.errors import ConfigError
from revmed.preset import DataSection, ModelSection, Preset, TrainSection, keys_of


def _trains_anywhere(network: Any, data: DataSection, train: TrainSection, patch_size: Any,
                     device: Any) -> None:
    return None


def _no_checks(model: Any) -> None:
    return None


def _no_padding(model: Any) -> int:
    return 1


def _any_edge(model: Any, train: TrainSection) -> int:
    return 1


@dataclass(frozen=True)
class ModelFamily:
    """One family of networks.

    Attributes:
        name: the preset's ``model.kind`` and the checkpoint's model kind.
        section: the ``[model]`` dataclass of the family (``ModelSection`` and its own keys).
        network: the ``nn.Module`` class, built as ``network(**kwargs)``.
        kwargs: ``kwargs(model, data)``: the constructor's keyword arguments for a preset's
            ``[model]`` and ``[data]`` sections.
        depth_key: the ``[model]`` key that sets the reversible depth.
        min_depth: the smallest value of ``depth_key``.
        check: ``check(section)`` raises ``revmed.preset.InvalidKey`` for keys that do not fit
            together (e.g. a width the couplings cannot split).
        patch_multiple: ``patch_multiple(section)``: input sizes the network runs at unpadded
            are multiples of this.
        smallest_edge: ``smallest_edge(section, train)``: the smallest patch edge (voxels per
            axis) that training with these ``[model]`` and ``[train]`` keys runs at (the
            RevGAN's critics need a few voxels of output); 1 where any edge does.
        check_training: ``check_training(network, data, train, patch_size, device)`` raises
            ``ConfigError`` (naming the key) for training runs the family knows to fail with
            these ``[data]`` and ``[train]`` sections at this patch size on ``device`` (see
            ``revmed.models.iunet``).
        tiles: the network translates both ways (``forward`` and ``reverse``), reports its
            ``halo(reverse)``, and its instance norms can be frozen after training, so
            inference runs in large tiles (``revmed.nn.norm_statistics``,
            ``revmed.inference.tiles``).
        tasks: the preset tasks the family does (a checkpoint claiming another is refused).
    """

    name: str
    section: type[ModelSection]
    network: type[nn.Module]
    kwargs: Callable[[Any, DataSection], dict[str, Any]]
    depth_key: str
    min_depth: int = 0
    check: Callable[[Any], None] = _no_checks
    patch_multiple: Callable[[Any], int] = _no_padding
    smallest_edge: Callable[[Any, TrainSection], int] = _any_edge
    check_training: Callable[..., None] = _trains_anywhere
    tiles: bool = False
    tasks: tuple[str, ...] = ()

    @property
    def own_keys(self) -> tuple[str, ...]:
        """The ``[model]`` keys only this family reads."""
        common = keys_of(ModelSection)
        return tuple(k for k in keys_of(self.section) if k not in common)

    def depth_of(self, section: ModelSection) -> int:
        """The reversible depth ``section`` sets (its ``depth_key``)."""
        return int(getattr(section, self.depth_key))

    def with_depth(self, section: ModelSection, depth: int) -> ModelSection:
        """``section`` with the reversible depth set to ``depth``."""
        return replace(section, **{self.depth_key: int(depth)})


FAMILIES: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to the registry (its module calls this once, at import)."""
    if family.name in FAMILIES and FAMILIES[family.name] is not family:
        raise ValueError(f"model family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def get_family(kind: str) -> ModelFamily:
    """The family named ``kind``; ``ConfigError`` listing the others when there is none."""
    if kind not in FAMILIES:
        raise ConfigError(f"model kind {kind!r} is not available; available: "
                          f"{', '.join(sorted(FAMILIES))}")
    return FAMILIES[kind]


def build_model(kind: str, **kwargs: Any) -> nn.Module:
    """The network of family ``kind`` made with ``kwargs``."""
    return get_family(kind).network(**kwargs)


def model_spec(preset: Preset) -> tuple[str, dict[str, Any]]:
    """``(kind, kwargs)`` of the network a preset describes."""
    family = get_family(preset.model.kind)
    return family.name, family.kwargs(preset.model, preset.data)

"""The data sets ``npe train`` knows, one registered entry each (docs/data.md, docs/extending.md).

An entry says how to build the run's training, test and validation sets from a ``DataRequest`` (the
settings that choose them) and what the rest of the toolkit needs to know without building them: the
task it poses, its default network, whether it keeps its own class counts (``natural``), what it
reads (a data folder, split lists, a user's Datasets), whether its samples stay on disk, whether it is
images that crop-and-flip augmentation applies to, and the backbone's standard weight decay.
``npe train --help``, the config's defaults and checks, and ``npe sweep`` read these entries.

    @register_dataset("mydata", model="mlp", help="...")
    def mydata(request: DataRequest) -> LongTailData: ...

``longtail.classification_source`` turns a function returning a ``Source`` (the raw arrays) into
an entry's ``build`` with the toolkit's long-tailed subset, balanced test set and validation set.
Imports: ``npe_theory`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from npe_theory.registry import Registry

TASKS = ("classification", "segmentation")


@dataclass(frozen=True)
class DataRequest:
    """The settings that choose a run's data: the count ``profile`` (exp, step or natural), ``imbalance`` and ``n_max``
    of the long-tailed subset, the ``seed``, and what user data is read from (``data_dir``, ``image_size``,
    ``test_fraction``, the split ``lists``, a user's ``datasets``); ``lt_generator``: which long-tailed subset generator
    draws the training samples (``longtail.LT_GENERATORS``)."""

    imbalance: float = 100.0
    profile: str = "exp"
    n_max: int | None = None
    seed: int = 0
    data_dir: str | None = None
    image_size: int | None = None
    test_fraction: float = 0.2
    lists: dict | None = None
    datasets: tuple | None = None
    lt_generator: str = "toolkit"


@dataclass(frozen=True)
class DatasetEntry:
    """A registered data set. ``build(request) -> LongTailData``; the rest describes it (module docstring)."""

    build: Callable
    help: str
    task: str = "classification"
    model: str | None = None  # the network a run gets without --model (None: the user must choose)
    natural: bool = False  # keeps the data's own class counts by default (profile natural) and allows it
    # of "data_dir", "lists", "datasets", "image_size", "test_fraction": the settings it reads (a setting given for a
    # data set that does not read it is refused, never ignored)
    reads: tuple[str, ...] = ()
    on_disk: bool = False  # samples are read as batches need them (the loader pipeline), not held in memory
    images: bool = False  # (C, H, W) images: crop-and-flip augmentation applies
    augment: bool = False  # augmentation on by default
    image_size: int | None = None  # the size images are resized to by default (None: kept)
    weight_decay: float = 5e-4  # the backbone's standard weight decay for this data set (the default recipe)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {self.task!r}")


DATASETS: Registry[DatasetEntry] = Registry("data set", "dataset")


def register_dataset(name: str, **meta):
    """Decorator: register ``build(request) -> LongTailData`` under ``name`` with the entry's other fields ``meta``."""

    def add(build):
        DATASETS.register(name, DatasetEntry(build=build, **meta))
        return build

    return add


def dataset(name) -> DatasetEntry:
    """The registered entry of ``name``; InputError naming ``dataset`` with the choices otherwise."""
    return DATASETS.get(name)

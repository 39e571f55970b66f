"""Where training batches come from: the data set resident on the device, or a standard DataLoader.

Both pipelines take one epoch's order (indices into the training set) and its augmentation
draws, made on the host by the training loop's seeded generator, and yield (x, y) batches on
the device, normalized and ready for the network:

- ``DevicePipeline``: the training set lives on the device (uint8 for CIFAR); each batch is
  gathered, cropped, flipped and normalized there in a few batched kernels.
- ``LoaderPipeline``: the usual recipe, kept as the reference: a ``DataLoader`` whose worker
  processes crop, flip and normalize one image at a time on the host, then a copy of every
  batch to the device.

Given the same order and draws the two compute the same tensors, so on one device they train
the same network bit for bit (a test pins it): the fast path changes the speed, not the run.
Imports: NumPy, torch and ``files.py`` (the CIFAR normalization).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .files import CIFAR_MEAN, CIFAR_STD

PIPELINES = ("device", "loader")
PAD = 4  # the CIFAR recipe: a 32x32 crop of the image padded by 4 on every side


def draw_augmentation(n: int, gen: torch.Generator) -> torch.Tensor:
    """Crop offsets (dy, dx in 0..2*PAD) and a flip bit for n samples: an (n, 3) int64 tensor."""
    return torch.stack(
        [
            torch.randint(0, 2 * PAD + 1, (n,), generator=gen),
            torch.randint(0, 2 * PAD + 1, (n,), generator=gen),
            (torch.rand(n, generator=gen) < 0.5).long(),
        ],
        dim=1,
    )


def augment(x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """out[b] = flip_b(pad(x[b])[:, dy_b : dy_b + H, dx_b : dx_b + W]), batched on x's device.

    The padding is zeros in x's own units; applied to uint8 pixels before normalization, as
    torchvision's ``RandomCrop(32, padding=4)`` is, that is black.
    """
    b, c, hgt, wid = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    dy, dx, flip = draws[:, 0], draws[:, 1], draws[:, 2].bool()
    rows = (dy[:, None] + torch.arange(hgt, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(wid, device=x.device))[:, None, None, :]
    out = padded[
        torch.arange(b, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows,
        cols,
    ]
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def preparer(dtype, device):
    """For inputs of ``dtype``: uint8 CIFAR images -> (x / 255 - mean) / std in float32 on ``device``; float data passes as is."""
    if dtype != torch.uint8 and dtype != np.uint8:
        return lambda x: x
    mean = torch.tensor(CIFAR_MEAN, device=device)[None, :, None, None]
    std = torch.tensor(CIFAR_STD, device=device)[None, :, None, None]
    return lambda x: (x.float() / 255.0 - mean) / std


class DevicePipeline:
    """The training set as device tensors; gather, crop + flip, normalize per batch on the device.

    Nothing here waits for the host: the order and draws move to the device once per epoch.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, channels_last: bool = False):
        self.x, self.y, self.channels_last = x, y, channels_last
        self.prepare = preparer(x.dtype, x.device)

    def epoch(self, order: torch.Tensor, draws: torch.Tensor | None, batch_size: int):
        device = self.x.device
        order = order.to(device, non_blocking=True)
        draws = None if draws is None else draws.to(device, non_blocking=True)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = self.x[idx]
            if draws is not None:
                x = augment(x, draws[i : i + batch_size])
            x = self.prepare(x)
            yield (x.contiguous(memory_format=torch.channels_last) if self.channels_last else x), self.y[idx]


class _OneAtATime(torch.utils.data.Dataset):
    """``dataset[[i, dy, dx, flip]]``: sample i, cropped, flipped and normalized on the host ([i] alone: no augmentation)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y
        self.prepare = preparer(x.dtype, "cpu")

    def __len__(self):
        return len(self.y)

    def __getitem__(self, key):
        img = self.x[key[0]]
        if len(key) > 1:  # per image, by slicing, as the usual transforms do
            dy, dx, flip = key[1:]
            img = np.pad(img, ((0, 0), (PAD, PAD), (PAD, PAD)))[
                :, dy : dy + img.shape[1], dx : dx + img.shape[2]
            ]
            img = np.ascontiguousarray(img[:, :, ::-1] if flip else img)
        return self.prepare(torch.from_numpy(img)[None])[0], int(self.y[key[0]])


class _EpochBatches:
    """A batch sampler whose batches the training loop sets before each epoch (so workers persist across epochs)."""

    def __init__(self):
        self.batches: list[list] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class LoaderPipeline:
    """The standard pipeline: ``workers`` processes prepare one image at a time on the host; each batch "
    "is copied to the device."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        device: torch.device,
        channels_last: bool = False,
        workers: int = 4,
    ):
        self.device, self.channels_last = torch.device(device), channels_last
        self.sampler = _EpochBatches()
        self.loader = torch.utils.data.DataLoader(
            _OneAtATime(x, y),
            batch_sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )

    def epoch(self, order: torch.Tensor, draws: torch.Tensor | None, batch_size: int):
        keys = (order[:, None] if draws is None else torch.cat([order[:, None], draws], dim=1)).tolist()
        self.sampler.batches = [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
        try:
            for x, y in self.loader:
                x = x.to(self.device, non_blocking=True)
                yield (
                    (x.contiguous(memory_format=torch.channels_last) if self.channels_last else x),
                    y.to(self.device, non_blocking=True),
                )
        except Exception as exc:
            clean = worker_error(exc)
            if clean is exc:
                raise
            raise clean from None


def worker_error(exc: Exception) -> Exception:
    """A DataLoader worker's exception as the worker raised it. torch re-raises it in the main process with the
    worker's whole traceback inside its message; the message (e.g. which image cannot be read) is what a user acts
    on, and with ``--workers 0`` it is all they see. Anything else is returned as it is."""
    text = str(exc)
    if "in DataLoader worker process" not in text or "Original Traceback" not in text:
        return exc
    marker = f"{type(exc).__name__}: "
    at = text.rfind(marker)
    message = text[at + len(marker) :].strip() if at >= 0 else text.strip().splitlines()[-1]
    try:
        return type(exc)(message)
    except Exception:  # an exception type that takes other arguments: keep torch's
        return exc

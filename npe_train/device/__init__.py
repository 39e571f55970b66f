"""Where a run executes: the device and the torchrun process group (``distributed.py``). The bottom layer."""

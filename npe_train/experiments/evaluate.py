"""``npe eval``: a finished run's network on another test set, or on its test set with another label distribution.

The run's settings rebuild its data and network; the checkpoint (read with ``weights_only``, checked
as on resume) supplies the weights and the PEM trace; the task's own evaluation then scores every
rule and remakes the prior report, exactly as at the end of training. Only the test set differs:
read from ``data_dir`` (the same kind of data, e.g. another copy of CIFAR-10's test batches), and/or
subsampled to a profile (``exp:R``: head classes most frequent, imbalance R; ``reversed:R``: tail
classes most frequent). Mean per-class accuracy does not change with the test set's label
distribution (in expectation); ``sample_accuracy``, the fraction of test samples right, does.
Imports: ``npe_theory``, ``data/``, ``device/``, ``tasks/``, ``run/`` and ``loop/build.py``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from npe_theory.errors import InputError
from npe_theory.io import write_json
from npe_theory.priors import count_profile
from npe_theory.validate import as_float_array

from ..data.image_list import on_device
from ..data.pipeline import preparer
from ..device.distributed import Dist, pick_device
from ..loop.build import build_data, build_network, build_schedule, build_task, dense
from ..run.checkpoint import CHECKPOINT, checkpoint_in, read_finished
from ..run.config import make_config
from ..run.results import SCHEMA, read_results
from ..tasks.base import Held
from ..tasks.rules import RULES, rule_spec

PROFILE = re.compile(r"^(exp|reversed):([0-9.eE+]+)$")
EVAL_STREAM = 0xE7A1  # the test subsample's own generator, [seed, EVAL_STREAM]


def profile_index(y_test: np.ndarray, num_classes: int, spec: str, seed: int) -> np.ndarray:
    """Indices of a test subset whose class counts follow ``spec``: ``exp:R`` (N_c = n R^(-c/(C-1)), n the smallest
    class's test count) or ``reversed:R`` (the same counts, tail classes first)."""
    m = PROFILE.match(spec)
    if not m:
        raise InputError(f"test_profile: expected exp:R or reversed:R (R >= 1, e.g. exp:10), got {spec!r}")
    try:
        ratio = float(m.group(2))
    except ValueError:
        raise InputError(f"test_profile: {m.group(2)!r} is not a number") from None
    if not 1.0 <= ratio <= 1e6:
        raise InputError(f"test_profile: the imbalance must lie in [1, 1e6], got {ratio:g}")
    n = int(np.bincount(y_test, minlength=num_classes).min())
    counts = count_profile("exp", num_classes, n, ratio)
    if m.group(1) == "reversed":
        counts = counts[::-1]
    rng = np.random.default_rng([seed, EVAL_STREAM])
    return np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(y_test == c))[:k] for c, k in enumerate(counts)])
    )


def evaluate_finished(
    run, data_dir: str | None = None, test_profile: str | None = None, rule: str | None = None, tau=None
) -> tuple[dict, Path]:
    """(the evaluation, the file it was written to: RUN/eval-<what>.json) of the finished run in folder ``run``.

    ``tau``: every rule at this tau instead of the run's. ``rule``: the rule to report as ``chosen`` (with its record,
    ``tasks.rules.rule_spec``); ``"best"``: the rule and tau the run's validation set chose (results.json's advice)."""
    folder = Path(run)
    finished = read_results(folder)
    cfg = make_config(**finished.config)
    if rule == "best":
        best = (finished.raw.get("advice") or {}).get("best")
        if not best:
            raise InputError("rule: best needs the run's validation choice, and this run's advice has none")
        rule, tau = best["rule"], best["tau"] if tau is None else tau
    if rule is not None and rule not in RULES:
        raise InputError(f"rule: unknown {rule!r}; choose from best, {', '.join(RULES)}")
    tau = None if tau is None else float(as_float_array("tau", [tau], nonnegative=True)[0])
    if dense(cfg):
        raise InputError(
            "RUN_DIR: npe eval scores classification runs; a segmentation run's test images come with its data set"
        )
    # checked like a new run's settings: a data set that reads no folder refuses --data-dir instead of ignoring it
    used = make_config(**{**finished.config, "data_dir": data_dir}) if data_dir is not None else cfg
    data = build_data(used)
    used, stream = build_schedule(used, data)
    device = pick_device(cfg.device)
    model = build_network(used, data).to(device)
    saved = checkpoint_in(folder)
    if saved is None:
        raise InputError(
            f"RUN_DIR: {folder} has no checkpoint ({CHECKPOINT}); npe eval needs the trained network"
        )
    trace = read_finished(saved, cfg, model, device, data.num_classes, len(data.y_train))
    if test_profile is not None:
        keep = profile_index(data.y_test, data.num_classes, test_profile, cfg.seed)
        data = replace(data, x_test=data.x_test[keep], y_test=data.y_test[keep])
    held = Held(
        data,
        on_device(data.x_train, device),
        on_device(data.x_test, device),
        preparer(data.x_train.dtype, device),
        Dist(),
    )
    if tau is not None:  # scored at another tau; the checkpoint was checked against the run's own settings
        used = replace(used, tau=tau)
    report = build_task(used).evaluate(model.eval(), held, trace, stream.now(cfg.epochs - 1, trace))
    tested = np.bincount(data.y_test, minlength=data.num_classes)
    sample = {
        rule: float(np.dot(v["per_class"], tested) / tested.sum()) for rule, v in report["accuracy"].items()
    }
    out = {
        "schema": SCHEMA,
        "run": str(folder),
        "data_dir": data_dir,
        "test_profile": test_profile,
        "test_counts": tested.tolist(),
        "accuracy": report["accuracy"],
        "sample_accuracy": sample,
        "pem": report["pem"],
        "config": asdict(cfg),
    }
    if rule is not None:
        if rule not in report["accuracy"]:
            raise InputError(f"rule: {rule} does not apply to this run (npe_inverse needs a linear PEM)")
        out["chosen"] = {
            **rule_spec(rule, used.tau, report["priors"]),
            "accuracy": report["accuracy"][rule],
            "sample_accuracy": sample[rule],
        }
    tag = (
        "-".join(
            filter(
                None,
                [
                    None
                    if data_dir is None
                    else "data-" + re.sub(r"[^A-Za-z0-9_.-]", "_", Path(data_dir).name),
                    None if test_profile is None else test_profile.replace(":", ""),
                    None if rule is None else rule,
                    None if tau is None else f"tau{tau:g}",
                ],
            )
        )
        or "same"
    )
    return out, write_json(folder / f"eval-{tag}.json", out)

"""NPE in one file: a plain PyTorch loop with a Prior Estimation Module, NPE-LA at test time, and the prior report.

    python examples/minimal_npe.py            # about 10 s on one CPU core

Everything the toolkit's trainer does around this (data sets, checkpoints, the replayed optimizer, the advice) is
left out; the three ideas are here: (1) a PEM is a linear head on the features trained with a one-way loss, (2) with
weight decay its output for class c settles near ln N_c + const, (3) NPE-LA subtracts it from the logits.
See docs/theory.md (why the output tracks ln N_c) and docs/metrics.md (the report's numbers).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from npe_theory.priors import count_profile
from npe_theory.report import PemSettings, pem_report, summary_lines

# ---- settings -------------------------------------------------------------------------------------------------
CLASSES, DIM, HEAD, IMBALANCE = 10, 32, 500, 100  # an exp profile from 500 down to 5 samples
EPOCHS, BATCH, LR, MOMENTUM = 30, 64, 0.05, 0.9
WEIGHT_DECAY = 1e-2  # the PEM reaches its equilibrium once lambda*s = wd * sum(lr) / (1 - momentum) passes ~1
ALPHA, SEED = 1.0, 0
torch.manual_seed(SEED)
rng = np.random.default_rng(SEED)

# ---- data: Gaussian classes, long-tailed in training, balanced at test ------------------------------------------
# The class centres overlap enough that a CE classifier trained on the imbalanced set favours the head classes.
centres = rng.normal(size=(CLASSES, DIM)) * 0.9
counts = count_profile("exp", CLASSES, HEAD, IMBALANCE)


def draw(per_class):
    y = np.repeat(np.arange(CLASSES), per_class)
    x = centres[y] + rng.normal(size=(len(y), DIM))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


x_train, y_train = draw(counts)
x_test, y_test = draw(np.full(CLASSES, 200))

# ---- network: backbone -> features h; a classifier z = W h + b and a PEM eta = V h + c on the same features --------
backbone = torch.nn.Sequential(
    torch.nn.Linear(DIM, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU()
)
classifier, pem = torch.nn.Linear(64, CLASSES), torch.nn.Linear(64, CLASSES)
params = [*backbone.parameters(), *classifier.parameters(), *pem.parameters()]
opt = torch.optim.SGD(
    params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
)  # the PEM's decay sets its scale
steps = math.ceil(len(y_train) / BATCH)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda e: 0.5 * (1 + math.cos(math.pi * e / EPOCHS))
)  # per epoch

# ---- training: CE on the logits + alpha * the one-way logistic loss on the PEM's output for the true class --------
# The one-way loss only pushes eta_y up; weight decay pulls it back, so classes seen more often end higher.
lrs = []
for _epoch in range(EPOCHS):
    lrs.append(opt.param_groups[0]["lr"])
    for idx in torch.randperm(len(y_train)).split(BATCH):
        h = backbone(x_train[idx])
        z, eta = classifier(h), pem(h)
        y = y_train[idx]
        loss = F.cross_entropy(z, y) + ALPHA * F.softplus(-eta.gather(1, y[:, None])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sched.step()

# ---- test: argmax of z (CE), post-hoc LA with the true counts (z - ln pi), and NPE-LA (z - eta(x)) ---------------
with torch.no_grad():
    h_test = backbone(x_test)
    z, eta = classifier(h_test), pem(h_test)
    log_prior = torch.log(torch.tensor(counts / counts.sum(), dtype=torch.float32))
    rules = {"CE (argmax z)": z, "post-hoc LA (true counts)": z - log_prior, "NPE-LA (z - eta)": z - eta}


def mean_per_class(scores):
    hit = (scores.argmax(1) == y_test).float()
    return torch.stack([hit[y_test == c].mean() for c in range(CLASSES)]).mean().item()


print("balanced test accuracy (mean per class):")
for name, scores in rules.items():
    print(f"  {name:<28}{100 * mean_per_class(scores):5.1f}%")

# ---- the prior report: does the PEM's output track ln N_c, and Proposition 1 at the measured feature norms? -------
with torch.no_grad():
    h_train = backbone(x_train)
    eta_train = pem(h_train)
settings = PemSettings(
    weight_decay=WEIGHT_DECAY,
    alpha=ALPHA,
    lr=[lr for lr in lrs],
    batch_size=BATCH,
    epochs=EPOCHS,
    momentum=MOMENTUM,
    steps=steps,
)
report = pem_report(
    eta_train.numpy().astype(np.float64),
    h_train.numpy().astype(np.float64),
    y_train.numpy(),
    counts,
    settings,
    references="core",
)
print("\n".join(summary_lines(report)))

"""``npe priors`` and ``npe figures`` (filled in with the priors module)."""


def register(sub) -> None:
    return None

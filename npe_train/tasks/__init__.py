"""Tasks: what differs between classification and dense prediction (``base.py`` says what a task supplies), the
inference rules and their scores (``rules.py``), the prior report (``prior.py``), class streams (``stream.py``,
``adaptation.py``). Imports ``methods/`` and the layers below."""

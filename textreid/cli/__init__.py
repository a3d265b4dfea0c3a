"""The ``textreid`` command: ``demo``, ``train``, ``eval``, ``search``, ``index``, ``synth``,
``convert``, ``recipes``.

Run ``textreid COMMAND --help`` for the options of each command. Importing this package
(and ``textreid --help``) does not import torch; each command imports what it needs.
"""

from __future__ import annotations

from textreid.cli._main import build_parser, main

__all__ = ["build_parser", "main"]

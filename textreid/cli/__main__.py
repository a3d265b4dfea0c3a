"""``python -m textreid.cli`` (how ``torchrun -m textreid.cli train ...`` starts it)."""

from textreid.cli._main import main

raise SystemExit(main())

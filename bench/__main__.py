"""``python -m bench``: run the speed benchmark (see :mod:`bench`)."""

from __future__ import annotations

from bench.run import main

raise SystemExit(main())

"""Each benchmark's own section of docs/benchmarks.md, replaced in place by ``--write``."""

from __future__ import annotations

import os
from pathlib import Path


def write_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``.

    The rest of the file stays as it is; a section not there yet is appended, and a
    missing file is started with the note every figure in it needs.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body}\n{end}"
    if path.exists():
        text = path.read_text(encoding="utf-8")
    else:
        text = (
            "# Benchmarks\n\n"
            f"Figures are from one run on a shared {os.cpu_count() or 1}-core machine and are "
            "noisy: compare ratios from the same run rather than absolute numbers across runs.\n"
        )
    first = text.find(start)
    last = text.find(end, first + 1) if first >= 0 else -1
    if first >= 0 and last >= 0:
        text = text[:first] + block + text[last + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")

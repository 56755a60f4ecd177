"""Write a folder atomically: build it in a temporary sibling, then rename it into place."""

import json
import os
import shutil
import tempfile
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically: a temporary file beside it, renamed over the target."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def temporary_sibling(out: Path) -> Path:
    """A new empty folder beside `out` (same file system, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def publish(tmp: Path, out: Path) -> None:
    """Move a finished temporary folder to `out`, replacing what was there, with a new folder's permissions."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp made it private (0700)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)

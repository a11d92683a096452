"""Settings files in TOML, checked by a pydantic model: one reader, one line per mistake.

Scenarios (``scenarios/schema.py``) and deployment inventories (``fleet/deploy/inventory.py``) are
both TOML validated by a pydantic model with ``extra="forbid"``. What can go wrong with such a file
is the same for both (missing, unreadable, not UTF-8, not TOML, a key wrong), so the one-line
message for each lives here; each caller raises it as its own error class.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def read(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The TOML table in ``path``; ``error(one line)`` naming the file on anything unreadable.
    ``what`` names the kind of file for a missing one ("no such scenario file")."""
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise error(f"{path}: a directory, not a {what} file") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise error(f"{path}: not valid TOML (nested too deeply)") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: not valid TOML ({e})") from None


def where(err: dict[str, Any]) -> str:
    """The dotted key of a pydantic error (validator-function steps left out)."""
    parts = [str(p) for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    return ".".join(parts)


def validate(model: type[M], raw: dict[str, Any], path: Path, what: str, error: type[Exception]) -> M:
    """``model`` from ``raw``; on the first mistake ``error("PATH: KEY: what is wrong (got VALUE)")``,
    with how many more there are."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = where(err)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = "" if err["type"] in ("missing", "extra_forbidden") or not key else f" (got {err.get('input')!r})"
        more = f" [+{e.error_count() - 1} more]" if e.error_count() > 1 else ""
        raise error(f"{path}: {key or what}: {msg}{got}{more}") from None

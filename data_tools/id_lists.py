"""Read a list of bin ids from the shapes people pass around for ABID subsets.

- a plain text file: one id per line (blank lines and `#` comments ignored)
- a JSON list of ids: `["00001", 2, ...]`
- the common `file_list.json`: `{"1": ["metadata/100313.json", ...], "2": [...]}`
- abid_challenge's `counting_*.json`: `[[idx, count], ...]` where the image is `%05d.jpg` of idx + 1
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from data_tools.layout import normalize_bin_id
from data_tools.problems import DataToolsError


def _id_from_path(text: str) -> str:
    return normalize_bin_id(PurePosixPath(text).stem)


def parse_id_list(text: str, source: str = "<ids>") -> list[str]:
    """Ids in first-seen order, duplicates dropped."""
    stripped = text.lstrip()
    ids: list[str] = []
    try:
        if stripped.startswith(("[", "{")):
            ids = _ids_from_json(json.loads(text), source)
        else:
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    ids.append(_id_from_path(line) if "/" in line or "." in line else normalize_bin_id(line))
    except json.JSONDecodeError as exc:
        raise DataToolsError(f"{source}: malformed JSON id list ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:
        raise DataToolsError(f"{source}: {str(exc).split(';')[0]}") from None
    except RecursionError:  # a list nested past the interpreter's recursion limit
        raise DataToolsError(f"{source}: malformed JSON id list (nested too deeply)") from None
    return list(dict.fromkeys(ids))


def _ids_from_json(doc: object, source: str) -> list[str]:
    if isinstance(doc, dict):  # file_list.json: {count: [paths]}
        out = []
        for paths in doc.values():
            if not isinstance(paths, list):
                raise DataToolsError(f"{source}: expected lists of metadata paths under each key")
            out += [_id_from_path(str(p)) for p in paths]
        return out
    if isinstance(doc, list):
        if doc and all(isinstance(e, list) and len(e) == 2 for e in doc):  # counting_*.json: [[idx, count]]
            return [normalize_bin_id(int(idx) + 1) for idx, _count in doc]
        return [normalize_bin_id(e) if isinstance(e, int) else _id_from_path(str(e)) for e in doc]
    raise DataToolsError(f"{source}: an id list must be a JSON list or object, got {type(doc).__name__}")


def read_id_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataToolsError(f"id list not found: {path}") from None
    except UnicodeDecodeError:
        raise DataToolsError(f"id list {path} is not UTF-8 text") from None
    ids = parse_id_list(text, str(path))
    if not ids:
        raise DataToolsError(f"id list {path} holds no ids")
    return ids

"""Loading hub datasets with `datasets`, refusing loading-script repositories up front.

A hub repository that ships a Python loading script (`NAME/NAME.py`, e.g. `google/docci`) cannot be
read: `datasets` >= 4 refuses it ("Dataset scripts are no longer supported", raised from
`datasets.load.dataset_module_factory` when the repo holds a file named after its last path part plus
`.py`), and older `datasets` would need `trust_remote_code=True`, i.e. running the repo's code, which
ssvd never does. `script_repo_problem` says so before any work for the repositories known to be
script-based and for local folders holding such a script; `load_streaming` turns the error `datasets`
raises for any other script repository into one `ScriptDatasetError` with the fix.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

# Script-based hub repositories we know of, with what to pass instead.
KNOWN_SCRIPT_REPOS: dict[str, str] = {
    "google/docci": (
        "pass DOCCI as released: download docci_descriptions.jsonlines and docci_images.tar.gz from "
        "https://storage.googleapis.com/docci/data/, extract the images (they unpack to images/), then "
        "give --input docci_descriptions.jsonlines --image-root images (manifest: input: "
        "PATH/docci_descriptions.jsonlines, image_root: PATH/images); or a Parquet mirror with the hub "
        "schema (columns example_id, description, image)"
    ),
}
_GENERIC_FIX = ("download the dataset's data files (Parquet, JSON lines, CSV) and pass the local file or "
                "folder with --input, or pass a hub mirror of it that holds data files instead of a script")
_SCRIPT_MARKERS = ("Dataset scripts are no longer supported", "trust_remote_code")


class ScriptDatasetError(ValueError):
    """The input is a dataset loading-script repository, which ssvd cannot (and will not) run."""


class HubLoadError(ValueError):
    """A hub dataset that cannot be loaded (missing, offline, no network); the message says what to do."""


def _message(name: str, found: str, fix: str) -> str:
    return (f"{name!r} is a dataset loading-script repository ({found}); `datasets` >= 4 no longer runs "
            f"loading scripts and ssvd never runs a repository's code. Fix: {fix}.")


def script_repo_problem(input: str) -> str | None:
    """Why `input` is a loading-script repository (known hub id, or a local folder with NAME.py), else None.

    Needs no network: it is the check that runs before any work (CLI and manifest loading)."""
    name = input
    for prefix in ("hub:", "hf://datasets/", "hf://"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    name = name.split("@", 1)[0].strip().rstrip("/")
    if name in KNOWN_SCRIPT_REPOS:
        return _message(name, f"it ships {name.rsplit('/', 1)[-1]}.py", KNOWN_SCRIPT_REPOS[name])
    if name.endswith(".py"):
        return _message(name, "a Python file", _GENERIC_FIX)
    p = Path(name).expanduser()
    try:
        if p.is_dir() and (p / f"{p.resolve().name}.py").is_file():
            return _message(name, f"the folder holds {p.resolve().name}.py", _GENERIC_FIX)
    except OSError:  # cannot look (permissions, a link loop): the loader that opens it says so, naming it
        return None
    return None


def check_not_script(input: str) -> None:
    problem = script_repo_problem(input)
    if problem:
        raise ScriptDatasetError(problem)


def load_streaming(hub_id: str, config: str | None = None, hint: str = "") -> Any:
    """`datasets.load_dataset(hub_id, config, streaming=True)`; a script repository raises ScriptDatasetError,
    any other failure (no such dataset, no network, offline without it in the cache, no such config) one
    HubLoadError saying what was tried and what to do, never a bare traceback of `datasets` or `requests`."""
    import datasets

    check_not_script(hub_id)
    try:
        return datasets.load_dataset(hub_id, config, streaming=True)
    except (RuntimeError, ValueError) as e:
        if any(m in str(e) for m in _SCRIPT_MARKERS):
            script = os.path.basename(hub_id.rstrip("/")) + ".py"
            raise ScriptDatasetError(_message(hub_id, f"it ships {script}", _GENERIC_FIX)) from e
        raise HubLoadError(_load_message(hub_id, config, e, hint)) from e
    except Exception as e:  # DatasetNotFoundError (FileNotFoundError), ConnectionError, HTTP errors, ...
        raise HubLoadError(_load_message(hub_id, config, e, hint)) from e


def hub_rows(dataset: Any, name: str) -> Iterator[tuple[str, Any, None]]:
    """(where, record, None) per row of one shard of a streaming dataset; a failure while streaming (the
    network gone, a corrupt data file) is one HubLoadError naming the shard and the last row read."""
    row = 0
    try:
        for row, rec in enumerate(dataset, 1):
            yield f"{name} row {row}", rec, None
    except Exception as e:  # noqa: BLE001 - whatever `datasets`, fsspec or pyarrow raise, said once, clearly
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise HubLoadError(
            f"{name}: reading stopped after row {row} ({type(e).__name__}: {first}). Fix: check the network (and "
            "HF_HUB_OFFLINE) or the dataset's files, then run the same command again: rows already done are "
            "kept.") from e


def _load_message(hub_id: str, config: str | None, e: Exception, hint: str) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") or \
        os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    what = f"hub dataset {hub_id!r}" + (f" (config {config!r})" if config else "")
    if offline:
        fix = ("HF_HUB_OFFLINE is set, so only datasets already in the Hugging Face cache can be read: run once "
               "with network access (unset HF_HUB_OFFLINE) to cache it, or download its data files and pass "
               "the local file or folder")
    else:
        fix = (f"check the id (https://huggingface.co/datasets/{hub_id} must exist and be readable; a gated or "
               "private dataset needs `hf auth login` or HF_TOKEN) and the network, or download its data files "
               "and pass the local file or folder")
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{what} could not be loaded ({type(e).__name__}: {first[:300]}). {hint + ' ' if hint else ''}Fix: {fix}."

"""Where a registered corpus's files are on this machine, and where each came from.

`locate(spec)` takes the first place that holds ALL of the corpus's files:
1. `$ABLAB_DATA/<folder>/<name>` (a local copy: the shared data folder, or files a user placed there;
   a Hub file's name is its path in the repository, so `hf download REPO --local-dir
   $ABLAB_DATA/<folder>` is such a copy);
2. the copy bundled in the package (tiny-shakespeare);
3. the cache: Hub files under `cache_dir()/hub/...` with their provenance sidecar, plain-URL files
   under `cache_dir()/corpora/<name>/`;
4. else each missing file is downloaded into that cache (`ablab.data.download`), checked, and the
   files already there are kept.
`Located.files` is the provenance of every file, recorded in each prepared data's meta.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablab.data import download
from ablab.data.cache import cache_dir
from ablab.data.registry import CorpusSpec, RemoteFile

BUNDLED_DIR = Path(__file__).parent / "corpora"


@dataclass
class Located:
    paths: dict[str, Path]  # keyed by RemoteFile.name, for spec.train + spec.val
    source: str  # "ABLAB_DATA" | "bundled" | "cache" | "download"
    files: list[dict[str, Any]] = field(default_factory=list)  # provenance of each file, in spec.files order


def locate(spec: CorpusSpec) -> Located:
    """The local path of each of the corpus's files, where they were found, and their provenance."""
    found = where_local(spec)
    if found is not None:
        return found
    paths, files, downloaded = {}, [], False
    for file in spec.files:
        cached = _cached(spec, file)
        if cached is None:
            cached = _download(spec, file)
            downloaded = True
        paths[file.name], record = cached
        files.append(record)
    return Located(paths, "download" if downloaded else "cache", files)


def where_local(spec: CorpusSpec) -> Located | None:
    """The corpus as found without the network (ABLAB_DATA, bundled or cache), else None."""
    data_root = os.environ.get("ABLAB_DATA", "").strip()
    if data_root:
        folder = Path(data_root).expanduser() / spec.folder
        paths = {file.name: folder / file.name for file in spec.files}
        if all(path.is_file() for path in paths.values()):
            return Located(paths, "ABLAB_DATA", [_stated(file, paths[file.name], "ABLAB_DATA") for file in spec.files])
    if spec.bundled:
        path = BUNDLED_DIR / spec.bundled
        return Located({spec.files[0].name: path}, "bundled", [_stated(spec.files[0], path, "bundled")])
    cached = [_cached(spec, file) for file in spec.files]
    if all(entry is not None for entry in cached):
        return Located({file.name: entry[0] for file, entry in zip(spec.files, cached)}, "cache",
                       [entry[1] for entry in cached])
    return None


def _stated(file: RemoteFile, path: Path, source: str) -> dict[str, Any]:
    """A local copy's provenance: what the registry states (its sha256 is not recomputed here)."""
    return {"name": file.name, "repo": file.repo, "url": file.url, "revision": file.revision,
            "sha256": file.sha256, "size": path.stat().st_size, "source": source}


def _plain_folder(spec: CorpusSpec) -> Path:
    return cache_dir() / "corpora" / spec.name


def _cached(spec: CorpusSpec, file: RemoteFile) -> tuple[Path, dict[str, Any]] | None:
    if file.repo is not None:
        hit = download.cached_hub_file(file.repo, file.name, file.revision or "main", file.repo_type)
        return None if hit is None else (hit[0], {**hit[1], "source": "cache"})
    path = _plain_folder(spec) / file.name
    # fetch() renames a file into place only once its sha256 matched the registry's: no sidecar needed
    return (path, _stated(file, path, "cache")) if path.is_file() else None


def _download(spec: CorpusSpec, file: RemoteFile) -> tuple[Path, dict[str, Any]]:
    if file.repo is not None:
        path, record = download.hub_file(file.repo, file.name, file.revision or "main", file.repo_type,
                                         sha256=file.sha256, size=file.size, where=f"{spec.folder}/{file.name}")
        return path, {**record, "source": "download"}
    path = download.fetch(spec, file, _plain_folder(spec))
    return path, {**_stated(file, path, "download"), "url": download.source_url(spec, file)}

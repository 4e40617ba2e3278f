"""Where the bundled configs are: `configs/` ships inside the package (pyproject maps it to
`stlm_selfplay/configs` as package data, the way `objectives/` and `envs/` are mapped), so
`stlm run`, `stlm run micro` and the model presets work after `pip install .` or from a wheel.
An editable install (a checkout) has no `stlm_selfplay/configs/`: the repository's `configs/`."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def configs_dir() -> Path:
    """The bundled configs folder: installed package data first, else the checkout's configs/."""
    installed = _PACKAGE / "configs"
    return installed if installed.is_dir() else _PACKAGE.parent / "configs"


def config_file(path: str | Path) -> Path | None:
    """`path` if it is a file, else the bundled config it names (relative names only: `micro`,
    `micro.yaml`, `configs/micro.yaml`, `pretrain/shakespeare-tiny`,
    `configs/pretrain/shakespeare-tiny.yaml` from any folder), else None."""
    path = Path(path)
    try:
        if path.is_file():
            return path
        parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
        if path.is_absolute() or not parts or ".." in parts:
            return None
        rel = Path(*parts)
        rel = rel if rel.suffix in (".yaml", ".yml") else rel.with_name(rel.name + ".yaml")
        bundled = configs_dir() / rel
        return bundled if bundled.is_file() else None
    except OSError:  # e.g. a name longer than the file system allows: no such config
        return None


def bundled_names(folder: str = "") -> list[str]:
    """Names of the bundled configs in `folder` (e.g. '' for the staged runs, 'model')."""
    return sorted(p.stem for p in (configs_dir() / folder).glob("*.yaml"))

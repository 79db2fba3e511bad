"""revmed: memory-efficient reversible 3D networks for CT and MRI volumes.

The library is importable and usable without the command-line interface: nothing under
``revmed`` (other than the installed ``revmed.cli`` app) imports typer.
"""

from importlib.metadata import PackageNotFoundError, version

from revmed.errors import RevmedError

try:
    __version__ = version("revmed")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["RevmedError", "__version__"]

# The cffi extension is declared here: setuptools reads cffi_modules only
# from setup(); everything else is in pyproject.toml.
#
# The board's wheel carries the appliance only: deploy/beaglebone/build.sh sets
# RESHAPER_APPLIANCE_ONLY=1, and build_py then leaves out the benchmark
# (reshaper.bench) and the test lab (reshaper.lab) that pyproject.toml lists.
import os

from setuptools import setup
from setuptools.command.build_py import build_py

NOT_ON_THE_BOARD = ("reshaper.bench", "reshaper.lab")


def on_the_board(package: str) -> bool:
    return not any(package == top or package.startswith(top + ".") for top in NOT_ON_THE_BOARD)


class BuildPy(build_py):
    def finalize_options(self) -> None:
        super().finalize_options()
        if os.environ.get("RESHAPER_APPLIANCE_ONLY") == "1":
            self.packages = [p for p in self.packages or () if on_the_board(p)]


setup(cffi_modules=["reshaper/_ffi_build.py:ffibuilder"], cmdclass={"build_py": BuildPy})

# The cffi extensions are declared here: setuptools reads cffi_modules only
# from setup(); everything else is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["rules/_ffi_build.py:ffibuilder", "ring/_ffi_build.py:ffibuilder"])

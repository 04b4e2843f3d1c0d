# The C helper is built by cffi; setuptools needs this hook for cffi_modules.
from setuptools import setup

setup(cffi_modules=["src/pyckpt/_native/build.py:ffibuilder"])

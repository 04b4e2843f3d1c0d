# The C helper is built by cffi; setuptools needs this hook for cffi_modules.
from setuptools import setup

# The data file enables the Jupyter server extension pyckpt.jupyter on install
# (jupyter_server reads PREFIX/etc/jupyter/jupyter_server_config.d/*.json).
setup(cffi_modules=["src/pyckpt/_native/build.py:ffibuilder"],
      data_files=[("etc/jupyter/jupyter_server_config.d",
                   ["etc/jupyter/jupyter_server_config.d/pyckpt.json"])])

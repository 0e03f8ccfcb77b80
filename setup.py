"""Only the Cython extension list lives here; everything else is in pyproject.toml."""
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# Plain-Python modules that Cython also compiles, in pure-Python mode (a .pxd beside each
# types it). The .py ships too: uncompiled it is the interpreted build of the same source.
PURE_PYTHON = ["sampling/_json_schema_scalars.py", "sampling/_json_schema.py"]

extensions = [
    Extension(path.rsplit(".", 1)[0].replace("/", "."), [path],
              include_dirs=[numpy.get_include()], extra_compile_args=["-O3", "-pthread"],
              extra_link_args=["-pthread"])
    for path in sorted(glob("sampling/*.pyx")) + PURE_PYTHON
]

setup(ext_modules=cythonize(extensions, language_level=3, quiet=True))

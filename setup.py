"""Only the Cython extension list lives here; everything else is in pyproject.toml."""
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(path[:-4].replace("/", "."), [path], include_dirs=[numpy.get_include()],
              extra_compile_args=["-O3"])
    for path in sorted(glob("sampling/*.pyx"))
]

setup(ext_modules=cythonize(extensions, language_level=3, quiet=True))

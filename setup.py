"""Build the optional C speedup; everything else is in pyproject.toml.

``optional=True``: without a C compiler the build continues and mailseal uses
its pure-Python canonicalization, which the tests check gives identical bytes.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("mailseal.core._canon", ["src/mailseal/core/_canon.c"], optional=True)])

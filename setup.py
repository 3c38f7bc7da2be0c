"""Build hook for setuptools: everything else is in pyproject.toml.

GUARDIAN_RE2_BINDING=1 adds guardian._re2 (guardian/_re2.cc), guardian's binding to the
system's libre2, for distributions that package the RE2 library but not google-re2 (Debian:
debian/rules sets it). Without it the wheel is pure Python and pip brings google-re2
(guardian/regex_engine.py picks whichever is there).
"""

import os

from setuptools import Extension, setup

RE2_BINDING = Extension(
    "guardian._re2",
    sources=["guardian/_re2.cc"],
    libraries=["re2"],
    language="c++",
    extra_compile_args=["-std=c++17", "-Wall", "-Wextra"],
)

setup(ext_modules=[RE2_BINDING] if os.environ.get("GUARDIAN_RE2_BINDING") == "1" else [])

# SPDX-License-Identifier: Apache-2.0
"""Build step only: pyproject.toml holds the metadata. Compiles the native MSDA CPU kernel when it can.

``detr_deploy/runtime/_msda_native*.so`` is plugins/src/msdaCpu.cpp (the maths of the CUDA plugin,
plugins/src/msdaMath.h) as a plain shared library that detr_deploy.runtime.msda_native loads with ctypes; it is not
a Python module. ``optional=True``: without a working C++ compiler the package installs without it.
"""
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# no -march=native: wheels must run on other CPUs of the same architecture
UNIX_FLAGS = ["-O3", "-g0", "-std=c++17", "-pthread", "-fvisibility=hidden", "-fvisibility-inlines-hidden"]
MSVC_FLAGS = ["/O2", "/std:c++17", "/EHsc"]


class BuildNativeLibrary(build_ext):
    """Compiler-specific flags; exports only the library's own C functions (there is no PyInit_ to export)."""

    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        for ext in self.extensions:
            ext.extra_compile_args = list(MSVC_FLAGS if msvc else UNIX_FLAGS)
            ext.extra_link_args = [] if msvc else ["-pthread"]
        super().build_extensions()

    def get_export_symbols(self, ext):
        return ext.export_symbols


setup(
    ext_modules=[Extension(
        "detr_deploy.runtime._msda_native",
        sources=["plugins/src/msdaCpu.cpp"],
        depends=["plugins/src/msdaMath.h"],
        include_dirs=["plugins/src"],
        language="c++",
        optional=True,
    )],
    cmdclass={"build_ext": BuildNativeLibrary},
)

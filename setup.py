"""Build hook: generate Python from the wire contract in proto/ before packaging.

The generated modules (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``) land beside
their ``.proto`` files, are git-ignored and are never edited by hand. Everything
else about the distribution is in pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTO_ROOT = Path(__file__).resolve().parent / "proto"


class BuildWithProtos(build_py):
    def run(self) -> None:
        from importlib import resources

        from grpc_tools import protoc

        sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
        well_known = resources.files("grpc_tools") / "_proto"
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"-I{well_known}",
                f"--python_out={PROTO_ROOT}",
                f"--pyi_out={PROTO_ROOT}",
                f"--grpc_python_out={PROTO_ROOT}",
                *sources,
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed on {sources} (exit {status})")
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})

"""Build hook: compile proctor's optional C accelerator, or go on without it.

hatchling runs this before it builds a wheel (``pip install .``, ``pip install -e .``,
``python -m build``). It compiles the C accelerator -- four small modules:
``src/proctor/_sync/_native.c``, the fast paths of Lock, RLock and Semaphore (see
``src/proctor/_sync/_accel.py``), ``src/proctor/_queues/_native.c``, those of a
queue's ring (see ``src/proctor/_queues/_accel.py``), and ``src/proctor/_start/_native.c``,
a child's parent-death signal without ctypes and its parent watch without the GIL
(see ``_start/_bootstrap.py``, arm_parent_death), and ``src/proctor/_core/_native.c``,
the descriptors that fork children let go of (see ``_core/_system.py``,
let_go_in_forks) -- with the compiler and flags that this Python was built with
(``sysconfig``; ``CC``, ``CFLAGS``, ``LDSHARED`` and ``LDFLAGS`` from the environment
win, as for any extension build). When that fails -- no compiler, no Python headers --
the wheel is the pure-Python one, which does everything the accelerated one does, only
slower (but for one case: a child started from a thread of its parent, whose target
holds the GIL in one long C call, outlives a killed parent until the call returns, see
docs/processes.md); the build itself never fails for it::

    compile ── ok ─────▶ wheel tagged for this Python and platform, with every _native.*.so
            │            (editable install: the modules are built in place, in src/)
            └ failed ──▶ pure-Python wheel (py3-none-any); a note on stderr says why
                         (all or nothing: a module that fails leaves none in)

Set ``PROCTOR_BUILD_PURE=1`` to skip the compiler on purpose.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zlib
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: The C modules: (package directory, module name); the source is NAME.c there.
MODULES = (
    ("proctor/_sync", "_native"),
    ("proctor/_queues", "_native"),
    ("proctor/_start", "_native"),
    ("proctor/_core", "_native"),
)
#: A compiler that hangs must not hang the install.
COMPILE_TIMEOUT = 300


def _config(name: str) -> str:
    return os.environ.get(name) or sysconfig.get_config_var(name) or ""


def _digest(source: str) -> str:
    """The source's stamp, compiled into its module as SOURCE_DIGEST: its CRC-32 and
    length. The loader (src/proctor/_core/_accel.py, source_digest) refuses a module
    whose stamp does not match the source beside it, so an editable install left with
    a module built from older source runs pure Python instead of crashing."""
    with open(source, "rb") as file:
        data = file.read()
    return f"{zlib.crc32(data):08x}{len(data) & 0xFFFFFFFF:08x}"


def _commands(source: str, obj: str, target: str) -> list[list[str]]:
    """The compile and link commands distutils would run for this Python."""
    cc = _config("CC")
    ldshared = os.environ.get("LDSHARED") or sysconfig.get_config_var("LDSHARED") or ""
    configured_cc = sysconfig.get_config_var("CC") or ""
    # The linker is the compiler too: a CC from the environment replaces it there.
    overridden = "CC" in os.environ and "LDSHARED" not in os.environ
    if overridden and configured_cc and ldshared.startswith(configured_cc):
        ldshared = os.environ["CC"] + ldshared[len(configured_cc) :]
    includes = {sysconfig.get_paths()["include"], sysconfig.get_paths()["platinclude"]}
    compile_cmd = [
        *shlex.split(cc),
        *shlex.split(_config("CFLAGS")),
        *shlex.split(sysconfig.get_config_var("CCSHARED") or ""),
        *(f"-I{path}" for path in sorted(includes)),
        f'-DPROCTOR_SOURCE_DIGEST="{_digest(source)}"',
        "-c",
        source,
        "-o",
        obj,
    ]
    link_cmd = [*shlex.split(ldshared), obj, "-o", target]
    if "LDFLAGS" in os.environ:
        link_cmd += shlex.split(os.environ["LDFLAGS"])
    return [compile_cmd, link_cmd]


def compile_accelerator(root: str, source: str, target: str) -> str | None:
    """Build the C module ``source`` (relative to ``root``) into ``target``; return
    None, or why it could not be built."""
    source = os.path.join(root, source)
    with tempfile.TemporaryDirectory(prefix="proctor-build-") as tmp:
        obj = os.path.join(tmp, os.path.splitext(os.path.basename(source))[0] + ".o")
        built = os.path.join(tmp, os.path.basename(target))
        for cmd in _commands(source, obj, built):
            try:
                done = subprocess.run(
                    cmd,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=COMPILE_TIMEOUT,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                return f"{shlex.join(cmd[:1])} could not run: {exc}"
            if done.returncode != 0:
                output = done.stdout.strip().splitlines()[-5:]
                return f"`{shlex.join(cmd)}` failed ({done.returncode}): " + " / ".join(output)
        shutil.move(built, target)
    return None


class AcceleratorHook(BuildHookInterface):
    """Compile the C accelerator into the wheel when this machine can."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        if version != "editable":
            self._tmp = tempfile.mkdtemp(prefix="proctor-wheel-")
        built: list[tuple[str, str]] = []  # (file, its path in the wheel)
        why: str | None = None
        if os.environ.get("PROCTOR_BUILD_PURE", "") not in ("", "0"):
            why = "PROCTOR_BUILD_PURE is set"
        for package_dir, module in MODULES:
            name = module + suffix
            if version == "editable":
                # The package is imported from src/: build the module next to its source.
                target = os.path.join(self.root, "src", *package_dir.split("/"), name)
                if os.path.exists(target):
                    os.remove(target)  # never leave a module built from older source behind
            else:
                target = os.path.join(self._tmp, package_dir.replace("/", "_") + name)
            if why is None:
                source = os.path.join("src", *package_dir.split("/"), module + ".c")
                why = compile_accelerator(self.root, source, target)
                built.append((target, f"{package_dir}/{name}"))
        if why is not None:
            for target, _ in built:  # all or nothing: one build of proctor, one answer
                if os.path.exists(target):
                    os.remove(target)
            print(
                f"proctor: building without the C accelerator ({why}); locks, "
                "semaphores and queues run their pure-Python implementation, "
                "children arm their parent-death signal through ctypes, and those "
                "started from a thread watch their parent from a Python thread",
                file=sys.stderr,
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            for target, inside in built:
                build_data["force_include"][target] = inside

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

"""The software and machine a run trains on, and the settings its weights depend on bit for bit.

`describe()` gives one flat dict of JSON values (str, int, bool or None; None: not known here or
not applicable). `RUN/environment.json` holds one such dict for every piece of training:

    {"pieces": [{"step": 0, "started": "2026-12-01T03:50:12Z", "python": "3.11.7", ...},
                {"step": 1000, "started": "...", ...}]}

the first written when the run starts, one appended each time `aezoo resume` continues it; "step" is
the step the piece started from and "started" its UTC start time. The keys of a piece:

    python torch numpy aezoo        versions
    aezoo_source                    a digest of aezoo's own source files (an edited checkout runs other code)
    platform machine cpu            the OS, the architecture and the CPU's model name
    cpu_capability                  the vector instructions torch's CPU kernels were dispatched for
    device gpu cuda cudnn           the training device; the GPU's name and the CUDA/cuDNN versions (CUDA only)
    processes                       processes in the run (torchrun's world size)
    torch_threads torch_interop_threads parallel_backend
    blas mkl mkl_dynamic omp_dynamic   the BLAS torch was built with, MKL's version, and whether MKL and
                                    the OpenMP runtime may choose fewer threads at run time
    env_OMP_NUM_THREADS env_MKL_NUM_THREADS env_MKL_DYNAMIC env_OMP_DYNAMIC env_MKL_CBWR
                                    those variables as the process found them (None: unset)
    float32_matmul_precision deterministic_algorithms mkldnn_deterministic
    cudnn_deterministic cudnn_benchmark cuda_matmul_tf32 cudnn_tf32 (CUDA only)
    precision fused_optimizer       train.precision, train.fused_optimizer

What the weights depend on (`DETERMINISM_KEYS`) is also kept in the resume state; `differences`
names what changed, for the one line `aezoo resume` prints before it continues.

Same seed, same weights (issue 19): a CPU run's bits may depend on its number of intra-op threads,
which sets how some kernels split their sums: oneDNN's convolution weight gradients sum over the batch
in per-thread parts, so a conv model trained on 1 and on 2 threads ends with other weights, while the
MLP VAE's products and reductions split over their outputs and give the same bits on 1 and 2 threads
(bench/determinism.py). MKL left to itself (MKL_DYNAMIC's default, kept unless torch.set_num_threads
is called) may run a product on fewer threads than it was given, and an OpenMP runtime with dynamic
adjustment (OMP_DYNAMIC=true; GNU OpenMP then sizes each team by the load average) may do the same to
every parallel loop. `pin_threads` turns both off, as Intel's reproducibility conditions for MKL ask
(oneMKL developer guide, "Reproducibility Conditions": a fixed number of threads, MKL_DYNAMIC and
OMP_DYNAMIC false).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import hashlib
import os
import platform
import re
from importlib.metadata import version
from pathlib import Path

import numpy
import torch

from .errors import AezooError
from .files import read_json, write_json

ENVIRONMENT_FILE = "environment.json"

DETERMINISM_KEYS = (
    "torch", "aezoo", "aezoo_source", "cpu", "cpu_capability", "device", "gpu", "cuda", "cudnn", "processes",
    "torch_threads", "blas", "mkl", "mkl_dynamic", "omp_dynamic", "env_MKL_CBWR",
    "float32_matmul_precision", "deterministic_algorithms", "mkldnn_deterministic",
    "cudnn_deterministic", "cudnn_benchmark", "cuda_matmul_tf32", "cudnn_tf32",
    "precision", "fused_optimizer",
)  # fmt: skip

_ENV_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DYNAMIC", "OMP_DYNAMIC", "MKL_CBWR")


def _loaded_function(prefixes: tuple[str, ...], names: tuple[str, ...]):
    """The first of `names` exported by a shared library already mapped into this process whose file
    name starts with one of `prefixes`, torch's own copies first (Linux: read from /proc/self/maps);
    None when there is none."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split(maxsplit=5)[-1] for line in maps.splitlines()}
    paths = [p for p in paths if p.startswith("/") and os.path.basename(p).startswith(prefixes)]
    torch_dir = os.path.dirname(torch.__file__)  # the wheel's lib/ and the sibling torch.libs/
    for path in sorted(paths, key=lambda p: (not p.startswith(torch_dir), p)):
        with contextlib.suppress(OSError):
            library = ctypes.CDLL(path)
            for name in names:
                if hasattr(library, name):
                    return getattr(library, name)
    return None


def _openmp(name: str):
    """`name` from the OpenMP runtime torch's CPU kernels run on (GNU libgomp, LLVM libomp, Intel libiomp5)."""
    if not torch.backends.openmp.is_available():
        return None
    return _loaded_function(("libgomp", "libomp", "libiomp5"), (name,))


def _mkl_dynamic() -> bool | None:
    """MKL's dynamic adjustment (MKL_Get_Dynamic; torch's wheels link MKL into libtorch_cpu, where only
    its service-layer name is exported)."""
    if not torch.backends.mkl.is_available():
        return None
    get = _loaded_function(("libtorch_cpu", "libmkl_rt", "libmkl_core"), ("MKL_Get_Dynamic", "mkl_serv_get_dynamic"))
    return None if get is None else bool(get())


def pin_threads() -> None:
    """Keep this process's intra-op thread count fixed for the whole run: torch's set_num_threads also
    turns MKL's dynamic adjustment off (ATen's set_num_threads calls mkl_set_dynamic(0)), and the
    OpenMP runtime's dynamic adjustment is turned off through its own omp_set_dynamic."""
    torch.set_num_threads(torch.get_num_threads())
    set_dynamic = _openmp("omp_set_dynamic")
    if set_dynamic is not None:
        set_dynamic(0)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _source_digest() -> str:
    """SHA-256 (16 hex digits) over aezoo's Python files, their paths and contents."""
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _build_setting(pattern: str, text: str) -> str | None:
    found = re.search(pattern, text)
    return found.group(1) if found else None


def describe(device: torch.device, precision: str | None = None, fused_optimizer: bool | None = None,
             processes: int = 1) -> dict:
    """This process's environment as one flat dict (the keys in the module docstring)."""
    cuda = device.type == "cuda"
    get_omp_dynamic = _openmp("omp_get_dynamic")
    build = torch.__config__.show()
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a TorchVersion, which the resume state's reader refuses
        "numpy": numpy.__version__,
        "aezoo": version("aezoo"),
        "aezoo_source": _source_digest(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "processes": processes,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "parallel_backend": _build_setting(r"ATen parallel backend: (\w+)", torch.__config__.parallel_info()),
        "blas": _build_setting(r"BLAS_INFO=(\w+)", build),
        "mkl": _build_setting(r"Math Kernel Library Version ([\d.]+)", build),
        "mkl_dynamic": _mkl_dynamic(),
        "omp_dynamic": None if get_omp_dynamic is None else bool(get_omp_dynamic()),
        **{f"env_{name}": os.environ.get(name) for name in _ENV_VARIABLES},
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "mkldnn_deterministic": bool(torch.backends.mkldnn.deterministic),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic) if cuda else None,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if cuda else None,
        "cuda_matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
        "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32) if cuda else None,
        "precision": precision,
        "fused_optimizer": fused_optimizer,
    }


def determinism(record: dict) -> dict:
    """The part of a `describe` record that the weights depend on."""
    return {k: record.get(k) for k in DETERMINISM_KEYS}


def differences(saved: dict, now: dict) -> list[str]:
    """'key was -> now' for every determinism key whose value changed (keys a saved record lacks are
    not compared: it was written by an older aezoo)."""
    return [f"{k} {saved[k]} -> {now.get(k)}" for k in DETERMINISM_KEYS if k in saved and saved[k] != now.get(k)]


def append_piece(run_path: str | Path, step: int, record: dict) -> None:
    """Add one piece of training to RUN/environment.json (a new file when `step` is 0)."""
    path = Path(run_path) / ENVIRONMENT_FILE
    pieces = []
    if step > 0 and path.exists():
        pieces = read_json(path).get("pieces")
        if not isinstance(pieces, list):
            raise AezooError(f"{path}: expected a list under 'pieces'")
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_json(path, {"pieces": [*pieces, {"step": step, "started": started, **record}]})

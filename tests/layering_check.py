#!/usr/bin/env python3
"""ctest unit.layering: the dependency direction of ARCHITECTURE.md, checked on the #includes.

Each source folder may include headers only from the folders listed for it (its own included);
libtorch only where allowed (core, parallel, checkpoint, tokenizer, data and cluster stay free of
it: parallel may use the light c10 headers) and MPI only in parallel/, launcher/, bench/ and tests/.
Prints every violation as file:line and exits 1 when there is one."""
import pathlib
import re
import sys

ALLOWED = {
    "core": set(),
    "parallel": {"core"},
    "checkpoint": {"core"},
    "tokenizer": {"core"},
    "data": {"tokenizer", "core"},
    "quant": {"checkpoint", "core"},
    "model": {"quant", "checkpoint", "core"},
    "peft": {"model", "quant", "checkpoint", "core"},
    "trainer": {"model", "peft", "data", "tokenizer", "parallel", "checkpoint", "quant", "core"},
    "proto": {"core"},
    "cluster": {"proto", "core"},
}
NO_TORCH = {"core", "parallel", "checkpoint", "tokenizer", "data", "proto", "cluster"}
MPI_OK = {"parallel", "launcher", "bench", "tests"}

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
folders = set(ALLOWED) | {"launcher", "bench", "tests"}
include = re.compile(r'#include\s+([<"])([^>"]+)[>"]')
problems = []
for folder in sorted(ALLOWED):
    for path in sorted((root / folder).rglob("*")):
        if path.suffix not in {".h", ".cpp", ".cu", ".cc"}:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = include.match(line.strip())
            if not m:
                continue
            kind, header = m.groups()
            where = f"{path.relative_to(root)}:{number}"
            top = header.split("/")[0]
            if kind == '"' and top in folders and top != folder and top not in ALLOWED[folder]:
                problems.append(f"{where}: {folder}/ must not include {header} ({top}/)")
            if folder in NO_TORCH and (header.startswith("torch/") or header.startswith("ATen/")):
                problems.append(f"{where}: {folder}/ must not include libtorch ({header})")
            if folder not in MPI_OK and header == "mpi.h":
                problems.append(f"{where}: {folder}/ must not include mpi.h")
for p in problems:
    print(p)
print(f"layering: {len(problems)} violation(s)")
sys.exit(1 if problems else 0)

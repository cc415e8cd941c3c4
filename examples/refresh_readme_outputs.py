#!/usr/bin/env python3
"""Rewrites "The output of one run" in examples/README.md from a real run of every example.

Each example runs with the arguments its CTest test gives it (read from CTest, so the README and
examples/CMakeLists.txt cannot drift apart), and its block under "### <name>" is replaced by the
command line and what it printed (its head and tail, when it is long). Examples missing from the README are listed, not added.

Usage: examples/refresh_readme_outputs.py [build_dir=build/release]
       (build the examples first: cmake --build build/release)
"""

import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "examples" / "README.md"
# Longer outputs keep their head and tail around a "...": the middle of a long log says nothing new.
MAX_LINES, HEAD_LINES, TAIL_LINES = 50, 20, 25


def example_commands(build_dir):
    """{name: [binary, args...]} from the CTest tests named "example: <name>"."""
    listing = subprocess.run(["ctest", "--show-only=json-v1"], cwd=build_dir, check=True,
                             capture_output=True, text=True).stdout
    commands = {}
    for test in json.loads(listing)["tests"]:
        match = re.fullmatch(r"example: (\w+)", test["name"])
        if not match:
            continue
        # cmake -DCOMMAND=<binary;args...> -DEXPECT=... -P triad_check_output.cmake
        command = next(arg for arg in test["command"] if arg.startswith("-DCOMMAND="))
        commands[match.group(1)] = command[len("-DCOMMAND="):].split(";")
    if not commands:
        sys.exit(f"no 'example: <name>' tests in {build_dir}: configure it with the examples on")
    return commands


def main():
    build_dir = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build" / "release")
    text = README.read_text()
    missing = []
    for name, command in sorted(example_commands(build_dir).items()):
        block = re.compile(r"(### %s\n\n)```\n\$ (mpirun -np \d+ )?%s[ \n].*?```\n" % (name, name),
                           re.S)
        if not block.search(text):
            missing.append(name)
            continue
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            sys.exit(f"{name} exited with {run.returncode}:\n{run.stdout}{run.stderr}")
        lines = run.stdout.splitlines(keepends=True)
        if len(lines) > MAX_LINES:
            lines = lines[:HEAD_LINES] + ["...\n"] + lines[-TAIL_LINES:]
        # A launcher (mpirun for the MPI examples) comes before the binary: shown as mpirun.
        binary = next(i for i, arg in enumerate(command) if pathlib.Path(arg).name == name)
        launcher = ["mpirun", "-np", command[binary - 1]] if binary > 0 else []
        shown = ("```\n$ " + " ".join(launcher + [name] + command[binary + 1:]) + "\n" +
                 "".join(lines) + "```\n")
        text = block.sub(lambda m, shown=shown: m.group(1) + shown, text)
        print(f"{name}: {len(run.stdout.splitlines())} lines")
    README.write_text(text)
    if missing:
        sys.exit("no block in examples/README.md for: " + ", ".join(missing))


if __name__ == "__main__":
    main()

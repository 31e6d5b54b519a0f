"""The crate graph's rules (ARCHITECTURE.md), checked from `cargo metadata`:

1. a stage crate (data, estimate, surgery, finetune) never depends on another stage crate:
   stages exchange artifacts through the shared crates (lpeft-artifacts for the formats);
2. a shared crate never depends on a stage crate; only the binary (lpeft-cli) wires stages;
3. a command library (lpeft-predict: what `lpeft predict` does) depends on shared crates and
   on the stage crates it is allowed (lpeft-data, whose readers and tokenization predictions
   must share), never on another; only the binaries depend on a command library.

Dev-dependencies are free (an end-to-end test may run one stage to feed another). Run from the
repository root: `python3 tools/check_deps.py` (part of `make test`); exits 1 naming each edge
that breaks a rule.
"""
import json
import subprocess
import sys

STAGES = {"lpeft-data", "lpeft-estimate", "lpeft-surgery", "lpeft-finetune"}
BINARIES = {"lpeft-cli", "lpeft-bench"}
# Command library -> the stage crates it may use.
COMMANDS = {"lpeft-predict": {"lpeft-data"}}


def violations(metadata):
    """Edges `(from, to, rule)` of normal dependencies that break a rule."""
    members = {p["name"] for p in metadata["packages"]}
    out = []
    for p in metadata["packages"]:
        name = p["name"]
        if name in BINARIES:
            continue
        for d in p["dependencies"]:
            if d.get("kind") is not None or d["name"] not in members:
                continue  # dev/build dependencies, external crates
            if d["name"] in COMMANDS:
                out.append((name, d["name"], "only binaries depend on a command library"))
            elif d["name"] in STAGES and d["name"] != name:
                if name in COMMANDS:
                    if d["name"] in COMMANDS[name]:
                        continue
                    rule = "a command library uses no stage crate but " + \
                        ", ".join(sorted(COMMANDS[name]))
                elif name in STAGES:
                    rule = "stage crates never depend on each other"
                else:
                    rule = "shared crates never depend on a stage crate"
                out.append((name, d["name"], rule))
    return sorted(out)


def main():
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        check=True, capture_output=True, text=True).stdout)
    bad = violations(meta)
    for a, b, rule in bad:
        print(f"crate graph: {a} depends on {b} ({rule})", file=sys.stderr)
    if not bad:
        n = len([p for p in meta["packages"]])
        print(f"crate graph: {n} crates, no stage crate depends on another, none on the shared side")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

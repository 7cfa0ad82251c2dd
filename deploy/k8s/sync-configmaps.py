#!/usr/bin/env python3
"""Copies deploy/worker.yaml and deploy/rabbitmq/definitions.json into the ConfigMaps of the
Kubernetes manifests beside this script, byte for byte, so that they never drift from their
sources. Run it after editing either source; `--check` changes nothing and exits 1 when a
manifest is out of date (Tests/interop/test_k8s_manifests.py runs it).

The manifests stay plain YAML that `kubectl apply -f` takes as they are; kustomize's
configMapGenerator could read the sources only with --load-restrictor LoadRestrictionsNone,
since they lie outside this folder. Standard library only.
"""

import argparse
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
DEPLOY = HERE.parent

# (manifest, ConfigMap data key, source): each key occurs once in its manifest.
COPIES = [
    ("worker-daemonset.yaml", "worker.yaml", DEPLOY / "worker.yaml"),
    ("rabbitmq-cluster.yaml", "definitions.json", DEPLOY / "rabbitmq" / "definitions.json"),
]


def block_scalar(key, text, key_indent):
    """`key: |` and `text` as a YAML literal block scalar indented two more than the key."""
    if "\t" in text or "\r" in text:
        raise SystemExit(f"{key}: the source holds a tab or carriage return; a block scalar cannot carry it as is")
    indicator = "|"
    if text.startswith((" ", "\n")):
        indicator += "2"  # explicit indentation: the first line cannot show it
    if not text.endswith("\n"):
        indicator += "-"
    elif text.endswith("\n\n"):
        indicator += "+"
    pad = " " * (key_indent + 2)
    lines = [f"{' ' * key_indent}{key}: {indicator}\n"]
    lines += [f"{pad}{line}\n" if line else "\n" for line in text[:-1 if text.endswith("\n") else None].split("\n")]
    return lines


def synced(manifest_text, key, source_text):
    """`manifest_text` with the block under `key:` replaced by `source_text`."""
    lines = manifest_text.splitlines(keepends=True)
    pattern = re.compile(rf"^( *){re.escape(key)}: \|[0-9+-]*\s*$")
    starts = [i for i, line in enumerate(lines) if pattern.match(line)]
    if len(starts) != 1:
        raise SystemExit(f"expected one '{key}: |' line, found {len(starts)}")
    start = starts[0]
    key_indent = len(pattern.match(lines[start]).group(1))
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip(" ")) > key_indent):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # blank lines before the next key separate, they are not content
    block = block_scalar(key, source_text, key_indent)
    rest = lines[end:]
    if block[0].rstrip().endswith("+"):
        while rest and not rest[0].strip():
            rest = rest[1:]  # a kept block would take them as content
    return "".join(lines[:start] + block + rest)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a manifest is out of date")
    arguments = parser.parse_args()
    stale = []
    for manifest, key, source in COPIES:
        path = HERE / manifest
        current = path.read_text(encoding="utf-8")
        wanted = synced(current, key, source.read_text(encoding="utf-8"))
        if wanted == current:
            continue
        stale.append(f"{path.relative_to(DEPLOY.parent)} ({key} from {source.relative_to(DEPLOY.parent)})")
        if not arguments.check:
            path.write_text(wanted, encoding="utf-8")
    if stale and arguments.check:
        print("out of date; run deploy/k8s/sync-configmaps.py:\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    for line in stale:
        print(f"updated {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

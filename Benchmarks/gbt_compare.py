"""Gradient-boosted trees on a Kiln execution history, to compare with `kiln predict eval`.

Trains one scikit-learn GradientBoostingRegressor per method on the first 80% of the successful
records of the current feature schema (2) (offline, in one go, which the worker's online model cannot do) and reports the MAPE of
exec time on the rest, per method and overall, as `kiln predict eval` does for its models. The
features are the ones the worker's model sees (FeatureEncoding.swift); the target is log exec
time, as there.

    python3 -m venv .local/gbt && .local/gbt/bin/pip install scikit-learn msgpack
    kiln history export --database .local/bench-predict/run-*/predict-history.sqlite --output h.msgpack
    .local/gbt/bin/python Benchmarks/gbt_compare.py h.msgpack
    kiln predict eval --history h.msgpack          # the worker's model on the same split
"""
import math
import sys

import msgpack
from sklearn.ensemble import GradientBoostingRegressor

WARMTHS = ("warm_method", "warm", "fresh", "cold")


def features(record, arg_keys):
    """The worker's exec features for one record; trees need no scaling."""
    args = dict(pair.split("=", 1) for pair in record["numeric_args"].split(";") if "=" in pair)
    row = [1.0 if record["warmth"] == warmth else 0.0 for warmth in WARMTHS]
    row += [record["args_bytes"], record["host_cpu"], record.get("cpu_pressure") or 0, record["memory_pressure"],
            record.get("network_bps") or 0, record["concurrent_executions"], record["reuse_count"],
            record.get("unloaded_dependency_mb") or 0]
    row += [float(args.get(key, 0)) for key in arg_keys]
    return row


def actual_us(record):
    """Exec time, plus provisioning for a VM that did not exist yet (as `kiln predict eval`)."""
    extra = record["provision_us"] if record["warmth"] == "cold" else 0
    return record["exec_us"] + extra


def main(path):
    with open(path, "rb") as file:
        records = [r for r in msgpack.unpackb(file.read(), raw=False) if r["succeeded"] and (r.get("schema") or 1) == 2]
    split = int(len(records) * 0.8)
    train, test = records[:split], records[split:]
    errors = {}
    for method in sorted({r["method"] for r in test}):
        seen = [r for r in train if r["method"] == method]
        held = [r for r in test if r["method"] == method]
        if not seen:
            print(f"{method}: no training records, skipped")
            continue
        keys = sorted({pair.split("=", 1)[0] for r in seen for pair in r["numeric_args"].split(";") if "=" in pair})[:4]
        model = GradientBoostingRegressor(n_estimators=200, max_depth=3, learning_rate=0.05, random_state=0)
        model.fit([features(r, keys) for r in seen], [math.log(actual_us(r)) for r in seen])
        predicted = model.predict([features(r, keys) for r in held])
        errors[method] = [abs(math.exp(p) - actual_us(r)) / max(actual_us(r), 1) * 100 for p, r in zip(predicted, held)]
    print(f"{'method':<10} {'n':>5} {'GBT MAPE':>9} {'median':>7}")
    for method, values in errors.items():
        print(f"{method:<10} {len(values):>5} {sum(values) / len(values):>8.1f}% {sorted(values)[len(values) // 2]:>6.1f}%")
    everything = [value for values in errors.values() for value in values]
    print(f"{'all':<10} {len(everything):>5} {sum(everything) / len(everything):>8.1f}% {sorted(everything)[len(everything) // 2]:>6.1f}%")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".local/history-generated.msgpack")

"""Parses a Prometheus text exposition with prometheus_client's own parser and prints its
samples as JSON lines: {"family", "type", "name", "labels", "value"}. A text the parser
refuses fails the run, so the caller checks both the format and the values."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            print(json.dumps({
                "family": family.name,
                "type": family.type,
                "name": sample.name,
                "labels": sample.labels,
                "value": sample.value,
            }))


if __name__ == "__main__":
    main(sys.argv[1])

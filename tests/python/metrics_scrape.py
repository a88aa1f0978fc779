"""Scrapes a Prometheus endpoint and parses it with prometheus_client's own parser, as a
Prometheus server would; prints each sample as one JSON line: [name, labels, value].

    metrics_scrape.py URL
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value], sort_keys=True))

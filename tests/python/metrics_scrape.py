"""Scrapes a Prometheus endpoint and parses it with prometheus_client's own parsers, as a
Prometheus server would; prints the content type, then each sample as one JSON line:
[name, labels, value, type of its family].

    metrics_scrape.py URL              the classic text format (no Accept header)
    metrics_scrape.py URL openmetrics  asks for OpenMetrics, parses with the OpenMetrics parser
"""
import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

openmetrics = len(sys.argv) > 2 and sys.argv[2] == "openmetrics"
req = urllib.request.Request(sys.argv[1])
if openmetrics:
    req.add_header(
        "Accept",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
with urllib.request.urlopen(req, timeout=5) as resp:
    content_type = resp.headers.get("Content-Type", "")
    text = resp.read().decode()
print(json.dumps(["content-type", content_type]))
parse = openmetrics_families if openmetrics else text_string_to_metric_families
for family in parse(text):
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value, family.type], sort_keys=True))

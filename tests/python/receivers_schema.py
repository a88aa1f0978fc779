"""Validates the bodies dispatch posted to mock receivers against each receiver's documented
shape (tests/fixtures/receivers/*.schema.json, with the `jsonschema` reference validator).
Usage: receivers_schema.py SCHEMA_DIR BODIES_DIR  (BODIES_DIR/<kind>-<n>.json)
"""
import json
import pathlib
import sys

import jsonschema

schemas, bodies = map(pathlib.Path, sys.argv[1:3])
checked = {}
for body in sorted(bodies.glob("*.json")):
    kind = body.name.split("-")[0]
    schema = json.loads((schemas / f"{kind}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(json.loads(body.read_text())))
    if errors:
        for e in errors:
            print(f"{body.name}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
        sys.exit(1)
    checked[kind] = checked.get(kind, 0) + 1
print("receivers schema ok", json.dumps(checked, sort_keys=True))

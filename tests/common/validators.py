"""Validators the tests call: JSON Schema (draft 2020-12) and OpenAPI 3.1.

Reads one JSON object on standard input and prints one JSON answer:
  {"schema": S, "instances": [...]}  ->  {"errors": [[message, ...], ...]}  (one list per instance)
  {"schema": S, "yaml": [text, ...]} ->  the same, for YAML documents (an empty one is {})
  {"openapi": DOC}                   ->  {"error": null | message}
Exit code 3 when a validator package is missing (the test then says what to install).
"""
import json
import sys

request = json.load(sys.stdin)
try:
    if "openapi" in request:
        from openapi_spec_validator import validate
    else:
        import jsonschema
    if "yaml" in request:
        import yaml
except ImportError as e:
    print(f"missing Python package: {e.name}", file=sys.stderr)
    sys.exit(3)

if "openapi" in request:
    try:
        validate(request["openapi"])
        print(json.dumps({"error": None}))
    except Exception as e:  # the validator's own error types
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
else:
    schema = request["schema"]
    if "yaml" in request:
        request["instances"] = [yaml.safe_load(text) or {} for text in request["yaml"]]
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = [
        [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in validator.iter_errors(instance)]
        for instance in request["instances"]
    ]
    print(json.dumps({"errors": errors}))

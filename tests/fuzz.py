"""A fuzzer of the Open Inference Protocol: schemathesis generates requests from the protocol's own
OpenAPI document (tests/schemas/open-inference-protocol-dataplane.openapi.json, MLServer's) for
the operations cd4ml's V2 server answers, sends them to a running server, and checks each answer
with schemathesis's own checks: no server error, a documented status code, a body that matches the
document's schema. Refusals are also checked against the protocol's error format ({"error": ...}).
Used by tests/test_fuzz.py (a bounded run) and benchmarks/fuzz.py (a long one)."""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Dict, List

import requests

from cd4ml.contract import MODEL_NAME
from pipelines.config import REPO_ROOT

SPEC = os.path.join(REPO_ROOT, "tests", "schemas", "open-inference-protocol-dataplane.openapi.json")
# The operations the server answers (not the repository API, streams or generation, which it
# does not serve); {model_name} fuzzed too: an unknown model is a documented 404.
OPERATIONS = {("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
              ("GET", "/v2/models/{model_name}"), ("POST", "/v2/models/{model_name}/infer"),
              ("POST", "/v2/models/{model_name}/versions/{model_version}/infer")}


@dataclasses.dataclass
class FuzzResult:
    requests: int = 0
    statuses: Dict[int, int] = dataclasses.field(default_factory=collections.Counter)
    server_errors: int = 0
    outside_format: int = 0          # a 4xx whose body is not {"error": "..."}
    failures: List[str] = dataclasses.field(default_factory=list)  # schemathesis check failures, first few

    def as_dict(self) -> Dict[str, object]:
        return {"requests": self.requests, "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "server_errors": self.server_errors, "refusals_outside_protocol_format": self.outside_format,
                "check_failures": len(self.failures), "first_failures": self.failures[:5]}


def fuzz(base_url: str, examples: int, seed: int = 0, known_model_share: bool = True) -> FuzzResult:
    """Send `examples` generated requests per operation to the server at `base_url`."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    schema = schemathesis.openapi.from_path(SPEC)
    result = FuzzResult()
    session = requests.Session()
    for found in schema.get_all_operations():
        operation = found.ok()
        if (operation.method.upper(), operation.path) not in OPERATIONS:
            continue
        strategy = operation.as_strategy()
        if known_model_share and "{model_name}" in operation.path:  # most cases name the served model
            strategy = st.tuples(strategy, st.booleans()).map(_name_the_model)

        @settings(max_examples=examples, deadline=None, database=None, derandomize=seed == 0,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def send(case):
            response = case.call(base_url=base_url, session=session, timeout=30)
            result.requests += 1
            result.statuses[response.status_code] += 1
            if response.status_code >= 500:
                result.server_errors += 1
            elif response.status_code >= 400 and not _protocol_error(response):
                result.outside_format += 1
            try:
                case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                         response_schema_conformance])
            except Exception as failure:  # noqa: BLE001 - schemathesis raises its failures; we count them
                result.failures.append(f"{case.method} {case.formatted_path}: {str(failure)[:300]}")

        send()
    return result


def _name_the_model(pair):
    case, known = pair
    if known:
        case.path_parameters["model_name"] = MODEL_NAME
    return case


def _protocol_error(response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str) and set(body) <= {"error"}

"""schemathesis over the management API's own OpenAPI schema, against a real ``aegis manage`` on the real cluster.

Stateless: every operation with generated (valid and invalid) input, checked for no 5xx and every response matching
its documented status, content type and schema. Stateful: create -> read -> update with If-Match -> delete -> 404
chains, linked through the responses (schemathesis infers the links from the Location header and path parameters).

The fuzzing principal holds every scope but ``admin``: generated calls must not delete or re-role the admin the
rest of the run logs in with (admin routes answer it 403, which is documented). The endless event stream and the
login endpoint (its rate limit would lock the admin out for a minute) are left to their own tests.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from management_server import ManagementServer

from aegis.management.auth import SCOPES

# A schema-valid request may still meet the state of the world: a definition that is not there (404), exists
# already (409) or moved on since the If-Match it names (412). And OpenAPI cannot say that ``until`` comes after
# ``since``, or that an audit page takes a cursor or a time, not both (400 naming the rule). Those are answers,
# not rejections; a 5xx never is.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2XX", "400", "401", "403", "404", "409", "412"]
            }
        }
    }
)
_SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_server(management: ManagementServer) -> ManagementServer:
    return management


@pytest.fixture(scope="module")
def fuzz_token(fuzz_server: ManagementServer) -> str:
    return fuzz_server.token(sorted(set(SCOPES) - {"admin"}))


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ManagementServer) -> schemathesis.BaseSchema:
    return (
        schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", config=CONFIG)
        .exclude(path="/api/events")
        .exclude(path="/api/token")
    )


def test_every_operation_answers_as_documented(api_schema: schemathesis.BaseSchema, fuzz_token: str) -> None:
    # one hypothesis run per operation (schemathesis' pytest plugin does not load under this pytest)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @_SETTINGS
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {fuzz_token}"})

        check()


def test_definition_lifecycle_statefully(
    api_schema: schemathesis.BaseSchema, fuzz_server: ManagementServer, fuzz_token: str
) -> None:
    started = time.time()
    # the definitions and one definition; its history stays readable after a delete (it shows the delete), which
    # the use-after-free check would take for a deleted resource still served
    # The list (GET /api/services) is left out: the names it links to are the server's whole state, which other
    # tests and earlier examples change, and hypothesis needs each example's choices to repeat (it stops with
    # FlakyStrategyDefinition otherwise). The chains start from creates, whose names are unique (before_call).
    services = api_schema.include(path_regex=r"^/api/services(/\{name\})?$").exclude(
        method="GET", path="/api/services"
    )
    machine = services.as_state_machine()

    class Auth(machine):  # type: ignore[misc, valid-type]
        def before_call(self, case: schemathesis.Case) -> None:
            # each create gets a name no earlier example used, so the server's state left by earlier examples
            # cannot change which steps follow (hypothesis requires generation to repeat itself)
            if (
                case.method == "POST"
                and isinstance(case.body, dict)
                and isinstance(case.body.get("name"), str)
            ):
                case.body = {**case.body, "name": f"{case.body['name'][:100]}-{uuid.uuid4().hex[:8]}"}

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            return {"headers": {"Authorization": f"Bearer {fuzz_token}"}}

        def validate_response(
            self, response: Any, case: schemathesis.Case, *args: Any, **kwargs: Any
        ) -> None:
            try:
                super().validate_response(response, case, *args, **kwargs)
            except Exception as exc:
                failures.append(
                    f"{case.method} {case.formatted_path} body={case.body!r}"
                    f" -> {response.status_code} {response.text[:500]}\n{exc}"
                )
                raise

    # generation only: the server's state persists between examples, so hypothesis cannot replay one to shrink it
    # (the failure it prints is already a whole request sequence with a curl line per step)
    # The step that failed, as it first failed: replaying it to report it meets a server whose state moved on,
    # and hypothesis may then report only that its data generation was not repeatable.
    failures: list[str] = []
    try:
        Auth.run(
            settings=settings(
                max_examples=40, stateful_step_count=8, deadline=None, database=None, phases=[Phase.generate]
            )
        )
    except Exception as exc:
        if failures:
            raise AssertionError(f"first failing step: {failures[0]}") from exc
        raise
    # the chains really ran: the audit log has creates, and updates and deletes that named the right ETag
    with fuzz_server.client(fuzz_server.token()) as admin:
        page = admin.get("/api/audit", params={"since": started, "limit": 500})
    assert page.status_code == 200, page.text
    actions = {e["action"] for e in page.json()["entries"]}
    assert {"service.create", "service.update", "service.delete"} <= actions, actions

"""schemathesis hooks for tests/reliability/test_fuzz_api.py (loaded through SCHEMATHESIS_HOOKS).

Generated Idempotency-Keys repeat across generated bodies; the server then rightly answers 422
``idempotency_key_reused`` (API.md), which schemathesis would count as a schema-valid request
refused. Only that failure is dropped: every other 422 still fails the run.

Likewise ``?at_seq=N`` above the draft's head is 400 ``invalid_parameter`` (API.md v2 "Time
travel over HTTP"), a bound the schema cannot state (the head is not known to it): only that
refusal — the server's own "at most the draft's head" message — is dropped.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    try:
        error = response.json()["error"]
        code, message = error["code"], str(error.get("message", ""))
    except Exception:
        return True
    if response.status_code == 422 and code == "idempotency_key_reused":
        return False
    beyond_head = code == "invalid_parameter" and message.startswith(
        "at_seq must be at most the draft's head"
    )
    return not (response.status_code == 400 and beyond_head)

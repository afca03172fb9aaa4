"""Schemathesis hooks for e2e/fuzz/run.sh: mix realistic inputs into what Schemathesis generates.

A few request bodies cannot be steered with dictionaries, and without help the fuzzer almost never
gets past their validation, so their success answers would go unchecked:
- PUT /policies/{name} takes the policy source as text/plain: random text never compiles.
- POST /token takes a form: random fields are never a valid grant.
- POST /resources/{kind} and PUT /resources/{kind}/{id} take any JSON object, but the shipped
  policies let a plain user write a note only with a string `title` (and a task only with a string
  `assignee`, if any): random objects give the user nothing but 403.
Each hook adds a few real values *next to* the generated ones (one_of), so the random inputs keep
coming too. Nothing here touches responses or checks.
"""

from __future__ import annotations

import os

import schemathesis
from hypothesis import strategies as st

POLICY_SOURCES = [
    "true",  # compiles: 201 for a new kind, 422 for a policy whose tests it breaks
    "false",
    '#{ allow: false, reason: "closed" }',
    'if action == "read" { true } else { #{ allow: false, reason: "read only" } }',
    "if (",  # does not compile: 422
]


@schemathesis.hook("before_generate_body").apply_to(operation_id="put_policy")
def policy_sources(context, strategy):
    return st.one_of(strategy, st.sampled_from(POLICY_SOURCES))


@schemathesis.hook("before_generate_headers").apply_to(operation_id=["put_policy", "delete_policy"])
def sometimes_no_if_match(context, strategy):
    # A random If-Match is always stale (412); without one the change goes through.
    return st.one_of(strategy, st.just({}))


def _token_forms() -> list[dict[str, str]]:
    user = os.environ.get("FUZZ_LOGIN_USER", "fuzzuser")
    password = os.environ.get("FUZZ_LOGIN_PASSWORD", "fuzzuser-password-1")
    wrong = {"grant_type": "password", "username": "nobody", "password": "not-the-password"}
    return [
        {"grant_type": "password", "username": user, "password": password},  # 200
        {"grant_type": "password", "username": user, "password": "not-the-password"},  # 400
        # Weighted, so that the failures for one name pass login_failure_limit (10): 429.
        wrong, wrong, wrong, wrong, wrong, wrong, wrong, wrong,
        {"grant_type": "refresh_token", "refresh_token": "not-a-refresh-token"},
        {"grant_type": "client_credentials"},
    ]


@schemathesis.hook("before_generate_body").apply_to(operation_id="issue_token")
def token_forms(context, strategy):
    return st.one_of(strategy, st.sampled_from(_token_forms()))


# Bodies that the shipped notes.rhai and tasks.rhai let a plain user write: a string `title`,
# sometimes `public` (others may then read it) and the fields tasks look at.
DOCUMENT_BODIES = st.fixed_dictionaries(
    {"title": st.text(max_size=16)},
    optional={
        "public": st.booleans(),
        "assignee": st.sampled_from(["fuzzuser", "admin", "victim-user"]),
        "items": st.lists(st.text(max_size=8), max_size=3),
    },
)


@schemathesis.hook("before_generate_body").apply_to(operation_id=["create_document", "replace_document"])
def document_bodies(context, strategy):
    return st.one_of(strategy, DOCUMENT_BODIES)

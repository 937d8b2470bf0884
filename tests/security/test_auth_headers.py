"""Malformed ``Authorization`` headers are refused with a JSON 401, never a 500."""

import json

import pytest

pytestmark = pytest.mark.django_db

HEADERS = [
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    "Bearer mon_",
    "Bearer mon__",
    "Bearer mon_abc_",
    "Bearer mon_000000000000_" + "x" * 43,
    "Bearer " + "A" * 10_000,
    "Bearer caf\u00e9",  # a latin-1 byte in the header, as a server decodes it
    "Bearer \x00",
    "Token abc",
]
EVENT = json.dumps({"event_type": "tool.call", "source": "headers"})


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize(
    "method, path",
    [("POST", "/api/events"), ("GET", "/api/events"), ("GET", "/metrics"),
     ("GET", "/api/realtime-token"), ("GET", "/api/transport")],
)  # fmt: skip
def test_a_malformed_authorization_header_is_a_json_401(client, method, path, header):
    if method == "POST":
        response = client.post(
            path, data=EVENT, content_type="application/json", headers={"Authorization": header}
        )
    else:
        response = client.get(path, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_metrics_accepts_its_token_and_refuses_another(client, settings):
    settings.METRICS_TOKEN = "metrics-token-for-tests"
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-for-tests"})
    assert ok.status_code == 200


def test_metrics_with_a_token_set_refuses_a_non_ascii_bearer_with_401(client, settings):
    settings.METRICS_TOKEN = "metrics-token-for-tests"
    response = client.get("/metrics", headers={"Authorization": "Bearer caf\u00e9"})
    assert response.status_code == 401

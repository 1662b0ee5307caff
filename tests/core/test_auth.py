"""Identity: API keys (hashed, revocable), OIDC/JWT tokens against a real JWKS endpoint, roles per
route, the bootstrap admin key, and auth switched off for demos."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from api.cli.admin import bootstrap_admin_key, sql_stores
from api.cli.main import app
from api.main import create_app
from core.auth import AuthError, JwtVerifier, KeyStore
from core.models import Role
from core.settings import get_settings
from tests.helpers import (
    bearer,
    free_port,
    make_settings,
    new_key,
    stop,
    wait_for_http,
)

ISSUER = "https://idp.example.test/realms/regulus"
AUDIENCE = "regulus-api"


@pytest.fixture
def keys(database_url: str | None, tmp_path: Path) -> Iterator[KeyStore]:
    with sql_stores(make_settings(tmp_path, database_url=database_url)) as (store, _):
        yield store


class TestApiKeys:
    def test_created_key_authenticates_and_only_its_hash_is_stored(
        self, keys: KeyStore, database_url: str | None, tmp_path: Path
    ) -> None:
        key, secret = keys.create(Role.EVALUATOR, ["legal", " public", "legal"], name="eva")
        assert secret.startswith("rk_") and len(secret) > 40
        principal = keys.authenticate(secret)
        assert (principal.subject, principal.role, principal.groups) == (
            f"key:{key.key_id}",
            Role.EVALUATOR,
            ["legal", "public"],
        )
        with sql_stores(make_settings(tmp_path, database_url=database_url)) as (_, audit):
            engine = audit._sessions.kw["bind"]
            with engine.connect() as connection:
                stored = [
                    str(v)
                    for row in connection.execute(text("SELECT * FROM api_keys"))
                    for v in row
                ]
            assert not any(secret in value or secret[3:] in value for value in stored)
            events = [e.event for e in audit.entries()[0]]
            assert events == ["key.created"]

    def test_revoked_and_unknown_keys_are_refused(self, keys: KeyStore) -> None:
        key, secret = keys.create(Role.ANALYST, ["public"])
        assert keys.revoke(key.key_id, actor="key:admin") is not None
        with pytest.raises(AuthError, match="revoked"):
            keys.authenticate(secret)
        with pytest.raises(AuthError, match="unknown"):
            keys.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
        assert keys.revoke("no-such-key") is None
        listed = keys.keys()
        assert [k.revoked_at is not None for k in listed] == [True]

    def test_bootstrap_admin_is_created_once(self, keys: KeyStore) -> None:
        secret = keys.ensure_admin(["public"])
        assert secret is not None and keys.authenticate(secret).role is Role.ADMIN
        assert keys.ensure_admin(["public"]) is None
        (admin,) = keys.keys()
        keys.revoke(admin.key_id)
        assert keys.ensure_admin(["public"]) is not None  # no usable admin left: a new one

    def test_cli_create_list_revoke(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGULUS_DATA_DIR", str(tmp_path))
        monkeypatch.delenv("REGULUS_DATABASE_URL", raising=False)
        get_settings.cache_clear()
        runner = CliRunner()
        created = runner.invoke(
            app, ["keys", "create", "--role", "analyst", "--groups", "legal,board", "--name", "al"]
        )
        assert created.exit_code == 0, created.output
        secret = created.output.strip().splitlines()[-1]
        key_id = created.output.split()[1]
        with sql_stores(get_settings()) as (store, _):
            assert store.authenticate(secret).groups == ["board", "legal"]
        listed = runner.invoke(app, ["keys", "list"], env={"COLUMNS": "200"})
        assert key_id in listed.output and secret not in listed.output
        assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
        missing = runner.invoke(app, ["keys", "revoke", "nope"])
        assert missing.exit_code == 2 and "no key 'nope'" in missing.output
        invalid = runner.invoke(app, ["keys", "create", "--role", "root"])
        assert invalid.exit_code == 2
        get_settings.cache_clear()


# --- JWT -------------------------------------------------------------------------------------


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING = _rsa()
OTHER = _rsa()


def _jwks(*pairs: tuple[str, rsa.RSAPrivateKey]) -> dict[str, Any]:
    keys = []
    for kid, private in pairs:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
    return {"keys": keys}


def token(
    private: rsa.RSAPrivateKey = SIGNING,
    kid: str = "k1",
    expires_in: float = 300,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice@example.com",
        "iat": now,
        "exp": now + int(expires_in),
        **claims,
    }
    return jwt.encode(payload, private, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    """The identity provider's JWKS endpoint: a real HTTP server on loopback."""
    body = json.dumps(_jwks(("k1", SIGNING))).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/jwks.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()


class TestJwt:
    @pytest.fixture
    def verifier(self, jwks_url: str) -> JwtVerifier:
        return JwtVerifier(ISSUER, jwks_url, audience=AUDIENCE)

    def test_valid_token_gives_role_and_groups(self, verifier: JwtVerifier) -> None:
        principal = verifier.run(token(role=["analyst", "admin"], groups=["legal", "board"]))
        assert (principal.subject, principal.role, principal.groups) == (
            "oidc:alice@example.com",
            Role.ADMIN,
            ["legal", "board"],
        )

    def test_missing_or_unknown_role_is_analyst(self, verifier: JwtVerifier) -> None:
        assert verifier.run(token()).role is Role.ANALYST
        assert verifier.run(token(role="superuser", groups="a b")).groups == ["a", "b"]
        assert verifier.run(token(role="superuser")).role is Role.ANALYST

    def test_claims_at_a_nested_path(self, jwks_url: str) -> None:
        keycloak = JwtVerifier(
            ISSUER,
            jwks_url,
            audience=AUDIENCE,
            role_claim="realm_access.roles",
            groups_claim="regulus.groups",
        )
        principal = keycloak.run(
            token(realm_access={"roles": ["evaluator", "offline"]}, regulus={"groups": ["x"]})
        )
        assert (principal.role, principal.groups) == (Role.EVALUATOR, ["x"])

    @pytest.mark.parametrize(
        ("bad", "message"),
        [
            ({"aud": "someone-else"}, "(?i)audience"),
            ({"iss": "https://evil.example"}, "(?i)issuer"),
            ({"expires_in": -3600}, "(?i)expired"),
            ({"private": OTHER}, "Signature verification failed"),
            ({"kid": "unknown"}, "Unable to find a signing key"),
        ],
    )
    def test_bad_tokens_are_refused(
        self, verifier: JwtVerifier, bad: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(AuthError, match=message):
            verifier.run(token(**bad))

    def test_unsigned_and_symmetric_tokens_are_refused(self, verifier: JwtVerifier) -> None:
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60}
        with pytest.raises(AuthError):
            verifier.run(jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"}))
        with pytest.raises(AuthError):
            verifier.run(jwt.encode(claims, "k" * 32, algorithm="HS256", headers={"kid": "k1"}))

    def test_jwks_from_a_file_and_inline(self, tmp_path: Path) -> None:
        jwks = json.dumps(_jwks(("k1", SIGNING), ("k2", OTHER)))
        path = tmp_path / "jwks.json"
        path.write_text(jwks)
        for source in (str(path), jwks):
            verifier = JwtVerifier(ISSUER, source, audience=AUDIENCE)
            assert verifier.run(token(kid="k2", private=OTHER)).subject == "oidc:alice@example.com"
            with pytest.raises(AuthError, match="no signing key"):
                verifier.run(token(kid="k3"))

    def test_configuration_errors(self) -> None:
        with pytest.raises(ValueError, match="REGULUS_JWT_JWKS"):
            JwtVerifier(ISSUER, "")
        assert JwtVerifier.from_settings(make_settings(Path("unused"))) is None


# --- over HTTP -------------------------------------------------------------------------------


@pytest.mark.integration
class TestRoutes:
    def test_keys_api_roles_jwt_and_denials(
        self, ingested_dir: Path, tmp_path: Path, jwks_url: str
    ) -> None:
        settings = make_settings(
            ingested_dir, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_jwks=jwks_url
        )
        admin = bearer(new_key(settings, Role.ADMIN))
        with TestClient(create_app(settings)) as client:
            created = client.post(
                "/v1/keys",
                json={"role": "analyst", "groups": ["public"], "name": "al"},
                headers=admin,
            )
            assert created.status_code == 201
            analyst = bearer(created.json()["key"])
            key_id = created.json()["key_id"]
            listed = client.get("/v1/keys", params={"limit": 500}, headers=admin).json()
            query = client.post("/v1/query", json={"question": "breach"}, headers=analyst)
            forbidden = client.post("/v1/keys", json={"role": "admin"}, headers=analyst)
            jwt_admin = client.get(
                "/v1/keys", headers=bearer(token(role="admin", groups=["public"]))
            )
            jwt_analyst_query = client.post(
                "/v1/query", json={"question": "breach"}, headers=bearer(token(groups=["public"]))
            )
            jwt_analyst_keys = client.get("/v1/keys", headers=bearer(token()))
            expired = client.get("/v1/usage/me", headers=bearer(token(expires_in=-3600)))
            revoked = client.delete(f"/v1/keys/{key_id}", headers=admin)
            after = client.post("/v1/query", json={"question": "breach"}, headers=analyst)
            missing = client.delete("/v1/keys/nope", headers=admin)
            anonymous = client.get("/v1/documents")
            denials = client.get(
                "/v1/audit", params={"event": "auth.denied", "limit": 500}, headers=admin
            ).json()
        assert {"key", "key_hash"}.isdisjoint(listed["items"][0])
        assert key_id in {k["key_id"] for k in listed["items"]} and listed["total"] >= 2
        assert created.json()["subject"] == f"key:{key_id}"
        assert query.status_code == 200 and query.json()["query_id"] > 0
        assert forbidden.status_code == 403
        assert forbidden.json() == {
            "error": {"code": "forbidden", "message": "this route is for admin"}
        }
        assert jwt_admin.status_code == 200
        assert jwt_analyst_query.status_code == 200 and jwt_analyst_query.json()["passages"]
        assert jwt_analyst_keys.status_code == 403
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert after.status_code == 401 and after.json()["error"]["code"] == "invalid_credentials"
        assert missing.status_code == 404
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
        denied = {(d["target"], d["detail"]["status"]) for d in denials["items"]}
        # The revoked key's query repeats the expired token's denial (same client, same code):
        # it is coalesced into that window's row, written when the window closes.
        assert {
            ("POST /v1/keys", 403),
            ("GET /v1/documents", 401),
            ("GET /v1/usage/me", 401),
        } <= denied

    def test_auth_off_makes_everyone_an_anonymous_analyst(self, ingested_dir: Path) -> None:
        settings = make_settings(ingested_dir, auth_enabled=False, anonymous_groups=["public"])
        with TestClient(create_app(settings)) as client:
            answered = client.post("/v1/query", json={"question": "breach notification"})
            keys = client.get("/v1/keys")
            mine = client.get("/v1/usage/me").json()
        assert answered.status_code == 200 and answered.json()["passages"]
        assert keys.status_code == 403
        assert mine["principal"] == "anonymous" and mine["queries"] >= 1
        assert bootstrap_admin_key(settings) is None

    @pytest.mark.slow
    def test_first_start_prints_a_bootstrap_admin_key(self, tmp_path: Path) -> None:
        """`regulus serve` (what `make run` starts) on an empty data folder."""
        port = free_port()
        env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "REGULUS_DATA_DIR": str(tmp_path)}
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "api.cli.main", "serve", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_for_http(f"http://127.0.0.1:{port}/healthz", server)
                printed = log.read_text()
                secret = next(w for w in printed.split() if w.startswith("rk_"))
                keys = httpx.get(f"http://127.0.0.1:{port}/v1/keys", headers=bearer(secret))
                nobody = httpx.get(f"http://127.0.0.1:{port}/v1/keys")
            finally:
                stop(server)
        assert "bootstrap admin API key" in printed
        assert keys.status_code == 200 and keys.json()["items"][0]["name"] == "bootstrap-admin"
        assert nobody.status_code == 401
        assert bootstrap_admin_key(make_settings(tmp_path)) is None  # not on the second start

"""Who is calling the gateway: bearer tokens, each with a name and scopes.

    speechq token new alice --scopes submit,read   # prints the token once, and its line below

The tokens file (SPEECHQ_API_TOKENS_FILE) holds one token a line, stored only as its digest:

    # name   scopes        digest of the token
    alice    submit,read   sha256:4f0c...e1
    ops      admin         sha256:9a7d...03

Scopes: `submit` (queue jobs), `read` (see, download and cancel one's own jobs), `admin`
(everything, every job). Tokens are random 256-bit strings made by `new_token`, so a plain
SHA-256 is enough to keep the file useless to a reader. The file is read again when it changes:
a removed line revokes its token without a restart. SPEECHQ_API_TOKEN, the older single shared
token, is an admin token named `admin`. With neither set, auth is off and every caller is an
admin (a gateway on localhost for one user).

Another router mounted into the gateway asks for an identity the same way:

    @router.post("/v1/audio/speech")
    def speech(body: ..., who: Identity = Depends(require("submit"))): ...
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request

SCOPES = ("submit", "read", "admin")
DIGEST_PREFIX = "sha256:"
SHARED_TOKEN_NAME = "admin"


@dataclass(frozen=True)
class Identity:
    name: str  # recorded on each job it submits
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def can(self, scope: str) -> bool:
        return self.admin or scope in self.scopes

    def owns(self, submitter: str | None) -> bool:
        """Whether a job recorded as submitted by `submitter` is this caller's to see."""
        return self.admin or (submitter or "") == self.name


ANYONE = Identity("", frozenset({"admin"}))  # auth off


def new_token() -> str:
    return "sq_" + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return DIGEST_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def token_line(name: str, scopes: list[str], token: str) -> str:
    return f"{name}\t{','.join(scopes)}\t{digest(token)}"


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = scopes - set(SCOPES)
    if not scopes or unknown:
        raise ValueError(f"scopes {text!r}: a comma-separated list of {', '.join(SCOPES)}")
    return scopes


def read_tokens_file(path: Path) -> dict[str, Identity]:
    """digest -> identity; ValueError naming the line for anything malformed."""
    tokens, names = {}, set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(DIGEST_PREFIX) or len(parts[2]) != 71:
            raise ValueError(f"{path}:{number}: expected `name scopes sha256:<64 hex digits>`")
        name, scopes, token_digest = parts
        if name in names:
            raise ValueError(f"{path}:{number}: the name {name!r} is used twice")
        try:
            tokens[token_digest.lower()] = Identity(name, parse_scopes(scopes))
        except ValueError as e:
            raise ValueError(f"{path}:{number}: {e}") from None
        names.add(name)
    return tokens


class Tokens:
    """The tokens a gateway accepts: the shared token and the tokens file, reread on change."""

    def __init__(self, shared_token: str = "", tokens_file: str = ""):
        self.shared = shared_token
        self.path = Path(tokens_file).expanduser().resolve() if tokens_file else None
        self._stamp: tuple | None = None
        self._by_digest: dict[str, Identity] = {}
        if self.path is not None:
            self._reload()

    @classmethod
    def from_settings(cls, settings) -> "Tokens":
        return cls(settings.api_token, settings.api_tokens_file)

    @property
    def enabled(self) -> bool:
        return bool(self.shared or self.path)

    def identify(self, token: str) -> Identity | None:
        if self.shared and hmac.compare_digest(token.encode(), self.shared.encode()):
            return Identity(SHARED_TOKEN_NAME, frozenset({"admin"}))
        if self.path is None or not token:
            return None
        self._reload()
        return self._by_digest.get(digest(token))

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise RuntimeError(f"the tokens file {self.path} cannot be read: {e}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._by_digest = read_tokens_file(self.path)
            self._stamp = stamp


def install(app, settings) -> Tokens:
    """Give `app` the tokens that `require` checks."""
    app.state.tokens = Tokens.from_settings(settings)
    return app.state.tokens


def caller(request: Request) -> Identity | None:
    """The identity behind the request's bearer token; ANYONE when auth is off, None for a
    missing or unknown token."""
    tokens: Tokens = request.app.state.tokens
    if not tokens.enabled:
        return ANYONE
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return tokens.identify(token.strip())


def require(scope: str):
    """A FastAPI dependency: the caller's identity, 401 without a valid token, 403 without
    `scope`."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def dependency(request: Request) -> Identity:
        who = caller(request)
        if who is None:
            raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
        if not who.can(scope):
            raise HTTPException(403, f"this token lacks the {scope!r} scope")
        return who

    return dependency

"""Secrets: ``env:NAME`` references resolved when used, literals kept in this process only.

A sync stores only the reference; the value is read from the environment each time a
connection opens, and every value seen is registered with :func:`dfsync.errors.register_secret`
so it never reaches a message, an event or a repr.
"""

from __future__ import annotations

import os
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .errors import ConfigError, DfsyncError, register_secret

__all__ = ["is_reference", "resolve_secret", "split_password", "take_password", "uri_with_password"]


def is_reference(value: str) -> bool:
    return value.startswith("env:")


def resolve_secret(value: str | None, what: str, *, error: type[DfsyncError] = ConfigError,
                   required: bool = False) -> str | None:
    """``"env:NAME"`` -> the value of environment variable NAME (else the value itself).

    ``required``: an empty value counts as not set. ``error``: what an unset variable raises.

    >>> resolve_secret("env:HOME", "password") == os.environ["HOME"]
    True
    """
    if value is None or not is_reference(value):
        return value
    name = value[4:]
    secret = os.environ.get(name)
    if secret is None or (required and not secret):
        raise error(f"environment variable {name} is not set: the {what} is read from {value!r} when the "
                    f"sync runs; export {name}=… before running the sync")
    register_secret(secret)
    register_secret(quote(secret, safe=""))
    return secret


def split_password(uri: str) -> tuple[str, str | None]:
    """Return the URI without its password, and the password (None when there is none).

    The password may be in the user part (``user:pw@host``) or, as libpq also takes it, a
    ``password=`` query parameter (which wins, as in libpq); both are taken out.

    >>> split_password("postgresql://app@db/x?sslmode=require&password=p%40ss")
    ('postgresql://app@db/x?sslmode=require', 'p@ss')
    """
    parts = urlsplit(uri)
    password = None if parts.password is None else unquote(parts.password)
    netloc = parts.netloc
    if password is not None:
        host = netloc.rsplit("@", 1)[1]
        user = netloc.rsplit("@", 1)[0].split(":", 1)[0]
        netloc = f"{user}@{host}"
    query = parts.query
    if query:
        kept = []
        for piece in query.split("&"):
            name, eq, value = piece.partition("=")
            if eq and unquote(name).strip().lower() == "password":
                password = unquote(value)
            else:
                kept.append(piece)
        query = "&".join(kept)
    if password is None:
        return uri, None
    return urlunsplit(parts._replace(netloc=netloc, query=query)), password


def take_password(uri: str, password: str | None) -> tuple[str, str | None, str | None]:
    """Split a URI's credentials: (URI without password, ``env:NAME`` reference, literal password).

    A literal password (in the URI or given) is usable in this process but never stored:
    configurations keep only the reference.
    """
    uri, in_uri = split_password(uri)
    literal = None
    if in_uri is not None and password is None:
        password = in_uri
    if password is not None and not is_reference(password):
        register_secret(password)
        register_secret(quote(password, safe=""))
        literal, password = password, None
    return uri, password, literal


def uri_with_password(uri: str, secret: str | None, connect_timeout: int) -> str:
    """A libpq URI with the password filled in and a ``connect_timeout`` (unless it has one):
    what a connection is opened with, never stored or shown."""
    parts = urlsplit(uri)
    netloc = parts.netloc
    if secret is not None:
        user, host = netloc.rsplit("@", 1) if "@" in netloc else ("", netloc)
        netloc = f"{user}:{quote(secret, safe='')}@{host}"
    query = parts.query
    if "connect_timeout" not in query:
        query = (query + "&" if query else "") + f"connect_timeout={connect_timeout}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))

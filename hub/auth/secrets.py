"""Secrets at rest: slow hashes for passwords, digests for high-entropy keys, constant-time checks.

Passwords are low-entropy, so they get scrypt (memory-hard, in the standard library). API keys, device keys
and registration tokens are 256-bit random strings: a SHA-256 digest is as safe for them and lets a key be
looked up by its digest in one read.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

__all__ = ["dummy_password_hash", "hash_password", "key_digest", "new_id", "new_secret", "verify_password"]

# scrypt cost N=2**15, r=8, p=1: 32 MiB and tens of milliseconds per check. Stored in each hash, so the
# cost can be raised later without invalidating existing passwords.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
ID_ALPHABET_BYTES = 12


def new_id(prefix: str) -> str:
    """A server-made id such as ``usr_3kq9…`` (96 random bits, URL-safe)."""
    return f"{prefix}_{secrets.token_urlsafe(ID_ALPHABET_BYTES)}"


def new_secret(prefix: str) -> str:
    """A credential such as ``sk_live_…`` or ``dk_…`` with 256 random bits."""
    return prefix + secrets.token_urlsafe(32)


def key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    derived = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(derived)])


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of ``password`` against a ``hash_password`` string; False for any malformed hash."""
    try:
        scheme, n, r, p, salt, expected = encoded.split("$")
        if scheme != "scrypt":
            return False
        derived = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(derived, _unb64(expected))


@functools.cache
def dummy_password_hash() -> str:
    """A fixed hash checked when the email is unknown, so that unknown and known emails take the same time."""
    return hash_password("telehub-timing-equalizer")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=32)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

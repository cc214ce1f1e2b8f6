"""Sessions sealed into cookies (gateway.sessions)."""

from __future__ import annotations

from gateway.sessions import PIECE, SessionCookies

SECRET = "a-session-secret-of-32-characters"


def jar(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out = {}
    for name, value in headers:
        assert name == b"set-cookie"
        pair = value.decode().partition(";")[0]
        key, _, val = pair.partition("=")
        out[key] = val
    return out


def test_sealed_session_opens_until_it_expires() -> None:
    cookies = SessionCookies(SECRET, "session", b"test")
    headers = cookies.seal({"sub": "alice", "expires": 100.0}, secure=True, previous={})
    assert b"; HttpOnly; SameSite=Lax; Secure" in headers[0][1]
    sealed = jar(headers)
    assert "alice" not in str(sealed)
    assert cookies.open(sealed, now=99.0) == {"sub": "alice", "expires": 100.0}
    assert cookies.open(sealed, now=100.0) is None


def test_forged_moved_or_foreign_sessions_do_not_open() -> None:
    cookies = SessionCookies(SECRET, "session", b"test")
    sealed = jar(cookies.seal({"sub": "alice", "expires": 100.0}, secure=False, previous={}))
    value = sealed["session"]
    flipped = value[:-1] + ("A" if value[-1] != "A" else "B")
    assert cookies.open({"session": flipped}, now=0) is None
    assert cookies.open({"session": "1.not-base64!"}, now=0) is None
    assert cookies.open({"session": "9.x"}, now=0) is None
    other_secret = SessionCookies("another-secret-of-32-characters!", "session", b"test")
    assert other_secret.open(sealed, now=0) is None
    other_name = SessionCookies(SECRET, "other", b"test")
    assert other_name.open({"other": value}, now=0) is None


def test_a_large_session_is_split_and_leftover_pieces_cleared() -> None:
    cookies = SessionCookies(SECRET, "session", b"test")
    big = {"blob": "x" * (PIECE * 2), "expires": 100.0}
    headers = cookies.seal(big, secure=False, previous={})
    sealed = jar(headers)
    assert set(sealed) == {"session", "session_2", "session_3"}
    assert all(len(v) <= PIECE + 2 for v in sealed.values())
    assert cookies.open(sealed, now=0) == big
    assert cookies.open({"session": sealed["session"]}, now=0) is None  # a piece missing
    small = cookies.seal({"expires": 100.0}, secure=False, previous=sealed)
    cleared = [v for _, v in small if b"Max-Age=0" in v]
    assert [v.split(b"=")[0] for v in cleared] == [b"session_2", b"session_3"]
    assert len(cookies.clear(secure=False, previous=sealed)) == 3

"""Generated client ids are safe to pass on a command line (`samverka client revoke ID`)."""

from samverka.auth.clients import new_client_id


def test_client_ids_never_start_with_a_dash() -> None:
    # token_urlsafe starts with '-' once in 64: 2,000 ids would contain ~31 such without the guard
    ids = [new_client_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids) and all(len(i) == 24 for i in ids)

"""The pieces of an identity: nkey seeds and public keys, the site CA and the
certificates it issues, and the 0600 files they are kept in.

Rendering is in test_broker_identity_config.py; the live behaviour (who may
connect, routes over mutual TLS, the leaf link) in test_broker_identity_live.py.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from broker.errors import CredentialsError, IdentityError
from broker.identity import Nkey, check_public_key, load_seed
from broker.tls import SiteCA, TlsFiles, client_ssl_context, write_tls_files


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common 022, under which a plain open() makes 0644 files."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _typo(text: str) -> str:
    # Not the last character: a seed's last base32 character carries padding bits,
    # so some changes there decode to the same bytes.
    return text[:10] + ("A" if text[10] != "A" else "B") + text[11:]


# ---------------------------------------------------------------- nkeys


def test_nkey_round_trips_through_its_seed_file(tmp_path: Path) -> None:
    key = Nkey.generate()
    assert key.public_key.startswith("U") and key.seed.startswith("SU")
    key.save_seed(tmp_path / "t1.nk")
    assert load_seed(tmp_path / "t1.nk") == key
    assert key.seed not in repr(key)


@pytest.mark.parametrize(
    "mangle",
    [_typo, lambda s: s[:-2], lambda s: "SA" + s[2:], lambda s: "not a seed"],
    ids=["checksum", "truncated", "account-seed", "garbage"],
)
def test_a_bad_seed_is_refused(mangle: Callable[[str], str]) -> None:
    with pytest.raises(IdentityError):
        Nkey.from_seed(mangle(Nkey.generate().seed))


def test_a_bad_public_key_is_refused() -> None:
    key = Nkey.generate()
    assert check_public_key(key.public_key) == key.public_key
    for bad in (_typo(key.public_key), key.seed, "A" + key.public_key[1:], "u"):
        with pytest.raises(IdentityError):
            check_public_key(bad)


def test_an_unreadable_seed_file_is_a_credentials_error(tmp_path: Path) -> None:
    (tmp_path / "bad.nk").write_text("SUnope\n")
    for path in (tmp_path / "bad.nk", tmp_path / "missing.nk"):
        with pytest.raises(CredentialsError):
            load_seed(path)


# ---------------------------------------------------------------- the site CA


def test_server_certificate_names_its_machine_and_both_usages() -> None:
    ca = SiteCA.generate("test")
    issued = ca.issue_server("s1-t1", ips=["10.0.0.2"], dns=["till-1.store"])
    issued.cert.verify_directly_issued_by(ca.cert)
    sans = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.2"]
    assert sans.get_values_for_type(x509.DNSName) == ["till-1.store"]
    eku = issued.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # Served on route/leaf listeners and presented when dialling them.
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    basic = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca and basic.path_length == 0


def test_client_certificate_is_client_only() -> None:
    ca = SiteCA.generate("test")
    eku = ca.issue_client("pos-app").cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_a_certificate_from_another_ca_does_not_verify() -> None:
    site, impostor = SiteCA.generate("test"), SiteCA.generate("test")  # same name
    cert = impostor.issue_server("s1-t1", ips=["127.0.0.1"]).cert
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(site.cert)


@pytest.mark.parametrize(
    ("ips", "dns"), [([], []), (["10.0.0.300"], []), ([], ["two words"])], ids=str
)
def test_a_server_certificate_must_name_a_valid_address(ips: list[str], dns: list[str]) -> None:
    with pytest.raises(IdentityError):
        SiteCA.generate("test").issue_server("s1-t1", ips=ips, dns=dns)


def test_ca_round_trips_and_a_foreign_key_is_refused(tmp_path: Path) -> None:
    ca = SiteCA.generate("test")
    ca.save(tmp_path / "ca.pem", tmp_path / "ca.key")
    loaded = SiteCA.load(tmp_path / "ca.pem", tmp_path / "ca.key")
    assert loaded.cert == ca.cert
    SiteCA.generate("test").save(tmp_path / "other.pem", tmp_path / "other.key")
    with pytest.raises(CredentialsError, match="does not match"):
        SiteCA.load(tmp_path / "ca.pem", tmp_path / "other.key")
    with pytest.raises(CredentialsError):
        SiteCA.load(tmp_path / "ca.key", tmp_path / "ca.key")


def test_key_seed_and_certificate_files_are_0600(tmp_path: Path) -> None:
    ca = SiteCA.generate("test")
    ca.save(tmp_path / "ca.pem", tmp_path / "ca.key")
    files = write_tls_files(tmp_path / "m", ca.cert, ca.issue_server("hq", dns=["hq"]))
    Nkey.generate().save_seed(tmp_path / "t1.nk")
    assert files.cert_file is not None and files.key_file is not None
    bundle = [files.ca_file, files.cert_file, files.key_file]
    written = [tmp_path / "ca.pem", tmp_path / "ca.key", tmp_path / "t1.nk", *bundle]
    assert {p.name: _mode(p) for p in written} == {p.name: 0o600 for p in written}
    assert all(p.is_absolute() for p in bundle)  # nats-server resolves against its cwd


def test_client_context_names_the_file_it_could_not_load(tmp_path: Path) -> None:
    files = write_tls_files(tmp_path, SiteCA.generate("test").cert)
    client_ssl_context(files)
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM")
    for bad in (TlsFiles(junk), TlsFiles(files.ca_file, junk, junk)):
        with pytest.raises(CredentialsError) as raised:
            client_ssl_context(bad)
        assert raised.value.path == junk

"""A real OpenLDAP slapd (Debian package `slapd`) on free loopback ports, plain and ldaps,
with a small directory of users, for the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import free_port
from tests.tls_certs import write_certificate

SUFFIX = "dc=example,dc=org"
USERS = "ou=users," + SUFFIX


def _binary(name: str) -> str:
    found = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(found).exists():
        raise RuntimeError(f"{name} is not installed: `make test` installs slapd with apt")
    return found


def _entry(cn: str, rdn: str, password: str) -> str:
    return (
        f"dn: cn={rdn},{USERS}\nobjectClass: inetOrgPerson\ncn: {cn}\nsn: test\n"
        f"userPassword: {password}\n"
    )


# (username as sent, its DN's RDN value as written, password)
USERS_TABLE = [
    ("user01", "user01", "password1"),
    ("John Smith", "John Smith", "pa ss:word"),
    ("comma,user", "comma\\,user", "pw3"),
    ("no-consumer", "no-consumer", "pw4"),
]


class SlapdServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.tls_port = free_port()
        self.cert: Path | None = None
        self.log = workdir / "slapd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        work = self.workdir
        (work / "db").mkdir(parents=True, exist_ok=True)
        self.cert, key = write_certificate(work)
        (work / "slapd.conf").write_text(
            "include /etc/ldap/schema/core.schema\n"
            "include /etc/ldap/schema/cosine.schema\n"
            "include /etc/ldap/schema/inetorgperson.schema\n"
            f"pidfile {work}/slapd.pid\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f"TLSCertificateFile {self.cert}\nTLSCertificateKeyFile {key}\n"
            # A server that takes a DN with an empty password as an anonymous bind (as
            # many do), so that ldap-auth's own refusal of empty passwords is what is tested.
            "allow bind_anon_dn\n"
            f'database mdb\nsuffix "{SUFFIX}"\nrootdn "cn=admin,{SUFFIX}"\n'
            f"directory {work}/db\n"
        )
        entries = [
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: example\n"
            "dc: example\n",
            f"dn: {USERS}\nobjectClass: organizationalUnit\nou: users\n",
            *(_entry(cn, rdn, password) for cn, rdn, password in USERS_TABLE),
        ]
        (work / "data.ldif").write_text("\n".join(entries))
        subprocess.run(
            [_binary("slapadd"), "-f", str(work / "slapd.conf"), "-l", str(work / "data.ldif")],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        urls = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/"
        argv = [_binary("slapd"), "-f", str(self.workdir / "slapd.conf"), "-h", urls, "-d", "256"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                for port in (self.port, self.tls_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"slapd did not start: {self.log.read_text()[-2000:]}")

    def accepted(self) -> int:
        """How many connections slapd has accepted so far (from its stats log)."""
        return self.log.read_text(errors="replace").count(" ACCEPT from ")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

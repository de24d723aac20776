"""Real database servers for the registry tests: PostgreSQL and MariaDB from Debian's packages
(installed by scripts/system-deps.sh), each started in a private temp directory on loopback and
stopped at the end of the session. Each test gets a fresh database on them."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time

_counter = itertools.count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"database server on port {port} did not start")


class PostgresServer:
    """initdb + pg_ctl as the `postgres` system user (PostgreSQL refuses to run as root)."""

    def __init__(self):
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.dir = tempfile.mkdtemp(prefix="rnnserve-pg-")
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = _free_port()
        self._as_postgres(f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-U", "postgres",
                          "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        self._as_postgres(f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-w", "-l",
                          f"{self.dir}/log", "-o",
                          f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")
        _wait_port(self.port)

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       capture_output=True, cwd=self.dir)

    def new_database(self) -> str:
        import sqlalchemy as sa

        name = f"registry_{os.getpid()}_{next(_counter)}"
        admin = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
                                 isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._as_postgres(f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-m", "fast", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class MariaDBServer:
    """mariadb-install-db + mariadbd in a temp directory, reached over its unix socket."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="rnnserve-mariadb-")
        self.port = _free_port()
        self.socket = f"{self.dir}/mysqld.sock"
        subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root",
                        f"--datadir={self.dir}/data", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], check=True, capture_output=True)
        self.process = subprocess.Popen(
            ["mariadbd", "--no-defaults", "--user=root", f"--datadir={self.dir}/data",
             f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--pid-file={self.dir}/mariadb.pid", "--character-set-server=utf8mb4",
             "--collation-server=utf8mb4_bin", "--skip-log-bin"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)

    def new_database(self) -> str:
        import pymysql

        name = f"registry_{os.getpid()}_{next(_counter)}"
        connection = pymysql.connect(user="root", unix_socket=self.socket)
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        connection.close()
        return f"mysql+pymysql://root@localhost/{name}?unix_socket={self.socket}&charset=utf8mb4"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)

"""CurveZMQ keys: one keypair per device and one for the driver.

    keys/public/<name>.key            public key: shareable, copy it to every board
    keys/private/<name>.key_secret    secret key: only on the board named <name>

With keys, every socket a device binds is a CURVE server that accepts only
clients whose public key is one of the cluster's (its devices and the
driver); every connection is encrypted. A board needs the public folder and
its own secret file.
"""


import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from edgec.errors import EdgecError

DRIVER = "driver"


def make_keys(folder: str, names: Iterable[str], overwrite: bool = False) -> List[str]:
    """Write a keypair for each name (devices and "driver"); return the names written."""
    if not zmq.has("curve"):
        raise EdgecError("this libzmq was built without CURVE support")
    public, private = os.path.join(folder, "public"), os.path.join(folder, "private")
    os.makedirs(public, exist_ok=True)
    os.makedirs(private, mode=0o700, exist_ok=True)
    written = []
    for name in names:
        pub, sec = os.path.join(public, f"{name}.key"), os.path.join(private, f"{name}.key_secret")
        if not overwrite and (os.path.exists(pub) or os.path.exists(sec)):
            raise EdgecError(f"keys for '{name}' exist; pass --force to replace them", where=folder)
        public_key, secret_key = zmq.curve_keypair()
        _write(pub, public_key, None, 0o644)
        _write(sec, public_key, secret_key, 0o600)
        written.append(name)
    return written


def _write(path: str, public_key: bytes, secret_key: Optional[bytes], mode: int) -> None:
    lines = ["#   edgec CurveZMQ certificate (ZPL format)", "metadata", "curve",
             f'    public-key = "{public_key.decode()}"']
    if secret_key is not None:
        lines.append(f'    secret-key = "{secret_key.decode()}"')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, mode)


@dataclass
class Keys:
    """What one party (a device or the driver) holds: its keypair and the cluster's public keys."""

    name: str
    public: bytes
    secret: bytes
    peers: Dict[str, bytes]  # name -> public key, every party of the cluster

    def server(self, sock: zmq.Socket) -> None:
        """Make a socket this party binds a CURVE server."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def client(self, sock: zmq.Socket, server: str) -> None:
        """Make a socket this party connects to `server` (a device) a CURVE client."""
        try:
            server_key = self.peers[server]
        except KeyError:
            raise EdgecError(f"no public key for '{server}' in the keys folder; run `edgec keys` "
                             f"and copy keys/public to every board") from None
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = server_key

    def authenticator(self, ctx: zmq.Context) -> ThreadAuthenticator:
        """Start the ZAP handler that admits only the cluster's public keys on `ctx`'s server sockets."""
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve_callback("*", _Allowlist(set(self.peers.values())))
        return auth


class _Allowlist:
    def __init__(self, keys: "set[bytes]") -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def load_keys(folder: str, name: str, parties: Iterable[str]) -> Keys:
    """`name`'s keypair and the public keys of `parties` (the cluster's devices and the driver)."""
    sec_path = os.path.join(folder, "private", f"{name}.key_secret")
    if not os.path.isfile(sec_path):
        raise EdgecError(f"no secret key for '{name}'; run `edgec keys` and copy "
                         f"private/{name}.key_secret to this board", where=folder)
    public, secret = zmq.auth.load_certificate(sec_path)
    if secret is None:
        raise EdgecError(f"{sec_path} holds no secret key", where=folder)
    peers: Dict[str, bytes] = {}
    for party in set(parties) | {name}:
        pub_path = os.path.join(folder, "public", f"{party}.key")
        if not os.path.isfile(pub_path):
            raise EdgecError(f"no public key for '{party}'; run `edgec keys` and copy keys/public "
                             f"to every board", where=folder)
        peers[party], _ = zmq.auth.load_certificate(pub_path)
    return Keys(name, public, secret, peers)

"""Fleet authentication of the messages that change what robots do or learn (issue 17,
defect 9): WeightsUpdate (which policy a robot loads), LabelledEpisode (what the learner
learns from) and EpisodeAck (what an actor may stop re-sending).

Without it any participant on the DDS domain could make a robot load a policy from any
local path (the expected sha256 travels in the same message) or feed the learner episodes,
and a replayed episode under a new id was learned from twice. With a fleet key every such
message carries ``hmac``: HMAC-SHA256 over every other field, in declaration order and
type-tagged, so every field is covered (an episode id changed on a replay breaks it). The
key is a file the operator provisions on each fleet machine (``efm-fleet-key`` writes one);
nodes read it at start through their ``security.fleet_key_file`` parameter. Encryption and access
control of the DDS traffic itself is SROS2's job (docs/ROS.md, "Security").
"""

from __future__ import annotations

import argparse
import hashlib
import hmac as hmac_lib
import os
import re
import secrets
import stat
import struct
from pathlib import Path
from typing import Any

import numpy as np

#: at least 256 bits of key material
MIN_KEY_BYTES = 32


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The fleet key in ``path``; ValueError if it is short or readable by others."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
        data = file.read_bytes().strip()
    except OSError as error:
        raise ValueError(f"security.fleet_key_file {file}: {error}") from error
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"security.fleet_key_file {file} is readable by group or others "
            f"(mode {stat.filemode(mode)}); chmod 600 it"
        )
    if len(data) < MIN_KEY_BYTES:
        raise ValueError(f"security.fleet_key_file {file}: {len(data)} bytes, need >= 32")
    return data


def write_key(path: str | os.PathLike[str]) -> Path:
    """Create a new random fleet key file (mode 600); refuses to overwrite one."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return file


#: numpy dtype of each ROS 2 numeric type, as it travels on the wire
_DTYPES = {
    "boolean": np.bool_, "octet": np.uint8, "char": np.uint8, "byte": np.uint8,
    "float": np.float32, "double": np.float64,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
}
_SEQUENCE = re.compile(r"^sequence<([^,>]+)(?:, ?\d+)?>$|^([^\[]+)\[\d+\]$")


def _feed(mac: Any, value: Any, kind: str) -> None:
    """Bytes of one field as the receiver will see it: numbers cast to their declared wire
    type (a float32 field holds a float64 on the sender's side), type-tagged and
    length-prefixed, nested messages recursively."""
    match = _SEQUENCE.match(kind)
    if match:
        item = match.group(1) or match.group(2)
        if item in _DTYPES:
            data = np.asarray(value, dtype=_DTYPES[item]).tobytes()
            mac.update(b"a" + struct.pack("<Q", len(data)) + data)
        else:
            items = list(value)
            mac.update(b"l" + struct.pack("<Q", len(items)))
            for element in items:
                _feed(mac, element, item)
    elif kind in _DTYPES:
        mac.update(b"n" + np.asarray(value, dtype=_DTYPES[kind]).tobytes())
    elif kind in ("string", "wstring") or kind.startswith(("string<", "wstring<")):
        data = value.encode("utf-8", "surrogatepass")
        mac.update(b"s" + struct.pack("<Q", len(data)) + data)
    else:  # a nested message
        mac.update(b"M")
        for name, sub in value.get_fields_and_field_types().items():
            mac.update(name.encode() + b"=")
            _feed(mac, getattr(value, name), sub)


def digest(msg: Any, key: bytes) -> str:
    """Hex HMAC-SHA256 over every field of ``msg`` but ``hmac``, in declaration order.

    Not over the CDR bytes: CDR alignment padding is not zeroed, so one message can
    serialize to different bytes (seen here: a WeightsUpdate failed its own check)."""
    mac = hmac_lib.new(key, type(msg).__name__.encode(), hashlib.sha256)
    for name, kind in msg.get_fields_and_field_types().items():
        if name != "hmac":
            mac.update(name.encode() + b"=")
            _feed(mac, getattr(msg, name), kind)
    return mac.hexdigest()


def sign(msg: Any, key: bytes | None) -> Any:
    """Set ``msg.hmac`` (no-op without a key); returns ``msg``."""
    if key is not None:
        msg.hmac = digest(msg, key)
    return msg


def verify(msg: Any, key: bytes | None) -> str:
    """'' when ``msg`` may be trusted (always, without a key), else why not."""
    if key is None:
        return ""
    if not msg.hmac:
        return "unauthenticated: no hmac (is the sender missing the fleet key?)"
    if not hmac_lib.compare_digest(msg.hmac, digest(msg, key)):
        return "unauthenticated: hmac does not match (forged, altered or another fleet's key)"
    return ""


def declare_fleet_key(params: Any, logger: Any) -> bytes | None:
    """The ``security.fleet_key_file`` parameter of a node, read at once."""
    path = params.declare(
        "security.fleet_key_file",
        "",
        "File with the fleet's HMAC key (efm-fleet-key writes one): weight updates, "
        "episodes and acks are signed and checked with it ('' = no authentication).",
        read_only=True,
    )
    if not path:
        logger.warning(
            "security.fleet_key_file is empty: weight updates and episodes are not "
            "authenticated; anyone on this DDS domain can send them"
        )
        return None
    return load_key(path)


def main(argv: list[str] | None = None) -> int:
    """``efm-fleet-key PATH``: write a new fleet key for the operator to provision."""
    parser = argparse.ArgumentParser(prog="efm-fleet-key", description=main.__doc__)
    parser.add_argument("path", type=Path, help="key file to create (mode 600)")
    args = parser.parse_args(argv)
    try:
        write_key(args.path)
    except FileExistsError:
        parser.error(f"{args.path} exists; a fleet key is never overwritten")
    print(f"wrote {args.path}; copy it (mode 600) to every fleet machine and set "
          "security.fleet_key_file to it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

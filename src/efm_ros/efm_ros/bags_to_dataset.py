"""``efm-bags-to-dataset BAGS OUT``: recorded practice bags -> an efm training dataset
(issue 15, item 5; paper Section 6: the data a fleet collects while practising).

Each episode bag of ``episode_recorder`` (rosbag2 MCAP, ``efm.episode`` metadata) becomes
one ``efm_sim.dataset`` episode file, the format Stage 1 reads (``efm sft`` with
``data.dir=OUT``):

* the actions are the ``action_command`` values the robot executed, each paired with the
  ``observation`` it answered by header stamp (as the actor pairs them), in order;
  observations stamped before the actor's ``episode_start_ns`` (the previous episode's,
  recorded while the start event was in flight) and the commands answering them are not
  part of the episode, as for the actor;
* the states and images are those observations' proprioception and first camera's
  current frame, plus the observation after the last action (T actions, T + 1 states);
* ``instruction`` and ``policy_version`` come from the bag's metadata; ``success`` is the
  learned detector's call (there is no ground truth on a real robot), recorded as such in
  ``attrs["success_source"]``.

Skipped, counted and reported, never converted: bags that were not closed (a crash or a
superseded episode), bags that hold fewer steps than the episode had (the recorder missed
messages, e.g. before its subscriptions matched the publishers, or best-effort losses),
episodes the operator ended (``outcome`` aborted / intervened: not the policy's
behaviour), episodes with no action, and with ``--successes-only`` every
episode the detector did not call a success. Conversion is resumable (a bag converted
before keeps its file) and each file is written crash-safe.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from efm_ros.bag_io import EPISODE_METADATA_KEY, read_custom_data

NOT_LEARNED = ("aborted", "intervened")


@dataclass
class Conversion:
    """What a conversion wrote and what it skipped, with reasons."""

    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _stamp(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def read_bag_episode(bag: Path, env_name: str = "ros_bag"):
    """One closed episode bag -> an ``efm_sim.dataset.Episode`` (raises ValueError)."""
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader

    from efm_interfaces.msg import ActionCommand, Observation
    from efm_ros.conversions import observation_arrays
    from efm_sim.dataset import Episode

    meta = json.loads(read_custom_data(bag).get(EPISODE_METADATA_KEY) or "{}")
    if not meta.get("complete"):
        raise ValueError("the episode was not closed (crash or superseded)")
    if meta.get("outcome") in NOT_LEARNED:
        raise ValueError(f"ended by the operator ({meta['outcome']}): not policy data")
    start_ns = int(meta.get("episode_start_ns") or 0)  # earlier: the previous episode's
    observations: dict[int, object] = {}
    order: list[int] = []
    commands = []
    with AnyReader([bag]) as reader:
        for connection, _t, raw in reader.messages():
            if connection.msgtype == "efm_interfaces/msg/Observation":
                msg = deserialize_message(bytes(raw), Observation)
                key = _stamp(msg)
                if key >= start_ns and key not in observations:
                    observations[key] = msg
                    order.append(key)
            elif connection.msgtype == "efm_interfaces/msg/ActionCommand":
                msg = deserialize_message(bytes(raw), ActionCommand)
                if not msg.hold:
                    commands.append(msg)
    position = {key: i for i, key in enumerate(order)}
    paired, last = [], -1
    for command in commands:  # each answers the observation with its stamp, in order
        i = position.get(_stamp(command), -1)
        if i > last:
            paired.append((i, command))
            last = i
    length = meta.get("length")
    if length is not None:
        paired = paired[: int(length)]
    if paired and paired[-1][0] + 1 >= len(order):
        paired = paired[:-1]  # the last action's outcome was not recorded
    if not paired:
        raise ValueError("no action with a recorded outcome")
    if length is not None and len(paired) < int(length):
        raise ValueError(
            f"the bag holds {len(paired)} of the episode's {length} steps (the recorder "
            "missed messages: not matched yet, or best-effort losses)"
        )
    indices = [i for i, _ in paired] + [paired[-1][0] + 1]
    arrays = [observation_arrays(observations[order[i]]) for i in indices]
    states = np.stack([a["proprioception"] for a in arrays])
    cams = [next(iter(a["images"].values())) for a in arrays if a["images"]]
    images = np.stack(cams) if len(cams) == len(arrays) else None
    actions = []
    for _, command in paired:
        values = np.asarray(command.values, dtype=np.float32)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"non-finite action at step {command.step}")
        actions.append(values)
    if len({a.shape for a in actions}) != 1:
        raise ValueError("actions change size within the episode")
    return Episode(
        env_name=env_name, seed=-1, instruction=str(meta.get("instruction", "")),
        task_family="", success=bool(meta.get("success")), states=states,
        actions=np.stack(actions), images=images,
        attrs={"success_source": "learned_detector", "bag": bag.name,
               "station": meta.get("station", ""),
               "policy_version": meta.get("policy_version", 0),
               "outcome": meta.get("outcome", "")},
    )


def convert_bags(bags: Path, out: Path, env_name: str = "ros_bag",
                 successes_only: bool = False, progress: bool = True) -> Conversion:
    """Every episode bag under ``bags`` (any depth) -> ``out/episode_<i>.hdf5``."""
    from tqdm import tqdm

    from efm_sim.dataset import episode_path, is_complete_episode, write_episode

    folders = sorted(p.parent for p in Path(bags).rglob("metadata.yaml"))
    out.mkdir(parents=True, exist_ok=True)
    index_file = out / "bags.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else {}
    result = Conversion()
    for bag in tqdm(folders, desc="bags -> dataset", disable=not progress):
        name = str(bag.relative_to(bags))
        if name in index and is_complete_episode(episode_path(out, index[name])):
            result.written.append(episode_path(out, index[name]))
            continue
        try:
            episode = read_bag_episode(bag, env_name)
        except Exception as error:  # one bad bag never stops the others
            result.skipped[name] = str(error)
            continue
        if successes_only and not episode.success:
            result.skipped[name] = "not a detector success (--successes-only)"
            continue
        number = index.get(name, max(index.values(), default=-1) + 1)
        result.written.append(write_episode(episode_path(out, number), episode))
        index[name] = number
        tmp = index_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
        tmp.replace(index_file)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="efm-bags-to-dataset",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("bags", type=Path, help="folder of episode bags (any depth)")
    parser.add_argument("out", type=Path, help="dataset folder (episode_<i>.hdf5)")
    parser.add_argument("--env-name", default="ros_bag", help="env_name stored per episode")
    parser.add_argument("--successes-only", action="store_true",
                        help="keep only episodes the learned detector called successes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.bags.is_dir():
        print(f"efm-bags-to-dataset: {args.bags} is not a folder", file=sys.stderr)
        return 2
    result = convert_bags(args.bags, args.out, args.env_name, args.successes_only,
                          progress=not args.quiet)
    print(json.dumps({"written": len(result.written), "skipped": result.skipped}, indent=1))
    return 0 if result.written else 1


if __name__ == "__main__":
    sys.exit(main())

"""Bag helpers shared by the converter, the recorder and the player (rosbags only, no rclpy).

Reading: ROS 2 bag folders (MCAP or sqlite3), a bare ``.mcap`` or ``.db3`` file (its folder must hold
``metadata.yaml``, else an MCAP file is read directly), and ROS 1 ``.bag`` files. A truncated MCAP
file (no footer, so rosbags cannot index it) is streamed with the ``mcap`` library up to the cut.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rosbags.convert.converter import generate_message_converter
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagError(RuntimeError):
    """A bag that cannot be read (or read further); the message names the bag."""


def default_typestore() -> Typestore:
    return get_typestore(Stores.ROS2_KILTED)


def open_writer(path: Path, storage: str = "mcap") -> Writer:
    if storage not in STORAGES:
        raise ValueError(f"storage: expected one of {sorted(STORAGES)}, got '{storage}'")
    if path.exists():
        raise ValueError(f"bag {path}: exists already; the writer never overwrites")
    path.parent.mkdir(parents=True, exist_ok=True)
    return Writer(path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])


def stamp_from_ns(nanoseconds: int, typestore: Typestore):
    time_type = typestore.types["builtin_interfaces/msg/Time"]
    return time_type(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    timestamp: int  # ns, the bag's receive time
    data: bytes  # CDR (ROS 2) or ROS 1 serialization, see ``BagSource.is_ros1``


class BagSource:
    """Messages of one bag in time order, with a clear error for anything unreadable."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path}: no such file or folder")
        self.is_ros1 = self.path.suffix == ".bag"
        self.unconvertible: dict[str, str] = {}  # ROS 1 topics whose type has no ROS 2 definition here
        self._stream_mcap = False
        if not self.is_ros1 and self.path.is_file() and self.path.suffix not in (".mcap", ".db3"):
            raise BagError(f"bag {self.path}: not a ROS 2 bag folder or .mcap/.db3/.bag file")
        if self.path.is_file() and self.path.suffix in (".mcap", ".db3"):
            if (self.path.parent / "metadata.yaml").exists():
                self.path = self.path.parent
            elif self.path.suffix == ".mcap":
                self._stream_mcap = True
            else:
                raise BagError(f"bag {self.path}: a .db3 file needs its metadata.yaml beside it")
        if self.path.is_dir() and not (self.path / "metadata.yaml").exists():
            raise BagError(f"bag {self.path}: not a ROS 2 bag folder (no metadata.yaml) or .mcap/.db3/.bag file")
        if not self._stream_mcap:
            self._stream_mcap = self._needs_stream()
        self.topics = self._topics()

    def _needs_stream(self) -> bool:
        """An MCAP bag whose file rosbags cannot index (truncated): stream it instead."""
        try:
            with AnyReader([self.path]):
                return False
        except Exception as err:  # rosbags raises several error types for broken files
            files = list(self.path.glob("*.mcap")) if self.path.is_dir() else []
            if len(files) == 1:
                self.path = files[0]
                return True
            raise BagError(f"bag {self.path}: cannot be opened ({err})") from err

    def _topics(self) -> dict[str, str]:
        if self._stream_mcap:
            return {channel_topic: msgtype for channel_topic, msgtype in self._stream_channels()}
        with AnyReader([self.path]) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
        if self.is_ros1:  # ROS 1 messages become CDR for the types the ROS 2 typestore knows
            known = default_typestore().fielddefs
            self.unconvertible = {topic: msgtype for topic, msgtype in topics.items() if msgtype not in known}
        return topics

    @staticmethod
    def _ros1_converters(reader: AnyReader) -> dict[str, Callable[[bytes], memoryview]]:
        """ROS 1 bytes -> ROS 2 CDR per type (rosbags' converter drops the ROS 1 header's seq)."""
        target, cache = default_typestore(), {}
        return {c.msgtype: generate_message_converter(reader.typestore, target, c.msgtype, c.msgtype, cache,
                                                      src_is2=False, dst_is2=True)
                for c in reader.connections if c.msgtype in target.fielddefs}

    def _stream_channels(self) -> Iterator[tuple[str, str]]:
        from mcap.records import Channel, Schema
        from mcap.stream_reader import StreamReader

        schemas = {}
        with self.path.open("rb") as stream:
            try:
                for record in StreamReader(stream, skip_magic=False).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record.name
                    elif isinstance(record, Channel):
                        yield record.topic, schemas.get(record.schema_id, "")
            except Exception:  # a cut file ends mid-record; the channels seen so far are what is readable
                return

    def messages(self, topics: set[str] | None = None, start_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages in bag-time order; raises ``BagError`` after the last readable one of a damaged bag."""
        if self._stream_mcap:
            yield from self._stream_messages(topics, start_ns)
            return
        try:
            with AnyReader([self.path]) as reader:
                connections = [c for c in reader.connections if (topics is None or c.topic in topics)
                               and c.topic not in self.unconvertible]
                if not connections:
                    return
                to_cdr = self._ros1_converters(reader) if self.is_ros1 else {}
                for connection, timestamp, data in reader.messages(connections=connections, start=start_ns):
                    if self.is_ros1:
                        data = to_cdr[connection.msgtype](data)
                    yield BagMessage(connection.topic, connection.msgtype, timestamp, bytes(data))
        except BagError:
            raise
        except Exception as err:
            raise BagError(f"bag {self.path}: unreadable after the messages played so far ({err})") from err

    def _stream_messages(self, topics: set[str] | None, start_ns: int | None) -> Iterator[BagMessage]:
        from mcap.records import Channel, Footer, Message, Schema
        from mcap.stream_reader import StreamReader

        schemas, channels = {}, {}
        with self.path.open("rb") as stream:
            try:
                for record in StreamReader(stream, skip_magic=False).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record.name
                    elif isinstance(record, Channel):
                        channels[record.id] = (record.topic, schemas.get(record.schema_id, ""))
                    elif isinstance(record, Footer):
                        return
                    elif isinstance(record, Message) and record.channel_id in channels:
                        topic, msgtype = channels[record.channel_id]
                        if (topics is None or topic in topics) and (start_ns is None or record.log_time >= start_ns):
                            yield BagMessage(topic, msgtype, record.log_time, bytes(record.data))
            except Exception as err:
                raise BagError(f"bag {self.path}: truncated or damaged MCAP file; played the messages before "
                               f"the damage ({err})") from err
            raise BagError(f"bag {self.path}: MCAP file ends without its footer (truncated); played what was readable")

"""Seed event bus client for `seed serve`: one file, Python standard library only.

It keeps the API of the original implementation's ``models/event_bus.py``, so
an archon moves over by changing one import::

    from seed_client import EventBus

    bus = EventBus("http://127.0.0.1:7007", token=None)
    event = bus.publish("task.completed", {"task_id": "abc"}, source="fenrir")
    unsubscribe = bus.subscribe("task.*", lambda e: print(e.payload))
    recent = bus.query_history("task.completed", since=some_datetime)
    bus.replay("task.completed", since=some_datetime, callback=print, speed=10)
    unsubscribe()

    jobs = bus.group("indexers", "task.created", start="beginning")
    jobs.work(lambda d: index(d.event.payload), stop=threading.Event())  # ack on return, nack on raise

    task = bus.state.create("task", "t-42", updated_by="fenrir", data={"title": "index"})
    task = bus.state.update("task", "t-42", task["version"], updated_by="odin", status="active")

Errors of the server raise ``SeedError`` with its HTTP status and one-line
message; a compare-and-set that lost its race raises ``Conflict`` (a
``SeedError``), after which the caller reads the state again and retries.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional

__all__ = ["Conflict", "Delivery", "Event", "EventBus", "Group", "SeedError", "States"]

logger = logging.getLogger("seed_client")


class SeedError(Exception):
    """An error answered by the server (``status`` 0: it could not be reached)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class Conflict(SeedError):
    """A state is not at the expected version (HTTP 412), or already exists (409)."""


def _parse_time(text: Optional[str]) -> Optional[datetime]:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _format_time(value: Any) -> str:
    """A datetime (naive ones are taken as UTC) or an RFC 3339 string."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


@dataclass
class Event:
    """An event with the original's fields, and ``cursor``, its position in its topic."""

    id: str
    topic: str
    payload: Dict[str, Any]
    source: str
    timestamp: datetime
    correlation_id: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    cursor: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """The event's fields as the original wrote them (without the cursor)."""
        return {
            "id": self.id,
            "topic": self.topic,
            "payload": self.payload,
            "source": self.source,
            "timestamp": self.timestamp.isoformat(),
            "correlation_id": self.correlation_id,
            "metadata": self.metadata,
        }

    def to_json(self) -> str:
        """The event as one JSON line."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Event":
        """An event from the server's JSON (with or without ``cursor``)."""
        return cls(
            id=data["id"],
            topic=data["topic"],
            payload=data.get("payload") or {},
            source=data["source"],
            timestamp=_parse_time(data["timestamp"]),
            correlation_id=data.get("correlation_id"),
            metadata=data.get("metadata") or {},
            cursor=data.get("cursor"),
        )


class _Stream(threading.Thread):
    """One subscription: reads the event stream, calls back, resumes after a drop."""

    def __init__(self, bus: "EventBus", topic: str, callback: Callable[[Event], None]):
        super().__init__(daemon=True, name=f"seed-subscribe-{topic}")
        self.bus = bus
        self.topic = topic
        self.callback = callback
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.failure: Optional[SeedError] = None
        self.last_id: Optional[str] = None
        self.conn: Optional[http.client.HTTPConnection] = None
        self.lock = threading.Lock()

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            conn = self.conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if threading.current_thread() is not self:
            self.join(timeout=5)

    def run(self) -> None:
        delay = 0.1
        while not self.stop.is_set():
            try:
                self._read_once()
                delay = 0.1
            except SeedError as e:
                if not self.ready.is_set() or e.status in (400, 401, 404):
                    self.failure = e
                    self.ready.set()
                    return
                logger.warning("subscription to %s: %s", self.topic, e)
            except (OSError, http.client.HTTPException) as e:
                if self.stop.is_set():
                    return
                if not self.ready.is_set():
                    self.failure = SeedError(0, f"cannot reach {self.bus.url}: {e}")
                    self.ready.set()
                    return
                logger.warning("subscription to %s dropped (%s); resuming", self.topic, e)
            self.stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _read_once(self) -> None:
        query = urllib.parse.urlencode({"topic": self.topic, "from": "new"})
        headers = self.bus._headers({"Accept": "text/event-stream"})
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        conn = self.bus._connection(timeout=60)
        with self.lock:
            self.conn = conn
        try:
            if self.stop.is_set():
                return
            conn.request("GET", f"/v1/subscribe?{query}", headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                raise SeedError(response.status, _error_text(response.read()))
            self._read_events(response)
        finally:
            with self.lock:
                self.conn = None
            conn.close()

    def _read_events(self, response: http.client.HTTPResponse) -> None:
        event_id, kind, data = None, "message", []
        while not self.stop.is_set():
            raw = response.fp.readline()
            if not raw:
                return
            line = raw.decode("utf-8").rstrip("\r\n")
            if line == "":
                if data:
                    self._dispatch(event_id, kind, "\n".join(data))
                elif event_id:
                    # The first block names the stream's start, so even a drop
                    # before any event resumes without a gap.
                    self.last_id = event_id
                event_id, kind, data = None, "message", []
            elif line.startswith(":"):
                if line[1:].strip() == "listening":
                    self.ready.set()
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "id":
                    event_id = value
                elif name == "event":
                    kind = value
                elif name == "data":
                    data.append(value)

    def _dispatch(self, event_id: Optional[str], kind: str, data: str) -> None:
        if kind == "error":
            # The stream fell behind and was ended; the next connection resumes after last_id.
            raise SeedError(503, json.loads(data).get("error", data))
        event = Event.from_dict(json.loads(data))
        if event_id:
            self.last_id = event_id
        try:
            self.callback(event)
        except Exception as e:  # noqa: BLE001 - a failing callback must not end the subscription
            logger.error("Callback error: %s", e)


def _error_text(body: bytes) -> str:
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip() or "no message"


class EventBus:
    """The event bus of a ``seed serve`` at ``url`` (``token``: its bearer token, if any)."""

    def __init__(self, url: str = "http://127.0.0.1:7007", token: Optional[str] = None, timeout: float = 30.0):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"url {url!r}: expected http://HOST:PORT")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._parsed = parsed
        self._streams: List[_Stream] = []
        self._lock = threading.Lock()

    def _connection(self, timeout: Optional[float] = None) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
        return kind(self._parsed.hostname, self._parsed.port, timeout=timeout or self.timeout)

    def _headers(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        content_type: str = "application/json",
        headers: Optional[Dict[str, str]] = None,
    ) -> bytes:
        conn = self._connection()
        try:
            extra = dict(headers or {})
            if body is not None:
                extra["Content-Type"] = content_type
            conn.request(method, path, body=body, headers=self._headers(extra))
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise SeedError(0, f"cannot reach {self.url}: {e}") from e
        finally:
            conn.close()
        if response.status in (409, 412):
            raise Conflict(response.status, _error_text(data))
        if response.status >= 400:
            raise SeedError(response.status, _error_text(data))
        return data

    def group(self, name: str, topic: str, member: str = "python", **config: Any) -> "Group":
        """A member of work group ``name`` over ``topic`` (a pattern); ``config`` holds the
        group's settings for its creation (start, ack_wait_ms, max_deliveries, max_in_flight,
        ordered, dead_letter, backoff_ms, exclusive). Members with the same ``member`` label
        share one server-side member; give each worker its own label. In an exclusive group
        one member is active at a time; a fetch of another gets no events and leaves
        ``active`` false until the active one is let go."""
        return Group(self, name, topic, member, config)

    def groups(self) -> List[Dict[str, Any]]:
        """Every work group with its members, in flight, waiting, redelivered and dead-lettered."""
        return json.loads(self._request("GET", "/v1/groups"))

    @property
    def state(self) -> "States":
        """The server's entity states (versioned, compare-and-set)."""
        return States(self)

    def publish(
        self,
        topic: str,
        payload: Dict[str, Any],
        source: str,
        correlation_id: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
        id: Optional[str] = None,
    ) -> Event:
        """Publishes an event and returns it as stored; a given ``id`` makes it idempotent."""
        body: Dict[str, Any] = {"payload": payload, "source": source}
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        if metadata is not None:
            body["metadata"] = metadata
        if id is not None:
            body["id"] = id
        path = "/v1/topics/" + urllib.parse.quote(topic, safe="") + "/events"
        return Event.from_dict(json.loads(self._request("POST", path, json.dumps(body).encode())))

    def publish_batch(self, topic: str, events: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Publishes events (dicts with payload, source, …) to ``topic`` at once: all or none."""
        lines = "".join(json.dumps(e) + "\n" for e in events).encode()
        path = "/v1/topics/" + urllib.parse.quote(topic, safe="") + "/events"
        return json.loads(self._request("POST", path, lines, "application/x-ndjson"))

    def subscribe(self, topic: str, callback: Callable[[Event], None], poll_interval: float = 0.5) -> Callable[[], None]:
        """Calls ``callback`` with every event published to ``topic`` (a pattern: ``*``, ``>``)
        after this returns, on a thread of its own; returns the function that unsubscribes.

        A dropped connection resumes exactly after the last event delivered.
        ``poll_interval`` is accepted for the original's signature; events are pushed.
        """
        stream = _Stream(self, topic, callback)
        stream.start()
        if not stream.ready.wait(self.timeout):
            stream.close()
            raise SeedError(0, f"no event stream from {self.url} within {self.timeout}s")
        if stream.failure is not None:
            stream.close()
            raise stream.failure
        with self._lock:
            self._streams.append(stream)

        def unsubscribe() -> None:
            with self._lock:
                if stream in self._streams:
                    self._streams.remove(stream)
            stream.close()

        return unsubscribe

    def query_history(
        self,
        topic: Optional[str] = None,
        topics: Optional[List[str]] = None,
        since: Optional[Any] = None,
        source: Optional[str] = None,
        limit: Optional[int] = None,
        until: Optional[Any] = None,
        last: Optional[int] = None,
        correlation_id: Optional[str] = None,
    ) -> List[Event]:
        """Stored events matching the filters, as ``seed history`` selects them."""
        params: List[tuple] = [("topic", t) for t in ([topic] if topic else topics or [])]
        if since is not None:
            params.append(("since", _format_time(since)))
        if until is not None:
            params.append(("until", _format_time(until)))
        for name, value in (("source", source), ("correlation_id", correlation_id), ("limit", limit), ("last", last)):
            if value is not None:
                params.append((name, str(value)))
        data = self._request("GET", "/v1/events?" + urllib.parse.urlencode(params))
        return [Event.from_dict(json.loads(line)) for line in data.splitlines() if line.strip()]

    def replay(self, topic: str, since: Any, callback: Callable[[Event], None], speed: float = 1.0) -> int:
        """Calls ``callback`` on the stored events of ``topic`` from ``since`` on, paced by
        their original gaps divided by ``speed`` (0: no pauses); returns how many it handed out."""
        count = 0
        previous: Optional[datetime] = None
        for event in self.query_history(topic=topic, since=since):
            if previous is not None and speed > 0:
                gap = (event.timestamp - previous).total_seconds()
                if gap > 0:
                    time.sleep(gap / speed)
            try:
                callback(event)
                count += 1
            except Exception as e:  # noqa: BLE001 - as the original: log and go on
                logger.error("Replay callback error: %s", e)
            previous = event.timestamp
        return count

    def list_topics(self) -> List[str]:
        """Every topic's name, sorted."""
        return json.loads(self._request("GET", "/v1/topics"))

    def stats(self) -> Dict[str, Any]:
        """Events, bytes and times per topic; positions and lag per durable consumer."""
        return json.loads(self._request("GET", "/v1/stats"))

    def close(self) -> None:
        """Ends every subscription of this client."""
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.close()


def _state_path(entity_type: str, entity_id: Optional[str] = None, tail: str = "") -> str:
    path = "/v1/state/" + urllib.parse.quote(entity_type, safe="")
    if entity_id is not None:
        path += "/" + urllib.parse.quote(entity_id, safe="")
    return path + tail


class States:
    """Entity states of a ``seed serve``: each a dict in the form of ``schema/state.json``
    plus its ``revision`` (and ``deleted: True`` for a tombstone)."""

    def __init__(self, bus: EventBus):
        self._bus = bus

    def create(
        self,
        entity_type: str,
        entity_id: str,
        updated_by: str,
        data: Optional[Dict[str, Any]] = None,
        status: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        """Creates the entity at version 1; raises ``Conflict`` if it exists."""
        body: Dict[str, Any] = {"entity_id": entity_id, "updated_by": updated_by}
        for name, value in (("data", data), ("status", status), ("metadata", metadata)):
            if value is not None:
                body[name] = value
        return json.loads(self._bus._request("POST", _state_path(entity_type), json.dumps(body).encode()))

    def get(self, entity_type: str, entity_id: str, version: Optional[int] = None) -> Dict[str, Any]:
        """The current state (or one kept ``version``); ``SeedError`` 404 if there is none."""
        tail = f"?version={version}" if version is not None else ""
        return json.loads(self._bus._request("GET", _state_path(entity_type, entity_id, tail)))

    def update(
        self,
        entity_type: str,
        entity_id: str,
        expected_version: int,
        updated_by: str,
        data: Optional[Dict[str, Any]] = None,
        merge: Optional[Dict[str, Any]] = None,
        status: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        """Changes the entity if it is at ``expected_version`` (``data`` replaces, ``merge``
        patches); raises ``Conflict`` naming the current version otherwise."""
        body: Dict[str, Any] = {"updated_by": updated_by}
        for name, value in (("data", data), ("merge", merge), ("status", status), ("metadata", metadata)):
            if value is not None:
                body[name] = value
        headers = {"If-Match": f'"{expected_version}"'}
        path = _state_path(entity_type, entity_id)
        return json.loads(self._bus._request("PUT", path, json.dumps(body).encode(), headers=headers))

    def delete(self, entity_type: str, entity_id: str, expected_version: int, updated_by: str) -> Dict[str, Any]:
        """Deletes the entity at ``expected_version``: returns the tombstone; history stays."""
        headers = {"If-Match": f'"{expected_version}"'}
        body = json.dumps({"updated_by": updated_by}).encode()
        return json.loads(self._bus._request("DELETE", _state_path(entity_type, entity_id), body, headers=headers))

    def history(self, entity_type: str, entity_id: str) -> List[Dict[str, Any]]:
        """The kept versions, oldest first."""
        data = self._bus._request("GET", _state_path(entity_type, entity_id, "/history"))
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def list(self, entity_type: str, status: Optional[str] = None) -> List[Dict[str, Any]]:
        """The current state of every live entity of the type (with ``status``: only those)."""
        tail = "?" + urllib.parse.urlencode({"status": status}) if status is not None else ""
        data = self._bus._request("GET", _state_path(entity_type, None, tail))
        return [json.loads(line) for line in data.splitlines() if line.strip()]


@dataclass
class Delivery:
    """An event handed to a group member, with its delivery count (1: the first)."""

    event: Event
    deliveries: int
    ack_token: str


class Group:
    """A member of a work group of a ``seed serve``: fetch events, then ack, nack or extend
    each one. Unacked events go to other members after the group's ack wait."""

    def __init__(self, bus: EventBus, name: str, topic: str, member: str, config: Dict[str, Any]):
        self._bus = bus
        self.name = name
        self.topic = topic
        self.member = member
        self._config = config
        self._path = "/v1/groups/" + urllib.parse.quote(name, safe="")
        #: Of an exclusive group: whether the last fetch found this member active.
        self.active: Optional[bool] = None

    def _post(self, what: str, body: Dict[str, Any], timeout: Optional[float] = None) -> Dict[str, Any]:
        return json.loads(self._bus._request("POST", f"{self._path}/{what}", json.dumps(body).encode()))

    def fetch(self, max: int = 1, wait: float = 0.0) -> List[Delivery]:
        """Up to ``max`` events, waiting up to ``wait`` seconds (at most 60) for the first."""
        body = dict(self._config, topic=self.topic, member=self.member, max=max, wait_ms=int(wait * 1000))
        answer = self._post("fetch", body)
        self.active = answer.get("active")
        return [
            Delivery(event=Event.from_dict(e), deliveries=e["deliveries"], ack_token=e["ack_token"])
            for e in answer["events"]
        ]

    def ack(self, *deliveries: Delivery) -> int:
        """The deliveries are done; returns how many were acked."""
        return self._post("ack", {"ack_tokens": [d.ack_token for d in deliveries]})["acked"]

    def nack(self, delivery: Delivery, delay: Optional[float] = None, error: Optional[str] = None) -> None:
        """The delivery failed: it comes back after ``delay`` seconds (default: the group's
        backoff), or goes to the dead-letter topic with ``error`` after its last delivery."""
        body: Dict[str, Any] = {"ack_token": delivery.ack_token}
        if delay is not None:
            body["delay_ms"] = int(delay * 1000)
        if error is not None:
            body["error"] = error
        self._post("nack", body)

    def in_progress(self, delivery: Delivery) -> None:
        """Still at it: the delivery's ack wait starts again."""
        self._post("in-progress", {"ack_token": delivery.ack_token})

    def work(
        self,
        handler: Callable[[Delivery], None],
        stop: Optional[threading.Event] = None,
        batch: int = 16,
        wait: float = 5.0,
    ) -> int:
        """Hands each event to ``handler`` until ``stop`` is set: a return acks it, an
        exception nacks it with its text as the error. Returns how many were acked."""
        acked = 0
        while stop is None or not stop.is_set():
            done: List[Delivery] = []
            for delivery in self.fetch(max=batch, wait=wait):
                try:
                    handler(delivery)
                    done.append(delivery)
                except Exception as e:  # noqa: BLE001 - a failed handler nacks, as in the bus
                    self.nack(delivery, error=f"{type(e).__name__}: {e}")
            if done:
                acked += self.ack(*done)
        return acked

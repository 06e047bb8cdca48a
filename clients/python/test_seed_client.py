"""Tests of seed_client against a real `seed serve` (SEED_TEST_URL, SEED_TEST_TOKEN).

Run by `cargo test -p cli --test serve`, which starts the server.
"""

import os
import threading
import unittest
import uuid
from datetime import datetime, timedelta, timezone

from seed_client import Conflict, Event, EventBus, SeedError

URL = os.environ.get("SEED_TEST_URL", "http://127.0.0.1:7007")
TOKEN = os.environ.get("SEED_TEST_TOKEN")


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.bus = EventBus(URL, token=TOKEN, timeout=30)
        self.topic = "py." + uuid.uuid4().hex[:8]

    def tearDown(self):
        self.bus.close()

    def test_publish_returns_the_stored_event(self):
        e = self.bus.publish(self.topic, {"task_id": "abc"}, source="fenrir", correlation_id="c-1")
        self.assertIsInstance(e, Event)
        self.assertEqual((e.topic, e.payload, e.source, e.correlation_id), (self.topic, {"task_id": "abc"}, "fenrir", "c-1"))
        self.assertIsNotNone(e.cursor)
        self.assertEqual(e.timestamp.tzinfo, timezone.utc)

    def test_publish_with_an_id_is_idempotent(self):
        given = str(uuid.uuid4())
        a = self.bus.publish(self.topic, {"n": 1}, "s", id=given)
        b = self.bus.publish(self.topic, {"n": 1}, "s", id=given)
        self.assertEqual((a.id, a.cursor), (b.id, b.cursor))
        self.assertEqual(len(self.bus.query_history(self.topic)), 1)

    def test_errors_raise_seed_error_and_write_nothing(self):
        with self.assertRaises(SeedError) as caught:
            self.bus.publish(self.topic, {"n": 1}, source="")
        self.assertEqual(caught.exception.status, 400)
        self.assertIn("source", caught.exception.message)
        with self.assertRaises(SeedError) as caught:
            self.bus.publish("bad..topic", {}, "s")
        self.assertEqual(caught.exception.status, 400)
        self.assertEqual(self.bus.query_history(self.topic), [])

    def test_a_wrong_token_is_refused(self):
        with self.assertRaises(SeedError) as caught:
            EventBus(URL, token="wrong").list_topics()
        self.assertEqual(caught.exception.status, 401)

    def test_query_history_filters_like_the_original(self):
        for n in range(5):
            self.bus.publish(self.topic, {"n": n}, source="a" if n % 2 else "b")
        everything = self.bus.query_history(topic=self.topic)
        self.assertEqual([e.payload["n"] for e in everything], [0, 1, 2, 3, 4])
        self.assertEqual([e.payload["n"] for e in self.bus.query_history(topics=[self.topic], source="a")], [1, 3])
        self.assertEqual([e.payload["n"] for e in self.bus.query_history(self.topic, limit=2)], [0, 1])
        since = everything[3].timestamp
        self.assertEqual([e.payload["n"] for e in self.bus.query_history(self.topic, since=since)], [3, 4])
        naive = since.astimezone(timezone.utc).replace(tzinfo=None)
        self.assertEqual([e.payload["n"] for e in self.bus.query_history(self.topic, since=naive)], [3, 4])
        self.assertIn(self.topic, self.bus.list_topics())

    def test_replay_hands_out_events_from_since(self):
        for n in range(3):
            self.bus.publish(self.topic, {"n": n}, "s")
        got = []
        count = self.bus.replay(self.topic, datetime.now(timezone.utc) - timedelta(hours=1), got.append, speed=0)
        self.assertEqual((count, [e.payload["n"] for e in got]), (3, [0, 1, 2]))

    def test_subscribe_delivers_new_events_until_unsubscribed(self):
        got = []
        arrived = threading.Event()

        def on_event(e):
            got.append(e.payload["n"])
            if len(got) == 3:
                arrived.set()

        self.bus.publish(self.topic + ".x", {"n": -1}, "s")  # before: not delivered
        unsubscribe = self.bus.subscribe(self.topic + ".*", on_event)
        for n in range(3):
            self.bus.publish(self.topic + ".x", {"n": n}, "s")
        self.assertTrue(arrived.wait(30), got)
        unsubscribe()
        self.bus.publish(self.topic + ".x", {"n": 99}, "s")
        self.assertEqual(got, [0, 1, 2])

    def test_a_failing_callback_does_not_end_the_subscription(self):
        got = []
        arrived = threading.Event()

        def on_event(e):
            if e.payload["n"] == 0:
                raise RuntimeError("boom")
            got.append(e.payload["n"])
            arrived.set()

        unsubscribe = self.bus.subscribe(self.topic, on_event)
        self.bus.publish(self.topic, {"n": 0}, "s")
        self.bus.publish(self.topic, {"n": 1}, "s")
        self.assertTrue(arrived.wait(30))
        unsubscribe()
        self.assertEqual(got, [1])

    def test_subscribe_to_an_invalid_pattern_raises(self):
        with self.assertRaises(SeedError) as caught:
            self.bus.subscribe("a..b", print)
        self.assertEqual(caught.exception.status, 400)

    def test_publish_batch_is_all_or_nothing(self):
        result = self.bus.publish_batch(self.topic, [{"payload": {"n": 1}, "source": "s"}, {"payload": {"n": 2}, "source": "s"}])
        self.assertEqual(result["published"], 2)
        with self.assertRaises(SeedError):
            self.bus.publish_batch(self.topic, [{"payload": {"n": 3}, "source": "s"}, {"payload": 4, "source": "s"}])
        self.assertEqual(len(self.bus.query_history(self.topic)), 2)

    def test_states_compare_and_set_with_conflicts_to_retry_on(self):
        kind, eid = "pytask", uuid.uuid4().hex[:8]
        first = self.bus.state.create(kind, eid, updated_by="fenrir", data={"title": "index"})
        self.assertEqual((first["version"], first["status"], first["data"]), (1, "pending", {"title": "index"}))
        with self.assertRaises(Conflict) as exists:
            self.bus.state.create(kind, eid, updated_by="fenrir")
        self.assertEqual(exists.exception.status, 409)
        second = self.bus.state.update(kind, eid, 1, updated_by="odin", merge={"n": 1}, status="active")
        self.assertEqual((second["version"], second["data"]), (2, {"title": "index", "n": 1}))
        with self.assertRaises(Conflict) as lost:
            self.bus.state.update(kind, eid, 1, updated_by="loki", status="paused")
        self.assertEqual(lost.exception.status, 412)
        self.assertIn("version 2", lost.exception.message)
        self.assertEqual(self.bus.state.get(kind, eid)["version"], 2)
        self.assertEqual(self.bus.state.get(kind, eid, version=1)["data"], {"title": "index"})
        self.assertIn(eid, [s["entity_id"] for s in self.bus.state.list(kind, status="active")])
        tombstone = self.bus.state.delete(kind, eid, 2, updated_by="odin")
        self.assertTrue(tombstone["deleted"])
        self.assertEqual([s["version"] for s in self.bus.state.history(kind, eid)], [1, 2, 3])
        with self.assertRaises(SeedError) as gone:
            self.bus.state.get(kind, eid)
        self.assertEqual(gone.exception.status, 404)

    def test_group_workers_share_events_and_failures_come_back(self):
        topic = self.topic + ".jobs"
        for n in range(12):
            self.bus.publish(topic, {"n": n}, source="s")
        name = "py" + uuid.uuid4().hex[:8]
        a = self.bus.group(name, topic, member="a", start="beginning", backoff_ms=0)
        b = self.bus.group(name, topic, member="b", start="beginning", backoff_ms=0)
        got_a, got_b = a.fetch(max=6, wait=5), b.fetch(max=6, wait=5)
        self.assertEqual((len(got_a), len(got_b)), (6, 6))
        numbers = sorted(d.event.payload["n"] for d in got_a + got_b)
        self.assertEqual(numbers, list(range(12)))
        self.assertEqual(a.ack(*got_a), 6)
        b.nack(got_b[0], delay=0, error="later")
        b.in_progress(got_b[1])
        b.ack(*got_b[1:])
        again = a.fetch(max=6, wait=5)
        self.assertEqual([(d.event.payload["n"], d.deliveries) for d in again], [(got_b[0].event.payload["n"], 2)])
        a.ack(*again)
        group = next(g for g in self.bus.groups() if g["name"] == name)
        self.assertEqual((group["in_flight"], group["waiting"], group["redelivered"]), (0, 0, 1))

    def test_an_exclusive_group_has_one_active_member(self):
        topic = self.topic + ".solo"
        for n in range(3):
            self.bus.publish(topic, {"n": n}, source="s")
        name = "px" + uuid.uuid4().hex[:8]
        a = self.bus.group(name, topic, member="a", start="beginning", exclusive=True)
        b = self.bus.group(name, topic, member="b", start="beginning", exclusive=True)
        got = a.fetch(max=3, wait=5)
        self.assertEqual([d.event.payload["n"] for d in got], [0, 1, 2])
        self.assertEqual(b.fetch(max=3, wait=0.1), [])
        self.assertEqual((a.active, b.active), (True, False))
        group = next(g for g in self.bus.groups() if g["name"] == name)
        self.assertTrue(group["exclusive"])
        self.assertTrue(group["active"].startswith("a"))

    def test_work_acks_what_the_handler_returns_and_nacks_what_it_raises(self):
        topic = self.topic + ".work"
        for n in range(5):
            self.bus.publish(topic, {"n": n}, source="s")
        name = "pw" + uuid.uuid4().hex[:8]
        group = self.bus.group(name, topic, start="beginning", backoff_ms=0, max_deliveries=1)
        stop = threading.Event()
        seen = []

        def handler(delivery):
            seen.append(delivery.event.payload["n"])
            if delivery.event.payload["n"] == 3:
                raise ValueError("three is poison")
            if len(seen) >= 5:
                stop.set()

        self.assertEqual(group.work(handler, stop=stop, batch=5, wait=5), 4)
        letters = self.bus.query_history(topic="dead." + name)
        self.assertEqual(len(letters), 1)
        self.assertEqual(letters[0].payload["error"], "ValueError: three is poison")


if __name__ == "__main__":
    unittest.main()

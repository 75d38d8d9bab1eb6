"""SyncEngine decisions, one at a time: announcing, planning pulls, judging replies, serving."""

from __future__ import annotations

import dataclasses

from broker.subjects import pull_subject
from replicas.sync.config import ADMITTED_TIMEOUT_FACTOR, MAX_ADMITTED_PER_PEER, SyncConfig
from replicas.sync.engine import SyncEngine
from replicas.sync.protocol import (
    Action,
    EventsFrame,
    IngestOutcome,
    OriginStatus,
    Publish,
    PullRequest,
    Request,
    VersionVectorMsg,
    decode_message,
    encode_message,
)
from tests.replicas.simnet import FAST, make_chain


def vv_msg(peer: str, vv: dict[str, int]) -> VersionVectorMsg:
    return VersionVectorMsg(peer, vv, "*" if peer == "hq" else peer.split("/")[0])


def requests(actions: list[Action]) -> dict[str, PullRequest]:
    out = {}
    for a in actions:
        if isinstance(a, Request):
            msg = decode_message(a.payload, "s1/t1")
            assert isinstance(msg, PullRequest) and a.subject == pull_subject(a.peer, "s1/t1")
            out[a.peer] = msg
    return out


def engine(config: SyncConfig = FAST, vv: dict[str, int] | None = None) -> SyncEngine:
    return SyncEngine("s1/t1", config=config, vv=vv)


def deliver(
    e: SyncEngine, peer: str, frame: EventsFrame, out: IngestOutcome, now: float
) -> list[Action]:
    """A frame through the engine as the transport runs it: admit, read ahead, ingested."""
    e.admit(peer, frame, now)
    return e.read_ahead(now) + e.on_frame(peer, frame, out, now)


def outcome(accepted: int, vv: dict[str, int], rejected: int = 0, dups: int = 0) -> IngestOutcome:
    return IngestOutcome(accepted, dups, 0, rejected, vv)


def test_announces_on_connect_periodically_and_soon_after_changes() -> None:
    e = engine(vv={"s1/t1": 2})
    (a,) = e.on_connected(0.0)
    assert isinstance(a, Publish) and a.subject == "tm.vv.s1.t1"
    assert decode_message(a.payload, "s1/t1") == VersionVectorMsg("s1/t1", {"s1/t1": 2}, "s1")
    assert e.tick(0.5) == []
    assert len(e.tick(1.0)) == 1  # periodic
    assert e.on_local_vv({"s1/t1": 3}, 1.05) == []  # within the min gap
    assert [type(a) for a in e.tick(1.1)] == [Publish]  # change announced at the gap


def test_vv_outside_our_scope_is_ignored() -> None:
    e = engine()
    assert requests(e.on_vv("hq", vv_msg("hq", {"s2/t1": 50, "s2/t2": 9}), 0.0)) == {}
    assert e.status(0.0).lag == {}


def test_pull_is_windowed_and_one_per_peer() -> None:
    e = engine()
    reqs = requests(e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t2": 1000, "hq": 40}), 0.0))
    (req,) = reqs.values()
    assert req.ranges == [("s1/t2", 1, 100)] and req.max_events == 100  # biggest lag first
    assert requests(e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t2": 1001}), 0.1)) == {}  # in flight
    frame = EventsFrame("s1/t2", make_chain("s1/t2", 100), True, req.id)
    nxt = requests(deliver(e, "s1/t2", frame, outcome(100, {"s1/t2": 100}), 0.2))
    assert nxt["s1/t2"].ranges == [("s1/t2", 101, 200)]


def test_reads_ahead_while_the_log_ingests_a_bounded_number_of_replies_per_peer() -> None:
    e, bound = engine(), MAX_ADMITTED_PER_PEER
    total = (bound + 1) * 100
    chain = make_chain("s1/t2", total)
    (req,) = requests(e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t2": total}), 0.0)).values()
    frames = []
    for k in range(bound):  # each reply admitted lets the next pull go before it is durable
        frames.append(EventsFrame("s1/t2", chain[k * 100 : (k + 1) * 100], True, req.id))
        e.admit("s1/t2", frames[-1], 0.1 + k / 10)
        ahead = requests(e.read_ahead(0.1 + k / 10))
        if k < bound - 1:
            assert ahead["s1/t2"].ranges == [("s1/t2", (k + 1) * 100 + 1, (k + 2) * 100)]
            req = ahead["s1/t2"]
    assert ahead == {}  # `bound` replies of s1/t2 wait for the log
    nxt = requests(e.on_frame("s1/t2", frames[0], outcome(100, {"s1/t2": 100}), 1.0))
    assert nxt["s1/t2"].ranges == [("s1/t2", bound * 100 + 1, total)]  # planned past them
    for k, frame in enumerate(frames[1:], 2):
        done = e.on_frame("s1/t2", frame, outcome(100, {"s1/t2": k * 100}), 1.0 + k / 10)
        assert requests(done) == {}
    assert e.status(2.0).incidents == []


def test_a_reply_held_behind_a_gap_is_not_short() -> None:
    e = engine()
    (req,) = requests(e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t2": 100}), 0.0)).values()
    frame = EventsFrame("s1/t2", make_chain("s1/t2", 100)[50:], False, req.id)
    e.admit("s1/t2", frame, 0.1)
    held = IngestOutcome(0, 0, 50, 0, {})  # an earlier range failed: these wait for it
    e.on_frame("s1/t2", frame, held, 0.2)
    assert e.status(0.2).incidents == [] and e.status(0.2).peers["s1/t2"].backoff == 0


def test_an_admitted_reply_is_forgotten_only_long_after_the_pull_timeout() -> None:
    e = engine()
    (req,) = requests(e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t2": 100}), 0.0)).values()
    e.admit("s1/t2", EventsFrame("s1/t2", make_chain("s1/t2", 100), False, req.id), 0.1)
    assert requests(e.tick(0.2 + FAST.pull_timeout)) == {}  # still queued for the log
    late = 0.2 + ADMITTED_TIMEOUT_FACTOR * FAST.pull_timeout
    assert requests(e.tick(late))["s1/t2"].ranges == [("s1/t2", 1, 100)]  # backstop


def test_a_failed_ingest_pulls_the_range_again() -> None:
    e = engine()
    (req,) = requests(e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t2": 100}), 0.0)).values()
    frame = EventsFrame("s1/t2", make_chain("s1/t2", 100), False, req.id)
    e.admit("s1/t2", frame, 0.1)
    assert requests(e.read_ahead(0.1)) == {}  # nothing more to ask for
    again = requests(e.on_ingest_failed("s1/t2", frame, 0.2))
    assert again["s1/t2"].ranges == [("s1/t2", 1, 100)]


def test_small_ranges_share_one_window() -> None:
    e = engine()
    (req,) = requests(e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t2": 30, "hq": 90}), 0.0)).values()
    assert req.ranges == [("hq", 1, 90), ("s1/t2", 1, 10)] and req.max_events == 100


def test_ranges_spread_over_peers_never_the_same_origin_twice() -> None:
    e = engine()
    held = {"s1/t2": 50, "s1/t3": 50, "hq": 50}
    e.on_vv("s1/t2", vv_msg("s1/t2", {}), 0.0)
    first = requests(e.on_vv("s1/t3", vv_msg("s1/t3", held), 0.1))
    second = requests(e.on_vv("s1/t2", vv_msg("s1/t2", held), 0.2))
    assert set(first) == {"s1/t3"} and set(second) == {"s1/t2"}
    origins = [r[0] for req in (*first.values(), *second.values()) for r in req.ranges]
    assert sorted(origins) == sorted(held)  # each origin asked of exactly one peer
    assert len(second["s1/t2"].ranges) == 1  # the fresh peer got what was left


def test_prefers_the_peer_heard_most_recently() -> None:
    e = engine()
    e.on_vv("s1/t2", vv_msg("s1/t2", {}), 0.0)
    # Both hold hq's events when planning runs; s1/t2's claim is older (set directly,
    # since any announcement would itself trigger planning at once).
    e.peers.get("s1/t2").vv["hq"] = 5
    reqs = requests(e.on_vv("s1/t3", vv_msg("s1/t3", {"hq": 5}), 3.0))
    assert set(reqs) == {"s1/t3"}


def test_short_reply_is_an_incident_and_another_peer_serves() -> None:
    e = engine()
    (liar_req,) = requests(e.on_vv("s1/t9", vv_msg("s1/t9", {"s1/t2": 80}), 0.0)).values()
    assert requests(e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t2": 80}), 0.1)) == {}  # claimed
    empty = EventsFrame("s1/t9", [], False, liar_req.id)
    reqs = requests(deliver(e, "s1/t9", empty, outcome(0, {}), 0.2))
    assert list(reqs) == ["s1/t2"] and reqs["s1/t2"].ranges == [("s1/t2", 1, 80)]
    (incident,) = e.status(0.2).incidents
    assert (incident.peer, incident.kind, incident.count) == ("s1/t9", "short", 1)
    assert e.status(0.2).peers["s1/t9"].backoff == FAST.incident_backoff


def test_backoff_doubles_and_claims_are_ignored_meanwhile() -> None:
    e = engine()
    for i, now in enumerate((0.0, 2.5, 7.0)):
        (req,) = requests(e.on_vv("s1/t9", vv_msg("s1/t9", {"hq": 10}), now)).values()
        deliver(e, "s1/t9", EventsFrame("s1/t9", [], False, req.id), outcome(0, {}), now)
        assert e.status(now).peers["s1/t9"].backoff == min(2.0 * 2**i, 8.0)
        assert requests(e.on_vv("s1/t9", vv_msg("s1/t9", {"hq": 10}), now + 0.1)) == {}
        assert e.status(now).lag == {}


def test_busy_reply_backs_off_without_incident_of_hostility() -> None:
    e = engine()
    (req,) = requests(e.on_vv("hq", vv_msg("hq", {"hq": 10}), 0.0)).values()
    assert (
        requests(deliver(e, "hq", EventsFrame("hq", [], True, req.id), outcome(0, {}), 0.1)) == {}
    )
    assert [i.kind for i in e.status(0.1).incidents] == ["busy"]
    assert requests(e.tick(0.1 + FAST.retry_backoff))["hq"].ranges == [("hq", 1, 10)]


def test_timeout_retries_with_another_peer() -> None:
    e = engine()
    e.on_vv("s1/t2", vv_msg("s1/t2", {"hq": 10}), 0.0)
    e.on_vv("s1/t3", vv_msg("s1/t3", {"hq": 10}), 0.1)  # origin already claimed by s1/t2
    assert requests(e.tick(0.9)) == {}
    assert set(requests(e.tick(1.0))) == {"s1/t3"}  # s1/t2's pull expired
    assert [(i.peer, i.kind) for i in e.status(1.0).incidents] == [("s1/t2", "timeout")]
    late = EventsFrame("s1/t2", make_chain("hq", 10), False, 1)  # a late reply still counts
    assert requests(deliver(e, "s1/t2", late, outcome(10, {"hq": 10}), 1.1)) == {}


def test_rejected_events_back_the_sender_off() -> None:
    e = engine()
    (req,) = requests(e.on_vv("s1/t9", vv_msg("s1/t9", {"hq": 3}), 0.0)).values()
    frame = EventsFrame("s1/t9", make_chain("hq", 3), False, req.id)
    deliver(e, "s1/t9", frame, outcome(0, {}, rejected=3), 0.1)
    assert [i.kind for i in e.status(0.1).incidents] == ["rejected"]
    assert e.status(0.1).peers["s1/t9"].backoff > 0


def test_admit_drops_origins_the_sender_cannot_hold() -> None:
    hq = SyncEngine("hq", config=FAST)
    frame = EventsFrame("s1/t1", make_chain("s2/t1", 2) + make_chain("s1/t1", 2) + [b"junk"])
    admitted = hq.admit("s1/t1", frame, 0.0)
    assert [ev.id for ev, _ in admitted] == ["s1/t1:1", "s1/t1:2"]
    (incident,) = hq.status(0.0).incidents
    assert incident.kind == "rejected" and "3 dropped" in incident.last_detail


def test_bad_scope_announcement_is_an_incident() -> None:
    e = engine()
    assert e.on_vv("s1/t2", VersionVectorMsg("s1/t2", {"hq": 5}, "*"), 0.0) == []
    assert [i.kind for i in e.status(0.0).incidents] == ["bad_scope"]


def test_serving_is_filtered_by_the_requesters_scope_and_clipped() -> None:
    hq = SyncEngine("hq", config=FAST, vv={"s1/t1": 50, "s2/t1": 50, "hq": 5})
    req = PullRequest("s1/t2", 4, [("s2/t1", 1, 50), ("s1/t1", 40, 60), ("hq", 1, 5)], 100, 10**6)
    plan = hq.on_pull_request("s1/t2", req, 0.0)
    assert plan.reads == (("s1/t1", 40, 11), ("hq", 1, 5)) and not plan.more
    assert plan.max_bytes == FAST.max_frame_bytes and plan.pull_id == 4
    assert [i.kind for i in hq.status(0.0).incidents] == ["out_of_scope_request"]


def test_serving_respects_window_and_budget() -> None:
    cfg = dataclasses.replace(FAST, serve_burst=150, serve_rate=100.0)
    hq = SyncEngine("hq", config=cfg, vv={"hq": 1000})
    ask = PullRequest("s1/t1", 1, [("hq", 1, 1000)], 1000, 10**6)
    assert hq.on_pull_request("s1/t1", ask, 0.0).reads == (("hq", 1, 100),)  # window
    plan = hq.on_pull_request("s1/t1", ask, 0.0)
    assert plan.reads == (("hq", 1, 50),) and plan.more  # burst spent
    assert hq.on_pull_request("s1/t1", ask, 0.0).reads == ()
    assert hq.on_pull_request("s1/t1", ask, 0.5).reads == (("hq", 1, 50),)  # refilled
    assert hq.on_pull_request("s1/t2", ask, 0.5).reads == (("hq", 1, 100),)  # per requester


def test_reply_frame_is_built_within_the_requested_bytes() -> None:
    hq = SyncEngine("hq", config=FAST, vv={"hq": 3})
    plan = hq.on_pull_request("s1/t1", PullRequest("s1/t1", 2, [("hq", 1, 3)], 3, 10**6), 0.0)
    frame = decode_message(hq.build_reply(plan, make_chain("hq", 3)), "hq")
    assert frame == EventsFrame("hq", make_chain("hq", 3), False, 2)


def test_receipts_and_holders() -> None:
    e = engine(vv={"s1/t1": 10})
    assert e.holders("s1/t1", 1) == []
    e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t1": 10}), 0.0)
    e.on_vv("hq", vv_msg("hq", {"s1/t1": 7, "s2/t1": 99}), 0.0)
    assert e.receipts() == {"s1/t2": 10, "hq": 7}
    assert e.holders("s1/t1", 7) == ["hq", "s1/t2"] and e.holders("s1/t1", 8) == ["s1/t2"]


def test_live_push_coalesces_a_burst_when_lingering() -> None:
    e = engine(dataclasses.replace(FAST, push_linger=0.05))
    raws = make_chain("s1/t1", 30)
    assert e.on_local_events(raws[:10], 0.0) == []
    assert e.on_local_events(raws[10:], 0.01) == []
    (push,) = [a for a in e.tick(0.06) if a.subject == "tm.ev.s1.t1"]
    assert isinstance(push, Publish)
    assert decode_message(push.payload, "s1/t1") == EventsFrame("s1/t1", raws)
    immediate = engine().on_local_events(raws, 0.0)
    assert [a.subject for a in immediate] == ["tm.ev.s1.t1"]


def test_live_push_of_many_events_is_split_under_the_frame_limit() -> None:
    raws = make_chain("s1/t1", 2000)
    frames = engine().on_local_events(raws, 0.0)
    assert len(frames) > 1
    got = []
    for a in frames:
        assert isinstance(a, Publish) and len(a.payload) <= FAST.max_frame_bytes
        msg = decode_message(a.payload, "s1/t1", FAST.max_frame_bytes)
        assert isinstance(msg, EventsFrame)
        got += msg.events
    assert got == raws


def test_own_echo_is_ignored() -> None:
    e = engine()
    assert e.on_vv("s1/t1", vv_msg("s1/t1", {"s1/t1": 99}), 0.0) == []
    frame = EventsFrame("s1/t1", [])
    assert deliver(e, "s1/t1", frame, outcome(0, {}), 0.0) == []
    assert encode_message(frame)


def test_holders_are_the_peers_whose_vectors_hold_the_event() -> None:
    e = engine()
    e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t1": 5}), 0.0)
    e.on_vv("hq", vv_msg("hq", {"s1/t1": 3}), 0.1)
    assert e.holders("s1/t1", 3) == ["hq", "s1/t2"]
    assert e.holders("s1/t1", 4) == ["s1/t2"]
    assert e.holders("s1/t1", 6) == []


def test_an_echo_of_a_peers_own_events_is_not_an_incident() -> None:
    """A till pushes its own events; a push that raced our pull of them, or lingered
    behind its next announcement, arrives with only known events. That is normal on a
    healthy site. Known events of other origins pushed as its own are a replay."""
    e = engine(vv={"s1/t2": 5, "hq": 3})
    e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t2": 5}), 0.0)
    chain = make_chain("s1/t2", 5)
    for i, frame in enumerate((chain[3:], chain[:2])):  # newest, and older than announced
        own = EventsFrame("s1/t2", frame, False, 0)
        deliver(e, "s1/t2", own, outcome(0, {"s1/t2": 5}, dups=len(frame)), 0.1 * (i + 1))
    assert [i.kind for i in e.status(0.3).incidents] == []
    relayed = EventsFrame("s1/t2", make_chain("hq", 3), False, 0)
    deliver(e, "s1/t2", relayed, outcome(0, {"s1/t2": 5}, dups=3), 0.4)
    (incident,) = e.status(0.5).incidents
    assert (incident.kind, incident.count) == ("duplicate_frame", 1)


def test_status_lists_each_origins_backlog_and_since_when() -> None:
    e = engine(vv={"s1/t1": 4})
    e.on_vv("s1/t2", vv_msg("s1/t2", {"s1/t2": 10, "s1/t1": 4}), 1.0)
    origins = e.status(3.0).origins
    assert origins["s1/t2"] == OriginStatus(held=0, behind=10, missing_for=2.0, last_seen=2.0)
    assert origins["s1/t1"] == OriginStatus(held=4, behind=0, missing_for=None, last_seen=None)
    frame = EventsFrame("s1/t2", make_chain("s1/t2", 10), False, 0)
    deliver(e, "s1/t2", frame, outcome(10, {"s1/t1": 4, "s1/t2": 10}), 4.0)
    assert e.status(5.0).origins["s1/t2"] == OriginStatus(10, 0, None, 4.0)


def test_a_claim_lowered_after_a_short_reply_is_still_what_it_announced() -> None:
    """A replacement replica waits until its witnesses' announced heads of its own origin
    are back (runtime._history_confirmed): a short reply (a timeout under load) lowers
    the claim the engine pulls by, never what the peer announced."""
    e = engine()
    (req,) = requests(e.on_vv("s1/t9", vv_msg("s1/t9", {"s1/t1": 4}), 0.0)).values()
    empty = EventsFrame("s1/t9", [], False, req.id)
    deliver(e, "s1/t9", empty, outcome(0, {}), 0.1)  # served nothing: the claim is lowered
    peer = e.status(0.2).peers["s1/t9"]
    assert peer.vv.get("s1/t1", 0) == 0 and peer.announced == {"s1/t1": 4}

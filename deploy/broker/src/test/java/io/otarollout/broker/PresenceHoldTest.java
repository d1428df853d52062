package io.otarollout.broker;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.otarollout.broker.PresenceHold.Offer;
import io.otarollout.broker.PresenceHold.Release;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;

class PresenceHoldTest {
    private static PresenceEvent event(String deviceId, boolean online) {
        return new PresenceEvent(deviceId, deviceId + "_0_0_2026120602", online, 1L, online ? "connect" : "graceful");
    }

    private static List<PresenceEvent> drain(PresenceHold hold, int batch) {
        List<PresenceEvent> out = new ArrayList<>();
        for (List<PresenceEvent> next = hold.nextBatch(batch); !next.isEmpty(); next = hold.nextBatch(batch)) {
            out.addAll(next);
        }
        return out;
    }

    @Test
    void withASubscriberAndNothingHeldEventsArePublishedAtOnce() {
        PresenceHold hold = new PresenceHold(10);
        assertEquals(Optional.empty(), hold.subscribed("gw"));
        assertEquals(Offer.PUBLISH, hold.offer(event("d1", true)));
        assertEquals(0, hold.heldNow());
    }

    @Test
    void withoutASubscriberEventsAreHeldAndReleasedInOrderOnceOneSubscribes() {
        PresenceHold hold = new PresenceHold(10);
        List<PresenceEvent> offered = List.of(event("d1", true), event("d2", true), event("d1", false),
                event("d1", true));
        offered.forEach(e -> assertEquals(Offer.HELD, hold.offer(e)));
        assertEquals(4, hold.heldNow());
        assertEquals(Optional.of(new Release(4, 0)), hold.subscribed("gw"));
        assertEquals(offered, drain(hold, 3));
        assertEquals(0, hold.heldNow());
        assertEquals(Offer.PUBLISH, hold.offer(event("d3", true)));
    }

    @Test
    void eventsDuringAReleaseQueueBehindTheHeldOnes() {
        PresenceHold hold = new PresenceHold(10);
        hold.offer(event("d1", true));
        hold.offer(event("d2", true));
        assertTrue(hold.subscribed("gw").isPresent());
        assertEquals(List.of(event("d1", true)), hold.nextBatch(1));
        // The subscriber exists, but d2's online is still held: d2's offline must follow it.
        assertEquals(Offer.HELD, hold.offer(event("d2", false)));
        assertEquals(List.of(event("d2", true), event("d2", false)), drain(hold, 1));
        assertEquals(Offer.PUBLISH, hold.offer(event("d2", true)));
    }

    @Test
    void aReleaseIsUnderWayFromTheSubscribeUntilABatchComesBackEmpty() {
        PresenceHold hold = new PresenceHold(10);
        assertFalse(hold.releasingNow());
        hold.offer(event("d1", true));
        assertFalse(hold.releasingNow());
        assertTrue(hold.subscribed("gw").isPresent());
        assertTrue(hold.releasingNow());
        assertEquals(List.of(event("d1", true)), hold.nextBatch(5));
        assertTrue(hold.releasingNow()); // nothing held, but its batch may still be going out
        assertEquals(List.of(), hold.nextBatch(5));
        assertFalse(hold.releasingNow());
    }

    @Test
    void aSecondSubscriberDuringAReleaseStartsNoOtherRelease() {
        PresenceHold hold = new PresenceHold(10);
        hold.offer(event("d1", true));
        assertTrue(hold.subscribed("gw-0").isPresent());
        assertEquals(Optional.empty(), hold.subscribed("gw-1"));
        assertEquals(List.of(event("d1", true)), drain(hold, 10));
    }

    @Test
    void theLastSubscriberLeavingStopsTheReleaseAndHoldsAgain() {
        PresenceHold hold = new PresenceHold(10);
        hold.offer(event("d1", true));
        hold.offer(event("d2", true));
        hold.subscribed("gw");
        assertEquals(List.of(event("d1", true)), hold.nextBatch(1));
        hold.unsubscribed("gw");
        assertEquals(List.of(), hold.nextBatch(1));
        assertEquals(Offer.HELD, hold.offer(event("d3", true)));
        assertEquals(Optional.of(new Release(2, 0)), hold.subscribed("gw-again"));
        assertEquals(List.of(event("d2", true), event("d3", true)), drain(hold, 10));
    }

    @Test
    void oneOfTwoSubscribersLeavingChangesNothing() {
        PresenceHold hold = new PresenceHold(10);
        hold.subscribed("gw-0");
        hold.subscribed("gw-1");
        hold.unsubscribed("gw-0");
        assertEquals(Offer.PUBLISH, hold.offer(event("d1", true)));
        hold.unsubscribed("gw-1");
        assertEquals(Offer.HELD, hold.offer(event("d1", false)));
    }

    @Test
    void atTheBoundTheOldestIsDroppedAndCounted() {
        PresenceHold hold = new PresenceHold(2);
        assertEquals(Offer.HELD, hold.offer(event("d1", true)));
        assertEquals(Offer.HELD, hold.offer(event("d2", true)));
        assertEquals(Offer.HELD_DROPPING, hold.offer(event("d3", true)));
        assertEquals(Offer.HELD_DROPPED_OLDEST, hold.offer(event("d3", false)));
        assertEquals(2, hold.heldNow());
        assertEquals(Optional.of(new Release(2, 2)), hold.subscribed("gw"));
        assertEquals(List.of(event("d3", true), event("d3", false)), drain(hold, 10));
        // The next hold counts its drops afresh.
        hold.unsubscribed("gw");
        hold.offer(event("d4", true));
        hold.offer(event("d5", true));
        assertEquals(Offer.HELD_DROPPING, hold.offer(event("d6", true)));
    }

    @Test
    void aSubscriberWithNothingHeldStartsNoRelease() {
        PresenceHold hold = new PresenceHold(1);
        assertEquals(Optional.empty(), hold.subscribed("gw"));
        assertEquals(List.of(), hold.nextBatch(10));
    }

    @Test
    void aCapacityBelowOneIsRefused() {
        assertThrows(IllegalArgumentException.class, () -> new PresenceHold(0));
    }
}

package io.otarollout.broker;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;

/**
 * Presence events kept while no platform client is subscribed to them, released in order
 * once one is. Pure and synchronized: no I/O, no HiveMQ types ({@link Presence} publishes).
 *
 * <p>Without it, every event published while the gateway is away reaches nobody (QoS 1 to
 * no subscriber is dropped, and after a broker restart no session remembers it): devices
 * reconnect within a second of a restart, the gateway only after its backoff.
 *
 * <p>An event may be published at once only while a subscriber exists, nothing is held and
 * no release is under way; otherwise it queues behind the held ones, so a device's events
 * keep their order. At {@code capacity} the oldest held event is dropped (counted): the
 * newer ones carry the device's latest state.
 */
final class PresenceHold {
    /** What to do with an offered event; {@code HELD_DROPPING} the first drop since the last release. */
    enum Offer { PUBLISH, HELD, HELD_DROPPED_OLDEST, HELD_DROPPING }

    /** A release starting: the events held, and those dropped at the bound while holding. */
    record Release(int held, long dropped) {}

    private final int capacity;
    private final ArrayDeque<PresenceEvent> held = new ArrayDeque<>();
    private final Set<Object> subscribers = new HashSet<>();
    private boolean releasing;
    private long droppedSinceRelease;

    PresenceHold(int capacity) {
        if (capacity < 1) {
            throw new IllegalArgumentException("capacity must be at least 1, not " + capacity);
        }
        this.capacity = capacity;
    }

    synchronized Offer offer(PresenceEvent event) {
        if (!subscribers.isEmpty() && held.isEmpty() && !releasing) {
            return Offer.PUBLISH;
        }
        Offer outcome = Offer.HELD;
        if (held.size() == capacity) {
            held.removeFirst();
            droppedSinceRelease++;
            outcome = droppedSinceRelease == 1 ? Offer.HELD_DROPPING : Offer.HELD_DROPPED_OLDEST;
        }
        held.addLast(event);
        return outcome;
    }

    /** A platform connection subscribed (key: that connection); a release to start, if any. */
    synchronized Optional<Release> subscribed(Object connection) {
        subscribers.add(connection);
        if (releasing || held.isEmpty()) {
            return Optional.empty();
        }
        releasing = true;
        Release release = new Release(held.size(), droppedSinceRelease);
        droppedSinceRelease = 0;
        return Optional.of(release);
    }

    /** A platform connection ended or unsubscribed: with none left, events are held again. */
    synchronized void unsubscribed(Object connection) {
        subscribers.remove(connection);
    }

    /**
     * The next events of the release under way, oldest first, at most {@code max}. Empty
     * when the release ends: nothing is held, or no subscriber is left (the rest stays held
     * until another subscribes).
     */
    synchronized List<PresenceEvent> nextBatch(int max) {
        if (held.isEmpty() || subscribers.isEmpty()) {
            releasing = false;
            return List.of();
        }
        List<PresenceEvent> batch = new ArrayList<>(Math.min(max, held.size()));
        while (batch.size() < max && !held.isEmpty()) {
            batch.add(held.removeFirst());
        }
        return batch;
    }

    int capacity() {
        return capacity;
    }

    synchronized int heldNow() {
        return held.size();
    }

    /** Whether a release is under way: events offered now queue behind it, marked held. */
    synchronized boolean releasingNow() {
        return releasing;
    }

}

package io.otarollout.broker;

import com.hivemq.extension.sdk.api.packets.general.Qos;
import com.hivemq.extension.sdk.api.services.Services;
import com.hivemq.extension.sdk.api.services.builder.Builders;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Publishes presence events (QoS 1, not retained); a failed publish is logged and counted.
 * While no platform client is subscribed to them, events are held ({@link PresenceHold}) and
 * released in order once one subscribes ({@link PresenceSubscriberWatch} reports it), marked
 * {@code "held": true} ({@link PresenceEvent}).
 */
final class Presence {
    private static final Logger LOG = LoggerFactory.getLogger(Presence.class);
    /** Events a release publishes before it waits for HiveMQ to take them: a flood at
     * restart goes out in steps, never from HiveMQ's own threads and never blocking one. */
    static final int RELEASE_BATCH = 1000;

    private final BrokerMetrics metrics;
    private final PresenceHold hold;
    private final Executor releaser;

    /** releaser: where a release runs (HiveMQ's extension executor; never a network thread). */
    Presence(BrokerMetrics metrics, PresenceHold hold, Executor releaser) {
        this.metrics = metrics;
        this.hold = hold;
        this.releaser = releaser;
        metrics.presenceHeldGauge(hold::heldNow);
        metrics.presenceReleasingGauge(hold::releasingNow);
    }

    /** Completes once HiveMQ took the event or failed to (logged), or the event is held;
     * never exceptionally. A held event keeps its place: later events queue behind it. */
    CompletableFuture<Void> publish(PresenceEvent event) {
        PresenceHold.Offer offer = hold.offer(event);
        switch (offer) {
            case PUBLISH:
                return send(event, false);
            case HELD_DROPPING:
                LOG.warn("more than {} presence events held while no platform client subscribes; "
                        + "dropping the oldest (ota_broker_presence_dropped_total)", hold.capacity());
                metrics.presenceDropped();
                break;
            case HELD_DROPPED_OLDEST:
                metrics.presenceDropped();
                break;
            case HELD:
                break;
        }
        return CompletableFuture.completedFuture(null);
    }

    void subscriberAdded(String connection) {
        hold.subscribed(connection).ifPresent(release -> {
            LOG.info("a platform client subscribed to presence: releasing {} held events ({} dropped "
                    + "at the bound while held)", release.held(), release.dropped());
            releaser.execute(this::releaseNext);
        });
    }

    void subscriberRemoved(String connection) {
        hold.unsubscribed(connection);
    }

    private void releaseNext() {
        List<PresenceEvent> batch = hold.nextBatch(RELEASE_BATCH);
        if (batch.isEmpty()) {
            return;
        }
        CompletableFuture<?>[] sent = batch.stream().map(event -> send(event, true))
                .toArray(CompletableFuture[]::new);
        CompletableFuture.allOf(sent).thenRunAsync(this::releaseNext, releaser);
    }

    /** held: a released event, marked so that whichever gateway replica gets it forwards it. */
    private CompletableFuture<Void> send(PresenceEvent event, boolean held) {
        return Services.publishService().publish(Builders.publish()
                        .topic(Topics.presence(event.deviceId()))
                        .qos(Qos.AT_LEAST_ONCE)
                        .retain(false)
                        .payload(ByteBuffer.wrap(event.toJson(held)))
                        .build())
                .handle((ignored, error) -> {
                    if (error != null) {
                        metrics.presenceFailed();
                        LOG.warn("presence of device_id={} online={} not published: {}",
                                event.deviceId(), event.online(), error.toString());
                    }
                    return null;
                });
    }
}

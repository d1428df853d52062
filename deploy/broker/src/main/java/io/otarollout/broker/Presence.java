package io.otarollout.broker;

import com.hivemq.extension.sdk.api.packets.general.Qos;
import com.hivemq.extension.sdk.api.services.Services;
import com.hivemq.extension.sdk.api.services.builder.Builders;
import java.nio.ByteBuffer;
import java.util.concurrent.CompletableFuture;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Publishes presence events (QoS 1, not retained); a failed publish is logged and counted. */
final class Presence {
    private static final Logger LOG = LoggerFactory.getLogger(Presence.class);

    private final BrokerMetrics metrics;

    Presence(BrokerMetrics metrics) {
        this.metrics = metrics;
    }

    /** Completes once HiveMQ took the event or failed to (logged); never exceptionally. */
    CompletableFuture<Void> publish(PresenceEvent event) {
        return Services.publishService().publish(Builders.publish()
                        .topic(Topics.presence(event.deviceId()))
                        .qos(Qos.AT_LEAST_ONCE)
                        .retain(false)
                        .payload(ByteBuffer.wrap(event.toJson()))
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
